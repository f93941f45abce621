//! The edge relay end to end: each node binds its own loopback address
//! (127.0.0.1, .2, .3, as machines on a LAN have their own), and the job's
//! instances listen on 127.0.0.1 only. An instance on another node is then
//! out of direct reach; a request through any node's edge still reaches
//! every instance, through the instance's node over the mesh's mutual TLS,
//! with its body, headers and Host intact.

mod edge_util;
mod support;

use std::collections::BTreeSet;

use edge_util::{ECHO, READY, get, metric, routed, send};
use serde_json::{Value, json};
use support::{Harness, push_script_spore, wait_for};

#[test]
fn an_instance_on_loopback_only_is_reached_from_every_edge() {
    let mut h = Harness::new("edge-relay");
    h.mesh_spread(3);
    let script = ECHO.replace("(\"0.0.0.0\",", "(\"127.0.0.1\",");
    assert_ne!(script, ECHO, "the workload binds loopback only");
    let digest = push_script_spore(&h, h.agent(0), "lo", &script);
    let job = json!({"name": "lo", "spore": digest, "count": 3, "strategy": "spread",
        "health": {"http": "/health", "interval_ms": 300}});
    let _: Value = h.agent(0).client().post("/v1/jobs", &job).expect("deploy");
    for a in &h.agents {
        wait_for("3 ready routes on every edge", READY, || {
            match routed(a, "lo")? {
                3 => Ok(()),
                n => Err(format!("{} routes {n}", a.name)),
            }
        });
    }
    // The instances really are out of direct reach from other nodes: the
    // routes list them at their node's address, where nothing listens.
    let routes: Value = h.agent(0).anon().get("/mesh/routes").expect("routes");
    let lo = routes["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["job"] == "lo"))
        .expect("the job's routes");
    let remote = lo["ready"]
        .as_array()
        .expect("ready")
        .iter()
        .filter_map(|e| e["addr"].as_str())
        .filter(|a| !a.starts_with("127.0.0.1:"))
        .count();
    assert_eq!(remote, 2, "two instances at other addresses: {lo}");

    for a in &h.agents {
        let mut nodes = BTreeSet::new();
        for _ in 0..30 {
            let r = get(a.edge, "/lo/x?y=1");
            assert_eq!(r.status, 200, "through {}: {r:?}", a.name);
            assert_eq!(r.body["path"], "/x?y=1");
            nodes.insert(r.body["node"].to_string());
        }
        assert_eq!(nodes.len(), 3, "edge of {} reached only {nodes:?}", a.name);
    }
    // Body, Host and the forwarding headers cross the relay.
    for _ in 0..10 {
        let r = send(
            h.agent(0).edge,
            "POST",
            "/whole",
            &[("Host", "lo.example"), ("X-Request-Id", "rq-7")],
            "relayed body",
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["body"], "relayed body");
        assert_eq!(r.body["path"], "/whole");
        assert_eq!(r.body["headers"]["host"], "lo.example");
        assert_eq!(r.body["headers"]["x-request-id"], "rq-7");
        assert!(r.body["headers"]["x-forwarded-for"].is_string(), "{r:?}");
        assert!(r.body["headers"].get("myco-relay-to").is_none(), "{r:?}");
    }
    let relayed: f64 = h
        .agents
        .iter()
        .map(|a| metric(a, "myco_edge_relay_served_total"))
        .sum();
    assert!(
        relayed >= 60.0,
        "two thirds of 100 requests crossed a relay: {relayed}"
    );
}
