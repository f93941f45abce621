//! The sending side: one task per peer takes its queue in order, connects
//! (TCP, TLS, the server's acceptance byte), and writes; a failed peer is
//! backed off, and the least recently used peer is evicted past the limit.
//! A task per connection reads what the server sends back (see [`back`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_rustls::{TlsConnector, client};

use super::framing::{PROTOCOL, SMALL, append_frame, timed_out, write_frame};
use super::queue::{OutboundReceiver, Queued, Receipt};
use super::{Peers, Shared, back, bump, tls};

/// Back-off after a failed connection to a peer, doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Drops the least recently used peer task and its queue.
pub(super) fn evict_oldest(shared: &Shared, peers: &mut Peers) {
    let Some(&oldest) = peers
        .map
        .iter()
        .min_by_key(|(_, p)| p.last_used)
        .map(|(a, _)| a)
    else {
        return;
    };
    let peer = peers.map.remove(&oldest).expect("just found");
    peer.task.abort();
    let (queued, bytes) = (peer.queue.len(), peer.queue.bytes());
    bump(&shared.stats.peers_evicted, 1);
    bump(&shared.stats.send_failures, queued as u64);
    tracing::debug!(peer = %oldest, queued, bytes, "evicted the least recently used stream peer");
}

/// Why a queued message was not delivered (for logs).
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("backing off after a failed connection")]
    BackingOff,
    #[error("write failed: {0}")]
    Write(io::Error),
}

impl Failure {
    /// Whether no byte of the messages reached the peer (a failed write
    /// may have delivered some).
    fn never_sent(&self) -> bool {
        !matches!(self, Failure::Write(_))
    }
}

/// A cached outgoing connection and the key generation it was checked at.
struct Link {
    /// Its sending half.
    writer: WriteHalf<client::TlsStream<TcpStream>>,
    generation: u64,
    /// The server's certificate chain, to check again after a key change.
    certs: Vec<CertificateDer<'static>>,
    /// The task reading what comes back ([`back::read_answers`]); its end
    /// means the server closed the connection, or it failed.
    reader: JoinHandle<()>,
    /// The same socket, registered again and never read: its readiness
    /// shows the server's close as soon as the runtime has seen it, before
    /// the reader task has run (see [`closed`]).
    watch: TcpStream,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Whether a peer's last connection attempt failed: the end of its
/// back-off, in milliseconds past [`Shared::epoch`], or 0 after a success.
/// Read by [`super::Streams::send_if_reachable`] without waking the task.
#[derive(Debug, Default)]
pub(super) struct Reach(AtomicU64);

impl Reach {
    /// Whether the last attempt failed and its back-off has not ended.
    pub(super) fn failed(&self, epoch: Instant) -> bool {
        let until = self.0.load(Ordering::Relaxed);
        until != 0 && (epoch.elapsed().as_millis() as u64) < until
    }

    fn set(&self, epoch: Instant, until: Option<Instant>) {
        let ms = until.map_or(0, |t| {
            (t.saturating_duration_since(epoch).as_millis() as u64).max(1)
        });
        self.0.store(ms, Ordering::Relaxed);
    }
}

/// Exponential back-off after failed connections, reset by success or new keys.
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
    generation: u64,
}

/// Bytes of small messages gathered into one write (and so a few TLS
/// records and one syscall): what queued up while the last write went out.
const BATCH: usize = 64 * 1024;

/// What one write carries.
enum Payload<'a> {
    /// Small messages' frames, back to back.
    Batch(&'a [u8]),
    /// One message over [`SMALL`], written on its own.
    Large(myco_proto::channel::Channel, &'a [u8]),
}

/// The one task per peer: takes messages in order and writes them, every
/// small message queued at the time in one write.
pub(super) async fn peer_task(
    shared: Arc<Shared>,
    to: SocketAddr,
    mut queue: OutboundReceiver,
    reach: Arc<Reach>,
) {
    let mut link: Option<Link> = None;
    let mut backoff = Backoff {
        until: None,
        delay: BACKOFF_MIN,
        generation: 0,
    };
    let mut batch: Vec<u8> = Vec::new();
    // The receipts of the messages in the write under way.
    let mut receipts: Vec<Receipt> = Vec::new();
    // A message taken from the queue that did not fit the last batch.
    let mut carried: Option<Queued> = None;
    // One timer for closing an idle connection, pushed back only when it
    // fires early: a timeout around every wait for the next message put
    // an entry in the timer wheel per message.
    let idle = shared.config.idle_timeout;
    let mut last_used = Instant::now();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        let mut first = match carried.take().or_else(|| queue.try_recv()) {
            Some(q) => q,
            None if link.is_none() => match queue.recv().await {
                Some(q) => q,
                None => return, // evicted, or the endpoint dropped
            },
            None => tokio::select! {
                biased;
                q = queue.recv() => match q {
                    Some(q) => q,
                    None => return,
                },
                () = &mut idle_timer => {
                    if last_used.elapsed() >= idle {
                        tracing::debug!(%to, "closing idle stream connection");
                        if let Some(mut l) = link.take() {
                            let _ = timeout(shared.config.connect_timeout, l.writer.shutdown()).await;
                        }
                    } else {
                        idle_timer.as_mut().reset(last_used + idle);
                    }
                    continue;
                }
            },
        };
        let mut count = 1u64;
        let mut bytes = first.message.len();
        receipts.extend(first.receipt.take());
        let result = if first.message.len() > SMALL {
            let payload = Payload::Large(first.channel, &first.message);
            deliver(&shared, to, &mut link, &mut backoff, &reach, payload).await
        } else {
            batch.clear();
            append_frame(&mut batch, first.channel, &first.message);
            while batch.len() < BATCH {
                match queue.try_recv() {
                    Some(mut q) if q.message.len() <= SMALL => {
                        append_frame(&mut batch, q.channel, &q.message);
                        receipts.extend(q.receipt.take());
                        count += 1;
                        bytes += q.message.len();
                    }
                    Some(q) => {
                        carried = Some(q);
                        break;
                    }
                    None => break,
                }
            }
            let payload = Payload::Batch(&batch);
            deliver(&shared, to, &mut link, &mut backoff, &reach, payload).await
        };
        last_used = Instant::now();
        match result {
            Ok(()) => {
                bump(&shared.stats.sent_messages, count);
                bump(&shared.stats.sent_bytes, bytes as u64);
            }
            Err(error) => {
                bump(&shared.stats.send_failures, count);
                tracing::debug!(%to, %error, count, bytes, "stream messages dropped");
                if error.never_sent() {
                    for receipt in receipts.drain(..) {
                        receipt();
                    }
                }
            }
        }
        receipts.clear();
    }
}

/// Writes one batch or large message, connecting first if needed. A
/// cached connection found closed, or failing on write, is replaced once,
/// so a peer that restarted usually costs no message (not always: a write
/// can succeed into a socket whose peer is gone without a FIN, as after a
/// power cut).
async fn deliver(
    shared: &Arc<Shared>,
    to: SocketAddr,
    link: &mut Option<Link>,
    backoff: &mut Backoff,
    reach: &Reach,
    payload: Payload<'_>,
) -> Result<(), Failure> {
    let (generation, tls) = shared.tls();
    if let Some(l) = link {
        let trusted = l.generation == generation || tls.trusts_server(Some(&l.certs));
        if !trusted {
            bump(&shared.stats.untrusted_after_rekey, 1);
            tracing::debug!(%to, "peer not trusted after a key change, reconnecting");
            *link = None;
        } else if l.reader.is_finished() || closed(&l.watch) {
            // The server closed it (or it failed) since the last write.
            *link = None;
        } else {
            l.generation = generation;
        }
    }
    let reused = link.is_some();
    for attempt in 0..2 {
        if link.is_none() {
            let connected = connect(shared, to, &tls, generation, backoff).await;
            reach.set(
                shared.epoch,
                connected.is_err().then_some(backoff.until).flatten(),
            );
            *link = Some(match connected {
                Ok(l) => l,
                // A write on the cached connection failed first: some of
                // it may have arrived, so this is not a clean refusal.
                Err(failure) if attempt > 0 => {
                    return Err(Failure::Write(io::Error::other(failure.to_string())));
                }
                Err(failure) => return Err(failure),
            });
        }
        let l = link.as_mut().expect("connected above");
        let written = timeout(shared.config.idle_timeout, async {
            match payload {
                Payload::Batch(frames) => l.writer.write_all(frames).await?,
                Payload::Large(channel, message) => {
                    write_frame(&mut l.writer, channel, message).await?
                }
            }
            // The batch took everything queued: nothing is worth waiting for.
            l.writer.flush().await
        });
        match written.await.unwrap_or_else(|_| Err(timed_out())) {
            Ok(()) => return Ok(()),
            Err(error) => {
                *link = None;
                if !(reused && attempt == 0) {
                    return Err(Failure::Write(error));
                }
                tracing::debug!(%to, %error, "cached stream connection failed, reconnecting");
            }
        }
    }
    unreachable!("the second attempt always returns")
}

/// Whether the runtime has seen the server close the socket `watch`
/// shares, without waiting. The reader task would end on that close, but
/// the task that wants to write is often woken straight after the close
/// was read off the socket, ahead of the reader: writing then into a
/// connection whose peer was killed moments ago lost the message without
/// a receipt (an increment right after its primary's SIGKILL waited 2 s
/// for an answer instead of going to the next member).
pub(super) fn closed(watch: &TcpStream) -> bool {
    use std::future::Future;
    let ready = std::pin::pin!(watch.ready(tokio::io::Interest::READABLE));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(ready.poll(&mut cx), std::task::Poll::Ready(Ok(r)) if r.is_read_closed())
}

/// A second registration of `tcp`'s socket (a duplicated descriptor of
/// the same socket), for [`closed`].
fn watch_of(tcp: &TcpStream) -> io::Result<TcpStream> {
    use std::os::fd::AsFd;
    let fd = tcp.as_fd().try_clone_to_owned()?;
    // Non-blocking already: the flag belongs to the socket, not the descriptor.
    TcpStream::from_std(std::net::TcpStream::from(fd))
}

/// Opens a connection: TCP, TLS, then waits for the server's acceptance byte.
async fn connect(
    shared: &Arc<Shared>,
    to: SocketAddr,
    tls: &tls::Tls,
    generation: u64,
    backoff: &mut Backoff,
) -> Result<Link, Failure> {
    if backoff.generation != generation {
        // New keys may be what the peer was waiting for: try at once.
        backoff.until = None;
        backoff.delay = BACKOFF_MIN;
    }
    if backoff.until.is_some_and(|t| Instant::now() < t) {
        return Err(Failure::BackingOff);
    }
    let result = open(shared, to, tls).await;
    match result {
        Ok((stream, watch)) => {
            backoff.until = None;
            backoff.delay = BACKOFF_MIN;
            tracing::debug!(%to, "stream connection open");
            let certs = stream.get_ref().1.peer_certificates();
            let certs = certs.map(<[_]>::to_vec).unwrap_or_default();
            let (read, writer) = tokio::io::split(stream);
            let answers = back::read_answers(shared.clone(), to, certs.clone(), read);
            Ok(Link {
                writer,
                generation,
                certs,
                reader: shared.runtime.spawn(answers),
                watch,
            })
        }
        Err(failure) => {
            if backoff.until.is_some() {
                backoff.delay = (backoff.delay * 2).min(BACKOFF_MAX);
            }
            backoff.until = Some(Instant::now() + backoff.delay);
            backoff.generation = generation;
            Err(failure)
        }
    }
}

/// Opens a connection to `to` (TCP, TLS, then the server's acceptance
/// byte), with a second registration of its socket for [`closed`];
/// counts a failure.
pub(super) async fn open(
    shared: &Shared,
    to: SocketAddr,
    tls: &tls::Tls,
) -> Result<(client::TlsStream<TcpStream>, TcpStream), Failure> {
    let result = async {
        let tcp = timeout(shared.config.connect_timeout, TcpStream::connect(to))
            .await
            .unwrap_or_else(|_| Err(timed_out()))
            .map_err(Failure::Connect)?;
        // Small messages should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let watch = watch_of(&tcp).map_err(Failure::Connect)?;
        let name = ServerName::try_from(tls::SERVER_NAME).expect("a valid DNS name");
        let handshake = async {
            let mut stream = TlsConnector::from(tls.client.clone())
                .connect(name, tcp)
                .await?;
            let mut version = [0u8; 1];
            stream.read_exact(&mut version).await?;
            if version[0] != PROTOCOL {
                let msg = format!("peer speaks stream protocol {}", version[0]);
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            Ok(stream)
        };
        timeout(shared.config.connect_timeout, handshake)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
            .map_err(Failure::Handshake)
            .map(|stream| (stream, watch))
    }
    .await;
    if let Err(failure) = &result {
        let counter = match failure {
            Failure::Connect(_) => &shared.stats.connect_failures,
            _ => &shared.stats.outbound_handshake_failures,
        };
        bump(counter, 1);
        if let Failure::Handshake(error) = failure
            && tls::no_common_version(error)
        {
            let ours = myco_proto::compat::THIS_BUILD.stream;
            tracing::warn!(%to, "the node at {to} speaks no stream version this build speaks ({ours}): upgrade the older of the two");
        }
    }
    result
}
