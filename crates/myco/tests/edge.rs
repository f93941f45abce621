//! The edge gateway end to end, with real agents and a real HTTP workload:
//! every node's edge reaches instances on every node, by path (prefix
//! stripped, query kept) and by Host (whole path); request ids come back,
//! forwarding headers reach the instance, a loop is refused; unknown jobs
//! get 404 JSON and a job with nothing ready 503 JSON naming it; when a
//! node dies with its instance, requests through the edge keep succeeding
//! (each one that meets the dead instance is retried on another).
//!
//! A WebSocket echo goes through the edge as an upgrade, byte for byte;
//! 100 MiB up and 100 MiB down stream through with the agent's memory flat.
//!
//! The workloads are small Python servers that echo what they got.

mod edge_util;
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use edge_util::{
    ECHO, READY, WS_ECHO, get, metric, read_head, routed, rss_kib, send, send_chunked, ws_session,
};
use serde_json::{Value, json};
use support::{Harness, push_script_spore, wait_for};

#[test]
fn edge_routes_retries_and_answers_json_errors() {
    let mut h = Harness::new("edge");
    h.mesh(3);
    let digest = push_script_spore(&h, h.agent(0), "echo", ECHO);
    let job = json!({"name": "echo", "spore": digest, "count": 3, "strategy": "spread",
        "health": {"http": "/health", "interval_ms": 300}});
    let _: Value = h.agent(0).client().post("/v1/jobs", &job).expect("deploy");
    for a in &h.agents {
        wait_for("3 ready routes on every edge", READY, || {
            match routed(a, "echo")? {
                3 => Ok(()),
                n => Err(format!("{} routes {n}", a.name)),
            }
        });
    }

    // By path from every node: prefix stripped, query kept, every node reached.
    for a in &h.agents {
        let mut nodes = BTreeSet::new();
        for _ in 0..30 {
            let r = get(a.edge, "/echo/x/y?z=1");
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body["path"], "/x/y?z=1");
            assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));
            nodes.insert(r.body["node"].to_string());
        }
        assert_eq!(nodes.len(), 3, "edge of {} reached only {nodes:?}", a.name);
    }
    // By Host: the whole path.
    for host in ["echo", "echo.example", "echo.example:80"] {
        let r = send(h.agent(1).edge, "GET", "/whole/path", &[("Host", host)], "");
        assert_eq!(
            (r.status, r.body["path"].as_str()),
            (200, Some("/whole/path")),
            "{host}"
        );
    }

    // Host names are case-insensitive.
    let r = send(
        h.agent(1).edge,
        "GET",
        "/p",
        &[("Host", "ECHO.Example")],
        "",
    );
    assert_eq!(
        (r.status, r.body["path"].as_str()),
        (200, Some("/p")),
        "{r:?}"
    );

    // A chunked body (no length) arrives whole at instances on every node,
    // the local one and those behind the relay.
    let mut nodes = BTreeSet::new();
    for _ in 0..30 {
        let r = send_chunked(
            h.agent(0).edge,
            "/echo/c",
            &["hello", ", ", "chunked world"],
        );
        assert_eq!(
            (r.status, r.body["body"].as_str()),
            (200, Some("hello, chunked world")),
            "{r:?}"
        );
        nodes.insert(r.body["node"].to_string());
    }
    assert_eq!(nodes.len(), 3, "chunked bodies reached only {nodes:?}");

    // Headers: the request id is kept, forwarding headers arrive, hop-by-hop ones do not.
    let edge = h.agent(0).edge;
    let r = send(
        edge,
        "POST",
        "/echo/p",
        &[
            ("X-Request-Id", "abc-123"),
            ("Connection", "close, X-Hop"),
            ("X-Hop", "1"),
        ],
        "hello body",
    );
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let seen = &r.body["headers"];
    assert_eq!(seen["x-request-id"], "abc-123");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], format!("127.0.0.1:{edge}"));
    assert!(
        seen.get("x-hop").is_none(),
        "a header named in Connection was forwarded: {seen}"
    );
    assert_eq!(
        (r.body["method"].as_str(), r.body["body"].as_str()),
        (Some("POST"), Some("hello body"))
    );
    let via = r.header("via").expect("Via on the answer").to_string();
    assert!(
        seen["via"].as_str().is_some_and(|v| via.contains(v)),
        "{via} vs {seen}"
    );
    // A request that already went through this edge is a loop.
    let r = send(edge, "GET", "/echo/", &[("Via", &via)], "");
    assert_eq!(r.status, 508, "{r:?}");

    // Unknown job, no job: 404 JSON, with the request id as any answer.
    let r = get(edge, "/nosuchjob/");
    assert_eq!((r.status, r.body["job"].as_str()), (404, Some("nosuchjob")));
    assert!(r.body["error"].is_string());
    assert!(
        r.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "{r:?}"
    );
    let r = send(edge, "GET", "/", &[("X-Request-Id", "root-1")], "");
    assert_eq!(
        (r.status, r.header("x-request-id")),
        (404, Some("root-1")),
        "{r:?}"
    );
    let r = send(
        edge,
        "GET",
        "/NoSuchJob/",
        &[("Host", "NOSUCH"), ("X-Request-Id", "up-1")],
        "",
    );
    assert_eq!(
        (r.status, r.header("x-request-id")),
        (404, Some("up-1")),
        "{r:?}"
    );

    // A node dies with its instance: the edge of n1 keeps answering while
    // it still lists the dead instance (until n3 is seen down), retrying
    // each request that meets it on another instance.
    let retries_before = metric(h.agent(0), "myco_edge_retries_total{myco_job=\"echo\"}");
    let victim_dir = h.agent(2).dir.clone();
    h.kill(2);
    kill_procs_under(&victim_dir);
    let start = Instant::now();
    let mut served = 0;
    while routed(h.agent(0), "echo") == Ok(3) && start.elapsed() < Duration::from_secs(30) {
        let r = get(edge, "/echo/during");
        assert_eq!(r.status, 200, "a request failed while a node died: {r:?}");
        served += 1;
    }
    assert!(
        served > 0,
        "the route disappeared before any request was sent"
    );
    let retries = metric(h.agent(0), "myco_edge_retries_total{myco_job=\"echo\"}") - retries_before;
    assert!(retries >= 1.0, "{served} requests, none retried");

    // Nothing ready: 503 JSON that names the job.
    let _: Value = h
        .agent(0)
        .client()
        .post("/v1/jobs/echo/scale", &json!({"count": 0}))
        .expect("scale");
    wait_for("no route left", READY, || {
        match routed(h.agent(0), "echo")? {
            0 => Ok(()),
            n => Err(format!("{n} routes")),
        }
    });
    let r = get(edge, "/echo/");
    assert_eq!(
        (r.status, r.body["job"].as_str()),
        (503, Some("echo")),
        "{r:?}"
    );
}

#[test]
fn websocket_upgrades_pass_through_the_edge() {
    let mut h = Harness::new("edge-ws");
    h.mesh(1);
    let digest = push_script_spore(&h, h.agent(0), "ws", WS_ECHO);
    let job = json!({"name": "ws", "spore": digest, "count": 1,
        "health": {"http": "/health", "interval_ms": 300}});
    let _: Value = h.agent(0).client().post("/v1/jobs", &job).expect("deploy");
    wait_for("a ready route", READY, || match routed(h.agent(0), "ws")? {
        1 => Ok(()),
        n => Err(format!("{n} routes")),
    });
    ws_session(h.agent(0).edge, "/ws/chat");
}

#[test]
fn large_bodies_stream_both_ways_with_bounded_agent_memory() {
    const SIZE: usize = 100 << 20;
    let mut h = Harness::new("edge-big");
    h.mesh(1);
    let digest = push_script_spore(&h, h.agent(0), "echo", ECHO);
    let job = json!({"name": "echo", "spore": digest, "count": 1,
        "health": {"http": "/health", "interval_ms": 300}});
    let _: Value = h.agent(0).client().post("/v1/jobs", &job).expect("deploy");
    wait_for("a ready route", READY, || {
        match routed(h.agent(0), "echo")? {
            1 => Ok(()),
            n => Err(format!("{n} routes")),
        }
    });
    let pid = h.agent(0).pid().expect("the agent runs");
    let edge = h.agent(0).edge;
    let before = rss_kib(pid);

    // Upload: 100 MiB in 64 KiB writes; the instance counts what arrives.
    let mut c = TcpStream::connect(("127.0.0.1", edge)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "POST /echo/sink HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'y'; 64 * 1024];
    for _ in 0..SIZE / chunk.len() {
        c.write_all(&chunk).unwrap();
    }
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut c, &mut answer).unwrap();
    assert!(answer.contains(&format!("{{\"got\": {SIZE}}}")), "{answer}");
    let after_up = rss_kib(pid);

    // Download: 100 MiB read and thrown away.
    let mut c = TcpStream::connect(("127.0.0.1", edge)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(
        format!("GET /echo/big/{SIZE} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let head = read_head(&mut c);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let got = std::io::copy(&mut c, &mut std::io::sink()).unwrap();
    assert_eq!(got as usize, SIZE);
    let after_down = rss_kib(pid);
    eprintln!(
        "agent RSS: {before} KiB before, {after_up} after the upload, {after_down} after the download"
    );
    // Held whole, either body alone would add 100 MiB.
    assert!(
        after_up.max(after_down) < before + 32 * 1024,
        "RSS {before} -> {after_up} -> {after_down} KiB"
    );
}

/// SIGKILLs every process whose working directory is under `dir` (a dead
/// machine's instances die with it).
fn kill_procs_under(dir: &std::path::Path) {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
