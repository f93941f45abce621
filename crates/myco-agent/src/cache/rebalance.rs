//! Moving entries to their owners after membership changes, and sweeping
//! expired entries, in bounded steps.
//!
//! Every [`PERIOD`] the task compares the live members with the last set
//! it acted on. On a change it walks this node's entries [`PAGE`] at a
//! time (pausing [`PAGE_PAUSE`] between pages, which bounds the bandwidth
//! a move takes) and sends each entry to its new owners
//! (`myco_core::cache::moves`). Entries this node no longer owns are
//! dropped [`GRACE`] later, so a read during the move that misses on the
//! new owner still finds the key on the old one. When the grace ends the
//! entry is looked at again (`myco_core::cache::handoff`): kept if this
//! node owns it again, else handed to its owners (a version that arrived
//! during the grace, from a writer with an older view, is not lost) and
//! dropped. Every [`STRAY_EVERY`] the walk also runs with no change, so
//! a copy left on a non-owner (a write or a move sent with a view that
//! was already out of date) is handed over and dropped too. The
//! simulator (`myco_sim::run_cache`) checks this logic over many seeds.

use std::collections::VecDeque;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use myco_core::cache::{before_for_moves, handoff, moves};
use myco_proto::NodeId;
use tokio::time::Instant;

use super::{Cache, wall_ms};

/// How often membership is compared and expired entries swept.
pub const PERIOD: Duration = Duration::from_millis(500);
/// Entries handled per step of a move.
pub const PAGE: usize = 64;
/// Pause between pages of a move.
pub const PAGE_PAUSE: Duration = Duration::from_millis(10);
/// How long a node keeps entries it no longer owns after sending them.
pub const GRACE: Duration = Duration::from_secs(10);
/// How often the walk runs without a membership change, for strays.
pub const STRAY_EVERY: Duration = Duration::from_secs(30);
/// Expired entries removed per sweep.
const SWEEP: usize = 10_000;
/// Entries waiting to be dropped, at most (more are dropped at once).
const DROP_QUEUE: usize = 100_000;

pub(super) async fn run(cache: Weak<Cache>) {
    let mut before: Option<Vec<(NodeId, u64)>> = None;
    let mut to_drop: VecDeque<(Instant, String, String)> = VecDeque::new();
    let mut every = tokio::time::interval(PERIOD);
    let mut last_walk = Instant::now();
    loop {
        every.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        cache.store().sweep(wall_ms(), SWEEP);
        let now = Instant::now();
        let live = cache.live();
        let ids: Vec<NodeId> = live.ids().to_vec();
        while to_drop.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, bucket, key) = to_drop.pop_front().expect("just seen");
            hand_off(&cache, &live, &ids, &bucket, &key);
        }
        let mut after = ids;
        after.sort_unstable();
        // Members with their boots: a node that restarted faster than
        // anyone saw it gone is empty, and must get its keys back.
        let lives = cache.live_lives();
        let strays = now.duration_since(last_walk) >= STRAY_EVERY;
        let walk = match &before {
            Some(b) if *b != lives => Some(before_for_moves(b, &lives)),
            Some(_) if strays => Some(after.clone()),
            _ => None,
        };
        if let Some(b) = walk {
            move_entries(&cache, &b, &after, &mut to_drop).await;
            last_walk = Instant::now();
        }
        before = Some(lives);
    }
}

/// When an entry's grace ends: kept if this node owns it again, else sent
/// to its owners and dropped.
fn hand_off(
    cache: &Cache,
    live: &[(NodeId, std::net::SocketAddr)],
    ids: &[NodeId],
    bucket: &str,
    key: &str,
) {
    let replicas = cache.bucket(bucket).unwrap_or_default().replicas;
    let Some(owners) = handoff(cache.me, bucket, key, ids, replicas) else {
        return;
    };
    let entry = cache.store().get(bucket, key, wall_ms());
    if let Some(entry) = entry {
        for node in owners {
            if cache.send_copy(live, node, bucket, key, &entry) {
                cache.counters.moved.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    cache.store().remove(bucket, key);
}

async fn move_entries(
    cache: &Cache,
    before: &[NodeId],
    after: &[NodeId],
    to_drop: &mut VecDeque<(Instant, String, String)>,
) {
    let live = cache.live();
    let mut cursor: Option<(String, String)> = None;
    loop {
        let page = cache
            .store()
            .entries_after(cursor.as_ref().map(|(b, k)| (b.as_str(), k.as_str())), PAGE);
        let Some(last) = page.last() else {
            return;
        };
        cursor = Some((last.0.clone(), last.1.clone()));
        for (bucket, key, entry) in page {
            let replicas = cache.bucket(&bucket).unwrap_or_default().replicas;
            let Some(mv) = moves(cache.me, &bucket, &key, before, after, replicas) else {
                continue;
            };
            for node in &mv.send_to {
                if cache.send_copy(&live, *node, &bucket, &key, &entry) {
                    cache.counters.moved.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !mv.keep {
                if to_drop.len() >= DROP_QUEUE {
                    hand_off(cache, &live, after, &bucket, &key);
                } else {
                    to_drop.push_back((Instant::now() + GRACE, bucket, key));
                }
            }
        }
        tokio::time::sleep(PAGE_PAUSE).await;
    }
}
