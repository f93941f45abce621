//! The controller driven like a shell would (see `shell`).

use myco_proto::instance::{Exit, InstanceState};

use super::*;
use crate::jobs::placement::Slot;
use crate::jobs::placement::tests::node;

mod fence;
mod handoff;
mod never_rollout;
mod rollout;
mod shell;
use shell::*;

#[test]
fn a_fresh_node_starts_its_slots_once_settled_and_writes_only_changes() {
    let mut s = Shell::fresh(vec![quick("web", 2, true)]);
    assert!(s.scan(vec![]).is_empty(), "nothing before the view settles");
    assert_eq!(s.c.poll_timeout(), Some(Time(1_000)), "wakes when settled");
    assert!(s.advance(999).is_empty());
    let acts = s.advance(1_000);
    assert_eq!(spawns(&acts), [id("web", 0), id("web", 1)]);
    let w0 = id("web", 0);
    assert_eq!(writes(&acts, &w0), [InstanceState::Launching]);
    let first_write = acts
        .iter()
        .position(|a| matches!(a, JobAction::Write { .. }));
    let first_spawn = acts
        .iter()
        .position(|a| matches!(a, JobAction::Spawn { .. }));
    assert!(first_write < first_spawn, "the record before the process");

    // Started: the record learns the address; a probe makes it ready.
    let acts = s.event(&w0, ProcessEvent::Started);
    assert_eq!(writes(&acts, &w0), [InstanceState::Launching]);
    assert_eq!(
        s.record(&w0).unwrap().addr,
        Some("10.0.0.1:31000".parse().unwrap())
    );
    let acts = s.advance(2_000);
    assert!(has(&acts, &JobAction::Probe { id: w0.clone() }));
    let acts = s.event(&w0, ProcessEvent::ProbeOk);
    assert_eq!(writes(&acts, &w0), [InstanceState::Ready]);
    assert_eq!(s.record(&w0).unwrap().since_ms, WALL0 + s.now.0);

    // Healthy and probed again: nothing written (the SD-card rule).
    for _ in 0..5 {
        let t = s.c.poll_timeout().unwrap();
        let acts = s.advance(t.0);
        assert!(has(&acts, &JobAction::Probe { id: w0.clone() }));
        let acts = s.event(&w0, ProcessEvent::ProbeOk);
        assert!(writes(&acts, &w0).is_empty(), "{acts:?}");
    }
    let states: Vec<_> = s.c.local().map(|(_, st)| st).collect();
    assert_eq!(states, [InstanceState::Ready, InstanceState::Launching]);
}

#[test]
fn without_a_probe_an_instance_is_ready_once_started() {
    let mut s = Shell::fresh(vec![quick("web", 1, false)]);
    s.scan(vec![]);
    s.advance(1_000);
    let w0 = id("web", 0);
    let acts = s.event(&w0, ProcessEvent::Started);
    assert_eq!(writes(&acts, &w0), [InstanceState::Ready]);
    assert!(s.advance(s.now.0 + 10_000).is_empty());
    assert!(s.c.poll_timeout().is_none(), "no probe, no timer");
}

#[test]
fn an_exit_restarts_with_backoff_and_counts_the_restart() {
    let mut s = running(vec![quick("web", 1, false)]);
    let w0 = id("web", 0);
    let t0 = s.now.0;
    let acts = s.event(&w0, ProcessEvent::Exited(Exit::Code(3)));
    assert_eq!(writes(&acts, &w0), [InstanceState::Failed]);
    let r = s.record(&w0).unwrap();
    assert_eq!(r.last_exit, Some(Exit::Code(3)));
    assert!(
        r.reason.contains("restart 1 of 2 in 100 ms"),
        "{}",
        r.reason
    );
    assert!(spawns(&acts).is_empty(), "not at once");
    assert!(spawns(&s.advance(t0 + 99)).is_empty());
    assert_eq!(spawns(&s.advance(t0 + 100)), [w0.as_str()]);
    let acts = s.event(&w0, ProcessEvent::Started);
    assert_eq!(writes(&acts, &w0), [InstanceState::Ready]);
    assert_eq!(s.record(&w0).unwrap().restarts, 1);
    // The second failure waits twice as long.
    let t1 = s.now.0;
    s.event(&w0, ProcessEvent::Exited(Exit::Signal(9)));
    assert!(spawns(&s.advance(t1 + 199)).is_empty());
    assert_eq!(spawns(&s.advance(t1 + 200)), [w0]);
}

#[test]
fn a_crash_loop_gives_up_avoids_the_node_and_forgets_after_the_avoidance() {
    let mut s = running(vec![quick("web", 1, false)]);
    let w0 = id("web", 0);
    for _ in 0..2 {
        s.event(&w0, ProcessEvent::Exited(Exit::Code(1)));
        let t = s.c.poll_timeout().unwrap();
        assert_eq!(spawns(&s.advance(t.0)), [w0.as_str()]);
        s.event(&w0, ProcessEvent::Started);
    }
    let acts = s.event(&w0, ProcessEvent::Exited(Exit::Code(1)));
    // Its logs stay for the user, until the record goes.
    let release = JobAction::Release {
        id: w0.clone(),
        keep_logs: true,
    };
    assert!(has(&acts, &release), "{acts:?}");
    let r = s.record(&w0).unwrap().clone();
    assert_eq!(r.state, InstanceState::Failed);
    assert!(r.reason.contains("crash loop"), "{}", r.reason);
    assert_eq!(r.avoid_until_ms, Some(WALL0 + s.now.0 + 30_000));
    assert_eq!(r.restarts, 2);
    // Avoided: the only node holds no slot, and nothing restarts here.
    assert!(matches!(
        s.c.placement().job("web").unwrap().slots[0],
        Slot::Pending(_)
    ));
    let gave_up_at = s.now.0;
    let acts = s.advance(gave_up_at + 29_999);
    assert!(spawns(&acts).is_empty(), "{acts:?}");
    assert!(writes(&acts, &w0).is_empty());
    // The avoidance ends: the record goes, and the slot comes back.
    let acts = s.advance(gave_up_at + 30_000);
    let del = JobAction::Delete {
        job: "web".into(),
        id: w0.clone(),
    };
    assert!(has(&acts, &del), "{acts:?}");
    let acts = s.advance(gave_up_at + 31_000);
    assert_eq!(spawns(&acts), [w0]);
}

#[test]
fn scaling_down_stops_the_extra_slots_once_settled_and_deletes_their_records() {
    let mut s = running(vec![quick("web", 3, false)]);
    s.view.jobs[0].spec.count = 1;
    assert!(s.sync().is_empty(), "the view moved: wait");
    let acts = s.advance(s.now.0 + 1_000);
    let (w1, w2) = (id("web", 1), id("web", 2));
    assert_eq!(kills(&acts), [w1.clone(), w2.clone()]);
    assert_eq!(writes(&acts, &w1), [InstanceState::Draining]);
    let acts = s.event(&w1, ProcessEvent::Exited(Exit::Signal(15)));
    assert!(has(
        &acts,
        &JobAction::Release {
            id: w1.clone(),
            keep_logs: false
        }
    ));
    assert!(s.record(&w1).is_none(), "deleted after the exit");
    assert!(s.record(&w2).is_some(), "still draining");
    assert_eq!(s.c.local().count(), 2);
    assert_eq!(
        s.record(&id("web", 0)).unwrap().state,
        InstanceState::Ready,
        "slot 0 untouched"
    );
}

#[test]
fn a_stopped_job_is_killed_at_once_and_its_records_deleted_after_exit() {
    let mut s = running(vec![quick("web", 2, false)]);
    s.view.jobs[0].stopped = true;
    let acts = s.sync();
    let (w0, w1) = (id("web", 0), id("web", 1));
    assert_eq!(kills(&acts), [w0.clone(), w1.clone()], "no settle wait");
    s.event(&w0, ProcessEvent::Exited(Exit::Signal(15)));
    s.event(&w1, ProcessEvent::Exited(Exit::Signal(15)));
    assert!(s.view.instances.is_empty(), "{:?}", s.view.instances);
    assert_eq!(s.c.local().count(), 0);
    // Once gone, nothing more is written while the view stays.
    assert!(s.advance(s.now.0 + 10_000).is_empty());
}

#[test]
fn after_an_agent_restart_survivors_still_placed_here_are_adopted_the_rest_killed() {
    // The previous life: slots 0 and 1 ready here.
    let old = running(vec![quick("web", 2, true)]);
    let mut view = old.view.clone();
    for r in &mut view.instances {
        r.state = InstanceState::Ready;
        r.last_exit = Some(Exit::Code(0));
    }
    view.jobs[0].spec.count = 1;
    let n = node(1, "", 4096);
    let mut s = Shell::new(view.nodes.clone(), view.jobs.clone(), n.capacity);
    s.view = view;
    s.now = Time(50_000);
    assert!(s.sync().is_empty());
    assert!(s.advance(60_000).is_empty(), "nothing before the scan");
    let (w0, w1) = (id("web", 0), id("web", 1));
    let found = |slot| Found {
        id: id("web", slot),
        job: "web".into(),
        slot,
        version: 1,
        addr: None,
    };
    let acts = s.scan(vec![found(0), found(1)]);
    assert!(spawns(&acts).is_empty(), "{acts:?}");
    assert!(
        writes(&acts, &w0).is_empty(),
        "an adopted ready one is not rewritten"
    );
    assert_eq!(
        kills(&acts),
        [w1.as_str()],
        "the unwanted one stops (settled)"
    );
    let acts = s.advance(60_000);
    assert!(
        has(&acts, &JobAction::Probe { id: w0.clone() }),
        "probes resume"
    );
    let acts = s.event(&w0, ProcessEvent::ProbeOk);
    assert!(acts.is_empty(), "{acts:?}");
    s.event(&w1, ProcessEvent::Exited(Exit::Signal(15)));
    assert!(s.record(&w1).is_none());
    assert_eq!(s.record(&w0).unwrap().restarts, 0, "never restarted");
}

#[test]
fn a_ready_record_whose_process_died_with_the_agent_stops_saying_ready_at_the_scan() {
    let old = running(vec![quick("web", 2, true)]);
    let mut view = old.view.clone();
    for r in &mut view.instances {
        r.state = InstanceState::Ready;
    }
    let n = node(1, "", 4096);
    let mut s = Shell::new(view.nodes.clone(), view.jobs.clone(), n.capacity);
    s.view = view;
    s.now = Time(50_000);
    assert!(s.sync().is_empty());
    let (w0, w1) = (id("web", 0), id("web", 1));
    // Slot 0's process survived the agent; slot 1's did not.
    let acts = s.scan(vec![Found {
        id: w0.clone(),
        job: "web".into(),
        slot: 0,
        version: 1,
        addr: None,
    }]);
    assert!(writes(&acts, &w0).is_empty(), "{acts:?}");
    assert_eq!(writes(&acts, &w1), [InstanceState::Launching], "{acts:?}");
    let r = s.record(&w1).unwrap();
    assert_eq!(
        (r.addr, r.reason.as_str()),
        (None, "not running since the agent restarted")
    );
}

#[test]
fn a_node_never_starts_past_its_own_capacity_and_the_slot_moves() {
    // Its manifest says 4096 MB, its own count is 100: placement gives it
    // both slots (node 2 is full), it starts one and refuses the other.
    let n = node(1, "", 4096);
    let mut cap = n.capacity;
    cap.memory_mb = 100;
    let mut s = Shell::new(vec![n, node(2, "", 32)], vec![quick("web", 2, false)], cap);
    s.scan(vec![]);
    let acts = s.advance(1_000);
    let (w0, w1) = (id("web", 0), id("web", 1));
    assert_eq!(spawns(&acts), [w0.as_str()]);
    assert_eq!(writes(&acts, &w1), [InstanceState::Failed]);
    let r = s.record(&w1).unwrap().clone();
    assert!(r.reason.starts_with("refused: memory"), "{}", r.reason);
    assert_eq!(r.avoid_until_ms, Some(WALL0 + 1_000 + 30_000), "avoided");
    // Placement, here as on every node, no longer puts the slot here.
    s.sync();
    let slot1 = &s.c.placement().job("web").unwrap().slots[1];
    assert!(matches!(slot1, Slot::Pending(_)), "{slot1:?}");
    let acts = s.advance(s.now.0 + 20_000);
    assert!(acts.is_empty(), "said once: {acts:?}");
    // The avoidance ends and the slot comes back: refused and avoided
    // again (one write per avoidance, never a start past capacity).
    let acts = s.advance(s.now.0 + 15_000);
    assert_eq!(writes(&acts, &w1), [InstanceState::Failed]);
    // Placed here again at 31 s, a view to settle on for a second first.
    assert_eq!(s.record(&w1).unwrap().avoid_until_ms, Some(WALL0 + 62_000));
    assert!(spawns(&acts).is_empty(), "never past its capacity");
}

#[test]
fn a_process_stopped_while_spawning_is_killed_when_it_starts() {
    let mut s = Shell::fresh(vec![quick("web", 1, false)]);
    s.scan(vec![]);
    let w0 = id("web", 0);
    assert_eq!(spawns(&s.advance(1_000)), [w0.as_str()]);
    s.view.jobs[0].stopped = true;
    s.sync();
    let acts = s.event(&w0, ProcessEvent::Started);
    assert_eq!(kills(&acts), [w0.as_str()]);
    let acts = s.event(&w0, ProcessEvent::Exited(Exit::Signal(15)));
    assert!(has(
        &acts,
        &JobAction::Release {
            id: w0.clone(),
            keep_logs: false
        }
    ));
    assert!(s.view.instances.is_empty());
}
