//! The JSON shapes of the jobs and instances API (`/v1/jobs`,
//! `/v1/instances`, `/api/workloads`), shared by the agent that writes them
//! and the client that reads them.

use serde::{Deserialize, Serialize};

use crate::instance::Exit;
use crate::job::JobSpec;

/// One job as `GET /v1/jobs` and `GET /v1/jobs/{name}` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    /// The job's name.
    pub name: String,
    /// The current version (1 for the first deploy).
    pub version: u64,
    /// The pinned spore digest.
    pub spore: String,
    /// The spore as the operator gave it (`NAME@VERSION` or the digest).
    pub spore_ref: String,
    /// Stopped by the operator (`DELETE`): nothing runs, history stays.
    pub stopped: bool,
    /// Instances wanted now: `count`, or 0 once stopped.
    pub desired: u32,
    /// The job's `count`.
    pub count: u32,
    /// Instances with a live process (`launching`, `ready`, `draining`) on
    /// nodes that are up.
    pub running: u32,
    /// Instances `ready` on nodes that are up.
    pub ready: u32,
    /// Slots no node can take now, and why.
    pub pending: Vec<PendingSlot>,
    /// When version 1 was deployed (wall ms).
    pub created_ms: u64,
    /// When the current version was deployed or last scaled (wall ms).
    pub updated_ms: u64,
    /// The spec of the current version, its `spore` pinned to the digest.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: JobSpec,
    /// What may happen while the mesh is split: `allowed` or `never`.
    #[serde(default)]
    pub duplicates: String,
    /// The rollout in progress, derived from the instance records (the
    /// same on every node); `null` when every instance runs the current
    /// version.
    #[serde(default)]
    pub rollout: Option<RolloutInfo>,
}

/// A job's rollout as `GET /v1/jobs` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolloutInfo {
    /// The newest version the old instances run.
    pub from_version: u64,
    /// The version rolled out (the job's current one).
    pub to_version: u64,
    /// Slots replaced: their new instance proven healthy, or nothing to
    /// replace.
    pub done: u32,
    /// Slots to replace (the job's `count`).
    pub total: u32,
    /// `rolling`; `reverting` once a new instance failed and `auto_revert`
    /// brings the old version back; `halted` when it failed without
    /// `auto_revert` (old instances keep serving).
    pub state: String,
    /// Slots by phase: `waiting` (old only), `starting` (new launching),
    /// `proving` (new ready, not yet for `min_healthy_ms`).
    pub waiting: u32,
    /// See `waiting`.
    pub starting: u32,
    /// See `waiting`.
    pub proving: u32,
    /// Why it halted, when it did: the failing instance and its reason.
    pub failure: Option<String>,
}

/// A slot placement cannot put anywhere.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingSlot {
    /// The slot number.
    pub slot: u32,
    /// Why, in words (`no node has 50000000 MB of memory free`).
    pub reason: String,
}

/// What a `POST /v1/jobs` did.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeployChange {
    /// A new job, version 1 (answered 201).
    Created,
    /// A changed spec: a new version (answered 201).
    NewVersion,
    /// Only `count` changed: the same version, scaled.
    Scaled,
    /// A stopped job started again: a new version with the same spec
    /// (answered 201).
    Started,
    /// Stopped by the operator (`DELETE`); records stay for history.
    Stopped,
    /// The same spec as the current version: nothing written.
    Unchanged,
}

/// The answer of `POST /v1/jobs`, `scale`, `revert` and `DELETE`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployed {
    /// What changed.
    pub change: DeployChange,
    /// The job as it is now.
    pub job: JobInfo,
}

/// The body of `POST /v1/jobs/{name}/scale`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    /// The new count.
    pub count: u32,
}

/// The body of `POST /v1/jobs/{name}/revert` (may be empty).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevertRequest {
    /// The version to bring back; the one before the current when absent.
    #[serde(default)]
    pub version: Option<u64>,
}

/// One version of a job (`GET /v1/jobs/{name}/versions`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobVersionInfo {
    /// The version number.
    pub version: u64,
    /// Whether it is the current version.
    pub current: bool,
    /// The pinned spore digest.
    pub spore: String,
    /// The spore as the operator gave it.
    pub spore_ref: String,
    /// When it was deployed (wall ms).
    pub deployed_ms: u64,
    /// Its spec as deployed (`count` as deployed, not as later scaled).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: JobSpec,
}

/// One instance (`GET /v1/instances`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceInfo {
    /// The instance id.
    pub id: String,
    /// The job's name.
    pub job: String,
    /// The node that runs it (node id).
    pub node: String,
    /// That node's name (empty until its manifest arrives).
    pub node_name: String,
    /// `alive`, `suspect`, `down` or `left`: the node, as membership says.
    pub node_state: String,
    /// `launching`, `ready`, `failed`, `draining` or `stopped`.
    pub state: String,
    /// Where it listens (`ip:port`), empty before it started.
    pub addr: String,
    /// The spore digest it runs.
    pub digest: String,
    /// Restarts since it was first started.
    pub restarts: u32,
    /// Why it is in this state, in words.
    pub reason: String,
    /// The job version it runs.
    pub version: u64,
    /// The slot it fills.
    pub slot: u32,
    /// How its process last ended.
    pub last_exit: Option<Exit>,
    /// When it entered this state (wall ms).
    pub since_ms: u64,
}

/// The dry run of a job (`POST /v1/jobs/plan`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanInfo {
    /// The job's name.
    pub job: String,
    /// The version a deploy would make (the current one when unchanged).
    pub version: u64,
    /// One entry per slot.
    pub slots: Vec<SlotPlanInfo>,
}

/// Where one slot would go, and why the other nodes were not chosen.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SlotPlanInfo {
    /// The slot number.
    pub slot: u32,
    /// The chosen node's id; `None` when pending.
    pub node: Option<String>,
    /// The chosen node's name.
    pub node_name: Option<String>,
    /// Why no node takes it, when pending.
    pub pending: Option<String>,
    /// It stays where it runs now.
    pub kept: bool,
    /// Every node not chosen, and why.
    pub rejected: Vec<Rejected>,
}

/// A node not chosen for a slot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejected {
    /// The node id.
    pub node: String,
    /// Its name.
    pub node_name: String,
    /// Why, in words.
    pub reason: String,
}

/// A job as the seed path `/api/workloads` shows it (Mxc's vocabulary).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Workload {
    /// The workload id: the job's name.
    pub id: String,
    /// The job's name.
    pub name: String,
    /// `running` (all desired ready), `starting`, `pending` (some slot
    /// cannot be placed) or `stopped`.
    pub status: String,
    /// The spore digest.
    pub spore: String,
    /// The current version.
    pub version: u64,
    /// Instances wanted.
    pub desired: u32,
    /// Instances ready.
    pub ready: u32,
    /// The instances.
    pub instances: Vec<InstanceInfo>,
}
