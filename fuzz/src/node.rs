//! The core node fed what a member can send it: authentic datagrams around
//! arbitrary frames (so foca's SWIM decoding and the membership logic
//! behind the envelope run), stream messages, raw datagrams and the
//! passage of time.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use myco_core::{Config, Node, NodeSetup, Time};
use myco_proto::envelope::MAX_PLAINTEXT;
use myco_proto::frame::Peer;
use myco_proto::{Capacity, Envelope, KeyRing, NodeId, NodeManifest};

use crate::cluster_ring;

/// The node under test is node 1; every input comes from node 2.
pub(crate) const TARGET: u64 = 1;
/// The member that sends.
pub(crate) const SENDER: u64 = 2;
/// Most steps one input runs, so an input's cost stays bounded.
const MAX_STEPS: usize = 256;

/// One step of a [`node_inputs`] input. Encoded as `op (1) | len (2, LE)`
/// then `len` bytes for the steps that carry bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeStep {
    /// A frame from the sender, sealed by the harness (op 0).
    Datagram(Vec<u8>),
    /// A stream message (op 1).
    Message(Vec<u8>),
    /// Time passes by this many milliseconds (op 2, no bytes).
    Advance(u16),
    /// A datagram exactly as given, not sealed (op 3).
    Raw(Vec<u8>),
}

impl NodeStep {
    /// Appends the step's encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (op, bytes): (u8, &[u8]) = match self {
            NodeStep::Datagram(b) => (0, b),
            NodeStep::Message(b) => (1, b),
            NodeStep::Advance(ms) => {
                out.push(2);
                out.extend_from_slice(&ms.to_le_bytes());
                return;
            }
            NodeStep::Raw(b) => (3, b),
        };
        let len = u16::try_from(bytes.len()).expect("steps are under 64 KiB");
        out.push(op);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
}

/// Addresses of test node `i`.
pub(crate) fn addr_of(i: u64) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8], 7946))
}

/// A fresh node `i` on the fixed ring, started at time zero.
pub(crate) fn test_node(i: u64, keys: KeyRing) -> Node {
    let addr = addr_of(i);
    let id = NodeId::from_u64(i);
    let manifest = NodeManifest {
        format: NodeManifest::FORMAT,
        id,
        boot: 1,
        name: format!("n{i}"),
        tags: BTreeMap::new(),
        capacity: Capacity {
            cpu_milli: 1000,
            memory_mb: 512,
        },
        mesh_addr: addr,
        api_addr: None,
        edge_addr: None,
        version: "fuzz".into(),
        key_id: String::new(),
        speaks: myco_proto::compat::THIS_BUILD,
    };
    let peer = Peer {
        id,
        addr,
        boot: 1,
        bump: 0,
    };
    let setup = NodeSetup {
        peer,
        manifest,
        keys,
        seed: i,
        config: Config::default(),
    };
    Node::new(Time::ZERO, setup)
}

/// Takes everything the node wants to send or report, and acknowledges
/// its writes as durable, as the agent would.
pub(crate) fn drain(node: &mut Node, now: Time) {
    while node.poll_transmit().is_some() {}
    while node.poll_message().is_some() {}
    while node.poll_event().is_some() {}
    let persisted: Vec<_> = node.poll_persist().iter().map(|c| c.ts).collect();
    if !persisted.is_empty() {
        node.durable(now, &persisted);
    }
    let _ = node.poll_collected();
    let _ = node.poll_dropped();
}

/// Runs the steps encoded in `data` against a fresh node.
pub fn node_inputs(data: &[u8]) {
    run_steps(data);
}

/// How many members (itself included) the node knows after `data`; for
/// checking that the seeds reach past membership.
pub fn node_members_after(data: &[u8]) -> usize {
    run_steps(data).members().len()
}

fn run_steps(data: &[u8]) -> Node {
    thread_local! {
        static RING: KeyRing = cluster_ring();
    }
    let ring = RING.with(KeyRing::clone);
    let mut node = test_node(TARGET, ring.clone());
    let from = addr_of(SENDER);
    let sender = NodeId::from_u64(SENDER);
    let (mut now, mut counter) = (Time::ZERO, 0u64);
    let mut rest = data;
    for _ in 0..MAX_STEPS {
        let Some((step, tail)) = next_step(rest) else {
            break;
        };
        rest = tail;
        match step {
            Step::Datagram(frame) => {
                counter += 1;
                let frame = &frame[..frame.len().min(MAX_PLAINTEXT)];
                let sealed = Envelope::seal(&ring, sender, 1, counter, frame);
                node.handle_datagram(now, from, &sealed);
            }
            Step::Message(m) => node.handle_message(now, m),
            Step::Advance(ms) => {
                now = Time(now.0 + u64::from(ms));
                node.handle_timeout(now);
            }
            Step::Raw(d) => node.handle_datagram(now, from, d),
        }
        drain(&mut node, now);
    }
    node
}

enum Step<'a> {
    Datagram(&'a [u8]),
    Message(&'a [u8]),
    Advance(u16),
    Raw(&'a [u8]),
}

fn next_step(data: &[u8]) -> Option<(Step<'_>, &[u8])> {
    let (&op, tail) = data.split_first()?;
    let len = u16::from_le_bytes([*tail.first()?, *tail.get(1)?]);
    let tail = &tail[2..];
    if op % 4 == 2 {
        return Some((Step::Advance(len), tail));
    }
    // A short input ends in a shorter last step rather than nothing.
    let (bytes, rest) = tail.split_at(usize::from(len).min(tail.len()));
    let step = match op % 4 {
        0 => Step::Datagram(bytes),
        1 => Step::Message(bytes),
        _ => Step::Raw(bytes),
    };
    Some((step, rest))
}
