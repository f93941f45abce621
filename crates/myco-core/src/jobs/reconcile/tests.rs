//! Table-driven: each case is a node's situation and the actions expected.

use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::{JobRecord, Resources, Strategy};

use super::*;
use crate::jobs::placement::tests::{job, node, record};
use crate::jobs::placement::{Cluster, place};

const ME: u64 = 1;

fn me() -> NodeId {
    NodeId::from_u64(ME)
}

fn id(slot: u32, version: u64) -> String {
    InstanceRecord::id_for("web", slot, version, me())
}

fn local(slot: u32, version: u64, status: LocalStatus) -> LocalInstance {
    LocalInstance {
        id: id(slot, version),
        job: "web".into(),
        slot,
        version,
        status,
        resources: Resources {
            cpu_milli: 100,
            memory_mb: 64,
            pids: 256,
            vcpus: 1,
        },
    }
}

fn start(slot: u32, version: u64) -> Action {
    Action::Start {
        id: id(slot, version),
        job: "web".into(),
        slot,
        version,
    }
}

fn keep(slot: u32, version: u64) -> Action {
    Action::Keep {
        id: id(slot, version),
    }
}

fn stop(slot: u32, version: u64, reason: &str) -> Action {
    Action::Stop {
        id: id(slot, version),
        reason: reason.into(),
    }
}

fn hold(slot: u32) -> Action {
    Action::Hold {
        job: "web".into(),
        slot,
        until: Time(1_000),
    }
}

struct Case {
    name: &'static str,
    /// The job's count, version, and whether it is stopped.
    count: u32,
    version: u64,
    stopped: bool,
    memory_mb: u64,
    /// This node's own idea of its memory, when it differs from its
    /// manifest's.
    own_memory_mb: Option<u64>,
    local: Vec<LocalInstance>,
    records: Vec<InstanceRecord>,
    settled: bool,
    /// The node is handing off to leave.
    leaving: bool,
    /// Other nodes' records.
    others: Vec<InstanceRecord>,
    want: Vec<Action>,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            name: "",
            count: 2,
            version: 1,
            stopped: false,
            memory_mb: 4096,
            own_memory_mb: None,
            local: vec![],
            records: vec![],
            settled: true,
            leaving: false,
            others: vec![],
            want: vec![],
        }
    }
}

fn run(case: &Case) -> Vec<Action> {
    let mut web: JobRecord = job("web", case.count, Strategy::Spread, 64);
    web.version = case.version;
    web.stopped = case.stopped;
    let jobs = [web];
    let nodes = [node(ME, "", case.memory_mb)];
    let wall_ms = 10_000;
    let placement = place(&Cluster {
        wall_ms,
        nodes: &nodes,
        jobs: &jobs,
        instances: &case.records,
        versions: &[],
    });
    let mut settle = Settle::new(Duration::from_millis(1_000));
    settle.observe(Time::ZERO, placement.fingerprint);
    let now = if case.settled { Time(1_000) } else { Time(999) };
    let mut capacity = nodes[0].capacity;
    capacity.memory_mb = case.own_memory_mb.unwrap_or(capacity.memory_mb);
    reconcile(&ReconcileInput {
        me: me(),
        now,
        wall_ms,
        placement: &placement,
        jobs: &jobs,
        local: &case.local,
        records: &case.records,
        capacity,
        settle: &settle,
        rollouts: &Default::default(),
        leaving: case.leaving,
        others: &case.others,
    })
}

#[test]
fn the_reconciler_closes_the_gap_case_by_case() {
    use LocalStatus::*;
    let other_job = LocalInstance {
        job: "gone".into(),
        id: "gone-0-v1-x".into(),
        ..local(0, 1, Orphan)
    };
    let mut refused = record("web", 1, me(), InstanceState::Failed);
    refused.reason = "refused: memory on this node (need 64 MB, free 36)".into();
    let mut avoided = record("web", 0, me(), InstanceState::Failed);
    avoided.avoid_until_ms = Some(20_000);
    // What a hand-off leaves: the instance stopped, the slot avoided here.
    let mut handed_off = record("web", 0, me(), InstanceState::Stopped);
    handed_off.avoid_until_ms = Some(20_000);
    let cases = vec![
        Case {
            name: "fresh and settled: start every slot",
            want: vec![start(0, 1), start(1, 1)],
            ..Default::default()
        },
        Case {
            name: "fresh, view not settled: hold",
            settled: false,
            want: vec![hold(0), hold(1)],
            ..Default::default()
        },
        Case {
            name: "one runs, one is missing",
            local: vec![local(0, 1, Supervised)],
            want: vec![keep(0, 1), start(1, 1)],
            ..Default::default()
        },
        Case {
            name: "agent restarted: survivors are adopted even before the view settles",
            local: vec![local(0, 1, Orphan), local(1, 1, Orphan)],
            settled: false,
            want: vec![
                Action::Adopt { id: id(0, 1) },
                Action::Adopt { id: id(1, 1) },
            ],
            ..Default::default()
        },
        Case {
            name: "an unwanted survivor waits for a settled view",
            count: 1,
            local: vec![local(0, 1, Orphan), local(1, 1, Orphan)],
            settled: false,
            want: vec![Action::Adopt { id: id(0, 1) }, keep(1, 1)],
            ..Default::default()
        },
        Case {
            name: "scaled down: the extra slot stops once settled",
            count: 1,
            local: vec![local(0, 1, Supervised), local(1, 1, Supervised)],
            want: vec![keep(0, 1), stop(1, 1, "scaled down")],
            ..Default::default()
        },
        Case {
            name: "job stopped: stop at once, settled or not",
            stopped: true,
            settled: false,
            local: vec![local(0, 1, Supervised)],
            want: vec![stop(0, 1, "job stopped")],
            ..Default::default()
        },
        Case {
            name: "new version: the old instance stops, the new one starts",
            version: 2,
            count: 1,
            local: vec![local(0, 1, Supervised)],
            want: vec![stop(0, 1, "replaced by version 2"), start(0, 2)],
            ..Default::default()
        },
        Case {
            name: "room still held by an unwanted instance: stop it, hold the start",
            memory_mb: 100,
            count: 1,
            local: vec![other_job.clone()],
            want: vec![
                Action::Stop {
                    id: other_job.id.clone(),
                    reason: "job removed".into(),
                },
                Action::Hold {
                    job: "web".into(),
                    slot: 0,
                    until: Time(1_000),
                },
            ],
            ..Default::default()
        },
        Case {
            name: "this node has less room than its manifest said: refuse visibly",
            own_memory_mb: Some(100),
            want: vec![
                start(0, 1),
                Action::Refuse {
                    id: id(1, 1),
                    job: "web".into(),
                    slot: 1,
                    version: 1,
                    reason: "refused: memory on this node (need 64 MB, free 36)".into(),
                },
            ],
            ..Default::default()
        },
        Case {
            name: "a refusal the record already shows is not written again",
            own_memory_mb: Some(100),
            records: vec![refused],
            want: vec![start(0, 1)],
            ..Default::default()
        },
        Case {
            name: "gave up: the record stays while it keeps the job away",
            count: 1,
            local: vec![local(0, 1, GaveUp)],
            records: vec![avoided.clone()],
            want: vec![],
            ..Default::default()
        },
        Case {
            name: "gave up, then the agent restarted: still kept away",
            count: 1,
            records: vec![avoided.clone()],
            want: vec![],
            ..Default::default()
        },
        Case {
            name: "handed off and still leaving: the record keeps the slot away",
            count: 1,
            records: vec![handed_off.clone()],
            leaving: true,
            want: vec![],
            ..Default::default()
        },
        Case {
            name: "handed off, then back: the avoidance ends with the life that left",
            count: 1,
            records: vec![handed_off],
            want: vec![Action::Forget {
                job: "web".into(),
                id: id(0, 1),
            }],
            ..Default::default()
        },
        Case {
            name: "a record of an instance that is gone and unwanted is forgotten",
            count: 1,
            records: vec![record("web", 3, me(), InstanceState::Ready)],
            want: vec![
                start(0, 1),
                Action::Forget {
                    job: "web".into(),
                    id: id(3, 1),
                },
            ],
            ..Default::default()
        },
        Case {
            name: "a wanted instance that died with the agent starts again under its id",
            count: 1,
            records: vec![record("web", 0, me(), InstanceState::Ready)],
            want: vec![start(0, 1)],
            ..Default::default()
        },
    ];
    for case in &cases {
        assert_eq!(run(case), case.want, "case: {}", case.name);
    }
}

#[test]
fn a_slot_moved_to_another_node_stops_here_once_settled_and_replaced() {
    let mut jobs = [job("web", 1, Strategy::Spread, 64)];
    let mut nodes = [node(ME, "", 4096), node(2, "", 4096)];
    // Make node 2 the only choice: this node is down in the view.
    nodes[0].liveness = crate::jobs::placement::Liveness::Down;
    let placement = place(&Cluster {
        wall_ms: 0,
        nodes: &nodes,
        jobs: &jobs,
        instances: &[],
        versions: &[],
    });
    let mut settle = Settle::new(Duration::from_millis(1_000));
    settle.observe(Time::ZERO, placement.fingerprint);
    let local = [local(0, 1, LocalStatus::Supervised)];
    let rollouts = Default::default();
    let to = NodeId::from_u64(2);
    let moved = [stop(0, 1, &format!("slot moved to {to}"))];
    let pass = |now, jobs: &[JobRecord], others: &[InstanceRecord]| {
        reconcile(&ReconcileInput {
            me: me(),
            now,
            wall_ms: 0,
            placement: &placement,
            jobs,
            local: &local,
            records: &[],
            capacity: nodes[0].capacity,
            settle: &settle,
            rollouts: &rollouts,
            leaving: false,
            others,
        })
    };
    assert_eq!(pass(Time(500), &jobs, &[]), [keep(0, 1)], "unsettled");
    // Make before break: it serves until node 2's instance is ready.
    assert_eq!(
        pass(Time(1_000), &jobs, &[]),
        [keep(0, 1)],
        "no replacement yet"
    );
    let mut theirs = record("web", 0, to, InstanceState::Launching);
    assert_eq!(
        pass(Time(1_000), &jobs, &[theirs.clone()]),
        [keep(0, 1)],
        "launching"
    );
    theirs.state = InstanceState::Ready;
    assert_eq!(
        pass(Time(1_000), &jobs, &[theirs.clone()]),
        moved,
        "replaced"
    );
    // Another node's ready instance of the slot does not count.
    theirs.node = NodeId::from_u64(3);
    assert_eq!(
        pass(Time(1_000), &jobs, &[theirs]),
        [keep(0, 1)],
        "elsewhere"
    );
    // Two of one slot must never run: break before make.
    jobs[0].spec.duplicates = myco_proto::job::Duplicates::Never;
    assert_eq!(pass(Time(1_000), &jobs, &[]), moved, "duplicates never");
}

#[test]
fn a_moved_slot_stops_at_once_when_a_start_here_needs_its_room() {
    use myco_proto::job::Constraint;
    // web may only run on node 2 now; api only here, and api needs all
    // but 32 MB of this node: web's 64 MB must go first.
    let mut web = job("web", 1, Strategy::Spread, 64);
    web.spec
        .constraints
        .insert("zone".into(), Constraint::Eq("b".into()));
    let mut api = job("api", 1, Strategy::Spread, 4064);
    api.spec
        .constraints
        .insert("zone".into(), Constraint::Eq("a".into()));
    let jobs = [api, web];
    let nodes = [node(ME, "a", 4096), node(2, "b", 4096)];
    let placement = place(&Cluster {
        wall_ms: 0,
        nodes: &nodes,
        jobs: &jobs,
        instances: &[],
        versions: &[],
    });
    let mut settle = Settle::new(Duration::ZERO);
    settle.observe(Time::ZERO, placement.fingerprint);
    let local = [local(0, 1, LocalStatus::Supervised)];
    let actions = reconcile(&ReconcileInput {
        me: me(),
        now: Time::ZERO,
        wall_ms: 0,
        placement: &placement,
        jobs: &jobs,
        local: &local,
        records: &[],
        capacity: nodes[0].capacity,
        settle: &settle,
        rollouts: &Default::default(),
        leaving: false,
        others: &[],
    });
    let to = NodeId::from_u64(2);
    assert_eq!(
        actions,
        [
            stop(0, 1, &format!("slot moved to {to}")),
            Action::Hold {
                job: "api".into(),
                slot: 0,
                until: Time::ZERO
            }
        ]
    );
}

#[test]
fn starts_never_exceed_this_nodes_own_capacity() {
    // Placement sees 1 GB; this node holds a 512 MB survivor placement does
    // not count (its job is unknown) and thinks it has 768 MB: of four
    // 256 MB slots one starts now, two wait for the survivor to stop, and
    // one is refused.
    let jobs = [job("web", 4, Strategy::Pack, 256)];
    let nodes = [node(ME, "", 1024)];
    let placement = place(&Cluster {
        wall_ms: 0,
        nodes: &nodes,
        jobs: &jobs,
        instances: &[],
        versions: &[],
    });
    let mut settle = Settle::new(Duration::ZERO);
    settle.observe(Time::ZERO, placement.fingerprint);
    let survivor = LocalInstance {
        id: "big".into(),
        job: "big".into(),
        resources: Resources {
            cpu_milli: 1,
            memory_mb: 512,
            pids: 1,
            vcpus: 1,
        },
        ..local(0, 1, LocalStatus::Supervised)
    };
    let actions = reconcile(&ReconcileInput {
        me: me(),
        now: Time::ZERO,
        wall_ms: 0,
        placement: &placement,
        jobs: &jobs,
        local: &[survivor],
        records: &[],
        capacity: Capacity {
            memory_mb: 768,
            ..nodes[0].capacity
        },
        settle: &settle,
        rollouts: &Default::default(),
        leaving: false,
        others: &[],
    });
    let count = |f: fn(&Action) -> bool| actions.iter().filter(|a| f(a)).count();
    let starts = count(|a| matches!(a, Action::Start { .. }));
    let holds = count(|a| matches!(a, Action::Hold { .. }));
    let refusals = count(|a| matches!(a, Action::Refuse { .. }));
    assert_eq!((starts, holds, refusals), (1, 2, 1), "{actions:?}");
}
