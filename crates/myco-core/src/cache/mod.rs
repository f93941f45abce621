//! The cache's decisions, as pure functions and plain data (see
//! `myco_proto::cache` for the wire side):
//!
//! - [`owners`]: who holds a key: rendezvous (highest random weight)
//!   ranking of the live members for `(bucket, key)`; the first is the
//!   primary, the next `replicas - 1` its replicas. A membership change
//!   moves only the keys whose top ranks changed ([`owners::moves`]).
//! - [`store`]: one node's entries in memory: last-writer-wins merge by
//!   HLC timestamp, TTL (an expired entry is never returned; the time is
//!   passed in), LRU eviction per bucket by `max_entries` and across all
//!   buckets by a byte budget, every eviction counted.
//! - [`counter`]: the version an increment (`INCR`) writes, decided on
//!   the key's primary.
//!
//! Nothing here reads a clock or sends anything: the agent passes the
//! wall time in and carries out the moves.

pub mod counter;
pub mod owners;
pub mod store;

pub use owners::{Move, before_for_moves, handoff, moves, owners, rank};
pub use store::{CacheStats, CacheStore, Merge};
