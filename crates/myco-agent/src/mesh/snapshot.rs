//! What readers see of membership and counters, published by the loop.

use myco_core::{MemberView, Node, Stats, Time};
use myco_proto::frame::Peer;

/// What readers see of the mesh; replaced wholesale, never mutated. The
/// replicated tables are published apart, as a [`super::ReadView`].
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// This node's identity.
    pub me: Peer,
    /// Every known member, self first.
    pub members: Vec<MemberView>,
    /// Traffic counters.
    pub stats: Stats,
    /// Whether any peer is alive.
    pub connected: bool,
    /// The core time the snapshot was taken at.
    pub at: Time,
    /// The id of the cluster key the node seals with.
    pub key_id: myco_proto::KeyId,
    /// Replica entries, tombstones and bytes.
    pub state: (usize, usize, usize),
    /// Digest of the whole replica (equal on converged nodes).
    pub state_digest: u64,
    /// Wall time (ms) below which tombstones were collected mesh-wide.
    pub horizon_ms: u64,
    /// How far the node's hybrid clock runs ahead of its own clock (ms):
    /// a peer with a fast clock pulls it forward, up to `max_clock_drift`.
    pub clock_lead_ms: u64,
    /// Stream messages on a known channel this node has no handler for
    /// (from a newer build), dropped by the loop.
    pub stream_unrouted: u64,
}

impl Snapshot {
    /// Takes a snapshot of the core now.
    pub(crate) fn of(node: &Node, at: Time, stream_unrouted: u64) -> Snapshot {
        Snapshot {
            me: node.identity(),
            members: node.members(),
            stats: node.stats().clone(),
            connected: node.is_connected(),
            at,
            key_id: node.key_id(),
            state: node.state_size(),
            state_digest: node.state_digest(),
            horizon_ms: node.horizon().at,
            clock_lead_ms: node.clock().wall_ms.saturating_sub(at.0),
            stream_unrouted,
        }
    }
}
