//! Other nodes' requests, served from this node's store, and the answers
//! to this node's own requests, matched by request id.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use std::net::SocketAddr;

use myco_proto::cache::{
    CacheEntry, CacheMessage, CounterError, IncrOutcome, check_bucket, check_entry,
};
use myco_proto::channel::Channel;
use tokio::sync::{mpsc, oneshot};

use super::{Cache, OWNER_TIMEOUT, wall_ms};
use crate::net::streams::{Back, Exchange};

/// Where the answers to one of this node's requests go.
pub(super) enum Waiter {
    /// A read's or an increment's one answer: a oneshot, which allocates a few bytes where
    /// a channel allocates a block of 32 messages (a read's cost showed
    /// it: malloc and free of that block on every forwarded GET).
    One(Option<oneshot::Sender<CacheMessage>>),
    /// A write's acknowledgements, one per owner.
    Many(mpsc::Sender<CacheMessage>),
}

/// A request waiting for answers; forgotten when dropped, however the
/// waiting ends.
pub(super) struct Registered<'a>(&'a Cache, u64);

impl<'a> Registered<'a> {
    pub(super) fn new(cache: &'a Cache, request: u64, tx: Waiter) -> Self {
        cache
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request, tx);
        Registered(cache, request)
    }
}

/// A request registered for answers and the receiver they arrive on.
///
/// The fields drop in order, receiver first: dropping the registration
/// drops its sender, and a sender dropped while its receiver still waits
/// wakes the waiting task, which is the running one. tokio then polls it
/// again and wakes a second worker to share work there is none of: a
/// forwarded GET's wake of itself (its exchange's answer sent on its own
/// oneshot) cost two futex calls a GET (`strace -c`, BENCHMARKS.md
/// "nineteenth pass"). Every single-channel wait goes through this, so
/// none depends on its locals' declaration order.
pub(super) struct Waiting<'a, R> {
    pub(super) rx: R,
    _registered: Registered<'a>,
}

impl Cache {
    /// Registers `request` for its one answer.
    pub(super) fn wait_one(&self, request: u64) -> Waiting<'_, oneshot::Receiver<CacheMessage>> {
        let (tx, rx) = oneshot::channel();
        Waiting {
            rx,
            _registered: Registered::new(self, request, Waiter::One(Some(tx))),
        }
    }

    /// Registers `request` for up to `capacity` answers (one per owner).
    pub(super) fn wait_many(
        &self,
        request: u64,
        capacity: usize,
    ) -> Waiting<'_, mpsc::Receiver<CacheMessage>> {
        let (tx, rx) = mpsc::channel(capacity);
        Waiting {
            rx,
            _registered: Registered::new(self, request, Waiter::Many(tx)),
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.1);
    }
}

/// Handles the cache-channel messages the mesh loop hands over.
pub(super) async fn consume(cache: Arc<Cache>, mut inbox: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = inbox.recv().await {
        cache.on_bytes(&bytes, &mut Back::none());
    }
}

impl Cache {
    /// Asks one node for a key: `Some(answer)` if it answered in time.
    ///
    /// The asking task writes the request and reads the answer itself when
    /// a connection to `to` is idle ([`crate::net::streams::Streams::exchange`]),
    /// else it goes through the peer's queue. A read asks again through the
    /// queue if the exchange failed half way (it may have arrived: a read
    /// asked twice is harmless). The answer may also come the other way
    /// (one too large to go back on the asking connection), so the wait
    /// watches both.
    ///
    /// An exchange's answer is taken straight from the exchange, not
    /// through the waiter: sending on the oneshot this task itself waits
    /// on would wake it while it runs ([`Waiting`] says what that costs).
    pub(super) async fn ask(
        self: &Arc<Self>,
        to: SocketAddr,
        bucket: &str,
        key: &str,
    ) -> Option<Option<CacheEntry>> {
        let request = self.request_id();
        let mut waiting = self.wait_one(request);
        let message = CacheMessage::Get {
            request,
            bucket: bucket.to_string(),
            key: key.to_string(),
            reply_to: self.addr,
        }
        .encode();
        self.counters.forwards.fetch_add(1, Ordering::Relaxed);
        let answer = tokio::time::timeout(OWNER_TIMEOUT, async {
            let mut exchanged = None;
            let answered = |bytes: &[u8]| match CacheMessage::decode(bytes) {
                Some(m @ CacheMessage::Answer { request: r, .. }) if r == request => {
                    exchanged = Some(m);
                    true
                }
                _ => false,
            };
            let exchange = self
                .streams
                .exchange(to, Channel::Cache, &message, answered);
            let outcome = tokio::select! {
                biased;
                answer = &mut waiting.rx => return answer.ok(),
                outcome = exchange => outcome,
            };
            if outcome == Exchange::Answered {
                return exchanged;
            }
            if !self.send_request(to, message, request) {
                return None;
            }
            (&mut waiting.rx).await.ok()
        })
        .await;
        match answer {
            Ok(Some(CacheMessage::Answer { entry, .. })) => Some(entry),
            _ => None,
        }
    }

    /// Decodes and handles one cache-channel message; never blocks.
    /// Answers go on `back` when it leads to the asker.
    pub(super) fn on_bytes(&self, bytes: &[u8], back: &mut Back) {
        match CacheMessage::decode(bytes) {
            Some(m) => self.on_message(m, back),
            None => self.drop_one("undecodable"),
        }
    }

    /// Serves a request or routes an answer; never blocks.
    pub(super) fn on_message(&self, message: CacheMessage, back: &mut Back) {
        match message {
            CacheMessage::Put {
                request,
                bucket,
                key,
                entry,
                ack,
                reply_to,
            } => {
                // The asker checked these too; a peer of another build or a
                // bug must not put what this node would refuse.
                let valid = check_bucket(&bucket).is_ok()
                    && check_entry(&key, entry.value.as_deref()).is_ok();
                if valid {
                    let now = wall_ms();
                    let _ = self
                        .hlc
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .observe(entry.ts, now);
                    let max = self.bucket(&bucket).unwrap_or_default().max_entries;
                    self.store_here(&bucket, max, &key, entry, now, false);
                } else {
                    self.drop_one("invalid put");
                }
                if ack {
                    let ack = CacheMessage::Ack {
                        request,
                        stored: valid,
                    };
                    self.reply(back, reply_to, &ack);
                }
            }
            CacheMessage::Get {
                request,
                bucket,
                key,
                reply_to,
            } => {
                let entry = self.store().get(&bucket, &key, wall_ms());
                self.reply(back, reply_to, &CacheMessage::Answer { request, entry });
            }
            CacheMessage::Incr {
                request,
                bucket,
                key,
                by,
                ttl_ms,
                checked,
                base,
                reply_to,
            } => {
                let valid = check_bucket(&bucket).is_ok()
                    && check_entry(&key, None).is_ok()
                    && base
                        .as_ref()
                        .is_none_or(|b| check_entry(&key, b.value.as_deref()).is_ok());
                let outcome = if valid {
                    let looked = checked.then_some(base.as_ref());
                    self.increment_here(&bucket, &key, by, ttl_ms, looked)
                } else {
                    self.drop_one("invalid increment");
                    IncrOutcome::Refused(CounterError::Invalid)
                };
                self.reply(back, reply_to, &CacheMessage::Counted { request, outcome });
            }
            CacheMessage::Known {
                request,
                bucket,
                config,
                reply_to,
            } => {
                let stored = self.bucket(&bucket) == Some(config);
                self.reply(back, reply_to, &CacheMessage::Ack { request, stored });
            }
            CacheMessage::Exists {
                request,
                bucket,
                reply_to,
            } => {
                let stored = self.bucket(&bucket).is_some();
                self.reply(back, reply_to, &CacheMessage::Ack { request, stored });
            }
            CacheMessage::Answer { request, .. }
            | CacheMessage::Ack { request, .. }
            | CacheMessage::Counted { request, .. } => {
                if !self.answer(request, message) {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(request, "cache answer for no waiting request dropped");
                }
            }
        }
    }

    /// Answers a request: back on the connection it came in on when the
    /// asker reads answers there (stream version 4), else on this node's
    /// own connection to `to`, the asker's stream address.
    fn reply(&self, back: &mut Back, to: SocketAddr, message: &CacheMessage) {
        let bytes = message.encode();
        if !back.send(Channel::Cache, &bytes) {
            let _ = self
                .streams
                .send_if_reachable(to, Channel::Cache, bytes, None);
        }
    }

    /// Hands `message` to whoever waits on `request`; false if nobody does
    /// (any more).
    pub(super) fn answer(&self, request: u64, message: CacheMessage) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.get_mut(&request) {
            Some(Waiter::Many(tx)) => tx.try_send(message).is_ok(),
            Some(Waiter::One(tx)) => tx.take().is_some_and(|tx| tx.send(message).is_ok()),
            None => false,
        }
    }
}
