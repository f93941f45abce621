//! The mesh both observability tests look at: three agents (n3 tagged
//! `pin=solo`), `hello` with 2 spread instances and `solo`, pinned to n3
//! with no restart budget, so one crash leaves it below its count.

use std::fs;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Harness, Opts, cli, myco, ok, push_script_spore, s, wait_for};

/// The workload: `/` and `/health` answer 200, `/crash` exits with 1.
const SERVER: &str = r#"#!/usr/bin/env python3
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            os._exit(1)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
print("serving", os.environ["MYCO_INSTANCE"], flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// Kills the child when dropped (a test that fails must not leave it).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The mesh; dropping it kills the agents, then the instance processes
/// they leave (instances outlive a killed agent by design, to be adopted).
pub struct Mesh(Option<Harness>);

impl std::ops::Deref for Mesh {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        self.0.as_ref().expect("the harness lives until drop")
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let Some(h) = self.0.take() else { return };
        let root = fs::canonicalize(&h.root).unwrap_or_else(|_| h.root.clone());
        drop(h);
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&root)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// The workspace root (where `contrib/` and `target/` are).
pub fn root_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The ready instances of `job` as node 1 lists them.
fn ready(h: &Harness, job: &str) -> Result<Vec<Value>, String> {
    let list: Vec<Value> = h
        .agent(0)
        .anon()
        .get(&format!("/v1/instances?job={job}"))
        .map_err(|e| e.to_string())?;
    Ok(list.into_iter().filter(|i| i["state"] == "ready").collect())
}

/// The address of a ready instance of `job`.
pub fn instance_addr(h: &Harness, job: &str) -> String {
    let list = ready(h, job).expect("instances");
    list[0]["addr"].as_str().expect("an addr").to_string()
}

/// Starts the mesh and its jobs and waits until all run.
pub fn mesh_with_jobs(test: &str) -> (Mesh, String) {
    let mut h = Harness::new(test);
    let first = h.start("n1", Opts::default());
    let key_file = h.root.join("cluster.key");
    let key = ok(
        &myco(&["cluster", "key", "--data-dir", s(&h.agent(first).dir)]),
        "myco cluster key",
    );
    fs::write(&key_file, key).unwrap();
    for (name, args) in [("n2", vec![]), ("n3", vec!["--tag", "pin=solo"])] {
        h.start(
            name,
            Opts {
                join: vec![first],
                key_file: Some(key_file.clone()),
                args: args.into_iter().map(String::from).collect(),
                ..Opts::default()
            },
        );
    }
    let names = ["n1", "n2", "n3"].map(String::from);
    h.wait_all_alive(&[0, 1, 2], &names, Duration::from_secs(30));

    let a = h.agent(0);
    let digest = push_script_spore(&h, a, "hello", SERVER);
    let spore = h.root.join("hello.spore");
    // n3 holds the spore itself before `solo` (no restart budget) starts
    // there: a first start that waits on a fetch would use up its budget.
    // The push retries until n3 has the trust that n1 just wrote.
    wait_for("the spore pushed to n3", Duration::from_secs(20), || {
        let out = cli(h.agent(2), &["spore", "push", s(&spore), "--json"]);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).to_string())
    });
    let health = json!({"http": "/health", "interval_ms": 300});
    let jobs = [
        json!({"name": "hello", "spore": digest, "count": 2, "strategy": "spread", "health": health}),
        json!({"name": "solo", "spore": digest, "count": 1, "health": health,
               "constraints": {"pin": "solo"},
               "restart": {"attempts": 0, "avoid_ms": 3_600_000}}),
    ];
    for job in &jobs {
        let _: Value = a.client().post("/v1/jobs", job).expect("deploy");
    }
    wait_for(
        "hello x2 and solo x1 ready",
        Duration::from_secs(60),
        || {
            let (x, y) = (ready(&h, "hello")?.len(), ready(&h, "solo")?.len());
            (x == 2 && y == 1)
                .then_some(())
                .ok_or(format!("hello {x}, solo {y}"))
        },
    );
    (Mesh(Some(h)), digest)
}
