use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn policy(health: bool) -> SupervisePolicy {
    SupervisePolicy {
        health: health.then_some(ProbePolicy {
            interval: Duration::from_millis(5_000),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }),
        restart: RestartPolicy {
            attempts: 2,
            interval_ms: 60_000,
            delay_ms: 100,
            backoff: 2,
            max_delay_ms: 150,
            jitter_percent: 0,
            avoid_ms: 600_000,
        },
        kill_timeout: Duration::from_secs(5),
        healthy_deadline: Duration::from_secs(30),
    }
}

fn drain(s: &mut Supervisor) -> Vec<SuperviseAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn record(state: InstanceState, reason: &str) -> SuperviseAction {
    SuperviseAction::Record {
        state,
        reason: reason.into(),
    }
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

/// Runs a supervisor with a health check to `ready` at time `t`.
fn ready_at(t: u64) -> Supervisor {
    let mut s = Supervisor::new(policy(true));
    let mut r = rng();
    assert_eq!(drain(&mut s), [SuperviseAction::Spawn]);
    s.handle_event(Time(t), ProcessEvent::Started, &mut r);
    for _ in 0..2 {
        let due = s.poll_timeout().unwrap();
        s.handle_timeout(due);
        assert_eq!(drain(&mut s).last(), Some(&SuperviseAction::Probe));
        s.handle_event(due, ProcessEvent::ProbeOk, &mut r);
    }
    assert_eq!(s.state(), InstanceState::Ready);
    drain(&mut s);
    s
}

#[test]
fn without_a_health_check_a_started_process_is_ready() {
    let mut s = Supervisor::new(policy(false));
    assert_eq!(drain(&mut s), [SuperviseAction::Spawn]);
    s.handle_event(Time(0), ProcessEvent::Started, &mut rng());
    assert_eq!(drain(&mut s), [record(InstanceState::Ready, "")]);
    assert_eq!(s.poll_timeout(), None, "nothing to probe");
}

#[test]
fn ready_only_after_the_healthy_threshold_probing_fast_while_launching() {
    let mut s = Supervisor::new(policy(true));
    let mut r = rng();
    drain(&mut s);
    s.handle_event(Time(0), ProcessEvent::Started, &mut r);
    assert_eq!(
        s.poll_timeout(),
        Some(Time(25)),
        "the first probe comes soon after the start"
    );
    s.handle_timeout(Time(24));
    assert_eq!(drain(&mut s), []);
    s.handle_timeout(Time(25));
    assert_eq!(drain(&mut s), [SuperviseAction::Probe]);
    // The waits grow by a quarter while the probes fail, up to
    // min(interval, 1 s).
    let mut t = 25;
    for wait in [
        31, 39, 48, 61, 76, 95, 119, 149, 186, 232, 291, 363, 454, 568, 710, 888, 1_000, 1_000,
    ] {
        s.handle_event(Time(t), ProcessEvent::ProbeFailed("refused".into()), &mut r);
        assert_eq!(
            s.poll_timeout(),
            Some(Time(t + wait)),
            "after a failure at {t}"
        );
        t += wait;
        s.handle_timeout(Time(t));
        // (The record says why once they have failed long enough.)
        let acts = drain(&mut s);
        let probes: Vec<_> = acts
            .iter()
            .filter(|a| !matches!(a, SuperviseAction::Record { .. }))
            .collect();
        assert_eq!(probes, [&SuperviseAction::Probe]);
    }
    assert_eq!(
        s.poll_timeout(),
        Some(Time(30_000)),
        "no second probe while one runs"
    );
    s.handle_event(
        Time(t + 10),
        ProcessEvent::ProbeFailed("refused".into()),
        &mut r,
    );
    assert_eq!(
        s.state(),
        InstanceState::Launching,
        "failures while launching do not count"
    );
    t += 1_010;
    s.handle_timeout(Time(t));
    s.handle_event(Time(t), ProcessEvent::ProbeOk, &mut r);
    assert_eq!(s.state(), InstanceState::Launching, "one success of two");
    t += 1_000;
    s.handle_timeout(Time(t));
    s.handle_event(Time(t), ProcessEvent::ProbeOk, &mut r);
    assert_eq!(
        drain(&mut s).last(),
        Some(&record(InstanceState::Ready, ""))
    );
    assert_eq!(
        s.poll_timeout(),
        Some(Time(t + 5_000)),
        "the full interval once ready"
    );
}

#[test]
fn an_unhealthy_ready_instance_is_killed_and_restarted_after_the_delay() {
    let mut s = ready_at(0);
    let mut r = rng();
    for i in 0..3 {
        let due = s.poll_timeout().unwrap();
        s.handle_timeout(due);
        s.handle_event(due, ProcessEvent::ProbeFailed("503".into()), &mut r);
        if i < 2 {
            assert_eq!(drain(&mut s), [SuperviseAction::Probe]);
        }
    }
    let kill = SuperviseAction::Kill {
        grace: Duration::from_secs(5),
    };
    assert_eq!(drain(&mut s), [SuperviseAction::Probe, kill]);
    s.handle_event(Time(20_000), ProcessEvent::Exited(Exit::Signal(15)), &mut r);
    assert_eq!(
        drain(&mut s),
        [record(
            InstanceState::Failed,
            "unhealthy: 503; restart 1 of 2 in 100 ms"
        )]
    );
    assert_eq!(s.poll_timeout(), Some(Time(20_100)));
    s.handle_timeout(Time(20_100));
    assert_eq!(drain(&mut s), [SuperviseAction::Spawn]);
    assert_eq!(s.restarts(), 1);
    s.handle_event(Time(20_110), ProcessEvent::Started, &mut r);
    assert_eq!(drain(&mut s), [record(InstanceState::Launching, "")]);
}

#[test]
fn backoff_doubles_then_a_crash_loop_gives_up_and_releases_the_slot() {
    let mut s = Supervisor::new(policy(false));
    let mut r = rng();
    drain(&mut s);
    let mut t = 0;
    let mut delays = Vec::new();
    for _ in 0..2 {
        s.handle_event(Time(t), ProcessEvent::Started, &mut r);
        s.handle_event(Time(t + 10), ProcessEvent::Exited(Exit::Code(1)), &mut r);
        let due = s.poll_timeout().unwrap();
        delays.push(due.0 - (t + 10));
        s.handle_timeout(due);
        assert_eq!(drain(&mut s).last(), Some(&SuperviseAction::Spawn));
        t = due.0;
    }
    assert_eq!(delays, [100, 150], "100 ms, doubled, capped at 150 ms");
    s.handle_event(Time(t), ProcessEvent::Started, &mut r);
    drain(&mut s);
    s.handle_event(Time(t + 10), ProcessEvent::Exited(Exit::Code(1)), &mut r);
    let actions = drain(&mut s);
    assert_eq!(
        actions,
        [
            record(
                InstanceState::Failed,
                "crash loop: 3 failures within 1 min, last exit code 1; slot released"
            ),
            SuperviseAction::GiveUp {
                avoid_for: Duration::from_secs(600)
            },
        ]
    );
    assert!(s.is_finished());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.last_exit(), Some(Exit::Code(1)));
}

#[test]
fn failures_older_than_the_window_are_forgotten() {
    let mut s = Supervisor::new(policy(false));
    let mut r = rng();
    drain(&mut s);
    let mut t = 0;
    for _ in 0..5 {
        s.handle_event(Time(t), ProcessEvent::Started, &mut r);
        s.handle_event(Time(t + 10), ProcessEvent::Exited(Exit::Code(2)), &mut r);
        assert!(
            drain(&mut s)
                .iter()
                .all(|a| !matches!(a, SuperviseAction::GiveUp { .. }))
        );
        let due = s.poll_timeout().unwrap();
        s.handle_timeout(due);
        t = due.0 + 61_000; // each failure falls out of the 60 s window
    }
    assert_eq!(s.restarts(), 5);
}

#[test]
fn a_spawn_failure_counts_like_a_crash() {
    let mut s = Supervisor::new(policy(false));
    drain(&mut s);
    s.handle_event(
        Time(0),
        ProcessEvent::SpawnFailed("spore missing".into()),
        &mut rng(),
    );
    assert_eq!(
        drain(&mut s),
        [record(
            InstanceState::Failed,
            "could not start: spore missing; restart 1 of 2 in 100 ms"
        )]
    );
}

#[test]
fn not_healthy_by_the_deadline_is_a_failure() {
    let mut s = Supervisor::new(policy(true));
    let mut r = rng();
    drain(&mut s);
    s.handle_event(Time(0), ProcessEvent::Started, &mut r);
    let mut now = Time(0);
    while let Some(due) = s.poll_timeout() {
        now = due;
        s.handle_timeout(due);
        let actions = drain(&mut s);
        if actions.contains(&SuperviseAction::Kill {
            grace: Duration::from_secs(5),
        }) {
            break;
        }
        s.handle_event(due, ProcessEvent::ProbeFailed("refused".into()), &mut r);
    }
    assert_eq!(now, Time(30_000));
    s.handle_event(now, ProcessEvent::Exited(Exit::Signal(15)), &mut r);
    assert_eq!(
        s.reason(),
        "not healthy within 30 s; restart 1 of 2 in 100 ms"
    );
}

#[test]
fn stop_drains_then_stops_and_never_restarts() {
    let mut s = ready_at(0);
    let mut r = rng();
    s.stop();
    assert_eq!(
        drain(&mut s),
        [
            record(InstanceState::Draining, "stopping"),
            SuperviseAction::Kill {
                grace: Duration::from_secs(5)
            }
        ]
    );
    assert_eq!(s.poll_timeout(), None, "no probes while stopping");
    s.handle_event(Time(100), ProcessEvent::Exited(Exit::Code(0)), &mut r);
    assert_eq!(drain(&mut s), [record(InstanceState::Stopped, "stopped")]);
    assert!(s.is_finished());
    s.stop();
    assert_eq!(drain(&mut s), []);
}

#[test]
fn an_adopted_ready_process_keeps_its_state_and_resumes_probing() {
    let mut s = Supervisor::adopt(policy(true), Time(50), InstanceState::Ready, 3);
    assert_eq!(drain(&mut s), [], "no restart, no record write");
    assert_eq!(s.state(), InstanceState::Ready);
    assert_eq!(s.restarts(), 3);
    assert_eq!(s.poll_timeout(), Some(Time(50)));
    s.handle_timeout(Time(50));
    assert_eq!(drain(&mut s), [SuperviseAction::Probe]);
}

#[test]
fn jitter_stays_within_its_percentage_and_follows_the_seed() {
    let p = RestartPolicy {
        delay_ms: 1_000,
        max_delay_ms: 60_000,
        jitter_percent: 25,
        ..policy(false).restart
    };
    let mut a = StdRng::seed_from_u64(1);
    let mut b = StdRng::seed_from_u64(1);
    let mut seen = std::collections::BTreeSet::new();
    for n in 1..=4u32 {
        for _ in 0..50 {
            let d = backoff(&p, n, &mut a);
            assert_eq!(d, backoff(&p, n, &mut b));
            let base = 1_000u128 << (n - 1);
            let ms = d.as_millis();
            assert!(ms >= base * 3 / 4 && ms <= base * 5 / 4, "{ms} vs {base}");
            seen.insert(ms);
        }
    }
    assert!(seen.len() > 20, "delays are spread, not all equal");
}

#[test]
fn a_launching_instance_whose_check_keeps_failing_says_why() {
    let mut s = Supervisor::new(policy(true));
    let mut r = rng();
    drain(&mut s);
    s.handle_event(Time(0), ProcessEvent::Started, &mut r);
    drain(&mut s);
    let mut recorded = Vec::new();
    for n in 1..=LAUNCH_FAILURES_SHOWN + 3 {
        let due = s.poll_timeout().unwrap();
        s.handle_timeout(due);
        s.handle_event(
            due,
            ProcessEvent::ProbeFailed("connect: refused".into()),
            &mut r,
        );
        for a in drain(&mut s) {
            if let SuperviseAction::Record { state, reason } = a {
                recorded.push((n, state, reason));
            }
        }
    }
    // Once, and only past the failures of a server still starting.
    let why = "health check failing: connect: refused".to_string();
    assert_eq!(
        recorded,
        [(LAUNCH_FAILURES_SHOWN, InstanceState::Launching, why)]
    );
    assert_eq!(s.state(), InstanceState::Launching);
    // Passing then clears it.
    for _ in 0..2 {
        let due = s.poll_timeout().unwrap();
        s.handle_timeout(due);
        s.handle_event(due, ProcessEvent::ProbeOk, &mut r);
    }
    assert!(drain(&mut s).contains(&record(InstanceState::Ready, "")));
}
