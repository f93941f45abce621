//! Connections to instances: TCP that acknowledges at once, and the
//! pool's timings (the pool itself is [`super::pool`]).
//!
//! Why the quick ACKs: many small servers (Python's `http.server`, most
//! scripts) write a response head and its body in two writes. With Nagle
//! on their side, the body waits for the ACK of the head; a reused
//! connection on our side delays that ACK by up to 40 ms (Linux delayed
//! ACK), since we have nothing to send back. Measured through the edge on
//! such a server: 44 ms per request on a pooled connection against 1-2 ms
//! on a fresh one. `TCP_QUICKACK` is not sticky, so it is set each time it
//! is needed: when a response body is awaited and the socket has nothing
//! more ([`QuickAck::arm`]). Set after every read instead, it cost a
//! `setsockopt` per request (4.2 % of the edge's CPU in the fifth pass's
//! profile) for the usual answer that arrives whole in one read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Pool and connect limits, shared with the fast path's raw pool.
pub use myco_edge_wire::{CONNECT_TIMEOUT, POOL_IDLE, POOL_MAX_IDLE};

/// A connection to an instance that sets `TCP_QUICKACK` when a read
/// finds nothing while a response body is awaited.
#[derive(Debug)]
pub struct QuickAck {
    io: TokioIo<TcpStream>,
    armed: Arc<AtomicU8>,
}

/// [`QuickAck::arm`]'s values: acknowledge on the next read that finds
/// nothing...
pub const ACK_ONCE: u8 = 1;
/// ...or on every one (an upgraded connection: a tunnel has no bodies to
/// tell when the other side waits).
pub const ACK_ALWAYS: u8 = 2;

impl QuickAck {
    /// Wraps a connected stream.
    pub fn new(io: TokioIo<TcpStream>) -> Self {
        QuickAck {
            io,
            armed: Arc::default(),
        }
    }

    /// The switch the response body sets ([`ACK_ONCE`]) while it waits
    /// for bytes: the next read that finds none acknowledges what arrived
    /// at once (the instance may be holding the rest until then).
    pub fn arm(&self) -> Arc<AtomicU8> {
        self.armed.clone()
    }
}

impl Read for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let ack = r.is_pending()
            && match this.armed.load(Ordering::Relaxed) {
                ACK_ONCE => this.armed.swap(0, Ordering::Relaxed) == ACK_ONCE,
                armed => armed == ACK_ALWAYS,
            };
        if ack {
            // Best effort: a failure only costs latency.
            let _ = socket2::SockRef::from(this.io.inner()).set_tcp_quickack(true);
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
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
