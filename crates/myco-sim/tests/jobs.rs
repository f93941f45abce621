//! The jobs simulation: the real controller on every node, simulated
//! processes (start latency, slow starts, spawn failures, exits, health
//! flips), membership faults. Safety is checked every step (no node over
//! capacity, no instance against its constraints, no instance spawned
//! twice by one node, no slot started by two nodes from one view, no
//! running process released); liveness after the heal (every job has
//! exactly `count` ready instances) within a budget.

use std::time::Duration;

use myco_sim::{Fault, FaultPlan, JobsConfig, JobsReport, SimConfig, run_jobs};

/// The p-th percentile (0..=100) of sorted durations.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

/// Runs every seed; panics with each failure's reproduction, after
/// printing the figures and the liveness p50 / p99 / max.
fn seeds(list: impl IntoIterator<Item = u64>, nodes: usize, safety: Duration) -> Vec<JobsReport> {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for seed in list {
        match run_jobs(&JobsConfig::from_seed(seed, nodes, safety)) {
            Ok(r) => {
                println!("{r}");
                reports.push(r);
            }
            Err(v) => failures.push(format!("seed {seed}: {v}")),
        }
    }
    let mut times: Vec<Duration> = reports.iter().map(|r| r.liveness).collect();
    times.sort();
    if !times.is_empty() {
        println!(
            "{} seeds passed, {} failed: liveness after the heal p50 {:?}, p99 {:?}, max {:?}",
            reports.len(),
            failures.len(),
            percentile(&times, 50),
            percentile(&times, 99),
            times.last().unwrap()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    reports
}

#[test]
fn many_seeds_keep_jobs_safe_and_converge_after_the_heal() {
    let reports = seeds(0..12, 5, Duration::from_secs(20));
    let sum = |f: fn(&JobsReport) -> u64| reports.iter().map(f).sum::<u64>();
    // The faults and the misbehaviour did happen.
    assert!(sum(|r| r.restarts) > 0, "no restart");
    assert!(sum(|r| r.agent_deaths) > 0, "no agent died");
    // Whether a dead agent's processes outlive it is a draw per seed, and
    // these 12 runs may hold none (the trajectories moved with the
    // rollout changes: only one seed ever had a survivor). Survivors are
    // covered deterministically by
    // `a_restarted_agent_adopts_its_survivors_without_a_duplicate`.
    let found = sum(|r| r.found);
    println!("processes found by restarted agents: {found}");
    assert!(sum(|r| r.partitions) > 0, "no partition");
    assert!(sum(|r| r.job_changes) > 0, "no job change");
    assert!(reports.iter().all(|r| r.ready > 0 || r.starts > 0));
    // Roomy nodes hold every slot: exactly `count` ready per job.
    for (seed, r) in (0..).zip(&reports) {
        let cfg = JobsConfig::from_seed(seed, 5, Duration::from_secs(20));
        assert!(cfg.tight || r.pending == 0, "{r}");
    }
}

/// A scripted run on a quiet network: `script` during a 30 s safety phase.
fn scripted(seed: u64, survive: f64, script: Vec<(Duration, Fault)>) -> JobsReport {
    let mut sim = SimConfig::no_faults(5, seed);
    sim.safety = Duration::from_secs(30);
    sim.workload = None;
    sim.faults = FaultPlan {
        script,
        ..FaultPlan::default()
    };
    let budget = Duration::from_secs(30);
    let cfg = JobsConfig {
        sim,
        jobs: 3,
        survive,
        budget,
        tight: false,
        shrunk: None,
        broken: 0.0,
        rollouts_only: false,
        never: false,
    };
    run_jobs(&cfg).unwrap_or_else(|v| panic!("{v}"))
}

fn crash(node: usize, at: u64, back_after: u64) -> (Duration, Fault) {
    let fault = Fault::Stop {
        node,
        graceful: false,
        restart_after: Some(Duration::from_secs(back_after)),
    };
    (Duration::from_secs(at), fault)
}

#[test]
fn a_dead_machine_s_slots_move_and_its_return_stops_no_one_twice() {
    // Machines die with their processes: their slots start elsewhere.
    let r = scripted(3, 0.0, vec![crash(1, 5, 8), crash(3, 15, 5)]);
    println!("{r}");
    assert_eq!((r.stops, r.found), (2, 0));
    assert!(r.ready > 0);
}

#[test]
fn a_restarted_agent_adopts_its_survivors_without_a_duplicate() {
    // Agents die, processes live on: the next life finds and adopts them
    // (the exactly-once check at the end fails on a duplicate or orphan).
    let r = scripted(
        4,
        1.0,
        vec![crash(0, 5, 3), crash(2, 12, 4), crash(4, 20, 2)],
    );
    println!("{r}");
    assert!(r.found > 0, "{r}");
    assert_eq!(r.agent_deaths, 3);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let cfg = JobsConfig::from_seed(9, 4, Duration::from_secs(10));
    let (a, b) = (run_jobs(&cfg).unwrap(), run_jobs(&cfg).unwrap());
    let strip = |r: JobsReport| {
        format!(
            "{:?}",
            JobsReport {
                wall: Duration::ZERO,
                ..r
            }
        )
    };
    assert_eq!(strip(a), strip(b));
}

/// More seeds, more nodes, longer faults. Run with
/// `cargo test -p myco-sim --test jobs -- --ignored --nocapture`
/// (`JOBS_SEEDS=N` seeds from `JOBS_FROM`, default 200 from 0).
#[test]
#[ignore]
fn sweep() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let from = var("JOBS_FROM", 0);
    seeds(
        from..from + var("JOBS_SEEDS", 200),
        6,
        Duration::from_secs(40),
    );
}

/// One seed with node 0's events and every jobs action on stderr, to
/// reproduce a failure: `SEED=N NODES=5 SAFETY=20 cargo test -p myco-sim
/// --test jobs trace_seed -- --ignored --nocapture`.
#[test]
#[ignore]
fn trace_seed() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let safety = Duration::from_secs(var("SAFETY", 20));
    let mut cfg = JobsConfig::from_seed(var("SEED", 0), var("NODES", 5) as usize, safety);
    cfg.sim.trace = Some(0);
    match run_jobs(&cfg) {
        Ok(r) => println!("{r}"),
        Err(v) => println!("{v}"),
    }
}
