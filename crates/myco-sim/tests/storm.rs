//! Join storms: every node joins through node 0 within the first second.

use std::time::Duration;

use myco_sim::{SimConfig, run};

#[test]
fn a_small_join_storm_agrees_quickly() {
    let cfg = SimConfig::join_storm(20, 1);
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    assert!(r.formation_99 <= r.formation, "{r}");
    assert!(r.formation < cfg.budgets.formation, "{r}");
    assert_eq!(r.false_downs, 0, "{r}");
}

/// 100 nodes is where stragglers began to show without push-pull: 99%
/// of pairs agreed at 10 s, all of them only at 31 s (virtual), waiting
/// for probes. With push-pull all agree within seconds.
#[test]
fn a_hundred_node_join_storm_agrees_within_seconds() {
    let mut cfg = SimConfig::join_storm(100, 1);
    cfg.idle = Duration::from_secs(2);
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    assert!(r.formation <= Duration::from_secs(5), "{r}");
    assert_eq!(r.false_downs, 0, "{r}");
}

/// The 1000-node storm, issue 16: full agreement within 10 s virtual
/// (it took 293 s before push-pull). About a minute of wall time in
/// release.
/// `cargo test -p myco-sim --release --test storm -- --ignored --nocapture thousand`
#[test]
#[ignore = "slow: run in release"]
fn a_thousand_node_join_storm_agrees_within_ten_seconds() {
    let cfg = SimConfig::join_storm(1000, 1);
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    println!("{r}");
    assert!(r.formation <= Duration::from_secs(10), "{r}");
    assert_eq!(r.false_downs, 0, "{r}");
}

/// A storm of `NODES` nodes (300 unless set), then `IDLE` seconds of
/// idle (10 unless set), for measuring: prints the report (wall time,
/// formation, idle traffic) and asserts nothing more than agreement
/// within the budget.
/// `NODES=300 IDLE=600 cargo test -p myco-sim --release --test storm -- --ignored --nocapture measuring`
#[test]
#[ignore = "a measurement: run in release with NODES and IDLE set"]
fn a_storm_of_any_size_for_measuring() {
    let var = |name: &str, default: u64| {
        std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
    };
    let mut cfg = SimConfig::join_storm(var("NODES", 300) as usize, 1);
    cfg.idle = Duration::from_secs(var("IDLE", 10));
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    println!("{r}");
}
