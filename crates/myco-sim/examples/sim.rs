//! Runs simulations from the command line, for measuring in release mode
//! until the `myco sim` subcommand exists:
//!
//! ```text
//! cargo run -p myco-sim --release --example sim -- [--seed S] [--seeds K] [--nodes N]
//!     [--minutes M] [--quiet | --storm] [--trace NODE]
//! ```
//!
//! `--quiet` runs with no fault, `--storm` is the join storm; otherwise the
//! seed picks the faults. `--minutes` sets the safety phase. `--trace`
//! writes one node's events, the faults and the phases to stderr. Exits 1 on
//! the first violation, after printing it.

use std::process::ExitCode;
use std::time::Duration;

use myco_sim::SimConfig;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<u64> {
        let at = args.iter().position(|a| a == flag)?;
        let v = args.get(at + 1)?;
        Some(
            v.parse()
                .unwrap_or_else(|_| panic!("{flag} wants a number, got {v:?}")),
        )
    };
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let seed = value("--seed").unwrap_or(0);
    let seeds = value("--seeds").unwrap_or(1);
    let nodes = value("--nodes").unwrap_or(10) as usize;
    for s in seed..seed + seeds {
        let mut cfg = if has("--storm") {
            SimConfig::join_storm(nodes, s)
        } else if has("--quiet") {
            SimConfig::no_faults(nodes, s)
        } else {
            SimConfig::from_seed(s, nodes)
        };
        if let Some(m) = value("--minutes") {
            cfg.safety = Duration::from_secs(60 * m);
        }
        cfg.trace = value("--trace").map(|n| n as usize);
        match myco_sim::run(&cfg) {
            Ok(report) => println!("{report}\n"),
            Err(v) => {
                eprintln!("VIOLATION {v}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
