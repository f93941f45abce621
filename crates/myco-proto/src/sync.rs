//! Messages of the state replication protocol. They travel over the
//! authenticated stream transport (not datagrams), so they may be larger
//! than a datagram, up to [`MAX_MESSAGE`].

use serde::{Deserialize, Serialize};

use crate::horizon::Horizon;
use crate::id::NodeId;
use crate::state::{Change, Table, Timestamp};

/// Largest encoded stream message.
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// The stream message format this build writes and reads.
/// 3: anti-entropy trades versions, then only the values that differ
/// (2 sent whole buckets, values included).
pub const STREAM_VERSION: u8 = 3;
/// Number of digest buckets the key space is divided into.
pub const BUCKETS: usize = 256;

/// A message between two nodes' replication logic.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SyncMessage {
    /// New changes, spread epidemically: a node forwards each change it did
    /// not have to a few peers.
    Push(Vec<Change>),
    /// Anti-entropy, step 0: a digest of the sender's whole replica. Equal
    /// replicas answer [`SyncMessage::InSync`]; others answer with their
    /// bucket digests, so an idle mesh trades a few bytes per round.
    Summary(u64),
    /// Anti-entropy, step 1: the sender's per-bucket digests.
    Digest(Vec<u64>),
    /// Step 2: every version (key, timestamp, value hash; no value) the
    /// replier holds in the buckets whose digests differed. A reply may
    /// come in several parts; each part holds whole buckets. The receiver
    /// pushes what the replier lacks and asks with [`SyncMessage::Want`]
    /// for what it lacks itself, so values cross only where they differ:
    /// sending whole buckets made a burst of large writes cost every round
    /// the whole state, on the mesh loop.
    Versions {
        /// The buckets this part covers, complete.
        buckets: Vec<u16>,
        /// Every version the replier holds in those buckets.
        versions: Vec<Version>,
    },
    /// Step 3: keys whose held versions the sender of this message lacks;
    /// the receiver pushes what it holds of them.
    Want(Vec<(Table, String)>),
    /// Step 2 when nothing differed.
    InSync,
}

impl SyncMessage {
    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncMessage::Push(_) => "push",
            SyncMessage::Summary(_) => "summary",
            SyncMessage::Digest(_) => "digest",
            SyncMessage::Versions { .. } => "versions",
            SyncMessage::Want(_) => "want",
            SyncMessage::InSync => "in_sync",
        }
    }
}

/// A version as anti-entropy compares it: the key, its timestamp and a
/// hash of its value, without the value (a value may be 64 KiB; a version
/// is about 60 bytes).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Version {
    /// The table.
    pub table: Table,
    /// The key.
    pub key: String,
    /// The version's timestamp.
    pub ts: Timestamp,
    /// A hash of its value (a tombstone hashes apart from every value).
    pub hash: u64,
}

impl Version {
    /// Approximate encoded size of a version of `key`.
    pub fn size_of(key: &str) -> usize {
        key.len() + 40
    }

    /// Whether this version is one `held` (the receiver's version of the
    /// same key, if any) lacks: it is later, or differs under the same
    /// timestamp (the merge then decides which value wins).
    pub fn newer_than(&self, held: Option<(Timestamp, u64)>) -> bool {
        held.is_none_or(|(ts, hash)| ts < self.ts || (ts == self.ts && hash != self.hash))
    }
}

/// What goes on a stream: a version, the sender and one message.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StreamFrame {
    /// [`STREAM_VERSION`].
    pub version: u8,
    /// The sending node.
    pub from: NodeId,
    /// The horizon the sender has applied when it wrote this message: a
    /// receiver takes entries below its own horizon only from senders at
    /// or past it (see [`crate::horizon`]).
    pub horizon: Horizon,
    /// The message.
    pub message: SyncMessage,
}

/// A stream frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum StreamFrameError {
    /// Not postcard for a [`StreamFrame`].
    #[error("undecodable stream frame: {0}")]
    Decode(#[from] postcard::Error),
    /// A version this build does not read.
    #[error("unsupported stream frame version {0}")]
    Version(u8),
}

impl StreamFrame {
    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("stream frames always encode")
    }

    /// Decodes a frame, refusing other versions and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<StreamFrame, StreamFrameError> {
        let (frame, rest): (StreamFrame, _) = postcard::take_from_bytes(bytes)?;
        if !rest.is_empty() {
            return Err(StreamFrameError::Decode(
                postcard::Error::DeserializeBadEncoding,
            ));
        }
        // The connection's handshake agreed on one version of the range
        // (see `compat`); the frame says which it is written in.
        if !crate::compat::THIS_BUILD.stream.reads(frame.version) {
            return Err(StreamFrameError::Version(frame.version));
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let f = StreamFrame {
            version: STREAM_VERSION,
            from: NodeId::from_u64(3),
            horizon: Horizon { at: 9, digest: 4 },
            message: SyncMessage::Push(vec![Change {
                table: Table::KV,
                key: "a/b".into(),
                ts: Timestamp {
                    wall_ms: 5,
                    logical: 1,
                    node: NodeId::from_u64(3),
                },
                value: Some(b"v".to_vec()),
            }]),
        };
        let bytes = f.encode();
        assert_eq!(StreamFrame::decode(&bytes).unwrap(), f);
        let mut v2 = f.clone();
        v2.version = 1;
        assert!(matches!(
            StreamFrame::decode(&v2.encode()),
            Err(StreamFrameError::Version(1))
        ));
        assert!(StreamFrame::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(StreamFrame::decode(&long).is_err());
    }
}
