//! Helpers of the microVM end-to-end tests: what a boot needs (or why it
//! cannot run here), the smallest Debian-only guest
//! (`bench/microvm/guest.sh`), its spore, and the job.
//!
//! Needs `/dev/kvm`, `qemu-system-x86_64`, a kernel in `/boot` and
//! `busybox`; without them a test prints why and skips. Where KVM cannot
//! boot a stock kernel (nested KVM over PVM, as on some CI VMs), it skips
//! too, unless `MYCO_TEST_MICROVM=tcg` runs the guests under emulation
//! (slow: about a minute per boot on a loaded machine).

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{Agent, Harness, cli, myco, ok, ready_instances, s};
use myco_agent::exec::microvm::{find_executable, newest_host_kernel};

/// The guest's web root says this.
pub const GREETING: &str = "hello from a myco microVM";

/// The guest's command: busybox httpd on `PORT`, saying on its console
/// when it gets SIGTERM (the clean stop's proof) before it ends.
const SERVE: &str = "#!/bin/busybox sh\n\
trap 'echo \"serve: got SIGTERM\"; kill $child; wait $child; exit 0' TERM\n\
/bin/busybox httpd -f -v -p \"$PORT\" -h /www &\n\
child=$!\n\
wait $child\n";

/// What a boot needs here.
pub struct Env {
    /// `kvm` or `tcg`.
    pub accel: &'static str,
    pub kernel: PathBuf,
}

impl Env {
    /// How long a deploy may take to have its instances ready.
    pub fn ready_in(&self) -> Duration {
        if self.accel == "kvm" {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(400)
        }
    }
}

/// A guest built and shown to boot, on a harness whose agents run
/// microVMs; `None` (after printing why) where this machine cannot.
pub struct Setup {
    pub env: Env,
    pub h: Harness,
    pub root: PathBuf,
    pub init: PathBuf,
}

/// [`Setup`] for the test `name`, its instance ports from `ports`.
pub fn setup(name: &str, ports: &str) -> Option<Setup> {
    let env = match prerequisites() {
        Ok(e) => e,
        Err(why) => {
            println!("SKIPPED microvm boot test: {why}");
            return None;
        }
    };
    let mode = if env.accel == "tcg" { "tcg" } else { "auto" };
    let h = Harness::with_env(
        name,
        &[("MYCO_MICROVM", mode), ("MYCO_INSTANCE_PORTS", ports)],
    );
    let (root, init) = build_guest(&h, &env);
    if let Err(why) = boots_once_per_run(&env, &root, &init, &h.root) {
        println!("SKIPPED microvm boot test: {why}");
        return None;
    }
    Some(Setup { env, h, root, init })
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
        if find_executable(bin).is_none() {
            return Err(format!(
                "{bin} is not installed (apt-get install qemu-system-x86 busybox-static cpio)"
            ));
        }
    }
    let kernel = match std::env::var_os("MYCO_TEST_MICROVM_KERNEL") {
        Some(k) => PathBuf::from(k),
        None => newest_host_kernel()
            .ok_or("no kernel in /boot (apt-get install linux-image-cloud-amd64)")?,
    };
    if fs::File::open(&kernel).is_err() {
        return Err(format!("{} is not readable", kernel.display()));
    }
    Ok(Env { accel, kernel })
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
    fs::write(&serve, SERVE).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&serve, fs::Permissions::from_mode(0o755)).unwrap();
    (out.join("root"), out.join("init"))
}

/// [`boots`], except that a guest that did not boot under KVM is not
/// tried again by the other tests of the same `cargo test` run (the test
/// binaries share cargo as their parent): each try waits out the whole
/// boot limit, which was a minute of CI on a machine whose KVM cannot boot
/// stock kernels.
fn boots_once_per_run(env: &Env, root: &Path, init: &Path, dir: &Path) -> Result<(), String> {
    let verdict = std::env::temp_dir().join(format!(
        "myco-microvm-no-boot-{}-{}",
        env.accel,
        std::os::unix::process::parent_id()
    ));
    if env.accel == "kvm"
        && let Ok(why) = fs::read_to_string(&verdict)
    {
        return Err(format!("{why} (found by an earlier test of this run)"));
    }
    let tried = boots(env, root, init, dir);
    if let Err(why) = &tried
        && env.accel == "kvm"
    {
        let _ = fs::write(&verdict, why);
    }
    tried
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

/// Packs `root` (with `init`, booting `kernel`) as the microVM spore
/// `vm@version` and pushes it.
pub fn push_vm_spore(
    h: &Harness,
    a: &Agent,
    root: &Path,
    init: &Path,
    kernel: &Path,
    version: u32,
) {
    let key = publisher(h, a);
    let out = h.root.join(format!("vm-{version}.spore"));
    let version = version.to_string();
    let pack = [
        "spore",
        "pack",
        s(root),
        "--name",
        "vm",
        "--version",
        &version,
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

/// Deploys `count` instances of `vm@version`, stopped with `kill_ms` of
/// grace, health checked over HTTP.
pub fn deploy(h: &Harness, a: &Agent, version: u32, count: u32, kill_ms: u64) {
    deploy_checked(h, a, version, count, kill_ms, "http = \"/health\"");
}

/// [`deploy`] with the health check `check` (a line of `[health]`).
pub fn deploy_checked(h: &Harness, a: &Agent, version: u32, count: u32, kill_ms: u64, check: &str) {
    let file = h.root.join(format!("vm-{version}.toml"));
    let text = format!(
        "name = \"vm\"\nspore = \"vm@{version}\"\ncount = {count}\ndriver = \"microvm\"\n\
         kill_timeout_ms = {kill_ms}\n[resources]\nmemory_mb = 96\nvcpus = 1\n\
         [health]\n{check}\ninterval_ms = 500\ntimeout_ms = 1000\n"
    );
    fs::write(&file, text).unwrap();
    ok(&cli(a, &["deploy", s(&file), "--detach"]), "myco deploy");
}

/// Ready instances of `vm` as (id, node id).
pub fn ready(a: &Agent) -> Result<Vec<(String, String)>, String> {
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

pub fn edge_get(a: &Agent) -> Result<String, String> {
    myco_client::Client::new(&format!("http://127.0.0.1:{}", a.edge))
        .with_timeout(Duration::from_secs(5))
        .get_text("/vm/")
        .map_err(|e| e.to_string())
}

/// SIGKILLs every process working under `dir` (the node's QEMUs: a dead
/// machine takes its guests with it).
pub fn kill_under(dir: &Path) {
    for pid in crate::support::procs_in(dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The text of every instance console (`stdout.log`) under `dir` now.
pub fn consoles(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "stdout.log") {
                out.push_str(&fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    out
}
