use std::collections::BTreeMap;

use myco_proto::NodeId;
use myco_proto::instance::{INSTANCE_RECORD_FORMAT, InstanceRecord, InstanceState};
use myco_proto::job::{Constraint, JobRecord, JobSpec, Strategy};

use super::*;

pub(crate) const DIGEST: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub(crate) fn node(i: u64, zone: &str, memory_mb: u64) -> NodeView {
    let mut tags = BTreeMap::new();
    if !zone.is_empty() {
        tags.insert("zone".to_string(), zone.to_string());
    }
    NodeView {
        id: NodeId::from_u64(i),
        liveness: Liveness::Up,
        tags: Some(tags),
        capacity: Capacity {
            cpu_milli: 100_000,
            memory_mb,
            pids: None,
        },
        draining: false,
    }
}

pub(crate) fn job(name: &str, count: u32, strategy: Strategy, memory_mb: u32) -> JobRecord {
    let text = format!("name = \"{name}\"\nspore = \"{DIGEST}\"\ncount = {count}");
    let mut spec = JobSpec::from_toml(&text).unwrap();
    spec.strategy = strategy;
    spec.resources.memory_mb = memory_mb;
    JobRecord::first(spec, DIGEST, 0).unwrap()
}

pub(crate) fn record(job: &str, slot: u32, node: NodeId, state: InstanceState) -> InstanceRecord {
    InstanceRecord {
        format: INSTANCE_RECORD_FORMAT,
        id: InstanceRecord::id_for(job, slot, 1, node),
        job: job.into(),
        slot,
        version: 1,
        node,
        state,
        addr: None,
        digest: DIGEST.into(),
        restarts: 0,
        last_exit: None,
        reason: String::new(),
        avoid_until_ms: None,
        since_ms: 0,
    }
}

fn run(nodes: &[NodeView], jobs: &[JobRecord], instances: &[InstanceRecord]) -> Placement {
    place(&Cluster {
        wall_ms: 1_000,
        nodes,
        jobs,
        instances,
        versions: &[],
    })
}

/// Instance records saying every assigned slot runs where it was placed.
fn running(p: &Placement) -> Vec<InstanceRecord> {
    let mut out = Vec::new();
    for (name, jp) in p.jobs() {
        for (slot, s) in jp.slots.iter().enumerate() {
            if let Slot::Node(n) = s {
                out.push(record(name, slot as u32, *n, InstanceState::Ready));
            }
        }
    }
    out
}

fn node_of(p: &Placement, job: &str, slot: usize) -> NodeId {
    match &p.job(job).unwrap().slots[slot] {
        Slot::Node(n) => *n,
        Slot::Pending(why) => panic!("{job}[{slot}] pending: {why}"),
    }
}

fn moved(a: &Placement, b: &Placement) -> usize {
    let mut n = 0;
    for (name, ja) in a.jobs() {
        let jb = b.job(name).unwrap();
        n += ja
            .slots
            .iter()
            .zip(&jb.slots)
            .filter(|(x, y)| x != y)
            .count();
    }
    n
}

fn per_node(p: &Placement, job: &str) -> BTreeMap<NodeId, usize> {
    let mut m = BTreeMap::new();
    for s in &p.job(job).unwrap().slots {
        if let Slot::Node(n) = s {
            *m.entry(*n).or_default() += 1;
        }
    }
    m
}

#[test]
fn the_same_view_in_any_order_gives_the_same_placement() {
    let nodes: Vec<_> = (1..=20)
        .map(|i| node(i, ["a", "b", "c"][i as usize % 3], 4096))
        .collect();
    let jobs: Vec<_> = (0..10)
        .map(|i| job(&format!("j{i}"), 7, Strategy::Spread, 256))
        .collect();
    let a = run(&nodes, &jobs, &[]);
    let mut rn = nodes.clone();
    rn.reverse();
    let mut rj = jobs.clone();
    rj.reverse();
    let b = run(&rn, &rj, &[]);
    assert_eq!(a, b);
    assert_eq!(a.assigned_count(), 70);
}

#[test]
fn no_node_is_ever_given_more_than_it_offers() {
    let nodes: Vec<_> = (1..=5).map(|i| node(i, "", 1000 + 100 * i)).collect();
    let jobs: Vec<_> = (0..8)
        .map(|i| {
            job(
                &format!("j{i}"),
                5,
                [Strategy::Spread, Strategy::Pack][i % 2],
                70 + 30 * i as u32,
            )
        })
        .collect();
    let p = run(&nodes, &jobs, &[]);
    let mut used: BTreeMap<NodeId, u64> = BTreeMap::new();
    for j in &jobs {
        for s in &p.job(j.name()).unwrap().slots {
            if let Slot::Node(n) = s {
                *used.entry(*n).or_default() += u64::from(j.spec.resources.memory_mb);
            }
        }
    }
    for v in &nodes {
        let u = used.get(&v.id).copied().unwrap_or(0);
        assert!(
            u <= v.capacity.memory_mb,
            "{} holds {u} of {}",
            v.id,
            v.capacity.memory_mb
        );
        assert_eq!(p.allocated(v.id).memory_mb, u);
    }
    // Demand (about 12.8 GB) exceeds supply (7.5 GB): some slots wait, and say why.
    let pending: Vec<_> = p
        .jobs()
        .flat_map(|(_, jp)| jp.slots.iter())
        .filter_map(|s| match s {
            Slot::Pending(why) => Some(why.clone()),
            _ => None,
        })
        .collect();
    assert!(!pending.is_empty());
    assert!(pending[0].contains("insufficient memory"), "{}", pending[0]);
}

#[test]
fn constraints_are_respected_and_an_impossible_one_leaves_the_job_pending() {
    let nodes: Vec<_> = (1..=9)
        .map(|i| node(i, ["a", "b", "c"][i as usize % 3], 4096))
        .collect();
    let zone_of = |id: NodeId| ["a", "b", "c"][(id.as_u64() % 3) as usize];
    let mut eq = job("eq", 3, Strategy::Spread, 64);
    eq.spec
        .constraints
        .insert("zone".into(), Constraint::Eq("b".into()));
    let mut ne = job("ne", 6, Strategy::Spread, 64);
    ne.spec
        .constraints
        .insert("zone".into(), Constraint::Ne("a".into()));
    let mut within = job("within", 4, Strategy::Pack, 64);
    within.spec.constraints.insert(
        "zone".into(),
        Constraint::In(["a".into(), "c".into()].into()),
    );
    let mut nowhere = job("nowhere", 2, Strategy::Spread, 64);
    nowhere
        .spec
        .constraints
        .insert("zone".into(), Constraint::Eq("z".into()));
    let p = run(&nodes, &[eq, ne, within, nowhere], &[]);
    for s in 0..3 {
        assert_eq!(zone_of(node_of(&p, "eq", s)), "b");
    }
    for s in 0..6 {
        assert_ne!(zone_of(node_of(&p, "ne", s)), "a");
    }
    for s in 0..4 {
        assert!(["a", "c"].contains(&zone_of(node_of(&p, "within", s))));
    }
    let Slot::Pending(why) = &p.job("nowhere").unwrap().slots[0] else {
        panic!()
    };
    assert_eq!(why, "no node can hold it: 9 constraint zone=z not matched");
}

#[test]
fn spread_balances_nodes_and_zones() {
    let nodes: Vec<_> = (1..=3).map(|i| node(i, "", 4096)).collect();
    let p = run(&nodes, &[job("web", 6, Strategy::Spread, 64)], &[]);
    assert!(
        per_node(&p, "web").values().all(|&c| c == 2),
        "{:?}",
        per_node(&p, "web")
    );

    // Three nodes in zone a, one in zone b: two slots land one per zone.
    let nodes = [
        node(1, "a", 4096),
        node(2, "a", 4096),
        node(3, "a", 4096),
        node(4, "b", 4096),
    ];
    for name in ["x", "y", "z", "w"] {
        let p = run(&nodes, &[job(name, 2, Strategy::Spread, 64)], &[]);
        let zones: Vec<_> = (0..2)
            .map(|s| node_of(&p, name, s) == NodeId::from_u64(4))
            .collect();
        assert_eq!(zones.iter().filter(|&&b| b).count(), 1, "{name}: {zones:?}");
    }
}

#[test]
fn pack_fills_the_most_allocated_node_that_fits() {
    let nodes: Vec<_> = (1..=4).map(|i| node(i, "", 1024)).collect();
    let p = run(&nodes, &[job("a", 4, Strategy::Pack, 256)], &[]);
    assert_eq!(
        per_node(&p, "a").len(),
        1,
        "four 256 MB slots fill one 1 GB node"
    );
    // Node 3 already carries something: packing starts there.
    let busy = job("busy", 1, Strategy::Pack, 512);
    let running = [record("busy", 0, NodeId::from_u64(3), InstanceState::Ready)];
    let p = run(&nodes, &[busy, job("b", 3, Strategy::Pack, 256)], &running);
    assert_eq!(node_of(&p, "b", 0), NodeId::from_u64(3));
    assert_eq!(node_of(&p, "b", 1), NodeId::from_u64(3));
    assert_ne!(node_of(&p, "b", 2), NodeId::from_u64(3), "node 3 is full");
}

#[test]
fn a_leaving_node_moves_only_its_own_slots_and_a_joining_node_moves_few() {
    let nodes: Vec<_> = (1..=50)
        .map(|i| node(i, ["a", "b"][i as usize % 2], 1 << 20))
        .collect();
    let jobs: Vec<_> = (0..20)
        .map(|i| job(&format!("j{i}"), 40, Strategy::Spread, 64))
        .collect();
    let before = run(&nodes, &jobs, &[]);
    let records = running(&before);

    // Leave: with the running instances known, exactly the gone node's slots move.
    let gone = NodeId::from_u64(7);
    let on_gone = before.assigned_to(gone).count();
    assert!(on_gone > 0);
    let mut left = nodes.clone();
    left.iter_mut().find(|v| v.id == gone).unwrap().liveness = Liveness::Down;
    let after = run(&left, &jobs, &records);
    assert_eq!(moved(&before, &after), on_gone);
    assert_eq!(after.assigned_to(gone).count(), 0);
    // From scratch (no instance records) the spread shares make one moved
    // slot push others along, so more move; still a small fraction.
    let fresh = run(&left, &jobs, &[]);
    assert!(
        moved(&before, &fresh) <= on_gone * 4,
        "{} vs {on_gone}",
        moved(&before, &fresh)
    );

    // Join: running slots stay (the share per node does not shrink).
    let mut joined = nodes.clone();
    joined.push(node(51, "a", 1 << 20));
    assert_eq!(moved(&before, &run(&joined, &jobs, &records)), 0);
    // From scratch, about count/(n+1) of the slots move to the new node.
    let fresh = run(&joined, &jobs, &[]);
    let ideal = 800 / 51;
    assert!(
        moved(&before, &fresh) <= ideal * 3,
        "{} vs ideal {ideal}",
        moved(&before, &fresh)
    );
}

#[test]
fn a_join_that_shrinks_the_share_moves_only_the_excess() {
    let nodes: Vec<_> = (1..=2).map(|i| node(i, "", 4096)).collect();
    let jobs = [job("web", 4, Strategy::Spread, 64)];
    let before = run(&nodes, &jobs, &[]);
    let mut more = nodes.clone();
    more.extend((3..=4).map(|i| node(i, "", 4096)));
    let after = run(&more, &jobs, &running(&before));
    assert_eq!(
        moved(&before, &after),
        2,
        "each old node gives one slot to a new one"
    );
    assert!(per_node(&after, "web").values().all(|&c| c == 1));
}

#[test]
fn a_crash_looped_node_is_avoided_for_that_job_until_the_avoidance_ends() {
    let nodes: Vec<_> = (1..=3).map(|i| node(i, "", 4096)).collect();
    let jobs = [
        job("web", 1, Strategy::Spread, 64),
        job("db", 3, Strategy::Spread, 64),
    ];
    let first = run(&nodes, &jobs, &[]);
    let bad = node_of(&first, "web", 0);
    let mut gave_up = record("web", 0, bad, InstanceState::Failed);
    gave_up.avoid_until_ms = Some(5_000);
    let recs = [gave_up];
    let during = place(&Cluster {
        wall_ms: 4_999,
        nodes: &nodes,
        jobs: &jobs,
        instances: &recs,
        versions: &[],
    });
    assert_ne!(node_of(&during, "web", 0), bad);
    assert_eq!(
        per_node(&during, "db").len(),
        3,
        "other jobs still use the node"
    );
    let plan = plan(
        &Cluster {
            wall_ms: 4_999,
            nodes: &nodes,
            jobs: &jobs,
            instances: &recs,
            versions: &[],
        },
        &jobs[0],
    );
    let why = &plan.slots[0]
        .rejected
        .iter()
        .find(|(n, _)| *n == bad)
        .unwrap()
        .1;
    assert_eq!(*why, Rejection::Avoided { until_ms: 5_000 });
    let after = place(&Cluster {
        wall_ms: 5_000,
        nodes: &nodes,
        jobs: &jobs,
        instances: &recs,
        versions: &[],
    });
    assert_eq!(node_of(&after, "web", 0), bad, "rendezvous brings it back");
}

#[test]
fn after_a_healed_split_one_of_two_running_copies_is_kept_by_every_node() {
    let nodes: Vec<_> = (1..=4).map(|i| node(i, "", 4096)).collect();
    let jobs = [job("web", 1, Strategy::Spread, 64)];
    let recs = [
        record("web", 0, NodeId::from_u64(2), InstanceState::Ready),
        record("web", 0, NodeId::from_u64(4), InstanceState::Ready),
    ];
    let p = run(&nodes, &jobs, &recs);
    let kept = node_of(&p, "web", 0);
    assert!([2, 4].contains(&kept.as_u64()));
    let mut rev = recs.clone();
    rev.reverse();
    assert_eq!(run(&nodes, &jobs, &rev), p);
}

#[test]
fn the_fingerprint_ignores_what_decides_nothing() {
    let nodes: Vec<_> = (1..=3).map(|i| node(i, "", 4096)).collect();
    let jobs = [job("web", 2, Strategy::Spread, 64)];
    let a = run(
        &nodes,
        &jobs,
        &[record(
            "web",
            0,
            NodeId::from_u64(1),
            InstanceState::Launching,
        )],
    );
    let b = run(
        &nodes,
        &jobs,
        &[record("web", 0, NodeId::from_u64(1), InstanceState::Ready)],
    );
    assert_eq!(
        a.fingerprint, b.fingerprint,
        "launching -> ready decides nothing"
    );
    let mut down = nodes.clone();
    down[2].liveness = Liveness::Down;
    let c = run(
        &down,
        &jobs,
        &[record("web", 0, NodeId::from_u64(1), InstanceState::Ready)],
    );
    assert_ne!(b.fingerprint, c.fingerprint);
}

/// A node dies: its records stay (only it writes them) and its member
/// entry goes from down to reaped, or it leaves. Only the first change
/// (up to not up) may restart the settle period of the nodes that watch.
#[test]
fn a_node_down_left_or_gone_is_one_and_the_same_input() {
    let nodes: Vec<_> = (1..=4).map(|i| node(i, "", 4096)).collect();
    let jobs = [job("web", 3, Strategy::Spread, 64)];
    let recs = running(&run(&nodes, &jobs, &[]));
    assert!(
        recs.iter().any(|r| r.node.as_u64() == 4),
        "node 4 runs a slot"
    );
    let with = |liveness: Option<Liveness>| {
        let mut ns = nodes.clone();
        match liveness {
            Some(l) => ns[3].liveness = l,
            None => {
                ns.pop();
            }
        }
        run(&ns, &jobs, &recs)
    };
    let up = with(Some(Liveness::Up));
    let down = with(Some(Liveness::Down));
    assert_ne!(up.fingerprint, down.fingerprint, "the death itself counts");
    assert_eq!(down.fingerprint, with(Some(Liveness::Left)).fingerprint);
    assert_eq!(down.fingerprint, with(None).fingerprint, "reaped");
    assert_eq!(
        down.job("web"),
        with(None).job("web"),
        "and the placements agree"
    );
    // A record on the dead node changing (it never will, but a late
    // replica might deliver one) changes nothing either.
    let mut late = recs.clone();
    late.retain(|r| r.node.as_u64() != 4);
    let mut ns = nodes.clone();
    ns[3].liveness = Liveness::Down;
    assert_eq!(run(&ns, &jobs, &late).fingerprint, down.fingerprint);
}

#[test]
fn plan_says_why_each_other_node_was_not_chosen() {
    let mut nodes = vec![
        node(1, "a", 4096),
        node(2, "b", 4096),
        node(3, "a", 32),
        node(4, "a", 4096),
    ];
    nodes[3].liveness = Liveness::Down;
    let mut j = job("web", 2, Strategy::Spread, 64);
    j.spec
        .constraints
        .insert("zone".into(), Constraint::Eq("a".into()));
    let cluster = Cluster {
        wall_ms: 0,
        nodes: &nodes,
        jobs: &[],
        instances: &[],
        versions: &[],
    };
    let plan = plan(&cluster, &j);
    assert_eq!(plan.slots.len(), 2);
    let s0 = &plan.slots[0];
    assert_eq!(s0.outcome, Slot::Node(NodeId::from_u64(1)));
    let why: BTreeMap<u64, String> = s0
        .rejected
        .iter()
        .map(|(n, r)| (n.as_u64(), r.to_string()))
        .collect();
    assert_eq!(why[&2], "constraint zone=a not matched");
    assert_eq!(why[&3], "insufficient memory (need 64 MB, free 32 MB)");
    assert_eq!(why[&4], "down");
    // The second slot goes to node 1 too (the only fit), past its share.
    assert_eq!(plan.slots[1].outcome, Slot::Node(NodeId::from_u64(1)));
    // Nothing was written: placing without the job leaves it unknown.
    assert!(place(&cluster).job("web").is_none());
}

#[test]
fn a_microvm_job_goes_only_to_nodes_that_report_kvm_and_reserves_qemu_memory() {
    use myco_proto::job::{Driver, MICROVM_OVERHEAD_MB, MICROVM_TAG};
    let mut nodes: Vec<_> = (1..=3).map(|i| node(i, "", 4096)).collect();
    let mut vm = job("vm", 2, Strategy::Spread, 128);
    vm.spec.driver = Driver::Microvm;
    // No node can: the job stays pending and says why.
    let p = run(&nodes, std::slice::from_ref(&vm), &[]);
    let Slot::Pending(why) = &p.job("vm").unwrap().slots[0] else {
        panic!("placed without a microVM-capable node")
    };
    assert_eq!(
        why,
        "no node can hold it: 3 cannot run microvm instances (no KVM or no QEMU)"
    );
    // Nodes 2 and 3 can: both slots land there, never on node 1.
    for n in &mut nodes[1..] {
        n.tags
            .as_mut()
            .unwrap()
            .insert(MICROVM_TAG.into(), "qemu".into());
    }
    let p = run(&nodes, std::slice::from_ref(&vm), &[]);
    let on: Vec<_> = (0..2).map(|s| node_of(&p, "vm", s)).collect();
    assert!(!on.contains(&NodeId::from_u64(1)), "{on:?}");
    let used: u64 = (1..=3)
        .map(|i| p.allocated(NodeId::from_u64(i)).memory_mb)
        .sum();
    assert_eq!(used, 2 * (128 + u64::from(MICROVM_OVERHEAD_MB)));
    // A process job still goes anywhere.
    let p = run(&nodes, &[job("web", 3, Strategy::Spread, 64)], &[]);
    let on: Vec<_> = (0..3).map(|s| node_of(&p, "web", s)).collect();
    assert!(on.contains(&NodeId::from_u64(1)), "{on:?}");
}

#[test]
fn an_old_instance_kept_by_a_rollout_holds_its_own_versions_room() {
    // One node of 2 GiB runs version 1 (512 MB); version 2 asks 1,536 MB.
    // Charged at its own size the old instance leaves room for the new
    // one beside it; charged at the new size (all placement knew before
    // it read the old version's record) it left 512 MB, and the rollout
    // could not start.
    let nodes = [node(1, "", 2048)];
    let v1 = job("web", 1, Strategy::Spread, 512);
    let mut spec = v1.spec.clone();
    spec.resources.memory_mb = 1536;
    let v2 = v1.next(spec, DIGEST, 0).unwrap();
    let old = [record("web", 0, nodes[0].id, InstanceState::Ready)];
    let with = |versions: &[JobRecord]| {
        place(&Cluster {
            wall_ms: 1_000,
            nodes: &nodes,
            jobs: std::slice::from_ref(&v2),
            instances: &old,
            versions,
        })
    };
    let known = with(std::slice::from_ref(&v1));
    assert_eq!(node_of(&known, "web", 0), nodes[0].id);
    // Without the old version's record it is charged the current size,
    // as before: the node is full.
    let unknown = with(&[]);
    assert!(
        matches!(unknown.job("web").unwrap().slots[0], Slot::Pending(_)),
        "{unknown:?}"
    );
    assert_ne!(known.fingerprint, unknown.fingerprint);
}

#[test]
fn a_draining_node_is_chosen_for_nothing_and_its_slots_move() {
    let mut nodes: Vec<_> = (1..=3).map(|i| node(i, "", 4096)).collect();
    let jobs = [job("web", 3, Strategy::Spread, 64)];
    let before = run(&nodes, &jobs, &[]);
    let leaving = nodes[0].id;
    assert_eq!(per_node(&before, "web").get(&leaving), Some(&1));
    let recs = running(&before);
    nodes[0].draining = true;
    let after = run(&nodes, &jobs, &recs);
    let spots = per_node(&after, "web");
    assert!(!spots.contains_key(&leaving), "{spots:?}");
    assert_eq!(spots.values().sum::<usize>(), 3, "{spots:?}");
    // The mark comes with the records: the shorter settle period.
    assert_eq!(after.members_fingerprint, before.members_fingerprint);
    assert_ne!(
        after.fingerprint,
        run(&nodes_undrained(&nodes), &jobs, &recs).fingerprint
    );
    let plan = plan(
        &Cluster {
            wall_ms: 1_000,
            nodes: &nodes,
            jobs: &jobs,
            instances: &recs,
            versions: &[],
        },
        &jobs[0],
    );
    assert!(
        plan.slots
            .iter()
            .filter(|s| !s.kept)
            .all(|s| s.rejected.contains(&(leaving, Rejection::Draining))),
        "{plan:?}"
    );
}

fn nodes_undrained(nodes: &[NodeView]) -> Vec<NodeView> {
    let mut out = nodes.to_vec();
    for n in &mut out {
        n.draining = false;
    }
    out
}
