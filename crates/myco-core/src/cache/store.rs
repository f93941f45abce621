//! One node's cache entries, in memory.
//!
//! Bounds, and what passing them costs:
//! - per bucket, `max_entries`: the least recently used entry of that
//!   bucket is evicted (`evicted_lru`);
//! - for all buckets, a byte budget: the least recently used entry of
//!   whichever bucket holds the oldest one is evicted
//!   (`evicted_budget`), so one busy bucket cannot grow the node without
//!   bound.
//!
//! An expired entry is never returned; [`CacheStore::sweep`] removes
//! them in bounded steps. Deletes are tombstones (a `None` value) that
//! win or lose by timestamp like any write, so a late copy of an old
//! value cannot bring a deleted key back while the tombstone lives.

use std::collections::BTreeMap;

use myco_proto::cache::CacheEntry;

/// Counters of one store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries held (tombstones included).
    pub entries: usize,
    /// Bytes held, as [`CacheEntry::size`] counts them.
    pub bytes: usize,
    /// Entries evicted for a bucket's `max_entries`.
    pub evicted_lru: u64,
    /// Entries evicted for the node's byte budget.
    pub evicted_budget: u64,
    /// Entries removed because they expired.
    pub expired: u64,
    /// Writes that lost to a newer version already held.
    pub stale_writes: u64,
}

/// What a [`CacheStore::put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The version is now the one held.
    Stored,
    /// A newer (or the same) version was already held; nothing changed.
    Stale,
}

#[derive(Debug)]
struct Slot {
    entry: CacheEntry,
    used: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    entries: BTreeMap<String, Slot>,
    /// Use tick to key: the first is the least recently used.
    lru: BTreeMap<u64, String>,
}

/// One node's entries of every bucket.
#[derive(Debug)]
pub struct CacheStore {
    buckets: BTreeMap<String, Bucket>,
    budget: usize,
    tick: u64,
    stats: CacheStats,
}

impl CacheStore {
    /// An empty store that holds at most `budget` bytes.
    pub fn new(budget: usize) -> CacheStore {
        CacheStore {
            buckets: BTreeMap::new(),
            budget,
            tick: 0,
            stats: CacheStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Merges `entry` for `key` of `bucket` (last writer wins by
    /// timestamp), then evicts down to `max_entries` (0: no count limit)
    /// and the byte budget. An entry already expired at `now_ms` is not
    /// stored but still removes an older version.
    pub fn put(
        &mut self,
        bucket: &str,
        max_entries: u64,
        key: &str,
        entry: CacheEntry,
        now_ms: u64,
    ) -> Merge {
        let tick = self.next_tick();
        let b = self.buckets.entry(bucket.to_string()).or_default();
        if let Some(old) = b.entries.get(key)
            && old.entry.ts >= entry.ts
            && !old.entry.is_expired(now_ms)
        {
            self.stats.stale_writes += 1;
            return Merge::Stale;
        }
        if let Some(old) = b.entries.remove(key) {
            b.lru.remove(&old.used);
            self.stats.bytes -= old.entry.size(key);
            self.stats.entries -= 1;
        }
        if entry.is_expired(now_ms) {
            return Merge::Stored;
        }
        self.stats.bytes += entry.size(key);
        self.stats.entries += 1;
        b.lru.insert(tick, key.to_string());
        b.entries
            .insert(key.to_string(), Slot { entry, used: tick });
        if max_entries > 0 {
            while b.entries.len() as u64 > max_entries {
                let Some((_, victim)) = b.lru.pop_first() else {
                    break;
                };
                if let Some(slot) = b.entries.remove(&victim) {
                    self.stats.bytes -= slot.entry.size(&victim);
                    self.stats.entries -= 1;
                    self.stats.evicted_lru += 1;
                }
            }
        }
        while self.stats.bytes > self.budget && self.evict_oldest() {
            self.stats.evicted_budget += 1;
        }
        Merge::Stored
    }

    /// Evicts the least recently used entry of all buckets.
    fn evict_oldest(&mut self) -> bool {
        let oldest = self
            .buckets
            .iter()
            .filter_map(|(name, b)| b.lru.first_key_value().map(|(t, _)| (*t, name.clone())))
            .min();
        let Some((_, name)) = oldest else {
            return false;
        };
        let b = self.buckets.get_mut(&name).expect("just found");
        let Some((_, victim)) = b.lru.pop_first() else {
            return false;
        };
        if let Some(slot) = b.entries.remove(&victim) {
            self.stats.bytes -= slot.entry.size(&victim);
            self.stats.entries -= 1;
        }
        true
    }

    /// The version held for `key` (a tombstone too), if not expired at
    /// `now_ms`; marks it recently used.
    pub fn get(&mut self, bucket: &str, key: &str, now_ms: u64) -> Option<CacheEntry> {
        let tick = self.next_tick();
        let b = self.buckets.get_mut(bucket)?;
        let slot = b.entries.get_mut(key)?;
        if slot.entry.is_expired(now_ms) {
            let old = b.entries.remove(key).expect("just found");
            b.lru.remove(&old.used);
            self.stats.bytes -= old.entry.size(key);
            self.stats.entries -= 1;
            self.stats.expired += 1;
            return None;
        }
        b.lru.remove(&slot.used);
        slot.used = tick;
        b.lru.insert(tick, key.to_string());
        Some(slot.entry.clone())
    }

    /// The live value of `key` (not a tombstone, not expired).
    pub fn value(&mut self, bucket: &str, key: &str, now_ms: u64) -> Option<Vec<u8>> {
        self.get(bucket, key, now_ms).and_then(|e| e.value)
    }

    /// Forgets `key` (after handing it to its new owners).
    pub fn remove(&mut self, bucket: &str, key: &str) {
        if let Some(b) = self.buckets.get_mut(bucket)
            && let Some(old) = b.entries.remove(key)
        {
            b.lru.remove(&old.used);
            self.stats.bytes -= old.entry.size(key);
            self.stats.entries -= 1;
        }
    }

    /// Removes up to `limit` expired entries; returns how many.
    pub fn sweep(&mut self, now_ms: u64, limit: usize) -> usize {
        let mut gone = Vec::new();
        'outer: for (name, b) in &self.buckets {
            for (key, slot) in &b.entries {
                if gone.len() >= limit {
                    break 'outer;
                }
                if slot.entry.is_expired(now_ms) {
                    gone.push((name.clone(), key.clone()));
                }
            }
        }
        for (bucket, key) in &gone {
            self.remove(bucket, key);
            self.stats.expired += 1;
        }
        gone.len()
    }

    /// Up to `limit` entries after `(bucket, key)` (exclusive), in order,
    /// for rebalancing in bounded steps.
    pub fn entries_after(
        &self,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Vec<(String, String, CacheEntry)> {
        let mut out = Vec::new();
        for (name, b) in &self.buckets {
            if let Some((ab, _)) = after
                && name.as_str() < ab
            {
                continue;
            }
            for (key, slot) in &b.entries {
                if let Some((ab, ak)) = after
                    && (name.as_str(), key.as_str()) <= (ab, ak)
                {
                    continue;
                }
                if out.len() >= limit {
                    return out;
                }
                out.push((name.clone(), key.clone(), slot.entry.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_proto::{NodeId, Timestamp};

    fn e(wall: u64, v: Option<&str>, exp: Option<u64>) -> CacheEntry {
        CacheEntry {
            ts: Timestamp {
                wall_ms: wall,
                logical: 0,
                node: NodeId([1; 8]),
            },
            value: v.map(|s| s.as_bytes().to_vec()),
            expires_at_ms: exp,
        }
    }

    #[test]
    fn last_writer_wins_whatever_the_arrival_order() {
        let mut s = CacheStore::new(1 << 20);
        assert_eq!(
            s.put("b", 0, "k", e(10, Some("new"), None), 0),
            Merge::Stored
        );
        assert_eq!(s.put("b", 0, "k", e(5, Some("old"), None), 0), Merge::Stale);
        assert_eq!(s.value("b", "k", 0), Some(b"new".to_vec()));
        // A delete is a tombstone that a late old value does not undo.
        s.put("b", 0, "k", e(20, None, None), 0);
        assert_eq!(
            s.put("b", 0, "k", e(15, Some("late"), None), 0),
            Merge::Stale
        );
        assert_eq!(s.value("b", "k", 0), None);
        assert!(s.get("b", "k", 0).is_some(), "the tombstone is answered");
        assert_eq!(s.stats().stale_writes, 2);
    }

    #[test]
    fn expired_entries_are_never_returned() {
        let mut s = CacheStore::new(1 << 20);
        s.put("b", 0, "k", e(1, Some("v"), Some(100)), 0);
        assert_eq!(s.value("b", "k", 99), Some(b"v".to_vec()));
        assert_eq!(s.value("b", "k", 100), None);
        assert_eq!(s.stats().entries, 0);
        assert_eq!(s.stats().expired, 1);
        // Already expired on arrival: not stored.
        s.put("b", 0, "x", e(1, Some("v"), Some(50)), 60);
        assert_eq!(s.stats().entries, 0);
        // An expired version does not block a newer write with an older
        // timestamp (it is gone, not merely old).
        s.put("b", 0, "y", e(9, Some("a"), Some(10)), 0);
        assert_eq!(s.put("b", 0, "y", e(5, Some("b"), None), 20), Merge::Stored);
        s.put("b", 0, "z", e(1, Some("v"), Some(10)), 0);
        assert_eq!(s.sweep(20, 10), 1);
        assert_eq!(s.stats().entries, 1);
    }

    #[test]
    fn max_entries_evicts_the_least_recently_used() {
        let mut s = CacheStore::new(1 << 20);
        for k in ["a", "b", "c"] {
            s.put("b", 3, k, e(1, Some("v"), None), 0);
        }
        // Reading "a" makes "b" the oldest.
        assert!(s.value("b", "a", 0).is_some());
        s.put("b", 3, "d", e(1, Some("v"), None), 0);
        assert_eq!(s.value("b", "b", 0), None);
        assert!(s.value("b", "a", 0).is_some());
        assert_eq!(s.stats().entries, 3);
        assert_eq!(s.stats().evicted_lru, 1);
        // Another bucket has its own count.
        s.put("other", 3, "a", e(1, Some("v"), None), 0);
        assert_eq!(s.stats().entries, 4);
    }

    #[test]
    fn the_byte_budget_holds_across_buckets() {
        let one = e(1, Some(&"x".repeat(100)), None).size("k00");
        let mut s = CacheStore::new(one * 10);
        for i in 0..30 {
            let bucket = if i % 2 == 0 { "a" } else { "b" };
            s.put(
                bucket,
                0,
                &format!("k{i:02}"),
                e(1, Some(&"x".repeat(100)), None),
                0,
            );
            assert!(s.stats().bytes <= one * 10);
        }
        assert_eq!(s.stats().entries, 10);
        assert_eq!(s.stats().evicted_budget, 20);
        // The newest survive.
        assert!(s.value("b", "k29", 0).is_some());
        assert!(s.value("a", "k00", 0).is_none());
    }

    #[test]
    fn entries_are_listed_in_bounded_steps() {
        let mut s = CacheStore::new(1 << 20);
        for b in ["a", "b"] {
            for k in 0..5 {
                s.put(b, 0, &format!("k{k}"), e(1, Some("v"), None), 0);
            }
        }
        let mut seen = 0;
        let mut after: Option<(String, String)> = None;
        loop {
            let page = s.entries_after(after.as_ref().map(|(b, k)| (b.as_str(), k.as_str())), 3);
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            seen += page.len();
            let last = page.last().unwrap();
            after = Some((last.0.clone(), last.1.clone()));
        }
        assert_eq!(seen, 10);
        s.remove("a", "k1");
        assert_eq!(s.stats().entries, 9);
    }
}
