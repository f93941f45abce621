//! The controller's input: everything placement reads, as plain decoded
//! data, built by the agent from its read view and membership snapshot or
//! by the simulator from a core [`crate::Node`].

use myco_proto::NodeId;
use myco_proto::instance::InstanceRecord;
use myco_proto::job::JobRecord;
use myco_proto::state::Table;

use crate::jobs::placement::{Capacity, Liveness, NodeView};
use crate::membership::{MemberState, MemberView};

/// One node's view of the placement inputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Wall time (ms, the HLC's physical time) when the view was taken:
    /// avoidances end by it.
    pub wall_ms: u64,
    /// Every member, this node included.
    pub nodes: Vec<NodeView>,
    /// `Table::JOBS`, decoded: the current record of each job.
    pub jobs: Vec<JobRecord>,
    /// `Table::INSTANCES`, decoded: every node's instance records.
    pub instances: Vec<InstanceRecord>,
    /// Members that are up but suspected: placement keeps their slots,
    /// fencing does not count them as seen ([`crate::jobs::fence`]).
    pub suspects: Vec<NodeId>,
}

impl View {
    /// Decodes table values; undecodable ones (damaged, or written by a
    /// newer release) are skipped and counted in the returned number, so
    /// one bad record never stops a node from placing the rest.
    pub fn decode<'a>(
        wall_ms: u64,
        nodes: Vec<NodeView>,
        jobs: impl IntoIterator<Item = &'a [u8]>,
        instances: impl IntoIterator<Item = &'a [u8]>,
    ) -> (View, usize) {
        let mut skipped = 0;
        let jobs = jobs
            .into_iter()
            .filter_map(|b| JobRecord::decode(b).map_err(|_| skipped += 1).ok())
            .collect();
        let instances = instances
            .into_iter()
            .filter_map(|b| InstanceRecord::decode(b).map_err(|_| skipped += 1).ok())
            .collect();
        let view = View {
            wall_ms,
            nodes,
            jobs,
            instances,
            suspects: Vec::new(),
        };
        (view, skipped)
    }

    /// The view of a core [`crate::Node`]: its members (with manifests)
    /// and its replica's `jobs` and `instances` tables. The simulator's
    /// way in; undecodable records are skipped.
    pub fn from_node(node: &crate::Node, wall_ms: u64) -> View {
        let members = node.members();
        let nodes = members.iter().map(node_view).collect();
        let jobs = node.scan(Table::JOBS, "").map(|(_, e)| value(e));
        let instances = node.scan(Table::INSTANCES, "").map(|(_, e)| value(e));
        let mut view = View::decode(wall_ms, nodes, jobs, instances).0;
        view.suspects = suspects(&members);
        view
    }
}

/// The members that are suspected, for [`View::suspects`].
pub fn suspects(members: &[MemberView]) -> Vec<NodeId> {
    members
        .iter()
        .filter(|m| m.state == MemberState::Suspect)
        .map(|m| m.peer.id)
        .collect()
}

fn value(e: &crate::Entry) -> &[u8] {
    e.value.as_deref().unwrap_or_default()
}

/// One member as placement sees it: `Alive` and `Suspect` are up (a
/// suspect keeps its slots until it is declared down), tags and capacity
/// from its manifest, `tags: None` until the manifest arrives.
pub fn node_view(m: &MemberView) -> NodeView {
    let liveness = match m.state {
        MemberState::Alive | MemberState::Suspect => Liveness::Up,
        MemberState::Down => Liveness::Down,
        MemberState::Left => Liveness::Left,
    };
    let capacity = m
        .manifest
        .as_ref()
        .map_or(Capacity::default(), |mf| Capacity {
            cpu_milli: u64::from(mf.capacity.cpu_milli),
            memory_mb: mf.capacity.memory_mb,
            pids: None,
        });
    NodeView {
        id: m.peer.id,
        liveness,
        tags: m.manifest.as_ref().map(|mf| mf.tags.clone()),
        capacity,
    }
}
