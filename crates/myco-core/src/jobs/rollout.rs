//! Rollouts: how a new job version replaces the running one, blue/green,
//! with no node in charge.
//!
//! A rollout is not an object anyone writes. It is read, on every node,
//! from what is replicated anyway: the job's current record (its version
//! and `[update]` section) and the instance records. A job is rolling out
//! while some slot below `count` has a live instance (`launching`,
//! `ready`, or `failed` while restarting) of another version on an up
//! node. Every node computes the same [`Rollout`] from the same view, so
//! any node advances it by acting on its own instances only: the node
//! placement gives a slot starts the new instance, the node of the old
//! one drains it. Killing the node where the deploy was typed changes
//! nothing: nothing lived there.
//!
//! Per slot below `count` ([`SlotPhase`]):
//!
//! | old live | new instance (current version)                 | phase      |
//! |----------|------------------------------------------------|------------|
//! | no       | any                                            | `Fresh`    |
//! | yes      | none                                           | `Waiting`  |
//! | yes      | launching or failed                            | `Starting` |
//! | yes      | ready for less than `min_healthy_ms`           | `Proving`  |
//! | yes      | ready for `min_healthy_ms` or more             | `Done`     |
//!
//! - **Starts:** `Fresh`, `Starting`, `Proving` and `Done` slots may
//!   start their new instance; of the `Waiting` slots, the first
//!   `max_parallel - (Starting + Proving)` in slot order, none once the
//!   rollout failed. The new instance has its own id (the id carries the
//!   version) and placement may put it beside the old one or anywhere with
//!   room (placement counts the old instances' resources, each at its
//!   own version's size).
//! - **Old instances** are kept until their slot is `Done`, then drained
//!   (state `draining` for the drain period, so the edge sends them no new
//!   request), then stopped. So a slot is never without a ready instance
//!   because of the rollout: the ready count never falls below `count`
//!   while every old instance stays healthy.
//! - **Failure:** a new instance of a slot that still has an old one is
//!   `failed` (its health check did not pass within `healthy_deadline_ms`,
//!   it exited, or it could not start), or has been `launching` for
//!   `healthy_deadline_ms`. The rollout halts: no further slot starts, and
//!   every old instance stays. With `auto_revert`, the node of the failing
//!   instance (one writer, chosen by the records themselves) puts the
//!   version the old instances run back as the job's current record
//!   ([`Failure::revert_to`]); the failed version's instances are then
//!   the "other version" and are stopped, the old ones are current again,
//!   and the failed version is never started again unless deployed anew.
//!
//! Wall times come from the instance records' `since_ms` (written by each
//! instance's node) against this node's wall clock: clock skew moves when
//! a node sees a slot `Done` by at most the skew, and only its own old
//! instance waits for that, so skew delays a step, never skips one.

use std::collections::{BTreeMap, BTreeSet};

use myco_proto::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::{Duplicates, JobRecord};

use super::placement::{Liveness, NodeView};

/// Where one slot of a rolling job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotPhase {
    /// No old instance: nothing to replace (new slot, or the old one is
    /// gone or draining already).
    Fresh,
    /// An old instance, no new one yet.
    Waiting,
    /// The new instance is launching (or failed).
    Starting,
    /// The new instance is ready since `since_ms`, not yet for
    /// `min_healthy_ms`.
    Proving {
        /// When it became ready (wall ms, by its node).
        since_ms: u64,
    },
    /// The new instance has been ready long enough: the old one goes.
    Done,
}

/// Why a rollout halted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The new instance that failed.
    pub instance: String,
    /// Its node: the one that writes the revert.
    pub node: NodeId,
    /// Its slot.
    pub slot: u32,
    /// What its record says, in words.
    pub reason: String,
    /// The version the old instances run: what a revert brings back
    /// (`None` when no old instance says).
    pub revert_to: Option<u64>,
}

/// What an old instance of a rolling job should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldFate {
    /// Keep serving: its slot's replacement is not proven yet.
    Keep,
    /// Drain, then stop: its replacement is proven.
    Drain,
    /// Stop: nothing depends on it (slot gone, job not rolling).
    Stop,
}

/// One job's rollout, as this node's view shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollout {
    /// The version being rolled out (the job's current one).
    pub version: u64,
    /// The newest version the old instances run.
    pub from: u64,
    /// One entry per slot below `count`.
    pub slots: Vec<SlotPhase>,
    /// Set when the rollout halted.
    pub failure: Option<Failure>,
    /// The job's `update.auto_revert`.
    pub auto_revert: bool,
    allowed: Vec<bool>,
    wake_ms: Option<u64>,
}

impl Rollout {
    /// Whether the new instance of `slot` may start now.
    pub fn may_start(&self, slot: u32) -> bool {
        self.allowed.get(slot as usize).copied().unwrap_or(true)
    }

    /// What an old instance of `slot` should do; `ready` is whether it
    /// is ready itself (one that is not serves no one: once a new one is
    /// ready it need not wait for the proof).
    pub fn old_fate(&self, slot: u32, ready: bool) -> OldFate {
        match self.slots.get(slot as usize) {
            None | Some(SlotPhase::Fresh) => OldFate::Stop,
            Some(SlotPhase::Done) if self.failure.is_none() || !self.auto_revert => OldFate::Drain,
            Some(SlotPhase::Proving { .. }) if !ready => OldFate::Drain,
            Some(_) => OldFate::Keep,
        }
    }

    /// Slots whose new instance is proven or that had nothing to replace.
    pub fn replaced(&self) -> usize {
        let done = |p: &&SlotPhase| matches!(p, SlotPhase::Done | SlotPhase::Fresh);
        self.slots.iter().filter(done).count()
    }
}

/// Every rolling job of a view.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollouts {
    jobs: BTreeMap<String, Rollout>,
}

impl Rollouts {
    /// The rollout of `job`, if it is rolling.
    pub fn job(&self, job: &str) -> Option<&Rollout> {
        self.jobs.get(job)
    }

    /// Every rolling job, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Rollout)> {
        self.jobs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether the current version's instance of `slot` may start.
    pub fn may_start(&self, job: &str, slot: u32) -> bool {
        self.job(job).is_none_or(|r| r.may_start(slot))
    }

    /// What an instance of another version than the current, in `slot`,
    /// should do (`ready`: whether it is ready itself).
    pub fn old_fate(&self, job: &str, slot: u32, ready: bool) -> OldFate {
        self.job(job)
            .map_or(OldFate::Stop, |r| r.old_fate(slot, ready))
    }

    /// The next wall time (ms) at which a rollout moves by time alone (a
    /// new instance proven, or past its deadline).
    pub fn wake_ms(&self) -> Option<u64> {
        self.jobs.values().filter_map(|r| r.wake_ms).min()
    }
}

/// Reads every rollout from a view: `nodes` for who is up, the current
/// `jobs`, every instance record, and this node's wall time.
pub fn rollouts(
    wall_ms: u64,
    nodes: &[NodeView],
    jobs: &[JobRecord],
    instances: &[InstanceRecord],
) -> Rollouts {
    let up: BTreeSet<NodeId> = nodes
        .iter()
        .filter(|n| n.liveness == Liveness::Up)
        .map(|n| n.id)
        .collect();
    let mut by_job: BTreeMap<&str, Vec<&InstanceRecord>> = BTreeMap::new();
    for r in instances.iter().filter(|r| up.contains(&r.node)) {
        by_job.entry(r.job.as_str()).or_default().push(r);
    }
    let mut out = Rollouts::default();
    for job in jobs.iter().filter(|j| !j.stopped) {
        let Some(recs) = by_job.get(job.name()) else {
            continue;
        };
        if let Some(r) = rollout_of(wall_ms, job, recs) {
            out.jobs.insert(job.name().to_string(), r);
        }
    }
    out
}

/// Whether an old instance still serves (or will again, restarting).
fn serving(r: &InstanceRecord) -> bool {
    match r.state {
        InstanceState::Launching | InstanceState::Ready => true,
        InstanceState::Failed => r.avoid_until_ms.is_none(),
        InstanceState::Draining | InstanceState::Stopped => false,
    }
}

/// Whether `r` is the record of an old instance of a `duplicates =
/// "never"` job that stops (draining) or stopped for its replacement:
/// break before make leaves
/// no old instance beside the new one, so its node keeps this record
/// (`Controller`'s fence defers forgetting it) until the slot is proven,
/// and the slot stays in the rollout, proving and reverting like any.
pub(crate) fn replaced(never: bool, r: &InstanceRecord) -> bool {
    never && matches!(r.state, InstanceState::Draining | InstanceState::Stopped)
}

fn rollout_of(wall_ms: u64, job: &JobRecord, recs: &[&InstanceRecord]) -> Option<Rollout> {
    let count = job.spec.count;
    let update = job.spec.update;
    let never = job.spec.duplicates == Duplicates::Never;
    let was = |r: &InstanceRecord| serving(r) || replaced(never, r);
    let old = |r: &&&InstanceRecord| r.version != job.version && r.slot < count && was(r);
    let from = recs.iter().filter(old).map(|r| r.version).max()?;
    let mut slots = vec![SlotPhase::Fresh; count as usize];
    let mut failure: Option<Failure> = None;
    let mut wake_ms: Option<u64> = None;
    let mut wake = |t: u64| wake_ms = Some(wake_ms.map_or(t, |w: u64| w.min(t)));
    for (slot, phase) in slots.iter_mut().enumerate() {
        let slot = slot as u32;
        let in_slot = recs.iter().filter(|r| r.slot == slot);
        let olds: Vec<&InstanceRecord> = in_slot
            .clone()
            .filter(|r| r.version != job.version && was(r))
            .copied()
            .collect();
        if olds.is_empty() {
            continue;
        }
        let news: Vec<&InstanceRecord> = in_slot
            .filter(|r| r.version == job.version && r.state != InstanceState::Stopped)
            .copied()
            .collect();
        // The best new instance decides the phase: a ready one first.
        let ready = news
            .iter()
            .filter(|r| r.state == InstanceState::Ready)
            .map(|r| r.since_ms)
            .min();
        *phase = match ready {
            Some(since) if wall_ms >= since.saturating_add(update.min_healthy_ms) => {
                SlotPhase::Done
            }
            Some(since_ms) => {
                wake(since_ms.saturating_add(update.min_healthy_ms));
                SlotPhase::Proving { since_ms }
            }
            // A never slot whose old instance stopped for it: the new
            // one is due, and the slot counts against `max_parallel`.
            None if news.is_empty() && olds.iter().all(|o| replaced(never, o)) => {
                SlotPhase::Starting
            }
            None if news.is_empty() => SlotPhase::Waiting,
            None => SlotPhase::Starting,
        };
        if ready.is_some() || failure.is_some() {
            continue;
        }
        for r in &news {
            let deadline = r.since_ms.saturating_add(update.healthy_deadline_ms);
            let failed = match r.state {
                // A node that refused for lack of room moves the slot; that
                // says nothing about the version.
                InstanceState::Failed => !r.reason.starts_with("refused"),
                InstanceState::Launching if wall_ms >= deadline => true,
                InstanceState::Launching => {
                    wake(deadline);
                    false
                }
                _ => false,
            };
            if failed {
                let reason = match r.state {
                    InstanceState::Launching => {
                        format!("not healthy within {} ms", update.healthy_deadline_ms)
                    }
                    _ if r.reason.is_empty() => "failed".to_string(),
                    _ => r.reason.clone(),
                };
                // Back to the newest version an old instance of this slot
                // runs ready (or, for `never`, ran until replaced): one
                // still launching was deployed over before it proved
                // itself, and may be as broken as this one.
                let proven =
                    |o: &&&InstanceRecord| o.state == InstanceState::Ready || replaced(never, o);
                let revert_to = olds
                    .iter()
                    .filter(proven)
                    .map(|o| o.version)
                    .max()
                    .or_else(|| olds.iter().map(|o| o.version).max());
                failure = Some(Failure {
                    instance: r.id.clone(),
                    node: r.node,
                    slot,
                    reason,
                    revert_to,
                });
                break;
            }
        }
    }
    let busy = slots
        .iter()
        .filter(|p| matches!(p, SlotPhase::Starting | SlotPhase::Proving { .. }))
        .count() as u32;
    let mut room = match failure {
        Some(_) => 0,
        None => update.max_parallel.max(1).saturating_sub(busy),
    };
    let allowed = slots
        .iter()
        .map(|p| match p {
            SlotPhase::Waiting if room > 0 => {
                room -= 1;
                true
            }
            SlotPhase::Waiting => false,
            _ => true,
        })
        .collect();
    Some(Rollout {
        version: job.version,
        from,
        slots,
        failure,
        auto_revert: update.auto_revert,
        allowed,
        wake_ms,
    })
}

#[cfg(test)]
mod tests;
