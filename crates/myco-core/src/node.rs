//! [`Node`]: one member of the mesh as a state machine.
//!
//! The node is a router: it holds the parts ([`Membership`],
//! [`Replication`]; placement next) and what they share (the time, one
//! timer queue, the event queue, the counters), and routes each input to
//! the part it is for. It holds none of their state itself.

use std::collections::VecDeque;
use std::net::SocketAddr;

use myco_proto::frame::Peer;
use myco_proto::sync::StreamFrame;
use myco_proto::{Change, KeyRing, NodeId, NodeManifest, Table};

use crate::config::Config;
use crate::membership::{MemberView, Membership, SwimTimer};
use crate::replication::{Replication, WriteError};
use crate::state::replica::Entry;
use crate::stats::Stats;
use crate::time::Time;
use crate::timers::Timers;

/// Most events queued for the driver; older ones are dropped first.
pub(crate) const MAX_EVENTS: usize = 4096;

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
    /// A timer SWIM asked for.
    Swim(SwimTimer),
    /// Housekeeping of every part.
    Tick,
    /// Sends the changes gathered since the last flush.
    Flush,
    /// Starts an anti-entropy round if one is due.
    Sync,
}

/// One Myco node's logic. See the crate docs for the contract.
pub struct Node {
    cfg: Config,
    now: Time,
    /// One queue for every part's timers: timers due at the same time fire
    /// in the order they were set, whichever part set them.
    timers: Timers<Timer>,
    events: VecDeque<Event>,
    stats: Stats,
    membership: Membership,
    repl: Replication,
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
        let membership = Membership::new(now, peer, manifest, keys, seed, &config);
        let repl = Replication::new(peer.id, &config, now, seed);
        let mut timers = Timers::new();
        timers.insert(now + config.tick, Timer::Tick);
        timers.insert(repl.next_sync(), Timer::Sync);
        Node {
            cfg: config,
            now,
            timers,
            events: VecDeque::new(),
            stats: Stats::default(),
            membership,
            repl,
        }
    }

    // ----- getters -----

    /// This node's current identity.
    pub fn identity(&self) -> Peer {
        self.membership.identity()
    }

    /// This node's manifest.
    pub fn manifest(&self) -> &NodeManifest {
        self.membership.manifest()
    }

    /// Traffic counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the node sees at least one live peer.
    pub fn is_connected(&self) -> bool {
        self.membership.is_connected()
    }

    /// Every member this node knows, itself first, then by id.
    pub fn members(&self) -> Vec<MemberView> {
        self.membership.members()
    }

    /// One member (or this node itself) as [`Node::members`] lists it,
    /// looked up by id without listing the others.
    pub fn member(&self, id: NodeId) -> Option<MemberView> {
        self.membership.member(id)
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

    /// The id of the key this node seals with.
    pub fn key_id(&self) -> myco_proto::KeyId {
        self.membership.key_id()
    }

    // ----- inputs -----

    /// Feeds a datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Time, from: SocketAddr, datagram: &[u8]) {
        self.now = now;
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        self.membership
            .handle_datagram(now, &mut self.stats, from, datagram);
        self.route_membership();
    }

    /// Feeds a replication message received over the stream transport.
    pub fn handle_message(&mut self, now: Time, message: &[u8]) {
        self.now = now;
        let frame = match StreamFrame::decode(message) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(node = %self.identity().id, error = %e, "stream message refused");
                return self.stats.drop("undecodable_message");
            }
        };
        let Some(reply_to) = self.membership.addr_of(&frame.from) else {
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
                    self.membership.handle_timer(now, &mut self.stats, t);
                    self.route_membership();
                }
                Timer::Tick => {
                    self.tick();
                    self.timers.insert(now + self.cfg.tick, Timer::Tick);
                }
                Timer::Flush => {
                    let live = self.membership.live();
                    self.repl.flush_due(&self.cfg, &mut self.stats, &live);
                }
                Timer::Sync => {
                    // A round moved earlier leaves its old timer behind: it
                    // finds nothing due and does nothing.
                    let live = if self.membership.is_leaving() {
                        Vec::new()
                    } else {
                        self.membership.live()
                    };
                    if self.repl.sync(&self.cfg, &mut self.stats, now, &live) {
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
        self.membership.join(now, &mut self.stats, addr);
        self.route_membership();
    }

    /// Replaces the cluster key ring (rotation). Datagrams are sealed with
    /// the new primary from now on and opened with any key of the new ring.
    pub fn set_keys(&mut self, keys: KeyRing) {
        self.membership.set_keys(keys);
    }

    /// Leaves the mesh on purpose: tells every live member, then stops
    /// taking part. The driver should keep sending what is queued, then stop.
    pub fn leave(&mut self, now: Time) {
        self.now = now;
        if self.membership.is_leaving() {
            return;
        }
        // Durable writes still waiting for their push go now: after the
        // leave no one would hear of them until this node came back.
        let peers = self.membership.live();
        self.repl.flush(&self.cfg, &mut self.stats, &peers, None);
        self.membership.leave(now, &mut self.stats);
        self.route_membership();
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
        let t = self.membership.poll_transmit()?;
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

    /// Moves what membership asked for during the last call into the
    /// shared timer and event queues, in the order it asked.
    fn route_membership(&mut self) {
        for (at, timer) in self.membership.take_timers() {
            self.timers.insert(at, Timer::Swim(timer));
        }
        while let Some(event) = self.membership.poll_event() {
            self.event(event);
        }
    }

    /// Housekeeping: membership's, then tombstone collection among the
    /// members membership sees up.
    fn tick(&mut self) {
        self.membership.tick(self.now, &mut self.stats);
        self.route_membership();
        if !self.membership.is_leaving() {
            let up = self.membership.up_ids();
            self.repl.gc_tick(&self.cfg, self.now, &up);
            self.after_state_change(None);
        }
    }

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

    fn schedule_flush(&mut self, from: Option<NodeId>) {
        if let Some(at) = self.repl.schedule_flush(&self.cfg, self.now, from) {
            self.timers.insert(at, Timer::Flush);
        }
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}
