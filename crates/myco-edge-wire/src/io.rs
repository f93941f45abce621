//! Reads and writes on raw sockets with a time limit, for the fast path.
//!
//! Each tries the socket first (`try_read`/`try_write` cost no syscall
//! when tokio knows the socket is not ready) and only waits when it must.
//! One timer per connection serves every wait, and it is moved only when
//! a wait needs an earlier deadline: a timer that fires early is pushed to
//! the real deadline then. A new or moved timer is a lock on the runtime's
//! timer wheel, and a keep-alive request waits two or three times.

use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Why a wait ended without its bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// The deadline passed.
    Timeout,
    /// The socket failed or (reading) the peer closed.
    Closed,
}

/// The connection's one timer.
pub struct Timer(Pin<Box<Sleep>>);

impl Default for Timer {
    /// A timer (set by the first wait that needs it).
    fn default() -> Self {
        Timer(Box::pin(tokio::time::sleep(Duration::from_secs(3600))))
    }
}

impl Timer {
    /// Runs `f` until it completes or `limit` passes.
    pub async fn within<F: Future>(&mut self, limit: Duration, f: F) -> Option<F::Output> {
        let at = Instant::now() + limit;
        if self.0.deadline() > at {
            self.0.as_mut().reset(at);
        }
        let mut f = std::pin::pin!(f);
        loop {
            tokio::select! {
                biased;
                r = &mut f => return Some(r),
                () = &mut self.0 => {
                    if Instant::now() >= at {
                        return None;
                    }
                    self.0.as_mut().reset(at);
                }
            }
        }
    }
}

/// A read buffer: bytes from `start` to `end` are unread. Zeroed once
/// when it grows, never per read; consumed bytes are moved out of the way
/// only when a read needs the room.
pub struct Buf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl Buf {
    /// An empty buffer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Buf {
            data: vec![0; n],
            start: 0,
            end: 0,
        }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    /// How many bytes are unread.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether nothing is unread.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` unread bytes as read.
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.len());
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for `max` more bytes after the unread ones.
    fn spare(&mut self, max: usize) -> &mut [u8] {
        if self.data.len() - self.end < max && self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < max {
            self.data.resize(self.end + max, 0);
        }
        &mut self.data[self.end..self.end + max]
    }

    /// The unread bytes, for hyper to read first.
    pub fn into_unread(self) -> Vec<u8> {
        self.data[self.start..self.end].to_vec()
    }
}

/// Reads what is there (at most `max` bytes) onto the end of `buf`,
/// waiting at most `limit`. `Ok(0)` is the peer's end of stream. With
/// `quick_ack`, a read that finds nothing first acknowledges what arrived
/// at once (see the agent's `edge::upstream`: an instance that writes head
/// and body apart waits for that ACK).
///
/// Through `poll_read`, not `try_read`: tokio forgets a socket's readiness
/// after a read that did not fill the buffer (the socket is drained), so
/// the next read waits for the kernel's word instead of asking it first
/// (one `recvfrom` returning `EAGAIN` per read saved).
pub async fn read_some(
    s: &mut TcpStream,
    buf: &mut Buf,
    max: usize,
    timer: &mut Timer,
    limit: Duration,
    quick_ack: bool,
) -> Result<usize, Waited> {
    let spare = buf.spare(max);
    let mut ack = quick_ack;
    let read = std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut *spare);
        match Pin::new(&mut *s).poll_read(cx, &mut rb) {
            Poll::Ready(r) => Poll::Ready(r.map(|()| rb.filled().len())),
            Poll::Pending => {
                if std::mem::take(&mut ack) {
                    // Best effort: a failure only costs latency.
                    let _ = socket2::SockRef::from(&*s).set_tcp_quickack(true);
                }
                Poll::Pending
            }
        }
    });
    match timer.within(limit, read).await {
        None => Err(Waited::Timeout),
        Some(Err(_)) => Err(Waited::Closed),
        Some(Ok(n)) => {
            buf.end += n;
            Ok(n)
        }
    }
}

/// Writes all of `bufs` in order, waiting at most `limit` each time the
/// socket takes nothing.
pub async fn write_all(
    s: &TcpStream,
    bufs: &[&[u8]],
    timer: &mut Timer,
    limit: Duration,
) -> Result<(), Waited> {
    let mut done = 0usize;
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    while done < total {
        // The parts not written yet, as slices for one `writev`.
        let mut skip = done;
        let mut slices = [io::IoSlice::new(&[]); 4];
        let mut n = 0;
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            if n < slices.len() {
                slices[n] = io::IoSlice::new(&b[skip..]);
                n += 1;
            }
            skip = 0;
        }
        match s.try_write_vectored(&slices[..n]) {
            Ok(0) => return Err(Waited::Closed),
            Ok(k) => {
                done += k;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Err(Waited::Closed),
        }
        match timer.within(limit, s.writable()).await {
            None => return Err(Waited::Timeout),
            Some(Err(_)) => return Err(Waited::Closed),
            Some(Ok(())) => {}
        }
    }
    Ok(())
}
