//! Scripted scenarios on small clusters: no fault, a crash, a graceful stop,
//! a one-way partition that only the heal ends, and a failing run that must
//! say how to reproduce it.

use std::time::Duration;

use myco_sim::{Fault, SimConfig, ViolationKind, run};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A quiet cluster with a short safety phase, so debug builds stay fast.
fn quiet(nodes: usize, seed: u64) -> SimConfig {
    SimConfig {
        safety: secs(30),
        ..SimConfig::no_faults(nodes, seed)
    }
}

#[test]
fn no_fault_means_no_down_no_drop_and_quick_agreement() {
    let mut cfg = quiet(12, 5);
    cfg.safety = secs(120);
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    // The checker fails the run on the first false down; the counters say
    // nothing was even declared down, and the network lost nothing.
    assert_eq!(r.downs, 0, "{r}");
    assert_eq!(r.false_downs, 0, "{r}");
    assert_eq!(r.traffic.dropped(), 0, "{r}");
    assert_eq!(r.traffic.sent, r.traffic.delivered, "{r}");
    // Only stream messages from a node the receiver has not met yet, while
    // membership spreads: the sender's next round gets through.
    assert!(r.refused.keys().all(|k| *k == "unknown_sender"), "{r}");
    assert!(r.formation < secs(10), "12 nodes agree within seconds: {r}");
    assert_eq!(r.convergence, Duration::ZERO, "nothing to heal: {r}");
    // Probing alone: a few small datagrams per node per second.
    assert!((2.0..20.0).contains(&r.idle_datagrams_per_node_sec), "{r}");
}

#[test]
fn a_crashed_node_is_declared_down_by_all_within_the_budget() {
    let mut cfg = quiet(10, 7);
    cfg.faults.script = vec![(
        secs(5),
        Fault::Stop {
            node: 3,
            graceful: false,
            restart_after: None,
        },
    )];
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(
        (r.stops, r.detection.measured, r.restarts),
        (1, 1, 1),
        "{r}"
    );
    let took = r.detection.max.expect("measured");
    assert!(
        took >= cfg.core.suspect_to_down_after,
        "down before suspicion ran out: {r}"
    );
    assert!(took <= cfg.budgets.detection, "{r}");
    // The crash justified downs of the crashed node only.
    assert_eq!(r.false_downs, 0, "{r}");
    assert_eq!(
        r.downs, 9,
        "each of the 9 others declares it down once: {r}"
    );
}

#[test]
fn a_graceful_stop_is_seen_as_left_at_once() {
    let mut cfg = quiet(10, 8);
    cfg.faults.script = vec![(
        secs(5),
        Fault::Stop {
            node: 6,
            graceful: true,
            restart_after: Some(secs(10)),
        },
    )];
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(
        (r.stops, r.detection.measured, r.restarts),
        (1, 1, 1),
        "{r}"
    );
    // Told by the leaving node itself, not found out by probing.
    assert!(
        r.detection.max.expect("measured") < cfg.core.suspect_to_down_after,
        "{r}"
    );
    // A receiver may see foca's own down notice of the leaver before the
    // Leave frame (they race), so a down or two is allowed; a false one is not.
    assert_eq!(r.false_downs, 0, "{r}");
}

#[test]
fn a_one_way_partition_heals_and_the_cluster_converges() {
    let mut cfg = quiet(10, 11);
    // Longer than the safety phase: only the liveness phase's heal ends it.
    let cut = Fault::Partition {
        side: vec![0, 1, 2],
        one_way: true,
        length: secs(600),
    };
    cfg.faults.script = vec![(secs(5), cut)];
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    assert_eq!(r.partitions, 1, "{r}");
    assert!(r.traffic.blocked > 0, "{r}");
    // Acks from the cut side never arrive, so each side declares the other down.
    assert!(r.false_downs >= 2 * 3 * 7, "{r}");
    assert!(
        r.convergence > Duration::ZERO,
        "the heal had work to do: {r}"
    );
    assert!(r.convergence <= cfg.budgets.convergence, "{r}");
}

#[test]
fn a_run_over_budget_fails_and_prints_how_to_reproduce_it() {
    let mut cfg = quiet(6, 3);
    cfg.budgets.formation = Duration::from_millis(200);
    let v = run(&cfg).expect_err("six nodes cannot agree within 200 ms");
    assert_eq!(v.kind, ViolationKind::NoConvergence, "{v}");
    let text = v.to_string();
    assert!(text.contains("seed=3 nodes=6"), "{text}");
    assert!(text.contains("formation=200ms"), "{text}");
}
