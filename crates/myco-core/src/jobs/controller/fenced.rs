//! The controller applying [`crate::jobs::fence`] to the reconciler's
//! actions for `duplicates = "never"` jobs: a node without a majority
//! stops and starts none; one with a majority starts a slot only once
//! every lease that could cover it has run out, and only when no other
//! copy of the slot is live. Rollouts of such jobs stop the old instance
//! before the new one starts (break before make).

use std::time::Duration;

use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::Duplicates;

use super::Controller;
use super::events::JobEventKind;
use crate::jobs::placement::Liveness;
use crate::jobs::reconcile::{Action, LocalStatus};
use crate::jobs::rollout::{self, Rollouts, SlotPhase};
use crate::time::Time;

impl Controller {
    /// Whether `job` may run at most one instance per slot.
    pub(super) fn is_never(&self, job: &str) -> bool {
        self.jobs
            .get(job)
            .is_some_and(|j| j.spec.duplicates == Duplicates::Never)
    }

    /// Why `job`'s instances do not run on this node, when fencing is the
    /// reason (for the job's status).
    pub fn fence_reason(&self, job: &str) -> Option<String> {
        let q = self.fence.quorum();
        (self.is_never(job) && !q.majority()).then(|| q.reason())
    }

    /// After an agent restart: keep the `never` instances found running
    /// through a minority until `until`, rather than fence them at once.
    /// A restarted node sees only itself until membership forms, yet its
    /// survivors are covered by the previous agent's lease: their guards
    /// (the shell's, `myco_agent::exec::fence_guard`) would have killed
    /// them by the lease's end had no agent come back, and that end is
    /// what the majority's wait already allows for. So `until` is the
    /// previous lease's end, and no later. Starts are not affected.
    pub fn hold_fence_until(&mut self, until: Time) {
        self.fence_hold = Some(until);
    }

    /// The reconciler's `actions`, with the fencing rules applied.
    pub(super) fn fence_actions(
        &mut self,
        now: Time,
        actions: Vec<Action>,
        rollouts: &Rollouts,
        records: &[InstanceRecord],
    ) -> Vec<Action> {
        let quorum = self.fence.quorum();
        let majority = quorum.majority();
        self.tell_quorum(majority, &quorum.reason());
        self.fence_at = None;
        let held = self.fence_hold.is_some_and(|t| t > now);
        if let Some(t) = self.fence_hold.filter(|_| held && !majority) {
            // A pass when the hold ends, to fence if still alone.
            self.fence_at = Some(t);
        }
        let mut out = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Start {
                    id,
                    job,
                    slot,
                    version,
                } if self.is_never(&job) => {
                    if !majority {
                        continue;
                    }
                    let kill = self.kill_grace(&job);
                    let clear = self.fence.clear_at(self.fence_config.wait(kill));
                    if let Some(t) = clear.filter(|&t| t > now) {
                        self.fence_at = Some(self.fence_at.map_or(t, |f| f.min(t)));
                        out.push(Action::Hold {
                            job,
                            slot,
                            until: t,
                        });
                    } else if self.slot_live(&job, slot, &id) {
                        // Another copy must stop first; its record (or
                        // its exit here) brings the next pass.
                        out.push(Action::Hold {
                            job,
                            slot,
                            until: now,
                        });
                    } else {
                        out.push(Action::Start {
                            id,
                            job,
                            slot,
                            version,
                        });
                    }
                }
                Action::Keep { id } | Action::Adopt { id }
                    if !majority && !held && self.runs_never(&id) =>
                {
                    let reason = format!("fenced: {}", quorum.reason());
                    self.tell_fenced(&id, &reason);
                    out.push(Action::Stop { id, reason });
                }
                Action::Forget { job, id }
                    if self.is_never(&job) && self.proving_marker(&job, &id, rollouts, records) =>
                {
                    // Kept until its slot's replacement is proven: the
                    // rollout reads the slot from it (rollout::replaced).
                }
                Action::Keep { id } if self.old_turn(&id, rollouts) => {
                    let reason = "replaced: a duplicates = never job stops before its \
                                  replacement starts"
                        .to_string();
                    out.push(Action::Stop { id, reason });
                }
                other => out.push(other),
            }
        }
        out
    }

    /// The job's kill timeout: how long a minority's stop takes at most.
    fn kill_grace(&self, job: &str) -> Duration {
        let ms = self.jobs.get(job).map_or(0, |j| j.spec.kill_timeout_ms);
        Duration::from_millis(ms)
    }

    /// Whether local instance `id` has a process and belongs to a `never`
    /// job.
    fn runs_never(&self, id: &str) -> bool {
        self.local.get(id).is_some_and(|l| {
            matches!(l.status, LocalStatus::Supervised | LocalStatus::Orphan)
                && self.is_never(&l.job)
        })
    }

    /// Whether local instance `id` is an old version of a `never` job
    /// whose slot the rollout lets change now: it stops, so the new one
    /// may start.
    fn old_turn(&self, id: &str, rollouts: &Rollouts) -> bool {
        let Some(l) = self.local.get(id) else {
            return false;
        };
        let current = self.jobs.get(&l.job).map(|j| j.version);
        self.is_never(&l.job)
            && current.is_some_and(|v| v != l.version)
            && rollouts.may_start(&l.job, l.slot)
    }

    /// Whether this node's record `id` of `job` is an old version's,
    /// stopped for its replacement, whose slot is not proven yet.
    fn proving_marker(
        &self,
        job: &str,
        id: &str,
        rollouts: &Rollouts,
        records: &[InstanceRecord],
    ) -> bool {
        let (Some(r), Some(current)) = (
            records.iter().find(|r| r.id == id),
            self.jobs.get(job).map(|j| j.version),
        ) else {
            return false;
        };
        let phase = rollouts
            .job(job)
            .and_then(|ro| ro.slots.get(r.slot as usize).copied());
        r.version != current
            && rollout::replaced(true, r)
            && matches!(
                phase,
                Some(SlotPhase::Waiting | SlotPhase::Starting | SlotPhase::Proving { .. })
            )
    }

    /// Whether a copy of `job`'s `slot` other than `id` may be running: a
    /// local process, or a record that is not over on an up node (nodes
    /// out of sight are covered by the lease wait).
    fn slot_live(&self, job: &str, slot: u32, id: &str) -> bool {
        let local = self.local.iter().any(|(other, l)| {
            other != id
                && l.job == job
                && l.slot == slot
                && matches!(l.status, LocalStatus::Supervised | LocalStatus::Orphan)
        });
        let up = |n| {
            self.view
                .nodes
                .iter()
                .any(|v| v.id == n && v.liveness == Liveness::Up)
        };
        // This node's own copies are the local ones above: its records
        // may outlive their process (a never rollout keeps the old one's
        // until the slot is proven, see rollout::replaced).
        let remote = self.view.instances.iter().any(|r| {
            r.node != self.me
                && r.job == job
                && r.slot == slot
                && r.id != id
                && up(r.node)
                && live_record(r)
        });
        local || remote
    }

    /// Tells a change of majority once.
    fn tell_quorum(&mut self, majority: bool, reason: &str) {
        let never: Vec<String> = self
            .jobs
            .keys()
            .filter(|j| self.is_never(j))
            .cloned()
            .collect();
        if self.fenced != majority || never.is_empty() {
            return;
        }
        self.fenced = !majority;
        for job in never {
            let msg = if majority {
                format!("{} has a majority again: {job} may run here", self.me)
            } else {
                format!("{} fenced, {reason}: {job} does not run here", self.me)
            };
            tracing::debug!(node = %self.me, job, "{msg}");
            self.events.push(JobEventKind::Fenced, &job, msg);
        }
    }

    /// Tells that a local instance stops because of the fence.
    fn tell_fenced(&mut self, id: &str, reason: &str) {
        let Some(l) = self.local.get(id) else {
            return;
        };
        let (job, slot) = (l.job.clone(), l.slot);
        let local = &self.local;
        self.fence_stopped.retain(|i| local.contains_key(i));
        if !self.fence_stopped.insert(id.to_string()) {
            return;
        }
        let msg = format!("{job}/{slot}: {id} stops, {reason}");
        tracing::debug!(node = %self.me, job, "{msg}");
        self.events.push(JobEventKind::Fenced, &job, msg);
    }
}

/// Whether a record says its instance may be running: launching, ready,
/// draining, or failed and still being restarted (no avoidance yet).
fn live_record(r: &InstanceRecord) -> bool {
    match r.state {
        InstanceState::Launching | InstanceState::Ready | InstanceState::Draining => true,
        InstanceState::Failed => r.avoid_until_ms.is_none(),
        InstanceState::Stopped => false,
    }
}
