//! The node's view of the mesh: who is in it, in which state, and what each
//! member said about itself (its manifest).
//!
//! foca owns liveness (alive, suspect, down); this table adds what foca does
//! not keep: members that left on purpose, down members after foca reaps
//! them, manifests, and when each state began.
//!
//! Two indexes keep each tick's housekeeping proportional to the work it
//! does, not to the table: `wanted` holds the up members whose manifest is
//! missing or stale, by when to ask next, and `gone` the members down or
//! left, by when they went. Every change to a record goes through
//! [`MemberTable::reindex`], which keeps both in step with the record.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::time::Duration;

use myco_proto::frame::{Peer, Summary};
use myco_proto::{NodeId, NodeManifest};

use crate::time::Time;

/// A member's state as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Missed a probe; has until the suspicion timeout to refute.
    Suspect,
    /// Declared failed.
    Down,
    /// Left the mesh on purpose.
    Left,
}

impl MemberState {
    /// The lowercase name used by the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Left => "left",
        }
    }
}

/// One member as seen by this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Identity and address.
    pub peer: Peer,
    /// Current state.
    pub state: MemberState,
    /// When this node last saw the state change (down/left/up).
    pub since: Time,
    /// The member's manifest, once fetched.
    pub manifest: Option<NodeManifest>,
    /// Whether this is the node itself.
    pub is_self: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Liveness {
    Up,
    Down,
    Left,
}

#[derive(Clone, Debug)]
struct Record {
    peer: Peer,
    liveness: Liveness,
    since: Time,
    manifest: Option<NodeManifest>,
    manifest_asked: Option<Time>,
    /// This record's key in `MemberTable::wanted`, if there.
    wanted_at: Option<Time>,
    /// This record's key in `MemberTable::gone`, if there.
    gone_at: Option<Time>,
}

impl Record {
    /// When to ask for the manifest next, if it is wanted at all.
    fn manifest_due(&self, retry: Duration) -> Option<Time> {
        let stale = self
            .manifest
            .as_ref()
            .is_none_or(|m| m.boot < self.peer.boot);
        (self.liveness == Liveness::Up && stale)
            .then(|| self.manifest_asked.map_or(Time::ZERO, |t| t + retry))
    }
}

/// Most records one [`MemberTable::slice`] walks: the answer to a push
/// costs a bounded amount of work even when its range holds many down
/// members, which are walked but not sent.
pub(crate) const MAX_WALK: usize = 1024;

pub(crate) struct MemberTable {
    records: BTreeMap<NodeId, Record>,
    max: usize,
    /// How long before an unanswered manifest request is repeated.
    manifest_retry: Duration,
    /// Up members whose manifest is missing or stale, by when it is due.
    wanted: BTreeSet<(Time, NodeId)>,
    /// Members down or left, by when they went.
    gone: BTreeSet<(Time, NodeId)>,
}

/// What a change did to the table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Update {
    Unchanged,
    Changed,
    /// The table is full and the member was not added.
    Full,
}

impl MemberTable {
    pub(crate) fn new(max: usize, manifest_retry: Duration) -> Self {
        MemberTable {
            records: BTreeMap::new(),
            max,
            manifest_retry,
            wanted: BTreeSet::new(),
            gone: BTreeSet::new(),
        }
    }

    /// Brings the indexes in step with the record of `id` after a change.
    fn reindex(&mut self, id: NodeId) {
        let Some(rec) = self.records.get_mut(&id) else {
            return;
        };
        let wanted_at = rec.manifest_due(self.manifest_retry);
        if rec.wanted_at != wanted_at {
            if let Some(at) = rec.wanted_at {
                self.wanted.remove(&(at, id));
            }
            if let Some(at) = wanted_at {
                self.wanted.insert((at, id));
            }
            rec.wanted_at = wanted_at;
        }
        let gone_at = (rec.liveness != Liveness::Up).then_some(rec.since);
        if rec.gone_at != gone_at {
            if let Some(at) = rec.gone_at {
                self.gone.remove(&(at, id));
            }
            if let Some(at) = gone_at {
                self.gone.insert((at, id));
            }
            rec.gone_at = gone_at;
        }
    }

    pub(crate) fn up(&mut self, now: Time, peer: Peer) -> Update {
        if !self.records.contains_key(&peer.id) && self.records.len() >= self.max {
            return Update::Full;
        }
        let rec = self.records.entry(peer.id).or_insert(Record {
            peer,
            liveness: Liveness::Down,
            since: now,
            manifest: None,
            manifest_asked: None,
            wanted_at: None,
            gone_at: None,
        });
        if rec.peer.boot != peer.boot {
            // A new life: its manifest may differ.
            rec.manifest_asked = None;
        }
        let changed = rec.liveness != Liveness::Up || rec.peer != peer;
        if rec.liveness != Liveness::Up {
            rec.since = now;
        }
        rec.peer = peer;
        rec.liveness = Liveness::Up;
        self.reindex(peer.id);
        if changed {
            Update::Changed
        } else {
            Update::Unchanged
        }
    }

    /// Marks a member down unless it left on purpose or a newer life is known.
    pub(crate) fn down(&mut self, now: Time, peer: Peer) -> Update {
        match self.records.get_mut(&peer.id) {
            Some(rec) if rec.liveness == Liveness::Up && rec.peer <= peer => {
                rec.liveness = Liveness::Down;
                rec.since = now;
                self.reindex(peer.id);
                Update::Changed
            }
            _ => Update::Unchanged,
        }
    }

    pub(crate) fn left(&mut self, now: Time, peer: Peer) -> Update {
        match self.records.get_mut(&peer.id) {
            Some(rec)
                if rec.liveness != Liveness::Left
                    && (rec.peer.boot, rec.peer.bump) <= (peer.boot, peer.bump) =>
            {
                rec.liveness = Liveness::Left;
                rec.since = now;
                self.reindex(peer.id);
                Update::Changed
            }
            _ => Update::Unchanged,
        }
    }

    /// Stores a manifest if it is for the member's current (or a newer) life.
    pub(crate) fn set_manifest(&mut self, manifest: NodeManifest) -> Update {
        match self.records.get_mut(&manifest.id) {
            Some(rec)
                if manifest.boot >= rec.peer.boot && rec.manifest.as_ref() != Some(&manifest) =>
            {
                let id = manifest.id;
                rec.manifest = Some(manifest);
                self.reindex(id);
                Update::Changed
            }
            _ => Update::Unchanged,
        }
    }

    /// Up members whose manifest is missing or stale and not asked within
    /// the retry period, at most `limit`, longest waiting first; each is
    /// marked asked at `now`. Costs O(limit), not O(members).
    pub(crate) fn manifests_wanted(&mut self, now: Time, limit: usize) -> Vec<Peer> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(&(due, id)) = self.wanted.first() else {
                break;
            };
            if due > now {
                break;
            }
            let Some(rec) = self.records.get_mut(&id) else {
                // Unreachable: a record leaves the index before the table.
                self.wanted.remove(&(due, id));
                continue;
            };
            rec.manifest_asked = Some(now);
            out.push(rec.peer);
            self.reindex(id);
        }
        out
    }

    /// Forgets members down or left for longer than `after`. Costs
    /// O(forgotten), not O(members).
    pub(crate) fn forget(&mut self, now: Time, after: Duration) {
        while let Some(&(since, id)) = self.gone.first() {
            if now.since(since) < after {
                break;
            }
            self.gone.remove(&(since, id));
            if let Some(rec) = self.records.remove(&id)
                && let Some(at) = rec.wanted_at
            {
                self.wanted.remove(&(at, id));
            }
        }
    }

    /// Whether the table holds `peer`'s life or a newer one of its node,
    /// in any state.
    pub(crate) fn knows(&self, peer: &Peer) -> bool {
        self.records
            .get(&peer.id)
            .is_some_and(|r| (r.peer.boot, r.peer.bump) >= (peer.boot, peer.bump))
    }

    /// The first up member with an id at or after `id`, wrapping around.
    pub(crate) fn up_at_or_after(&self, id: NodeId) -> Option<Peer> {
        self.records
            .range(id..)
            .chain(self.records.range(..id))
            .map(|(_, r)| r)
            .find(|r| r.liveness == Liveness::Up)
            .map(|r| r.peer)
    }

    /// The up members with ids in `[from, to)`, `me` among them, in id
    /// order, less those `listed` in the same or a newer life, as many as
    /// encode in `budget` bytes. Also the first id left out, if the budget
    /// or the walk limit ran out before the range did.
    ///
    /// The walk visits at most [`MAX_WALK`] records, so a request costs a
    /// bounded amount of work whatever the table holds.
    pub(crate) fn slice(
        &self,
        me: Peer,
        from: NodeId,
        to: Option<NodeId>,
        listed: &[Peer],
        budget: usize,
    ) -> (Vec<Peer>, Option<NodeId>) {
        let listed: BTreeMap<NodeId, Peer> = listed.iter().map(|p| (p.id, *p)).collect();
        let in_range = |id: NodeId| id >= from && to.is_none_or(|t| id < t);
        if to.is_some_and(|t| t <= from) {
            return (Vec::new(), None);
        }
        let end = to.map_or(Bound::Unbounded, Bound::Excluded);
        let mut others = self
            .records
            .range((Bound::Included(from), end))
            .filter(|(id, _)| **id != me.id)
            .map(|(id, r)| (*id, (r.liveness == Liveness::Up).then_some(r.peer)))
            .peekable();
        let mut mine = in_range(me.id).then_some(me);
        let mut out = Vec::new();
        let mut used = 0;
        let mut walked = 0;
        loop {
            let next_other = others.peek().map(|(id, _)| *id);
            let next = match (mine, next_other) {
                (Some(m), o) if o.is_none_or(|o| m.id < o) => {
                    mine = None;
                    Some((m.id, Some(m)))
                }
                _ => others.next(),
            };
            let Some((id, peer)) = next else {
                return (out, None);
            };
            if walked >= MAX_WALK {
                return (out, Some(id));
            }
            walked += 1;
            let Some(peer) = peer else {
                continue;
            };
            if listed
                .get(&id)
                .is_some_and(|l| (l.boot, l.bump) >= (peer.boot, peer.bump))
            {
                continue;
            }
            let len = Summary::member_len(&peer);
            if used + len > budget {
                return (out, Some(id));
            }
            used += len;
            out.push(peer);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Members that are up, with their mesh addresses.
    pub(crate) fn live(&self) -> Vec<(NodeId, std::net::SocketAddr)> {
        self.records
            .values()
            .filter(|r| r.liveness == Liveness::Up)
            .map(|r| (r.peer.id, r.peer.addr))
            .collect()
    }

    /// Addresses of members seen down (not those that left), at most 16.
    pub(crate) fn down_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.records
            .values()
            .filter(|r| r.liveness == Liveness::Down)
            .map(|r| r.peer.addr)
            .take(16)
            .collect()
    }

    /// Members alive or suspect (not down, not left).
    pub(crate) fn up_ids(&self) -> std::collections::BTreeSet<NodeId> {
        self.records
            .values()
            .filter(|r| r.liveness == Liveness::Up)
            .map(|r| r.peer.id)
            .collect()
    }

    /// The mesh address of a member, if known.
    pub(crate) fn addr_of(&self, id: &NodeId) -> Option<std::net::SocketAddr> {
        self.records.get(id).map(|r| r.peer.addr)
    }

    pub(crate) fn is_up(&self, id: &NodeId) -> bool {
        self.records
            .get(id)
            .is_some_and(|r| r.liveness == Liveness::Up)
    }

    /// The view, with suspicion taken from foca's `suspects`.
    pub(crate) fn views<'a>(
        &'a self,
        suspects: &'a BTreeMap<NodeId, Peer>,
    ) -> impl Iterator<Item = MemberView> + 'a {
        self.records
            .values()
            .map(|r| r.view(suspects.get(&r.peer.id).copied()))
    }

    /// One member's view; `suspect` is the identity foca holds as suspect
    /// under its id, if any.
    pub(crate) fn view(&self, id: NodeId, suspect: Option<Peer>) -> Option<MemberView> {
        self.records.get(&id).map(|r| r.view(suspect))
    }
}

impl Record {
    /// Up is suspect only if foca suspects this very life of the member.
    fn view(&self, suspect: Option<Peer>) -> MemberView {
        MemberView {
            peer: self.peer,
            state: match self.liveness {
                Liveness::Up if suspect == Some(self.peer) => MemberState::Suspect,
                Liveness::Up => MemberState::Alive,
                Liveness::Down => MemberState::Down,
                Liveness::Left => MemberState::Left,
            },
            since: self.since,
            manifest: self.manifest.clone(),
            is_self: false,
        }
    }
}

#[cfg(test)]
mod tests;
