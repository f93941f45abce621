//! Writes on the sender's own task. While a peer's connection is idle
//! (nothing queued, nothing being written, nothing written for
//! `direct_after`), a sender writes a small message itself
//! ([`LinkSlot::try_write`]): a cache request or answer, or a published
//! message, then wakes no sender task on its way out. Everything else goes
//! through the peer task (see [`super::outbound`]): a burst (a pipeline
//! of publishes) is then written in one go rather than a syscall and a
//! wake-up of the reader per message, as is whatever the socket cannot
//! take at once.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::framing::{SMALL, frame};
use super::outbound::{Link, closed_by_peer};

/// A peer's connection while its task is not using it, shared with the
/// senders so they can write on it directly.
pub(super) struct LinkSlot {
    /// When the slot was made: `last_write` counts from it.
    born: Instant,
    /// Nanoseconds from `born` to the last write, either way.
    last_write: AtomicU64,
    /// The connection, whenever the peer task is between messages (it
    /// takes it out while it connects or writes).
    idle: Mutex<Option<Link>>,
    /// Messages queued for the peer task or being written by it. A sender
    /// writes directly only when none are, so one sender's messages stay
    /// in order whichever way each goes.
    pub(super) pending: AtomicUsize,
    /// Direct writes so far: the peer task's idle timer does not close a
    /// connection the senders keep using.
    used: AtomicU64,
    /// Wakes the peer task to finish a direct write the socket could not
    /// take at once.
    pub(super) flush: Notify,
}

/// Writes to the socket without waiting: `WouldBlock` when it is full.
struct NoWait<'a>(&'a TcpStream);

impl Write for NoWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LinkSlot {
    pub(super) fn new() -> LinkSlot {
        LinkSlot {
            born: Instant::now(),
            last_write: AtomicU64::new(0),
            idle: Mutex::default(),
            pending: AtomicUsize::new(0),
            used: AtomicU64::new(0),
            flush: Notify::new(),
        }
    }

    fn since_born(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn wrote(&self) {
        self.last_write.store(self.since_born(), Ordering::Relaxed);
    }

    /// Whether a connection is open (and not taken by the peer task).
    pub(super) fn connected(&self) -> bool {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Direct writes so far.
    pub(super) fn direct_uses(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(super) fn take(&self) -> Option<Link> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    pub(super) fn put(&self, link: Option<Link>) {
        *self.idle.lock().unwrap_or_else(PoisonError::into_inner) = link;
    }

    /// Writes one message on the caller's task if the connection is open,
    /// idle, checked at the current key `generation`, and the message is
    /// small; false (nothing written) when it must be queued instead.
    /// Never waits: what the socket cannot take now stays encrypted in the
    /// connection, and the peer task is woken to write it.
    pub(super) fn try_write(
        &self,
        direct_after: Option<Duration>,
        generation: u64,
        channel: myco_proto::channel::Channel,
        message: &[u8],
    ) -> bool {
        let Some(after) = direct_after else {
            return false;
        };
        if message.len() > SMALL || self.pending.load(Ordering::Acquire) > 0 {
            return false;
        }
        let last = self.last_write.load(Ordering::Relaxed);
        let after = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        if last > 0 && self.since_born().saturating_sub(last) < after {
            // Part of a burst: the queue gathers it into one write.
            return false;
        }
        // Another sender writing now: queue rather than wait for it.
        let Ok(mut slot) = self.idle.try_lock() else {
            return false;
        };
        // Checked again under the lock: the peer task counts a message
        // before it takes the connection to write it.
        if self.pending.load(Ordering::Acquire) > 0 {
            return false;
        }
        let Some(link) = slot.as_mut() else {
            return false;
        };
        if link.generation != generation || closed_by_peer(&mut link.stream) {
            // The peer task re-checks trust, or reconnects.
            return false;
        }
        let (tcp, conn) = link.stream.get_mut();
        // Bytes a full socket left behind are the peer task's to write
        // first; an empty buffer also takes a whole small frame at once.
        if conn.wants_write() {
            return false;
        }
        let written = conn.writer().write_all(&frame(channel, message));
        let mut flushed = written.is_ok();
        let mut blocked = false;
        while flushed && conn.wants_write() {
            match conn.write_tls(&mut NoWait(tcp)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(_) => flushed = false,
            }
        }
        if !flushed {
            // Part of a frame may be in the connection: it cannot be used
            // again. The message goes through the queue and a new one.
            *slot = None;
            return false;
        }
        self.used.fetch_add(1, Ordering::Relaxed);
        self.wrote();
        if blocked {
            self.flush.notify_one();
        }
        true
    }
}
