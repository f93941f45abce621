//! Membership: who is in the mesh, in which state, and what each member
//! said about itself. Everything that travels as a datagram is here.
//!
//! - [`swim`]: foca (SWIM) fed the core's time, and what its outputs mean;
//! - [`members`]: the member table (what foca does not keep: left members,
//!   down members after foca reaps them, manifests);
//! - [`replay`]: the replay guard in front of every datagram;
//! - [`join`]: join addresses and the hellos of an isolated node;
//! - [`pushpull`]: slices of member lists exchanged with random members,
//!   so every pair meets within seconds of a join storm;
//! - [`datagrams`]: the key ring, sealing and the bounded outbox.
//!
//! [`Membership`] is driven like the node: `handle_*` with the time, then
//! the router drains [`Membership::take_timers`] (foca's timers, fired
//! back through [`Membership::handle_timer`]), [`Membership::poll_event`]
//! and [`Membership::poll_transmit`]. It shares nothing with replication
//! but the list of live members it answers with.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use foca::Foca;
use myco_proto::frame::Peer;
use myco_proto::{Frame, KeyId, KeyRing, NodeId, NodeManifest};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::Config;
use crate::node::{Event, MAX_EVENTS, Transmit};
use crate::stats::Stats;
use crate::time::Time;

mod datagrams;
mod join;
pub(crate) mod members;
mod pushpull;
mod replay;
mod swim;
#[cfg(test)]
mod tests;

use datagrams::Datagrams;
use join::Join;
pub use members::{MemberState, MemberView};
use members::{MemberTable, Update};
use pushpull::PushPull;
use replay::ReplayGuard;
pub(crate) use swim::SwimTimer;
use swim::{Swim, SwimOut};

/// Manifest requests sent per housekeeping tick.
const MANIFESTS_PER_TICK: usize = 32;
/// How long before an unanswered manifest request is repeated.
const MANIFEST_RETRY: Duration = Duration::from_secs(2);

/// One node's membership: SWIM, the member table, the replay guard, the
/// join addresses and the datagram edge.
pub(crate) struct Membership {
    cfg: Config,
    /// This node's current identity (its `bump` grows on a rejoin).
    me: Peer,
    manifest: NodeManifest,
    swim: Swim,
    /// The cluster size foca was last configured for, a power of two.
    swim_size_bucket: u32,
    datagrams: Datagrams,
    members: MemberTable,
    replay: ReplayGuard,
    join: Join,
    pushpull: PushPull,
    connected: bool,
    leaving: bool,
    /// When each member foca holds as suspect was first seen so.
    suspected_since: BTreeMap<NodeId, Time>,
    /// foca's timers, at absolute times, for the router to schedule.
    timers: Vec<(Time, SwimTimer)>,
    /// Events for the router, drained after every call.
    events: VecDeque<Event>,
}

impl Membership {
    /// A node's membership at `now`: it knows no one until it joins or
    /// another node announces itself to it. `seed` drives SWIM's random
    /// choices (probe order, gossip targets).
    pub(crate) fn new(
        now: Time,
        peer: Peer,
        manifest: NodeManifest,
        keys: KeyRing,
        seed: u64,
        config: &Config,
    ) -> Self {
        let swim = Foca::new(
            peer,
            config.foca(1),
            StdRng::seed_from_u64(seed),
            foca::PostcardCodec,
        );
        Membership {
            members: MemberTable::new(config.max_members, MANIFEST_RETRY),
            replay: ReplayGuard::new(config.max_members),
            datagrams: Datagrams::new(keys, config.max_outbox),
            cfg: config.clone(),
            me: peer,
            manifest,
            swim,
            swim_size_bucket: 0,
            join: Join::new(now),
            pushpull: PushPull::new(now, seed),
            connected: false,
            leaving: false,
            suspected_since: BTreeMap::new(),
            timers: Vec::new(),
            events: VecDeque::new(),
        }
    }

    // ----- getters -----

    pub(crate) fn identity(&self) -> Peer {
        self.me
    }

    pub(crate) fn manifest(&self) -> &NodeManifest {
        &self.manifest
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether this node left (or is leaving) the mesh on purpose.
    pub(crate) fn is_leaving(&self) -> bool {
        self.leaving
    }

    pub(crate) fn key_id(&self) -> KeyId {
        self.datagrams.primary_id()
    }

    /// Every member this node knows, itself first, then by id.
    pub(crate) fn members(&self) -> Vec<MemberView> {
        let suspects: BTreeMap<NodeId, Peer> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| (m.id().id, *m.id()))
            .collect();
        std::iter::once(self.self_view())
            .chain(self.members.views(&suspects))
            .collect()
    }

    /// One member as [`Membership::members`] would list it, without
    /// listing the others.
    pub(crate) fn member(&self, id: NodeId) -> Option<MemberView> {
        if id == self.me.id {
            return Some(self.self_view());
        }
        self.members.view(id, self.suspect_of(id))
    }

    fn self_view(&self) -> MemberView {
        MemberView {
            peer: self.me,
            state: if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            since: Time::ZERO,
            manifest: Some(self.manifest.clone()),
            is_self: true,
        }
    }

    /// Members that are up (alive or suspect), with their mesh addresses.
    pub(crate) fn live(&self) -> Vec<(NodeId, SocketAddr)> {
        self.members.live()
    }

    /// Ids of the members that are up (alive or suspect).
    pub(crate) fn up_ids(&self) -> BTreeSet<NodeId> {
        self.members.up_ids()
    }

    /// The mesh address of a known member.
    pub(crate) fn addr_of(&self, id: &NodeId) -> Option<SocketAddr> {
        self.members.addr_of(id)
    }

    // ----- inputs -----

    /// A datagram from `from`: opened, checked against replay and
    /// spoofing, then handed to SWIM or answered. Refusals are counted.
    pub(crate) fn handle_datagram(
        &mut self,
        now: Time,
        stats: &mut Stats,
        from: SocketAddr,
        datagram: &[u8],
    ) {
        let (header, plain) = match self.datagrams.open(datagram) {
            Ok(opened) => opened,
            Err(e) => return self.refuse(stats, from, e.reason()),
        };
        if header.sender == self.me.id {
            return self.refuse(stats, from, "from_self");
        }
        if !self
            .replay
            .accept(now, header.sender, header.epoch, header.counter)
        {
            return self.refuse(stats, from, "replay");
        }
        let frame = match Frame::decode(&plain) {
            Ok(frame) => frame,
            Err(_) => return self.refuse(stats, from, "undecodable"),
        };
        let claimed = match &frame {
            Frame::Hello(p) | Frame::HelloAck(p) | Frame::Leave(p) => Some(p.id),
            Frame::Manifest(m) => Some(m.id),
            Frame::Swim(_) | Frame::ManifestRequest | Frame::Summary(_) => None,
        };
        if claimed.is_some_and(|id| id != header.sender) {
            return self.refuse(stats, from, "spoofed");
        }
        *stats.frames_in.entry(frame.kind()).or_default() += 1;
        if self.leaving {
            return;
        }
        match frame {
            Frame::Swim(data) => {
                let mut out = SwimOut::default();
                if let Err(e) = self.swim.handle_data(&data, &mut out) {
                    tracing::debug!(node = %self.me.id, %from, error = %e, "swim refused a packet");
                    stats.drop("swim");
                }
                self.apply(now, stats, out);
            }
            Frame::Hello(_) => self.send(stats, from, &Frame::HelloAck(self.me)),
            Frame::HelloAck(peer) => {
                if !self.members.is_up(&peer.id) {
                    let mut out = SwimOut::default();
                    if let Err(e) = self.swim.announce(peer, &mut out) {
                        tracing::debug!(node = %self.me.id, error = %e, "announce failed");
                    }
                    self.apply(now, stats, out);
                }
            }
            Frame::ManifestRequest => {
                let manifest = Frame::Manifest(self.manifest.clone());
                self.send(stats, from, &manifest);
            }
            Frame::Manifest(m) => {
                if m.validate().is_err() {
                    return stats.drop("bad_manifest");
                }
                let id = m.id;
                let apart = self.manifest.speaks.incompatible_with(&m.speaks);
                let (name, theirs) = (m.name.clone(), apart.map(|f| m.speaks.range(f)));
                if self.members.set_manifest(m) == Update::Changed {
                    if let (Some(family), Some(theirs)) = (apart, theirs) {
                        let ours = self.manifest.speaks.range(family);
                        tracing::warn!(
                            node = %self.me.id, member = %id, family = family.name(),
                            "{name} is more than one release apart from this node ({} versions {theirs} against {ours}): upgrade the older one",
                            family.name()
                        );
                    }
                    self.event(Event::ManifestChanged(id));
                }
            }
            Frame::Summary(summary) => self.handle_summary(now, stats, from, summary),
            Frame::Leave(peer) => {
                if self.members.left(now, peer) == Update::Changed {
                    self.pushpull.changed(now);
                    tracing::debug!(node = %self.me.id, member = %peer.id, "member left");
                    self.event(Event::MemberLeft(peer));
                }
            }
        }
    }

    /// Fires a timer foca asked for (see [`Membership::take_timers`]).
    pub(crate) fn handle_timer(&mut self, now: Time, stats: &mut Stats, timer: SwimTimer) {
        let mut out = SwimOut::default();
        if let Err(e) = self.swim.handle_timer(timer, &mut out) {
            tracing::debug!(node = %self.me.id, error = %e, "swim timer failed");
        }
        self.apply(now, stats, out);
    }

    /// Housekeeping, every `tick`: hellos while isolated, manifest
    /// requests, member list pushes, stuck suspects, forgetting, foca's size.
    pub(crate) fn tick(&mut self, now: Time, stats: &mut Stats) {
        if !self.connected && !self.leaving {
            for addr in self.join.due(now) {
                self.send(stats, addr, &Frame::Hello(self.me));
            }
            // Knock on the lost members' doors at the same pace (see
            // `Join::knock_due` for why).
            if self.join.knock_due(now) {
                for addr in self.members.down_addrs() {
                    self.send(stats, addr, &Frame::Hello(self.me));
                }
            }
        }
        self.request_manifests(now, stats);
        if !self.leaving {
            self.push_members(now, stats);
        }
        self.expire_stuck_suspects(now, stats);
        self.members.forget(now, self.cfg.forget_after);
        self.resize_swim();
    }

    // ----- commands -----

    /// Joins through a member at `addr` (its id need not be known), and
    /// keeps the address to say hello to again whenever isolated.
    pub(crate) fn join(&mut self, now: Time, stats: &mut Stats, addr: SocketAddr) {
        self.join.add(now, addr);
        self.send(stats, addr, &Frame::Hello(self.me));
    }

    /// Tells every live member this node leaves, then stops taking part.
    pub(crate) fn leave(&mut self, now: Time, stats: &mut Stats) {
        if self.leaving {
            return;
        }
        for (_, addr) in self.members.live() {
            self.send(stats, addr, &Frame::Leave(self.me));
        }
        let mut out = SwimOut::default();
        if let Err(e) = self.swim.leave_cluster(&mut out) {
            tracing::debug!(node = %self.me.id, error = %e, "leave failed");
        }
        self.apply(now, stats, out);
        self.leaving = true;
    }

    /// Replaces the key ring: seal with its primary, open with any key.
    pub(crate) fn set_keys(&mut self, keys: KeyRing) {
        self.manifest.key_id = keys.primary_id().to_string();
        self.datagrams.set_keys(keys);
    }

    // ----- outputs -----

    /// The next datagram to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.datagrams.pop()
    }

    /// foca's timers asked for since the last call, in order, at the
    /// times they are due.
    pub(crate) fn take_timers(&mut self) -> Vec<(Time, SwimTimer)> {
        std::mem::take(&mut self.timers)
    }

    /// The next event, oldest first.
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- internals -----

    fn send(&mut self, stats: &mut Stats, to: SocketAddr, frame: &Frame) {
        self.datagrams.send(stats, &self.me, to, frame);
    }

    fn refuse(&self, stats: &mut Stats, from: SocketAddr, reason: &'static str) {
        tracing::debug!(node = %self.me.id, %from, reason, "datagram refused");
        stats.drop(reason);
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn request_manifests(&mut self, now: Time, stats: &mut Stats) {
        for peer in self.members.manifests_wanted(now, MANIFESTS_PER_TICK) {
            self.send(stats, peer.addr, &Frame::ManifestRequest);
        }
    }
}
