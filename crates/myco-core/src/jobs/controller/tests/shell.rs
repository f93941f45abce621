//! The test shell: a view whose `instances` table takes the controller's
//! writes, process events by hand, time moved by the controller's own
//! timeouts.

use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::{Health, JobRecord, RestartPolicy, Strategy};

use super::super::*;
use crate::jobs::placement::NodeView;
use crate::jobs::placement::tests::{job, node};

pub(super) const SETTLE: Duration = Duration::from_millis(1_000);
/// Wall time at `Time::ZERO`.
pub(super) const WALL0: u64 = 1_000_000;

pub(super) fn me() -> NodeId {
    NodeId::from_u64(1)
}

pub(super) fn id(job: &str, slot: u32) -> String {
    InstanceRecord::id_for(job, slot, 1, me())
}

/// A job that restarts fast and gives up after two restarts.
pub(super) fn quick(name: &str, count: u32, health: bool) -> JobRecord {
    let mut j = job(name, count, Strategy::Spread, 64);
    j.spec.restart = RestartPolicy {
        attempts: 2,
        interval_ms: 60_000,
        delay_ms: 100,
        backoff: 2,
        max_delay_ms: 1_000,
        jitter_percent: 0,
        avoid_ms: 30_000,
    };
    j.spec.health = health.then(quick_health);
    j
}

fn config() -> ControllerConfig {
    ControllerConfig {
        settle: SETTLE,
        state_settle: SETTLE,
        seed: 7,
        drain: DEFAULT_DRAIN,
        fence: FenceConfig::default(),
    }
}

pub(super) struct Shell {
    pub(super) c: Controller,
    pub(super) now: Time,
    pub(super) view: View,
}

impl Shell {
    /// Node 1 with `capacity`, in a mesh of `nodes`, running `jobs`.
    pub(super) fn new(nodes: Vec<NodeView>, jobs: Vec<JobRecord>, capacity: Capacity) -> Shell {
        let view = View {
            wall_ms: WALL0,
            nodes,
            jobs,
            instances: Vec::new(),
            versions: Vec::new(),
            suspects: Vec::new(),
        };
        let mut s = Shell {
            c: Controller::new(me(), capacity, config()),
            now: Time::ZERO,
            view,
        };
        s.sync();
        s
    }

    /// The node's next life: a new controller on the same replica, its
    /// scan finding no process.
    pub(super) fn restart(&self, capacity: Capacity) -> Shell {
        let mut s = Shell {
            c: Controller::new(me(), capacity, config()),
            now: self.now,
            view: self.view.clone(),
        };
        s.sync();
        s.scan(vec![]);
        s
    }

    pub(super) fn fresh(jobs: Vec<JobRecord>) -> Shell {
        let n = node(1, "", 4096);
        let cap = n.capacity;
        Shell::new(vec![n], jobs, cap)
    }

    /// Drains the actions, applying writes and deletes to the view's
    /// `instances` (the replica), without telling the controller yet.
    pub(super) fn drain(&mut self) -> Vec<JobAction> {
        let out: Vec<_> = std::iter::from_fn(|| self.c.poll_action()).collect();
        for a in &out {
            match a {
                JobAction::Write { record } => {
                    self.view.instances.retain(|r| r.key() != record.key());
                    self.view.instances.push(record.clone());
                }
                JobAction::Delete { job, id } => {
                    let key = InstanceRecord::key_of(job, id);
                    self.view.instances.retain(|r| r.key() != key);
                }
                _ => {}
            }
        }
        out
    }

    /// Gives the controller the view as it stands now.
    pub(super) fn sync(&mut self) -> Vec<JobAction> {
        self.view.wall_ms = WALL0 + self.now.0;
        self.c.set_view(self.now, self.view.clone());
        self.drain()
    }

    pub(super) fn scan(&mut self, found: Vec<Found>) -> Vec<JobAction> {
        self.c.set_local_scan(self.now, found);
        self.drain()
    }

    /// Runs every timeout due up to `t` (and the view after each write).
    pub(super) fn advance(&mut self, t: u64) -> Vec<JobAction> {
        let mut out = Vec::new();
        while let Some(due) = self.c.poll_timeout().filter(|&d| d <= Time(t)) {
            assert!(due >= self.now, "a timeout in the past: {due:?}");
            self.now = due;
            self.c.handle_timeout(due);
            let acts = self.drain();
            let wrote = acts.iter().any(|a| matches!(a, JobAction::Write { .. }));
            out.extend(acts);
            if wrote {
                out.extend(self.sync());
            }
        }
        self.now = Time(t);
        out
    }

    pub(super) fn event(&mut self, id: &str, e: ProcessEvent) -> Vec<JobAction> {
        if e == ProcessEvent::Started {
            self.c.set_addr(id, "10.0.0.1:31000".parse().unwrap());
        }
        self.c.handle_process_event(self.now, id, e);
        let mut out = self.drain();
        out.extend(self.sync());
        out
    }

    pub(super) fn record(&self, id: &str) -> Option<&InstanceRecord> {
        self.view.instances.iter().find(|r| r.id == id)
    }
}

pub(super) fn spawns(acts: &[JobAction]) -> Vec<String> {
    let f = |a: &JobAction| match a {
        JobAction::Spawn { id, .. } => Some(id.clone()),
        _ => None,
    };
    acts.iter().filter_map(f).collect()
}

pub(super) fn kills(acts: &[JobAction]) -> Vec<String> {
    let f = |a: &JobAction| match a {
        JobAction::Kill { id, .. } => Some(id.clone()),
        _ => None,
    };
    acts.iter().filter_map(f).collect()
}

/// The states written for instance `id`, in order.
pub(super) fn writes(acts: &[JobAction], id: &str) -> Vec<InstanceState> {
    let f = |a: &JobAction| match a {
        JobAction::Write { record } if record.id == id => Some(record.state),
        _ => None,
    };
    acts.iter().filter_map(f).collect()
}

pub(super) fn has(acts: &[JobAction], want: &JobAction) -> bool {
    acts.contains(want)
}

/// Starts every slot of a fresh single node and reports `Started`.
pub(super) fn running(jobs: Vec<JobRecord>) -> Shell {
    let mut s = Shell::fresh(jobs);
    s.scan(vec![]);
    let acts = s.advance(SETTLE.as_millis() as u64);
    for id in spawns(&acts) {
        s.event(&id, ProcessEvent::Started);
    }
    s
}

/// An HTTP check on `/health` every 500 ms: one pass is healthy, two
/// failures are not.
pub(super) fn quick_health() -> Health {
    Health {
        http: Some("/health".into()),
        tcp: false,
        exec: None,
        interval_ms: 500,
        timeout_ms: 100,
        healthy_threshold: 1,
        unhealthy_threshold: 2,
    }
}
