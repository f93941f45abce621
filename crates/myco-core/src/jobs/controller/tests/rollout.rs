//! Rollouts through the controller: one node, driven like a shell.

use myco_proto::instance::{Exit, InstanceRecord, InstanceState};
use myco_proto::job::JobRecord;

use super::super::*;
use super::shell::*;

pub(super) fn v2(j: &JobRecord) -> JobRecord {
    let mut n = j.clone();
    n.version = 2;
    n.spec.env.insert("V".into(), "2".into());
    n.spec.update.min_healthy_ms = 500;
    n.spec.update.healthy_deadline_ms = 3_000;
    n
}

fn id2(slot: u32) -> String {
    InstanceRecord::id_for("web", slot, 2, me())
}

/// Runs timeouts until `t`, answering every probe of `ok` with success.
pub(super) fn advance_probing(s: &mut Shell, t: u64, ok: &[&str]) -> Vec<JobAction> {
    let mut out = Vec::new();
    loop {
        let acts = s.advance(t.min(s.c.poll_timeout().map_or(t, |d| d.0)));
        let probes: Vec<String> = acts
            .iter()
            .filter_map(|a| match a {
                JobAction::Probe { id } if ok.contains(&id.as_str()) => Some(id.clone()),
                _ => None,
            })
            .collect();
        out.extend(acts);
        for p in probes {
            out.extend(s.event(&p, ProcessEvent::ProbeOk));
        }
        if s.now.0 >= t {
            return out;
        }
    }
}

/// One ready v1 instance of `web`, then v2 deployed and settled.
fn rolling() -> (Shell, JobRecord) {
    let j1 = quick("web", 1, true);
    let mut s = running(vec![j1.clone()]);
    let w1 = id("web", 0);
    let t = s.now.0 + 100;
    advance_probing(&mut s, t, &[&w1]);
    assert_eq!(s.record(&w1).unwrap().state, InstanceState::Ready);
    s.view.jobs = vec![v2(&j1)];
    s.sync();
    (s, j1)
}

#[test]
fn a_new_version_starts_beside_the_old_which_drains_only_once_proven() {
    let (mut s, _) = rolling();
    let (w1, w2) = (id("web", 0), id2(0));
    let t = s.now.0 + SETTLE.as_millis() as u64;
    let acts = advance_probing(&mut s, t, &[&w1]);
    assert_eq!(spawns(&acts), [w2.as_str()], "the new one starts");
    assert!(kills(&acts).is_empty(), "the old one stays: {acts:?}");
    s.event(&w2, ProcessEvent::Started);
    let t = s.now.0 + 200;
    advance_probing(&mut s, t, &[&w1, &w2]);
    assert_eq!(s.record(&w2).unwrap().state, InstanceState::Ready);
    let ready_at = s.record(&w2).unwrap().since_ms - WALL0;

    // Not proven yet: the old one serves on.
    let acts = advance_probing(&mut s, ready_at + 499, &[&w1, &w2]);
    assert!(writes(&acts, &w1).is_empty() && kills(&acts).is_empty());
    assert_eq!(s.record(&w1).unwrap().state, InstanceState::Ready);

    // Proven: draining first, still running; stopped after the drain.
    let acts = advance_probing(&mut s, ready_at + 500, &[&w1, &w2]);
    assert_eq!(writes(&acts, &w1), [InstanceState::Draining]);
    assert!(kills(&acts).is_empty(), "drains before it stops");
    let drained = ready_at + 500 + DEFAULT_DRAIN.as_millis() as u64;
    let acts = advance_probing(&mut s, drained - 1, &[&w2]);
    assert!(kills(&acts).is_empty());
    let acts = advance_probing(&mut s, drained, &[&w2]);
    assert_eq!(kills(&acts), [w1.as_str()]);
    let events: Vec<JobEvent> = std::iter::from_fn(|| s.c.poll_event()).collect();
    let kinds: Vec<JobEventKind> = events.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&JobEventKind::RolloutStep), "{events:?}");
    // Done once the last old instance drains: every ready one is new.
    assert_eq!(kinds.last(), Some(&JobEventKind::RolloutDone), "{events:?}");
    assert!(
        events[0]
            .message
            .starts_with("rollout web v2: slot 0 starts")
    );
}

#[test]
fn a_new_version_that_never_gets_healthy_asks_for_a_revert_and_the_old_one_stays() {
    let (mut s, j1) = rolling();
    let (w1, w2) = (id("web", 0), id2(0));
    let t = s.now.0 + SETTLE.as_millis() as u64;
    advance_probing(&mut s, t, &[&w1]);
    s.event(&w2, ProcessEvent::Started);
    // Its probes are never answered well: the deadline kills it.
    let t = s.now.0 + 3_100;
    let mut acts = advance_probing(&mut s, t, &[&w1]);
    assert!(kills(&acts).contains(&w2), "killed at its deadline");
    acts.extend(s.event(&w2, ProcessEvent::Exited(Exit::Signal(15))));
    let reverts: Vec<&JobAction> = acts
        .iter()
        .filter(|a| matches!(a, JobAction::Revert { .. }))
        .collect();
    assert_eq!(reverts.len(), 1, "{acts:?}");
    let JobAction::Revert { from, to, .. } = reverts[0] else {
        unreachable!()
    };
    assert_eq!((*from, *to), (2, 1));
    assert!(!kills(&acts).contains(&w1), "the old one stays");
    let events: Vec<JobEventKind> = std::iter::from_fn(|| s.c.poll_event())
        .map(|e| e.kind)
        .collect();
    assert!(events.contains(&JobEventKind::Reverted), "{events:?}");

    // The shell writes the revert: v1 is current again; the failed v2 is
    // stopped, never started again, and v1 keeps running.
    s.view.jobs = vec![j1];
    s.sync();
    let t = s.now.0 + 10_000;
    let acts = advance_probing(&mut s, t, &[&w1]);
    assert!(spawns(&acts).is_empty(), "{acts:?}");
    assert!(!kills(&acts).contains(&w1));
    assert_eq!(s.record(&w1).unwrap().state, InstanceState::Ready);
    assert!(s.c.local().all(|(id, _)| id == w1), "only v1 is left");
}
