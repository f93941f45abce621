//! The sealed datagram envelope: every packet between nodes travels in one.
//!
//! ```text
//! "MY" | version:u8 | key id:4 | sender:8 | epoch:u64 | counter:u64 | ciphertext + 16-byte tag
//! ```
//!
//! The 31-byte header is authenticated as associated data; the body is
//! sealed with XChaCha20-Poly1305 under a key derived from the cluster key.
//! The nonce is `sender | epoch | counter`: the epoch grows on every start of
//! a node and the counter on every datagram, so a nonce never repeats under
//! one key. The same pair lets receivers refuse replays (see `myco-core`).

use chacha20poly1305::XNonce;
use chacha20poly1305::aead::{Aead, Payload};

use crate::MAX_DATAGRAM;
use crate::id::NodeId;
use crate::key::{KeyId, KeyRing};

const MAGIC: [u8; 2] = *b"MY";
/// The envelope format version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes of header before the ciphertext.
pub const HEADER_LEN: usize = 31;
/// Bytes the envelope adds around a plaintext (header and AEAD tag).
pub const OVERHEAD: usize = HEADER_LEN + 16;
/// The largest plaintext that fits in one datagram.
pub const MAX_PLAINTEXT: usize = MAX_DATAGRAM - OVERHEAD;

/// The authenticated header of an opened envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which cluster key sealed it.
    pub key_id: KeyId,
    /// The node that sealed it (authentic: only key holders can seal).
    pub sender: NodeId,
    /// The sender's start epoch; grows on every start.
    pub epoch: u64,
    /// The sender's datagram counter within the epoch.
    pub counter: u64,
}

/// Why a datagram was refused. Nothing in the receiver changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum EnvelopeError {
    /// Shorter than a header and a tag.
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    /// Larger than [`MAX_DATAGRAM`].
    #[error("datagram too large ({0} bytes)")]
    Oversize(usize),
    /// Does not start with the Myco magic: not ours.
    #[error("not a Myco datagram")]
    BadMagic,
    /// A Myco datagram of a format this build does not read.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// Sealed with a cluster key this node does not hold.
    #[error("sealed with unknown cluster key {0}")]
    UnknownKey(KeyId),
    /// The tag did not verify: tampered, truncated or forged.
    #[error("authentication failed")]
    Unauthentic,
}

impl EnvelopeError {
    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::TooShort(_) => "too_short",
            EnvelopeError::Oversize(_) => "oversize",
            EnvelopeError::BadMagic => "bad_magic",
            EnvelopeError::UnsupportedVersion(_) => "bad_version",
            EnvelopeError::UnknownKey(_) => "unknown_key",
            EnvelopeError::Unauthentic => "unauthentic",
        }
    }
}

/// Seals and opens datagrams.
pub struct Envelope;

impl Envelope {
    /// Seals `plaintext` with the ring's primary key.
    ///
    /// # Panics
    /// If `plaintext` is longer than [`MAX_PLAINTEXT`]: callers size their
    /// frames first, so this is a bug in the caller.
    pub fn seal(
        ring: &KeyRing,
        sender: NodeId,
        epoch: u64,
        counter: u64,
        plaintext: &[u8],
    ) -> Vec<u8> {
        assert!(
            plaintext.len() <= MAX_PLAINTEXT,
            "frame of {} bytes exceeds the datagram",
            plaintext.len()
        );
        let (key_id, cipher) = ring.primary_cipher();
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.extend_from_slice(&MAGIC);
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&key_id.0);
        out.extend_from_slice(&sender.0);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
        let nonce = nonce_of(&out);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: &out,
                },
            )
            .expect("XChaCha20-Poly1305 sealing cannot fail for in-bounds input");
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a datagram with whichever ring key sealed it.
    pub fn open(ring: &KeyRing, datagram: &[u8]) -> Result<(Header, Vec<u8>), EnvelopeError> {
        if datagram.len() > MAX_DATAGRAM {
            return Err(EnvelopeError::Oversize(datagram.len()));
        }
        if datagram.len() >= 2 && datagram[..2] != MAGIC {
            return Err(EnvelopeError::BadMagic);
        }
        if datagram.len() < OVERHEAD {
            return Err(EnvelopeError::TooShort(datagram.len()));
        }
        // Every version this build reads (see `compat`); the frames inside
        // are those of the envelope's version.
        if !crate::compat::THIS_BUILD.datagram.reads(datagram[2]) {
            return Err(EnvelopeError::UnsupportedVersion(datagram[2]));
        }
        let (head, body) = datagram.split_at(HEADER_LEN);
        let key_id = KeyId(head[3..7].try_into().expect("4 bytes"));
        let header = Header {
            key_id,
            sender: NodeId(head[7..15].try_into().expect("8 bytes")),
            epoch: u64::from_be_bytes(head[15..23].try_into().expect("8 bytes")),
            counter: u64::from_be_bytes(head[23..31].try_into().expect("8 bytes")),
        };
        let cipher = ring
            .cipher(key_id)
            .ok_or(EnvelopeError::UnknownKey(key_id))?;
        let plain = cipher
            .decrypt(
                &nonce_of(head),
                Payload {
                    msg: body,
                    aad: head,
                },
            )
            .map_err(|_| EnvelopeError::Unauthentic)?;
        Ok((header, plain))
    }
}

fn nonce_of(header: &[u8]) -> XNonce {
    // sender | epoch | counter: the last 24 header bytes.
    *XNonce::from_slice(&header[7..31])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ClusterKey;

    fn ring(b: u8) -> KeyRing {
        KeyRing::new(ClusterKey::from_bytes([b; 32]))
    }

    #[test]
    fn seal_open_round_trip() {
        let r = ring(1);
        let d = Envelope::seal(&r, NodeId::from_u64(9), 3, 4, b"hello");
        let (h, p) = Envelope::open(&r, &d).unwrap();
        assert_eq!(p, b"hello");
        assert_eq!((h.sender, h.epoch, h.counter), (NodeId::from_u64(9), 3, 4));
    }

    #[test]
    fn every_single_byte_flip_is_refused() {
        let r = ring(1);
        let d = Envelope::seal(&r, NodeId::from_u64(9), 3, 4, b"membership");
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x40;
            assert!(
                Envelope::open(&r, &bad).is_err(),
                "flip at byte {i} was accepted"
            );
        }
    }

    #[test]
    fn other_cluster_key_is_refused_and_rotation_accepts_both() {
        let d = Envelope::seal(&ring(1), NodeId::from_u64(9), 1, 1, b"x");
        assert!(matches!(
            Envelope::open(&ring(2), &d),
            Err(EnvelopeError::UnknownKey(_))
        ));
        let mut rotating = ring(2);
        rotating.push(ClusterKey::from_bytes([1; 32]));
        assert_eq!(Envelope::open(&rotating, &d).unwrap().1, b"x");
    }

    #[test]
    fn truncated_and_oversized_datagrams_are_refused() {
        let r = ring(1);
        let d = Envelope::seal(&r, NodeId::from_u64(9), 1, 1, b"abc");
        for len in 0..d.len() {
            assert!(Envelope::open(&r, &d[..len]).is_err());
        }
        let big = vec![b'M'; MAX_DATAGRAM + 1];
        assert_eq!(
            Envelope::open(&r, &big),
            Err(EnvelopeError::Oversize(MAX_DATAGRAM + 1))
        );
    }

    #[test]
    #[should_panic(expected = "exceeds the datagram")]
    fn sealing_an_oversized_frame_is_a_caller_bug() {
        Envelope::seal(
            &ring(1),
            NodeId::default(),
            0,
            0,
            &vec![0; MAX_PLAINTEXT + 1],
        );
    }
}
