//! Safe extraction: verify first, then unpack in a second pass over the
//! same file, never following a symlink inside the destination.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::VerifyingKey;

use crate::entry::{Kind, SafeEntry};
use crate::error::SporeError;
use crate::verify::{Limits, Verified, check};

/// Verifies the spore at `spore` (as [`verify`](crate::verify) does) and
/// extracts its payload into `dest`, which must not exist yet.
///
/// Files keep their executable bits but lose setuid/setgid/sticky and
/// group/other write (`mode & 0o755`); directories are 0755. On any error
/// `dest` is removed, so a partial or unverified tree is never left behind.
pub fn extract(
    spore: &Path,
    dest: &Path,
    trusted: &[VerifyingKey],
    limits: &Limits,
) -> Result<Verified, SporeError> {
    let mut file = File::open(spore)?;
    // Nothing is written before the whole file is known to be good.
    let verified = check(&mut file, trusted, limits, &mut |_, _| Ok(()))?;
    file.seek(SeekFrom::Start(0))?;
    DirBuilder::new().mode(0o755).create(dest)?;
    // The second pass re-checks everything; if the file changed since the
    // first one its digest differs and the extracted tree is discarded.
    let result = check(&mut file, trusted, limits, &mut |entry, data| {
        write_entry(dest, entry, data)
    })
    .and_then(|again| {
        if again.digest == verified.digest {
            Ok(verified)
        } else {
            Err(SporeError::PayloadDigestMismatch)
        }
    });
    if result.is_err() {
        // Best effort: the error being returned matters more than this one.
        let _ = fs::remove_dir_all(dest);
    }
    result
}

fn write_entry(dest: &Path, entry: &SafeEntry, data: &mut dyn Read) -> Result<(), SporeError> {
    make_parents(dest, entry)?;
    let full = dest.join(&entry.path);
    match &entry.kind {
        Kind::Dir => match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(not_a_dir(entry)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Ok(DirBuilder::new().mode(0o755).create(&full)?)
            }
            Err(e) => Err(e.into()),
        },
        Kind::File { mode } => {
            // create_new (O_EXCL) fails on any existing path, including a
            // symlink, so writing can never be redirected outside `dest`.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&full)?;
            io::copy(data, &mut f)?;
            f.set_permissions(Permissions::from_mode(mode & 0o755))?;
            Ok(())
        }
        Kind::Symlink(target) => Ok(std::os::unix::fs::symlink(target, &full)?),
        Kind::Hardlink(target) => {
            let original = dest.join(target);
            // Already guaranteed by the archive checks; re-checked on disk.
            if !fs::symlink_metadata(&original)?.is_file() {
                return Err(SporeError::unsafe_entry(
                    entry.path.to_string_lossy(),
                    "hard link target is not a regular file",
                ));
            }
            Ok(fs::hard_link(&original, &full)?)
        }
    }
}

/// Creates missing parents of `entry` one level at a time, refusing any
/// existing component that is not a real directory (e.g. a symlink).
fn make_parents(dest: &Path, entry: &SafeEntry) -> Result<(), SporeError> {
    let parents: Vec<&Path> = entry.path.ancestors().skip(1).collect();
    for parent in parents
        .into_iter()
        .rev()
        .filter(|p| !p.as_os_str().is_empty())
    {
        let full = dest.join(parent);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(not_a_dir(entry)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                DirBuilder::new().mode(0o755).create(&full)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn not_a_dir(entry: &SafeEntry) -> SporeError {
    SporeError::unsafe_entry(
        entry.path.to_string_lossy(),
        "a path component is not a directory",
    )
}

#[cfg(test)]
mod tests {
    //! The on-disk defences, independent of the archive checks.
    use super::*;
    use crate::tests::TempDir;

    fn file(path: &str) -> SafeEntry {
        SafeEntry {
            path: path.into(),
            kind: Kind::File { mode: 0o644 },
        }
    }

    #[test]
    fn never_writes_through_an_existing_symlink() {
        let dir = TempDir::new();
        let (dest, outside) = (dir.join("dest"), dir.join("outside"));
        fs::create_dir(&dest).unwrap();
        fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), dest.join("dangling")).unwrap();

        let mut data: &[u8] = b"evil";
        assert!(write_entry(&dest, &file("link/f"), &mut data).is_err());
        assert!(write_entry(&dest, &file("dangling"), &mut data).is_err());
        assert!(write_entry(&dest, &file("link"), &mut data).is_err());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

        write_entry(&dest, &file("ok/f"), &mut data).unwrap();
        assert_eq!(fs::read(dest.join("ok/f")).unwrap(), b"evil");
    }
}
