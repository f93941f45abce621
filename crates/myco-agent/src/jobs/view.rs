//! The controller's `View`, built from what the mesh loop published: the
//! membership snapshot (members and their manifests) and the read view of
//! the `jobs` and `instances` tables. Built on the runtime's task, never on
//! the mesh loop.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use myco_core::jobs::controller::{View, mark_draining, node_view, suspects, version_keys};
use myco_core::jobs::placement::Capacity;
use myco_proto::Table;
use myco_proto::instance::InstanceRecord;
use myco_proto::job::JobRecord;

use crate::mesh::{MeshHandle, ReadView, Snapshot};

/// Most records of one table read into a view (far above `MAX_COUNT` jobs
/// of 1000 slots each on a small mesh; a bound, not a target).
pub const MAX_RECORDS: usize = 1_000_000;

/// A manifest's capacity as placement reads it (manifests do not say
/// pids, so pids are not accounted).
pub fn capacity_of(c: &myco_proto::Capacity) -> Capacity {
    Capacity {
        cpu_milli: u64::from(c.cpu_milli),
        memory_mb: c.memory_mb,
        pids: None,
    }
}

/// The view now, and how many records could not be decoded.
pub fn build(mesh: &MeshHandle, wall_ms: u64) -> (View, usize) {
    let snap = mesh.snapshot();
    let mut nodes: Vec<_> = snap.members.iter().map(node_view).collect();
    let read = mesh.view();
    let bad_marks = mark_draining(&mut nodes, &snap.members, |k| {
        read.get(Table::NODES, k)?.value.clone()
    });
    let values = |table| {
        read.scan(table, "", MAX_RECORDS)
            .into_iter()
            .filter_map(|(_, e)| e.value)
            .collect::<Vec<_>>()
    };
    let jobs = values(Table::JOBS);
    let instances = values(Table::INSTANCES);
    let (mut view, skipped) = View::decode(
        wall_ms,
        nodes,
        jobs.iter().map(Vec::as_slice),
        instances.iter().map(Vec::as_slice),
    );
    let versions = held_versions(&read, &view.jobs, &view.instances);
    let skipped = skipped + bad_marks + view.add_versions(versions.iter().map(Vec::as_slice));
    view.suspects = suspects(&snap.members);
    (view, skipped)
}

/// The stored `job_versions` records of the versions `instances` run
/// besides their job's current one (what placement charges them,
/// `Cluster::versions`).
pub fn held_versions(
    read: &ReadView,
    jobs: &[JobRecord],
    instances: &[InstanceRecord],
) -> Vec<Vec<u8>> {
    version_keys(jobs, instances)
        .iter()
        .filter_map(|k| read.get(Table::JOB_VERSIONS, k)?.value.clone())
        .collect()
}

/// A digest of what placement reads of membership (ids, states, tags,
/// capacity): manifests arriving change it without any state event, so the
/// runtime compares it on a timer and rebuilds the view only on change.
pub fn membership_fingerprint(snap: &Snapshot) -> u64 {
    let mut h = DefaultHasher::new();
    for m in &snap.members {
        m.peer.id.hash(&mut h);
        m.state.as_str().hash(&mut h);
        if let Some(man) = &m.manifest {
            man.tags.hash(&mut h);
            man.capacity.cpu_milli.hash(&mut h);
            man.capacity.memory_mb.hash(&mut h);
        }
    }
    h.finish()
}

/// Whether a state event concerns the view (the jobs, instances, job
/// versions and node marks tables; membership events always do). A
/// version record may arrive after the instances that run it, and then
/// changes their room.
pub fn concerns_view(event: &myco_proto::api::ApiEvent) -> bool {
    use myco_proto::api::ApiEvent;
    match event {
        ApiEvent::State { table, .. } => [
            Table::JOBS,
            Table::INSTANCES,
            Table::JOB_VERSIONS,
            Table::NODES,
        ]
        .iter()
        .any(|t| *table == t.name()),
        ApiEvent::Member { .. } | ApiEvent::Lagged { .. } => true,
        // The runtime's own decisions: nothing new to read.
        ApiEvent::Job { .. } => false,
    }
}

/// Whether a mesh event is a member going down or leaving: its slots move,
/// so the runtime builds its view at once rather than after [`COALESCE`].
///
/// [`COALESCE`]: super::runtime::COALESCE
pub fn is_departure(event: &myco_proto::api::ApiEvent) -> bool {
    matches!(event, myco_proto::api::ApiEvent::Member { state, .. } if state == "down" || state == "left")
}

#[cfg(test)]
mod tests {
    use myco_proto::api::ApiEvent;

    fn member(state: &str) -> ApiEvent {
        ApiEvent::Member {
            id: "n".into(),
            name: String::new(),
            state: state.into(),
            previous: Some("alive".into()),
        }
    }

    #[test]
    fn only_a_member_going_down_or_leaving_skips_the_burst_window() {
        assert!(super::is_departure(&member("down")));
        assert!(super::is_departure(&member("left")));
        assert!(!super::is_departure(&member("suspect")));
        assert!(!super::is_departure(&member("alive")));
    }
}
