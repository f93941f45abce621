//! App messaging across the mesh: publish/subscribe and request/reply,
//! at most once, nothing persisted (NATS-core semantics).
//!
//! - [`local`]: this node's subscribers: bounded queues (a slow
//!   subscriber loses messages and is told how many; a publisher never
//!   waits), a bounded number per node; some only take published
//!   messages (a Redis `SUBSCRIBE` cannot answer), and are never handed
//!   a request.
//! - [`remote`]: messages from other nodes, the topic announcements that
//!   make subscriptions known mesh-wide without any disk write, and
//!   replies; [`announced`] keeps what the other nodes announced (which
//!   can answer a request, how many subscribers a publish reaches).
//! - [`unsent`]: publishes a peer's stream queue refused, counted and told
//!   to that peer, so its subscribers learn of losses on the way too.
//!
//! [`Messaging`] is what HTTP, the Redis protocol and embedders use.

mod announced;
mod local;
mod remote;
mod unsent;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use myco_core::MemberState;
use myco_proto::NodeId;
use myco_proto::msg::{MAX_BODY, MsgMessage, ReplyStatus, check_topic};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::mesh::MeshHandle;
use crate::net::streams::Streams;

pub use local::{Delivery, Subscription};

/// Messages one subscriber may have queued; past it, new ones are lost
/// (and counted for it).
pub const SUBSCRIBER_QUEUE: usize = 1024;
/// Subscribers one node holds at once.
pub const MAX_SUBSCRIBERS: usize = 4096;
/// Requests this node waits on (its own) or holds reply ids for (its
/// subscribers'), each; more are refused.
pub const MAX_PENDING: usize = 10_000;
/// Longest a request may wait.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// How often a node with subscribers repeats its topics.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// A node's topics are forgotten after this long without an announcement.
pub const ANNOUNCE_TTL: Duration = Duration::from_millis(3500);
/// Messaging messages from the mesh loop queued for this service.
pub const INBOX: usize = 4096;

/// Why a messaging operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsgError {
    /// The topic name is not valid.
    #[error("{0}")]
    Topic(String),
    /// The body is too large.
    #[error("a message of {0} bytes is over the {MAX_BODY}-byte limit")]
    TooLarge(usize),
    /// No subscriber anywhere in the mesh (requests only).
    #[error("no subscriber for topic {0:?} anywhere in the mesh")]
    NoSubscriber(String),
    /// No answer in time.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// Too many subscribers or pending requests on this node.
    #[error("{0}; try again later")]
    Busy(&'static str),
    /// No such reply id (never issued, answered already, or timed out).
    #[error("no request waits for reply id {0:?} (answered already, or it timed out)")]
    NoRequest(String),
}

/// Counters of the messaging service.
#[derive(Debug, Default)]
pub struct MsgCounters {
    /// Messages published from this node.
    pub published: AtomicU64,
    /// Messages handed to local subscribers.
    pub delivered: AtomicU64,
    /// Messages lost for this node's subscribers: their queue was full,
    /// or the publishing node could not send them (its [`unsent`] notices).
    pub lost: AtomicU64,
    /// Publishes from this node a peer's stream queue refused (told to
    /// that peer as a loss).
    pub unsent: AtomicU64,
    /// Stream messages dropped: undecodable, unexpected, inbox full.
    pub dropped: AtomicU64,
    /// Requests made from this node.
    pub requests: AtomicU64,
    /// Of those, answered with no subscriber anywhere.
    pub requests_unanswerable: AtomicU64,
    /// Of those, not answered in time.
    pub request_timeouts: AtomicU64,
}

/// How far a publish went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// The nodes it was sent to (this one included when it has
    /// subscribers).
    pub nodes: usize,
    /// The subscribers it reached, as Redis' `PUBLISH` counts them: this
    /// node's that took it (a full queue loses it, uncounted), plus those
    /// the other nodes it was sent to last announced for the topic. Those
    /// are at most about a second old: a subscriber that came since may
    /// get it uncounted, and one whose queue is full is counted though it
    /// loses it; a node of an older release, which announces no counts,
    /// counts as one when it has a subscriber that answers requests.
    /// 0 when no subscriber is known anywhere.
    pub receivers: usize,
}

/// What a request gets back: what became of it, and the answer's body.
type Answer = (ReplyStatus, Vec<u8>);

/// Where a reply goes: the asking node and its request id.
#[derive(Clone, Copy, Debug)]
struct ReplyTarget {
    to: SocketAddr,
    request: u64,
    until: Instant,
}

/// The messaging service of one node.
pub struct Messaging {
    me: NodeId,
    addr: SocketAddr,
    mesh: MeshHandle,
    streams: Streams,
    local: Mutex<local::Local>,
    /// What other nodes announced, by their stream address.
    announced: Mutex<announced::Announced>,
    /// This node's requests waiting for a reply.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Reply ids given to this node's subscribers.
    replies: Mutex<HashMap<String, ReplyTarget>>,
    next: AtomicU64,
    /// Loss counts owed to peers (see [`unsent`]).
    unsent: Mutex<unsent::Unsent>,
    /// How many peers are owed one: zero spares a publish the lock.
    unsent_peers: std::sync::atomic::AtomicUsize,
    /// Wakes the announcer when the local topics change.
    changed: Notify,
    counters: MsgCounters,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging").field("me", &self.me).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Messaging {
    /// Starts the service (the consumer of `inbox` and the announcer) on
    /// the current runtime.
    pub fn start(
        mesh: MeshHandle,
        streams: Streams,
        inbox: mpsc::Receiver<Vec<u8>>,
    ) -> Arc<Messaging> {
        let me = mesh.me();
        let seed = u64::from_le_bytes(crate::config::datadir::random_bytes::<8>());
        let msg = Arc::new(Messaging {
            me: me.id,
            addr: me.addr,
            mesh,
            streams,
            local: Mutex::new(local::Local::default()),
            announced: Mutex::default(),
            pending: Mutex::new(HashMap::new()),
            replies: Mutex::new(HashMap::new()),
            next: AtomicU64::new(seed >> 1),
            unsent: Mutex::new(HashMap::new()),
            unsent_peers: std::sync::atomic::AtomicUsize::new(0),
            changed: Notify::new(),
            counters: MsgCounters::default(),
        });
        tokio::spawn(remote::consume(msg.clone(), inbox));
        // Handled on the stream reader's task (`on_message` never waits):
        // a published message reaches the subscriber's queue with no
        // task hop on the way; the inbox takes what the mesh loop hands over.
        msg.streams
            .handle_for(myco_proto::channel::Channel::Msg, &msg, |msg, bytes, _| {
                msg.on_bytes(bytes)
            });
        tokio::spawn(remote::announce(Arc::downgrade(&msg)));
        msg
    }

    /// The counters.
    pub fn counters(&self) -> &MsgCounters {
        &self.counters
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// Live peers (not this node) and their stream addresses.
    fn peers(&self) -> Vec<(NodeId, SocketAddr)> {
        self.mesh
            .snapshot()
            .members
            .iter()
            .filter(|m| !m.is_self && matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| (m.peer.id, m.peer.addr))
            .collect()
    }

    fn send(&self, to: SocketAddr, message: &MsgMessage) -> bool {
        self.streams
            .send(to, myco_proto::channel::Channel::Msg, message.encode())
            .is_ok()
    }

    fn check(topic: &str, body: &[u8]) -> Result<(), MsgError> {
        check_topic(topic).map_err(MsgError::Topic)?;
        if body.len() > MAX_BODY {
            return Err(MsgError::TooLarge(body.len()));
        }
        Ok(())
    }

    /// Subscribes to `topic` on this node: published messages, and
    /// requests, which the subscriber answers with [`Messaging::reply`].
    pub fn subscribe(self: &Arc<Self>, topic: &str) -> Result<Subscription, MsgError> {
        self.add_subscriber(topic, true)
    }

    /// Subscribes to the messages published on `topic` only: a subscriber
    /// that cannot answer (a Redis `SUBSCRIBE`) is never handed a request,
    /// and a node with only such subscribers is not asked.
    pub fn subscribe_messages(self: &Arc<Self>, topic: &str) -> Result<Subscription, MsgError> {
        self.add_subscriber(topic, false)
    }

    fn add_subscriber(
        self: &Arc<Self>,
        topic: &str,
        answers: bool,
    ) -> Result<Subscription, MsgError> {
        check_topic(topic).map_err(MsgError::Topic)?;
        let sub = lock(&self.local).add(self, topic, answers)?;
        self.changed.notify_one();
        Ok(sub)
    }

    /// Publishes to every subscriber of `topic` connected now, mesh-wide
    /// or on `only` one node; returns how far it went.
    pub fn publish(
        &self,
        topic: &str,
        body: Vec<u8>,
        only: Option<NodeId>,
    ) -> Result<Reach, MsgError> {
        Self::check(topic, &body)?;
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        let mut reach = Reach::default();
        if only.is_none_or(|n| n == self.me) {
            let here = self.deliver_all(topic, &body, self.me);
            reach.nodes += usize::from(here > 0);
            reach.receivers += here;
        }
        let message = MsgMessage::Publish {
            topic: topic.to_string(),
            body,
            origin: self.me,
        }
        .encode();
        // To every live peer, not only those known to subscribe: a
        // subscriber that connected a moment ago still gets it.
        let mut sent = Vec::new();
        for (id, addr) in self.peers() {
            if only.is_none_or(|n| n == id) && self.send_publish(addr, topic, message.clone()) {
                sent.push(addr);
            }
        }
        reach.nodes += sent.len();
        reach.receivers += lock(&self.announced).receivers(topic, &sent, Instant::now());
        Ok(reach)
    }

    /// Sends a request to one subscriber of `topic` that can answer it
    /// (spread over the nodes that have one) and waits up to `timeout_ms`
    /// for its answer.
    pub async fn request(
        &self,
        topic: &str,
        body: Vec<u8>,
        timeout_ms: u64,
    ) -> Result<Vec<u8>, MsgError> {
        Self::check(topic, &body)?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let timeout_ms = timeout_ms.clamp(1, MAX_TIMEOUT_MS);
        let mut nodes: Vec<SocketAddr> = Vec::new();
        if lock(&self.local).answers(topic) {
            nodes.push(self.addr);
        }
        let live: Vec<SocketAddr> = self.peers().into_iter().map(|(_, a)| a).collect();
        nodes.extend(lock(&self.announced).answering(topic, &live, Instant::now()));
        if nodes.is_empty() {
            self.counters
                .requests_unanswerable
                .fetch_add(1, Ordering::Relaxed);
            return Err(MsgError::NoSubscriber(topic.to_string()));
        }
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let target = nodes[(request % nodes.len() as u64) as usize];
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                return Err(MsgError::Busy(
                    "too many requests wait for answers on this node",
                ));
            }
            pending.insert(request, tx);
        }
        let forget = Forget(self, request);
        if target == self.addr {
            self.deliver_request(topic, body, self.me, self.addr, request, timeout_ms);
        } else {
            let message = MsgMessage::Request {
                request,
                topic: topic.to_string(),
                body,
                origin: self.me,
                reply_to: self.addr,
                timeout_ms,
            };
            self.send(target, &message);
        }
        let answer = tokio::time::timeout(Duration::from_millis(timeout_ms), rx).await;
        drop(forget);
        match answer {
            Ok(Ok((ReplyStatus::Answered, body))) => Ok(body),
            Ok(Ok((ReplyStatus::NoSubscriber, _))) => {
                self.counters
                    .requests_unanswerable
                    .fetch_add(1, Ordering::Relaxed);
                Err(MsgError::NoSubscriber(topic.to_string()))
            }
            Ok(Err(_)) | Err(_) => {
                self.counters
                    .request_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                Err(MsgError::Timeout(timeout_ms))
            }
        }
    }

    /// A subscriber's answer to the request it got with reply id `id`.
    pub fn reply(&self, id: &str, body: Vec<u8>) -> Result<(), MsgError> {
        if body.len() > MAX_BODY {
            return Err(MsgError::TooLarge(body.len()));
        }
        let target = lock(&self.replies)
            .remove(id)
            .filter(|t| t.until > Instant::now())
            .ok_or_else(|| MsgError::NoRequest(id.chars().take(64).collect()))?;
        self.answer(target.to, target.request, ReplyStatus::Answered, body);
        Ok(())
    }

    /// Completes request `request` of the node at `to`.
    fn answer(&self, to: SocketAddr, request: u64, status: ReplyStatus, body: Vec<u8>) {
        if to == self.addr {
            if let Some(tx) = lock(&self.pending).remove(&request) {
                let _ = tx.send((status, body));
            }
        } else {
            self.send(
                to,
                &MsgMessage::Reply {
                    request,
                    status,
                    body,
                },
            );
        }
    }
}

/// Forgets a pending request when its wait ends, however it ends.
struct Forget<'a>(&'a Messaging, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(&self.0.pending).remove(&self.1);
    }
}
