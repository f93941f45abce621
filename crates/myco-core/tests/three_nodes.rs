//! Three cores wired back to back with instant delivery: the smallest check
//! that joining, manifests, failure detection and leaving work end to end in
//! the core. The simulator (`myco-sim`) covers faults and scale.

mod support;
use support::node;

use myco_core::{MemberState, Node, Time};
use myco_proto::{ClusterKey, KeyRing, NodeId};

/// Runs until `until` in 10 ms steps, delivering every datagram within the
/// step it was sent in, except to or from nodes listed as dead.
fn run(nodes: &mut [Node], dead: &[usize], from: Time, until: Time) {
    let mut now = from;
    while now < until {
        for (i, n) in nodes.iter_mut().enumerate() {
            if !dead.contains(&i) {
                n.handle_timeout(now);
            }
        }
        let mut moved = true;
        while moved {
            moved = false;
            for i in 0..nodes.len() {
                while let Some(t) = nodes[i].poll_transmit() {
                    moved = true;
                    let Some(j) = nodes.iter().position(|n| n.identity().addr == t.to) else {
                        continue;
                    };
                    if dead.contains(&i) || dead.contains(&j) {
                        continue;
                    }
                    let src = nodes[i].identity().addr;
                    nodes[j].handle_datagram(now, src, &t.payload);
                }
            }
        }
        now = Time(now.0 + 10);
    }
}

fn state_of(n: &Node, i: u64) -> Option<MemberState> {
    n.members()
        .into_iter()
        .find(|m| m.peer.id == NodeId::from_u64(i))
        .map(|m| m.state)
}

#[test]
fn three_nodes_join_exchange_manifests_detect_death_and_see_leave() {
    let mut nodes = vec![node(1, 7), node(2, 7), node(3, 7)];
    let seed = nodes[0].identity().addr;
    nodes[1].join(Time::ZERO, seed);
    nodes[2].join(Time::ZERO, seed);
    run(&mut nodes, &[], Time::ZERO, Time(3000));
    for n in &nodes {
        let members = n.members();
        assert_eq!(members.len(), 3, "{:?}", members);
        assert!(members.iter().all(|m| m.state == MemberState::Alive));
        assert!(
            members.iter().all(|m| m.manifest.is_some()),
            "manifests fetched"
        );
    }
    // Node 3 dies: the others declare it down within the configured bound.
    run(&mut nodes, &[2], Time(3000), Time(6000));
    assert_eq!(state_of(&nodes[0], 3), Some(MemberState::Down));
    assert_eq!(state_of(&nodes[1], 3), Some(MemberState::Down));
    // Node 2 leaves on purpose: node 1 reports it as left, not down.
    nodes[1].leave(Time(6000));
    run(&mut nodes, &[2], Time(6000), Time(9000));
    assert_eq!(state_of(&nodes[0], 2), Some(MemberState::Left));
}

#[test]
fn a_node_with_another_cluster_key_stays_out_and_is_counted() {
    let mut nodes = vec![node(1, 7), node(2, 9)];
    let seed = nodes[0].identity().addr;
    nodes[1].join(Time::ZERO, seed);
    run(&mut nodes, &[], Time::ZERO, Time(3000));
    assert_eq!(nodes[0].members().len(), 1);
    assert_eq!(nodes[1].members().len(), 1);
    assert!(
        nodes[0]
            .stats()
            .dropped
            .get("unknown_key")
            .copied()
            .unwrap_or(0)
            >= 1
    );
}

#[test]
fn cluster_key_rotates_without_losing_the_mesh() {
    let old = ClusterKey::from_bytes([7; 32]);
    let new = ClusterKey::from_bytes([8; 32]);
    let mut nodes = vec![node(1, 7), node(2, 7), node(3, 7)];
    let seed = nodes[0].identity().addr;
    nodes[1].join(Time::ZERO, seed);
    nodes[2].join(Time::ZERO, seed);
    run(&mut nodes, &[], Time::ZERO, Time(3000));
    let all_alive = |nodes: &[Node]| {
        nodes.iter().all(|n| {
            n.members()
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count()
                == 3
        })
    };
    let mut t = 3000;
    // Step 1: every node accepts the new key; step 2: every node seals with
    // it; step 3: the old key is dropped. The mesh stays whole throughout,
    // one node at a time.
    let steps: [Box<dyn Fn() -> KeyRing>; 3] = [
        Box::new(|| {
            let mut r = KeyRing::new(old.clone());
            r.push(new.clone());
            r
        }),
        Box::new(|| {
            let mut r = KeyRing::new(new.clone());
            r.push(old.clone());
            r
        }),
        Box::new(|| KeyRing::new(new.clone())),
    ];
    for step in &steps {
        for i in 0..nodes.len() {
            nodes[i].set_keys(step());
            run(&mut nodes, &[], Time(t), Time(t + 1500));
            t += 1500;
            assert!(all_alive(&nodes), "mesh split during rotation at node {i}");
        }
    }
    assert!(nodes.iter().all(|n| n.key_id() == new.id()));
    assert!(
        nodes
            .iter()
            .all(|n| !n.stats().dropped.contains_key("unknown_key"))
    );
}
