//! Exchanges: a request the asking task writes and whose answer it reads
//! itself, on a connection it holds alone for that exchange.
//!
//! Through the peer's queue a forwarded request wakes two more tasks on
//! the asking node: the peer's writer, then the reader of the answers,
//! which hands the answer over. A bare forwarder does neither: the task
//! that has the request writes it and reads the answer. An exchange does
//! the same over a small pool of connections per peer, opened in the
//! background when a request finds none idle (that request goes through
//! the queue instead, so opening one never delays a request). The server
//! side is the ordinary one: it answers on the connection the request
//! came in on ([`super::back`]), in order, so the first message back is
//! the answer.
//!
//! A connection is in the pool only between exchanges: one given up half
//! way (the asker stopped waiting, the write or read failed) is closed,
//! so no late answer can be read as the next one's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use myco_proto::channel::Channel;
use rustc_hash::FxHashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::client;

use super::framing::{Frame, SMALL, append_frame, read_frame, timed_out};
use super::outbound::{closed, open};
use super::{Shared, bump};

/// Connections per peer, idle and in use: the exchanges that go at once
/// without the queue. More askers than this share the queue, which
/// gathers their requests into fewer writes under load.
const PER_PEER: usize = 2;
/// After a failed connect, how long before another is tried (the queue
/// still serves the peer, with its own back-off).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often idle connections are looked over for ones gone stale, so a
/// peer no longer asked does not keep them open.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What [`super::Streams::exchange`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Exchange {
    /// The first message back on the connection was the answer: the
    /// caller's `answer` took it (a server answers one connection's
    /// requests in order).
    Answered,
    /// Nothing was written: no idle connection to the peer (one may be
    /// opening), or the message is too large for an exchange. Send it
    /// through the queue.
    NotSent,
    /// The message was written (it may have arrived) and no answer was
    /// read: the connection failed, or what came back was not the answer
    /// (another channel, or refused by `answer`), and it was closed.
    Lost,
}

/// The idle connections to every peer, and how many are open.
#[derive(Default)]
pub(super) struct Pool {
    peers: Mutex<Peers>,
}

#[derive(Default)]
struct Peers {
    map: FxHashMap<SocketAddr, Links>,
    swept: Option<Instant>,
}

#[derive(Default)]
struct Links {
    /// Boxed: a TLS client connection is over a kilobyte, and a link moves
    /// six times an exchange (out of the pool, into the exchange, back);
    /// unboxed those copies were 7,000 instructions of a forwarded GET.
    #[allow(clippy::vec_box, reason = "moved in and out: see above")]
    idle: Vec<Box<Link>>,
    /// Idle, in use and being opened.
    open: usize,
    opening: bool,
    retry_at: Option<Instant>,
}

struct Link {
    stream: client::TlsStream<TcpStream>,
    /// The key generation it was opened under: after a key change the
    /// connection is closed rather than checked again.
    generation: u64,
    used: Instant,
}

impl Link {
    /// Whether it may carry another exchange: same keys, not idle for
    /// as long as the server waits before closing, and not closed by it.
    fn usable(&self, generation: u64, idle: Duration, now: Instant) -> bool {
        self.generation == generation
            && now.duration_since(self.used) < idle
            && !closed(self.stream.get_ref().0)
    }
}

/// A connection taken from the pool for one exchange; closed and
/// uncounted if dropped before [`Taken::give_back`].
struct Taken<'a> {
    shared: &'a Arc<Shared>,
    to: SocketAddr,
    link: Option<Box<Link>>,
}

impl Taken<'_> {
    fn give_back(mut self) {
        let mut link = self.link.take().expect("taken once");
        link.used = Instant::now();
        let mut peers = self.shared.pool.lock();
        peers.map.entry(self.to).or_default().idle.push(link);
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if self.link.is_some() {
            let mut peers = self.shared.pool.lock();
            if let Some(links) = peers.map.get_mut(&self.to) {
                links.open = links.open.saturating_sub(1);
            }
        }
    }
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes `message` to `to` on an idle pooled connection and hands the
/// first message back to `answer`, which says whether it was the answer;
/// see [`Exchange`].
pub(super) async fn exchange(
    shared: &Arc<Shared>,
    to: SocketAddr,
    channel: Channel,
    message: &[u8],
    answer: impl FnOnce(&[u8]) -> bool,
) -> Exchange {
    if message.len() > SMALL {
        return Exchange::NotSent;
    }
    let Some(mut taken) = take(shared, to) else {
        return Exchange::NotSent;
    };
    let link = taken.link.as_mut().expect("just taken");
    let mut frame = Vec::with_capacity(5 + message.len());
    append_frame(&mut frame, channel, message);
    let written = timeout(shared.config.idle_timeout, async {
        link.stream.write_all(&frame).await?;
        link.stream.flush().await
    });
    if written.await.unwrap_or_else(|_| Err(timed_out())).is_err() {
        bump(&shared.stats.send_failures, 1);
        return Exchange::Lost;
    }
    bump(&shared.stats.sent_messages, 1);
    bump(&shared.stats.sent_bytes, message.len() as u64);
    // No limit here: the asker bounds its wait.
    match read_frame(&mut link.stream, &shared.config, None).await {
        Ok(Frame::Message(c, message)) if c == channel.byte() && answer(&message) => {
            bump(&shared.stats.exchanges, 1);
            taken.give_back();
            Exchange::Answered
        }
        _ => Exchange::Lost,
    }
}

/// An idle connection to `to`, if there is one; else starts opening one
/// (within [`PER_PEER`]) for the next exchange.
fn take(shared: &Arc<Shared>, to: SocketAddr) -> Option<Taken<'_>> {
    let generation = shared.tls().0;
    let idle = shared.config.idle_timeout;
    let now = Instant::now();
    let mut peers = shared.pool.lock();
    if peers
        .swept
        .is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY)
    {
        peers.swept = Some(now);
        peers.map.retain(|_, links| {
            let before = links.idle.len();
            links.idle.retain(|l| l.usable(generation, idle, now));
            links.open -= before - links.idle.len();
            links.open > 0 || links.opening || links.retry_at.is_some_and(|t| now < t)
        });
    }
    if !peers.map.contains_key(&to) && peers.map.len() >= shared.config.max_peers {
        return None;
    }
    let links = peers.map.entry(to).or_default();
    while let Some(link) = links.idle.pop() {
        if link.usable(generation, idle, now) {
            return Some(Taken {
                shared,
                to,
                link: Some(link),
            });
        }
        links.open -= 1;
    }
    if links.open < PER_PEER && !links.opening && links.retry_at.is_none_or(|t| now >= t) {
        links.open += 1;
        links.opening = true;
        shared
            .runtime
            .spawn(open_one(shared.clone(), to, generation));
    }
    None
}

/// Opens one connection to `to` into the pool.
async fn open_one(shared: Arc<Shared>, to: SocketAddr, generation: u64) {
    let tls = shared.tls().1;
    let opened = open(&shared, to, &tls).await;
    let mut peers = shared.pool.lock();
    let links = peers.map.entry(to).or_default();
    links.opening = false;
    match opened {
        Ok((stream, _watch)) => {
            bump(&shared.stats.exchange_connections, 1);
            links.retry_at = None;
            links.idle.push(Box::new(Link {
                stream,
                generation,
                used: Instant::now(),
            }));
        }
        Err(error) => {
            tracing::debug!(%to, %error, "exchange connection failed");
            links.open = links.open.saturating_sub(1);
            links.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
    }
}
