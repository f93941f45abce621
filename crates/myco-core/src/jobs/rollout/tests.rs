use myco_proto::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::{JobRecord, Strategy};

use super::*;
use crate::jobs::placement::tests::{job, node, record};

/// Job `web` at version 2 (count 3, max_parallel 1, min_healthy 500 ms,
/// deadline 6 s).
fn web_v2(max_parallel: u32) -> JobRecord {
    let mut j = job("web", 3, Strategy::Spread, 64);
    j.version = 2;
    j.spec.update.max_parallel = max_parallel;
    j.spec.update.min_healthy_ms = 500;
    j.spec.update.healthy_deadline_ms = 6_000;
    j
}

fn inst(slot: u32, version: u64, node: u64, state: InstanceState, since: u64) -> InstanceRecord {
    let n = NodeId::from_u64(node);
    let mut r = record("web", slot, n, state);
    r.version = version;
    r.id = InstanceRecord::id_for("web", slot, version, n);
    r.since_ms = since;
    r
}

fn three_v1() -> Vec<InstanceRecord> {
    (0..3)
        .map(|s| inst(s, 1, u64::from(s) + 1, InstanceState::Ready, 0))
        .collect()
}

fn nodes() -> Vec<NodeView> {
    (1..=3).map(|i| node(i, "", 4096)).collect()
}

fn read(wall: u64, job: &JobRecord, recs: &[InstanceRecord]) -> Rollouts {
    rollouts(wall, &nodes(), std::slice::from_ref(job), recs)
}

#[test]
fn a_job_without_old_instances_is_not_rolling() {
    let mut j = web_v2(1);
    j.version = 1;
    let r = read(10_000, &j, &three_v1());
    assert!(r.job("web").is_none());
    assert!(r.may_start("web", 2));
    assert_eq!(r.old_fate("web", 0, true), OldFate::Stop);
}

#[test]
fn max_parallel_slots_start_at_a_time_and_old_ones_stay_until_proven() {
    let j = web_v2(1);
    let mut recs = three_v1();
    let r = read(10_000, &j, &recs);
    let ro = r.job("web").unwrap();
    assert_eq!(ro.from, 1);
    assert_eq!(ro.slots, [SlotPhase::Waiting; 3]);
    assert!(r.may_start("web", 0));
    assert!(!r.may_start("web", 1), "one at a time");
    assert_eq!(r.old_fate("web", 0, true), OldFate::Keep);

    // Slot 0's new instance launches, then is ready: slot 1 still waits.
    recs.push(inst(0, 2, 1, InstanceState::Launching, 10_000));
    let r = read(10_100, &j, &recs);
    assert_eq!(r.job("web").unwrap().slots[0], SlotPhase::Starting);
    assert!(r.may_start("web", 0) && !r.may_start("web", 1));
    recs.last_mut().unwrap().state = InstanceState::Ready;
    recs.last_mut().unwrap().since_ms = 10_200;
    let r = read(10_300, &j, &recs);
    assert_eq!(r.old_fate("web", 0, true), OldFate::Keep, "not yet proven");
    assert_eq!(r.wake_ms(), Some(10_700), "proven at ready + min_healthy");
    assert!(!r.may_start("web", 1));

    // Proven: the old one drains, the next slot may start.
    let r = read(10_700, &j, &recs);
    assert_eq!(r.job("web").unwrap().slots[0], SlotPhase::Done);
    assert_eq!(r.old_fate("web", 0, true), OldFate::Drain);
    assert!(r.may_start("web", 1));
    assert!(!r.may_start("web", 2));
    assert_eq!(r.old_fate("web", 1, true), OldFate::Keep);

    // The old instance draining: slot 0 is fresh, nothing more to keep.
    recs[0].state = InstanceState::Draining;
    let r = read(10_800, &j, &recs);
    assert_eq!(r.job("web").unwrap().slots[0], SlotPhase::Fresh);
    assert_eq!(r.job("web").unwrap().replaced(), 1);
}

#[test]
fn max_parallel_two_starts_two_slots() {
    let j = web_v2(2);
    let r = read(10_000, &j, &three_v1());
    let starts: Vec<bool> = (0..3).map(|s| r.may_start("web", s)).collect();
    assert_eq!(starts, [true, true, false]);
}

#[test]
fn a_new_instance_that_fails_halts_the_rollout_and_names_the_version_to_revert_to() {
    let j = web_v2(1);
    let mut recs = three_v1();
    let mut bad = inst(0, 2, 1, InstanceState::Failed, 16_000);
    bad.reason = "not healthy within 6 s; restart 1 of 3 in 1000 ms".into();
    recs.push(bad);
    let r = read(16_100, &j, &recs);
    let ro = r.job("web").unwrap();
    let f = ro.failure.as_ref().expect("failed");
    assert_eq!(f.slot, 0);
    assert_eq!(f.node, NodeId::from_u64(1));
    assert_eq!(f.revert_to, Some(1));
    assert!(f.reason.contains("not healthy within 6 s"), "{}", f.reason);
    assert!(!r.may_start("web", 1), "halted: no further slot");
    for s in 0..3 {
        assert_eq!(r.old_fate("web", s, true), OldFate::Keep, "old ones stay");
    }
}

/// v2 was deployed over v1 and v3 over v2 before v2 proved itself: slot 0
/// holds v1 ready and v2 still launching when v3's instance fails. The
/// revert goes to v1, the version that serves, not to the unproven v2.
#[test]
fn a_failure_reverts_to_the_newest_ready_version_not_an_unproven_one() {
    let mut j = web_v2(1);
    j.version = 3;
    let mut recs = three_v1();
    recs.push(inst(0, 2, 1, InstanceState::Launching, 15_000));
    recs.push(inst(0, 3, 1, InstanceState::Failed, 16_000));
    let r = read(16_100, &j, &recs);
    let f = r.job("web").unwrap().failure.as_ref().expect("failed");
    assert_eq!(f.revert_to, Some(1));
}

#[test]
fn a_new_instance_launching_past_its_deadline_fails_and_a_refusal_does_not() {
    let j = web_v2(1);
    let mut recs = three_v1();
    recs.push(inst(0, 2, 1, InstanceState::Launching, 10_000));
    let r = read(15_999, &j, &recs);
    assert!(r.job("web").unwrap().failure.is_none());
    assert_eq!(r.wake_ms(), Some(16_000));
    let r = read(16_000, &j, &recs);
    let f = r.job("web").unwrap().failure.clone().unwrap();
    assert_eq!(f.reason, "not healthy within 6000 ms");

    let mut recs = three_v1();
    let mut refused = inst(0, 2, 1, InstanceState::Failed, 10_000);
    refused.reason = "refused: memory on this node".into();
    refused.avoid_until_ms = Some(99_000);
    recs.push(refused);
    assert!(
        read(10_100, &j, &recs)
            .job("web")
            .unwrap()
            .failure
            .is_none()
    );
}

#[test]
fn after_a_revert_the_failed_version_is_the_old_one_and_is_drained() {
    // Reverted: the job is back at v1; v2 instances (one proven, one
    // failed) are the old ones now.
    let mut j = web_v2(1);
    j.version = 1;
    let mut recs = vec![
        inst(0, 2, 1, InstanceState::Ready, 10_000),
        inst(1, 2, 2, InstanceState::Failed, 12_000),
        inst(1, 1, 2, InstanceState::Ready, 0),
        inst(2, 1, 3, InstanceState::Ready, 0),
    ];
    let r = read(20_000, &j, &recs);
    let ro = r.job("web").unwrap();
    assert!(
        ro.failure.is_none(),
        "the failed v2 is not the current version"
    );
    assert_eq!(ro.slots[0], SlotPhase::Waiting, "slot 0 needs a v1 again");
    assert_eq!(ro.slots[1], SlotPhase::Done);
    assert_eq!(r.old_fate("web", 1, true), OldFate::Drain);
    assert!(r.may_start("web", 0));
    recs.push(inst(0, 1, 1, InstanceState::Ready, 20_100));
    let r = read(20_700, &j, &recs);
    assert_eq!(r.old_fate("web", 0, true), OldFate::Drain);
}

#[test]
fn records_of_nodes_that_are_down_count_for_nothing() {
    let j = web_v2(1);
    let mut ns = nodes();
    ns[0].liveness = crate::jobs::placement::Liveness::Down;
    let r = rollouts(10_000, &ns, std::slice::from_ref(&j), &three_v1());
    let ro = r.job("web").unwrap();
    assert_eq!(ro.slots[0], SlotPhase::Fresh, "n1's old instance is gone");
    assert!(r.may_start("web", 0));
    assert!(r.may_start("web", 1), "slot 0 heals, slot 1 rolls");
    assert!(!r.may_start("web", 2));
}
