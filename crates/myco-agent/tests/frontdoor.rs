//! The agent's front door under attack: a real server ([`Server::serve`])
//! on loopback with a small router behind the Host guard and the SSE hub,
//! and raw sockets doing what the attacks in issue 9 did. Limits are tiny
//! so each attack hits them in milliseconds; waits poll a condition up to
//! a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::routing::{get, post};
use axum::{Router, middleware};
use myco_agent::http::guard::{GuardCounters, HostPolicy, guard};
use myco_agent::http::sse::{SseCounters, SseEvent, SseHub, SseLimits};
use myco_agent::net::serve::{ConnInfo, ServeCounters, ServeLimits, ServeStats, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, broadcast, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const TOKEN: &str = "Bearer let-me-in";
/// The longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
struct Ev(String);

impl SseEvent for Ev {
    fn name(&self) -> &str {
        "test"
    }
    fn data(&self) -> String {
        self.0.clone()
    }
    fn lagged(missed: u64) -> Self {
        Ev(format!("{{\"missed\":{missed}}}"))
    }
}

#[derive(Clone)]
struct AppState {
    hub: SseHub,
    events: broadcast::Sender<Ev>,
    /// Permits for `/slow` requests to finish.
    release: Arc<Semaphore>,
    /// `/slow` requests started.
    entered: Arc<AtomicUsize>,
}

struct TestServer {
    addr: SocketAddr,
    serve: Arc<ServeCounters>,
    guard: Arc<GuardCounters>,
    sse: Arc<SseCounters>,
    events: broadcast::Sender<Ev>,
    release: Arc<Semaphore>,
    entered: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

fn limits() -> ServeLimits {
    ServeLimits {
        max_connections: 32,
        reserve_connections: 4,
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        body_stall_timeout: Duration::from_millis(300),
        // Longer than the SSE stall below, which has its own test.
        send_stall_timeout: Duration::from_secs(2),
        max_header_bytes: 8192,
        max_headers: 32,
        max_body_bytes: 1024,
        send_buffer_bytes: Some(4096),
        drain_timeout: Duration::from_secs(5),
        strict_line_endings: false,
        accept_backoff: Duration::from_millis(20),
    }
}

async fn start(limits: ServeLimits, sse: SseLimits) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let policy = HostPolicy::new(addr, ["myco.test"]);
    let (events, _) = broadcast::channel(64);
    let state = AppState {
        hub: SseHub::new(sse),
        events: events.clone(),
        release: Arc::new(Semaphore::new(0)),
        entered: Arc::default(),
    };
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/hello", get(|| async { "hi" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route("/write", post(|| async { "written" }))
        .route("/big", get(|| async { vec![b'z'; 1 << 20] }))
        .route(
            "/slow",
            get(|State(s): State<AppState>| async move {
                s.entered.fetch_add(1, Ordering::Relaxed);
                s.release.acquire().await.unwrap().forget();
                "finally"
            }),
        )
        .route(
            "/events",
            get(
                |State(s): State<AppState>, conn: Option<Extension<ConnInfo>>| async move {
                    s.hub
                        .subscribe(s.events.subscribe(), conn.map(|Extension(c)| c))
                },
            ),
        )
        .layer(middleware::from_fn_with_state(policy.clone(), guard))
        .with_state(state.clone());
    let server = Server::new(limits).admit_on_reserve(|head| {
        head.uri.path() == "/health"
            || head
                .headers
                .get("authorization")
                .is_some_and(|v| v.as_bytes() == TOKEN.as_bytes())
    });
    let serve = server.counters();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, app, async {
        let _ = stopped.await;
    }));
    TestServer {
        addr,
        serve,
        guard: policy.counters(),
        sse: state.hub.counters(),
        events,
        release: state.release,
        entered: state.entered,
        stop: Some(stop),
        task,
    }
}

impl TestServer {
    fn stats(&self) -> ServeStats {
        self.serve.snapshot()
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// One request on a fresh connection; `(status, body)`.
    async fn get(&self, path: &str, extra: &str) -> (u16, String) {
        let mut s = self.connect().await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        read_response(&mut s).await.expect("no response")
    }
}

/// Polls `cond` until it holds or the deadline passes.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads one response: `(status, body)`, or `None` if the connection
/// closed first. Understands `Content-Length` bodies only.
async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
    timeout(DEADLINE, async {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        Some((
            status,
            String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string(),
        ))
    })
    .await
    .expect("no response or close within the deadline")
}

/// Waits until the server closes `s` (EOF or reset), discarding what it
/// sent; returns how long that took.
async fn closed(s: &mut TcpStream) -> Duration {
    let start = Instant::now();
    timeout(DEADLINE, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = s.read(&mut chunk).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .expect("the server did not close the connection");
    start.elapsed()
}

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
    assert!(
        first.elapsed() >= Duration::from_millis(50),
        "accept retried {} times in {:?}",
        server.stats().emfile,
        first.elapsed()
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
