//! The bounded HTTP/1.1 server loop that the API (and the edge gateway) run
//! instead of `axum::serve`: a connection cap with a small reserve, time
//! limits on every phase of a connection, early refusal of oversized
//! bodies, small kernel send buffers, graceful drain, and counters.
//!
//! # Entry points
//!
//! ```no_run
//! # async fn demo(app: axum::Router) -> std::io::Result<()> {
//! use myco_agent::net::serve::{Server, ServeLimits};
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7070").await?;
//! let server = Server::new(ServeLimits::default())
//!     // a reserve connection may serve /health and token holders only
//!     .admit_on_reserve(|head| head.uri.path() == "/health")
//!     // the upload route takes large bodies, every other route small ones
//!     .body_limit(|head| if head.uri.path() == "/v1/spores" { 1 << 30 } else { 65 * 1024 });
//! let counters = server.counters(); // read by the metrics module
//! server.serve(listener, app, std::future::pending::<()>()).await
//! # }
//! ```
//!
//! A server may serve some requests itself before hyper does
//! ([`Server::fast_path`], [`FastPath`]): the edge's fast path. It hands
//! the connection to hyper, with the bytes it read replayed, at the first
//! request it does not serve, and keeps this module's time limits (and
//! shutdown) itself until then.
//!
//! Every request carries a [`ConnInfo`] extension (peer address, whether it
//! came on a reserve connection, and a handle to close its connection, which
//! the SSE adapter uses on readers that stall).
//!
//! # The limits and why these defaults ([`ServeLimits::default`])
//!
//! Measured before this module existed: 5,000 idle connections took the
//! agent from 12 MB to 157 MB of RSS for good, slowloris connections were
//! never reaped, and about 20,000 idle connections exhausted file
//! descriptors, after which `/health` and authenticated writes timed out.
//! With these limits (test `measure_five_thousand_idle_connections` in
//! `tests/frontdoor.rs`): of 5,000 half-sent heads 1,088 are held, the
//! rest are evicted or refused, `/health` answers, and the process (server
//! and all 5,000 client sockets) grows from 5.8 MB to 29.6 MB of RSS.
//!
//! - **Connections: 1,024, plus a reserve of 64.** A node serves an
//!   operator, a dashboard and a few scripts: 1,024 is far above honest
//!   use and keeps the worst case near 1,100 descriptors and a few tens of
//!   MB. Past the cap a connection is taken from the reserve; it serves one
//!   request, and only one that [`Server::admit_on_reserve`] admits
//!   (`/health` by default; the API adds "carries the valid token"), so an
//!   operator and health checks still get in while the cap is full. When
//!   the reserve is full too, a new connection evicts the oldest reserve
//!   connection that was read, found empty, and has not sent a request
//!   head since (`reserve_evicted`): an honest client sends its head at
//!   once, so idlers cannot hold the reserve against it. A connection not
//!   read yet (still waiting for the place it evicted, when idlers arrive
//!   faster than their victims close) is never the victim: its head may be
//!   waiting in the socket buffer. With nothing to evict (every reserve
//!   connection is mid-request or not read yet) a new connection is
//!   closed at once (`refused_over_cap`). Test:
//!   `a_head_waiting_for_its_place_is_not_evicted` (`tests/frontdoor.rs`).
//! - **Descriptor exhaustion** (`EMFILE`/`ENFILE` from `accept`): counted
//!   (`emfile`) and the loop pauses 100 ms instead of spinning on an error
//!   that repeats until a connection closes.
//! - **Headers: 5 s to arrive, at most 16 KiB and 64 fields.** A head that
//!   takes longer is a slowloris; a real client sends it in one packet.
//!   Too large or too many: 431 (hyper's own check; its read buffer is the
//!   header limit).
//! - **Idle keep-alive: 30 s.** Long enough for a dashboard polling every
//!   few seconds to keep its connection, short enough that parked
//!   connections free their slot.
//! - **Request bodies: no progress for 10 s → 408** and the connection
//!   closes. A `Content-Length` above the route's limit ([`Server::body_limit`],
//!   default 64 MiB) is refused with 413 before a byte of the body is read;
//!   a chunked body that grows past it gets 413 when it does.
//! - **Responses: the client must take some bytes every 30 s**, else the
//!   connection closes (`send_timeouts`). A download or event stream whose
//!   reader stopped reading would otherwise hold its slot and buffers for
//!   good (hyper has no write timeout).
//! - **Kernel send buffer: 64 KiB per connection** (`SO_SNDBUF`). Without
//!   it Linux grows the buffer of a connection whose reader stalls to
//!   megabytes; 64 KiB still fills a LAN link (window / RTT).
//! - **Drain: 10 s.** On shutdown the listener closes, idle connections
//!   close, requests in flight finish (up to the deadline) and are then cut.
//! - **Bare LF line endings** are accepted by hyper (httparse is lenient)
//!   and are refused when [`ServeLimits::strict_line_endings`] is on: the
//!   connection is closed (`bare_lf_refused`). The edge gateway turns it on,
//!   so that it never reads a request differently from a stricter proxy in
//!   front of it.
//!
//! HTTP/1.1 only: browsers speak HTTP/2 only over TLS and the CLI speaks
//! 1.1, so h2c would serve no client and add the `h2` crate.
//!
//! The idle and header timers are our own watchdog per connection, because
//! hyper starts its header timer again right after each response, which
//! would make the keep-alive idle limit equal to the header limit. hyper's
//! timer is still set (to the sum of both) as a backstop.

mod body;
mod conn;
mod fast;
mod strict;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::http::request::Parts;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

pub use body::Guarded;
pub use conn::ConnInfo;
pub use fast::{FastConn, FastPath, Handoff};

/// The limits of one [`Server`]. Every field has a default
/// ([`ServeLimits::default`]); the module docs say why each value.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Most connections served at once (besides the reserve).
    pub max_connections: usize,
    /// Extra connections accepted past the cap, each for one request that
    /// [`Server::admit_on_reserve`] admits.
    pub reserve_connections: usize,
    /// Longest time from a connection's first byte (or its accept) to the
    /// end of a request head.
    pub header_timeout: Duration,
    /// Longest time a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Longest time a request body may make no progress while read.
    pub body_stall_timeout: Duration,
    /// Longest time the client may take none of a response we are sending.
    pub send_stall_timeout: Duration,
    /// Largest request head in bytes (hyper's read buffer; at least 8,192).
    pub max_header_bytes: usize,
    /// Most header fields in a request head.
    pub max_headers: usize,
    /// Largest request body when [`Server::body_limit`] sets none.
    pub max_body_bytes: u64,
    /// Kernel send buffer per connection (`SO_SNDBUF`); `None` keeps the OS's.
    pub send_buffer_bytes: Option<usize>,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout: Duration,
    /// Close connections whose request heads end lines with a bare LF.
    pub strict_line_endings: bool,
    /// Pause after `accept` fails for lack of descriptors.
    pub accept_backoff: Duration,
    /// Also speak HTTP/2 with prior knowledge (h2c), told apart from
    /// HTTP/1.1 by its preface on each connection.
    pub h2c: bool,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 1024,
            reserve_connections: 64,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            body_stall_timeout: Duration::from_secs(10),
            send_stall_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 64 << 20,
            send_buffer_bytes: Some(64 * 1024),
            drain_timeout: Duration::from_secs(10),
            strict_line_endings: false,
            accept_backoff: Duration::from_millis(100),
            h2c: false,
        }
    }
}

/// What a [`Server`] counted, as atomics the metrics module reads
/// ([`ServeCounters::snapshot`]). All are totals since start except `open`.
#[derive(Debug, Default)]
pub struct ServeCounters {
    /// Connections `accept` returned (reserve and refused ones included).
    pub accepted: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections closed at once because cap and reserve were full.
    pub refused_over_cap: AtomicU64,
    /// Connections served from the reserve.
    pub reserve_used: AtomicU64,
    /// Reserve connections closed, before sending a request head, to make
    /// room for a newer connection.
    pub reserve_evicted: AtomicU64,
    /// Requests on a reserve connection that the admission hook refused (503).
    pub reserve_refused: AtomicU64,
    /// Connections closed because a request head was not complete in time.
    pub header_timeouts: AtomicU64,
    /// Keep-alive connections closed after sitting idle.
    pub idle_closed: AtomicU64,
    /// Connections closed because the client took none of a response for
    /// the send stall timeout.
    pub send_timeouts: AtomicU64,
    /// Requests answered 408 because their body made no progress.
    pub body_timeouts: AtomicU64,
    /// Requests answered 413 (declared or actual body over the limit).
    pub body_too_large: AtomicU64,
    /// `accept` failures for lack of file descriptors.
    pub emfile: AtomicU64,
    /// Connections closed for a bare LF in a request head.
    pub bare_lf_refused: AtomicU64,
    /// Connections closed by their [`ConnInfo::close`] handle.
    pub closed_by_handler: AtomicU64,
}

/// A plain copy of [`ServeCounters`] at one moment.
#[allow(missing_docs)] // the fields mirror ServeCounters one for one
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    pub accepted: u64,
    pub open: u64,
    pub refused_over_cap: u64,
    pub reserve_used: u64,
    pub reserve_evicted: u64,
    pub reserve_refused: u64,
    pub header_timeouts: u64,
    pub idle_closed: u64,
    pub send_timeouts: u64,
    pub body_timeouts: u64,
    pub body_too_large: u64,
    pub emfile: u64,
    pub bare_lf_refused: u64,
    pub closed_by_handler: u64,
}

impl ServeCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> ServeStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServeStats {
            accepted: r(&self.accepted),
            open: r(&self.open),
            refused_over_cap: r(&self.refused_over_cap),
            reserve_used: r(&self.reserve_used),
            reserve_evicted: r(&self.reserve_evicted),
            reserve_refused: r(&self.reserve_refused),
            header_timeouts: r(&self.header_timeouts),
            idle_closed: r(&self.idle_closed),
            send_timeouts: r(&self.send_timeouts),
            body_timeouts: r(&self.body_timeouts),
            body_too_large: r(&self.body_too_large),
            emfile: r(&self.emfile),
            bare_lf_refused: r(&self.bare_lf_refused),
            closed_by_handler: r(&self.closed_by_handler),
        }
    }

    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long a connection that evicted a reserve connection waits for its place.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Where an accepted connection is served from.
enum Slot {
    Main(OwnedSemaphorePermit),
    Reserve(OwnedSemaphorePermit),
    /// The reserve is full; an idle reserve connection was closed for it.
    Evicted,
}

impl Slot {
    /// The permit to hold while the connection runs; `None` if an evicted
    /// place did not come free in time.
    async fn permit(
        self,
        reserve: &Arc<Semaphore>,
        counters: &ServeCounters,
    ) -> Option<OwnedSemaphorePermit> {
        match self {
            Slot::Main(p) | Slot::Reserve(p) => Some(p),
            // The evicted connection gives its place back as its task ends.
            Slot::Evicted => {
                let p = tokio::time::timeout(EVICTION_WAIT, reserve.clone().acquire_owned()).await;
                let p = p.ok().and_then(Result::ok);
                if p.is_none() {
                    ServeCounters::bump(&counters.refused_over_cap);
                }
                p
            }
        }
    }
}

/// The connection cap and its reserve.
struct Places {
    main: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    /// Reserve connections, oldest first, for eviction (dead ones pruned).
    held: VecDeque<Weak<conn::Activity>>,
}

impl Places {
    /// A place for a new connection, or `None` (counted) if there is none.
    fn take(&mut self, activity: &Arc<conn::Activity>, counters: &ServeCounters) -> Option<Slot> {
        if let Ok(p) = self.main.clone().try_acquire_owned() {
            return Some(Slot::Main(p));
        }
        let slot = match self.reserve.clone().try_acquire_owned() {
            Ok(p) => Slot::Reserve(p),
            Err(_) => {
                self.held.retain(|w| w.strong_count() > 0);
                let idle = self
                    .held
                    .iter()
                    .position(|w| w.upgrade().is_some_and(|a| a.evictable()));
                let Some(victim) = idle.and_then(|i| self.held.remove(i)?.upgrade()) else {
                    ServeCounters::bump(&counters.refused_over_cap);
                    return None;
                };
                ServeCounters::bump(&counters.reserve_evicted);
                victim.evict();
                Slot::Evicted
            }
        };
        self.held.push_back(Arc::downgrade(activity));
        Some(slot)
    }
}

/// Decides from a request head whether a reserve connection may serve it.
pub type AdmitFn = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;
/// The body limit in bytes for a request, from its head.
pub type BodyLimitFn = Arc<dyn Fn(&Parts) -> u64 + Send + Sync>;

/// A bounded HTTP/1.1 server; see the module docs.
#[derive(Clone)]
pub struct Server {
    pub(crate) limits: Arc<ServeLimits>,
    pub(crate) admit: AdmitFn,
    pub(crate) body_limit: BodyLimitFn,
    pub(crate) counters: Arc<ServeCounters>,
    /// Serves plain requests before hyper does ([`Server::fast_path`]).
    pub(crate) fast: Option<Arc<dyn FastPath>>,
}

impl Server {
    /// A server with these limits; reserve connections admit `/health`
    /// only, and every route has the global body limit.
    pub fn new(limits: ServeLimits) -> Self {
        let max = limits.max_body_bytes;
        Server {
            limits: Arc::new(limits),
            admit: Arc::new(|head: &Parts| head.uri.path() == "/health"),
            body_limit: Arc::new(move |_: &Parts| max),
            counters: Arc::default(),
            fast: None,
        }
    }

    /// Serves each main connection with `fast` first, hyper taking over
    /// at the first request it hands back (reserve connections go to
    /// hyper at once: they serve one request under admission rules).
    pub fn fast_path(mut self, fast: Option<Arc<dyn FastPath>>) -> Self {
        self.fast = fast;
        self
    }

    /// Which requests a reserve connection serves (the rest get 503). The
    /// API passes "`/health`, or carries the valid token".
    pub fn admit_on_reserve(
        mut self,
        admit: impl Fn(&Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.admit = Arc::new(admit);
        self
    }

    /// The body limit per request (413 past it, before reading when
    /// `Content-Length` says so). Replaces [`ServeLimits::max_body_bytes`].
    pub fn body_limit(mut self, limit: impl Fn(&Parts) -> u64 + Send + Sync + 'static) -> Self {
        self.body_limit = Arc::new(limit);
        self
    }

    /// The counters, shared with the running server.
    pub fn counters(&self) -> Arc<ServeCounters> {
        self.counters.clone()
    }

    /// Serves `app` on `listener` until `shutdown` completes, then stops
    /// accepting, drains requests in flight for up to
    /// [`ServeLimits::drain_timeout`] and cuts the rest. Errors only if the
    /// listener fails for a reason other than a closed or exhausted
    /// connection.
    pub async fn serve(
        self,
        listener: TcpListener,
        app: axum::Router,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let limits = self.limits.clone();
        let mut places = Places {
            main: Arc::new(Semaphore::new(limits.max_connections)),
            reserve: Arc::new(Semaphore::new(limits.reserve_connections)),
            held: VecDeque::new(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let result = loop {
            // Reap finished connection tasks so the set stays as small as the cap.
            while tasks.try_join_next().is_some() {}
            let accepted = tokio::select! {
                () = &mut shutdown => break Ok(()),
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) if is_fd_exhaustion(&e) => {
                    ServeCounters::bump(&self.counters.emfile);
                    tracing::warn!(error = %e, "out of file descriptors: pausing accept");
                    tokio::time::sleep(limits.accept_backoff).await;
                    continue;
                }
                // Errors about one connection (reset before accept, …) are
                // that connection's, not the listener's.
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => break Err(e),
            };
            ServeCounters::bump(&self.counters.accepted);
            let activity = Arc::new(conn::Activity::new());
            let Some(slot) = places.take(&activity, &self.counters) else {
                drop(stream);
                continue;
            };
            let conn = conn::Conn {
                server: self.clone(),
                app: app.clone(),
                peer,
                on_reserve: !matches!(slot, Slot::Main(_)),
                stop: stop_rx.clone(),
                activity,
            };
            let (reserve, counters) = (places.reserve.clone(), self.counters.clone());
            tasks.spawn(async move {
                let on_reserve = conn.on_reserve;
                let Some(_permit) = slot.permit(&reserve, &counters).await else {
                    return;
                };
                if on_reserve {
                    ServeCounters::bump(&counters.reserve_used);
                }
                conn.run(stream).await;
            });
        };
        drop(listener);
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(limits.drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "drain deadline passed: closing the remaining connections"
            );
            tasks.shutdown().await;
        }
        result
    }
}

/// `accept` failed because this process or the system has no descriptor left.
fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == nix::libc::EMFILE || code == nix::libc::ENFILE || code == nix::libc::ENOBUFS || code == nix::libc::ENOMEM)
}

/// `accept` failed because of the connection being accepted, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_exhaustion_is_told_apart_from_listener_failure() {
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(
            nix::libc::EMFILE
        )));
        assert!(is_fd_exhaustion(&io::Error::from_raw_os_error(
            nix::libc::ENFILE
        )));
        assert!(!is_fd_exhaustion(&io::Error::from_raw_os_error(
            nix::libc::EBADF
        )));
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!is_per_connection(&io::Error::from_raw_os_error(
            nix::libc::EBADF
        )));
    }
}
