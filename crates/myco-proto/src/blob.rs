//! Chunked transfer of content-addressed blobs (spores) between nodes, over
//! the stream transport. Moving bytes is the shell's job, not the core's:
//! these messages never reach `myco-core`. They travel on
//! [`crate::channel::Channel::Blob`], apart from the core's
//! [`crate::sync::StreamFrame`]s on [`crate::channel::Channel::Sync`].

use std::net::SocketAddr;
use std::ops::Range;

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

    /// The bytes of a `Data` message before its `len` bytes of data:
    /// `data_head(..) + data` is exactly [`BlobMessage::encode`] of that
    /// `Data`. A holder reads the chunk from disk straight after it, so
    /// the chunk is not copied again to be encoded.
    pub fn data_head(digest: &str, offset: u64, total: u64, len: usize) -> Vec<u8> {
        let empty = BlobMessage::Data {
            digest: digest.to_string(),
            offset,
            total,
            data: Vec::new(),
        };
        let mut head = empty.encode();
        // An empty byte string ends the encoding as its length, one 0 byte.
        head.pop();
        head.extend_from_slice(&postcard::to_stdvec(&(len as u64)).expect("a u64 encodes"));
        head
    }

    /// If `bytes` is a whole `Data` message: its fields but the data, and
    /// where the data lies in `bytes`, so a fetch keeps the received
    /// buffer instead of copying the chunk out of it. Accepts exactly
    /// what [`BlobMessage::decode`] accepts as a `Data`.
    pub fn data_at(bytes: &[u8]) -> Option<(DataHead<'_>, Range<usize>)> {
        let (variant, rest) = postcard::take_from_bytes::<u32>(bytes).ok()?;
        if variant != DATA_VARIANT {
            return None;
        }
        let (digest, rest) = postcard::take_from_bytes::<&str>(rest).ok()?;
        let (offset, rest) = postcard::take_from_bytes::<u64>(rest).ok()?;
        let (total, rest) = postcard::take_from_bytes::<u64>(rest).ok()?;
        let (data, tail) = postcard::take_from_bytes::<&[u8]>(rest).ok()?;
        if !tail.is_empty() {
            return None;
        }
        let start = data.as_ptr() as usize - bytes.as_ptr() as usize;
        let head = DataHead {
            digest,
            offset,
            total,
        };
        Some((head, start..start + data.len()))
    }
}

/// The index of [`BlobMessage::Data`] in the enum, as postcard writes it.
const DATA_VARIANT: u32 = 1;

/// The fields of a [`BlobMessage::Data`] besides its bytes (see
/// [`BlobMessage::data_at`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DataHead<'a> {
    /// `sha256:<hex>`.
    pub digest: &'a str,
    /// Where the chunk starts.
    pub offset: u64,
    /// The blob's full size.
    pub total: u64,
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

    /// The in-place encoding and the copy-free decoding of `Data` are the
    /// same bytes as the whole message's: sizes that cross varint widths.
    #[test]
    fn data_head_and_data_at_match_the_whole_encoding() {
        for (offset, total, len) in [
            (0, 0, 0),
            (3, 9, 2),
            (1 << 20, 1 << 33, 300),
            (7, 1 << 19, 1 << 19),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let m = BlobMessage::Data {
                digest: "sha256:ab".into(),
                offset,
                total,
                data: data.clone(),
            };
            let whole = m.encode();
            let mut built = BlobMessage::data_head("sha256:ab", offset, total, data.len());
            built.extend_from_slice(&data);
            assert_eq!(built, whole, "data_head at {offset}/{total}/{len}");
            let (head, at) = BlobMessage::data_at(&whole).expect("a Data message");
            let want = DataHead {
                digest: "sha256:ab",
                offset,
                total,
            };
            assert_eq!((head, &whole[at]), (want, &data[..]));
            assert_eq!(BlobMessage::data_at(&whole[..whole.len() - 1]), None);
            let mut long = whole.clone();
            long.push(0);
            assert_eq!(BlobMessage::data_at(&long), None);
        }
        let other = BlobMessage::Lacking {
            digest: "sha256:ab".into(),
            offset: 1,
        };
        assert_eq!(BlobMessage::data_at(&other.encode()), None);
    }
}
