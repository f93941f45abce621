//! The replication protocol, as the node runs it.
//!
//! - **Write-ahead:** a local write is applied at once (reads see it) but
//!   leaves the node only once the driver reports it durable
//!   ([`crate::Node::durable`]): until then it is neither pushed nor sent
//!   in an anti-entropy reply. A write torn by a crash was then never seen
//!   by anyone, so a restarted node whose clock resumes from its disk may
//!   reissue its timestamp harmlessly.
//! - **Push:** a durable local write goes to `fanout` random live peers; a
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
//! - Tombstones are collected below a horizon all nodes agreed on; every
//!   message carries the sender's horizon ([`gc`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use myco_proto::horizon::Horizon;
use myco_proto::sync::{BUCKETS, STREAM_VERSION, StreamFrame, SyncMessage, Version};
use myco_proto::{Change, NodeId, Table};
use rand::SeedableRng;
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

mod gc;

/// Most local writes held back awaiting durability; beyond it the oldest
/// is no longer hidden from anti-entropy (the driver lost track of it).
const MAX_UNRELEASED: usize = 4096;
/// A local write the driver has not reported durable after this long is
/// no longer hidden from anti-entropy: its persist failed or hangs, and a
/// write every reader of this node sees must not keep replicas apart for
/// good. (It is still not pushed.)
const HIDE_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) struct Replication {
    me: NodeId,
    pub(crate) replica: Replica,
    pub(crate) hlc: Hlc,
    messages: VecDeque<(SocketAddr, Vec<u8>)>,
    persist: Vec<Change>,
    changed: Vec<Change>,
    forward: Vec<Change>,
    pub(crate) gc: gc::GcState,
    /// Local writes not yet reported durable, by timestamp, with when they
    /// were made: not pushed, and hidden from anti-entropy replies.
    unreleased: BTreeMap<myco_proto::Timestamp, (Time, Change)>,
    next_sync: Time,
    /// When this node last applied a change, local or remote.
    last_change: Option<Time>,
    /// Picks push targets and anti-entropy partners: a stream of its own,
    /// so replication's choices do not shift SWIM's.
    rng: StdRng,
    /// Whether a flush is scheduled (see [`Replication::schedule_flush`]).
    flush_scheduled: bool,
    /// The peer the changes of the scheduled flush came from, if one did.
    flush_except: Option<NodeId>,
}

impl Replication {
    /// `seed` is the node's seed; replication draws from a stream derived
    /// from it, apart from SWIM's.
    pub(crate) fn new(me: NodeId, cfg: &Config, now: Time, seed: u64) -> Self {
        Replication {
            me,
            replica: Replica::default(),
            hlc: Hlc::new(me, cfg.max_clock_drift.as_millis() as u64),
            messages: VecDeque::new(),
            persist: Vec::new(),
            changed: Vec::new(),
            forward: Vec::new(),
            gc: gc::GcState::default(),
            unreleased: BTreeMap::new(),
            next_sync: now + cfg.sync_interval,
            last_change: None,
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed),
            flush_scheduled: false,
            flush_except: None,
        }
    }

    pub(crate) fn restore(&mut self, changes: Vec<Change>) {
        for c in changes {
            self.hlc.restore(c.ts);
            self.replica.merge(c);
        }
        self.gc_restore();
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
        self.hold(now, change.clone());
        self.changed.push(change.clone());
        Ok(change)
    }

    /// Keeps a local write back until it is durable, within bounds.
    fn hold(&mut self, now: Time, change: Change) {
        let full = self.unreleased.len() >= MAX_UNRELEASED;
        if let Some(entry) = self.unreleased.first_entry()
            && (full || now.since(entry.get().0) >= HIDE_AT_MOST)
        {
            tracing::debug!(node = %self.me, ts = %entry.key(), "write never reported durable; anti-entropy may spread it");
            entry.remove();
        }
        self.unreleased.insert(change.ts, (now, change));
    }

    /// The local write stamped `ts` is durable: it may leave the node.
    /// Returns whether it was waiting (and now is queued for the next push).
    pub(crate) fn durable(&mut self, ts: myco_proto::Timestamp) -> bool {
        match self.unreleased.remove(&ts) {
            Some((_, change)) => {
                self.forward.push(change);
                true
            }
            None => false,
        }
    }

    /// Whether a version stamped `ts` may leave the node: all but local
    /// writes not yet durable (recent ones; see [`HIDE_AT_MOST`]).
    fn may_leave(&self, now: Time, ts: &myco_proto::Timestamp) -> bool {
        self.unreleased
            .get(ts)
            .is_none_or(|(at, _)| now.since(*at) >= HIDE_AT_MOST)
    }

    fn retain_shareable(&self, now: Time, changes: &mut Vec<Change>) {
        if !self.unreleased.is_empty() {
            changes.retain(|c| self.may_leave(now, &c.ts));
        }
    }

    /// The versions of `buckets` that may leave the node.
    fn shareable_versions(&self, now: Time, buckets: &[u16]) -> Vec<Version> {
        let mut versions = self.replica.bucket_versions(buckets);
        if !self.unreleased.is_empty() {
            versions.retain(|v| self.may_leave(now, &v.ts));
        }
        versions
    }

    /// Anti-entropy step 2 on the receiving side: `theirs` lists every
    /// version the peer holds in `buckets`. Pushes the peer what it lacks
    /// (ours is later, or theirs is missing), and asks for what we lack.
    fn compare(
        &mut self,
        cfg: &Config,
        stats: &mut Stats,
        now: Time,
        peer: SocketAddr,
        buckets: &[u16],
        theirs: Vec<Version>,
    ) {
        let held: BTreeMap<(Table, String), (myco_proto::Timestamp, u64)> = theirs
            .iter()
            .map(|v| ((v.table, v.key.clone()), (v.ts, v.hash)))
            .collect();
        let want: Vec<(Table, String)> = theirs
            .into_iter()
            .filter(|v| v.newer_than(self.replica.version(v.table, &v.key)))
            .map(|v| (v.table, v.key))
            .collect();
        let lacking: Vec<(Table, String)> = self
            .shareable_versions(now, buckets)
            .into_iter()
            .filter(|v| v.newer_than(held.get(&(v.table, v.key.clone())).copied()))
            .map(|v| (v.table, v.key))
            .collect();
        if !lacking.is_empty() {
            let changes = self.replica.changes_of(&lacking);
            self.push_to(cfg, stats, peer, &changes);
        }
        for part in runs(&want, |(_, k)| Version::size_of(k), cfg.max_part) {
            self.send(cfg, stats, peer, SyncMessage::Want(part));
        }
    }

    fn send(&mut self, cfg: &Config, stats: &mut Stats, to: SocketAddr, message: SyncMessage) {
        if self.messages.len() >= cfg.max_outbox {
            return stats.drop("message_outbox_full");
        }
        let frame = StreamFrame {
            version: STREAM_VERSION,
            from: self.me,
            horizon: self.gc.applied,
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

    /// Gathers what is queued for a push `push_delay` from now, to
    /// everyone but `from` (the peer it came from). Returns when the
    /// router must call [`Replication::flush_due`], unless a flush is
    /// already scheduled.
    pub(crate) fn schedule_flush(
        &mut self,
        cfg: &Config,
        now: Time,
        from: Option<NodeId>,
    ) -> Option<Time> {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            self.flush_except = from;
            return Some(now + cfg.push_delay);
        }
        if self.flush_except != from {
            // Changes from several sources share the flush: exclude no one.
            self.flush_except = None;
        }
        None
    }

    /// The scheduled flush is due: pushes what gathered since.
    pub(crate) fn flush_due(
        &mut self,
        cfg: &Config,
        stats: &mut Stats,
        live: &[(NodeId, SocketAddr)],
    ) {
        self.flush_scheduled = false;
        let except = self.flush_except.take();
        self.flush(cfg, stats, live, except);
    }

    /// Forwards what is new to `fanout` random live peers, not to `except`.
    pub(crate) fn flush(
        &mut self,
        cfg: &Config,
        stats: &mut Stats,
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
        targets.shuffle(&mut self.rng);
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
        if let Some((_, to)) = live.choose(&mut self.rng) {
            let summary = self.replica.digest();
            self.send(cfg, stats, *to, SyncMessage::Summary(summary));
        }
        true
    }

    fn merge_remote(
        &mut self,
        stats: &mut Stats,
        now: Time,
        theirs: Horizon,
        changes: Vec<Change>,
    ) {
        for c in changes {
            // Below our horizon only a sender at or past it is trusted: any
            // other may hold values whose tombstones were collected.
            if !self.gc_accepts(theirs, &c) {
                stats.drop("behind_horizon");
                continue;
            }
            if let Err(e) = self.hlc.observe(c.ts, now.0) {
                tracing::debug!(node = %self.me, key = %c.key, error = %e, "change refused");
                stats.drop("clock_drift");
                continue;
            }
            if self.replica.merge(c.clone()) == Merge::Applied {
                self.applied(c);
            }
        }
    }

    /// A change this node applied that did not come from its own writes:
    /// stored in the background, forwarded once, reported.
    fn applied(&mut self, c: Change) {
        self.persist.push(c.clone());
        self.forward.push(c.clone());
        self.changed.push(c);
    }

    /// Handles a message from a member whose mesh address is `reply_to`
    /// and whose applied horizon is `theirs`.
    pub(crate) fn handle(
        &mut self,
        cfg: &Config,
        stats: &mut Stats,
        now: Time,
        reply_to: SocketAddr,
        theirs: Horizon,
        message: SyncMessage,
    ) {
        self.gc_observe(cfg, stats, now, theirs);
        match message {
            SyncMessage::Push(changes) => self.merge_remote(stats, now, theirs, changes),
            SyncMessage::Summary(summary) => {
                if summary == self.replica.digest() {
                    self.send(cfg, stats, reply_to, SyncMessage::InSync);
                } else {
                    // They differ: show them where, and they send what differs.
                    let digests = self.replica.digests().to_vec();
                    self.send(cfg, stats, reply_to, SyncMessage::Digest(digests));
                }
            }
            SyncMessage::Digest(digests) => {
                if digests.len() != BUCKETS {
                    return stats.drop("bad_digest");
                }
                let differ: Vec<u16> = (0..BUCKETS)
                    .filter(|i| digests[*i] != self.replica.digests()[*i])
                    .map(|i| i as u16)
                    .collect();
                if differ.is_empty() {
                    return self.send(cfg, stats, reply_to, SyncMessage::InSync);
                }
                // Reply in parts of whole buckets, each about max_part bytes.
                let sizes = self.replica.bucket_version_sizes();
                for part in runs(&differ, |b| sizes[*b as usize], cfg.max_part) {
                    let versions = self.shareable_versions(now, &part);
                    self.send(
                        cfg,
                        stats,
                        reply_to,
                        SyncMessage::Versions {
                            buckets: part,
                            versions,
                        },
                    );
                }
            }
            SyncMessage::Versions { buckets, versions } => {
                if buckets.iter().any(|b| *b as usize >= BUCKETS) {
                    return stats.drop("bad_digest");
                }
                self.compare(cfg, stats, now, reply_to, &buckets, versions);
            }
            SyncMessage::Want(keys) => {
                // Only what may leave the node: a local write not yet
                // durable stays until it is.
                let mut changes = self.replica.changes_of(&keys);
                self.retain_shareable(now, &mut changes);
                self.push_to(cfg, stats, reply_to, &changes);
            }
            SyncMessage::InSync => {}
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

    pub(crate) fn take_collected(&mut self) -> Vec<(Table, String, myco_proto::Timestamp)> {
        std::mem::take(&mut self.gc.collected)
    }

    pub(crate) fn take_dropped(&mut self) -> Vec<(Table, String, myco_proto::Timestamp)> {
        std::mem::take(&mut self.gc.dropped)
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
