//! What the jobs API does to replicated state: deploy, scale, stop, revert,
//! plan. Handlers in `http::jobs` only translate; the rules live here.
//!
//! - A **version** is everything in a spec but `count`: a deploy that
//!   changes anything else writes version N+1 to `Table::JOB_VERSIONS`
//!   (`NAME/VERSION`) and then to `Table::JOBS` (so the history always
//!   holds the current version). An identical spec writes nothing.
//! - **Scaling is not a new version.** `count` is how many, not what runs:
//!   `scale` (or a deploy that changes only `count`) rewrites the current
//!   record in `Table::JOBS` with the same version, so running instances
//!   (whose ids carry the version) stay and only the slot count moves.
//!   The history keeps each version's `count` as deployed; a `revert`
//!   brings back an earlier spec but keeps the current `count`, as
//!   `kubectl rollout undo` keeps the replica count. `scale` may set 0
//!   (the job stays, with nothing running); a job file needs at least 1.
//! - **Stop** sets `stopped` on the current record; the record and the
//!   history stay, so a later deploy continues the version count. Starting
//!   a stopped job again (the same spec deployed) is a new version, so its
//!   instances get ids the stopped ones never had.
//! - The spore is pinned at deploy time: `NAME@VERSION` is resolved through
//!   the spore index to its digest, and a digest must be in the index.
//!
//! Writes of one node are serialized (a job's next version number is read,
//! then written); two nodes deploying the same job at once both write, and
//! the replicated table keeps the later write (last writer wins).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use myco_core::MemberState;
use myco_core::jobs::controller::{mark_draining, node_view};
use myco_core::jobs::placement::{self, Cluster, JobPlan, NodeView};
use myco_proto::instance::InstanceRecord;
use myco_proto::job::{JobRecord, JobRecordError, JobSpec, JobSpecError, SporeRef};
use myco_proto::jobs_api::DeployChange;
use myco_proto::{NodeId, Table};
use tokio::sync::Mutex;

use crate::mesh::{MeshHandle, WriteError};
use crate::spores::index;

/// Most jobs, versions or instances one read takes.
pub const MAX_SCAN: usize = 100_000;

/// Job writes of this node, one at a time (see the module doc).
static WRITES: Mutex<()> = Mutex::const_new(());

/// Why a jobs operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum JobFlowError {
    /// The spec is not valid; the message names the field.
    #[error(transparent)]
    Invalid(#[from] JobSpecError),
    /// The spore is not in the index.
    #[error(
        "unknown spore {0:?}: push it first (`myco spore push FILE`); `myco spores` lists the known ones"
    )]
    UnknownSpore(String),
    /// No job of that name.
    #[error("no job {0:?}; `myco jobs` lists them")]
    NotFound(String),
    /// No such version of the job.
    #[error("job {name:?} has no version {version}; `myco job history {name}` lists them")]
    NoSuchVersion {
        /// The job.
        name: String,
        /// The version asked for.
        version: u64,
    },
    /// A revert with nothing to go back to, or to the current version.
    #[error("{0}")]
    Conflict(String),
    /// The job is stopped: only a deploy starts it again (scale, revert
    /// and restart would otherwise change a job nothing runs of, or start
    /// it behind the operator's back). Nothing was written.
    #[error("job {0:?} is stopped: deploy it to start it")]
    Stopped(String),
    /// A stored record does not decode (damaged, or from a newer release).
    #[error(transparent)]
    Damaged(#[from] JobRecordError),
    /// The write was not acknowledged.
    #[error(transparent)]
    Write(#[from] WriteError),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The current record of job `name`, if any.
pub fn current(mesh: &MeshHandle, name: &str) -> Result<Option<JobRecord>, JobFlowError> {
    match mesh.get(Table::JOBS, name).and_then(|e| e.value) {
        Some(bytes) => Ok(Some(JobRecord::decode(&bytes)?)),
        None => Ok(None),
    }
}

fn existing(mesh: &MeshHandle, name: &str) -> Result<JobRecord, JobFlowError> {
    current(mesh, name)?.ok_or_else(|| JobFlowError::NotFound(name.to_string()))
}

/// The current record of job `name`, refusing a stopped job.
fn running(mesh: &MeshHandle, name: &str) -> Result<JobRecord, JobFlowError> {
    let cur = existing(mesh, name)?;
    if cur.stopped {
        return Err(JobFlowError::Stopped(name.to_string()));
    }
    Ok(cur)
}

/// Every job's current record, by name; undecodable records are skipped
/// (and logged), so one bad record never hides the others.
pub fn all_jobs(mesh: &MeshHandle) -> Vec<JobRecord> {
    decode_all(mesh, Table::JOBS, "", |b| {
        JobRecord::decode(b).map_err(|e| e.to_string())
    })
}

/// Every version of job `name`, oldest first.
pub fn versions(mesh: &MeshHandle, name: &str) -> Result<Vec<JobRecord>, JobFlowError> {
    existing(mesh, name)?;
    Ok(decode_all(
        mesh,
        Table::JOB_VERSIONS,
        &format!("{name}/"),
        |b| JobRecord::decode(b).map_err(|e| e.to_string()),
    ))
}

/// Every instance record (all jobs, or one job's).
pub fn instances(mesh: &MeshHandle, job: Option<&str>) -> Vec<InstanceRecord> {
    let prefix = job.map(|j| format!("{j}/")).unwrap_or_default();
    decode_all(mesh, Table::INSTANCES, &prefix, |b| {
        InstanceRecord::decode(b).map_err(|e| e.to_string())
    })
}

fn decode_all<T>(
    mesh: &MeshHandle,
    table: Table,
    prefix: &str,
    decode: impl Fn(&[u8]) -> Result<T, String>,
) -> Vec<T> {
    mesh.scan(table, prefix, MAX_SCAN)
        .into_iter()
        .filter_map(|(key, e)| match decode(&e.value.unwrap_or_default()) {
            Ok(r) => Some(r),
            Err(err) => {
                tracing::warn!(table = ?table, key, error = %err, "skipping an unreadable record");
                None
            }
        })
        .collect()
}

/// The digest `spec.spore` names, refusing spores the index does not know.
fn resolve(mesh: &MeshHandle, spore: &str) -> Result<String, JobFlowError> {
    match SporeRef::parse(spore)? {
        SporeRef::Digest(d) => match mesh.get(Table::SPORES, d).and_then(|e| e.value) {
            Some(_) => Ok(d.to_string()),
            None => Err(JobFlowError::UnknownSpore(spore.to_string())),
        },
        SporeRef::Named { .. } => {
            index::digest_of(mesh, spore).ok_or_else(|| JobFlowError::UnknownSpore(spore.into()))
        }
    }
}

/// Whether two pinned specs differ only in `count`.
fn same_but_count(a: &JobSpec, b: &JobSpec) -> bool {
    let mut b = b.clone();
    b.count = a.count;
    *a == b
}

/// The record a deploy of `spec` makes from `cur`, and what it changes;
/// nothing is written.
fn next_record(
    cur: Option<&JobRecord>,
    spec: JobSpec,
    digest: &str,
    now: u64,
) -> Result<(DeployChange, JobRecord), JobFlowError> {
    let Some(cur) = cur else {
        return Ok((DeployChange::Created, JobRecord::first(spec, digest, now)?));
    };
    let mut new = cur.next(spec, digest, now)?;
    if !same_but_count(&cur.spec, &new.spec) {
        return Ok((DeployChange::NewVersion, new));
    }
    // A stopped job started again gets a new version too: instance ids
    // carry the version, so the new instances can never be mistaken for
    // the records of the stopped ones, wherever those are in being
    // forgotten.
    if cur.stopped {
        return Ok((DeployChange::Started, new));
    }
    // Same version: only `count` may move.
    let change = if cur.spec.count == new.spec.count {
        DeployChange::Unchanged
    } else {
        DeployChange::Scaled
    };
    new = JobRecord {
        spec: JobSpec {
            count: new.spec.count,
            ..cur.spec.clone()
        },
        updated_ms: if change == DeployChange::Unchanged {
            cur.updated_ms
        } else {
            now
        },
        ..cur.clone()
    };
    Ok((change, new))
}

/// Writes `rec` as the job's current record, and first into the history
/// when it is a new version.
async fn store(
    mesh: &MeshHandle,
    change: DeployChange,
    rec: &JobRecord,
) -> Result<(), JobFlowError> {
    formats::check(mesh, change, rec)?;
    let bytes = rec.encode();
    if matches!(
        change,
        DeployChange::Created | DeployChange::NewVersion | DeployChange::Started
    ) {
        mesh.write(Table::JOB_VERSIONS, &rec.version_key(), Some(bytes.clone()))
            .await?;
    }
    if change != DeployChange::Unchanged {
        mesh.write(Table::JOBS, rec.name(), Some(bytes)).await?;
        tracing::info!(
            job = rec.name(),
            version = rec.version,
            ?change,
            "job written"
        );
    }
    Ok(())
}

/// Parses, validates and pins a job spec sent as JSON, then makes it the
/// job's current state (see the module doc for what is a new version).
pub async fn deploy(
    mesh: &MeshHandle,
    body: &[u8],
) -> Result<(DeployChange, JobRecord), JobFlowError> {
    let spec = JobSpec::from_json(body)?;
    deploy_spec(mesh, spec).await
}

/// [`deploy`] of an already parsed and validated spec.
pub async fn deploy_spec(
    mesh: &MeshHandle,
    spec: JobSpec,
) -> Result<(DeployChange, JobRecord), JobFlowError> {
    let digest = resolve(mesh, &spec.spore)?;
    let _turn = WRITES.lock().await;
    let cur = current(mesh, &spec.name)?;
    let (change, mut rec) = next_record(cur.as_ref(), spec, &digest, now_ms())?;
    if matches!(change, DeployChange::NewVersion | DeployChange::Started) {
        rec.version = rec.version.max(latest_version(mesh, rec.name()) + 1);
    }
    store(mesh, change, &rec).await?;
    Ok((change, rec))
}

/// Sets the job's `count` (0 to 1000) without a new version; a stopped
/// job is refused (a deploy starts it).
pub async fn scale(
    mesh: &MeshHandle,
    name: &str,
    count: u32,
) -> Result<(DeployChange, JobRecord), JobFlowError> {
    let _turn = WRITES.lock().await;
    let cur = running(mesh, name)?;
    let mut spec = cur.spec.clone();
    spec.count = count;
    // Scaling to 0 is allowed here (a job file needs at least 1): the job
    // stays, runs nothing, and scales up again without a new version.
    JobSpec {
        count: count.max(1),
        ..spec.clone()
    }
    .validate()?;
    let mut rec = cur.clone();
    rec.spec = spec;
    let change = if rec == cur {
        DeployChange::Unchanged
    } else {
        rec.updated_ms = now_ms();
        DeployChange::Scaled
    };
    store(mesh, change, &rec).await?;
    Ok((change, rec))
}

/// Stops the job: no instance runs; the records stay.
pub async fn stop(
    mesh: &MeshHandle,
    name: &str,
) -> Result<(DeployChange, JobRecord), JobFlowError> {
    let _turn = WRITES.lock().await;
    let mut rec = existing(mesh, name)?;
    if rec.stopped {
        return Ok((DeployChange::Unchanged, rec));
    }
    rec.stopped = true;
    rec.updated_ms = now_ms();
    mesh.write(Table::JOBS, name, Some(rec.encode())).await?;
    tracing::info!(job = name, version = rec.version, "job stopped");
    Ok((DeployChange::Stopped, rec))
}

/// Brings back version `to` (default: the one before the current) as a
/// new version, keeping the current `count`; a stopped job is refused (a
/// deploy starts it).
pub async fn revert(
    mesh: &MeshHandle,
    name: &str,
    to: Option<u64>,
) -> Result<(DeployChange, JobRecord), JobFlowError> {
    let _turn = WRITES.lock().await;
    let cur = running(mesh, name)?;
    let target = match to {
        Some(v) => v,
        None if cur.version > 1 => cur.version - 1,
        None => {
            return Err(JobFlowError::Conflict(format!(
                "job {name:?} has only version 1: nothing to revert to"
            )));
        }
    };
    if target == cur.version {
        return Err(JobFlowError::Conflict(format!(
            "version {target} is already the current version of job {name:?}"
        )));
    }
    let earlier = mesh
        .get(
            Table::JOB_VERSIONS,
            &JobRecord::key_of_version(name, target),
        )
        .and_then(|e| e.value)
        .ok_or_else(|| JobFlowError::NoSuchVersion {
            name: name.to_string(),
            version: target,
        })?;
    let earlier = JobRecord::decode(&earlier)?;
    let mut rec = cur.revert_to(&earlier, now_ms());
    rec.spec.count = cur.spec.count;
    rec.version = rec.version.max(latest_version(mesh, name) + 1);
    if same_but_count(&rec.spec, &cur.spec) {
        return Ok((DeployChange::Unchanged, cur));
    }
    store(mesh, DeployChange::NewVersion, &rec).await?;
    Ok((DeployChange::NewVersion, rec))
}

/// What placement reads, as this node sees it now.
pub struct Inputs {
    /// Wall time (ms).
    pub wall_ms: u64,
    /// Every member.
    pub nodes: Vec<NodeView>,
    /// Node names and membership states, by id.
    pub names: BTreeMap<NodeId, (String, MemberState)>,
    /// Every job's current record.
    pub jobs: Vec<JobRecord>,
    /// Every instance record.
    pub instances: Vec<InstanceRecord>,
    /// The records of the other versions instances run (see
    /// [`Cluster::versions`]).
    pub versions: Vec<JobRecord>,
    /// This node, once membership knows itself.
    pub me: Option<NodeId>,
}

impl Inputs {
    /// Reads membership and the job and instance tables.
    pub fn read(mesh: &MeshHandle) -> Inputs {
        let snap = mesh.snapshot();
        let mut nodes = Vec::with_capacity(snap.members.len());
        let mut names = BTreeMap::new();
        for m in &snap.members {
            nodes.push(node_view(m));
            let manifest = m.manifest.as_ref();
            let name = manifest.map(|x| x.name.clone()).unwrap_or_default();
            names.insert(m.peer.id, (name, m.state));
        }
        mark_draining(&mut nodes, &snap.members, |k| {
            mesh.get(Table::NODES, k)?.value
        });
        let jobs = all_jobs(mesh);
        let instances = instances(mesh, None);
        let versions = super::view::held_versions(&mesh.view(), &jobs, &instances)
            .iter()
            .filter_map(|b| JobRecord::decode(b).ok())
            .collect();
        Inputs {
            wall_ms: now_ms(),
            nodes,
            names,
            jobs,
            instances,
            versions,
            me: snap.members.iter().find(|m| m.is_self).map(|m| m.peer.id),
        }
    }

    /// The placement view of these inputs.
    pub fn cluster(&self) -> Cluster<'_> {
        Cluster {
            wall_ms: self.wall_ms,
            nodes: &self.nodes,
            jobs: &self.jobs,
            instances: &self.instances,
            versions: &self.versions,
        }
    }

    /// Whether node `id` is alive or suspect.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.names
            .get(&id)
            .is_some_and(|(_, s)| matches!(s, MemberState::Alive | MemberState::Suspect))
    }
}

/// The dry run of deploying `body`: where each slot would go and why the
/// other nodes were not chosen. Changes nothing.
pub fn plan(mesh: &MeshHandle, body: &[u8]) -> Result<(JobPlan, Inputs), JobFlowError> {
    let spec = JobSpec::from_json(body)?;
    let digest = resolve(mesh, &spec.spore)?;
    let inputs = Inputs::read(mesh);
    let cur = inputs.jobs.iter().find(|j| j.name() == spec.name);
    let (_, rec) = next_record(cur, spec, &digest, inputs.wall_ms)?;
    let plan = placement::plan(&inputs.cluster(), &rec);
    Ok((plan, inputs))
}

mod formats;
mod rollout;
pub use rollout::{auto_revert, latest_version, restart};

#[cfg(test)]
mod tests;
