//! Process supervision mechanisms: how an instance is unpacked, started,
//! limited, logged, probed, found again after an agent restart, and
//! stopped. The policy (when to restart, what to start or stop) lives in
//! `myco-core`; this module only carries decisions out. It knows nothing of
//! the mesh loop: plain values in, results and [`Exit`] events out.
//!
//! One supervisor per node, no helper process per instance:
//!
//! - [`instance_dir`]: `DATA_DIR/instances/<id>/` is the working directory
//!   (the unpacked spore); the agent's own files for it live in its `.myco/`
//!   (record, logs). Volumes are `DATA_DIR/volumes/<job>/<name>/`.
//! - [`process`]: [`spawn`] starts the command in its own session and
//!   process group, inside its cgroup from the first instruction, with
//!   stdout/stderr on `O_APPEND` files (no pipe to the agent), and writes
//!   the [`InstanceRecord`]. [`stop`] sends SIGTERM to the group, then
//!   SIGKILL and kills through the cgroup. [`Exits`] reports exits of
//!   children and of adopted processes.
//! - [`cgroup`]: [`CgroupSupport::detect`] (v2, v1 controllers, or none,
//!   with the reason), [`InstanceCgroup`] limits, usage and kill.
//! - [`logs`]: rotation by copy-truncate, [`logs::tail`], [`logs::Follow`]
//!   (with [`logs::Follow::with_tail`] for `tail=N&follow=true`).
//! - [`probe`]: http, tcp and exec health checks with a timeout, bounded
//!   concurrency through [`Prober`].
//! - [`ports`]: [`PortPool`] hands out ports never in use nor leased.
//! - [`record`]: the per-instance record and [`record::scan`], which tells a
//!   live instance of ours from a dead one or a reused pid.
//! - [`microvm`]: `driver = "microvm"`: QEMU as the instance's process
//!   (command line, support detection); [`qmp`]: its clean stop and the
//!   guest side of its `tcp` health checks, through QEMU's QMP socket.
//! - [`executor`]: what the jobs runtime (`crate::jobs`) calls: ports kept
//!   per instance across restarts, live processes and cgroups by instance,
//!   a whole spawn from a job record ([`executor::SpawnJob`]), probes,
//!   stops and cleanup.
//!
//! What the integrator must provide: run as root for cgroups (without,
//! instances run unlimited and [`CgroupSupport`] says why); hand every
//! spawned child to [`Exits::watch_child`] (that is what reaps it: no
//! zombies); call [`logs::rotate_if_needed`] on a timer; fetch the spore
//! (`spores::SporeStore`) before [`instance_dir::prepare`].

pub mod cgroup;
pub mod executor;
pub mod fence_guard;
pub mod instance_dir;
pub mod logs;
pub mod microvm;
pub mod ports;
pub mod probe;
pub mod process;
pub mod qmp;
pub mod record;

mod procfs;

use std::path::PathBuf;

pub use cgroup::{CgroupConfig, CgroupSupport, CgroupVersion, InstanceCgroup, ResourceLimits};
pub use logs::{LogLimits, LogStream};
pub use ports::PortPool;
pub use probe::{ProbeKind, ProbeResult, Prober, probe};
pub use process::{
    Exit, ExitKind, Exits, LaunchSpec, Launched, StopOutcome, StopTarget, spawn, stop,
};
pub use record::{Found, InstanceRecord, Liveness};

/// Why an exec operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A file or directory operation failed.
    #[error("{what} ({path}): {source}; check the data dir's permissions and free space")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spore did not verify or could not be unpacked.
    #[error("spore refused: {0}; push a spore signed by a trusted publisher")]
    Spore(#[from] myco_spore::SporeError),
    /// The spore's payload uses the name the agent keeps for itself.
    #[error(
        "the spore contains `.myco` at its root, which the agent reserves; rename it and pack again"
    )]
    ReservedName,
    /// An instance, job or volume name that cannot be a directory name.
    #[error("invalid {what} {name:?}: use 1-128 of [A-Za-z0-9._-], not starting with `.` or `-`")]
    BadName {
        /// Which kind of name.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A volume's path names something the spore already has there.
    #[error(
        "volume {name:?} cannot be at {path:?}: the spore has a file or directory there; choose a path the spore does not use"
    )]
    VolumeTaken {
        /// The volume.
        name: String,
        /// Its path in the instance directory.
        path: String,
    },
    /// The launch spec has no command.
    #[error("the instance has no command to run; the spore manifest must name one")]
    EmptyCommand,
    /// Every port of the range is leased or in use.
    #[error("no free port in {first}-{last}: widen the agent's port range or run fewer instances")]
    NoPort {
        /// First port of the range.
        first: u16,
        /// Last port of the range.
        last: u16,
    },
    /// The instance's cgroup could not be made or configured.
    #[error("cgroup {path}: {source}; run the agent as root, or disable cgroups in its config")]
    Cgroup {
        /// The cgroup file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The command could not be started.
    #[error(
        "cannot start {program}: {source}; check that it exists in the spore and is executable"
    )]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A microVM instance cannot be started as asked.
    #[error("microVM: {0}")]
    MicroVm(String),
    /// The process exited before it could be recorded.
    #[error("the instance exited at once (pid {0}); see its logs")]
    ExitedAtStart(u32),
    /// An instance record on disk is not readable.
    #[error("instance record {path}: {reason}; remove the instance directory if it is stale")]
    BadRecord {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl ExecError {
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ExecError::Io { what, path, source }
    }
}

/// Checks a name used as a directory component (instance, job, volume).
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<(), ExecError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ExecError::BadName {
            what,
            name: name.to_owned(),
        })
    }
}
