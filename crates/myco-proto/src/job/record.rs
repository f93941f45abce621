//! The replicated job record: `Table::JOBS` holds the current version under
//! the job's name; `Table::JOB_VERSIONS` keeps every version under
//! `NAME/VERSION` (zero-padded, so a prefix scan lists them in order) for
//! `myco job history` and `revert`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    Constraint, Driver, Duplicates, EdgeSpec, Health, JobSpec, Resources, RestartPolicy, SporeRef,
    Strategy, Update, Volume,
};

/// The record format of a job with default `[edge]` settings, which every
/// release since r1 reads: this build writes it for such jobs, so a mesh in
/// the middle of an upgrade keeps reading them. 2 added `resources.vcpus`
/// (and the `microvm` driver); format 1 records are refused like any
/// unknown format (no release wrote them).
pub const JOB_RECORD_FORMAT: u8 = 2;
/// The record format of a job with `[edge]` settings: format 2 with the
/// spec's `edge` at its end. Written only for jobs that ask for them (an
/// r1 node skips such a record as one of a newer release, and routes the
/// job as it would any other it does not know).
pub const JOB_RECORD_FORMAT_EDGE: u8 = 3;

/// One version of a job, as replicated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Format version ([`JOB_RECORD_FORMAT`], or [`JOB_RECORD_FORMAT_EDGE`]
    /// for a spec with `[edge]` settings); the record's first byte.
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
            format: Self::format_of(&earlier.spec),
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
            format: Self::format_of(&spec),
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

    /// The format a record of `spec` is written in: the oldest that holds
    /// it ([`JOB_RECORD_FORMAT`] unless it has `[edge]` settings).
    pub fn format_of(spec: &JobSpec) -> u8 {
        if spec.edge.is_default() {
            JOB_RECORD_FORMAT
        } else {
            JOB_RECORD_FORMAT_EDGE
        }
    }

    /// Encodes the record (format byte first, then postcard) in
    /// [`JobRecord::format_of`] its spec, whatever `format` says.
    pub fn encode(&self) -> Vec<u8> {
        let format = Self::format_of(&self.spec);
        let encoded = if format == JOB_RECORD_FORMAT {
            postcard::to_stdvec(&RecordV2::from(self))
        } else {
            postcard::to_stdvec(&JobRecord {
                format,
                ..self.clone()
            })
        };
        encoded.expect("job records always encode")
    }

    /// Decodes a record of format 2 or 3, refusing others and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<JobRecord, JobRecordError> {
        let decoded = match bytes.first() {
            Some(&JOB_RECORD_FORMAT) => {
                postcard::take_from_bytes::<RecordV2>(bytes).map(|(r, rest)| (r.into(), rest))
            }
            Some(&JOB_RECORD_FORMAT_EDGE) => postcard::take_from_bytes::<JobRecord>(bytes),
            Some(other) => return Err(JobRecordError::Decode(format!("format {other}"))),
            None => return Err(JobRecordError::Decode("empty".into())),
        };
        let (mut r, rest) = decoded.map_err(|e| JobRecordError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(JobRecordError::Decode("trailing bytes".into()));
        }
        // `format` says what `encode` writes for this spec, so a record
        // survives a round trip: a format 3 record without edge settings
        // (no build writes one, a peer might) reads as format 2.
        r.format = Self::format_of(&r.spec);
        Ok(r)
    }
}

/// A format 2 record: the spec has no `edge`. Postcard writes fields in
/// order with no names, so this mirror (same fields, same order) is what
/// keeps format 2 bytes exactly as r1 wrote them.
#[derive(Serialize, Deserialize)]
struct RecordV2 {
    format: u8,
    version: u64,
    spec: SpecV2,
    spore_ref: String,
    stopped: bool,
    created_ms: u64,
    updated_ms: u64,
}

/// [`JobSpec`] as format 2 has it: every field up to `volumes`.
#[derive(Serialize, Deserialize)]
struct SpecV2 {
    name: String,
    spore: String,
    count: u32,
    strategy: Strategy,
    driver: Driver,
    duplicates: Duplicates,
    env: BTreeMap<String, String>,
    resources: Resources,
    constraints: BTreeMap<String, Constraint>,
    health: Option<Health>,
    update: Update,
    restart: RestartPolicy,
    kill_timeout_ms: u64,
    volumes: Vec<Volume>,
}

impl From<&JobRecord> for RecordV2 {
    fn from(r: &JobRecord) -> Self {
        let s = r.spec.clone();
        RecordV2 {
            format: JOB_RECORD_FORMAT,
            version: r.version,
            spec: SpecV2 {
                name: s.name,
                spore: s.spore,
                count: s.count,
                strategy: s.strategy,
                driver: s.driver,
                duplicates: s.duplicates,
                env: s.env,
                resources: s.resources,
                constraints: s.constraints,
                health: s.health,
                update: s.update,
                restart: s.restart,
                kill_timeout_ms: s.kill_timeout_ms,
                volumes: s.volumes,
            },
            spore_ref: r.spore_ref.clone(),
            stopped: r.stopped,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        }
    }
}

impl From<RecordV2> for JobRecord {
    fn from(r: RecordV2) -> Self {
        let s = r.spec;
        JobRecord {
            format: r.format,
            version: r.version,
            spec: JobSpec {
                name: s.name,
                spore: s.spore,
                count: s.count,
                strategy: s.strategy,
                driver: s.driver,
                duplicates: s.duplicates,
                env: s.env,
                resources: s.resources,
                constraints: s.constraints,
                health: s.health,
                update: s.update,
                restart: s.restart,
                kill_timeout_ms: s.kill_timeout_ms,
                volumes: s.volumes,
                edge: EdgeSpec::default(),
            },
            spore_ref: r.spore_ref,
            stopped: r.stopped,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        }
    }
}
