//! End-to-end tests of the replicated, durable config KV against real
//! `myco agent` processes on loopback: acknowledged writes survive a
//! SIGKILL, the CLI, the event stream, partitions (fault injection) and
//! restarts.
//!
//! Every test has its own temp dir and ports, so they run in parallel.
//! `--nocapture` shows the figures they measure.
//!
//! Why one file of this length: every scenario starts its own mesh and
//! reads top to bottom on its own, and they share one test binary (each
//! integration test file is a separate link on a 2-core CI machine).

mod support;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use myco_client::{Client, ClientError};
use myco_proto::api::{KvEntry, KvWritten};
use serde_json::Value;
use support::{Agent, DEADLINE, Harness, Opts, POLL, myco, myco_stdin, wait_event, wait_for};

/// How long replicas get to agree after the last write.
const CONVERGE: Duration = Duration::from_secs(30);

/// A version `WALL-LOGICAL-NODE` as something that orders like the agent's
/// timestamps (wall time, then the counter, then the node id).
fn version_order(v: &str) -> (u64, u32, String) {
    let mut parts = v.splitn(3, '-');
    let wall = parts.next().and_then(|p| p.parse().ok());
    let logical = parts.next().and_then(|p| p.parse().ok());
    let node = parts.next().map(str::to_string);
    match (wall, logical, node) {
        (Some(w), Some(l), Some(n)) if !n.is_empty() => (w, l, n),
        _ => panic!("version {v:?} is not WALL-LOGICAL-NODE"),
    }
}

/// A KV listing as key -> (value, version).
fn as_map(entries: &[KvEntry]) -> BTreeMap<String, (String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e.key.clone(),
                (
                    e.value.clone().unwrap_or_else(|| "(none)".into()),
                    e.version.clone(),
                ),
            )
        })
        .collect()
}

/// Agent `a`'s listing under `prefix`, or what went wrong.
fn listing(a: &Agent, prefix: &str) -> Result<Vec<KvEntry>, String> {
    a.client()
        .kv_list(prefix)
        .map_err(|e| format!("{}: {e}", a.name))
}

/// Checks a PUT/DELETE answer: acknowledged, for `key`, `deleted` as
/// given, with a well-formed version; returns the version.
#[track_caller]
fn written(r: Result<KvWritten, ClientError>, key: &str, deleted: bool) -> String {
    let w = r.unwrap_or_else(|e| panic!("write of {key:?}: {e}"));
    assert_eq!(w.key, key, "write answer {w:?}");
    assert_eq!(w.deleted, deleted, "write answer {w:?}");
    version_order(&w.version);
    w.version
}

/// Whether agent `a` holds `key` (a 404 is `false`).
fn has(a: &Agent, key: &str) -> Result<bool, String> {
    match a.client().kv_get(key) {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(format!("GET {key} on {}: {e}", a.name)),
    }
}

/// Runs `myco ARGS` and returns its stdout; panics with stderr on failure.
#[track_caller]
fn myco_ok(args: &[&str]) -> String {
    let out = myco(args);
    assert!(
        out.status.success(),
        "myco {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("myco printed UTF-8")
}

// ----- 1 -----

/// What one writer thread saw.
#[derive(Default)]
struct Writes {
    /// (key, value) of every write answered 200.
    acked: Vec<(String, String)>,
    /// Writes refused at connect (the agent was down).
    refused: usize,
    /// Writes acknowledged after the first refusal.
    acked_after_refusal: usize,
    /// Every other failure, described.
    other: Vec<String>,
}

/// Counters the writers share with the test.
#[derive(Default)]
struct Progress {
    acked: AtomicUsize,
    refused: AtomicUsize,
    /// (key, value) of every acknowledged write so far.
    log: Mutex<Vec<(String, String)>>,
}

fn writer(client: Client, node: usize, keys: Vec<usize>, p: Arc<Progress>) -> Writes {
    let mut w = Writes::default();
    for k in keys {
        let key = format!("bar/k{k:04}");
        let value = format!("v{k}-from-n{node}");
        match client.kv_put(&key, value.as_bytes()) {
            Ok(r) => {
                assert_eq!(r.key, key, "write answer {r:?}");
                assert!(!r.deleted, "write answer {r:?}");
                p.log.lock().unwrap().push((key.clone(), value.clone()));
                w.acked.push((key, value));
                p.acked.fetch_add(1, Ordering::SeqCst);
                if w.refused > 0 {
                    w.acked_after_refusal += 1;
                }
            }
            Err(e) if e.io_kind() == Some(ErrorKind::ConnectionRefused) => {
                w.refused += 1;
                p.refused.fetch_add(1, Ordering::SeqCst);
                // The agent is down: do not burn through the keys.
                thread::sleep(Duration::from_millis(15));
            }
            Err(e) => w.other.push(format!("{key}: {e}")),
        }
        // Pacing, so the kill lands mid-way.
        thread::sleep(Duration::from_millis(4));
    }
    w
}

#[test]
fn writes_survive_a_sigkill_midway() {
    const TOTAL: usize = 1000;
    const KILL_AFTER: usize = 300;
    /// Refused writes to wait for before the restart (about half a second).
    const DOWN_FOR_REFUSED: usize = 25;
    let mut h = Harness::new("sigkill");
    h.mesh(3);

    // Keys are dealt round-robin so every writer covers the whole range.
    let progress: Vec<Arc<Progress>> = (0..3).map(|_| Arc::default()).collect();
    let acked_total = || -> usize {
        progress
            .iter()
            .map(|p| p.acked.load(Ordering::SeqCst))
            .sum()
    };
    let t0 = Instant::now();
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let client = h.agent(i).client().clone();
            let keys: Vec<usize> = (0..TOTAL).filter(|k| k % 3 == i).collect();
            let p = progress[i].clone();
            thread::spawn(move || writer(client, i + 1, keys, p))
        })
        .collect();

    wait_for(
        &format!("{KILL_AFTER} acknowledged writes"),
        Duration::from_secs(30),
        || {
            let n = acked_total();
            if n >= KILL_AFTER {
                Ok(())
            } else {
                Err(format!("{n} acked"))
            }
        },
    );
    h.kill(1);
    let killed_at = Instant::now();
    let acked_at_kill = acked_total();
    // Down until its writer has seen some writes refused, then back.
    wait_for(
        &format!("{DOWN_FOR_REFUSED} writes to the killed n2 refused"),
        Duration::from_secs(10),
        || {
            let n = progress[1].refused.load(Ordering::SeqCst);
            if n >= DOWN_FOR_REFUSED {
                Ok(())
            } else {
                Err(format!("{n} refused"))
            }
        },
    );
    h.restart(1);
    let restarted_at = Instant::now();
    let down_for = restarted_at.duration_since(killed_at);
    // The restarted node catches up on everything acknowledged so far (its
    // own writes from before the kill, and what it missed while down),
    // while the writers go on.
    let so_far: Vec<(String, String)> = progress
        .iter()
        .flat_map(|p| p.log.lock().unwrap().clone())
        .collect();
    let (_, caught_up) = wait_for(
        "the restarted n2 to hold every write acknowledged before its restart",
        CONVERGE,
        || {
            let got = as_map(&listing(h.agent(1), "bar/")?);
            let missing = so_far
                .iter()
                .filter(|(k, v)| got.get(k).map(|(gv, _)| gv) != Some(v))
                .count();
            if missing > 0 {
                return Err(format!("{missing} of {} missing", so_far.len()));
            }
            Ok(())
        },
    );

    let results: Vec<Writes> = writers
        .into_iter()
        .map(|w| w.join().expect("writer thread panicked"))
        .collect();
    let writes_took = t0.elapsed();
    for (i, w) in results.iter().enumerate() {
        eprintln!(
            "writer n{}: acked {}, refused {}, acked after its first refusal {}, other failures {:?}",
            i + 1,
            w.acked.len(),
            w.refused,
            w.acked_after_refusal,
            w.other
        );
    }
    // Nodes 1 and 3 never went away: every write to them must succeed.
    for i in [0, 2] {
        assert_eq!(results[i].refused, 0, "writes to n{} refused", i + 1);
        assert!(
            results[i].other.is_empty(),
            "writes to n{} failed: {:?}",
            i + 1,
            results[i].other
        );
    }
    let w2 = &results[1];
    assert!(
        w2.refused > 0,
        "no write to n2 was refused while it was down: the kill missed"
    );
    assert!(
        w2.acked_after_refusal > 0,
        "n2 acknowledged no write after its restart"
    );
    assert!(
        w2.acked.len() > w2.acked_after_refusal,
        "n2 acknowledged nothing before the kill"
    );
    // Only the write in flight at the kill may fail otherwise.
    assert!(
        w2.other.len() <= 2,
        "writes to n2 failed oddly: {:?}",
        w2.other
    );

    let acked: BTreeMap<String, String> = results
        .iter()
        .flat_map(|w| w.acked.iter().cloned())
        .collect();
    assert_eq!(
        acked.len(),
        results.iter().map(|w| w.acked.len()).sum::<usize>(),
        "a key was acknowledged twice"
    );
    assert!(
        acked.len() >= TOTAL * 6 / 10,
        "only {} of {TOTAL} writes acknowledged",
        acked.len()
    );

    // Every acknowledged write, with its value, on every node.
    let (listings, took) = wait_for("every acknowledged write on every node", CONVERGE, || {
        let mut listings = Vec::new();
        for i in 0..3 {
            let got = as_map(&listing(h.agent(i), "bar/")?);
            let missing: Vec<&String> = acked
                .iter()
                .filter(|(k, v)| got.get(*k).map(|(gv, _)| gv) != Some(*v))
                .map(|(k, _)| k)
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "n{} lacks {} of {} acked keys, e.g. {:?}",
                    i + 1,
                    missing.len(),
                    acked.len(),
                    &missing[..missing.len().min(5)]
                ));
            }
            listings.push(got);
        }
        Ok(listings)
    });
    let converged = Instant::now();
    // And the same version of each on every node.
    for k in acked.keys() {
        let versions: Vec<&String> = listings.iter().map(|l| &l[k].1).collect();
        assert!(
            versions.iter().all(|v| *v == versions[0]),
            "{k} has versions {versions:?} on n1..n3"
        );
    }
    // Read back key by key too (the GET path, not only the listing), over
    // the client's keep-alive connections.
    for (i, listing) in listings.iter().enumerate() {
        let c = h.agent(i).anon();
        for (k, v) in &acked {
            let r = c
                .kv_get(k)
                .or_else(|_| c.kv_get(k))
                .unwrap_or_else(|e| panic!("GET {k} on n{}: {e}", i + 1));
            assert_eq!(r.value, v.as_bytes(), "GET {k} on n{}", i + 1);
            assert_eq!(r.version, listing[k].1, "version of {k} on n{}", i + 1);
        }
    }
    eprintln!(
        "acked {} of {TOTAL} writes in {writes_took:.2?} ({acked_at_kill} before the kill, \
         n2 down {down_for:.2?}, {} writes to it refused); the restarted n2 held all {} writes \
         acked before its restart {caught_up:.2?} after it; every acked write on every node \
         {took:.2?} after the writers finished ({:.2?} after n2's restart)",
        acked.len(),
        w2.refused,
        so_far.len(),
        converged.duration_since(restarted_at),
    );
}

// ----- 2 -----

#[test]
fn kv_basics_over_the_cli() {
    let mut h = Harness::new("kvcli");
    h.mesh(3);
    let url: Vec<String> = (0..3).map(|i| h.agent(i).api_url()).collect();
    let token: Vec<String> = (0..3).map(|i| h.agent(i).token()).collect();
    let dir: Vec<String> = (0..3)
        .map(|i| h.agent(i).dir.to_str().unwrap().to_string())
        .collect();

    // put on n1 (--token), on n2 (--data-dir finds the token), on n3 (flags after the subcommand).
    let printed_version = |out: &str, key: &str| -> String {
        let v = out
            .trim()
            .strip_prefix(&format!("{key} = version "))
            .unwrap_or_else(|| panic!("put printed {out:?}"))
            .to_string();
        version_order(&v);
        v
    };
    let out = myco_ok(&[
        "--api",
        &url[0],
        "--token",
        &token[0],
        "kv",
        "put",
        "app/color",
        "blue",
    ]);
    let v_color = printed_version(&out, "app/color");
    let out = myco_ok(&[
        "--api",
        &url[1],
        "--data-dir",
        &dir[1],
        "kv",
        "put",
        "app/size",
        "large",
    ]);
    let v_size = printed_version(&out, "app/size");
    let out = myco_ok(&[
        "kv",
        "put",
        "app/shape",
        "round",
        "--api",
        &url[2],
        "--token",
        &token[2],
    ]);
    let v_shape = printed_version(&out, "app/shape");
    // Another prefix, which listings of app/ must not show.
    myco_ok(&[
        "--api", &url[0], "--token", &token[0], "kv", "put", "other/x", "1",
    ]);
    // A value from standard input.
    let out = myco_stdin(
        &[
            "--api", &url[2], "--token", &token[2], "kv", "put", "app/motd",
        ],
        b"hello\nworld\n",
    );
    assert!(
        out.status.success(),
        "put from stdin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v_motd = printed_version(&String::from_utf8_lossy(&out.stdout), "app/motd");

    // get on a node that did not take the write, once it has replicated.
    let (_, took) = wait_for("app/color on n2 and n3 through the CLI", DEADLINE, || {
        for i in [1, 2] {
            let out = myco(&["--api", &url[i], "kv", "get", "app/color"]);
            if !out.status.success() {
                return Err(format!(
                    "n{}: {}",
                    i + 1,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            if out.stdout != b"blue" {
                return Err(format!(
                    "n{} printed {:?}",
                    i + 1,
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
        Ok(())
    });
    eprintln!("a CLI put on n1 was readable through the CLI on n2 and n3 after {took:.2?}");

    let want: BTreeMap<String, (String, String)> = [
        ("app/color", "blue", &v_color),
        ("app/motd", "hello\nworld\n", &v_motd),
        ("app/shape", "round", &v_shape),
        ("app/size", "large", &v_size),
    ]
    .into_iter()
    .map(|(k, v, ver)| (k.to_string(), (v.to_string(), ver.clone())))
    .collect();
    let list_json =
        |i: usize, prefix: &str| -> Result<BTreeMap<String, (String, String)>, String> {
            let out = myco(&["--api", &url[i], "kv", "list", prefix, "--json"]);
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            let entries: Vec<KvEntry> = serde_json::from_slice(&out.stdout).map_err(|e| {
                format!(
                    "list --json printed no KV listing ({e}): {:?}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })?;
            Ok(as_map(&entries))
        };
    wait_for(
        "list --json app/ to show the four keys on every node",
        DEADLINE,
        || {
            for i in 0..3 {
                let got = list_json(i, "app/")?;
                if got != want {
                    return Err(format!("n{} lists {got:?}", i + 1));
                }
            }
            Ok(())
        },
    );
    // The table form names the keys too.
    let table = myco_ok(&["--api", &url[1], "kv", "list", "app/"]);
    for k in want.keys() {
        assert!(
            table.contains(k.as_str()),
            "kv list app/ table lacks {k}: {table}"
        );
    }
    assert!(
        !table.contains("other/x"),
        "kv list app/ shows other/x: {table}"
    );

    // Overwrite on n2: a newer version everywhere.
    let out = myco_ok(&[
        "--api",
        &url[1],
        "--data-dir",
        &dir[1],
        "kv",
        "put",
        "app/color",
        "green",
    ]);
    let v_green = printed_version(&out, "app/color");
    assert!(
        version_order(&v_green) > version_order(&v_color),
        "an overwrite got version {v_green}, not after {v_color}"
    );
    wait_for("the overwrite on every node", DEADLINE, || {
        for i in 0..3 {
            let got = list_json(i, "app/color")?;
            let want = BTreeMap::from([(
                "app/color".to_string(),
                ("green".to_string(), v_green.clone()),
            )]);
            if got != want {
                return Err(format!("n{} lists {got:?}", i + 1));
            }
        }
        Ok(())
    });

    // del on n3: 404 everywhere, gone from listings.
    let out = myco_ok(&[
        "--api",
        &url[2],
        "--token",
        &token[2],
        "kv",
        "del",
        "app/color",
    ]);
    assert_eq!(out.trim(), "deleted app/color");
    let (_, took) = wait_for("app/color to be 404 on every node", DEADLINE, || {
        for i in 0..3 {
            let r = h
                .agent(i)
                .anon()
                .raw("GET", "/v1/kv/app/color", &[], b"")
                .map_err(|e| e.to_string())?;
            if r.status != 404 {
                return Err(format!("n{} answers {} {:?}", i + 1, r.status, r.text()));
            }
            // The 404 is a JSON error.
            let j: Value = r
                .json()
                .map_err(|e| format!("n{}: 404 body is not JSON ({e}): {}", i + 1, r.text()))?;
            if !j["error"].is_string() {
                return Err(format!("n{}: 404 body {j}", i + 1));
            }
        }
        Ok(())
    });
    eprintln!("a delete on n3 was 404 on every node after {took:.2?}");
    let out = myco(&["--api", &url[0], "kv", "get", "app/color"]);
    assert!(!out.status.success(), "kv get of a deleted key succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404"), "kv get of a deleted key said: {err}");
    assert!(
        out.stdout.is_empty(),
        "kv get of a deleted key printed {:?}",
        out.stdout
    );
    for i in 0..3 {
        let got = list_json(i, "app/").unwrap();
        let mut want = want.clone();
        want.remove("app/color");
        assert_eq!(got, want, "n{} lists after the delete", i + 1);
    }

    // Size limits: 64 KiB is fine, 70,000 bytes and 64 KiB + 1 are 413.
    let a = h.agent(0);
    let big: Vec<u8> = (0..65_536u32).map(|i| b'a' + (i % 26) as u8).collect();
    written(a.client().kv_put("big/ok", &big), "big/ok", false);
    let r = a.client().kv_put("big/too", &vec![b'x'; 70_000]);
    assert_eq!(
        r.as_ref().err().and_then(ClientError::status),
        Some(413),
        "a 70,000-byte value answered: {r:?}"
    );
    let r = a.client().kv_put("big/too", &vec![b'x'; 65_537]);
    assert_eq!(
        r.as_ref().err().and_then(ClientError::status),
        Some(413),
        "a 65,537-byte value answered: {r:?}"
    );
    let out = myco_stdin(
        &[
            "--api", &url[0], "--token", &token[0], "kv", "put", "big/too",
        ],
        &vec![b'y'; 70_000],
    );
    assert!(!out.status.success(), "kv put of 70,000 bytes succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("413"), "kv put of 70,000 bytes said: {err}");
    wait_for("the 64 KiB value on n3", DEADLINE, || {
        let r = h
            .agent(2)
            .client()
            .kv_get("big/ok")
            .map_err(|e| e.to_string())?;
        if r.value != big {
            return Err(format!("{} bytes", r.value.len()));
        }
        Ok(())
    });
    for i in 0..3 {
        assert!(
            !has(h.agent(i), "big/too").unwrap(),
            "a refused value was stored on n{}",
            i + 1
        );
    }

    // A write's answer carries its version in a header too.
    let anon = a.anon();
    let bearer = format!("Bearer {}", token[0]);
    let r = anon
        .raw(
            "PUT",
            "/v1/kv/app/headed",
            &[("Authorization", &bearer)],
            b"h",
        )
        .unwrap();
    assert_eq!(r.status, 200, "PUT with the token: {}", r.text());
    let w: KvWritten = r.json().expect("a KvWritten answer");
    assert_eq!(
        r.header("x-myco-version"),
        Some(w.version.as_str()),
        "x-myco-version of the write answer"
    );

    // No token, or a wrong one: 401, and nothing written or deleted.
    let r = anon.raw("PUT", "/v1/kv/app/noauth", &[], b"x").unwrap();
    assert_eq!(r.status, 401, "PUT without a token answered {}", r.text());
    // Its body was never read, so the connection closes, and says so: a
    // client that reused it failed its next request with an EOF.
    assert_eq!(r.header("connection"), Some("close"));
    let r = anon
        .raw(
            "PUT",
            "/v1/kv/app/noauth",
            &[("Authorization", "Bearer nope")],
            b"x",
        )
        .unwrap();
    assert_eq!(
        r.status,
        401,
        "PUT with a wrong token answered {}",
        r.text()
    );
    let r = anon.raw("DELETE", "/v1/kv/app/size", &[], b"").unwrap();
    assert_eq!(
        r.status,
        401,
        "DELETE without a token answered {}",
        r.text()
    );
    // Another node's token is not this node's.
    let other = format!("Bearer {}", token[1]);
    let r = anon
        .raw(
            "PUT",
            "/v1/kv/app/noauth",
            &[("Authorization", &other)],
            b"x",
        )
        .unwrap();
    assert_eq!(
        r.status,
        401,
        "PUT with n2's token on n1 answered {}",
        r.text()
    );
    let out = myco(&["--api", &url[0], "kv", "put", "app/noauth", "x"]);
    assert!(!out.status.success(), "kv put without a token succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token"),
        "kv put without a token said: {err}"
    );
    assert!(
        !has(a, "app/noauth").unwrap(),
        "an unauthorized PUT was stored"
    );
    assert!(
        has(a, "app/size").unwrap(),
        "an unauthorized DELETE deleted"
    );

    // Fault injection is off without MYCO_FAULTS=1, even with the token.
    let r = a.client().faults_block(&[h.agent(1).mesh_addr()]);
    assert_eq!(
        r.as_ref().err().and_then(ClientError::status),
        Some(404),
        "/v1/debug/faults without MYCO_FAULTS=1 answered {r:?}"
    );
}

// ----- 3 -----

#[test]
fn events_stream_state_changes() {
    let mut h = Harness::new("events");
    h.mesh(3);
    let mut sse = h
        .agent(2)
        .anon()
        .events()
        .expect("opening /v1/events on n3");
    let ct = sse.content_type().to_string();
    assert!(
        ct.starts_with("text/event-stream"),
        "/v1/events content-type {ct:?}"
    );

    let key = "ev/greeting";
    let t = Instant::now();
    let version = written(h.agent(0).client().kv_put(key, b"hi"), key, false);
    let (ev, _, skipped) = wait_event(&mut sse, &format!("state {key} on n3"), DEADLINE, |e| {
        e.event == "state" && e.json().is_some_and(|j| j["key"] == key)
    });
    let took = t.elapsed();
    let j = ev.json().unwrap();
    assert_eq!(j["type"], "state", "{j}");
    assert_eq!(j["table"], "kv", "{j}");
    assert_eq!(
        j["version"],
        version.as_str(),
        "the event's version is the write's: {j}"
    );
    assert_eq!(j["deleted"], false, "{j}");
    // The typed view of the same event.
    assert_eq!(
        ev.api(),
        Some(myco_proto::api::ApiEvent::State {
            table: "kv".into(),
            key: key.into(),
            version: version.clone(),
            deleted: false,
        }),
        "{ev:?}"
    );
    for e in &skipped {
        assert!(
            e.event == "member" || e.event == "state",
            "unexpected event before the write's: {e:?}"
        );
    }
    eprintln!("n3 streamed the state event of a write on n1 {took:.2?} after the PUT was sent");

    // A delete streams too, as deleted.
    let t = Instant::now();
    let version = written(h.agent(0).client().kv_del(key), key, true);
    let (ev, _, _) = wait_event(&mut sse, &format!("deleted {key} on n3"), DEADLINE, |e| {
        e.event == "state"
            && e.json()
                .is_some_and(|j| j["key"] == key && j["deleted"] == true)
    });
    let j = ev.json().unwrap();
    assert_eq!(
        j["version"],
        version.as_str(),
        "the delete event's version: {j}"
    );
    eprintln!(
        "n3 streamed the delete {:.2?} after it was sent",
        t.elapsed()
    );
}

// ----- 4 -----

#[test]
fn partitioned_node_keeps_writing_and_converges_after_heal() {
    let mut h = Harness::with_env("partition", &[("MYCO_FAULTS", "1")]);
    h.mesh(3);
    let addr: Vec<String> = (0..3).map(|i| h.agent(i).mesh_addr()).collect();
    let has = |i: usize, key: &str| has(h.agent(i), key);

    // Before the cut, replication works.
    written(
        h.agent(0).client().kv_put("part/before", b"0"),
        "part/before",
        false,
    );
    wait_for("part/before on every node", DEADLINE, || {
        for i in 0..3 {
            if !has(i, "part/before")? {
                return Err(format!("n{} lacks it", i + 1));
            }
        }
        Ok(())
    });

    // Cut n3 off from n1 and n2, both ways.
    let cuts = [
        (0, vec![addr[2].clone()]),
        (1, vec![addr[2].clone()]),
        (2, vec![addr[0].clone(), addr[1].clone()]),
    ];
    for (i, block) in &cuts {
        h.agent(*i)
            .client()
            .faults_block(block)
            .unwrap_or_else(|e| panic!("POST /v1/debug/faults on n{}: {e}", i + 1));
    }
    let cut_at = Instant::now();

    // Writes on both sides, and one key written on both.
    const N: usize = 10;
    for k in 0..N {
        let key = format!("part/from1-{k}");
        written(
            h.agent(0).client().kv_put(&key, format!("a{k}").as_bytes()),
            &key,
            false,
        );
        let key = format!("part/from3-{k}");
        written(
            h.agent(2).client().kv_put(&key, format!("c{k}").as_bytes()),
            &key,
            false,
        );
    }
    let v1 = written(
        h.agent(0).client().kv_put("part/both", b"one"),
        "part/both",
        false,
    );
    let v3 = written(
        h.agent(2).client().kv_put("part/both", b"three"),
        "part/both",
        false,
    );
    let winner = if version_order(&v3) > version_order(&v1) {
        "three"
    } else {
        "one"
    };

    // The intact side replicates: n2 gets n1's writes.
    wait_for("n1's writes on n2 during the cut", DEADLINE, || {
        for k in 0..N {
            if !has(1, &format!("part/from1-{k}"))? {
                return Err(format!("n2 lacks part/from1-{k}"));
            }
        }
        Ok(())
    });
    // Membership sees the cut.
    let (_, took) = wait_for(
        "n1 and n2 to see n3 not alive, n3 to see them not alive",
        DEADLINE,
        || {
            for (i, who) in [(0, "n3"), (1, "n3"), (2, "n1"), (2, "n2")] {
                let s = h.state_of(i, who)?;
                if s == "alive" {
                    return Err(format!("n{} sees {who} alive", i + 1));
                }
            }
            Ok(())
        },
    );
    eprintln!("the cut was visible to membership after {took:.2?}");
    // Nothing crosses the cut: watched over three anti-entropy rounds.
    let watch_from = Instant::now();
    while watch_from.elapsed() < Duration::from_secs(3) {
        for k in 0..N {
            assert!(
                !has(2, &format!("part/from1-{k}")).unwrap(),
                "n1's part/from1-{k} crossed the cut to n3"
            );
            for i in [0, 1] {
                assert!(
                    !has(i, &format!("part/from3-{k}")).unwrap(),
                    "n3's part/from3-{k} crossed the cut to n{}",
                    i + 1
                );
            }
        }
        let b = h.agent(2).client().kv_get("part/both").unwrap();
        assert_eq!(b.value, b"three", "n3's part/both changed during the cut");
        thread::sleep(POLL);
    }

    // Heal everywhere.
    for i in 0..3 {
        h.agent(i)
            .client()
            .faults_block(&[])
            .unwrap_or_else(|e| panic!("healing n{}: {e}", i + 1));
    }
    let healed_at = Instant::now();
    eprintln!(
        "healed after a {:.2?} partition",
        healed_at.duration_since(cut_at)
    );

    let (listing, took) = wait_for("identical part/ listings on every node", CONVERGE, || {
        let lists: Vec<Vec<KvEntry>> = (0..3)
            .map(|i| listing(h.agent(i), "part/"))
            .collect::<Result<_, _>>()?;
        let want = 2 * N + 2;
        for (i, l) in lists.iter().enumerate() {
            if l.len() != want {
                return Err(format!("n{} lists {} keys, want {want}", i + 1, l.len()));
            }
        }
        if lists[0] != lists[1] || lists[0] != lists[2] {
            return Err("listings differ".into());
        }
        Ok(lists[0].clone())
    });
    eprintln!("all three nodes listed identical part/ keys {took:.2?} after the heal");
    let m = as_map(&listing);
    for k in 0..N {
        assert_eq!(m[&format!("part/from1-{k}")].0, format!("a{k}"));
        assert_eq!(m[&format!("part/from3-{k}")].0, format!("c{k}"));
    }
    assert_eq!(m["part/before"].0, "0");
    assert_eq!(
        m["part/both"].0, winner,
        "the later write of part/both should win"
    );

    // And the mesh re-forms.
    let names: Vec<String> = (1..=3).map(|k| format!("n{k}")).collect();
    let took = h.wait_all_alive(&[0, 1, 2], &names, CONVERGE);
    eprintln!("every node saw all three alive again {took:.2?} after that");
}

// ----- 5 -----

#[test]
fn restart_keeps_acknowledged_state() {
    let mut h = Harness::new("restart");
    let a = h.start("solo", Opts::default());
    let mut want: BTreeMap<String, (String, String)> = BTreeMap::new();
    for k in 0..50 {
        let key = format!("keep/k{k:02}");
        let value = format!("value {k}");
        let v = written(
            h.agent(a).client().kv_put(&key, value.as_bytes()),
            &key,
            false,
        );
        want.insert(key, (value, v));
    }
    // An overwrite and a delete must survive as such.
    let v = written(
        h.agent(a).client().kv_put("keep/k07", b"seven again"),
        "keep/k07",
        false,
    );
    want.insert("keep/k07".into(), ("seven again".into(), v));
    written(
        h.agent(a).client().kv_put("keep/gone", b"x"),
        "keep/gone",
        false,
    );
    written(h.agent(a).client().kv_del("keep/gone"), "keep/gone", true);

    // SIGKILL right after the last acknowledgement.
    h.kill(a);
    h.restart(a);

    let agent: &Agent = h.agent(a);
    for (k, (value, version)) in &want {
        let r = agent
            .client()
            .kv_get(k)
            .unwrap_or_else(|e| panic!("{k} after the restart: {e}"));
        assert_eq!(r.value, value.as_bytes(), "{k} after the restart");
        assert_eq!(&r.version, version, "{k}'s version after the restart");
    }
    assert!(
        !has(agent, "keep/gone").unwrap(),
        "a deleted key came back after the restart"
    );
    let got = as_map(&listing(agent, "keep/").unwrap());
    assert_eq!(got, want, "the listing after the restart");
    // It still takes writes, with versions after the old ones.
    let v = written(
        agent.client().kv_put("keep/after", b"y"),
        "keep/after",
        false,
    );
    let newest = want.values().map(|(_, v)| version_order(v)).max().unwrap();
    assert!(
        version_order(&v) > newest,
        "a write after the restart got version {v}, not after {newest:?}"
    );
}
