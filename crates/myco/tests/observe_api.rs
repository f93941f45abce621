//! What the API shows of the mesh for the dashboard, with real agents and
//! real workloads: each node's allocation and live CPU and memory use (from
//! every node, whichever answers), a job's rollout progress and duplicate
//! mode, and request ids carried into the log lines a request causes.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Harness, OK_SERVER, Opts, push_script_spore, raw, wait_for};

const LONG: Duration = Duration::from_secs(60);

fn job(h: &Harness, i: usize, name: &str) -> Result<Value, String> {
    h.agent(i)
        .anon()
        .get(&format!("/v1/jobs/{name}"))
        .map_err(|e| e.to_string())
}

fn nodes(h: &Harness, i: usize) -> Result<Vec<Value>, String> {
    h.agent(i)
        .anon()
        .get("/v1/nodes")
        .map_err(|e| e.to_string())
}

#[test]
fn nodes_show_allocation_and_live_use_and_jobs_their_rollout_and_duplicates() {
    let mut h = Harness::new("obs-api-nodes");
    h.mesh(2);
    let digest = push_script_spore(&h, h.agent(0), "web", OK_SERVER);
    let spec = |env: &str, duplicates: &str| {
        json!({"name": "web", "spore": digest, "count": 2, "strategy": "spread",
               "resources": {"cpu_milli": 250, "memory_mb": 32},
               "health": {"http": "/health", "interval_ms": 300},
               "env": {"V": env}, "duplicates": duplicates,
               // A new instance proves itself for 10 min: the rollout
               // stays in progress while the test looks at it.
               "update": {"min_healthy_ms": 600_000, "healthy_deadline_ms": 900_000}})
    };
    let _: Value = h
        .agent(0)
        .client()
        .post("/v1/jobs", &spec("1", "allowed"))
        .unwrap();
    wait_for("web 2 ready", LONG, || {
        let j = job(&h, 0, "web")?;
        (j["ready"] == 2).then_some(()).ok_or(format!("{j}"))
    });

    // Spread: one instance on each node, each reserving its resources;
    // both nodes' answers agree, and each reports both nodes' live use.
    for i in 0..2 {
        let (list, _) = wait_for("both nodes' use, from either node", LONG, || {
            let list = nodes(&h, i)?;
            list.iter()
                .all(|n| n["usage"]["mem_total_bytes"].as_u64().unwrap_or(0) > 0)
                .then_some(list.clone())
                .ok_or(format!("{list:?}"))
        });
        for n in &list {
            assert_eq!(
                n["allocated"],
                json!({"cpu_milli": 250, "memory_mb": 32}),
                "{n}"
            );
            let u = &n["usage"];
            assert!(u["mem_bytes"].as_u64().unwrap() <= u["mem_total_bytes"].as_u64().unwrap());
            assert!(u["agent_rss_bytes"].as_u64().unwrap() > 1 << 20, "{u}");
            assert!(u["cpu_percent"].as_u64().unwrap() <= 100, "{u}");
        }
    }
    let j = job(&h, 1, "web").unwrap();
    assert_eq!(j["duplicates"], "allowed");
    assert_eq!(j["rollout"], Value::Null, "one version runs: {j}");

    // A new version rolls out one slot at a time; every node shows it.
    // (An `allowed` job: a `never` job's rollout stops each old instance
    // before its new one starts, so its ready count dips by a slot.)
    let _: Value = h
        .agent(0)
        .client()
        .post("/v1/jobs", &spec("2", "allowed"))
        .unwrap();
    for i in 0..2 {
        let (r, _) = wait_for("the rollout v1 -> v2 shown", LONG, || {
            let j = job(&h, i, "web")?;
            let r = &j["rollout"];
            (r["to_version"] == 2 && r["proving"] == 1)
                .then_some(j.clone())
                .ok_or(format!("{j}"))
        });
        assert_eq!(r["duplicates"], "allowed");
        let r = &r["rollout"];
        assert_eq!(r["from_version"], 1);
        assert_eq!(r["total"], 2);
        assert_eq!(r["done"], 0, "nothing proven for 10 minutes yet: {r}");
        assert_eq!(r["waiting"], 1, "max_parallel 1: {r}");
        assert_eq!(r["state"], "rolling");
    }
    // The old instances still hold their resources beside the new one.
    let total: u64 = nodes(&h, 0)
        .unwrap()
        .iter()
        .map(|n| n["allocated"]["cpu_milli"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 750, "two old and one new instance");

    // The duplicate mode shows as the job says.
    let _: Value = h
        .agent(0)
        .client()
        .post("/v1/jobs", &spec("3", "never"))
        .unwrap();
    wait_for("duplicates = never shown", LONG, || {
        let j = job(&h, 1, "web")?;
        (j["duplicates"] == "never")
            .then_some(())
            .ok_or(format!("{j}"))
    });
}

/// `/v1/status`'s cluster summary counts jobs (total, running, stopped)
/// and instances by state beside the members; `myco status` prints them.
#[test]
fn status_summarises_jobs_and_instances() {
    let mut h = Harness::new("obs-api-status");
    let a = h.start("a", Opts::default());
    let a = h.agent(a);
    let digest = push_script_spore(&h, a, "web", OK_SERVER);
    for (name, count) in [("web", 2), ("off", 1)] {
        let spec = json!({"name": name, "spore": digest, "count": count,
                          "health": {"http": "/health", "interval_ms": 300}});
        let _: Value = a.client().post("/v1/jobs", &spec).unwrap();
    }
    wait_for("3 ready", LONG, || {
        let s: Value = a.anon().get("/v1/status").map_err(|e| e.to_string())?;
        (s["cluster"]["instances"]["ready"] == 3)
            .then_some(())
            .ok_or(format!("{s}"))
    });
    a.client().job_stop("off").unwrap();
    let (s, _) = wait_for("off stopped", LONG, || {
        let s: Value = a.anon().get("/v1/status").map_err(|e| e.to_string())?;
        let c = &s["cluster"];
        (c["jobs"]["running"] == 1 && c["instances"]["ready"] == 2)
            .then_some(s.clone())
            .ok_or(format!("{s}"))
    });
    let c = &s["cluster"];
    assert_eq!(c["alive"], 1, "{s}");
    assert_eq!(c["jobs"], json!({"total": 2, "running": 1, "stopped": 1}));
    assert_eq!(c["instances"]["launching"], 0, "{s}");
    // The seed systems' shape keeps its member counts only.
    let mesh: Value = a.anon().get("/mesh/status").unwrap();
    assert_eq!(
        mesh["members"],
        json!({"alive": 1, "suspect": 0, "down": 0, "left": 0})
    );
    let out = support::ok(&support::cli(a, &["status"]), "myco status");
    assert!(out.contains("jobs     2 (1 running, 1 stopped)"), "{out}");
    assert!(out.contains("instances 2 ready, 0 launching"), "{out}");
    // How instances are limited, as the README promises, in text and JSON.
    let cg = out
        .lines()
        .find(|l| l.starts_with("cgroups  "))
        .unwrap_or_default();
    assert!(
        ["v1", "v2", "none"]
            .iter()
            .any(|v| cg.starts_with(&format!("cgroups  {v}:"))),
        "{out}"
    );
    let out = support::ok(
        &support::cli(a, &["status", "--json"]),
        "myco status --json",
    );
    let st: Value = serde_json::from_str(&out).unwrap();
    assert!(st["cgroups"]["version"].is_string(), "{st}");
}

#[test]
fn log_lines_carry_the_request_id_and_job_work_its_job_and_instance() {
    let mut h = Harness::with_env(
        "obs-api-reqid",
        &[("RUST_LOG", "info,myco_agent::edge=debug")],
    );
    let a = h.start(
        "n1",
        Opts {
            args: vec!["--log-format".into(), "json".into()],
            ..Opts::default()
        },
    );
    let digest = push_script_spore(&h, h.agent(a), "web", OK_SERVER);
    let body = json!({"name": "web", "spore": digest, "count": 1,
                      "health": {"http": "/health", "interval_ms": 300}})
    .to_string();
    let token = h.agent(a).token();
    let (code, answer) = raw(
        h.agent(a),
        &format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nX-Request-Id: deploy-7f3a\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(code, 201, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: deploy-7f3a"),
        "the answer returns the id: {answer}"
    );
    // No id given: the API makes one and returns it.
    let (_, answer) = raw(
        h.agent(a),
        "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id: "),
        "{answer}"
    );

    wait_for("web ready", LONG, || {
        let j = job(&h, a, "web")?;
        (j["ready"] == 1).then_some(()).ok_or(format!("{j}"))
    });
    let edge = h.agent(a).edge;
    let ask = |id: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", edge)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET /web/hi HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    // The edge learns the route a moment after the instance is ready;
    // every try carries the same id (a 503 logs it too).
    wait_for("web served through the edge", LONG, || {
        let answer = ask("edge-51c9");
        (answer.split_whitespace().nth(1) == Some("200"))
            .then_some(())
            .ok_or(answer)
    });

    // Every line is one JSON object; the lines each request caused carry
    // its id (in the span the request runs in).
    let lines = |id: &str| -> Vec<Value> {
        std::fs::read_to_string(&h.agent(a).log)
            .unwrap()
            .lines()
            .filter(|l| l.contains(id))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let (deploy, _) = wait_for("the deploy's log line with its id", LONG, || {
        let found = lines("deploy-7f3a");
        found
            .iter()
            .any(|l| l["fields"]["message"] == "job written")
            .then_some(found.clone())
            .ok_or(format!("{found:?}"))
    });
    for l in &deploy {
        assert_eq!(l["span"]["request_id"], "deploy-7f3a", "{l}");
    }
    let (edge_lines, _) = wait_for("the edge request's log line with its id", LONG, || {
        let found = lines("edge-51c9");
        found
            .iter()
            .any(|l| l["fields"]["message"] == "edge request")
            .then_some(found.clone())
            .ok_or(format!("{found:?}"))
    });
    // The job runtime's work on the instance runs in a span naming both.
    let all: Vec<Value> = std::fs::read_to_string(&h.agent(a).log)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let started = all
        .iter()
        .find(|l| l["fields"]["message"] == "instance started")
        .unwrap_or_else(|| panic!("no 'instance started' line"));
    assert_eq!(started["span"]["name"], "instance", "{started}");
    assert_eq!(started["span"]["job"], "web", "{started}");
    assert!(
        started["span"]["instance"]
            .as_str()
            .is_some_and(|i| i.starts_with("web-0-v1-")),
        "{started}"
    );
    for l in &edge_lines {
        assert_eq!(l["span"]["request_id"], "edge-51c9", "{l}");
        assert_eq!(l["span"]["job"], "web", "{l}");
    }
}
