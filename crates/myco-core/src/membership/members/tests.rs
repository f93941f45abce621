//! The member table alone: states, bounds, indexes and slices.

use super::*;

fn peer(id: u64, boot: u64) -> Peer {
    Peer {
        id: NodeId::from_u64(id),
        addr: "127.0.0.1:1".parse().unwrap(),
        boot,
        bump: 0,
    }
}

fn state(t: &MemberTable, id: u64) -> MemberState {
    t.view(NodeId::from_u64(id), None).unwrap().state
}

#[test]
fn left_survives_the_down_that_follows_it() {
    let mut t = MemberTable::new(10, Duration::from_secs(1));
    t.up(Time(0), peer(1, 1));
    assert_eq!(t.left(Time(1), peer(1, 1)), Update::Changed);
    assert_eq!(t.down(Time(2), peer(1, 1)), Update::Unchanged);
    assert_eq!(state(&t, 1), MemberState::Left);
    t.up(Time(3), peer(1, 2));
    assert_eq!(state(&t, 1), MemberState::Alive);
}

#[test]
fn a_down_for_an_older_life_does_not_touch_the_new_one() {
    let mut t = MemberTable::new(10, Duration::from_secs(1));
    t.up(Time(0), peer(1, 2));
    assert_eq!(t.down(Time(1), peer(1, 1)), Update::Unchanged);
    assert_eq!(state(&t, 1), MemberState::Alive);
}

#[test]
fn a_member_is_suspect_only_in_the_life_foca_suspects() {
    let mut t = MemberTable::new(10, Duration::from_secs(1));
    t.up(Time(0), peer(1, 2));
    let id = NodeId::from_u64(1);
    assert_eq!(
        t.view(id, Some(peer(1, 1))).unwrap().state,
        MemberState::Alive
    );
    assert_eq!(
        t.view(id, Some(peer(1, 2))).unwrap().state,
        MemberState::Suspect
    );
    let suspects = BTreeMap::from([(id, peer(1, 2))]);
    let listed: Vec<MemberView> = t.views(&suspects).collect();
    assert_eq!(listed, vec![t.view(id, Some(peer(1, 2))).unwrap()]);
    assert_eq!(t.view(NodeId::from_u64(2), None), None);
}

#[test]
fn table_is_bounded_and_forgets_old_downs() {
    let mut t = MemberTable::new(1, Duration::from_secs(1));
    assert_eq!(t.up(Time(0), peer(1, 1)), Update::Changed);
    assert_eq!(t.up(Time(0), peer(2, 1)), Update::Full);
    t.down(Time(10), peer(1, 1));
    t.forget(Time(20), Duration::from_millis(100));
    assert_eq!(t.len(), 1);
    t.forget(Time(200), Duration::from_millis(100));
    assert_eq!(t.len(), 0);
}

fn manifest(id: u64, boot: u64) -> NodeManifest {
    NodeManifest {
        format: 1,
        id: NodeId::from_u64(id),
        boot,
        name: "a".into(),
        tags: Default::default(),
        capacity: Default::default(),
        mesh_addr: "127.0.0.1:1".parse().unwrap(),
        api_addr: None,
        edge_addr: None,
        version: "0".into(),
        key_id: "0".into(),
        speaks: myco_proto::compat::THIS_BUILD,
    }
}

#[test]
fn manifests_are_asked_once_per_retry_and_only_while_stale() {
    let mut t = MemberTable::new(10, Duration::from_secs(1));
    t.up(Time(0), peer(1, 1));
    assert_eq!(t.manifests_wanted(Time(0), 10).len(), 1);
    assert_eq!(t.manifests_wanted(Time(500), 10).len(), 0);
    assert_eq!(t.manifests_wanted(Time(1000), 10).len(), 1);
    assert_eq!(t.set_manifest(manifest(1, 1)), Update::Changed);
    assert_eq!(t.manifests_wanted(Time(5000), 10).len(), 0);
    t.up(Time(6000), peer(1, 2));
    assert_eq!(
        t.manifests_wanted(Time(6000), 10).len(),
        1,
        "a restart makes it stale"
    );
}

#[test]
fn manifests_are_wanted_only_from_up_members_longest_waiting_first() {
    let mut t = MemberTable::new(10, Duration::from_secs(1));
    for i in 1..=4 {
        t.up(Time(0), peer(i, 1));
    }
    let first: Vec<Peer> = t.manifests_wanted(Time(0), 2);
    assert_eq!(first, vec![peer(1, 1), peer(2, 1)]);
    // 3 and 4 were never asked, so they come before 1 and 2 again.
    assert_eq!(
        t.manifests_wanted(Time(1000), 3),
        vec![peer(3, 1), peer(4, 1), peer(1, 1)]
    );
    t.down(Time(1000), peer(2, 1));
    t.left(Time(1000), peer(3, 1));
    t.set_manifest(manifest(4, 1));
    assert_eq!(t.manifests_wanted(Time(5000), 10), vec![peer(1, 1)]);
    // Back up: wanted again (its manifest is still missing).
    t.up(Time(6000), peer(2, 1));
    assert_eq!(
        t.manifests_wanted(Time(6000), 10),
        vec![peer(2, 1), peer(1, 1)]
    );
}

#[test]
fn forgetting_follows_the_order_members_went_and_spares_returns() {
    let mut t = MemberTable::new(10, Duration::from_secs(1));
    for i in 1..=3 {
        t.up(Time(0), peer(i, 1));
    }
    t.down(Time(100), peer(2, 1));
    t.down(Time(200), peer(1, 1));
    t.left(Time(300), peer(3, 1));
    t.up(Time(400), peer(1, 2));
    t.forget(Time(1250), Duration::from_secs(1));
    assert_eq!(t.len(), 2, "n2 forgotten, n1 came back");
    assert_eq!(state(&t, 1), MemberState::Alive);
    t.forget(Time(1300), Duration::from_secs(1));
    assert_eq!(t.len(), 1);
    assert!(t.wanted.iter().all(|(_, id)| t.records.contains_key(id)));
}

fn ids(peers: &[Peer]) -> Vec<u64> {
    peers.iter().map(|p| u64::from_be_bytes(p.id.0)).collect()
}

#[test]
fn a_slice_lists_up_members_and_me_in_order_within_the_budget() {
    let mut t = MemberTable::new(100, Duration::from_secs(1));
    for i in [2, 4, 6, 8] {
        t.up(Time(0), peer(i, 1));
    }
    t.down(Time(0), peer(6, 1));
    let me = peer(5, 1);
    let all = |from, to| t.slice(me, NodeId::from_u64(from), to, &[], 10_000);
    let (got, next) = all(0, None);
    assert_eq!((ids(&got), next), (vec![2, 4, 5, 8], None));
    let (got, next) = all(3, Some(NodeId::from_u64(8)));
    assert_eq!((ids(&got), next), (vec![4, 5], None));
    // A budget of three members: the fourth is where the next starts.
    let budget = 3 * Summary::member_len(&me);
    let (got, next) = t.slice(me, NodeId::from_u64(0), None, &[], budget);
    assert_eq!(ids(&got), vec![2, 4, 5]);
    assert_eq!(next, Some(NodeId::from_u64(8)));
    // An empty or inverted range lists nothing.
    assert!(all(5, Some(NodeId::from_u64(5))).0.is_empty());
    assert!(all(8, Some(NodeId::from_u64(3))).0.is_empty());
}

#[test]
fn a_slice_leaves_out_what_the_asker_listed_in_the_same_or_a_newer_life() {
    let mut t = MemberTable::new(100, Duration::from_secs(1));
    for i in [2, 3, 4] {
        t.up(Time(0), peer(i, 2));
    }
    let me = peer(1, 1);
    let listed = [peer(2, 2), peer(3, 1), peer(4, 3)];
    let (got, _) = t.slice(me, NodeId::from_u64(0), None, &listed, 10_000);
    assert_eq!(ids(&got), vec![1, 3], "n3 listed in an older life");
    assert!(t.knows(&peer(2, 1)) && t.knows(&peer(2, 2)));
    assert!(!t.knows(&peer(2, 3)) && !t.knows(&peer(9, 1)));
}

#[test]
fn a_slice_walks_a_bounded_number_of_records() {
    let n = MAX_WALK as u64 + 10;
    let mut t = MemberTable::new(n as usize, Duration::from_secs(1));
    for i in 1..=n {
        t.up(Time(0), peer(i, 1));
        t.down(Time(0), peer(i, 1));
    }
    let me = peer(n + 1, 1);
    let (got, next) = t.slice(me, NodeId::from_u64(0), None, &[], 10_000);
    assert!(got.is_empty());
    assert_eq!(next, Some(NodeId::from_u64(MAX_WALK as u64 + 1)));
}

#[test]
fn a_random_pick_finds_the_next_up_member_wrapping_around() {
    let mut t = MemberTable::new(10, Duration::from_secs(1));
    assert_eq!(t.up_at_or_after(NodeId::from_u64(0)), None);
    for i in [2, 4, 6] {
        t.up(Time(0), peer(i, 1));
    }
    t.down(Time(0), peer(4, 1));
    assert_eq!(t.up_at_or_after(NodeId::from_u64(3)), Some(peer(6, 1)));
    assert_eq!(t.up_at_or_after(NodeId::from_u64(7)), Some(peer(2, 1)));
}
