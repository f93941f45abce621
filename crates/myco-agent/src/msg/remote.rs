//! Messages from other nodes, and announcing this node's topics.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use myco_proto::msg::{MAX_TOPICS, MsgMessage, TopicSubscribers};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{ANNOUNCE_EVERY, Messaging, lock};

/// Handles the messaging-channel messages the mesh loop hands over.
pub(super) async fn consume(msg: Arc<Messaging>, mut inbox: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = inbox.recv().await {
        msg.on_bytes(&bytes);
    }
}

/// Sends this node's topics to every live peer when they change, and
/// every [`ANNOUNCE_EVERY`] while there are any (peers forget them after
/// [`ANNOUNCE_TTL`] of silence, so a node that died stops getting
/// requests): those with subscribers that answer requests (`Topics`,
/// which every release reads) and the subscribers of each
/// (`Subscribers`, for publishers' receiver counts).
pub(super) async fn announce(msg: Weak<Messaging>) {
    let mut last: (Vec<String>, Vec<TopicSubscribers>) = Default::default();
    loop {
        let Some(m) = msg.upgrade() else {
            return;
        };
        // Every node subscribes to the usage topics, and a publish goes to
        // every live peer anyway: announcing them would only cost each node
        // a message to every peer every second.
        let (mut topics, mut counts) = {
            let local = lock(&m.local);
            (local.answering_topics(), local.counts())
        };
        topics.retain(|t| !crate::usage::is_internal(t));
        counts.retain(|c| !crate::usage::is_internal(&c.topic));
        topics.truncate(MAX_TOPICS);
        counts.truncate(MAX_TOPICS);
        let mut messages = Vec::new();
        if !topics.is_empty() || topics != last.0 {
            messages.push(MsgMessage::Topics {
                from: m.addr,
                topics: topics.clone(),
            });
        }
        if !counts.is_empty() || counts != last.1 {
            messages.push(MsgMessage::Subscribers {
                from: m.addr,
                topics: counts.clone(),
            });
        }
        if !messages.is_empty() {
            for (_, addr) in m.peers() {
                for message in &messages {
                    m.send(addr, message);
                }
            }
        }
        last = (topics, counts);
        m.send_all_lost();
        let changed = m.clone();
        drop(m);
        // Whichever first: a change, or the heartbeat.
        let _ = tokio::time::timeout(ANNOUNCE_EVERY, changed.changed.notified()).await;
    }
}

impl Messaging {
    /// Decodes and handles one messaging-channel message; never blocks.
    pub(super) fn on_bytes(&self, bytes: &[u8]) {
        match MsgMessage::decode(bytes) {
            Some(m) => self.on_message(m),
            None => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("undecodable messaging message dropped");
            }
        }
    }

    fn on_message(&self, message: MsgMessage) {
        match message {
            MsgMessage::Topics { from, topics } => {
                lock(&self.announced).topics(from, topics, Instant::now());
            }
            MsgMessage::Subscribers { from, topics } => {
                lock(&self.announced).subscribers(from, topics, Instant::now());
            }
            MsgMessage::Publish {
                topic,
                body,
                origin,
            } => {
                self.deliver_all(&topic, &body, origin);
            }
            MsgMessage::Request {
                request,
                topic,
                body,
                origin,
                reply_to,
                timeout_ms,
            } => {
                let timeout_ms = timeout_ms.min(super::MAX_TIMEOUT_MS);
                self.deliver_request(&topic, body, origin, reply_to, request, timeout_ms);
            }
            MsgMessage::Lost { topic, lost, .. } => self.lost_on_the_way(&topic, lost),
            MsgMessage::Reply {
                request,
                status,
                body,
            } => match lock(&self.pending).remove(&request) {
                Some(tx) => {
                    let _ = tx.send((status, body));
                }
                None => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }
}
