//! One connection: the socket wrapper that notices activity, the watchdog
//! that closes slow heads and idle keep-alives, and the per-request
//! checks (reserve admission, declared body size) around the app.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::body::{BodyVerdict, GuardedBody, InFlight, Verdict};
use super::fast::{FastConn, Handoff, Rewind, rewind};
use super::strict::LineScanner;
use super::{ServeCounters, Server};

/// What the server tells the app about the connection a request came on
/// (a request extension: `Extension<ConnInfo>` in axum).
#[derive(Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether this is a reserve connection (taken past the cap; it
    /// closes after this request).
    pub reserve: bool,
    activity: Arc<Activity>,
}

impl ConnInfo {
    /// Closes the connection now, whatever it is doing (used on a reader
    /// that stopped reading, whose response body can no longer be ended).
    pub fn close(&self) {
        self.activity.close.notify_one();
    }
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("peer", &self.peer)
            .field("reserve", &self.reserve)
            .finish()
    }
}

/// What the watchdog needs to know about a connection, updated by the
/// socket wrapper (bytes arrived) and by requests (started, ended).
pub(super) struct Activity {
    state: Mutex<Phase>,
    /// Wakes the watchdog when the phase changes (one waiter, so a
    /// notification sent before it waits is kept).
    changed: Notify,
    close: Notify,
    /// Set before `close` when the server evicts this reserve connection.
    evicted: std::sync::atomic::AtomicBool,
    /// Set when a read found nothing waiting on the socket: until then the
    /// connection has not been read (it may still wait for its place), so
    /// whether it sent a head is not known and it is not evicted.
    found_empty: std::sync::atomic::AtomicBool,
}

struct Phase {
    in_flight: usize,
    served: u64,
    /// When the last request ended (or the connection was accepted).
    idle_since: Instant,
    /// When the first byte after `idle_since` arrived.
    head_started: Option<Instant>,
    /// Since when the socket has refused our writes (the reader stopped).
    write_blocked_since: Option<Instant>,
}

enum Expired {
    Header,
    Idle,
    Send,
}

impl Expired {
    fn as_str(&self) -> &'static str {
        match self {
            Expired::Header => "no request head in time",
            Expired::Idle => "idle",
            Expired::Send => "the client took nothing",
        }
    }
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            state: Mutex::new(Phase {
                in_flight: 0,
                served: 0,
                idle_since: Instant::now(),
                head_started: None,
                write_blocked_since: None,
            }),
            changed: Notify::new(),
            close: Notify::new(),
            evicted: std::sync::atomic::AtomicBool::new(false),
            found_empty: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // A panic while holding this lock cannot leave the phase half-set.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the connection may be evicted from the reserve: it was read
    /// and had nothing waiting, and has not sent a whole request head yet.
    /// One not read yet (still waiting for an evicted place, or placed but
    /// not yet run) may hold an honest head in its socket buffer.
    pub(super) fn evictable(&self) -> bool {
        self.found_empty.load(Ordering::Relaxed) && self.phase().served == 0
    }

    /// Closes the connection to make room for a newer one.
    pub(super) fn evict(&self) {
        self.evicted.store(true, Ordering::Relaxed);
        self.close.notify_one();
    }

    fn bytes_arrived(&self) {
        let mut p = self.phase();
        if p.in_flight == 0 && p.head_started.is_none() {
            p.head_started = Some(Instant::now());
            drop(p);
            self.changed.notify_one();
        }
    }

    fn write_blocked(&self, blocked: bool) {
        let mut p = self.phase();
        p.write_blocked_since = blocked.then(Instant::now);
        drop(p);
        if blocked {
            self.changed.notify_one();
        }
    }

    pub(super) fn request_started(&self) {
        let mut p = self.phase();
        p.in_flight += 1;
        p.served += 1;
        p.head_started = None;
        drop(p);
        self.changed.notify_one();
    }

    pub(super) fn request_ended(&self) {
        let mut p = self.phase();
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            p.idle_since = Instant::now();
            p.head_started = None;
        }
        drop(p);
        self.changed.notify_one();
    }

    /// The next deadline: for a blocked write, or when no request is in
    /// flight, for the next head.
    fn deadline(&self, limits: &super::ServeLimits) -> Option<(Instant, Expired)> {
        let p = self.phase();
        if let Some(t) = p.write_blocked_since {
            return Some((t + limits.send_stall_timeout, Expired::Send));
        }
        if p.in_flight > 0 {
            return None;
        }
        Some(match p.head_started {
            Some(t) => (t + limits.header_timeout, Expired::Header),
            // A connection that never sent a request is a slow head too.
            None if p.served == 0 => (p.idle_since + limits.header_timeout, Expired::Header),
            None => (p.idle_since + limits.idle_timeout, Expired::Idle),
        })
    }

    /// Resolves when the connection has waited too long for a head, or for
    /// the client to take what we send.
    async fn watchdog(&self, limits: &super::ServeLimits) -> Expired {
        // One timer for the connection, moved on each change rather than
        // made anew: a new timer is an insert into the runtime's timer
        // wheel and a dropped one a removal (a lock each, about four per
        // request on a keep-alive connection), while moving a timer later
        // is a store.
        let sleep = tokio::time::sleep(limits.idle_timeout);
        tokio::pin!(sleep);
        loop {
            match self.deadline(limits) {
                None => self.changed.notified().await,
                Some((at, _)) => {
                    if sleep.deadline() != at {
                        sleep.as_mut().reset(at);
                    }
                    tokio::select! {
                        () = &mut sleep => {
                            // Something may have arrived meanwhile: decide on the state now.
                            if let Some((at, why)) = self.deadline(limits)
                                && at <= Instant::now()
                            {
                                return why;
                            }
                        }
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// The socket, reporting arriving bytes to the watchdog and, in strict
/// mode, to the bare-LF scanner.
struct Tracked {
    inner: Rewind,
    activity: Arc<Activity>,
    scanner: Option<LineScanner>,
    counters: Arc<ServeCounters>,
    /// Whether the last write was refused (tells the watchdog on changes only).
    write_blocked: bool,
    /// Whether a read has found the socket empty (tells [`Activity`] once).
    found_empty: bool,
}

impl Tracked {
    fn note_write<T>(&mut self, r: Poll<T>) -> Poll<T> {
        let blocked = r.is_pending();
        if blocked != self.write_blocked {
            self.write_blocked = blocked;
            self.activity.write_blocked(blocked);
        }
        r
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if r.is_pending() && !this.found_empty {
            this.found_empty = true;
            this.activity.found_empty.store(true, Ordering::Relaxed);
        }
        let new = &buf.filled()[before..];
        if matches!(r, Poll::Ready(Ok(()))) && !new.is_empty() {
            this.activity.bytes_arrived();
            if let Some(scanner) = this.scanner.as_mut()
                && scanner.feed(new).is_err()
            {
                ServeCounters::bump(&this.counters.bare_lf_refused);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head line ends with a bare LF",
                )));
            }
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note_write(r)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note_write(r)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One accepted connection, ready to run.
pub(super) struct Conn {
    pub(super) server: Server,
    pub(super) app: axum::Router,
    pub(super) peer: SocketAddr,
    pub(super) on_reserve: bool,
    pub(super) stop: watch::Receiver<bool>,
    /// Made at accept, so the watchdog counts from then and the server
    /// can evict the connection from the reserve.
    pub(super) activity: Arc<Activity>,
}

/// Decrements the open-connection gauge however the task ends.
struct OpenGauge(Arc<ServeCounters>);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Conn {
    pub(super) async fn run(self, mut stream: TcpStream) {
        let counters = self.server.counters.clone();
        counters.open.fetch_add(1, Ordering::Relaxed);
        let _open = OpenGauge(counters.clone());
        let limits = self.server.limits.clone();
        if let Some(bytes) = limits.send_buffer_bytes
            && let Err(e) =
                nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &bytes)
        {
            tracing::debug!(error = %e, "could not set SO_SNDBUF");
        }
        // Responses are written whole by hyper; waiting for more to coalesce only adds latency.
        let _ = stream.set_nodelay(true);
        let activity = self.activity.clone();
        let mut prefix = Vec::new();
        if let Some(fast) = self.server.fast.clone()
            && !self.on_reserve
        {
            let conn = FastConn {
                stream: &mut stream,
                peer: self.peer,
                limits: &limits,
                counters: &counters,
                stop: &self.stop,
            };
            match fast.serve(conn).await {
                Handoff::Close => return,
                Handoff::Hyper(read) => prefix = read,
            }
            // The watchdog counts from now: the fast path kept the time
            // limits until here.
            activity.request_started();
            activity.request_ended();
        }
        let io = TokioIo::new(Tracked {
            inner: rewind(prefix, stream),
            activity: activity.clone(),
            scanner: limits.strict_line_endings.then(LineScanner::default),
            counters: counters.clone(),
            write_blocked: false,
            found_empty: false,
        });
        // Made before `self.app` moves into the service.
        let auto = limits.h2c.then(|| self.auto_builder());
        let http1 = self.builder();
        let request = Arc::new(PerRequest {
            server: self.server.clone(),
            app: self.app,
            info: ConnInfo {
                peer: self.peer,
                reserve: self.on_reserve,
                activity: activity.clone(),
            },
        });
        let service = hyper::service::service_fn(move |req| {
            let request = request.clone();
            async move { Ok::<_, Infallible>(request.handle(req).await) }
        });
        // Upgrades (WebSocket) are handed to the app, which tunnels them
        // (the edge); the connection's slot is released once it has.
        // The auto builder reads the first bytes to tell h2c from HTTP/1.1,
        // and does so even when told HTTP/1.1 only: servers without h2c keep
        // the plain HTTP/1.1 connection.
        let mut conn = match auto {
            Some(b) => Serving::Auto(Box::pin(
                b.serve_connection_with_upgrades(io, service).into_owned(),
            )),
            None => Serving::H1(Box::pin(
                http1.serve_connection(io, service).with_upgrades(),
            )),
        };
        let mut stop = self.stop;
        let mut stopping = false;
        loop {
            tokio::select! {
                r = std::future::poll_fn(|cx| match &mut conn {
                    Serving::H1(c) => c.as_mut().poll(cx).map_err(|e| e.to_string()),
                    Serving::Auto(c) => c.as_mut().poll(cx).map_err(|e| e.to_string()),
                }) => {
                    match r {
                        Err(e) => tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error"),
                        Ok(()) => tracing::trace!(peer = %self.peer, "connection ended"),
                    }
                    break;
                }
                why = activity.watchdog(&limits) => {
                    // Dropping the connection closes the socket (and ends a
                    // response that its reader stopped taking).
                    let what = match why {
                        Expired::Header => &counters.header_timeouts,
                        Expired::Idle => &counters.idle_closed,
                        Expired::Send => &counters.send_timeouts,
                    };
                    ServeCounters::bump(what);
                    tracing::debug!(peer = %self.peer, why = why.as_str(), "connection closed by its time limit");
                    break;
                }
                () = activity.close.notified() => {
                    let evicted = activity.evicted.load(Ordering::Relaxed);
                    if !evicted {
                        ServeCounters::bump(&counters.closed_by_handler);
                    }
                    tracing::debug!(peer = %self.peer, evicted, "connection closed by the server");
                    break;
                }
                _ = stop.wait_for(|s| *s), if !stopping => {
                    // Idle connections close now; busy ones after their response.
                    match &mut conn {
                        Serving::H1(c) => c.as_mut().graceful_shutdown(),
                        Serving::Auto(c) => c.as_mut().graceful_shutdown(),
                    }
                    stopping = true;
                }
            }
        }
    }

    /// HTTP/1.1 or h2c, per connection (see [`ServeLimits::h2c`]).
    fn auto_builder(&self) -> auto::Builder<TokioExecutor> {
        let limits = &self.server.limits;
        let mut b = auto::Builder::new(TokioExecutor::new());
        // The same header budget; streams at once bounded like a browser's
        // (HTTP/2's default is unlimited). The watchdog's idle and
        // send-stall limits apply to the connection as for HTTP/1.1.
        b.http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .max_header_list_size(limits.max_header_bytes.max(8192) as u32);
        b.http1()
            .timer(TokioTimer::new())
            .keep_alive(!self.on_reserve)
            .header_read_timeout(limits.header_timeout + limits.idle_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers);
        b
    }

    fn builder(&self) -> http1::Builder {
        let limits = &self.server.limits;
        let mut b = http1::Builder::new();
        b.timer(TokioTimer::new())
            // One request, then close: the reserve must not be held.
            .keep_alive(!self.on_reserve)
            // Our watchdog closes slow heads and idle connections first;
            // hyper's timer (restarted after every response) is the backstop.
            .header_read_timeout(limits.header_timeout + limits.idle_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_headers(limits.max_headers);
        b
    }
}

/// A connection being served: HTTP/1.1 only, or HTTP/1.1 or h2c.
enum Serving<H1, Auto> {
    H1(Pin<Box<H1>>),
    Auto(Pin<Box<Auto>>),
}

/// What every request on one connection shares.
struct PerRequest {
    server: Server,
    app: axum::Router,
    info: ConnInfo,
}

impl PerRequest {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let activity = self.info.activity.clone();
        activity.request_started();
        let in_flight = InFlight::new(activity);
        let counters = &self.server.counters;
        let (mut parts, body) = req.into_parts();
        if self.info.reserve && !(self.server.admit)(&parts) {
            ServeCounters::bump(&counters.reserve_refused);
            let msg = format!(
                "the server is at its limit of {} connections; retry shortly (health checks and requests with the API token still get through)",
                self.server.limits.max_connections
            );
            return in_flight.wrap(closing(StatusCode::SERVICE_UNAVAILABLE, &msg));
        }
        let limit = (self.server.body_limit)(&parts);
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            ServeCounters::bump(&counters.body_too_large);
            return in_flight.wrap(too_large(limit));
        }
        parts.extensions.insert(self.info.clone());
        let verdict = BodyVerdict::default();
        let body = GuardedBody::new(
            body,
            limit,
            self.server.limits.body_stall_timeout,
            verdict.clone(),
        );
        let req = Request::from_parts(parts, Body::new(body));
        let mut app = self.app.clone();
        let Ok(resp) = tower_service::Service::call(&mut app, req).await;
        // The handler saw only "the body failed"; answer what really happened.
        let resp = match verdict.get() {
            Verdict::Fine => resp,
            Verdict::Stalled => {
                ServeCounters::bump(&counters.body_timeouts);
                closing(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body stopped arriving; send it without pauses",
                )
            }
            Verdict::TooLarge => {
                ServeCounters::bump(&counters.body_too_large);
                too_large(limit)
            }
        };
        in_flight.wrap(resp)
    }
}

fn too_large(limit: u64) -> Response<Body> {
    closing(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the request body is over this route's limit of {limit} bytes"),
    )
}

/// A JSON error answer after which the connection closes (its request
/// body, if any, was not read and cannot be skipped safely).
fn closing(code: StatusCode, msg: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": msg }).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
