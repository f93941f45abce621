//! A test node: id `i`, address 10.0.0.i:7946, cluster key `[key; 32]`.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use myco_core::{Config, Node, NodeSetup, Time};
use myco_proto::frame::Peer;
use myco_proto::{Capacity, ClusterKey, KeyRing, NodeId, NodeManifest};

/// A node named `n{i}` with default settings, started at time zero.
pub fn node(i: u64, key: u8) -> Node {
    node_with(i, key, Config::default())
}

/// A node named `n{i}` with these settings, started at time zero.
#[allow(dead_code)] // not every test file needs other settings
pub fn node_with(i: u64, key: u8, config: Config) -> Node {
    let addr: SocketAddr = format!("10.0.0.{i}:7946").parse().unwrap();
    let id = NodeId::from_u64(i);
    let manifest = NodeManifest {
        format: NodeManifest::FORMAT,
        id,
        boot: 1,
        name: format!("n{i}"),
        tags: BTreeMap::new(),
        capacity: Capacity {
            cpu_milli: 1000,
            memory_mb: 512,
        },
        mesh_addr: addr,
        api_addr: None,
        edge_addr: None,
        version: "test".into(),
        key_id: String::new(),
        speaks: myco_proto::compat::THIS_BUILD,
    };
    Node::new(
        Time::ZERO,
        NodeSetup {
            peer: Peer {
                id,
                addr,
                boot: 1,
                bump: 0,
            },
            manifest,
            keys: KeyRing::new(ClusterKey::from_bytes([key; 32])),
            seed: i,
            config,
        },
    )
}
