//! The job runtime: the shell around the core's jobs `Controller`.
//!
//! - [`runtime`]: [`runtime::start`] spawns one task that owns the
//!   controller, feeds it views of the replicated state, process events and
//!   timeouts, and carries out its [`myco_core::jobs::controller::JobAction`]s
//!   with the mechanisms of [`crate::exec`] (through
//!   [`crate::exec::executor::Executor`]).
//! - [`view`]: building the controller's `View` from the mesh's published
//!   read view and membership snapshot, and telling when it changed.
//! - [`writer`]: the one task that writes instance records, in order per
//!   key, batching what piles up.
//! - [`workflow`]: what the jobs API does (deploy, versions, scale, stop,
//!   revert, plan) on the replicated `jobs` tables.
//! - [`JobsShared`]: what the API reads (metrics, cgroup support, which
//!   instances run here) without reaching into the runtime's task.
//!
//! **Architecture Invariant:** the runtime writes to disk only when the
//! controller asks (an instance record changed) or a process starts (its
//! local record): an idle node with running instances writes nothing.

mod act;
pub mod runtime;
pub mod view;
pub mod workflow;
mod writer;

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use myco_proto::instance::InstanceState;

use crate::exec::CgroupSupport;

/// How the runtime runs instances.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Ports given to instances (`PORT`).
    pub ports: RangeInclusive<u16>,
    /// Where instance cgroups go, or off.
    pub cgroups: crate::exec::CgroupConfig,
    /// Log rotation bounds per stream.
    pub logs: crate::exec::LogLimits,
    /// How long the placement inputs must hold still before a node starts
    /// or moves anything (the core's settle period).
    pub settle: std::time::Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            ports: 20000..=29999,
            cgroups: crate::exec::CgroupConfig::default(),
            logs: crate::exec::LogLimits::default(),
            settle: myco_core::jobs::reconcile::DEFAULT_SETTLE,
        }
    }
}

/// Counters and gauges of the runtime, shared with the API.
#[derive(Debug, Default)]
pub struct JobsStats {
    /// Processes started (first starts and restarts).
    pub spawns: AtomicU64,
    /// Starts that failed (spore, unpack, command).
    pub spawn_failures: AtomicU64,
    /// Starts of an instance that had run here before (restarts in place).
    pub restarts: AtomicU64,
    /// Instances this node refused to start (its own capacity) and wrote
    /// as `failed` without ever spawning them.
    pub refusals: AtomicU64,
    /// Processes found running after an agent restart and adopted.
    pub adopted: AtomicU64,
    /// Instance records written (and deleted) by this node.
    pub records_written: AtomicU64,
    /// Records whose write failed (retried on the next change).
    pub record_write_failures: AtomicU64,
}

/// One local instance as the API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInstance {
    /// Its job.
    pub job: String,
    /// Its supervisor state.
    pub state: InstanceState,
    /// Its process, if one runs.
    pub pid: Option<u32>,
}

/// What the runtime publishes for the API.
#[derive(Debug)]
pub struct JobsShared {
    /// Counters.
    pub stats: JobsStats,
    /// What the node detected at start.
    pub cgroups: Arc<CgroupSupport>,
    /// Local instances by id, refreshed after every runtime step.
    local: Mutex<BTreeMap<String, LocalInstance>>,
}

impl JobsShared {
    /// Shared state for a runtime with this cgroup support.
    pub fn new(cgroups: Arc<CgroupSupport>) -> Arc<JobsShared> {
        Arc::new(JobsShared {
            stats: JobsStats::default(),
            cgroups,
            local: Mutex::new(BTreeMap::new()),
        })
    }

    /// The local instances now.
    pub fn local(&self) -> BTreeMap<String, LocalInstance> {
        self.local.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Local instances by state.
    pub fn by_state(&self) -> BTreeMap<InstanceState, u64> {
        let mut out = BTreeMap::new();
        for i in self.local().values() {
            *out.entry(i.state).or_default() += 1;
        }
        out
    }

    pub(crate) fn publish(&self, local: BTreeMap<String, LocalInstance>) {
        if let Ok(mut l) = self.local.lock() {
            *l = local;
        }
    }

    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
