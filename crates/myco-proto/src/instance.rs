//! Instance records: one per instance, in `Table::INSTANCES` under
//! `JOB/ID`, written by the node that runs the instance and only when
//! something in it changes (state, address, restarts), never periodically.
//! Whether the instance's node is alive comes from membership, not from the
//! record: a record of a down node's instance is stale, not renewed.
//!
//! A record in state `failed` with `avoid_until_ms` set means the node gave
//! up on the slot after a crash loop; placement reads it on every node and
//! keeps the job off that node until then, so every node agrees.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// The record format this build writes and reads.
pub const INSTANCE_RECORD_FORMAT: u8 = 1;

/// An instance's state, as the API shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Started, not yet healthy.
    Launching,
    /// Healthy: the edge may route to it.
    Ready,
    /// Exited or unhealthy; restarting with backoff, refused, or given up
    /// (then `avoid_until_ms` is set). `reason` says which.
    Failed,
    /// Being replaced or moved: no new requests, finishing old ones.
    Draining,
    /// Stopped on purpose.
    Stopped,
}

impl InstanceState {
    /// The lowercase name used by the API and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Launching => "launching",
            InstanceState::Ready => "ready",
            InstanceState::Failed => "failed",
            InstanceState::Draining => "draining",
            InstanceState::Stopped => "stopped",
        }
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal with this number ended it.
    Signal(i32),
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

/// One instance of a job on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Format version ([`INSTANCE_RECORD_FORMAT`]); the record's first byte.
    pub format: u8,
    /// The instance id ([`InstanceRecord::id_for`]).
    pub id: String,
    /// The job's name.
    pub job: String,
    /// Which of the job's `count` slots it fills (0-based).
    pub slot: u32,
    /// The job version it runs.
    pub version: u64,
    /// The node that runs it (and alone writes this record).
    pub node: NodeId,
    /// Its state.
    pub state: InstanceState,
    /// Where it listens (`ip:port`), once started.
    pub addr: Option<SocketAddr>,
    /// The spore digest it runs.
    pub digest: String,
    /// Restarts since it was first started.
    pub restarts: u32,
    /// How its process last ended.
    pub last_exit: Option<Exit>,
    /// Why it is in this state, in words (empty when nothing to say).
    pub reason: String,
    /// Set when the node gave up on the slot (crash loop): placement keeps
    /// this job off this node until this wall time (ms).
    pub avoid_until_ms: Option<u64>,
    /// When it entered this state (wall ms).
    pub since_ms: u64,
}

/// An instance record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unreadable instance record: {0} (damaged, or written by a newer release: upgrade this node)"
)]
pub struct InstanceRecordError(String);

impl InstanceRecord {
    /// The id of the instance of `job`'s `slot` at `version` on `node`:
    /// `JOB-SLOT-vVERSION-NODE`. Deterministic, so a node restarted mid
    /// start finds the same id, and a node never runs two instances of one
    /// slot and version.
    pub fn id_for(job: &str, slot: u32, version: u64, node: NodeId) -> String {
        format!("{job}-{slot}-v{version}-{node}")
    }

    /// The record's key in `Table::INSTANCES`: `JOB/ID`, so a prefix scan
    /// of `JOB/` lists one job's instances.
    pub fn key(&self) -> String {
        Self::key_of(&self.job, &self.id)
    }

    /// The key of instance `id` of `job`.
    pub fn key_of(job: &str, id: &str) -> String {
        format!("{job}/{id}")
    }

    /// Whether the node gave up on this slot and is still to be avoided at
    /// wall time `now_ms`.
    pub fn avoids(&self, now_ms: u64) -> bool {
        self.avoid_until_ms.is_some_and(|t| now_ms < t)
    }

    /// Encodes the record (format byte first, then postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("instance records always encode")
    }

    /// Decodes a record, refusing other formats and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<InstanceRecord, InstanceRecordError> {
        match bytes.first() {
            Some(&INSTANCE_RECORD_FORMAT) => {}
            Some(other) => return Err(InstanceRecordError(format!("format {other}"))),
            None => return Err(InstanceRecordError("empty".into())),
        }
        let (r, rest): (InstanceRecord, _) =
            postcard::take_from_bytes(bytes).map_err(|e| InstanceRecordError(e.to_string()))?;
        if !rest.is_empty() {
            return Err(InstanceRecordError("trailing bytes".into()));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record() -> InstanceRecord {
        let node = NodeId::from_u64(7);
        InstanceRecord {
            format: INSTANCE_RECORD_FORMAT,
            id: InstanceRecord::id_for("web", 2, 3, node),
            job: "web".into(),
            slot: 2,
            version: 3,
            node,
            state: InstanceState::Failed,
            addr: Some("10.0.0.7:31002".parse().unwrap()),
            digest: format!("sha256:{}", "ab".repeat(32)),
            restarts: 4,
            last_exit: Some(Exit::Signal(9)),
            reason: "crash loop".into(),
            avoid_until_ms: Some(1_000),
            since_ms: 500,
        }
    }

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let r = record();
        let bytes = r.encode();
        assert_eq!(bytes[0], INSTANCE_RECORD_FORMAT);
        assert_eq!(InstanceRecord::decode(&bytes).unwrap(), r);
        let mut long = bytes.clone();
        long.push(0);
        assert!(InstanceRecord::decode(&long).is_err());
        assert!(InstanceRecord::decode(&[]).is_err());
        assert!(InstanceRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        let newer = InstanceRecord {
            format: 2,
            ..r.clone()
        };
        assert!(
            InstanceRecord::decode(&newer.encode())
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
    }

    #[test]
    fn damaged_bytes_never_panic() {
        let bytes = record().encode();
        for cut in 0..bytes.len() {
            assert!(InstanceRecord::decode(&bytes[..cut]).is_err());
        }
        let mut x: u32 = 99;
        for _ in 0..5_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let mut b = bytes.clone();
            let at = (x as usize >> 8) % b.len();
            b[at] ^= (x as u8) | 1;
            let _ = InstanceRecord::decode(&b);
        }
    }

    #[test]
    fn ids_and_keys_are_deterministic_and_prefix_scannable() {
        let r = record();
        assert_eq!(r.id, "web-2-v3-0000000000000007");
        assert_eq!(r.key(), "web/web-2-v3-0000000000000007");
        assert!(r.avoids(999));
        assert!(!r.avoids(1_000));
    }

    #[test]
    fn json_shows_the_api_names() {
        let json = serde_json::to_string(&record()).unwrap();
        assert!(json.contains(r#""state":"failed""#), "{json}");
        assert!(json.contains(r#""addr":"10.0.0.7:31002""#), "{json}");
        assert!(json.contains(r#""last_exit":{"signal":9}"#), "{json}");
    }
}
