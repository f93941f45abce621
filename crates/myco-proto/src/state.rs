//! Replicated state on the wire and on disk: hybrid logical clock
//! timestamps and the change records that carry last-writer-wins updates.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// A hybrid logical clock timestamp, ordered by wall time, then the logical
/// counter, then the writing node's id (the tie-break that makes every
/// timestamp unique and every merge deterministic).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Milliseconds since the Unix epoch, as the writer's HLC saw it.
    pub wall_ms: u64,
    /// Counter for events within one millisecond.
    pub logical: u32,
    /// The node that made the write.
    pub node: NodeId,
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.wall_ms, self.logical, self.node)
    }
}

impl fmt::Display for Timestamp {
    /// `WALL-LOGICAL-NODE`, the form the API shows as a version.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.wall_ms, self.logical, self.node)
    }
}

/// Which replicated table a change belongs to. A number, so a node keeps
/// and forwards changes to tables a newer release added.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Table(pub u8);

impl Table {
    /// The cluster config KV.
    pub const KV: Table = Table(1);
    /// Jobs (desired workloads).
    pub const JOBS: Table = Table(2);
    /// The spore index.
    pub const SPORES: Table = Table(3);
    /// Trusted publisher keys.
    pub const TRUST: Table = Table(4);
    /// Tombstone collection records, one per node (see [`crate::horizon`]).
    /// Internal: never collected, never below a horizon.
    pub const GC: Table = Table(5);
    /// Every version of every job, under `NAME/VERSION` (see
    /// [`crate::job::JobRecord`]).
    pub const JOB_VERSIONS: Table = Table(6);
    /// Instance records, under `JOB/ID` (see [`crate::instance`]).
    pub const INSTANCES: Table = Table(7);
    /// Cache bucket configs, under the bucket name (JSON
    /// [`crate::cache::BucketConfig`]). The entries themselves are not
    /// replicated state.
    pub const CACHE_BUCKETS: Table = Table(8);
    /// Node marks, under the node id (see [`crate::node_mark`]): which
    /// nodes are draining.
    pub const NODES: Table = Table(9);
}

/// One last-writer-wins write: a value, or a tombstone (`value: None`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Change {
    /// The table.
    pub table: Table,
    /// The key within the table.
    pub key: String,
    /// When and by whom it was written.
    pub ts: Timestamp,
    /// The value; `None` deletes.
    #[serde(with = "crate::bytes::option")]
    pub value: Option<Vec<u8>>,
}

impl Change {
    /// Bytes this change takes in memory and on the wire, roughly.
    pub fn size(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, Vec::len) + 32
    }
}

impl Table {
    /// The table's name in the API.
    pub fn name(self) -> String {
        match self {
            Table::KV => "kv".into(),
            Table::JOBS => "jobs".into(),
            Table::SPORES => "spores".into(),
            Table::TRUST => "trust".into(),
            Table::GC => "gc".into(),
            Table::JOB_VERSIONS => "job_versions".into(),
            Table::INSTANCES => "instances".into(),
            Table::CACHE_BUCKETS => "cache_buckets".into(),
            Table::NODES => "nodes".into(),
            Table(n) => n.to_string(),
        }
    }
}
