//! The controller's healing and rollout half: reading the rollouts from
//! what it knows, draining replaced instances, asking for a revert when a
//! rollout fails, and telling each decision as a [`super::JobEvent`].

use std::time::Duration;

use myco_proto::instance::InstanceRecord;

use super::events::JobEventKind;
use super::{Controller, JobAction};
use crate::jobs::placement::Liveness;
use crate::jobs::reconcile::LocalStatus;
use crate::jobs::rollout::{self, Rollouts};
use crate::time::Time;

impl Controller {
    /// The rollouts of every job: peers' records from the view, this
    /// node's own as it knows them (`records`, fresher than the view).
    pub(super) fn read_rollouts(&self, wall: u64, records: &[InstanceRecord]) -> Rollouts {
        let mut all: Vec<InstanceRecord> = self
            .view
            .instances
            .iter()
            .filter(|r| r.node != self.me)
            .cloned()
            .collect();
        all.extend(records.iter().cloned());
        rollout::rollouts(wall, &self.view.nodes, &self.view.jobs, &all)
    }

    /// After a pass: the next time a rollout moves by time alone, the
    /// revert this node owes, and the events of rollouts that began,
    /// failed or ended.
    pub(super) fn after_rollouts(&mut self, now: Time, wall: u64, rollouts: &Rollouts) {
        self.rollout_at = rollouts
            .wake_ms()
            .map(|t| now + Duration::from_millis(t.saturating_sub(wall)));
        for (job, r) in rollouts.iter() {
            let failed = r.failure.is_some();
            let seen = self.rolling.insert(job.to_string(), (r.version, failed));
            if seen == Some((r.version, failed)) {
                continue;
            }
            let Some(f) = &r.failure else {
                continue;
            };
            let to = f.revert_to.unwrap_or(r.from);
            let what = format!(
                "rollout {job} v{}: instance {} {}",
                r.version, f.instance, f.reason
            );
            if !r.auto_revert {
                let msg = format!("{what}; halted (auto_revert is off), v{to} instances stay");
                tracing::debug!(node = %self.me, job, "{msg}");
                self.events.push(JobEventKind::RolloutFailed, job, msg);
                continue;
            }
            let msg = format!("{what}, reverting to v{to}");
            tracing::debug!(node = %self.me, job, "{msg}");
            self.events
                .push(JobEventKind::RolloutFailed, job, msg.clone());
            // One writer: the node of the failing instance, the one whose
            // own record says so. Every node would write the same bytes;
            // one is enough, and the rollout stays halted until it lands.
            if f.node == self.me && self.reverted.insert((job.to_string(), r.version)) {
                self.events.push(JobEventKind::Reverted, job, msg.clone());
                self.actions.push_back(JobAction::Revert {
                    job: job.to_string(),
                    from: r.version,
                    to,
                    reason: msg,
                });
            }
        }
        let ended: Vec<(String, u64, bool)> = self
            .rolling
            .iter()
            .filter(|(job, _)| rollouts.job(job).is_none())
            .map(|(job, &(v, failed))| (job.clone(), v, failed))
            .collect();
        for (job, version, failed) in ended {
            self.rolling.remove(&job);
            // A later rollout to the same version (deployed again) may
            // fail and be reverted again.
            self.reverted.retain(|(j, _)| *j != job);
            let current = self.jobs.get(&job).map(|j| j.version);
            if current == Some(version) && !failed {
                let msg = format!("rollout {job} v{version} done: every slot runs v{version}");
                tracing::debug!(node = %self.me, job, "{msg}");
                self.events.push(JobEventKind::RolloutDone, &job, msg);
            }
        }
    }

    /// Tells why this node starts `job`'s `slot`: a rollout step, or a
    /// slot moving off a node that is down.
    pub(super) fn tell_start(&mut self, job: &str, slot: u32, id: &str, rollouts: &Rollouts) {
        let version = self.jobs.get(job).map_or(0, |j| j.version);
        if let Some(r) = rollouts.job(job) {
            let msg = format!(
                "rollout {job} v{version}: slot {slot} starts {id} beside v{} ({} of {} slots replaced)",
                r.from,
                r.replaced(),
                r.slots.len()
            );
            tracing::debug!(node = %self.me, job, "{msg}");
            self.events.push(JobEventKind::RolloutStep, job, msg);
            return;
        }
        let not_up = |n| {
            self.view
                .nodes
                .iter()
                .find(|v| v.id == n)
                .is_none_or(|v| v.liveness != Liveness::Up)
        };
        let from = self
            .view
            .instances
            .iter()
            .find(|r| r.job == job && r.slot == slot && r.node != self.me && not_up(r.node));
        if let Some(r) = from {
            let state = self
                .view
                .nodes
                .iter()
                .find(|v| v.id == r.node)
                .map_or("gone", |v| match v.liveness {
                    Liveness::Up => "up",
                    Liveness::Down => "down",
                    Liveness::Left => "left",
                });
            let msg = format!("{} {state}: {job}/{slot} moves to {}", r.node, self.me);
            tracing::debug!(node = %self.me, job, "{msg}");
            self.events.push(JobEventKind::Moved, job, msg);
        }
    }

    /// Drains a local instance replaced by a proven new one.
    pub(super) fn drain_instance(&mut self, now: Time, id: &str, reason: String) {
        let period = self.drain;
        let Some(l) = self.local.get_mut(id) else {
            return;
        };
        if l.status == LocalStatus::Orphan {
            l.sup = Some(crate::jobs::supervise::Supervisor::adopt(
                l.policy(),
                now,
                l.state,
                l.restarts,
            ));
            l.status = LocalStatus::Supervised;
        }
        if l.status != LocalStatus::Supervised {
            return;
        }
        let job = l.job.clone();
        let slot = l.slot;
        if let Some(sup) = l.sup.as_mut() {
            if sup.state() == myco_proto::instance::InstanceState::Draining {
                return;
            }
            sup.drain(now, period, reason.clone());
        }
        let msg = format!(
            "{job}/{slot}: {id} {reason}, stops in {} ms",
            period.as_millis()
        );
        tracing::debug!(node = %self.me, job, "{msg}");
        self.events.push(JobEventKind::RolloutStep, &job, msg);
        self.drive(now, id);
    }
}
