//! Jobs: the spec an operator writes (TOML for the CLI, the same schema as
//! JSON for the API), its validation, and the replicated record kept in
//! `Table::JOBS` (current version) and `Table::JOB_VERSIONS` (history).
//!
//! Parsing refuses unknown fields everywhere and fills in the defaults a
//! user would expect (Nomad's where Nomad has one): `count = 1`,
//! `strategy = "spread"`, `driver = "exec"`, `duplicates = "allowed"`,
//! `cpu_milli = 100`, `memory_mb = 64`, `pids = 256`, `vcpus = 1`, restart 3 attempts per
//! 5 min with a 1 s first delay doubling (`backoff = 2`) up to 30 s (`[restart]`
//! durations also as `delay = "1.5s"`, see `duration`), `kill_timeout_ms =
//! 5000`, health every 10 s with a 1 s timeout, healthy after 1 success,
//! unhealthy after 3 failures; `[update] max_parallel = 1, min_healthy_ms =
//! 10000, healthy_deadline_ms = 300000, auto_revert = true`; `[edge]
//! balance = "least_requests"`.
//!
//! ```toml
//! name = "hello"
//! spore = "hello@1.0.0"          # or "sha256:<64 hex>"
//! count = 3
//! [resources]
//! memory_mb = 64
//! [constraints]
//! zone = ["a", "b"]              # see `Constraint` for the syntax
//! [health]
//! http = "/health"
//! ```
//!
//! [`JobSpec::from_toml`] and [`JobSpec::from_json`] parse and validate in
//! one step; errors name the field (`count: must be 1..=1000`).

mod constraint;
mod duration;
mod edge;
mod record;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use constraint::Constraint;
pub use edge::{Balance, EdgeSpec};
pub use record::{JOB_RECORD_FORMAT, JOB_RECORD_FORMAT_EDGE, JobRecord, JobRecordError};
pub use validate::{JobSpecError, SporeRef};

/// One job: what to run, how many, where, and how to supervise it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name: `[a-z0-9-]`, 1 to 63 characters, not starting or
    /// ending with `-` (it appears in URLs and `Host` headers).
    pub name: String,
    /// The spore to run: `sha256:<hex>` or `NAME@VERSION` of a pushed spore
    /// (pinned to its digest when the job is deployed).
    pub spore: String,
    /// How many instances (slots) to run, 1 to 1000.
    #[serde(default = "defaults::count")]
    pub count: u32,
    /// How slots are spread over nodes.
    #[serde(default)]
    pub strategy: Strategy,
    /// How instances are run.
    #[serde(default)]
    pub driver: Driver,
    /// What may happen while the mesh is split.
    #[serde(default)]
    pub duplicates: Duplicates,
    /// Extra environment variables for every instance.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What one instance needs from its node.
    #[serde(default)]
    pub resources: Resources,
    /// Node tags that must match, by tag key.
    #[serde(default)]
    pub constraints: BTreeMap<String, Constraint>,
    /// The health check; without one, a running instance counts as healthy.
    #[serde(default)]
    pub health: Option<Health>,
    /// How a new version replaces the old one.
    #[serde(default)]
    pub update: Update,
    /// When a crashed instance is restarted, and when its node gives up.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How long a stopped instance gets between SIGTERM and SIGKILL.
    #[serde(default = "defaults::kill_timeout_ms")]
    pub kill_timeout_ms: u64,
    /// Directories that outlive instances of this job on a node.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// How the edge gateway spreads the job's requests (`[edge]`). Last, and
    /// left out of format 2 records (see [`JobRecord`]).
    #[serde(default)]
    pub edge: EdgeSpec,
}

/// How placement spreads a job's slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Across nodes, and across the `zone` tag when nodes carry one.
    #[default]
    Spread,
    /// Onto the most allocated node that fits, to keep others free.
    Pack,
}

/// How an instance is run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// A native process group, in cgroups where the kernel allows.
    #[default]
    Exec,
    /// A QEMU microVM (KVM) booting the spore's kernel and initramfs; the
    /// QEMU process is the instance's process. Only nodes whose manifest
    /// carries [`MICROVM_TAG`] can run it.
    Microvm,
}

/// The manifest tag a node sets (to the hypervisor it found) when it can
/// run [`Driver::Microvm`] instances: `/dev/kvm` usable and QEMU present.
/// A tag rather than a manifest field, so the manifest's wire format (and
/// older nodes reading it) stay as they are.
pub const MICROVM_TAG: &str = "myco.microvm";

/// Memory a microVM instance takes besides its guest's, reserved by
/// placement and added to its cgroup limit: QEMU's own resident memory
/// (device model, slirp, its heap, under TCG its translation cache);
/// `bench/microvm/bench.sh` measured 166 MiB resident for a 96 MiB guest
/// under TCG (70 MiB over), so 96 leaves room.
pub const MICROVM_OVERHEAD_MB: u32 = 96;

/// What may happen while the mesh is split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Duplicates {
    /// Every side keeps `count` instances; extras stop when the split heals.
    #[default]
    Allowed,
    /// An instance runs on at most one side.
    Never,
}

/// What one instance needs from its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU in thousandths of a core.
    #[serde(default = "defaults::cpu_milli")]
    pub cpu_milli: u32,
    /// Memory in MiB (the cgroup limit, and what placement reserves).
    #[serde(default = "defaults::memory_mb")]
    pub memory_mb: u32,
    /// Most processes and threads the instance may have.
    #[serde(default = "defaults::pids")]
    pub pids: u32,
    /// Virtual CPUs of a microVM (`driver = "microvm"`); unused by `exec`.
    #[serde(default = "defaults::vcpus")]
    pub vcpus: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_milli: defaults::cpu_milli(),
            memory_mb: defaults::memory_mb(),
            pids: defaults::pids(),
            vcpus: defaults::vcpus(),
        }
    }
}

/// The health check of an instance: exactly one of `http`, `tcp` or `exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `GET` this path on the instance's `PORT`; 2xx and 3xx are healthy.
    #[serde(default)]
    pub http: Option<String>,
    /// Connect to the instance's `PORT`.
    #[serde(default)]
    pub tcp: bool,
    /// Run this command in the instance's directory; exit 0 is healthy.
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    /// Time between two probes.
    #[serde(default = "defaults::interval_ms")]
    pub interval_ms: u64,
    /// A probe that takes longer failed.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes before an instance is `ready`.
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures before a ready instance is restarted.
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

/// Which probe a [`Health`] asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe<'a> {
    /// An HTTP `GET` of this path.
    Http(&'a str),
    /// A TCP connect.
    Tcp,
    /// A command.
    Exec(&'a [String]),
}

impl Health {
    /// The probe to run; `None` only for a spec that failed validation.
    pub fn probe(&self) -> Option<Probe<'_>> {
        match (&self.http, self.tcp, &self.exec) {
            (Some(path), false, None) => Some(Probe::Http(path)),
            (None, true, None) => Some(Probe::Tcp),
            (None, false, Some(cmd)) => Some(Probe::Exec(cmd)),
            _ => None,
        }
    }
}

/// How a new version replaces the old one (blue/green).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// Slots replaced at the same time.
    #[serde(default = "defaults::max_parallel")]
    pub max_parallel: u32,
    /// A new instance must stay healthy this long to count.
    #[serde(default = "defaults::min_healthy_ms")]
    pub min_healthy_ms: u64,
    /// A new instance not healthy by then failed the rollout.
    #[serde(default = "defaults::healthy_deadline_ms")]
    pub healthy_deadline_ms: u64,
    /// Go back to the previous version when a rollout fails.
    #[serde(default = "defaults::yes")]
    pub auto_revert: bool,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            max_parallel: defaults::max_parallel(),
            min_healthy_ms: defaults::min_healthy_ms(),
            healthy_deadline_ms: defaults::healthy_deadline_ms(),
            auto_revert: true,
        }
    }
}

/// When a node restarts a failed instance, and when it gives up.
///
/// The delay before restart `n` (1-based) is `delay_ms * backoff^(n-1)`, capped
/// at `max_delay_ms`, then moved by up to `jitter_percent` either way. After
/// `attempts` restarts within `interval_ms`, the next failure is a crash
/// loop: the node releases the slot and placement avoids it for this job
/// during `avoid_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Restarts allowed within `interval_ms`.
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,
    /// The window restarts are counted in (`interval = "30m"` too).
    #[serde(
        default = "defaults::restart_interval_ms",
        alias = "interval",
        deserialize_with = "duration::ms"
    )]
    pub interval_ms: u64,
    /// Delay before the first restart (`delay = "15s"` too).
    #[serde(
        default = "defaults::delay_ms",
        alias = "delay",
        deserialize_with = "duration::ms"
    )]
    pub delay_ms: u64,
    /// Factor between two delays: 2 doubles, 1 keeps the delay constant
    /// (a whole float such as `2.0` is taken too).
    #[serde(default = "defaults::backoff", deserialize_with = "duration::factor")]
    pub backoff: u32,
    /// Longest delay, however many restarts (`max_delay = "5m"` too).
    #[serde(
        default = "defaults::max_delay_ms",
        alias = "max_delay",
        deserialize_with = "duration::ms"
    )]
    pub max_delay_ms: u64,
    /// Random spread of each delay, in percent either way.
    #[serde(default = "defaults::jitter_percent")]
    pub jitter_percent: u32,
    /// How long a node that gave up is avoided for this job.
    #[serde(default = "defaults::avoid_ms")]
    pub avoid_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            attempts: defaults::attempts(),
            interval_ms: defaults::restart_interval_ms(),
            delay_ms: defaults::delay_ms(),
            backoff: defaults::backoff(),
            max_delay_ms: defaults::max_delay_ms(),
            jitter_percent: defaults::jitter_percent(),
            avoid_ms: defaults::avoid_ms(),
        }
    }
}

/// A directory under the agent's data dir that outlives the instances of
/// one job on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// The volume's name (`[a-z0-9-]`), unique within the job.
    pub name: String,
    /// Where the instance finds it, relative to its working directory.
    pub path: String,
}

impl JobSpec {
    /// Parses a job file and validates it.
    pub fn from_toml(text: &str) -> Result<JobSpec, JobSpecError> {
        let spec: JobSpec = toml::from_str(text).map_err(|e| JobSpecError::Toml(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses an API body and validates it.
    pub fn from_json(bytes: &[u8]) -> Result<JobSpec, JobSpecError> {
        let spec: JobSpec =
            serde_json::from_slice(bytes).map_err(|e| JobSpecError::Json(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// What placement and the node reserve for one instance: the job's
    /// `[resources]`, with QEMU's own memory added for a microVM (whose
    /// guest gets all of `memory_mb`).
    pub fn reserved(&self) -> Resources {
        let mut r = self.resources;
        if self.driver == Driver::Microvm {
            r.memory_mb = r.memory_mb.saturating_add(MICROVM_OVERHEAD_MB);
        }
        r
    }

    /// The spec as JSON, the form the API answers with.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("job specs always encode")
    }
}

/// Default values, one function each because serde wants functions.
mod defaults {
    pub(super) fn count() -> u32 {
        1
    }
    pub(super) fn cpu_milli() -> u32 {
        100
    }
    pub(super) fn memory_mb() -> u32 {
        64
    }
    pub(super) fn pids() -> u32 {
        256
    }
    pub(super) fn vcpus() -> u32 {
        1
    }
    pub(super) fn kill_timeout_ms() -> u64 {
        5_000
    }
    pub(super) fn interval_ms() -> u64 {
        10_000
    }
    pub(super) fn timeout_ms() -> u64 {
        1_000
    }
    pub(super) fn healthy_threshold() -> u32 {
        1
    }
    pub(super) fn unhealthy_threshold() -> u32 {
        3
    }
    pub(super) fn max_parallel() -> u32 {
        1
    }
    pub(super) fn min_healthy_ms() -> u64 {
        10_000
    }
    pub(super) fn healthy_deadline_ms() -> u64 {
        300_000
    }
    pub(super) fn yes() -> bool {
        true
    }
    // Restarts: quick at first (a process that died of a passing cause is
    // back in about a second), doubling to 30 s; after 3 in 5 minutes the
    // node gives the slot up so another node can try. Nomad waits 15 s
    // before the first restart and allows 2 per 30 minutes, which leaves a
    // slot empty for a long time over one bad node.
    pub(super) fn attempts() -> u32 {
        3
    }
    pub(super) fn restart_interval_ms() -> u64 {
        5 * 60_000
    }
    pub(super) fn delay_ms() -> u64 {
        1_000
    }
    pub(super) fn backoff() -> u32 {
        2
    }
    pub(super) fn max_delay_ms() -> u64 {
        30_000
    }
    pub(super) fn jitter_percent() -> u32 {
        25
    }
    pub(super) fn avoid_ms() -> u64 {
        10 * 60_000
    }
}

#[cfg(test)]
mod tests;
