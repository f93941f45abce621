//! Jobs end to end with real agents and real workloads: a job deployed with
//! `myco deploy` runs as supervised processes spread over three nodes,
//! every instance answers on its `addr` with its identity, scaling moves
//! the count both ways, the agent SIGKILLed alone comes back and adopts its
//! instances (same ids, no duplicate, no orphan), a stop leaves no process;
//! a crashing command shows restarts and a job too big for any node stays
//! pending with a reason.
//!
//! The workload is a small Python HTTP server (python3 is on every machine
//! the tests run on), so the agent supervises a process it did not build.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Agent, Harness, cli, ok, push_script_spore, s, wait_for};

/// Room for a spore fetch, a spawn, a settle period and a probe or two.
const READY: Duration = Duration::from_secs(40);

/// The workload: answers `/` with its identity and `/health` with 200.
const SERVER: &str = r#"#!/usr/bin/env python3
import http.server, json, os
ME = {"job": os.environ["MYCO_JOB"], "instance": os.environ["MYCO_INSTANCE"], "node": os.environ["MYCO_NODE"]}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(ME).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// `/v1/instances?job=JOB` of agent `a`.
fn instances(a: &Agent, job: &str) -> Result<Vec<Value>, String> {
    let v: Value = a
        .anon()
        .get(&format!("/v1/instances?job={job}"))
        .map_err(|e| e.to_string())?;
    match v {
        Value::Array(list) => Ok(list),
        Value::Object(map) => Ok(map
            .into_iter()
            .find_map(|(_, v)| v.as_array().cloned())
            .unwrap_or_default()),
        other => Err(format!("not a listing: {other}")),
    }
}

fn ready(a: &Agent, job: &str) -> Result<Vec<Value>, String> {
    Ok(instances(a, job)?
        .into_iter()
        .filter(|x| x["state"] == "ready")
        .collect())
}

/// Waits until agent `a` lists exactly `n` ready instances of `job`.
#[track_caller]
fn await_ready(a: &Agent, job: &str, n: usize) -> Vec<Value> {
    wait_for(&format!("{n} ready instances of {job}"), READY, || {
        let r = ready(a, job)?;
        if r.len() == n {
            Ok(r)
        } else {
            Err(format!("{} ready of {:?}", r.len(), instances(a, job)))
        }
    })
    .0
}

/// Processes whose working directory is under `dir` (an agent's instances).
fn procs_in(dir: &Path) -> Vec<u32> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cwd) = fs::read_link(entry.path().join("cwd"))
            && cwd.starts_with(&dir)
        {
            found.push(pid);
        }
    }
    found
}

fn all_procs(h: &Harness) -> Vec<u32> {
    h.agents.iter().flat_map(|a| procs_in(&a.dir)).collect()
}

#[track_caller]
fn await_procs(h: &Harness, n: usize) {
    wait_for(&format!("{n} instance processes"), READY, || {
        let p = all_procs(h);
        if p.len() == n {
            Ok(())
        } else {
            Err(format!("{} processes: {p:?}", p.len()))
        }
    });
}

/// Every ready instance answers on its `addr` with its own identity.
#[track_caller]
fn assert_answers(list: &[Value], job: &str) {
    for x in list {
        for field in [
            "id",
            "job",
            "node",
            "node_name",
            "state",
            "addr",
            "digest",
            "restarts",
        ] {
            assert!(x.get(field).is_some(), "instance without {field}: {x}");
        }
        let addr = x["addr"].as_str().expect("addr is ip:port");
        let body: Value = myco_client::Client::new(&format!("http://{addr}"))
            .get("/")
            .unwrap_or_else(|e| panic!("instance {} at {addr} does not answer: {e}", x["id"]));
        assert_eq!(body["job"], job);
        assert_eq!(
            body["instance"], x["id"],
            "the instance at {addr} is another one"
        );
        assert!(body["node"].as_str().is_some_and(|n| !n.is_empty()));
    }
}

#[test]
fn deploy_spread_scale_adopt_and_stop() {
    let mut h = Harness::new("jobs-life");
    h.mesh(3);
    let digest = push_script_spore(&h, h.agent(0), "hello", SERVER);
    let file = h.root.join("hello.toml");
    fs::write(
        &file,
        "name = \"hello\"\nspore = \"hello@1\"\ncount = 3\nstrategy = \"spread\"\n\
         [health]\nhttp = \"/health\"\ninterval_ms = 300\n",
    )
    .unwrap();
    ok(
        &cli(h.agent(0), &["deploy", s(&file), "--detach"]),
        "myco deploy",
    );

    // Ready on every node's view, one per node, each answering as itself.
    let list = await_ready(h.agent(1), "hello", 3);
    let nodes: BTreeSet<String> = list.iter().map(|x| x["node"].to_string()).collect();
    assert_eq!(
        nodes.len(),
        3,
        "spread put two instances on one node: {list:?}"
    );
    assert!(
        list.iter().all(|x| x["digest"] == digest.as_str()),
        "pinned digest: {list:?}"
    );
    assert_answers(&list, "hello");
    await_procs(&h, 3);
    let jobs = ok(&cli(h.agent(2), &["jobs", "--json"]), "myco jobs --json");
    assert!(jobs.contains("hello"), "myco jobs --json: {jobs}");

    // Scale both ways; the processes follow the records.
    let scale = |n: u32| {
        let _: Value = h
            .agent(0)
            .client()
            .post("/v1/jobs/hello/scale", &json!({ "count": n }))
            .expect("scale");
    };
    scale(5);
    assert_answers(&await_ready(h.agent(2), "hello", 5), "hello");
    await_procs(&h, 5);
    scale(2);
    await_ready(h.agent(0), "hello", 2);
    await_procs(&h, 2);

    // The agent alone dies; its instances keep running; restarted, it adopts them.
    let victim = (0..3)
        .find(|&i| !procs_in(&h.agent(i).dir).is_empty())
        .expect("a node runs an instance");
    let other = (victim + 1) % 3;
    let ids = |a: &Agent| -> BTreeSet<String> {
        ready(a, "hello")
            .unwrap()
            .iter()
            .map(|x| x["id"].to_string())
            .collect()
    };
    let before_ids = ids(h.agent(other));
    let before_pids: BTreeSet<u32> = all_procs(&h).into_iter().collect();
    h.kill(victim);
    assert!(
        !procs_in(&h.agent(victim).dir).is_empty(),
        "killing the agent killed its instances"
    );
    let mine = procs_in(&h.agent(victim).dir).len() as f64;
    h.restart(victim);
    // Adopted, not replaced: the restarted agent says it adopted every
    // process it left behind and spawned none, and the mesh shows the same
    // instances on the same processes.
    let counter = |name: &str| -> Result<f64, String> {
        let text = h
            .agent(victim)
            .anon()
            .get_text("/metrics")
            .map_err(|e| e.to_string())?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .ok_or_else(|| format!("no {name} in /metrics"))
    };
    wait_for("the restarted agent to adopt its instances", READY, || {
        let adopted = counter("myco_instances_adopted_total ")?;
        if adopted >= mine {
            Ok(())
        } else {
            Err(format!("{adopted} of {mine} adopted"))
        }
    });
    assert_eq!(
        counter("myco_instance_spawns_total ").unwrap(),
        0.0,
        "the restarted agent spawned"
    );
    wait_for("the same ready instances after the restart", READY, || {
        let now = ids(h.agent(other));
        if now == before_ids {
            Ok(())
        } else {
            Err(format!("ids {now:?} (were {before_ids:?})"))
        }
    });
    let pids: BTreeSet<u32> = all_procs(&h).into_iter().collect();
    assert_eq!(
        pids, before_pids,
        "an adopted instance was restarted or duplicated"
    );
    // ... and they keep what the mesh needs to reach them: the records the
    // restarted agent writes carry their address and digest (they once
    // lost both, and the edge stopped routing to them).
    for a in [h.agent(victim), h.agent(other)] {
        wait_for("adopted instances with address and digest", READY, || {
            let list = ready(a, "hello")?;
            let whole = |x: &Value| {
                x["addr"].as_str().is_some_and(|s| !s.is_empty()) && x["digest"] == digest.as_str()
            };
            match list.len() == 2 && list.iter().all(whole) {
                true => Ok(()),
                false => Err(format!("{list:?}")),
            }
        });
    }
    assert_answers(&ready(h.agent(other), "hello").unwrap(), "hello");

    // Stop: every process goes.
    let _: Value = h.agent(2).client().delete("/v1/jobs/hello").expect("stop");
    await_procs(&h, 0);
}

#[test]
fn crash_loops_and_impossible_jobs_are_visible() {
    let mut h = Harness::new("jobs-fail");
    h.mesh(1);
    let a = h.agent(0);
    let crashy = push_script_spore(&h, a, "crashy", "#!/bin/sh\necho starting\nexit 3\n");
    let _: Value = a
        .client()
        .post(
            "/v1/jobs",
            &json!({ "name": "crashy", "spore": crashy, "count": 1 }),
        )
        .expect("deploy crashy");
    let (x, _) = wait_for("a restarted, failed crashy instance", READY, || {
        let list = instances(a, "crashy")?;
        list.into_iter()
            .find(|x| x["restarts"].as_u64().unwrap_or(0) >= 2 && x["state"] != "ready")
            .ok_or_else(|| "no restarts yet".to_string())
    });
    assert_eq!(x["last_exit"], json!({"code": 3}), "the exit is shown: {x}");
    // Given up after the crash loop, it stays listed as failed, and what
    // it printed stays readable: the user's next question is why.
    let (x, _) = wait_for("crashy given up", READY, || {
        let list = instances(a, "crashy")?;
        list.into_iter()
            .find(|x| {
                x["state"] == "failed"
                    && x["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("crash loop"))
            })
            .ok_or_else(|| "not given up yet".to_string())
    });
    let id = x["id"].as_str().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(
        &mut a
            .client()
            .logs("crashy", Some(id), false, Some(10))
            .expect("its logs"),
        &mut logs,
    )
    .unwrap();
    assert!(logs.contains("starting"), "logs of {id}: {logs:?}");
    // Only the logs stay: the spore's files went with the process.
    let dir = a.dir.join("instances").join(id);
    let mut left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, [".myco"], "{}", dir.display());

    let _: Value = a
        .client()
        .post(
            "/v1/jobs",
            &json!({ "name": "huge", "spore": crashy, "count": 1, "resources": {"memory_mb": 50_000_000} }),
        )
        .expect("a valid job that cannot be placed is accepted");
    let (job, _) = wait_for("a pending reason for huge", READY, || {
        let v: Value = a.anon().get("/v1/jobs/huge").map_err(|e| e.to_string())?;
        let text = v.to_string().to_lowercase();
        if text.contains("memory") {
            Ok(v)
        } else {
            Err(text)
        }
    });
    assert!(
        ready(a, "huge").unwrap().is_empty(),
        "huge was started: {job}"
    );
    let _: Value = a.client().delete("/v1/jobs/crashy").expect("stop crashy");
    await_procs(&h, 0);
}

#[test]
fn what_a_dead_instance_left_running_goes_before_it_starts_again() {
    let mut h = Harness::new("jobs-leftover");
    h.mesh(1);
    // A leader that forks a child which would outlive it.
    let script = "#!/bin/sh\nsleep 1000 &\nexec sleep 1001\n";
    let digest = push_script_spore(&h, h.agent(0), "kids", script);
    let _: Value = h
        .agent(0)
        .client()
        .post(
            "/v1/jobs",
            &json!({ "name": "kids", "spore": digest, "count": 1 }),
        )
        .expect("deploy");
    await_ready(h.agent(0), "kids", 1);
    await_procs(&h, 2);
    // The agent dies; then, with no agent watching, so does the leader.
    let dir = h.agent(0).dir.clone();
    let record = fs::read_dir(dir.join("instances"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join(".myco/record.json"))
        .find(|p| p.exists())
        .expect("an instance record");
    let rec: Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    let leader = rec["pid"].as_u64().unwrap() as i32;
    h.kill(0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(leader),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let orphans: Vec<u32> = procs_in(&dir)
        .into_iter()
        .filter(|&p| p != leader as u32)
        .collect();
    assert_eq!(orphans.len(), 1, "the child outlives its leader");
    // Back: the instance starts again, and the old child is gone.
    h.restart(0);
    await_ready(h.agent(0), "kids", 1);
    await_procs(&h, 2);
    let now = all_procs(&h);
    assert!(
        !now.contains(&orphans[0]),
        "the dead instance's child {} still runs: {now:?}",
        orphans[0]
    );
    let _: Value = h.agent(0).client().delete("/v1/jobs/kids").expect("stop");
    await_procs(&h, 0);
}
