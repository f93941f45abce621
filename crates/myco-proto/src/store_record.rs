//! How the agent's store file encodes its keys and records.
//!
//! The encoding is kept apart from [`Change`] so the in-memory and wire
//! types can change without rewriting every node's file. Key: `table (1) |
//! key (UTF-8)`, so records sort by table, then key. Record, format 1:
//!
//! ```text
//! version=1 | wall_ms (8, LE) | logical (4, LE) | node (8) | kind (1) | value
//! ```
//!
//! `kind` is 0 for a tombstone (nothing follows) and 1 for a value (the rest
//! of the record, possibly empty). A later format bumps `version`; a reader
//! refuses versions it does not know rather than guessing. No I/O here: the
//! agent's store reads and writes the file, the fuzz targets feed bytes.

use crate::{Change, NodeId, Table, Timestamp};

/// The record format this release writes and reads.
pub const FORMAT: u8 = 1;

const HEADER: usize = 1 + 8 + 4 + 8 + 1;
const TOMBSTONE: u8 = 0;
const VALUE: u8 = 1;

/// Why a stored key or record could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Written by a release with a newer format.
    #[error("record format {0} is not known to this release (it reads format {FORMAT})")]
    UnknownVersion(u8),
    /// Damaged or not written by the store.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// One stored version of a key, borrowing its value from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct DiskRecord<'a> {
    /// The version's timestamp.
    pub ts: Timestamp,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
}

impl<'a> DiskRecord<'a> {
    /// The record of a change, borrowing its value.
    pub fn of(change: &'a Change) -> Self {
        DiskRecord {
            ts: change.ts,
            value: change.value.as_deref(),
        }
    }

    /// The record's bytes.
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

    /// Reads a record, refusing unknown formats and damage.
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

/// The stored key of `key` in `table`.
pub fn encode_key(table: Table, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(table.0);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Reads a stored key back.
pub fn decode_key(bytes: &[u8]) -> Result<(Table, String), DecodeError> {
    let (&table, key) = bytes
        .split_first()
        .ok_or(DecodeError::Malformed("empty key"))?;
    let key =
        String::from_utf8(key.to_vec()).map_err(|_| DecodeError::Malformed("key is not UTF-8"))?;
    Ok((Table(table), key))
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
