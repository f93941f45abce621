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

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Agent, Harness, cli, myco, ok, ready_instances, s, wait_for};

/// The guest's web root says this.
const GREETING: &str = "hello from a myco microVM";

struct Env {
    /// `kvm` or `tcg`.
    accel: &'static str,
    kernel: PathBuf,
}

/// What the boot test needs, or why it cannot run here.
fn prerequisites() -> Result<Env, String> {
    let mode = std::env::var("MYCO_TEST_MICROVM").unwrap_or_default();
    if mode == "off" {
        return Err("MYCO_TEST_MICROVM=off".into());
    }
    let accel = if mode == "tcg" { "tcg" } else { "kvm" };
    if accel == "kvm" && !Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm is absent (no KVM on this machine)".into());
    }
    for bin in ["qemu-system-x86_64", "busybox", "cpio"] {
        if !on_path(bin) {
            return Err(format!(
                "{bin} is not installed (apt-get install qemu-system-x86 busybox-static cpio)"
            ));
        }
    }
    let kernel = match std::env::var_os("MYCO_TEST_MICROVM_KERNEL") {
        Some(k) => PathBuf::from(k),
        None => {
            let mut ks: Vec<PathBuf> = fs::read_dir("/boot")
                .map_err(|e| format!("/boot: {e}"))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("vmlinuz-"))
                .collect();
            ks.sort();
            ks.pop()
                .ok_or("no kernel in /boot (apt-get install linux-image-cloud-amd64)".to_string())?
        }
    };
    if fs::File::open(&kernel).is_err() {
        return Err(format!("{} is not readable", kernel.display()));
    }
    Ok(Env { accel, kernel })
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// Builds the guest root and init with `bench/microvm/guest.sh`, adds the
/// `serve` command; returns (root dir, init).
fn build_guest(h: &Harness, env: &Env) -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/microvm/guest.sh");
    let out = h.root.join("guest");
    fs::create_dir_all(&out).unwrap();
    let st = Command::new("sh")
        .arg(&script)
        .arg(&out)
        .arg(&env.kernel)
        .stdout(Stdio::null())
        .status()
        .expect("running guest.sh");
    assert!(st.success(), "guest.sh failed");
    let serve = out.join("root/serve");
    fs::write(
        &serve,
        "#!/bin/busybox sh\nexec /bin/busybox httpd -f -v -p \"$PORT\" -h /www\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&serve, fs::Permissions::from_mode(0o755)).unwrap();
    (out.join("root"), out.join("init"))
}

/// Boots the guest once with QEMU directly: where KVM cannot boot a stock
/// kernel, the agents could not either, and the test skips.
fn boots(env: &Env, root: &Path, init: &Path, dir: &Path) -> Result<(), String> {
    let initrd = dir.join("preflight.cpio");
    let mut f = fs::File::create(&initrd).unwrap();
    myco_spore::write_initramfs(Some(root), init, &mut f).unwrap();
    let machine = if env.accel == "kvm" { "microvm" } else { "q35" };
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-M", machine, "-accel", env.accel, "-m", "96"])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&env.kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet -- /bin/busybox true",
        ])
        .args(["-serial", "stdio"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("qemu: {e}"))?;
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("myco guest: up") {
                let _ = tx.send(());
                return;
            }
        }
    });
    let limit = if env.accel == "kvm" { 30 } else { 240 };
    let up = rx.recv_timeout(Duration::from_secs(limit)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    if up {
        Ok(())
    } else {
        Err(format!(
            "/dev/kvm is present but the guest did not boot under {} within {limit} s \
             (a nested KVM that cannot run stock kernels?); MYCO_TEST_MICROVM=tcg runs it emulated",
            env.accel
        ))
    }
}

/// A publisher key trusted on `a`, made on first use.
fn publisher(h: &Harness, a: &Agent) -> PathBuf {
    let key = h.root.join("publisher.key");
    if !key.exists() {
        ok(&myco(&["key", "gen", "--out", s(&key)]), "myco key gen");
        let pubkey = PathBuf::from(format!("{}.pub", key.display()));
        ok(&cli(a, &["trust", "add", s(&pubkey)]), "myco trust add");
    }
    key
}

/// Packs and pushes the microVM spore `vm@1`.
fn push_vm_spore(h: &Harness, a: &Agent, root: &Path, init: &Path, kernel: &Path) {
    let key = publisher(h, a);
    let out = h.root.join("vm.spore");
    let pack = [
        "spore",
        "pack",
        s(root),
        "--name",
        "vm",
        "--version",
        "1",
        "--cmd",
        "/serve",
        "--microvm-kernel",
        s(kernel),
        "--microvm-init",
        s(init),
        "--key",
        s(&key),
        "--out",
        s(&out),
    ];
    ok(&myco(&pack), "myco spore pack --microvm-kernel");
    // The kernel makes it a 15 MB spore: more than the CLI's timeout
    // allows on a loaded machine, so the client gets a longer one.
    let file = fs::File::open(&out).unwrap();
    a.client()
        .clone()
        .with_timeout(Duration::from_secs(180))
        .spore_push(file)
        .expect("pushing the microVM spore");
}

fn deploy(h: &Harness, a: &Agent) {
    let file = h.root.join("vm.toml");
    let text = "name = \"vm\"\nspore = \"vm@1\"\ncount = 2\ndriver = \"microvm\"\n\
                kill_timeout_ms = 2000\n[resources]\nmemory_mb = 96\nvcpus = 1\n\
                [health]\nhttp = \"/health\"\ninterval_ms = 500\ntimeout_ms = 1000\n";
    fs::write(&file, text).unwrap();
    ok(&cli(a, &["deploy", s(&file), "--detach"]), "myco deploy");
}

/// Ready instances of `vm` as (id, node id).
fn ready(a: &Agent) -> Result<Vec<(String, String)>, String> {
    Ok(ready_instances(a, "vm")?
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap_or("").into(),
                x["node"].as_str().unwrap_or("").into(),
            )
        })
        .collect())
}

fn edge_get(a: &Agent) -> Result<String, String> {
    myco_client::Client::new(&format!("http://127.0.0.1:{}", a.edge))
        .with_timeout(Duration::from_secs(5))
        .get_text("/vm/")
        .map_err(|e| e.to_string())
}

/// SIGKILLs every process working under `dir` (the node's QEMUs: a dead
/// machine takes its guests with it).
fn kill_under(dir: &Path) {
    for p in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fs::read_link(p.path().join("cwd")).is_ok_and(|c| c.starts_with(dir)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn microvm_job_answers_through_the_edge_logs_its_console_and_fails_over() {
    let env = match prerequisites() {
        Ok(e) => e,
        Err(why) => {
            println!("SKIPPED microvm boot test: {why}");
            return;
        }
    };
    let mode = if env.accel == "tcg" { "tcg" } else { "auto" };
    let mut h = Harness::with_env(
        "microvm",
        &[
            ("MYCO_MICROVM", mode),
            ("MYCO_INSTANCE_PORTS", "25000-25999"),
        ],
    );
    let (root, init) = build_guest(&h, &env);
    if let Err(why) = boots(&env, &root, &init, &h.root) {
        println!("SKIPPED microvm boot test: {why}");
        return;
    }
    let ready_in = if env.accel == "kvm" {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(400)
    };
    h.mesh(3);
    let a = h.agent(0);
    push_vm_spore(&h, a, &root, &init, &env.kernel);
    deploy(&h, a);
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
    push_vm_spore(&h, a, &src, &h.root.join("init"), &h.root.join("vmlinuz"));
    deploy(&h, a);
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
