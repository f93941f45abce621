//! Join storms: every node joins through node 0 within the first second.

use myco_sim::{SimConfig, run};

#[test]
fn a_small_join_storm_agrees_quickly() {
    let cfg = SimConfig::join_storm(20, 1);
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    assert!(r.formation_99 <= r.formation, "{r}");
    assert!(r.formation < cfg.budgets.formation, "{r}");
    assert_eq!(r.false_downs, 0, "{r}");
}

/// The 1000-node storm: minutes of wall time even in release.
/// `cargo test -p myco-sim --release -- --ignored --nocapture thousand`
#[test]
#[ignore = "slow: run in release"]
fn a_thousand_node_join_storm_agrees_within_budget() {
    let cfg = SimConfig::join_storm(1000, 1);
    let r = run(&cfg).unwrap_or_else(|v| panic!("{v}"));
    println!("{r}");
    assert!(r.formation <= cfg.budgets.formation, "{r}");
    assert_eq!(r.false_downs, 0, "{r}");
}
