//! The agent's front door under attack: a real server ([`Server::serve`])
//! on loopback with a small router behind the Host guard and the SSE hub,
//! and raw sockets doing what the attacks in issue 9 did. Limits are tiny
//! so each attack hits them in milliseconds; waits poll a condition up to
//! a deadline.

#[path = "frontdoor/harness.rs"]
mod harness;
#[path = "frontdoor/sse.rs"]
mod sse;

use std::sync::atomic::Ordering;
use std::time::Duration;

use myco_agent::http::sse::SseLimits;
use myco_agent::net::serve::ServeLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use harness::*;

#[tokio::test]
async fn idle_connections_past_the_cap_are_closed_and_health_still_answers() {
    let limits = ServeLimits {
        // Long enough that the idle attackers hold their slots all test long.
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..limits()
    };
    let server = start(limits, SseLimits::default()).await;
    let mut idle = Vec::new();
    for _ in 0..32 {
        idle.push(server.connect().await);
    }
    wait_for("the cap to fill", || server.stats().open == 32).await;

    // Reserve connections: /health and token holders get through, once each.
    assert_eq!(server.get("/health", "").await, (200, "ok".into()));
    let (code, body) = server.get("/hello", "").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("limit of 32 connections"), "{body}");
    let mut s = server.connect().await;
    let req = format!("GET /hello HTTP/1.1\r\nHost: localhost\r\nAuthorization: {TOKEN}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await, Some((200, "hi".into())));
    closed(&mut s).await; // a reserve connection serves one request
    wait_for("reserve connections to close", || server.stats().open == 32).await;

    // Idlers in the reserve do not keep /health out: the oldest makes way.
    let mut idlers = Vec::new();
    for _ in 0..4 {
        idlers.push(server.connect().await);
    }
    wait_for("the reserve to fill", || server.stats().open == 36).await;
    assert_eq!(server.get("/health", "").await, (200, "ok".into()));
    closed(&mut idlers[0]).await;
    assert_eq!(server.stats().reserve_evicted, 1);
    drop(idlers);
    wait_for("the idlers to leave", || server.stats().open == 32).await;

    // Reserve connections mid-request cannot be evicted: past them, new
    // connections are closed at once.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut s = server.connect().await;
        let req =
            format!("GET /slow HTTP/1.1\r\nHost: localhost\r\nAuthorization: {TOKEN}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        busy.push(s);
    }
    wait_for("the slow requests to start", || {
        server.entered.load(Ordering::Relaxed) == 4
    })
    .await;
    for _ in 0..10 {
        let mut s = server.connect().await;
        assert!(closed(&mut s).await < Duration::from_secs(2));
    }
    let stats = server.stats();
    assert_eq!(stats.refused_over_cap, 10);
    assert_eq!(stats.open, 36, "refused connections must not count as open");
    assert_eq!(stats.reserve_used, 3 + 4 + 1 + 4);
    assert_eq!(stats.reserve_refused, 1);
    server.release.add_permits(4);
    for s in &mut busy {
        assert_eq!(read_response(s).await, Some((200, "finally".into())));
    }

    // The attackers leave: the slots come back.
    drop(idle);
    wait_for("idle connections to be released", || {
        server.stats().open == 0
    })
    .await;
    assert_eq!(server.get("/hello", "").await, (200, "hi".into()));
}

/// A flood of idlers arriving faster than their victims close: a
/// connection that evicted an idler and waits for its place has not been
/// read, so it is never the next victim; its head is served.
#[tokio::test]
async fn a_head_waiting_for_its_place_is_not_evicted() {
    let limits = ServeLimits {
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..limits()
    };
    let server = start(limits, SseLimits::default()).await;
    let mut held = Vec::new();
    for _ in 0..32 + 4 {
        held.push(server.connect().await);
    }
    wait_for("the cap and the reserve to fill", || {
        server.stats().open == 36
    })
    .await;
    // Blocking connects on this test's only thread: the server runs none
    // of its tasks until the await below, so all nine wait in the
    // listener's backlog, the honest head already in its socket buffer.
    let mut honest = std::net::TcpStream::connect(server.addr).unwrap();
    std::io::Write::write_all(
        &mut honest,
        b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .unwrap();
    let flood: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(server.addr).unwrap())
        .collect();
    honest.set_nonblocking(true).unwrap();
    let mut honest = TcpStream::from_std(honest).unwrap();
    // The honest connection and the first three idlers evict the four
    // idlers that were read; the other five find only connections not
    // read yet and are refused.
    assert_eq!(read_response(&mut honest).await, Some((200, "ok".into())));
    let stats = server.stats();
    assert_eq!(stats.reserve_evicted, 4, "{stats:?}");
    assert_eq!(stats.refused_over_cap, 5, "{stats:?}");
    drop((flood, held));
}

#[tokio::test]
async fn a_slowloris_is_closed_after_the_header_timeout() {
    let server = start(limits(), SseLimits::default()).await;
    let mut s = server.connect().await;
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let start = Instant::now();
    // Dribble a header line every 50 ms (the attack), until the server hangs up.
    let mut buf = [0u8; 64];
    loop {
        assert!(start.elapsed() < DEADLINE, "slowloris never closed");
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            break;
        }
        match timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => panic!(
                "unexpected answer: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    assert_eq!(server.stats().header_timeouts, 1);

    // A connection that sends nothing at all is a slow head too.
    let mut silent = server.connect().await;
    closed(&mut silent).await;
    wait_for("the silent connection to count", || {
        server.stats().header_timeouts == 2
    })
    .await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(limits(), SseLimits::default()).await;
    let mut s = server.connect().await;
    for _ in 0..2 {
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut s).await, Some((200, "hi".into())));
    }
    let idle_for = closed(&mut s).await;
    assert!(
        idle_for >= Duration::from_millis(250),
        "closed too early: {idle_for:?}"
    );
    wait_for("the idle close to count", || {
        server.stats().idle_closed == 1
    })
    .await;
    assert_eq!(server.stats().header_timeouts, 0);
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let server = start(limits(), SseLimits::default()).await;
    let mut s = server.connect().await;
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let (code, body) = read_response(&mut s).await.expect("an answer");
    assert_eq!(code, 408, "{body}");
    assert!(body.contains("stopped arriving"), "{body}");
    closed(&mut s).await;
    assert_eq!(server.stats().body_timeouts, 1);

    // A body that keeps coming is fine.
    let mut s = server.connect().await;
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nabcd")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await, Some((200, "4".into())));
}

#[tokio::test]
async fn an_oversized_body_gets_413_without_being_read() {
    let server = start(limits(), SseLimits::default()).await;
    // Declared too large: answered before a byte of it is sent.
    let mut s = server.connect().await;
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n")
        .await
        .unwrap();
    let (code, body) = read_response(&mut s).await.expect("an answer");
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("1024 bytes"), "{body}");
    closed(&mut s).await;

    // Chunked, so undeclared: refused when it grows past the limit.
    let mut s = server.connect().await;
    let chunk = "x".repeat(800);
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut s).await.map(|r| r.0), Some(413));
    assert_eq!(server.stats().body_too_large, 2);
}

#[tokio::test]
async fn a_client_that_stops_reading_a_response_is_cut_off() {
    let limits = ServeLimits {
        send_stall_timeout: Duration::from_millis(300),
        ..limits()
    };
    let server = start(limits, SseLimits::default()).await;
    let mut s = server.connect().await;
    s.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // Read nothing: once the buffers are full the server's writes block.
    wait_for("the send stall to be noticed", || {
        server.stats().send_timeouts == 1
    })
    .await;
    closed(&mut s).await;
    assert_eq!(server.stats().open, 0);
    // A client that reads gets all of it.
    let mut s = server.connect().await;
    s.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (code, body) = read_response(&mut s).await.expect("the whole body");
    assert_eq!((code, body.len()), (200, 1 << 20));
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let server = start(limits(), SseLimits::default()).await;
    let big = "a".repeat(10_000);
    let (code, _) = server.get("/hello", &format!("X-Big: {big}\r\n")).await;
    assert_eq!(code, 431);
    let many: String = (0..40).map(|i| format!("X-{i}: 1\r\n")).collect();
    let (code, _) = server.get("/hello", &many).await;
    assert_eq!(code, 431);
}

#[tokio::test]
async fn foreign_hosts_and_origins_are_refused_before_any_route() {
    let server = start(limits(), SseLimits::default()).await;
    let port = server.addr.port();
    let ask = |method: &'static str, host: String, origin: Option<&'static str>| {
        let addr = server.addr;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let origin = origin
                .map(|o| format!("Origin: {o}\r\n"))
                .unwrap_or_default();
            let req = format!(
                "{method} /write HTTP/1.1\r\nHost: {host}\r\n{origin}Content-Length: 0\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            read_response(&mut s).await.expect("an answer")
        }
    };
    let (code, body) = ask("POST", "rebind.evil.example".into(), None).await;
    assert_eq!(code, 421);
    assert!(body.contains("api_allowed_hosts"), "{body}");
    assert_eq!(ask("POST", format!("localhost:{port}"), None).await.0, 200);
    assert_eq!(ask("POST", format!("127.0.0.1:{port}"), None).await.0, 200);
    assert_eq!(ask("POST", "myco.test".into(), None).await.0, 200);
    assert_eq!(ask("GET", "evil.example".into(), None).await.0, 421);

    let (code, body) = ask("POST", "localhost".into(), Some("http://evil.example")).await;
    assert_eq!(code, 403);
    assert!(body.contains("api_allowed_hosts"), "{body}");
    assert_eq!(ask("POST", "localhost".into(), Some("null")).await.0, 403);
    assert_eq!(
        ask("POST", "localhost".into(), Some("http://localhost:7070"))
            .await
            .0,
        200
    );
    // Reads are not checked for Origin (GET /write is 405, past the guard).
    assert_eq!(
        ask("GET", "localhost".into(), Some("http://evil.example"))
            .await
            .0,
        405
    );

    let refused = &server.guard;
    assert_eq!(refused.refused_host.load(Ordering::Relaxed), 2);
    assert_eq!(refused.refused_origin.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn bare_lf_heads_pass_hyper_but_not_a_strict_server() {
    let raw = b"GET /hello HTTP/1.1\nHost: localhost\n\n";
    // What hyper does on its own: httparse accepts bare LF.
    let lenient = start(limits(), SseLimits::default()).await;
    let mut s = lenient.connect().await;
    s.write_all(raw).await.unwrap();
    assert_eq!(read_response(&mut s).await, Some((200, "hi".into())));

    let strict = start(
        ServeLimits {
            strict_line_endings: true,
            ..limits()
        },
        SseLimits::default(),
    )
    .await;
    let mut s = strict.connect().await;
    s.write_all(raw).await.unwrap();
    assert_eq!(
        read_response(&mut s).await,
        None,
        "a bare-LF head was answered"
    );
    assert_eq!(strict.stats().bare_lf_refused, 1);
    // CRLF heads, with a body holding a bare LF, still work when strict.
    let mut s = strict.connect().await;
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\na\nb")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await, Some((200, "3".into())));
    // The next head on the same connection is checked again.
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await, Some((200, "hi".into())));
    s.write_all(b"GET /hello HTTP/1.1\nHost: localhost\n\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut s).await, None);
    assert_eq!(strict.stats().bare_lf_refused, 2);
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let mut server = start(limits(), SseLimits::default()).await;
    let mut slow = server.connect().await;
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    wait_for("the slow request to start", || server.stats().accepted == 1).await;
    let mut idle = server.connect().await;
    idle.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await, Some((200, "hi".into())));

    server.stop.take().unwrap().send(()).unwrap();
    closed(&mut idle).await; // idle connections close at once
    assert!(
        !server.task.is_finished(),
        "returned with a request in flight"
    );
    server.release.add_permits(1);
    assert_eq!(
        read_response(&mut slow).await,
        Some((200, "finally".into()))
    );
    timeout(DEADLINE, &mut server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "still listening"
    );
}

/// Set in the child process that runs the descriptor-exhaustion test, so
/// the lowered descriptor limit touches no other test.
const EMFILE_CHILD: &str = "FRONTDOOR_EMFILE_CHILD";

#[tokio::test]
async fn descriptor_exhaustion_pauses_accept_and_recovers() {
    let name = "descriptor_exhaustion_pauses_accept_and_recovers";
    if std::env::var_os(EMFILE_CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads=1", "--nocapture"])
            .env(EMFILE_CHILD, "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
        return;
    }
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let server = start(limits(), SseLimits::default()).await;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 256.min(hard), hard).unwrap();
    // Use up every descriptor, then free one for the client's socket.
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    hog.pop();
    let mut s = server.connect().await;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The server cannot accept it: it counts that and backs off, not spins.
    wait_for("accept to fail", || server.stats().emfile >= 1).await;
    let first = Instant::now();
    wait_for("accept to be retried", || server.stats().emfile >= 4).await;
    // A backoff of 100 ms allows about ten retries a second; a spinning
    // loop makes thousands. The bound is loose so a slow machine (which
    // only lowers the count) cannot fail it, and a spin still does.
    let elapsed = first.elapsed();
    let retries = server.stats().emfile;
    let ceiling = 20 + 20 * elapsed.as_secs();
    assert!(
        retries <= ceiling,
        "accept retried {retries} times in {elapsed:?}: it spins instead of backing off"
    );
    // Descriptors come back: the waiting connection is served.
    drop(hog);
    assert_eq!(read_response(&mut s).await, Some((200, "ok".into())));
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The measurement, against the default limits: 5,000 idle
/// connections. Prints RSS (client sockets are in the same process, so
/// this is an upper bound for the server). Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: opens 5,000 sockets"]
async fn measure_five_thousand_idle_connections() {
    let limits = ServeLimits {
        header_timeout: Duration::from_secs(60),
        ..ServeLimits::default()
    };
    let server = start(limits, SseLimits::default()).await;
    let before = rss_kib();
    let mut idle = Vec::new();
    for _ in 0..5000 {
        let mut s = server.connect().await;
        // Half a head, like a slowloris, so hyper allocates its buffers.
        s.write_all(b"GET /hello HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    wait_for("the server to sort them", || {
        let st = server.stats();
        st.open == 1024 + 64 && st.reserve_evicted + st.refused_over_cap == 5000 - 1024 - 64
    })
    .await;
    let stats = server.stats();
    let with = rss_kib();
    // The reserve is full of slow heads too; /health evicts one.
    assert_eq!(server.get("/health", "").await, (200, "ok".into()));
    drop(idle);
    wait_for("connections to close", || server.stats().open == 0).await;
    assert_eq!(server.get("/health", "").await, (200, "ok".into()));
    println!(
        "5000 idle connections: open {}, evicted from the reserve {}, refused {}; RSS {} KiB before, {} KiB with them, {} KiB after they left",
        stats.open,
        stats.reserve_evicted,
        stats.refused_over_cap,
        before,
        with,
        rss_kib()
    );
}
