//! Helpers shared by the exec tests: temp dirs, guards that kill what a
//! test started and remove its cgroups even when it fails, and polling with
//! a deadline.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use myco_agent::exec::cgroup::{CgroupConfig, CgroupSupport, InstanceCgroup};
use myco_agent::exec::{LaunchSpec, Launched, ResourceLimits, instance_dir};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

pub const DEADLINE: Duration = Duration::from_secs(15);
static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A data dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("myco-exec-test"));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills an instance (group, session, cgroup) and removes its cgroup on drop.
pub struct Reaper {
    pub pid: i32,
    pub cgroup: Option<InstanceCgroup>,
}

impl Reaper {
    pub fn of(launched: &Launched) -> Self {
        Reaper {
            pid: launched.record.pid as i32,
            cgroup: launched.cgroup.clone(),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        if let Some(cg) = &self.cgroup {
            let until = Instant::now() + Duration::from_secs(5);
            while !cg.pids().is_empty() && Instant::now() < until {
                for p in cg.pids() {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = cg.remove();
        }
    }
}

/// Cgroup support under a parent of this test's own, removed on drop.
pub struct Cgroups(pub CgroupSupport);

impl Cgroups {
    pub fn detect() -> Self {
        Self::detect_at(&unique("myco-test"))
    }
    pub fn detect_at(parent: &str) -> Self {
        Cgroups(CgroupSupport::detect(&CgroupConfig {
            enabled: true,
            parent: parent.to_owned(),
        }))
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.0.remove_parents();
    }
}

pub fn spec(data: &Path, argv: &[&str]) -> LaunchSpec {
    let id = unique("inst");
    let dir = instance_dir::prepare_bare(data, &id).unwrap();
    LaunchSpec {
        instance: id,
        job: "web".into(),
        slot: 0,
        version: "1".into(),
        digest: "sha256:00".into(),
        node: "node-a".into(),
        dir,
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::from([("GREETING".to_string(), "hi".to_string())]),
        port: 0,
        limits: ResourceLimits::default(),
    }
}

/// Polls `f` until it gives `Some`, or panics after [`DEADLINE`].
pub async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(
        |s| !matches!(s.rsplit(')').next().map(str::trim_start), Some(r) if r.starts_with('Z')),
    )
}

pub fn stat_fields(pid: u32) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    s[s.rfind(')').unwrap() + 2..]
        .split(' ')
        .map(str::to_owned)
        .collect()
}
