//! The controller's supervision half: adopting, stopping, feeding process
//! events to supervisors and turning what they ask for into actions.

use std::time::Duration;

use super::local::UNKNOWN_KILL_GRACE;
use super::{Controller, JobAction};
use crate::jobs::reconcile::LocalStatus;
use crate::jobs::supervise::{ProcessEvent, SuperviseAction, Supervisor};
use crate::time::Time;

impl Controller {
    /// Puts a surviving process under a supervisor again, in the state its
    /// record says: no spawn, no restart.
    pub(super) fn adopt(&mut self, now: Time, id: &str) {
        let Some(l) = self.local.get_mut(id) else {
            return;
        };
        if l.status != LocalStatus::Orphan {
            return;
        }
        // Adopted because placement wants this very version here, so the
        // view holds its record.
        if l.record.is_none() {
            l.record = self
                .jobs
                .get(&l.job)
                .filter(|r| r.version == l.version)
                .cloned();
        }
        let sup = Supervisor::adopt(l.policy(), now, l.state, l.restarts);
        l.sup = Some(sup);
        l.status = LocalStatus::Supervised;
        tracing::debug!(node = %self.me, %id, "adopted");
        self.drive(now, id);
    }

    /// Stops a local instance (a found process is put under a supervisor
    /// first, so its exit is followed like any other).
    pub(super) fn stop(&mut self, now: Time, id: &str) {
        let Some(l) = self.local.get_mut(id) else {
            return;
        };
        match l.status {
            LocalStatus::Orphan => {
                l.sup = Some(Supervisor::adopt(l.policy(), now, l.state, l.restarts));
                l.status = LocalStatus::Supervised;
            }
            LocalStatus::Supervised => {}
            LocalStatus::GaveUp | LocalStatus::Stopped => return,
        }
        if let Some(sup) = l.sup.as_mut() {
            sup.stop();
        }
        self.drive(now, id);
    }

    /// A process event, routed by where the instance stands.
    pub(super) fn event(&mut self, now: Time, id: &str, event: ProcessEvent) {
        let Some(l) = self.local.get_mut(id) else {
            // Not ours (forgotten, or never asked for): never leave it
            // running.
            if event == ProcessEvent::Started {
                tracing::debug!(node = %self.me, %id, "unknown process started: kill");
                let grace = UNKNOWN_KILL_GRACE;
                let id = id.to_string();
                self.actions.push_back(JobAction::Kill { id, grace });
            }
            return;
        };
        if matches!(event, ProcessEvent::Started | ProcessEvent::SpawnFailed(_)) {
            l.spawning = false;
        }
        if l.doomed {
            match event {
                ProcessEvent::Started => {
                    let grace = l.policy().kill_timeout;
                    let id = id.to_string();
                    self.actions.push_back(JobAction::Kill { id, grace });
                }
                ProcessEvent::Exited(_) | ProcessEvent::SpawnFailed(_) => self.release(id),
                ProcessEvent::ProbeOk | ProcessEvent::ProbeFailed(_) => {}
            }
            return;
        }
        match l.status {
            LocalStatus::Orphan => {
                // A found process ended before it was adopted or stopped.
                if matches!(event, ProcessEvent::Exited(_)) {
                    self.release(id);
                }
            }
            LocalStatus::Supervised => {
                if let Some(sup) = l.sup.as_mut() {
                    sup.handle_event(now, event, &mut self.rng);
                }
                self.drive(now, id);
            }
            LocalStatus::GaveUp | LocalStatus::Stopped => {}
        }
    }

    /// Drops an instance that has no process any more. Its record stays
    /// until the next pass forgets it.
    fn release(&mut self, id: &str) {
        self.local.remove(id);
        let id = id.to_string();
        self.actions.push_back(JobAction::Release {
            id,
            keep_logs: false,
        });
    }

    /// Carries out what instance `id`'s supervisor asks for: the record
    /// first (so `draining` is out before the kill), then the rest.
    pub(super) fn drive(&mut self, now: Time, id: &str) {
        let wall = self.wall(now);
        let me = self.me;
        let Some(l) = self.local.get_mut(id) else {
            return;
        };
        let Some(sup) = l.sup.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        let mut gave_up = false;
        while let Some(a) = sup.poll_action() {
            match a {
                SuperviseAction::Spawn => match &l.record {
                    Some(job) => {
                        l.spawning = true;
                        out.push(JobAction::Spawn {
                            id: id.to_string(),
                            slot: l.slot,
                            job: job.clone(),
                        });
                    }
                    // Only adopted processes lack a record, and the
                    // supervisor restarts only what it spawned.
                    None => tracing::debug!(node = %me, %id, "no job record to restart"),
                },
                SuperviseAction::Probe => out.push(JobAction::Probe { id: id.to_string() }),
                SuperviseAction::Kill { grace } => out.push(JobAction::Kill {
                    id: id.to_string(),
                    grace,
                }),
                SuperviseAction::Record { .. } => {}
                SuperviseAction::GiveUp { avoid_for } => {
                    l.avoid_until_ms = Some(wall + millis(avoid_for));
                    gave_up = true;
                }
            }
        }
        let stopped = sup.is_finished() && !gave_up;
        if gave_up {
            // The supervisor stays, for the record's state and reason.
            l.status = LocalStatus::GaveUp;
            tracing::debug!(node = %me, %id, "crash loop: gave up");
        }
        if stopped && l.spawning {
            // Stopped between the spawn and its answer: the process may be
            // starting right now.
            l.doomed = true;
        }
        let doomed = l.doomed;
        if !stopped {
            let record = l.record(id, me);
            self.write(now, record);
        }
        self.actions.extend(out);
        if stopped && !doomed {
            self.release(id);
        } else if gave_up {
            // No process any more; the marker stays (with the supervisor,
            // for the record) so the slot is not restarted here and the
            // record lives until its avoidance ends.
            let id = id.to_string();
            self.actions.push_back(JobAction::Release {
                id,
                keep_logs: true,
            });
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}
