//! Remote log reading between two nodes' stream endpoints, without a mesh:
//! node B asks node A for an instance's logs over the real encrypted
//! streams (each inbox routed to its node's `RemoteLogs` as the mesh loop
//! does). An answer larger than the acknowledgement window arrives whole
//! and in order, a follow sees new lines, an unknown instance is refused,
//! and bad messages are counted and dropped.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use myco_agent::exec::LogStream;
use myco_agent::exec::logs::log_path;
use myco_agent::http::logs::Followers;
use myco_agent::logs::{Piece, RemoteLogs};
use myco_agent::net::streams::{Inbox, StreamConfig, Streams};
use myco_proto::logs::{LogMessage, LogRefusal};
use myco_proto::{ClusterKey, NodeId};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

async fn node(n: u64, data: &Path) -> Arc<RemoteLogs> {
    let key = ClusterKey::from_bytes([9; 32]);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (streams, inbox) = Streams::bind(any, &[key], NodeId::from_u64(n), StreamConfig::default())
        .await
        .unwrap();
    let logs = RemoteLogs::start(
        streams.clone(),
        streams.local_addr(),
        data.to_path_buf(),
        Followers::default(),
    );
    tokio::spawn(route(inbox, logs.clone(), streams));
    logs
}

/// What the mesh loop does with jobs-channel messages.
async fn route(mut inbox: Inbox, logs: Arc<RemoteLogs>, _keep: Streams) {
    while let Some(m) = inbox.recv().await {
        logs.on_bytes(&m.message);
    }
}

fn data_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("myco-remote-logs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn append(dir: &Path, stream: LogStream, text: &str) {
    let path = log_path(dir, stream);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

async fn next(rx: &mut mpsc::Receiver<Piece>) -> Option<Piece> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a piece within the deadline")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cross_the_streams_whole_in_order_and_followed() {
    let a_data = data_dir("a");
    let b_data = data_dir("b");
    let a = node(1, &a_data).await;
    let b = node(2, &b_data).await;
    let a_addr = a_streams_addr(&a);
    let id = "web-0-v1-aaaa";
    let dir = myco_agent::exec::instance_dir::instance_dir(&a_data, id).unwrap();
    // ~1.9 MB: many more chunks than the window of unacknowledged ones.
    let lines: String = (0..9000)
        .map(|i| format!("line {i} {}\n", "x".repeat(200)))
        .collect();
    append(&dir, LogStream::Stdout, &lines);
    append(&dir, LogStream::Stderr, "oops\n");

    let t0 = std::time::Instant::now();
    let mut rx = b.ask(a_addr, "web", id, 10_000, false, false);
    let mut got = String::new();
    while let Some(p) = next(&mut rx).await {
        match p {
            Piece::Text(t) => got.push_str(&t),
            other => panic!("unexpected {other:?}"),
        }
    }
    eprintln!(
        "remote tail: {} bytes in {:?} over the streams",
        got.len(),
        t0.elapsed()
    );
    assert_eq!(got, lines + "stderr: oops\n");

    // Follow, labelled: the tail, then a line written afterwards.
    let mut rx = b.ask(a_addr, "web", id, 1, true, true);
    assert_eq!(
        next(&mut rx).await,
        Some(Piece::Text(format!(
            "[{id}] line 8999 {}\n[{id}] stderr: oops\n",
            "x".repeat(200)
        )))
    );
    append(&dir, LogStream::Stdout, "later\n");
    loop {
        match next(&mut rx).await {
            Some(Piece::Text(t)) if t.is_empty() => continue,
            Some(p) => {
                assert_eq!(p, Piece::Text(format!("[{id}] later\n")));
                break;
            }
            None => panic!("the follow ended"),
        }
    }
    drop(rx);
    // The asker's Close reaches the server, which stops and frees its slot.
    wait_until("the follow served by A ends", || a.serving() == 0).await;

    // Followers are bounded: past the limit, a follow is refused as busy.
    let mut held = Vec::new();
    for _ in 0..myco_agent::http::logs::MAX_FOLLOWERS {
        let mut rx = b.ask(a_addr, "web", id, 0, true, false);
        let first = next(&mut rx).await;
        assert!(matches!(first, Some(Piece::Text(_))), "{first:?}");
        held.push(rx);
    }
    let mut rx = b.ask(a_addr, "web", id, 0, true, false);
    assert_eq!(next(&mut rx).await, Some(Piece::Refused(LogRefusal::Busy)));
    drop(held);
    wait_until("every follow served by A ends", || a.serving() == 0).await;
    let mut rx = b.ask(a_addr, "web", id, 0, true, false);
    assert!(matches!(next(&mut rx).await, Some(Piece::Text(_))));
    drop(rx);

    // Unknown instance, bad id.
    let mut rx = b.ask(a_addr, "web", "web-1-v1-none", 10, false, false);
    assert_eq!(
        next(&mut rx).await,
        Some(Piece::Refused(LogRefusal::NotFound))
    );
    let mut rx = b.ask(a_addr, "web", "../etc", 10, false, false);
    assert!(matches!(
        next(&mut rx).await,
        Some(Piece::Refused(LogRefusal::Invalid(_)))
    ));
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn a_streams_addr(logs: &RemoteLogs) -> SocketAddr {
    logs.addr()
}

#[tokio::test]
async fn bad_and_stray_messages_are_counted_and_dropped() {
    let data = data_dir("bad");
    let a = node(3, &data).await;
    a.on_bytes(&[]);
    a.on_bytes(&[200, 1, 2, 3]);
    a.on_bytes(&[myco_proto::logs::LOG_PROTO, 0xff, 0xff, 0xff]);
    a.on_message(LogMessage::Chunk {
        request: 42,
        seq: 0,
        text: "stray".into(),
    });
    a.on_message(LogMessage::Ack {
        request: 42,
        next: 1,
        from: "127.0.0.1:1".parse().unwrap(),
    });
    assert_eq!(a.dropped(), 5);
}
