//! Walking the payload (zstd-compressed tar): every entry is checked against
//! the rules in [`crate::entry`] and the [`Limits`], then handed to a visitor.

use std::cell::Cell;
use std::io::{self, Read};
use std::path::Path;
use std::rc::Rc;

use crate::Limits;
use crate::entry::{Kind, SafeEntry, Tree, check_symlink_target, normalize};
use crate::error::SporeError;

/// Largest zstd window accepted (2^23 = 8 MiB). The packer's level-3
/// streaming frames use 2 MiB; the bound keeps a hostile frame from making
/// the decoder allocate up to the library default of 128 MiB.
pub(crate) const WINDOW_LOG_MAX: u32 = 23;

/// Decompressed bytes allowed for one entry besides its data: its header,
/// padding, and GNU long-name or pax records, which the tar reader buffers
/// whole in memory, so they must not be allowed to grow with the payload.
const META_PER_ENTRY: u64 = 1 << 20;

/// How many decompressed bytes may be read so far. The limit is raised as
/// each entry is accepted, by that entry's declared size plus
/// [`META_PER_ENTRY`], and never beyond `total`.
struct Budget {
    used: Cell<u64>,
    limit: Cell<u64>,
    total: u64,
    exceeded: Cell<bool>,
}

impl Budget {
    fn allow(&self, entry_size: u64) {
        let next = self
            .used
            .get()
            .saturating_add(entry_size)
            .saturating_add(META_PER_ENTRY);
        self.limit.set(next.min(self.total));
    }
}

/// The decompressed stream, failing once the [`Budget`] is spent, so a
/// small payload cannot expand without bound (a "zip bomb").
struct BudgetReader<R> {
    inner: R,
    budget: Rc<Budget>,
}

impl<R: Read> Read for BudgetReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let b = &self.budget;
        let left = b.limit.get().saturating_sub(b.used.get());
        // Read one byte past the limit at most, to tell "exactly at" from "over".
        let max = buf
            .len()
            .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n as u64 > left {
            b.exceeded.set(true);
            return Err(io::Error::other("decompressed payload exceeds the limit"));
        }
        b.used.set(b.used.get() + n as u64);
        Ok(n)
    }
}

/// Called for each entry that passed the checks, with its data.
pub(crate) type Visit<'a> = dyn FnMut(&SafeEntry, &mut dyn Read) -> Result<(), SporeError> + 'a;

/// Decompresses and walks the payload; returns the archive's path tree.
pub(crate) fn walk(
    payload: impl Read,
    limits: &Limits,
    visit: &mut Visit<'_>,
) -> Result<Tree, SporeError> {
    let mut decoder = zstd::stream::read::Decoder::new(payload).map_err(bad_payload)?;
    decoder
        .window_log_max(WINDOW_LOG_MAX)
        .map_err(bad_payload)?;
    let budget = Rc::new(Budget {
        used: Cell::new(0),
        limit: Cell::new(META_PER_ENTRY),
        // Headers take at least 512 bytes per entry; allow some slack.
        total: limits
            .max_unpacked_bytes
            .saturating_add(limits.max_entries.saturating_mul(4096))
            .saturating_add(META_PER_ENTRY),
        exceeded: Cell::new(false),
    });
    let mut archive = tar::Archive::new(BudgetReader {
        inner: decoder,
        budget: Rc::clone(&budget),
    });
    let result = walk_entries(&mut archive, limits, &budget, visit);
    if budget.exceeded.get() {
        return Err(SporeError::TooLarge(format!(
            "the payload decompresses to more than its entries declare (over {} bytes)",
            budget.limit.get()
        )));
    }
    result
}

fn walk_entries<R: Read>(
    archive: &mut tar::Archive<R>,
    limits: &Limits,
    budget: &Budget,
    visit: &mut Visit<'_>,
) -> Result<Tree, SporeError> {
    let mut tree = Tree::default();
    let (mut count, mut bytes) = (0u64, 0u64);
    for entry in archive.entries().map_err(bad_payload)? {
        let mut entry = entry.map_err(bad_payload)?;
        count += 1;
        if count > limits.max_entries {
            return Err(SporeError::TooLarge(format!(
                "more than {} archive entries",
                limits.max_entries
            )));
        }
        // Checked against the header before any data is read.
        bytes = bytes.saturating_add(entry.size());
        if bytes > limits.max_unpacked_bytes {
            return Err(SporeError::TooLarge(format!(
                "more than {} unpacked bytes",
                limits.max_unpacked_bytes
            )));
        }
        budget.allow(entry.size());
        let Some(safe) = classify(&entry)? else {
            continue;
        };
        tree.add(&safe)
            .map_err(|why| SporeError::unsafe_entry(display(&safe.path), why))?;
        visit(&safe, &mut entry)?;
    }
    Ok(tree)
}

/// Checks one entry's type, path and link target. `None` is the root
/// directory (`./`), which carries nothing to extract.
fn classify<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Option<SafeEntry>, SporeError> {
    let raw = entry.path().map_err(bad_payload)?;
    let shown = display(&raw);
    let refuse = |why: &str| SporeError::unsafe_entry(shown.clone(), why);
    let path = normalize(&raw).map_err(refuse)?;
    let ty = entry.header().entry_type();
    let link = || -> Result<std::path::PathBuf, SporeError> {
        let target = entry.link_name().map_err(bad_payload)?;
        target
            .map(|t| t.into_owned())
            .ok_or_else(|| refuse("link without a target"))
    };
    let kind = match ty {
        tar::EntryType::Directory => Kind::Dir,
        tar::EntryType::Regular => Kind::File {
            mode: entry.header().mode().map_err(bad_payload)?,
        },
        tar::EntryType::Symlink => {
            let target = link()?;
            check_symlink_target(&path, &target).map_err(refuse)?;
            Kind::Symlink(target)
        }
        tar::EntryType::Link => {
            let target = normalize(&link()?).map_err(|why| refuse(&format!("hard link {why}")))?;
            Kind::Hardlink(target)
        }
        tar::EntryType::Char => return Err(refuse("character devices are not allowed")),
        tar::EntryType::Block => return Err(refuse("block devices are not allowed")),
        tar::EntryType::Fifo => return Err(refuse("fifos are not allowed")),
        other => return Err(refuse(&format!("entry type {other:?} is not allowed"))),
    };
    if path.as_os_str().is_empty() {
        return match kind {
            Kind::Dir => Ok(None),
            _ => Err(refuse("only a directory may have an empty path")),
        };
    }
    Ok(Some(SafeEntry { path, kind }))
}

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn bad_payload(e: io::Error) -> SporeError {
    SporeError::BadPayload(e.to_string())
}
