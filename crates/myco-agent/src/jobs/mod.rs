//! The job runtime: the shell around the core's jobs `Controller`.
//!
//! - `act`, `survivors`: the runtime's handling of actions and of what
//!   the previous agent left (processes to adopt, dead directories).
//! - [`runtime`]: [`runtime::start`] spawns one task that owns the
//!   controller, feeds it views of the replicated state, process events and
//!   timeouts, and carries out its [`myco_core::jobs::controller::JobAction`]s
//!   with the mechanisms of [`crate::exec`] (through
//!   [`crate::exec::executor::Executor`]).
//! - [`view`]: building the controller's `View` from the mesh's published
//!   read view and membership snapshot, and telling when it changed.
//! - `writer`: the one task that writes instance records, in order per
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
pub mod fence;
pub mod runtime;
mod survivors;
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
    /// How long an instance replaced by a rollout drains before it is
    /// stopped (`MYCO_DRAIN_MS`).
    pub drain: std::time::Duration,
    /// The fence time of `duplicates = "never"` jobs (`MYCO_FENCE_MS`;
    /// see `myco_core::jobs::fence`).
    pub fence: std::time::Duration,
    /// How long a graceful stop waits for its instances' replacements to
    /// be ready elsewhere before it stops them anyway (`MYCO_HANDOFF_MS`;
    /// 0: no hand-off, instances run on for the next agent to adopt).
    pub handoff: std::time::Duration,
    /// Whether and how this node runs microVM instances (`MYCO_MICROVM`,
    /// `MYCO_QEMU`; see `exec::microvm`). Not detected by default.
    pub microvm: std::sync::Arc<crate::exec::microvm::MicroVmSupport>,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            ports: 20000..=29999,
            cgroups: crate::exec::CgroupConfig::default(),
            logs: crate::exec::LogLimits::default(),
            settle: myco_core::jobs::reconcile::DEFAULT_SETTLE,
            drain: myco_core::jobs::controller::DEFAULT_DRAIN,
            fence: myco_core::jobs::fence::DEFAULT_FENCE,
            handoff: DEFAULT_HANDOFF,
            microvm: std::sync::Arc::new(crate::exec::microvm::MicroVmSupport::undetected()),
        }
    }
}

/// How long a graceful stop waits for replacements by default: a
/// detection-free move (settle, spawn, first probes) takes a few seconds;
/// a workload slower to become ready is stopped at the bound anyway.
pub const DEFAULT_HANDOFF: std::time::Duration = std::time::Duration::from_secs(15);

/// A jobs setting from the environment that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?}: {want}")]
pub struct JobsConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What it should look like.
    pub want: &'static str,
}

impl JobsConfig {
    /// The defaults, changed by `MYCO_INSTANCE_PORTS=FIRST-LAST`,
    /// `MYCO_CGROUPS=off` and `MYCO_CGROUP_PARENT=PATH` when set. (The
    /// agent's options struct is built field by field by the CLI, so the
    /// environment is where these live until the config file has a
    /// `[jobs]` section.)
    pub fn from_env() -> Result<JobsConfig, JobsConfigError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`JobsConfig::from_env`] over any variable source.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<JobsConfig, JobsConfigError> {
        let mut c = JobsConfig::default();
        if let Some(v) = var("MYCO_INSTANCE_PORTS") {
            let bad = || JobsConfigError {
                var: "MYCO_INSTANCE_PORTS",
                value: v.clone(),
                want: "want FIRST-LAST, two ports with FIRST <= LAST, e.g. 20000-29999",
            };
            let (a, b) = v.split_once('-').ok_or_else(bad)?;
            let (a, b): (u16, u16) = (
                a.trim().parse().map_err(|_| bad())?,
                b.trim().parse().map_err(|_| bad())?,
            );
            if a == 0 || a > b {
                return Err(bad());
            }
            c.ports = a..=b;
        }
        if let Some(v) = var("MYCO_CGROUPS") {
            c.cgroups.enabled = match v.as_str() {
                "on" | "1" | "true" => true,
                "off" | "0" | "false" => false,
                _ => {
                    return Err(JobsConfigError {
                        var: "MYCO_CGROUPS",
                        value: v,
                        want: "want on or off",
                    });
                }
            };
        }
        c.microvm = std::sync::Arc::new(crate::exec::microvm::MicroVmSupport::detect(
            var("MYCO_MICROVM").as_deref(),
            var("MYCO_QEMU").as_deref(),
        ));
        if let Some(v) = var("MYCO_CGROUP_PARENT") {
            c.cgroups.parent = v;
        }
        let millis = |name: &'static str, range: std::ops::RangeInclusive<u64>, want| {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse()
                        .ok()
                        .filter(|ms| range.contains(ms))
                        .map(std::time::Duration::from_millis)
                        .ok_or(JobsConfigError {
                            var: name,
                            value: v.clone(),
                            want,
                        })
                })
                .transpose()
        };
        if let Some(d) = millis(
            "MYCO_DRAIN_MS",
            0..=600_000,
            "want milliseconds, 0 to 600000 (default 1500)",
        )? {
            c.drain = d;
        }
        // At least a probe round of a small mesh: a shorter fence time
        // would let the majority start before a minority noticed.
        if let Some(d) = millis(
            "MYCO_FENCE_MS",
            500..=600_000,
            "want milliseconds, 500 to 600000 (default 3000)",
        )? {
            c.fence = d;
        }
        if let Some(d) = millis(
            "MYCO_HANDOFF_MS",
            0..=600_000,
            "want milliseconds, 0 to 600000 (default 15000)",
        )? {
            c.handoff = d;
        }
        Ok(c)
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
    /// Healing and rollout decisions of this node, by kind
    /// (`JobEventKind::ALL` order).
    pub heal_events: [AtomicU64; myco_core::jobs::controller::JobEventKind::ALL.len()],
    /// Automatic reverts this node wrote (a failed rollout's version
    /// replaced by the one before).
    pub reverts_written: AtomicU64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_from_the_environment_are_checked() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = JobsConfig::from_vars(vars(&[
            ("MYCO_INSTANCE_PORTS", "30000-30010"),
            ("MYCO_CGROUPS", "off"),
        ]))
        .unwrap();
        assert_eq!(c.ports, 30000..=30010);
        assert!(!c.cgroups.enabled);
        for bad in ["30010-30000", "0-10", "30000", "a-b"] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(Box::new([("MYCO_INSTANCE_PORTS", bad)]));
            let e = JobsConfig::from_vars(vars(pairs)).unwrap_err();
            assert_eq!(e.var, "MYCO_INSTANCE_PORTS");
        }
        assert!(JobsConfig::from_vars(vars(&[("MYCO_CGROUPS", "maybe")])).is_err());
        let c = JobsConfig::from_vars(vars(&[("MYCO_DRAIN_MS", "250")])).unwrap();
        assert_eq!(c.drain, std::time::Duration::from_millis(250));
        for bad in ["-1", "soon", "600001"] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(Box::new([("MYCO_DRAIN_MS", bad)]));
            let e = JobsConfig::from_vars(vars(pairs)).unwrap_err();
            assert_eq!(e.var, "MYCO_DRAIN_MS");
        }
        let c = JobsConfig::from_vars(vars(&[("MYCO_FENCE_MS", "5000")])).unwrap();
        assert_eq!(c.fence, std::time::Duration::from_secs(5));
        for bad in ["499", "later", "600001"] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(Box::new([("MYCO_FENCE_MS", bad)]));
            let e = JobsConfig::from_vars(vars(pairs)).unwrap_err();
            assert_eq!(e.var, "MYCO_FENCE_MS");
        }
    }
}
