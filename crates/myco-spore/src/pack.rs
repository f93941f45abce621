//! Writing spores. The payload is streamed (source → tar → zstd → temporary
//! file, hashed on the way) because its digest goes into the manifest, which
//! precedes it in the file.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::SigningKey;

use crate::FORMAT_VERSION;
use crate::container::write_head;
use crate::entry::{Kind, SafeEntry, Tree, check_symlink_target};
use crate::error::PackError;
use crate::hashio::{ExactReader, HashingWriter, SIZE_CHANGED, digest_string};
use crate::manifest::{Health, Manifest, MicroVm, Resources};

/// zstd level: fast enough for large payloads. Not part of the format.
const ZSTD_LEVEL: i32 = 3;

/// What to put in the manifest; the packer adds the payload digest, size
/// and publisher.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackMeta {
    /// Workload name (see [`Manifest::name`]).
    pub name: String,
    /// Workload version (see [`Manifest::version`]).
    pub version: String,
    /// Program to run: relative to the payload root, or absolute.
    pub command: String,
    /// Arguments for `command`.
    pub args: Vec<String>,
    /// Environment for the process.
    pub env: BTreeMap<String, String>,
    /// Requested resources.
    pub resources: Resources,
    /// Optional health check.
    pub health: Option<Health>,
    /// Set for a microVM spore: the kernel and initramfs in `src`.
    pub microvm: Option<MicroVm>,
    /// Creation time in unix seconds; passed in so packing is reproducible.
    pub created_at: u64,
}

/// The result of [`pack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// `sha256:<hex>` of the whole spore written.
    pub digest: String,
    /// Bytes written.
    pub size: u64,
    /// The signed manifest.
    pub manifest: Manifest,
}

/// Packs `src` (a file, or a directory's contents) into a spore signed with
/// `key`, written to `out`.
///
/// The output depends only on the inputs: entries are sorted by name, and
/// their mtimes, owners and modes are normalized (0755 if any execute bit
/// is set, else 0644; directories 0755). Symlinks are kept only if they stay
/// inside `src` (under the rules verification applies); device files,
/// fifos and sockets are refused.
pub fn pack(
    src: &Path,
    meta: PackMeta,
    key: &SigningKey,
    out: &mut impl Write,
) -> Result<PackInfo, PackError> {
    let mut manifest = Manifest {
        format: FORMAT_VERSION,
        name: meta.name,
        version: meta.version,
        command: meta.command,
        args: meta.args,
        env: meta.env,
        resources: meta.resources,
        health: meta.health,
        microvm: meta.microvm,
        created_at: meta.created_at,
        // Placeholder, so the metadata is validated before compressing.
        payload_sha256: "0".repeat(64),
        payload_size: 0,
        publisher: hex::encode(key.verifying_key().as_bytes()),
    };
    manifest.validate().map_err(PackError::BadMeta)?;
    let sources = collect(src)?;
    let mut tree = Tree::default();
    for s in &sources {
        tree.add(&s.entry)
            .map_err(|why| unsafe_source(&s.abs, why))?;
    }
    if let Some(vm) = &manifest.microvm {
        for path in [&vm.kernel, &vm.initrd] {
            if !tree.has_command(path) {
                return Err(PackError::BadMeta(format!(
                    "microVM file `{path}` is not a file in {}",
                    src.display()
                )));
            }
        }
    } else if !manifest.command.starts_with('/') && !tree.has_command(&manifest.command) {
        return Err(PackError::BadMeta(format!(
            "command `{}` is not a file in {}",
            manifest.command,
            src.display()
        )));
    }

    let mut tmp = TempFile::create()?;
    let hashed = HashingWriter::new(BufWriter::new(&mut tmp.file));
    let mut builder = tar::Builder::new(zstd::stream::write::Encoder::new(hashed, ZSTD_LEVEL)?);
    for s in &sources {
        append(&mut builder, s)?;
    }
    let HashingWriter {
        inner,
        hasher,
        count,
    } = builder.into_inner()?.finish()?;
    inner.into_inner().map_err(io::IntoInnerError::into_error)?;
    manifest.payload_size = count;
    manifest.payload_sha256 = hex::encode(sha2::Digest::finalize(hasher));

    tmp.file.seek(SeekFrom::Start(0))?;
    let (digest, size) = seal(&manifest, key, &mut tmp.file, out)?;
    Ok(PackInfo {
        digest,
        size,
        manifest,
    })
}

/// Writes header, signed manifest and `payload` (which must match the
/// manifest's `payload_size`); returns the file digest and size.
pub(crate) fn seal(
    manifest: &Manifest,
    key: &SigningKey,
    payload: &mut impl Read,
    out: &mut impl Write,
) -> io::Result<(String, u64)> {
    let mut w = HashingWriter::new(BufWriter::new(out));
    write_head(&mut w, &manifest.to_canonical_json(), key)?;
    let copied = io::copy(payload, &mut w)?;
    if copied != manifest.payload_size {
        return Err(io::Error::other("payload size changed while packing"));
    }
    w.flush()?;
    Ok((digest_string(w.hasher), w.count))
}

/// A source path and the entry it becomes.
struct Source {
    abs: PathBuf,
    entry: SafeEntry,
    size: u64,
}

fn collect(src: &Path) -> Result<Vec<Source>, PackError> {
    // The root itself may be a symlink: the user named it explicitly.
    let meta = fs::metadata(src)?;
    let mut out = Vec::new();
    if meta.is_dir() {
        collect_dir(src, Path::new(""), &mut out)?;
    } else if meta.is_file() {
        let name = src
            .file_name()
            .ok_or_else(|| unsafe_source(src, "has no file name"))?;
        out.push(source(src.to_path_buf(), PathBuf::from(name), &meta)?);
    } else {
        return Err(unsafe_source(src, "is neither a file nor a directory"));
    }
    Ok(out)
}

fn collect_dir(dir: &Path, rel: &Path, out: &mut Vec<Source>) -> Result<(), PackError> {
    let mut names: Vec<_> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort_unstable();
    for name in names {
        let (abs, rel) = (dir.join(&name), rel.join(&name));
        let meta = fs::symlink_metadata(&abs)?;
        let is_dir = meta.is_dir();
        out.push(source(abs.clone(), rel.clone(), &meta)?);
        if is_dir {
            collect_dir(&abs, &rel, out)?;
        }
    }
    Ok(())
}

fn source(abs: PathBuf, rel: PathBuf, meta: &fs::Metadata) -> Result<Source, PackError> {
    let ty = meta.file_type();
    let kind = if ty.is_dir() {
        Kind::Dir
    } else if ty.is_file() {
        let exec = meta.permissions().mode() & 0o111 != 0;
        Kind::File {
            mode: if exec { 0o755 } else { 0o644 },
        }
    } else if ty.is_symlink() {
        let target = fs::read_link(&abs)?;
        check_symlink_target(&rel, &target).map_err(|why| unsafe_source(&abs, why))?;
        Kind::Symlink(target)
    } else {
        return Err(unsafe_source(
            &abs,
            "device files, fifos and sockets cannot be packed",
        ));
    };
    let size = if ty.is_file() { meta.len() } else { 0 };
    Ok(Source {
        abs,
        entry: SafeEntry { path: rel, kind },
        size,
    })
}

fn append(builder: &mut tar::Builder<impl Write>, s: &Source) -> Result<(), PackError> {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    let path = &s.entry.path;
    match &s.entry.kind {
        Kind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            builder.append_data(&mut h, path, io::empty())?;
        }
        Kind::File { mode } => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(*mode);
            h.set_size(s.size);
            let data = ExactReader {
                inner: File::open(&s.abs)?,
                left: s.size,
            };
            builder.append_data(&mut h, path, data).map_err(|e| {
                if e.get_ref().is_some_and(|i| i.to_string() == SIZE_CHANGED) {
                    PackError::SourceChanged(s.abs.clone())
                } else {
                    e.into()
                }
            })?;
        }
        Kind::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            builder.append_link(&mut h, path, target)?;
        }
        Kind::Hardlink(_) => unreachable!("the packer never creates hard links"),
    }
    Ok(())
}

fn unsafe_source(path: &Path, why: &str) -> PackError {
    PackError::UnsafeSource {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// A private temporary file for the payload, removed when dropped. Named
/// from the pid and a counter (the crate draws no randomness); `create_new`
/// makes a clash or a planted symlink an error instead of a hijack.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn create() -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".myco-spore-{}-{n}.payload", std::process::id()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => return Ok(TempFile { path, file }),
                // A leftover from a crashed process with the same pid: skip it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1_000_000 => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
