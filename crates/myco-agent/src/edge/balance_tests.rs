use super::*;

fn ups(n: u16) -> Vec<Arc<Upstream>> {
    (0..n)
        .map(|i| {
            Arc::new(Upstream::new(
                format!("i{i}"),
                NodeId::from_u64(1),
                SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
            ))
        })
        .collect()
}

/// A fixed-seed xorshift, so the draws are the same every run.
fn rng() -> impl FnMut() -> u64 {
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

#[test]
fn the_less_loaded_of_two_wins() {
    let u = ups(2);
    let _busy: Vec<InFlight> = (0..3).map(|_| u[0].begin()).collect();
    let mut r = rng();
    for _ in 0..50 {
        assert_eq!(pick(&u, None, 0, &mut r).unwrap().instance, "i1");
    }
}

#[test]
fn load_spreads_over_every_instance() {
    let u = ups(4);
    let mut r = rng();
    let mut held = Vec::new();
    for _ in 0..400 {
        held.push(pick(&u, None, 0, &mut r).unwrap().begin());
    }
    for x in &u {
        // P2C keeps the spread tight: 100 each, give or take a few.
        assert!((90..=110).contains(&x.in_flight()), "{}", x.in_flight());
    }
    drop(held);
    assert!(u.iter().all(|x| x.in_flight() == 0));
}

#[test]
fn a_retry_never_picks_the_instance_that_failed() {
    let u = ups(3);
    let mut r = rng();
    for _ in 0..100 {
        let got = pick(&u, Some(&u[1]), 0, &mut r).unwrap();
        assert_ne!(got.instance, "i1");
    }
    let one = ups(1);
    assert!(pick(&one, Some(&one[0]), 0, &mut r).is_none());
    assert!(pick(&[], None, 0, &mut r).is_none());
}

#[test]
fn five_failures_in_a_row_eject_with_a_growing_cooldown() {
    let u = ups(2);
    for _ in 0..EJECT_AFTER - 1 {
        assert!(!u[0].failed(0));
    }
    assert!(u[0].failed(0));
    assert!(u[0].is_ejected(BASE_COOLDOWN_MS - 1));
    assert!(!u[0].is_ejected(BASE_COOLDOWN_MS));
    let mut r = rng();
    for _ in 0..50 {
        assert_eq!(pick(&u, None, 1, &mut r).unwrap().instance, "i1");
    }
    // Failing again after the cool-down ejects for twice as long.
    let t = BASE_COOLDOWN_MS;
    for _ in 0..EJECT_AFTER - 1 {
        assert!(!u[0].failed(t));
    }
    assert!(u[0].failed(t));
    assert!(u[0].is_ejected(t + 2 * BASE_COOLDOWN_MS - 1));
    assert!(!u[0].is_ejected(t + 2 * BASE_COOLDOWN_MS));
}

#[test]
fn a_success_resets_the_streak() {
    let u = ups(1);
    for _ in 0..EJECT_AFTER - 1 {
        u[0].failed(0);
    }
    u[0].succeeded();
    for _ in 0..EJECT_AFTER - 1 {
        assert!(!u[0].failed(0));
    }
}

#[test]
fn when_all_are_ejected_they_are_used_anyway() {
    let u = ups(2);
    for x in &u {
        for _ in 0..EJECT_AFTER {
            x.failed(0);
        }
    }
    let mut r = rng();
    assert!(pick(&u, None, 1, &mut r).is_some());
}

#[test]
fn prefer_local_takes_a_local_instance_only_when_it_is_as_good() {
    let u: Vec<Arc<Upstream>> = (0..3u16)
        .map(|i| {
            let hop = if i == 0 { Hop::Local } else { Hop::Direct };
            Arc::new(
                Upstream::new(
                    format!("i{i}"),
                    NodeId::from_u64(1),
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                )
                .reached_by(hop),
            )
        })
        .collect();
    // Idle everywhere: the local one wins whatever was drawn.
    assert_eq!(prefer_local(&u, &u[1], None, 0).instance, "i0");
    assert_eq!(prefer_local(&u, &u[0], None, 0).instance, "i0");
    // Busier than the remote choice: the remote one stays.
    let _busy = u[0].begin();
    assert_eq!(prefer_local(&u, &u[2], None, 0).instance, "i2");
    let _also = u[2].begin();
    assert_eq!(prefer_local(&u, &u[2], None, 0).instance, "i0");
    // Never the instance a retry excludes, nor an ejected one.
    assert_eq!(prefer_local(&u, &u[2], Some(&u[0]), 0).instance, "i2");
    for _ in 0..EJECT_AFTER {
        u[0].failed(0);
    }
    assert_eq!(prefer_local(&u, &u[2], None, 1).instance, "i2");
}

#[test]
fn round_robin_takes_instances_in_turn_and_skips_excluded_and_ejected() {
    let u = ups(3);
    let turn = AtomicUsize::new(0);
    let names: Vec<&str> = (0..6)
        .map(|_| round_robin(&u, None, 0, &turn).unwrap().instance.as_str())
        .collect();
    assert_eq!(names, ["i0", "i1", "i2", "i0", "i1", "i2"]);
    // A retry never lands on the instance that just failed.
    for _ in 0..6 {
        assert_ne!(
            round_robin(&u, Some(&u[1]), 0, &turn).unwrap().instance,
            "i1"
        );
    }
    for _ in 0..EJECT_AFTER {
        u[2].failed(0);
    }
    for _ in 0..6 {
        assert_ne!(round_robin(&u, None, 1, &turn).unwrap().instance, "i2");
    }
    // Every allowed one ejected: used anyway (the panic threshold).
    for _ in 0..EJECT_AFTER {
        u[0].failed(0);
    }
    assert_eq!(
        round_robin(&u, Some(&u[1]), 1, &turn).unwrap().instance,
        "i0"
    );
    assert!(round_robin(&[], None, 0, &turn).is_none());
}
