//! The edge gateway end to end, with real agents and a real HTTP workload:
//! every node's edge reaches instances on every node, by path (prefix
//! stripped, query kept) and by Host (whole path); request ids come back,
//! forwarding headers reach the instance, a loop is refused; unknown jobs
//! get 404 JSON and a job with nothing ready 503 JSON naming it; when a
//! node dies with its instance, requests through the edge keep succeeding
//! (each one that meets the dead instance is retried on another).
//!
//! The workload is a small Python HTTP server that echoes what it got.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Agent, Harness, cli, myco, ok, s, wait_for};

/// Room for a spore fetch, a spawn, a settle period and a probe or two.
const READY: Duration = Duration::from_secs(40);

/// Echoes its node, instance, path, request headers and body as JSON.
const ECHO: &str = r#"#!/usr/bin/env python3
import http.server, json, os, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body=b""):
        if self.path == "/health":
            out = b"ok"
        else:
            out = json.dumps({"node": os.environ["MYCO_NODE"], "instance": os.environ["MYCO_INSTANCE"],
                "path": self.path, "method": self.command, "body": body.decode(),
                "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def do_GET(self):
        self.answer()
    def do_POST(self):
        self.answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
S(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Packs, trusts and pushes the echo workload on `a`; returns the digest.
fn push_echo(h: &Harness, a: &Agent) -> String {
    let src = h.root.join("src-echo");
    fs::create_dir_all(&src).unwrap();
    let run = src.join("run");
    fs::write(&run, ECHO).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    let key = h.root.join("publisher.key");
    ok(&myco(&["key", "gen", "--out", s(&key)]), "myco key gen");
    let pubkey = PathBuf::from(format!("{}.pub", key.display()));
    ok(&cli(a, &["trust", "add", s(&pubkey)]), "myco trust add");
    let out = h.root.join("echo.spore");
    let args = [
        "spore",
        "pack",
        s(&src),
        "--name",
        "echo",
        "--version",
        "1",
        "--cmd",
        "./run",
        "--key",
        s(&key),
        "--out",
        s(&out),
    ];
    ok(&myco(&args), "myco spore pack");
    let pushed = ok(&cli(a, &["spore", "push", s(&out), "--json"]), "push");
    let v: Value = serde_json::from_str(&pushed).expect("push --json is JSON");
    v["digest"].as_str().expect("a digest").to_string()
}

/// One answer from the edge.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request on its own connection (raw, so the Host header is
/// exactly what the test says) and reads the whole answer.
fn send(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the edge");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    c.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).expect("reading the answer");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    Answer {
        status,
        headers,
        body,
    }
}

fn get(port: u16, path: &str) -> Answer {
    send(port, "GET", path, &[], "")
}

/// The ready endpoints of `job` in agent `a`'s `/mesh/routes`.
fn routed(a: &Agent, job: &str) -> Result<usize, String> {
    let v: Value = a.anon().get("/mesh/routes").map_err(|e| e.to_string())?;
    let routes = v["routes"].as_array().ok_or("no routes array")?;
    Ok(routes
        .iter()
        .find(|r| r["job"] == job)
        .and_then(|r| r["ready"].as_array())
        .map_or(0, |r| r.len()))
}

/// A counter of `a`'s `/metrics` (the first sample whose line starts so).
fn metric(a: &Agent, prefix: &str) -> f64 {
    let text = a.anon().metrics().expect("/metrics");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn edge_routes_retries_and_answers_json_errors() {
    let mut h = Harness::new("edge");
    h.mesh(3);
    let digest = push_echo(&h, h.agent(0));
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

    // Unknown job, no job: 404 JSON.
    let r = get(edge, "/nosuchjob/");
    assert_eq!((r.status, r.body["job"].as_str()), (404, Some("nosuchjob")));
    assert!(r.body["error"].is_string());
    assert_eq!(get(edge, "/").status, 404);

    // A node dies with its instance: the edge of n1 keeps answering while
    // it still lists the dead instance (until n3 is seen down), retrying
    // each request that meets it on another instance.
    let retries_before = metric(h.agent(0), "myco_edge_retries_total{job=\"echo\"}");
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
    let retries = metric(h.agent(0), "myco_edge_retries_total{job=\"echo\"}") - retries_before;
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
