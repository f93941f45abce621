//! End-to-end tests of the jobs API and CLI against real `myco agent`
//! processes on loopback: validation naming the field, unknown fields and
//! spores refused, versions, history and revert, `NAME@VERSION` pinned to
//! a digest, scale without a new version, stop, the dry-run plan, a job too
//! big for any node pending with a reason, and the token on mutations.
//!
//! These tests need no running instance: what they check is the desired
//! state and what placement says about it. The workload they deploy exits
//! at once, so nothing outlives a test once instances do run.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use myco_client::RawResponse;
use myco_proto::jobs_api::{
    DeployChange, Deployed, InstanceInfo, JobInfo, JobVersionInfo, PlanInfo, Workload,
};
use serde_json::{Value, json};
use support::{Agent, DEADLINE, Harness, cli, myco, ok, s, wait_for};

/// Packs a workload that exits at once as spore `name@version`, trusts its
/// publisher (once) and pushes it to `a`; the digest.
fn spore(root: &Path, a: &Agent, name: &str, version: &str) -> String {
    let key = root.join("publisher.key");
    if !key.exists() {
        ok(&myco(&["key", "gen", "--out", s(&key)]), "myco key gen");
        let pubkey = PathBuf::from(format!("{}.pub", key.display()));
        ok(&cli(a, &["trust", "add", s(&pubkey)]), "myco trust add");
    }
    let src = root.join(format!("src-{name}-{version}"));
    fs::create_dir_all(&src).unwrap();
    let script = src.join("run.sh");
    fs::write(&script, format!("#!/bin/sh\necho {name} {version}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let file = root.join(format!("{name}-{version}.spore"));
    ok(
        &myco(&[
            "spore",
            "pack",
            s(&src),
            "--name",
            name,
            "--version",
            version,
            "--cmd",
            "./run.sh",
            "--key",
            s(&key),
            "--out",
            s(&file),
        ]),
        "myco spore pack",
    );
    a.client()
        .spore_push(fs::File::open(&file).unwrap())
        .expect("pushing the spore")
        .digest
}

/// Sends `method path` with `body`, with the token unless `anon`.
fn call(a: &Agent, method: &str, path: &str, body: &Value, anon: bool) -> RawResponse {
    let token = format!("Bearer {}", a.token());
    let mut headers = vec![("Content-Type", "application/json")];
    if !anon {
        headers.push(("Authorization", token.as_str()));
    }
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).unwrap()
    };
    a.anon()
        .raw(method, path, &headers, &bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[track_caller]
fn expect(r: &RawResponse, status: u16, mentions: &str) {
    assert_eq!(r.status, status, "answer: {}", r.text());
    assert!(
        r.text().contains(mentions),
        "the answer {} does not mention {mentions:?}",
        r.text()
    );
}

#[track_caller]
fn deployed(r: &RawResponse, status: u16) -> Deployed {
    assert_eq!(r.status, status, "answer: {}", r.text());
    r.json()
        .unwrap_or_else(|e| panic!("not a deploy answer ({e}): {}", r.text()))
}

fn job(name: &str, spore: &str, count: u32, greeting: &str) -> Value {
    json!({"name": name, "spore": spore, "count": count, "env": {"GREETING": greeting}})
}

#[test]
fn jobs_are_validated_versioned_pinned_scaled_reverted_and_stopped() {
    let mut h = Harness::new("jobs_api");
    h.mesh(2);
    let root = h.root.clone();
    let (n1, n2) = (h.agent(0), h.agent(1));
    let d1 = spore(&root, n1, "hello", "1");
    let d2 = spore(&root, n1, "hello", "2");
    assert_ne!(d1, d2);

    // Mutations need the token; reads on loopback do not.
    for (method, path) in [
        ("POST", "/v1/jobs"),
        ("POST", "/v1/jobs/web/scale"),
        ("POST", "/v1/jobs/web/revert"),
        ("POST", "/v1/jobs/web/restart"),
        ("DELETE", "/v1/jobs/web"),
        ("POST", "/api/workloads"),
        ("POST", "/api/workloads/web/stop"),
    ] {
        let r = call(n1, method, path, &job("web", "hello@1", 1, "a"), true);
        assert_eq!(
            r.status,
            401,
            "{method} {path} without a token: {}",
            r.text()
        );
    }
    assert_eq!(call(n1, "GET", "/v1/jobs", &Value::Null, true).status, 200);
    // A plan changes nothing: a read, open on loopback like the others.
    let r = call(
        n1,
        "POST",
        "/v1/jobs/plan",
        &job("web", "hello@1", 1, "a"),
        true,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        call(n1, "GET", "/v1/jobs/web", &Value::Null, true).status,
        404
    );

    // Bad specs: the error names the field; unknown fields are refused.
    let post = |body: Value| call(n1, "POST", "/v1/jobs", &body, false);
    expect(&post(job("web", "hello@1", 0, "a")), 400, "count");
    expect(&post(job("Web!", "hello@1", 1, "a")), 400, "name");
    expect(
        &post(json!({"name": "web", "spore": "hello@1", "cont": 2})),
        400,
        "cont",
    );
    expect(
        &post(json!({"name": "web", "spore": "hello@1", "resources": {"memory_mb": 0}})),
        400,
        "resources.memory_mb",
    );
    expect(
        &post(json!({"name": "web", "spore": "not a ref"})),
        400,
        "spore",
    );
    // Unknown spores, by name or by digest, are refused before anything is written.
    expect(&post(job("web", "nope@1", 1, "a")), 422, "nope@1");
    let unknown = format!("sha256:{}", "0".repeat(64));
    expect(&post(job("web", &unknown, 1, "a")), 422, &unknown);
    assert_eq!(
        call(n1, "GET", "/v1/jobs/web", &Value::Null, true).status,
        404
    );

    // The first deploy: version 1, NAME@VERSION pinned to its digest.
    let v1 = deployed(&post(job("web", "hello@1", 2, "a")), 201);
    assert_eq!(v1.change, DeployChange::Created);
    assert_eq!((v1.job.version, v1.job.count), (1, 2));
    assert_eq!(
        (v1.job.spore.as_str(), v1.job.spore_ref.as_str()),
        (d1.as_str(), "hello@1")
    );
    assert_eq!(
        v1.job.spec.spore, d1,
        "the stored spec must name the digest"
    );
    // The same spec again is not a new version.
    let same = deployed(&post(job("web", "hello@1", 2, "a")), 200);
    assert_eq!(
        (same.change, same.job.version),
        (DeployChange::Unchanged, 1)
    );
    // Every node sees the job (it is replicated state).
    wait_for("n2 to see job web", DEADLINE, || {
        n2.client().job("web").map_err(|e| e.to_string())
    });

    // A changed spec is a new version; so is a new digest behind the name.
    let v2 = deployed(&post(job("web", "hello@1", 2, "b")), 201);
    assert_eq!((v2.change, v2.job.version), (DeployChange::NewVersion, 2));
    let pinned = deployed(&post(job("pin", "hello@2", 1, "a")), 201);
    assert_eq!(pinned.job.spore, d2);

    // Scaling keeps the version (running instances stay) and takes effect.
    let r = call(
        n1,
        "POST",
        "/v1/jobs/web/scale",
        &json!({"count": 5}),
        false,
    );
    let scaled = deployed(&r, 200);
    assert_eq!(scaled.change, DeployChange::Scaled);
    assert_eq!(
        (scaled.job.version, scaled.job.count, scaled.job.desired),
        (2, 5, 5)
    );
    let seen = n1.client().job("web").unwrap();
    assert_eq!((seen.version, seen.desired), (2, 5));
    // Scaling to 0 keeps the job with nothing to run; 1001 is too many.
    let r = call(
        n1,
        "POST",
        "/v1/jobs/web/scale",
        &json!({"count": 0}),
        false,
    );
    let zero = deployed(&r, 200);
    assert_eq!(
        (zero.job.desired, zero.job.version, zero.job.stopped),
        (0, 2, false)
    );
    let r = call(
        n1,
        "POST",
        "/v1/jobs/web/scale",
        &json!({"count": 1001}),
        false,
    );
    expect(&r, 400, "count");
    let r = call(
        n1,
        "POST",
        "/v1/jobs/web/scale",
        &json!({"count": 5}),
        false,
    );
    assert_eq!(deployed(&r, 200).job.desired, 5);
    let r = call(n1, "POST", "/v1/jobs/web/scale", &json!({"cnt": 3}), false);
    expect(&r, 400, "count");
    let r = call(
        n1,
        "POST",
        "/v1/jobs/nope/scale",
        &json!({"count": 3}),
        false,
    );
    expect(&r, 404, "nope");

    // History: one entry per version, the current one marked.
    let history: Vec<JobVersionInfo> = n1.client().job_versions("web").unwrap();
    let versions: Vec<(u64, bool)> = history.iter().map(|v| (v.version, v.current)).collect();
    assert_eq!(versions, [(1, false), (2, true)]);
    assert_eq!(history[1].spec.env["GREETING"], "b");

    // Revert: version 1's spec comes back as version 3, with today's count.
    let r = call(n1, "POST", "/v1/jobs/web/revert", &Value::Null, false);
    let reverted = deployed(&r, 201);
    assert_eq!(reverted.job.version, 3);
    assert_eq!(reverted.job.spec.env["GREETING"], "a");
    assert_eq!(reverted.job.count, 5, "a revert keeps the scaled count");
    let r = call(
        n1,
        "POST",
        "/v1/jobs/web/revert",
        &json!({"version": 9}),
        false,
    );
    expect(&r, 404, "version 9");
    let r = call(
        n1,
        "POST",
        "/v1/jobs/web/revert",
        &json!({"version": 3}),
        false,
    );
    expect(&r, 409, "already");
    let r = call(
        n1,
        "POST",
        "/v1/jobs/web/revert",
        &json!({"version": 2}),
        false,
    );
    assert_eq!(deployed(&r, 201).job.spec.env["GREETING"], "b");

    // A job bigger than every node is valid, and pending with a reason.
    let huge = json!({"name": "huge", "spore": d1, "resources": {"memory_mb": 50_000_000}});
    deployed(&post(huge), 201);
    let (why, _) = wait_for("a pending reason for huge", DEADLINE, || {
        let j: JobInfo = n2.client().job("huge").map_err(|e| e.to_string())?;
        j.pending
            .first()
            .map(|p| p.reason.clone())
            .ok_or_else(|| format!("no pending slot: {j:?}"))
    });
    assert!(why.contains("memory"), "the reason is {why:?}");

    // The plan: a slot per node under spread, every other node explained;
    // nothing changes.
    let r = call(
        n1,
        "POST",
        "/v1/jobs/plan",
        &job("web", "hello@1", 2, "c"),
        false,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let plan: PlanInfo = r.json().unwrap();
    assert_eq!((plan.job.as_str(), plan.version), ("web", 5));
    let names: Vec<String> = plan
        .slots
        .iter()
        .filter_map(|s| s.node_name.clone())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["n1", "n2"],
        "spread puts one slot on each node: {plan:?}"
    );
    for slot in &plan.slots {
        assert_eq!(slot.rejected.len(), 1, "{slot:?}");
        assert!(!slot.rejected[0].reason.is_empty());
    }
    let r = call(n1, "POST", "/v1/jobs/plan", &job("big", &d1, 1, "a"), false);
    assert_eq!(r.status, 200);
    let r = call(
        n1,
        "POST",
        "/v1/jobs/plan",
        &json!({"name": "p", "spore": d1, "resources": {"memory_mb": 50_000_000}}),
        false,
    );
    let plan: PlanInfo = r.json().unwrap();
    assert!(
        plan.slots[0]
            .pending
            .as_deref()
            .is_some_and(|p| p.contains("memory")),
        "{plan:?}"
    );
    assert!(
        plan.slots[0]
            .rejected
            .iter()
            .all(|x| x.reason.contains("memory")),
        "{plan:?}"
    );
    assert_eq!(
        n1.client().job("web").unwrap().version,
        4,
        "a plan wrote something"
    );
    assert_eq!(
        call(n1, "GET", "/v1/jobs/big", &Value::Null, true).status,
        404
    );

    // Listings: jobs, instances (filtered), workloads.
    let jobs: Vec<JobInfo> = n2.client().jobs(false).unwrap();
    let listed: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(listed, ["huge", "pin", "web"]);
    let instances: Vec<InstanceInfo> = n1.client().instances(Some("web")).unwrap();
    assert!(instances.iter().all(|i| i.job == "web"), "{instances:?}");
    let workloads: Vec<Workload> = n2.anon().get("/api/workloads").unwrap();
    assert!(workloads.iter().any(|w| w.id == "web" && w.desired == 5));
    // Mxc's create and show: the same job model.
    let r = call(
        n1,
        "POST",
        "/api/workloads",
        &job("mxc", "hello@1", 1, "a"),
        false,
    );
    assert_eq!(deployed(&r, 201).job.name, "mxc");
    let w: Workload = n1.anon().get("/api/workloads/mxc").unwrap();
    assert_eq!((w.id.as_str(), w.desired, w.version), ("mxc", 1, 1));
    expect(
        &call(n1, "GET", "/api/workloads/nope", &Value::Null, true),
        404,
        "nope",
    );
    // Instances of down nodes are stale: left out unless asked for.
    let all: Vec<InstanceInfo> = n1.anon().get("/v1/instances?all=true").unwrap();
    assert!(all.len() >= n1.client().instances(None).unwrap().len());

    // Stop: desired 0, the history stays, and a deploy starts it again.
    let r = call(n1, "DELETE", "/v1/jobs/web", &Value::Null, false);
    let stopped = deployed(&r, 200);
    assert_eq!(stopped.change, DeployChange::Stopped);
    assert!(stopped.job.stopped);
    assert_eq!(stopped.job.desired, 0);
    assert_eq!(n1.client().job_versions("web").unwrap().len(), 4);
    // ... and removed: gone from the listings and a 404, as an unknown
    // job; `?all=true` still shows it.
    expect(
        &call(n1, "GET", "/v1/jobs/web", &Value::Null, true),
        404,
        "stopped",
    );
    let listed = |path: &str| {
        let jobs: Vec<JobInfo> = n1.anon().get(path).unwrap();
        jobs.iter().any(|j| j.name == "web")
    };
    assert!(!listed("/v1/jobs"), "a stopped job is still listed");
    assert!(listed("/v1/jobs?all=true"));
    let j: JobInfo = n1.anon().get("/v1/jobs/web?all=true").unwrap();
    assert!(j.stopped);
    let workloads: Vec<Workload> = n1.anon().get("/api/workloads").unwrap();
    assert!(workloads.iter().all(|w| w.name != "web"));
    let r = call(n1, "POST", "/api/workloads/pin/stop", &Value::Null, false);
    assert!(deployed(&r, 200).job.stopped);
    let again = deployed(&post(job("web", "hello@1", 5, "b")), 201);
    assert!(!again.job.stopped);
    assert_eq!(
        (again.change, again.job.version),
        (DeployChange::Started, 5)
    );
    for name in ["web", "huge", "mxc"] {
        n1.client().job_stop(name).unwrap();
    }
}

#[test]
fn the_cli_deploys_lists_plans_scales_and_explains_bad_files() {
    let mut h = Harness::new("jobs_cli");
    h.mesh(1);
    let root = h.root.clone();
    let a = h.agent(0);
    let digest = spore(&root, a, "app", "1");
    let file = root.join("app.toml");
    fs::write(
        &file,
        "name = \"app\"\nspore = \"app@1\"\ncount = 1\n[env]\nA = \"1\"\n",
    )
    .unwrap();

    // Not on a terminal, deploy returns after the write.
    let out = ok(&cli(a, &["deploy", s(&file)]), "myco deploy");
    assert!(out.contains("created"), "{out}");
    let out = ok(
        &cli(a, &["deploy", s(&file), "--json"]),
        "myco deploy --json",
    );
    let d: Deployed = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (d.change, d.job.spore.as_str()),
        (DeployChange::Unchanged, digest.as_str())
    );

    let out = ok(&cli(a, &["jobs", "--json"]), "myco jobs --json");
    let jobs: Vec<JobInfo> = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, "app");
    let out = ok(&cli(a, &["jobs"]), "myco jobs");
    assert!(out.starts_with("NAME") && out.contains("app"), "{out}");

    let out = ok(&cli(a, &["job", "scale", "app", "2"]), "myco job scale");
    assert!(out.contains("count 2"), "{out}");
    let out = ok(&cli(a, &["job", "show", "app"]), "myco job show");
    assert!(out.contains("2 desired"), "{out}");

    let out = ok(&cli(a, &["job", "plan", s(&file)]), "myco job plan");
    assert!(out.contains("slot 0 -> n1"), "{out}");

    fs::write(
        &file,
        "name = \"app\"\nspore = \"app@1\"\ncount = 1\n[env]\nA = \"2\"\n",
    )
    .unwrap();
    ok(&cli(a, &["deploy", s(&file), "--detach"]), "myco deploy v2");
    let out = ok(
        &cli(a, &["job", "history", "app", "--json"]),
        "myco job history",
    );
    let history: Vec<JobVersionInfo> = serde_json::from_str(&out).unwrap();
    assert_eq!(history.len(), 2);
    let out = ok(
        &cli(a, &["job", "revert", "app", "--version", "1"]),
        "myco job revert",
    );
    assert!(out.contains("version 3"), "{out}");

    // Bad files: one line naming the field; nothing reaches the agent.
    for (text, field) in [
        ("name = \"app\"\nspore = \"app@1\"\ncount = 0\n", "count"),
        ("name = \"app\"\nspore = \"app@1\"\ncuont = 2\n", "cuont"),
    ] {
        fs::write(&file, text).unwrap();
        let out = cli(a, &["deploy", s(&file)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(field), "{err}");
    }
    let out = cli(a, &["job", "show", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job"));

    let out = ok(&cli(a, &["instances", "--json"]), "myco instances --json");
    let _: Vec<InstanceInfo> = serde_json::from_str(&out).unwrap();
    ok(&cli(a, &["logs", "--help"]), "myco logs --help");
    let out = ok(&cli(a, &["job", "stop", "app"]), "myco job stop");
    assert!(out.contains("stopped"), "{out}");
    // Stopped is removed: only `--all` lists it.
    let listed = |args: &[&str]| ok(&cli(a, args), "myco jobs").contains("\"app\"");
    assert!(!listed(&["jobs", "--json"]));
    assert!(listed(&["jobs", "--all", "--json"]));

    // Regression: scale printed success and revert started the stopped job
    // again; like restart, they are refused: a deploy starts it.
    let stopped_job = || -> JobInfo { a.anon().get("/v1/jobs/app?all=true").unwrap() };
    let before = stopped_job();
    for args in [
        &["job", "scale", "app", "2"][..],
        &["job", "revert", "app"],
        &["job", "revert", "app", "--version", "1"],
        &["job", "restart", "app"],
    ] {
        let out = cli(a, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("answered 409: job \"app\" is stopped: deploy it to start it"),
            "{args:?}: {err}"
        );
    }
    let after = stopped_job();
    assert!(after.stopped);
    assert_eq!(
        (after.version, after.count, after.updated_ms),
        (before.version, before.count, before.updated_ms)
    );
}
