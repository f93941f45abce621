//! A sweep that does not stop at the first violation: one line per seed,
//! then a count by kind. Unlike `myco sim --seeds`, it can turn tombstone
//! GC off, or run only the seeds that collect within seconds.
//!
//! ```text
//! SEEDS=3000..3200 NODES=10 GC=off \
//!   cargo test -p myco-sim --release --test sweep -- --ignored --nocapture
//! ```
//!
//! `GC=off` turns collection off on every seed; `GC=only` runs only the
//! seeds that draw a grace of seconds (the others keep the 1 h default,
//! so they never collect within a run).

use std::collections::BTreeMap;
use std::time::Instant;

use myco_sim::{SimConfig, run};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
#[ignore = "a long sweep: run in release with SEEDS, NODES and GC set"]
fn sweep() {
    let seeds = env_or("SEEDS", "0..100");
    let (a, b) = seeds.split_once("..").expect("SEEDS=first..end");
    let (first, end): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    let nodes: usize = env_or("NODES", "10").parse().unwrap();
    let gc = env_or("GC", "on");
    let default_grace = myco_core::Config::default().tombstone_grace;
    let started = Instant::now();
    let mut outcomes: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for seed in first..end {
        let mut cfg = SimConfig::from_seed(seed, nodes);
        let short_grace = cfg.core.tombstone_grace != default_grace;
        match gc.as_str() {
            "off" => cfg.core.collect_tombstones = false,
            "only" if !short_grace => continue,
            _ => {}
        }
        let kind = match run(&cfg) {
            Ok(r) => {
                println!(
                    "seed {seed}: ok; {} writes, {} torn, {} collected, identical {:?} after heal, propagation p99 {:?}",
                    r.state.writes,
                    r.state.torn,
                    r.state.collected,
                    r.state.convergence,
                    r.state.propagation.p99
                );
                "ok".to_string()
            }
            Err(v) => {
                println!("seed {seed}: {v}");
                v.kind.to_string()
            }
        };
        outcomes.entry(kind).or_default().push(seed);
    }
    println!(
        "\n{} seeds in {:.1}s (nodes={nodes}, GC={gc})",
        end - first,
        started.elapsed().as_secs_f64()
    );
    for (kind, seeds) in &outcomes {
        if kind == "ok" {
            println!("ok: {}", seeds.len());
        } else {
            println!("{kind}: {} {seeds:?}", seeds.len());
        }
    }
}
