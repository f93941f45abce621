//! Rules every archive entry must follow, shared by the packer (so it never
//! writes what verification would refuse), the verifier and the extractor.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// What an archive entry is, after its path and target passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A regular file with the mode bits from the archive.
    File { mode: u32 },
    /// A directory.
    Dir,
    /// A symbolic link whose target stays inside the spore.
    Symlink(PathBuf),
    /// A hard link to a regular file earlier in the archive (root-relative).
    Hardlink(PathBuf),
}

/// A checked entry: `path` is relative, normalized and non-empty.
#[derive(Debug, Clone)]
pub(crate) struct SafeEntry {
    pub path: PathBuf,
    pub kind: Kind,
}

/// Normalizes an archive path: drops `.`, refuses `..` and absolute paths.
/// The result may be empty (the root directory itself).
pub(crate) fn normalize(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("path is absolute"),
        }
    }
    Ok(out)
}

/// A symlink at `entry` (normalized, non-empty) may point to `target` only
/// if the target is relative, its leading `..`s do not climb above the
/// spore root, and no `..` follows a name. The last rule matters because a
/// name may itself be a symlink (possibly one appearing later in the
/// archive), making a purely lexical `a/..` check unsound; with it, every
/// link resolves inside the root by induction over the links it traverses.
pub(crate) fn check_symlink_target(entry: &Path, target: &Path) -> Result<(), &'static str> {
    let depth = entry.components().count().saturating_sub(1);
    let (mut ups, mut named) = (0usize, false);
    if target.as_os_str().is_empty() {
        return Err("symlink has an empty target");
    }
    for c in target.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(_) => named = true,
            Component::ParentDir if named => {
                return Err(
                    "symlink target has `..` after a name, which may escape through another symlink",
                );
            }
            Component::ParentDir => {
                ups += 1;
                if ups > depth {
                    return Err("symlink points outside the spore");
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("symlink points to an absolute path");
            }
        }
    }
    Ok(())
}

/// What has been seen at a path so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Dir,
    File,
    Symlink,
}

/// The set of paths in an archive, used to refuse duplicates, entries below
/// a symlink or a file, and hard links to anything but an earlier file.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    seen: HashMap<PathBuf, Seen>,
}

impl Tree {
    /// Records `entry`, refusing it if it conflicts with earlier entries.
    pub fn add(&mut self, entry: &SafeEntry) -> Result<(), &'static str> {
        let parents: Vec<&Path> = entry.path.ancestors().skip(1).collect();
        // Shortest first, so a symlink high up is reported rather than its children.
        for parent in parents
            .into_iter()
            .rev()
            .filter(|p| !p.as_os_str().is_empty())
        {
            match self.seen.get(parent) {
                None => {
                    self.seen.insert(parent.to_path_buf(), Seen::Dir);
                }
                Some(Seen::Dir) => {}
                Some(Seen::Symlink) => return Err("a parent directory is a symlink"),
                Some(Seen::File) => return Err("a parent directory is a file"),
            }
        }
        let now = match &entry.kind {
            Kind::Dir => Seen::Dir,
            Kind::File { .. } => Seen::File,
            Kind::Symlink(_) => Seen::Symlink,
            Kind::Hardlink(target) => {
                if self.seen.get(target) != Some(&Seen::File) {
                    return Err("hard link target is not a regular file earlier in the archive");
                }
                Seen::File
            }
        };
        match self.seen.get(&entry.path) {
            None => {
                self.seen.insert(entry.path.clone(), now);
                Ok(())
            }
            Some(Seen::Dir) if now == Seen::Dir => Ok(()),
            Some(_) => Err("duplicate entry"),
        }
    }

    /// Whether a relative `command` names a file or symlink in the archive.
    pub fn has_command(&self, command: &str) -> bool {
        normalize(Path::new(command))
            .is_ok_and(|p| matches!(self.seen.get(&p), Some(Seen::File | Seen::Symlink)))
    }
}
