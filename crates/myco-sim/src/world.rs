//! The simulated world: real [`Node`]s on a virtual clock and network.
//!
//! One queue of timed actions (a datagram arriving, a node's timer firing, a
//! node's first start) is drained in (time, insertion) order, so a run is a
//! pure function of its seed. After every call into a node, everything it
//! wants done is pulled out at once: datagrams go to the network, events to
//! the checkers, and its next deadline into the queue.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use myco_core::{Config, Event, Node, NodeSetup, Time, Transmit};
use myco_proto::frame::{Capacity, Peer};
use myco_proto::{ClusterKey, KeyRing, NodeId, NodeManifest};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};

use crate::check::Checks;
use crate::config::SimConfig;
use crate::net::{Fate, Net};
use crate::report::{Digest, Traffic};

/// The port every simulated node listens on.
const PORT: u16 = 7946;
/// Keeps the world's random stream apart from the one that picked the settings.
const WORLD_SALT: u64 = 0x9e37_79b9_7f4a_7c15;
/// Random live nodes a restarting node joins through, besides node 0.
const RESTART_SEEDS: usize = 2;

/// The address of node `i`: `10.x.y.z:7946`, from `i + 1`.
pub(crate) fn addr_of(i: usize) -> SocketAddr {
    let n = i as u32 + 1;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8)),
        PORT,
    )
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

enum Action {
    Deliver {
        from: usize,
        to: usize,
        payload: Vec<u8>,
    },
    Wake {
        node: usize,
        token: u64,
    },
    Start {
        node: usize,
    },
}

struct Scheduled {
    at: Time,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so the max-heap pops the earliest action, ties in insertion order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

pub(crate) struct World {
    pub(crate) now: Time,
    pub(crate) rng: StdRng,
    pub(crate) nodes: Vec<Option<Node>>,
    pub(crate) lives: Vec<Life>,
    /// The one wake-up each node has in the queue, as (time, token); older
    /// tokens in the queue are stale and skipped.
    wakes: Vec<Option<(Time, u64)>>,
    tokens: u64,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    pub(crate) net: Net,
    pub(crate) traffic: Traffic,
    digest: Digest,
    pub(crate) checks: Checks,
    /// Datagrams refused by nodes, summed over every life.
    pub(crate) refused: BTreeMap<&'static str, u64>,
    pub(crate) restarts: u64,
    keys: KeyRing,
    core: Config,
    transmits: Vec<Transmit>,
    events: Vec<Event>,
    /// The node whose events are written to stderr, if any.
    traced: Option<usize>,
}

impl World {
    pub(crate) fn new(cfg: &SimConfig) -> World {
        let n = cfg.nodes;
        World {
            now: Time::ZERO,
            rng: StdRng::seed_from_u64(cfg.seed ^ WORLD_SALT),
            nodes: (0..n).map(|_| None).collect(),
            lives: vec![Life::default(); n],
            wakes: vec![None; n],
            tokens: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            net: Net::new(&cfg.net),
            traffic: Traffic::default(),
            digest: Digest::new(),
            checks: Checks::new(n, cfg.detection_budget()),
            refused: BTreeMap::new(),
            restarts: 0,
            keys: KeyRing::new(ClusterKey::from_bytes([0x5a; 32])),
            core: cfg.core.clone(),
            transmits: Vec::new(),
            events: Vec::new(),
            traced: cfg.trace,
        }
    }

    /// Writes a line to stderr, stamped with the virtual time, if tracing.
    pub(crate) fn trace(&self, what: fmt::Arguments<'_>) {
        if self.traced.is_some() {
            eprintln!("{:?} {what}", self.now);
        }
    }

    fn schedule(&mut self, at: Time, action: Action) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            action,
        });
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
            self.schedule(Time(at), Action::Start { node });
        }
    }

    /// Runs every action due up to and including `until`, then sets the clock there.
    pub(crate) fn run_until(&mut self, until: Time) {
        while self.queue.peek().is_some_and(|s| s.at <= until) {
            let Some(Scheduled { at, action, .. }) = self.queue.pop() else {
                break;
            };
            self.now = at;
            match action {
                Action::Deliver { from, to, payload } => self.deliver(from, to, &payload),
                Action::Wake { node, token } => {
                    if self.wakes[node].is_some_and(|(_, t)| t == token) {
                        self.wakes[node] = None;
                        if let Some(n) = self.nodes[node].as_mut() {
                            n.handle_timeout(at);
                        }
                        self.flush(node);
                    }
                }
                Action::Start { node } => {
                    let seeds: &[usize] = if node == 0 { &[] } else { &[0] };
                    self.start(node, seeds);
                }
            }
        }
        self.now = self.now.max(until);
    }

    fn deliver(&mut self, from: usize, to: usize, payload: &[u8]) {
        let Some(node) = self.nodes[to].as_mut() else {
            self.traffic.to_stopped += 1;
            return;
        };
        node.handle_datagram(self.now, addr_of(from), payload);
        self.traffic.delivered += 1;
        self.digest.add(self.now.0);
        self.digest.add(((from as u64) << 32) | to as u64);
        self.digest.add(payload.len() as u64);
        self.flush(to);
    }

    /// Pulls everything out of node `i`: datagrams, events, next deadline.
    fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let mut transmits = std::mem::take(&mut self.transmits);
        let mut events = std::mem::take(&mut self.events);
        while let Some(t) = node.poll_transmit() {
            transmits.push(t);
        }
        while let Some(e) = node.poll_event() {
            events.push(e);
        }
        let deadline = node.poll_timeout();
        for t in transmits.drain(..) {
            self.route(i, t);
        }
        for e in events.drain(..) {
            if self.traced == Some(i) {
                self.trace(format_args!("n{i} {e:?}"));
            }
            self.checks.on_event(self.now, i, &e, &self.lives);
        }
        self.transmits = transmits;
        self.events = events;
        if let Some(at) = deadline {
            let at = at.max(self.now);
            if self.wakes[i].is_none_or(|(t, _)| at < t) {
                self.tokens += 1;
                self.wakes[i] = Some((at, self.tokens));
                self.schedule(
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
                    self.schedule(
                        Time(self.now.0 + copy),
                        Action::Deliver { from, to, payload },
                    );
                }
                self.schedule(
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

    /// Starts a new life of node `i` and joins it through `seeds`.
    fn start(&mut self, i: usize, seeds: &[usize]) {
        let life = &mut self.lives[i];
        life.boot += 1;
        life.running = true;
        let boot = life.boot;
        let addr = addr_of(i);
        let id = NodeId::from_u64(i as u64 + 1);
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
            key_id: self.keys.primary_id().to_string(),
        };
        let setup = NodeSetup {
            peer: Peer {
                id,
                addr,
                boot,
                bump: 0,
            },
            manifest,
            keys: self.keys.clone(),
            seed: self.rng.random(),
            config: self.core.clone(),
        };
        let mut node = Node::new(self.now, setup);
        for &s in seeds {
            node.join(self.now, addr_of(s));
        }
        self.nodes[i] = Some(node);
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

    /// Stops node `i`; a graceful stop leaves first and sends what that queued.
    pub(crate) fn stop(&mut self, i: usize, graceful: bool) {
        let how = if graceful { "leave and stop" } else { "crash" };
        self.trace(format_args!("{how} n{i} (boot {})", self.lives[i].boot));
        if graceful {
            if let Some(node) = self.nodes[i].as_mut() {
                node.leave(self.now);
            }
            self.flush(i);
        }
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

    /// The digest of every delivery so far and of every node's current view.
    pub(crate) fn digest(&self) -> u64 {
        let mut d = self.digest;
        for (i, node) in self.nodes.iter().enumerate() {
            d.add(i as u64);
            for m in node.iter().flat_map(|n| n.members()) {
                d.add(m.peer.id.as_u64());
                d.add(m.state as u64);
                d.add((m.peer.boot << 16) | u64::from(m.peer.bump));
            }
        }
        d.value()
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
