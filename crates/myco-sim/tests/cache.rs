//! Cache ownership across membership changes, over many seeds: every key
//! ends on exactly its owners with one version, and no acknowledged
//! write whose owners all stayed up is lost (see `myco_sim::run_cache`).

use myco_sim::{CacheSimConfig, run_cache};

#[test]
fn keys_end_on_exactly_their_owners_and_acked_writes_survive() {
    let mut protected = 0;
    let mut changes = 0;
    for seed in 0..200 {
        let r = run_cache(&CacheSimConfig::from_seed(seed)).unwrap_or_else(|e| panic!("{e}"));
        protected += r.protected;
        changes += r.changes;
    }
    // The runs exercised something: keys that had to survive, changes.
    assert!(
        protected > 1000 && changes > 500,
        "protected {protected}, changes {changes}"
    );
}

#[test]
fn graceful_stops_hand_their_keys_over_and_acked_writes_survive() {
    // Half the leaves are graceful stops (`cache::leave`): an acknowledged
    // write whose owners stayed up or stopped gracefully survives, when no
    // node crashed meanwhile. Without the pass-on of writes stored during
    // the hand-over, writes that arrive after the walk are lost.
    let (mut protected, mut handed) = (0, 0);
    for seed in 0..200 {
        let cfg = CacheSimConfig {
            graceful: true,
            ..CacheSimConfig::from_seed(seed)
        };
        let r = run_cache(&cfg).unwrap_or_else(|e| panic!("{e}"));
        protected += r.protected;
        handed += r.handed_over;
    }
    assert!(
        protected > 1000 && handed > 100,
        "protected {protected}, graceful stops {handed}"
    );
}

/// Seeds that pinned bugs of the rebalancer, fixed since: 76 (a key left
/// on one owner), 78 and 96 (an acknowledged write lost: a version that
/// arrived during the grace was dropped with the old owner's copy), 176
/// (found once those were fixed: a node restarted faster than
/// the others saw it go, so no one moved its keys back: lives, not ids,
/// are compared). The old logic must fail them (the checks can fail)
/// and the current one pass.
#[test]
fn pinned_seeds_fail_the_old_rebalancer_and_pass_the_current_one() {
    for seed in [76, 78, 96] {
        let old = CacheSimConfig {
            handoff: false,
            late_versions: false,
            ..CacheSimConfig::from_seed(seed)
        };
        assert!(
            run_cache(&old).is_err(),
            "seed {seed}: the old rebalancer passed"
        );
    }
    for seed in [76, 78, 96, 176] {
        run_cache(&CacheSimConfig::from_seed(seed)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Seeds past the sweep's 200 that a 1,000-seed sweep found failing, all
/// one bug: a drop decided when an entry's grace began, on a view that may
/// be out of date by its end, threw away a copy the node had been handed
/// since as its new owner (and sent it to a node that had left). 241 and
/// 465 left a key on too few owners, 477 on one, 691 lost an acknowledged
/// write. A copy arriving during the grace now cancels the drop
/// (`rebalance::Drops`).
#[test]
fn pinned_seeds_of_a_drop_decided_on_an_old_view() {
    for seed in [241, 465, 477, 691] {
        run_cache(&CacheSimConfig::from_seed(seed)).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A seed the 1,000-seed sweep found failing with graceful stops: the
/// stopping node's view still held a member whose process had ended, and
/// a key of one copy went to it and was lost. The hand-over now skips
/// such a member (the agent: its connection is refused) for the next in
/// the key's ranking.
#[test]
fn pinned_seed_of_a_stop_handing_keys_to_an_ended_member() {
    fails_as_before_and_passes_now(464, |c| CacheSimConfig {
        skip_ended: false,
        late_versions: false,
        ..c
    });
}

/// A seed the sweep found failing with graceful stops: a node began its
/// stop on a view that did not yet hold a member that had just joined,
/// took a write and passed it on to the owners that view named; the one
/// that held it had already walked for the join, so the newcomer never
/// got the newest version (acknowledged by two, then held by one owner).
/// A version stored within a grace of a walk for a change now also goes
/// to the owners the change added.
#[test]
fn pinned_seed_of_a_version_stored_after_the_walk_for_a_join() {
    fails_as_before_and_passes_now(882, |c| CacheSimConfig {
        late_versions: false,
        ..c
    });
}

/// Runs `seed` with graceful stops: it must fail with the settings
/// `before` gives (the logic before the fix it pins), so the checks can
/// fail, and pass as the logic is now.
fn fails_as_before_and_passes_now(
    seed: u64,
    before: impl FnOnce(CacheSimConfig) -> CacheSimConfig,
) {
    let now = CacheSimConfig {
        graceful: true,
        ..CacheSimConfig::from_seed(seed)
    };
    assert!(
        run_cache(&before(now.clone())).is_err(),
        "seed {seed}: the logic before the fix passed"
    );
    run_cache(&now).unwrap_or_else(|e| panic!("{e}"));
}

/// The sweeps over 1,000 seeds, by hand (`cargo test --release -p
/// myco-sim --test cache -- --ignored`): every seed passes, with and
/// without graceful stops (464 and 882 are pinned above).
#[test]
#[ignore]
fn a_thousand_seeds_with_and_without_graceful_stops() {
    let mut failed = Vec::new();
    for seed in 0..1000 {
        run_cache(&CacheSimConfig::from_seed(seed)).unwrap_or_else(|e| panic!("{e}"));
        let graceful = CacheSimConfig {
            graceful: true,
            ..CacheSimConfig::from_seed(seed)
        };
        if let Err(e) = run_cache(&graceful) {
            println!("{e}");
            failed.push(seed);
        }
    }
    println!(
        "graceful: {} of 1000 seeds failed: {failed:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "graceful seeds failed: {failed:?}");
}
