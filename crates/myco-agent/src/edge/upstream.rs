//! Connections to instances: TCP that acknowledges at once, and the
//! pool's timings (the pool itself is [`super::pool`]).
//!
//! Why the quick ACKs: many small servers (Python's `http.server`, most
//! scripts) write a response head and its body in two writes. With Nagle
//! on their side, the body waits for the ACK of the head; a reused
//! connection on our side delays that ACK by up to 40 ms (Linux delayed
//! ACK), since we have nothing to send back. Measured through the edge on
//! such a server: 44 ms per request on a pooled connection against 1-2 ms
//! on a fresh one. `TCP_QUICKACK` is not sticky, so it is set again after
//! every read (one cheap `setsockopt`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a pooled connection may sit idle: shorter than usual upstream
/// keep-alives (Node's 5 s is the short one), so the pool seldom sends on a
/// connection the instance is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Idle connections kept per instance.
pub const POOL_MAX_IDLE: usize = 256;
/// Time to connect to an instance before trying another.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to an instance that re-arms `TCP_QUICKACK` after reads.
#[derive(Debug)]
pub struct QuickAck(TokioIo<TcpStream>);

impl QuickAck {
    /// Wraps a connected stream.
    pub fn new(io: TokioIo<TcpStream>) -> Self {
        QuickAck(io)
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
