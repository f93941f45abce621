//! The per-node reconciler: level-triggered, in the manner of Nomad's and
//! of Kubernetes controllers. It compares what placement wants on this node
//! with what runs here and what this node's instance records say, and
//! returns the actions that close the gap. It keeps no memory of earlier
//! passes: a missed or repeated event costs nothing, the next pass sees
//! the same gap. Run it after any change and whenever
//! [`super::settle::Settle::settled_at`] comes.
//!
//! The split, per instance:
//!
//! | placement wants it here | local process          | action                       |
//! |-------------------------|------------------------|------------------------------|
//! | yes                     | supervised             | `Keep`                       |
//! | yes                     | orphan (agent restart) | `Adopt`                      |
//! | yes                     | gave up                | nothing: placement moves it  |
//! | yes                     | none or stopped        | `Start` if settled and it fits; else `Hold` (unsettled, or room still being freed) or `Refuse` |
//! | yes, rollout waits      | none or stopped        | `Hold` (see [`super::rollout`]) |
//! | no, job stopped         | supervised or orphan   | `Stop` at once               |
//! | no, older version       | supervised or orphan   | if settled, by the rollout: `Keep`, `Drain` or `Stop`; else `Keep` |
//! | no, slot moved away     | supervised or orphan   | `Keep` until the slot's new instance is ready, if no start here needs the room and the job allows duplicates (see [`handover`]); then `Stop` |
//! | no, otherwise           | supervised or orphan   | `Stop` if settled, else `Keep` |
//! | (any)                   | none, record left      | `Forget` the record (after its avoidance ends; a hand-off's ends when the node is back) |

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::{JobRecord, Resources};

use super::placement::{Capacity, Placement, Slot};
use super::rollout::{OldFate, Rollouts};
use super::settle::Settle;
use crate::time::Time;
use used::Used;

/// What the shell knows of one instance on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalInstance {
    /// The instance id ([`InstanceRecord::id_for`]).
    pub id: String,
    /// Its job.
    pub job: String,
    /// Its slot.
    pub slot: u32,
    /// The job version it runs.
    pub version: u64,
    /// Where it stands.
    pub status: LocalStatus,
    /// What it takes (its version's resources).
    pub resources: Resources,
}

/// Where a local instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalStatus {
    /// Under a supervisor: running, starting, stopping or between restarts.
    Supervised,
    /// A process found running after an agent restart, not yet adopted.
    Orphan,
    /// Its supervisor gave up (crash loop); no process.
    GaveUp,
    /// Stopped; no process.
    Stopped,
}

impl LocalStatus {
    fn has_process(self) -> bool {
        matches!(self, LocalStatus::Supervised | LocalStatus::Orphan)
    }
}

/// Everything one pass reads.
#[derive(Clone, Copy, Debug)]
pub struct ReconcileInput<'a> {
    /// This node.
    pub me: NodeId,
    /// Now, on the core's clock (for the settle rule).
    pub now: Time,
    /// Wall time (ms), as placement got it (avoidances end by it).
    pub wall_ms: u64,
    /// This pass's placement.
    pub placement: &'a Placement,
    /// Every job's current record.
    pub jobs: &'a [JobRecord],
    /// Every instance the shell knows on this node. After an agent
    /// restart, pass this only once the shell has looked for surviving
    /// processes, or their records would be forgotten.
    pub local: &'a [LocalInstance],
    /// The replicated instance records of this node (others are ignored).
    pub records: &'a [InstanceRecord],
    /// This node's own capacity: it never starts past it.
    pub capacity: Capacity,
    /// The settle tracker, already fed this placement's fingerprint.
    pub settle: &'a Settle,
    /// The rollouts read from the same view ([`super::rollout::rollouts`]).
    pub rollouts: &'a Rollouts,
    /// Whether this node is handing its instances off to leave
    /// ([`super::Controller::hand_off`]): the avoidances it wrote for that
    /// hold while it leaves, and end with that life.
    pub leaving: bool,
    /// The mesh's instance records, as replicated (this node's are not read
    /// from here): a slot that moved away keeps its instance here until
    /// its new node's is ready ([`handover`]).
    pub others: &'a [InstanceRecord],
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a new instance (write its record as `launching`).
    Start {
        /// The new instance's id.
        id: String,
        /// The job.
        job: String,
        /// The slot.
        slot: u32,
        /// The job version to run.
        version: u64,
    },
    /// Put a surviving process under a supervisor again
    /// ([`super::supervise::Supervisor::adopt`]).
    Adopt {
        /// The instance.
        id: String,
    },
    /// Stop a local instance (drain, SIGTERM, SIGKILL after the job's
    /// `kill_timeout_ms`).
    Stop {
        /// The instance.
        id: String,
        /// Why, for the log and the record.
        reason: String,
    },
    /// Drain a local instance of an older version whose slot's new
    /// instance is proven: `draining` for the drain period, then stopped.
    Drain {
        /// The instance.
        id: String,
        /// Why, for the log and the record.
        reason: String,
    },
    /// Nothing to do for this instance; listed so every decision shows.
    Keep {
        /// The instance.
        id: String,
    },
    /// Would start, but the view has not been stable for the settle time
    /// (run again at `until`), or instances being stopped here must free
    /// room first (`until` is now: run again when they exit).
    Hold {
        /// The job.
        job: String,
        /// The slot.
        slot: u32,
        /// When the view will have been stable long enough.
        until: Time,
    },
    /// Would start, but this node lacks the room even after what it is
    /// stopping exits (its own capacity or processes differ from what
    /// placement saw). Write the record as `failed` with this reason
    /// (and an avoidance, so the slot moves); emitted only when the record
    /// does not already say it, or its avoidance has ended.
    Refuse {
        /// The instance id it would have had.
        id: String,
        /// The job.
        job: String,
        /// The slot.
        slot: u32,
        /// The job version.
        version: u64,
        /// Why, in words.
        reason: String,
    },
    /// Delete this node's record of an instance that no longer exists.
    Forget {
        /// The job (the record's key is `JOB/ID`).
        job: String,
        /// The instance.
        id: String,
    },
}

/// One pass of the reconciler for the node `input.me`.
pub fn reconcile(input: &ReconcileInput<'_>) -> Vec<Action> {
    let me = input.me;
    let settled = input.settle.is_settled(input.now);
    let jobs: BTreeMap<&str, &JobRecord> = input.jobs.iter().map(|j| (j.name(), j)).collect();
    let local: BTreeMap<&str, &LocalInstance> =
        input.local.iter().map(|l| (l.id.as_str(), l)).collect();
    let records: BTreeMap<&str, &InstanceRecord> = input
        .records
        .iter()
        .filter(|r| r.node == me)
        .map(|r| (r.id.as_str(), r))
        .collect();
    let mut out = Vec::new();

    // What placement wants here, and what of it must start.
    let mut desired: BTreeSet<String> = BTreeSet::new();
    let mut to_start = Vec::new();
    for (job, slot) in input.placement.assigned_to(me) {
        let Some(version) = input.placement.job(job).map(|p| p.version) else {
            continue;
        };
        let id = InstanceRecord::id_for(job, slot, version, me);
        match local.get(id.as_str()).map(|l| l.status) {
            Some(LocalStatus::Supervised) => out.push(Action::Keep { id: id.clone() }),
            Some(LocalStatus::Orphan) => out.push(Action::Adopt { id: id.clone() }),
            Some(LocalStatus::GaveUp) => {}
            Some(LocalStatus::Stopped) | None => to_start.push((job, slot, version, id.clone())),
        }
        desired.insert(id);
    }

    // What runs here but is not wanted.
    let roomy = handover::room_for_all(
        to_start.iter().map(|s| s.0),
        &jobs,
        input.local,
        &input.capacity,
    );
    let mut used = Used::default();
    let mut leaving = Used::default();
    for l in input.local.iter().filter(|l| l.status.has_process()) {
        used.add(&l.resources);
        if desired.contains(&l.id) {
            continue;
        }
        let job = jobs.get(l.job.as_str());
        let ready = records
            .get(l.id.as_str())
            .is_some_and(|r| r.state == InstanceState::Ready);
        // An old instance kept for a rollout frees nothing until its
        // replacement is proven: starts must not wait for its room.
        let kept = job.is_some_and(|j| {
            !j.stopped
                && j.version != l.version
                && l.slot < j.spec.count
                && input.rollouts.old_fate(&l.job, l.slot, ready) == OldFate::Keep
        });
        // A slot that moved to another node: kept until that node's
        // instance is ready (make before break).
        let handing_over = settled
            && roomy
            && job.is_some_and(|j| {
                handover::replacement_pending(input.placement, j, l, input.others)
            });
        if !kept && !handing_over {
            leaving.add(&l.resources);
        }
        if job.is_some_and(|j| j.stopped) {
            out.push(Action::Stop {
                id: l.id.clone(),
                reason: "job stopped".into(),
            });
        } else if kept {
            out.push(Action::Keep { id: l.id.clone() });
        } else if let Some(j) = job.filter(|j| {
            j.version != l.version
                && l.slot < j.spec.count
                && input.rollouts.old_fate(&l.job, l.slot, ready) == OldFate::Drain
        }) {
            // Its replacement is proven ready: draining it takes nothing
            // from anyone, so it needs no settled view.
            out.push(Action::Drain {
                id: l.id.clone(),
                reason: format!("draining: replaced by version {}", j.version),
            });
        } else if !settled || handing_over {
            out.push(Action::Keep { id: l.id.clone() });
        } else {
            let reason = why_not_here(input.placement, job.copied(), l);
            out.push(Action::Stop {
                id: l.id.clone(),
                reason,
            });
        }
    }

    // Starts: only on a settled view, and only within this node's room.
    let until = input.settle.settled_at().unwrap_or(input.now);
    // What will be in use once the unwanted instances have exited.
    let mut after = used.without(&leaving);
    for (job, slot, version, id) in to_start {
        let job = job.to_string();
        if !settled {
            out.push(Action::Hold { job, slot, until });
            continue;
        }
        // A rollout lets `max_parallel` slots change at a time; the next
        // pass (a record changed, or a slot proven by time) may let it.
        if !input.rollouts.may_start(&job, slot) {
            out.push(Action::Hold {
                job,
                slot,
                until: input.now,
            });
            continue;
        }
        let Some(need) = jobs.get(job.as_str()).map(|j| j.spec.reserved()) else {
            continue;
        };
        match used.shortfall(&need, &input.capacity) {
            None => {
                used.add(&need);
                after.add(&need);
                out.push(Action::Start {
                    id,
                    job,
                    slot,
                    version,
                });
            }
            // Room that instances being stopped will free: wait for it.
            Some(_) if after.shortfall(&need, &input.capacity).is_none() => {
                after.add(&need);
                out.push(Action::Hold {
                    job,
                    slot,
                    until: input.now,
                });
            }
            Some(reason) => {
                let reason = format!("refused: {reason}");
                // Said already, unless the avoidance that came with it
                // ended (then it is said again, and avoided again).
                let said = records.get(id.as_str()).is_some_and(|r| {
                    r.state == InstanceState::Failed
                        && r.reason == reason
                        && (r.avoid_until_ms.is_none() || r.avoids(input.wall_ms))
                });
                if !said {
                    out.push(Action::Refuse {
                        id,
                        job,
                        slot,
                        version,
                        reason,
                    });
                }
            }
        }
    }

    // Records of instances that are gone.
    for (id, r) in &records {
        let alive = local.get(id).is_some_and(|l| l.status.has_process());
        let gave_up_here = local
            .get(id)
            .is_some_and(|l| l.status == LocalStatus::GaveUp);
        // An avoidance on a record that is not `failed` was written by a
        // hand-off (crash loops and refusals write `failed`). It keeps the
        // job off a node while that node leaves; once the node is back (a
        // restart, a rolling upgrade), it would only keep its own slots
        // away from it until the bound ran out, and pile them onto the
        // nodes not restarted yet.
        let handed_off = !input.leaving && r.state != InstanceState::Failed;
        if alive || desired.contains(*id) && !gave_up_here || r.avoids(input.wall_ms) && !handed_off
        {
            continue;
        }
        out.push(Action::Forget {
            job: r.job.clone(),
            id: id.to_string(),
        });
    }
    out
}

/// Why a local instance is no longer wanted here.
fn why_not_here(placement: &Placement, job: Option<&JobRecord>, l: &LocalInstance) -> String {
    let Some(job) = job else {
        return "job removed".into();
    };
    let Some(p) = placement.job(job.name()) else {
        return "job not placed".into();
    };
    if l.version != job.version {
        return format!("replaced by version {}", job.version);
    }
    match p.slots.get(l.slot as usize) {
        None => "scaled down".into(),
        Some(Slot::Node(n)) => format!("slot moved to {n}"),
        Some(Slot::Pending(_)) => "slot released".into(),
    }
}

/// How long membership (up nodes, their tags and capacity) must be stable
/// by default before a node acts on its view: above a few SWIM gossip
/// rounds (200 ms each), short enough that healing stays within seconds.
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(1_500);

/// How long every input (the `jobs` and `instances` records too) must be
/// stable by default: above the mesh's push latency for a replicated
/// write (milliseconds on a LAN, tens under load), short enough that a
/// deploy starts well within a second.
pub const DEFAULT_STATE_SETTLE: Duration = Duration::from_millis(300);

mod handover;
#[cfg(test)]
mod tests;
mod used;
