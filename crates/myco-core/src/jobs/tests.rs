//! Several nodes running placement and the reconciler on one shared view,
//! the way the mesh will: nobody coordinates, yet every slot runs once.

use std::collections::BTreeMap;
use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::{Constraint, JobRecord, Resources, Strategy};

use super::placement::tests::{job, node, record};
use super::placement::{Cluster, Liveness, NodeView, place};
use super::reconcile::{Action, LocalInstance, LocalStatus, ReconcileInput, reconcile};
use super::settle::Settle;
use crate::time::Time;

/// What each node runs: its local instances.
type Fleet = BTreeMap<NodeId, Vec<LocalInstance>>;

/// One settled pass on every up node; returns the actions per node.
fn pass(nodes: &[NodeView], jobs: &[JobRecord], fleet: &Fleet) -> BTreeMap<NodeId, Vec<Action>> {
    let records = records_of(fleet);
    let p = place(&Cluster {
        wall_ms: 0,
        nodes,
        jobs,
        instances: &records,
        versions: &[],
    });
    let mut settle = Settle::new(Duration::ZERO);
    settle.observe(Time::ZERO, p.fingerprint);
    let mut out = BTreeMap::new();
    for v in nodes.iter().filter(|v| v.liveness == Liveness::Up) {
        let empty = Vec::new();
        let input = ReconcileInput {
            me: v.id,
            now: Time::ZERO,
            wall_ms: 0,
            placement: &p,
            jobs,
            local: fleet.get(&v.id).unwrap_or(&empty),
            records: &records,
            capacity: v.capacity,
            settle: &settle,
            rollouts: &Default::default(),
            leaving: false,
            others: &records,
        };
        out.insert(v.id, reconcile(&input));
    }
    out
}

fn records_of(fleet: &Fleet) -> Vec<InstanceRecord> {
    let mut out = Vec::new();
    for (node, locals) in fleet {
        for l in locals
            .iter()
            .filter(|l| l.status == LocalStatus::Supervised)
        {
            out.push(record(&l.job, l.slot, *node, InstanceState::Ready));
        }
    }
    out
}

/// Carries out starts and stops; returns (starts, stops).
fn apply(
    fleet: &mut Fleet,
    actions: &BTreeMap<NodeId, Vec<Action>>,
) -> (Vec<(String, u32)>, usize) {
    let (mut starts, mut stops) = (Vec::new(), 0);
    for (node, acts) in actions {
        let locals = fleet.entry(*node).or_default();
        for a in acts {
            match a {
                Action::Start {
                    id,
                    job,
                    slot,
                    version,
                } => {
                    starts.push((job.clone(), *slot));
                    locals.push(LocalInstance {
                        id: id.clone(),
                        job: job.clone(),
                        slot: *slot,
                        version: *version,
                        status: LocalStatus::Supervised,
                        resources: Resources {
                            cpu_milli: 100,
                            memory_mb: 64,
                            pids: 256,
                            vcpus: 1,
                        },
                    });
                }
                Action::Stop { id, .. } => {
                    stops += 1;
                    locals.retain(|l| &l.id != id);
                }
                Action::Keep { .. } | Action::Forget { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    starts.sort();
    (starts, stops)
}

/// One pass on every node, then its actions carried out.
fn step(fleet: &mut Fleet, nodes: &[NodeView], jobs: &[JobRecord]) -> (Vec<(String, u32)>, usize) {
    let actions = pass(nodes, jobs, fleet);
    apply(fleet, &actions)
}

fn all_slots(jobs: &[JobRecord]) -> Vec<(String, u32)> {
    let mut v: Vec<_> = jobs
        .iter()
        .flat_map(|j| (0..j.spec.count).map(move |s| (j.name().to_string(), s)))
        .collect();
    v.sort();
    v
}

#[test]
fn every_slot_runs_once_through_a_death_and_a_healed_split() {
    let mut nodes: Vec<_> = (1..=5)
        .map(|i| node(i, ["a", "b"][i as usize % 2], 4096))
        .collect();
    let mut only_a = job("only-a", 2, Strategy::Spread, 64);
    only_a
        .spec
        .constraints
        .insert("zone".into(), Constraint::Eq("a".into()));
    let jobs = [
        job("web", 4, Strategy::Spread, 64),
        job("batch", 3, Strategy::Pack, 64),
        only_a,
    ];
    let mut fleet = Fleet::new();

    // Deploy: each node starts its own share; together, every slot once.
    let (starts, stops) = step(&mut fleet, &nodes, &jobs);
    assert_eq!((starts, stops), (all_slots(&jobs), 0));
    let (starts, stops) = step(&mut fleet, &nodes, &jobs);
    assert_eq!(
        (starts.len(), stops),
        (0, 0),
        "a second pass changes nothing"
    );

    // A node dies: exactly its slots start elsewhere, nothing else moves.
    let dead = NodeId::from_u64(2);
    let orphaned: Vec<_> = fleet[&dead]
        .iter()
        .map(|l| (l.job.clone(), l.slot))
        .collect();
    assert!(!orphaned.is_empty());
    nodes[1].liveness = Liveness::Down;
    let (mut starts, stops) = step(&mut fleet, &nodes, &jobs);
    let mut want = orphaned.clone();
    want.sort();
    starts.sort();
    assert_eq!((starts, stops), (want, 0));

    // It comes back with its processes still running (a healed split):
    // every node sees two copies of those slots and exactly one stops.
    nodes[1].liveness = Liveness::Up;
    let (starts, stops) = step(&mut fleet, &nodes, &jobs);
    assert_eq!((starts.len(), stops), (0, orphaned.len()));
    let running: usize = fleet.values().map(Vec::len).sum();
    assert_eq!(
        running,
        all_slots(&jobs).len(),
        "every slot runs exactly once again"
    );
}
