use std::collections::BTreeMap;

use myco_proto::id::NodeId;
use myco_proto::instance::{INSTANCE_RECORD_FORMAT, InstanceRecord, InstanceState};
use myco_proto::job::{JobRecord, JobSpec};

use super::*;

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

fn job(name: &str) -> JobRecord {
    let text = format!("name = \"{name}\"\nspore = \"{DIGEST}\"\ncount = 3");
    JobRecord::first(JobSpec::from_toml(&text).unwrap(), DIGEST, 0).unwrap()
}

fn rec(job: &str, slot: u32, node: u64, state: InstanceState, port: u16) -> InstanceRecord {
    let node = NodeId::from_u64(node);
    InstanceRecord {
        format: INSTANCE_RECORD_FORMAT,
        id: InstanceRecord::id_for(job, slot, 1, node),
        job: job.into(),
        slot,
        version: 1,
        node,
        state,
        addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        digest: DIGEST.into(),
        restarts: 0,
        last_exit: None,
        reason: String::new(),
        avoid_until_ms: None,
        since_ms: 0,
    }
}

fn members(states: &[(u64, MemberState)]) -> BTreeMap<NodeId, MemberState> {
    states
        .iter()
        .map(|(n, s)| (NodeId::from_u64(*n), *s))
        .collect()
}

fn ports(list: &[Endpoint]) -> Vec<u16> {
    list.iter().map(|e| e.addr.port()).collect()
}

#[test]
fn only_ready_instances_on_live_nodes_take_requests() {
    let m = members(&[
        (1, MemberState::Alive),
        (2, MemberState::Suspect),
        (3, MemberState::Down),
        (4, MemberState::Left),
    ]);
    let recs = [
        rec("web", 0, 1, InstanceState::Ready, 1001),
        rec("web", 1, 2, InstanceState::Ready, 1002),
        rec("web", 2, 3, InstanceState::Ready, 1003),
        rec("web", 3, 4, InstanceState::Ready, 1004),
        rec("web", 4, 1, InstanceState::Launching, 1005),
        rec("web", 5, 1, InstanceState::Failed, 1006),
        rec("web", 6, 1, InstanceState::Stopped, 1007),
        // A node not in membership yet: not known to be up.
        rec("web", 7, 9, InstanceState::Ready, 1008),
    ];
    let t = RouteTable::build([&job("web")], &recs, &m);
    let web = t.get("web").unwrap();
    assert_eq!(ports(&web.ready), [1001, 1002]);
    assert!(web.draining.is_empty());
}

#[test]
fn draining_instances_are_listed_apart() {
    let m = members(&[(1, MemberState::Alive), (2, MemberState::Down)]);
    let recs = [
        rec("web", 0, 1, InstanceState::Draining, 1001),
        rec("web", 1, 1, InstanceState::Ready, 1002),
        rec("web", 2, 2, InstanceState::Draining, 1003),
    ];
    let t = RouteTable::build([&job("web")], &recs, &m);
    let web = t.get("web").unwrap();
    assert_eq!(ports(&web.ready), [1002]);
    assert_eq!(ports(&web.draining), [1001]);
}

#[test]
fn a_known_job_without_ready_instances_is_present_and_an_unknown_one_absent() {
    let m = members(&[(1, MemberState::Alive)]);
    let mut stopped = job("old");
    stopped.stopped = true;
    let recs = [rec("orphan", 0, 1, InstanceState::Launching, 1001)];
    let t = RouteTable::build([&job("web"), &stopped], &recs, &m);
    assert!(t.get("web").unwrap().ready.is_empty());
    assert!(!t.get("web").unwrap().stopped);
    assert!(t.get("old").unwrap().stopped);
    // Known by its instance record alone (the job record may lag).
    assert!(t.get("orphan").is_some());
    assert!(t.get("nosuch").is_none());
    assert_eq!(t.len(), 3);
}

#[test]
fn instances_without_an_address_are_skipped() {
    let m = members(&[(1, MemberState::Alive)]);
    let mut r = rec("web", 0, 1, InstanceState::Ready, 1001);
    r.addr = None;
    let t = RouteTable::build([], [&r], &m);
    assert!(t.get("web").unwrap().ready.is_empty());
}

#[test]
fn the_table_does_not_depend_on_input_order() {
    let m = members(&[(1, MemberState::Alive), (2, MemberState::Alive)]);
    let mut recs = vec![
        rec("a", 0, 1, InstanceState::Ready, 1),
        rec("a", 1, 2, InstanceState::Ready, 2),
        rec("b", 0, 2, InstanceState::Draining, 3),
        rec("b", 1, 1, InstanceState::Ready, 4),
    ];
    let one = RouteTable::build([&job("a"), &job("b")], &recs, &m);
    recs.reverse();
    let two = RouteTable::build([&job("b"), &job("a")], &recs, &m);
    assert_eq!(one, two);
    let names: Vec<&str> = one.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn the_jobs_balance_choice_is_in_its_routes() {
    let m = members(&[(1, MemberState::Alive)]);
    let mut rr = job("rr");
    rr.spec.edge.balance = Balance::RoundRobin;
    let recs = [rec("orphan", 0, 1, InstanceState::Ready, 1001)];
    let t = RouteTable::build([&job("web"), &rr], &recs, &m);
    assert_eq!(t.get("rr").unwrap().balance, Balance::RoundRobin);
    assert_eq!(t.get("web").unwrap().balance, Balance::LeastRequests);
    // Known by an instance record only: the default.
    assert_eq!(t.get("orphan").unwrap().balance, Balance::LeastRequests);
}
