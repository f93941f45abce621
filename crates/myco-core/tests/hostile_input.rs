//! Hostile and broken datagrams, seeded: random bytes, bit flips and
//! truncations of real datagrams, replays, and authentic envelopes around
//! garbage (what a compromised member could send). The node must refuse and
//! count every one, never panic, and keep working afterwards.

mod support;

fn node(i: u64) -> myco_core::Node {
    support::node(i, 7)
}

use std::net::SocketAddr;

use myco_core::{MemberState, Node, Time};
use myco_proto::{ClusterKey, Envelope, Frame, KeyRing, MAX_DATAGRAM, NodeId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn deliver_all(a: &mut Node, b: &mut Node, now: Time) {
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            b.handle_datagram(now, a.identity().addr, &t.payload);
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            a.handle_datagram(now, b.identity().addr, &t.payload);
        }
        if !moved {
            break;
        }
    }
}

#[test]
fn hostile_datagrams_are_refused_counted_and_harmless() {
    let from: SocketAddr = "10.9.9.9:1".parse().unwrap();
    let ring = KeyRing::new(ClusterKey::from_bytes([7; 32]));
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut target = node(1);
        let mut sent = 0u64;
        let real = Envelope::seal(
            &ring,
            NodeId::from_u64(50),
            1,
            1,
            &Frame::ManifestRequest.encode(),
        );

        for _ in 0..300 {
            let mut d = match rng.random_range(0..5u8) {
                0 => {
                    let mut junk = vec![0u8; rng.random_range(0..MAX_DATAGRAM + 200)];
                    rng.fill(&mut junk[..]);
                    junk
                }
                1 => {
                    let mut flipped = real.clone();
                    let i = rng.random_range(0..flipped.len());
                    flipped[i] ^= 1 << rng.random_range(0..8u32);
                    flipped
                }
                2 => real[..rng.random_range(0..real.len())].to_vec(),
                3 => {
                    // Authentic envelope, garbage inside: only an insider can do this.
                    let mut garbage = vec![0u8; rng.random_range(0..200)];
                    rng.fill(&mut garbage[..]);
                    let counter = 1000 + sent;
                    let d = Envelope::seal(&ring, NodeId::from_u64(60), 1, counter, &garbage);
                    // Garbage that happens to decode as a frame is not refused; skip it.
                    if Frame::decode(&garbage).is_ok() {
                        continue;
                    }
                    d
                }
                _ => vec![0u8; MAX_DATAGRAM + 1 + rng.random_range(0..8000)],
            };
            if d.starts_with(b"MY") && d.len() == real.len() && d == real {
                d.push(0); // never send the one valid datagram by accident
            }
            target.handle_datagram(Time(0), from, &d);
            sent += 1;
        }
        // The real datagram is accepted once, then refused as a replay.
        target.handle_datagram(Time(0), from, &real);
        target.handle_datagram(Time(0), from, &real);
        sent += 1;

        let stats = target.stats().clone();
        assert_eq!(
            stats.dropped_total(),
            sent,
            "seed {seed}: every bad datagram counted once: {:?}",
            stats.dropped
        );
        assert_eq!(stats.dropped.get("replay"), Some(&1), "seed {seed}");
        assert_eq!(
            stats.frames_in.get("manifest_request"),
            Some(&1),
            "seed {seed}"
        );

        // And the node still works: another node joins it.
        let mut other = node(2);
        other.join(Time(0), target.identity().addr);
        for t in (0..3000).step_by(10) {
            target.handle_timeout(Time(t));
            other.handle_timeout(Time(t));
            deliver_all(&mut target, &mut other, Time(t));
        }
        let alive = target
            .members()
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count();
        assert_eq!(
            alive, 2,
            "seed {seed}: node no longer joins after hostile input"
        );
    }
}
