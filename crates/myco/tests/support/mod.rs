//! A small harness for end-to-end tests: real `myco agent` processes on
//! loopback ([`harness`]), on ports no other test of this run uses
//! ([`ports`]), spoken to through `myco_client` like any other user of the
//! API, and the `myco` binary run as a process.
//!
//! `wait_for` polls a condition with a deadline. Dropping a [`Harness`]
//! SIGKILLs every agent it started and removes its temp dir; if the test is
//! panicking it first prints the tail of every agent's log.

#![allow(dead_code)]

mod harness;
pub mod netns;
mod ports;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use myco_client::{Event, EventStream};
use serde_json::Value;

// Each test file uses some of these.
#[allow(unused_imports)]
pub use harness::{Agent, Harness, Opts};
#[allow(unused_imports)]
pub use ports::{free_port, free_port_run};

/// The binary under test.
pub const MYCO: &str = env!("CARGO_BIN_EXE_myco");

/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(75);

/// The default deadline for "eventually" conditions.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Environment variables the CLI and agent read; cleared so the caller's
/// environment cannot change what a test does.
const MYCO_ENV: &[&str] = &[
    "MYCO_API",
    "MYCO_API_TOKEN",
    "MYCO_DATA_DIR",
    "MYCO_CLUSTER_KEY",
    "NOTIFY_SOCKET",
];

// ----- waiting -----

/// Polls `probe` every [`POLL`] until it answers `Ok`, and returns the value
/// and the time it took. `probe` answers `Err(observation)` while the
/// condition does not hold; after `timeout` this panics with `what` and the
/// last observation.
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        let last = match probe() {
            Ok(v) => return (v, start.elapsed()),
            Err(e) => e,
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        std::thread::sleep(POLL);
    }
}

/// Reads `events` until one satisfies `pred`; returns it, the time it took
/// and every event seen before it. Panics after `timeout` with `what`.
#[track_caller]
pub fn wait_event(
    events: &mut EventStream,
    what: &str,
    timeout: Duration,
    mut pred: impl FnMut(&Event) -> bool,
) -> (Event, Duration, Vec<Event>) {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match events.next(left) {
            Ok(Some(ev)) if pred(&ev) => return (ev, start.elapsed(), seen),
            Ok(Some(ev)) => seen.push(ev),
            Ok(None) => panic!(
                "no event {what} within {timeout:?}; {} others seen: {seen:?}",
                seen.len()
            ),
            Err(e) => panic!("event stream failed waiting for {what}: {e}; seen: {seen:?}"),
        }
    }
}

// ----- answers -----

/// The member list in a `myco nodes --json` answer (a list, or an object
/// holding one).
pub fn member_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Object(o) => o
            .values()
            .find_map(|v| v.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Parses `myco_datagrams_dropped_total{reason="..."} N` lines of a scrape.
pub fn dropped_by_reason(metrics: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("myco_datagrams_dropped_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let reason = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("reason=\""))
            .map(|r| r.trim_end_matches('"').to_string());
        let value = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok());
        if let (Some(r), Some(v)) = (reason, value) {
            *out.entry(r).or_insert(0.0) += v;
        }
    }
    out
}

/// Reads a whole file as a string, with the path in the panic message.
pub fn read(path: &Path) -> String {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    s
}

// ----- the CLI -----

/// The stdout of a command that must have succeeded; else a panic with
/// its status, stdout and stderr.
#[track_caller]
pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): stdout {:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A test path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `--api URL --token T ARGS...` for agent `a`.
pub fn cli_args(a: &Agent, args: &[&str]) -> Vec<String> {
    let mut full = vec![
        "--api".to_string(),
        a.api_url(),
        "--token".to_string(),
        a.token(),
    ];
    full.extend(args.iter().map(|x| x.to_string()));
    full
}

/// Runs `myco --api URL --token T ARGS...` against agent `a`.
pub fn cli(a: &Agent, args: &[&str]) -> Output {
    let full = cli_args(a, args);
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    myco(&refs)
}

/// Runs `myco ARGS...` to completion with a clean environment.
pub fn myco(args: &[&str]) -> Output {
    let mut cmd = Command::new(MYCO);
    cmd.args(args).stdin(Stdio::null());
    for k in MYCO_ENV {
        cmd.env_remove(k);
    }
    cmd.output().expect("running the myco binary")
}

/// Runs `myco ARGS...` with `input` on standard input and a clean environment.
pub fn myco_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut cmd = Command::new(MYCO);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in MYCO_ENV {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().expect("running the myco binary");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // Written from a thread so a child that answers early cannot deadlock us.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("waiting for myco");
    let _ = writer.join();
    out
}

/// Sends a raw request and reads the whole answer (the request says
/// `Connection: close`); the status code and the text.
pub fn raw(a: &Agent, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a.api)).expect("connecting to the API");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

/// A workload that answers 200 "ok" on every path, on `PORT` on every
/// interface: for tests about where instances run, not what they serve.
pub const OK_SERVER: &str = r#"#!/usr/bin/env python3
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Packs `script` (a `run` file) as spore `name@1` in `h.root/NAME.spore`,
/// signs it with one publisher key per harness (made, and trusted on `a`,
/// on first use), pushes it to `a`; returns its digest.
pub fn push_script_spore(h: &Harness, a: &Agent, name: &str, script: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let src = h.root.join(format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    let run = src.join("run");
    std::fs::write(&run, script).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = h.root.join("publisher.key");
    if !key.exists() {
        ok(&myco(&["key", "gen", "--out", s(&key)]), "myco key gen");
        let pubkey = std::path::PathBuf::from(format!("{}.pub", key.display()));
        ok(&cli(a, &["trust", "add", s(&pubkey)]), "myco trust add");
    }
    let out = h.root.join(format!("{name}.spore"));
    let pack = [
        "spore",
        "pack",
        s(&src),
        "--name",
        name,
        "--version",
        "1",
        "--cmd",
        "./run",
        "--key",
        s(&key),
        "--out",
        s(&out),
    ];
    ok(&myco(&pack), "myco spore pack");
    let pushed = ok(
        &cli(a, &["spore", "push", s(&out), "--json"]),
        "myco spore push",
    );
    let v: Value = serde_json::from_str(&pushed).expect("push --json is JSON");
    v["digest"].as_str().expect("a digest").to_string()
}

/// Processes whose working directory is under `dir` (an agent's
/// instances are under its data dir), the PIDs.
pub fn procs_in(dir: &Path) -> Vec<u32> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(&dir)
        {
            found.push(pid);
        }
    }
    found
}

/// Ready instances of `job` as agent `a` lists them.
pub fn ready_instances(a: &Agent, job: &str) -> Result<Vec<Value>, String> {
    let v: Value = a
        .anon()
        .get(&format!("/v1/instances?job={job}"))
        .map_err(|e| e.to_string())?;
    Ok(v.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|x| x["state"] == "ready")
        .collect())
}

/// The nodes (ids, sorted) of the ready instances of `job`, as agent `a`
/// sees them.
pub fn ready_nodes(a: &Agent, job: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = ready_instances(a, job)?
        .iter()
        .map(|x| x["node"].as_str().unwrap_or_default().to_string())
        .collect();
    out.sort();
    Ok(out)
}

/// A job file under the harness root: `count` instances of the spore
/// `srv@1` with the given `duplicates` mode, health checked on `/`.
pub fn srv_job_file(h: &Harness, name: &str, count: u32, duplicates: &str) -> std::path::PathBuf {
    let file = h.root.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\nspore = \"srv@1\"\ncount = {count}\nduplicates = \"{duplicates}\"\n\
         kill_timeout_ms = 1000\n[health]\nhttp = \"/\"\ninterval_ms = 300\n"
    );
    std::fs::write(&file, text).unwrap();
    file
}
