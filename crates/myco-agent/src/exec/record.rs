//! The instance record: what an agent restarted after a crash needs to
//! find its instances again and never mistake a reused pid for one of them.
//!
//! `DATA_DIR/instances/<id>/.myco/record.json` is written once, atomically
//! (temp file, fsync, rename), right after the process starts, and never
//! rewritten while it runs: an idle node writes nothing. A process is ours
//! when its pid, its start time (`/proc/PID/stat` field 22) and the boot id
//! all match the record.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ExecError, instance_dir, procfs};

/// The record format version; readers refuse others.
pub const RECORD_FORMAT: u32 = 1;
/// The record's file name inside the instance's `.myco` directory.
pub const RECORD_FILE: &str = "record.json";
/// Most instance directories [`scan`] looks at.
pub const MAX_SCAN: usize = 10_000;
/// Largest record file read.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// One instance, as recorded on disk (its own versioned format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Always [`RECORD_FORMAT`].
    pub format: u32,
    /// Instance id (also its directory name).
    pub instance: String,
    /// Job name.
    pub job: String,
    /// Slot of the instance within its job.
    pub slot: u32,
    /// Job version the instance runs.
    pub version: String,
    /// Spore digest it runs.
    pub digest: String,
    /// Process id of the session leader (also its process group id).
    pub pid: u32,
    /// Its start time in clock ticks after boot.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` when it started.
    pub boot_id: String,
    /// The port it was given.
    pub port: u16,
    /// Its cgroup, if it has one.
    pub cgroup: Option<CgroupRecord>,
    /// Wall-clock start, Unix milliseconds (for display only).
    pub started_at_ms: u64,
}

/// An instance cgroup as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRecord {
    /// 1 or 2.
    pub version: u8,
    /// One directory per hierarchy.
    pub dirs: Vec<CgroupDirRecord>,
}

/// One directory of an instance cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupDirRecord {
    /// The cgroup directory.
    pub path: PathBuf,
    /// Controllers of its hierarchy that are used.
    pub controllers: Vec<String>,
}

/// What became of a recorded process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Running, and it is ours (pid, start time and boot id match).
    Alive,
    /// Exited (or the machine rebooted since).
    Gone,
    /// The pid now belongs to another process: ours is gone.
    PidReused,
}

/// One instance directory found by [`scan`].
#[derive(Debug)]
pub struct Found {
    /// The instance directory.
    pub dir: PathBuf,
    /// Its record, or why it could not be read.
    pub record: Result<InstanceRecord, ExecError>,
    /// What became of its process (`Gone` when the record is unreadable).
    pub liveness: Liveness,
}

/// Where an instance's record lives.
pub fn record_path(instance_dir: &Path) -> PathBuf {
    instance_dir::meta_dir(instance_dir).join(RECORD_FILE)
}

/// Writes the record atomically (0600).
pub fn write(instance_dir: &Path, record: &InstanceRecord) -> Result<(), ExecError> {
    let path = record_path(instance_dir);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(record).expect("a record always encodes");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(ExecError::io("writing the instance record", &tmp))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(ExecError::io("writing the instance record", &tmp))?;
    fs::rename(&tmp, &path).map_err(ExecError::io("renaming the instance record", &path))?;
    if let Some(dir) = path.parent() {
        // The rename is durable only once the directory is.
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Reads and checks an instance's record.
pub fn read(instance_dir: &Path) -> Result<InstanceRecord, ExecError> {
    let path = record_path(instance_dir);
    let bad = |reason: String| ExecError::BadRecord {
        path: path.clone(),
        reason,
    };
    let file =
        fs::File::open(&path).map_err(ExecError::io("reading the instance record", &path))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_RECORD_BYTES {
        return Err(bad(format!("{len} bytes, more than {MAX_RECORD_BYTES}")));
    }
    let record: InstanceRecord =
        serde_json::from_reader(std::io::BufReader::new(file)).map_err(|e| bad(e.to_string()))?;
    if record.format != RECORD_FORMAT {
        return Err(bad(format!(
            "format {} (this agent reads {RECORD_FORMAT}); upgrade the agent",
            record.format
        )));
    }
    Ok(record)
}

/// Whether the recorded process still runs and is ours.
pub fn liveness(record: &InstanceRecord) -> Liveness {
    liveness_of(record.pid, record.start_time, &record.boot_id)
}

/// Whether `boot_id` is this boot's.
pub fn same_boot(boot_id: &str) -> bool {
    procfs::boot_id().ok().as_deref() == Some(boot_id)
}

/// [`liveness`] from its parts.
pub fn liveness_of(pid: u32, start_time: u64, boot_id: &str) -> Liveness {
    if procfs::boot_id().ok().as_deref() != Some(boot_id) {
        return Liveness::Gone;
    }
    match procfs::stat(pid) {
        Ok(Some(s)) if s.start_time != start_time => Liveness::PidReused,
        Ok(Some(s)) if s.is_zombie() => Liveness::Gone,
        Ok(Some(_)) => Liveness::Alive,
        // Unreadable /proc: assume alive rather than start a duplicate.
        Err(_) => Liveness::Alive,
        Ok(None) => Liveness::Gone,
    }
}

/// Finds every instance directory under `DATA_DIR/instances` (at most
/// [`MAX_SCAN`], in name order) and reports what became of each.
pub fn scan(data_dir: &Path) -> Vec<Found> {
    let root = instance_dir::instances_root(data_dir);
    let Ok(entries) = fs::read_dir(&root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort_unstable();
    dirs.truncate(MAX_SCAN);
    dirs.into_iter()
        .map(|dir| {
            let record = read(&dir);
            let liveness = record.as_ref().map_or(Liveness::Gone, liveness);
            Found {
                dir,
                record,
                liveness,
            }
        })
        .collect()
}
