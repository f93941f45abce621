//! The model of the agent's shell: writes as `Cache::write` makes them
//! and the rebalancer's period (`cache::rebalance`), on the core's pure
//! functions.

use myco_core::cache::{Merge, before_for_moves, handoff, moves, owners};
use myco_proto::NodeId;
use myco_proto::cache::CacheEntry;
use myco_proto::state::Timestamp;
use rand::RngExt;

use super::{BUCKET, GRACE, PERIOD, Put, STRAY_EVERY, Sim, Write};

impl Sim {
    /// A random up node writes a random key, as `Cache::write` does.
    pub(super) fn write(&mut self) {
        let up: Vec<usize> = self.members().iter().copied().collect();
        let w = up[self.rng.random_range(0..up.len())];
        let key = format!("k{}", self.rng.random_range(0..self.cfg.keys));
        let node = &mut self.nodes[w];
        node.hlc = node.hlc.max(self.now) + 1;
        let ts = Timestamp {
            wall_ms: node.hlc,
            logical: 0,
            node: self.ids[w],
        };
        let entry = CacheEntry {
            ts,
            value: Some(ts.wall_ms.to_le_bytes().to_vec()),
            expires_at_ms: None,
        };
        let view = self.nodes[w].view.clone();
        let owners = owners(BUCKET, &key, &view, self.cfg.replicas);
        let id = self.writes.len();
        self.writes.push(Write {
            key: key.clone(),
            ts,
            need: owners.len().min(2),
            acks: 0,
            ackers: Vec::new(),
            at: self.now,
        });
        for o in owners {
            if o == self.ids[w] {
                self.store_here(w, &key, &entry, true);
                self.ack(id, w);
            } else {
                let put = Put {
                    key: key.clone(),
                    entry: entry.clone(),
                    write: Some(id),
                };
                self.send(w, o, put);
            }
        }
    }

    /// Stores a version on `n`, as `Cache::store_here` does: a drop
    /// decided before (perhaps on an older view) waits for the next walk,
    /// a node handing over passes the version on, and so does one that
    /// walked for a change less than a grace ago, to the owners the
    /// change added, when the version is new here (so two nodes whose
    /// views differ cannot pass one version back and forth) and not the
    /// node's `own` write (sent to the owners of its current view).
    pub(super) fn store_here(&mut self, n: usize, key: &str, entry: &CacheEntry, own: bool) {
        let node = &mut self.nodes[n];
        let merge = node.store.put(BUCKET, 0, key, entry.clone(), 0);
        if self.cfg.handoff {
            node.dropping.remove(key);
        }
        self.pass_on_if_leaving(n, key, entry);
        let Some((until, before, after)) = &self.nodes[n].changed else {
            return;
        };
        if !self.cfg.late_versions || own || self.now >= *until || merge == Merge::Stale {
            return;
        }
        let mv = moves(self.ids[n], BUCKET, key, before, after, self.cfg.replicas);
        for o in mv.map(|m| m.send_to).unwrap_or_default() {
            self.send_copy(n, o, key, entry);
        }
    }

    /// Sends `to` a copy of a version `from` holds (a move, a hand-over
    /// or a pass-on: no write waits for it).
    pub(super) fn send_copy(&mut self, from: usize, to: NodeId, key: &str, entry: &CacheEntry) {
        self.report.moved += 1;
        let put = Put {
            key: key.to_string(),
            entry: entry.clone(),
            write: None,
        };
        self.send(from, to, put);
    }

    pub(super) fn ack(&mut self, id: usize, by: usize) {
        let w = &mut self.writes[id];
        w.acks += 1;
        w.ackers.push(by);
        if w.acks == w.need {
            self.report.acked += 1;
        }
    }

    /// One period of `rebalance::run` on `n`.
    pub(super) fn rebalance(&mut self, n: usize) {
        let me = self.ids[n];
        let replicas = self.cfg.replicas;
        let view = self.nodes[n].view.clone();
        while self.nodes[n]
            .to_drop
            .front()
            .is_some_and(|(at, _)| *at <= self.now)
        {
            let (at, key) = self.nodes[n].to_drop.pop_front().expect("just seen");
            if !self.cfg.handoff {
                self.nodes[n].store.remove(BUCKET, &key);
                continue;
            }
            // A copy arrived since, or a later walk decided again: not now.
            if self.nodes[n].dropping.get(&key) != Some(&at) {
                continue;
            }
            self.nodes[n].dropping.remove(&key);
            let Some(to) = handoff(me, BUCKET, &key, &view, replicas) else {
                continue;
            };
            if let Some(entry) = self.nodes[n].store.get(BUCKET, &key, 0) {
                for o in to {
                    self.send_copy(n, o, &key, &entry);
                }
            }
            self.nodes[n].store.remove(BUCKET, &key);
        }
        let mut after = view;
        after.sort_unstable();
        let mut lives = self.nodes[n].lives.clone();
        lives.sort_unstable();
        let before = self.nodes[n].before.clone();
        let stray_pass = self.cfg.handoff && self.now % STRAY_EVERY < PERIOD;
        // The agent before the fixes compared ids alone.
        let changed = |b: &Vec<(NodeId, u64)>| {
            if self.cfg.handoff {
                *b != lives
            } else {
                b.iter().map(|(id, _)| *id).collect::<Vec<_>>() != after
            }
        };
        let walk = match &before {
            Some(b) if changed(b) => Some(if self.cfg.handoff {
                before_for_moves(b, &lives)
            } else {
                b.iter().map(|(id, _)| *id).collect()
            }),
            Some(_) if stray_pass => Some(after.clone()),
            _ => None,
        };
        if let Some(b) = &walk
            && *b != after
        {
            self.nodes[n].changed = Some((self.now + GRACE, b.clone(), after.clone()));
        }
        if let Some(b) = walk {
            let entries = self.nodes[n].store.entries_after(None, usize::MAX);
            for (_, key, entry) in entries {
                let Some(mv) = moves(me, BUCKET, &key, &b, &after, replicas) else {
                    continue;
                };
                for o in mv.send_to {
                    self.send_copy(n, o, &key, &entry);
                }
                if !mv.keep {
                    let at = self.now + GRACE;
                    self.nodes[n].dropping.insert(key.clone(), at);
                    self.nodes[n].to_drop.push_back((at, key));
                }
            }
        }
        self.nodes[n].before = Some(lives);
    }
}
