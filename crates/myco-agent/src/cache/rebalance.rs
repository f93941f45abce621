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
//! dropped. A copy of the entry that arrives during the grace (a move or
//! a hand-over from a node that holds this one an owner, or a write)
//! cancels the drop ([`Drops`]): decided on a view that may be older than
//! the sender's, it waits for the next walk to decide again (the
//! simulator found a node dropping, on a view still holding a node that
//! had left, a copy it had just been handed as the new owner, and sending
//! it to the departed node).
//!
//! For a grace after a walk for a change, a version another node sends
//! that is new here also goes to the owners the change added
//! ([`Changed`]): a writer, or a node stopping, whose view did not hold
//! the change yet sent it to the old owners only, after their walk had
//! passed (the simulator's seed 882: a member that had just joined never
//! got the newest version, left on one owner).
//!
//! Every [`STRAY_EVERY`] the walk also runs with no change, so a copy
//! left on a non-owner (a write or a move sent with a view that was
//! already out of date) is handed over and dropped too. The simulator
//! (`myco_sim::run_cache`) checks this logic over many seeds.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use myco_core::cache::{before_for_moves, handoff, moves};
use myco_proto::NodeId;
use myco_proto::cache::CacheEntry;
use rustc_hash::FxBuildHasher;
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

/// The drops waiting out their grace, with the latest one due per key:
/// what a version stored meanwhile cancels. Bounded with the queue
/// ([`DROP_QUEUE`]).
///
/// Keys are held as a 64-bit hash of bucket and key, so the check every
/// stored write makes while drops wait allocates nothing. Two keys with
/// one hash only keep a copy longer (a drop skipped, left to the next
/// walk or the stray pass), never drop one early.
#[derive(Debug, Default)]
pub(super) struct Drops {
    due: Mutex<HashMap<u64, Instant>>,
    /// `due.len()`, read without the lock on every stored write.
    len: AtomicUsize,
}

impl Drops {
    fn id(bucket: &str, key: &str) -> u64 {
        FxBuildHasher.hash_one((bucket, key))
    }

    fn schedule(&self, bucket: &str, key: &str, at: Instant) {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        due.insert(Self::id(bucket, key), at);
        self.len.store(due.len(), Ordering::Relaxed);
    }

    /// Whether the drop of `key` due `at` still stands; forgets it if so.
    fn take(&self, bucket: &str, key: &str, at: Instant) -> bool {
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        let id = Self::id(bucket, key);
        let stands = due.get(&id) == Some(&at);
        if stands {
            due.remove(&id);
            self.len.store(due.len(), Ordering::Relaxed);
        }
        stands
    }

    /// A version of `key` was stored here: whoever sent or wrote it holds
    /// this node an owner, so a drop decided before waits for the next walk.
    pub(super) fn cancel(&self, bucket: &str, key: &str) {
        if self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut due = self.due.lock().unwrap_or_else(PoisonError::into_inner);
        due.remove(&Self::id(bucket, key));
        self.len.store(due.len(), Ordering::Relaxed);
    }
}

/// The members before and after the last walk for a change, and until
/// when (wall-clock ms, 0: never) a version stored here is passed on to
/// the owners that change added.
#[derive(Debug, Default)]
pub(super) struct Changed {
    until: AtomicU64,
    members: Mutex<(Vec<NodeId>, Vec<NodeId>)>,
}

impl Changed {
    fn set(&self, before: &[NodeId], after: &[NodeId], until: u64) {
        let mut members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        *members = (before.to_vec(), after.to_vec());
        self.until.store(until, Ordering::Relaxed);
    }

    /// Whether a change was walked less than a grace before `now`.
    pub(super) fn recent(&self, now: u64) -> bool {
        now < self.until.load(Ordering::Relaxed)
    }

    /// The owners of `key` the last change added, other than `me`.
    fn added(&self, me: NodeId, bucket: &str, key: &str, replicas: u8) -> Vec<NodeId> {
        let members = self.members.lock().unwrap_or_else(PoisonError::into_inner);
        moves(me, bucket, key, &members.0, &members.1, replicas)
            .map_or_else(Vec::new, |m| m.send_to)
    }
}

impl Cache {
    /// Sends a version just stored here to the owners the last change
    /// added, unacknowledged (`Cache::stored`, within its grace).
    pub(super) fn pass_on_after_change(&self, bucket: &str, key: &str, entry: &CacheEntry) {
        let replicas = self.bucket(bucket).unwrap_or_default().replicas;
        let added = self.changed.added(self.me, bucket, key, replicas);
        if added.is_empty() {
            return;
        }
        let live = self.live();
        for node in added {
            if self.send_copy(&live, node, bucket, key, entry) {
                self.counters.moved.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

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
            let (at, bucket, key) = to_drop.pop_front().expect("just seen");
            // Not if a copy arrived since, or a later walk decided again.
            if cache.drops.take(&bucket, &key, at) {
                hand_off(&cache, &live, &ids, &bucket, &key);
            }
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
            if b != after {
                let until = wall_ms() + GRACE.as_millis() as u64;
                cache.changed.set(&b, &after, until);
            }
            move_entries(&cache, &b, &after, &mut to_drop).await;
            last_walk = Instant::now();
        }
        before = Some(lives);
    }
}

/// When an entry's grace ends: kept if this node owns it again, else sent
/// to its owners and dropped.
fn hand_off(cache: &Cache, live: &super::Live, ids: &[NodeId], bucket: &str, key: &str) {
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
                    let at = Instant::now() + GRACE;
                    cache.drops.schedule(&bucket, &key, at);
                    to_drop.push_back((at, bucket, key));
                }
            }
        }
        tokio::time::sleep(PAGE_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_arriving_during_the_grace_cancels_the_drop() {
        let drops = Drops::default();
        let at = Instant::now() + GRACE;
        drops.schedule("b", "k", at);
        drops.schedule("b", "other", at);
        drops.cancel("b", "k");
        assert!(!drops.take("b", "k", at), "the copy cancelled the drop");
        assert!(drops.take("b", "other", at), "another key's drop stands");
        assert!(!drops.take("b", "other", at), "taken once");
        assert_eq!(drops.len.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_later_walk_decides_again_over_an_earlier_drop() {
        let drops = Drops::default();
        let first = Instant::now() + GRACE;
        let second = first + Duration::from_secs(1);
        drops.schedule("b", "k", first);
        drops.schedule("b", "k", second);
        assert!(
            !drops.take("b", "k", first),
            "the earlier queue entry is void"
        );
        assert!(drops.take("b", "k", second));
    }

    #[test]
    fn a_version_stored_within_a_grace_of_a_join_goes_to_the_joined_owner() {
        let ids: Vec<NodeId> = (1..=3).map(NodeId::from_u64).collect();
        let (me, joined) = (ids[0], ids[2]);
        let changed = Changed::default();
        assert!(!changed.recent(0), "no change yet");
        changed.set(&ids[..2], &ids, 1_000);
        assert!(changed.recent(999));
        assert!(!changed.recent(1_000), "the grace is over");
        // Keys of 2 copies the join gave the joined node, and keys it did not.
        let (gained, kept): (Vec<String>, Vec<String>) = (0..100)
            .map(|i| format!("k{i}"))
            .partition(|k| myco_core::cache::owners("b", k, &ids, 2).contains(&joined));
        assert_eq!(changed.added(me, "b", &gained[0], 2), vec![joined]);
        assert!(changed.added(me, "b", &kept[0], 2).is_empty());
    }
}
