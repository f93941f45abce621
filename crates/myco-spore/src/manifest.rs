//! The signed manifest: what the spore is and how to run it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::FORMAT_VERSION;

/// The manifest stored (as canonical JSON) in every spore.
///
/// Unknown fields are accepted and ignored so that newer packers can add
/// optional information without breaking older readers; a change that older
/// readers must not ignore bumps `format`, which readers refuse when unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format; always [`FORMAT_VERSION`] (1).
    pub format: u32,
    /// Workload name: 1–64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
    pub name: String,
    /// Workload version: 1–64 of `[A-Za-z0-9._+-]`, not starting with `.` or `-`.
    pub version: String,
    /// Program to run: a path relative to the payload root (which must be a
    /// file in the payload) or an absolute path on the node.
    pub command: String,
    /// Arguments passed to `command`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables set for the process (sorted, hence deterministic).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Resources the workload asks for.
    #[serde(default)]
    pub resources: Resources,
    /// How to check that the workload is healthy, if at all.
    #[serde(default)]
    pub health: Option<Health>,
    /// Present on a microVM spore: the payload holds a kernel and an
    /// initramfs, `command` and `args` are what the guest's `/init` runs
    /// (after `--` on the kernel command line). Absent (and not written)
    /// on a process spore, so those keep their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub microvm: Option<MicroVm>,
    /// Creation time, unix seconds, as given by the packer's caller.
    pub created_at: u64,
    /// Lowercase hex SHA-256 of the compressed payload bytes.
    pub payload_sha256: String,
    /// Size in bytes of the compressed payload.
    pub payload_size: u64,
    /// Lowercase hex of the publisher's Ed25519 public key (32 bytes).
    pub publisher: String,
}

/// What a microVM spore boots: paths in the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MicroVm {
    /// The guest kernel (a `bzImage`, e.g. Debian's `/boot/vmlinuz-*`).
    pub kernel: String,
    /// The root file system, an initramfs (cpio) with `/init`.
    pub initrd: String,
}

/// Resources requested by a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core (default 100).
    #[serde(default = "default_cpu_milli")]
    pub cpu_milli: u32,
    /// Memory in MiB (default 128).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
}

fn default_cpu_milli() -> u32 {
    100
}
fn default_memory_mb() -> u32 {
    128
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu_milli: default_cpu_milli(),
            memory_mb: default_memory_mb(),
        }
    }
}

/// Health check for a workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// HTTP path to GET (e.g. `/healthz`); healthy on a 2xx answer.
    #[serde(default)]
    pub http: Option<String>,
    /// Healthy when the workload's port accepts a TCP connection.
    #[serde(default)]
    pub tcp: Option<bool>,
    /// Interval between checks in milliseconds (default 1000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
}

fn default_interval_ms() -> u64 {
    1000
}

impl Manifest {
    /// Canonical JSON bytes: fields in declaration order, maps sorted, no
    /// whitespace. Only reproducibility depends on this — verification checks
    /// the exact bytes present in the file.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        // Serializing plain structs, strings and BTreeMaps cannot fail.
        serde_json::to_vec(self).expect("manifest serialization is infallible")
    }

    /// Checks the fields' syntax; returns a human-readable reason on failure.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT_VERSION {
            return Err(format!(
                "manifest format {} is not supported (expected {FORMAT_VERSION}); upgrade myco",
                self.format
            ));
        }
        check_label("name", &self.name, "._-")?;
        check_label("version", &self.version, "._+-")?;
        if self.command.is_empty() || self.command.contains('\0') {
            return Err("command must be a non-empty path".into());
        }
        if !is_lower_hex(&self.payload_sha256, 64) {
            return Err("payload_sha256 must be 64 lowercase hex characters".into());
        }
        if !is_lower_hex(&self.publisher, 64) {
            return Err("publisher must be 64 lowercase hex characters".into());
        }
        if let Some(vm) = &self.microvm {
            for (what, path) in [
                ("microvm.kernel", &vm.kernel),
                ("microvm.initrd", &vm.initrd),
            ] {
                let rel = std::path::Path::new(path);
                let plain = rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if path.is_empty() || !plain {
                    return Err(format!("{what} must be a relative path in the payload"));
                }
            }
            if !self.command.starts_with('/') {
                return Err(
                    "a microVM spore's command is a path in the guest, starting with `/`".into(),
                );
            }
        }
        if let Some(h) = &self.health {
            if h.interval_ms == 0 {
                return Err("health.interval_ms must be positive".into());
            }
            if let Some(p) = &h.http
                && !p.starts_with('/')
            {
                return Err("health.http must be a path starting with `/`".into());
            }
        }
        Ok(())
    }
}

/// Names and versions end up in file names, URLs and metric labels, so keep
/// them to a conservative character set.
fn check_label(field: &str, value: &str, extra: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || extra.contains(c);
    if value.is_empty() || value.len() > 64 {
        return Err(format!("{field} must be 1 to 64 characters"));
    }
    if !value.chars().all(ok_char) || value.starts_with(['.', '-']) {
        return Err(format!(
            "{field} `{value}` may only contain letters, digits and `{extra}`, and not start with `.` or `-`"
        ));
    }
    Ok(())
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
