//! Tombstone garbage collection on the wire: the horizon every replication
//! message carries, and the record each node keeps in [`Table::GC`].
//!
//! A horizon is a wall time below which every registered node agreed it
//! holds the same versions (the digest). Below an applied horizon there
//! are no tombstones: they were collected everywhere at once. See
//! ARCHITECTURE.md, "Tombstone collection", for the rule and its proof.
//!
//! [`Table::GC`]: crate::state::Table::GC

use serde::{Deserialize, Serialize};

/// A horizon: a wall time (ms) and the digest of the versions below it,
/// tombstones included, on which the nodes agreed.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct Horizon {
    /// Entries stamped before this wall time (ms) are below the horizon.
    pub at: u64,
    /// The digest of the versions below `at`.
    pub digest: u64,
}

/// A node's part in tombstone collection, kept in `Table::GC` under the
/// node's id in hex. Each node writes its own; any node may mark another
/// `reaped` once it has been gone for `reap_after`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct GcRecord {
    /// Format version ([`GC_RECORD_VERSION`]).
    pub version: u8,
    /// The candidate horizon this node proposes and its digest there.
    pub reported: Horizon,
    /// The horizon this node collected below.
    pub applied: Horizon,
    /// The node left for good: it no longer holds collection back, and if
    /// it returns it drops what it held below the horizon and refills.
    pub reaped: bool,
}

/// The record format this build writes and reads.
pub const GC_RECORD_VERSION: u8 = 1;

/// A GC record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable gc record: {0}")]
pub struct GcRecordError(String);

impl GcRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("gc records always encode")
    }

    /// Decodes a record, refusing other versions and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<GcRecord, GcRecordError> {
        let (r, rest): (GcRecord, _) =
            postcard::take_from_bytes(bytes).map_err(|e| GcRecordError(e.to_string()))?;
        if !rest.is_empty() {
            return Err(GcRecordError("trailing bytes".into()));
        }
        if r.version != GC_RECORD_VERSION {
            return Err(GcRecordError(format!("version {}", r.version)));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let r = GcRecord {
            version: GC_RECORD_VERSION,
            reported: Horizon { at: 5, digest: 7 },
            applied: Horizon { at: 3, digest: 1 },
            reaped: true,
        };
        assert_eq!(GcRecord::decode(&r.encode()).unwrap(), r);
        let mut long = r.encode();
        long.push(0);
        assert!(GcRecord::decode(&long).is_err());
        assert!(GcRecord::decode(&[]).is_err());
        let other = GcRecord { version: 9, ..r };
        assert!(GcRecord::decode(&other.encode()).is_err());
    }
}
