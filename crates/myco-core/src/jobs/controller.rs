//! The controller: one node's jobs state machine, gluing the pure parts
//! ([`placement::place`], [`Settle`], [`super::reconcile::reconcile`],
//! [`Supervisor`]) exactly as the [`crate::jobs`] docs describe, so the
//! agent and the simulator drive the same code.
//!
//! Driving it, in the manner of the node:
//! - [`Controller::set_view`] after any change of members, manifests, or
//!   the `jobs` / `instances` tables; [`Controller::set_local_scan`] once
//!   the shell has looked for processes that survived an agent restart
//!   (an empty list on a fresh node): until then it starts and forgets
//!   nothing, so a survivor's record is never lost;
//! - [`Controller::handle_process_event`] with what a process did,
//!   [`Controller::set_addr`] before reporting `Started`,
//!   [`Controller::handle_timeout`] when [`Controller::poll_timeout`] is due;
//! - [`Controller::poll_action`] until `None` after each call.
//!
//! Every call ends with a level-triggered reconcile pass, so a missed or
//! repeated event costs nothing. Instance records come out as
//! [`JobAction::Write`] only when they differ from what this node last
//! wrote (or, after a restart, from its replica): an idle node writes
//! nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::JobRecord;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::fence::{Fence, FenceConfig};
use super::placement::{self, Capacity, Cluster, Liveness, NodeView, Placement};
use super::settle::Settle;
use super::supervise::{ProcessEvent, Supervisor};
use crate::time::Time;

mod config;
mod drive;
mod events;
mod fenced;
mod handoff;
mod heal;
mod local;
mod pass;
#[cfg(test)]
mod tests;
mod view;

pub use config::{ControllerConfig, DEFAULT_DRAIN, Found};
pub use events::{EVENT_QUEUE, JobEvent, JobEventKind};
use local::Local;
pub use view::{View, draining_members, mark_draining, node_view, suspects, version_keys};

/// What the shell should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// Start (or restart) the process of instance `id` of `job` (the
    /// version's record: spec, pinned digest) in `slot`. Shell: fetch,
    /// verify and unpack the spore if needed, allocate a port, spawn; then
    /// [`Controller::set_addr`] and [`ProcessEvent::Started`], or
    /// [`ProcessEvent::SpawnFailed`].
    Spawn {
        /// The instance.
        id: String,
        /// Its slot.
        slot: u32,
        /// The job version's record.
        job: Arc<JobRecord>,
    },
    /// Run the job's health probe once for `id`; report `ProbeOk` or
    /// `ProbeFailed`.
    Probe {
        /// The instance.
        id: String,
    },
    /// SIGTERM the group, SIGKILL after `grace`; report `Exited` when gone.
    Kill {
        /// The instance.
        id: String,
        /// Time allowed to stop cleanly.
        grace: Duration,
    },
    /// The instance has no process any more and the controller forgot it:
    /// the shell may remove its directory and release its port.
    Release {
        /// The instance.
        id: String,
        /// It gave up after a crash loop and stays listed as `failed`: its
        /// logs are what a user reads next, so the shell keeps them (only
        /// them) until the record's [`JobAction::Delete`].
        keep_logs: bool,
    },
    /// A rollout of `job` to version `from` failed and the job's
    /// `auto_revert` is on: if the job's current record is still version
    /// `from`, write the record of version `to` (from `Table::JOB_VERSIONS`,
    /// with the current `count`) as the job's current record. Every node
    /// that writes it writes the same bytes.
    Revert {
        /// The job.
        job: String,
        /// The version that failed.
        from: u64,
        /// The version the old instances run.
        to: u64,
        /// Why, for the log.
        reason: String,
    },
    /// Write this record to `Table::INSTANCES` under `record.key()`
    /// (durably). Only when it differs from what this node last wrote.
    Write {
        /// The record.
        record: InstanceRecord,
    },
    /// Delete `Table::INSTANCES` key `JOB/ID`.
    Delete {
        /// The job.
        job: String,
        /// The instance.
        id: String,
    },
}

/// One node's jobs controller.
#[derive(Debug)]
pub struct Controller {
    me: NodeId,
    capacity: Capacity,
    rng: StdRng,
    settle: Settle,
    view: View,
    /// When the view was set: its `wall_ms` was the wall time then.
    view_at: Time,
    /// Current job records by name, shared with `Spawn` actions.
    jobs: BTreeMap<String, Arc<JobRecord>>,
    /// This node's records in the view, by instance id.
    mine: BTreeMap<String, InstanceRecord>,
    placement: Placement,
    scanned: bool,
    local: BTreeMap<String, Local>,
    /// What this node wrote last, by instance id (newer than the view
    /// until the view catches up).
    written: BTreeMap<String, InstanceRecord>,
    /// Records deleted and still in the view, so one is deleted once.
    deleted: BTreeSet<String>,
    /// A pass is due then (the settle period ends).
    wake: Option<Time>,
    /// Placement is due again then (an avoidance ends).
    replace_at: Option<Time>,
    /// A rollout moves by time alone then (a new instance proven).
    rollout_at: Option<Time>,
    /// The up nodes (with a manifest) of the last placement, by id: a
    /// view that only lost some of them is a departure.
    up: Vec<NodeView>,
    /// The drain period of replaced instances.
    drain: Duration,
    /// Rolling jobs as last seen: version, and whether it failed (events
    /// are told once per change).
    rolling: BTreeMap<String, (u64, bool)>,
    /// Reverts asked for, by (job, failed version): asked once.
    reverted: BTreeSet<(String, u64)>,
    /// Fencing of `never` jobs: the quorum, who went out of sight when.
    fence: Fence,
    fence_config: FenceConfig,
    /// `never` starts are held until then (a lease to wait out).
    fence_at: Option<Time>,
    /// Whether the last pass had a majority (events on change only).
    fenced: bool,
    /// Local instances stopped by the fence (told once).
    fence_stopped: BTreeSet<String>,
    /// A minority keeps its `never` instances until then: the previous
    /// agent's fence lease still covers them ([`Controller::hold_fence_until`]).
    fence_hold: Option<Time>,
    /// Handing off before a graceful leave ([`Controller::hand_off`]).
    leaving: bool,
    events: events::Events,
    actions: VecDeque<JobAction>,
}

impl Controller {
    /// A controller for node `me`, which offers `capacity` (it never starts
    /// past it, whatever its view says).
    pub fn new(me: NodeId, capacity: Capacity, config: ControllerConfig) -> Controller {
        let view = View::default();
        let placement = placement::place(&Cluster {
            wall_ms: 0,
            nodes: &[],
            jobs: &[],
            instances: &[],
            versions: &[],
        });
        Controller {
            me,
            capacity,
            rng: StdRng::seed_from_u64(config.seed),
            settle: Settle::split(config.settle, config.state_settle.min(config.settle)),
            view,
            view_at: Time::ZERO,
            jobs: BTreeMap::new(),
            mine: BTreeMap::new(),
            placement,
            scanned: false,
            local: BTreeMap::new(),
            written: BTreeMap::new(),
            deleted: BTreeSet::new(),
            wake: None,
            replace_at: None,
            rollout_at: None,
            up: Vec::new(),
            drain: config.drain,
            rolling: BTreeMap::new(),
            reverted: BTreeSet::new(),
            fence: Fence::default(),
            fence_config: config.fence,
            fence_at: None,
            fenced: false,
            fence_stopped: BTreeSet::new(),
            fence_hold: None,
            leaving: false,
            events: events::Events::default(),
            actions: VecDeque::new(),
        }
    }

    /// Replaces the view and runs a pass.
    pub fn set_view(&mut self, now: Time, view: View) {
        self.jobs = view
            .jobs
            .iter()
            .map(|j| (j.name().to_string(), Arc::new(j.clone())))
            .collect();
        self.mine = view
            .instances
            .iter()
            .filter(|r| r.node == self.me)
            .map(|r| (r.id.clone(), r.clone()))
            .collect();
        let mine = &self.mine;
        self.deleted.retain(|id| mine.contains_key(id));
        // What the replica holds already needs no copy: `written` only
        // bridges writes the view has not caught up with.
        self.written.retain(|id, w| mine.get(id) != Some(w));
        self.view = view;
        self.view_at = now;
        self.replace(now);
        self.pass(now);
    }

    /// What survived an agent restart (empty on a fresh node). Survivors
    /// still placed here are adopted without a restart; the others are
    /// stopped once the view settles (at once if their job is stopped).
    pub fn set_local_scan(&mut self, now: Time, found: Vec<Found>) {
        for f in found {
            if self.local.contains_key(&f.id) {
                continue;
            }
            let mut local = Local::found(
                f.job.clone(),
                f.slot,
                f.version,
                self.jobs.get(&f.job),
                self.mine.get(&f.id),
            );
            // The process's own address beats a record's.
            local.addr = f.addr.or(local.addr);
            self.local.insert(f.id, local);
        }
        // This node's records of instances that did not outlive the agent
        // still say `ready`, at an address nothing listens on: say
        // otherwise before anyone counts on them. Else a replacement on a
        // node that took the slot over while this one was down hands it
        // back to a ghost (and the job dips below its count) the moment
        // this node is seen up again.
        let ghosts: Vec<InstanceRecord> = self
            .mine
            .values()
            .filter(|r| r.state == InstanceState::Ready && !self.local.contains_key(&r.id))
            .cloned()
            .collect();
        for mut r in ghosts {
            r.state = InstanceState::Launching;
            r.addr = None;
            r.reason = "not running since the agent restarted".into();
            self.write(now, r);
        }
        self.scanned = true;
        self.pass(now);
    }

    /// The address (`ip:port`) the shell gave an instance; records written
    /// after carry it.
    pub fn set_addr(&mut self, id: &str, addr: SocketAddr) {
        if let Some(l) = self.local.get_mut(id) {
            l.addr = Some(addr);
        }
    }

    /// When [`Controller::handle_timeout`] should run next.
    pub fn poll_timeout(&self) -> Option<Time> {
        let sups = self
            .local
            .values()
            .filter_map(|l| l.sup.as_ref().and_then(Supervisor::poll_timeout));
        let wake = self.wake.filter(|_| self.scanned);
        let rollout = self.rollout_at.filter(|_| self.scanned);
        let fence = self.fence_at.filter(|_| self.scanned);
        sups.chain(wake)
            .chain(self.replace_at)
            .chain(rollout)
            .chain(fence)
            .min()
    }

    /// The next healing or rollout decision to tell (log, `/v1/events`,
    /// metrics).
    pub fn poll_event(&mut self) -> Option<JobEvent> {
        self.events.pop()
    }

    /// Events lost because they were not polled in time.
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped
    }

    /// The next thing for the shell to do.
    pub fn poll_action(&mut self) -> Option<JobAction> {
        self.actions.pop_front()
    }

    /// The last placement (for `plan`, metrics, pending reasons).
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Local instances and their state (for metrics and status).
    pub fn local(&self) -> impl Iterator<Item = (&str, InstanceState)> {
        self.local.iter().map(|(id, l)| (id.as_str(), l.state()))
    }

    /// Wall time at `now`, counted from the view's.
    fn wall(&self, now: Time) -> u64 {
        self.view.wall_ms + now.since(self.view_at).as_millis() as u64
    }

    /// Places again (the view changed, or an avoidance ended).
    fn replace(&mut self, now: Time) {
        let wall = self.wall(now);
        let placement = placement::place(&Cluster {
            wall_ms: wall,
            nodes: &self.view.nodes,
            jobs: &self.view.jobs,
            instances: &self.view.instances,
            versions: &self.view.versions,
        });
        // Up nodes with a manifest: what the members' fingerprint covers.
        let mut up: Vec<NodeView> = self
            .view
            .nodes
            .iter()
            .filter(|n| n.liveness == Liveness::Up && n.tags.is_some())
            .cloned()
            .collect();
        up.sort_by_key(|n| n.id);
        let departure = up.len() < self.up.len() && up.iter().all(|n| self.up.contains(n));
        let (members, fp) = (placement.members_fingerprint, placement.fingerprint);
        if departure {
            self.settle.observe_departure(now, members, fp);
        } else {
            self.settle.observe_parts(now, members, fp);
        }
        self.up = up;
        self.placement = placement;
        self.fence.observe(now, self.me, &self.view);
        // The next avoidance to end changes placement with no new view.
        let ends = self.view.instances.iter().filter_map(|r| r.avoid_until_ms);
        let own = self.local.values().filter_map(|l| l.avoid_until_ms);
        self.replace_at = ends
            .chain(own)
            .filter(|&t| t > wall)
            .min()
            .map(|t| now + Duration::from_millis(t - wall));
    }

    /// Feeds a process event to the instance's supervisor.
    pub fn handle_process_event(&mut self, now: Time, id: &str, event: ProcessEvent) {
        self.event(now, id, event);
        self.pass(now);
    }

    /// Time passed: supervisor timers, the end of the settle period, the
    /// end of an avoidance.
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<String> = self
            .local
            .iter()
            .filter(|(_, l)| {
                l.sup
                    .as_ref()
                    .and_then(Supervisor::poll_timeout)
                    .is_some_and(|t| t <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(sup) = self.local.get_mut(&id).and_then(|l| l.sup.as_mut()) {
                sup.handle_timeout(now);
            }
            self.drive(now, &id);
        }
        if self.replace_at.is_some_and(|t| t <= now) {
            self.replace(now);
        }
        self.pass(now);
    }
}
