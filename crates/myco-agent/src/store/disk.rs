//! The store's file: one redb table, `changes`, of records encoded by
//! [`myco_proto::store_record`] (kept there, with no I/O, so the fuzz
//! targets decode them without building the agent), and opening it back
//! with damage handled.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use myco_proto::store_record::{DecodeError, DiskRecord, decode_key};
use myco_proto::{Change, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::{error, warn};

use super::{Recovery, StoreError};

/// The one table: encoded key -> encoded record.
pub(super) const CHANGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("changes");
/// The state is small and read once at start; redb's 1 GiB default cache
/// would only hide memory growth.
const CACHE_BYTES: usize = 32 << 20;

/// Opens the store file and reads it whole. Damage is handled here: the
/// file is moved aside and a fresh one created, or bad records are skipped;
/// either is reported as a [`Recovery`].
pub(super) fn open(path: &Path) -> Result<(Database, Vec<Change>, Option<Recovery>), StoreError> {
    match open_and_load(path) {
        Ok((db, changes, 0)) => Ok((db, changes, None)),
        Ok((db, changes, count)) => {
            warn!(path = %path.display(), count, "store: skipped undecodable records; their keys resync from peers");
            Ok((db, changes, Some(Recovery::SkippedRecords { count })))
        }
        Err(Failure::Fatal(e)) => Err(e),
        Err(Failure::Damaged(reason)) => {
            let moved_to = move_aside(path)?;
            error!(path = %path.display(), moved_to = %moved_to.display(), %reason,
                "store: damaged file moved aside, starting empty; the node resyncs its state from peers. \
                 Keep the moved file for a bug report, or delete it");
            let db = open_db(path).map_err(|e| open_error(path, e))?;
            Ok((
                db,
                Vec::new(),
                Some(Recovery::MovedAside { moved_to, reason }),
            ))
        }
    }
}

enum Failure {
    /// Move the file aside and start empty.
    Damaged(String),
    /// Refuse to start: moving the file aside would not help or would lose data.
    Fatal(StoreError),
}

pub(super) fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        // Verify every page's checksum on open, so damage is reported
        // here rather than as a panic or a wrong read later.
        .set_check_integrity_on_open(true)
        .create(path)
}

fn open_and_load(path: &Path) -> Result<(Database, Vec<Change>, u64), Failure> {
    // redb may panic on a file damaged outside it (debug builds assert
    // on impossible states), so a panic here is damage too.
    let opened = panic::catch_unwind(AssertUnwindSafe(|| {
        let db = open_db(path).map_err(|e| classify(path, e.into()))?;
        let (changes, skipped) = load(path, &db)?;
        Ok((db, changes, skipped))
    }));
    opened.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Failure::Damaged(format!("redb panicked reading it: {why}")))
    })
}

fn load(path: &Path, db: &Database) -> Result<(Vec<Change>, u64), Failure> {
    let read = db.begin_read().map_err(|e| classify(path, e.into()))?;
    let table = match read.open_table(CHANGES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), 0)),
        Err(e) => return Err(classify(path, e.into())),
    };
    let (mut changes, mut skipped) = (Vec::new(), 0);
    for entry in table.iter().map_err(|e| classify(path, e.into()))? {
        let (key, record) = entry.map_err(|e| classify(path, e.into()))?;
        let decoded =
            decode_key(key.value()).and_then(|key| Ok((key, DiskRecord::decode(record.value())?)));
        match decoded {
            Ok(((table, key), record)) => changes.push(Change {
                table,
                key,
                ts: record.ts,
                value: record.value.map(<[u8]>::to_vec),
            }),
            // Skipping these would let this release overwrite a newer
            // release's data with older versions: refuse instead.
            Err(DecodeError::UnknownVersion(version)) => {
                return Err(Failure::Fatal(StoreError::UnsupportedFormat {
                    path: path.to_path_buf(),
                    version,
                }));
            }
            Err(e) => {
                warn!(key = %String::from_utf8_lossy(key.value()), error = %e, "store: skipping undecodable record");
                skipped += 1;
            }
        }
    }
    Ok((changes, skipped))
}

/// Sorts an open error into damage (move aside) and everything else, which
/// a fresh file would not fix or would hide (lock held, permissions, I/O).
fn classify(path: &Path, e: redb::Error) -> Failure {
    use std::io::ErrorKind::{InvalidData, UnexpectedEof};
    match e {
        redb::Error::Corrupted(why) => Failure::Damaged(why),
        redb::Error::RepairAborted => Failure::Damaged("redb could not repair it".into()),
        redb::Error::Io(io) if matches!(io.kind(), InvalidData | UnexpectedEof) => {
            Failure::Damaged(io.to_string())
        }
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            Failure::Fatal(StoreError::Locked {
                path: path.to_path_buf(),
            })
        }
        e => Failure::Fatal(open_error(path, e)),
    }
}

fn open_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{ms}"));
    let moved_to = path.with_file_name(name);
    let failed = |source| StoreError::MoveAside {
        path: path.to_path_buf(),
        source,
    };
    std::fs::rename(path, &moved_to).map_err(failed)?;
    // Make the rename durable before a fresh file takes the name, or a
    // crash could bring the damaged file back under it.
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(dir.unwrap_or(Path::new(".")))
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(moved_to)
}

/// The version stored for `key`; an undecodable record counts as absent,
/// so the next version of its key replaces it.
pub(super) fn stored_ts(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Timestamp>, String> {
    let stored = table.get(key).map_err(|e| e.to_string())?;
    Ok(stored.and_then(|r| DiskRecord::decode(r.value()).ok().map(|r| r.ts)))
}
