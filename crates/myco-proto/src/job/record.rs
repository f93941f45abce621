//! The replicated job record: `Table::JOBS` holds the current version under
//! the job's name; `Table::JOB_VERSIONS` keeps every version under
//! `NAME/VERSION` (zero-padded, so a prefix scan lists them in order) for
//! `myco job history` and `revert`.

use serde::{Deserialize, Serialize};

use super::{JobSpec, SporeRef};

/// The record format this build writes and reads. 2 added
/// `resources.vcpus` (and the `microvm` driver); format 1 records are
/// refused like any unknown format (no release wrote them).
pub const JOB_RECORD_FORMAT: u8 = 2;

/// One version of a job, as replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Format version ([`JOB_RECORD_FORMAT`]); the record's first byte.
    pub format: u8,
    /// The job version, 1 for the first deploy, one more per change.
    pub version: u64,
    /// The spec, its `spore` pinned to a `sha256:` digest.
    pub spec: JobSpec,
    /// The spore as the operator gave it (`NAME@VERSION` or the digest).
    pub spore_ref: String,
    /// Stopped by the operator: no instance runs; the record stays so the
    /// history and a later start keep the version count.
    pub stopped: bool,
    /// When version 1 was deployed (wall ms).
    pub created_ms: u64,
    /// When this version was deployed (wall ms).
    pub updated_ms: u64,
}

/// A job record could not be read or made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobRecordError {
    /// The bytes are not a job record of this format (damaged, or written
    /// by a newer release: upgrade this node).
    #[error("unreadable job record: {0}")]
    Decode(String),
    /// The digest given to pin the spore is not `sha256:<64 hex>`.
    #[error("the pinned spore must be a sha256: digest, got {0:?}")]
    NotADigest(String),
}

impl JobRecord {
    /// The record of a job's first version. `digest` is what the spore
    /// reference resolved to at deploy time.
    pub fn first(spec: JobSpec, digest: &str, now_ms: u64) -> Result<JobRecord, JobRecordError> {
        Self::pinned(spec, digest, 1, now_ms, now_ms)
    }

    /// The record of the next version after `self`, with a new spec.
    pub fn next(
        &self,
        spec: JobSpec,
        digest: &str,
        now_ms: u64,
    ) -> Result<JobRecord, JobRecordError> {
        Self::pinned(spec, digest, self.version + 1, self.created_ms, now_ms)
    }

    /// The record of the next version after `self`, bringing back an
    /// earlier version's spec, digest and spore reference (`myco job
    /// revert`).
    pub fn revert_to(&self, earlier: &JobRecord, now_ms: u64) -> JobRecord {
        JobRecord {
            format: JOB_RECORD_FORMAT,
            version: self.version + 1,
            spec: earlier.spec.clone(),
            spore_ref: earlier.spore_ref.clone(),
            stopped: false,
            created_ms: self.created_ms,
            updated_ms: now_ms,
        }
    }

    fn pinned(
        mut spec: JobSpec,
        digest: &str,
        version: u64,
        created_ms: u64,
        updated_ms: u64,
    ) -> Result<JobRecord, JobRecordError> {
        if !matches!(SporeRef::parse(digest), Ok(SporeRef::Digest(_))) {
            return Err(JobRecordError::NotADigest(digest.to_string()));
        }
        let spore_ref = std::mem::replace(&mut spec.spore, digest.to_string());
        Ok(JobRecord {
            format: JOB_RECORD_FORMAT,
            version,
            spec,
            spore_ref,
            stopped: false,
            created_ms,
            updated_ms,
        })
    }

    /// The job's name, its key in `Table::JOBS`.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The pinned spore digest.
    pub fn digest(&self) -> &str {
        &self.spec.spore
    }

    /// This version's key in `Table::JOB_VERSIONS`.
    pub fn version_key(&self) -> String {
        Self::key_of_version(&self.spec.name, self.version)
    }

    /// The key of version `version` of job `name` in `Table::JOB_VERSIONS`.
    pub fn key_of_version(name: &str, version: u64) -> String {
        format!("{name}/{version:020}")
    }

    /// Encodes the record (format byte first, then postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("job records always encode")
    }

    /// Decodes a record, refusing other formats and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<JobRecord, JobRecordError> {
        match bytes.first() {
            Some(&JOB_RECORD_FORMAT) => {}
            Some(other) => return Err(JobRecordError::Decode(format!("format {other}"))),
            None => return Err(JobRecordError::Decode("empty".into())),
        }
        let (r, rest): (JobRecord, _) =
            postcard::take_from_bytes(bytes).map_err(|e| JobRecordError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(JobRecordError::Decode("trailing bytes".into()));
        }
        Ok(r)
    }
}
