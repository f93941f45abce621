//! The hook for a hand-written fast path ahead of hyper
//! ([`super::Server::fast_path`]): the edge serves plain keep-alive
//! requests itself and hands the connection to hyper at the first request
//! it does not serve, with the bytes it has read replayed first
//! ([`Rewind`]). hyper then serves the rest of the connection, so every
//! case the fast path leaves out (upgrades, chunked bodies, h2c, heads
//! worth a precise 400/431) keeps hyper's behaviour.

use std::io::Cursor;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::{AsyncReadExt, Chain, Join};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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
    pub stop: &'a watch::Receiver<bool>,
}

/// How a [`FastPath`] is done with a connection.
pub enum Handoff {
    /// The connection closes.
    Close,
    /// hyper serves the rest of the connection, starting with these bytes
    /// (read from the socket, not served): always at a request's start.
    Hyper(Vec<u8>),
}

/// The socket with bytes already read put back in front: tokio's own
/// chain (the bytes, then the socket's read half) joined with the write
/// half.
pub(super) type Rewind = Join<Chain<Cursor<Vec<u8>>, OwnedReadHalf>, OwnedWriteHalf>;

/// `stream` with `prefix` to be read first.
pub(super) fn rewind(prefix: Vec<u8>, stream: TcpStream) -> Rewind {
    let (read, write) = stream.into_split();
    tokio::io::join(Cursor::new(prefix).chain(read), write)
}
