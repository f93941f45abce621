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
//! big-endian length, one byte naming its [`Channel`], and that many bytes
//! (see [`framing`]): client to server, and from stream version 4 also
//! the server's answers to what the client asked, the same way back (see
//! [`back`]).
//!
//! Delivery is best effort and in order per connection: a message that
//! cannot be delivered is dropped, logged at debug and counted, and the
//! state protocol above repairs by anti-entropy. Everything is bounded by
//! count and by bytes ([`queue`]): one task per peer (at most `max_peers`,
//! least recently used evicted), a queue per peer, a limit on inbound
//! connections, and one [`Inbox`] of incoming messages whose fullness stops
//! the reading connection, which in turn pushes back on the sender through
//! TCP flow control.
//!
//! Parts: [`outbound`] (the per-peer sender tasks), [`inbound`] (accepting
//! and reading), [`back`] (answers on the asking connection), [`direct`]
//! (exchanges: a request the asking task writes and whose answer it reads
//! itself), [`framing`] (the bytes of one message), [`tls`]
//! (certificates from cluster keys), [`queue`] (the bounded queues),
//! [`config`], [`errors`] and [`stats`] (the counters).

mod back;
mod config;
mod crypto;
mod direct;
mod errors;
mod framing;
mod inbound;
mod outbound;
mod queue;
mod rekey;
mod stats;
mod tls;
#[cfg(test)]
mod versions_tests;

use std::net::SocketAddr;

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use myco_proto::channel::Channel;
use myco_proto::{ClusterKey, NodeId};
use rustc_hash::FxHashMap;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

pub use back::Back;
pub use config::{INCOMING_BYTES, QUEUE_BYTES_PER_PEER, StreamConfig};
pub use direct::Exchange;
pub use errors::{SendError, StreamError};
pub use queue::{Inbox, Receipt};
pub use rekey::KeyWatch;
pub use stats::StreamStats;
use stats::{Counters, bump};
pub use tls::RELAY_ALPN;

/// An inbound connection that negotiated [`RELAY_ALPN`], handshake done.
pub type RelayConn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
/// What serves relay connections (the edge): it gets the connection and
/// the peer's address, and holds an inbound slot until its future ends.
pub type RelayHandler = Arc<
    dyn Fn(RelayConn, SocketAddr) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

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
    /// The channel it came on.
    pub channel: Channel,
    /// The message.
    pub message: Vec<u8>,
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

/// A service's handler for one channel's messages, called on the
/// connection reader's task with the way back to the sender (see
/// [`Streams::handle_directly`]).
pub type DirectHandler = Arc<dyn Fn(Vec<u8>, &mut Back) + Send + Sync>;

/// State shared by the handle and the tasks.
struct Shared {
    config: StreamConfig,
    node: NodeId,
    /// Kept to re-sign the leaf when the primary key changes.
    leaf_key: tls::Ed25519Key,
    /// The configs of the current ring, with a generation bumped by each
    /// `set_keys` so live connections know to re-check their peer.
    tls: RwLock<(u64, Arc<tls::Tls>)>,
    peers: Mutex<Peers>,
    stats: Counters,
    runtime: tokio::runtime::Handle,
    /// Channels whose messages a service handles on the reader's task
    /// (see [`Streams::handle_directly`]); the others go to the incoming
    /// channel.
    handlers: RwLock<Vec<(Channel, DirectHandler)>>,
    /// Where the messages no handler takes go, from every connection.
    incoming: queue::InboxSender,
    /// Who serves relay connections; until set they are refused.
    relay: std::sync::OnceLock<RelayHandler>,
    /// The generation again, for relay connections that wait on a change
    /// (see [`rekey`]).
    rekeyed: tokio::sync::watch::Sender<u64>,
    /// What [`outbound::Reach`] counts its milliseconds from.
    epoch: tokio::time::Instant,
    /// Connections for [`Streams::exchange`].
    pool: direct::Pool,
}

impl Shared {
    fn tls(&self) -> (u64, Arc<tls::Tls>) {
        let tls = self.tls.read().unwrap_or_else(PoisonError::into_inner);
        (tls.0, tls.1.clone())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a direct handler takes messages on channel byte `channel`.
    fn handles(&self, channel: u8) -> bool {
        let handlers = self.handlers.read().unwrap_or_else(PoisonError::into_inner);
        handlers.iter().any(|(c, _)| c.byte() == channel)
    }
}

/// Sender tasks by peer address, with a use clock for LRU eviction.
#[derive(Default)]
struct Peers {
    /// By destination: addresses this node chose from the mesh, never a
    /// client's, so FxHash (SipHash showed in a forwarded cache GET's
    /// profile: two lookups per message sent).
    map: FxHashMap<SocketAddr, Peer>,
    clock: u64,
}

struct Peer {
    queue: queue::Outbound,
    last_used: u64,
    task: AbortHandle,
    /// Whether the task's last connection attempt failed (shared with it).
    reach: Arc<outbound::Reach>,
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
    ) -> Result<(Streams, Inbox), StreamError> {
        config.max_message = config.max_message.min(u32::MAX as usize);
        config.max_peers = config.max_peers.max(1);
        config.queue_per_peer = config.queue_per_peer.max(1);
        config.incoming_queue = config.incoming_queue.max(1);
        config.incoming_bytes = config.incoming_bytes.max(config.max_message);
        let leaf_key = tls::leaf_key()?;
        let tls = tls::Tls::new(keys, &leaf_key, node)?;
        let bind_error = |source| StreamError::Bind { addr: bind, source };
        let listener = TcpListener::bind(bind).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let (incoming, receiver) = queue::inbox(config.incoming_queue, config.incoming_bytes);
        let shared = Arc::new(Shared {
            config,
            node,
            leaf_key,
            tls: RwLock::new((0, Arc::new(tls))),
            peers: Mutex::default(),
            stats: Counters::default(),
            runtime: tokio::runtime::Handle::current(),
            handlers: RwLock::default(),
            incoming,
            relay: std::sync::OnceLock::new(),
            rekeyed: tokio::sync::watch::Sender::new(0),
            epoch: tokio::time::Instant::now(),
            pool: direct::Pool::default(),
        });
        let accept = tokio::spawn(inbound::accept_loop(listener, shared.clone())).abort_handle();
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

    /// Queues `message` on `channel` for the node whose stream port is
    /// `to`. Never blocks: a per-peer task connects (or reuses its
    /// connection) and writes. Refused, counted and dropped when too large
    /// or when the peer's queue is full (by count or bytes); a queued
    /// message may still be dropped later (see [`StreamStats::send_failures`]).
    pub fn send(
        &self,
        to: SocketAddr,
        channel: Channel,
        message: Vec<u8>,
    ) -> Result<(), SendError> {
        self.send_or_return(to, channel, message)
            .map_err(|(e, _)| e)
    }

    /// [`Streams::send`], giving the message back when it was refused, so
    /// a caller that will try again (spore serving, when the queue to its
    /// asker is full) need not keep a copy of every message it sends.
    pub fn send_or_return(
        &self,
        to: SocketAddr,
        channel: Channel,
        message: Vec<u8>,
    ) -> Result<(), (SendError, Vec<u8>)> {
        self.queue(to, channel, message, false, None)
    }

    /// [`Streams::send`] for a request whose asker would rather try
    /// another node now than wait for an answer that cannot come (the
    /// cache, after an owner is killed and before membership sees it
    /// down): refused at once with [`SendError::Unreachable`] while the
    /// peer's last connection attempt has failed and its back-off runs,
    /// and, once queued, `receipt` is called if the message is dropped
    /// without a byte of it written (the connection was refused). A
    /// message lost in a failed write is not reported: it may have arrived.
    pub fn send_if_reachable(
        &self,
        to: SocketAddr,
        channel: Channel,
        message: Vec<u8>,
        receipt: Option<Receipt>,
    ) -> Result<(), SendError> {
        self.queue(to, channel, message, true, receipt)
            .map_err(|(e, _)| e)
    }

    /// Sends `message` on `channel` to the node whose stream port is `to`
    /// and reads the answer, both on the calling task, over a connection
    /// held for this exchange alone ([`direct`]): a forwarded request then
    /// wakes no other task on this node. `answer` gets the first message
    /// back and says whether it is the answer (a request id that matches);
    /// if not, the connection is closed. [`Exchange::NotSent`] when no
    /// connection is idle (the caller sends through the queue, as with
    /// [`Streams::send_if_reachable`]); the caller bounds the wait.
    pub async fn exchange(
        &self,
        to: SocketAddr,
        channel: Channel,
        message: &[u8],
        answer: impl FnOnce(&[u8]) -> bool,
    ) -> Exchange {
        direct::exchange(&self.owner.shared, to, channel, message, answer).await
    }

    fn queue(
        &self,
        to: SocketAddr,
        channel: Channel,
        message: Vec<u8>,
        if_reachable: bool,
        receipt: Option<Receipt>,
    ) -> Result<(), (SendError, Vec<u8>)> {
        let shared = &self.owner.shared;
        let max = shared.config.max_message;
        if message.len() > max {
            bump(&shared.stats.oversize_refused, 1);
            tracing::debug!(%to, size = message.len(), max, "stream message too large");
            let size = message.len();
            return Err((SendError::TooLarge { size, max }, message));
        }
        let mut peers = shared.peers();
        peers.clock += 1;
        let now = peers.clock;
        // A closed queue means the task ended (it only does on a panic).
        if peers.map.get(&to).is_none_or(|p| p.queue.is_closed()) {
            peers.map.remove(&to);
            if peers.map.len() >= shared.config.max_peers {
                outbound::evict_oldest(shared, &mut peers);
            }
            let (queue, rx) = queue::outbound(
                shared.config.queue_per_peer,
                shared.config.queue_bytes_per_peer,
            );
            let reach = Arc::new(outbound::Reach::default());
            let task = shared
                .runtime
                .spawn(outbound::peer_task(shared.clone(), to, rx, reach.clone()))
                .abort_handle();
            let peer = Peer {
                queue,
                last_used: now,
                task,
                reach,
            };
            peers.map.insert(to, peer);
        }
        let peer = peers.map.get_mut(&to).expect("inserted above");
        peer.last_used = now;
        if if_reachable && peer.reach.failed(shared.epoch) {
            bump(&shared.stats.unreachable_refused, 1);
            return Err((SendError::Unreachable { to }, message));
        }
        let queued = queue::Queued {
            channel,
            message,
            receipt,
        };
        match peer.queue.try_push_back(queued) {
            Ok(()) => Ok(()),
            Err((full @ (queue::Refused::Count | queue::Refused::Bytes), item)) => {
                let counter = match full {
                    queue::Refused::Count => &shared.stats.queue_full,
                    _ => &shared.stats.queue_bytes_full,
                };
                bump(counter, 1);
                tracing::debug!(%to, ?full, "stream queue full, message dropped");
                Err((SendError::QueueFull { to }, item.message))
            }
            Err((queue::Refused::Closed, _)) => {
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
        shared.rekeyed.send_replace(current.0);
        tracing::debug!(primary = %keys[0].id(), keys = keys.len(), "stream keys replaced");
        Ok(())
    }

    /// Calls `handler` on the connection reader's task for each message
    /// on `channel`, instead of sending it through the incoming channel
    /// and the mesh loop: the request or answer then wakes no other task
    /// before its service sees it (the cache's remote GET and messaging's
    /// publish-to-receive latency). The handler must not block: it runs
    /// between reads of that connection. What it answers at once through
    /// [`Back::send`] goes back on the connection the message came in on
    /// (stream version 4). A later call for the same channel replaces the
    /// handler.
    pub fn handle_directly(&self, channel: Channel, handler: DirectHandler) {
        let mut handlers = self
            .owner
            .shared
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        handlers.retain(|(c, _)| *c != channel);
        handlers.push((channel, handler));
    }

    /// [`Streams::handle_directly`] for a service: `on` runs while
    /// `service` lives; the handler holds it weakly, so it does not keep
    /// the service (nor its `Streams` handle) alive.
    pub fn handle_for<T: Send + Sync + 'static>(
        &self,
        channel: Channel,
        service: &Arc<T>,
        on: fn(&T, &[u8], &mut Back),
    ) {
        let weak = Arc::downgrade(service);
        self.handle_directly(
            channel,
            Arc::new(move |bytes, back| {
                if let Some(service) = weak.upgrade() {
                    on(&service, &bytes, back);
                }
            }),
        );
    }

    /// The TLS client config for relay connections to other nodes'
    /// stream ports: this ring's trust and leaves, offering [`RELAY_ALPN`].
    /// Taken per connection, so a key change applies to the next one.
    pub fn relay_client_config(&self) -> Arc<rustls::ClientConfig> {
        self.owner.shared.tls().1.relay_client.clone()
    }

    /// Hands inbound connections that negotiated [`RELAY_ALPN`] to
    /// `handler` (once; a second call is ignored). They take the same
    /// inbound slots as stream connections.
    pub fn set_relay_handler(&self, handler: RelayHandler) {
        let _ = self.owner.shared.relay.set(handler);
    }

    /// Bytes waiting in every peer's outbound queue: what this node holds
    /// for sending. Spore serving checks it before reading another chunk,
    /// so a holder with many fetchers keeps a fixed ceiling on memory.
    pub fn queued_bytes(&self) -> usize {
        let peers = self.owner.shared.peers();
        peers.map.values().map(|p| p.queue.bytes()).sum()
    }

    /// The counters so far.
    pub fn stats(&self) -> StreamStats {
        self.owner.shared.stats.snapshot()
    }
}
