//! Placement throughput: 100,000 instances onto 5,000 simulated nodes, and
//! the cost of recomputing after one node dies. A measurement, not a
//! check of the machine: run it in release and read the figures.
//!
//! `cargo test -p myco-core --release -- --ignored placement_throughput --nocapture`

use std::collections::BTreeMap;
use std::time::Instant;

use myco_core::jobs::placement::{Capacity, Cluster, Liveness, NodeView, Slot, place};
use myco_proto::NodeId;
use myco_proto::instance::{INSTANCE_RECORD_FORMAT, InstanceRecord, InstanceState};
use myco_proto::job::{JobRecord, JobSpec, Strategy};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn nodes(n: u64) -> Vec<NodeView> {
    (1..=n)
        .map(|i| NodeView {
            id: NodeId::from_u64(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            liveness: Liveness::Up,
            tags: Some(BTreeMap::from([("zone".into(), format!("z{}", i % 4))])),
            capacity: Capacity {
                cpu_milli: 8_000,
                memory_mb: 16_384,
                pids: Some(32_768),
            },
            draining: false,
        })
        .collect()
}

fn jobs(n: usize, count: u32) -> Vec<JobRecord> {
    (0..n)
        .map(|i| {
            let text = format!("name = \"job-{i}\"\nspore = \"{DIGEST}\"\ncount = {count}");
            let mut spec = JobSpec::from_toml(&text).unwrap();
            if i % 5 == 0 {
                spec.strategy = Strategy::Pack;
            }
            JobRecord::first(spec, DIGEST, 0).unwrap()
        })
        .collect()
}

fn records(p: &myco_core::jobs::placement::Placement) -> Vec<InstanceRecord> {
    let mut out = Vec::new();
    for (name, jp) in p.jobs() {
        for (slot, s) in jp.slots.iter().enumerate() {
            if let Slot::Node(node) = s {
                out.push(InstanceRecord {
                    format: INSTANCE_RECORD_FORMAT,
                    id: InstanceRecord::id_for(name, slot as u32, 1, *node),
                    job: name.into(),
                    slot: slot as u32,
                    version: 1,
                    node: *node,
                    state: InstanceState::Ready,
                    addr: None,
                    digest: DIGEST.into(),
                    restarts: 0,
                    last_exit: None,
                    reason: String::new(),
                    avoid_until_ms: None,
                    since_ms: 0,
                });
            }
        }
    }
    out
}

fn measure(label: &str, nodes: &[NodeView], jobs: &[JobRecord]) {
    let total: u32 = jobs.iter().map(|j| j.spec.count).sum();
    let cluster = Cluster {
        wall_ms: 0,
        nodes,
        jobs,
        instances: &[],
        versions: &[],
    };
    let t = Instant::now();
    let first = place(&cluster);
    let cold = t.elapsed();
    assert_eq!(
        first.assigned_count(),
        total as usize,
        "{label}: everything fits"
    );
    let running = records(&first);

    let mut after = nodes.to_vec();
    after[17].liveness = Liveness::Down;
    let dead = after[17].id;
    let on_dead = first.assigned_to(dead).count();
    let cluster = Cluster {
        wall_ms: 0,
        nodes: &after,
        jobs,
        instances: &running,
        versions: &[],
    };
    let t = Instant::now();
    let second = place(&cluster);
    let warm = t.elapsed();
    let moved: usize = first
        .jobs()
        .map(|(name, a)| {
            let b = second.job(name).unwrap();
            a.slots.iter().zip(&b.slots).filter(|(x, y)| x != y).count()
        })
        .sum();
    assert_eq!(moved, on_dead, "{label}: only the dead node's slots move");
    println!(
        "{label}: {total} instances on {} nodes: cold {:.0} ms ({:.0} placements/s); \
         after one node died: {:.0} ms, {moved} slots moved",
        nodes.len(),
        cold.as_secs_f64() * 1e3,
        f64::from(total) / cold.as_secs_f64(),
        warm.as_secs_f64() * 1e3,
    );
}

#[test]
#[ignore = "a measurement: run in release with --nocapture"]
fn placement_throughput() {
    let n = nodes(5_000);
    measure("1,000 jobs x 100", &n, &jobs(1_000, 100));
    measure("10,000 jobs x 10", &n, &jobs(10_000, 10));
    measure("100 jobs x 1000", &n, &jobs(100, 1_000));
}
