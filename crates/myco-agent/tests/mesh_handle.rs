//! The mesh loop's typed handle with a real core, store, socket and
//! streams: writes answer only once durable and share commits; reads are
//! served from the published view and never wait for the loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use myco_agent::mesh::{Clock, MeshHandle, MeshLoop, MeshParts, WriteError};
use myco_agent::net::streams::{StreamConfig, Streams};
use myco_agent::spores::SporeStore;
use myco_agent::store::Store;
use myco_core::{Node, NodeSetup};
use myco_proto::frame::Peer;
use myco_proto::{Capacity, Change, ClusterKey, KeyRing, NodeId, NodeManifest, Table, Timestamp};
use tokio::net::UdpSocket;

fn dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mesh-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A one-node mesh on loopback, its core restored with `restored`.
async fn start(test: &str, restored: Vec<Change>) -> (MeshLoop, MeshHandle, Arc<Store>) {
    let dir = dir(test);
    let (store, _) = Store::open(&dir.join("state.redb")).unwrap();
    let store = Arc::new(store);
    let id = NodeId::from_u64(1);
    let key = ClusterKey::from_bytes([3; 32]);
    // The streams listen on TCP at the UDP socket's port number, which
    // another test may hold: try fresh ports until both are ours.
    let mut attempt = 0;
    let (socket, addr, streams, incoming) = loop {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = socket.local_addr().unwrap();
        match Streams::bind(
            addr,
            std::slice::from_ref(&key),
            id,
            StreamConfig::default(),
        )
        .await
        {
            Ok((streams, incoming)) => break (socket, addr, streams, incoming),
            Err(e) if attempt < 20 => {
                attempt += 1;
                eprintln!("port {addr} taken for streams ({e}); trying another");
            }
            Err(e) => panic!("no free port pair after 20 tries: {e}"),
        }
    };
    let spores = SporeStore::open(&dir, streams.clone(), addr).await.unwrap();
    let keys = KeyRing::new(key);
    let manifest = NodeManifest {
        format: NodeManifest::FORMAT,
        id,
        boot: 1,
        name: "n1".into(),
        tags: Default::default(),
        capacity: Capacity {
            cpu_milli: 1000,
            memory_mb: 512,
        },
        mesh_addr: addr,
        api_addr: None,
        edge_addr: None,
        version: myco_proto::MYCO_VERSION.into(),
        key_id: keys.primary_id().to_string(),
        speaks: myco_proto::compat::THIS_BUILD,
    };
    let clock = Clock::start();
    let peer = Peer {
        id,
        addr,
        boot: 1,
        bump: 0,
    };
    let mut node = Node::new(
        clock.now(),
        NodeSetup {
            peer,
            manifest,
            keys,
            seed: 7,
            config: Default::default(),
        },
    );
    node.restore(restored);
    let remote_logs = myco_agent::logs::RemoteLogs::start(
        streams.clone(),
        addr,
        dir.to_path_buf(),
        myco_agent::http::logs::Followers::default(),
    );
    let (mesh, handle) = MeshLoop::new(MeshParts {
        node,
        socket,
        clock,
        streams,
        incoming,
        store: store.clone(),
        spores,
        logs: remote_logs,
        apps: Default::default(),
    });
    (mesh, handle, store)
}

#[tokio::test]
async fn writes_answer_once_durable_share_commits_and_are_read_back() {
    let (mesh, handle, store) = start("writes", Vec::new()).await;
    let task = tokio::spawn(mesh.run());
    let writers: Vec<_> = (0..200)
        .map(|i| {
            let (handle, store) = (handle.clone(), store.clone());
            tokio::spawn(async move {
                let key = format!("k/{i:03}");
                let ts = handle
                    .write(Table::KV, &key, Some(vec![i as u8]))
                    .await
                    .unwrap();
                // Durable before the answer: the store has counted it.
                assert!(store.stats().changes_written >= 1);
                // Read-your-writes from the published view.
                let entry = handle.get(Table::KV, &key).expect("written key is visible");
                assert_eq!((entry.ts, entry.value), (ts, Some(vec![i as u8])));
                ts
            })
        })
        .collect();
    let mut versions = Vec::new();
    for w in writers {
        versions.push(w.await.unwrap());
    }
    let stats = store.stats();
    assert_eq!(stats.changes_written, 200);
    assert!(
        stats.transactions < 200,
        "200 concurrent writes should share commits: {stats:?}"
    );
    assert_eq!(handle.scan(Table::KV, "k/", 1000).len(), 200);

    // A delete is a write too; refused writes say why.
    handle.write(Table::KV, "k/000", None).await.unwrap();
    assert!(handle.get(Table::KV, "k/000").is_none());
    assert_eq!(handle.scan(Table::KV, "k/", 1000).len(), 199);
    let refused = handle.write(Table::KV, "", Some(vec![1])).await;
    assert!(
        matches!(refused, Err(WriteError::Refused(_))),
        "{refused:?}"
    );

    handle.leave(Duration::from_secs(2)).await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the loop stops after leaving")
        .unwrap();
    // Once the loop is gone, writes say so rather than hang.
    assert!(matches!(
        handle.write(Table::KV, "late", Some(vec![1])).await,
        Err(WriteError::Stopped)
    ));
}

/// Reads do not go through the loop at all: with the loop not even
/// running, a listing of 100,000 entries is answered from the view.
#[tokio::test]
async fn big_listings_are_served_without_the_loop() {
    let node = NodeId::from_u64(1);
    let restored: Vec<Change> = (0..100_000u32)
        .map(|i| Change {
            table: Table::KV,
            key: format!("big/{i:06}"),
            ts: Timestamp {
                wall_ms: 1_000 + u64::from(i),
                logical: 0,
                node,
            },
            value: Some(i.to_be_bytes().to_vec()),
        })
        .collect();
    let (mesh, handle, _store) = start("big", restored).await;
    let started = Instant::now();
    let all = handle.scan(Table::KV, "big/", 100_000);
    assert_eq!(all.len(), 100_000);
    assert_eq!(all[99_999].0, "big/099999");
    assert_eq!(
        handle.get(Table::KV, "big/012345").unwrap().value,
        Some(12345u32.to_be_bytes().to_vec())
    );
    eprintln!(
        "100,000-entry listing off the loop: {:?}",
        started.elapsed()
    );

    // With the loop running, listings in flight do not hold up a write.
    let task = tokio::spawn(mesh.run());
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let handle = handle.clone();
            tokio::task::spawn_blocking(move || {
                for _ in 0..3 {
                    assert_eq!(handle.scan(Table::KV, "big/", 100_000).len(), 100_000);
                }
            })
        })
        .collect();
    let ts = handle
        .write(Table::KV, "big/new", Some(b"v".to_vec()))
        .await
        .unwrap();
    assert_eq!(handle.get(Table::KV, "big/new").unwrap().ts, ts);
    for r in readers {
        r.await.unwrap();
    }
    handle.leave(Duration::from_secs(2)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

/// Group commit through the handle: 64 writers, each waiting for its
/// write before the next, as HTTP clients do. Compare with the store alone
/// (`tests/store.rs`, `throughput`) built the same way.
/// `cargo test -p myco-agent --test mesh_handle -- --ignored --exact handle_throughput --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "measurement, prints figures"]
async fn handle_throughput() {
    const WRITERS: u64 = 64;
    const PER_WRITER: u64 = 500;
    let (mesh, handle, store) = start("throughput", Vec::new()).await;
    let task = tokio::spawn(mesh.run());
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let handle = handle.clone();
            tokio::spawn(async move {
                for i in 0..PER_WRITER {
                    let key = format!("jobs/writer-{w}/{i}");
                    let value = b"small value, 32 bytes long....".to_vec();
                    handle.write(Table::KV, &key, Some(value)).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();
    let writes = WRITERS * PER_WRITER;
    let stats = store.stats();
    println!("writes            {writes} from {WRITERS} writers in {elapsed:.2?}");
    println!(
        "acknowledged/s    {:.0}",
        writes as f64 / elapsed.as_secs_f64()
    );
    println!(
        "transactions      {} ({:.1} writes each)",
        stats.transactions,
        writes as f64 / stats.transactions as f64
    );
    handle.leave(Duration::from_secs(2)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
