//! The guard on job record formats (`myco_core::jobs::formats`): a deploy
//! that would write job record format 3 while a live member cannot read
//! it is refused with a 409 naming the nodes to upgrade.

use myco_core::MemberState;
use myco_core::jobs::formats::{Reader, unable_to_read};
use myco_proto::job::{JOB_RECORD_FORMAT, JobRecord};
use myco_proto::jobs_api::DeployChange;

use super::JobFlowError;
use crate::mesh::MeshHandle;

/// Refuses writing `rec` when `change` introduces a record format some
/// live member does not read (see the core module for which writes).
pub fn check(mesh: &MeshHandle, change: DeployChange, rec: &JobRecord) -> Result<(), JobFlowError> {
    let format = JobRecord::format_of(&rec.spec);
    let introduces = matches!(
        change,
        DeployChange::Created | DeployChange::NewVersion | DeployChange::Started
    );
    if !introduces || format == JOB_RECORD_FORMAT {
        return Ok(());
    }
    let snap = mesh.snapshot();
    let members = snap.members.iter().map(|m| {
        let manifest = m.manifest.as_ref();
        Reader {
            name: manifest.map_or("", |x| x.name.as_str()),
            live: matches!(m.state, MemberState::Alive | MemberState::Suspect),
            speaks: manifest.map(|x| &x.speaks),
        }
    });
    let old = unable_to_read(format, members);
    if old.is_empty() {
        return Ok(());
    }
    tracing::info!(job = rec.name(), nodes = ?old, "deploy refused: nodes of an older release cannot read its [edge] settings");
    Err(JobFlowError::Conflict(format!(
        "job {:?} has [edge] settings, written as job record format 3, which {} of an older myco cannot read ({}): upgrade {} first, or deploy without [edge]",
        rec.name(),
        if old.len() == 1 { "a node" } else { "nodes" },
        old.join(", "),
        if old.len() == 1 { "it" } else { "them" },
    )))
}
