//! The jobs and instances of `/v1/status`'s cluster summary, counted from
//! the replicated records as every node holds them. Like `GET
//! /v1/instances` (and each job's `running`), only instances on nodes that
//! are up count: a down node's records are stale, not renewed.

use myco_proto::NodeId;
use myco_proto::api::{InstanceCounts, JobCounts};
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::JobRecord;

/// Jobs (total, running, stopped) and instances by state.
pub fn count(
    jobs: &[JobRecord],
    instances: &[InstanceRecord],
    is_up: impl Fn(NodeId) -> bool,
) -> (JobCounts, InstanceCounts) {
    let mut by_state = InstanceCounts::default();
    let mut live_jobs = std::collections::BTreeSet::new();
    for i in instances.iter().filter(|i| is_up(i.node)) {
        let n = match i.state {
            InstanceState::Launching => &mut by_state.launching,
            InstanceState::Ready => &mut by_state.ready,
            InstanceState::Failed => &mut by_state.failed,
            InstanceState::Draining => &mut by_state.draining,
            InstanceState::Stopped => &mut by_state.stopped,
        };
        *n += 1;
        if matches!(
            i.state,
            InstanceState::Launching | InstanceState::Ready | InstanceState::Draining
        ) {
            live_jobs.insert(i.job.as_str());
        }
    }
    let jobs = JobCounts {
        total: jobs.len(),
        running: jobs
            .iter()
            .filter(|j| !j.stopped && live_jobs.contains(j.name()))
            .count(),
        stopped: jobs.iter().filter(|j| j.stopped).count(),
    };
    (jobs, by_state)
}

#[cfg(test)]
mod tests {
    use myco_proto::job::JobSpec;

    use super::*;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn job(name: &str, stopped: bool) -> JobRecord {
        let spec = format!(r#"{{"name":"{name}","spore":"{DIGEST}","count":2}}"#);
        let mut rec =
            JobRecord::first(JobSpec::from_json(spec.as_bytes()).unwrap(), DIGEST, 1).unwrap();
        rec.stopped = stopped;
        rec
    }

    fn instance(job: &str, slot: u32, node: u64, state: InstanceState) -> InstanceRecord {
        let node = NodeId::from_u64(node);
        InstanceRecord {
            format: myco_proto::instance::INSTANCE_RECORD_FORMAT,
            id: InstanceRecord::id_for(job, slot, 1, node),
            job: job.into(),
            slot,
            version: 1,
            node,
            state,
            addr: None,
            digest: DIGEST.into(),
            restarts: 0,
            last_exit: None,
            reason: String::new(),
            avoid_until_ms: None,
            since_ms: 0,
        }
    }

    #[test]
    fn jobs_and_instances_of_up_nodes_are_counted() {
        use InstanceState::*;
        let jobs = [
            job("web", false),
            job("batch", false),
            job("old", true),
            job("moving", false),
        ];
        let instances = [
            instance("web", 0, 1, Ready),
            instance("web", 1, 2, Launching),
            // Node 3 is down: its record is stale and counts for nothing.
            instance("batch", 0, 3, Ready),
            instance("batch", 1, 1, Failed),
            instance("old", 0, 1, Stopped),
            instance("moving", 0, 2, Draining),
        ];
        let (j, i) = count(&jobs, &instances, |n| n != NodeId::from_u64(3));
        assert_eq!(
            j,
            JobCounts {
                total: 4,
                running: 2,
                stopped: 1
            }
        );
        assert_eq!(
            i,
            InstanceCounts {
                launching: 1,
                ready: 1,
                failed: 1,
                draining: 1,
                stopped: 1
            }
        );
        assert_eq!(count(&[], &[], |_| true), Default::default());
    }
}
