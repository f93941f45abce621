//! Targets over `myco-proto`'s wire decoders.

use myco_proto::blob::BlobMessage;
use myco_proto::horizon::GcRecord;
use myco_proto::sync::StreamFrame;
use myco_proto::{Envelope, Frame};

use crate::cluster_ring;

/// A datagram as it arrives on the mesh port: opened with the fixed ring,
/// and what opens decoded as a frame.
pub fn envelope_open(data: &[u8]) {
    thread_local! {
        // Deriving the ring's cipher is HKDF work; do it once per process.
        static RING: myco_proto::KeyRing = cluster_ring();
    }
    RING.with(|ring| {
        if let Ok((_, plain)) = Envelope::open(ring, data) {
            frame_decode(&plain);
        }
    });
}

/// An opened datagram's plaintext.
pub fn frame_decode(data: &[u8]) {
    let Ok(frame) = Frame::decode(data) else {
        return;
    };
    assert_eq!(Frame::decode(&frame.encode()).ok(), Some(frame.clone()));
    if let Frame::Manifest(m) = frame {
        // The limits check re-encodes; it must refuse, never panic.
        let _ = m.validate();
    }
}

/// A replication message off a stream.
pub fn stream_frame(data: &[u8]) {
    let Ok(frame) = StreamFrame::decode(data) else {
        return;
    };
    assert_eq!(StreamFrame::decode(&frame.encode()).ok(), Some(frame));
}

/// A blob (spore transfer) message off a stream's blob channel.
pub fn blob_message(data: &[u8]) {
    if let Some(m) = BlobMessage::decode(data) {
        assert_eq!(BlobMessage::decode(&m.encode()), Some(m));
    }
}

/// A tombstone-collection record from the replicated `gc` table.
pub fn gc_record(data: &[u8]) {
    let Ok(r) = GcRecord::decode(data) else {
        return;
    };
    assert_eq!(GcRecord::decode(&r.encode()).ok(), Some(r));
}
