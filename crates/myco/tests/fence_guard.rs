//! A `duplicates = "never"` instance whose agent dies while the machine
//! runs on (`myco_agent::exec::fence_guard`): its guard kills it within the
//! fence time, before the majority's replacement may start, and never two
//! run at once; an agent back within the fence time adopts it instead.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Harness, OK_SERVER, cli, ok, procs_in, push_script_spore, ready_nodes, s, srv_job_file,
    wait_for,
};

/// Room for a spore fetch, a spawn, a settle period and a probe or two.
const READY: Duration = Duration::from_secs(40);
/// The fence time of this test (the default).
const FENCE: Duration = Duration::from_secs(3);

fn node_id(h: &Harness, i: usize) -> String {
    let v: Value = h.agent(i).anon().get("/v1/status").expect("status");
    v["node"]["id"].as_str().expect("node id").to_string()
}

/// The `lock` workload's processes on agent `i` (the guard leaves the
/// instance directory, so it is not one of them).
fn procs(h: &Harness, i: usize) -> Vec<u32> {
    let dir = h.agent(i).dir.join("instances");
    let dir = fs::canonicalize(&dir).unwrap_or(dir);
    procs_in(&dir)
        .into_iter()
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| {
                cwd.strip_prefix(&dir)
                    .is_ok_and(|rest| rest.to_string_lossy().starts_with("lock-"))
            })
        })
        .collect()
}

/// Fails if the never job runs more than one process mesh-wide.
#[track_caller]
fn at_most_one(h: &Harness) {
    let all: Vec<u32> = (0..3).flat_map(|i| procs(h, i)).collect();
    assert!(all.len() <= 1, "{all:?}: two processes of a never job");
}

fn parent_cmdline(pid: u32) -> String {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ppid = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .unwrap_or("0");
    fs::read(format!("/proc/{ppid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn a_never_instance_dies_with_its_agent_unless_the_agent_returns_within_the_fence_time() {
    let mut h = Harness::with_env("fence_guard", &[("MYCO_FENCE_MS", "3000")]);
    h.mesh(3);
    push_script_spore(&h, h.agent(0), "srv", OK_SERVER);
    // An allowed job on every node first, so every node holds the spore
    // (the node it was pushed to may be the one that dies).
    let warm = srv_job_file(&h, "warm", 3, "allowed");
    ok(
        &cli(h.agent(0), &["deploy", s(&warm), "--watch"]),
        "deploy warm",
    );
    let lock = srv_job_file(&h, "lock", 1, "never");
    ok(
        &cli(h.agent(0), &["deploy", s(&lock), "--detach"]),
        "deploy",
    );
    wait_for("lock ready", READY, || {
        match ready_nodes(h.agent(0), "lock")?.len() {
            1 => Ok(()),
            n => Err(format!("{n} ready")),
        }
    });
    let holder = ready_nodes(h.agent(0), "lock").unwrap()[0].clone();
    let k = (0..3).find(|&i| node_id(&h, i) == holder).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != k).collect();
    let pids = procs(&h, k);
    assert_eq!(pids.len(), 1, "one workload on the holder");
    let guard = parent_cmdline(pids[0]);
    assert!(guard.contains("__fence-guard"), "parent: {guard}");

    // A quick restart (well within the fence time): the same process runs
    // on, adopted, through more than the fence time.
    h.kill(k);
    h.restart(k);
    wait_for("lock ready on the restarted node", READY, || {
        at_most_one(&h);
        match ready_nodes(h.agent(k), "lock")?.as_slice() {
            [n] if *n == holder => Ok(()),
            other => Err(format!("ready on {other:?}")),
        }
    });
    let window = Instant::now() + FENCE + Duration::from_secs(1);
    while Instant::now() < window {
        assert_eq!(procs(&h, k), pids, "the adopted instance was replaced");
        at_most_one(&h);
        std::thread::sleep(support::POLL);
    }

    // The agent dies for good, the machine runs on: the guard kills the
    // workload within the fence time, and no replacement runs before.
    h.kill(k);
    let died = Instant::now();
    let (_, gone) = wait_for("the guard kills the orphan", READY, || {
        at_most_one(&h);
        match procs(&h, k).len() {
            0 => Ok(()),
            n => Err(format!("{n} still running")),
        }
    });
    println!("the orphan was killed {gone:?} after its agent died");
    // Renewed every T/4, so the lease was at most T/4 old at the death
    // (plus scheduling); looked at every 250 ms.
    assert!(
        gone >= FENCE * 3 / 4 - Duration::from_millis(300),
        "killed after {gone:?}: sooner than the lease allows"
    );
    assert!(
        gone <= FENCE + Duration::from_millis(250) + support::POLL * 4,
        "killed after {gone:?}: the bound is T + 250 ms"
    );
    let (_, moved) = wait_for("lock ready on another node", READY, || {
        at_most_one(&h);
        match ready_nodes(h.agent(others[0]), "lock")?.as_slice() {
            [n] if *n != holder => Ok(()),
            other => Err(format!("ready on {other:?}")),
        }
    });
    println!(
        "the replacement was ready {:?} after the agent died",
        died.elapsed()
    );
    let _ = moved;
}
