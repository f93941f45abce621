//! `duplicates` through a partition, with real agents and processes: an
//! `allowed` job and a `never` job on three nodes; the node running the
//! `never` instance is cut off (loopback fault injection, both ways).
//! `allowed` keeps `count` on both sides; `never` runs on the majority
//! side only (the isolated node stops its instance, its API says why), and
//! never on both at once; after the heal the counts are exact and no
//! stray process is left.

mod support;

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Agent, Harness, OK_SERVER, cli, ok, procs_in, push_script_spore, ready_nodes, s, srv_job_file,
    wait_for,
};

/// Room for a spore fetch, a spawn, a settle period and a probe or two.
const READY: Duration = Duration::from_secs(40);

/// Live processes of `job` on agent `a` (its instance directories are
/// named after the instance id, which starts with the job's name).
fn procs_of(a: &Agent, job: &str) -> usize {
    let dir = a.dir.join("instances");
    procs_in(&dir)
        .into_iter()
        .filter(|pid| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| {
                cwd.strip_prefix(fs::canonicalize(&dir).unwrap_or(dir.clone()))
                    .is_ok_and(|rest| rest.to_string_lossy().starts_with(&format!("{job}-")))
            })
        })
        .count()
}

fn node_id(a: &Agent) -> String {
    let v: Value = a.anon().get("/v1/status").expect("status");
    v["node"]["id"].as_str().expect("node id").to_string()
}

/// Fails if `lock` (the `never` job) runs more than one process mesh-wide.
#[track_caller]
fn at_most_one_lock(h: &Harness) -> usize {
    let n: usize = (0..3).map(|i| procs_of(h.agent(i), "lock")).sum();
    assert!(n <= 1, "{n} processes of the never job at once");
    n
}

#[test]
fn a_partition_keeps_allowed_on_both_sides_and_never_on_the_majority_only() {
    // A short fence time: the majority waits (1 s + 1 s kill) * 1.01 + 0.5 s.
    let mut h = Harness::with_env(
        "fencing",
        &[("MYCO_FAULTS", "1"), ("MYCO_FENCE_MS", "1000")],
    );
    h.mesh(3);
    push_script_spore(&h, h.agent(0), "srv", OK_SERVER);
    for (name, count, dup) in [("free", 3, "allowed"), ("lock", 1, "never")] {
        let f = srv_job_file(&h, name, count, dup);
        ok(&cli(h.agent(0), &["deploy", s(&f), "--detach"]), "deploy");
    }
    wait_for("free 3 ready, lock 1 ready", READY, || {
        let (f, l) = (
            ready_nodes(h.agent(0), "free")?,
            ready_nodes(h.agent(0), "lock")?,
        );
        if f.len() == 3 && l.len() == 1 {
            Ok(())
        } else {
            Err(format!("free {f:?}, lock {l:?}"))
        }
    });
    at_most_one_lock(&h);
    // Cut off the node that runs the never instance.
    let holder = ready_nodes(h.agent(0), "lock").unwrap()[0].clone();
    let k = (0..3).find(|&i| node_id(h.agent(i)) == holder).unwrap();
    let others: Vec<usize> = (0..3).filter(|&i| i != k).collect();
    let addr: Vec<String> = (0..3).map(|i| h.agent(i).mesh_addr()).collect();
    for i in 0..3 {
        let block: Vec<String> = if i == k {
            others.iter().map(|&o| addr[o].clone()).collect()
        } else {
            vec![addr[k].clone()]
        };
        h.agent(i).client().faults_block(&block).unwrap();
    }
    let cut = Instant::now();

    // The isolated node stops its never instance and says why; the
    // majority starts one after the lease; never two at once.
    let (_, fenced) = wait_for("the isolated node fences lock", READY, || {
        at_most_one_lock(&h);
        match procs_of(h.agent(k), "lock") {
            0 => Ok(()),
            n => Err(format!("{n} still running")),
        }
    });
    println!("the isolated node stopped its never instance {fenced:?} after the cut");
    let job: Value = h.agent(k).anon().get("/v1/jobs/lock").unwrap();
    let reason = job["pending"][0]["reason"].as_str().unwrap_or_default();
    assert_eq!(reason, "no majority: sees 1 of 3 nodes", "{job}");
    let (_, moved) = wait_for("lock ready on the majority side", READY, || {
        at_most_one_lock(&h);
        let l = ready_nodes(h.agent(others[0]), "lock")?;
        let on_majority: usize = others.iter().map(|&o| procs_of(h.agent(o), "lock")).sum();
        if l.len() == 1 && l[0] != holder && on_majority == 1 {
            Ok(())
        } else {
            Err(format!("lock {l:?}, {on_majority} processes"))
        }
    });
    println!(
        "lock ready on the majority {:?} after the cut",
        cut.elapsed()
    );
    let _ = moved;
    // allowed: count on each side.
    wait_for("free 3 on each side", READY, || {
        at_most_one_lock(&h);
        let isolated = procs_of(h.agent(k), "free");
        let majority: usize = others.iter().map(|&o| procs_of(h.agent(o), "free")).sum();
        if isolated == 3 && majority == 3 {
            Ok(())
        } else {
            Err(format!("isolated {isolated}, majority {majority}"))
        }
    });
    // The isolated node never starts lock again while cut off.
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        assert_eq!(procs_of(h.agent(k), "lock"), 0, "lock back on the minority");
        at_most_one_lock(&h);
        std::thread::sleep(support::POLL);
    }

    // Heal: exact counts, no stray process anywhere.
    for i in 0..3 {
        h.agent(i).client().faults_block(&[]).unwrap();
    }
    let healed = Instant::now();
    wait_for("exactly 3 free and 1 lock after the heal", READY, || {
        at_most_one_lock(&h);
        let free: usize = (0..3).map(|i| procs_of(h.agent(i), "free")).sum();
        let lock: usize = (0..3).map(|i| procs_of(h.agent(i), "lock")).sum();
        let all: usize = (0..3).map(|i| procs_in(&h.agent(i).dir).len()).sum();
        let (rf, rl) = (
            ready_nodes(h.agent(k), "free")?,
            ready_nodes(h.agent(k), "lock")?,
        );
        if free == 3 && lock == 1 && all == 4 && rf.len() == 3 && rl.len() == 1 {
            Ok(())
        } else {
            Err(format!(
                "{free} free, {lock} lock, {all} in all; ready {rf:?} {rl:?}"
            ))
        }
    });
    println!("exact counts {:?} after the heal", healed.elapsed());
    let metrics = h.agent(k).anon().get_text("/metrics").unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("myco_heal_decisions_total{kind=\"fenced\"}") && !l.ends_with(" 0")
        ),
        "no fence decision counted:\n{metrics}"
    );
}
