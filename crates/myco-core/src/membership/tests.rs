//! [`Membership`] driven alone, without a [`crate::Node`] around it: a
//! few instances wired back to back with instant delivery, their timers
//! and housekeeping fired by a small harness.

use std::collections::BTreeMap;

use myco_proto::{Capacity, ClusterKey, Envelope};

use super::*;
use crate::timers::Timers;

/// One membership with the parts a router would give it.
struct Harness {
    m: Membership,
    stats: Stats,
    timers: Timers<SwimTimer>,
    next_tick: Time,
    events: Vec<Event>,
}

fn peer(i: u64) -> Peer {
    Peer {
        id: NodeId::from_u64(i),
        addr: format!("10.0.0.{i}:7946").parse().unwrap(),
        boot: 1,
        bump: 0,
    }
}

fn ring() -> KeyRing {
    KeyRing::new(ClusterKey::from_bytes([9; 32]))
}

fn harness(i: u64) -> Harness {
    let p = peer(i);
    let manifest = NodeManifest {
        format: NodeManifest::FORMAT,
        id: p.id,
        boot: p.boot,
        name: format!("n{i}"),
        tags: BTreeMap::new(),
        capacity: Capacity::default(),
        mesh_addr: p.addr,
        api_addr: None,
        edge_addr: None,
        version: "test".into(),
        key_id: String::new(),
        speaks: myco_proto::compat::THIS_BUILD,
    };
    let cfg = Config::default();
    Harness {
        m: Membership::new(Time::ZERO, p, manifest, ring(), i, &cfg),
        stats: Stats::default(),
        timers: Timers::new(),
        next_tick: Time::ZERO + cfg.tick,
        events: Vec::new(),
    }
}

impl Harness {
    /// What a router does after every call.
    fn route(&mut self) {
        for (at, t) in self.m.take_timers() {
            self.timers.insert(at, t);
        }
        while let Some(e) = self.m.poll_event() {
            self.events.push(e);
        }
    }

    fn fire(&mut self, now: Time) {
        while let Some(t) = self.timers.pop_due(now) {
            self.m.handle_timer(now, &mut self.stats, t);
            self.route();
        }
        if now >= self.next_tick {
            self.m.tick(now, &mut self.stats);
            self.route();
            self.next_tick = now + self.m.cfg.tick;
        }
    }

    fn state_of(&self, i: u64) -> Option<MemberState> {
        self.m.member(NodeId::from_u64(i)).map(|v| v.state)
    }
}

/// Delivers every datagram at once, except to or from `dead` ones.
fn deliver(hs: &mut [Harness], dead: &[usize], now: Time) {
    let mut moved = true;
    while moved {
        moved = false;
        for i in 0..hs.len() {
            while let Some(t) = hs[i].m.poll_transmit() {
                moved = true;
                let Some(j) = hs.iter().position(|h| h.m.identity().addr == t.to) else {
                    continue;
                };
                if dead.contains(&i) || dead.contains(&j) {
                    continue;
                }
                let from = hs[i].m.identity().addr;
                let h = &mut hs[j];
                h.m.handle_datagram(now, &mut h.stats, from, &t.payload);
                h.route();
            }
        }
    }
}

/// Runs from `from` to `until` in 10 ms steps.
fn run(hs: &mut [Harness], dead: &[usize], from: Time, until: Time) {
    let mut now = from;
    while now < until {
        for (i, h) in hs.iter_mut().enumerate() {
            if !dead.contains(&i) {
                h.fire(now);
            }
        }
        deliver(hs, dead, now);
        now = Time(now.0 + 10);
    }
}

fn joined_pair() -> Vec<Harness> {
    let mut hs = vec![harness(1), harness(2)];
    let seed = hs[0].m.identity().addr;
    let h = &mut hs[1];
    h.m.join(Time::ZERO, &mut h.stats, seed);
    h.route();
    run(&mut hs, &[], Time::ZERO, Time(2000));
    hs
}

#[test]
fn two_memberships_join_by_address_and_fetch_manifests() {
    let hs = joined_pair();
    for (h, other) in [(&hs[0], 2), (&hs[1], 1)] {
        assert_eq!(h.state_of(other), Some(MemberState::Alive));
        assert!(h.m.is_connected());
        let view = h.m.member(NodeId::from_u64(other)).unwrap();
        assert_eq!(view.manifest.unwrap().name, format!("n{other}"));
        assert!(h.events.contains(&Event::Connected));
        assert!(
            h.events
                .contains(&Event::ManifestChanged(NodeId::from_u64(other)))
        );
        assert_eq!(
            h.m.live(),
            vec![(NodeId::from_u64(other), peer(other).addr)]
        );
    }
}

#[test]
fn member_lookup_agrees_with_the_full_list() {
    let hs = joined_pair();
    let m = &hs[0].m;
    for view in m.members() {
        assert_eq!(m.member(view.peer.id), Some(view));
    }
    let me = m.member(NodeId::from_u64(1)).unwrap();
    assert!(me.is_self && me.state == MemberState::Alive);
    assert_eq!(m.member(NodeId::from_u64(99)), None);
}

#[test]
fn a_silent_member_goes_down_and_a_leaving_one_shows_as_left() {
    let mut hs = joined_pair();
    hs.push(harness(3));
    let seed = hs[0].m.identity().addr;
    let h = &mut hs[2];
    h.m.join(Time(2000), &mut h.stats, seed);
    h.route();
    run(&mut hs, &[], Time(2000), Time(4000));
    assert_eq!(hs[1].state_of(3), Some(MemberState::Alive));

    // n3 leaves on purpose: the others see it left, not down.
    let h = &mut hs[2];
    h.m.leave(Time(4000), &mut h.stats);
    h.route();
    assert_eq!(
        hs[2].m.member(NodeId::from_u64(3)).unwrap().state,
        MemberState::Left
    );
    run(&mut hs, &[], Time(4000), Time(4100));
    assert_eq!(hs[0].state_of(3), Some(MemberState::Left));
    assert!(hs[0].events.contains(&Event::MemberLeft(peer(3))));

    // n2 falls silent: n1 suspects it, then declares it down.
    run(&mut hs, &[1, 2], Time(4100), Time(8000));
    assert_eq!(hs[0].state_of(2), Some(MemberState::Down));
    assert_eq!(hs[0].state_of(3), Some(MemberState::Left));
    assert!(hs[0].m.live().is_empty());
}

#[test]
fn replayed_and_foreign_datagrams_are_refused_and_counted() {
    let mut hs = [harness(1), harness(2)];
    let (a, b) = (peer(1).addr, peer(2).addr);
    let h = &mut hs[0];
    h.m.join(Time::ZERO, &mut h.stats, b);
    let hello = h.m.poll_transmit().unwrap();
    let h = &mut hs[1];
    h.m.handle_datagram(Time::ZERO, &mut h.stats, a, &hello.payload);
    h.m.handle_datagram(Time::ZERO, &mut h.stats, a, &hello.payload);
    assert_eq!(h.stats.dropped.get("replay"), Some(&1));
    assert_eq!(h.stats.frames_in.get(hello_kind()), Some(&1));
    assert!(h.m.poll_transmit().is_some(), "the first hello is answered");
    assert!(h.m.poll_transmit().is_none(), "the replay is not");

    let stranger = KeyRing::new(ClusterKey::from_bytes([1; 32]));
    let forged = Envelope::seal(&stranger, peer(3).id, 1, 1, &Frame::Hello(peer(3)).encode());
    h.m.handle_datagram(Time::ZERO, &mut h.stats, a, &forged);
    assert_eq!(h.stats.dropped_total(), 2);
    assert!(h.m.poll_transmit().is_none());

    // Its own datagram coming back (a loop in the network) is refused too.
    h.m.join(Time::ZERO, &mut h.stats, a);
    let own = h.m.poll_transmit().unwrap();
    h.m.handle_datagram(Time::ZERO, &mut h.stats, b, &own.payload);
    assert_eq!(h.stats.dropped.get("from_self"), Some(&1));
}

fn hello_kind() -> &'static str {
    Frame::Hello(peer(1)).kind()
}

#[test]
fn an_isolated_member_says_hello_to_its_seeds_each_second() {
    let mut h = harness(1);
    let seed = peer(2).addr;
    h.m.join(Time::ZERO, &mut h.stats, seed);
    assert_eq!(h.m.poll_transmit().unwrap().to, seed);
    h.m.tick(Time(500), &mut h.stats);
    assert!(h.m.poll_transmit().is_none(), "not due yet");
    h.m.tick(Time(1000), &mut h.stats);
    assert_eq!(h.m.poll_transmit().unwrap().to, seed);
    assert!(h.m.poll_transmit().is_none());
}

/// Seals `frame` as node `i` would, for a membership to open.
fn sealed(i: u64, counter: u64, frame: &Frame) -> Vec<u8> {
    Envelope::seal(&ring(), peer(i).id, 1, counter, &frame.encode())
}

fn summary(push: bool, members: Vec<Peer>) -> Frame {
    Frame::Summary(myco_proto::frame::Summary {
        from: NodeId::default(),
        to: None,
        push,
        members,
    })
}

#[test]
fn a_push_teaches_the_receiver_and_is_answered_with_what_the_pusher_lacks() {
    let mut h = harness(1);
    // n1 learns of n3 and n4 from an answer.
    let answer = sealed(3, 1, &summary(false, vec![peer(3), peer(4)]));
    h.m.handle_datagram(Time(10), &mut h.stats, peer(3).addr, &answer);
    h.route();
    assert_eq!(h.state_of(3), Some(MemberState::Alive));
    assert_eq!(h.state_of(4), Some(MemberState::Alive));
    while h.m.poll_transmit().is_some() {}

    // n2 pushes what it knows: n1 learns n2 and n5, and answers with
    // itself and n3, not with n4, which n2 listed.
    let push = sealed(2, 1, &summary(true, vec![peer(2), peer(4), peer(5)]));
    h.m.handle_datagram(Time(20), &mut h.stats, peer(2).addr, &push);
    h.route();
    assert_eq!(h.state_of(2), Some(MemberState::Alive));
    assert_eq!(h.state_of(5), Some(MemberState::Alive));
    let sent: Vec<Transmit> = std::iter::from_fn(|| h.m.poll_transmit()).collect();
    let answers: Vec<Vec<Peer>> = sent
        .iter()
        .filter(|t| t.to == peer(2).addr)
        .filter_map(|t| {
            let (_, plain) = Envelope::open(&ring(), &t.payload).ok()?;
            match Frame::decode(&plain).ok()? {
                Frame::Summary(s) if !s.push => Some(s.members),
                _ => None,
            }
        })
        .collect();
    assert_eq!(answers, vec![vec![peer(1), peer(3)]]);
    assert_eq!(h.stats.frames_in.get("summary"), Some(&2));
}

#[test]
fn a_summary_revives_neither_an_old_life_nor_a_member_seen_down() {
    let mut hs = joined_pair();
    hs.push(harness(3));
    let seed = hs[0].m.identity().addr;
    let h = &mut hs[2];
    h.m.join(Time(2000), &mut h.stats, seed);
    h.route();
    run(&mut hs, &[], Time(2000), Time(4000));
    // n3 falls silent and goes down at n1.
    run(&mut hs, &[2], Time(4000), Time(8000));
    assert_eq!(hs[0].state_of(3), Some(MemberState::Down));
    // n2 (or a stale member) still lists it: n1 is not fooled.
    let h = &mut hs[0];
    let stale = sealed(2, 1 << 40, &summary(true, vec![peer(3)]));
    h.m.handle_datagram(Time(8000), &mut h.stats, peer(2).addr, &stale);
    h.route();
    assert_eq!(h.state_of(3), Some(MemberState::Down));
    // An older life of a member that is up does not replace it.
    let older = Peer { boot: 0, ..peer(2) };
    let stale = sealed(3, 1 << 40, &summary(false, vec![older]));
    h.m.handle_datagram(Time(8000), &mut h.stats, peer(3).addr, &stale);
    h.route();
    assert_eq!(h.m.member(peer(2).id).unwrap().peer, peer(2));
}

#[test]
fn memberships_that_never_gossip_agree_through_pushes() {
    // n1 knows n2..n6 and n7 knows n8..n12, told by answers; n1 and n7
    // learn of each other the same way. Pushes must then spread the rest
    // both ways within a few ticks.
    let mut a = harness(1);
    let mut b = harness(7);
    let left: Vec<Peer> = (2..=6).map(peer).collect();
    let right: Vec<Peer> = (8..=12).map(peer).collect();
    let feed = |h: &mut Harness, from: u64, members: Vec<Peer>| {
        let d = sealed(from, 1, &summary(false, members));
        h.m.handle_datagram(Time(10), &mut h.stats, peer(from).addr, &d);
        h.route();
        while h.m.poll_transmit().is_some() {}
    };
    feed(&mut a, 2, left.clone());
    feed(&mut a, 7, vec![peer(7)]);
    feed(&mut b, 8, right.clone());
    feed(&mut b, 1, vec![peer(1)]);
    // Only pushes and their answers travel between a and b; everything
    // else (SWIM to members that do not exist here) is dropped.
    let mut now = Time(500);
    for _ in 0..40 {
        for h in [&mut a, &mut b] {
            h.m.tick(now, &mut h.stats);
            h.route();
        }
        for _ in 0..2 {
            let mut moved = Vec::new();
            for (i, h) in [&mut a, &mut b].into_iter().enumerate() {
                while let Some(t) = h.m.poll_transmit() {
                    moved.push((i, t));
                }
            }
            for (i, t) in moved {
                let (_, plain) = Envelope::open(&ring(), &t.payload).unwrap();
                let Ok(Frame::Summary(_)) = Frame::decode(&plain) else {
                    continue;
                };
                let (dst, src) = if i == 0 { (&mut b, 1) } else { (&mut a, 7) };
                if t.to != dst.m.identity().addr {
                    continue;
                }
                dst.m
                    .handle_datagram(now, &mut dst.stats, peer(src).addr, &t.payload);
                dst.route();
            }
        }
        now = now + Duration::from_millis(500);
    }
    for i in 2..=12 {
        if i != 7 {
            assert_eq!(a.state_of(i), Some(MemberState::Alive), "n1 about n{i}");
        }
        if i != 7 && i != 1 {
            assert_eq!(b.state_of(i), Some(MemberState::Alive), "n7 about n{i}");
        }
    }
}
