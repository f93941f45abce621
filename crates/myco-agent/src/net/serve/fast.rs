//! The hook for a hand-written fast path ahead of hyper
//! ([`super::Server::fast_path`]): the edge serves plain keep-alive
//! requests itself and hands the connection to hyper at the first request
//! it does not serve, with the bytes it has read replayed first
//! ([`Rewind`]). hyper then serves the rest of the connection, so every
//! case the fast path leaves out (upgrades, chunked bodies, h2c, heads
//! worth a precise 400/431) keeps hyper's behaviour.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{ServeCounters, ServeLimits};

/// A connection's plain requests served without hyper.
pub trait FastPath: Send + Sync + 'static {
    /// Serves requests on `conn` until it closes ([`Handoff::Close`]) or
    /// a request needs hyper ([`Handoff::Hyper`]). The limits' timeouts
    /// (header, idle, body stall, send stall) are the fast path's to keep
    /// until it hands over; so is shutdown (`stop` turns true).
    fn serve<'a>(
        &'a self,
        conn: FastConn<'a>,
    ) -> Pin<Box<dyn Future<Output = Handoff> + Send + 'a>>;
}

/// What a [`FastPath`] gets of a connection.
pub struct FastConn<'a> {
    /// The client's socket (`SO_SNDBUF` and `TCP_NODELAY` already set).
    pub stream: &'a mut TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's limits.
    pub limits: &'a ServeLimits,
    /// The server's counters (timeouts are counted as hyper's path does).
    pub counters: &'a ServeCounters,
    /// Turns true when the server shuts down.
    pub stop: &'a mut watch::Receiver<bool>,
}

/// How a [`FastPath`] is done with a connection.
pub enum Handoff {
    /// The connection closes.
    Close,
    /// hyper serves the rest of the connection, starting with these bytes
    /// (read from the socket, not served): always at a request's start.
    Hyper(Vec<u8>),
}

/// The socket with bytes already read put back in front.
pub(super) struct Rewind {
    prefix: Vec<u8>,
    pos: usize,
    pub(super) inner: TcpStream,
}

impl Rewind {
    pub(super) fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
