//! A job's `[edge] balance`: with `round_robin` an edge takes the job's
//! ready instances in turn, so one client's requests alternate between two
//! instances (with the default, power of two choices over requests in
//! flight, idle instances are drawn at random).

mod edge_util;
mod support;

use edge_util::{ECHO, READY, get, routed};
use serde_json::{Value, json};
use support::{Harness, push_script_spore, wait_for};

#[test]
fn round_robin_alternates_between_two_instances() {
    let mut h = Harness::new("edge-balance");
    h.mesh(1);
    let digest = push_script_spore(&h, h.agent(0), "rr", ECHO);
    let job = json!({"name": "rr", "spore": digest, "count": 2,
        "health": {"http": "/health", "interval_ms": 300},
        "edge": {"balance": "round_robin"}});
    let _: Value = h.agent(0).client().post("/v1/jobs", &job).expect("deploy");
    let shown: Value = h.agent(0).anon().get("/v1/jobs/rr").expect("job");
    assert!(
        shown.to_string().contains("\"balance\":\"round_robin\""),
        "the job keeps its balance: {shown}"
    );
    let a = h.agent(0);
    wait_for("2 ready routes", READY, || match routed(a, "rr")? {
        2 => Ok(()),
        n => Err(format!("routes {n}")),
    });
    let seen: Vec<String> = (0..12)
        .map(|_| {
            let r = get(a.edge, "/rr/");
            assert_eq!(r.status, 200, "{r:?}");
            r.body["instance"].as_str().expect("instance").to_string()
        })
        .collect();
    for w in seen.windows(3) {
        assert_ne!(w[0], w[1], "two in a row on one instance: {seen:?}");
        assert_eq!(w[0], w[2], "not in turn: {seen:?}");
    }
}

/// A job with `[edge]` settings is written as job record format 3, which a
/// node of the release before cannot read: while one is a live member such
/// a deploy is refused (409) naming it, and a job without `[edge]` still
/// deploys.
#[test]
fn edge_settings_wait_for_older_nodes_to_be_upgraded() {
    let mut h = Harness::new("edge-formats");
    h.mesh(1);
    h.env = vec![
        ("MYCO_FAULTS".into(), "1".into()),
        ("MYCO_SPEAKS_RECORDS".into(), "1".into()),
    ];
    h.start(
        "old",
        support::Opts {
            join: vec![0],
            key_file: Some(h.key_file()),
            ..support::Opts::default()
        },
    );
    wait_for("n1 to see the old node alive", READY, || {
        match h.state_of(0, "old")? {
            s if s == "alive" => Ok(()),
            s => Err(s),
        }
    });
    let a = h.agent(0);
    let digest = push_script_spore(&h, a, "rr", ECHO);
    // The old node's manifest reaches n1 shortly after it is alive.
    let job = json!({"name": "rr", "spore": digest, "count": 1,
        "edge": {"balance": "round_robin"}});
    wait_for("the deploy refused", READY, || {
        match a.client().post::<_, Value>("/v1/jobs", &job) {
            Ok(v) => Err(format!("deployed: {v}")),
            Err(e) if e.to_string().contains("answered 409") => Ok(e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    });
    let refused = a
        .client()
        .post::<_, Value>("/v1/jobs", &job)
        .expect_err("refused");
    let msg = refused.to_string();
    assert!(msg.contains("answered 409"), "{msg}");
    assert!(msg.contains("old") && msg.contains("upgrade"), "{msg}");
    assert!(
        a.anon().get::<Value>("/v1/jobs/rr").is_err(),
        "nothing written"
    );
    let plain = json!({"name": "rr", "spore": digest, "count": 1});
    let _: Value = a
        .client()
        .post("/v1/jobs", &plain)
        .expect("deploy without [edge]");
}
