//! The keep-alive pool to instances: HTTP/1.1 connections made with
//! hyper's low-level `client::conn::http1`, kept per instance address in a
//! small stack of idle senders.
//!
//! Why not hyper-util's legacy `Client`: under load it cost about a third
//! of the edge's CPU (profile in BENCHMARKS.md, "Edge profile"): a pool
//! keyed by URI scheme and authority with a waiter list, a spawned task per
//! request to hand the connection back when it is ready again, a boxed
//! connector future. Here a request pops an idle sender (one short lock),
//! and its response body pushes it back when it ends: no task, no
//! allocation per request beyond hyper's own. One task per *connection*
//! drives it.
//!
//! A sender whose connection the instance closed is seen on the pop
//! (`is_closed`) or when sending: a request that was not written yet comes
//! back (`try_send_request`) and goes on the next idle connection or a new
//! one, so an instance closing an idle connection never fails a request.
//! Idle connections older than [`POOL_IDLE`] are dropped when popped, and
//! by a sweep every [`POOL_IDLE`], which closes them.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::upstream::{CONNECT_TIMEOUT, POOL_IDLE, POOL_MAX_IDLE, QuickAck};

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

struct Idle {
    tx: SendRequest<Body>,
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
        while let Some(mut tx) = self.pop(addr) {
            // Usually ready already; just after a response ended, its
            // connection task may not have asked for the next one yet.
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(self.lease(addr, tx, resp)),
                Err(mut e) => match e.take_message() {
                    // Not written: the connection had closed. Next one.
                    Some(back) => req = back,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let mut tx = connect(addr).await?;
        let resp = tx.send_request(req).await.map_err(SendError::Http)?;
        Ok(self.lease(addr, tx, resp))
    }

    fn lease(
        &self,
        addr: SocketAddr,
        tx: SendRequest<Body>,
        resp: Response<Incoming>,
    ) -> Response<Pooled> {
        // A 101's connection now belongs to the upgrade: never reused.
        let back = (resp.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            pool: Arc::downgrade(&self.idle),
            addr,
            tx,
        });
        resp.map(|inner| Pooled {
            inner,
            done: false,
            back,
        })
    }

    fn pop(&self, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut stacks = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = stacks.get_mut(&addr)?;
        while let Some(idle) = stack.pop() {
            if !idle.tx.is_closed() && idle.since.elapsed() < POOL_IDLE {
                return Some(idle.tx);
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

fn put(stacks: &Stacks, addr: SocketAddr, tx: SendRequest<Body>) {
    let mut stacks = stacks.lock().unwrap_or_else(|p| p.into_inner());
    let stack = stacks.entry(addr).or_default();
    if stack.len() < POOL_MAX_IDLE {
        stack.push(Idle {
            tx,
            since: Instant::now(),
        });
    }
}

/// Drops idle connections past [`POOL_IDLE`] (their tasks then close
/// them), and the stacks of instances that have none left.
async fn sweep(pool: Weak<Stacks>) {
    let mut tick = tokio::time::interval(POOL_IDLE);
    loop {
        tick.tick().await;
        let Some(stacks) = pool.upgrade() else { return };
        let mut stacks = stacks.lock().unwrap_or_else(|p| p.into_inner());
        stacks.retain(|_, s| {
            s.retain(|i| !i.tx.is_closed() && i.since.elapsed() < POOL_IDLE);
            !s.is_empty()
        });
    }
}

/// A new connection to `addr`: quick ACKs, no Nagle, upgrades allowed; its
/// task runs until the connection closes.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>, SendError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| SendError::Connect(io::ErrorKind::TimedOut.into()))?
        .map_err(SendError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let (tx, conn) = http1::handshake(QuickAck::new(TokioIo::new(tcp)))
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(async move {
        if let Err(error) = conn.with_upgrades().await {
            tracing::debug!(%addr, %error, "edge: an instance connection ended");
        }
    });
    Ok(tx)
}

/// The sender a response body hands back to its pool.
struct Lease {
    pool: Weak<Stacks>,
    addr: SocketAddr,
    tx: SendRequest<Body>,
}

/// An instance's response body; read to its end, it hands its connection
/// back to the pool (dropped before, the connection closes).
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
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = r {
            self.done = true;
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
            && let Some(lease) = self.back.take()
            && let Some(pool) = lease.pool.upgrade()
        {
            put(&pool, lease.addr, lease.tx);
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
