//! A graceful leave through the controller: replacements ready elsewhere
//! first, then its own stopped.

use myco_proto::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};

use super::super::*;
use super::shell::*;
use crate::jobs::placement::tests::{node, record};

/// Node 1 of two running `web`'s one instance, started; node 2 has no
/// room by its manifest, so the slot is node 1's.
fn running_web() -> (Shell, String) {
    let me = node(1, "", 4096);
    let cap = me.capacity;
    let mut s = Shell::new(vec![me, node(2, "", 1)], vec![quick("web", 1, false)], cap);
    s.scan(vec![]);
    let acts = s.advance(SETTLE.as_millis() as u64);
    let id = spawns(&acts)[0].clone();
    s.event(&id, ProcessEvent::Started);
    (s, id)
}

#[test]
fn a_leaving_node_keeps_its_instance_until_the_slot_is_ready_elsewhere() {
    let (mut s, id) = running_web();
    let cap = s.view.nodes[0].capacity;
    assert!(!s.c.handed_off());

    let until = WALL0 + s.now.0 + 30_000;
    s.c.hand_off(s.now, std::time::Duration::from_secs(30));
    let acts = s.drain();
    assert_eq!(s.record(&id).map(|r| r.avoid_until_ms), Some(Some(until)));
    assert!(
        kills(&acts).is_empty(),
        "not before the replacement: {acts:?}"
    );
    s.sync();
    let acts = s.advance(s.now.0 + 5_000);
    assert!(kills(&acts).is_empty(), "still no replacement: {acts:?}");
    assert!(spawns(&acts).is_empty(), "a leaving node starts nothing");

    // Node 2's replacement is ready: now ours stops.
    let mut r = record("web", 0, NodeId::from_u64(2), InstanceState::Ready);
    r.id = InstanceRecord::id_for("web", 0, 1, NodeId::from_u64(2));
    s.view.instances.push(r);
    // Drained first, as a replaced rollout instance: the edges see
    // `draining` and stop sending it requests before it is stopped.
    let acts = s.sync();
    assert!(kills(&acts).is_empty(), "drained before the stop: {acts:?}");
    assert_eq!(
        s.record(&id).map(|r| r.state),
        Some(InstanceState::Draining)
    );
    let acts = s.advance(s.now.0 + DEFAULT_DRAIN.as_millis() as u64 + 500);
    assert_eq!(kills(&acts), std::slice::from_ref(&id), "{acts:?}");
    s.event(
        &id,
        ProcessEvent::Exited(myco_proto::instance::Exit::Signal(15)),
    );
    assert!(s.c.handed_off());

    // While it leaves, its record keeps the slot away from it.
    let acts = s.advance(s.now.0 + 5_000);
    assert!(
        !acts.iter().any(|a| matches!(a, JobAction::Delete { .. })),
        "{acts:?}"
    );
    assert_eq!(s.record(&id).map(|r| r.avoid_until_ms), Some(Some(until)));

    // Back within the bound (a restart, a rolling upgrade): the next life
    // forgets that avoidance at once, so placement may use this node again
    // instead of piling the job onto the others until the bound runs out.
    let mut next = s.restart(cap);
    next.advance(next.now.0 + SETTLE.as_millis() as u64);
    assert_eq!(
        next.record(&id),
        None,
        "the hand-off's avoidance outlived it"
    );
    assert!(next.view.wall_ms < until);
}

#[test]
fn a_leaving_node_whose_peers_all_drain_stops_waiting_for_them() {
    // A whole mesh stopped at once: node 2 is up, so node 1 waits for it
    // to take the slot; once node 2 is draining too it will start nothing,
    // and waiting out the bound for it gains nothing.
    let (mut s, id) = running_web();
    s.c.hand_off(s.now, std::time::Duration::from_secs(30));
    s.drain();
    let acts = s.sync();
    assert!(
        kills(&acts).is_empty(),
        "node 2 may still take it: {acts:?}"
    );
    assert_ne!(
        s.record(&id).map(|r| r.state),
        Some(InstanceState::Draining)
    );

    s.view.nodes[1].draining = true;
    s.sync();
    assert_eq!(
        s.record(&id).map(|r| r.state),
        Some(InstanceState::Draining),
        "drained at once, not after the 30 s bound"
    );
    let acts = s.advance(s.now.0 + DEFAULT_DRAIN.as_millis() as u64 + 500);
    assert_eq!(kills(&acts), std::slice::from_ref(&id), "{acts:?}");
}
