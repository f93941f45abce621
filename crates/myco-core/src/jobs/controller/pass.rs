//! The controller's reconcile pass: the reconciler's decisions carried
//! out, and instance records written only when they change.

use std::collections::BTreeMap;

use myco_proto::instance::{INSTANCE_RECORD_FORMAT, InstanceRecord, InstanceState};

use super::local::{self, Local};
use super::{Controller, JobAction};
use crate::jobs::reconcile::{self, Action, LocalStatus, ReconcileInput};
use crate::time::Time;

impl Controller {
    /// This node's records as it knows them: the view's, overridden by
    /// what it wrote since, without what it deleted.
    pub(super) fn records(&self) -> Vec<InstanceRecord> {
        let mut out: BTreeMap<&str, &InstanceRecord> =
            self.mine.iter().map(|(k, v)| (k.as_str(), v)).collect();
        out.extend(self.written.iter().map(|(k, v)| (k.as_str(), v)));
        out.retain(|k, _| !self.deleted.contains(*k));
        out.into_values().cloned().collect()
    }

    /// One reconcile pass, its actions carried out. Runs again (twice more
    /// at most) when a pass forgot a gave-up instance, whose slot the next
    /// pass may start again.
    pub(super) fn pass(&mut self, now: Time) {
        if !self.scanned {
            return;
        }
        for _ in 0..3 {
            if !self.pass_once(now) {
                break;
            }
        }
        self.wake = if self.settle.is_settled(now) {
            None
        } else {
            self.settle.settled_at()
        };
    }

    /// Returns whether another pass may find more to do.
    pub(super) fn pass_once(&mut self, now: Time) -> bool {
        let wall = self.wall(now);
        let locals: Vec<_> = self.local.iter().map(|(id, l)| l.as_input(id)).collect();
        let records = self.records();
        let rollouts = self.read_rollouts(wall, &records);
        let actions = reconcile::reconcile(&ReconcileInput {
            me: self.me,
            now,
            wall_ms: wall,
            placement: &self.placement,
            jobs: &self.view.jobs,
            local: &locals,
            records: &records,
            capacity: self.capacity,
            settle: &self.settle,
            rollouts: &rollouts,
            leaving: self.leaving,
            others: &self.view.instances,
        });
        let actions = self.fence_actions(now, actions, &rollouts, &records);
        let actions = self.leaving_actions(actions);
        let mut again = false;
        for action in actions {
            match action {
                Action::Start { id, job, slot, .. } => {
                    let Some(record) = self.jobs.get(&job).cloned() else {
                        continue;
                    };
                    tracing::debug!(node = %self.me, %id, "start");
                    self.tell_start(&job, slot, &id, &rollouts);
                    self.local.insert(id.clone(), Local::start(record, slot));
                    self.drive(now, &id);
                }
                Action::Adopt { id } => self.adopt(now, &id),
                Action::Drain { id, reason } => self.drain_instance(now, &id, reason),
                Action::Stop { id, reason } => {
                    tracing::debug!(node = %self.me, %id, %reason, "stop");
                    self.stop(now, &id);
                }
                Action::Refuse {
                    id,
                    job,
                    slot,
                    version,
                    reason,
                } => {
                    tracing::debug!(node = %self.me, %id, %reason, "refused");
                    let record = self.jobs.get(&job);
                    let digest = record.map(|j| j.digest().to_string());
                    // Avoided like a crash loop, so placement on every node
                    // moves the slot instead of leaving it refused here.
                    let avoid = record.map(|j| wall + j.spec.restart.avoid_ms);
                    let record = InstanceRecord {
                        format: INSTANCE_RECORD_FORMAT,
                        id,
                        job,
                        slot,
                        version,
                        node: self.me,
                        state: InstanceState::Failed,
                        addr: None,
                        digest: digest.unwrap_or_default(),
                        restarts: 0,
                        last_exit: None,
                        reason,
                        avoid_until_ms: avoid,
                        since_ms: 0,
                    };
                    self.write(now, record);
                }
                Action::Forget { job, id } => {
                    // A gave-up instance whose avoidance ended: gone now,
                    // and its slot may come back here.
                    if self.local.get(&id).is_some_and(|l| {
                        !matches!(l.status, LocalStatus::Supervised | LocalStatus::Orphan)
                    }) {
                        self.local.remove(&id);
                        again = true;
                    }
                    if self.deleted.insert(id.clone()) {
                        self.written.remove(&id);
                        self.actions.push_back(JobAction::Delete { job, id });
                    }
                }
                Action::Keep { .. } | Action::Hold { .. } => {}
            }
        }
        self.after_rollouts(now, wall, &rollouts);
        again
    }

    /// Writes `record` if it says something new; `since_ms` moves only
    /// with the state.
    pub(super) fn write(&mut self, now: Time, mut record: InstanceRecord) {
        let last = self.written.get(&record.id).or_else(|| {
            self.mine
                .get(&record.id)
                .filter(|_| !self.deleted.contains(&record.id))
        });
        record.since_ms = match last {
            Some(l) if l.state == record.state => l.since_ms,
            _ => self.wall(now),
        };
        if last.is_some_and(|l| local::same(l, &record)) {
            return;
        }
        self.deleted.remove(&record.id);
        self.written.insert(record.id.clone(), record.clone());
        self.actions.push_back(JobAction::Write { record });
    }
}
