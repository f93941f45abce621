//! Moving entries to their owners after membership changes, and sweeping
//! expired entries, in bounded steps.
//!
//! Every [`PERIOD`] the task compares the live members with the last set
//! it acted on. On a change it walks this node's entries [`PAGE`] at a
//! time (pausing [`PAGE_PAUSE`] between pages, which bounds the bandwidth
//! a move takes) and sends each entry to its new owners
//! (`myco_core::cache::moves`). Entries this node no longer owns are
//! dropped [`GRACE`] later, so a read during the move that misses on the
//! new owner still finds the key on the old one.

use std::collections::VecDeque;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use myco_core::cache::moves;
use myco_proto::NodeId;
use myco_proto::cache::CacheMessage;
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
/// Expired entries removed per sweep.
const SWEEP: usize = 10_000;
/// Entries waiting to be dropped, at most (more are dropped at once).
const DROP_QUEUE: usize = 100_000;

pub(super) async fn run(cache: Weak<Cache>) {
    let mut before: Option<Vec<NodeId>> = None;
    let mut to_drop: VecDeque<(Instant, String, String)> = VecDeque::new();
    let mut every = tokio::time::interval(PERIOD);
    loop {
        every.tick().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        cache.store().sweep(wall_ms(), SWEEP);
        let now = Instant::now();
        while to_drop.front().is_some_and(|(at, _, _)| *at <= now) {
            let (_, bucket, key) = to_drop.pop_front().expect("just seen");
            cache.store().remove(&bucket, &key);
        }
        let mut after: Vec<NodeId> = cache.live().into_iter().map(|(id, _)| id).collect();
        after.sort_unstable();
        match &before {
            Some(b) if *b != after => {
                let b = b.clone();
                move_entries(&cache, &b, &after, &mut to_drop).await;
            }
            _ => {}
        }
        before = Some(after);
    }
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
                if let Some((_, addr)) = live.iter().find(|(id, _)| id == node) {
                    let message = CacheMessage::Put {
                        request: 0,
                        bucket: bucket.clone(),
                        key: key.clone(),
                        entry: entry.clone(),
                        ack: false,
                        reply_to: cache.addr,
                    };
                    if cache.send(*addr, &message) {
                        cache.counters.moved.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if !mv.keep {
                if to_drop.len() >= DROP_QUEUE {
                    cache.store().remove(&bucket, &key);
                } else {
                    to_drop.push_back((Instant::now() + GRACE, bucket, key));
                }
            }
        }
        tokio::time::sleep(PAGE_PAUSE).await;
    }
}
