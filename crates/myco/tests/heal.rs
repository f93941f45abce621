//! Self-healing and rollouts end to end, with real agents and a real
//! workload: a rollout to a good version never leaves fewer than `count`
//! ready instances (a poller watches it) and ends all-new; a rollout to a
//! version whose health check fails reverts by itself and is not tried
//! again; `myco job restart` replaces every instance the same way; the
//! node a rollout was started on is SIGKILLed mid-way and the
//! rollout completes; a SIGKILLed node's instances are ready elsewhere,
//! and when it returns the total is exactly `count`; a rollout that
//! grows an instance's memory on a node with room for both versions, not
//! for two of the new one, completes there.
//!
//! Versions differ by their environment (`V`, and `BROKEN` for a version
//! whose `/health` answers 500), so one spore serves every version.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Agent, Harness, cli, ok, procs_in, push_script_spore, s, wait_for};

/// Room for a spore fetch, a spawn, a settle period and a probe or two.
const READY: Duration = Duration::from_secs(40);

/// The workload: `/` answers its version, `/health` 200 (500 when the
/// version is broken).
const SERVER: &str = r#"#!/usr/bin/env python3
import http.server, json, os
V = os.environ.get("V", "?")
BROKEN = "BROKEN" in os.environ
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if BROKEN and self.path.startswith("/health") else 200
        body = json.dumps({"version": V, "instance": os.environ["MYCO_INSTANCE"]}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A job file of `hello` at version `v` (env `V`), broken or not.
fn job_file(h: &Harness, v: u32, broken: bool, min_healthy_ms: u64) -> PathBuf {
    let file = h.root.join(format!("hello-{v}.toml"));
    let env = if broken {
        format!("V = \"{v}\"\nBROKEN = \"1\"")
    } else {
        format!("V = \"{v}\"")
    };
    let text = format!(
        "name = \"hello\"\nspore = \"hello@1\"\ncount = 3\n[env]\n{env}\n\
         [health]\nhttp = \"/health\"\ninterval_ms = 300\n\
         [update]\nmax_parallel = 1\nmin_healthy_ms = {min_healthy_ms}\n\
         healthy_deadline_ms = 5000\nauto_revert = true\n"
    );
    fs::write(&file, text).unwrap();
    file
}

fn instances(a: &Agent) -> Result<Vec<Value>, String> {
    let v: Value = a
        .anon()
        .get("/v1/instances?job=hello")
        .map_err(|e| e.to_string())?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// The versions (env `V`) the ready instances answer with, sorted.
fn ready_versions(a: &Agent) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for x in instances(a)?.iter().filter(|x| x["state"] == "ready") {
        let addr = x["addr"].as_str().ok_or("no addr")?;
        let body: Value = myco_client::Client::new(&format!("http://{addr}"))
            .get("/")
            .map_err(|e| format!("{addr}: {e}"))?;
        out.push(body["version"].as_str().unwrap_or("?").to_string());
    }
    out.sort();
    Ok(out)
}

#[track_caller]
fn await_versions(a: &Agent, want: &[&str], limit: Duration) -> Duration {
    wait_for(&format!("ready versions {want:?}"), limit, || {
        let v = ready_versions(a)?;
        if v == want {
            Ok(())
        } else {
            Err(format!("{v:?}"))
        }
    })
    .1
}

/// Counts ready instances every 50 ms on its own thread; the lowest
/// count seen is read when it stops.
struct Poller {
    stop: Arc<AtomicBool>,
    low: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(a: &Agent) -> Poller {
        let client = a.anon();
        let (stop, low) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(99)),
        );
        let (s2, l2) = (stop.clone(), low.clone());
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                if let Ok(Value::Array(list)) = client.get::<Value>("/v1/instances?job=hello") {
                    let n = list.iter().filter(|x| x["state"] == "ready").count();
                    l2.fetch_min(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Poller {
            stop,
            low,
            thread: Some(thread),
        }
    }

    fn lowest(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.low.load(Ordering::Relaxed)
    }
}

/// SIGKILLs agent `i` and every instance process it started: the machine
/// dies.
fn machine_dies(h: &mut Harness, i: usize) {
    h.kill(i);
    for pid in procs_in(&h.agent(i).dir) {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

fn node_id(a: &Agent) -> String {
    let v: Value = a.anon().get("/v1/status").expect("status");
    v["node"]["id"]
        .as_str()
        .expect("status names the node")
        .to_string()
}

/// A mesh of three running `hello` v1, three ready.
fn running_v1() -> Harness {
    let mut h = Harness::new("heal");
    h.mesh(3);
    push_script_spore(&h, h.agent(0), "hello", SERVER);
    let v1 = job_file(&h, 1, false, 500);
    ok(
        &cli(h.agent(0), &["deploy", s(&v1), "--detach"]),
        "deploy v1",
    );
    await_versions(h.agent(1), &["1", "1", "1"], READY);
    h
}

#[test]
fn a_good_rollout_never_drops_below_count_and_ends_all_new() {
    let h = running_v1();
    let poller = Poller::start(h.agent(1));
    let v2 = job_file(&h, 2, false, 500);
    let t0 = Instant::now();
    let out = ok(
        &cli(h.agent(0), &["deploy", s(&v2), "--watch"]),
        "deploy v2 --watch",
    );
    let took = t0.elapsed();
    assert!(out.contains("all 3 instances ready"), "{out}");
    assert!(out.lines().count() >= 3, "one line per step: {out}");
    await_versions(h.agent(2), &["2", "2", "2"], READY);
    println!("rollout of 3 (max_parallel 1, min_healthy 500 ms): {took:?}");
    // A rolling restart: the same spec as version 3, replaced the same way.
    let out = ok(
        &cli(h.agent(1), &["job", "restart", "hello"]),
        "myco job restart",
    );
    assert!(out.contains("new version 3"), "{out}");
    wait_for("every ready instance at version 3", READY, || {
        let list = instances(h.agent(0))?;
        let ready: Vec<&Value> = list.iter().filter(|x| x["state"] == "ready").collect();
        if ready.len() == 3 && ready.iter().all(|x| x["version"] == 3) {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    });
    let low = poller.lowest();
    assert!(
        low >= 3,
        "ready instances fell to {low} during a healthy rollout or restart"
    );
    // The steps were told: events counted in /metrics.
    let metrics = h.agent(0).anon().get_text("/metrics").unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("myco_heal_decisions_total{kind=\"rollout_step\"}")
                && !l.ends_with(" 0")
        ),
        "no rollout step counted:\n{metrics}"
    );
}

#[test]
fn a_broken_rollout_reverts_by_itself_and_is_not_tried_again() {
    let h = running_v1();
    let poller = Poller::start(h.agent(1));
    let bad = job_file(&h, 2, true, 500);
    let t0 = Instant::now();
    let out = cli(h.agent(0), &["deploy", s(&bad), "--watch"]);
    let took = t0.elapsed();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a reverted deploy exits non-zero: {text}"
    );
    assert!(text.contains("reverted to version 1"), "{text}");
    println!("broken rollout reverted after {took:?}");
    // The revert was written on whichever node decided it: another node
    // sees it once replicated (the CLI watched node 0).
    wait_for("node 2 sees the job back at version 1", READY, || {
        let job: Value = h.agent(2).anon().get("/v1/jobs/hello").unwrap();
        if job["version"] == 1 {
            Ok(())
        } else {
            Err(format!("{job}"))
        }
    });
    await_versions(h.agent(2), &["1", "1", "1"], READY);
    // Not tried again: once the failed instance is drained (its record
    // says `launching` until its node writes `draining`, a moment after
    // the revert), no instance of version 2 comes back. An absence needs
    // a window; every poll in it is checked, not only the last.
    let live_v2 = || -> Vec<Value> {
        instances(h.agent(0))
            .unwrap()
            .into_iter()
            .filter(|x| {
                x["version"] == 2 && matches!(x["state"].as_str(), Some("launching" | "ready"))
            })
            .collect()
    };
    wait_for("the failed v2 instance drained", READY, || {
        let live = live_v2();
        if live.is_empty() {
            Ok(())
        } else {
            Err(format!("{live:?}"))
        }
    });
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        let live = live_v2();
        assert!(live.is_empty(), "the failed version runs again: {live:?}");
        std::thread::sleep(support::POLL);
    }
    let low = poller.lowest();
    assert!(
        low >= 3,
        "ready instances fell to {low} during the broken rollout"
    );
    // One node wrote the revert; the history keeps the failed version,
    // and the next deploy is numbered past it.
    let reverts: f64 = (0..3)
        .map(|i| {
            let m = h.agent(i).anon().get_text("/metrics").unwrap();
            m.lines()
                .find_map(|l| {
                    l.strip_prefix("myco_rollout_reverts_written_total ")?
                        .parse()
                        .ok()
                })
                .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(reverts, 1.0, "one node writes the revert");
    let v3 = job_file(&h, 3, false, 500);
    let out = ok(
        &cli(h.agent(0), &["deploy", s(&v3), "--detach"]),
        "deploy v3",
    );
    assert!(out.contains("new version 3"), "{out}");
}

#[test]
fn the_node_that_started_a_rollout_dies_mid_way_and_the_rollout_completes() {
    let mut h = running_v1();
    // Slow steps (2 s proof each), so the kill lands mid-way.
    let v2 = job_file(&h, 2, false, 2_000);
    ok(
        &cli(h.agent(0), &["deploy", s(&v2), "--detach"]),
        "deploy v2",
    );
    wait_for("a first v2 instance", READY, || {
        let n = instances(h.agent(1))?
            .iter()
            .filter(|x| x["version"] == 2)
            .count();
        if n > 0 {
            Ok(())
        } else {
            Err("none yet".to_string())
        }
    });
    let gone = node_id(h.agent(0));
    machine_dies(&mut h, 0);
    await_versions(h.agent(1), &["2", "2", "2"], Duration::from_secs(60));
    let nodes: BTreeSet<String> = instances(h.agent(2))
        .unwrap()
        .iter()
        .filter(|x| x["state"] == "ready")
        .map(|x| x["node"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!nodes.contains(&gone), "the dead node runs it: {nodes:?}");
}

#[test]
fn a_killed_node_s_instances_are_ready_elsewhere_and_its_return_leaves_exactly_count() {
    let mut h = running_v1();
    let victim = 2;
    let victim_id = node_id(h.agent(victim));
    let t0 = Instant::now();
    machine_dies(&mut h, victim);
    let (_, took) = wait_for("3 ready instances off the dead node", READY, || {
        let list = instances(h.agent(0))?;
        let off: Vec<&Value> = list
            .iter()
            .filter(|x| x["state"] == "ready" && x["node"].as_str() != Some(victim_id.as_str()))
            .collect();
        if off.len() == 3 {
            Ok(())
        } else {
            Err(format!("{} ready elsewhere", off.len()))
        }
    });
    println!(
        "failover: ready elsewhere {took:?} after the SIGKILL ({:?} in all)",
        t0.elapsed()
    );
    // A move was told as such.
    let metrics = h.agent(0).anon().get_text("/metrics").unwrap()
        + &h.agent(1).anon().get_text("/metrics").unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("myco_heal_decisions_total{kind=\"moved\"}") && !l.ends_with(" 0")
        ),
        "no move counted"
    );
    // The return never takes the job below its count: the returning
    // node's old records say `ready` until it says otherwise, and a
    // replacement that handed its slot back to one of them left 2 of 3.
    let poller = Poller::start(h.agent(0));
    h.restart(victim);
    wait_for(
        "exactly 3 instance processes after the return",
        READY,
        || {
            let n: usize = (0..3).map(|i| procs_in(&h.agent(i).dir).len()).sum();
            let r = ready_versions(h.agent(victim))?;
            if n == 3 && r.len() == 3 {
                Ok(())
            } else {
                Err(format!("{n} processes, {r:?} ready"))
            }
        },
    );
    // (The records of the returned instances are truly ready once their
    // processes are the three above.)
    let low = poller.lowest();
    assert!(
        low >= 3,
        "ready dipped to {low} of 3 while the node returned"
    );
}

#[test]
fn a_rollout_that_grows_memory_fits_beside_the_smaller_old_instance() {
    // One node. Version 1 takes a quarter of its memory, version 2 seven
    // tenths: both fit at once, two of version 2 would not. Placement
    // once charged the old instance the new version's size, so the new
    // one had no room and the rollout never started.
    let mut h = Harness::new("heal-grow");
    h.mesh(1);
    push_script_spore(&h, h.agent(0), "hello", SERVER);
    let node: Value = h.agent(0).anon().get("/v1/status").unwrap();
    let cap = node["node"]["capacity"]["memory_mb"].as_u64().unwrap();
    let file = |v: u32, memory_mb: u64| {
        let file = h.root.join(format!("grow-{v}.toml"));
        let text = format!(
            "name = \"hello\"\nspore = \"hello@1\"\ncount = 1\n[env]\nV = \"{v}\"\n\
             [resources]\nmemory_mb = {memory_mb}\n\
             [health]\nhttp = \"/health\"\ninterval_ms = 300\n\
             [update]\nmin_healthy_ms = 300\nhealthy_deadline_ms = 10000\n"
        );
        fs::write(&file, text).unwrap();
        file
    };
    let v1 = file(1, cap / 4);
    ok(
        &cli(h.agent(0), &["deploy", s(&v1), "--detach"]),
        "deploy v1",
    );
    await_versions(h.agent(0), &["1"], READY);
    let v2 = file(2, cap * 7 / 10);
    ok(
        &cli(h.agent(0), &["deploy", s(&v2), "--detach"]),
        "deploy v2",
    );
    await_versions(h.agent(0), &["2"], READY);
    wait_for("version 1 drained and gone", READY, || {
        let list = instances(h.agent(0))?;
        if list.len() == 1 && list[0]["version"] == 2 {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    });
}
