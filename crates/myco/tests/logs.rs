//! Logs across the mesh with real agents: an instance running on node 2 is
//! read through node 1's API (`GET /v1/logs/JOB?instance=ID`), which asks
//! node 2 over the encrypted streams; `tail` bounds the answer, `follow`
//! streams lines written after the request, `myco logs --follow` does the
//! same through the CLI, and an unknown instance is 404.
//!
//! The workload prints numbered lines and a line on stderr at start, then
//! prints `poked N` whenever a `poke` file appears in its directory: the
//! test decides when a new line is written, so nothing waits on a clock.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{Agent, Harness, MYCO, cli, cli_args, ok, push_script_spore, s, wait_for};

const READY: Duration = Duration::from_secs(40);
const LINES: Duration = Duration::from_secs(20);

const TALKER: &str = r#"#!/bin/sh
i=1
while [ $i -le 50 ]; do echo "line $i"; i=$((i+1)); done
echo "oops" >&2
n=0
while true; do
  if [ -f poke ]; then n=$((n+1)); rm -f poke; echo "poked $n"; fi
  sleep 0.05
done
"#;

fn ready_ids(a: &Agent, job: &str) -> Result<Vec<String>, String> {
    let v: Value = a
        .anon()
        .get(&format!("/v1/instances?job={job}"))
        .map_err(|e| e.to_string())?;
    let list = match v {
        Value::Array(l) => l,
        Value::Object(m) => m
            .into_iter()
            .find_map(|(_, v)| v.as_array().cloned())
            .unwrap_or_default(),
        other => return Err(format!("not a listing: {other}")),
    };
    Ok(list
        .iter()
        .filter(|x| x["state"] == "ready")
        .filter_map(|x| x["id"].as_str().map(str::to_string))
        .collect())
}

/// A one-shot read of node `a`'s `/v1/logs`.
fn read_logs(
    a: &Agent,
    job: &str,
    instance: Option<&str>,
    tail: Option<u64>,
) -> Result<String, String> {
    let mut r = a
        .client()
        .logs(job, instance, false, tail)
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    r.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Lines from a reader, on a channel (a thread reads them).
fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line equal to `want`.
#[track_caller]
fn expect_line(rx: &mpsc::Receiver<String>, want: &str) {
    let deadline = std::time::Instant::now() + LINES;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l == want => return,
            Ok(l) => seen.push(l),
            Err(e) => panic!("no line {want:?} ({e}); saw {seen:?}"),
        }
    }
}

#[test]
fn logs_of_a_remote_instance_come_over_the_streams() {
    let mut h = Harness::new("logs-remote");
    h.mesh(2);
    push_script_spore(&h, h.agent(0), "talker", TALKER);
    let file = h.root.join("talker.toml");
    fs::write(
        &file,
        "name = \"talker\"\nspore = \"talker@1\"\ncount = 2\nstrategy = \"spread\"\n",
    )
    .unwrap();
    ok(
        &cli(h.agent(0), &["deploy", s(&file), "--detach"]),
        "myco deploy",
    );
    let (ids, _) = wait_for("2 ready instances", READY, || {
        let ids = ready_ids(h.agent(0), "talker")?;
        (ids.len() == 2)
            .then_some(ids.clone())
            .ok_or(format!("{ids:?}"))
    });
    // The instance whose directory is on node 2 runs there.
    let remote_dir = |id: &str| h.agent(1).dir.join("instances").join(id);
    let remote = ids
        .iter()
        .find(|id| remote_dir(id).is_dir())
        .expect("spread puts one instance on node 2")
        .clone();
    let local = ids.iter().find(|id| **id != remote).unwrap().clone();
    assert!(!h.agent(0).dir.join("instances").join(&remote).exists());

    // Node 1 answers for node 2's instance: all 50 lines and stderr.
    let (text, _) = wait_for("the remote instance's lines", LINES, || {
        let t = read_logs(h.agent(0), "talker", Some(&remote), Some(1000))?;
        t.contains("line 50\n").then_some(t.clone()).ok_or(t)
    });
    let want: String =
        (1..=50).map(|i| format!("line {i}\n")).collect::<String>() + "stderr: oops\n";
    assert_eq!(text, want, "the remote instance's whole log");

    // `tail` bounds each stream.
    let tail = read_logs(h.agent(0), "talker", Some(&remote), Some(3)).unwrap();
    assert_eq!(tail, "line 48\nline 49\nline 50\nstderr: oops\n");

    // Without `instance`: both, local and remote, each line labelled.
    let (all, _) = wait_for("both instances' lines", LINES, || {
        let t = read_logs(h.agent(0), "talker", None, Some(1))?;
        let both = [&remote, &local].iter().all(|id| {
            t.contains(&format!("[{id}] line 50\n"))
                && t.contains(&format!("[{id}] stderr: oops\n"))
        });
        both.then_some(t.clone()).ok_or(t)
    });
    assert_eq!(all.lines().count(), 4, "{all}");

    // Follow through the API: the tail, then a line printed afterwards.
    let stream = h
        .agent(0)
        .client()
        .logs("talker", Some(&remote), true, Some(1))
        .expect("follow the remote instance");
    let rx = lines_of(stream);
    expect_line(&rx, "stderr: oops");
    fs::write(remote_dir(&remote).join("poke"), "").unwrap();
    expect_line(&rx, "poked 1");

    // And through the CLI.
    let mut child = Command::new(MYCO)
        .args(cli_args(
            h.agent(0),
            &[
                "logs",
                "talker",
                "--instance",
                &remote,
                "--follow",
                "--tail",
                "1",
            ],
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("myco logs --follow");
    let cli_rx = lines_of(child.stdout.take().unwrap());
    expect_line(&cli_rx, "stderr: oops");
    fs::write(remote_dir(&remote).join("poke"), "").unwrap();
    expect_line(&cli_rx, "poked 2");
    // The API follower saw it too: it is still streaming.
    expect_line(&rx, "poked 2");
    child.kill().unwrap();
    child.wait().unwrap();

    // A job-wide follow takes in the instances a rollout starts.
    let stream = h
        .agent(0)
        .client()
        .logs("talker", None, true, Some(0))
        .expect("follow the job");
    let job_rx = lines_of(stream);
    ok(
        &cli(h.agent(0), &["job", "restart", "talker"]),
        "myco job restart",
    );
    let end = std::time::Instant::now() + READY;
    let newcomer = loop {
        let line = job_rx
            .recv_timeout(end.saturating_duration_since(std::time::Instant::now()))
            .expect("a line of an instance the rollout started");
        let id = line
            .strip_prefix('[')
            .and_then(|l| l.split_once("] "))
            .map(|(id, _)| id);
        if let Some(id) = id.filter(|id| *id != remote && *id != local) {
            break id.to_string();
        }
    };
    assert!(newcomer.starts_with("talker-"), "{newcomer}");

    // The job stopped, its records go and the followers' answers end.
    ok(
        &cli(h.agent(0), &["job", "stop", "talker"]),
        "myco job stop",
    );
    for rx in [rx, job_rx] {
        let end = std::time::Instant::now() + READY;
        loop {
            match rx.recv_timeout(end.saturating_duration_since(std::time::Instant::now())) {
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("a follower did not end after the job stopped: {e}"),
            }
        }
    }

    // An unknown instance: 404.
    let err = h
        .agent(0)
        .client()
        .logs("talker", Some("talker-9-v1-nowhere"), false, None)
        .err()
        .expect("an unknown instance is an error");
    assert!(
        matches!(err, myco_client::ClientError::Api { status: 404, .. }),
        "{err}"
    );
}
