//! The keep-alive pool to instances: HTTP/1.1 connections made with
//! hyper's low-level `client::conn::http1`, kept per instance address in a
//! small stack of idle connections.
//!
//! Why not hyper-util's legacy `Client`: under load it cost about a third
//! of the edge's CPU (profile in BENCHMARKS.md, "Edge profile"): a pool
//! keyed by URI scheme and authority with a waiter list, a spawned task per
//! request to hand the connection back when it is ready again, a boxed
//! connector future. Here a request pops an idle sender (one short lock),
//! and its response body pushes it back when it ends: no task, no
//! allocation per request beyond hyper's own. No task drives a connection
//! either: the request that uses it polls it, in the client connection's
//! task ([`Upconn`]); only a connection a 101 took over may need one.
//!
//! A connection the instance closed is seen on the pop (polled once
//! before use) or when sending: a request that was not written yet comes
//! back (`try_send_request`) and goes on the next idle connection or a new
//! one, so an instance closing an idle connection never fails a request.
//! Idle connections older than [`POOL_IDLE`] are dropped when popped, and
//! by a sweep every [`POOL_IDLE`], which closes them.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::future::Future;
use tokio::net::TcpStream;

use super::upstream::{ACK_ALWAYS, ACK_ONCE, CONNECT_TIMEOUT, POOL_IDLE, POOL_MAX_IDLE, QuickAck};

/// Why a request to an instance failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection: refused, unreachable or timed out. Nothing was sent.
    #[error("connecting to the instance: {0}")]
    Connect(#[source] io::Error),
    /// The connection failed while the request was sent or answered.
    #[error("the instance's connection failed: {0}")]
    Http(#[source] hyper::Error),
}

impl SendError {
    /// Whether nothing reached the instance (a connect failure).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

/// The request side and the connection itself. The connection is no
/// task of its own: whoever waits on it polls it ([`Upconn::drive`]), the
/// request's future while the head is awaited and the response body while
/// it is read, so an exchange runs in the client connection's task with no
/// wake-up of a second task and no channel hop between two threads (the
/// profile's "task wake-ups"). Idle in the pool, nobody polls it; the pop
/// polls it first, which notices an instance's close.
struct Upconn {
    tx: SendRequest<Body>,
    /// Set while a response body waits for bytes ([`QuickAck::arm`]).
    quick_ack: Arc<AtomicU8>,
    /// `None` once it has ended (polling it again is not allowed).
    conn: Option<Connection>,
}

/// hyper's connection with upgrades (its type cannot be named), boxed
/// once per connection: a 101 hands the socket to the upgrade from it, in
/// whichever task polls it.
type Connection = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

impl Upconn {
    /// Lets the connection do what it can (write the request, read the
    /// answer into the body's channel, notice a close). Returns whether it
    /// is still open; an ended one is dropped here.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        match conn.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready(r) => {
                if let Err(error) = r {
                    tracing::debug!(%error, "edge: an instance connection ended");
                }
                self.conn = None;
                false
            }
        }
    }

    /// Whether the connection is open, polled once without a waker: how
    /// the sweep notices connections the instance closed.
    fn alive_now(&mut self) -> bool {
        self.drive(&mut Context::from_waker(std::task::Waker::noop())) && !self.tx.is_closed()
    }

    /// Waits until the connection takes a request; `false` if it closed.
    async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            if !self.drive(cx) {
                return Poll::Ready(false);
            }
            self.tx.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }

    /// Sends `req` and waits for the head, driving the connection. `Err`
    /// with the request when it was not written (the connection had closed).
    async fn exchange(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, Result<Request<Body>, hyper::Error>> {
        let mut sent = std::pin::pin!(self.tx.try_send_request(req));
        let conn = &mut self.conn;
        std::future::poll_fn(|cx| {
            // The connection first: it writes the request, reads the head
            // and completes `sent` in the same poll.
            if let Some(c) = conn.as_mut()
                && let Poll::Ready(r) = c.as_mut().poll(cx)
            {
                if let Err(error) = r {
                    tracing::debug!(%error, "edge: an instance connection ended");
                }
                *conn = None;
            }
            sent.as_mut().poll(cx)
        })
        .await
        .map_err(|mut e| match e.take_message() {
            Some(back) => Ok(back),
            None => Err(e.into_error()),
        })
    }
}

struct Idle {
    up: Upconn,
    since: Instant,
}

type Stacks = Mutex<HashMap<SocketAddr, Vec<Idle>>>;

/// The pool; clones share it.
#[derive(Clone, Default)]
pub struct Pool {
    idle: Arc<Stacks>,
}

impl Pool {
    /// A pool whose idle connections are swept every [`POOL_IDLE`] by a
    /// task that ends with the pool. Needs a tokio runtime.
    pub fn new() -> Self {
        let pool = Pool::default();
        let weak = Arc::downgrade(&pool.idle);
        tokio::spawn(sweep(weak));
        pool
    }

    /// Sends `req` (origin-form URI, any `Host`) to the instance at `addr`
    /// on an idle connection or a new one. The answer's body hands the
    /// connection back when it has been read to its end.
    ///
    /// A 101's connection belongs to its upgrade: never pooled again.
    pub async fn send(
        &self,
        addr: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<Response<Pooled>, SendError> {
        if !req.headers().contains_key(header::HOST)
            && let Ok(v) = HeaderValue::from_str(&addr.to_string())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        while let Some(mut up) = self.pop(addr) {
            if !up.ready().await {
                continue;
            }
            match up.exchange(req).await {
                Ok(resp) => return Ok(self.lease(addr, up, resp)),
                // Not written: the connection had closed. Next one.
                Err(Ok(back)) => req = back,
                Err(Err(e)) => return Err(SendError::Http(e)),
            }
        }
        let mut up = connect(addr).await?;
        match up.exchange(req).await {
            Ok(resp) => Ok(self.lease(addr, up, resp)),
            // Closed before the request was written: nothing was sent.
            Err(Ok(_)) => Err(SendError::Connect(io::ErrorKind::ConnectionReset.into())),
            Err(Err(e)) => Err(SendError::Http(e)),
        }
    }

    fn lease(
        &self,
        addr: SocketAddr,
        mut up: Upconn,
        resp: Response<Incoming>,
    ) -> Response<Pooled> {
        let back = if resp.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
            // A tunnel has no bodies that say when the other side waits.
            up.quick_ack.store(ACK_ALWAYS, Ordering::Relaxed);
            // Usually the connection handed its socket over in the poll
            // that read the 101; if not, a task finishes that.
            if let Some(conn) = up.conn.take() {
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "edge: an upgraded instance connection failed");
                    }
                });
            }
            None
        } else {
            Some(Lease {
                pool: Arc::downgrade(&self.idle),
                addr,
                up,
            })
        };
        resp.map(|inner| Pooled {
            inner,
            done: false,
            back,
        })
    }

    fn pop(&self, addr: SocketAddr) -> Option<Upconn> {
        let mut stacks = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = stacks.get_mut(&addr)?;
        while let Some(idle) = stack.pop() {
            if !idle.up.tx.is_closed() && idle.since.elapsed() < POOL_IDLE {
                return Some(idle.up);
            }
        }
        None
    }

    /// Idle connections to `addr` now.
    #[cfg(test)]
    pub fn idle_to(&self, addr: SocketAddr) -> usize {
        let stacks = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        stacks.get(&addr).map_or(0, |s| s.len())
    }
}

fn put(stacks: &Stacks, addr: SocketAddr, up: Upconn) {
    let mut stacks = stacks.lock().unwrap_or_else(|p| p.into_inner());
    let stack = stacks.entry(addr).or_default();
    if stack.len() < POOL_MAX_IDLE {
        stack.push(Idle {
            up,
            since: Instant::now(),
        });
    }
}

/// Drops idle connections past [`POOL_IDLE`] or closed by their instance
/// (dropping one closes it), and the stacks of instances that have none left.
async fn sweep(pool: Weak<Stacks>) {
    let mut tick = tokio::time::interval(POOL_IDLE);
    loop {
        tick.tick().await;
        let Some(stacks) = pool.upgrade() else { return };
        let mut stacks = stacks.lock().unwrap_or_else(|p| p.into_inner());
        stacks.retain(|_, s| {
            s.retain_mut(|i| i.since.elapsed() < POOL_IDLE && i.up.alive_now());
            !s.is_empty()
        });
    }
}

/// A new connection to `addr`: quick ACKs, no Nagle, upgrades allowed.
async fn connect(addr: SocketAddr) -> Result<Upconn, SendError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::Connect(io::ErrorKind::TimedOut.into()))?
        .map_err(SendError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let io = QuickAck::new(TokioIo::new(tcp));
    let quick_ack = io.arm();
    let (tx, conn) = http1::handshake(io).await.map_err(SendError::Http)?;
    Ok(Upconn {
        tx,
        quick_ack,
        conn: Some(Box::pin(conn.with_upgrades())),
    })
}

/// The connection a response body hands back to its pool.
struct Lease {
    pool: Weak<Stacks>,
    addr: SocketAddr,
    up: Upconn,
}

/// An instance's response body; read to its end, it hands its connection
/// back to the pool (dropped before, the connection closes). Polling it
/// drives its connection (see [`Upconn`]).
pub struct Pooled {
    inner: Incoming,
    done: bool,
    back: Option<Lease>,
}

impl hyper::body::Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let mut r = Pin::new(&mut this.inner).poll_frame(cx);
        if r.is_pending()
            && let Some(lease) = this.back.as_mut()
        {
            // Nothing yet: let the connection read (it fills the body), and
            // acknowledge at once if the socket has nothing either.
            lease.up.quick_ack.store(ACK_ONCE, Ordering::Relaxed);
            if lease.up.drive(cx) {
                r = Pin::new(&mut this.inner).poll_frame(cx);
            }
        }
        if r.is_ready()
            && let Some(lease) = this.back.as_ref()
        {
            lease.up.quick_ack.store(0, Ordering::Relaxed);
        }
        if let Poll::Ready(None) = r {
            this.done = true;
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if (self.done || hyper::body::Body::is_end_stream(&self.inner))
            && let Some(mut lease) = self.back.take()
            && lease.up.conn.is_some()
            && let Some(pool) = lease.pool.upgrade()
        {
            // Ends the exchange in hyper's state (ready for the next
            // request, or closed if the instance said `Connection: close`).
            if lease.up.alive_now() {
                put(&pool, lease.addr, lease.up);
            }
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
