//! The simulated disk of one node: what survives a crash.
//!
//! It models the agent's store (`myco_agent::store`): one record per key,
//! the newer version winning, and group commit. Everything pending becomes
//! durable together at a commit: a few ms after a local write (the world
//! schedules it, standing for the fsync), and at the start of every
//! simulation step, unless the node crashes first; a crash loses it all.
//! A local write counts as acknowledged (a client got its answer), and
//! the node may send it to peers, only once durable, so a crash tears
//! only writes that were never acknowledged nor sent. Merged remote
//! changes and tombstone removals are stored in the background the same
//! way and may be lost the same way: anti-entropy brings them back.

use std::collections::BTreeMap;

use myco_proto::{Change, Table, Timestamp};

enum Op {
    /// A local write, acknowledged once durable.
    Write(Change),
    /// A change merged from a peer.
    Merged(Change),
    /// A collected tombstone or a dropped version to delete (this version
    /// or an older one, never a later write).
    Remove(Table, String, Timestamp),
}

#[derive(Default)]
pub(crate) struct Disk {
    stored: BTreeMap<(Table, String), Change>,
    pending: Vec<Op>,
}

impl Disk {
    pub(crate) fn write(&mut self, change: Change) {
        self.pending.push(Op::Write(change));
    }

    pub(crate) fn merged(&mut self, changes: Vec<Change>) {
        self.pending.extend(changes.into_iter().map(Op::Merged));
    }

    pub(crate) fn remove(&mut self, table: Table, key: String, ts: Timestamp) {
        self.pending.push(Op::Remove(table, key, ts));
    }

    /// Whether local writes are waiting to be made durable.
    pub(crate) fn has_unacked(&self) -> bool {
        self.pending.iter().any(|op| matches!(op, Op::Write(_)))
    }

    /// Group commit: everything pending becomes durable, in order. Returns
    /// the local writes it acknowledges.
    pub(crate) fn commit(&mut self) -> Vec<Change> {
        let mut acked = Vec::new();
        for op in std::mem::take(&mut self.pending) {
            match op {
                Op::Write(c) => {
                    acked.push(c.clone());
                    self.store(c);
                }
                Op::Merged(c) => self.store(c),
                // As the agent's store: only a version no newer than this one.
                Op::Remove(table, key, ts) => {
                    let slot = (table, key);
                    if self.stored.get(&slot).is_some_and(|c| c.ts <= ts) {
                        self.stored.remove(&slot);
                    }
                }
            }
        }
        acked
    }

    /// A crash: nothing pending reaches the disk. Returns the local writes
    /// torn, which no client ever saw acknowledged.
    pub(crate) fn crash(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .filter_map(|op| match op {
                Op::Write(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// What a restarted node restores.
    pub(crate) fn contents(&self) -> Vec<Change> {
        self.stored.values().cloned().collect()
    }

    /// Keeps the newer version, as the agent's store does.
    fn store(&mut self, c: Change) {
        let slot = (c.table, c.key.clone());
        if self.stored.get(&slot).is_none_or(|old| old.ts < c.ts) {
            self.stored.insert(slot, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use myco_proto::NodeId;

    use super::*;

    fn change(key: &str, wall_ms: u64, value: Option<&str>) -> Change {
        Change {
            table: Table::KV,
            key: key.into(),
            ts: Timestamp {
                wall_ms,
                logical: 0,
                node: NodeId::from_u64(1),
            },
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn a_crash_tears_what_the_last_commit_did_not_take() {
        let mut d = Disk::default();
        d.write(change("a", 1, Some("x")));
        assert!(d.has_unacked());
        assert_eq!(d.commit().len(), 1);
        d.write(change("b", 2, Some("y")));
        d.merged(vec![change("c", 3, Some("z"))]);
        assert_eq!(d.crash().len(), 1, "only the local write counts as torn");
        assert_eq!(d.contents(), vec![change("a", 1, Some("x"))]);
        assert!(d.commit().is_empty());
    }

    #[test]
    fn newer_versions_win_and_only_the_collected_tombstone_is_removed() {
        let mut d = Disk::default();
        d.merged(vec![change("a", 5, None), change("a", 3, Some("old"))]);
        d.commit();
        assert_eq!(d.contents(), vec![change("a", 5, None)]);
        d.remove(Table::KV, "a".into(), change("a", 4, None).ts);
        d.commit();
        assert_eq!(d.contents().len(), 1, "another version stays");
        d.remove(Table::KV, "a".into(), change("a", 5, None).ts);
        d.commit();
        assert!(d.contents().is_empty());
    }
}
