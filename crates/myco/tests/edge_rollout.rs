//! No request lost to a rollout or a dead node, end to end: client loops
//! through the edge while a job is updated blue/green see no error at all
//! (draining instances get no new requests and finish what they have; a
//! request that meets an instance already gone is retried on another);
//! client loops while a node is SIGKILLed with its instances see at most
//! the requests in flight on it fail, and none once the node is seen down.

mod edge_util;
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use edge_util::load::Load;
use edge_util::{READY, VERSIONED, procs_in, routed};
use serde_json::{Value, json};
use support::{Agent, Harness, push_script_spore, wait_for};

fn job(digest: &str, v: u32) -> Value {
    json!({"name": "hello", "spore": digest, "count": 3, "strategy": "spread",
        "env": {"V": v.to_string()},
        "health": {"http": "/health", "interval_ms": 300},
        "update": {"max_parallel": 1, "min_healthy_ms": 300}})
}

/// Waits until every edge routes 3 ready instances of `hello`.
fn three_routed(h: &Harness) {
    for a in &h.agents {
        wait_for("3 ready routes on every edge", READY, || {
            match routed(a, "hello")? {
                3 => Ok(()),
                n => Err(format!("{} routes {n}", a.name)),
            }
        });
    }
}

/// Waits until the loops have made `n` more requests, all told.
fn more_requests(loads: &[Load], n: usize) {
    let total = || loads.iter().map(Load::count).sum::<usize>();
    let base = total();
    wait_for("more requests through the edge", READY, || {
        match total() - base {
            k if k >= n => Ok(()),
            k => Err(format!("{k} more")),
        }
    });
}

fn versions(a: &Agent) -> Result<Vec<(String, u64)>, String> {
    let v: Value = a
        .anon()
        .get("/v1/instances?job=hello")
        .map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|x| {
            let state = x["state"].as_str().unwrap_or("?").to_string();
            (state, x["version"].as_u64().unwrap_or(0))
        })
        .collect())
}

#[test]
fn a_client_loop_through_the_edge_sees_no_error_during_a_rollout() {
    let mut h = Harness::new("edge-rollout");
    h.mesh(3);
    let digest = push_script_spore(&h, h.agent(0), "hello", VERSIONED);
    let _: Value = h
        .agent(0)
        .client()
        .post("/v1/jobs", &job(&digest, 1))
        .expect("v1");
    three_routed(&h);
    let loads: Vec<Load> = (h.agents.iter())
        .map(|a| Load::start(a.edge, "/hello/", 2))
        .collect();
    wait_for("the loops running", Duration::from_secs(10), || match loads
        .iter()
        .all(|l| l.count() > 10)
    {
        true => Ok(()),
        false => Err("not yet".to_string()),
    });
    let _: Value = h
        .agent(1)
        .client()
        .post("/v1/jobs", &job(&digest, 2))
        .expect("v2");
    wait_for("3 ready at version 2, nothing else left", READY, || {
        let v = versions(h.agent(0))?;
        let done = v.len() == 3 && v.iter().all(|(s, n)| s == "ready" && *n == 2);
        if done { Ok(()) } else { Err(format!("{v:?}")) }
    });
    // The last old instances' requests finish; their routes go.
    three_routed(&h);
    more_requests(&loads, 30);
    let all: Vec<_> = loads.into_iter().flat_map(Load::stop).collect();
    let failed: Vec<_> = all.iter().filter(|o| !o.ok()).collect();
    let seen: BTreeSet<String> = (all.iter())
        .filter_map(|o| o.result.as_ref().ok())
        .filter_map(|(_, body)| serde_json::from_str::<Value>(body).ok())
        .filter_map(|b| b["version"].as_str().map(str::to_string))
        .collect();
    println!(
        "rollout under load: {} requests, {} failed",
        all.len(),
        failed.len()
    );
    assert_eq!(
        seen,
        BTreeSet::from(["1".into(), "2".into()]),
        "served both versions"
    );
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(5)]
    );
}

#[test]
fn a_node_killed_under_load_fails_at_most_its_requests_in_flight_and_none_once_seen_down() {
    let mut h = Harness::new("edge-kill");
    h.mesh(3);
    let digest = push_script_spore(&h, h.agent(0), "hello", VERSIONED);
    let _: Value = h
        .agent(0)
        .client()
        .post("/v1/jobs", &job(&digest, 1))
        .expect("v1");
    three_routed(&h);
    let loads: Vec<Load> = (h.agents[..2].iter())
        .map(|a| Load::start(a.edge, "/hello/", 2))
        .collect();
    wait_for("the loops running", Duration::from_secs(10), || match loads
        .iter()
        .all(|l| l.count() > 10)
    {
        true => Ok(()),
        false => Err("not yet".to_string()),
    });
    // The machine dies: the agent and its instance at once.
    let dir = h.agent(2).dir.clone();
    h.kill(2);
    for pid in procs_in(&dir) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
    let killed = Instant::now();
    // Seen down: both edges stop routing to it.
    for a in &h.agents[..2] {
        wait_for(
            "the dead node's instance out of the routes",
            READY,
            || match routed(a, "hello")? {
                n if n < 3 => Ok(()),
                n => Err(format!("{} routes {n}", a.name)),
            },
        );
    }
    let seen_down = Instant::now();
    more_requests(&loads, 30);
    let all: Vec<_> = loads.into_iter().flat_map(Load::stop).collect();
    let failed: Vec<_> = all.iter().filter(|o| !o.ok()).collect();
    let after: Vec<_> = failed.iter().filter(|o| o.at > seen_down).collect();
    println!(
        "node kill under load: {} requests, {} failed, seen down after {:?}",
        all.len(),
        failed.len(),
        seen_down - killed
    );
    // Four client threads: at most one request each was in flight.
    assert!(failed.len() <= 4, "{} failed: {failed:?}", failed.len());
    assert!(
        after.is_empty(),
        "failures after the node was seen down: {after:?}"
    );
    assert!(
        all.iter().filter(|o| o.at > seen_down).count() > 10,
        "the loops went on"
    );
}
