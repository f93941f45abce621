//! The connection pool to instances: hyper-util's keep-alive pool over
//! TCP connections that acknowledge at once.
//!
//! Why the quick ACKs: many small servers (Python's `http.server`, most
//! scripts) write a response head and its body in two writes. With Nagle
//! on their side, the body waits for the ACK of the head; a reused
//! connection on our side delays that ACK by up to 40 ms (Linux delayed
//! ACK), since we have nothing to send back. Measured through the edge on
//! such a server: 44 ms per request on a pooled connection against 1-2 ms
//! on a fresh one. `TCP_QUICKACK` is not sticky, so it is set again after
//! every read (one cheap `setsockopt`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower_service::Service;

/// How long a pooled connection may sit idle: shorter than usual upstream
/// keep-alives (Node's 5 s is the short one), so the pool seldom sends on a
/// connection the instance is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per instance.
pub const POOL_MAX_IDLE: usize = 256;
/// Time to connect to an instance before trying another.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The pooled HTTP/1.1 client to instances.
pub type UpstreamClient = Client<QuickAckConnector, axum::body::Body>;

/// The client the edge sends with.
pub fn client() -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_MAX_IDLE)
        .build(QuickAckConnector(http))
}

/// [`HttpConnector`] whose connections ACK at once (see the module docs).
#[derive(Clone, Debug)]
pub struct QuickAckConnector(HttpConnector);

type ConnectError = <HttpConnector as Service<Uri>>::Error;

impl Service<Uri> for QuickAckConnector {
    type Response = QuickAck;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<QuickAck, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move { connecting.await.map(QuickAck) })
    }
}

/// A connection to an instance that re-arms `TCP_QUICKACK` after reads.
#[derive(Debug)]
pub struct QuickAck(TokioIo<TcpStream>);

impl Connection for QuickAck {
    fn connected(&self) -> Connected {
        self.0.connected()
    }
}

impl Read for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.0).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) {
            // Best effort: a failure only costs latency.
            let _ = socket2::SockRef::from(this.0.inner()).set_tcp_quickack(true);
        }
        r
    }
}

impl Write for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}
