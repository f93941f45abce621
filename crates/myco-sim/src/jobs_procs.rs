//! The simulated processes of the jobs simulation: start latency, slow
//! starts, spawn failures, random exits, health flips, kills that take a
//! while. Every draw comes from a seeded stream of its own, so processes
//! never shift membership's random choices.

use std::collections::BTreeMap;
use std::sync::Arc;

use myco_core::Time;
use myco_proto::instance::Exit;
use myco_proto::job::JobRecord;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// One simulated process (an instance's process group on a node).
pub(crate) struct Proc {
    /// The job version it runs.
    pub(crate) job: Arc<JobRecord>,
    pub(crate) slot: u32,
    /// A process exists (starting or running).
    pub(crate) alive: bool,
    /// It has been started (not only asked for).
    pub(crate) started: bool,
    /// Probes fail before this (a slow start).
    healthy_at: Time,
    /// Probes fail in this window (a health flip).
    sick: Option<(Time, Time)>,
    /// The placement fingerprint of the node's view when it first started
    /// this instance (restarts keep it).
    pub(crate) fingerprint: u64,
    /// Which spawn this is, so events of an earlier one are ignored.
    generation: u64,
}

/// What a process does, as the shell will tell its controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ProcEvent {
    Started,
    SpawnFailed,
    Exited(Exit),
    /// A probe's outcome, decided when it is delivered.
    Probed,
}

/// A process event due at some time.
pub(crate) struct Due {
    pub(crate) node: usize,
    pub(crate) id: String,
    pub(crate) event: ProcEvent,
    /// The agent life that asked (spawns and probes answer to it alone).
    pub(crate) asker: u64,
    generation: u64,
    /// When it is due.
    at: Time,
}

/// Every simulated process of the run.
pub(crate) struct Procs {
    /// By (node, instance id): the live ones and the dead ones not yet
    /// released by their controller.
    pub(crate) map: BTreeMap<(usize, String), Proc>,
    queue: BTreeMap<(Time, u64), Due>,
    seq: u64,
    rng: StdRng,
    /// Random exits, spawn failures and health flips (the safety phase).
    misbehave: bool,
}

impl Procs {
    pub(crate) fn new(seed: u64) -> Procs {
        Procs {
            map: BTreeMap::new(),
            queue: BTreeMap::new(),
            seq: 0,
            rng: StdRng::seed_from_u64(seed ^ 0x000b_5e55_ed0f_f00d),
            misbehave: true,
        }
    }

    fn push(&mut self, at: Time, mut due: Due) {
        due.at = at;
        self.seq += 1;
        self.queue.insert((at, self.seq), due);
    }

    /// The next event due at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<Due> {
        let (&(at, seq), _) = self.queue.first_key_value()?;
        if at > now {
            return None;
        }
        self.queue.remove(&(at, seq))
    }

    /// Spawns (or restarts) instance `id` on `node` for agent life
    /// `asker`, whose placement had fingerprint `fingerprint`.
    pub(crate) fn spawn(
        &mut self,
        now: Time,
        (node, id): (usize, &str),
        (job, slot): (Arc<JobRecord>, u32),
        (asker, fingerprint): (u64, u64),
    ) {
        let r = &mut self.rng;
        let latency = ms(r.random_range(10..=300));
        let slow = r.random_bool(0.15);
        let healthy_at = now
            + latency
            + if slow {
                ms(r.random_range(1_000..=6_000))
            } else {
                ms(0)
            };
        let bad = self.misbehave;
        let fails = bad && r.random_bool(0.04);
        let crash =
            (bad && r.random_bool(0.15)).then(|| now + latency + ms(r.random_range(500..=20_000)));
        let sick = (bad && r.random_bool(0.15)).then(|| {
            let from = healthy_at + ms(r.random_range(0..=10_000));
            (from, from + ms(r.random_range(500..=5_000)))
        });
        // A broken version: never healthy; without a health check to fail,
        // it exits soon after it starts (code 2, which the heal's calm
        // leaves in place: broken stays broken).
        let broken = is_broken(&job);
        let broken_exit = (broken && job.spec.health.is_none())
            .then(|| now + latency + ms(r.random_range(100..=1_000)));
        let key = (node, id.to_string());
        let generation = self.map.get(&key).map_or(0, |p| p.generation + 1);
        let fingerprint = self.map.get(&key).map_or(fingerprint, |p| p.fingerprint);
        self.map.insert(
            key,
            Proc {
                job,
                slot,
                alive: !fails,
                started: false,
                healthy_at,
                sick,
                fingerprint,
                generation,
            },
        );
        let event = if fails {
            ProcEvent::SpawnFailed
        } else {
            ProcEvent::Started
        };
        let due = |event| Due {
            node,
            id: id.to_string(),
            event,
            asker,
            generation,
            at: now,
        };
        self.push(now + latency, due(event));
        if let Some(at) = crash.filter(|_| !fails) {
            self.push(at, due(ProcEvent::Exited(Exit::Code(1))));
        }
        if let Some(at) = broken_exit.filter(|_| !fails) {
            self.push(at, due(ProcEvent::Exited(Exit::Code(2))));
        }
    }

    /// A probe of `id`, answered 5 to 50 ms later.
    pub(crate) fn probe(&mut self, now: Time, node: usize, id: &str, asker: u64) {
        let Some(p) = self.map.get(&(node, id.to_string())) else {
            return;
        };
        let generation = p.generation;
        let at = now + ms(self.rng.random_range(5..=50));
        self.push(
            at,
            Due {
                node,
                id: id.to_string(),
                event: ProcEvent::Probed,
                asker,
                generation,
                at,
            },
        );
    }

    /// SIGTERM, then gone within the grace (or at once if not running).
    pub(crate) fn kill(&mut self, now: Time, node: usize, id: &str, grace: std::time::Duration) {
        let Some(p) = self.map.get(&(node, id.to_string())).filter(|p| p.alive) else {
            return;
        };
        let generation = p.generation;
        let took = ms(self.rng.random_range(20..=400)).min(grace);
        let due = Due {
            node,
            id: id.to_string(),
            event: ProcEvent::Exited(Exit::Signal(15)),
            asker: 0,
            generation,
            at: now,
        };
        self.push(now + took, due);
    }

    /// Applies an event to its process; returns the event to report, or
    /// `None` when it is stale (an earlier spawn's, or the process is
    /// gone). A probe becomes `ProbeOk` or `ProbeFailed` here.
    pub(crate) fn apply(&mut self, due: &Due) -> Option<myco_core::jobs::supervise::ProcessEvent> {
        use myco_core::jobs::supervise::ProcessEvent as E;
        let p = self.map.get_mut(&(due.node, due.id.clone()))?;
        // A failed spawn never lived, and a probe of a dead process fails;
        // a start or an exit needs the process.
        let needs_life = matches!(due.event, ProcEvent::Started | ProcEvent::Exited(_));
        if p.generation != due.generation || needs_life && !p.alive {
            return None;
        }
        Some(match &due.event {
            ProcEvent::Started => {
                p.started = true;
                E::Started
            }
            ProcEvent::SpawnFailed => E::SpawnFailed("simulated spawn failure".into()),
            ProcEvent::Exited(e) => {
                p.alive = false;
                E::Exited(*e)
            }
            ProcEvent::Probed => {
                let now = due.at;
                let sick = p.sick.is_some_and(|(a, b)| now >= a && now < b);
                if p.alive && p.started && now >= p.healthy_at && !sick && !is_broken(&p.job) {
                    E::ProbeOk
                } else {
                    E::ProbeFailed("simulated probe failure".into())
                }
            }
        })
    }

    /// Misbehaviour ends (the heal): no more random exits, spawn failures
    /// or health flips, including those already drawn for running
    /// processes.
    pub(crate) fn calm(&mut self) {
        self.misbehave = false;
        for p in self.map.values_mut() {
            p.sick = None;
        }
        self.queue
            .retain(|_, d| d.event != ProcEvent::Exited(Exit::Code(1)));
    }

    /// The machine went down: its processes are gone.
    pub(crate) fn machine_down(&mut self, node: usize) {
        self.map.retain(|(n, _), _| *n != node);
    }

    /// An agent died and its `duplicates = "never"` processes with it
    /// (they must not outlive their fence); the others live on.
    pub(crate) fn never_down(&mut self, node: usize) {
        use myco_proto::job::Duplicates;
        self.map
            .retain(|(n, _), p| *n != node || p.job.spec.duplicates != Duplicates::Never);
    }

    /// The live processes on `node`.
    pub(crate) fn alive_on(&self, node: usize) -> impl Iterator<Item = (&str, &Proc)> {
        self.map
            .iter()
            .filter(move |((n, _), p)| *n == node && p.alive)
            .map(|((_, id), p)| (id.as_str(), p))
    }
}

/// Whether a job version is a broken one (the workload marks it).
pub(crate) fn is_broken(job: &JobRecord) -> bool {
    job.spec.env.contains_key("BROKEN")
}

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}
