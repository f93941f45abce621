//! The jobs runtime's part of `/metrics`: instances on this node by state,
//! starts, restarts, failures and refusals, record writes, and the cgroup
//! support found at start.

use std::sync::atomic::Ordering;

use myco_proto::instance::InstanceState;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use myco_core::jobs::controller::JobEventKind;

use crate::exec::CgroupVersion;
use crate::jobs::JobsShared;

type Labels = Vec<(&'static str, String)>;

fn counter(r: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    r.register(name, help, c);
}

/// Registers the jobs metrics.
pub fn register(r: &mut Registry, jobs: &JobsShared) {
    let by_state = jobs.by_state();
    let instances = Family::<Labels, Gauge>::default();
    for state in [
        InstanceState::Launching,
        InstanceState::Ready,
        InstanceState::Failed,
        InstanceState::Draining,
        InstanceState::Stopped,
    ] {
        let n = by_state.get(&state).copied().unwrap_or(0);
        instances
            .get_or_create(&vec![("state", state.as_str().to_string())])
            .set(n as i64);
    }
    r.register(
        "instances",
        "Instances supervised on this node, by state",
        instances,
    );
    let s = &jobs.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    counter(
        r,
        "instance_spawns",
        "Instance processes started on this node (first starts and restarts)",
        get(&s.spawns),
    );
    counter(
        r,
        "instance_restarts",
        "Starts of an instance that had run on this node before",
        get(&s.restarts),
    );
    counter(
        r,
        "instance_spawn_failures",
        "Instance starts that failed (spore, unpack, command)",
        get(&s.spawn_failures),
    );
    counter(
        r,
        "instance_refusals",
        "Instances this node refused to start (its own capacity)",
        get(&s.refusals),
    );
    counter(
        r,
        "instances_adopted",
        "Instances found running after an agent restart and adopted",
        get(&s.adopted),
    );
    counter(
        r,
        "instance_records_written",
        "Instance records written or deleted by this node (only on change)",
        get(&s.records_written),
    );
    counter(
        r,
        "instance_record_write_failures",
        "Instance record writes that failed",
        get(&s.record_write_failures),
    );
    let heal = Family::<Labels, Counter<u64>>::default();
    for (kind, n) in JobEventKind::ALL.iter().zip(&s.heal_events) {
        heal.get_or_create(&vec![("kind", kind.as_str().to_string())])
            .inc_by(get(n));
    }
    r.register(
        "heal_decisions",
        "Healing and rollout decisions of this node, by kind (moved, rollout_step, \
         rollout_done, rollout_failed, reverted); each is also a `job` event",
        heal,
    );
    counter(
        r,
        "rollout_reverts_written",
        "Automatic reverts this node wrote after a failed rollout",
        get(&s.reverts_written),
    );
    let cgroups = Family::<Labels, Gauge>::default();
    let version = match jobs.cgroups.version {
        CgroupVersion::V2 => "v2",
        CgroupVersion::V1 => "v1",
        CgroupVersion::None => "none",
    };
    cgroups
        .get_or_create(&vec![
            ("version", version.to_string()),
            ("limits", jobs.cgroups.limits.join(",")),
        ])
        .set(1);
    r.register(
        "cgroups",
        "The cgroup support instances get on this node (1 for the detected one)",
        cgroups,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;
    use crate::exec::CgroupSupport;
    use crate::jobs::LocalInstance;

    #[test]
    fn instances_by_state_counters_and_cgroups_are_exposed() {
        let jobs = JobsShared::new(Arc::new(CgroupSupport::none("test")));
        let one = |state| LocalInstance {
            job: "web".into(),
            state,
            pid: None,
        };
        jobs.publish(BTreeMap::from([
            ("a".to_string(), one(InstanceState::Ready)),
            ("b".to_string(), one(InstanceState::Ready)),
            ("c".to_string(), one(InstanceState::Failed)),
        ]));
        JobsShared::count(&jobs.stats.spawns);
        JobsShared::count(&jobs.stats.refusals);
        JobsShared::count(&jobs.stats.heal_events[0]);
        let mut r = Registry::with_prefix("myco");
        register(&mut r, &jobs);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for want in [
            "myco_instances{state=\"ready\"} 2",
            "myco_instances{state=\"failed\"} 1",
            "myco_instances{state=\"launching\"} 0",
            "myco_instance_spawns_total 1",
            "myco_heal_decisions_total{kind=\"moved\"} 1",
            "myco_heal_decisions_total{kind=\"reverted\"} 0",
            "myco_rollout_reverts_written_total 0",
            "myco_instance_refusals_total 1",
            "myco_instance_restarts_total 0",
            "myco_cgroups{version=\"none\",limits=\"\"} 1",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        // `/v1/status` shows the same support.
        let v = serde_json::to_value(&*jobs.cgroups).unwrap();
        assert_eq!(v["version"], "none");
        assert_eq!(v["reason"], "test");
    }
}
