//! The node's view of the mesh: who is in it, in which state, and what each
//! member said about itself (its manifest).
//!
//! foca owns liveness (alive, suspect, down); this table adds what foca does
//! not keep: members that left on purpose, down members after foca reaps
//! them, manifests, and when each state began.

use std::collections::BTreeMap;
use std::time::Duration;

use myco_proto::frame::Peer;
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
}

pub(crate) struct MemberTable {
    records: BTreeMap<NodeId, Record>,
    max: usize,
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
    pub(crate) fn new(max: usize) -> Self {
        MemberTable {
            records: BTreeMap::new(),
            max,
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
                rec.manifest = Some(manifest);
                Update::Changed
            }
            _ => Update::Unchanged,
        }
    }

    /// Up members whose manifest is missing or stale, not asked since `retry`.
    pub(crate) fn manifests_wanted(
        &mut self,
        now: Time,
        retry: Duration,
        limit: usize,
    ) -> Vec<Peer> {
        let mut out = Vec::new();
        for rec in self.records.values_mut() {
            if out.len() >= limit {
                break;
            }
            let stale = rec.manifest.as_ref().is_none_or(|m| m.boot < rec.peer.boot);
            let due = rec.manifest_asked.is_none_or(|t| now.since(t) >= retry);
            if rec.liveness == Liveness::Up && stale && due {
                rec.manifest_asked = Some(now);
                out.push(rec.peer);
            }
        }
        out
    }

    /// Forgets members down or left for longer than `after`.
    pub(crate) fn forget(&mut self, now: Time, after: Duration) {
        self.records
            .retain(|_, r| r.liveness == Liveness::Up || now.since(r.since) < after);
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
mod tests {
    use super::*;

    fn peer(id: u64, boot: u64) -> Peer {
        Peer {
            id: NodeId::from_u64(id),
            addr: "127.0.0.1:1".parse().unwrap(),
            boot,
            bump: 0,
        }
    }

    fn state(t: &MemberTable, id: u64) -> MemberState {
        t.view(NodeId::from_u64(id), None).unwrap().state
    }

    #[test]
    fn left_survives_the_down_that_follows_it() {
        let mut t = MemberTable::new(10);
        t.up(Time(0), peer(1, 1));
        assert_eq!(t.left(Time(1), peer(1, 1)), Update::Changed);
        assert_eq!(t.down(Time(2), peer(1, 1)), Update::Unchanged);
        assert_eq!(state(&t, 1), MemberState::Left);
        t.up(Time(3), peer(1, 2));
        assert_eq!(state(&t, 1), MemberState::Alive);
    }

    #[test]
    fn a_down_for_an_older_life_does_not_touch_the_new_one() {
        let mut t = MemberTable::new(10);
        t.up(Time(0), peer(1, 2));
        assert_eq!(t.down(Time(1), peer(1, 1)), Update::Unchanged);
        assert_eq!(state(&t, 1), MemberState::Alive);
    }

    #[test]
    fn a_member_is_suspect_only_in_the_life_foca_suspects() {
        let mut t = MemberTable::new(10);
        t.up(Time(0), peer(1, 2));
        let id = NodeId::from_u64(1);
        assert_eq!(
            t.view(id, Some(peer(1, 1))).unwrap().state,
            MemberState::Alive
        );
        assert_eq!(
            t.view(id, Some(peer(1, 2))).unwrap().state,
            MemberState::Suspect
        );
        let suspects = BTreeMap::from([(id, peer(1, 2))]);
        let listed: Vec<MemberView> = t.views(&suspects).collect();
        assert_eq!(listed, vec![t.view(id, Some(peer(1, 2))).unwrap()]);
        assert_eq!(t.view(NodeId::from_u64(2), None), None);
    }

    #[test]
    fn table_is_bounded_and_forgets_old_downs() {
        let mut t = MemberTable::new(1);
        assert_eq!(t.up(Time(0), peer(1, 1)), Update::Changed);
        assert_eq!(t.up(Time(0), peer(2, 1)), Update::Full);
        t.down(Time(10), peer(1, 1));
        t.forget(Time(20), Duration::from_millis(100));
        assert_eq!(t.len(), 1);
        t.forget(Time(200), Duration::from_millis(100));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn manifests_are_asked_once_per_retry_and_only_while_stale() {
        let mut t = MemberTable::new(10);
        t.up(Time(0), peer(1, 1));
        let retry = Duration::from_secs(1);
        assert_eq!(t.manifests_wanted(Time(0), retry, 10).len(), 1);
        assert_eq!(t.manifests_wanted(Time(500), retry, 10).len(), 0);
        assert_eq!(t.manifests_wanted(Time(1000), retry, 10).len(), 1);
        let m = NodeManifest {
            format: 1,
            id: NodeId::from_u64(1),
            boot: 1,
            name: "a".into(),
            tags: Default::default(),
            capacity: Default::default(),
            mesh_addr: "127.0.0.1:1".parse().unwrap(),
            api_addr: None,
            edge_addr: None,
            version: "0".into(),
            key_id: "0".into(),
        };
        assert_eq!(t.set_manifest(m), Update::Changed);
        assert_eq!(t.manifests_wanted(Time(5000), retry, 10).len(), 0);
        t.up(Time(6000), peer(1, 2));
        assert_eq!(
            t.manifests_wanted(Time(6000), retry, 10).len(),
            1,
            "a restart makes it stale"
        );
    }
}
