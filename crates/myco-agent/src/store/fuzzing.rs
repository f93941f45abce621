//! The store's decoders, exposed for the fuzz targets in `fuzz/` (feature
//! `fuzzing` only): they read bytes from a file that may be damaged, so
//! they must refuse anything rather than panic or allocate by a length.

use myco_proto::{Table, Timestamp};

use super::disk::{DiskRecord, decode_key, encode_key};

/// Decodes a stored record; on success checks that encoding it again gives
/// the same bytes (the format has one encoding per record), and panics if
/// not, so the fuzzer reports it.
pub fn record(bytes: &[u8]) -> Option<(Timestamp, Option<&[u8]>)> {
    let r = DiskRecord::decode(bytes).ok()?;
    assert_eq!(r.encode(), bytes, "a stored record re-encodes differently");
    Some((r.ts, r.value))
}

/// Decodes a stored key; on success checks it re-encodes to the same bytes.
pub fn key(bytes: &[u8]) -> Option<(Table, String)> {
    let (table, key) = decode_key(bytes).ok()?;
    assert_eq!(
        encode_key(table, &key),
        bytes,
        "a stored key re-encodes differently"
    );
    Some((table, key))
}
