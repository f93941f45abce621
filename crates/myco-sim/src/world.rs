//! The simulated world: real [`Node`]s on a virtual clock and network.
//!
//! One queue of timed actions (a datagram or stream message arriving, a
//! node's timer firing, a node's first start, a write) is drained in (time,
//! insertion) order, so a run is a pure function of its seed. After every
//! call into a node, everything it wants done is pulled out at once:
//! datagrams and messages go to the network, changes to its disk, events
//! to the checkers, and its next deadline into the queue.
//!
//! Each node sees its own clock: virtual time plus a Unix-like origin plus
//! its skew. Deadlines it asks for are turned back into virtual time.
//!
//! Why one file of this length: it is the one event loop of the world,
//! and each arm is short; what is not the loop (the network, the disk,
//! the checkers, the workload) already lives in its own module.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use myco_core::{Config, Event, Node, NodeSetup, Time, Transmit};
use myco_proto::frame::{Capacity, Peer};
use myco_proto::{Change, ClusterKey, KeyRing, NodeId, NodeManifest, Table};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};

use crate::check::{Checks, ViolationKind};
use crate::config::{SimConfig, Workload};
use crate::disk::Disk;
use crate::net::{Fate, Net};
use crate::queue::{Action, Queue};
use crate::report::{Digest, Traffic};
use crate::state_check::StateChecks;
use crate::workload;

/// The port every simulated node listens on.
const PORT: u16 = 7946;
/// Keeps the world's random stream apart from the one that picked the settings.
const WORLD_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
/// Keeps the state stream (writes, stream messages) apart from the
/// membership one, so state never shifts membership's random choices.
const STATE_SALT: u64 = 0x5157_a7e5_0f5e_ed01;
/// Random live nodes a restarting node joins through, besides node 0.
const RESTART_SEEDS: usize = 2;
/// Virtual time 0 on the nodes' clocks: 2023-11-14 in Unix ms, so hybrid
/// timestamps look like the agent's and a negative skew cannot underflow.
const CLOCK_ORIGIN_MS: i64 = 1_700_000_000_000;

/// The address of node `i`: `10.x.y.z:7946`, from `i + 1`.
pub(crate) fn addr_of(i: usize) -> SocketAddr {
    let n = i as u32 + 1;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8)),
        PORT,
    )
}

/// The id of node `i`: `i + 1`, as in [`addr_of`].
pub(crate) fn id_of(i: usize) -> NodeId {
    NodeId::from_u64(i as u64 + 1)
}

/// The node at `addr`, the inverse of [`addr_of`].
fn index_of_addr(addr: SocketAddr, nodes: usize) -> Option<usize> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    let [ten, a, b, c] = v4.ip().octets();
    let n = (usize::from(a) << 16) | (usize::from(b) << 8) | usize::from(c);
    (ten == 10 && v4.port() == PORT && (1..=nodes).contains(&n)).then(|| n - 1)
}

/// The truth about one node that the checkers judge against.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Life {
    pub(crate) running: bool,
    /// The boot of the current life, or of the last one if stopped; 0 before the first start.
    pub(crate) boot: u64,
}

pub(crate) struct World {
    pub(crate) now: Time,
    pub(crate) rng: StdRng,
    /// Draws for state only: writes, stream message fates, torn-write victims.
    pub(crate) state_rng: StdRng,
    pub(crate) nodes: Vec<Option<Node>>,
    pub(crate) lives: Vec<Life>,
    /// The one wake-up each node has in the queue, as (time, token); older
    /// tokens in the queue are stale and skipped.
    wakes: Vec<Option<(Time, u64)>>,
    tokens: u64,
    queue: Queue,
    pub(crate) net: Net,
    pub(crate) traffic: Traffic,
    /// Stream message counts.
    pub(crate) messages: Traffic,
    digest: Digest,
    pub(crate) checks: Checks,
    pub(crate) state: StateChecks,
    /// Datagrams refused by nodes, summed over every life.
    pub(crate) refused: BTreeMap<&'static str, u64>,
    pub(crate) restarts: u64,
    keys: KeyRing,
    core: Config,
    skew: Vec<i64>,
    drift: Vec<i64>,
    disks: Vec<Disk>,
    /// How long after a local write its node's disk commits it.
    fsync: std::time::Duration,
    workload: Option<Workload>,
    /// When the next write is due, while writes are on.
    next_write: Option<Time>,
    writes: u64,
    /// Whether writes made in a calm stretch are timed (safety phase).
    pub(crate) time_writes: bool,
    /// Nodes that took input since their replica was last compared with
    /// their reports; the others cannot have changed.
    dirty: Vec<bool>,
    transmits: Vec<Transmit>,
    outgoing: Vec<Transmit>,
    events: Vec<Event>,
    /// The node whose events are written to stderr, if any.
    traced: Option<usize>,
    /// Tags and capacity node `i`'s manifest says (the jobs simulation
    /// sets them); nodes beyond the list have none and the default size.
    pub(crate) shapes: Vec<(BTreeMap<String, String>, Capacity)>,
}

impl World {
    pub(crate) fn new(cfg: &SimConfig) -> World {
        let n = cfg.nodes;
        World {
            now: Time::ZERO,
            rng: StdRng::seed_from_u64(cfg.seed ^ WORLD_SALT),
            state_rng: StdRng::seed_from_u64(cfg.seed ^ STATE_SALT),
            nodes: (0..n).map(|_| None).collect(),
            lives: vec![Life::default(); n],
            wakes: vec![None; n],
            tokens: 0,
            queue: Queue::default(),
            net: Net::new(&cfg.net),
            traffic: Traffic::default(),
            messages: Traffic::default(),
            digest: Digest::new(),
            checks: Checks::new(n, cfg.detection_budget()),
            state: StateChecks::new(n),
            refused: BTreeMap::new(),
            restarts: 0,
            keys: KeyRing::new(ClusterKey::from_bytes([0x5a; 32])),
            core: cfg.core.clone(),
            skew: (0..n).map(|i| cfg.skew(i)).collect(),
            drift: (0..n).map(|i| cfg.drift(i)).collect(),
            disks: (0..n).map(|_| Disk::default()).collect(),
            fsync: cfg.fsync,
            workload: cfg.workload.clone(),
            next_write: None,
            writes: 0,
            time_writes: false,
            dirty: vec![false; n],
            transmits: Vec::new(),
            outgoing: Vec::new(),
            events: Vec::new(),
            traced: cfg.trace,
            shapes: Vec::new(),
        }
    }

    /// Writes a line to stderr, stamped with the virtual time, if tracing.
    pub(crate) fn trace(&self, what: fmt::Arguments<'_>) {
        if self.traced.is_some() {
            eprintln!("{:?} {what}", self.now);
        }
    }

    /// Node `i`'s clock reading at virtual time `at`.
    pub(crate) fn local(&self, i: usize, at: Time) -> Time {
        let v = at.0 as i64;
        let drifted = v + v * self.drift[i] / 1_000_000;
        Time((drifted + CLOCK_ORIGIN_MS + self.skew[i]) as u64)
    }

    /// The virtual time at which node `i`'s clock reads `t` (the first
    /// such millisecond, so a node never wakes before its deadline).
    fn global(&self, i: usize, t: Time) -> Time {
        let d = (t.0 as i64 - CLOCK_ORIGIN_MS - self.skew[i]).max(0);
        let rate = 1_000_000 + self.drift[i];
        let mut at = Time((d * 1_000_000 / rate).max(0) as u64);
        while self.local(i, at) < t {
            at = Time(at.0 + 1);
        }
        at
    }

    /// Node 0 starts at once; every other node starts within `spread_ms` and
    /// joins through node 0.
    pub(crate) fn schedule_first_starts(&mut self, spread_ms: u64) {
        for node in 0..self.nodes.len() {
            let at = if node == 0 {
                0
            } else {
                self.rng.random_range(0..=spread_ms)
            };
            self.queue.push(Time(at), Action::Start { node });
        }
    }

    /// Turns the workload on or off (it runs during formation and safety).
    pub(crate) fn set_writing(&mut self, on: bool) {
        self.next_write = match (&self.workload, on) {
            (Some(w), true) => Some(self.now + ms(workload::gap_ms(&mut self.state_rng, w))),
            _ => None,
        };
    }

    /// One simulation step: the disks commit what the last step left
    /// pending (a crash decided before this call tore it), the step's writes
    /// are scheduled, and everything due until `until` happens.
    pub(crate) fn step(&mut self, until: Time) {
        self.commit();
        while let (Some(at), Some(w)) = (self.next_write, &self.workload) {
            if at >= until {
                break;
            }
            let gap = workload::gap_ms(&mut self.state_rng, w);
            self.queue.push(at, Action::Write);
            self.next_write = Some(at + ms(gap));
        }
        self.run_until(until);
        self.compare_replicas();
    }

    /// Makes every running node's pending writes durable, acknowledging its
    /// local ones.
    fn commit(&mut self) {
        for i in 0..self.nodes.len() {
            self.commit_node(i);
        }
    }

    /// Makes running node `i`'s pending writes durable: its local ones are
    /// acknowledged, and the node is told, so it may send them to peers.
    fn commit_node(&mut self, i: usize) {
        if self.nodes[i].is_none() {
            return;
        }
        let acked = self.disks[i].commit();
        if acked.is_empty() {
            return;
        }
        let written: Vec<myco_proto::Timestamp> = acked.iter().map(|c| c.ts).collect();
        self.state.acked(acked);
        let local = self.local(i, self.now);
        if let Some(node) = self.nodes[i].as_mut() {
            node.durable(local, &written);
        }
        self.flush(i);
    }

    /// Checks the replicas of the nodes that took input this step against
    /// what they reported (an idle node cannot have changed).
    fn compare_replicas(&mut self) {
        if self.dirty.iter().any(|d| *d) {
            self.state.shadows_match(self.now, &self.nodes, &self.dirty);
            self.dirty.fill(false);
        }
    }

    /// Runs every action due up to and including `until`, then sets the clock there.
    fn run_until(&mut self, until: Time) {
        while let Some((at, action)) = self.queue.pop_due(until) {
            self.now = at;
            match action {
                Action::Deliver { from, to, payload } => self.deliver(from, to, &payload),
                Action::Message {
                    from,
                    to,
                    boot,
                    payload,
                } => self.deliver_message(from, to, boot, &payload),
                Action::Wake { node, token } => {
                    if self.wakes[node].is_some_and(|(_, t)| t == token) {
                        self.wakes[node] = None;
                        let local = self.local(node, at);
                        if let Some(n) = self.nodes[node].as_mut() {
                            n.handle_timeout(local);
                        }
                        self.flush(node);
                    }
                }
                Action::Start { node } => {
                    let seeds: &[usize] = if node == 0 { &[] } else { &[0] };
                    self.start(node, seeds);
                }
                Action::Write => self.write(),
                Action::Commit { node, boot } => {
                    if self.lives[node].boot == boot {
                        self.commit_node(node);
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    fn deliver(&mut self, from: usize, to: usize, payload: &[u8]) {
        let local = self.local(to, self.now);
        let Some(node) = self.nodes[to].as_mut() else {
            self.traffic.to_stopped += 1;
            return;
        };
        node.handle_datagram(local, addr_of(from), payload);
        self.traffic.delivered += 1;
        self.digest.add(self.now.0);
        self.digest.add(((from as u64) << 32) | to as u64);
        self.digest.add(payload.len() as u64);
        self.flush(to);
    }

    fn deliver_message(&mut self, from: usize, to: usize, boot: u64, payload: &[u8]) {
        let local = self.local(to, self.now);
        let Some(node) = self.nodes[to]
            .as_mut()
            .filter(|_| self.lives[to].boot == boot)
        else {
            self.messages.to_stopped += 1;
            return;
        };
        node.handle_message(local, payload);
        self.messages.delivered += 1;
        self.dirty[to] = true;
        self.digest.add(self.now.0);
        // The top bit tells messages from datagrams apart.
        self.digest
            .add((1 << 63) | ((from as u64) << 32) | to as u64);
        self.digest.add(payload.len() as u64);
        self.flush(to);
    }

    /// A write by a random running node, made durable `fsync` later.
    fn write(&mut self) {
        let Some(w) = &self.workload else { return };
        let running: Vec<usize> = self.running().collect();
        self.writes += 1;
        let Some(write) = workload::draw(&mut self.state_rng, w, &running, self.writes) else {
            return;
        };
        self.local_write(write.node, Table::KV, &write.key, write.value);
    }

    /// A write by running node `i`, made durable `fsync` later (the
    /// workload's, or the jobs simulation's instance records and jobs).
    pub(crate) fn local_write(
        &mut self,
        i: usize,
        table: Table,
        key: &str,
        value: Option<Vec<u8>>,
    ) {
        let running: Vec<usize> = self.running().collect();
        let local = self.local(i, self.now);
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let change = match node.write(local, table, key, value) {
            Ok(change) => change,
            Err(e) => {
                let msg = format!("n{i} refused a valid write of {key:?}: {e}");
                return self.state.fail(ViolationKind::Refused, self.now, msg);
            }
        };
        self.dirty[i] = true;
        if self.traced == Some(i) {
            self.trace(format_args!("n{i} writes {}", describe(&change)));
        }
        // Timed only in a calm stretch: everyone runs, nothing is cut.
        let calm =
            self.time_writes && running.len() == self.nodes.len() && self.net.partition.is_none();
        self.state
            .wrote(self.now, i, &change, calm.then_some(&running[..]));
        self.disks[i].write(change);
        let boot = self.lives[i].boot;
        self.queue
            .push(self.now + self.fsync, Action::Commit { node: i, boot });
        self.flush(i);
    }

    /// Pulls everything out of node `i`: datagrams, messages, changes to
    /// store, events, its clock, its next deadline.
    fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let mut transmits = std::mem::take(&mut self.transmits);
        let mut outgoing = std::mem::take(&mut self.outgoing);
        let mut events = std::mem::take(&mut self.events);
        while let Some(t) = node.poll_transmit() {
            transmits.push(t);
        }
        while let Some(m) = node.poll_message() {
            outgoing.push(m);
        }
        while let Some(e) = node.poll_event() {
            events.push(e);
        }
        let persist = node.poll_persist();
        let collected = node.poll_collected();
        let dropped = node.poll_dropped();
        let clock = node.clock();
        let deadline = node.poll_timeout();
        for t in transmits.drain(..) {
            self.route(i, t);
        }
        for m in outgoing.drain(..) {
            self.route_message(i, m);
        }
        // Removals first: the core collects or drops before it merges
        // what the same input brought.
        self.dirty[i] |= !collected.is_empty() || !dropped.is_empty();
        for (table, key, ts) in collected {
            self.state.collected(self.now, i, table, &key, ts);
            self.disks[i].remove(table, key, ts);
        }
        for (table, key, ts) in dropped {
            self.state.dropped(self.now, i, table, &key, ts);
            self.disks[i].remove(table, key, ts);
        }
        for e in events.drain(..) {
            if self.traced == Some(i) {
                self.trace(format_args!("n{i} {}", describe_event(&e)));
            }
            if let Event::StateChanged(c) = &e {
                self.state.changed(self.now, i, c);
            } else {
                self.checks.on_event(self.now, i, &e, &self.lives);
            }
        }
        self.disks[i].merged(persist);
        let local = self.local(i, self.now);
        self.state.clock(self.now, i, clock, local);
        self.transmits = transmits;
        self.outgoing = outgoing;
        self.events = events;
        if let Some(at) = deadline {
            let at = self.global(i, at).max(self.now);
            if self.wakes[i].is_none_or(|(t, _)| at < t) {
                self.tokens += 1;
                self.wakes[i] = Some((at, self.tokens));
                self.queue.push(
                    at,
                    Action::Wake {
                        node: i,
                        token: self.tokens,
                    },
                );
            }
        }
    }

    fn route(&mut self, from: usize, t: Transmit) {
        self.traffic.sent += 1;
        self.traffic.bytes_sent += t.payload.len() as u64;
        let Some(to) = index_of_addr(t.to, self.nodes.len()) else {
            self.traffic.to_nowhere += 1;
            return;
        };
        match self.net.fate(&mut self.rng, from, to) {
            Fate::Blocked => self.traffic.blocked += 1,
            Fate::Lost => self.traffic.lost += 1,
            Fate::Arrives { delay, copy } => {
                if let Some(copy) = copy {
                    self.traffic.duplicated += 1;
                    let payload = t.payload.clone();
                    self.queue.push(
                        Time(self.now.0 + copy),
                        Action::Deliver { from, to, payload },
                    );
                }
                self.queue.push(
                    Time(self.now.0 + delay),
                    Action::Deliver {
                        from,
                        to,
                        payload: t.payload,
                    },
                );
            }
        }
    }

    /// Sends a stream message on the connection to the current life of its
    /// destination.
    fn route_message(&mut self, from: usize, m: Transmit) {
        self.messages.sent += 1;
        self.messages.bytes_sent += m.payload.len() as u64;
        let Some(to) = index_of_addr(m.to, self.nodes.len()) else {
            self.messages.to_nowhere += 1;
            return;
        };
        if self.nodes[to].is_none() {
            // No one listens: the connection is refused.
            self.messages.to_stopped += 1;
            return;
        }
        match self.net.message(&mut self.state_rng, self.now.0, from, to) {
            Fate::Blocked => self.messages.blocked += 1,
            Fate::Lost => self.messages.lost += 1,
            Fate::Arrives { delay, .. } => {
                let boot = self.lives[to].boot;
                self.queue.push(
                    Time(self.now.0 + delay),
                    Action::Message {
                        from,
                        to,
                        boot,
                        payload: m.payload,
                    },
                );
            }
        }
    }

    /// Starts a new life of node `i` and joins it through `seeds`.
    fn start(&mut self, i: usize, seeds: &[usize]) {
        let life = &mut self.lives[i];
        life.boot += 1;
        life.running = true;
        let boot = life.boot;
        let mut setup = node_setup(i, boot, &self.keys, self.rng.random(), &self.core);
        if let Some((tags, capacity)) = self.shapes.get(i) {
            setup.manifest.tags = tags.clone();
            setup.manifest.capacity = *capacity;
        }
        let local = self.local(i, self.now);
        let mut node = Node::new(local, setup);
        // What the last life made durable, before any input.
        let restored = self.disks[i].contents();
        node.restore(restored.clone());
        self.state.started(self.now, i, &restored, node.clock());
        for &s in seeds {
            node.join(local, addr_of(s));
        }
        self.nodes[i] = Some(node);
        self.dirty[i] = true;
        self.checks.forget_view(i);
        self.flush(i);
    }

    /// Restarts stopped node `i`, joining through node 0 and a few random live nodes.
    pub(crate) fn restart(&mut self, i: usize) {
        let others: Vec<usize> = self.running().filter(|&j| j != i && j != 0).collect();
        let mut seeds: Vec<usize> = others
            .sample(&mut self.rng, RESTART_SEEDS)
            .copied()
            .collect();
        if i != 0 {
            seeds.insert(0, 0);
        }
        self.restarts += 1;
        self.trace(format_args!(
            "restart n{i} (boot {}), joining {seeds:?}",
            self.lives[i].boot + 1
        ));
        self.start(i, &seeds);
    }

    /// Stops node `i`; in a graceful stop its store finishes its last
    /// commit, and it pushes those writes and leaves; a crash tears the
    /// writes not yet durable.
    pub(crate) fn stop(&mut self, i: usize, graceful: bool) {
        let how = if graceful { "leave and stop" } else { "crash" };
        self.trace(format_args!("{how} n{i} (boot {})", self.lives[i].boot));
        if graceful {
            // The agent's shutdown: the store finishes its commit, the
            // node pushes what that made durable, then leaves.
            self.commit_node(i);
            let local = self.local(i, self.now);
            if let Some(node) = self.nodes[i].as_mut() {
                node.leave(local);
            }
            self.flush(i);
        } else {
            let torn = self.disks[i].crash();
            for c in &torn {
                self.trace(format_args!("n{i} crash tears {}", describe(c)));
            }
            self.state.torn(&torn);
        }
        self.state.interrupted();
        if let Some(node) = self.nodes[i].take() {
            self.add_refused(&node);
        }
        self.lives[i].running = false;
        self.wakes[i] = None;
        self.checks.forget_view(i);
    }

    fn add_refused(&mut self, node: &Node) {
        for (reason, n) in &node.stats().dropped {
            *self.refused.entry(reason).or_default() += n;
        }
    }

    pub(crate) fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].is_some())
    }

    /// Running nodes with writes not yet durable: a crash now tears them.
    pub(crate) fn unacked_writers(&self) -> Vec<usize> {
        self.running()
            .filter(|&i| self.disks[i].has_unacked())
            .collect()
    }

    /// Datagrams refused so far by every life, the running ones included.
    pub(crate) fn refused_total(&self) -> BTreeMap<&'static str, u64> {
        let mut all = self.refused.clone();
        for node in self.nodes.iter().flatten() {
            for (reason, n) in &node.stats().dropped {
                *all.entry(reason).or_default() += n;
            }
        }
        all
    }

    /// The digest of every delivery so far and of every node's current
    /// view and state.
    pub(crate) fn digest(&self) -> u64 {
        let mut d = self.digest;
        for (i, node) in self.nodes.iter().enumerate() {
            d.add(i as u64);
            for m in node.iter().flat_map(|n| n.members()) {
                d.add(m.peer.id.as_u64());
                d.add(m.state as u64);
                d.add((m.peer.boot << 16) | u64::from(m.peer.bump));
            }
            if let Some(n) = node {
                d.add(n.state_digest());
            }
        }
        d.value()
    }
}

/// What node `i` starts its life `boot` with.
pub(crate) fn node_setup(
    i: usize,
    boot: u64,
    keys: &KeyRing,
    seed: u64,
    core: &Config,
) -> NodeSetup {
    let addr = addr_of(i);
    let id = id_of(i);
    let manifest = NodeManifest {
        format: NodeManifest::FORMAT,
        id,
        boot,
        name: format!("n{i}"),
        tags: BTreeMap::new(),
        capacity: Capacity {
            cpu_milli: 1000,
            memory_mb: 1024,
        },
        mesh_addr: addr,
        api_addr: None,
        edge_addr: None,
        version: "sim".into(),
        key_id: keys.primary_id().to_string(),
        speaks: myco_proto::compat::THIS_BUILD,
    };
    NodeSetup {
        peer: Peer {
            id,
            addr,
            boot,
            bump: 0,
        },
        manifest,
        keys: keys.clone(),
        seed,
        config: core.clone(),
    }
}

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}

/// A change in a trace line: `k3 = "w17..." @ts` or `k3 deleted @ts`.
fn describe(c: &Change) -> String {
    match &c.value {
        Some(v) => format!("{} = {:?} @{:?}", c.key, String::from_utf8_lossy(v), c.ts),
        None => format!("{} deleted @{:?}", c.key, c.ts),
    }
}

fn describe_event(e: &Event) -> String {
    match e {
        Event::StateChanged(c) => format!("applies {}", describe(c)),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unique_and_invertible() {
        for i in [0, 1, 254, 255, 256, 999, 70_000] {
            assert_eq!(index_of_addr(addr_of(i), 100_000), Some(i));
        }
        assert_eq!(index_of_addr(addr_of(10), 10), None, "beyond the cluster");
        assert_eq!(index_of_addr("10.0.0.1:80".parse().unwrap(), 10), None);
    }
}
