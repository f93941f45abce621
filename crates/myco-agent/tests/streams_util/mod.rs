//! What the stream tests share: endpoints on loopback with given keys, and
//! waiting on an endpoint's counters.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use myco_agent::net::streams::{Inbox, StreamConfig, StreamStats, Streams};
use myco_proto::{ClusterKey, NodeId};

/// How long any one wait may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// Cluster key number `n`.
pub fn key(n: u8) -> ClusterKey {
    ClusterKey::from_bytes([n; 32])
}

/// Loopback, any free port.
pub fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Stream endpoint of node `n` with `keys`, default limits.
pub async fn node(n: u64, keys: &[ClusterKey]) -> (Streams, Inbox) {
    node_with(n, keys, StreamConfig::default()).await
}

/// [`node`] with other limits.
pub async fn node_with(n: u64, keys: &[ClusterKey], config: StreamConfig) -> (Streams, Inbox) {
    Streams::bind(any_port(), keys, NodeId::from_u64(n), config)
        .await
        .unwrap()
}

/// Polls `streams`' counters until `done` holds, or fails after the deadline.
pub async fn until(streams: &Streams, what: &str, done: impl Fn(&StreamStats) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = streams.stats();
        if done(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
