//! `duplicates = "never"` through the controller: the minority fences, the
//! majority waits the lease out, a rollout breaks before it makes.

use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::instance::{Exit, InstanceRecord, InstanceState};
use myco_proto::job::{Duplicates, JobRecord};

use super::super::*;
use super::shell::*;
use crate::jobs::placement::tests::{node, record};

pub(super) fn never(name: &str, count: u32) -> JobRecord {
    let mut j = quick(name, count, false);
    j.spec.duplicates = Duplicates::Never;
    j
}

fn n(i: u64) -> NodeId {
    NodeId::from_u64(i)
}

/// Me and nodes 2 and 3; only me has room, so every slot is mine.
pub(super) fn three(jobs: Vec<JobRecord>) -> Shell {
    let me = node(1, "", 4096);
    let cap = me.capacity;
    let mut s = Shell::new(vec![me, node(2, "", 1), node(3, "", 1)], jobs, cap);
    s.scan(vec![]);
    s
}

fn set_down(s: &mut Shell, ids: &[u64]) -> Vec<JobAction> {
    for v in &mut s.view.nodes {
        if ids.contains(&v.id.as_u64()) {
            v.liveness = Liveness::Down;
        }
    }
    s.sync()
}

#[test]
fn a_node_without_a_majority_stops_its_never_instances_and_keeps_allowed_ones() {
    let mut s = three(vec![never("lock", 1), quick("web", 1, false)]);
    let acts = s.advance(SETTLE.as_millis() as u64);
    let ids = spawns(&acts);
    assert_eq!(ids.len(), 2, "{acts:?}");
    for id in &ids {
        s.event(id, ProcessEvent::Started);
    }
    assert_eq!(s.c.fence_reason("lock"), None);

    // Nodes 2 and 3 go down: me sees 1 of 3, at once.
    let acts = set_down(&mut s, &[2, 3]);
    assert_eq!(kills(&acts), [id("lock", 0)], "only the never one stops");
    assert_eq!(
        s.c.fence_reason("lock").as_deref(),
        Some("no majority: sees 1 of 3 nodes")
    );
    assert_eq!(s.c.fence_reason("web"), None, "allowed jobs are not fenced");
    let events: Vec<_> = std::iter::from_fn(|| s.c.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| e.kind == JobEventKind::Fenced && e.message.contains("sees 1 of 3")),
        "{events:?}"
    );
    s.event(&id("lock", 0), ProcessEvent::Exited(Exit::Signal(15)));

    // However long it stays alone, it never starts it again.
    let acts = s.advance(60_000);
    assert!(spawns(&acts).is_empty(), "{acts:?}");
}

#[test]
fn a_suspect_is_not_seen_by_the_fence() {
    let mut s = three(vec![never("lock", 1)]);
    let acts = s.advance(SETTLE.as_millis() as u64);
    s.event(&spawns(&acts)[0], ProcessEvent::Started);
    s.view.suspects = vec![n(2), n(3)];
    let acts = s.sync();
    assert_eq!(kills(&acts), [id("lock", 0)]);
}

#[test]
fn the_majority_starts_a_gone_nodes_never_slot_only_after_the_lease_wait() {
    let mut s = three(vec![never("lock", 1)]);
    // Node 3 runs the slot (its record says ready), then goes down.
    let mut r = record("lock", 0, n(3), InstanceState::Ready);
    r.id = InstanceRecord::id_for("lock", 0, 1, n(3));
    s.view.instances.push(r);
    s.view.nodes[2].capacity.memory_mb = 4096;
    s.sync();
    assert!(spawns(&s.advance(5_000)).is_empty(), "node 3 holds it");
    let down_at = s.now.0;
    set_down(&mut s, &[3]);
    let kill = Duration::from_millis(s.view.jobs[0].spec.kill_timeout_ms);
    let wait = FenceConfig::default().wait(kill).as_millis() as u64;
    assert_eq!(wait, 8_580, "(3 s + 5 s kill) * 1.01 + 0.5 s");
    let acts = s.advance(down_at + wait - 1);
    assert!(spawns(&acts).is_empty(), "still inside the lease: {acts:?}");
    let acts = s.advance(down_at + wait);
    assert_eq!(spawns(&acts), [id("lock", 0)]);
}

#[test]
fn a_never_slot_does_not_start_while_another_copy_is_live_on_an_up_node() {
    let mut s = three(vec![never("lock", 1)]);
    // Node 2 (up, no room by its manifest) still runs a copy.
    let mut r = record("lock", 0, n(2), InstanceState::Ready);
    r.id = InstanceRecord::id_for("lock", 0, 1, n(2));
    s.view.instances.push(r.clone());
    s.view.nodes[1].capacity.memory_mb = 1;
    s.sync();
    let acts = s.advance(10_000);
    // Placement keeps a running slot where it runs, so it is not even
    // mine; once node 2's copy stops, it is.
    assert!(spawns(&acts).is_empty(), "{acts:?}");
    s.view.instances.retain(|x| x.id != r.id);
    r.state = InstanceState::Stopped;
    s.view.instances.push(r);
    s.sync();
    let acts = s.advance(12_000);
    assert_eq!(spawns(&acts), [id("lock", 0)]);
}

#[test]
fn a_never_rollout_stops_the_old_instance_before_starting_the_new() {
    let mut s = three(vec![never("lock", 1)]);
    let acts = s.advance(SETTLE.as_millis() as u64);
    let old = spawns(&acts)[0].clone();
    s.event(&old, ProcessEvent::Started);
    let mut v2 = s.view.jobs[0].clone();
    v2.version = 2;
    v2.spec.env.insert("V".into(), "2".into());
    s.view.jobs = vec![v2];
    let mut acts = s.sync();
    acts.extend(s.advance(s.now.0 + 2_000));
    assert_eq!(kills(&acts), std::slice::from_ref(&old), "{acts:?}");
    assert!(spawns(&acts).is_empty(), "not beside the old: {acts:?}");
    let mut acts = s.event(&old, ProcessEvent::Exited(Exit::Signal(15)));
    acts.extend(s.advance(s.now.0 + 2_000));
    assert_eq!(spawns(&acts), [InstanceRecord::id_for("lock", 0, 2, me())]);
}

/// Me, restarted alone (nodes 2 and 3 down to me), with a `lock` instance
/// that survived the previous agent.
fn restarted_alone(hold_until: u64) -> (Shell, Vec<JobAction>) {
    let mine = node(1, "", 4096);
    let cap = mine.capacity;
    let nodes = vec![mine, node(2, "", 1), node(3, "", 1)];
    let mut s = Shell::new(nodes, vec![never("lock", 1)], cap);
    for v in &mut s.view.nodes[1..] {
        v.liveness = Liveness::Down;
    }
    let mut r = record("lock", 0, me(), InstanceState::Ready);
    r.id = id("lock", 0);
    s.view.instances.push(r);
    s.sync();
    s.c.hold_fence_until(Time(hold_until));
    let found = Found {
        id: id("lock", 0),
        job: "lock".into(),
        slot: 0,
        version: 1,
        addr: None,
    };
    let acts = s.scan(vec![found]);
    (s, acts)
}

#[test]
fn a_restarted_node_keeps_its_never_survivors_while_the_old_lease_covers_them() {
    let (mut s, acts) = restarted_alone(2_000);
    assert!(kills(&acts).is_empty(), "fenced inside the lease: {acts:?}");
    assert!(
        s.advance(1_999)
            .iter()
            .all(|a| kills(std::slice::from_ref(a)).is_empty())
    );
    // Still alone when the lease ends: fenced then.
    let acts = s.advance(2_000);
    assert_eq!(kills(&acts), [id("lock", 0)], "{acts:?}");

    // Without a hold (a node that was never restarted), at once.
    let (_, acts) = restarted_alone(0);
    assert_eq!(kills(&acts), [id("lock", 0)], "{acts:?}");
}

#[test]
fn a_restarted_node_that_finds_its_majority_within_the_lease_keeps_its_never_instance() {
    let (mut s, acts) = restarted_alone(2_000);
    assert!(kills(&acts).is_empty(), "{acts:?}");
    s.now = Time(800);
    for v in &mut s.view.nodes[1..] {
        v.liveness = Liveness::Up;
    }
    let mut acts = s.sync();
    acts.extend(s.advance(30_000));
    assert!(kills(&acts).is_empty(), "{acts:?}");
}
