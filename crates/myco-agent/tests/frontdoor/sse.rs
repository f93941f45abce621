//! Event-stream subscribers: the cap, `lagged`, and the reader that never reads.

use std::sync::atomic::Ordering;
use std::time::Duration;

use myco_agent::http::sse::SseLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::harness::*;

fn sse_limits() -> SseLimits {
    SseLimits {
        max_subscribers: 2,
        max_unsent_events: 8,
        max_unsent_bytes: 4096,
        stall_timeout: Duration::from_millis(500),
        keep_alive: Duration::from_secs(60),
    }
}

/// Subscribes on a fresh connection and reads the response head.
async fn subscribe(server: &TestServer) -> TcpStream {
    let mut s = server.connect().await;
    s.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(timeout(DEADLINE, s.read(&mut b)).await.unwrap().unwrap(), 1);
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

#[tokio::test]
async fn event_subscribers_over_the_cap_get_503() {
    let server = start(limits(), sse_limits()).await;
    let _a = subscribe(&server).await;
    let b = subscribe(&server).await;
    let (code, body) = server.get("/events", "").await;
    assert_eq!(code, 503);
    assert!(body.contains("limit is 2"), "{body}");
    assert_eq!(server.sse.refused_over_cap.load(Ordering::Relaxed), 1);
    // A subscriber leaving frees its place.
    drop(b);
    wait_for("the subscriber to leave", || {
        server.sse.active.load(Ordering::Relaxed) == 1
    })
    .await;
    let _c = subscribe(&server).await;
}

#[tokio::test]
async fn a_subscriber_that_fell_behind_gets_lagged_with_the_count() {
    let server = start(
        limits(),
        SseLimits {
            stall_timeout: Duration::from_secs(30),
            ..sse_limits()
        },
    )
    .await;
    let mut s = subscribe(&server).await;
    let payload = "x".repeat(1000);
    let sse = server.sse.clone();
    // Do not read, and publish until events are being skipped for us.
    let start = Instant::now();
    while sse.skipped.load(Ordering::Relaxed) == 0 {
        assert!(start.elapsed() < DEADLINE, "never fell behind");
        let _ = server.events.send(Ev(format!("\"{payload}\"")));
        tokio::task::yield_now().await;
    }
    // Now read: the stream carries a `lagged` event with the count missed.
    let mut seen = String::new();
    timeout(DEADLINE, async {
        let mut chunk = [0u8; 8192];
        while !seen.contains("event: lagged\ndata: {\"missed\":") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "stream ended");
            seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
            let _ = server.events.send(Ev("\"after\"".into()));
        }
    })
    .await
    .expect("no lagged event");
    assert!(sse.lagged.load(Ordering::Relaxed) >= 1);
    assert_eq!(sse.stalled_closed.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_disconnected_and_memory_stays_bounded() {
    let server = start(limits(), sse_limits()).await;
    let mut reader = subscribe(&server).await;
    let mut stalled = subscribe(&server).await;
    let sse = server.sse.clone();
    let payload = "y".repeat(1000);
    let start = Instant::now();
    let mut received = 0usize;
    let mut chunk = [0u8; 65536];
    // Publish (and keep the good reader reading) until the stalled one is cut.
    while sse.stalled_closed.load(Ordering::Relaxed) == 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "the stalled subscriber was never closed"
        );
        let _ = server.events.send(Ev(format!("\"{payload}\"")));
        if let Ok(Ok(n)) = timeout(Duration::from_millis(1), reader.read(&mut chunk)).await {
            assert!(n > 0, "the reading subscriber was closed");
            received += n;
        }
    }
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "closed before the stall timeout"
    );
    closed(&mut stalled).await;
    assert!(received > 0, "the reading subscriber got nothing");
    let peak = sse.peak_queued_bytes.load(Ordering::Relaxed);
    assert!(
        peak <= 2 * 4096,
        "queued {peak} bytes, over two subscribers' bound"
    );
    assert!(sse.skipped.load(Ordering::Relaxed) > 0);
    assert_eq!(server.stats().closed_by_handler, 1);
    wait_for("the stalled subscriber's place to free", || {
        sse.active.load(Ordering::Relaxed) == 1
    })
    .await;
}
