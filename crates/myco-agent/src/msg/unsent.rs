//! Published messages that never left this node, told to their receivers.
//!
//! A publish goes to every live peer through its stream queue, which
//! refuses a message when full (a stall on a loaded machine, a slow peer):
//! the subscribers there would never learn of the loss, since their own
//! queue, which counts what it drops, never saw it. So the publishing
//! node counts what each peer's queue refused, per topic, and sends the
//! count ([`MsgMessage::Lost`]) with the next publish to that peer that
//! gets through, or with the next announcement round (every second); the
//! receiving node adds it to the losses of its subscribers of that topic,
//! who are told as for their own queue's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use myco_proto::channel::Channel;
use myco_proto::msg::MsgMessage;

use super::{Messaging, lock};
use crate::net::streams::SendError;

/// Topics whose unsent counts one peer may have waiting; past it the
/// counts of new topics are not kept (counted in `unsent` all the same).
const TOPICS_PER_PEER: usize = 1024;

/// Unsent publishes per peer and topic.
pub(super) type Unsent = HashMap<SocketAddr, HashMap<String, u64>>;

impl Messaging {
    /// Sends an encoded publish on `topic` to the peer at `to`, after any
    /// loss count still owed to it; false when its queue refused it (then
    /// remembered for the next notice).
    pub(super) fn send_publish(&self, to: SocketAddr, topic: &str, bytes: Vec<u8>) -> bool {
        if self.unsent_peers.load(Ordering::Relaxed) > 0 {
            self.send_lost(to);
        }
        match self.streams.send(to, Channel::Msg, bytes) {
            Ok(()) => true,
            Err(SendError::QueueFull { .. }) => {
                self.counters.unsent.fetch_add(1, Ordering::Relaxed);
                self.owe(to, topic, 1);
                false
            }
            // The body was checked against MAX_BODY, far below the
            // stream's message limit; `send` never checks reachability.
            Err(SendError::TooLarge { .. } | SendError::Unreachable { .. }) => false,
        }
    }

    /// Sends every peer the loss counts still owed to it.
    pub(super) fn send_all_lost(&self) {
        if self.unsent_peers.load(Ordering::Relaxed) == 0 {
            return;
        }
        let peers: Vec<SocketAddr> = lock(&self.unsent).keys().copied().collect();
        for to in peers {
            self.send_lost(to);
        }
    }

    /// Sends `to` the loss counts owed to it; what its queue refuses
    /// again stays owed.
    fn send_lost(&self, to: SocketAddr) {
        let owed = {
            let mut unsent = lock(&self.unsent);
            let owed = unsent.remove(&to);
            self.unsent_peers.store(unsent.len(), Ordering::Relaxed);
            owed
        };
        for (topic, lost) in owed.into_iter().flatten() {
            let notice = MsgMessage::Lost {
                topic: topic.clone(),
                origin: self.me,
                lost,
            };
            if self
                .streams
                .send(to, Channel::Msg, notice.encode())
                .is_err()
            {
                self.owe(to, &topic, lost);
            }
        }
    }

    fn owe(&self, to: SocketAddr, topic: &str, lost: u64) {
        let mut unsent = lock(&self.unsent);
        let topics = unsent.entry(to).or_default();
        if let Some(n) = topics.get_mut(topic) {
            *n += lost;
        } else if topics.len() < TOPICS_PER_PEER {
            topics.insert(topic.to_string(), lost);
        }
        self.unsent_peers.store(unsent.len(), Ordering::Relaxed);
    }
}
