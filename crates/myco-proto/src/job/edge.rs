//! The job's `[edge]` section: how the edge gateway spreads its requests.
//!
//! ```toml
//! [edge]
//! balance = "round_robin"   # or "least_requests" (the default), "prefer_local"
//! ```

use serde::{Deserialize, Serialize};

/// How the edge treats a job's requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    /// How an instance is chosen for each request.
    #[serde(default)]
    pub balance: Balance,
}

impl EdgeSpec {
    /// Whether every setting is its default (such a job's record keeps the
    /// format older nodes read, see `JobRecord::encode`).
    pub fn is_default(&self) -> bool {
        *self == EdgeSpec::default()
    }
}

/// How an edge chooses among a job's ready instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Power of two choices over requests in flight: two instances drawn at
    /// random, the one with fewer requests in flight wins.
    #[default]
    LeastRequests,
    /// Each edge takes the ready instances in turn.
    RoundRobin,
    /// As `least_requests`, but an instance on the edge's own node is taken
    /// when it is as good (no more requests in flight): it saves the hop
    /// between nodes. The node-wide `--edge-prefer-local` does the same for
    /// every job.
    PreferLocal,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JOB_RECORD_FORMAT, JOB_RECORD_FORMAT_EDGE, JobRecord, JobSpec};

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn spec(edge: &str) -> JobSpec {
        JobSpec::from_toml(&format!("name = \"web\"\nspore = \"{DIGEST}\"\n{edge}")).unwrap()
    }

    #[test]
    fn balance_is_read_from_the_edge_section() {
        assert_eq!(spec("").edge.balance, Balance::LeastRequests);
        for (text, want) in [
            ("round_robin", Balance::RoundRobin),
            ("least_requests", Balance::LeastRequests),
            ("prefer_local", Balance::PreferLocal),
        ] {
            let s = spec(&format!("[edge]\nbalance = \"{text}\""));
            assert_eq!(s.edge.balance, want);
            // The API's JSON says it the same way.
            assert!(s.to_json().contains(&format!("\"balance\":\"{text}\"")));
        }
        let bad = JobSpec::from_toml(&format!(
            "name = \"web\"\nspore = \"{DIGEST}\"\n[edge]\nbalance = \"random\""
        ));
        assert!(bad.unwrap_err().to_string().contains("balance"));
    }

    #[test]
    fn a_record_keeps_format_2_unless_it_has_edge_settings() {
        let plain = JobRecord::first(spec(""), DIGEST, 1).unwrap();
        let bytes = plain.encode();
        assert_eq!(bytes[0], JOB_RECORD_FORMAT);
        assert_eq!(JobRecord::decode(&bytes).unwrap(), plain);

        let rr = JobRecord::first(spec("[edge]\nbalance = \"round_robin\""), DIGEST, 1).unwrap();
        assert_eq!(rr.format, JOB_RECORD_FORMAT_EDGE);
        let bytes3 = rr.encode();
        assert_eq!(bytes3[0], JOB_RECORD_FORMAT_EDGE);
        assert_eq!(JobRecord::decode(&bytes3).unwrap(), rr);
        // Format 3 is format 2 with the edge section at the spec's end.
        assert!(bytes3.len() > bytes.len());
        assert!(JobRecord::decode(&bytes3[..bytes3.len() - 1]).is_err());

        // Back to the defaults: format 2 again, readable by older nodes.
        let back = rr.next(spec(""), DIGEST, 2).unwrap();
        assert_eq!(back.encode()[0], JOB_RECORD_FORMAT);
        assert_eq!(back.revert_to(&rr, 3).encode()[0], JOB_RECORD_FORMAT_EDGE);
    }

    /// Found by the `job_record` fuzz target: a format 3 record whose edge
    /// settings are the defaults (no build writes one; a peer might) read
    /// as format 3 but wrote back as format 2, so it did not survive a
    /// round trip. It reads as format 2 now.
    #[test]
    fn a_format_3_record_without_edge_settings_reads_as_format_2() {
        let plain = JobRecord::first(spec(""), DIGEST, 1).unwrap();
        let mut odd = plain.clone();
        odd.format = JOB_RECORD_FORMAT_EDGE;
        let bytes = postcard::to_stdvec(&odd).unwrap();
        assert_eq!(bytes[0], JOB_RECORD_FORMAT_EDGE);
        let read = JobRecord::decode(&bytes).unwrap();
        assert_eq!(read.format, JOB_RECORD_FORMAT);
        assert_eq!(JobRecord::decode(&read.encode()).unwrap(), read);
        assert_eq!(read, plain);
    }
}
