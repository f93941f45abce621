//! Chunked transfer of content-addressed blobs (spores) between nodes, over
//! the stream transport. Moving bytes is the shell's job, not the core's:
//! these messages never reach `myco-core`. They are told apart from the
//! core's [`crate::sync::StreamFrame`]s by their first byte.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// The first byte of every blob message (a stream frame starts with its
/// version, 1).
pub const BLOB_CHANNEL: u8 = 0x80;
/// Bytes per chunk.
pub const CHUNK: u32 = 1024 * 1024;

/// A blob message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum BlobMessage {
    /// Asks for `len` bytes of `digest` from `offset`; answer to `reply_to`
    /// (the asker's mesh address).
    Request {
        /// `sha256:<hex>`.
        digest: String,
        /// Start.
        offset: u64,
        /// Length (at most [`CHUNK`]).
        len: u32,
        /// Where to send the answer.
        reply_to: SocketAddr,
    },
    /// A chunk of a blob.
    Data {
        /// `sha256:<hex>`.
        digest: String,
        /// Where it starts.
        offset: u64,
        /// The blob's full size.
        total: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The asked node does not hold the blob.
    Missing {
        /// `sha256:<hex>`.
        digest: String,
    },
}

impl BlobMessage {
    /// Encodes with the channel byte in front.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![BLOB_CHANNEL];
        out.extend(postcard::to_stdvec(self).expect("blob messages always encode"));
        out
    }

    /// Decodes a message that starts with [`BLOB_CHANNEL`].
    pub fn decode(bytes: &[u8]) -> Option<BlobMessage> {
        let rest = bytes.strip_prefix(&[BLOB_CHANNEL])?;
        let (m, tail) = postcard::take_from_bytes(rest).ok()?;
        tail.is_empty().then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_channel_byte() {
        let m = BlobMessage::Data {
            digest: "sha256:ab".into(),
            offset: 3,
            total: 9,
            data: vec![1, 2],
        };
        let bytes = m.encode();
        assert_eq!(bytes[0], BLOB_CHANNEL);
        assert_eq!(BlobMessage::decode(&bytes), Some(m));
        assert_eq!(BlobMessage::decode(&bytes[1..]), None);
        assert_ne!(crate::sync::STREAM_VERSION, BLOB_CHANNEL);
    }
}
