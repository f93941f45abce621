//! Messages from other nodes, and announcing this node's topics.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use myco_proto::msg::{MAX_TOPICS, MsgMessage};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{ANNOUNCE_EVERY, ANNOUNCE_TTL, Messaging, lock};

/// Handles the messaging-channel messages the mesh loop hands over.
pub(super) async fn consume(msg: Arc<Messaging>, mut inbox: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = inbox.recv().await {
        msg.on_bytes(&bytes);
    }
}

/// Sends this node's topics to every live peer when they change, and
/// every [`ANNOUNCE_EVERY`] while there are any (peers forget them after
/// [`ANNOUNCE_TTL`] of silence, so a node that died stops getting
/// requests).
pub(super) async fn announce(msg: Weak<Messaging>) {
    let mut last: Vec<String> = Vec::new();
    loop {
        let Some(m) = msg.upgrade() else {
            return;
        };
        // Announcements route requests: topics whose subscribers cannot
        // answer are left out. Every node subscribes to the usage topics,
        // and a publish goes to every live peer anyway: announcing them
        // would only cost each node a message to every peer every second.
        let mut topics = lock(&m.local).answering_topics();
        topics.retain(|t| !crate::usage::is_internal(t));
        if !topics.is_empty() || topics != last {
            let message = MsgMessage::Topics {
                from: m.addr,
                topics: topics.iter().take(MAX_TOPICS).cloned().collect(),
            };
            for (_, addr) in m.peers() {
                m.send(addr, &message);
            }
        }
        last = topics;
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
                let mut remote = lock(&self.remote);
                let now = Instant::now();
                remote.retain(|_, (_, seen)| now.duration_since(*seen) < ANNOUNCE_TTL);
                if topics.is_empty() {
                    remote.remove(&from);
                } else {
                    let set: BTreeSet<String> = topics.into_iter().take(MAX_TOPICS).collect();
                    remote.insert(from, (set, now));
                }
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
