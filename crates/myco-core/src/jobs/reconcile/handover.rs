//! Make before break when a slot moves from one live node to another.
//!
//! A slot moves away from a node that still runs it when placement changes
//! its mind without anything failing: most often a node comes back (a
//! restart, a rolling upgrade) and `spread` gives it its share again.
//! Stopping at once leaves the job one instance short until the new node's
//! instance is ready (its start and its health check), on every node of a
//! rolling upgrade in turn. So the instance here keeps running, and
//! serving, until a record of the node placement chose says the slot's
//! instance of the same version is `ready` there; the next pass then stops
//! it (drained, as every stop is). Placement does not flip the slot back
//! meanwhile: the node that is over its `spread` share cannot keep it.
//!
//! Not for `duplicates = "never"` jobs (two of one slot must never run at
//! once), and not while this node needs the room for a start of its own:
//! two full nodes swapping slots would each wait for the other.

use std::collections::BTreeMap;

use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::{Duplicates, JobRecord};

use super::{LocalInstance, Used};
use crate::jobs::placement::{Capacity, Placement, Slot};

/// Whether `l`, no longer wanted here, is its slot's instance at the job's
/// current version, now placed on another node whose instance of it is not
/// ready yet.
pub(super) fn replacement_pending(
    placement: &Placement,
    job: &JobRecord,
    l: &LocalInstance,
    others: &[InstanceRecord],
) -> bool {
    if job.stopped
        || job.spec.duplicates == Duplicates::Never
        || l.version != job.version
        || l.slot >= job.spec.count
    {
        return false;
    }
    let Some(Slot::Node(to)) = placement
        .job(job.name())
        .and_then(|p| p.slots.get(l.slot as usize))
    else {
        return false;
    };
    !others.iter().any(|r| {
        r.node == *to
            && r.slot == l.slot
            && r.version == l.version
            && r.state == InstanceState::Ready
            && r.job == l.job
    })
}

/// Whether every start placement wants here fits beside every process
/// running here now: only then may a moved slot's instance stay on.
pub(super) fn room_for_all<'a>(
    starts: impl IntoIterator<Item = &'a str>,
    jobs: &BTreeMap<&str, &JobRecord>,
    local: &[LocalInstance],
    capacity: &Capacity,
) -> bool {
    let mut used = Used::default();
    for l in local.iter().filter(|l| l.status.has_process()) {
        used.add(&l.resources);
    }
    starts.into_iter().all(|job| {
        let Some(need) = jobs.get(job).map(|j| j.spec.reserved()) else {
            return true;
        };
        let fits = used.shortfall(&need, capacity).is_none();
        used.add(&need);
        fits
    })
}
