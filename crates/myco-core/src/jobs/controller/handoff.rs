//! A graceful leave hands its instances off first: the node marks its
//! instance records avoided (so placement on every node moves their slots
//! elsewhere), keeps each `allowed` instance until a replacement of its
//! slot is ready on another up node, then stops it; `never` instances
//! stop at once (their replacement may not start beside them). It starts
//! nothing meanwhile. The shell bounds the wait and calls
//! [`Controller::stop_all`] when it runs out.

use myco_proto::job::Duplicates;

use super::Controller;
use crate::jobs::placement::Liveness;
use crate::jobs::reconcile::{Action, LocalStatus};
use crate::time::Time;

impl Controller {
    /// Starts handing off: every local instance's record says it is
    /// avoided here for `bound` (what the shell waits at most), so its
    /// slot moves.
    pub fn hand_off(&mut self, now: Time, bound: std::time::Duration) {
        self.leaving = true;
        let until_ms = self.wall(now) + bound.as_millis() as u64;
        let ids: Vec<String> = self
            .local
            .iter()
            .filter(|(_, l)| matches!(l.status, LocalStatus::Supervised | LocalStatus::Orphan))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(l) = self.local.get_mut(id) {
                l.avoid_until_ms = Some(until_ms);
            }
            self.drive(now, id);
        }
        self.replace(now);
        self.pass(now);
    }

    /// Whether nothing runs here any more (the hand-off is over).
    pub fn handed_off(&self) -> bool {
        !self
            .local
            .values()
            .any(|l| matches!(l.status, LocalStatus::Supervised | LocalStatus::Orphan))
    }

    /// Stops every local instance (the hand-off ran out of time).
    pub fn stop_all(&mut self, now: Time) {
        let ids: Vec<String> = self.local.keys().cloned().collect();
        for id in ids {
            self.stop(now, &id);
        }
    }

    /// The reconciler's `actions` while leaving: no start; an `allowed`
    /// instance drains (then stops) only once its slot is ready elsewhere,
    /// a `never` one stops at once.
    pub(super) fn leaving_actions(&mut self, actions: Vec<Action>) -> Vec<Action> {
        if !self.leaving {
            return actions;
        }
        let mut out = Vec::with_capacity(actions.len());
        for action in actions {
            match action {
                Action::Start { .. } | Action::Refuse { .. } => {}
                Action::Keep { id } | Action::Adopt { id } | Action::Stop { id, .. }
                    if self.local.contains_key(&id) =>
                {
                    let job = self.local.get(&id).and_then(|l| self.jobs.get(&l.job));
                    // A stopped or removed job has nothing to hand off.
                    let over = job.is_none_or(|j| j.stopped);
                    let never = job.is_some_and(|j| j.spec.duplicates == Duplicates::Never);
                    let reason = || "handed off: node leaving".to_string();
                    if over || never {
                        out.push(Action::Stop {
                            id,
                            reason: reason(),
                        });
                    } else if self.replaced_elsewhere(&id) {
                        // Drained like a replaced rollout instance, not
                        // stopped at once: the edges stop sending it new
                        // requests first (a rolling upgrade lost requests
                        // in flight to handed-off instances, bench/upgrade.py).
                        out.push(Action::Drain {
                            id,
                            reason: reason(),
                        });
                    } else {
                        out.push(Action::Keep { id });
                    }
                }
                other => out.push(other),
            }
        }
        out
    }

    /// Whether local instance `id`'s slot has a ready instance of the
    /// job's current version on another up node.
    fn replaced_elsewhere(&self, id: &str) -> bool {
        let Some(l) = self.local.get(id) else {
            return true;
        };
        let Some(version) = self.jobs.get(&l.job).map(|j| j.version) else {
            return true;
        };
        let up = |n| {
            self.view
                .nodes
                .iter()
                .any(|v| v.id == n && v.liveness == Liveness::Up)
        };
        // Alone, or every other up node is draining too (a whole mesh
        // stopped at once): no one can take it over, so waiting gains
        // nothing.
        let alone = !self
            .view
            .nodes
            .iter()
            .any(|v| v.id != self.me && v.liveness == Liveness::Up && !v.draining);
        alone
            || self.view.instances.iter().any(|r| {
                r.job == l.job
                    && r.slot == l.slot
                    && r.version == version
                    && r.node != self.me
                    && r.state == myco_proto::instance::InstanceState::Ready
                    && up(r.node)
            })
    }
}
