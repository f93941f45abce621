//! This node's subscribers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use myco_proto::NodeId;
use myco_proto::msg::{ReplyStatus, TopicSubscribers};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    MAX_PENDING, MAX_SUBSCRIBERS, Messaging, MsgError, ReplyTarget, SUBSCRIBER_QUEUE, lock,
};

/// One message for a subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The topic.
    pub topic: String,
    /// The body.
    pub body: Arc<[u8]>,
    /// The node it was published or requested on.
    pub from: NodeId,
    /// On requests: the id to answer with ([`Messaging::reply`]).
    pub reply: Option<String>,
}

struct Sub {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    lost: Arc<AtomicU64>,
    /// Whether it may be handed requests: it can answer them.
    answers: bool,
}

/// The subscribers, by topic.
#[derive(Default)]
pub(super) struct Local {
    topics: HashMap<String, Vec<Sub>>,
    count: usize,
    next: u64,
}

impl Local {
    pub(super) fn add(
        &mut self,
        owner: &Arc<Messaging>,
        topic: &str,
        answers: bool,
    ) -> Result<Subscription, MsgError> {
        if self.count >= MAX_SUBSCRIBERS {
            return Err(MsgError::Busy(
                "this node has as many subscribers as it may hold",
            ));
        }
        self.next += 1;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        self.topics.entry(topic.to_string()).or_default().push(Sub {
            id: self.next,
            tx,
            lost: lost.clone(),
            answers,
        });
        self.count += 1;
        Ok(Subscription {
            topic: topic.to_string(),
            id: self.next,
            rx,
            lost,
            owner: Arc::downgrade(owner),
        })
    }

    fn remove(&mut self, topic: &str, id: u64) {
        if let Some(subs) = self.topics.get_mut(topic) {
            let before = subs.len();
            subs.retain(|s| s.id != id);
            self.count -= before - subs.len();
            if subs.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// The subscribers per topic, for announcements (publishers count
    /// their receivers by them).
    pub(super) fn counts(&self) -> Vec<TopicSubscribers> {
        let mut c: Vec<TopicSubscribers> = self
            .topics
            .iter()
            .map(|(t, subs)| TopicSubscribers {
                topic: t.clone(),
                subscribers: u32::try_from(subs.len()).unwrap_or(u32::MAX),
            })
            .collect();
        c.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        c
    }

    /// Whether a subscriber of `topic` here can answer a request.
    pub(super) fn answers(&self, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|subs| subs.iter().any(|s| s.answers))
    }

    /// The topics with subscribers that can answer requests, for
    /// announcements (which route requests).
    pub(super) fn answering_topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, subs)| subs.iter().any(|s| s.answers))
            .map(|(t, _)| t.clone())
            .collect();
        t.sort_unstable();
        t
    }
}

/// A subscription; dropping it unsubscribes.
pub struct Subscription {
    topic: String,
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    lost: Arc<AtomicU64>,
    owner: Weak<Messaging>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message; `None` once the service is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// [`Subscription::recv`] as a poll, for a task that waits on several
    /// subscriptions and its own socket at once (the Redis protocol's
    /// connection task) instead of a forwarding task per subscription.
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Delivery>> {
        self.rx.poll_recv(cx)
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        self.rx.try_recv().ok()
    }

    /// Messages lost since the last call because the queue was full.
    pub fn take_lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.upgrade() {
            lock(&owner.local).remove(&self.topic, self.id);
            owner.changed.notify_one();
        }
    }
}

impl Messaging {
    /// Hands a published message to every local subscriber of `topic`;
    /// returns how many got it. A full queue loses it, counted.
    pub(super) fn deliver_all(&self, topic: &str, body: &[u8], from: NodeId) -> usize {
        let local = lock(&self.local);
        let Some(subs) = local.topics.get(topic) else {
            return 0;
        };
        let delivery = Delivery {
            topic: topic.to_string(),
            body: Arc::from(body),
            from,
            reply: None,
        };
        let mut n = 0;
        for s in subs {
            if s.tx.try_send(delivery.clone()).is_ok() {
                n += 1;
            } else {
                s.lost.fetch_add(1, Ordering::Relaxed);
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counters
            .delivered
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Adds `lost` messages a publishing node could not send here to the
    /// losses of every local subscriber of `topic`, who are told as of
    /// their own queue's.
    pub(super) fn lost_on_the_way(&self, topic: &str, lost: u64) {
        let local = lock(&self.local);
        for s in local.topics.get(topic).into_iter().flatten() {
            s.lost.fetch_add(lost, Ordering::Relaxed);
            self.counters.lost.fetch_add(lost, Ordering::Relaxed);
        }
    }

    /// Hands a request to one local subscriber of `topic` that can answer
    /// it (taking turns; never one that only takes messages, such as a
    /// Redis `SUBSCRIBE`), with a reply id that leads back to `reply_to`;
    /// answers "no subscriber" at once if none can take it.
    pub(super) fn deliver_request(
        &self,
        topic: &str,
        body: Vec<u8>,
        origin: NodeId,
        reply_to: SocketAddr,
        request: u64,
        timeout_ms: u64,
    ) {
        let id = format!(
            "{:016x}{:016x}",
            self.next.fetch_add(1, Ordering::Relaxed),
            u64::from_le_bytes(crate::config::datadir::random_bytes::<8>())
        );
        let delivered = {
            let mut replies = lock(&self.replies);
            let now = Instant::now();
            if replies.len() >= MAX_PENDING {
                replies.retain(|_, t| t.until > now);
            }
            if replies.len() >= MAX_PENDING {
                false
            } else {
                let local = lock(&self.local);
                let subs: Vec<&Sub> = local
                    .topics
                    .get(topic)
                    .into_iter()
                    .flatten()
                    .filter(|s| s.answers)
                    .collect();
                let delivery = Delivery {
                    topic: topic.to_string(),
                    body: Arc::from(body),
                    from: origin,
                    reply: Some(id.clone()),
                };
                let start = (request as usize) % subs.len().max(1);
                let taken = (0..subs.len())
                    .map(|i| &subs[(start + i) % subs.len()])
                    .any(|s| s.tx.try_send(delivery.clone()).is_ok());
                if taken {
                    replies.insert(
                        id,
                        ReplyTarget {
                            to: reply_to,
                            request,
                            until: now + Duration::from_millis(timeout_ms),
                        },
                    );
                }
                taken
            }
        };
        if delivered {
            self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.answer(reply_to, request, ReplyStatus::NoSubscriber, Vec::new());
        }
    }
}
