//! cgroups: detect what the kernel offers, give each instance its own
//! cgroup with memory, CPU and pids limits, read its usage, and kill through
//! it so that no fork escapes a stop.
//!
//! Detection reads `/proc/self/mountinfo` and `/proc/self/cgroup` and never
//! assumes a layout. cgroup v2 is used when its hierarchy offers at least
//! one of memory, cpu, pids; otherwise the v1 hierarchies of memory, cpu,
//! cpuacct, pids and freezer (each may be mounted alone or with others);
//! otherwise nothing, with the reason. Instance cgroups go under a parent,
//! by default `myco` inside the agent's own cgroup (so limits put on the
//! agent's service also bound its instances; v1 has no rule against that),
//! or at an absolute path of the hierarchy (`/myco`) when configured. On v2
//! a cgroup holding processes cannot delegate controllers
//! ("no internal processes"), so an agent in a non-root v2 cgroup needs an
//! absolute parent that it may write.
//!
//! Kill: v2 writes `cgroup.kill` (atomic, kernel 5.14+); v1 freezes the
//! cgroup first when the freezer is there (a frozen process cannot fork),
//! SIGKILLs every member, thaws, and repeats until `cgroup.procs` is empty;
//! without a freezer it repeats SIGKILL over `cgroup.procs` until empty.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

use super::ExecError;
use super::record::{CgroupDirRecord, CgroupRecord};

mod detect;

/// How long [`InstanceCgroup::kill_all`] keeps at it before giving up.
const KILL_DEADLINE: Duration = Duration::from_secs(5);
/// cgroup v1 `cpu.shares` of one whole CPU (the kernel's default weight).
const SHARES_PER_CPU: u64 = 1024;
/// The controllers that limit; the others here only help.
const LIMITING: [&str; 3] = ["memory", "cpu", "pids"];
/// v1 controllers used, in the order they are reported.
const V1_CONTROLLERS: [&str; 5] = ["memory", "cpu", "cpuacct", "pids", "freezer"];

/// Where instance cgroups go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupConfig {
    /// False runs every instance without a cgroup.
    pub enabled: bool,
    /// Parent of instance cgroups: relative to the agent's own cgroup, or
    /// absolute (from the hierarchy's root) when it starts with `/`.
    pub parent: String,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            enabled: true,
            parent: "myco".to_owned(),
        }
    }
}

/// Which cgroup interface instances get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// The unified hierarchy.
    V2,
    /// Separate v1 controller hierarchies.
    V1,
    /// No usable cgroup: instances run without limits.
    None,
}

/// How a stop makes sure nothing of an instance is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KillMethod {
    /// Write `cgroup.kill` (v2).
    CgroupKill,
    /// Freeze, SIGKILL every member, thaw (v1 freezer).
    Freezer,
    /// SIGKILL over `cgroup.procs` until empty (v1 without freezer).
    SignalLoop,
    /// Only the process group and session (no cgroup).
    ProcessGroup,
}

/// What this node can do, for the node manifest and `myco status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupSupport {
    /// The interface in use.
    pub version: CgroupVersion,
    /// Controllers that limit instances (of memory, cpu, pids).
    pub limits: Vec<String>,
    /// How a stop kills stragglers.
    pub kill: KillMethod,
    /// Why something is missing, empty when all is there.
    pub reason: String,
    #[serde(skip)]
    hierarchies: Vec<Hierarchy>,
}

/// One hierarchy used: the parent directory of instance cgroups in it and
/// the controllers it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    parent: PathBuf,
    controllers: Vec<String>,
}

/// Limits for one instance; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU in thousandths of a core (a weight: `cpu.shares` or `cpu.weight`).
    pub cpu_milli: Option<u32>,
    /// Most processes and threads.
    pub pids: Option<u32>,
}

/// Resource use read from an instance's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Memory charged now, in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time used since creation, in microseconds.
    pub cpu_usec: Option<u64>,
}

impl CgroupSupport {
    /// What to report when cgroups are off or missing.
    pub fn none(reason: impl Into<String>) -> Self {
        CgroupSupport {
            version: CgroupVersion::None,
            limits: Vec::new(),
            kill: KillMethod::ProcessGroup,
            reason: reason.into(),
            hierarchies: Vec::new(),
        }
    }

    /// Detects cgroup v2, then v1, and creates the parent directory of
    /// instance cgroups. Never fails: what is missing is in `reason`.
    pub fn detect(config: &CgroupConfig) -> Self {
        if !config.enabled {
            return Self::none("cgroups are disabled in the agent's config");
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let proc_cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = detect::parse_mounts(&mountinfo);
        let mut reasons = Vec::new();
        match detect::detect_v2(&mounts, &proc_cgroup, &config.parent) {
            Ok(support) => return support,
            Err(why) => reasons.push(why),
        }
        match detect::detect_v1(&mounts, &proc_cgroup, &config.parent, &mut reasons) {
            Some(support) => support,
            None => Self::none(reasons.join("; ")),
        }
    }

    /// Whether instances get a cgroup at all.
    pub fn is_usable(&self) -> bool {
        !self.hierarchies.is_empty()
    }

    /// Removes the parent directories if they are empty (for tests and a
    /// clean uninstall; harmless otherwise).
    pub fn remove_parents(&self) {
        for h in &self.hierarchies {
            let _ = fs::remove_dir(&h.parent);
        }
    }
}

/// One instance's cgroup: a directory in each hierarchy in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceCgroup {
    v2: bool,
    dirs: Vec<Hierarchy>,
}

fn cg_err(path: &Path) -> impl FnOnce(io::Error) -> ExecError + '_ {
    move |source| ExecError::Cgroup {
        path: path.to_path_buf(),
        source,
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), ExecError> {
    fs::write(path, value).map_err(cg_err(path))
}

impl InstanceCgroup {
    /// Creates the instance's cgroup (or takes over one left by a previous
    /// run of the same id) and writes its limits. `None` when `support` has
    /// no cgroup to offer.
    pub fn create(
        support: &CgroupSupport,
        id: &str,
        limits: &ResourceLimits,
    ) -> Result<Option<Self>, ExecError> {
        super::check_name("instance id", id)?;
        if !support.is_usable() {
            return Ok(None);
        }
        let cgroup = InstanceCgroup {
            v2: support.version == CgroupVersion::V2,
            dirs: support
                .hierarchies
                .iter()
                .map(|h| Hierarchy {
                    parent: h.parent.join(id),
                    controllers: h.controllers.clone(),
                })
                .collect(),
        };
        let made = cgroup.make(limits);
        if made.is_err() {
            let _ = cgroup.remove();
        }
        made.map(|()| Some(cgroup))
    }

    fn make(&self, limits: &ResourceLimits) -> Result<(), ExecError> {
        for h in &self.dirs {
            let dir = &h.parent;
            fs::create_dir_all(dir).map_err(cg_err(dir))?;
            let has = |c: &str| h.controllers.iter().any(|x| x == c);
            if let (true, Some(bytes)) = (has("memory"), limits.memory_bytes) {
                let file = if self.v2 {
                    "memory.max"
                } else {
                    "memory.limit_in_bytes"
                };
                write_file(&dir.join(file), &bytes.to_string())?;
            }
            // CPU is a weight, not a quota (Nomad's default too): under
            // contention instances share the CPU in proportion to their
            // `cpu_milli`, and on an idle machine a workload may use more.
            // A 100-milli quota made a Python server take 1.5 s to start
            // on an idle node. Memory and pids stay hard limits.
            if let (true, Some(milli)) = (has("cpu"), limits.cpu_milli) {
                let shares = (u64::from(milli) * SHARES_PER_CPU / 1000).max(2);
                if self.v2 {
                    // The same mapping as Kubernetes' shares -> weight.
                    let weight = 1 + (shares - 2) * 9_999 / 262_142;
                    write_file(&dir.join("cpu.weight"), &weight.to_string())?;
                } else {
                    write_file(&dir.join("cpu.shares"), &shares.to_string())?;
                }
            }
            if let (true, Some(pids)) = (has("pids"), limits.pids) {
                write_file(&dir.join("pids.max"), &pids.max(1).to_string())?;
            }
        }
        Ok(())
    }

    /// The directories of this cgroup, one per hierarchy.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|h| h.parent.as_path())
    }

    /// Opens every `cgroup.procs` for writing, so a child can join the
    /// cgroup before it executes anything (see `process::spawn`).
    pub(crate) fn procs_files(&self) -> Result<Vec<fs::File>, ExecError> {
        self.dirs
            .iter()
            .map(|h| {
                let path = h.parent.join("cgroup.procs");
                fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(cg_err(&path))
            })
            .collect()
    }

    /// Moves a process into the cgroup.
    pub fn add(&self, pid: u32) -> Result<(), ExecError> {
        for h in &self.dirs {
            write_file(&h.parent.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in the cgroup (the union over its hierarchies).
    pub fn pids(&self) -> BTreeSet<i32> {
        self.read_pids().unwrap_or_default()
    }

    /// Like [`pids`](Self::pids), but `None` when a `cgroup.procs` cannot
    /// be read (the cgroup is gone), so that is not taken for "empty".
    pub fn read_pids(&self) -> Option<BTreeSet<i32>> {
        let mut all = BTreeSet::new();
        for h in &self.dirs {
            let text = fs::read_to_string(h.parent.join("cgroup.procs")).ok()?;
            all.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        Some(all)
    }

    fn dir_with(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.parent.as_path())
    }

    /// Kills every process in the cgroup and waits until it is empty.
    /// Returns how many processes are still there after the deadline (0 when
    /// clean; more means unkillable processes, e.g. in uninterruptible I/O).
    pub async fn kill_all(&self) -> usize {
        let deadline = tokio::time::Instant::now() + KILL_DEADLINE;
        let freezer = if self.v2 {
            None
        } else {
            self.dir_with("freezer")
        };
        let kill_file = self.dirs.first().map(|h| h.parent.join("cgroup.kill"));
        let mut wrote_kill = false;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return 0;
            }
            if tokio::time::Instant::now() >= deadline {
                return pids.len();
            }
            match (&kill_file, freezer) {
                (Some(file), None) if self.v2 && !wrote_kill && file.exists() => {
                    wrote_kill = fs::write(file, "1").is_ok();
                    if !wrote_kill {
                        signal_all(&pids);
                    }
                }
                (_, Some(freezer)) => freeze_and_kill(freezer, deadline).await,
                _ => signal_all(&pids),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Removes the (empty) cgroup directories; gone ones are fine.
    pub fn remove(&self) -> Result<(), ExecError> {
        for h in &self.dirs {
            match fs::remove_dir(&h.parent) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(cg_err(&h.parent)(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Memory and CPU use now, from whichever controllers are there.
    pub fn usage(&self) -> Usage {
        let read = |dir: Option<&Path>, file: &str| -> Option<String> {
            fs::read_to_string(dir?.join(file)).ok()
        };
        if self.v2 {
            let dir = self.dirs.first().map(|h| h.parent.as_path());
            Usage {
                memory_bytes: read(dir, "memory.current").and_then(|s| s.trim().parse().ok()),
                cpu_usec: read(dir, "cpu.stat").and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("usage_usec "))
                        .and_then(|v| v.trim().parse().ok())
                }),
            }
        } else {
            Usage {
                memory_bytes: read(self.dir_with("memory"), "memory.usage_in_bytes")
                    .and_then(|s| s.trim().parse().ok()),
                cpu_usec: read(self.dir_with("cpuacct"), "cpuacct.usage")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(|ns| ns / 1000),
            }
        }
    }

    /// The form kept in the instance record.
    pub fn to_record(&self) -> CgroupRecord {
        CgroupRecord {
            version: if self.v2 { 2 } else { 1 },
            dirs: self
                .dirs
                .iter()
                .map(|h| CgroupDirRecord {
                    path: h.parent.clone(),
                    controllers: h.controllers.clone(),
                })
                .collect(),
        }
    }

    /// The cgroup of a recorded instance, to stop or measure it after an
    /// agent restart.
    pub fn from_record(record: &CgroupRecord) -> Self {
        InstanceCgroup {
            v2: record.version == 2,
            dirs: record
                .dirs
                .iter()
                .map(|d| Hierarchy {
                    parent: d.path.clone(),
                    controllers: d.controllers.clone(),
                })
                .collect(),
        }
    }
}

fn signal_all(pids: &BTreeSet<i32>) {
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// v1: a frozen process cannot fork, so the member list is complete while
/// we kill; SIGKILL takes effect when thawed.
async fn freeze_and_kill(freezer: &Path, deadline: tokio::time::Instant) {
    let state = freezer.join("freezer.state");
    let _ = fs::write(&state, "FROZEN");
    while tokio::time::Instant::now() < deadline {
        match fs::read_to_string(&state) {
            Ok(s) if s.trim() == "FREEZING" => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => break,
        }
    }
    let members: BTreeSet<i32> = fs::read_to_string(freezer.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    signal_all(&members);
    let _ = fs::write(&state, "THAWED");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_says_so() {
        let s = CgroupSupport::detect(&CgroupConfig {
            enabled: false,
            ..CgroupConfig::default()
        });
        assert_eq!(s.version, CgroupVersion::None);
        assert!(!s.is_usable());
        assert!(s.reason.contains("disabled"));
        assert!(
            InstanceCgroup::create(&s, "a", &ResourceLimits::default())
                .unwrap()
                .is_none()
        );
    }
}
