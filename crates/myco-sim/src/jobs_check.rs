//! The jobs checkers, apart from the world they judge. Safety, every step:
//! no node runs more than its capacity, no instance runs where its job's
//! constraints refuse; at every start: no node spawns a live instance
//! again, no two nodes start one slot from the same view. Liveness, after
//! the heal: every job has exactly `count` ready instances (as many as
//! placement can hold, where capacity is short: the rest pending).

use std::collections::BTreeMap;

use myco_core::Node;
use myco_core::jobs::controller::Controller;
use myco_core::jobs::placement::{Placement, Slot};
use myco_proto::frame::Capacity;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::JobRecord;
use myco_proto::state::Table;

use crate::check::ViolationKind;
use crate::jobs_procs::Procs;
use crate::world::id_of;

type Shape = (BTreeMap<String, String>, Capacity);
/// (job, slot) to the live processes filling it: (node, id, version).
type Live<'a> = BTreeMap<(String, u32), Vec<(usize, &'a str, u64)>>;

/// What is wrong now, if anything: a node over its capacity or an
/// instance on a node its constraints refuse (live processes count,
/// whether their agent runs or not).
pub(crate) fn safety(procs: &Procs, shapes: &[Shape]) -> Option<(ViolationKind, String)> {
    let mut used: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
    for ((node, id), p) in procs.map.iter().filter(|(_, p)| p.alive) {
        let r = p.job.spec.reserved();
        let u = used.entry(*node).or_default();
        u.0 += u64::from(r.cpu_milli);
        u.1 += u64::from(r.memory_mb);
        let (tags, _) = &shapes[*node];
        for (key, c) in &p.job.spec.constraints {
            if !c.matches(tags.get(key).map(String::as_str)) {
                let msg = format!("n{node} runs {id}, but {}", c.describe(key));
                return Some((ViolationKind::ConstraintBroken, msg));
            }
        }
    }
    for (node, (cpu, mem)) in used {
        let cap = shapes[node].1;
        if cpu > u64::from(cap.cpu_milli) || mem > cap.memory_mb {
            let msg = format!(
                "n{node} runs {cpu} milli-CPU and {mem} MB, capacity {} and {}",
                cap.cpu_milli, cap.memory_mb
            );
            return Some((ViolationKind::OverCapacity, msg));
        }
    }
    None
}

/// Whether node `node` may start instance `id` of `job`'s `slot` now, with
/// its placement fingerprint `fp`: not if it runs it already, nor, for a
/// `first` start (not a restart), if another node runs that slot, started
/// from the very same view (same inputs give the same placement, so one
/// of them broke the rule).
pub(crate) fn start(
    procs: &Procs,
    node: usize,
    id: &str,
    job: &JobRecord,
    slot: u32,
    fp: u64,
    first: bool,
) -> Option<(ViolationKind, String)> {
    if procs
        .map
        .get(&(node, id.to_string()))
        .is_some_and(|p| p.alive)
    {
        let msg = format!("n{node} spawned {id} while it runs");
        return Some((ViolationKind::StartedTwice, msg));
    }
    let twin = procs.map.iter().find(|((n, _), p)| {
        first
            && *n != node
            && p.alive
            && p.job.name() == job.name()
            && p.job.version == job.version
            && p.slot == slot
            && p.fingerprint == fp
    });
    twin.map(|((n, other), _)| {
        let msg = format!(
            "n{node} starts {id} and n{n} runs {other}: slot {slot} of {} started twice from view {fp:x}",
            job.name()
        );
        (ViolationKind::StartedTwice, msg)
    })
}

/// Whether the jobs converged: the running nodes hold the same jobs and
/// the same placement, and every slot that placement assigns has exactly
/// one live process, of the job's current version, on the node assigned,
/// ready by its controller and by its node's record; a pending slot has
/// none, and no other process lives on a running node. Returns (ready,
/// pending); `Err` says what is missing.
pub(crate) fn converged(
    nodes: &[Option<Node>],
    controllers: &[Option<Controller>],
    procs: &Procs,
) -> Result<(usize, usize), String> {
    let running: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].is_some()).collect();
    let jobs_of = |n: &Node| -> Vec<Vec<u8>> {
        n.scan(Table::JOBS, "")
            .filter_map(|(_, e)| e.value.clone())
            .collect()
    };
    let Some(&first) = running.first() else {
        return Ok((0, 0));
    };
    let first_node = nodes[first].as_ref().expect("running");
    let jobs = jobs_of(first_node);
    if let Some(&i) = running
        .iter()
        .find(|&&i| jobs_of(nodes[i].as_ref().expect("running")) != jobs)
    {
        return Err(format!("n{i} and n{first} hold different jobs"));
    }
    let placements: Vec<&Placement> = running
        .iter()
        .filter_map(|&i| controllers[i].as_ref().map(Controller::placement))
        .collect();
    let Some(placement) = placements.first() else {
        return Err("no controller yet".into());
    };
    if placements.len() < running.len()
        || placements
            .iter()
            .any(|p| p.fingerprint != placement.fingerprint)
    {
        return Err("the nodes place on different views".into());
    }
    let jobs: Vec<JobRecord> = jobs
        .iter()
        .filter_map(|b| JobRecord::decode(b).ok())
        .collect();
    // (job, slot) -> live processes on running nodes.
    let mut live: Live<'_> = BTreeMap::new();
    for ((n, id), p) in procs.map.iter().filter(|(_, p)| p.alive) {
        if nodes[*n].is_none() {
            continue; // a machine whose agent is down: judged once it is back
        }
        live.entry((p.job.name().to_string(), p.slot))
            .or_default()
            .push((*n, id.as_str(), p.job.version));
    }
    let (mut ready, mut pending) = (0, 0);
    for j in jobs.iter().filter(|j| !j.stopped) {
        let Some(jp) = placement.job(j.name()) else {
            return Err(format!("{} not placed", j.name()));
        };
        for (slot, where_) in jp.slots.iter().enumerate() {
            let found = live.remove(&(j.name().to_string(), slot as u32));
            let Slot::Node(want) = where_ else {
                if let Some(found) = found {
                    return Err(format!(
                        "{} slot {slot} pending but runs {found:?}",
                        j.name()
                    ));
                }
                pending += 1;
                continue;
            };
            let Some(found) = found else {
                return Err(format!("{} slot {slot}: no process", j.name()));
            };
            let [(n, id, version)] = found[..] else {
                return Err(format!(
                    "{} slot {slot}: {} processes",
                    j.name(),
                    found.len()
                ));
            };
            if version != j.version || id_of(n) != *want {
                return Err(format!("{id} on n{n}: placed on {want} at v{}", j.version));
            }
            let state = controllers[n]
                .as_ref()
                .and_then(|c| c.local().find(|(i, _)| *i == id).map(|(_, s)| s));
            if state != Some(InstanceState::Ready) {
                return Err(format!("{id} on n{n}: {state:?} by its controller"));
            }
            let key = InstanceRecord::key_of(j.name(), id);
            let record = nodes[n]
                .as_ref()
                .and_then(|node| node.get(Table::INSTANCES, &key))
                .and_then(|e| e.value.as_deref())
                .and_then(|b| InstanceRecord::decode(b).ok());
            if record.as_ref().map(|r| r.state) != Some(InstanceState::Ready) {
                return Err(format!("{id} on n{n}: record not ready"));
            }
            ready += 1;
        }
    }
    if let Some(((job, slot), extra)) = live.into_iter().next() {
        return Err(format!("{job} slot {slot}: unwanted {extra:?}"));
    }
    Ok((ready, pending))
}

/// Whether two processes of one slot of a `duplicates = "never"` job are
/// alive at once (started or starting: the stronger rule, since a
/// starting process may be ready at any moment).
pub(crate) fn never_twice(procs: &Procs) -> Option<(ViolationKind, String)> {
    use myco_proto::job::Duplicates;
    let mut seen: BTreeMap<(&str, u32), (usize, &str)> = BTreeMap::new();
    for ((node, id), p) in procs.map.iter().filter(|(_, p)| p.alive) {
        if p.job.spec.duplicates != Duplicates::Never {
            continue;
        }
        if let Some((n2, id2)) = seen.insert((p.job.name(), p.slot), (*node, id)) {
            let msg = format!("n{n2} runs {id2} and n{node} runs {id}, one never slot");
            return Some((ViolationKind::NeverDuplicated, msg));
        }
    }
    None
}
