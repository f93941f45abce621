//! The replication protocol, as the node runs it.
//!
//! - **Push:** a local write goes at once to `fanout` random live peers; a
//!   node that learns a change it did not have forwards it, once, to
//!   `fanout` others. Epidemic spread reaches n nodes in about log(n) hops.
//! - **Anti-entropy:** every `sync_interval` a node sends a digest of its
//!   whole replica to one random live peer; equal replicas answer `InSync`.
//!   For `hot_window` after it applied a change it does so every
//!   `hot_sync_interval` instead: push with `fanout` 4 misses about 2% of
//!   the nodes (more under loss), and these frequent rounds, nearly all of
//!   them on nodes that already agree, find those few within a few hundred
//!   milliseconds. An idle mesh stays at one 8-byte digest per interval.
//!   Otherwise the peer sends its 256 bucket digests, the first node answers
//!   with the complete contents of the buckets that differ (in parts of
//!   bounded size), and the peer merges them and pushes back what the first
//!   node lacks. One exchange repairs any
//!   difference, so a node back from a long absence catches up in a few
//!   bulk transfers, not by replaying history.
//! - Every received timestamp goes through the HLC first; one too far in
//!   the future is refused and counted, and anti-entropy retries it later.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;

use myco_proto::sync::{BUCKETS, STREAM_VERSION, StreamFrame, SyncMessage};
use myco_proto::{Change, NodeId, Table};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};

use crate::config::Config;
use crate::state::hlc::Hlc;
use crate::state::replica::{Merge, Replica};
use crate::stats::Stats;
use crate::time::Time;

/// A write the node refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    /// The key is empty or longer than the limit.
    #[error("keys are 1 to {max} bytes (this one is {len})")]
    Key {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is over the limit.
    #[error("values are at most {max} bytes (this one is {len})")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

pub(crate) struct Replication {
    me: NodeId,
    pub(crate) replica: Replica,
    pub(crate) hlc: Hlc,
    messages: VecDeque<(SocketAddr, Vec<u8>)>,
    persist: Vec<Change>,
    changed: Vec<Change>,
    forward: Vec<Change>,
    /// Per peer, the time of the last exchange that found both in sync.
    pub(crate) in_sync: BTreeMap<NodeId, Time>,
    next_sync: Time,
    /// When this node last applied a change, local or remote.
    last_change: Option<Time>,
}

impl Replication {
    pub(crate) fn new(me: NodeId, cfg: &Config, now: Time) -> Self {
        Replication {
            me,
            replica: Replica::default(),
            hlc: Hlc::new(me, cfg.max_clock_drift.as_millis() as u64),
            messages: VecDeque::new(),
            persist: Vec::new(),
            changed: Vec::new(),
            forward: Vec::new(),
            in_sync: BTreeMap::new(),
            next_sync: now + cfg.sync_interval,
            last_change: None,
        }
    }

    pub(crate) fn restore(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.hlc.restore(c.ts);
            self.replica.merge(c);
        }
    }

    pub(crate) fn write(
        &mut self,
        cfg: &Config,
        now: Time,
        table: Table,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<Change, WriteError> {
        if key.is_empty() || key.len() > cfg.max_key {
            return Err(WriteError::Key {
                len: key.len(),
                max: cfg.max_key,
            });
        }
        if let Some(v) = &value
            && v.len() > cfg.max_value
        {
            return Err(WriteError::ValueTooLarge {
                len: v.len(),
                max: cfg.max_value,
            });
        }
        let change = Change {
            table,
            key: key.to_string(),
            ts: self.hlc.tick(now.0),
            value,
        };
        self.replica.merge(change.clone());
        self.forward.push(change.clone());
        self.changed.push(change.clone());
        Ok(change)
    }

    fn send(&mut self, cfg: &Config, stats: &mut Stats, to: SocketAddr, message: SyncMessage) {
        if self.messages.len() >= cfg.max_outbox {
            return stats.drop("message_outbox_full");
        }
        let frame = StreamFrame {
            version: STREAM_VERSION,
            from: self.me,
            message,
        }
        .encode();
        self.messages.push_back((to, frame));
    }

    /// Sends `changes` to `to` in pushes of bounded size.
    fn push_to(&mut self, cfg: &Config, stats: &mut Stats, to: SocketAddr, changes: &[Change]) {
        for part in runs(changes, Change::size, cfg.max_part) {
            self.send(cfg, stats, to, SyncMessage::Push(part));
        }
    }

    /// Forwards what is new to `fanout` random live peers, not to `except`.
    pub(crate) fn flush(
        &mut self,
        cfg: &Config,
        stats: &mut Stats,
        rng: &mut StdRng,
        live: &[(NodeId, SocketAddr)],
        except: Option<NodeId>,
    ) {
        if self.forward.is_empty() {
            return;
        }
        let changes = std::mem::take(&mut self.forward);
        let mut targets: Vec<SocketAddr> = live
            .iter()
            .filter(|(id, _)| Some(*id) != except)
            .map(|(_, a)| *a)
            .collect();
        targets.shuffle(rng);
        for to in targets.into_iter().take(cfg.fanout) {
            self.push_to(cfg, stats, to, &changes);
        }
    }

    /// Notes that this node applied a change: it syncs at
    /// `hot_sync_interval` for a while. Returns the next round's time if
    /// that moved earlier.
    pub(crate) fn touched(&mut self, cfg: &Config, now: Time) -> Option<Time> {
        self.last_change = Some(now);
        let soon = now + cfg.hot_sync_interval;
        (soon < self.next_sync).then(|| {
            self.next_sync = soon;
            soon
        })
    }

    /// When the next anti-entropy round is due.
    pub(crate) fn next_sync(&self) -> Time {
        self.next_sync
    }

    /// Starts an anti-entropy round with a random live peer when due.
    /// Returns whether it was due (the next one is at [`Self::next_sync`]).
    pub(crate) fn sync(
        &mut self,
        cfg: &Config,
        stats: &mut Stats,
        now: Time,
        rng: &mut StdRng,
        live: &[(NodeId, SocketAddr)],
    ) -> bool {
        if now < self.next_sync {
            return false;
        }
        let hot = self
            .last_change
            .is_some_and(|t| now.since(t) < cfg.hot_window);
        self.next_sync = now
            + if hot {
                cfg.hot_sync_interval
            } else {
                cfg.sync_interval
            };
        if let Some((_, to)) = live.choose(rng) {
            let summary = self.replica.digest();
            self.send(cfg, stats, *to, SyncMessage::Summary(summary));
        }
        true
    }

    fn merge_remote(&mut self, cfg: &Config, stats: &mut Stats, now: Time, changes: Vec<Change>) {
        let horizon = now.0.saturating_sub(cfg.tombstone_grace.as_millis() as u64);
        for c in changes {
            // A tombstone past the grace period that we do not hold is one we
            // collected ourselves: taking it back would undo the collection.
            if c.value.is_none()
                && c.ts.wall_ms < horizon
                && self.replica.entry(c.table, &c.key).is_none()
            {
                stats.drop("collected_tombstone");
                continue;
            }
            if let Err(e) = self.hlc.observe(c.ts, now.0) {
                tracing::debug!(node = %self.me, key = %c.key, error = %e, "change refused");
                stats.drop("clock_drift");
                continue;
            }
            if self.replica.merge(c.clone()) == Merge::Applied {
                self.persist.push(c.clone());
                self.forward.push(c.clone());
                self.changed.push(c);
            }
        }
    }

    /// Handles a message from `from` (a member), whose mesh address is `reply_to`.
    pub(crate) fn handle(
        &mut self,
        cfg: &Config,
        stats: &mut Stats,
        now: Time,
        from: NodeId,
        reply_to: SocketAddr,
        message: SyncMessage,
    ) {
        match message {
            SyncMessage::Push(changes) => self.merge_remote(cfg, stats, now, changes),
            SyncMessage::Summary(theirs) => {
                if theirs == self.replica.digest() {
                    self.in_sync.insert(from, now);
                    self.send(cfg, stats, reply_to, SyncMessage::InSync);
                } else {
                    // They differ: show them where, and they send what differs.
                    let digests = self.replica.digests().to_vec();
                    self.send(cfg, stats, reply_to, SyncMessage::Digest(digests));
                }
            }
            SyncMessage::Digest(theirs) => {
                if theirs.len() != BUCKETS {
                    return stats.drop("bad_digest");
                }
                let differ: Vec<u16> = (0..BUCKETS)
                    .filter(|i| theirs[*i] != self.replica.digests()[*i])
                    .map(|i| i as u16)
                    .collect();
                if differ.is_empty() {
                    self.in_sync.insert(from, now);
                    return self.send(cfg, stats, reply_to, SyncMessage::InSync);
                }
                // Reply in parts of whole buckets, each about max_part bytes.
                let sizes = self.replica.bucket_sizes();
                for part in runs(&differ, |b| sizes[*b as usize], cfg.max_part) {
                    let changes = self.replica.bucket_changes(&part);
                    self.send(
                        cfg,
                        stats,
                        reply_to,
                        SyncMessage::Buckets {
                            buckets: part,
                            changes,
                        },
                    );
                }
            }
            SyncMessage::Buckets { buckets, changes } => {
                if buckets.iter().any(|b| *b as usize >= BUCKETS) {
                    return stats.drop("bad_digest");
                }
                let theirs: BTreeMap<(Table, String), myco_proto::Timestamp> = changes
                    .iter()
                    .map(|c| ((c.table, c.key.clone()), c.ts))
                    .collect();
                self.merge_remote(cfg, stats, now, changes);
                // What they lack: our entries in those buckets they do not
                // have, or have older.
                let lacking: Vec<Change> = self
                    .replica
                    .bucket_changes(&buckets)
                    .into_iter()
                    .filter(|c| {
                        theirs
                            .get(&(c.table, c.key.clone()))
                            .is_none_or(|t| *t < c.ts)
                    })
                    .collect();
                // Changes we just merged from them need not be forwarded
                // everywhere: anti-entropy already reached the one who lacked them.
                if !lacking.is_empty() {
                    self.push_to(cfg, stats, reply_to, &lacking);
                }
            }
            SyncMessage::InSync => {
                self.in_sync.insert(from, now);
            }
        }
    }

    pub(crate) fn poll_message(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.messages.pop_front()
    }

    pub(crate) fn take_persist(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.persist)
    }

    pub(crate) fn take_changed(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changed)
    }

    /// Garbage-collects tombstones that are safe to drop. The rule, which
    /// avoids resurrecting deleted keys (Garage bug #39): a tombstone goes
    /// only when it is older than `tombstone_grace` AND every member this
    /// node knows (alive, suspect or down) has completed an anti-entropy
    /// exchange with it that found both replicas identical after the
    /// tombstone was written. Identical replicas mean that member holds the
    /// tombstone, so no known member can bring the old value back.
    pub(crate) fn collect_tombstones(
        &mut self,
        cfg: &Config,
        now: Time,
        members: &BTreeSet<NodeId>,
    ) -> Vec<(Table, String, myco_proto::Timestamp)> {
        if !cfg.collect_tombstones {
            return Vec::new();
        }
        let horizon = now.0.saturating_sub(cfg.tombstone_grace.as_millis() as u64);
        let synced_since = members
            .iter()
            .map(|m| self.in_sync.get(m).map_or(0, |t| t.0))
            .min()
            .unwrap_or(now.0);
        let doomed: Vec<(Table, String, myco_proto::Timestamp)> = self
            .replica
            .tombstones()
            .filter(|(_, _, ts)| ts.wall_ms < horizon && ts.wall_ms < synced_since)
            .map(|(t, k, ts)| (t, k.to_string(), ts))
            .collect();
        doomed
            .into_iter()
            .filter(|(t, k, ts)| self.replica.collect(*t, k, *ts))
            .collect()
    }
}

/// Groups items, in order, into runs of about `max_bytes` each; an item
/// larger than that gets a run of its own.
fn runs<T: Clone>(items: &[T], size: impl Fn(&T) -> usize, max_bytes: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut run = Vec::new();
    let mut bytes = 0;
    for item in items {
        let n = size(item);
        if !run.is_empty() && bytes + n > max_bytes {
            out.push(std::mem::take(&mut run));
            bytes = 0;
        }
        bytes += n;
        run.push(item.clone());
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_respect_the_budget_and_keep_order() {
        let r = runs(&[3, 3, 3, 9, 1], |n| *n, 6);
        assert_eq!(r, vec![vec![3, 3], vec![3], vec![9], vec![1]]);
        assert!(runs(&Vec::<usize>::new(), |n| *n, 6).is_empty());
    }
}
