//! The checkers: what must hold of the nodes, judged against the truth the
//! simulator knows (who runs, in which life). They only observe: events
//! polled from the nodes, and membership read at step boundaries.
//!
//! - [`Checks::on_event`]: no member from nowhere, no life older than one
//!   already seen, no live node declared down when the run has no fault.
//! - detection: a node stopped outside any partition is declared down (or
//!   left) by every live node that saw it alive, within a budget.
//! - [`agreement`]: every live node sees every other live node alive, in its
//!   current life, and every stopped node down, left or not at all.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use myco_core::{Event, MemberState, Node, Time};
use myco_proto::NodeId;
use myco_proto::frame::Peer;

use crate::report::Detection;
use crate::world::{Life, addr_of};

/// Something that must never happen happened, or a phase overran its budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// What kind of rule was broken.
    pub kind: ViolationKind,
    /// When, in virtual time.
    pub at: Time,
    /// What was seen, naming nodes by index (`n3` is node index 3, id 4).
    pub message: String,
    /// The run's settings, to reproduce it.
    pub config: String,
}

/// The rules a run is held to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    /// The nodes did not agree on membership within the budget.
    NoConvergence,
    /// A stopped node was not declared down by every live node in time.
    SlowDetection,
    /// A live node was declared down in a run with no fault, or declared
    /// left without having left.
    FalseDown,
    /// A node reported a member life older than one it already reported.
    OldLifeRevived,
    /// A node reported a member that does not exist, or itself.
    UnknownMember,
    /// Membership changed after convergence, with no fault.
    Unstable,
    /// A node refused a datagram or message for a reason no fault explains.
    Refused,
    /// Running nodes did not hold identical state within the budget after
    /// the heal, or no longer did at the end.
    StateDiverged,
    /// A node lacks an acknowledged write, and no later write replaced it.
    LostWrite,
    /// A node's hybrid clock went back, or restarted behind its own disk.
    ClockBackwards,
    /// A node issued a timestamp at or below one it issued before.
    TimestampReused,
    /// A value older than a collected tombstone came back.
    Resurrected,
    /// A node's replica is not what it reported, holds a version no one
    /// wrote, or reads differently from what it holds.
    ReplicaMismatch,
    /// Jobs: a node runs more than its capacity.
    OverCapacity,
    /// Jobs: an instance runs on a node whose tags its job's constraints
    /// refuse.
    ConstraintBroken,
    /// Jobs: one node spawned an instance twice, or two nodes started one
    /// slot from the same view.
    StartedTwice,
    /// Jobs: a process was released while running, or runs on a live node
    /// whose controller does not know it.
    Orphan,
    /// Jobs: after the heal, some job did not have exactly `count` ready
    /// instances within the budget, or lost them while idle.
    JobsNotConverged,
    /// Jobs: an idle, converged mesh wrote instance records.
    IdleWrites,
    /// Jobs: on a quiet mesh, a job that had `count` ready instances had
    /// fewer while a rollout replaced them.
    ReadyBelowCount,
    /// Jobs: two processes of one slot of a `duplicates = "never"` job
    /// ran at the same virtual instant.
    NeverDuplicated,
}

impl Violation {
    pub(crate) fn new(kind: ViolationKind, at: Time, message: String) -> Violation {
        Violation {
            kind,
            at,
            message,
            config: String::new(),
        }
    }
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ViolationKind::NoConvergence => "no convergence",
            ViolationKind::SlowDetection => "slow detection",
            ViolationKind::FalseDown => "false down",
            ViolationKind::OldLifeRevived => "old life revived",
            ViolationKind::UnknownMember => "unknown member",
            ViolationKind::Unstable => "unstable membership",
            ViolationKind::Refused => "datagram refused",
            ViolationKind::StateDiverged => "state diverged",
            ViolationKind::LostWrite => "acknowledged write lost",
            ViolationKind::ClockBackwards => "clock went backwards",
            ViolationKind::TimestampReused => "timestamp reused",
            ViolationKind::Resurrected => "deleted key resurrected",
            ViolationKind::ReplicaMismatch => "replica mismatch",
            ViolationKind::OverCapacity => "node over capacity",
            ViolationKind::ConstraintBroken => "constraint broken",
            ViolationKind::StartedTwice => "instance started twice",
            ViolationKind::Orphan => "orphan process",
            ViolationKind::JobsNotConverged => "jobs did not converge",
            ViolationKind::IdleWrites => "writes while idle",
            ViolationKind::ReadyBelowCount => "fewer than count ready during a rollout",
            ViolationKind::NeverDuplicated => "a never slot ran twice at once",
        })
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {:?}: {}", self.kind, self.at, self.message)?;
        if !self.config.is_empty() {
            write!(f, "\nreproduce with:\n{}", self.config)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violation {}

/// The node index behind an id, if the id is one of the simulator's.
pub(crate) fn index_of(id: NodeId, nodes: usize) -> Option<usize> {
    let n = id.as_u64();
    (1..=nodes as u64).contains(&n).then(|| (n - 1) as usize)
}

/// A life as one `u64`, ordered as the core orders lives.
fn life_key(peer: &Peer) -> u64 {
    (peer.boot << 16) | u64::from(peer.bump)
}

/// A stop waiting to be noticed by every witness.
struct Pending {
    victim: usize,
    boot: u64,
    since: Time,
    waiting: BTreeSet<usize>,
}

pub(crate) struct Checks {
    nodes: usize,
    /// Whether a live node declared down is a violation (quiet runs and the
    /// idle window) or only counted.
    pub(crate) strict_downs: bool,
    failure: Option<Violation>,
    /// Newest life each node reported of each member, `nodes * nodes`
    /// entries; dense because the simulator runs at most a few thousand nodes.
    newest: Vec<u64>,
    /// Whether each node's last word on each member was "up", `nodes * nodes`.
    up: Vec<bool>,
    /// How many entries of `up` are set: pairs that see each other up.
    pub(crate) pairs_up: u64,
    pending: Vec<Pending>,
    /// How long a stop may wait to be noticed; `None` measures without judging.
    detection_budget: Option<Duration>,
    pub(crate) detection: Detection,
    pub(crate) downs: u64,
    pub(crate) false_downs: u64,
}

impl Checks {
    pub(crate) fn new(nodes: usize, detection_budget: Option<Duration>) -> Checks {
        Checks {
            nodes,
            strict_downs: false,
            failure: None,
            newest: vec![0; nodes * nodes],
            up: vec![false; nodes * nodes],
            pairs_up: 0,
            pending: Vec::new(),
            detection_budget,
            detection: Detection::default(),
            downs: 0,
            false_downs: 0,
        }
    }

    /// The first violation seen, if any; the run stops at the next step.
    pub(crate) fn take_failure(&mut self) -> Option<Violation> {
        self.failure.take()
    }

    fn fail(&mut self, kind: ViolationKind, at: Time, message: String) {
        if self.failure.is_none() {
            self.failure = Some(Violation::new(kind, at, message));
        }
    }

    fn subject(&mut self, now: Time, observer: usize, peer: &Peer) -> Option<usize> {
        match index_of(peer.id, self.nodes) {
            Some(j) if j != observer && peer.addr == addr_of(j) => Some(j),
            _ => {
                self.fail(
                    ViolationKind::UnknownMember,
                    now,
                    format!("n{observer} reported {peer:?}"),
                );
                None
            }
        }
    }

    pub(crate) fn on_event(&mut self, now: Time, observer: usize, event: &Event, lives: &[Life]) {
        match event {
            Event::MemberUp(peer) => {
                let Some(j) = self.subject(now, observer, peer) else {
                    return;
                };
                if peer.boot > lives[j].boot {
                    let msg = format!(
                        "n{observer} saw n{j} up in boot {}, which never started",
                        peer.boot
                    );
                    return self.fail(ViolationKind::UnknownMember, now, msg);
                }
                let newest = &mut self.newest[observer * self.nodes + j];
                let key = life_key(peer);
                if key < *newest {
                    let msg = format!(
                        "n{observer} saw n{j} up as boot {} bump {} after boot {} bump {}",
                        peer.boot,
                        peer.bump,
                        *newest >> 16,
                        *newest & 0xffff
                    );
                    return self.fail(ViolationKind::OldLifeRevived, now, msg);
                }
                *newest = key;
                self.set_up(observer, j, true);
            }
            Event::MemberDown(peer) => {
                let Some(j) = self.subject(now, observer, peer) else {
                    return;
                };
                self.downs += 1;
                self.set_up(observer, j, false);
                if lives[j].running && lives[j].boot == peer.boot {
                    self.false_downs += 1;
                    if self.strict_downs {
                        let msg = format!(
                            "n{observer} declared n{j} down, but n{j} runs (boot {})",
                            peer.boot
                        );
                        self.fail(ViolationKind::FalseDown, now, msg);
                    }
                }
                self.noticed(now, observer, j, peer.boot);
            }
            Event::MemberLeft(peer) => {
                let Some(j) = self.subject(now, observer, peer) else {
                    return;
                };
                if lives[j].running && lives[j].boot == peer.boot {
                    let msg = format!("n{observer} says n{j} left, but n{j} runs and never left");
                    self.fail(ViolationKind::FalseDown, now, msg);
                }
                self.set_up(observer, j, false);
                self.noticed(now, observer, j, peer.boot);
            }
            // Manifests, connectivity, rejoins and replicated state say
            // nothing about other members' liveness.
            _ => {}
        }
    }

    fn set_up(&mut self, observer: usize, subject: usize, up: bool) {
        let cell = &mut self.up[observer * self.nodes + subject];
        if *cell != up {
            *cell = up;
            if up {
                self.pairs_up += 1
            } else {
                self.pairs_up -= 1
            }
        }
    }

    /// A node stops or starts a new life: its view is gone, and what it
    /// reported in the old life no longer binds it.
    pub(crate) fn forget_view(&mut self, node: usize) {
        let row = node * self.nodes..(node + 1) * self.nodes;
        self.newest[row.clone()].fill(0);
        let was_up = self.up[row.clone()].iter().filter(|u| **u).count() as u64;
        self.pairs_up -= was_up;
        self.up[row].fill(false);
    }

    // ----- detection -----

    /// Node `victim` (in life `boot`) stopped; `witnesses` saw it alive.
    pub(crate) fn stopped(
        &mut self,
        now: Time,
        victim: usize,
        boot: u64,
        witnesses: BTreeSet<usize>,
    ) {
        for p in &mut self.pending {
            p.waiting.remove(&victim);
        }
        self.settle(now);
        self.detection.stops += 1;
        if witnesses.is_empty() {
            return;
        }
        self.pending.push(Pending {
            victim,
            boot,
            since: now,
            waiting: witnesses,
        });
    }

    /// A partition started: a stop that was not yet noticed everywhere can
    /// no longer be told apart from the partition, so it is not measured.
    pub(crate) fn abandon_all(&mut self) {
        self.detection.abandoned += self.pending.len() as u64;
        self.pending.clear();
    }

    /// `victim` restarts; its stop is measured no further, but it must not
    /// have outlived its budget.
    pub(crate) fn victim_restarted(&mut self, now: Time, victim: usize) {
        self.overdue(now);
        let before = self.pending.len();
        self.pending.retain(|p| p.victim != victim);
        self.detection.abandoned += (before - self.pending.len()) as u64;
    }

    /// Fails the run if a stop has waited longer than the budget.
    pub(crate) fn overdue(&mut self, now: Time) {
        let Some(budget) = self.detection_budget else {
            return;
        };
        let late = self.pending.iter().find(|p| now.since(p.since) > budget);
        if let Some(p) = late {
            let waiting: Vec<String> = p.waiting.iter().map(|o| format!("n{o}")).collect();
            let msg = format!(
                "n{} (boot {}) stopped at {:?}; after {:?} still not declared down by {}",
                p.victim,
                p.boot,
                p.since,
                now.since(p.since),
                waiting.join(" ")
            );
            self.fail(ViolationKind::SlowDetection, now, msg);
        }
    }

    fn noticed(&mut self, now: Time, observer: usize, victim: usize, boot: u64) {
        for p in self
            .pending
            .iter_mut()
            .filter(|p| p.victim == victim && p.boot == boot)
        {
            p.waiting.remove(&observer);
        }
        self.settle(now);
    }

    fn settle(&mut self, now: Time) {
        let detection = &mut self.detection;
        self.pending.retain(|p| {
            if !p.waiting.is_empty() {
                return true;
            }
            detection.record(now.since(p.since));
            false
        });
    }
}

/// The running nodes that see node `victim`, in life `boot`, alive or suspect.
pub(crate) fn witnesses(nodes: &[Option<Node>], victim: usize, boot: u64) -> BTreeSet<usize> {
    let id = NodeId::from_u64(victim as u64 + 1);
    let sees = |n: &Node| {
        n.member(id).is_some_and(|m| {
            m.peer.boot == boot && matches!(m.state, MemberState::Alive | MemberState::Suspect)
        })
    };
    nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| *i != victim && n.as_ref().is_some_and(sees))
        .map(|(i, _)| i)
        .collect()
}

/// Why the nodes do not agree yet: the first observer found wrong, and how.
#[derive(Debug)]
pub(crate) struct Disagreement {
    pub(crate) observer: usize,
    pub(crate) text: String,
}

/// Checks every running node's view, starting at `first` (where the last
/// check failed, so an unconverged cluster usually costs one view).
pub(crate) fn agreement(nodes: &[Option<Node>], first: usize) -> Result<(), Disagreement> {
    let n = nodes.len();
    let running = nodes.iter().filter(|x| x.is_some()).count();
    for o in (0..n).map(|k| (first + k) % n) {
        let Some(node) = &nodes[o] else { continue };
        let wrong = |text: String| Disagreement {
            observer: o,
            text: format!("n{o} {text}"),
        };
        let mut alive = 0;
        for m in node.members().iter().filter(|m| !m.is_self) {
            let Some(j) = index_of(m.peer.id, n).filter(|j| *j != o) else {
                return Err(wrong(format!("lists {:?}", m.peer)));
            };
            match &nodes[j] {
                Some(subject) => {
                    let me = subject.identity();
                    if m.state != MemberState::Alive || m.peer != me {
                        return Err(wrong(format!(
                            "sees n{j} {} as boot {} bump {}; it runs as boot {} bump {}",
                            m.state.as_str(),
                            m.peer.boot,
                            m.peer.bump,
                            me.boot,
                            me.bump
                        )));
                    }
                    alive += 1;
                }
                None if matches!(m.state, MemberState::Down | MemberState::Left) => {}
                None => {
                    return Err(wrong(format!(
                        "sees n{j} {}, but it is stopped",
                        m.state.as_str()
                    )));
                }
            }
        }
        if alive != running - 1 {
            let known: BTreeSet<usize> = node
                .members()
                .iter()
                .filter_map(|m| index_of(m.peer.id, n))
                .collect();
            let missing: Vec<String> = (0..n)
                .filter(|j| nodes[*j].is_some() && !known.contains(j))
                .take(8)
                .map(|j| format!("n{j}"))
                .collect();
            return Err(wrong(format!(
                "knows {alive} of {} live peers; missing {}",
                running - 1,
                missing.join(" ")
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: usize, boot: u64, bump: u16) -> Peer {
        Peer {
            id: NodeId::from_u64(i as u64 + 1),
            addr: addr_of(i),
            boot,
            bump,
        }
    }

    fn lives(n: usize) -> Vec<Life> {
        vec![
            Life {
                running: true,
                boot: 1
            };
            n
        ]
    }

    #[test]
    fn a_down_of_a_running_life_fails_only_when_strict() {
        let mut c = Checks::new(3, None);
        c.on_event(Time(1), 0, &Event::MemberDown(peer(1, 1, 0)), &lives(3));
        assert_eq!((c.downs, c.false_downs), (1, 1));
        assert!(c.take_failure().is_none());
        c.strict_downs = true;
        c.on_event(Time(2), 0, &Event::MemberDown(peer(2, 1, 0)), &lives(3));
        assert_eq!(
            c.take_failure().map(|v| v.kind),
            Some(ViolationKind::FalseDown)
        );
        let mut stopped = lives(3);
        stopped[2].running = false;
        c.on_event(Time(3), 1, &Event::MemberDown(peer(2, 1, 0)), &stopped);
        assert!(
            c.take_failure().is_none(),
            "a stopped node may be declared down"
        );
    }

    #[test]
    fn an_older_life_after_a_newer_one_fails() {
        let mut c = Checks::new(2, None);
        let mut l = lives(2);
        l[1].boot = 2;
        c.on_event(Time(1), 0, &Event::MemberUp(peer(1, 2, 0)), &l);
        c.on_event(Time(2), 0, &Event::MemberUp(peer(1, 2, 3)), &l);
        assert!(c.take_failure().is_none());
        c.on_event(Time(3), 0, &Event::MemberUp(peer(1, 1, 9)), &l);
        assert_eq!(
            c.take_failure().map(|v| v.kind),
            Some(ViolationKind::OldLifeRevived)
        );
        c.forget_view(0);
        c.on_event(Time(4), 0, &Event::MemberUp(peer(1, 1, 9)), &l);
        assert!(
            c.take_failure().is_none(),
            "a new life of the observer starts afresh"
        );
    }

    #[test]
    fn members_from_nowhere_fail() {
        let mut c = Checks::new(2, None);
        c.on_event(Time(1), 0, &Event::MemberUp(peer(0, 1, 0)), &lives(2));
        assert_eq!(
            c.take_failure().map(|v| v.kind),
            Some(ViolationKind::UnknownMember),
            "itself"
        );
        c.on_event(Time(1), 0, &Event::MemberUp(peer(1, 5, 0)), &lives(2));
        assert_eq!(
            c.take_failure().map(|v| v.kind),
            Some(ViolationKind::UnknownMember),
            "unborn life"
        );
        c.on_event(Time(1), 0, &Event::MemberUp(peer(7, 1, 0)), &lives(2));
        assert_eq!(
            c.take_failure().map(|v| v.kind),
            Some(ViolationKind::UnknownMember),
            "no such node"
        );
    }

    #[test]
    fn pairs_up_follow_ups_downs_and_lost_views() {
        let mut c = Checks::new(3, None);
        c.on_event(Time(1), 0, &Event::MemberUp(peer(1, 1, 0)), &lives(3));
        c.on_event(Time(1), 0, &Event::MemberUp(peer(2, 1, 0)), &lives(3));
        c.on_event(Time(1), 1, &Event::MemberUp(peer(0, 1, 0)), &lives(3));
        assert_eq!(c.pairs_up, 3);
        c.on_event(Time(2), 0, &Event::MemberDown(peer(2, 1, 0)), &lives(3));
        assert_eq!(c.pairs_up, 2);
        c.forget_view(0);
        assert_eq!(c.pairs_up, 1);
    }

    #[test]
    fn a_stop_is_measured_when_the_last_witness_notices() {
        let budget = Duration::from_secs(5);
        let mut c = Checks::new(4, Some(budget));
        let mut l = lives(4);
        l[3].running = false;
        c.stopped(Time(1000), 3, 1, [0, 1, 2].into());
        c.on_event(Time(2000), 0, &Event::MemberDown(peer(3, 1, 0)), &l);
        c.on_event(Time(2500), 1, &Event::MemberLeft(peer(3, 1, 0)), &l);
        assert_eq!(c.detection.measured, 0);
        c.overdue(Time(6000));
        assert!(c.take_failure().is_none(), "5 s have not passed");
        c.on_event(Time(3000), 2, &Event::MemberDown(peer(3, 1, 0)), &l);
        assert_eq!(
            (c.detection.measured, c.detection.max),
            (1, Some(Duration::from_secs(2)))
        );

        c.stopped(Time(10_000), 2, 1, [0, 1].into());
        c.overdue(Time(15_001));
        assert_eq!(
            c.take_failure().map(|v| v.kind),
            Some(ViolationKind::SlowDetection)
        );
    }
}
