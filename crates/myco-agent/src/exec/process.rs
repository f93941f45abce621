//! Starting, stopping and watching instance processes.
//!
//! [`spawn`] starts the command as the leader of a new session (so also of
//! a new process group), inside its cgroup before it runs a single
//! instruction of its own (no fork can escape between start and placement),
//! with stdin from `/dev/null` and stdout/stderr on `O_APPEND` log files.
//! Nothing ties it to the agent: no pipe, no `PR_SET_PDEATHSIG`, every other
//! descriptor of the agent is close-on-exec. The agent can die and the
//! instance runs on; the record lets the next agent find it.
//!
//! [`stop`]: SIGTERM to the group and every member of the session and
//! cgroup, then, after the kill timeout, SIGKILL to all of them and a kill
//! through the cgroup, until none is left.
//!
//! [`Exits`] reports exits: a child is awaited (which also reaps it, so no
//! zombie is left) and gives its code or signal; an adopted process (not
//! our child, found by `record::scan` after a restart) is polled in
//! `/proc` every [`ADOPTED_POLL`], and its exit status is unknowable.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::mpsc;

use super::cgroup::{CgroupSupport, InstanceCgroup, ResourceLimits};
use super::logs::{self, LogStream};
use super::probe::resolve;
use super::record::{self, InstanceRecord, Liveness, RECORD_FORMAT};
use super::{ExecError, check_name, procfs};

/// How often an adopted process is looked for in `/proc`.
pub const ADOPTED_POLL: Duration = Duration::from_secs(1);
/// How long a stop waits after SIGKILL before it reports stragglers.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often a stop looks whether the instance is gone.
const STOP_POLL: Duration = Duration::from_millis(20);
/// The `PATH` an instance gets unless its job sets one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Instance id (`MYCO_INSTANCE`).
    pub instance: String,
    /// Job name (`MYCO_JOB`).
    pub job: String,
    /// Slot within the job.
    pub slot: u32,
    /// Job version.
    pub version: String,
    /// Spore digest.
    pub digest: String,
    /// This node's id (`MYCO_NODE`).
    pub node: String,
    /// The instance directory (working directory, see `instance_dir`).
    pub dir: PathBuf,
    /// Program and arguments; a relative program is in `dir`.
    pub argv: Vec<String>,
    /// The spore's and the job's environment (the job's wins; the caller
    /// merges). `PORT` and `MYCO_*` are set over it.
    pub env: BTreeMap<String, String>,
    /// The port leased for it (`PORT`).
    pub port: u16,
    /// Its cgroup limits.
    pub limits: ResourceLimits,
}

/// A started instance.
#[derive(Debug)]
pub struct Launched {
    /// The record written for it.
    pub record: InstanceRecord,
    /// Its cgroup, if the node has cgroups.
    pub cgroup: Option<InstanceCgroup>,
    /// The child handle: give it to [`Exits::watch_child`], which reaps it.
    pub child: Child,
}

impl Launched {
    /// What [`stop`] needs.
    pub fn target(&self) -> StopTarget<'_> {
        StopTarget {
            pid: self.record.pid,
            start_time: self.record.start_time,
            cgroup: self.cgroup.as_ref(),
        }
    }
}

/// Starts an instance and writes its record. Must run inside a tokio
/// runtime; it blocks for the record's fsync (a few ms), so a busy loop
/// should call it from `spawn_blocking`. On error nothing is left running.
pub fn spawn(spec: LaunchSpec, cgroups: &CgroupSupport) -> Result<Launched, ExecError> {
    check_name("instance id", &spec.instance)?;
    let program = resolve(spec.argv.first().ok_or(ExecError::EmptyCommand)?, &spec.dir);
    let stdout = logs::open_for_child(&spec.dir, LogStream::Stdout)
        .map_err(ExecError::io("opening the stdout log", &spec.dir))?;
    let stderr = logs::open_for_child(&spec.dir, LogStream::Stderr)
        .map_err(ExecError::io("opening the stderr log", &spec.dir))?;
    let cgroup = InstanceCgroup::create(cgroups, &spec.instance, &spec.limits)?;
    let procs: Vec<OwnedFd> = match &cgroup {
        Some(cg) => match cg.procs_files() {
            Ok(files) => files.into_iter().map(OwnedFd::from).collect(),
            Err(e) => {
                let _ = cg.remove();
                return Err(e);
            }
        },
        None => Vec::new(),
    };
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&spec.argv[1..])
        .current_dir(&spec.dir)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(&spec.env)
        .env("PORT", spec.port.to_string())
        .env("MYCO_JOB", &spec.job)
        .env("MYCO_INSTANCE", &spec.instance)
        .env("MYCO_NODE", &spec.node)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false);
    install_pre_exec(&mut command, procs);
    let child = match command.spawn() {
        Ok(c) => c,
        Err(source) => {
            if let Some(cg) = &cgroup {
                let _ = cg.remove();
            }
            return Err(ExecError::Spawn {
                program: program.display().to_string(),
                source,
            });
        }
    };
    let pid = child.id().ok_or(ExecError::ExitedAtStart(0))?;
    match record_started(&spec, pid, cgroup.as_ref()) {
        Ok(record) => {
            tracing::debug!(instance = %spec.instance, pid, "instance started");
            Ok(Launched {
                record,
                cgroup,
                child,
            })
        }
        Err(e) => {
            // A process nobody could find again must not run on.
            // Dropping the child hands it to tokio's orphan reaper.
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            Err(e)
        }
    }
}

/// Sets the child up between fork and exec: join the cgroup, then become
/// a session (and group) leader.
#[allow(unsafe_code)]
fn install_pre_exec(command: &mut tokio::process::Command, procs: Vec<OwnedFd>) {
    let hook = move || -> std::io::Result<()> {
        for fd in &procs {
            // "0" moves the writing process itself.
            nix::unistd::write(fd, b"0")
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        }
        nix::unistd::setsid().map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed. It makes only write(2) and
    // setsid(2) on descriptors opened before the fork, allocates nothing
    // (io::Error::from_raw_os_error does not allocate), and takes no lock.
    unsafe {
        command.pre_exec(hook);
    }
}

fn record_started(
    spec: &LaunchSpec,
    pid: u32,
    cgroup: Option<&InstanceCgroup>,
) -> Result<InstanceRecord, ExecError> {
    let proc_err = ExecError::io("reading /proc", format!("/proc/{pid}/stat"));
    // The child is not reaped before we wait for it, so its stat exists.
    let stat = procfs::stat(pid)
        .map_err(proc_err)?
        .ok_or(ExecError::ExitedAtStart(pid))?;
    let boot_id = procfs::boot_id().map_err(ExecError::io(
        "reading the boot id",
        "/proc/sys/kernel/random/boot_id",
    ))?;
    let record = InstanceRecord {
        format: RECORD_FORMAT,
        instance: spec.instance.clone(),
        job: spec.job.clone(),
        slot: spec.slot,
        version: spec.version.clone(),
        digest: spec.digest.clone(),
        pid,
        start_time: stat.start_time,
        boot_id,
        port: spec.port,
        cgroup: cgroup.map(InstanceCgroup::to_record),
        started_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    record::write(&spec.dir, &record)?;
    Ok(record)
}

/// Which process a stop is for.
#[derive(Debug, Clone, Copy)]
pub struct StopTarget<'a> {
    /// The session and group leader's pid.
    pub pid: u32,
    /// Its start time, so a reused pid is never signalled.
    pub start_time: u64,
    /// The instance's cgroup, which catches processes that left the group.
    pub cgroup: Option<&'a InstanceCgroup>,
}

/// How a stop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Nothing of the instance was running.
    AlreadyGone,
    /// Everything exited after SIGTERM within the kill timeout.
    Terminated,
    /// Something outlived the timeout and was killed.
    Killed,
    /// These processes survived SIGKILL (e.g. stuck in uninterruptible I/O).
    Stuck(Vec<i32>),
}

/// The live members of an instance. Its cgroup holds every descendant,
/// so when it is readable it is the whole answer (and cheap); otherwise the
/// group and session, found by a scan of `/proc`, unless the leader's pid
/// now belongs to someone else, which means they are gone too (a pid is not
/// reused while it names a live group or session).
fn members(target: &StopTarget<'_>) -> BTreeSet<i32> {
    let live = |p: &i32| {
        procfs::stat(*p as u32)
            .ok()
            .flatten()
            .is_some_and(|s| !s.is_zombie())
    };
    if let Some(pids) = target.cgroup.and_then(InstanceCgroup::read_pids) {
        return pids.into_iter().filter(live).collect();
    }
    let leader = procfs::stat(target.pid).ok().flatten();
    if leader.is_some_and(|s| s.start_time != target.start_time) {
        return BTreeSet::new();
    }
    let id = target.pid as i32;
    procfs::session_members(id, id).into_iter().collect()
}

/// Stops an instance: SIGTERM, then after `kill_timeout` SIGKILL and a
/// kill through the cgroup, until no process of it is left.
pub async fn stop(target: StopTarget<'_>, kill_timeout: Duration) -> StopOutcome {
    let first = members(&target);
    if first.is_empty() {
        return StopOutcome::AlreadyGone;
    }
    signal(&target, &first, Signal::SIGTERM);
    if wait_empty(&target, kill_timeout).await {
        return StopOutcome::Terminated;
    }
    let left = members(&target);
    signal(&target, &left, Signal::SIGKILL);
    if let Some(cg) = target.cgroup {
        cg.kill_all().await;
    }
    if wait_empty(&target, KILL_WAIT).await {
        StopOutcome::Killed
    } else {
        StopOutcome::Stuck(members(&target).into_iter().collect())
    }
}

fn signal(target: &StopTarget<'_>, pids: &BTreeSet<i32>, sig: Signal) {
    if !pids.is_empty() {
        // The group still exists while any member does, so its id is ours.
        let _ = killpg(Pid::from_raw(target.pid as i32), sig);
    }
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Whether the instance's processes are all gone within `within`.
pub(crate) async fn wait_empty(target: &StopTarget<'_>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if members(target).is_empty() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// An adopted process is gone; its status went to its real parent.
    Unknown,
}

/// An instance's process exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The instance id.
    pub instance: String,
    /// The pid that exited.
    pub pid: u32,
    /// How.
    pub kind: ExitKind,
}

/// Learns of instance exits. One small task per watched instance; events
/// come out of one bounded channel (a full channel makes the tasks wait,
/// nothing is dropped).
#[derive(Debug)]
pub struct Exits {
    tx: mpsc::Sender<Exit>,
    rx: mpsc::Receiver<Exit>,
}

impl Exits {
    /// A watcher whose channel holds `capacity` exits not yet taken.
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Exits { tx, rx }
    }

    /// Awaits a child's exit; this reaps it.
    pub fn watch_child(&self, instance: String, mut child: Child) {
        let tx = self.tx.clone();
        let pid = child.id().unwrap_or(0);
        tokio::spawn(async move {
            let kind = match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => ExitKind::Code(code),
                    (None, Some(sig)) => ExitKind::Signal(sig),
                    (None, None) => ExitKind::Unknown,
                },
                Err(_) => ExitKind::Unknown,
            };
            let _ = tx
                .send(Exit {
                    instance,
                    pid,
                    kind,
                })
                .await;
        });
    }

    /// Polls an adopted process (found by `record::scan`) until it is gone.
    pub fn watch_adopted(&self, record: &InstanceRecord) {
        let tx = self.tx.clone();
        let (instance, pid, start) = (record.instance.clone(), record.pid, record.start_time);
        let mut ours = record::liveness(record) == Liveness::Alive;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ADOPTED_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.is_closed() {
                    return;
                }
                // The boot id cannot change under a running process: only
                // the start time is read again (one small read of /proc).
                ours = ours
                    && procfs::stat(pid)
                        .map(|s| s.is_some_and(|s| s.start_time == start && !s.is_zombie()))
                        .unwrap_or(true);
                if !ours {
                    let kind = ExitKind::Unknown;
                    let _ = tx
                        .send(Exit {
                            instance,
                            pid,
                            kind,
                        })
                        .await;
                    return;
                }
            }
        });
    }

    /// The next exit.
    pub async fn next(&mut self) -> Exit {
        self.rx
            .recv()
            .await
            .expect("the watcher holds a sender, so the channel stays open")
    }
}
