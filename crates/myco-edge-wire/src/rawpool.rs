//! The fast path's keep-alive pool: raw TCP connections to instances,
//! a stack of idle ones per address (the most recent first: warm, and the
//! least likely to have been closed by the instance), as the agent's `edge::pool`
//! keeps hyper's. Idle connections older than [`POOL_IDLE`] are dropped
//! when met; a pop skips connections the instance closed (a read check
//! that costs no syscall while tokio knows the socket has nothing).

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rustc_hash::FxHashMap;
use tokio::net::TcpStream;

use crate::{CONNECT_TIMEOUT, POOL_IDLE, POOL_MAX_IDLE};

/// An idle connection and since when.
type Idle = (TcpStream, Instant);

/// Idle connections per instance address; clones share them.
#[derive(Clone, Default)]
pub struct RawPool {
    idle: Arc<Mutex<IdleMap>>,
}

/// Idle connections by instance address, hashed with FxHash: two
/// lookups per request with the standard SipHash cost more than the rest
/// of the pool's work. The keys are instance addresses from the mesh's own
/// state, not chosen by clients, so a hash that can be flooded is no risk.
type IdleMap = FxHashMap<SocketAddr, Vec<Idle>>;

/// A connection to an instance and whether it came from the pool (then
/// a failure before any answer byte may be its staleness, not the
/// instance's: the request may go again on a fresh connection).
pub struct Upconn {
    /// The socket.
    pub stream: TcpStream,
    /// Taken from the pool rather than connected now.
    pub reused: bool,
}

impl RawPool {
    /// An idle connection to `addr` that is still open, if any.
    pub fn pop(&self, addr: SocketAddr) -> Option<Upconn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = idle.get_mut(&addr)?;
        while let Some((stream, since)) = stack.pop() {
            if now.duration_since(since) >= POOL_IDLE {
                // The rest are older still.
                stack.clear();
                break;
            }
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Some(Upconn {
                        stream,
                        reused: true,
                    });
                }
                // Closed, failed, or bytes nobody asked for: not reusable.
                _ => continue,
            }
        }
        None
    }

    /// An idle connection, or a new one ([`CONNECT_TIMEOUT`]).
    pub async fn get(&self, addr: SocketAddr) -> io::Result<Upconn> {
        if let Some(c) = self.pop(addr) {
            return Ok(c);
        }
        Self::connect(addr).await
    }

    /// A new connection to `addr`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Upconn> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        // Requests are written whole; coalescing only adds latency.
        let _ = stream.set_nodelay(true);
        Ok(Upconn {
            stream,
            reused: false,
        })
    }

    /// Returns a connection whose exchange ended cleanly.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let stack = idle.entry(addr).or_default();
        // The oldest sit at the bottom: drop those past their time, so a
        // stack that is never drained does not hold stale sockets.
        let stale = |t: &Instant| now.saturating_duration_since(*t) >= POOL_IDLE;
        if stack.first().is_some_and(|(_, t)| stale(t)) {
            stack.retain(|(_, t)| !stale(t));
        }
        if stack.len() < POOL_MAX_IDLE {
            stack.push((stream, now));
        }
    }

    /// Idle connections to `addr` now (tests).
    pub fn idle(&self, addr: SocketAddr) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get(&addr).map_or(0, Vec::len)
    }
}
