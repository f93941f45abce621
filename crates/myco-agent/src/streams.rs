//! Authenticated, encrypted message streams between nodes.
//!
//! Gossip travels in sealed UDP datagrams; state sync (and later spore
//! transfer) needs reliable, ordered delivery of larger messages. Streams
//! carry them over TCP with TLS 1.3 and mutual authentication, listening on
//! the same port *number* as the UDP mesh socket (as memberlist does with
//! 7946). Certificates come from the cluster keys (see [`tls`]): only
//! holders of a key in the ring can connect or accept.
//!
//! Wire format: after the TLS handshake the server writes one byte, the
//! protocol version, which tells the client that its certificate was
//! accepted (in TLS 1.3 a client finishes its handshake before the server
//! has judged its certificate, so without this it would write into a
//! connection about to be refused). Then each message is a 4-byte
//! big-endian length and that many bytes, client to server only.
//!
//! Delivery is best effort and in order per connection: a message that
//! cannot be delivered is dropped, logged at debug and counted, and the
//! state protocol above repairs by anti-entropy. Everything is bounded: one
//! task per peer (at most `max_peers`, least recently used evicted), a queue
//! per peer, a limit on inbound connections, and a bounded channel of
//! incoming messages whose fullness stops the reading connection, which in
//! turn pushes back on the sender through TCP flow control.

mod tls;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use myco_proto::{ClusterKey, NodeId};
use rcgen::KeyPair;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, timeout};
use tokio_rustls::{TlsAcceptor, TlsConnector, client};

/// The stream protocol version, sent by the server once the handshake is done.
const PROTOCOL: u8 = 1;
/// Messages up to this size are written with their length in one TLS record.
const SMALL: usize = 16 * 1024;
/// Back-off after a failed connection to a peer, doubling up to the maximum.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Limits and timeouts of [`Streams`]. Zero queue sizes and peer counts
/// are raised to one.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The largest message sent or accepted, in bytes (at most `u32::MAX`).
    pub max_message: usize,
    /// How many peers may have a sender task (and cached connection) at once.
    pub max_peers: usize,
    /// Messages queued per peer before [`Streams::send`] refuses more.
    pub queue_per_peer: usize,
    /// Incoming messages buffered before connections stop being read.
    pub incoming_queue: usize,
    /// Limit for a TCP connect, and separately for a TLS handshake (both ways).
    pub connect_timeout: Duration,
    /// An outgoing connection unused this long is closed; an inbound one silent
    /// twice as long too (so normally the sender closes first). Also the limit
    /// for writing or reading one message.
    pub idle_timeout: Duration,
    /// Concurrent inbound connections; more are closed at once.
    pub max_inbound: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_message: 8 << 20,
            max_peers: 64,
            queue_per_peer: 256,
            incoming_queue: 1024,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_inbound: 256,
        }
    }
}

/// Why streams could not start or take new keys.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The TCP port could not be bound.
    #[error(
        "binding TCP {addr} for streams: {source} (streams use the mesh port number over TCP: is another program using it? choose another port with --bind)"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The key list was empty.
    #[error("no cluster key given: pass the key ring's keys, primary first")]
    NoKey,
    /// rcgen refused to build a certificate.
    #[error("building the stream certificates failed: {0} (a bug in myco: please report it)")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused a configuration.
    #[error("building the TLS configuration failed: {0} (a bug in myco: please report it)")]
    Tls(#[from] rustls::Error),
    /// rustls refused the trust anchors.
    #[error("building the certificate verifier failed: {0} (a bug in myco: please report it)")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Why [`Streams::send`] refused a message (it is dropped and counted).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The message is larger than `max_message`.
    #[error(
        "a message of {size} bytes is over the {max}-byte limit: split it, or raise max_message on every node"
    )]
    TooLarge {
        /// The message size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The peer's queue is full: it is slow, unreachable or backing off.
    #[error(
        "the queue to {to} is full (the peer is slow or unreachable): the message was dropped; send less often or rely on anti-entropy"
    )]
    QueueFull {
        /// The peer's address.
        to: SocketAddr,
    },
}

/// A message received from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The remote address of the connection (the sender's ephemeral port,
    /// not its mesh port: reply through the membership address of `peer`).
    pub from: SocketAddr,
    /// The sender's node id, from its certificate. Any holder of a cluster
    /// key can mint a certificate, so this names the sender only as far as
    /// cluster members are trusted.
    pub peer: Option<NodeId>,
    /// The message.
    pub message: Vec<u8>,
}

/// Declares the counters once, as atomics inside and a plain snapshot outside.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// Stream counters since [`Streams::bind`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StreamStats {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        #[derive(Default)]
        struct Counters {
            $($name: AtomicU64,)*
        }

        impl Counters {
            fn snapshot(&self) -> StreamStats {
                StreamStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Messages written to a connection the server had accepted (not an
    /// acknowledgement: a connection dying afterwards loses them).
    sent_messages,
    /// Payload bytes of `sent_messages`.
    sent_bytes,
    /// Messages received and handed to the incoming channel.
    received_messages,
    /// Payload bytes of `received_messages`.
    received_bytes,
    /// Outgoing TCP connects that failed or timed out.
    connect_failures,
    /// Outgoing TLS handshakes that failed: the peer is not trusted by our
    /// ring, refused our certificate, or is not a myco stream port.
    outbound_handshake_failures,
    /// Inbound handshakes that failed: no or untrusted client certificate,
    /// not TLS at all, or too slow.
    inbound_handshake_failures,
    /// Messages refused for size: by `send`, or a length prefix received
    /// (that connection is then closed).
    oversize_refused,
    /// Messages refused by `send` because the peer's queue was full.
    queue_full,
    /// Queued messages dropped: connect, handshake or write failed, the peer
    /// was backing off after a failure, or its task was evicted.
    send_failures,
    /// Peer tasks evicted (least recently used) to stay within `max_peers`.
    peers_evicted,
    /// Inbound connections closed at once because `max_inbound` were open.
    inbound_refused,
    /// Live connections (either way) closed because, after `set_keys`, the
    /// ring no longer trusts the peer's certificate.
    untrusted_after_rekey,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// A handle to the stream endpoint; clones share it. When the last clone is
/// dropped the listener, all connections and all queued messages go with it.
#[derive(Clone)]
pub struct Streams {
    owner: Arc<Owner>,
}

/// Stops every task when the last [`Streams`] handle goes.
struct Owner {
    shared: Arc<Shared>,
    accept: AbortHandle,
    local: SocketAddr,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts inbound connections.
        self.accept.abort();
        for peer in self.shared.peers().map.values() {
            peer.task.abort();
        }
    }
}

/// State shared by the handle and the tasks.
struct Shared {
    config: StreamConfig,
    node: NodeId,
    /// Kept to re-sign the leaf when the primary key changes.
    leaf_key: KeyPair,
    /// The configs of the current ring, with a generation bumped by each
    /// `set_keys` so live connections know to re-check their peer.
    tls: RwLock<(u64, Arc<tls::Tls>)>,
    peers: Mutex<Peers>,
    stats: Counters,
    runtime: tokio::runtime::Handle,
}

impl Shared {
    fn tls(&self) -> (u64, Arc<tls::Tls>) {
        let tls = self.tls.read().unwrap_or_else(PoisonError::into_inner);
        (tls.0, tls.1.clone())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Sender tasks by peer address, with a use clock for LRU eviction.
#[derive(Default)]
struct Peers {
    map: HashMap<SocketAddr, Peer>,
    clock: u64,
}

struct Peer {
    queue: mpsc::Sender<Vec<u8>>,
    last_used: u64,
    task: AbortHandle,
}

impl Streams {
    /// Binds TCP `bind` (the mesh port number; port 0 picks a free one, see
    /// [`Streams::local_addr`]) and starts accepting. `keys` are the ring's
    /// keys, primary first: the node's certificate is signed by the primary's
    /// CA and peers signed by any of them are trusted. Incoming messages go
    /// to the returned receiver; must be called inside a tokio runtime.
    pub async fn bind(
        bind: SocketAddr,
        keys: &[ClusterKey],
        node: NodeId,
        mut config: StreamConfig,
    ) -> Result<(Streams, mpsc::Receiver<Incoming>), StreamError> {
        config.max_message = config.max_message.min(u32::MAX as usize);
        config.max_peers = config.max_peers.max(1);
        config.queue_per_peer = config.queue_per_peer.max(1);
        config.incoming_queue = config.incoming_queue.max(1);
        let leaf_key = tls::leaf_key()?;
        let tls = tls::Tls::new(keys, &leaf_key, node)?;
        let bind_error = |source| StreamError::Bind { addr: bind, source };
        let listener = TcpListener::bind(bind).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let (incoming, receiver) = mpsc::channel(config.incoming_queue);
        let shared = Arc::new(Shared {
            config,
            node,
            leaf_key,
            tls: RwLock::new((0, Arc::new(tls))),
            peers: Mutex::default(),
            stats: Counters::default(),
            runtime: tokio::runtime::Handle::current(),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone(), incoming)).abort_handle();
        tracing::debug!(%local, %node, "streams listening");
        let owner = Arc::new(Owner {
            shared,
            accept,
            local,
        });
        Ok((Streams { owner }, receiver))
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.owner.local
    }

    /// Queues `message` for the node whose stream port is `to`. Never blocks:
    /// a per-peer task connects (or reuses its connection) and writes.
    /// Refused, counted and dropped when too large or when the peer's queue
    /// is full; a queued message may still be dropped later (see
    /// [`StreamStats::send_failures`]).
    pub fn send(&self, to: SocketAddr, message: Vec<u8>) -> Result<(), SendError> {
        let shared = &self.owner.shared;
        let max = shared.config.max_message;
        if message.len() > max {
            bump(&shared.stats.oversize_refused, 1);
            tracing::debug!(%to, size = message.len(), max, "stream message too large");
            return Err(SendError::TooLarge {
                size: message.len(),
                max,
            });
        }
        let mut peers = shared.peers();
        peers.clock += 1;
        let now = peers.clock;
        // A closed queue means the task ended (it only does on a panic).
        if peers.map.get(&to).is_none_or(|p| p.queue.is_closed()) {
            peers.map.remove(&to);
            if peers.map.len() >= shared.config.max_peers {
                evict_oldest(shared, &mut peers);
            }
            let (queue, rx) = mpsc::channel(shared.config.queue_per_peer);
            let task = shared
                .runtime
                .spawn(peer_task(shared.clone(), to, rx))
                .abort_handle();
            let peer = Peer {
                queue,
                last_used: now,
                task,
            };
            peers.map.insert(to, peer);
        }
        let peer = peers.map.get_mut(&to).expect("inserted above");
        peer.last_used = now;
        match peer.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                bump(&shared.stats.queue_full, 1);
                tracing::debug!(%to, "stream queue full, message dropped");
                Err(SendError::QueueFull { to })
            }
            Err(TrySendError::Closed(_)) => {
                bump(&shared.stats.send_failures, 1);
                tracing::debug!(%to, "stream sender task ended, message dropped");
                Ok(())
            }
        }
    }

    /// Replaces the keys (primary first), for rotation. New connections use
    /// the new certificate and trust; a live connection is kept only if the
    /// new ring still trusts its peer, checked before its next message. On
    /// error the old keys stay in use.
    pub fn set_keys(&self, keys: &[ClusterKey]) -> Result<(), StreamError> {
        let shared = &self.owner.shared;
        let tls = Arc::new(tls::Tls::new(keys, &shared.leaf_key, shared.node)?);
        let mut current = shared.tls.write().unwrap_or_else(PoisonError::into_inner);
        *current = (current.0 + 1, tls);
        tracing::debug!(primary = %keys[0].id(), keys = keys.len(), "stream keys replaced");
        Ok(())
    }

    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        self.owner.shared.stats.snapshot()
    }
}

/// Drops the least recently used peer task and its queue.
fn evict_oldest(shared: &Shared, peers: &mut Peers) {
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
    let queued = peer.queue.max_capacity() - peer.queue.capacity();
    bump(&shared.stats.peers_evicted, 1);
    bump(&shared.stats.send_failures, queued as u64);
    tracing::debug!(peer = %oldest, queued, "evicted the least recently used stream peer");
}

/// Why a queued message was not delivered (for logs).
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("connect failed: {0}")]
    Connect(io::Error),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("backing off after a failed connection")]
    BackingOff,
    #[error("write failed: {0}")]
    Write(io::Error),
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "timed out")
}

/// A cached outgoing connection and the key generation it was checked at.
struct Link {
    stream: client::TlsStream<TcpStream>,
    generation: u64,
}

/// Exponential back-off after failed connections, reset by success or new keys.
struct Backoff {
    until: Option<Instant>,
    delay: Duration,
    generation: u64,
}

/// The one task per peer: takes messages in order and writes them.
async fn peer_task(shared: Arc<Shared>, to: SocketAddr, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut link: Option<Link> = None;
    let mut backoff = Backoff {
        until: None,
        delay: BACKOFF_MIN,
        generation: 0,
    };
    loop {
        let message = if link.is_some() {
            match timeout(shared.config.idle_timeout, queue.recv()).await {
                Ok(message) => message,
                Err(_) => {
                    tracing::debug!(%to, "closing idle stream connection");
                    if let Some(mut l) = link.take() {
                        let _ = timeout(shared.config.connect_timeout, l.stream.shutdown()).await;
                    }
                    continue;
                }
            }
        } else {
            queue.recv().await
        };
        // None: evicted or the endpoint dropped.
        let Some(message) = message else { return };
        let more = !queue.is_empty();
        match deliver(&shared, to, &mut link, &mut backoff, &message, more).await {
            Ok(()) => {
                bump(&shared.stats.sent_messages, 1);
                bump(&shared.stats.sent_bytes, message.len() as u64);
            }
            Err(error) => {
                bump(&shared.stats.send_failures, 1);
                tracing::debug!(%to, %error, size = message.len(), "stream message dropped");
            }
        }
    }
}

/// Writes one message, connecting first if needed. A cached connection found
/// closed, or failing on write, is replaced once, so a peer that restarted
/// usually costs no message (not always: a write can succeed into a socket
/// whose peer is gone without a FIN, as after a power cut).
async fn deliver(
    shared: &Shared,
    to: SocketAddr,
    link: &mut Option<Link>,
    backoff: &mut Backoff,
    message: &[u8],
    more: bool,
) -> Result<(), Failure> {
    let (generation, tls) = shared.tls();
    if let Some(l) = link {
        let trusted = l.generation == generation
            || tls.trusts_server(l.stream.get_ref().1.peer_certificates());
        if !trusted {
            bump(&shared.stats.untrusted_after_rekey, 1);
            tracing::debug!(%to, "peer not trusted after a key change, reconnecting");
            *link = None;
        } else if closed_by_peer(&mut l.stream).await {
            *link = None;
        } else {
            l.generation = generation;
        }
    }
    let reused = link.is_some();
    for attempt in 0..2 {
        if link.is_none() {
            *link = Some(connect(shared, to, &tls, generation, backoff).await?);
        }
        let l = link.as_mut().expect("connected above");
        let written = timeout(shared.config.idle_timeout, async {
            write_frame(&mut l.stream, message).await?;
            // Flush only when the queue is drained, so bursts share records.
            if !more {
                l.stream.flush().await
            } else {
                Ok(())
            }
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

/// Whether the peer closed (or sent anything, which it never should) since
/// the last use: polls one read without waiting.
async fn closed_by_peer(stream: &mut client::TlsStream<TcpStream>) -> bool {
    let mut byte = [0u8; 1];
    timeout(Duration::ZERO, stream.read(&mut byte))
        .await
        .is_ok()
}

/// Opens a connection: TCP, TLS, then waits for the server's acceptance byte.
async fn connect(
    shared: &Shared,
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
    let result = async {
        let tcp = timeout(shared.config.connect_timeout, TcpStream::connect(to))
            .await
            .unwrap_or_else(|_| Err(timed_out()))
            .map_err(Failure::Connect)?;
        // Small messages should not wait for Nagle.
        let _ = tcp.set_nodelay(true);
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
    }
    .await;
    match result {
        Ok(stream) => {
            backoff.until = None;
            backoff.delay = BACKOFF_MIN;
            tracing::debug!(%to, "stream connection open");
            Ok(Link { stream, generation })
        }
        Err(failure) => {
            let counter = match failure {
                Failure::Connect(_) => &shared.stats.connect_failures,
                _ => &shared.stats.outbound_handshake_failures,
            };
            bump(counter, 1);
            if backoff.until.is_some() {
                backoff.delay = (backoff.delay * 2).min(BACKOFF_MAX);
            }
            backoff.until = Some(Instant::now() + backoff.delay);
            backoff.generation = generation;
            Err(failure)
        }
    }
}

/// Writes the length prefix and the message.
async fn write_frame(stream: &mut (impl AsyncWrite + Unpin), message: &[u8]) -> io::Result<()> {
    // `send` refused anything over max_message, which is at most u32::MAX.
    let header = (message.len() as u32).to_be_bytes();
    if message.len() <= SMALL {
        // One write, so one TLS record rather than a 4-byte one per message.
        let mut frame = Vec::with_capacity(4 + message.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(message);
        stream.write_all(&frame).await
    } else {
        stream.write_all(&header).await?;
        stream.write_all(message).await
    }
}

/// Accepts connections while the incoming receiver lives.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, incoming: mpsc::Sender<Incoming>) {
    let slots = Arc::new(Semaphore::new(shared.config.max_inbound));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, from)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        connections.spawn(serve(shared.clone(), tcp, from, incoming.clone(), slot));
                    }
                    Err(_) => {
                        bump(&shared.stats.inbound_refused, 1);
                        tracing::debug!(%from, "too many inbound stream connections, closing");
                    }
                },
                Err(error) => {
                    // Typically out of file descriptors: pause rather than spin.
                    tracing::debug!(%error, "stream accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = incoming.closed() => return,
        }
    }
}

/// Serves one inbound connection: handshake, then read messages until the
/// peer closes, idles, misbehaves or loses our trust.
async fn serve(
    shared: Arc<Shared>,
    tcp: TcpStream,
    from: SocketAddr,
    incoming: mpsc::Sender<Incoming>,
    _slot: OwnedSemaphorePermit,
) {
    let config = &shared.config;
    let (mut generation, tls) = shared.tls();
    let _ = tcp.set_nodelay(true);
    let handshake = async {
        let mut stream = TlsAcceptor::from(tls.server.clone()).accept(tcp).await?;
        stream.write_all(&[PROTOCOL]).await?;
        stream.flush().await?;
        Ok::<_, io::Error>(stream)
    };
    let mut stream = match timeout(config.connect_timeout, handshake).await {
        Ok(Ok(stream)) => stream,
        result => {
            let error = result.unwrap_or_else(|_| Err(timed_out())).err();
            bump(&shared.stats.inbound_handshake_failures, 1);
            tracing::debug!(%from, error = ?error, "inbound stream handshake refused");
            return;
        }
    };
    let certs = stream.get_ref().1.peer_certificates();
    let peer = certs.and_then(|c| c.first()).and_then(|c| tls::node_of(c));
    tracing::debug!(%from, peer = ?peer, "inbound stream connection open");
    let result = loop {
        let message = match read_frame(&mut stream, config).await {
            Ok(Frame::Message(message)) => message,
            Ok(Frame::End) => break Ok(()),
            Ok(Frame::Oversize(len)) => {
                bump(&shared.stats.oversize_refused, 1);
                let max = config.max_message;
                let msg = format!("length prefix {len} is over max_message {max}");
                break Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            Err(error) => break Err(error),
        };
        let (now, tls) = shared.tls();
        if now != generation {
            if !tls.trusts_client(stream.get_ref().1.peer_certificates()) {
                bump(&shared.stats.untrusted_after_rekey, 1);
                break Err(io::Error::other("peer not trusted after a key change"));
            }
            generation = now;
        }
        let size = message.len() as u64;
        let item = Incoming {
            from,
            peer,
            message,
        };
        // Waiting here is the backpressure: this connection is not read
        // while the consumer is behind.
        if incoming.send(item).await.is_err() {
            break Ok(());
        }
        bump(&shared.stats.received_messages, 1);
        bump(&shared.stats.received_bytes, size);
    };
    match result {
        Ok(()) => {
            let _ = timeout(config.connect_timeout, stream.shutdown()).await;
            tracing::debug!(%from, "inbound stream connection closed");
        }
        Err(error) => {
            tracing::debug!(%from, %error, "inbound stream connection dropped");
        }
    }
}

/// What [`read_frame`] found.
enum Frame {
    Message(Vec<u8>),
    /// A clean close, or silence for twice the idle timeout, between messages.
    End,
    /// A length prefix over `max_message`, refused before allocating.
    Oversize(usize),
}

/// Reads one message. The length is checked before anything is allocated.
async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    config: &StreamConfig,
) -> io::Result<Frame> {
    let mut header = [0u8; 4];
    match timeout(2 * config.idle_timeout, stream.read_exact(&mut header)).await {
        Err(_) => return Ok(Frame::End), // the sender forgot us: close quietly
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Frame::End),
        Ok(result) => result?,
    };
    let len = u32::from_be_bytes(header) as usize;
    if len > config.max_message {
        return Ok(Frame::Oversize(len));
    }
    let mut message = vec![0; len];
    timeout(config.idle_timeout, stream.read_exact(&mut message))
        .await
        .unwrap_or_else(|_| Err(timed_out()))?;
    Ok(Frame::Message(message))
}

#[cfg(test)]
mod tests {
    //! Refusals that need a hand-made client; the rest is in tests/streams.rs.

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    fn key(n: u8) -> ClusterKey {
        ClusterKey::from_bytes([n; 32])
    }

    fn member_tls() -> tls::Tls {
        let leaf_key = tls::leaf_key().unwrap();
        tls::Tls::new(&[key(1)], &leaf_key, NodeId::from_u64(9)).unwrap()
    }

    async fn server() -> (Streams, mpsc::Receiver<Incoming>) {
        let any = "127.0.0.1:0".parse().unwrap();
        let node = NodeId::from_u64(1);
        Streams::bind(any, &[key(1)], node, StreamConfig::default())
            .await
            .unwrap()
    }

    async fn until(streams: &Streams, what: &str, done: impl Fn(&StreamStats) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&streams.stats()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                streams.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Opens a connection as a member would, up to the server's version byte.
    async fn connect_as(
        config: Arc<rustls::ClientConfig>,
        to: SocketAddr,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(to).await?;
        let name = ServerName::try_from(tls::SERVER_NAME).unwrap();
        let mut stream = TlsConnector::from(config).connect(name, tcp).await?;
        let mut version = [0u8; 1];
        stream.read_exact(&mut version).await?;
        assert_eq!(version[0], PROTOCOL);
        Ok(stream)
    }

    async fn send_frame(stream: &mut client::TlsStream<TcpStream>, message: &[u8]) {
        write_frame(stream, message).await.unwrap();
        stream.flush().await.unwrap();
    }

    #[tokio::test]
    async fn an_oversize_length_prefix_is_refused_before_allocating() {
        let (a, mut rx) = server().await;
        let mut stream = connect_as(member_tls().client, a.local_addr())
            .await
            .unwrap();
        send_frame(&mut stream, b"ok").await;
        assert_eq!(
            timeout(WAIT, rx.recv()).await.unwrap().unwrap().message,
            b"ok"
        );

        stream.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        // The server closes at once. Had it allocated 4 GiB and waited for
        // them, this read would only end at the 60 s idle timeout.
        let mut rest = Vec::new();
        let closed = timeout(WAIT, stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection stayed open");
        until(&a, "the oversize refusal", |s| s.oversize_refused == 1).await;
        assert_eq!(a.stats().received_messages, 1);
    }

    #[tokio::test]
    async fn a_tls_client_without_a_certificate_is_refused() {
        let (a, mut rx) = server().await;
        // In TLS 1.3 the client finishes first; the refusal shows as no version byte.
        let refused = connect_as(member_tls().client_without_cert(), a.local_addr());
        assert!(timeout(WAIT, refused).await.unwrap().is_err());
        until(&a, "the refusal", |s| s.inbound_handshake_failures == 1).await;

        // The server keeps serving members.
        let mut stream = connect_as(member_tls().client, a.local_addr())
            .await
            .unwrap();
        send_frame(&mut stream, b"hi").await;
        let got = timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        assert_eq!(
            (got.message, got.peer),
            (b"hi".to_vec(), Some(NodeId::from_u64(9)))
        );
    }
}
