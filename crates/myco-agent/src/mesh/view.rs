//! The read view: what readers see of the replicated tables, off the loop.
//!
//! The mesh loop owns the core; readers (HTTP handlers, the spore
//! workflow, later the scheduler) must not queue behind membership, nor
//! make the loop clone 100,000 entries for one listing. So the loop keeps a
//! copy of every live entry in a structure that is cheap to publish, and
//! readers work on the published copy at their own pace.
//!
//! The choice: each table is a sorted vector of shared leaves
//! (`Vec<Arc<Leaf>>`, a leaf being at most [`LEAF_MAX`] sorted entries), a
//! two-level copy-on-write map. Publishing clones the table list (one `Arc`
//! per table). The first change to a table after a publish copies that
//! table's leaf pointers (n / 64 reference counts, about 1,600 for 100,000
//! entries: microseconds), and the first change to a leaf copies that leaf
//! (at most 64 entries); later changes in the same batch are in place. So
//! the loop pays O(log n + 64) per change plus O(n / 64) pointer copies per
//! changed table per publish, whatever readers hold, and a reader holding an
//! old view for a long listing costs the loop nothing. We chose this over a
//! persistent map crate (`im`, `rpds`: a dependency for one structure), over
//! one `Arc<BTreeMap>` per table (a full O(n) copy on every publish while
//! any reader holds it), and over reading redb (merged remote changes reach
//! it in the background, so reads would lag the node's own state).
//!
//! The view is fed exactly what the store is fed (local writes, merged
//! changes, removals), in the order the core produced them, so it holds
//! what the core's replica holds; tombstones are not kept (readers never
//! see them).

use std::collections::BTreeMap;
use std::sync::Arc;

use myco_core::{Entry, Node};
use myco_proto::{Change, Table, Timestamp};

/// Entries per leaf before it splits in two.
pub const LEAF_MAX: usize = 64;

/// Sorted by key, never empty inside a table.
type Leaf = Vec<(String, Entry)>;

/// An immutable view of every table's live entries once published; clones
/// share everything.
#[derive(Clone, Debug, Default)]
pub struct ReadView {
    tables: BTreeMap<Table, Arc<TableView>>,
}

#[derive(Clone, Debug, Default)]
struct TableView {
    /// Disjoint, in key order.
    leaves: Vec<Arc<Leaf>>,
}

impl ReadView {
    /// The live entries the core holds now (after a restore, at start).
    pub fn of(node: &Node) -> ReadView {
        let mut view = ReadView::default();
        for t in 0..=u8::MAX {
            for (key, entry) in node.scan(Table(t), "") {
                view.put(Table(t), key.to_string(), entry.clone());
            }
        }
        view
    }

    /// The live entry of a key.
    pub fn get(&self, table: Table, key: &str) -> Option<&Entry> {
        self.tables.get(&table)?.get(key)
    }

    /// Up to `limit` live entries under `prefix`, in key order, copied out.
    pub fn scan(&self, table: Table, prefix: &str, limit: usize) -> Vec<(String, Entry)> {
        match self.tables.get(&table) {
            Some(t) => t.scan(prefix, limit),
            None => Vec::new(),
        }
    }

    /// Visits live entries under `prefix` in key order, starting after
    /// `after` (when given), until `visit` returns false; nothing is copied.
    /// Returns whether an entry under the prefix was left unvisited.
    pub fn visit(
        &self,
        table: Table,
        prefix: &str,
        after: Option<&str>,
        mut visit: impl FnMut(&str, &Entry) -> bool,
    ) -> bool {
        let Some(t) = self.tables.get(&table) else {
            return false;
        };
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        let first = t.leaf_for(start);
        for leaf in t.leaves.iter().skip(first) {
            let from = leaf.partition_point(|(k, _)| match after {
                Some(a) => k.as_str() <= a || k.as_str() < prefix,
                None => k.as_str() < prefix,
            });
            for (k, e) in &leaf[from..] {
                if !k.starts_with(prefix) {
                    return false;
                }
                if !visit(k, e) {
                    return true;
                }
            }
        }
        false
    }

    /// Live entries in a table.
    pub fn len(&self, table: Table) -> usize {
        self.tables
            .get(&table)
            .map_or(0, |t| t.leaves.iter().map(|l| l.len()).sum())
    }

    /// Applies a change the core applied (a local write or a merge).
    pub fn apply(&mut self, change: &Change) {
        match &change.value {
            Some(v) => {
                let entry = Entry {
                    ts: change.ts,
                    value: Some(v.clone()),
                };
                let newer = self
                    .get(change.table, &change.key)
                    .is_none_or(|e| e.ts <= change.ts);
                if newer {
                    self.put(change.table, change.key.clone(), entry);
                }
            }
            None => self.remove(change.table, &change.key, change.ts),
        }
    }

    /// Removes a key's entry if it is no newer than `ts` (a tombstone's
    /// arrival, or a version the core collected or dropped).
    pub fn remove(&mut self, table: Table, key: &str, ts: Timestamp) {
        let Some(t) = self.tables.get_mut(&table) else {
            return;
        };
        // Checked on the shared copy first, so a no-op copies nothing.
        if t.get(key).is_none_or(|e| e.ts > ts) {
            return;
        }
        let t = Arc::make_mut(t);
        t.remove(key);
        if t.leaves.is_empty() {
            self.tables.remove(&table);
        }
    }

    fn put(&mut self, table: Table, key: String, entry: Entry) {
        Arc::make_mut(self.tables.entry(table).or_default()).put(key, entry);
    }

    /// Whether two views share a table's leaf (for tests of the sharing).
    #[cfg(test)]
    fn shares_leaf(&self, other: &ReadView, table: Table, i: usize) -> bool {
        let (a, b) = (&self.tables[&table], &other.tables[&table]);
        Arc::ptr_eq(&a.leaves[i], &b.leaves[i])
    }
}

impl TableView {
    /// The leaf that holds `key` or would: the last starting at or before
    /// it, else the first.
    fn leaf_for(&self, key: &str) -> usize {
        self.leaves
            .partition_point(|l| l[0].0.as_str() <= key)
            .saturating_sub(1)
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        let leaf = self.leaves.get(self.leaf_for(key))?;
        let i = leaf.binary_search_by(|(k, _)| k.as_str().cmp(key)).ok()?;
        Some(&leaf[i].1)
    }

    fn put(&mut self, key: String, entry: Entry) {
        if self.leaves.is_empty() {
            self.leaves.push(Arc::new(vec![(key, entry)]));
            return;
        }
        let i = self.leaf_for(&key);
        let leaf = Arc::make_mut(&mut self.leaves[i]);
        match leaf.binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
            Ok(j) => leaf[j].1 = entry,
            Err(j) => {
                leaf.insert(j, (key, entry));
                if leaf.len() > LEAF_MAX {
                    let right = leaf.split_off(leaf.len() / 2);
                    self.leaves.insert(i + 1, Arc::new(right));
                }
            }
        }
    }

    fn remove(&mut self, key: &str) {
        let i = self.leaf_for(key);
        let Some(leaf) = self.leaves.get_mut(i) else {
            return;
        };
        let leaf = Arc::make_mut(leaf);
        if let Ok(j) = leaf.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
            leaf.remove(j);
        }
        if leaf.is_empty() {
            self.leaves.remove(i);
        }
    }

    fn scan(&self, prefix: &str, limit: usize) -> Vec<(String, Entry)> {
        let mut out = Vec::new();
        let first = self.leaf_for(prefix);
        for leaf in self.leaves.iter().skip(first) {
            let from = leaf.partition_point(|(k, _)| k.as_str() < prefix);
            for (k, e) in &leaf[from..] {
                // Keys in order: the first past the prefix ends it.
                if !k.starts_with(prefix) || out.len() == limit {
                    return out;
                }
                out.push((k.clone(), e.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use myco_proto::NodeId;

    use super::*;

    fn ts(ms: u64) -> Timestamp {
        Timestamp {
            wall_ms: ms,
            logical: 0,
            node: NodeId::from_u64(1),
        }
    }

    fn put(key: &str, ms: u64) -> Change {
        Change {
            table: Table::KV,
            key: key.into(),
            ts: ts(ms),
            value: Some(key.as_bytes().to_vec()),
        }
    }

    fn keys(v: &[(String, Entry)]) -> Vec<&str> {
        v.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn scans_match_a_btreemap_across_many_leaves() {
        let mut view = ReadView::default();
        let mut model = BTreeMap::new();
        // A scattered order, so leaves split in the middle and at the front.
        for i in 0..3000u64 {
            let n = (i * 7919) % 3000;
            let key = format!("k/{n:05}");
            view.apply(&put(&key, i + 1));
            model.insert(key, ());
        }
        for i in (0..3000u64).step_by(3) {
            let key = format!("k/{i:05}");
            view.apply(&Change {
                value: None,
                ..put(&key, 10_000)
            });
            model.remove(&key);
        }
        assert_eq!(view.len(Table::KV), model.len());
        let all = view.scan(Table::KV, "", usize::MAX);
        assert!(
            keys(&all)
                .iter()
                .copied()
                .eq(model.keys().map(String::as_str))
        );
        let some = view.scan(Table::KV, "k/012", 5);
        assert_eq!(
            keys(&some),
            ["k/01201", "k/01202", "k/01204", "k/01205", "k/01207"]
        );
        assert_eq!(view.scan(Table::KV, "k/0120", 100).len(), 6);
        assert!(view.scan(Table::KV, "zzz", 10).is_empty());
        assert!(view.scan(Table::JOBS, "", 10).is_empty());
        assert!(view.get(Table::KV, "k/00001").is_some());
        assert!(view.get(Table::KV, "k/00003").is_none());
    }

    #[test]
    fn older_versions_neither_overwrite_nor_remove_newer_ones() {
        let mut view = ReadView::default();
        view.apply(&put("a", 5));
        view.apply(&put("a", 3));
        assert_eq!(view.get(Table::KV, "a").unwrap().ts, ts(5));
        view.remove(Table::KV, "a", ts(4));
        assert!(view.get(Table::KV, "a").is_some());
        view.remove(Table::KV, "a", ts(5));
        assert!(view.get(Table::KV, "a").is_none());
        assert_eq!(view.len(Table::KV), 0);
    }

    #[test]
    fn a_change_copies_one_leaf_and_a_published_view_never_changes() {
        let mut view = ReadView::default();
        for i in 0..10 * LEAF_MAX as u64 {
            view.apply(&put(&format!("k/{i:05}"), 1));
        }
        let published = view.clone();
        let before = published.scan(Table::KV, "", usize::MAX);
        view.apply(&put("k/00000", 2));
        view.apply(&put("k/00001", 2));
        // The first leaf was copied once; every other leaf is still shared.
        assert!(!view.shares_leaf(&published, Table::KV, 0));
        let leaves = view.tables[&Table::KV].leaves.len();
        assert!(leaves >= 10);
        for i in 1..leaves {
            assert!(
                view.shares_leaf(&published, Table::KV, i),
                "leaf {i} copied"
            );
        }
        // A reader of the published view sees it unchanged.
        assert_eq!(published.scan(Table::KV, "", usize::MAX), before);
        assert_eq!(published.get(Table::KV, "k/00000").unwrap().ts, ts(1));
        assert_eq!(view.get(Table::KV, "k/00000").unwrap().ts, ts(2));
    }
}
