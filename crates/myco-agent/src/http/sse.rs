//! Bounded server-sent events over a `tokio::sync::broadcast` channel.
//!
//! Before this, 500 subscribers that never read pinned about 1.25 GB of
//! kernel socket memory, and each was sent all 8,000 events without ever
//! seeing `lagged`: the socket buffers absorbed everything, so nothing
//! fell behind as far as the broadcast channel could tell. Now:
//!
//! - **At most [`SseLimits::max_subscribers`] (64) at once**; past that,
//!   503 with a JSON error. A dashboard or two and a few `myco logs -f`
//!   need a handful.
//! - **Each subscriber has a queue bounded by count (256) and bytes
//!   (256 KiB)** between the channel and its connection. Together with
//!   the server's small send buffer ([`crate::net::serve`]) and hyper's
//!   write buffer, that bounds what one subscriber holds. An event that
//!   does not fit is skipped and counted; once there is room again the
//!   subscriber gets one `lagged` event with the number it missed (events
//!   the broadcast channel itself dropped for it included).
//! - **A subscriber that takes nothing for [`SseLimits::stall_timeout`]
//!   (30 s) while events wait is disconnected** (through
//!   [`ConnInfo::close`], since its response can no longer be ended from
//!   inside). A live reader, however slow, takes something in 30 s.
//! - A `: ping` comment every 15 s when nothing else was sent, so proxies
//!   keep the stream open and dead peers are found by TCP.
//!
//! Each subscriber costs one task (bounded by the cap), which forwards
//! from the channel to its queue and watches for the stall.
//!
//! Wiring, in a handler:
//! `hub.subscribe(events.subscribe(), conn.map(|Extension(c)| c))` with
//! `conn: Option<Extension<ConnInfo>>`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::time::Instant;

use crate::net::serve::ConnInfo;

/// An event that can be sent as SSE.
pub trait SseEvent: Clone + Send + Sync + 'static {
    /// The `event:` name (one line).
    fn name(&self) -> &str;
    /// The `data:` payload; newlines are split into several `data:` lines.
    fn data(&self) -> String;
    /// The event that tells a subscriber it missed `missed` events
    /// (sent with the name `lagged`).
    fn lagged(missed: u64) -> Self;
}

/// The bounds of an [`SseHub`]; the module docs say why the defaults.
#[derive(Debug, Clone)]
pub struct SseLimits {
    /// Most subscribers at once.
    pub max_subscribers: usize,
    /// Most events queued per subscriber.
    pub max_unsent_events: usize,
    /// Most bytes queued per subscriber.
    pub max_unsent_bytes: usize,
    /// How long a subscriber may take nothing while events wait.
    pub stall_timeout: Duration,
    /// Interval of `: ping` comments on a quiet stream.
    pub keep_alive: Duration,
}

impl Default for SseLimits {
    fn default() -> Self {
        SseLimits {
            max_subscribers: 64,
            max_unsent_events: 256,
            max_unsent_bytes: 256 * 1024,
            stall_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// What an [`SseHub`] counted (totals, except the two gauges).
#[derive(Debug, Default)]
pub struct SseCounters {
    /// Subscribers now (gauge).
    pub active: AtomicU64,
    /// Subscriptions accepted.
    pub subscribed: AtomicU64,
    /// Subscriptions refused at the cap (503).
    pub refused_over_cap: AtomicU64,
    /// `lagged` events sent.
    pub lagged: AtomicU64,
    /// Events a subscriber missed (its queue was full or the channel
    /// dropped them for it).
    pub skipped: AtomicU64,
    /// Subscribers disconnected for taking nothing while events waited.
    pub stalled_closed: AtomicU64,
    /// Bytes queued for all subscribers now (gauge).
    pub queued_bytes: AtomicU64,
    /// The most `queued_bytes` ever was.
    pub peak_queued_bytes: AtomicU64,
}

/// The subscriber cap, limits and counters shared by every subscription
/// of one event stream. Cheap to clone.
#[derive(Clone)]
pub struct SseHub {
    limits: Arc<SseLimits>,
    permits: Arc<Semaphore>,
    counters: Arc<SseCounters>,
}

impl SseHub {
    /// A hub with these limits.
    pub fn new(limits: SseLimits) -> Self {
        SseHub {
            permits: Arc::new(Semaphore::new(limits.max_subscribers)),
            limits: Arc::new(limits),
            counters: Arc::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> Arc<SseCounters> {
        self.counters.clone()
    }

    /// Answers a subscription: an event stream fed from `rx`, or 503 when
    /// the hub is full. `conn` (from the request's extensions) lets the hub
    /// disconnect a stalled reader; without it a stalled stream only ends.
    pub fn subscribe<T: SseEvent>(
        &self,
        rx: broadcast::Receiver<T>,
        conn: Option<ConnInfo>,
    ) -> Response {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.counters
                .refused_over_cap
                .fetch_add(1, Ordering::Relaxed);
            let msg = format!(
                "too many event subscribers (the limit is {}); close another event stream or retry later",
                self.limits.max_subscribers
            );
            let mut resp = (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "error": msg }).to_string(),
            )
                .into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return resp;
        };
        self.counters.subscribed.fetch_add(1, Ordering::Relaxed);
        self.counters.active.fetch_add(1, Ordering::Relaxed);
        let (tx, queue) = mpsc::channel(self.limits.max_unsent_events.max(1));
        let shared = Arc::new(Shared {
            counters: self.counters.clone(),
            bytes: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        });
        let forward = Forwarder {
            limits: self.limits.clone(),
            shared: shared.clone(),
            tx,
            conn,
            missed: 0,
            _permit: permit,
        };
        tokio::spawn(forward.run(rx));
        let mut resp = Response::new(Body::new(SseBody { queue, shared }));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

/// Between one subscriber's forwarder and its response body.
struct Shared {
    counters: Arc<SseCounters>,
    /// Bytes in this subscriber's queue.
    bytes: AtomicU64,
    /// Items the body has taken so far (the forwarder watches it move).
    taken: AtomicU64,
}

impl Shared {
    fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
        let total = self.counters.queued_bytes.fetch_add(n, Ordering::Relaxed) + n;
        self.counters
            .peak_queued_bytes
            .fetch_max(total, Ordering::Relaxed);
    }

    fn sub_bytes(&self, n: u64) {
        self.bytes.fetch_sub(n, Ordering::Relaxed);
        self.counters.queued_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

struct Forwarder {
    limits: Arc<SseLimits>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Bytes>,
    conn: Option<ConnInfo>,
    missed: u64,
    _permit: OwnedSemaphorePermit,
}

impl Forwarder {
    async fn run<T: SseEvent>(mut self, mut rx: broadcast::Receiver<T>) {
        // Wakes often enough for both the stall check and the keep-alive.
        let check = (self.limits.stall_timeout / 4)
            .min(self.limits.keep_alive)
            .max(Duration::from_millis(10));
        let mut taken_seen = 0;
        let mut last_progress = Instant::now();
        let mut last_sent = Instant::now();
        loop {
            let taken = self.shared.taken.load(Ordering::Relaxed);
            let waiting = self.queued() > 0 || self.missed > 0;
            if taken != taken_seen || !waiting {
                taken_seen = taken;
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= self.limits.stall_timeout {
                self.shared
                    .counters
                    .stalled_closed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!("closing an event stream whose reader stopped reading");
                if let Some(conn) = &self.conn {
                    conn.close();
                }
                break;
            }
            if self.missed > 0 {
                let n = self.missed;
                if self.offer(&T::lagged(n), "lagged") {
                    self.missed = 0;
                    self.shared.counters.lagged.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(event) => {
                        if self.missed > 0 || !self.offer(&event, event.name()) {
                            self.skip(1);
                        }
                        last_sent = Instant::now();
                    }
                    Err(RecvError::Lagged(n)) => self.skip(n),
                    Err(RecvError::Closed) => break,
                },
                () = self.tx.closed() => break,
                () = tokio::time::sleep(check) => {
                    if last_sent.elapsed() >= self.limits.keep_alive && self.queued() == 0 {
                        let _ = self.push(Bytes::from_static(b": ping\n\n"));
                        last_sent = Instant::now();
                    }
                }
            }
        }
        let active = &self.shared.counters.active;
        active.fetch_sub(1, Ordering::Relaxed);
    }

    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    fn skip(&mut self, n: u64) {
        self.missed = self.missed.saturating_add(n);
        self.shared.counters.skipped.fetch_add(n, Ordering::Relaxed);
    }

    /// Queues one event if it fits both bounds.
    fn offer<T: SseEvent>(&self, event: &T, name: &str) -> bool {
        self.push(encode(name, &event.data()))
    }

    fn push(&self, bytes: Bytes) -> bool {
        let n = bytes.len() as u64;
        if self.shared.bytes.load(Ordering::Relaxed) + n > self.limits.max_unsent_bytes as u64 {
            return false;
        }
        // Count first so the body never subtracts more than was added.
        self.shared.add_bytes(n);
        if self.tx.try_send(bytes).is_err() {
            self.shared.sub_bytes(n);
            return false;
        }
        true
    }
}

/// One event in the SSE wire format.
fn encode(name: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(name.len() + data.len() + 16);
    out.push_str("event: ");
    // A newline in the name would start a field of the attacker's choosing.
    out.extend(name.chars().filter(|c| *c != '\n' && *c != '\r'));
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The response body: whatever the forwarder queued.
struct SseBody {
    queue: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this.queue.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => {
                this.shared.sub_bytes(bytes.len() as u64);
                this.shared.taken.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        // What is still queued is freed with the queue.
        self.queue.close();
        while let Ok(bytes) = self.queue.try_recv() {
            self.shared.sub_bytes(bytes.len() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_and_cannot_inject_fields() {
        assert_eq!(
            &encode("state", "{\"a\":1}")[..],
            b"event: state\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            &encode("x\nid: 9", "a\r\nb")[..],
            b"event: xid: 9\ndata: a\ndata: b\n\n"
        );
    }
}
