//! Rollouts of `duplicates = "never"` jobs: break before make, yet each
//! new instance is proven (ready for `min_healthy_ms`) before the next
//! slot's old one stops, and a new version that fails reverts.

use myco_proto::instance::{Exit, InstanceRecord, InstanceState};
use myco_proto::job::JobRecord;

use super::super::*;
use super::fence::{never, three};
use super::rollout::{advance_probing, v2};
use super::shell::*;

fn id2(slot: u32) -> String {
    InstanceRecord::id_for("web", slot, 2, me())
}

/// `web`, a never job with a health check, `count` instances ready on me
/// at v1; then v2 is deployed (the next sync shows it). Returns the shell
/// and v1's record.
fn rolling(count: u32) -> (Shell, JobRecord) {
    let mut j1 = never("web", count);
    j1.spec.health = Some(quick_health());
    let mut s = three(vec![j1.clone()]);
    let acts = s.advance(SETTLE.as_millis() as u64);
    let olds = spawns(&acts);
    assert_eq!(olds.len(), count as usize, "{acts:?}");
    for o in &olds {
        s.event(o, ProcessEvent::Started);
    }
    let ok: Vec<&str> = olds.iter().map(String::as_str).collect();
    let t = s.now.0 + 100;
    advance_probing(&mut s, t, &ok);
    for o in &olds {
        assert_eq!(s.record(o).unwrap().state, InstanceState::Ready);
    }
    s.view.jobs = vec![v2(&j1)];
    (s, j1)
}

/// Moves to v2's first slot: its old instance stops, then the new starts.
fn first_slot_switches(s: &mut Shell) {
    let mut acts = s.sync();
    let t = s.now.0 + 2_000;
    acts.extend(s.advance(t));
    assert_eq!(
        kills(&acts),
        [id("web", 0)],
        "slot 0's old stops first: {acts:?}"
    );
    assert!(spawns(&acts).is_empty(), "not beside the old: {acts:?}");
    let mut acts = s.event(&id("web", 0), ProcessEvent::Exited(Exit::Signal(15)));
    let t = s.now.0 + 2_000;
    acts.extend(s.advance(t));
    assert_eq!(spawns(&acts), [id2(0)], "{acts:?}");
    s.event(&id2(0), ProcessEvent::Started);
}

#[test]
fn a_never_rollout_proves_each_new_instance_before_the_next_slot() {
    let (mut s, _) = rolling(2);
    first_slot_switches(&mut s);
    let (new0, old1) = (id2(0), id("web", 1));
    // Ready soon; slot 1's old stays while the new one proves itself.
    let t = s.now.0 + 200;
    let acts = advance_probing(&mut s, t, &[&new0, &old1]);
    assert!(kills(&acts).is_empty(), "{acts:?}");
    let ready = s.record(&new0).expect("a record").clone();
    assert_eq!(ready.state, InstanceState::Ready);
    // Wall time is WALL0 + time in this shell.
    let proven = ready.since_ms + 500 - WALL0;
    let acts = advance_probing(&mut s, proven - 1, &[&new0, &old1]);
    assert!(
        kills(&acts).is_empty(),
        "slot 1 moved before slot 0 was proven: {acts:?}"
    );
    let acts = advance_probing(&mut s, proven + 100, &[&new0, &old1]);
    assert_eq!(kills(&acts), std::slice::from_ref(&old1), "{acts:?}");
    assert!(
        spawns(&acts).is_empty(),
        "slot 1's new waits for its old: {acts:?}"
    );
    s.event(&old1, ProcessEvent::Exited(Exit::Signal(15)));
    let t = s.now.0 + 2_000;
    let acts = advance_probing(&mut s, t, &[&new0, &id2(1)]);
    assert_eq!(spawns(&acts), [id2(1)], "{acts:?}");
}

#[test]
fn a_never_rollout_whose_new_instance_never_gets_healthy_reverts() {
    let (mut s, _) = rolling(2);
    first_slot_switches(&mut s);
    // Its probes never pass: at the deadline (3 s) the rollout fails.
    let t = s.now.0 + 3_500;
    let acts = advance_probing(&mut s, t, &[&id("web", 1)]);
    let revert = acts.iter().find_map(|a| match a {
        JobAction::Revert { job, from, to, .. } => Some((job.clone(), *from, *to)),
        _ => None,
    });
    assert_eq!(revert, Some(("web".to_string(), 2, 1)), "{acts:?}");
    assert!(
        !kills(&acts).contains(&id("web", 1)),
        "slot 1's old must stay: {acts:?}"
    );
}
