//! What the previous agent left: processes still running (adopted, so no
//! duplicate and no orphan) and directories of instances that did not
//! survive (removed once the controller has had time to start them again
//! in place and did not).

use std::time::Duration;

use myco_core::jobs::controller::Found;

use super::JobsShared;
use super::runtime::Runtime;
use crate::exec::process::{self, StopOutcome, StopTarget};
use crate::exec::record::{self, Liveness};
use crate::exec::{ExecError, InstanceCgroup};

/// Kills what is left of an instance whose leader died while no agent
/// watched: its cgroup's processes, else its session's (found from the
/// leader's pid, which no other session can hold while any member
/// lives). Only on the boot that started it: after a reboot nothing of it
/// runs, and its pid means nothing.
async fn kill_leftovers(rec: &record::InstanceRecord) {
    if !record::same_boot(&rec.boot_id) {
        return;
    }
    let cgroup = rec.cgroup.as_ref().map(InstanceCgroup::from_record);
    let target = StopTarget {
        pid: rec.pid,
        start_time: rec.start_time,
        cgroup: cgroup.as_ref(),
    };
    match process::stop(target, Duration::ZERO).await {
        StopOutcome::AlreadyGone => {}
        outcome => tracing::warn!(
            instance = %rec.instance,
            ?outcome,
            "killed what a dead instance left running"
        ),
    }
}

/// How long after start the directories of dead instances that were not
/// started again are removed: four settle periods, at least a second,
/// so the controller's first settled pass has come and gone.
pub(super) fn sweep_after(settle: Duration) -> Duration {
    (settle * 4).max(Duration::from_secs(1))
}

impl Runtime {
    /// Finds the instances the previous agent left running and hands them
    /// to the controller (an empty scan on a fresh node or after a reboot).
    pub(super) async fn adopt_survivors(&mut self) {
        let dir = self.exec.data_dir().to_path_buf();
        let scanned = tokio::task::spawn_blocking(move || record::scan(&dir))
            .await
            .unwrap_or_default();
        let mut found = Vec::new();
        let mut leftovers = Vec::new();
        for f in scanned {
            let rec = match f.record {
                Ok(r) => r,
                // No record at all: the logs a crash-looped instance's
                // release kept (`remove_all_but_logs`), removed when its
                // record is deleted; nothing to adopt or warn about.
                Err(ExecError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    tracing::debug!(dir = %f.dir.display(), "kept logs of a stopped instance");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(dir = %f.dir.display(), error = %e, "instance directory without a readable record");
                    continue;
                }
            };
            if f.liveness != Liveness::Alive {
                tracing::debug!(instance = %rec.instance, liveness = ?f.liveness, "instance did not survive");
                self.dead.insert(rec.instance.clone());
                leftovers.push(rec);
                continue;
            }
            let Ok(version) = rec.version.parse::<u64>() else {
                tracing::warn!(instance = %rec.instance, version = %rec.version, "survivor with an unreadable version is left alone");
                continue;
            };
            tracing::info!(instance = %rec.instance, pid = rec.pid, "adopting a running instance");
            self.exec.adopt(f.dir, &rec, &self.exits);
            JobsShared::count(&self.shared.stats.adopted);
            self.job_of.insert(rec.instance.clone(), rec.job.clone());
            // Its next start is a restart, and a `failed` record of it is
            // not a refusal.
            self.spawned.insert(rec.instance.clone());
            found.push(Found {
                addr: self.exec.addr_of(&rec.instance),
                id: rec.instance,
                job: rec.job,
                slot: rec.slot,
                version,
            });
        }
        // Before the controller hears of the scan, which may start a dead
        // instance again in place (same id, same cgroup): what its leader
        // left running while no agent watched (children, a daemon it
        // forked) goes now, or it would outlive every later stop.
        for rec in leftovers {
            kill_leftovers(&rec).await;
        }
        let now = self.now();
        self.ctl.set_local_scan(now, found);
    }

    /// Removes the directories of instances that died with the last
    /// agent and that the controller has not started again since.
    pub(super) fn sweep_dead(&mut self) {
        let dead = std::mem::take(&mut self.dead);
        let stale: Vec<String> = dead
            .into_iter()
            .filter(|id| !self.spawned.contains(id) && !self.job_of.contains_key(id))
            .filter(|id| !self.ctl.local().any(|(l, _)| l == id))
            .collect();
        if stale.is_empty() {
            return;
        }
        tracing::info!(
            count = stale.len(),
            "removing directories of instances that did not survive"
        );
        let data_dir = self.exec.data_dir().to_path_buf();
        tokio::task::spawn_blocking(move || {
            for id in stale {
                let dir = data_dir.join("instances").join(&id);
                let cgroup = crate::exec::record::read(&dir)
                    .ok()
                    .and_then(|r| r.cgroup)
                    .map(|c| crate::exec::InstanceCgroup::from_record(&c));
                crate::exec::executor::cleanup(&data_dir, &id, cgroup.as_ref(), false);
            }
        });
    }
}
