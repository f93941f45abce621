//! MicroVM instances end to end, with real agents and real QEMU guests:
//! a `driver = "microvm"` job with count 2 on a 3-node mesh answers
//! through the edge; the guest's console shows in `myco logs`; SIGKILL of
//! a node running one (its QEMU killed with it, as when the machine dies)
//! has it ready on another node. And, on any machine: where no node can
//! run microVMs, the job stays pending with that reason.
//!
//! The guest is the smallest Debian-only one (`bench/microvm/guest.sh`:
//! busybox-static, the installed kernel and its virtio modules); its
//! command serves `/www` with busybox httpd on `PORT`.
//!
//! Needs `/dev/kvm`, `qemu-system-x86_64`, a kernel in `/boot` and
//! `busybox`; without them the boot test prints why and skips. Where KVM
//! cannot boot a stock kernel (nested KVM over PVM, as on some CI VMs), it
//! skips too, unless `MYCO_TEST_MICROVM=tcg` runs the guests under
//! emulation (slow: about a minute per boot on a loaded machine).

mod microvm_util;
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use microvm_util::{GREETING, deploy, edge_get, kill_under, push_vm_spore, ready, setup};
use serde_json::Value;
use support::{Harness, cli, wait_for};

#[test]
fn microvm_job_answers_through_the_edge_logs_its_console_and_fails_over() {
    let Some(microvm_util::Setup {
        env,
        mut h,
        root,
        init,
    }) = setup("microvm", "25000-25999")
    else {
        return;
    };
    let ready_in = env.ready_in();
    h.mesh(3);
    let a = h.agent(0);
    push_vm_spore(&h, a, &root, &init, &env.kernel, 1);
    deploy(&h, a, 1, 2, 2000);
    let t0 = Instant::now();
    let first = wait_for("2 ready microVM instances", ready_in, || {
        let r = ready(a)?;
        if r.len() == 2 {
            Ok(r)
        } else {
            Err(format!("{r:?}"))
        }
    })
    .0;
    println!(
        "2 microVMs ready {:?} after the deploy ({})",
        t0.elapsed(),
        env.accel
    );
    let nodes: BTreeSet<&str> = first.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        nodes.len(),
        2,
        "spread puts the two on two nodes: {first:?}"
    );

    let body = wait_for("the edge to answer from a guest", ready_in, || edge_get(a)).0;
    assert!(body.contains(GREETING), "{body}");

    let logs = wait_for(
        "the guest console in myco logs",
        Duration::from_secs(20),
        || {
            let out = cli(a, &["logs", "vm"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("myco guest: up") {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .0;
    assert!(logs.contains("job vm"), "the guest saw MYCO_JOB: {logs}");

    // SIGKILL a node running one (not n1, which the test talks to).
    let ids: Vec<String> = (0..3)
        .map(|i| {
            h.agent(i)
                .client()
                .status()
                .map(|s| s.node.id)
                .unwrap_or_default()
        })
        .collect();
    let victim = (1..3)
        .find(|&i| nodes.contains(ids[i].as_str()))
        .expect("one of n2, n3 runs a microVM");
    let victim_dir = h.agent(victim).dir.clone();
    h.kill(victim);
    kill_under(&victim_dir);
    let dead = ids[victim].clone();
    let t1 = Instant::now();
    let a = h.agent(0);
    let moved = wait_for(
        "the microVM ready on another node",
        ready_in + Duration::from_secs(20),
        || {
            let r = ready(a)?;
            let live = r.iter().filter(|(_, n)| *n != dead).count();
            if live == 2 {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .0;
    println!("failed over in {:?}: {moved:?}", t1.elapsed());
    let body = wait_for("the edge after failover", Duration::from_secs(20), || {
        edge_get(a)
    })
    .0;
    assert!(body.contains(GREETING), "{body}");
}

#[test]
fn a_microvm_job_stays_pending_where_no_node_runs_microvms() {
    let mut h = Harness::with_env("microvm-none", &[("MYCO_MICROVM", "off")]);
    h.mesh(2);
    let a = h.agent(0);
    // The spore need not boot: nothing may start it.
    let src = h.root.join("vm-src");
    fs::create_dir_all(&src).unwrap();
    fs::write(h.root.join("vmlinuz"), b"not a kernel").unwrap();
    fs::write(h.root.join("init"), b"#!/bin/sh\n").unwrap();
    push_vm_spore(
        &h,
        a,
        &src,
        &h.root.join("init"),
        &h.root.join("vmlinuz"),
        1,
    );
    deploy(&h, a, 1, 2, 2000);
    let why = wait_for(
        "the job pending with the reason",
        Duration::from_secs(20),
        || {
            let v: Value = a.anon().get("/v1/jobs/vm").map_err(|e| e.to_string())?;
            let reason = v["pending"][0]["reason"].as_str().unwrap_or("").to_string();
            if reason.contains("microvm") {
                Ok(reason)
            } else {
                Err(v.to_string())
            }
        },
    )
    .0;
    assert_eq!(
        why,
        "no node can hold it: 2 cannot run microvm instances (no KVM or no QEMU)"
    );
    let nodes: Value = a.anon().get("/v1/nodes").unwrap();
    assert!(!nodes.to_string().contains("myco.microvm"), "{nodes}");
}
