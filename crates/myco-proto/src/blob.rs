//! Chunked transfer of content-addressed blobs (spores) between nodes, over
//! the stream transport. Moving bytes is the shell's job, not the core's:
//! these messages never reach `myco-core`. They travel on
//! [`crate::channel::Channel::Blob`], apart from the core's
//! [`crate::sync::StreamFrame`]s on [`crate::channel::Channel::Sync`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

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
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    /// The asked node does not hold the blob (every request for it from
    /// this asker fails). Sent by nodes before `Lacking`; still understood.
    Missing {
        /// `sha256:<hex>`.
        digest: String,
    },
    /// The asked node cannot send this chunk now: it does not hold the
    /// blob, or is still fetching it and has not reached `offset`. Only
    /// the one request fails, so a fetch that also asks other nodes keeps
    /// them. Last in the enum so older encodings keep their tags.
    Lacking {
        /// `sha256:<hex>`.
        digest: String,
        /// The start of the chunk asked for.
        offset: u64,
    },
    /// The asked node holds the chunk but is serving as much as it may
    /// right now: ask again shortly (or elsewhere). Sent at once instead of
    /// leaving a request unanswered, so a burst of fetchers never waits out
    /// a timeout. After `Lacking` so older encodings keep their tags; an
    /// older node that cannot decode it counts it and times the chunk out.
    Busy {
        /// `sha256:<hex>`.
        digest: String,
        /// The start of the chunk asked for.
        offset: u64,
    },
}

impl BlobMessage {
    /// Encodes the message (the channel byte is the transport's framing).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("blob messages always encode")
    }

    /// Decodes a message, refusing trailing bytes.
    pub fn decode(bytes: &[u8]) -> Option<BlobMessage> {
        let (m, tail) = postcard::take_from_bytes(bytes).ok()?;
        tail.is_empty().then_some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_trailing_bytes_are_refused() {
        let m = BlobMessage::Data {
            digest: "sha256:ab".into(),
            offset: 3,
            total: 9,
            data: vec![1, 2],
        };
        let bytes = m.encode();
        assert_eq!(BlobMessage::decode(&bytes), Some(m));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(BlobMessage::decode(&long), None);
        assert_eq!(BlobMessage::decode(&bytes[..bytes.len() - 1]), None);
    }
}
