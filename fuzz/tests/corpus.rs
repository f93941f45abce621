//! Replays every committed input through its target without the fuzzer:
//! the seed corpora (`corpus/<target>/`) and the inputs of crashes found
//! (`regressions/<target>/`), so a fixed crash stays fixed in plain
//! `cargo test`. Also checks the seeds are what the generator makes, so
//! a change to a format is noticed here, not by a stale corpus.

use std::fs;
use std::path::Path;

fn replay(dir: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut count = 0;
    for target in myco_fuzz::TARGETS {
        let Ok(files) = fs::read_dir(root.join(target)) else {
            continue;
        };
        for file in files {
            let path = file.expect("readable directory").path();
            let data = fs::read(&path).expect("readable input");
            assert!(myco_fuzz::run(target, &data), "unknown target {target}");
            count += 1;
        }
    }
    count
}

#[test]
fn every_seed_runs_clean() {
    assert!(replay("corpus") >= myco_fuzz::TARGETS.len());
}

#[test]
fn every_regression_input_runs_clean() {
    replay("regressions");
}

#[test]
fn committed_seeds_match_the_generator() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, name, bytes) in myco_fuzz::seeds::all() {
        let path = root.join(target).join(&name);
        let committed = fs::read(&path).unwrap_or_default();
        assert!(
            committed == bytes,
            "{} is stale: run `cargo run -p myco-fuzz --bin seeds`",
            path.display()
        );
    }
}

#[test]
fn every_target_has_seeds_and_a_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in myco_fuzz::TARGETS {
        let seeds = fs::read_dir(root.join("corpus").join(target))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(seeds > 0, "no seeds for {target}");
        assert!(
            root.join("fuzz_targets")
                .join(format!("{target}.rs"))
                .exists(),
            "no fuzz_targets/{target}.rs"
        );
    }
}

#[test]
fn the_recorded_exchange_makes_the_sender_a_member() {
    // The node_inputs seed only reaches replication if node 1 takes node 2
    // as a member: prove the recording does that.
    let data = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/node_inputs/exchange"))
        .expect("seed");
    assert!(myco_fuzz::node_members_after(&data) >= 2);
}
