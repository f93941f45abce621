//! Figures for BENCHMARKS.md (ignored by default; run with
//! `cargo test -p myco-agent --test jobs_measure -- --ignored --nocapture`):
//! the agent's resident memory per running instance, and the bytes the
//! agent writes while 50 healthy instances run and nothing changes.

mod jobs_util;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use jobs_util::{agent, data_dir, wait_for};
use myco_proto::instance::InstanceState;

const SLEEP: &str = "#!/bin/sh\nexec sleep 100000\n";
const COUNT: usize = 50;
const IDLE: Duration = Duration::from_secs(60);

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

/// Files under `dir` modified after `t`.
fn modified_after(dir: &std::path::Path, t: SystemTime) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            out.extend(modified_after(&p, t));
        } else if m.modified().is_ok_and(|m| m > t) {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: takes over a minute"]
async fn fifty_instances_cost_little_memory_and_write_nothing_when_idle() {
    let dir = data_dir("measure");
    let a = agent(&dir, 33000..=33199).await;
    let digest = a.spore("tiny", SLEEP).await;
    // Warm up the runtime's paths with one instance, then measure 50.
    let job = a
        .deploy(
            "name = \"tiny\"\nspore = \"x@1\"\ncount = 1\n[resources]\nmemory_mb = 1\ncpu_milli = 1\n",
            &digest,
        )
        .await;
    wait_for("1 ready", || {
        (a.shared().by_state().get(&InstanceState::Ready) == Some(&1)).then_some(())
    })
    .await;
    let rss_before = rss_kib();
    let mut spec = job.spec.clone();
    spec.count = COUNT as u32;
    let next = job.next(spec, &digest, 2).unwrap();
    let mut next = next;
    // Same version's instances stay: only the count changes.
    next.version = job.version;
    a.put_job(&next).await;
    let started = Instant::now();
    wait_for("50 ready records", || {
        let ready = a
            .instances("tiny")
            .iter()
            .filter(|r| r.state == InstanceState::Ready)
            .count();
        (ready == COUNT).then_some(())
    })
    .await;
    let to_ready = started.elapsed();
    let rss_after = rss_kib();
    let per = (rss_after.saturating_sub(rss_before)) as f64 / (COUNT - 1) as f64;
    println!(
        "50 instances ready {to_ready:?} after the scale; agent RSS {rss_before} KiB with 1 -> {rss_after} KiB with {COUNT}: {per:.0} KiB per instance (debug build, test process)"
    );
    let records = a.shared().stats.records_written.load(Ordering::Relaxed);

    // Idle: nothing changes for a minute.
    let t0 = SystemTime::now();
    let w0 = write_bytes();
    tokio::time::sleep(IDLE).await;
    let written = write_bytes() - w0;
    let touched = modified_after(&dir, t0);
    // After the idle minute the blocking threads that unpacked and spawned
    // have exited: the steady state.
    let rss_idle = rss_kib();
    let per_idle = (rss_idle.saturating_sub(rss_before)) as f64 / (COUNT - 1) as f64;
    println!(
        "after the idle minute: agent RSS {rss_idle} KiB: {per_idle:.0} KiB per instance over the 1-instance figure"
    );
    let records_idle = a.shared().stats.records_written.load(Ordering::Relaxed) - records;
    println!(
        "idle {IDLE:?} with {COUNT} ready instances: {written} bytes written (/proc/self/io write_bytes), {} files modified, {records_idle} instance records written",
        touched.len()
    );
    assert_eq!(records_idle, 0, "an idle node writes no instance record");
    assert!(touched.is_empty(), "files written while idle: {touched:?}");
    assert_eq!(written, 0, "bytes written while idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn deploy_of_three_until_ready() {
    let dir = data_dir("measure-deploy");
    let mut a = agent(&dir, 33200..=33299).await;
    // The agent's own settle period, not the tests' short one.
    a.settle = myco_core::jobs::reconcile::DEFAULT_SETTLE;
    a.stop_runtime().await;
    a.start_runtime().await;
    let digest = a.spore("tiny", SLEEP).await;
    let started = Instant::now();
    a.deploy("name = \"three\"\nspore = \"x@1\"\ncount = 3\n", &digest)
        .await;
    wait_for("3 ready records", || {
        let ready = a
            .instances("three")
            .iter()
            .filter(|r| r.state == InstanceState::Ready)
            .count();
        (ready == 3).then_some(())
    })
    .await;
    println!(
        "deploy of 3 (spore present, settle {:?}) -> 3 ready records: {:?}",
        a.settle,
        started.elapsed()
    );
}
