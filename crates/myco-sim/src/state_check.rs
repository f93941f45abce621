//! The state checkers: what must hold of replicated state, judged against
//! the ledger of every write the simulator made. Like the membership
//! checkers, they only observe.
//!
//! - **Shadow replicas:** per node, a [`Replica`] rebuilt from what the
//!   node reported: its restored disk, its `StateChanged` events, its
//!   collected tombstones. Its digest must equal the node's at every step.
//!   It shows the version of a tombstone, which `Node::get` hides, and
//!   lets propagation be timed without scanning nodes.
//! - **Clock:** a node's HLC never goes back within a life; after a restart
//!   it is not behind the latest timestamp on its disk; a node never
//!   issues the same timestamp twice, in any life, unless the first write
//!   under it was torn by a crash before any other node held it (the
//!   write-ahead rule: a write leaves its node only once durable, so a
//!   torn one is forgotten by everyone). Otherwise two values would share
//!   a timestamp, and an acknowledged write could lose to a torn one.
//!   Stamping a write below a torn write of an earlier life is allowed
//!   (the torn one was never durable) but counted.
//! - **No resurrection:** a node that collected a tombstone never takes an
//!   older value of its key back (in that life), and at the end no node
//!   holds a value older than a tombstone any node collected. A restarted
//!   node that never saw the delete may hold the old value for a while:
//!   that is stale, not resurrected, unless it spreads back.
//! - **After the heal** ([`StateChecks::identical`], [`StateChecks::final_check`]):
//!   every running node holds the same digest; for every acknowledged write
//!   each holds that version or a later one; every version held was
//!   written by someone, with that value.
//!
//! A node whose clock runs beyond `max_clock_drift` ahead of the others
//! needs no special judgement: its peers refuse its writes only until
//! their own clocks come within the bound (anti-entropy offers them again
//! every round), so the replicas converge later, not never.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use myco_core::state::replica::{Merge, Replica};
use myco_core::{Node, Time};
use myco_proto::sync::BUCKETS;
use myco_proto::{Change, Table, Timestamp};

use crate::check::{Violation, ViolationKind};
use crate::report::{Propagation, StateReport};

/// (wall, logical): how the HLC orders its own readings (its node id never changes).
fn reading(ts: Timestamp) -> (u64, u32) {
    (ts.wall_ms, ts.logical)
}

/// A write being timed until every running node holds it (or later).
struct Tracked {
    key: String,
    ts: Timestamp,
    made: Time,
    missing: BTreeSet<usize>,
}

pub(crate) struct StateChecks {
    failure: Option<Violation>,
    shadows: Vec<Replica>,
    /// Per node, the last HLC reading in the current life.
    clocks: Vec<(u64, u32)>,
    /// Per node, the latest timestamp it issued, in any life.
    issued: Vec<Option<Timestamp>>,
    /// Every timestamp issued (the writer is part of it), with its key and
    /// whether a node other than its writer ever held it.
    stamps: BTreeMap<Timestamp, (String, bool)>,
    /// Every write made, acknowledged or not: its value by (key, timestamp).
    made: BTreeMap<(String, Timestamp), Option<Vec<u8>>>,
    /// Per key, the latest acknowledged write.
    acked: BTreeMap<String, Change>,
    /// Per key, the latest tombstone any node collected.
    collected: BTreeMap<String, Timestamp>,
    /// Per node, per key, the latest tombstone it collected in this life.
    collected_here: Vec<BTreeMap<String, Timestamp>>,
    tracked: Vec<Tracked>,
    samples: Vec<Duration>,
    pub(crate) figures: StateReport,
}

impl StateChecks {
    pub(crate) fn new(nodes: usize) -> StateChecks {
        StateChecks {
            failure: None,
            shadows: (0..nodes).map(|_| Replica::default()).collect(),
            clocks: vec![(0, 0); nodes],
            issued: vec![None; nodes],
            stamps: BTreeMap::new(),
            made: BTreeMap::new(),
            acked: BTreeMap::new(),
            collected: BTreeMap::new(),
            collected_here: vec![BTreeMap::new(); nodes],
            tracked: Vec::new(),
            samples: Vec::new(),
            figures: StateReport::default(),
        }
    }

    pub(crate) fn take_failure(&mut self) -> Option<Violation> {
        self.failure.take()
    }

    pub(crate) fn fail(&mut self, kind: ViolationKind, at: Time, message: String) {
        if self.failure.is_none() {
            self.failure = Some(Violation::new(kind, at, message));
        }
    }

    // ----- lives -----

    /// Node `i` starts a life with `restored` from its disk; `clock` is its
    /// HLC right after the restore.
    pub(crate) fn started(&mut self, now: Time, i: usize, restored: &[Change], clock: Timestamp) {
        self.interrupted();
        let mut shadow = Replica::default();
        let mut latest = (0, 0);
        for c in restored {
            latest = latest.max(reading(c.ts));
            shadow.merge(c.clone());
        }
        self.collected_here[i].clear();
        if reading(clock) < latest {
            let msg = format!("n{i} restarted with clock {clock:?}, behind {latest:?} on its disk");
            self.fail(ViolationKind::ClockBackwards, now, msg);
        }
        self.shadows[i] = shadow;
        self.clocks[i] = reading(clock);
    }

    /// A node stopped, started or a partition began: writes in flight are
    /// no longer timed (their spread says nothing about a calm network).
    pub(crate) fn interrupted(&mut self) {
        self.figures.propagation.abandoned += self.tracked.len() as u64;
        self.tracked.clear();
    }

    // ----- what nodes report -----

    /// Node `i` made a write; if `track`, time it until every node in
    /// `running` holds it.
    pub(crate) fn wrote(&mut self, now: Time, i: usize, c: &Change, track: Option<&[usize]>) {
        self.figures.writes += 1;
        self.figures.deletes += u64::from(c.value.is_none());
        if let Some((earlier, reached)) = self.stamps.insert(c.ts, (c.key.clone(), false)) {
            let msg = format!(
                "n{i} issued {:?} for {:?}, a timestamp it already issued for {earlier:?} ({})",
                c.ts,
                c.key,
                if reached {
                    "a write other nodes held"
                } else {
                    "a write not torn"
                }
            );
            self.fail(ViolationKind::TimestampReused, now, msg);
        }
        match self.issued[i] {
            // Within a life the clock check rules; across lives only a torn
            // write can be ahead of the disk the clock restarted from.
            Some(before) if c.ts < before => self.figures.stamped_behind += 1,
            _ => self.issued[i] = Some(c.ts),
        }
        self.made.insert((c.key.clone(), c.ts), c.value.clone());
        if let Some(running) = track {
            let missing = running
                .iter()
                .copied()
                .filter(|&j| j == i || self.holds_since(j, &c.key, c.ts).is_none())
                .collect();
            self.tracked.push(Tracked {
                key: c.key.clone(),
                ts: c.ts,
                made: now,
                missing,
            });
        }
    }

    /// The version node `j` holds of `key` if it is `ts` or later.
    fn holds_since(&self, j: usize, key: &str, ts: Timestamp) -> Option<Timestamp> {
        self.shadows[j]
            .entry(Table::KV, key)
            .map(|e| e.ts)
            .filter(|t| *t >= ts)
    }

    /// Node `i` applied a change (its own write or a merged one).
    pub(crate) fn changed(&mut self, now: Time, i: usize, c: &Change) {
        if c.ts.node != crate::world::id_of(i)
            && let Some((_, reached)) = self.stamps.get_mut(&c.ts)
        {
            *reached = true;
        }
        if let Some(gone) = self.collected_here[i].get(&c.key).filter(|t| c.ts < **t) {
            let msg = format!(
                "n{i} took {:?} of {:?} (a {}) back, after collecting tombstone {gone:?}",
                c.ts,
                c.key,
                if c.value.is_some() {
                    "value"
                } else {
                    "tombstone"
                }
            );
            self.fail(ViolationKind::Resurrected, now, msg);
        }
        if self.shadows[i].merge(c.clone()) == Merge::Stale {
            let msg = format!(
                "n{i} reported applying {:?} of {:?}, but held that version or a later one",
                c.ts, c.key
            );
            self.fail(ViolationKind::ReplicaMismatch, now, msg);
        }
        let mut done = Vec::new();
        for (k, t) in self.tracked.iter_mut().enumerate() {
            if t.key == c.key && c.ts >= t.ts && t.missing.remove(&i) && t.missing.is_empty() {
                done.push(k);
            }
        }
        for k in done.into_iter().rev() {
            let t = self.tracked.swap_remove(k);
            self.samples.push(now.since(t.made));
        }
    }

    /// Node `i` collected a tombstone.
    pub(crate) fn collected(
        &mut self,
        now: Time,
        i: usize,
        table: Table,
        key: &str,
        ts: Timestamp,
    ) {
        self.figures.collected += 1;
        if !self.shadows[i].collect(table, key, ts) {
            let msg = format!("n{i} collected tombstone {ts:?} of {key:?}, which it did not hold");
            self.fail(ViolationKind::ReplicaMismatch, now, msg);
        }
        for map in [&mut self.collected, &mut self.collected_here[i]] {
            let floor = map.entry(key.to_string()).or_insert(ts);
            *floor = (*floor).max(ts);
        }
    }

    /// Node `i` dropped a version to refill it from peers (it was behind
    /// a collection horizon it had no part in).
    pub(crate) fn dropped(&mut self, now: Time, i: usize, table: Table, key: &str, ts: Timestamp) {
        self.figures.dropped += 1;
        if !self.shadows[i].drop_version(table, key, ts) {
            let msg = format!("n{i} dropped {ts:?} of {key:?}, which it did not hold");
            self.fail(ViolationKind::ReplicaMismatch, now, msg);
        }
    }

    /// Node `i`'s HLC reads `clock` now, when its own clock reads `local`.
    pub(crate) fn clock(&mut self, now: Time, i: usize, clock: Timestamp, local: Time) {
        let lead = clock.wall_ms.saturating_sub(local.0);
        self.figures.clock_lead_ms = self.figures.clock_lead_ms.max(lead);
        let r = reading(clock);
        if r < self.clocks[i] {
            let msg = format!(
                "n{i}'s clock went back from {:?} to {clock:?}",
                self.clocks[i]
            );
            self.fail(ViolationKind::ClockBackwards, now, msg);
        }
        self.clocks[i] = r;
    }

    /// Node `i`'s disk made its writes durable: they are acknowledged.
    pub(crate) fn acked(&mut self, writes: Vec<Change>) {
        for c in writes {
            self.figures.acked += 1;
            if self.acked.get(&c.key).is_none_or(|old| old.ts < c.ts) {
                self.acked.insert(c.key.clone(), c);
            }
        }
    }

    /// A node crashed before these writes were durable. One no other
    /// node held is gone for good: its timestamp may be issued again.
    pub(crate) fn torn(&mut self, torn: &[Change]) {
        self.figures.torn += torn.len() as u64;
        for c in torn {
            if self.stamps.get(&c.ts).is_some_and(|(_, reached)| !reached) {
                self.stamps.remove(&c.ts);
                self.made.remove(&(c.key.clone(), c.ts));
            }
        }
    }

    // ----- judgements -----

    /// Every running node marked in `dirty` holds the digest its reports add up to.
    pub(crate) fn shadows_match(&mut self, now: Time, nodes: &[Option<Node>], dirty: &[bool]) {
        for (i, node) in nodes.iter().enumerate() {
            let Some(node) = node.as_ref().filter(|_| dirty[i]) else {
                continue;
            };
            if node.state_digest() != self.shadows[i].digest() {
                let msg = format!(
                    "n{i}'s digest {:016x} is not that of the changes it reported ({:016x}): \
                     an event was lost or a change applied silently",
                    node.state_digest(),
                    self.shadows[i].digest()
                );
                self.fail(ViolationKind::ReplicaMismatch, now, msg);
            }
        }
    }

    /// Whether every running node holds the same state; if not, which differ.
    pub(crate) fn identical(&self, nodes: &[Option<Node>]) -> Result<(), String> {
        let mut first: Option<(usize, u64)> = None;
        for (i, node) in nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let d = node.state_digest();
            match first {
                None => first = Some((i, d)),
                Some((f, fd)) if fd != d => {
                    let size = |n: &Node| {
                        let (entries, tombstones, _) = n.state_size();
                        format!("{entries} entries, {tombstones} tombstones")
                    };
                    let a = nodes[f].as_ref().map(size).unwrap_or_default();
                    return Err(format!(
                        "n{f} ({a}) and n{i} ({}) hold different state{}",
                        size(node),
                        self.difference(f, i)
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The first key two shadows disagree on, for the message.
    fn difference(&self, a: usize, b: usize) -> String {
        let all: Vec<u16> = (0..BUCKETS as u16).collect();
        let ours: BTreeMap<String, Change> = self.shadows[a]
            .bucket_changes(&all)
            .into_iter()
            .map(|c| (c.key.clone(), c))
            .collect();
        let theirs: BTreeMap<String, Change> = self.shadows[b]
            .bucket_changes(&all)
            .into_iter()
            .map(|c| (c.key.clone(), c))
            .collect();
        let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        keys.into_iter()
            .find(|k| ours.get(*k).map(|c| c.ts) != theirs.get(*k).map(|c| c.ts))
            .map(|k| {
                format!(
                    "; first difference {k:?}: n{a} {:?}, n{b} {:?}",
                    ours.get(k).map(|c| (c.ts, c.value.is_some())),
                    theirs.get(k).map(|c| (c.ts, c.value.is_some()))
                )
            })
            .unwrap_or_default()
    }

    /// After convergence: every running node holds every acknowledged
    /// write or a later version, only versions someone wrote, no value
    /// older than a collected tombstone, and reads what its replica holds.
    pub(crate) fn final_check(&mut self, now: Time, nodes: &[Option<Node>]) {
        let all: Vec<u16> = (0..BUCKETS as u16).collect();
        for (i, node) in nodes.iter().enumerate() {
            let Some(node) = node else { continue };
            let shadow = &self.shadows[i];
            let mut problems: Vec<(ViolationKind, String)> = Vec::new();
            for (key, a) in &self.acked {
                let held = shadow.entry(Table::KV, key);
                let lost = match held {
                    Some(e) => e.ts < a.ts || (e.ts == a.ts && e.value != a.value),
                    // Absent: fine for a delete, or a value deleted later
                    // by a tombstone collected since.
                    None => a.value.is_some() && self.collected.get(key).is_none_or(|t| *t < a.ts),
                };
                if lost {
                    let msg = format!(
                        "n{i} holds {:?} of {key:?}, not acknowledged write {:?} (value: {}) by n{} or later",
                        held.map(|e| (e.ts, e.value.is_some())),
                        a.ts,
                        a.value.is_some(),
                        a.ts.node.as_u64().saturating_sub(1)
                    );
                    problems.push((ViolationKind::LostWrite, msg));
                }
            }
            // Only the workload's table has a ledger; the others are the core's own.
            for c in shadow
                .bucket_changes(&all)
                .into_iter()
                .filter(|c| c.table == Table::KV)
            {
                match self.made.get(&(c.key.clone(), c.ts)) {
                    Some(v) if *v == c.value => {}
                    _ => problems.push((
                        ViolationKind::ReplicaMismatch,
                        format!("n{i} holds {:?} of {:?}, which no one wrote", c.ts, c.key),
                    )),
                }
                if c.value.is_some()
                    && let Some(gone) = self.collected.get(&c.key).filter(|t| c.ts < **t)
                {
                    problems.push((
                        ViolationKind::Resurrected,
                        format!(
                            "n{i} holds value {:?} of {:?}, older than tombstone {gone:?} collected by a node",
                            c.ts, c.key
                        ),
                    ));
                }
                let read = node.get(Table::KV, &c.key).map(|e| e.ts);
                if read != c.value.as_ref().map(|_| c.ts) {
                    problems.push((
                        ViolationKind::ReplicaMismatch,
                        format!("n{i} reads {read:?} for {:?} but holds {:?}", c.key, c.ts),
                    ));
                }
            }
            for (kind, msg) in problems {
                self.fail(kind, now, msg);
            }
        }
    }

    /// The figures so far, propagation percentiles included.
    pub(crate) fn report(&self) -> StateReport {
        let mut r = self.figures.clone();
        let unfinished = self.tracked.len() as u64;
        r.propagation =
            Propagation::from_samples(&self.samples, r.propagation.abandoned + unfinished);
        r
    }
}

#[cfg(test)]
mod tests {
    use myco_proto::{ClusterKey, KeyRing, NodeId};

    use super::*;
    use crate::world::node_setup;

    fn ts(wall_ms: u64, node: u64) -> Timestamp {
        Timestamp {
            wall_ms,
            logical: 0,
            node: NodeId::from_u64(node),
        }
    }

    fn change(key: &str, ts: Timestamp, value: Option<&str>) -> Change {
        Change {
            table: Table::KV,
            key: key.into(),
            ts,
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn node(i: usize) -> Node {
        let keys = KeyRing::new(ClusterKey::from_bytes([1; 32]));
        Node::new(Time::ZERO, node_setup(i, 1, &keys, 7, &Default::default()))
    }

    fn kind(c: &mut StateChecks) -> Option<ViolationKind> {
        c.take_failure().map(|v| v.kind)
    }

    #[test]
    fn an_acknowledged_write_missing_on_a_node_is_lost_unless_replaced() {
        let (mut a, b) = (node(0), node(1));
        let mut c = StateChecks::new(2);
        let w = a
            .write(Time(100), Table::KV, "k", Some(b"v".to_vec()))
            .unwrap();
        c.wrote(Time(100), 0, &w, None);
        c.changed(Time(100), 0, &w);
        c.acked(vec![w.clone()]);
        let mut nodes = vec![Some(a), Some(b)];
        c.final_check(Time(200), &nodes);
        let v = c.take_failure().expect("n1 lacks it");
        assert_eq!(v.kind, ViolationKind::LostWrite);
        assert!(v.message.starts_with("n1 "), "{v}");
        assert!(c.identical(&nodes).is_err());

        // A later write by n1, never acknowledged, replaces it on n1.
        let later = nodes[1]
            .as_mut()
            .unwrap()
            .write(Time(300), Table::KV, "k", None)
            .unwrap();
        c.wrote(Time(300), 1, &later, None);
        c.changed(Time(300), 1, &later);
        c.final_check(Time(400), &nodes);
        assert_eq!(kind(&mut c), None);
    }

    #[test]
    fn a_value_older_than_a_tombstone_collected_there_is_a_resurrection() {
        let mut c = StateChecks::new(2);
        let old = change("k", ts(10, 1), Some("old"));
        let gone = change("k", ts(20, 2), None);
        for i in 0..2 {
            c.changed(Time(1), i, &old);
        }
        c.changed(Time(2), 0, &gone);
        c.collected(Time(3), 0, Table::KV, "k", gone.ts);
        assert_eq!(kind(&mut c), None);
        // n1 never saw the delete: holding the old value is only stale.
        c.changed(Time(4), 1, &old);
        assert_eq!(
            kind(&mut c),
            Some(ViolationKind::ReplicaMismatch),
            "stale report"
        );
        c.changed(Time(5), 0, &old);
        assert_eq!(kind(&mut c), Some(ViolationKind::Resurrected));
        // Collecting what a node does not hold is a report out of step.
        c.collected(Time(6), 1, Table::KV, "k", gone.ts);
        assert_eq!(kind(&mut c), Some(ViolationKind::ReplicaMismatch));
    }

    #[test]
    fn a_clock_never_goes_back_nor_restarts_behind_its_disk() {
        let mut c = StateChecks::new(1);
        c.clock(Time(1), 0, ts(10, 1), Time(10));
        c.clock(Time(2), 0, ts(10, 1), Time(11));
        assert_eq!(kind(&mut c), None);
        c.clock(Time(3), 0, ts(9, 1), Time(12));
        assert_eq!(kind(&mut c), Some(ViolationKind::ClockBackwards));
        c.started(Time(4), 0, &[change("k", ts(20, 2), None)], ts(5, 1));
        assert_eq!(kind(&mut c), Some(ViolationKind::ClockBackwards));
        c.started(Time(5), 0, &[change("k", ts(20, 2), None)], ts(20, 1));
        assert_eq!(kind(&mut c), None, "equal up to the writer's id");
        assert_eq!(c.report().clock_lead_ms, 0);
    }

    #[test]
    fn a_reused_timestamp_fails_and_one_behind_a_torn_write_is_counted() {
        let mut c = StateChecks::new(1);
        c.wrote(Time(1), 0, &change("a", ts(50, 1), Some("x")), None);
        c.wrote(Time(2), 0, &change("b", ts(40, 1), Some("y")), None);
        assert_eq!(kind(&mut c), None);
        assert_eq!(c.report().stamped_behind, 1);
        c.wrote(Time(3), 0, &change("c", ts(50, 1), Some("z")), None);
        assert_eq!(kind(&mut c), Some(ViolationKind::TimestampReused));
    }

    #[test]
    fn reusing_the_timestamp_of_a_torn_write_is_harmful_only_if_it_spread() {
        let mut c = StateChecks::new(2);
        // Torn before anyone else held it: forgotten, free to reissue.
        let lost = change("a", ts(50, 1), Some("x"));
        c.wrote(Time(1), 0, &lost, None);
        c.changed(Time(1), 0, &lost);
        c.torn(&[lost]);
        let again = change("a", ts(50, 1), Some("y"));
        c.wrote(Time(2), 0, &again, None);
        c.changed(Time(2), 0, &again);
        assert_eq!(kind(&mut c), None);
        assert_eq!(c.report().torn, 1);

        // Torn after n1 took it (it left the node before it was durable):
        // reissuing its timestamp puts two values under one.
        let spread = change("b", ts(60, 1), Some("x"));
        c.wrote(Time(3), 0, &spread, None);
        c.changed(Time(3), 0, &spread);
        c.changed(Time(4), 1, &spread);
        c.torn(&[spread]);
        c.wrote(Time(5), 0, &change("b", ts(60, 1), Some("y")), None);
        assert_eq!(kind(&mut c), Some(ViolationKind::TimestampReused));

        // Not torn (durable, acknowledged): reissuing it is always wrong.
        let kept = change("c", ts(70, 1), Some("x"));
        c.wrote(Time(6), 0, &kept, None);
        c.acked(vec![kept]);
        c.wrote(Time(7), 0, &change("d", ts(70, 1), None), None);
        assert_eq!(kind(&mut c), Some(ViolationKind::TimestampReused));
    }

    #[test]
    fn a_write_is_timed_until_every_running_node_holds_it_or_later() {
        let mut c = StateChecks::new(3);
        let w = change("k", ts(100, 1), Some("v"));
        c.wrote(Time(1000), 0, &w, Some(&[0, 1, 2]));
        c.changed(Time(1000), 0, &w);
        c.changed(Time(1010), 1, &w);
        assert_eq!(c.report().propagation.measured, 0);
        c.changed(Time(1030), 2, &change("k", ts(105, 3), None));
        let p = c.report().propagation;
        assert_eq!((p.measured, p.max), (1, Some(Duration::from_millis(30))));
        c.wrote(
            Time(2000),
            0,
            &change("k", ts(200, 1), Some("w")),
            Some(&[0, 1]),
        );
        c.interrupted();
        assert_eq!(c.report().propagation.abandoned, 1);
    }
}
