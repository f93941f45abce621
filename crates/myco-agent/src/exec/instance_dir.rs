//! Where an instance lives on disk, like Nomad's allocation directories:
//!
//! ```text
//! DATA_DIR/instances/<id>/          working directory: the unpacked spore
//! DATA_DIR/instances/<id>/.myco/    the agent's files for it (0700):
//!     record.json, spore (digest), stdout.log[.1,.2], stderr.log[...]
//! DATA_DIR/volumes/<job>/<name>/    survives instances of the job (0700)
//! ```
//!
//! The spore's payload may not use `.myco` at its root.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use myco_spore::{Limits, Verified, VerifyingKey};

use super::{ExecError, check_name};

/// The agent's directory inside an instance directory.
pub const META_DIR: &str = ".myco";
/// The file in [`META_DIR`] naming the spore unpacked there.
const SPORE_FILE: &str = "spore";

/// `DATA_DIR/instances`.
pub fn instances_root(data_dir: &Path) -> PathBuf {
    data_dir.join("instances")
}

/// `DATA_DIR/instances/<id>`, once `id` is known to be a safe name.
pub fn instance_dir(data_dir: &Path, id: &str) -> Result<PathBuf, ExecError> {
    check_name("instance id", id)?;
    Ok(instances_root(data_dir).join(id))
}

/// The agent's own files of an instance.
pub fn meta_dir(instance_dir: &Path) -> PathBuf {
    instance_dir.join(META_DIR)
}

/// An instance directory ready to run.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The working directory.
    pub dir: PathBuf,
    /// The spore's verified manifest and digest.
    pub verified: Verified,
    /// True when an earlier unpack of the same spore was kept (a restart
    /// in place), false when freshly unpacked.
    pub reused: bool,
}

/// Verifies the spore at `spore` (already in the local store) and unpacks
/// it into the instance's directory. A directory left by an earlier run of
/// the same instance with the same spore is kept (with its logs); one with
/// another spore, or a half-made one, is replaced.
pub fn prepare(
    data_dir: &Path,
    id: &str,
    spore: &Path,
    trusted: &[VerifyingKey],
    limits: &Limits,
) -> Result<Prepared, ExecError> {
    let dir = instance_dir(data_dir, id)?;
    let root = instances_root(data_dir);
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&root)
        .map_err(ExecError::io("creating the instances directory", &root))?;
    let meta = meta_dir(&dir);
    if dir.exists() {
        let had = fs::read_to_string(meta.join(SPORE_FILE)).unwrap_or_default();
        // Verifying again costs a read of the spore but guards against a
        // store file swapped since: what runs is always what was verified.
        let verified = myco_spore::verify(
            fs::File::open(spore).map_err(ExecError::io("opening the spore", spore))?,
            trusted,
            limits,
        )?;
        if had.trim() == verified.digest {
            return Ok(Prepared {
                dir,
                verified,
                reused: true,
            });
        }
        fs::remove_dir_all(&dir).map_err(ExecError::io("removing a stale instance dir", &dir))?;
    }
    let verified = myco_spore::extract(spore, &dir, trusted, limits)?;
    if meta.exists() {
        let _ = fs::remove_dir_all(&dir);
        return Err(ExecError::ReservedName);
    }
    let made = DirBuilder::new()
        .mode(0o700)
        .create(&meta)
        .and_then(|()| fs::write(meta.join(SPORE_FILE), &verified.digest));
    if let Err(e) = made {
        let _ = fs::remove_dir_all(&dir);
        return Err(ExecError::io("creating the instance's .myco dir", &meta)(e));
    }
    Ok(Prepared {
        dir,
        verified,
        reused: false,
    })
}

/// Makes the `.myco` directory of an instance directory the caller made
/// itself (no spore: tests, or a command that is an absolute path).
pub fn prepare_bare(data_dir: &Path, id: &str) -> Result<PathBuf, ExecError> {
    let dir = instance_dir(data_dir, id)?;
    let meta = meta_dir(&dir);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&meta)
        .map_err(ExecError::io("creating the instance dir", &meta))?;
    Ok(dir)
}

/// `DATA_DIR/volumes/<job>/<name>`, created 0700 if missing; it outlives
/// every instance of the job on this node.
pub fn volume(data_dir: &Path, job: &str, name: &str) -> Result<PathBuf, ExecError> {
    check_name("job name", job)?;
    check_name("volume name", name)?;
    let dir = data_dir.join("volumes").join(job).join(name);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(ExecError::io("creating a volume", &dir))?;
    Ok(dir)
}

/// Deletes everything of a stopped instance's directory but its logs
/// (`.myco/*.log`): its files, the unpacked spore, and the record that
/// would have a restarted agent look for its process.
pub fn remove_all_but_logs(data_dir: &Path, id: &str) -> Result<(), ExecError> {
    let dir = instance_dir(data_dir, id)?;
    let meta = meta_dir(&dir);
    let keep = |p: &Path| p == meta || super::logs::is_log_file(p);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e.flatten().map(|e| e.path()).collect::<Vec<_>>(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ExecError::io("reading an instance dir", &dir)(e)),
    };
    let metas = fs::read_dir(&meta)
        .map(|m| m.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for p in entries.into_iter().chain(metas) {
        if keep(&p) {
            continue;
        }
        let gone = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            Ok(_) => fs::remove_file(&p),
            Err(e) => Err(e),
        };
        if let Err(e) = gone
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(ExecError::io("removing an instance's files", &p)(e));
        }
    }
    Ok(())
}

/// Deletes a stopped instance's directory (its logs go with it).
pub fn remove(data_dir: &Path, id: &str) -> Result<(), ExecError> {
    let dir = instance_dir(data_dir, id)?;
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ExecError::io("removing an instance dir", &dir)(e))
        }
        _ => Ok(()),
    }
}
