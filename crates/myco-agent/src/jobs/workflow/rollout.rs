//! Writes that start or end a rollout without a new spec: the rolling
//! restart, the automatic revert, and the version numbering that keeps a
//! reverted version's number from being reused.

use myco_proto::Table;
use myco_proto::job::JobRecord;

use myco_proto::jobs_api::DeployChange;

use super::{JobFlowError, WRITES, current, now_ms, store};
use crate::mesh::MeshHandle;

/// The highest version of job `name` in the history (0 for none). After
/// an automatic revert the current record is an older version than the
/// history's newest, so the next version is numbered past the history:
/// a failed version's number, and its instance ids, are never reused.
pub fn latest_version(mesh: &MeshHandle, name: &str) -> u64 {
    let prefix = format!("{name}/");
    mesh.scan(Table::JOB_VERSIONS, &prefix, super::MAX_SCAN)
        .iter()
        .filter_map(|(key, _)| key.strip_prefix(&prefix)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Puts version `to` back as job `name`'s current record after the
/// rollout to `from` failed, if the job is still at `from` (a newer deploy
/// or a revert already written wins). The record is `to`'s history record
/// with the current `count`: every node that writes it writes the same
/// bytes, so concurrent reverters agree. Returns whether it wrote.
pub async fn auto_revert(
    mesh: &MeshHandle,
    name: &str,
    from: u64,
    to: u64,
) -> Result<bool, JobFlowError> {
    let _turn = WRITES.lock().await;
    let Some(cur) = current(mesh, name)? else {
        return Ok(false);
    };
    if cur.version != from || cur.stopped {
        return Ok(false);
    }
    let earlier = mesh
        .get(Table::JOB_VERSIONS, &JobRecord::key_of_version(name, to))
        .and_then(|e| e.value)
        .ok_or_else(|| JobFlowError::NoSuchVersion {
            name: name.to_string(),
            version: to,
        })?;
    let mut rec = JobRecord::decode(&earlier)?;
    rec.spec.count = cur.spec.count;
    rec.stopped = false;
    mesh.write(Table::JOBS, name, Some(rec.encode())).await?;
    tracing::info!(
        job = name,
        from,
        to,
        "rollout failed: version {to} is current again"
    );
    Ok(true)
}

/// A rolling restart: the current spec written again as a new version, so
/// every instance is replaced blue/green (the ids carry the version). A
/// stopped job is refused: starting it is a deploy.
pub async fn restart(
    mesh: &MeshHandle,
    name: &str,
) -> Result<(DeployChange, JobRecord), JobFlowError> {
    let _turn = WRITES.lock().await;
    let cur = super::running(mesh, name)?;
    let rec = JobRecord {
        version: (cur.version + 1).max(latest_version(mesh, name) + 1),
        updated_ms: now_ms(),
        ..cur
    };
    store(mesh, DeployChange::NewVersion, &rec).await?;
    Ok((DeployChange::NewVersion, rec))
}
