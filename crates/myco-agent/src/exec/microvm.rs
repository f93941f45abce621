//! MicroVM instances (`driver = "microvm"`): the instance's process is a
//! QEMU booting the spore's kernel and initramfs, so everything the
//! executor does for a process (cgroup, log files, record, exit watching,
//! adoption, stop) holds for it unchanged. What differs is here:
//!
//! - [`MicroVmSupport::detect`]: whether this node can run them (`/dev/kvm`
//!   usable and a QEMU binary), reported in its manifest as the
//!   `myco.microvm` tag so placement sends microVM jobs only here.
//! - [`qemu_argv`]: the command line. `-M microvm` with KVM; under TCG
//!   (`MYCO_MICROVM=tcg`, for hosts whose KVM cannot boot a stock kernel)
//!   `-M q35`, because the microvm machine offers TCG guests no clock to
//!   calibrate against and they hang at boot. The serial console is QEMU's
//!   stdout (the instance's log); user-mode networking forwards the
//!   instance's `PORT` on every host address into the guest's same port;
//!   the environment goes on the kernel command line (unknown `KEY=VALUE`
//!   parameters become `/init`'s environment) and the spore's command after
//!   `--` (its arguments).
//! - A clean stop asks the guest through QMP ([`super::qmp::powerdown`],
//!   an ACPI power button press); the caller then waits `kill_timeout_ms`
//!   before the usual SIGTERM/SIGKILL. A `tcp` health check asks QMP too
//!   ([`super::qmp::guest_side`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use myco_proto::job::{JobSpec, MICROVM_TAG};
use myco_spore::MicroVm;

use super::ExecError;
use super::qmp::QMP_SOCKET;

/// Longest kernel command line x86 Linux takes (`COMMAND_LINE_SIZE`).
const MAX_CMDLINE: usize = 2048;
/// Environment variables Linux hands `/init` at most (`MAX_INIT_ENVS` is
/// 32; the kernel sets `HOME` and `TERM` itself).
const MAX_ENV: usize = 30;

/// How guests are accelerated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// KVM, with QEMU's `microvm` machine.
    Kvm,
    /// Emulation (TCG), with the `q35` machine and a 16 MiB translation
    /// cache: slow, for hosts without a KVM that boots stock kernels.
    Tcg,
}

/// Whether this node runs microVMs, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicroVmSupport {
    /// The QEMU binary and the acceleration, when it can.
    pub runner: Option<(PathBuf, Accel)>,
    /// Why it cannot, or what it uses.
    pub reason: String,
}

impl MicroVmSupport {
    /// No support, as nothing was detected (the default of a config
    /// built in code).
    pub fn undetected() -> MicroVmSupport {
        MicroVmSupport {
            runner: None,
            reason: "microVM support not detected".into(),
        }
    }

    /// [`MicroVmSupport::detect`] from `MYCO_MICROVM` and `MYCO_QEMU`.
    pub fn from_env() -> MicroVmSupport {
        Self::detect(
            std::env::var("MYCO_MICROVM").ok().as_deref(),
            std::env::var("MYCO_QEMU").ok().as_deref(),
        )
    }

    /// Detects support. `setting` is `MYCO_MICROVM`: `auto` (default: KVM
    /// when `/dev/kvm` opens read-write and QEMU is found), `off`, `kvm`
    /// or `tcg` (emulation, no KVM needed). `MYCO_QEMU` names the binary
    /// (default `qemu-system-x86_64` on `PATH`).
    pub fn detect(setting: Option<&str>, qemu: Option<&str>) -> MicroVmSupport {
        let none = |reason: String| MicroVmSupport {
            runner: None,
            reason,
        };
        let setting = setting.unwrap_or("auto");
        let accel = match setting {
            "off" => return none("disabled by MYCO_MICROVM=off".into()),
            "tcg" => Accel::Tcg,
            "auto" | "kvm" => Accel::Kvm,
            other => {
                return none(format!(
                    "MYCO_MICROVM={other:?} is not one of auto, off, kvm, tcg"
                ));
            }
        };
        let Some(bin) = find_executable(qemu.unwrap_or("qemu-system-x86_64")) else {
            return none("no QEMU: install qemu-system-x86 (or set MYCO_QEMU)".into());
        };
        if accel == Accel::Kvm
            && let Err(e) = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
        {
            return none(format!(
                "/dev/kvm cannot be opened read-write ({e}); run as root or in group kvm"
            ));
        }
        let reason = format!("{} with {accel:?}", bin.display());
        MicroVmSupport {
            runner: Some((bin, accel)),
            reason,
        }
    }

    /// The value of the manifest tag [`myco_proto::job::MICROVM_TAG`].
    pub fn tag(&self) -> Option<&'static str> {
        match self.runner {
            Some((_, Accel::Kvm)) => Some("qemu-kvm"),
            Some((_, Accel::Tcg)) => Some("qemu-tcg"),
            None => None,
        }
    }
}

/// Sets (or, when this node cannot, removes) the manifest tag that tells
/// placement this node runs microVMs, and logs why.
pub fn tag_manifest(tags: &mut BTreeMap<String, String>) {
    let support = MicroVmSupport::from_env();
    match support.tag() {
        Some(t) => {
            tags.insert(MICROVM_TAG.into(), t.into());
            tracing::info!(via = %support.reason, "this node runs microVM instances");
        }
        None => {
            tags.remove(MICROVM_TAG);
            tracing::info!(reason = %support.reason, "this node does not run microVM instances");
        }
    }
}

/// An executable by path, or by name on `PATH` (`/usr/bin:/bin` when
/// unset): QEMU here, and what `myco dev --microvm` and the microVM tests
/// look for (busybox).
pub fn find_executable(name: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return is_exec(Path::new(name)).then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_exec(p))
}

/// The newest kernel in `/boot` (`vmlinuz-*`, by name), for the Debian
/// guest recipe of `docs/microvm.md` (`myco dev --microvm`, the tests).
pub fn newest_host_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("/vmlinuz-"))
        .collect();
    kernels.sort_unstable();
    kernels.pop()
}

/// What one microVM boots and with what.
pub struct Boot<'a> {
    /// The spore's kernel and initramfs (paths in `dir`).
    pub vm: &'a MicroVm,
    /// The guest command and its arguments.
    pub argv: &'a [String],
    /// Environment for the guest's `/init` (`PORT`, `MYCO_*` included).
    pub env: &'a BTreeMap<String, String>,
    /// The job (`vcpus`, `memory_mb`).
    pub spec: &'a JobSpec,
    /// The instance's port, forwarded to the same port in the guest.
    pub port: u16,
}

/// The QEMU command line for `boot` with `support`'s binary.
pub fn qemu_argv(support: &MicroVmSupport, boot: &Boot<'_>) -> Result<Vec<String>, ExecError> {
    let Some((bin, accel)) = &support.runner else {
        return Err(ExecError::MicroVm(format!(
            "this node cannot run microVMs: {}",
            support.reason
        )));
    };
    let cmdline = kernel_cmdline(boot.env, boot.argv)?;
    let r = &boot.spec.resources;
    let (machine, accel_arg, nic) = match accel {
        Accel::Kvm => (
            "microvm,x-option-roms=off,rtc=on",
            "kvm",
            "virtio-net-device,netdev=n0",
        ),
        // TCG's translation cache defaults to 1 GiB of host memory: far
        // past the instance's cgroup limit, which then kills QEMU at boot.
        Accel::Tcg => ("q35", "tcg,tb-size=16", "virtio-net-pci,netdev=n0,romfile="),
    };
    let mut argv: Vec<String> = vec![bin.display().to_string()];
    let mut push = |a: &[&str]| argv.extend(a.iter().map(|s| s.to_string()));
    push(&["-M", machine, "-accel", accel_arg]);
    if *accel == Accel::Kvm {
        push(&["-cpu", "host"]);
    }
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-no-reboot",
        "-m",
        &r.memory_mb.to_string(),
        "-smp",
        &r.vcpus.to_string(),
        "-kernel",
        &boot.vm.kernel,
        "-initrd",
        &boot.vm.initrd,
        "-append",
        &cmdline,
        "-serial",
        "stdio",
        "-netdev",
        &format!("user,id=n0,hostfwd=tcp::{p}-:{p}", p = boot.port),
        "-device",
        nic,
        "-qmp",
        &format!("unix:{QMP_SOCKET},server=on,wait=off"),
    ]);
    Ok(argv)
}

/// `console=ttyS0 ... KEY="VALUE"... -- command args`, refusing what the
/// kernel would mangle or cut.
pub fn kernel_cmdline(
    env: &BTreeMap<String, String>,
    argv: &[String],
) -> Result<String, ExecError> {
    let bad = |why: String| Err(ExecError::MicroVm(why));
    if env.len() > MAX_ENV {
        return bad(format!(
            "{} environment variables; a microVM's /init gets at most {MAX_ENV} from the kernel command line",
            env.len()
        ));
    }
    let mut line = String::from("console=ttyS0 reboot=t panic=-1 quiet");
    for (k, v) in env {
        // A dotted key is a module parameter to the kernel, never env.
        let key_ok = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return bad(format!(
                "env {k:?}: a microVM's variable names are letters, digits and `_`"
            ));
        }
        line.push(' ');
        line.push_str(k);
        line.push('=');
        line.push_str(&quote(v).ok_or_else(|| value_error(k))?);
    }
    line.push_str(" --");
    for a in argv {
        line.push(' ');
        line.push_str(&quote(a).ok_or_else(|| value_error(a))?);
    }
    if line.len() >= MAX_CMDLINE {
        return bad(format!(
            "the kernel command line would be {} bytes; Linux takes {MAX_CMDLINE}: use fewer or shorter env values",
            line.len()
        ));
    }
    Ok(line)
}

fn value_error(what: &str) -> ExecError {
    ExecError::MicroVm(format!(
        "{what:?}: a value on a kernel command line cannot hold `\"` or control characters"
    ))
}

/// The kernel splits on spaces outside double quotes and has no escapes.
fn quote(v: &str) -> Option<String> {
    if v.contains('"') || v.chars().any(char::is_control) {
        return None;
    }
    if v.is_empty() || v.contains(' ') {
        Some(format!("\"{v}\""))
    } else {
        Some(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_and_args_go_on_the_kernel_command_line_quoted_or_refused() {
        let env: BTreeMap<String, String> = [
            ("PORT".to_string(), "21000".to_string()),
            ("GREETING".to_string(), "hello world".to_string()),
        ]
        .into();
        let argv = ["/bin/busybox".to_string(), "httpd".into(), "-p".into()];
        let line = kernel_cmdline(&env, &argv).unwrap();
        assert_eq!(
            line,
            "console=ttyS0 reboot=t panic=-1 quiet GREETING=\"hello world\" PORT=21000 -- /bin/busybox httpd -p"
        );
        let quoted: BTreeMap<String, String> = [("A".to_string(), "x\"y".to_string())].into();
        assert!(kernel_cmdline(&quoted, &argv).is_err());
        let dotted: BTreeMap<String, String> = [("a.b".to_string(), "1".to_string())].into();
        assert!(kernel_cmdline(&dotted, &argv).is_err());
        let many: BTreeMap<String, String> =
            (0..40).map(|i| (format!("K{i}"), "v".into())).collect();
        assert!(kernel_cmdline(&many, &argv).is_err());
        let long: BTreeMap<String, String> = [("K".to_string(), "v".repeat(3000))].into();
        assert!(kernel_cmdline(&long, &argv).is_err());
    }

    #[test]
    fn detection_says_why_a_node_cannot_run_microvms() {
        let off = MicroVmSupport::detect(Some("off"), None);
        assert_eq!(off.tag(), None);
        assert!(off.reason.contains("MYCO_MICROVM=off"));
        let missing = MicroVmSupport::detect(Some("tcg"), Some("/nonexistent/qemu"));
        assert_eq!(missing.tag(), None);
        assert!(missing.reason.contains("no QEMU"), "{}", missing.reason);
        let bad = MicroVmSupport::detect(Some("yes"), None);
        assert!(bad.reason.contains("not one of"));
        // Any executable stands in for QEMU under TCG (no /dev/kvm needed).
        let tcg = MicroVmSupport::detect(Some("tcg"), Some("/bin/sh"));
        assert_eq!(tcg.tag(), Some("qemu-tcg"));
    }

    #[test]
    fn kvm_boots_the_microvm_machine_and_forwards_the_port() {
        let support = MicroVmSupport {
            runner: Some(("/usr/bin/qemu-system-x86_64".into(), Accel::Kvm)),
            reason: String::new(),
        };
        let mut spec = JobSpec::from_toml("name = \"vm\"\nspore = \"vm@1\"\ndriver = \"microvm\"\n[resources]\nvcpus = 2\nmemory_mb = 96\n").unwrap();
        spec.env.clear();
        let vm = MicroVm {
            kernel: "vmlinuz".into(),
            initrd: "initrd.cpio".into(),
        };
        let env = BTreeMap::new();
        let argv = ["/init-cmd".to_string()];
        let boot = Boot {
            vm: &vm,
            argv: &argv,
            env: &env,
            spec: &spec,
            port: 21001,
        };
        let line = qemu_argv(&support, &boot).unwrap().join(" ");
        for part in [
            "-M microvm",
            "-accel kvm",
            "-m 96",
            "-smp 2",
            "-kernel vmlinuz",
            "-initrd initrd.cpio",
            "hostfwd=tcp::21001-:21001",
            "-serial stdio",
            "-qmp unix:.myco/qmp.sock",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        let none = MicroVmSupport {
            runner: None,
            reason: "no QEMU".into(),
        };
        assert!(qemu_argv(&none, &boot).is_err());
    }
}
