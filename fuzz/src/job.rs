//! Targets over job files and the replicated job and instance records.

use myco_proto::instance::InstanceRecord;
use myco_proto::job::{JobRecord, JobSpec};

/// A job file (TOML, from the operator's CLI) or API body (JSON, from any
/// API client): the first byte picks which; the rest is the text. A spec
/// that parses must come back the same through the API's JSON.
pub fn job_spec(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let spec = if which % 2 == 0 {
        let Ok(text) = std::str::from_utf8(body) else {
            return;
        };
        JobSpec::from_toml(text)
    } else {
        JobSpec::from_json(body)
    };
    if let Ok(spec) = spec {
        let again = JobSpec::from_json(spec.to_json().as_bytes());
        assert_eq!(again.ok(), Some(spec), "a valid spec survives its JSON");
    }
}

/// A job record or an instance record from replicated state (written by
/// any member): the first byte picks which; the rest is the record.
pub fn job_record(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(r) = JobRecord::decode(bytes) {
            assert_eq!(JobRecord::decode(&r.encode()).ok(), Some(r));
        }
    } else if let Ok(r) = InstanceRecord::decode(bytes) {
        assert_eq!(InstanceRecord::decode(&r.encode()).ok(), Some(r));
    }
}
