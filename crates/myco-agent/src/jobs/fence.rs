//! What the API says of `duplicates = "never"` jobs on a node without a
//! majority: the same quorum the controller fences by
//! (`myco_core::jobs::fence`), read from the API's own inputs.

use myco_core::jobs::controller::View;
use myco_core::jobs::fence::{Fence, Quorum};
use myco_core::{MemberState, Time};
use myco_proto::job::{Duplicates, JobRecord};
use myco_proto::jobs_api::PendingSlot;

use super::workflow::Inputs;

/// This node's quorum as `inputs` show it.
pub fn quorum(inputs: &Inputs) -> Option<Quorum> {
    let me = inputs.me?;
    let suspects = inputs
        .names
        .iter()
        .filter(|(_, (_, s))| *s == MemberState::Suspect)
        .map(|(id, _)| *id)
        .collect();
    let view = View {
        wall_ms: inputs.wall_ms,
        nodes: inputs.nodes.clone(),
        jobs: Vec::new(),
        instances: inputs.instances.clone(),
        versions: Vec::new(),
        suspects,
    };
    let mut fence = Fence::default();
    fence.observe(Time::ZERO, me, &view);
    Some(fence.quorum())
}

/// Every slot of `rec` pending with the fence's reason ("no majority:
/// sees 2 of 5 nodes") when it is a `never` job this node may not run;
/// None otherwise.
pub fn pending(rec: &JobRecord, inputs: &Inputs) -> Option<Vec<PendingSlot>> {
    if rec.spec.duplicates != Duplicates::Never || rec.stopped {
        return None;
    }
    let q = quorum(inputs).filter(|q| !q.majority())?;
    let slots = (0..rec.spec.count)
        .map(|slot| PendingSlot {
            slot,
            reason: q.reason(),
        })
        .collect();
    Some(slots)
}
