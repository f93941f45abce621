//! The replica: every table's entries with last-writer-wins merge, and
//! per-bucket digests kept up to date on every change so anti-entropy can
//! compare two replicas in one small message.
//!
//! The merge is a total order on versions: the later timestamp wins, and
//! under one timestamp (which the write-ahead rule makes unreachable, but
//! a bug or a restored backup must not make permanent) the bytewise
//! greater value wins, a tombstone lowest. Digests hash the value too, so
//! two replicas that differ only in the value under one timestamp differ
//! in their digests and anti-entropy repairs them.

use std::collections::BTreeMap;

use myco_proto::sync::{BUCKETS, Version};
use myco_proto::{Change, Table, Timestamp};

/// One stored version: a value or a tombstone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// When and by whom it was written.
    pub ts: Timestamp,
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
}

/// What merging a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The change was newer and is now the stored version.
    Applied,
    /// The replica already had this version or a newer one.
    Stale,
}

/// An entry with its value's hash, computed once when it is stored: the
/// digests and anti-entropy need it often, and hashing a 64 KiB value on
/// every round cost the mesh loop more than the round itself.
#[derive(Clone, Debug)]
struct Stored {
    entry: Entry,
    hash: u64,
}

/// All replicated tables of one node.
#[derive(Clone, Debug)]
pub struct Replica {
    entries: BTreeMap<(Table, String), Stored>,
    digests: Vec<u64>,
    bytes: usize,
    tombstones: usize,
}

impl Default for Replica {
    fn default() -> Self {
        Replica {
            entries: BTreeMap::new(),
            digests: vec![0; BUCKETS],
            bytes: 0,
            tombstones: 0,
        }
    }
}

/// FNV-1a, 64 bit: deterministic on every node and platform, and cheap.
/// Digests only guard against accidental divergence between nodes that
/// already share the cluster key, so a cryptographic hash is not needed.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The digest bucket a key falls in.
pub fn bucket_of(table: Table, key: &str) -> usize {
    (fnv(&[&[table.0], key.as_bytes()]) % BUCKETS as u64) as usize
}

/// A hash of a value, a tombstone apart from every value (the empty one too).
pub fn value_hash(value: &Option<Vec<u8>>) -> u64 {
    match value {
        Some(v) => fnv(&[&[1], v]),
        None => fnv(&[&[0]]),
    }
}

/// The digest term of one version, from its value's hash.
fn entry_hash(table: Table, key: &str, ts: &Timestamp, hash: u64) -> u64 {
    fnv(&[
        &[table.0],
        key.as_bytes(),
        &ts.wall_ms.to_be_bytes(),
        &ts.logical.to_be_bytes(),
        &ts.node.0,
        &hash.to_be_bytes(),
    ])
}

impl Replica {
    /// Merges a change: it wins if its timestamp is later, or under the same
    /// timestamp if its value is bytewise greater (a tombstone is lowest),
    /// so replicas agree whatever order they merge in.
    pub fn merge(&mut self, change: Change) -> Merge {
        let Change {
            table,
            key,
            ts,
            value,
        } = change;
        let bucket = bucket_of(table, &key);
        let slot = (table, key);
        if let Some(Stored { entry: old, hash }) = self.entries.get(&slot) {
            if (old.ts, &old.value) >= (ts, &value) {
                return Merge::Stale;
            }
            self.digests[bucket] ^= entry_hash(table, &slot.1, &old.ts, *hash);
            self.bytes -= slot.1.len() + old.value.as_ref().map_or(0, Vec::len);
            self.tombstones -= usize::from(old.value.is_none());
        }
        let hash = value_hash(&value);
        self.digests[bucket] ^= entry_hash(table, &slot.1, &ts, hash);
        self.bytes += slot.1.len() + value.as_ref().map_or(0, Vec::len);
        self.tombstones += usize::from(value.is_none());
        let entry = Entry { ts, value };
        self.entries.insert(slot, Stored { entry, hash });
        Merge::Applied
    }

    /// Removes a tombstone for good (garbage collection). Values are never
    /// removed this way; only a tombstone with exactly this timestamp is.
    pub fn collect(&mut self, table: Table, key: &str, ts: Timestamp) -> bool {
        self.entry(table, key).is_some_and(|e| e.value.is_none())
            && self.drop_version(table, key, ts)
    }

    /// The stored version of a key, tombstones included.
    pub fn entry(&self, table: Table, key: &str) -> Option<&Entry> {
        self.entries
            .get(&(table, key.to_string()))
            .map(|s| &s.entry)
    }

    /// Live values (not tombstones) of a table whose key starts with `prefix`.
    pub fn scan<'a>(
        &'a self,
        table: Table,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        self.entries
            .range((table, prefix.to_string())..)
            .take_while(move |((t, k), _)| *t == table && k.starts_with(prefix))
            .filter(|(_, s)| s.entry.value.is_some())
            .map(|((_, k), s)| (k.as_str(), &s.entry))
    }

    /// Per-bucket digests.
    pub fn digests(&self) -> &[u64] {
        &self.digests
    }

    /// One number for the whole replica: equal on two nodes iff (with
    /// overwhelming probability) they hold the same versions.
    pub fn digest(&self) -> u64 {
        let bytes: Vec<u8> = self.digests.iter().flat_map(|d| d.to_be_bytes()).collect();
        fnv(&[&bytes])
    }

    /// Every entry in the given buckets, as changes.
    pub fn bucket_changes(&self, buckets: &[u16]) -> Vec<Change> {
        let want: std::collections::BTreeSet<usize> = buckets.iter().map(|b| *b as usize).collect();
        self.entries
            .iter()
            .filter(|((t, k), _)| want.contains(&bucket_of(*t, k)))
            .map(|((t, k), s)| Change {
                table: *t,
                key: k.clone(),
                ts: s.entry.ts,
                value: s.entry.value.clone(),
            })
            .collect()
    }

    /// The held versions of these keys, as changes (keys not held are skipped).
    pub fn changes_of(&self, keys: &[(Table, String)]) -> Vec<Change> {
        keys.iter()
            .filter_map(|(t, k)| {
                let e = self.entry(*t, k)?;
                Some(Change {
                    table: *t,
                    key: k.clone(),
                    ts: e.ts,
                    value: e.value.clone(),
                })
            })
            .collect()
    }

    /// Every version in the given buckets, without values.
    pub fn bucket_versions(&self, buckets: &[u16]) -> Vec<Version> {
        let want: std::collections::BTreeSet<usize> = buckets.iter().map(|b| *b as usize).collect();
        self.entries
            .iter()
            .filter(|((t, k), _)| want.contains(&bucket_of(*t, k)))
            .map(|((t, k), s)| Version {
                table: *t,
                key: k.clone(),
                ts: s.entry.ts,
                hash: s.hash,
            })
            .collect()
    }

    /// The version of a key held, as anti-entropy compares it.
    pub fn version(&self, table: Table, key: &str) -> Option<(Timestamp, u64)> {
        let s = self.entries.get(&(table, key.to_string()))?;
        Some((s.entry.ts, s.hash))
    }

    /// Approximate bytes of versions (keys and timestamps, no values) per
    /// bucket, to split a listing of versions into parts.
    pub fn bucket_version_sizes(&self) -> Vec<usize> {
        let mut sizes = vec![0usize; BUCKETS];
        for (t, k) in self.entries.keys() {
            sizes[bucket_of(*t, k)] += Version::size_of(k);
        }
        sizes
    }

    /// The digest of every version stamped before wall time `at` (ms), in
    /// every table but `skip`, tombstones included: equal on two nodes iff
    /// (with overwhelming probability) they hold the same versions below `at`.
    pub fn digest_below(&self, at: u64, skip: Table) -> u64 {
        let (mut x, mut n) = (0u64, 0u64);
        for ((t, k), s) in self.below_iter(at, skip) {
            x ^= entry_hash(*t, k, &s.entry.ts, s.hash);
            n += 1;
        }
        fnv(&[&x.to_be_bytes(), &n.to_be_bytes(), &at.to_be_bytes()])
    }

    /// Every version stamped before `at`, in every table but `skip`.
    pub fn versions_below(&self, at: u64, skip: Table) -> Vec<(Table, String, Timestamp)> {
        self.below_iter(at, skip)
            .map(|((t, k), s)| (*t, k.clone(), s.entry.ts))
            .collect()
    }

    /// Whether a tombstone stamped before `at` is held, in any table but `skip`.
    pub fn has_tombstone_below(&self, at: u64, skip: Table) -> bool {
        self.below_iter(at, skip)
            .any(|(_, s)| s.entry.value.is_none())
    }

    fn below_iter(
        &self,
        at: u64,
        skip: Table,
    ) -> impl Iterator<Item = (&(Table, String), &Stored)> + '_ {
        self.entries
            .iter()
            .filter(move |((t, _), s)| *t != skip && s.entry.ts.wall_ms < at)
    }

    /// Removes exactly this version, value or tombstone (a node that must
    /// refill what lies below a horizon drops it first).
    pub fn drop_version(&mut self, table: Table, key: &str, ts: Timestamp) -> bool {
        let slot = (table, key.to_string());
        match self.entries.get(&slot) {
            Some(s) if s.entry.ts == ts => {
                let Stored { entry: e, hash } = self.entries.remove(&slot).expect("just found");
                self.digests[bucket_of(table, key)] ^= entry_hash(table, key, &ts, hash);
                self.bytes -= key.len() + e.value.as_ref().map_or(0, Vec::len);
                self.tombstones -= usize::from(e.value.is_none());
                true
            }
            _ => false,
        }
    }

    /// Tombstones with their timestamps, for garbage collection.
    pub fn tombstones(&self) -> impl Iterator<Item = (Table, &str, Timestamp)> + '_ {
        self.entries
            .iter()
            .filter(|(_, s)| s.entry.value.is_none())
            .map(|((t, k), s)| (*t, k.as_str(), s.entry.ts))
    }

    /// Number of entries, tombstones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the replica holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of tombstones.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use myco_proto::NodeId;

    fn change(key: &str, wall: u64, node: u64, value: Option<&str>) -> Change {
        Change {
            table: Table::KV,
            key: key.into(),
            ts: Timestamp {
                wall_ms: wall,
                logical: 0,
                node: NodeId::from_u64(node),
            },
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn later_write_wins_and_node_id_breaks_ties() {
        let mut r = Replica::default();
        assert_eq!(r.merge(change("k", 10, 1, Some("a"))), Merge::Applied);
        assert_eq!(r.merge(change("k", 9, 9, Some("old"))), Merge::Stale);
        assert_eq!(r.merge(change("k", 10, 2, Some("b"))), Merge::Applied);
        assert_eq!(r.merge(change("k", 10, 1, Some("a"))), Merge::Stale);
        assert_eq!(
            r.entry(Table::KV, "k").unwrap().value.as_deref(),
            Some(&b"b"[..])
        );
    }

    #[test]
    fn merge_order_does_not_matter() {
        let changes = [
            change("a", 1, 1, Some("1")),
            change("b", 2, 2, Some("2")),
            change("a", 3, 2, None),
            change("b", 2, 3, Some("3")),
            change("c", 1, 1, Some("x")),
        ];
        let mut forward = Replica::default();
        changes.iter().cloned().for_each(|c| {
            forward.merge(c);
        });
        let mut backward = Replica::default();
        changes.iter().rev().cloned().for_each(|c| {
            backward.merge(c);
        });
        assert_eq!(forward.digest(), backward.digest());
        assert_eq!(forward.digests(), backward.digests());
        assert_eq!(forward.tombstone_count(), 1);
        assert_eq!(forward.scan(Table::KV, "").count(), 2);
    }

    #[test]
    fn equal_timestamps_with_different_values_converge_in_any_order() {
        let ts = |node| Timestamp {
            wall_ms: 7,
            logical: 3,
            node: NodeId::from_u64(node),
        };
        let same = |value: Option<&str>| Change {
            ts: ts(1),
            ..change("k", 0, 1, value)
        };
        let versions = [
            same(Some("b")),
            same(None),
            same(Some("ab")),
            same(Some("")),
            same(Some("a")),
        ];
        let mut digests = std::collections::BTreeSet::new();
        for start in 0..versions.len() {
            let mut r = Replica::default();
            for k in 0..versions.len() {
                r.merge(versions[(start + k) % versions.len()].clone());
                r.merge(versions[(start + versions.len() - k) % versions.len()].clone());
            }
            assert_eq!(
                r.entry(Table::KV, "k").unwrap().value.as_deref(),
                Some(&b"b"[..]),
                "the bytewise greatest value wins"
            );
            digests.insert(r.digest());
        }
        assert_eq!(digests.len(), 1, "every order gives the same replica");

        // Pairwise: commutative, and the loser is stale once the winner is in.
        for a in &versions {
            for b in &versions {
                let mut ab = Replica::default();
                ab.merge(a.clone());
                ab.merge(b.clone());
                let mut ba = Replica::default();
                ba.merge(b.clone());
                ba.merge(a.clone());
                assert_eq!(ab.entry(Table::KV, "k"), ba.entry(Table::KV, "k"));
                assert_eq!(ab.digest(), ba.digest());
            }
        }
        let mut r = Replica::default();
        assert_eq!(r.merge(same(Some("a"))), Merge::Applied);
        assert_eq!(r.merge(same(Some("a"))), Merge::Stale, "the same version");
        assert_eq!(r.merge(same(None)), Merge::Stale, "a tombstone is lowest");
        assert_eq!(r.merge(same(Some("b"))), Merge::Applied);
    }

    #[test]
    fn a_value_differing_under_one_timestamp_changes_the_digest() {
        let mut a = Replica::default();
        let mut b = Replica::default();
        a.merge(change("k", 5, 1, Some("x")));
        b.merge(change("k", 5, 1, Some("y")));
        assert_ne!(a.digest(), b.digest());
        let differ: Vec<usize> = (0..BUCKETS)
            .filter(|i| a.digests()[*i] != b.digests()[*i])
            .collect();
        assert_eq!(differ, vec![bucket_of(Table::KV, "k")]);
        let mut tomb = Replica::default();
        let mut empty = Replica::default();
        tomb.merge(change("k", 5, 1, None));
        empty.merge(change("k", 5, 1, Some("")));
        assert_ne!(
            tomb.digest(),
            empty.digest(),
            "a tombstone is not an empty value"
        );
        for c in b.bucket_changes(&[differ[0] as u16]) {
            a.merge(c);
        }
        assert_eq!(a.digest(), b.digest(), "the greater value won on both");
    }

    #[test]
    fn digests_differ_exactly_in_the_changed_bucket() {
        let mut a = Replica::default();
        let mut b = Replica::default();
        for i in 0..50 {
            a.merge(change(&format!("k{i}"), 1, 1, Some("v")));
            b.merge(change(&format!("k{i}"), 1, 1, Some("v")));
        }
        assert_eq!(a.digest(), b.digest());
        b.merge(change("k7", 2, 1, Some("w")));
        let differ: Vec<usize> = (0..BUCKETS)
            .filter(|i| a.digests()[*i] != b.digests()[*i])
            .collect();
        assert_eq!(differ, vec![bucket_of(Table::KV, "k7")]);
        let fix = b.bucket_changes(&[differ[0] as u16]);
        fix.into_iter().for_each(|c| {
            a.merge(c);
        });
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn collecting_a_tombstone_removes_only_that_tombstone() {
        let mut r = Replica::default();
        r.merge(change("k", 5, 1, None));
        r.merge(change("v", 5, 1, Some("x")));
        let before = r.digest();
        assert!(
            !r.collect(Table::KV, "v", r.entry(Table::KV, "v").unwrap().ts),
            "values are never collected"
        );
        assert!(
            !r.collect(Table::KV, "k", Timestamp::default()),
            "wrong version"
        );
        assert!(r.collect(Table::KV, "k", r.entry(Table::KV, "k").unwrap().ts));
        assert_ne!(r.digest(), before);
        assert_eq!(r.len(), 1);
        assert_eq!(r.tombstone_count(), 0);
    }

    #[test]
    fn the_digest_below_a_horizon_sees_only_older_versions() {
        let mut a = Replica::default();
        let mut b = Replica::default();
        for r in [&mut a, &mut b] {
            r.merge(change("old", 5, 1, Some("x")));
            r.merge(change("gone", 6, 1, None));
        }
        a.merge(change("new", 20, 1, Some("y")));
        let mut internal = change("n1", 3, 1, Some("rec"));
        internal.table = Table::GC;
        b.merge(internal);
        assert_eq!(a.digest_below(10, Table::GC), b.digest_below(10, Table::GC));
        assert_ne!(a.digest_below(10, Table::GC), a.digest_below(11, Table::GC));
        assert_ne!(a.digest_below(30, Table::GC), b.digest_below(30, Table::GC));
        assert!(a.has_tombstone_below(7, Table::GC));
        assert!(!a.has_tombstone_below(6, Table::GC));
        assert_eq!(a.versions_below(10, Table::GC).len(), 2);
        b.merge(change("old", 4, 2, Some("older")));
        assert_eq!(
            a.digest_below(10, Table::GC),
            b.digest_below(10, Table::GC),
            "stale"
        );
        let ts = a.entry(Table::KV, "old").unwrap().ts;
        assert!(a.drop_version(Table::KV, "old", ts));
        assert!(!a.drop_version(Table::KV, "old", ts));
        assert_ne!(a.digest_below(10, Table::GC), b.digest_below(10, Table::GC));
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn scan_honours_table_and_prefix() {
        let mut r = Replica::default();
        r.merge(change("app/a", 1, 1, Some("1")));
        r.merge(change("app/b", 1, 1, None));
        r.merge(change("apq", 1, 1, Some("2")));
        let mut other = change("app/z", 1, 1, Some("3"));
        other.table = Table::JOBS;
        r.merge(other);
        let keys: Vec<&str> = r.scan(Table::KV, "app/").map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["app/a"]);
    }
}
