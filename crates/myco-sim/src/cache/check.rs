//! The checks at the end of a run (see the parent module): placement and
//! durability, apart from the world they judge.

use std::collections::{BTreeMap, BTreeSet};

use myco_core::cache::owners;
use myco_proto::NodeId;
use myco_proto::state::Timestamp;

use super::{BUCKET, CacheReport, Sim};

impl Sim {
    pub(super) fn check(mut self) -> Result<CacheReport, String> {
        let seed = self.cfg.seed;
        let members = self.members().clone();
        let live: Vec<NodeId> = members.iter().map(|i| self.ids[*i]).collect();
        for k in 0..self.cfg.keys {
            let key = format!("k{k}");
            let owned: BTreeSet<usize> = owners(BUCKET, &key, &live, self.cfg.replicas)
                .into_iter()
                .map(|o| self.index(o))
                .collect();
            let mut held: BTreeMap<usize, Timestamp> = BTreeMap::new();
            for i in &members {
                if let Some(e) = self.nodes[*i].store.get(BUCKET, &key, 0) {
                    held.insert(*i, e.ts);
                }
            }
            let holders: BTreeSet<usize> = held.keys().copied().collect();
            if !held.is_empty() && holders != owned {
                return Err(format!(
                    "seed {seed}: placement: {key} is held by {holders:?}, its owners are {owned:?} ({:?})",
                    self.cfg
                ));
            }
            let versions: BTreeSet<Timestamp> = held.values().copied().collect();
            // The newest acknowledged write of the key.
            let Some(w) = self
                .writes
                .iter()
                .filter(|w| w.key == key && w.acks >= w.need)
                .max_by_key(|w| w.ts)
            else {
                continue;
            };
            // Its owners under every membership since, and the nodes that
            // acknowledged it: did all stay up?
            let mut ever: BTreeSet<usize> = w.ackers.iter().copied().collect();
            for (i, (_, m)) in self.history.iter().enumerate() {
                let until = self.history.get(i + 1).map_or(u64::MAX, |h| h.0);
                if until <= w.at {
                    continue;
                }
                let ids: Vec<NodeId> = m.iter().map(|i| self.ids[*i]).collect();
                ever.extend(
                    owners(BUCKET, &key, &ids, self.cfg.replicas)
                        .into_iter()
                        .map(|o| self.index(o)),
                );
            }
            if self
                .departed
                .iter()
                .any(|(t, n)| *t >= w.at && ever.contains(n))
            {
                continue;
            }
            // An owner that stopped gracefully handed the key over, to
            // the owners it saw: protected when none of them can have
            // crashed unseen, that is when no node crashed since.
            let handed = self
                .handed_over
                .iter()
                .any(|(t, n)| *t >= w.at && ever.contains(n));
            if handed && self.departed.iter().any(|(t, _)| *t >= w.at) {
                continue;
            }
            self.report.protected += 1;
            if versions.iter().next_back().is_none_or(|v| *v < w.ts) {
                return Err(format!(
                    "seed {seed}: durability: {key}'s write {:?} (acked, owners {ever:?} all stayed up) is lost; held {versions:?} ({:?})",
                    w.ts, self.cfg
                ));
            }
            // Owners may differ even so: a write is acknowledged once two
            // owners hold it (a third may miss it), and one that was not
            // acknowledged may have reached a single owner; reads repair
            // both (`cache::repair`). But the newest version, when it is
            // of an acknowledged write, must be on two owners (or all).
            if let Some(newest) = versions.iter().next_back()
                && self
                    .writes
                    .iter()
                    .any(|w| w.ts == *newest && w.acks >= w.need)
            {
                let copies = held.values().filter(|v| *v == newest).count();
                if copies < owned.len().min(2) {
                    return Err(format!(
                        "seed {seed}: placement: the newest acknowledged version of {key} is on {copies} of its owners {owned:?}, held {held:?} ({:?})",
                        self.cfg
                    ));
                }
            }
        }
        Ok(self.report)
    }
}
