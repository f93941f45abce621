//! Observability with the real tools, against a real 3-node mesh running
//! jobs: a real Prometheus scrapes every node with the shipped alert rules
//! and runs every query of the shipped Grafana dashboard; headless Chromium
//! renders the dashboard, sees a node killed during the test turn down
//! without a reload, and scales and stops jobs from the page.
//!
//! Both are `#[ignore]`: they need `prometheus`, `chromium`,
//! `chromium-driver` and python's `selenium`, which `.ci/run` installs
//! before running them with `--ignored`.

mod support;

#[path = "observe/mesh.rs"]
mod mesh;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::wait_for;

use mesh::{ChildGuard, mesh_with_jobs, root_dir};

/// A Prometheus query through its HTTP API: the result, or why it failed.
fn query(base: &str, expr: &str) -> Result<Value, String> {
    let path = format!("/api/v1/query?query={}", myco_client::segment(expr));
    let v = api(base, &path)?;
    if v["status"] != "success" {
        return Err(format!("{expr} does not evaluate: {v}"));
    }
    Ok(v["data"]["result"].clone())
}

/// GET `path` of Prometheus's API as JSON.
fn api(base: &str, path: &str) -> Result<Value, String> {
    myco_client::Client::new(base)
        .get::<Value>(path)
        .map_err(|e| format!("{path}: {e}"))
}

/// Every `expr` of the Grafana dashboard, with its variables as Grafana
/// would fill them for "All".
fn grafana_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root_dir().join("contrib/grafana/myco.json")).unwrap();
    let d: Value = serde_json::from_str(&text).expect("myco.json is JSON");
    let mut out = Vec::new();
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    let filled = e
                        .replace("$__rate_interval", "1m")
                        .replace("=~\"$node\"", "=~\".*\"")
                        .replace("=~\"$job\"", "=~\".*\"");
                    out.push((e.to_string(), filled));
                }
            }
            walk(&p["panels"], out);
        }
    }
    walk(&d["panels"], &mut out);
    out
}

#[test]
#[ignore = "needs prometheus (.ci/run installs it)"]
fn prometheus_scrapes_every_node_and_every_rule_and_panel_evaluates() {
    let (h, _) = mesh_with_jobs("obs-prom");
    let dir = h.root.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    // The shipped rules with their `for:` shortened, so a firing alert is
    // seen in seconds; the expressions are the shipped ones.
    let rules = std::fs::read_to_string(root_dir().join("contrib/prometheus/alerts.yml")).unwrap();
    let fast: String = rules
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => l.split("for:").next().unwrap().to_string() + "for: 1s",
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("alerts.yml"), fast).unwrap();
    let targets: Vec<String> = h
        .agents
        .iter()
        .map(|a| format!("'127.0.0.1:{}'", a.api))
        .collect();
    let port = support::free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [alerts.yml]\n\
             scrape_configs:\n  - job_name: myco\n    static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus is installed (apt install prometheus)");
    let _prom = ChildGuard(child);
    let base = format!("http://127.0.0.1:{port}");
    let long = Duration::from_secs(60);

    wait_for("Prometheus scraping all three nodes", long, || {
        let t = api(&base, "/api/v1/targets")?;
        let active = t["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up = active.iter().filter(|x| x["health"] == "up").count();
        (active.len() == 3 && up == 3)
            .then_some(())
            .ok_or(format!("{up} of {} targets up", active.len()))
    });
    wait_for("every alert rule evaluated and healthy", long, || {
        let g = api(&base, "/api/v1/rules")?;
        let rules: Vec<Value> = g["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let bad: Vec<String> = rules
            .iter()
            .filter(|r| r["health"] != "ok")
            .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
            .collect();
        (rules.len() >= 7 && bad.is_empty())
            .then_some(())
            .ok_or(format!("{} rules, not ok: {bad:?}", rules.len()))
    });
    let names = api(&base, "/api/v1/label/__name__/values").unwrap();
    let abbreviated: Vec<&str> = names["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|n| n.starts_with("myco_"))
        .filter(|n| {
            ["_ms", "_us", "_ns", "_secs", "_kb", "_mb", "_kib", "_mib"]
                .iter()
                .any(|u| n.ends_with(u) || n.contains(&format!("{u}_")))
        })
        .collect();
    assert!(abbreviated.is_empty(), "not in base units: {abbreviated:?}");

    let queries = grafana_queries();
    assert!(queries.len() >= 8, "only {} panel queries", queries.len());
    assert!(
        queries
            .iter()
            .any(|(q, _)| q.contains("myco_edge_request_duration")),
        "no edge latency panel"
    );
    // Edge traffic through every node, kept up while the queries are
    // tried, so the edge row's rates and quantiles have samples.
    let edges: Vec<myco_client::Client> = h
        .agents
        .iter()
        .map(|a| myco_client::Client::new(&format!("http://127.0.0.1:{}", a.edge)))
        .collect();
    let drive = || {
        for e in &edges {
            for _ in 0..5 {
                let _ = e.raw("GET", "/hello/", &[], b"");
            }
        }
    };
    // Rates need two scrapes in their window: wait until every query has data.
    wait_for("every Grafana panel query returning data", long, || {
        drive();
        let mut empty = Vec::new();
        for (shown, expr) in &queries {
            if query(&base, expr)?.as_array().is_none_or(Vec::is_empty) {
                empty.push(shown.clone());
            }
        }
        empty
            .is_empty()
            .then_some(())
            .ok_or(format!("empty: {empty:?}"))
    });

    // The edge row sees hello's traffic: a rate above zero, a p99 that
    // is a number.
    wait_for("hello's edge rate and p99 in Prometheus", long, || {
        drive();
        let value = |expr: &str| -> Result<f64, String> {
            let r = query(&base, expr)?;
            r.as_array()
                .into_iter()
                .flatten()
                .find(|x| x["metric"]["myco_job"] == "hello")
                .and_then(|x| x["value"][1].as_str()?.parse::<f64>().ok())
                .ok_or(format!("{expr}: no hello in {r}"))
        };
        let rate = value("sum by (myco_job) (rate(myco_edge_requests_total[1m]))")?;
        let p99 = value(
            "histogram_quantile(0.99, sum by (myco_job, le) \
             (rate(myco_edge_request_duration_seconds_bucket[1m])))",
        )?;
        (rate > 0.0 && p99.is_finite())
            .then_some(())
            .ok_or(format!("rate {rate}, p99 {p99}"))
    });

    // `solo` may run on n3 only and has no restart budget: once its process
    // dies, n3 gives up on it and nothing else may take it.
    let solo = mesh::instance_addr(&h, "solo");
    // The workload exits when asked (an HTTP client in a few lines here).
    let _ = myco_client::Client::new(&format!("http://{solo}")).raw("GET", "/crash", &[], b"");
    wait_for("MycoJobBelowCount firing for solo", long, || {
        let a = api(&base, "/api/v1/alerts")?;
        let firing = a["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| {
                x["labels"]["alertname"] == "MycoJobBelowCount"
                    && x["labels"]["myco_job"] == "solo"
                    && x["state"] == "firing"
            });
        firing.then_some(()).ok_or(format!("alerts: {}", a["data"]))
    });
    // The job that kept its count does not fire.
    let a = api(&base, "/api/v1/alerts").unwrap();
    assert!(
        !a.to_string().contains("\"myco_job\":\"hello\""),
        "hello is at its count: {a}"
    );
}

#[test]
#[ignore = "needs chromium, chromium-driver and python selenium (.ci/run installs them)"]
fn dashboard_in_chromium_shows_the_mesh_live_and_scales() {
    let (h, _) = mesh_with_jobs("obs-browser");
    let shot = root_dir().join("target/dashboard.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let victim = h.agent(2).pid().expect("n3 runs");
    let out = Command::new("python3")
        .arg(root_dir().join("crates/myco/tests/observe/dashboard_browser.py"))
        .arg(h.agent(0).api_url())
        .arg(&shot)
        .arg(victim.to_string())
        .arg(h.agent(0).token())
        .output()
        .expect("python3 runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser check failed:\n{text}");
    println!("{text}");
    assert!(shot.exists(), "no screenshot at {}", shot.display());
    // The scale went through the API, not only the page.
    let (_, _) = wait_for(
        "hello scaled to 3 by the page",
        Duration::from_secs(10),
        || {
            let j: Value = h
                .agent(0)
                .anon()
                .get("/v1/jobs/hello")
                .map_err(|e| e.to_string())?;
            (j["count"] == 3)
                .then_some(())
                .ok_or(format!("count {}", j["count"]))
        },
    );
    let solo: Value = h.agent(0).anon().get("/v1/jobs/solo?all=true").unwrap();
    assert_eq!(solo["stopped"], true, "the page stopped solo: {solo}");
}
