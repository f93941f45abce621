//! Tombstone garbage collection by a mesh-wide horizon.
//!
//! The rule (ARCHITECTURE.md, "Tombstone collection", has the argument):
//!
//! 1. Every node registers in [`Table::GC`], a replicated table, so even a
//!    node restarted alone knows every node that may hold data.
//! 2. A node holding a tombstone older than `tombstone_grace` proposes a
//!    candidate horizon `C` (its clock minus the grace, rounded down to a
//!    quarter of the grace so proposals coincide); others join the highest
//!    candidate. Each reports `(C, digest of its versions below C)` in its
//!    record, and first moves its clock to at least `C`, so it never again
//!    stamps anything below `C`.
//! 3. When every registered, non-reaped node reports the same `(C, D)`, the
//!    versions below `C` are the same everywhere: every node holds every
//!    tombstone below `C` (or a later version of its key). Each node then
//!    collects those tombstones and records `C` as applied.
//! 4. Every replication message carries its sender's applied horizon. A
//!    node takes versions below its own horizon only from senders at or
//!    past it, so a node that missed a collection cannot hand a deleted
//!    value back; the late node, seeing a later horizon, collects too if
//!    it reported that very digest, and otherwise drops everything below the
//!    horizon and refills it from up-to-date peers.
//! 5. A node gone (down or left) for `reap_after` is marked reaped and no
//!    longer holds collection back; if it returns, rule 4 cleans it.

use std::collections::{BTreeMap, BTreeSet};

use myco_proto::horizon::{GC_RECORD_VERSION, GcRecord, Horizon};
use myco_proto::{Change, NodeId, Table, Timestamp};

use super::Replication;
use crate::config::Config;
use crate::stats::Stats;
use crate::time::Time;

/// Most reports remembered per life: a node re-reports only when its
/// digest below the candidate changes, which is rare once writes settle.
const MAX_REPORTS: usize = 32;

/// What a node knows of collection.
#[derive(Debug, Default)]
pub(crate) struct GcState {
    /// The horizon this node collected below (or refilled from).
    pub(crate) applied: Horizon,
    /// Reports made in this life above `applied`: proof that this node's
    /// versions below that candidate were exactly that digest.
    reported: Vec<Horizon>,
    /// Earliest next report (they are rate limited).
    next_report: Time,
    /// Tombstones collected, to remove from disk.
    pub(crate) collected: Vec<(Table, String, Timestamp)>,
    /// Versions dropped to refill from peers, to remove from disk.
    pub(crate) dropped: Vec<(Table, String, Timestamp)>,
    /// Registered nodes not seen up, since when (this life).
    absent_since: BTreeMap<NodeId, Time>,
}

impl Replication {
    fn my_gc_key(&self) -> String {
        self.me.to_string()
    }

    /// Every node's record; `None` for one this build cannot read, which
    /// then holds collection back.
    fn gc_records(&self) -> Vec<(String, Option<GcRecord>)> {
        self.replica
            .scan(Table::GC, "")
            .map(|(k, e)| {
                let r = e.value.as_deref().and_then(|v| GcRecord::decode(v).ok());
                (k.to_string(), r)
            })
            .collect()
    }

    fn my_gc_record(&self) -> Option<GcRecord> {
        let e = self.replica.entry(Table::GC, &self.my_gc_key())?;
        GcRecord::decode(e.value.as_deref()?).ok()
    }

    /// A write the core makes itself: stamped, applied, spread and stored
    /// in the background like a merged change.
    fn write_internal(&mut self, now: Time, key: String, record: GcRecord) {
        let change = Change {
            table: Table::GC,
            key,
            ts: self.hlc.tick(now.0),
            value: Some(record.encode()),
        };
        self.replica.merge(change.clone());
        self.applied(change);
    }

    fn write_my_record(&mut self, now: Time, reported: Horizon) {
        let record = GcRecord {
            version: GC_RECORD_VERSION,
            reported,
            applied: self.gc.applied,
            reaped: false,
        };
        if self.my_gc_record() != Some(record) {
            self.write_internal(now, self.my_gc_key(), record);
        }
    }

    /// After a restore: the applied horizon comes back from this node's
    /// record, and a collection the disk had not finished is finished.
    pub(crate) fn gc_restore(&mut self) {
        if let Some(r) = self.my_gc_record() {
            self.gc.applied = r.applied;
            self.collect_below(r.applied.at);
        }
    }

    fn collect_below(&mut self, at: u64) {
        let doomed: Vec<(Table, String, Timestamp)> = self
            .replica
            .tombstones()
            .filter(|(t, _, ts)| *t != Table::GC && ts.wall_ms < at)
            .map(|(t, k, ts)| (t, k.to_string(), ts))
            .collect();
        for (t, k, ts) in doomed {
            if self.replica.collect(t, &k, ts) {
                self.gc.collected.push((t, k, ts));
            }
        }
    }

    /// Whether a change from a sender at horizon `theirs` may be merged:
    /// below our horizon, only from senders at or past it.
    pub(crate) fn gc_accepts(&self, theirs: Horizon, change: &Change) -> bool {
        change.table == Table::GC
            || change.ts.wall_ms >= self.gc.applied.at
            || theirs.at >= self.gc.applied.at
    }

    /// A peer's message shows its applied horizon; catch up to a later one.
    pub(crate) fn gc_observe(
        &mut self,
        cfg: &Config,
        stats: &mut Stats,
        now: Time,
        theirs: Horizon,
    ) {
        if !cfg.collect_tombstones || theirs.at <= self.gc.applied.at {
            return;
        }
        if self.gc.reported.contains(&theirs)
            || self.replica.digest_below(theirs.at, Table::GC) == theirs.digest
        {
            return self.apply_horizon(now, theirs);
        }
        // This node did not take part (it was reaped, is new, or restarted
        // since its report): what it holds below the horizon may include
        // values whose tombstones are gone. Drop it all and refill from
        // peers at the horizon, who hold exactly the agreed versions.
        let below = self.replica.versions_below(theirs.at, Table::GC);
        tracing::info!(node = %self.me, horizon = theirs.at, dropped = below.len(),
            "behind a collection horizon: refilling what lies below it from peers");
        stats.horizon_resets += 1;
        for (t, k, ts) in below {
            if self.replica.drop_version(t, &k, ts) {
                self.gc.dropped.push((t, k, ts));
            }
        }
        self.set_applied(now, theirs);
    }

    fn apply_horizon(&mut self, now: Time, h: Horizon) {
        self.collect_below(h.at);
        self.set_applied(now, h);
    }

    fn set_applied(&mut self, now: Time, h: Horizon) {
        self.gc.applied = h;
        self.raise_clock_to(now, h.at);
        self.gc.reported.retain(|r| r.at > h.at);
        let reported = self
            .my_gc_record()
            .map(|r| r.reported)
            .filter(|r| r.at > h.at)
            .unwrap_or(h);
        self.write_my_record(now, reported);
    }

    /// Housekeeping: register, reap the long gone, report, and collect
    /// when every registered node agrees. `up` holds the members seen
    /// alive or suspect now.
    pub(crate) fn gc_tick(&mut self, cfg: &Config, now: Time, up: &BTreeSet<NodeId>) {
        let records = self.gc_records();
        let mine = self.my_gc_record();
        if mine.is_none_or(|r| r.reaped) {
            // First start, or back after being reaped.
            let reported = mine.map_or(Horizon::default(), |r| r.reported);
            return self.write_my_record(now, reported);
        }
        // A node that does not collect still registers, so it holds
        // everyone's collection back instead of being left out of it.
        if !cfg.collect_tombstones {
            return;
        }
        self.reap(cfg, now, &records, up);
        let Some(mine) = self.my_gc_record() else {
            return;
        };
        let live: Vec<Option<GcRecord>> = records
            .iter()
            .map(|(_, r)| *r)
            .filter(|r| r.is_none_or(|r| !r.reaped))
            .collect();

        // Collect when every registered node reported what this node did.
        let c = mine.reported;
        if c.at > self.gc.applied.at
            && live.iter().all(|r| r.is_some_and(|r| r.reported == c))
            && (self.gc.reported.contains(&c)
                || self.replica.digest_below(c.at, Table::GC) == c.digest)
        {
            return self.apply_horizon(now, c);
        }

        // Propose or join a candidate, and report when the digest moved.
        if now < self.gc.next_report {
            return;
        }
        let grace = cfg.tombstone_grace.as_millis() as u64;
        let quantum = (grace / 4).max(1);
        let own = now.0.saturating_sub(grace) / quantum * quantum;
        // A round in progress keeps its candidate until it is agreed, or
        // proposals made a quarter-grace apart would never meet; all join
        // the highest. A new round starts only once every node applied the last.
        let joined = live
            .iter()
            .flatten()
            .map(|r| r.reported.at)
            .filter(|at| *at > self.gc.applied.at && *at <= own.saturating_add(grace))
            .max();
        let in_progress = live
            .iter()
            .flatten()
            .any(|r| r.reported.at > r.applied.at || r.applied.at != self.gc.applied.at);
        let wants =
            (!in_progress && self.replica.has_tombstone_below(own, Table::GC)).then_some(own);
        let Some(at) = joined.or(wants) else { return };
        if at <= self.gc.applied.at {
            return;
        }
        // Never stamp below a candidate once reported.
        self.raise_clock_to(now, at);
        let report = Horizon {
            at,
            digest: self.replica.digest_below(at, Table::GC),
        };
        if report != mine.reported {
            self.gc.next_report = now + cfg.sync_interval;
            if self.gc.reported.len() >= MAX_REPORTS {
                self.gc.reported.remove(0);
            }
            self.gc.reported.push(report);
            self.write_my_record(now, report);
        }
    }

    /// Moves the HLC to at least wall time `at`, so this node never again
    /// stamps a write below a horizon it knows of.
    fn raise_clock_to(&mut self, now: Time, at: u64) {
        let floor = Timestamp {
            wall_ms: at,
            logical: 0,
            node: self.me,
        };
        // A horizon is a grace behind the clocks that agreed on it: never
        // beyond the drift bound, so this is never refused.
        let _ = self.hlc.observe(floor, now.0);
    }

    /// Marks reaped the registered nodes this node has not seen up for
    /// `reap_after` (down, left, or never met in this life).
    fn reap(
        &mut self,
        cfg: &Config,
        now: Time,
        records: &[(String, Option<GcRecord>)],
        up: &BTreeSet<NodeId>,
    ) {
        let mut registered = BTreeSet::new();
        for (key, record) in records {
            let Some(r) = record.filter(|r| !r.reaped) else {
                continue;
            };
            let Ok(id) = key.parse::<NodeId>() else {
                continue;
            };
            if id == self.me {
                continue;
            }
            registered.insert(id);
            if up.contains(&id) {
                self.gc.absent_since.remove(&id);
                continue;
            }
            let since = *self.gc.absent_since.entry(id).or_insert(now);
            if now.since(since) < cfg.reap_after {
                continue;
            }
            tracing::info!(node = %self.me, reaped = %id,
                "gone past reap_after: no longer holds tombstone collection back");
            self.gc.absent_since.remove(&id);
            self.write_internal(now, key.clone(), GcRecord { reaped: true, ..r });
        }
        self.gc.absent_since.retain(|id, _| registered.contains(id));
    }
}
