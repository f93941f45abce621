//! The jobs layer of each simulated node: its [`Controller`] (a new one
//! per life, as the agent's), fed its node's view when it changes, the
//! events of its processes and its timeouts; its actions carried out on
//! the simulated processes and, for records, as writes on the node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use myco_core::jobs::controller::{
    Controller, ControllerConfig, DEFAULT_DRAIN, Found, JobAction, View,
};
use myco_core::jobs::fence::FenceConfig;
use myco_core::jobs::placement::Capacity;
use myco_core::jobs::reconcile::{DEFAULT_SETTLE, DEFAULT_STATE_SETTLE};
use myco_core::jobs::supervise::ProcessEvent;
use myco_core::{Node, Time};
use myco_proto::Table;
use myco_proto::frame::Capacity as Offer;
use myco_proto::instance::{Exit, InstanceRecord};
use myco_proto::job::JobRecord;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::check::Violation;
use crate::jobs::{JobsConfig, JobsReport};
use crate::jobs_check;
use crate::jobs_procs::{ProcEvent, Procs};
use crate::jobs_workload::{JobsWorkload, shapes};
use crate::world::{World, addr_of, id_of};

pub(crate) struct Agents {
    pub(crate) controllers: Vec<Option<Controller>>,
    /// The node life each controller belongs to.
    boots: Vec<u64>,
    /// A digest of what each controller's view was built from.
    keys: Vec<u64>,
    pub(crate) procs: Procs,
    pub(crate) workload: JobsWorkload,
    shapes: Vec<(BTreeMap<String, String>, Offer)>,
    rng: StdRng,
    survive: f64,
    seed: u64,
    shrunk: Option<usize>,
    pub(crate) failure: Option<Violation>,
    pub(crate) report: JobsReport,
    /// Check every step that a job keeps `count` ready instances once it
    /// had them ([`JobsConfig::rollouts_only`]).
    min_ready: bool,
    /// Jobs that had `count` ready instances, by name.
    reached: std::collections::BTreeSet<String>,
}

impl Agents {
    /// The jobs layer of `cfg`, and the node shapes set on `world`.
    pub(crate) fn new(cfg: &JobsConfig, world: &mut World) -> Agents {
        let n = cfg.sim.nodes;
        let seed = cfg.sim.seed;
        let shapes = shapes(seed, n, cfg.tight);
        world.shapes = shapes.clone();
        Agents {
            controllers: (0..n).map(|_| None).collect(),
            boots: vec![0; n],
            keys: vec![0; n],
            procs: {
                let mut p = Procs::new(seed);
                // The blue/green check needs processes that only fail
                // when their version is broken.
                if cfg.rollouts_only {
                    p.calm();
                }
                p
            },
            workload: {
                let mut w = JobsWorkload::new(seed, cfg.jobs);
                w.broken = cfg.broken;
                w.versions_only = cfg.rollouts_only;
                if cfg.never {
                    w.never();
                }
                w
            },
            min_ready: cfg.rollouts_only,
            reached: Default::default(),
            shapes,
            rng: StdRng::seed_from_u64(seed ^ 0x000a_9e75),
            survive: cfg.survive,
            seed,
            shrunk: cfg.shrunk,
            failure: None,
            report: JobsReport::default(),
        }
    }

    fn fail(&mut self, at: Time, (kind, msg): (crate::check::ViolationKind, String)) {
        if self.failure.is_none() {
            self.failure = Some(Violation::new(kind, at, msg));
        }
    }

    /// Catches up with one world step: lives ended and begun, views
    /// changed, process events and timeouts due, job changes; then checks.
    pub(crate) fn step(&mut self, world: &mut World) {
        for i in 0..self.controllers.len() {
            self.follow_life(world, i);
        }
        while let Some(due) = self.procs.pop_due(world.now) {
            let Some(mut event) = self.procs.apply(&due) else {
                continue;
            };
            let i = due.node;
            let mine = due.asker == self.boots[i];
            // A process's end reaches whichever life runs now (a failed
            // spawn of an earlier life is an exit to it).
            match (&due.event, mine) {
                (_, true) | (ProcEvent::Exited(_), false) => {}
                (ProcEvent::SpawnFailed, false) => event = ProcessEvent::Exited(Exit::Code(127)),
                _ => continue,
            }
            let now = world.local(i, world.now);
            let Some(c) = self.controllers[i].as_mut() else {
                continue;
            };
            if event == ProcessEvent::Started {
                c.set_addr(&due.id, instance_addr(i, &due.id));
            }
            world.trace(format_args!("n{i} process {} {event:?}", due.id));
            c.handle_process_event(now, &due.id, event);
            self.drain(world, i);
        }
        for i in 0..self.controllers.len() {
            let now = world.local(i, world.now);
            for _ in 0..4 {
                let Some(c) = self.controllers[i].as_mut() else {
                    break;
                };
                if c.poll_timeout().is_none_or(|t| t > now) {
                    break;
                }
                c.handle_timeout(now);
                self.drain(world, i);
            }
        }
        let writer = world.running().next();
        if let Some(w) = writer {
            let wall = world.local(w, world.now).0;
            if let Some(job) = self.workload.change(world.now, wall) {
                // The history first, as the agent's deploy does: a revert
                // reads the version it brings back from there.
                let key = job.version_key();
                world.local_write(w, Table::JOB_VERSIONS, &key, Some(job.encode()));
                world.local_write(w, Table::JOBS, job.name(), Some(job.encode()));
            }
        }
        if let Some(v) = jobs_check::safety(&self.procs, &self.shapes) {
            self.fail(world.now, v);
        }
        if let Some(v) = jobs_check::never_twice(&self.procs) {
            self.fail(world.now, v);
        }
        if self.min_ready {
            self.check_min_ready(world.now);
        }
    }

    /// The blue/green promise on a quiet mesh: once every slot of a job
    /// had a ready instance (as the controllers supervise them), it never
    /// has fewer ready slots, whatever versions are rolled out or
    /// reverted. Slots, not instances: an old and a new instance of one
    /// slot side by side do not make up for another slot's instance that
    /// never got healthy (the promise holds while the old instances stay
    /// healthy). A `duplicates = "never"` job breaks before it makes, so
    /// it may be `max_parallel` slots short, no more: each slot is proven
    /// before the next one's old instance stops.
    fn check_min_ready(&mut self, now: Time) {
        let mut ready: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for (i, c) in self.controllers.iter().enumerate() {
            let Some(c) = c else { continue };
            for (id, state) in c.local() {
                let p = self.procs.map.get(&(i, id.to_string()));
                if let Some(p) = p.filter(|_| state == myco_proto::instance::InstanceState::Ready) {
                    ready
                        .entry(p.job.name().to_string())
                        .or_default()
                        .insert(p.slot);
                }
            }
        }
        let mut low = None;
        for (name, job) in &self.workload.jobs {
            let have = ready.get(name.as_str()).map_or(0, |s| s.len() as u32);
            let short = match job.spec.duplicates {
                myco_proto::job::Duplicates::Never => job.spec.update.max_parallel.max(1),
                myco_proto::job::Duplicates::Allowed => 0,
            };
            if have >= job.spec.count {
                self.reached.insert(name.clone());
            } else if have + short < job.spec.count && self.reached.contains(name) && low.is_none()
            {
                low = Some(format!("{name}: {have} ready, count {}", job.spec.count));
            }
        }
        if let Some(msg) = low {
            self.fail(now, (crate::check::ViolationKind::ReadyBelowCount, msg));
        }
    }

    /// Every node's placement and its own records, one line per node.
    pub(crate) fn describe(&self, world: &World) -> String {
        let mut out = String::new();
        for (i, c) in self.controllers.iter().enumerate() {
            let Some(c) = c else {
                out.push_str(&format!("n{i}: down\n"));
                continue;
            };
            let p = c.placement();
            let jobs: Vec<String> = p
                .jobs()
                .map(|(name, jp)| {
                    let slots: Vec<String> = jp.slots.iter().map(|s| s.to_string()).collect();
                    format!("{name}@v{} [{}]", jp.version, slots.join(", "))
                })
                .collect();
            let local: Vec<String> = c.local().map(|(id, s)| format!("{id}:{s:?}")).collect();
            let records: Vec<String> = world.nodes[i]
                .iter()
                .flat_map(|n| n.scan(Table::INSTANCES, ""))
                .filter_map(|(_, e)| e.value.as_deref())
                .filter_map(|b| InstanceRecord::decode(b).ok())
                .filter(|r| r.node == id_of(i))
                .map(|r| format!("{}:{:?}:{}", r.id, r.state, r.reason))
                .collect();
            out.push_str(&format!(
                "n{i} fp {:x} wake {:?} now {:?}: {}\n  local {local:?}\n  records {records:?}\n",
                p.fingerprint,
                c.poll_timeout(),
                world.local(i, world.now),
                jobs.join("; ")
            ));
        }
        out
    }

    /// Ends the controller of a node that stopped, starts one for a node
    /// that (re)started, and gives a running one its view if it changed.
    fn follow_life(&mut self, world: &mut World, i: usize) {
        let boot = world.lives[i].boot;
        let running = world.nodes[i].is_some();
        if self.controllers[i].is_some() && (!running || self.boots[i] != boot) {
            self.controllers[i] = None;
            world.trace(format_args!("n{i} agent died"));
            self.report.agent_deaths += 1;
            if !self.rng.random_bool(self.survive) {
                self.procs.machine_down(i);
            } else {
                self.procs.never_down(i);
            }
        }
        let Some(node) = world.nodes[i].as_ref() else {
            return;
        };
        let now = world.local(i, world.now);
        let key = view_key(node);
        match self.controllers[i].as_mut() {
            None => {
                let (_, offer) = &self.shapes[i];
                let percent = if self.shrunk == Some(i) { 60 } else { 100 };
                let capacity = Capacity {
                    cpu_milli: u64::from(offer.cpu_milli) * percent / 100,
                    memory_mb: offer.memory_mb * percent / 100,
                    pids: None,
                };
                let config = ControllerConfig {
                    settle: DEFAULT_SETTLE,
                    state_settle: DEFAULT_STATE_SETTLE,
                    seed: self.seed ^ ((i as u64) << 32) ^ boot,
                    drain: DEFAULT_DRAIN,
                    fence: FenceConfig::default(),
                };
                let mut c = Controller::new(id_of(i), capacity, config);
                c.set_view(now, View::from_node(node, now.0));
                let found: Vec<Found> = self
                    .procs
                    .alive_on(i)
                    .map(|(id, p)| Found {
                        id: id.to_string(),
                        job: p.job.name().to_string(),
                        slot: p.slot,
                        version: p.job.version,
                        addr: None,
                    })
                    .collect();
                self.report.found += found.len() as u64;
                world.trace(format_args!("n{i} agent starts, finds {found:?}"));
                c.set_local_scan(now, found);
                self.controllers[i] = Some(c);
                self.boots[i] = boot;
            }
            Some(c) if key != self.keys[i] => c.set_view(now, View::from_node(node, now.0)),
            Some(_) => {}
        }
        self.keys[i] = key;
        self.drain(world, i);
    }

    /// Carries out everything node `i`'s controller asked for.
    fn drain(&mut self, world: &mut World, i: usize) {
        while let Some(e) = self.controllers[i]
            .as_mut()
            .and_then(Controller::poll_event)
        {
            world.trace(format_args!("n{i} event {}", e.message));
            let done = myco_core::jobs::controller::JobEventKind::RolloutDone;
            self.report.rollouts_done += u64::from(e.kind == done);
        }
        let boot = self.boots[i];
        while let Some(action) = self.controllers[i]
            .as_mut()
            .and_then(Controller::poll_action)
        {
            world.trace(format_args!("n{i} jobs {}", describe(&action)));
            match action {
                JobAction::Spawn { id, slot, job } => {
                    let fp = self.controllers[i]
                        .as_ref()
                        .map_or(0, |c| c.placement().fingerprint);
                    let restart = self.procs.map.contains_key(&(i, id.clone()));
                    if let Some(v) =
                        jobs_check::start(&self.procs, i, &id, &job, slot, fp, !restart)
                    {
                        self.fail(world.now, v);
                    }
                    if restart {
                        self.report.restarts += 1;
                    } else {
                        self.report.starts += 1;
                    }
                    self.procs
                        .spawn(world.now, (i, &id), (job, slot), (boot, fp));
                }
                JobAction::Probe { id } => self.procs.probe(world.now, i, &id, boot),
                JobAction::Kill { id, grace } => {
                    self.report.kills += 1;
                    self.procs.kill(world.now, i, &id, grace);
                }
                JobAction::Release { id, .. } => {
                    let key = (i, id.clone());
                    if self.procs.map.get(&key).is_some_and(|p| p.alive) {
                        let msg = format!("n{i} released {id} while it runs");
                        self.fail(world.now, (crate::check::ViolationKind::Orphan, msg));
                    }
                    self.procs.map.remove(&key);
                }
                JobAction::Write { record } => {
                    self.report.record_writes += 1;
                    let crash_loop = record.reason.starts_with("crash loop");
                    self.report.gave_up += u64::from(record.avoid_until_ms.is_some() && crash_loop);
                    self.report.refused += u64::from(record.reason.starts_with("refused"));
                    world.local_write(i, Table::INSTANCES, &record.key(), Some(record.encode()));
                }
                JobAction::Delete { job, id } => {
                    self.report.record_writes += 1;
                    world.local_write(
                        i,
                        Table::INSTANCES,
                        &InstanceRecord::key_of(&job, &id),
                        None,
                    );
                }
                JobAction::Revert { job, from, to, .. } => {
                    world.trace(format_args!("n{i} reverts {job} v{from} to v{to}"));
                    if let Some(rec) = revert_record(world, i, &job, from, to) {
                        self.report.reverts += 1;
                        self.workload.jobs.insert(job.clone(), rec.clone());
                        world.local_write(i, Table::JOBS, &job, Some(rec.encode()));
                    }
                }
            }
        }
    }
}

/// The record an automatic revert writes on node `i`, as the agent's
/// `workflow::auto_revert` makes it: version `to` from the history with
/// the current count, only while the job is still at `from`.
fn revert_record(world: &World, i: usize, job: &str, from: u64, to: u64) -> Option<JobRecord> {
    let node = world.nodes[i].as_ref()?;
    let read = |table, key: &str| {
        let bytes = node.get(table, key)?.value.as_deref()?;
        JobRecord::decode(bytes).ok()
    };
    let cur = read(Table::JOBS, job)?;
    if cur.version != from || cur.stopped {
        return None;
    }
    let mut rec = read(Table::JOB_VERSIONS, &JobRecord::key_of_version(job, to))?;
    rec.spec.count = cur.spec.count;
    rec.stopped = false;
    Some(rec)
}

/// What a node's view is built from: its replica and its members' lives,
/// states and manifests.
fn view_key(node: &Node) -> u64 {
    let mut h = node.state_digest();
    for m in node.members() {
        let x = m.peer.id.as_u64()
            ^ (m.state as u64) << 56
            ^ m.peer.boot << 20
            ^ u64::from(m.peer.bump) << 4
            ^ u64::from(m.manifest.is_some());
        h = (h ^ x).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(17);
    }
    h
}

/// An action in a trace line, without the job record it may carry.
fn describe(a: &JobAction) -> String {
    match a {
        JobAction::Spawn { id, job, .. } => format!("spawn {id} (v{})", job.version),
        JobAction::Write { record: r } => {
            format!(
                "write {} {:?} {:?} restarts {}",
                r.id, r.state, r.reason, r.restarts
            )
        }
        other => format!("{other:?}"),
    }
}

/// The address a simulated instance listens on.
fn instance_addr(i: usize, id: &str) -> SocketAddr {
    let port = 30_000 + (id.len() as u16 % 1_000);
    SocketAddr::new(addr_of(i).ip(), port)
}
