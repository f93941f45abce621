//! What each node carries: the resources its running instances reserve
//! (`allocated` in `/v1/nodes`), derived from the replicated job and
//! instance tables so every node answers the same.

use std::collections::BTreeMap;

use myco_proto::NodeId;
use myco_proto::api::Resources;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::JobRecord;

/// The resources reserved on each node by its instances that hold them
/// (launching, ready or draining: a draining instance still runs), at
/// their job's current `[resources]`. Nodes with none are absent.
pub fn allocated_by_node(
    jobs: &[JobRecord],
    instances: &[InstanceRecord],
) -> BTreeMap<NodeId, Resources> {
    let spec: BTreeMap<&str, &myco_proto::job::Resources> =
        jobs.iter().map(|j| (j.name(), &j.spec.resources)).collect();
    let mut out: BTreeMap<NodeId, Resources> = BTreeMap::new();
    for i in instances {
        let holds = matches!(
            i.state,
            InstanceState::Launching | InstanceState::Ready | InstanceState::Draining
        );
        let Some(r) = spec.get(i.job.as_str()).filter(|_| holds) else {
            continue;
        };
        let a = out.entry(i.node).or_default();
        a.cpu_milli += u64::from(r.cpu_milli);
        a.memory_mb += u64::from(r.memory_mb);
    }
    out
}

#[cfg(test)]
mod tests {
    use myco_proto::instance::INSTANCE_RECORD_FORMAT;
    use myco_proto::job::JobSpec;

    use super::*;

    fn job(name: &str, cpu: u32, mem: u32) -> JobRecord {
        let d = format!("sha256:{}", "a".repeat(64));
        let toml = format!(
            "name = \"{name}\"\nspore = \"{d}\"\n[resources]\ncpu_milli = {cpu}\nmemory_mb = {mem}"
        );
        JobRecord::first(JobSpec::from_toml(&toml).unwrap(), &d, 1).unwrap()
    }

    fn inst(job: &str, slot: u32, node: NodeId, state: InstanceState) -> InstanceRecord {
        InstanceRecord {
            format: INSTANCE_RECORD_FORMAT,
            id: InstanceRecord::id_for(job, slot, 1, node),
            job: job.into(),
            slot,
            version: 1,
            node,
            state,
            addr: None,
            digest: String::new(),
            restarts: 0,
            last_exit: None,
            reason: String::new(),
            avoid_until_ms: None,
            since_ms: 0,
        }
    }

    #[test]
    fn allocation_sums_the_instances_that_hold_resources_per_node() {
        let (a, b) = (NodeId::from_u64(1), NodeId::from_u64(2));
        let jobs = [job("web", 250, 64), job("db", 500, 256)];
        let instances = [
            inst("web", 0, a, InstanceState::Ready),
            inst("web", 1, a, InstanceState::Launching),
            inst("db", 0, a, InstanceState::Draining),
            inst("web", 2, b, InstanceState::Failed),
            inst("db", 1, b, InstanceState::Stopped),
            inst("gone", 0, b, InstanceState::Ready),
        ];
        let got = allocated_by_node(&jobs, &instances);
        assert_eq!(
            got.get(&a),
            Some(&Resources {
                cpu_milli: 1000,
                memory_mb: 384
            })
        );
        // Failed and stopped instances, and instances of a job no longer
        // known, reserve nothing.
        assert_eq!(got.get(&b), None);
    }
}
