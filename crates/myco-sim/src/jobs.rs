//! The jobs simulation: the real [`Controller`] on every simulated node,
//! fed its node's view (members, manifests, the replicated `jobs` and
//! `instances` tables) and simulated processes, while the membership
//! faults of a seed (crashes, graceful stops, restarts, partitions, loss)
//! strike. Instance records and job changes are real writes on the
//! nodes, so they travel by the core's replication.
//!
//! A stopped node is an agent death: its processes survive (and are
//! found by the next life's scan) with probability
//! [`JobsConfig::survive`], else the machine went down with them.
//!
//! Phases: formation (membership agrees), deploy (node 0 writes the jobs),
//! safety (faults, job changes, misbehaving processes; the safety checks
//! run every step), liveness (everything heals; every job must have
//! exactly `count` ready instances within [`JobsConfig::budget`]), then
//! idle (no instance record written for 10 s, still converged).

use std::fmt;
use std::time::{Duration, Instant};

use myco_core::Time;
use myco_proto::Table;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::check::{Violation, ViolationKind};
use crate::config::{Dur, SimConfig};
use crate::faults::Faults;
use crate::jobs_agents::Agents;
use crate::jobs_check;
use crate::phases::{converge, failed};
use crate::world::World;

/// One jobs run.
#[derive(Clone, Debug)]
pub struct JobsConfig {
    /// The membership run it rides on (nodes, network, faults); its
    /// `workload` is ignored: the jobs are the workload.
    pub sim: SimConfig,
    /// How many jobs are deployed.
    pub jobs: usize,
    /// Probability a stopped node's processes survive it (an agent
    /// crash), rather than going down with the machine.
    pub survive: f64,
    /// From the heal until every job must have `count` ready instances.
    pub budget: Duration,
    /// Small nodes (512 MB to 1 GiB): capacity binds, some slots stay
    /// pending, placement packs what fits.
    pub tight: bool,
    /// A node that counts its own capacity at 60% of what its manifest
    /// says: placement gives it more than it takes, and it refuses.
    pub shrunk: Option<usize>,
    /// Probability that a new version written during the safety phase is
    /// broken (its instances never pass a health check, or exit soon after
    /// starting without one): its rollout must fail and revert.
    pub broken: f64,
    /// Only new versions are written (no scale, no stop), and every step
    /// checks that a job which had `count` ready instances keeps at least
    /// that many: the blue/green promise, for quiet runs.
    pub rollouts_only: bool,
    /// Every other job (`j0`, `j2`, ...) is `duplicates = "never"`: every
    /// step checks that no slot of one runs twice at the same instant, and
    /// an agent that dies takes those processes with it (as the agent's
    /// do: a `never` process must not outlive the fence that guards it).
    pub never: bool,
}

impl JobsConfig {
    /// The membership faults of [`SimConfig::from_seed`] (no node stops
    /// for good: its share must come back for liveness to be judged
    /// against every job), 2 to 5 jobs.
    pub fn from_seed(seed: u64, nodes: usize, safety: Duration) -> JobsConfig {
        let mut sim = SimConfig::from_seed(seed, nodes);
        sim.safety = safety;
        sim.workload = None;
        if let Some(c) = &mut sim.faults.crashes {
            c.permanent = 0.0;
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x70b5);
        let budget = sim.budgets.convergence + Duration::from_secs(30);
        JobsConfig {
            sim,
            jobs: rng.random_range(2..=5),
            survive: f64::from(rng.random_range(0..=4u32)) / 4.0,
            budget,
            tight: rng.random_bool(0.3),
            shrunk: rng.random_bool(0.3).then(|| rng.random_range(0..nodes)),
            broken: 0.0,
            rollouts_only: false,
            never: false,
        }
    }
}

impl fmt::Display for JobsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.sim)?;
        write!(
            f,
            "jobs {}, processes survive a stop {:.2}, liveness budget {}, tight {}, shrunk {:?}, \
             broken versions {:.2}, rollouts only {}, never jobs {}",
            self.jobs,
            self.survive,
            Dur(self.budget),
            self.tight,
            self.shrunk,
            self.broken,
            self.rollouts_only,
            self.never
        )
    }
}

/// The figures of a passing jobs run.
#[derive(Clone, Debug, Default)]
pub struct JobsReport {
    /// The seed.
    pub seed: u64,
    /// From the heal until every job had `count` ready instances.
    pub liveness: Duration,
    /// Ready instances at the end.
    pub ready: usize,
    /// Slots no node could hold at the end (capacity).
    pub pending: usize,
    /// First starts of an instance.
    pub starts: u64,
    /// Restarts (after an exit, a failed spawn or a failed health check).
    pub restarts: u64,
    /// Kills asked for (scale down, moves, stops, unhealthy).
    pub kills: u64,
    /// Crash loops given up (records with `avoid_until_ms`).
    pub gave_up: u64,
    /// Starts refused for want of room.
    pub refused: u64,
    /// Agent lives ended by a stop.
    pub agent_deaths: u64,
    /// Processes found alive by a restarted agent.
    pub found: u64,
    /// Job changes written during the safety phase.
    pub job_changes: u64,
    /// Partitions and stops injected.
    pub partitions: u64,
    /// Stops injected.
    pub stops: u64,
    /// Instance records written and deleted, all nodes.
    pub record_writes: u64,
    /// Automatic reverts written (failed rollouts).
    pub reverts: u64,
    /// New versions written that were broken.
    pub broken_versions: u64,
    /// Rollouts seen to the end (every old instance gone), all nodes'
    /// controllers counted once per job version.
    pub rollouts_done: u64,
    /// Wall time of the run.
    pub wall: Duration,
}

impl fmt::Display for JobsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} ready ({} pending) {} after the heal; starts {}, restarts {}, kills {}, \
             gave up {}, refused {}, agent deaths {} (processes found {}), job changes {}, \
             partitions {}, stops {}, record writes {}, broken versions {}, reverts {}, \
             rollouts done {}, wall {:?}",
            self.seed,
            self.ready,
            self.pending,
            Dur(self.liveness),
            self.starts,
            self.restarts,
            self.kills,
            self.gave_up,
            self.refused,
            self.agent_deaths,
            self.found,
            self.job_changes,
            self.partitions,
            self.stops,
            self.record_writes,
            self.broken_versions,
            self.reverts,
            self.rollouts_done,
            self.wall
        )
    }
}

/// Runs one jobs simulation: the figures, or the first violation (with
/// the settings to reproduce it).
pub fn run_jobs(cfg: &JobsConfig) -> Result<JobsReport, Violation> {
    let wall = Instant::now();
    let mut world = World::new(&cfg.sim);
    let mut agents = Agents::new(cfg, &mut world);
    let result = phases(cfg, &mut world, &mut agents);
    result
        .map(|mut r| {
            r.wall = wall.elapsed();
            r
        })
        .map_err(|mut v| {
            v.config = cfg.to_string();
            v
        })
}

fn phases(
    cfg: &JobsConfig,
    world: &mut World,
    agents: &mut Agents,
) -> Result<JobsReport, Violation> {
    let sim = &cfg.sim;
    world.checks.strict_downs = sim.is_prompt();
    world.schedule_first_starts(sim.join_spread.as_millis() as u64);
    step_until(sim, world, agents, Time::ZERO + sim.join_spread)?;
    converge(sim, world, Time::ZERO, sim.budgets.formation, "formation")?;
    step(sim, world, agents)?;

    // Deploy: node 0 writes every job.
    for j in agents.workload.jobs.values() {
        world.local_write(0, Table::JOB_VERSIONS, &j.version_key(), Some(j.encode()));
        world.local_write(0, Table::JOBS, j.name(), Some(j.encode()));
    }

    // Safety: faults, job changes, misbehaving processes.
    let start = world.now;
    world.net.degrade(&sim.net);
    world.checks.strict_downs = sim.is_quiet() && sim.is_prompt();
    let mut faults = Faults::new(sim, world);
    agents
        .workload
        .start_changes(world.now, Duration::from_secs(5));
    while world.now < start + sim.safety {
        faults.step(sim, world);
        failed(world)?;
        step(sim, world, agents)?;
    }

    // Liveness: faults, changes and misbehaviour end.
    let heal = world.now;
    agents.workload.stop_changes();
    agents.procs.calm();
    faults.heal(world);
    failed(world)?;
    let (ready, pending) = loop {
        step(sim, world, agents)?;
        match jobs_check::converged(&world.nodes, &agents.controllers, &agents.procs) {
            Ok(done) => break done,
            Err(why) if world.now.since(heal) >= cfg.budget => {
                let detail = agents.describe(world);
                let msg = format!(
                    "not converged {} after the heal: {why}\n{detail}",
                    Dur(cfg.budget)
                );
                return Err(Violation::new(
                    ViolationKind::JobsNotConverged,
                    world.now,
                    msg,
                ));
            }
            Err(_) => {}
        }
    };
    let liveness = world.now.since(heal);
    if pending == 0 {
        idle(sim, world, agents)?;
    }
    let mut report = agents.report.clone();
    report.seed = sim.seed;
    report.liveness = liveness;
    report.ready = ready;
    report.pending = pending;
    report.job_changes = agents.workload.changes;
    report.broken_versions = agents.workload.broken_written;
    report.partitions = faults.partitions;
    report.stops = faults.stops;
    Ok(report)
}

/// The SD-card rule: once converged (and the avoidances of the faults
/// over), an idle mesh writes no instance record, and stays converged.
fn idle(sim: &SimConfig, world: &mut World, agents: &mut Agents) -> Result<(), Violation> {
    step_until(sim, world, agents, world.now + AVOIDANCES_END)?;
    let writes = agents.report.record_writes;
    step_until(sim, world, agents, world.now + IDLE)?;
    let wrote = agents.report.record_writes - writes;
    let done = jobs_check::converged(&world.nodes, &agents.controllers, &agents.procs);
    match done {
        Ok(_) if wrote == 0 => Ok(()),
        Ok(_) => {
            let msg = format!("{wrote} instance records written in {} idle", Dur(IDLE));
            Err(Violation::new(ViolationKind::IdleWrites, world.now, msg))
        }
        Err(why) => {
            let msg = format!("converged, then lost it while idle: {why}");
            Err(Violation::new(
                ViolationKind::JobsNotConverged,
                world.now,
                msg,
            ))
        }
    }
}

/// Longer than the simulated jobs' avoidance (5 s) plus the settle period:
/// a record avoided during the faults is forgotten by then.
const AVOIDANCES_END: Duration = Duration::from_secs(8);
/// The idle window judged.
const IDLE: Duration = Duration::from_secs(10);

fn step_until(
    sim: &SimConfig,
    world: &mut World,
    agents: &mut Agents,
    until: Time,
) -> Result<(), Violation> {
    while world.now < until {
        step(sim, world, agents)?;
    }
    Ok(())
}

/// One world step, then the jobs layer catches up with it and is checked.
fn step(sim: &SimConfig, world: &mut World, agents: &mut Agents) -> Result<(), Violation> {
    world.step(world.now + sim.step);
    failed(world)?;
    agents.step(world);
    failed(world)?;
    agents.failure.take().map_or(Ok(()), Err)
}
