//! The datagram edge of membership: the key ring that opens what arrives
//! and seals what leaves, the per-datagram counter of the nonce, and the
//! bounded outbox the driver drains.

use std::collections::VecDeque;
use std::net::SocketAddr;

use myco_proto::envelope::{EnvelopeError, Header, MAX_PLAINTEXT};
use myco_proto::frame::Peer;
use myco_proto::{Envelope, Frame, KeyId, KeyRing};

use crate::node::Transmit;
use crate::stats::Stats;

pub(crate) struct Datagrams {
    keys: KeyRing,
    /// Grows on every sealed datagram: with the sender and its start epoch
    /// it makes the nonce, which must never repeat under one key.
    counter: u64,
    outbox: VecDeque<Transmit>,
    max_outbox: usize,
}

impl Datagrams {
    pub(crate) fn new(keys: KeyRing, max_outbox: usize) -> Self {
        Datagrams {
            keys,
            counter: 0,
            outbox: VecDeque::new(),
            max_outbox,
        }
    }

    /// Authenticates and decrypts a datagram with any key of the ring.
    pub(crate) fn open(&self, datagram: &[u8]) -> Result<(Header, Vec<u8>), EnvelopeError> {
        Envelope::open(&self.keys, datagram)
    }

    /// Seals `frame` as `me` and queues it for `to`. A frame too large or
    /// a full outbox is counted and dropped: SWIM tolerates loss.
    pub(crate) fn send(&mut self, stats: &mut Stats, me: &Peer, to: SocketAddr, frame: &Frame) {
        let plain = frame.encode();
        if plain.len() > MAX_PLAINTEXT {
            // Frames are sized to fit by construction; count it rather than crash.
            return stats.drop("frame_too_large");
        }
        if self.outbox.len() >= self.max_outbox {
            return stats.drop("outbox_full");
        }
        self.counter += 1;
        let payload = Envelope::seal(&self.keys, me.id, me.boot, self.counter, &plain);
        self.outbox.push_back(Transmit { to, payload });
    }

    /// The next datagram to send, oldest first.
    pub(crate) fn pop(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    pub(crate) fn set_keys(&mut self, keys: KeyRing) {
        self.keys = keys;
    }

    /// The id of the key datagrams are sealed with.
    pub(crate) fn primary_id(&self) -> KeyId {
        self.keys.primary_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_proto::{ClusterKey, NodeId};

    fn me() -> Peer {
        Peer {
            id: NodeId::from_u64(1),
            addr: "10.0.0.1:7946".parse().unwrap(),
            boot: 7,
            bump: 0,
        }
    }

    #[test]
    fn sealed_datagrams_open_with_the_same_ring_and_count_up() {
        let ring = KeyRing::new(ClusterKey::from_bytes([3; 32]));
        let mut d = Datagrams::new(ring, 8);
        let mut stats = Stats::default();
        let to: SocketAddr = "10.0.0.2:7946".parse().unwrap();
        d.send(&mut stats, &me(), to, &Frame::ManifestRequest);
        d.send(&mut stats, &me(), to, &Frame::Hello(me()));
        let first = d.pop().unwrap();
        let second = d.pop().unwrap();
        assert_eq!(first.to, to);
        let (h1, plain) = d.open(&first.payload).unwrap();
        let (h2, _) = d.open(&second.payload).unwrap();
        assert_eq!(Frame::decode(&plain).unwrap(), Frame::ManifestRequest);
        assert_eq!((h1.sender, h1.epoch, h1.counter), (me().id, 7, 1));
        assert_eq!(h2.counter, 2);
        assert!(d.pop().is_none());
    }

    #[test]
    fn a_full_outbox_drops_and_counts_without_using_a_nonce() {
        let ring = KeyRing::new(ClusterKey::from_bytes([3; 32]));
        let mut d = Datagrams::new(ring, 1);
        let mut stats = Stats::default();
        let to: SocketAddr = "10.0.0.2:7946".parse().unwrap();
        d.send(&mut stats, &me(), to, &Frame::ManifestRequest);
        d.send(&mut stats, &me(), to, &Frame::ManifestRequest);
        assert_eq!(stats.dropped.get("outbox_full"), Some(&1));
        d.pop().unwrap();
        d.send(&mut stats, &me(), to, &Frame::ManifestRequest);
        let t = d.pop().unwrap();
        let (h, _) = d.open(&t.payload).unwrap();
        assert_eq!(h.counter, 2);
    }
}
