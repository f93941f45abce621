//! The test server and raw-socket helpers the front-door tests share.

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

pub const TOKEN: &str = "Bearer let-me-in";
/// The longest any condition is waited for.
pub const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Ev(pub String);

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
pub struct AppState {
    hub: SseHub,
    events: broadcast::Sender<Ev>,
    /// Permits for `/slow` requests to finish.
    release: Arc<Semaphore>,
    /// `/slow` requests started.
    entered: Arc<AtomicUsize>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub serve: Arc<ServeCounters>,
    pub guard: Arc<GuardCounters>,
    pub sse: Arc<SseCounters>,
    pub events: broadcast::Sender<Ev>,
    pub release: Arc<Semaphore>,
    pub entered: Arc<AtomicUsize>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

pub fn limits() -> ServeLimits {
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
        h2c: false,
    }
}

pub async fn start(limits: ServeLimits, sse: SseLimits) -> TestServer {
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
    pub fn stats(&self) -> ServeStats {
        self.serve.snapshot()
    }

    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// One request on a fresh connection; `(status, body)`.
    pub async fn get(&self, path: &str, extra: &str) -> (u16, String) {
        let mut s = self.connect().await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        read_response(&mut s).await.expect("no response")
    }
}

/// Polls `cond` until it holds or the deadline passes.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads one response: `(status, body)`, or `None` if the connection
/// closed first. Understands `Content-Length` bodies only.
pub async fn read_response(s: &mut TcpStream) -> Option<(u16, String)> {
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
pub async fn closed(s: &mut TcpStream) -> Duration {
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
