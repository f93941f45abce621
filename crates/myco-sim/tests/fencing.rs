//! `duplicates = "never"` in the jobs simulation: every other job may run
//! each slot on one node at a time. Partitions (symmetric and one-way),
//! crashes and restarts, clock offsets and clock rates drifting apart by
//! up to 1 % (the bound the fence assumes); every step checks that no two
//! processes of a `never` slot are alive at the same virtual instant, and
//! after the heal every job must have exactly `count` ready instances.

use std::time::Duration;

use myco_sim::{JobsConfig, JobsReport, run_jobs};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A seed's run with `never` jobs and drifting clocks: each node's rate
/// off by up to 0.5 % either way, so two differ by up to 1 %.
fn config(seed: u64, nodes: usize, safety: Duration) -> JobsConfig {
    let mut cfg = JobsConfig::from_seed(seed, nodes, safety);
    cfg.never = true;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xd41f7);
    cfg.sim.drift_ppm = (0..nodes)
        .map(|_| rng.random_range(-5_000..=5_000))
        .collect();
    cfg
}

/// Runs every seed; panics with each failure's reproduction, after
/// printing the liveness p50 / max.
fn seeds(list: impl IntoIterator<Item = u64>, nodes: usize, safety: Duration) -> Vec<JobsReport> {
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for seed in list {
        match run_jobs(&config(seed, nodes, safety)) {
            Ok(r) => reports.push(r),
            Err(v) => failures.push(format!("seed {seed}: {v}")),
        }
    }
    let mut times: Vec<Duration> = reports.iter().map(|r| r.liveness).collect();
    times.sort();
    if let Some(max) = times.last() {
        println!(
            "{} seeds passed, {} failed: exactly count ready after the heal p50 {:?}, max {:?}",
            reports.len(),
            failures.len(),
            times[(times.len() - 1) / 2],
            max
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    reports
}

#[test]
fn never_slots_run_once_at_a_time_through_partitions_crashes_and_drift() {
    let reports = seeds(100..108, 5, Duration::from_secs(20));
    let sum = |f: fn(&JobsReport) -> u64| reports.iter().map(f).sum::<u64>();
    assert!(sum(|r| r.partitions) > 0, "no partition");
    assert!(sum(|r| r.agent_deaths) > 0, "no agent died");
    assert!(sum(|r| r.starts) > 0);
}

/// More seeds: `cargo test -p myco-sim --test fencing -- --ignored
/// --nocapture` (`FENCE_SEEDS=N` seeds from `FENCE_FROM`, default 100
/// from 0).
#[test]
#[ignore]
fn sweep() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let from = var("FENCE_FROM", 0);
    seeds(
        from..from + var("FENCE_SEEDS", 100),
        5,
        Duration::from_secs(30),
    );
}

/// One seed with node 0's events on stderr: `SEED=N cargo test -p
/// myco-sim --test fencing trace_seed -- --ignored --nocapture`.
#[test]
#[ignore]
fn trace_seed() {
    let var = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let mut cfg = config(var("SEED", 0), 5, Duration::from_secs(var("SAFETY", 20)));
    cfg.sim.trace = Some(var("TRACE", 0) as usize);
    match run_jobs(&cfg) {
        Ok(r) => println!("{r}"),
        Err(v) => println!("{v}"),
    }
}
