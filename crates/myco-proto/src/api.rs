//! JSON shapes of the HTTP API, shared by the agent (which writes them) and
//! the CLI (which reads them). Kept apart from internal state on purpose.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Resources as the API shows them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_milli: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
}

/// One member of the mesh (`GET /v1/nodes`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    /// Node id (16 hex digits).
    pub id: String,
    /// Node name (empty until its manifest arrives).
    pub name: String,
    /// Mesh address.
    pub addr: String,
    /// `alive`, `suspect`, `down` or `left`.
    pub state: String,
    /// Handing its instances off before it leaves (a graceful stop under
    /// way): up, but placement chooses it for nothing.
    #[serde(default)]
    pub draining: bool,
    /// Placement tags.
    pub tags: BTreeMap<String, String>,
    /// Detected capacity.
    pub capacity: Resources,
    /// Resources allocated to instances on the node.
    pub allocated: Resources,
    /// The node's HTTP API address, if known.
    pub api: Option<String>,
    /// The node's edge gateway address, if known.
    pub edge: Option<String>,
    /// The Myco version it runs, if known.
    pub version: Option<String>,
    /// Whether this entry is the answering node itself.
    pub is_self: bool,
    /// Milliseconds since the state last changed, as seen by the answering node.
    pub state_age_ms: u64,
    /// Live CPU and memory use, as the node last reported it; `null` when
    /// it has not answered lately (down, or an older release).
    #[serde(default)]
    pub usage: Option<NodeUsage>,
}

/// A node's own CPU and memory use, sampled from procfs every few seconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeUsage {
    /// CPU busy on the whole machine, in thousandths of a core.
    pub cpu_milli: u64,
    /// CPU busy, in percent of all the machine's cores.
    pub cpu_percent: u32,
    /// Memory in use on the machine (total less available), bytes.
    pub mem_bytes: u64,
    /// The machine's memory, bytes.
    pub mem_total_bytes: u64,
    /// Resident memory of the agent process, bytes.
    pub agent_rss_bytes: u64,
    /// How old the sample is, as the answering node saw it arrive (ms).
    #[serde(default)]
    pub age_ms: u64,
}

/// Counts of members by state.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberCounts {
    /// Members in state alive (self included).
    pub alive: usize,
    /// Members suspected of failure.
    pub suspect: usize,
    /// Members declared down.
    pub down: usize,
    /// Members that left on purpose.
    pub left: usize,
}

/// Counts of jobs, from the replicated job records.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobCounts {
    /// Every job, stopped ones included.
    pub total: usize,
    /// Jobs not stopped with at least one instance running (`launching`,
    /// `ready` or `draining`) on a node that is up.
    pub running: usize,
    /// Jobs stopped by the operator.
    pub stopped: usize,
}

/// Counts of instances by state, on nodes that are up (as `GET
/// /v1/instances` lists them).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceCounts {
    /// Started, not yet healthy.
    pub launching: usize,
    /// Healthy: the edge routes to them.
    pub ready: usize,
    /// Exited or unhealthy.
    pub failed: usize,
    /// Being replaced or moved.
    pub draining: usize,
    /// Stopped on purpose.
    pub stopped: usize,
}

/// The mesh as one node sees it: members by state (`alive`, `suspect`,
/// `down`, `left`), jobs and instances.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterSummary {
    /// Members by state (their counts sit in this object itself).
    #[serde(flatten)]
    pub members: MemberCounts,
    /// Jobs (absent from agents before this field: zero).
    #[serde(default)]
    pub jobs: JobCounts,
    /// Instances by state (absent from agents before this field: zero).
    #[serde(default)]
    pub instances: InstanceCounts,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// This node.
    pub node: NodeInfo,
    /// The mesh as this node sees it: members, jobs, instances.
    pub cluster: ClusterSummary,
    /// Id of the cluster key this node seals with.
    pub cluster_key_id: String,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// The Myco version.
    pub version: String,
}

/// `POST /v1/peers`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeerAdd {
    /// `host:port` of a peer's mesh port.
    pub addr: String,
}

/// Error body of every non-2xx answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// What went wrong and what to do about it.
    pub error: String,
}

/// One entry of `GET /v1/kv?prefix=P`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The value as text, when it is UTF-8.
    pub value: Option<String>,
    /// The value in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// The version (`WALL-LOGICAL-NODE`).
    pub version: String,
}

/// One page of `GET /v1/kv?prefix=P[&limit=N][&cursor=C]`: entries in key
/// order, and where the next page starts (`None` on the last page). A page
/// ends at `limit` entries or at the agent's byte budget, whichever first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvPage {
    /// The entries of this page.
    pub entries: Vec<KvEntry>,
    /// Pass as `cursor` to get the next page; `None` when this was the last.
    pub next: Option<String>,
}

/// The answer to a KV write or delete.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvWritten {
    /// The key.
    pub key: String,
    /// The version the write got.
    pub version: String,
    /// Whether it was a delete.
    pub deleted: bool,
}

/// One server-sent event of `GET /v1/events` (the SSE `data:` line).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ApiEvent {
    /// A replicated key changed.
    State {
        /// `kv`, `jobs`, `spores`, `trust` or the table number.
        table: String,
        /// The key.
        key: String,
        /// The new version.
        version: String,
        /// Whether it was deleted.
        deleted: bool,
    },
    /// A member changed state.
    Member {
        /// Its id.
        id: String,
        /// Its name (empty until its manifest arrived).
        #[serde(default)]
        name: String,
        /// `alive`, `suspect`, `down` or `left`.
        state: String,
        /// The state before this change (`None` for a member seen first).
        #[serde(default)]
        previous: Option<String>,
    },
    /// A healing or rollout decision of the node answering: a slot moved
    /// off a dead node, a rollout step, a rollout done, failed, reverted.
    Job {
        /// `moved`, `rollout_step`, `rollout_done`, `rollout_failed` or
        /// `reverted`.
        kind: String,
        /// The job.
        job: String,
        /// The decision and its reason, one line.
        message: String,
    },
    /// This subscriber fell behind and missed this many events.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// A spore as `GET /v1/spores` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SporeInfo {
    /// `sha256:<hex>` of the whole file.
    pub digest: String,
    /// Name from the manifest.
    pub name: String,
    /// Version from the manifest.
    pub version: String,
    /// Bytes.
    pub size: u64,
    /// Publisher public key, hex.
    pub publisher: String,
    /// Node ids that hold the file.
    pub holders: Vec<String>,
    /// Whether the answering node holds it.
    pub local: bool,
}

/// The spore index record kept in replicated state (table `spores`,
/// key = digest).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SporeRecord {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Bytes.
    pub size: u64,
    /// Publisher key, hex.
    pub publisher: String,
    /// Unix seconds, from the manifest.
    pub created_at: u64,
}

/// A trusted publisher key (`GET /v1/trust`, `POST /v1/trust`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrustedKey {
    /// Ed25519 public key, 64 hex digits.
    pub key: String,
    /// Free text, e.g. who it belongs to.
    #[serde(default)]
    pub comment: String,
}
