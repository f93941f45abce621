//! The microVM demo of `myco dev --microvm`: job `hello-vm`, one instance
//! of a guest built here with the Debian-only recipe of `docs/microvm.md`
//! (`bench/microvm/guest.sh`, compiled in: busybox-static, the host's
//! kernel from `/boot` and its virtio modules), serving a page with
//! busybox httpd. Built only when every part is on this host; otherwise
//! [`parts`] says what is missing and `myco dev` runs the process demo
//! alone.

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use myco_agent::exec::microvm::{MicroVmSupport, find_executable, newest_host_kernel};
use myco_client::Client;
use myco_proto::job::JobSpec;
use myco_spore::PackMeta;

/// The microVM demo job's name.
pub const JOB: &str = "hello-vm";
/// The recipe, the same script the docs and tests use.
const GUEST_SH: &str = include_str!("../../../../bench/microvm/guest.sh");
/// The guest's command: the page guest.sh writes, on `PORT`.
const SERVE: &str = "#!/bin/busybox sh\nexec /bin/busybox httpd -f -v -p \"$PORT\" -h /www\n";

/// What the demo guest is built from.
#[derive(Debug)]
pub struct Parts {
    kernel: PathBuf,
}

/// The parts on this host for `accel` (`kvm` or `tcg`), or every one
/// missing, each with how to get it.
pub fn parts(accel: &str) -> Result<Parts, Vec<String>> {
    let mut missing = Vec::new();
    let support = MicroVmSupport::detect(Some(accel), std::env::var("MYCO_QEMU").ok().as_deref());
    if support.tag().is_none() {
        missing.push(support.reason.clone());
    }
    match find_executable("busybox") {
        None => missing.push("busybox: apt-get install busybox-static".into()),
        Some(b) if !is_static(&b) => missing.push(format!(
            "{} is linked dynamically and cannot run alone in a guest: apt-get install busybox-static",
            b.display()
        )),
        Some(_) => {}
    }
    let kernel = newest_host_kernel();
    match &kernel {
        Some(k) if fs::File::open(k).is_err() => {
            missing.push(format!("{} is not readable by this user", k.display()))
        }
        None => missing.push("no kernel in /boot: apt-get install linux-image-cloud-amd64".into()),
        Some(_) => {}
    }
    match kernel {
        Some(kernel) if missing.is_empty() => Ok(Parts { kernel }),
        _ => Err(missing),
    }
}

/// Builds the guest under `dir`, packs and pushes its spore with `key`
/// and deploys the job; the job's name.
pub fn deploy(dir: &Path, parts: &Parts, key: &Path, client: &Client) -> anyhow::Result<String> {
    let work = dir.join("microvm-demo");
    fs::create_dir_all(&work)?;
    let st = Command::new("sh")
        .args(["-c", GUEST_SH, "guest.sh"])
        .arg(&work)
        .arg(&parts.kernel)
        .stdout(Stdio::null())
        .status()
        .context("running the guest recipe (sh)")?;
    if !st.success() {
        bail!("the guest recipe (bench/microvm/guest.sh) failed: {st}");
    }
    let root = work.join("root");
    let serve = root.join("serve");
    fs::write(&serve, SERVE)?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&serve, fs::Permissions::from_mode(0o755))?;
    }
    let out = dir.join("demo-hello-vm.spore");
    let mut meta = PackMeta {
        name: "demo-hello-vm".into(),
        version: myco_proto::MYCO_VERSION.into(),
        command: "/serve".into(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        ..PackMeta::default()
    };
    let staged =
        crate::spore_microvm::stage(&root, &parts.kernel, &work.join("init"), &out, &mut meta)?;
    let signing = myco_spore::read_signing_key(key)?;
    let mut file = BufWriter::new(fs::File::create(&out)?);
    myco_spore::pack(staged.dir(), meta, &signing, &mut file)
        .context("packing the microVM demo spore")?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    // A kernel makes it a 15 MB spore: more than the default timeout
    // allows on a loaded machine.
    let pushed = client
        .clone()
        .with_timeout(std::time::Duration::from_secs(120))
        .spore_push(fs::File::open(&out)?)
        .context("pushing the microVM demo spore")?;
    let spec = JobSpec::from_toml(&job_file(&pushed.digest))?;
    client
        .job_deploy(&spec)
        .context("deploying the microVM demo job")?;
    Ok(JOB.to_string())
}

/// `--microvm ACCEL`: the microVM demo job when this host has the parts,
/// else what is missing (the process demo runs either way).
pub fn deploy_if_possible(
    accel: &str,
    dir: &Path,
    publisher: &Path,
    n1: &Client,
) -> Option<String> {
    let parts = match parts(accel) {
        Ok(p) => p,
        Err(missing) => {
            println!("microVM demo not deployed; missing on this host:");
            for m in missing {
                println!("  - {m}");
            }
            return None;
        }
    };
    deploy(dir, &parts, publisher, n1)
        .map_err(|e| println!("microVM demo not deployed: {e:#}"))
        .ok()
}

fn job_file(digest: &str) -> String {
    format!(
        "name = \"{JOB}\"\nspore = \"{digest}\"\ncount = 1\ndriver = \"microvm\"\n\
         kill_timeout_ms = 15000\n[resources]\nvcpus = 1\nmemory_mb = 96\n\
         [health]\nhttp = \"/health\"\ninterval_ms = 1000\ntimeout_ms = 2000\n"
    )
}

/// Whether an ELF executable has no program interpreter (a static
/// binary, which runs in a guest with no libc).
fn is_static(path: &Path) -> bool {
    let Ok(b) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or_default()) as usize)
    };
    // 64-bit little-endian ELF only (x86-64 guests).
    if b.get(0..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(size), Some(num)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..num).all(|i| {
        let at = phoff + i * size;
        b.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_microvm_demo_job_file_is_a_microvm_job() {
        let d = format!("sha256:{}", "a".repeat(64));
        let spec = JobSpec::from_toml(&job_file(&d)).unwrap();
        assert_eq!(spec.driver, myco_proto::job::Driver::Microvm);
        assert_eq!((spec.count, spec.resources.memory_mb), (1, 96));
    }

    #[test]
    fn a_dynamic_executable_is_not_static() {
        // This test binary links libc dynamically; nothing is static here
        // but an ELF without PT_INTERP.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static(&me));
        assert!(!is_static(Path::new("/nonexistent")));
        if let Some(b) = find_executable("busybox") {
            println!("{}: static {}", b.display(), is_static(&b));
        }
    }
}
