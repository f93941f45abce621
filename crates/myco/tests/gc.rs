//! End-to-end tombstone collection with real agents: deleted keys'
//! tombstones are collected on every node once all registered nodes agree
//! on a horizon, a node that is away holds collection back, and once it
//! is back everyone collects and nothing deleted comes back.
//!
//! The agents run with `[state] tombstone_grace_secs = 2` so collection
//! happens within seconds.

mod support;

use std::time::Duration;

use support::{Agent, Harness, POLL, wait_for};

const SETTLE: Duration = Duration::from_secs(60);

/// A gauge or counter from an agent's /metrics.
fn metric(a: &Agent, name: &str) -> Result<f64, String> {
    let text = a.anon().metrics().map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .ok_or_else(|| format!("no {name} in /metrics"))
}

/// Three agents like [`Harness::mesh`], with a 2 s tombstone grace.
fn start_three(h: &mut Harness) {
    let config = h.root.join("myco.toml");
    std::fs::write(&config, "[state]\ntombstone_grace_secs = 2\n").unwrap();
    h.mesh_args(3, &["--config", config.to_str().unwrap()]);
}

/// Waits until every running agent in `nodes` holds no tombstone.
fn all_collected(h: &Harness, nodes: &[usize]) {
    wait_for("every tombstone collected everywhere", SETTLE, || {
        for &i in nodes {
            let a = h.agent(i);
            let t = metric(a, "myco_state_tombstones")?;
            if t != 0.0 {
                return Err(format!("{} holds {t} tombstones", h.agent(i).name));
            }
            if metric(a, "myco_state_horizon_seconds")? == 0.0 {
                return Err(format!("{} applied no horizon", h.agent(i).name));
            }
        }
        Ok(())
    });
}

#[track_caller]
fn status(h: &Harness, i: usize, key: &str) -> u16 {
    match h.agent(i).client().kv_get(key) {
        Ok(_) => 200,
        Err(e) => e.status().unwrap_or_else(|| panic!("GET {key}: {e}")),
    }
}

#[test]
fn tombstones_are_collected_everywhere_and_an_absent_node_holds_it_back() {
    let mut h = Harness::new("gc");
    start_three(&mut h);
    for k in 0..40 {
        let key = format!("gc/k{k}");
        h.agent(k % 3)
            .client()
            .kv_put(&key, b"v")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    for k in 0..20 {
        let key = format!("gc/k{k}");
        h.agent((k + 1) % 3)
            .client()
            .kv_del(&key)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    all_collected(&h, &[0, 1, 2]);
    for i in 0..3 {
        assert_eq!(status(&h, i, "gc/k3"), 404, "a deleted key came back");
        assert_eq!(status(&h, i, "gc/k33"), 200, "a live key went");
        assert_eq!(h.agent(i).client().kv_list("gc/").unwrap().len(), 20);
    }

    // c is away: deletes made meanwhile keep their tombstones, since c
    // may still hold the values they delete.
    h.kill(2);
    for k in 20..30 {
        let key = format!("gc/k{k}");
        h.agent(0)
            .client()
            .kv_del(&key)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    wait_for("the deletes on both live nodes", SETTLE, || {
        let held: Vec<f64> = [0, 1]
            .iter()
            .map(|&i| metric(h.agent(i), "myco_state_tombstones"))
            .collect::<Result<_, _>>()?;
        (held == [10.0, 10.0])
            .then_some(())
            .ok_or_else(|| format!("tombstones held: {held:?}"))
    });
    // An absence can only be watched for a while: three graces, both live
    // nodes, every poll (a collection would take one grace and a round).
    let until = std::time::Instant::now() + Duration::from_secs(6);
    while std::time::Instant::now() < until {
        for i in [0, 1] {
            let held = metric(h.agent(i), "myco_state_tombstones").unwrap();
            assert_eq!(
                held,
                10.0,
                "n{} collected while a registered node was away",
                i + 1
            );
        }
        std::thread::sleep(POLL);
    }

    // Back on the same data dir: it learns the deletes, everyone agrees,
    // everyone collects, and nothing deleted comes back anywhere.
    h.restart(2);
    all_collected(&h, &[0, 1, 2]);
    for i in 0..3 {
        for k in [5, 25] {
            assert_eq!(
                status(&h, i, &format!("gc/k{k}")),
                404,
                "gc/k{k} came back on {i}"
            );
        }
        assert_eq!(
            h.agent(i).client().kv_list("gc/").unwrap().len(),
            10,
            "node {i}"
        );
    }
    // A deleted key can be written again.
    h.agent(2)
        .client()
        .kv_put("gc/k5", b"again")
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for("the rewrite everywhere", SETTLE, || {
        (0..3)
            .all(|i| status(&h, i, "gc/k5") == 200)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
}
