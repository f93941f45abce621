//! The controller's input: everything placement reads, as plain decoded
//! data, built by the agent from its read view and membership snapshot or
//! by the simulator from a core [`crate::Node`].

use std::collections::BTreeMap;

use myco_proto::NodeId;
use myco_proto::instance::InstanceRecord;
use myco_proto::job::JobRecord;
use myco_proto::node_mark::NodeMark;
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
    /// The records in `Table::JOB_VERSIONS` of the versions that
    /// instances run other than their job's current one
    /// ([`View::version_keys`]), decoded: placement charges such an
    /// instance its own version's resources.
    pub versions: Vec<JobRecord>,
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
            versions: Vec::new(),
            suspects: Vec::new(),
        };
        (view, skipped)
    }

    /// The `Table::JOB_VERSIONS` keys of the versions that instances run
    /// other than their job's current one, each once: what to read for
    /// [`View::add_versions`].
    pub fn version_keys(&self) -> Vec<String> {
        version_keys(&self.jobs, &self.instances)
    }

    /// Decodes the version records read for [`View::version_keys`] into
    /// [`View::versions`]; returns how many could not be decoded.
    pub fn add_versions<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) -> usize {
        let mut skipped = 0;
        self.versions.extend(
            records
                .into_iter()
                .filter_map(|b| JobRecord::decode(b).map_err(|_| skipped += 1).ok()),
        );
        skipped
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
        mark_draining(&mut view.nodes, &members, |k| {
            node.get(Table::NODES, k)?.value.clone()
        });
        let keys = view.version_keys();
        let versions = keys
            .iter()
            .filter_map(|k| node.get(Table::JOB_VERSIONS, k))
            .filter_map(|e| e.value.as_deref());
        view.add_versions(versions);
        view.suspects = suspects(&members);
        view
    }
}

/// The `Table::JOB_VERSIONS` keys of the versions that `instances` run
/// other than their job's current one (in `jobs`), each once: the records
/// placement's `Cluster::versions` needs.
pub fn version_keys(jobs: &[JobRecord], instances: &[InstanceRecord]) -> Vec<String> {
    let current: BTreeMap<&str, u64> = jobs.iter().map(|j| (j.name(), j.version)).collect();
    let mut keys: Vec<String> = instances
        .iter()
        .filter(|r| current.get(r.job.as_str()).is_some_and(|&v| v != r.version))
        .map(|r| JobRecord::key_of_version(&r.job, r.version))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
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
        draining: false,
    }
}

/// The members whose mark in `Table::NODES` (`mark` reads a key there)
/// says they are draining in their current life (`boot`: a mark of an
/// earlier life does not count), and how many marks did not decode.
pub fn draining_members(
    members: &[MemberView],
    mark: impl Fn(&str) -> Option<Vec<u8>>,
) -> (Vec<NodeId>, usize) {
    let mut skipped = 0;
    let mut draining = Vec::new();
    for m in members {
        let Some(bytes) = mark(&NodeMark::key(m.peer.id)) else {
            continue;
        };
        match NodeMark::decode(&bytes) {
            Some(mark) if mark.drains(m.peer.boot) => draining.push(m.peer.id),
            Some(_) => {}
            None => skipped += 1,
        }
    }
    (draining, skipped)
}

/// Sets [`NodeView::draining`] from the members' marks
/// ([`draining_members`]); returns how many marks did not decode.
pub fn mark_draining(
    nodes: &mut [NodeView],
    members: &[MemberView],
    mark: impl Fn(&str) -> Option<Vec<u8>>,
) -> usize {
    let (draining, skipped) = draining_members(members, mark);
    for v in nodes.iter_mut() {
        v.draining = draining.contains(&v.id);
    }
    skipped
}
