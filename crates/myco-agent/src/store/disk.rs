//! The store's file: its encoding, and opening it back with damage handled.
//!
//! The encoding is kept apart from [`Change`] so the in-memory and wire
//! types can change without rewriting every node's file. One redb table,
//! `changes`. Key: `table (1) | key (UTF-8)`, so records sort by table, then
//! key. Record, format 1:
//!
//! ```text
//! version=1 | wall_ms (8, LE) | logical (4, LE) | node (8) | kind (1) | value
//! ```
//!
//! `kind` is 0 for a tombstone (nothing follows) and 1 for a value (the rest
//! of the record, possibly empty). A later format bumps `version`; a reader
//! refuses versions it does not know rather than guessing.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use myco_proto::{Change, NodeId, Table, Timestamp};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tracing::{error, warn};

use super::{Recovery, StoreError};

/// The one table: encoded key -> encoded record.
pub(super) const CHANGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("changes");
/// The state is small and read once at start; redb's 1 GiB default cache
/// would only hide memory growth.
const CACHE_BYTES: usize = 32 << 20;

/// The record format this release writes and reads.
pub(super) const FORMAT: u8 = 1;

const HEADER: usize = 1 + 8 + 4 + 8 + 1;
const TOMBSTONE: u8 = 0;
const VALUE: u8 = 1;

/// Why a stored key or record could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecodeError {
    /// Written by a release with a newer format.
    #[error("record format {0} is not known to this release (it reads format {FORMAT})")]
    UnknownVersion(u8),
    /// Damaged or not written by the store.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// One stored version of a key, borrowing its value from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DiskRecord<'a> {
    pub ts: Timestamp,
    pub value: Option<&'a [u8]>,
}

impl<'a> DiskRecord<'a> {
    pub fn of(change: &'a Change) -> Self {
        DiskRecord {
            ts: change.ts,
            value: change.value.as_deref(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.value.map_or(0, <[u8]>::len));
        out.push(FORMAT);
        out.extend_from_slice(&self.ts.wall_ms.to_le_bytes());
        out.extend_from_slice(&self.ts.logical.to_le_bytes());
        out.extend_from_slice(&self.ts.node.0);
        match self.value {
            None => out.push(TOMBSTONE),
            Some(value) => {
                out.push(VALUE);
                out.extend_from_slice(value);
            }
        }
        out
    }

    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (&version, _) = bytes.split_first().ok_or(DecodeError::Malformed("empty"))?;
        if version != FORMAT {
            return Err(DecodeError::UnknownVersion(version));
        }
        if bytes.len() < HEADER {
            return Err(DecodeError::Malformed("shorter than its header"));
        }
        let ts = Timestamp {
            wall_ms: u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes")),
            logical: u32::from_le_bytes(bytes[9..13].try_into().expect("4 bytes")),
            node: NodeId(bytes[13..21].try_into().expect("8 bytes")),
        };
        let value = match (bytes[21], &bytes[HEADER..]) {
            (TOMBSTONE, []) => None,
            (TOMBSTONE, _) => return Err(DecodeError::Malformed("tombstone with a value")),
            (VALUE, value) => Some(value),
            _ => return Err(DecodeError::Malformed("unknown kind")),
        };
        Ok(DiskRecord { ts, value })
    }
}

pub(super) fn encode_key(table: Table, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(table.0);
    out.extend_from_slice(key.as_bytes());
    out
}

pub(super) fn decode_key(bytes: &[u8]) -> Result<(Table, String), DecodeError> {
    let (&table, key) = bytes
        .split_first()
        .ok_or(DecodeError::Malformed("empty key"))?;
    let key =
        String::from_utf8(key.to_vec()).map_err(|_| DecodeError::Malformed("key is not UTF-8"))?;
    Ok((Table(table), key))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> Timestamp {
        Timestamp {
            wall_ms: 0x0102_0304_0506_0708,
            logical: 9,
            node: NodeId([1, 2, 3, 4, 5, 6, 7, 8]),
        }
    }

    #[test]
    fn records_round_trip() {
        for value in [None, Some(&b""[..]), Some(&b"hello"[..])] {
            let record = DiskRecord { ts: ts(), value };
            let bytes = record.encode();
            assert_eq!(DiskRecord::decode(&bytes), Ok(record));
        }
        let key = encode_key(Table::JOBS, "web/1");
        assert_eq!(decode_key(&key), Ok((Table::JOBS, "web/1".to_owned())));
    }

    #[test]
    fn unknown_versions_and_damage_are_refused() {
        let mut bytes = DiskRecord {
            ts: ts(),
            value: None,
        }
        .encode();
        bytes[0] = 2;
        assert_eq!(
            DiskRecord::decode(&bytes),
            Err(DecodeError::UnknownVersion(2))
        );
        bytes[0] = FORMAT;
        assert!(DiskRecord::decode(&bytes[..HEADER - 1]).is_err());
        bytes.push(7);
        assert!(
            DiskRecord::decode(&bytes).is_err(),
            "tombstone with a value"
        );
        bytes[21] = 5;
        assert!(DiskRecord::decode(&bytes).is_err(), "unknown kind");
        assert!(DiskRecord::decode(&[]).is_err());
        assert!(decode_key(&[1, 0xff, 0xfe]).is_err());
        assert!(decode_key(&[]).is_err());
    }
}
