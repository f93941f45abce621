//! [`Node`]: one member of the mesh as a state machine.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use foca::{Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Runtime};
use myco_proto::envelope::MAX_PLAINTEXT;
use myco_proto::frame::Peer;
use myco_proto::{Envelope, Frame, KeyRing, NodeId, NodeManifest};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::Config;
use crate::members::{MemberState, MemberTable, MemberView, Update};
use crate::replay::ReplayGuard;
use crate::replication::{Replication, WriteError};
use crate::state::replica::Entry;
use crate::stats::Stats;
use crate::time::Time;
use crate::timers::Timers;
use myco_proto::sync::StreamFrame;
use myco_proto::{Change, Table};

type Swim = Foca<Peer, PostcardCodec, StdRng, NoCustomBroadcast>;

/// Most join addresses a node keeps retrying.
const MAX_SEEDS: usize = 64;
/// Most events queued for the driver; older ones are dropped first.
const MAX_EVENTS: usize = 4096;
/// Manifest requests sent per housekeeping tick.
const MANIFESTS_PER_TICK: usize = 32;
/// How long before an unanswered manifest request is repeated.
const MANIFEST_RETRY: Duration = Duration::from_secs(2);
/// How often an isolated node says hello to its join addresses.
const HELLO_RETRY: Duration = Duration::from_secs(1);

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeSetup {
    /// Who the node is: id, advertised address and start epoch (`bump` 0).
    pub peer: Peer,
    /// What the node says about itself.
    pub manifest: NodeManifest,
    /// The cluster keys.
    pub keys: KeyRing,
    /// Seed for the node's random choices (SWIM's probe order and gossip targets).
    pub seed: u64,
    /// Tunables.
    pub config: Config,
}

/// A datagram the driver must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: SocketAddr,
    /// The sealed datagram.
    pub payload: Vec<u8>,
}

/// Something the driver may want to log or act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member joined or came back.
    MemberUp(Peer),
    /// A member was declared down.
    MemberDown(Peer),
    /// A member left on purpose.
    MemberLeft(Peer),
    /// A member's manifest arrived or changed.
    ManifestChanged(NodeId),
    /// This node has at least one live peer again.
    Connected,
    /// This node sees no live peer.
    Isolated,
    /// This node was declared down and rejoined under a renewed identity.
    Rejoined(Peer),
    /// Replicated state changed (a local write or one merged from a peer).
    StateChanged(Change),
}

enum Timer {
    Swim(foca::Timer<Peer>),
    Tick,
    /// Sends the changes gathered since the last flush.
    Flush,
    /// Starts an anti-entropy round if one is due.
    Sync,
}

/// Collects what foca asks for during one call; drained right after.
#[derive(Default)]
struct SwimOut {
    send: Vec<(Peer, Vec<u8>)>,
    timers: Vec<(Duration, foca::Timer<Peer>)>,
    notes: Vec<OwnedNotification<Peer>>,
}

impl Runtime<Peer> for SwimOut {
    fn notify(&mut self, notification: foca::Notification<'_, Peer>) {
        self.notes.push(notification.to_owned());
    }
    fn send_to(&mut self, to: Peer, data: &[u8]) {
        self.send.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, event: foca::Timer<Peer>, after: Duration) {
        self.timers.push((after, event));
    }
}

/// One Myco node's logic. See the crate docs for the contract.
pub struct Node {
    cfg: Config,
    keys: KeyRing,
    me: Peer,
    manifest: NodeManifest,
    swim: Swim,
    swim_size_bucket: u32,
    counter: u64,
    now: Time,
    timers: Timers<Timer>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    members: MemberTable,
    replay: ReplayGuard,
    seeds: BTreeMap<SocketAddr, Time>,
    /// When an isolated node next says hello to the members it saw go down.
    next_knock: Time,
    connected: bool,
    leaving: bool,
    stats: Stats,
    repl: Replication,
    rng: StdRng,
    flush_scheduled: bool,
    flush_except: Option<NodeId>,
    suspected_since: BTreeMap<NodeId, Time>,
}

impl Node {
    /// Creates a node at time `now`. It knows no one until [`Node::join`] or
    /// until another node announces itself to it.
    pub fn new(now: Time, setup: NodeSetup) -> Node {
        let NodeSetup {
            peer,
            manifest,
            keys,
            seed,
            config,
        } = setup;
        let swim = Foca::new(
            peer,
            config.foca(1),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
        );
        let repl = Replication::new(peer.id, &config, now);
        let mut timers = Timers::new();
        timers.insert(now + config.tick, Timer::Tick);
        timers.insert(repl.next_sync(), Timer::Sync);
        Node {
            members: MemberTable::new(config.max_members),
            replay: ReplayGuard::new(config.max_members),
            cfg: config,
            keys,
            me: peer,
            manifest,
            swim,
            swim_size_bucket: 0,
            counter: 0,
            now,
            timers,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            seeds: BTreeMap::new(),
            next_knock: now,
            connected: false,
            leaving: false,
            stats: Stats::default(),
            repl,
            // A separate stream, so replication choices do not shift SWIM's.
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed),
            flush_scheduled: false,
            flush_except: None,
            suspected_since: BTreeMap::new(),
        }
    }

    // ----- getters -----

    /// This node's current identity.
    pub fn identity(&self) -> Peer {
        self.me
    }

    /// This node's manifest.
    pub fn manifest(&self) -> &NodeManifest {
        &self.manifest
    }

    /// Traffic counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the node sees at least one live peer.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Every member this node knows, itself first, then by id.
    pub fn members(&self) -> Vec<MemberView> {
        let suspects: BTreeMap<NodeId, Peer> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| (m.id().id, *m.id()))
            .collect();
        let me = MemberView {
            peer: self.me,
            state: if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            since: Time::ZERO,
            manifest: Some(self.manifest.clone()),
            is_self: true,
        };
        std::iter::once(me)
            .chain(self.members.views(&suspects))
            .collect()
    }

    /// The live value of a key (tombstones read as absent).
    pub fn get(&self, table: Table, key: &str) -> Option<&Entry> {
        self.repl
            .replica
            .entry(table, key)
            .filter(|e| e.value.is_some())
    }

    /// Live values of a table under a key prefix, in key order.
    pub fn scan<'a>(
        &'a self,
        table: Table,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        self.repl.replica.scan(table, prefix)
    }

    /// A digest of the whole replica: equal on two nodes iff they converged.
    pub fn state_digest(&self) -> u64 {
        self.repl.replica.digest()
    }

    /// The collection horizon this node applied: tombstones stamped before
    /// `at` were collected on every node.
    pub fn horizon(&self) -> myco_proto::horizon::Horizon {
        self.repl.gc.applied
    }

    /// Entries held (tombstones included), tombstones, and bytes of keys and values.
    pub fn state_size(&self) -> (usize, usize, usize) {
        let r = &self.repl.replica;
        (r.len(), r.tombstone_count(), r.bytes())
    }

    /// The latest timestamp this node's clock issued or observed.
    pub fn clock(&self) -> myco_proto::Timestamp {
        self.repl.hlc.last()
    }

    // ----- inputs -----

    /// Feeds a datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Time, from: SocketAddr, datagram: &[u8]) {
        self.now = now;
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        let (header, plain) = match Envelope::open(&self.keys, datagram) {
            Ok(opened) => opened,
            Err(e) => return self.refuse(from, e.reason()),
        };
        if header.sender == self.me.id {
            return self.refuse(from, "from_self");
        }
        if !self
            .replay
            .accept(now, header.sender, header.epoch, header.counter)
        {
            return self.refuse(from, "replay");
        }
        let frame = match Frame::decode(&plain) {
            Ok(frame) => frame,
            Err(_) => return self.refuse(from, "undecodable"),
        };
        let claimed = match &frame {
            Frame::Hello(p) | Frame::HelloAck(p) | Frame::Leave(p) => Some(p.id),
            Frame::Manifest(m) => Some(m.id),
            Frame::Swim(_) | Frame::ManifestRequest => None,
        };
        if claimed.is_some_and(|id| id != header.sender) {
            return self.refuse(from, "spoofed");
        }
        *self.stats.frames_in.entry(frame.kind()).or_default() += 1;
        if self.leaving {
            return;
        }
        match frame {
            Frame::Swim(data) => {
                let mut out = SwimOut::default();
                if let Err(e) = self.swim.handle_data(&data, &mut out) {
                    tracing::debug!(node = %self.me.id, %from, error = %e, "swim refused a packet");
                    self.stats.drop("swim");
                }
                self.apply(out);
            }
            Frame::Hello(_) => self.send(from, &Frame::HelloAck(self.me)),
            Frame::HelloAck(peer) => {
                if !self.members.is_up(&peer.id) {
                    let mut out = SwimOut::default();
                    if let Err(e) = self.swim.announce(peer, &mut out) {
                        tracing::debug!(node = %self.me.id, error = %e, "announce failed");
                    }
                    self.apply(out);
                }
            }
            Frame::ManifestRequest => self.send(from, &Frame::Manifest(self.manifest.clone())),
            Frame::Manifest(m) => {
                if m.validate().is_err() {
                    return self.stats.drop("bad_manifest");
                }
                let id = m.id;
                if self.members.set_manifest(m) == Update::Changed {
                    self.event(Event::ManifestChanged(id));
                }
            }
            Frame::Leave(peer) => {
                if self.members.left(now, peer) == Update::Changed {
                    tracing::debug!(node = %self.me.id, member = %peer.id, "member left");
                    self.event(Event::MemberLeft(peer));
                }
            }
        }
    }

    /// Feeds a replication message received over the stream transport.
    pub fn handle_message(&mut self, now: Time, message: &[u8]) {
        self.now = now;
        let frame = match StreamFrame::decode(message) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(node = %self.me.id, error = %e, "stream message refused");
                return self.stats.drop("undecodable_message");
            }
        };
        let Some(reply_to) = self.members.addr_of(&frame.from) else {
            // Only members take part; a node not yet known retries later.
            return self.stats.drop("unknown_sender");
        };
        *self
            .stats
            .frames_in
            .entry(frame.message.kind())
            .or_default() += 1;
        self.repl.handle(
            &self.cfg,
            &mut self.stats,
            now,
            reply_to,
            frame.horizon,
            frame.message,
        );
        self.after_state_change(Some(frame.from));
    }

    /// Fires every timer due at `now`. Call it when [`Node::poll_timeout`] passes.
    pub fn handle_timeout(&mut self, now: Time) {
        self.now = now;
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Swim(t) => {
                    let mut out = SwimOut::default();
                    if let Err(e) = self.swim.handle_timer(t, &mut out) {
                        tracing::debug!(node = %self.me.id, error = %e, "swim timer failed");
                    }
                    self.apply(out);
                }
                Timer::Tick => {
                    self.tick();
                    self.timers.insert(now + self.cfg.tick, Timer::Tick);
                }
                Timer::Flush => {
                    self.flush_scheduled = false;
                    let live = self.members.live();
                    let except = self.flush_except.take();
                    self.repl
                        .flush(&self.cfg, &mut self.stats, &mut self.rng, &live, except);
                }
                Timer::Sync => {
                    // A round moved earlier leaves its old timer behind: it
                    // finds nothing due and does nothing.
                    let live = if self.leaving {
                        Vec::new()
                    } else {
                        self.members.live()
                    };
                    if self
                        .repl
                        .sync(&self.cfg, &mut self.stats, now, &mut self.rng, &live)
                    {
                        self.timers.insert(self.repl.next_sync(), Timer::Sync);
                    }
                }
            }
        }
    }

    // ----- commands -----

    /// Joins the mesh through a member at `addr` (its id need not be known).
    /// The address is kept and said hello to again whenever this node is
    /// isolated, so a restarted or partitioned node finds its way back.
    pub fn join(&mut self, now: Time, addr: SocketAddr) {
        self.now = now;
        if !self.seeds.contains_key(&addr) && self.seeds.len() >= MAX_SEEDS {
            // Forget the seed retried soonest-to-be; the newest wish wins.
            if let Some(first) = self.seeds.keys().next().copied() {
                self.seeds.remove(&first);
            }
        }
        self.seeds.insert(addr, now + HELLO_RETRY);
        self.send(addr, &Frame::Hello(self.me));
    }

    /// Replaces the cluster key ring (rotation). Datagrams are sealed with
    /// the new primary from now on and opened with any key of the new ring.
    pub fn set_keys(&mut self, keys: KeyRing) {
        self.manifest.key_id = keys.primary_id().to_string();
        self.keys = keys;
    }

    /// The id of the key this node seals with.
    pub fn key_id(&self) -> myco_proto::KeyId {
        self.keys.primary_id()
    }

    /// Leaves the mesh on purpose: tells every live member, then stops
    /// taking part. The driver should keep sending what is queued, then stop.
    pub fn leave(&mut self, now: Time) {
        self.now = now;
        if self.leaving {
            return;
        }
        // Durable writes still waiting for their push go now: after the
        // leave no one would hear of them until this node came back.
        let peers = self.members.live();
        self.repl
            .flush(&self.cfg, &mut self.stats, &mut self.rng, &peers, None);
        let live: Vec<Peer> = self
            .members()
            .into_iter()
            .filter(|m| !m.is_self && matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| m.peer)
            .collect();
        for peer in live {
            self.send(peer.addr, &Frame::Leave(self.me));
        }
        let mut out = SwimOut::default();
        if let Err(e) = self.swim.leave_cluster(&mut out) {
            tracing::debug!(node = %self.me.id, error = %e, "leave failed");
        }
        self.apply(out);
        self.leaving = true;
    }

    /// Writes (or, with `None`, deletes) a key. The change is applied at
    /// once (reads and [`Event::StateChanged`] see it) and returned; the
    /// driver must make it durable before acknowledging it to a client,
    /// then call [`Node::durable`]: only then does it leave this node.
    /// A write that left before it was durable could be torn by a crash
    /// while peers hold it, and the restarted node, whose clock resumes
    /// from its disk, could stamp another write with its very timestamp.
    pub fn write(
        &mut self,
        now: Time,
        table: Table,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<Change, WriteError> {
        self.now = now;
        let change = self.repl.write(&self.cfg, now, table, key, value)?;
        self.after_state_change(None);
        Ok(change)
    }

    /// Reports local writes (by the timestamps [`Node::write`] gave them)
    /// durable on this node's disk: they are pushed to peers with the next
    /// flush and offered to anti-entropy. Unknown timestamps are ignored.
    /// A write never reported stays unpushed; after a while anti-entropy
    /// may still spread it, so a failed persist cannot split replicas for
    /// good.
    pub fn durable(&mut self, now: Time, written: &[myco_proto::Timestamp]) {
        self.now = now;
        let mut released = false;
        for ts in written {
            released |= self.repl.durable(*ts);
        }
        if !released {
            return;
        }
        // Usually the write's own flush is still pending: the push waits
        // for it, as it would have without the wait for the disk.
        self.schedule_flush(None);
    }

    /// Loads state the driver kept on disk; call once, before any input.
    pub fn restore(&mut self, changes: Vec<Change>) {
        self.repl.restore(changes);
    }

    // ----- outputs -----

    /// The next replication message to send over the stream transport, to
    /// the member whose mesh address is `to`.
    pub fn poll_message(&mut self) -> Option<Transmit> {
        self.repl
            .poll_message()
            .map(|(to, payload)| Transmit { to, payload })
    }

    /// Changes merged from peers since the last call, for the driver to
    /// persist (in the background: they are not acknowledged to anyone).
    pub fn poll_persist(&mut self) -> Vec<Change> {
        self.repl.take_persist()
    }

    /// Tombstones collected since the last call, to remove from disk.
    pub fn poll_collected(&mut self) -> Vec<(Table, String, myco_proto::Timestamp)> {
        self.repl.take_collected()
    }

    /// Versions dropped since the last call because this node found itself
    /// behind a collection horizon it had no part in; it refills them from
    /// peers. Remove them from disk (only these versions).
    pub fn poll_dropped(&mut self) -> Vec<(Table, String, myco_proto::Timestamp)> {
        self.repl.take_dropped()
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.outbox.pop_front()?;
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += t.payload.len() as u64;
        Some(t)
    }

    /// When [`Node::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.timers.next_deadline()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- internals -----

    /// Schedules spreading of new changes and reports them as events.
    /// Changes gathered within `push_delay` go out as one push per peer, so
    /// a burst of writes costs a few messages, not a few per write.
    fn after_state_change(&mut self, from: Option<NodeId>) {
        let changed = self.repl.take_changed();
        if changed.is_empty() {
            return;
        }
        if let Some(at) = self.repl.touched(&self.cfg, self.now) {
            self.timers.insert(at, Timer::Sync);
        }
        self.schedule_flush(from);
        for change in changed {
            self.event(Event::StateChanged(change));
        }
    }

    /// Pushes what is queued `push_delay` from now, to everyone but `from`
    /// (the peer it came from), unless a flush is already due.
    fn schedule_flush(&mut self, from: Option<NodeId>) {
        if !self.flush_scheduled {
            self.flush_scheduled = true;
            self.flush_except = from;
            self.timers
                .insert(self.now + self.cfg.push_delay, Timer::Flush);
        } else if self.flush_except != from {
            // Changes from several sources share the flush: exclude no one.
            self.flush_except = None;
        }
    }

    fn refuse(&mut self, from: SocketAddr, reason: &'static str) {
        tracing::debug!(node = %self.me.id, %from, reason, "datagram refused");
        self.stats.drop(reason);
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn send(&mut self, to: SocketAddr, frame: &Frame) {
        let plain = frame.encode();
        if plain.len() > MAX_PLAINTEXT {
            // Frames are sized to fit by construction; count it rather than crash.
            return self.stats.drop("frame_too_large");
        }
        if self.outbox.len() >= self.cfg.max_outbox {
            return self.stats.drop("outbox_full");
        }
        self.counter += 1;
        let payload = Envelope::seal(&self.keys, self.me.id, self.me.boot, self.counter, &plain);
        self.outbox.push_back(Transmit { to, payload });
    }

    /// Turns what foca asked for into datagrams, timers, table changes and events.
    fn apply(&mut self, out: SwimOut) {
        for (peer, data) in out.send {
            // foca keeps this node's former identities as down members and
            // announces to them; that would be a datagram to ourselves.
            if peer.id == self.me.id {
                continue;
            }
            self.send(peer.addr, &Frame::Swim(data));
        }
        for (after, timer) in out.timers {
            self.timers.insert(self.now + after, Timer::Swim(timer));
        }
        let mut someone_up = false;
        let mut rejoined = false;
        for note in out.notes {
            match note {
                // foca also renames one down identity into another (even our
                // own former one): only an active member is up.
                OwnedNotification::Rename(_, peer)
                    if peer.id == self.me.id
                        || !self.swim.iter_members().any(|m| m.id() == &peer) => {}
                OwnedNotification::MemberUp(peer) | OwnedNotification::Rename(_, peer) => {
                    match self.members.up(self.now, peer) {
                        Update::Changed => {
                            tracing::debug!(node = %self.me.id, member = %peer.id, "member up");
                            someone_up = true;
                            self.event(Event::MemberUp(peer));
                        }
                        Update::Full => self.stats.drop("members_full"),
                        Update::Unchanged => {}
                    }
                }
                OwnedNotification::MemberDown(peer) => {
                    if self.members.down(self.now, peer) == Update::Changed {
                        tracing::debug!(node = %self.me.id, member = %peer.id, "member down");
                        self.event(Event::MemberDown(peer));
                    }
                }
                OwnedNotification::Active => {
                    self.connected = true;
                    self.event(Event::Connected);
                }
                OwnedNotification::Idle => {
                    self.connected = false;
                    self.event(Event::Isolated);
                }
                OwnedNotification::Rejoin(peer) => {
                    tracing::debug!(node = %self.me.id, bump = peer.bump, "rejoined after being declared down");
                    self.me = peer;
                    self.event(Event::Rejoined(peer));
                    // foca resets to disconnected on a rejoin, voiding its
                    // timers, without an Idle notice: make it re-evaluate,
                    // and say hello to the seeds until it is connected.
                    self.connected = false;
                    rejoined = true;
                }
                OwnedNotification::Defunct => {}
            }
        }
        if someone_up {
            self.request_manifests();
        }
        if rejoined {
            let mut again = SwimOut::default();
            if let Err(e) = self.swim.apply_many(std::iter::empty(), true, &mut again) {
                tracing::debug!(node = %self.me.id, error = %e, "reconnect after rejoin failed");
            }
            self.apply(again);
        }
    }

    fn request_manifests(&mut self) {
        for peer in self
            .members
            .manifests_wanted(self.now, MANIFEST_RETRY, MANIFESTS_PER_TICK)
        {
            self.send(peer.addr, &Frame::ManifestRequest);
        }
    }

    fn tick(&mut self) {
        if !self.connected && !self.leaving {
            let due: Vec<SocketAddr> = self
                .seeds
                .iter()
                .filter(|(_, at)| **at <= self.now)
                .map(|(a, _)| *a)
                .collect();
            for addr in due {
                self.seeds.insert(addr, self.now + HELLO_RETRY);
                self.send(addr, &Frame::Hello(self.me));
            }
            // foca stops announcing to down members once it has no live
            // one, so after a partition in which each side saw the other
            // down (and the seeds are gone) nobody would call first.
            // Knock on the lost members' doors at the same pace.
            if self.now >= self.next_knock {
                self.next_knock = self.now + HELLO_RETRY;
                for addr in self.members.down_addrs() {
                    self.send(addr, &Frame::Hello(self.me));
                }
            }
        }
        self.request_manifests();
        self.expire_stuck_suspects();
        self.members.forget(self.now, self.cfg.forget_after);
        if !self.leaving {
            let up = self.members.up_ids();
            self.repl.gc_tick(&self.cfg, self.now, &up);
            self.after_state_change(None);
        }
        self.resize_swim();
    }

    /// A rejoin resets foca and voids its suspect-to-down timers; a suspect
    /// that never hears of its suspicion then stays suspect forever. Do
    /// what the lost timer would have done, a little later than it would.
    fn expire_stuck_suspects(&mut self) {
        let limit = self.cfg.suspect_to_down_after * 3;
        let suspects: Vec<foca::Member<Peer>> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .cloned()
            .collect();
        self.suspected_since
            .retain(|id, _| suspects.iter().any(|m| m.id().id == *id));
        let mut expired = Vec::new();
        for m in suspects {
            let since = *self.suspected_since.entry(m.id().id).or_insert(self.now);
            if self.now.since(since) >= limit {
                expired.push(foca::Member::new(
                    *m.id(),
                    m.incarnation(),
                    foca::State::Down,
                ));
            }
        }
        if expired.is_empty() {
            return;
        }
        let mut out = SwimOut::default();
        if let Err(e) = self.swim.apply_many(expired.into_iter(), true, &mut out) {
            tracing::debug!(node = %self.me.id, error = %e, "expiring stuck suspects failed");
        }
        self.apply(out);
    }

    /// foca derives retransmissions and suspicion from the cluster size; keep
    /// them in step as the mesh grows, in powers of two to avoid churn.
    fn resize_swim(&mut self) {
        let bucket = (self.members.len() + 1).next_power_of_two() as u32;
        if bucket != self.swim_size_bucket {
            self.swim_size_bucket = bucket;
            if let Err(e) = self.swim.set_config(self.cfg.foca(bucket as usize)) {
                tracing::debug!(node = %self.me.id, error = %e, "swim config not updated");
            }
        }
    }
}
