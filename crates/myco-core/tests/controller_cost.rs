//! What one controller pass costs: `set_view` (decode-free: the view is
//! already decoded) places everything and reconciles this node's share.
//! A measurement, not a check of the machine.
//!
//! `cargo test -p myco-core --test controller_cost -- --ignored --nocapture`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use myco_core::Time;
use myco_core::jobs::controller::{Controller, ControllerConfig, JobAction, View};
use myco_core::jobs::placement::{Capacity, Liveness, NodeView};
use myco_proto::NodeId;
use myco_proto::job::{JobRecord, JobSpec};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn view(nodes: u64, jobs: usize, count: u32) -> View {
    let nodes = (1..=nodes)
        .map(|i| NodeView {
            id: NodeId::from_u64(i),
            liveness: Liveness::Up,
            tags: Some(BTreeMap::from([("zone".into(), format!("z{}", i % 3))])),
            capacity: Capacity {
                cpu_milli: 8_000,
                memory_mb: 16_384,
                pids: None,
            },
            draining: false,
        })
        .collect();
    let jobs = (0..jobs)
        .map(|i| {
            let text = format!("name = \"job-{i}\"\nspore = \"{DIGEST}\"\ncount = {count}");
            JobRecord::first(JobSpec::from_toml(&text).unwrap(), DIGEST, 0).unwrap()
        })
        .collect();
    View {
        wall_ms: 1_000_000,
        nodes,
        jobs,
        instances: Vec::new(),
        versions: Vec::new(),
        suspects: Vec::new(),
    }
}

/// Every node's controller starts its share; their records make the view
/// a running mesh's. Then one node's `set_view` is timed.
fn measure(nodes: u64, jobs: usize, count: u32) {
    let mut v = view(nodes, jobs, count);
    let config = ControllerConfig {
        settle: Duration::ZERO,
        state_settle: Duration::ZERO,
        seed: 1,
        ..Default::default()
    };
    for n in 1..=nodes {
        let mut c = Controller::new(NodeId::from_u64(n), v.nodes[0].capacity, config);
        c.set_local_scan(Time(0), vec![]);
        c.set_view(Time(1), v.clone());
        while let Some(a) = c.poll_action() {
            if let JobAction::Write { record } = a {
                v.instances.push(record);
            }
        }
    }
    assert_eq!(
        v.instances.len(),
        jobs * count as usize,
        "every slot started once"
    );
    let mut c = Controller::new(NodeId::from_u64(1), v.nodes[0].capacity, config);
    c.set_local_scan(Time(0), vec![]);
    let rounds = 20;
    let t = Instant::now();
    for r in 0..rounds {
        let mut w = v.clone();
        w.wall_ms += r;
        c.set_view(Time(r), w);
    }
    let each = t.elapsed() / rounds as u32;
    println!(
        "{nodes} nodes, {jobs} jobs x {count}: one set_view (clone of the view included) {:.2} ms",
        each.as_secs_f64() * 1e3
    );
}

#[test]
#[ignore = "a measurement: run with --nocapture"]
fn controller_cost() {
    measure(50, 10, 5);
    measure(300, 50, 10);
    measure(1_000, 100, 10);
}
