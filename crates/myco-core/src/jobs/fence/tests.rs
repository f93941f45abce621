use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::instance::InstanceState;

use super::*;
use crate::jobs::placement::tests::{node, record};

fn view(states: &[Liveness]) -> View {
    let nodes = states
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let mut n = node(i as u64 + 1, "", 1024);
            n.liveness = l;
            n
        })
        .collect();
    View {
        nodes,
        ..View::default()
    }
}

const UP: Liveness = Liveness::Up;
const DOWN: Liveness = Liveness::Down;
const LEFT: Liveness = Liveness::Left;

fn me() -> NodeId {
    NodeId::from_u64(1)
}

#[test]
fn a_majority_is_more_than_half_of_the_registered_nodes() {
    let mut f = Fence::default();
    f.observe(Time::ZERO, me(), &view(&[UP, UP, DOWN]));
    assert_eq!(
        f.quorum(),
        Quorum {
            sees: 2,
            registered: 3
        }
    );
    assert!(f.quorum().majority());
    f.observe(Time::ZERO, me(), &view(&[UP, UP, DOWN, DOWN]));
    assert!(!f.quorum().majority(), "2 of 4 is no majority");
    assert_eq!(f.quorum().reason(), "no majority: sees 2 of 4 nodes");
    // A node that left on purpose is not registered any more.
    f.observe(Time::ZERO, me(), &view(&[UP, UP, LEFT, LEFT]));
    assert_eq!(
        f.quorum(),
        Quorum {
            sees: 2,
            registered: 2
        }
    );
}

#[test]
fn suspects_are_not_seen_and_record_holders_are_registered() {
    let mut f = Fence::default();
    let mut v = view(&[UP, UP, UP]);
    v.suspects = vec![NodeId::from_u64(2)];
    f.observe(Time::ZERO, me(), &v);
    assert_eq!(
        f.quorum(),
        Quorum {
            sees: 2,
            registered: 3
        }
    );
    // Restarted alone: membership knows only me, the replica knows 2 and 3
    // ran work.
    let mut v = view(&[UP]);
    v.instances = vec![
        record("a", 0, NodeId::from_u64(2), InstanceState::Ready),
        record("a", 1, NodeId::from_u64(3), InstanceState::Ready),
    ];
    f.observe(Time::ZERO, me(), &v);
    assert_eq!(
        f.quorum(),
        Quorum {
            sees: 1,
            registered: 3
        }
    );
}

#[test]
fn the_lease_runs_from_when_this_node_saw_a_node_go() {
    let mut f = Fence::default();
    let wait = Duration::from_secs(8);
    f.observe(Time(0), me(), &view(&[UP, UP, UP]));
    assert_eq!(f.clear_at(wait), None);
    f.observe(Time(1_000), me(), &view(&[UP, UP, DOWN]));
    f.observe(Time(2_000), me(), &view(&[UP, UP, DOWN]));
    assert_eq!(f.clear_at(wait), Some(Time(9_000)), "first seen at 1 s");
    f.observe(Time(3_000), me(), &view(&[UP, LEFT, DOWN]));
    assert_eq!(f.clear_at(wait), Some(Time(11_000)), "the latest to go");
    f.observe(Time(4_000), me(), &view(&[UP, UP, UP]));
    assert_eq!(f.clear_at(wait), None, "back up: nothing to wait for");
}

#[test]
fn the_wait_is_the_fence_and_kill_time_stretched_by_the_drift_plus_the_margin() {
    let c = FenceConfig {
        fence: Duration::from_secs(2),
        drift_ppm: 50_000,
        margin: Duration::from_millis(100),
    };
    assert_eq!(c.wait(Duration::from_secs(2)), Duration::from_millis(4_300));
}
