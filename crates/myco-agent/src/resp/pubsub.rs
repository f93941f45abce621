//! `SUBSCRIBE`, `UNSUBSCRIBE` (and `PUNSUBSCRIBE`, with no patterns to
//! drop), and the connection task's wait on its subscriptions: the task
//! that reads the socket takes published messages straight from the
//! subscriptions' queues (no forwarding task per topic, whose extra
//! wake-up and queue showed in the publish-to-receive tail).

use std::task::{Context, Poll};

use crate::msg::Delivery;

use super::commands::{Session, text};
use super::parse::reply;

impl Session {
    /// Subscribes to every topic named (once each), confirming each as
    /// Redis does: an array in RESP2, a push frame in RESP3.
    pub(super) fn subscribe(
        &mut self,
        args: &[Vec<u8>],
        out: &mut Vec<u8>,
    ) -> Result<(), &'static str> {
        for topic in &args[1..] {
            let topic = text(topic)?.to_string();
            if !self.subscribed.iter().any(|(t, _)| *t == topic) {
                // Published messages only: a Redis client cannot answer
                // a request, so none is handed to it.
                let sub = match self.msg.subscribe_messages(&topic) {
                    Ok(s) => s,
                    Err(e) => {
                        reply::error(out, &format!("ERR {e}"));
                        return Ok(());
                    }
                };
                self.subscribed.push((topic.clone(), sub));
            }
            reply::push(out, 3, self.resp3);
            reply::bulk(out, b"subscribe");
            reply::bulk(out, topic.as_bytes());
            reply::int(out, self.subscribed.len() as i64);
        }
        Ok(())
    }

    /// Unsubscribes from the topics named, or from all without a name,
    /// confirming each; with no name and no subscription, one
    /// confirmation with a null topic, as Redis answers (a client waits
    /// for it).
    pub(super) fn unsubscribe(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        let topics: Vec<String> = if args.len() == 1 {
            self.subscribed.iter().map(|(t, _)| t.clone()).collect()
        } else {
            args[1..]
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        };
        if topics.is_empty() {
            self.unsubscribed(out, b"unsubscribe", None);
        }
        for topic in topics {
            if let Some(i) = self.subscribed.iter().position(|(t, _)| *t == topic) {
                // Dropping the subscription unsubscribes.
                self.subscribed.remove(i);
            }
            self.unsubscribed(out, b"unsubscribe", Some(topic.as_bytes()));
        }
    }

    /// `PUNSUBSCRIBE`: there are no pattern subscriptions here, so each
    /// pattern named (or, with none, a null) is confirmed as Redis
    /// confirms one it did not hold.
    pub(super) fn punsubscribe(&mut self, args: &[Vec<u8>], out: &mut Vec<u8>) {
        if args.len() == 1 {
            self.unsubscribed(out, b"punsubscribe", None);
        }
        for pattern in &args[1..] {
            self.unsubscribed(out, b"punsubscribe", Some(pattern));
        }
    }

    /// One (p)unsubscribe confirmation: the kind, the topic (or a null)
    /// and the subscriptions left.
    fn unsubscribed(&self, out: &mut Vec<u8>, kind: &[u8], topic: Option<&[u8]>) {
        reply::push(out, 3, self.resp3);
        reply::bulk(out, kind);
        match topic {
            Some(t) => reply::bulk(out, t),
            None => self.null(out),
        }
        reply::int(out, self.subscribed.len() as i64);
    }
}

impl Session {
    /// The next published message of any subscription, taking them in
    /// turn so a busy topic does not starve the others; pending (with
    /// every subscription's waker registered) when none has one.
    pub(super) fn poll_push(&mut self, cx: &mut Context<'_>) -> Poll<Delivery> {
        let n = self.subscribed.len();
        for i in 0..n {
            let at = (self.next_push + i) % n;
            // `None`: the service is gone (the agent is stopping); the
            // connection ends with it.
            if let Poll::Ready(Some(d)) = self.subscribed[at].1.poll_recv(cx) {
                self.next_push = (at + 1) % n;
                return Poll::Ready(d);
            }
        }
        Poll::Pending
    }

    /// A published message that is already queued, if any.
    pub(super) fn try_push(&mut self) -> Option<Delivery> {
        let n = self.subscribed.len();
        for i in 0..n {
            let at = (self.next_push + i) % n;
            if let Some(d) = self.subscribed[at].1.try_recv() {
                self.next_push = (at + 1) % n;
                return Some(d);
            }
        }
        None
    }
}
