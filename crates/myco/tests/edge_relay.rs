//! The edge relay end to end: each node binds its own loopback address
//! (127.0.0.1, .2, .3, as machines on a LAN have their own), and the job's
//! instances listen on 127.0.0.1 only. An instance on another node is then
//! out of direct reach; a request through any node's edge still reaches
//! every instance, through the instance's node over the mesh's mutual TLS,
//! with its body, headers and Host intact.

mod edge_util;
mod support;

use std::collections::BTreeSet;

use edge_util::{ECHO, READY, WS_ECHO, get, metric, routed, send, ws_session};
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

    // Every answer from another node's instance crossed a relay.
    let mut remote_answers = 0;
    for (i, a) in h.agents.iter().enumerate() {
        let me = self_id(&h, i);
        let mut nodes = BTreeSet::new();
        for _ in 0..30 {
            let r = get(a.edge, "/lo/x?y=1");
            assert_eq!(r.status, 200, "through {}: {r:?}", a.name);
            assert_eq!(r.body["path"], "/x?y=1");
            let node = r.body["node"].as_str().unwrap_or_default().to_string();
            remote_answers += usize::from(node != me);
            nodes.insert(node);
        }
        assert_eq!(nodes.len(), 3, "edge of {} reached only {nodes:?}", a.name);
    }
    // Body, Host and the forwarding headers cross the relay.
    let me = self_id(&h, 0);
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
        remote_answers += usize::from(r.body["node"].as_str() != Some(me.as_str()));
    }
    let crossed = relayed(&h);
    assert!(
        remote_answers > 0,
        "no request reached another node's instance"
    );
    assert!(
        crossed >= remote_answers as f64,
        "{remote_answers} answers came from other nodes' instances, {crossed} crossed a relay"
    );
}

/// A WebSocket echo on loopback only, on one of two nodes: the other
/// node's edge reaches it through the relay (over the mesh's mutual TLS),
/// as every node's own edge does over loopback.
#[test]
fn websocket_reaches_a_loopback_only_instance_through_the_relay() {
    let mut h = Harness::new("edge-relay-ws");
    h.mesh_spread(2);
    let script = WS_ECHO.replace("((\"0.0.0.0\",", "((\"127.0.0.1\",");
    assert_ne!(script, WS_ECHO, "the workload binds loopback only");
    let digest = push_script_spore(&h, h.agent(0), "ws", &script);
    let job = json!({"name": "ws", "spore": digest, "count": 1,
        "health": {"http": "/health", "interval_ms": 300}});
    let _: Value = h.agent(0).client().post("/v1/jobs", &job).expect("deploy");
    for a in &h.agents {
        wait_for("a ready route on every edge", READY, || {
            match routed(a, "ws")? {
                1 => Ok(()),
                n => Err(format!("{} routes {n}", a.name)),
            }
        });
    }
    let before = relayed(&h);
    for a in &h.agents {
        ws_session(a.edge, "/ws/chat");
    }
    let after = relayed(&h);
    assert_eq!(
        after - before,
        1.0,
        "one of the two sessions crossed a relay"
    );
}

/// Agent `i`'s node id (what its instances see as `MYCO_NODE`).
fn self_id(h: &Harness, i: usize) -> String {
    let nodes = h.nodes(i).expect("nodes");
    let me = nodes.into_iter().find(|n| n.is_self);
    me.expect("the node itself in /v1/nodes").id
}

/// Requests relayed for another node, summed over every agent.
fn relayed(h: &Harness) -> f64 {
    h.agents
        .iter()
        .map(|a| metric(a, "myco_edge_relay_served_total"))
        .sum()
}

/// One request with curl speaking HTTP/2 with prior knowledge (h2c):
/// the HTTP version curl used, and the body.
fn h2c_get(port: u16, path: &str, host: Option<&str>) -> (String, Value) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--http2-prior-knowledge", "-w", "\n%{http_version}"]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let out = cmd.arg(&url).output().expect("curl (apt install curl)");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').expect("the version line");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    (version.to_string(), body)
}

#[test]
fn h2c_clients_are_served_by_path_and_by_authority() {
    let mut h = Harness::new("edge-h2c");
    h.mesh(2);
    let digest = push_script_spore(&h, h.agent(0), "echo", ECHO);
    let job = json!({"name": "echo", "spore": digest, "count": 2, "strategy": "spread",
        "health": {"http": "/health", "interval_ms": 300}});
    let _: Value = h.agent(0).client().post("/v1/jobs", &job).expect("deploy");
    wait_for("2 ready routes", READY, || {
        match routed(h.agent(0), "echo")? {
            2 => Ok(()),
            n => Err(format!("routes {n}")),
        }
    });
    // Both instances answer, the local one and the relayed one. Which one
    // the edge picks is its balancer's choice, so ten requests could all
    // go to one (CI saw it once): ask until both have answered.
    let mut nodes = BTreeSet::new();
    wait_for(
        "both instances, local and relayed, to answer",
        READY,
        || {
            let (version, body) = h2c_get(h.agent(0).edge, "/echo/x?y=1", None);
            assert_eq!(version, "2", "spoken as HTTP/2");
            assert_eq!(body["path"], "/x?y=1");
            nodes.insert(body["node"].to_string());
            match nodes.len() {
                2 => Ok(()),
                _ => Err(format!("answered by {nodes:?}")),
            }
        },
    );
    // The host an HTTP/2 client names (`:authority`) routes like `Host`,
    // and reaches the instance as its Host.
    let (version, body) = h2c_get(h.agent(0).edge, "/whole", Some("echo.example"));
    assert_eq!(version, "2");
    assert_eq!(body["path"], "/whole");
    assert_eq!(body["headers"]["host"], "echo.example");
    // HTTP/1.1 on the same port still works.
    assert_eq!(get(h.agent(0).edge, "/echo/p").status, 200);
}
