//! Replicated state under the simulator: a quiet mesh spreads every write
//! and idles cheaply, crashes tear only unacknowledged writes, tombstones
//! are collected everywhere and never come back, and a clock beyond the
//! drift bound is refused, then caught up with.

use std::time::Duration;

use myco_sim::{CrashPlan, Fault, SimConfig, Workload, run};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn a_quiet_mesh_spreads_every_write_and_idles_on_summaries() {
    let cfg = SimConfig {
        safety: secs(30),
        ..SimConfig::no_faults(10, 2)
    };
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    let s = &r.state;
    assert!(s.writes > 100 && s.acked == s.writes && s.torn == 0, "{r}");
    let p = &s.propagation;
    assert!(p.measured > 100 && p.abandoned == 0, "{r}");
    // Push alone reaches most nodes in tens of ms; the odd node it misses
    // waits for an anti-entropy round (every 1 to 1.5 s).
    assert!(p.p50.expect("timed") < Duration::from_millis(100), "{r}");
    assert!(p.max.expect("timed") < secs(2), "{r}");
    assert!(s.convergence.is_some_and(|c| c < secs(2)), "{r}");
    // Idle: each node opens one exchange a second and answers about one;
    // equal replicas trade an 8-byte summary and an empty reply.
    assert!((1.5..2.5).contains(&s.idle_messages_per_node_sec), "{r}");
    assert!(s.idle_bytes_per_node_sec < 64.0, "{r}");
    // Skews of up to ±500 ms pull hybrid clocks ahead of their own by
    // about as much, never more than the spread.
    assert!(s.clock_lead_ms <= 1000, "{r}");
}

#[test]
fn crashes_tear_only_writes_never_acknowledged() {
    let mut cfg = SimConfig {
        safety: secs(40),
        workload: Some(Workload {
            per_sec: 30.0,
            ..Workload::default()
        }),
        // A slow disk, so crashes (decided between 100 ms steps) find
        // writes not yet durable.
        fsync: Duration::from_millis(50),
        ..SimConfig::no_faults(8, 3)
    };
    // Every crash strikes a node with writes not yet durable, if any.
    cfg.faults.crashes = Some(CrashPlan {
        per_minute: 12.0,
        downtime: (secs(2), secs(5)),
        graceful: 0.0,
        permanent: 0.0,
        max_down: 2,
        tear: 1.0,
    });
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    // The final check found every acknowledged write on every node; the
    // torn ones were never acknowledged, so they were free to vanish.
    assert!(r.stops >= 4 && r.state.torn > 0, "{r}");
    assert_eq!(r.state.acked + r.state.torn, r.state.writes, "{r}");
}

#[test]
fn tombstones_are_collected_everywhere_and_never_come_back() {
    let mut cfg = SimConfig {
        safety: secs(60),
        // Long enough after the last delete for every tombstone to pass
        // its grace and be collected on every node.
        settle: secs(40),
        ..SimConfig::no_faults(10, 4)
    };
    // A grace far shorter than the 1 h default (`gc.rs` runs 2 s).
    cfg.core.tombstone_grace = secs(20);
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    let s = &r.state;
    assert!(s.deletes > 20 && s.collected > 50, "{r}");
    assert_eq!(s.tombstones, 0, "every tombstone was collected: {r}");
}

#[test]
fn a_clock_beyond_the_drift_bound_is_refused_then_caught_up_with() {
    let mut cfg = SimConfig {
        safety: secs(30),
        ..SimConfig::no_faults(6, 0)
    };
    cfg.skew_ms[2] = 60_000;
    let excess = cfg.clock_excess();
    assert!(excess > secs(29), "{cfg}");
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    // The others refuse n2's writes while they are more than 30 s ahead of
    // their own clocks; anti-entropy offers them every round, so they land
    // once the others' clocks have moved 30 s on, and win over everything
    // written meanwhile (their timestamps are later).
    assert!(
        r.refused.get("clock_drift").is_some_and(|n| *n > 100),
        "{r}"
    );
    // n2 writes about once a second (5/s over 6 nodes), so its last write
    // predates the heal by a second or few.
    let converged = r.state.convergence.expect("state was written");
    assert!(converged + secs(5) >= excess, "{r}");
    // Each write taken from n2 drags the taker's hybrid clock to within
    // 30 s of n2's, so every node's timestamps run about 30 s ahead.
    assert!(r.state.clock_lead_ms > 25_000, "{r}");
}

// Regression (found as a core bug): a local write was pushed to peers
// before it was durable on its node. Torn by a crash, it lived on at the
// peers; the restarted node's clock resumed from its disk, behind the
// torn write's timestamp when a peer whose clock runs 1 s faster had
// pulled it ahead, and within 300 ms it stamped a new write with that very
// timestamp: two values under one timestamp, and an acknowledged write
// that could lose to a torn one. Now a write leaves its node only once
// durable, so a torn write is forgotten by everyone and its timestamp is
// free again. The 50 ms fsync (longer than the 10 ms push delay) makes
// crashes tear writes that the old core would already have pushed.
#[test]
fn a_quick_restart_never_reissues_the_timestamp_of_a_write_that_spread() {
    let mut cfg = SimConfig {
        safety: secs(40),
        workload: Some(Workload {
            per_sec: 60.0,
            keys: 4,
            deletes: 0.1,
            max_value: 8,
        }),
        fsync: Duration::from_millis(50),
        ..SimConfig::no_faults(3, 1)
    };
    cfg.skew_ms = vec![-500, 500, 500];
    cfg.faults.script = (1..=8)
        .map(|k| {
            let crash = Fault::Stop {
                node: 0,
                graceful: false,
                restart_after: Some(Duration::from_millis(300)),
            };
            (secs(4 * k), crash)
        })
        .collect();
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    assert!(r.state.torn > 0 && r.stops == 8, "{r}");
}
