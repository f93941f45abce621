//! MicroVM instances through their life, with real agents and QEMU guests
//! (gated like `microvm.rs`: skipped with the reason where no KVM boots
//! the guest, run under emulation with `MYCO_TEST_MICROVM=tcg`):
//!
//! - a stop is clean: the agent presses the guest's ACPI power button, the
//!   guest's init sends the workload SIGTERM, waits for it and powers off,
//!   well before the kill timeout;
//! - a `tcp` health check passes only once the guest listens, not when
//!   QEMU's user-mode network accepts the connection for it (at once);
//! - `myco job restart` replaces the instances one by one and a deploy of
//!   a new version rolls forward, while a client loop through the edge
//!   sees every request answered.

mod edge_util;
mod microvm_util;
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use edge_util::load::Load;
use microvm_util::{
    GREETING, Setup, consoles, deploy, deploy_checked, edge_get, push_vm_spore, ready, setup,
};
use serde_json::Value;
use support::{Agent, cli, ok, procs_in, wait_for};

/// Long enough that a stop which waits for it cannot pass for clean.
const KILL_TIMEOUT_MS: u64 = 120_000;

#[test]
fn a_tcp_checked_microvm_is_ready_once_its_guest_listens_and_stops_before_the_kill_timeout() {
    let Some(Setup {
        env,
        mut h,
        root,
        init,
    }) = setup("microvm-stop", "26100-26199")
    else {
        return;
    };
    h.mesh(1);
    let a = h.agent(0);
    push_vm_spore(&h, a, &root, &init, &env.kernel, 1);
    deploy_checked(&h, a, 1, 1, KILL_TIMEOUT_MS, "tcp = true");
    // Ready only once the guest's server listens: it starts after the
    // console line, and the edge answers from it.
    let console_then = wait_for("1 ready microVM instance", env.ready_in(), || {
        let r = ready(a)?;
        if r.len() == 1 {
            Ok(consoles(&a.dir))
        } else {
            Err(format!("{r:?}"))
        }
    })
    .0;
    assert!(
        console_then.contains("myco guest: up"),
        "ready before the guest was up: {console_then}"
    );
    let body = wait_for("the edge to answer", Duration::from_secs(20), || {
        edge_get(a)
    })
    .0;
    assert!(body.contains(GREETING), "{body}");
    assert!(!procs_in(&a.dir).is_empty(), "QEMU runs under the data dir");
    let t0 = Instant::now();
    ok(&cli(a, &["job", "stop", "vm"]), "myco job stop");
    // The instance directory (its console with it) goes once QEMU is
    // gone: keep the newest text seen.
    let mut console = String::new();
    wait_for(
        "QEMU to exit",
        Duration::from_millis(KILL_TIMEOUT_MS - 10_000),
        || {
            let now = consoles(&a.dir);
            if now.len() >= console.len() {
                console = now;
            }
            let left = procs_in(&a.dir);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    let took = t0.elapsed();
    println!("microVM stopped in {took:?} ({})", env.accel);
    assert!(
        took < Duration::from_millis(KILL_TIMEOUT_MS / 2),
        "stopped only after {took:?}: the guest ignored the power button"
    );
    for line in ["myco guest: power button", "serve: got SIGTERM"] {
        assert!(
            console.contains(line),
            "{line:?} not on the console: {console}"
        );
    }
}

/// Versions of the ready instances of `vm`, and their ids.
fn ready_versions(a: &Agent) -> Result<(BTreeSet<u64>, BTreeSet<String>), String> {
    let v: Value = a
        .anon()
        .get("/v1/instances?job=vm")
        .map_err(|e| e.to_string())?;
    let ready: Vec<&Value> = (v.as_array().into_iter().flatten())
        .filter(|x| x["state"] == "ready")
        .collect();
    let versions = ready.iter().filter_map(|x| x["version"].as_u64()).collect();
    let ids = (ready.iter())
        .filter_map(|x| x["id"].as_str().map(str::to_string))
        .collect();
    Ok((versions, ids))
}

/// Waits until exactly `count` instances are ready, all at a version above
/// `above`, and no other instance of the job is left; returns that version.
fn rolled(a: &Agent, count: usize, above: u64, within: Duration) -> u64 {
    wait_for("the new version ready, the old gone", within, || {
        let v: Value = a
            .anon()
            .get("/v1/instances?job=vm")
            .map_err(|e| e.to_string())?;
        let all: Vec<(String, u64)> = (v.as_array().into_iter().flatten())
            .map(|x| {
                let state = x["state"].as_str().unwrap_or("?").to_string();
                (state, x["version"].as_u64().unwrap_or(0))
            })
            .collect();
        let done = all.len() == count && all.iter().all(|(s, n)| s == "ready" && *n > above);
        match all.first() {
            Some((_, n)) if done => Ok(*n),
            _ => Err(format!("{all:?}")),
        }
    })
    .0
}

#[test]
fn a_microvm_job_restarts_one_by_one_and_rolls_out_with_the_edge_answering() {
    let Some(Setup {
        env,
        mut h,
        root,
        init,
    }) = setup("microvm-ops", "26200-26299")
    else {
        return;
    };
    h.mesh(2);
    let a = h.agent(0);
    push_vm_spore(&h, a, &root, &init, &env.kernel, 1);
    fs::write(root.join("www/index.html"), "version 2 of the microVM\n").unwrap();
    push_vm_spore(&h, a, &root, &init, &env.kernel, 2);
    deploy(&h, a, 1, 2, 30_000);
    let (v1, first) = wait_for("2 ready microVM instances", env.ready_in(), || {
        let (v, ids) = ready_versions(a)?;
        if ids.len() == 2 {
            Ok((v, ids))
        } else {
            Err(format!("{ids:?}"))
        }
    })
    .0;
    let v1 = *v1.iter().next().unwrap();
    let load = Load::start(a.edge, "/vm/", 1);
    wait_for("the loop answered", Duration::from_secs(30), || {
        if load.count() > 5 {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    });

    let t0 = Instant::now();
    ok(&cli(a, &["job", "restart", "vm"]), "myco job restart");
    // One by one: a ready instance all the way through.
    let within = env.ready_in() * 2;
    let deadline = Instant::now() + within;
    let mut fewest = usize::MAX;
    let restarted = loop {
        if let Ok((versions, ids)) = ready_versions(a) {
            fewest = fewest.min(ids.len());
            assert!(!ids.is_empty(), "no ready instance during the restart");
            if ids.len() == 2 && ids.is_disjoint(&first) && versions.iter().all(|v| *v > v1) {
                break *versions.iter().next().unwrap();
            }
        }
        assert!(Instant::now() < deadline, "restart not done in {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("fewest ready instances during the restart: {fewest}");
    let restart_took = t0.elapsed();

    let t1 = Instant::now();
    deploy(&h, a, 2, 2, 30_000);
    rolled(a, 2, restarted, within);
    let rollout_took = t1.elapsed();
    wait_for(
        "the edge answering from version 2",
        Duration::from_secs(30),
        || {
            let body = edge_get(a)?;
            if body.contains("version 2") {
                Ok(())
            } else {
                Err(body)
            }
        },
    );
    let n = load.count();
    wait_for("the loop past the rollout", Duration::from_secs(30), || {
        if load.count() > n + 5 {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    });
    let all = load.stop();
    let failed: Vec<_> = all.iter().filter(|o| !o.ok()).collect();
    let bodies: BTreeSet<String> = (all.iter())
        .filter_map(|o| o.result.as_ref().ok().map(|(_, b)| b.trim().to_string()))
        .collect();
    println!(
        "microVM restart {restart_took:?}, rollout {rollout_took:?} ({}); {} requests through the edge, {} failed",
        env.accel,
        all.len(),
        failed.len()
    );
    assert!(bodies.iter().any(|b| b.contains(GREETING)), "{bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("version 2")), "{bodies:?}");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(5)]
    );
}
