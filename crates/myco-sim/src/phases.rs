//! One run, phase by phase: formation, safety (faults on), liveness (faults
//! off, must converge), settle (echoes of the faults die out), idle
//! (membership must hold still).

use std::time::{Duration, Instant};

use myco_core::Time;

use crate::check::{Violation, ViolationKind, agreement};
use crate::config::{Dur, SimConfig};
use crate::faults::Faults;
use crate::report::Report;
use crate::world::World;

/// Refusals a node may make in a correct run: duplicates, datagrams of an
/// earlier life still in flight, and datagrams reordered by more than the
/// replay window (`replay`). Anything else means a bad datagram was built,
/// sent to the wrong place, or misread.
const EXPECTED_REFUSALS: &[&str] = &["replay"];

/// Runs one simulation: formation, then the safety phase with faults, then
/// the liveness phase without, then the settle and idle windows.
///
/// Returns the figures of the run, or the first violation seen; either way
/// the outcome is a pure function of `config` (the wall time aside).
///
/// # Panics
///
/// If `config.nodes` or `config.step` is zero.
pub fn run(config: &SimConfig) -> Result<Report, Violation> {
    assert!(config.nodes > 0, "a simulation needs at least one node");
    assert!(
        !config.step.is_zero(),
        "the simulation step must be positive"
    );
    let wall = Instant::now();
    let mut world = World::new(config);
    phases(config, &mut world, wall).map_err(|mut v| {
        v.config = config.to_string();
        v
    })
}

fn phases(cfg: &SimConfig, world: &mut World, wall: Instant) -> Result<Report, Violation> {
    // Formation: no fault yet, so a live node declared down is a bug if
    // probes always come back in time.
    world.trace(format_args!("formation"));
    world.checks.strict_downs = cfg.is_prompt();
    world.schedule_first_starts(cfg.join_spread.as_millis() as u64);
    world.run_until(Time::ZERO + cfg.join_spread);
    failed(world)?;
    let most = converge(cfg, world, Time::ZERO, cfg.budgets.formation, "formation")?;
    let formation = world.now.since(Time::ZERO);
    let formation_99 = most.since(Time::ZERO);

    // Safety: faults on; the event checkers and detection watch.
    world.trace(format_args!("safety"));
    let safety_start = world.now;
    world.net.degrade(&cfg.net);
    world.checks.strict_downs = cfg.is_quiet() && cfg.is_prompt();
    let mut faults = Faults::new(cfg, world);
    while world.now < safety_start + cfg.safety {
        faults.step(cfg, world);
        failed(world)?;
        world.run_until(world.now + cfg.step);
        failed(world)?;
    }

    // Liveness: every fault ends; the nodes must agree within the budget.
    world.trace(format_args!("liveness"));
    let heal = world.now;
    faults.heal(world);
    failed(world)?;
    converge(cfg, world, heal, cfg.budgets.convergence, "liveness")?;
    let convergence = world.now.since(heal);

    // Settle: suspicions and downs decided before the heal are still being
    // gossiped and make a few nodes rejoin; they must die out, and the nodes
    // agree again, within the settle window.
    world.trace(format_args!("settle"));
    let echoes_before = world.checks.false_downs;
    let settle_end = world.now + cfg.settle;
    world.run_until(settle_end);
    failed(world)?;
    converge(cfg, world, settle_end, cfg.budgets.convergence, "settle")?;
    let echo_downs = world.checks.false_downs - echoes_before;

    // Idle: nothing happens, so nothing may change; traffic is the cost of
    // membership alone.
    world.trace(format_args!("idle"));
    world.checks.strict_downs = cfg.is_prompt();
    let idle_start = world.now;
    let (sent, bytes) = (world.traffic.sent, world.traffic.bytes_sent);
    let live = world.running().count();
    world.run_until(idle_start + cfg.idle);
    failed(world)?;
    if let Err(d) = agreement(&world.nodes, 0) {
        let msg = format!("agreement lost during the idle window: {}", d.text);
        return Err(Violation::new(ViolationKind::Unstable, world.now, msg));
    }
    let per_node_sec = |x: u64| {
        let secs = cfg.idle.as_secs_f64();
        if secs > 0.0 && live > 0 {
            x as f64 / live as f64 / secs
        } else {
            0.0
        }
    };

    let refused = world.refused_total();
    if let Some((reason, n)) = refused.iter().find(|(r, _)| !EXPECTED_REFUSALS.contains(r)) {
        let msg = format!("{n} datagrams refused as {reason:?}; all refusals: {refused:?}");
        return Err(Violation::new(ViolationKind::Refused, world.now, msg));
    }

    Ok(Report {
        config: cfg.to_string(),
        nodes: cfg.nodes,
        virtual_time: world.now.since(Time::ZERO),
        wall: wall.elapsed(),
        traffic: world.traffic.clone(),
        formation,
        formation_99,
        convergence,
        echo_downs,
        detection: world.checks.detection.clone(),
        idle_bytes_per_node_sec: per_node_sec(world.traffic.bytes_sent - bytes),
        idle_datagrams_per_node_sec: per_node_sec(world.traffic.sent - sent),
        stops: faults.stops,
        restarts: world.restarts,
        partitions: faults.partitions,
        downs: world.checks.downs,
        false_downs: world.checks.false_downs,
        refused,
        digest: world.digest(),
    })
}

fn failed(world: &mut World) -> Result<(), Violation> {
    world.checks.take_failure().map_or(Ok(()), Err)
}

/// Steps until every node agrees, or fails once `budget` has passed since
/// `since`. Returns when 99% of the ordered pairs of live nodes first saw
/// each other up: the bulk of the work, without the stragglers.
fn converge(
    cfg: &SimConfig,
    world: &mut World,
    since: Time,
    budget: Duration,
    phase: &str,
) -> Result<Time, Violation> {
    let mut first = 0;
    let mut most = None;
    loop {
        let live = world.running().count() as u64;
        if most.is_none() && world.checks.pairs_up * 100 >= 99 * live * live.saturating_sub(1) {
            most = Some(world.now);
        }
        match agreement(&world.nodes, first) {
            Ok(()) => return Ok(most.unwrap_or(world.now)),
            Err(d) if world.now.since(since) >= budget => {
                let msg = format!("{phase}: no agreement after {}: {}", Dur(budget), d.text);
                return Err(Violation::new(ViolationKind::NoConvergence, world.now, msg));
            }
            Err(d) => first = d.observer,
        }
        world.checks.overdue(world.now);
        world.run_until(world.now + cfg.step);
        failed(world)?;
    }
}
