//! Replicated state across cores wired back to back: writes spread by push,
//! anti-entropy repairs what push missed, LWW decides conflicts, and a
//! node that was away catches up in bulk.

mod support;

fn node(i: u64) -> myco_core::Node {
    support::node(i, 7)
}

use std::net::SocketAddr;

use myco_core::{Config, Node, Time};
use myco_proto::Table;

/// Advances every core in 10 ms steps, delivering datagrams and stream
/// messages within the step; `cut` nodes neither send nor receive
/// messages (datagrams still flow, so membership stays whole), and
/// `drop_messages` loses every stream message.
struct Mesh {
    nodes: Vec<Node>,
    now: Time,
    /// Bytes of stream messages delivered so far.
    message_bytes: usize,
}

impl Mesh {
    fn new(n: u64) -> Mesh {
        Mesh::with(n, |_| Config::default())
    }

    /// A mesh whose node `i` (from 1) runs with `config(i)`.
    fn with(n: u64, config: impl Fn(u64) -> Config) -> Mesh {
        let mut nodes: Vec<Node> = (1..=n)
            .map(|i| support::node_with(i, 7, config(i)))
            .collect();
        let seed = nodes[0].identity().addr;
        for n in nodes.iter_mut().skip(1) {
            n.join(Time::ZERO, seed);
        }
        let mut m = Mesh {
            nodes,
            now: Time::ZERO,
            message_bytes: 0,
        };
        m.run(3000, &[], false);
        m
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.identity().addr == addr)
    }

    fn run(&mut self, ms: u64, cut: &[usize], drop_messages: bool) {
        let until = self.now.0 + ms;
        while self.now.0 < until {
            let now = self.now;
            for n in self.nodes.iter_mut() {
                n.handle_timeout(now);
            }
            loop {
                let mut moved = false;
                for i in 0..self.nodes.len() {
                    let src = self.nodes[i].identity().addr;
                    while let Some(t) = self.nodes[i].poll_transmit() {
                        moved = true;
                        if let Some(j) = self.index_of(t.to) {
                            self.nodes[j].handle_datagram(now, src, &t.payload);
                        }
                    }
                    while let Some(t) = self.nodes[i].poll_message() {
                        moved = true;
                        let Some(j) = self.index_of(t.to) else {
                            continue;
                        };
                        if drop_messages || cut.contains(&i) || cut.contains(&j) {
                            continue;
                        }
                        self.message_bytes += t.payload.len();
                        self.nodes[j].handle_message(now, &t.payload);
                    }
                    let _ = self.nodes[i].poll_persist();
                    while self.nodes[i].poll_event().is_some() {}
                }
                if !moved {
                    break;
                }
            }
            self.now = Time(now.0 + 10);
        }
    }

    /// A write by node `i` whose driver makes it durable at once.
    fn write(&mut self, i: usize, at: Time, key: &str, value: Option<Vec<u8>>) {
        let change = self.nodes[i].write(at, Table::KV, key, value).unwrap();
        self.nodes[i].durable(at, &[change.ts]);
    }

    fn value(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        self.nodes[i]
            .get(Table::KV, key)
            .and_then(|e| e.value.clone())
    }

    fn converged(&self) -> bool {
        let d = self.nodes[0].state_digest();
        self.nodes.iter().all(|n| n.state_digest() == d)
    }
}

#[test]
fn a_write_reaches_every_node_by_push_alone() {
    let mut m = Mesh::new(8);
    let now = m.now;
    m.write(3, now, "greeting", Some(b"hi".to_vec()));
    // 100 ms is far less than the anti-entropy interval: push did it.
    m.run(100, &[], false);
    for i in 0..8 {
        assert_eq!(
            m.value(i, "greeting").as_deref(),
            Some(&b"hi"[..]),
            "node {i}"
        );
    }
    assert!(m.converged());
}

#[test]
fn anti_entropy_repairs_what_push_lost_and_deletes_spread() {
    let mut m = Mesh::new(5);
    let now = m.now;
    for k in 0..50 {
        m.write(k % 5, now, &format!("k{k}"), Some(vec![k as u8]));
    }
    // Every push is lost; only later anti-entropy rounds can deliver.
    m.run(10, &[], true);
    assert!(!m.converged());
    m.run(8000, &[], false);
    assert!(m.converged(), "anti-entropy did not converge");
    assert_eq!(m.nodes[2].scan(Table::KV, "k").count(), 50);
    let now = m.now;
    m.write(0, now, "k7", None);
    m.run(2000, &[], false);
    assert!(
        (0..5).all(|i| m.value(i, "k7").is_none()),
        "delete did not spread"
    );
    assert!(m.converged());
}

/// Anti-entropy trades versions, not values: repairing two missed writes
/// among 2,000 held entries of 4 KiB moves those two values and a list of
/// versions, not the buckets around them. (Whole buckets, about 8 entries
/// each here, made a burst of large writes cost every round the state
/// around it, on the mesh loop: the false suspicions of issue 9.)
#[test]
fn anti_entropy_moves_only_the_values_that_differ() {
    let mut m = Mesh::new(2);
    let now = m.now;
    let value = vec![7u8; 4096];
    for k in 0..2000 {
        m.write(0, now, &format!("bulk/{k:04}"), Some(value.clone()));
    }
    m.run(2000, &[], false);
    assert!(m.converged(), "the bulk did not spread");
    let now = m.now;
    m.write(0, now, "new/a", Some(vec![1u8; 4096]));
    m.write(1, now, "new/b", Some(vec![2u8; 4096]));
    m.run(10, &[], true); // the pushes are lost
    assert!(!m.converged());
    let before = m.message_bytes;
    m.run(3000, &[], false);
    assert!(m.converged(), "anti-entropy did not repair the two writes");
    assert_eq!(m.value(1, "new/a"), Some(vec![1u8; 4096]));
    assert_eq!(m.value(0, "new/b"), Some(vec![2u8; 4096]));
    let moved = m.message_bytes - before;
    // Two values (8 KiB), each way's version lists for two buckets
    // (about 16 versions of ~60 bytes), digests (2 KiB each) and summaries.
    assert!(
        moved < 2 * 4096 + 12 * 1024,
        "repairing two writes moved {moved} bytes"
    );
}

#[test]
fn concurrent_writes_converge_to_the_later_timestamp() {
    let mut m = Mesh::new(3);
    let t = m.now;
    m.write(0, t, "x", Some(b"early".to_vec()));
    m.write(1, Time(t.0 + 5), "x", Some(b"late".to_vec()));
    m.run(3000, &[], false);
    for i in 0..3 {
        assert_eq!(m.value(i, "x").as_deref(), Some(&b"late"[..]));
    }
}

#[test]
fn a_node_cut_off_keeps_writing_and_both_sides_converge_after_heal() {
    let mut m = Mesh::new(4);
    let now = m.now;
    m.write(3, now, "island", Some(b"1".to_vec()));
    m.write(0, now, "mainland", Some(b"2".to_vec()));
    for k in 0..300 {
        m.write(1, now, &format!("bulk/{k}"), Some(vec![0; 100]));
    }
    m.run(3000, &[3], false);
    assert!(m.value(3, "mainland").is_none());
    assert!(m.value(0, "island").is_none());
    m.run(5000, &[], false);
    assert!(m.converged());
    assert_eq!(
        m.nodes[3].scan(Table::KV, "bulk/").count(),
        300,
        "bulk catch-up"
    );
    assert!(m.value(0, "island").is_some() && m.value(3, "mainland").is_some());
}

#[test]
fn a_local_write_leaves_the_node_only_once_durable() {
    let mut m = Mesh::new(3);
    let now = m.now;
    let change = m.nodes[0]
        .write(now, Table::KV, "k", Some(b"v".to_vec()))
        .unwrap();
    assert_eq!(
        m.value(0, "k").as_deref(),
        Some(&b"v"[..]),
        "the writer reads it at once"
    );
    // Neither push nor anti-entropy (a few rounds) carries it yet.
    m.run(3000, &[], false);
    assert!(
        (1..3).all(|i| m.value(i, "k").is_none()),
        "left before durable"
    );
    assert!(!m.converged());
    let now = m.now;
    m.nodes[0].durable(now, &[change.ts]);
    // Pushed within the push delay, well before the next anti-entropy round.
    m.run(50, &[], false);
    assert!((1..3).all(|i| m.value(i, "k").as_deref() == Some(&b"v"[..])));
    assert!(m.converged());
    // Reporting it again, or an unknown timestamp, changes nothing.
    let now = m.now;
    m.nodes[0].durable(now, &[change.ts, Default::default()]);
    m.run(50, &[], false);
    assert!(m.converged());
}

#[test]
fn a_write_never_reported_durable_spreads_by_anti_entropy_in_the_end() {
    let mut m = Mesh::new(3);
    let now = m.now;
    m.nodes[1]
        .write(now, Table::KV, "k", Some(b"v".to_vec()))
        .unwrap();
    m.run(5000, &[], false);
    assert!(
        m.value(0, "k").is_none(),
        "hidden while its persist may be running"
    );
    m.run(10_000, &[], false);
    assert!(
        m.converged(),
        "a failed persist must not split replicas for good"
    );
}

#[test]
fn oversized_writes_are_refused_and_change_nothing() {
    let mut m = Mesh::new(1);
    let now = m.now;
    let cfg = Config::default();
    assert!(m.nodes[0].write(now, Table::KV, "", Some(vec![])).is_err());
    assert!(
        m.nodes[0]
            .write(now, Table::KV, &"k".repeat(cfg.max_key + 1), Some(vec![]))
            .is_err()
    );
    assert!(
        m.nodes[0]
            .write(now, Table::KV, "k", Some(vec![0; cfg.max_value + 1]))
            .is_err()
    );
    assert_eq!(m.nodes[0].scan(Table::KV, "").count(), 0);
}

#[test]
fn restored_state_is_served_and_the_clock_never_goes_back() {
    let mut a = node(1);
    let change = a
        .write(Time(5_000), Table::KV, "k", Some(b"v".to_vec()))
        .unwrap();
    let mut b = node(1);
    b.restore(vec![change.clone()]);
    assert_eq!(
        b.get(Table::KV, "k").unwrap().value.as_deref(),
        Some(&b"v"[..])
    );
    // The restarted node's wall clock is behind its last write: still later.
    let again = b
        .write(Time(1_000), Table::KV, "k", Some(b"w".to_vec()))
        .unwrap();
    assert!(again.ts > change.ts);
}

fn short_grace() -> Config {
    Config {
        tombstone_grace: std::time::Duration::from_secs(2),
        ..Config::default()
    }
}

fn tombstones(m: &Mesh) -> Vec<usize> {
    m.nodes.iter().map(|n| n.state_size().1).collect()
}

#[test]
fn tombstones_are_collected_on_every_node_at_one_horizon() {
    let mut m = Mesh::with(4, |_| short_grace());
    for k in 0..20 {
        let now = m.now;
        m.write(k % 4, now, &format!("k{k}"), Some(b"v".to_vec()));
    }
    m.run(500, &[], false);
    for k in 0..10 {
        let now = m.now;
        m.write((k + 1) % 4, now, &format!("k{k}"), None);
    }
    m.run(1000, &[], false);
    assert_eq!(tombstones(&m), vec![10; 4], "kept through the grace");
    m.run(8000, &[], false);
    assert_eq!(tombstones(&m), vec![0; 4], "collected everywhere");
    assert!(m.converged());
    let h = m.nodes[0].horizon();
    assert!(h.at > 0 && m.nodes.iter().all(|n| n.horizon() == h));
    assert_eq!(m.nodes[2].scan(Table::KV, "").count(), 10);
    assert!(m.value(3, "k4").is_none() && m.value(3, "k14").is_some());
}

#[test]
fn a_node_that_does_not_collect_holds_everyone_back() {
    let mut m = Mesh::with(3, |i| Config {
        collect_tombstones: i != 2,
        ..short_grace()
    });
    let now = m.now;
    m.write(0, now, "k", Some(b"v".to_vec()));
    m.run(300, &[], false);
    let now = m.now;
    m.write(0, now, "k", None);
    m.run(10_000, &[], false);
    assert_eq!(tombstones(&m), vec![1; 3], "nobody collects without n2");
    assert!(m.converged());
}

#[test]
fn a_node_cut_off_holds_collection_back_then_catches_up() {
    let mut m = Mesh::with(3, |_| short_grace());
    let now = m.now;
    m.write(0, now, "k", Some(b"old".to_vec()));
    m.run(300, &[], false);
    // n3 is cut off from the replication streams while k is deleted: the
    // others cannot collect, since n3 is registered and never reported.
    let now = m.now;
    m.write(0, now, "k", None);
    m.run(8000, &[2], false);
    assert_eq!(tombstones(&m)[..2], [1, 1], "n3 holds collection back");
    assert_eq!(m.value(2, "k").as_deref(), Some(&b"old"[..]));
    // Healed: n3 takes the delete, all agree, all collect, and the old
    // value is gone everywhere.
    m.run(10_000, &[], false);
    assert_eq!(tombstones(&m), vec![0; 3]);
    assert!((0..3).all(|i| m.value(i, "k").is_none()));
    assert!(m.converged());
}
