//! A run is a pure function of its settings: same seed, same run, state
//! traffic (writes, stream messages, crashes tearing writes) included.

use std::time::Duration;

use myco_sim::{Report, SimConfig, run};

fn faulty(seed: u64) -> SimConfig {
    SimConfig {
        safety: Duration::from_secs(40),
        ..SimConfig::from_seed(seed, 8)
    }
}

fn without_wall(r: Report) -> Report {
    Report {
        wall: Duration::ZERO,
        ..r
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    // Seed 50 has loss, duplication, partitions, crashes and restarts
    // (torn writes are rare since the disk commits 5 ms after a write;
    // `state.rs` tears them on purpose).
    let a = run(&faulty(50)).unwrap_or_else(|v| panic!("{v}"));
    let b = run(&faulty(50)).unwrap_or_else(|v| panic!("{v}"));
    assert!(
        a.partitions > 0 && a.stops > 0 && a.traffic.lost > 0 && a.traffic.duplicated > 0,
        "{a}"
    );
    assert!(a.state.messages.lost > 0 && a.state.acked > 100, "{a}");
    assert_eq!(a.digest, b.digest);
    assert_eq!(without_wall(a), without_wall(b));
}

#[test]
fn different_seeds_give_different_runs() {
    let quiet = |seed| SimConfig {
        safety: Duration::from_secs(20),
        ..SimConfig::no_faults(6, seed)
    };
    let digests: Vec<u64> = (1..=3)
        .map(|s| run(&quiet(s)).unwrap_or_else(|v| panic!("{v}")).digest)
        .collect();
    assert_ne!(digests[0], digests[1]);
    assert_ne!(digests[1], digests[2]);
    assert_ne!(digests[0], digests[2]);
}
