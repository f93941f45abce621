//! Read-repair of stale copies: after a read answered from one owner,
//! the owners below it are asked, and every owner holding an older
//! version than the newest seen (or none) is sent the newest.

use std::sync::Arc;

use myco_proto::NodeId;
use myco_proto::cache::CacheEntry;

use super::{Cache, wall_ms};

impl Cache {
    /// Asks `unasked` for `(bucket, key)`; `found` answered `entry`.
    pub(super) async fn repair_stale(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        found: NodeId,
        entry: CacheEntry,
        unasked: Vec<NodeId>,
        max_entries: u64,
    ) {
        let live = self.live();
        let mut seen: Vec<(NodeId, Option<CacheEntry>)> = vec![(found, Some(entry))];
        for node in unasked {
            let answer = if node == self.me {
                Some(self.store().get(bucket, key, wall_ms()))
            } else {
                match live.addr(node) {
                    Some(addr) => self.ask(addr, bucket, key).await,
                    None => None,
                }
            };
            // A node that did not answer is left alone.
            if let Some(a) = answer {
                seen.push((node, a));
            }
        }
        let Some(newest) = seen
            .iter()
            .filter_map(|(_, e)| e.clone())
            .max_by_key(|e| e.ts)
        else {
            return;
        };
        let stale: Vec<NodeId> = seen
            .iter()
            .filter(|(_, held)| held.as_ref().is_none_or(|h| h.ts < newest.ts))
            .map(|(node, _)| *node)
            .collect();
        self.repair(bucket, key, &newest, &stale, &live, max_entries);
    }

    /// This node's own copy of a key, if it holds one (asks no one): for
    /// inspection and tests.
    pub fn local_entry(&self, bucket: &str, key: &str) -> Option<CacheEntry> {
        self.store().get(bucket, key, wall_ms())
    }

    /// Writes a new version on this node's copy only, as a write that
    /// reached no other owner would leave it: for tests of repair.
    #[doc(hidden)]
    pub fn set_local_only(&self, bucket: &str, key: &str, value: Vec<u8>) {
        let max = self.bucket(bucket).unwrap_or_default().max_entries;
        let entry = CacheEntry {
            ts: self.tick(),
            value: Some(value),
            expires_at_ms: None,
        };
        self.store_here(bucket, max, key, entry, wall_ms(), true);
    }
}
