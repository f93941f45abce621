//! One run, phase by phase: formation, safety (faults on), liveness (faults
//! off, must converge), settle (echoes of the faults die out), idle
//! (membership must hold still). Writes run during formation and safety;
//! after the heal the replicas must become identical, and at the end they
//! are judged against every acknowledged write.

use std::time::{Duration, Instant};

use myco_core::Time;

use crate::check::{Violation, ViolationKind, agreement};
use crate::config::{Dur, SimConfig};
use crate::faults::Faults;
use crate::report::Report;
use crate::world::World;

/// Refusals a node may make in a correct run: duplicates, datagrams of an
/// earlier life still in flight, and datagrams reordered by more than the
/// replay window (`replay`); stream messages from a node it does not know
/// yet (`unknown_sender`: membership spreads unevenly, the sender retries
/// at its next round); versions below its collection horizon offered by a
/// peer not yet past it (`behind_horizon`: the peer catches up when it
/// sees the horizon). Anything else means a bad datagram or message was
/// built, sent to the wrong place, or misread.
const EXPECTED_REFUSALS: &[&str] = &["replay", "unknown_sender", "behind_horizon"];
/// Expected too when clocks differ by more than `max_clock_drift`: the
/// slower nodes refuse the faster one's writes for a while.
const SKEW_REFUSALS: &[&str] = &["clock_drift"];

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
    world.set_writing(true);
    advance_to(cfg, world, Time::ZERO + cfg.join_spread)?;
    let most = converge(cfg, world, Time::ZERO, cfg.budgets.formation, "formation")?;
    let formation = world.now.since(Time::ZERO);
    let formation_99 = most.since(Time::ZERO);

    // Safety: faults on; the event checkers and detection watch.
    world.trace(format_args!("safety"));
    let safety_start = world.now;
    world.net.degrade(&cfg.net);
    world.checks.strict_downs = cfg.is_quiet() && cfg.is_prompt();
    let mut faults = Faults::new(cfg, world);
    world.time_writes = true;
    while world.now < safety_start + cfg.safety {
        faults.step(cfg, world);
        failed(world)?;
        world.step(world.now + cfg.step);
        failed(world)?;
    }

    // Liveness: every fault and write ends; the nodes must agree on
    // membership, then hold identical state, within the budgets.
    world.trace(format_args!("liveness"));
    let heal = world.now;
    world.set_writing(false);
    world.time_writes = false;
    faults.heal(world);
    failed(world)?;
    converge(cfg, world, heal, cfg.budgets.convergence, "liveness")?;
    let convergence = world.now.since(heal);
    let state_convergence = converge_state(cfg, world, heal)?;

    // Settle: suspicions and downs decided before the heal are still being
    // gossiped and make a few nodes rejoin; they must die out, and the nodes
    // agree again, within the settle window.
    world.trace(format_args!("settle"));
    let echoes_before = world.checks.false_downs;
    let settle_end = world.now + cfg.settle;
    advance_to(cfg, world, settle_end)?;
    converge(cfg, world, settle_end, cfg.budgets.convergence, "settle")?;
    let echo_downs = world.checks.false_downs - echoes_before;

    // Idle: nothing happens, so nothing may change; traffic is the cost of
    // membership alone.
    world.trace(format_args!("idle"));
    world.checks.strict_downs = cfg.is_prompt();
    let idle_start = world.now;
    let (sent, bytes) = (world.traffic.sent, world.traffic.bytes_sent);
    let (messages, message_bytes) = (world.messages.sent, world.messages.bytes_sent);
    let live = world.running().count();
    advance_to(cfg, world, idle_start + cfg.idle)?;
    if let Err(d) = agreement(&world.nodes, 0) {
        let msg = format!("agreement lost during the idle window: {}", d.text);
        return Err(Violation::new(ViolationKind::Unstable, world.now, msg));
    }
    // The end: no write for a while, so the replicas must still be
    // identical, and hold what was acknowledged.
    if let Err(text) = world.state.identical(&world.nodes) {
        let msg = format!("replicas no longer identical at the end: {text}");
        return Err(Violation::new(ViolationKind::StateDiverged, world.now, msg));
    }
    world.state.final_check(world.now, &world.nodes);
    failed(world)?;
    let per_node_sec = |x: u64| {
        let secs = cfg.idle.as_secs_f64();
        if secs > 0.0 && live > 0 {
            x as f64 / live as f64 / secs
        } else {
            0.0
        }
    };

    let refused = world.refused_total();
    let skewed = !cfg.clock_excess().is_zero();
    let expected =
        |r: &str| EXPECTED_REFUSALS.contains(&r) || (skewed && SKEW_REFUSALS.contains(&r));
    if let Some((reason, n)) = refused.iter().find(|(r, _)| !expected(r)) {
        let msg =
            format!("{n} datagrams or messages refused as {reason:?}; all refusals: {refused:?}");
        return Err(Violation::new(ViolationKind::Refused, world.now, msg));
    }
    let mut state = world.state.report();
    state.convergence = cfg.workload.as_ref().map(|_| state_convergence);
    state.messages = world.messages.clone();
    state.idle_bytes_per_node_sec = per_node_sec(world.messages.bytes_sent - message_bytes);
    state.idle_messages_per_node_sec = per_node_sec(world.messages.sent - messages);
    if let Some(n) = world.nodes.iter().flatten().next() {
        (state.entries, state.tombstones, _) = n.state_size();
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
        state,
        digest: world.digest(),
    })
}

/// Steps to `until`, failing at the first violation.
fn advance_to(cfg: &SimConfig, world: &mut World, until: Time) -> Result<(), Violation> {
    while world.now < until {
        world.step((world.now + cfg.step).min(until));
        failed(world)?;
    }
    Ok(())
}

/// Steps until every running node holds identical state, or fails once
/// the state budget (plus the clock excess: writes from a clock beyond the
/// drift bound wait that long) has passed since the heal. Returns the time
/// it took.
fn converge_state(cfg: &SimConfig, world: &mut World, heal: Time) -> Result<Duration, Violation> {
    let budget = cfg.budgets.state + cfg.clock_excess();
    loop {
        match world.state.identical(&world.nodes) {
            Ok(()) => return Ok(world.now.since(heal)),
            Err(text) if world.now.since(heal) >= budget => {
                let msg = format!(
                    "replicas not identical {} after the heal: {text}",
                    Dur(budget)
                );
                return Err(Violation::new(ViolationKind::StateDiverged, world.now, msg));
            }
            Err(_) => {}
        }
        world.step(world.now + cfg.step);
        failed(world)?;
    }
}

pub(crate) fn failed(world: &mut World) -> Result<(), Violation> {
    match world.checks.take_failure() {
        Some(v) => Err(v),
        None => world.state.take_failure().map_or(Ok(()), Err),
    }
}

/// Steps until every node agrees, or fails once `budget` has passed since
/// `since`. Returns when 99% of the ordered pairs of live nodes first saw
/// each other up: the bulk of the work, without the stragglers.
pub(crate) fn converge(
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
        world.step(world.now + cfg.step);
        failed(world)?;
    }
}
