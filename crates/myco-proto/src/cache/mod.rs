//! Cache buckets and entries: the bucket config (replicated state, in
//! [`crate::Table::CACHE_BUCKETS`]) and the messages nodes exchange on
//! [`crate::channel::Channel::Cache`] to read and write entries on their
//! owners.
//!
//! Entries are never replicated state: they live in memory on the nodes
//! that own them (rendezvous hashing, see `myco_core::cache`). A node that
//! is asked for a key it does not own forwards the request to the owners
//! with [`CacheMessage::Put`] or [`CacheMessage::Get`] and waits for
//! [`CacheMessage::Ack`] or [`CacheMessage::Answer`], matched by `request`;
//! an increment goes to the key's primary alone ([`CacheMessage::Incr`],
//! answered by [`CacheMessage::Counted`]). A node that created a bucket
//! asks the others whether they hold its config ([`CacheMessage::Known`],
//! answered by an [`CacheMessage::Ack`]) before answering its client.
//!
//! Every message starts with a version byte ([`CACHE_PROTO`]); another
//! version, trailing bytes or garbage are refused by
//! [`CacheMessage::decode`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::state::Timestamp;

mod wire;

/// The version byte in front of every cache message.
pub const CACHE_PROTO: u8 = 1;
/// Longest bucket name.
pub const MAX_BUCKET_NAME: usize = 64;
/// Longest key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;
/// Most copies of an entry a bucket may ask for.
pub const MAX_REPLICAS: u8 = 5;
/// The bucket keys outside `bucket:rest` live in (Redis protocol); made
/// on first use.
pub const DEFAULT_BUCKET: &str = "default";

/// A bucket's settings, as stored in the bucket table (JSON, so the API
/// shows it as is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BucketConfig {
    /// Lifetime of an entry written without its own TTL, in ms; 0 = none.
    #[serde(default)]
    pub ttl_ms: u64,
    /// Entries one node keeps of this bucket before the least recently
    /// used is evicted; 0 = no count limit (the node's byte budget still
    /// holds).
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Copies of each entry (the primary and `replicas - 1` others).
    #[serde(default = "default_replicas")]
    pub replicas: u8,
}

fn default_max_entries() -> u64 {
    100_000
}

fn default_replicas() -> u8 {
    2
}

impl Default for BucketConfig {
    fn default() -> Self {
        BucketConfig {
            ttl_ms: 0,
            max_entries: default_max_entries(),
            replicas: default_replicas(),
        }
    }
}

/// Why a bucket name, key, value or config was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheInputError {
    /// The bucket name is empty, too long or has other characters.
    #[error("bucket name {0:?} is not valid: use 1 to 64 of a-z A-Z 0-9 . _ -")]
    BucketName(String),
    /// The key is empty or too long.
    #[error("a key must be 1 to {MAX_KEY} bytes")]
    Key,
    /// The value is too large.
    #[error("a value of {0} bytes is over the {MAX_VALUE}-byte limit")]
    Value(usize),
    /// `replicas` is out of range.
    #[error("replicas must be 1 to {MAX_REPLICAS}, not {0}")]
    Replicas(u8),
}

/// Checks a bucket name.
pub fn check_bucket(name: &str) -> Result<(), CacheInputError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BUCKET_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CacheInputError::BucketName(name.chars().take(80).collect()))
    }
}

/// Checks a key and a value.
pub fn check_entry(key: &str, value: Option<&[u8]>) -> Result<(), CacheInputError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(CacheInputError::Key);
    }
    match value {
        Some(v) if v.len() > MAX_VALUE => Err(CacheInputError::Value(v.len())),
        _ => Ok(()),
    }
}

impl BucketConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), CacheInputError> {
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            return Err(CacheInputError::Replicas(self.replicas));
        }
        Ok(())
    }
}

/// One version of an entry: a value or a tombstone, when it was written
/// and when it expires (wall ms, so every node agrees).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Who wrote it and when: the larger wins (last writer wins).
    pub ts: Timestamp,
    /// The value; `None` is a delete. One run of bytes, not a sequence
    /// (`crate::bytes`: same wire bytes, a copy instead of a visit per byte).
    #[serde(with = "crate::bytes::option")]
    pub value: Option<Vec<u8>>,
    /// Wall time (ms since the epoch) from which it is gone; `None` never.
    pub expires_at_ms: Option<u64>,
}

impl CacheEntry {
    /// Whether it has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Bytes it takes in memory, roughly (with its key).
    pub fn size(&self, key: &str) -> usize {
        key.len() + self.value.as_ref().map_or(0, Vec::len) + 64
    }
}

/// A cache message between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheMessage {
    /// Store this version (merged last-writer-wins); with `ack`, answer
    /// [`CacheMessage::Ack`] to `reply_to`.
    Put {
        /// Chosen by the asker.
        request: u64,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The version.
        entry: CacheEntry,
        /// Whether the asker waits for an ack (rebalancing does not).
        ack: bool,
        /// The asker's stream address.
        reply_to: SocketAddr,
    },
    /// Answer the current version of a key with [`CacheMessage::Answer`].
    Get {
        /// Chosen by the asker.
        request: u64,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The asker's stream address.
        reply_to: SocketAddr,
    },
    /// The answer to a get: the version held, if any (tombstones too, so
    /// the asker can tell "deleted" from "never here").
    Answer {
        /// The request.
        request: u64,
        /// The version, if held and not expired.
        entry: Option<CacheEntry>,
    },
    /// The answer to a put.
    Ack {
        /// The request.
        request: u64,
        /// Whether the version was stored (false: refused, e.g. too big).
        stored: bool,
    },
    /// Add `by` to the integer the key holds (0 if none) and store the sum
    /// as a new version, atomically; sent to the key's primary only, and
    /// answered with [`CacheMessage::Counted`]. Appended after the other
    /// variants (their bytes unchanged): an older node drops it as
    /// undecodable, and the asker's wait ends in an error.
    Incr {
        /// Chosen by the asker.
        request: u64,
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// What to add (negative to subtract).
        by: i64,
        /// Lifetime of a counter that did not exist, in ms (the bucket's
        /// TTL as the asker knows it); 0 = none. A live one keeps its own.
        ttl_ms: u64,
        /// Whether the asker looked for the key on its owners and the
        /// member past them first (after a [`IncrOutcome::NotHeld`]);
        /// `base` is what it found.
        checked: bool,
        /// The version the asker found, if `checked`: the primary adds to
        /// the newer of it and its own.
        base: Option<CacheEntry>,
        /// The asker's stream address.
        reply_to: SocketAddr,
    },
    /// The answer to an increment.
    Counted {
        /// The request.
        request: u64,
        /// The new version, or why there is none.
        outcome: IncrOutcome,
    },
    /// Answer [`CacheMessage::Ack`], `stored` true if this node's replica
    /// of the state holds `config` for `bucket`: the node that created or
    /// changed the bucket asks every live member before answering its
    /// client, so the bucket can be used on any node at once. Appended
    /// after the other variants: an older node drops it as undecodable,
    /// and the asker stops waiting after a bound.
    Known {
        /// Chosen by the asker.
        request: u64,
        /// The bucket.
        bucket: String,
        /// Its config as written.
        config: BucketConfig,
        /// The asker's stream address.
        reply_to: SocketAddr,
    },
    /// Answer [`CacheMessage::Ack`], `stored` true if this node's replica
    /// of the state holds any config for `bucket`: a node asked for a
    /// bucket it does not know asks the others, and says "no such bucket"
    /// at once when none knows it rather than waiting for a config that
    /// may be replicating. Appended last: an older node drops it, and the
    /// asker waits out its bound as before.
    Exists {
        /// Chosen by the asker.
        request: u64,
        /// The bucket.
        bucket: String,
        /// The asker's stream address.
        reply_to: SocketAddr,
    },
}

/// What a key's primary did with an increment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IncrOutcome {
    /// The version it made and now holds (the asker copies it to the other
    /// owners).
    Stored(CacheEntry),
    /// It holds no version of the key and the asker did not look: the key
    /// may be on its way to this new primary from its old owner, so the
    /// asker looks (as a read does) and asks again with what it found.
    NotHeld,
    /// The value could not be added to.
    Refused(CounterError),
}

/// Why an increment was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CounterError {
    /// The key holds something other than a decimal 64-bit integer.
    #[error(
        "the key holds a value that is not a decimal 64-bit integer: set it to one, or delete it, before adding to it"
    )]
    NotInteger,
    /// The sum is past the range of a 64-bit signed integer.
    #[error("the sum would be out of the 64-bit signed integer range")]
    Overflow,
    /// The bucket name or key was refused.
    #[error("the bucket name or key is not valid")]
    Invalid,
}

impl CacheMessage {
    /// Encodes the message behind its version byte (the messages of a
    /// forwarded read or write by hand, in `wire`: the same bytes).
    pub fn encode(&self) -> Vec<u8> {
        wire::encode(self).unwrap_or_else(|| crate::versioned::encode(CACHE_PROTO, self))
    }

    /// Decodes a message; `None` for another version, trailing bytes or
    /// garbage.
    pub fn decode(bytes: &[u8]) -> Option<CacheMessage> {
        wire::decode(bytes).or_else(|| crate::versioned::decode(CACHE_PROTO, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeId;

    #[test]
    fn round_trip_and_bad_bytes_are_refused() {
        let m = CacheMessage::Put {
            request: 9,
            bucket: "sessions".into(),
            key: "k1".into(),
            entry: CacheEntry {
                ts: Timestamp {
                    wall_ms: 5,
                    logical: 1,
                    node: NodeId([1; 8]),
                },
                value: Some(b"v".to_vec()),
                expires_at_ms: Some(100),
            },
            ack: true,
            reply_to: "127.0.0.1:7946".parse().unwrap(),
        };
        let bytes = m.encode();
        assert_eq!(CacheMessage::decode(&bytes), Some(m));
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(CacheMessage::decode(&long), None);
        assert_eq!(CacheMessage::decode(&bytes[..bytes.len() - 1]), None);
        let mut other = bytes.clone();
        other[0] = CACHE_PROTO + 1;
        assert_eq!(CacheMessage::decode(&other), None);
        assert_eq!(CacheMessage::decode(&[]), None);
        assert_eq!(CacheMessage::decode(&[CACHE_PROTO, 0xff, 0xff]), None);
    }

    /// Appending `Incr` and `Counted` must leave the older variants' bytes
    /// as they were, so nodes of the previous release still read them.
    #[test]
    fn counters_round_trip_and_older_variants_keep_their_bytes() {
        let ack = CacheMessage::Ack {
            request: 7,
            stored: true,
        };
        // Variant 3, request 7, true: as the release before counters wrote it.
        assert_eq!(ack.encode(), vec![CACHE_PROTO, 3, 7, 1]);
        let incr = CacheMessage::Incr {
            request: 1,
            bucket: "rate".into(),
            key: "ip:10.0.0.1".into(),
            by: -3,
            ttl_ms: 60_000,
            checked: false,
            base: None,
            reply_to: "127.0.0.1:7946".parse().unwrap(),
        };
        assert_eq!(incr.encode()[1], 4, "Incr is appended");
        assert_eq!(CacheMessage::decode(&incr.encode()), Some(incr));
        for outcome in [
            IncrOutcome::Refused(CounterError::NotInteger),
            IncrOutcome::Refused(CounterError::Overflow),
            IncrOutcome::NotHeld,
            IncrOutcome::Stored(CacheEntry {
                ts: Timestamp {
                    wall_ms: 5,
                    logical: 0,
                    node: NodeId([2; 8]),
                },
                value: Some(b"42".to_vec()),
                expires_at_ms: None,
            }),
        ] {
            let m = CacheMessage::Counted {
                request: 2,
                outcome,
            };
            assert_eq!(CacheMessage::decode(&m.encode()), Some(m));
        }
        let known = CacheMessage::Known {
            request: 3,
            bucket: "sessions".into(),
            config: BucketConfig {
                ttl_ms: 60_000,
                max_entries: 10,
                replicas: 2,
            },
            reply_to: "127.0.0.1:7946".parse().unwrap(),
        };
        assert_eq!(known.encode()[1], 6, "Known is appended after Counted");
        assert_eq!(CacheMessage::decode(&known.encode()), Some(known));
    }

    #[test]
    fn names_and_configs_are_checked() {
        assert!(check_bucket("sessions").is_ok());
        assert!(check_bucket("a.b_c-1").is_ok());
        assert!(check_bucket("").is_err());
        assert!(check_bucket("a/b").is_err());
        assert!(check_bucket(&"x".repeat(65)).is_err());
        assert!(check_entry("", None).is_err());
        assert!(check_entry("k", Some(&vec![0; MAX_VALUE + 1])).is_err());
        assert!(check_entry("k", Some(b"v")).is_ok());
        let c: BucketConfig = serde_json::from_str(r#"{"ttl_ms": 5}"#).unwrap();
        assert_eq!(c.replicas, 2);
        assert!(c.validate().is_ok());
        assert!(BucketConfig { replicas: 0, ..c }.validate().is_err());
        assert!(serde_json::from_str::<BucketConfig>(r#"{"ttl": 5}"#).is_err());
    }
}
