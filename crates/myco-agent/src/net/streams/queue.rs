//! The stream transport's queues, bounded by count and by bytes.
//!
//! A count alone does not bound memory when a message may be 8 MiB: 256
//! queued messages to one slow peer could hold 2 GiB. So each queue also
//! keeps a byte budget. Outbound (one queue per peer) a message that would
//! pass the budget is refused and counted, like a full queue: the sender
//! never blocks, and the replication protocol repairs by anti-entropy. A
//! message is always admitted into an empty queue, so one message of any
//! allowed size still goes through a budget smaller than it. Inbound (one
//! queue for every connection) a message waits for room instead: the
//! waiting connection is not read, which pushes back on its sender through
//! TCP flow control.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use myco_proto::channel::Channel;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Incoming;

/// Called when a message is dropped without a byte of it written: its
/// peer refused the connection, or was backing off after a failure (see
/// [`super::Streams::send_if_reachable`]). Runs on the peer's task: it
/// must not block.
pub type Receipt = Box<dyn FnOnce() + Send>;

/// A message waiting to be written to a peer.
pub(super) struct Queued {
    /// Its channel.
    pub(super) channel: Channel,
    /// Its bytes.
    pub(super) message: Vec<u8>,
    /// Who to tell if it is never sent.
    pub(super) receipt: Option<Receipt>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued")
            .field("channel", &self.channel)
            .field("bytes", &self.message.len())
            .field("receipt", &self.receipt.is_some())
            .finish()
    }
}

/// Why [`Outbound::try_push`] refused a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// As many messages as the queue holds are waiting.
    Count,
    /// The message would take the queued bytes past the budget.
    Bytes,
    /// The receiving task has ended.
    Closed,
}

/// The sending side of one peer's queue.
pub(super) struct Outbound {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving side of one peer's queue (its task's).
pub(super) struct OutboundReceiver {
    rx: mpsc::Receiver<Queued>,
    bytes: Arc<AtomicUsize>,
}

/// A queue of at most `count` messages and, unless it holds one only,
/// `max_bytes` bytes.
pub(super) fn outbound(count: usize, max_bytes: usize) -> (Outbound, OutboundReceiver) {
    let (tx, rx) = mpsc::channel(count.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    let sender = Outbound {
        tx,
        bytes: bytes.clone(),
        max_bytes,
    };
    (sender, OutboundReceiver { rx, bytes })
}

impl Outbound {
    /// Queues a message without waiting. Only one caller pushes at a time
    /// (the transport's peer table is locked), so the check cannot race
    /// another push; the receiver only ever makes room.
    #[cfg(test)]
    pub(super) fn try_push(&self, item: Queued) -> Result<(), Refused> {
        self.try_push_back(item).map_err(|(why, _)| why)
    }

    /// [`Outbound::try_push`], giving the item back when refused.
    pub(super) fn try_push_back(&self, item: Queued) -> Result<(), (Refused, Queued)> {
        let len = item.message.len();
        let queued = self.bytes.load(Ordering::Acquire);
        if queued > 0 && queued.saturating_add(len) > self.max_bytes {
            return Err((Refused::Bytes, item));
        }
        // Counted before it is visible to the receiver, which subtracts.
        self.bytes.fetch_add(len, Ordering::AcqRel);
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.bytes.fetch_sub(len, Ordering::AcqRel);
                Err(match e {
                    TrySendError::Full(item) => (Refused::Count, item),
                    TrySendError::Closed(item) => (Refused::Closed, item),
                })
            }
        }
    }

    /// Messages waiting.
    pub(super) fn len(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Bytes waiting.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Whether the receiving task has ended.
    pub(super) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

impl OutboundReceiver {
    /// The next message; `None` once every sender is gone.
    pub(super) async fn recv(&mut self) -> Option<Queued> {
        let item = self.rx.recv().await?;
        self.bytes.fetch_sub(item.message.len(), Ordering::AcqRel);
        Some(item)
    }

    /// The next message if one is queued.
    pub(super) fn try_recv(&mut self) -> Option<Queued> {
        let item = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(item.message.len(), Ordering::AcqRel);
        Some(item)
    }
}

/// Messages received from peers, for the one consumer (the mesh loop).
/// Each holds its share of the byte budget until it is taken out.
pub struct Inbox {
    rx: mpsc::Receiver<(Incoming, OwnedSemaphorePermit)>,
}

/// The connections' side of the [`Inbox`].
#[derive(Clone)]
pub(super) struct InboxSender {
    tx: mpsc::Sender<(Incoming, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    max_bytes: usize,
}

/// The consumer is gone.
#[derive(Debug)]
pub(super) struct InboxClosed;

/// An inbox of at most `count` messages and `max_bytes` bytes; `max_bytes`
/// must be at least the largest message, or that message would wait forever.
pub(super) fn inbox(count: usize, max_bytes: usize) -> (InboxSender, Inbox) {
    let (tx, rx) = mpsc::channel(count.max(1));
    let max_bytes = max_bytes.min(Semaphore::MAX_PERMITS);
    let budget = Arc::new(Semaphore::new(max_bytes));
    (
        InboxSender {
            tx,
            budget,
            max_bytes,
        },
        Inbox { rx },
    )
}

impl InboxSender {
    /// Hands a message to the consumer, waiting for room by count and by
    /// bytes; `on_wait` is called when it starts waiting for bytes.
    pub(super) async fn send(
        &self,
        item: Incoming,
        on_wait: impl FnOnce(),
    ) -> Result<(), InboxClosed> {
        let len = item.message.len().min(self.max_bytes);
        let n = u32::try_from(len).map_err(|_| InboxClosed)?;
        let permit = match self.budget.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => {
                on_wait();
                tokio::select! {
                    p = self.budget.clone().acquire_many_owned(n) => p.map_err(|_| InboxClosed)?,
                    () = self.tx.closed() => return Err(InboxClosed),
                }
            }
        };
        self.tx.send((item, permit)).await.map_err(|_| InboxClosed)
    }

    /// Resolves once the consumer is gone.
    pub(super) async fn closed(&self) {
        self.tx.closed().await
    }
}

impl Inbox {
    /// The next message; its bytes leave the budget. `None` once the
    /// transport is gone.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await.map(|(item, _permit)| item)
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok().map(|(item, _permit)| item)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn q(n: usize) -> Queued {
        Queued {
            channel: Channel::Sync,
            message: vec![0; n],
            receipt: None,
        }
    }

    fn incoming(n: usize) -> Incoming {
        Incoming {
            from: "127.0.0.1:1".parse().unwrap(),
            peer: None,
            channel: Channel::Sync,
            message: vec![7; n],
        }
    }

    #[tokio::test]
    async fn outbound_refuses_past_the_byte_budget_and_recv_makes_room() {
        let (tx, mut rx) = outbound(100, 10);
        assert_eq!(tx.try_push(q(6)), Ok(()));
        assert_eq!(tx.try_push(q(4)), Ok(()));
        assert_eq!(tx.try_push(q(1)), Err(Refused::Bytes));
        assert_eq!((tx.len(), tx.bytes()), (2, 10));
        assert_eq!(rx.recv().await.unwrap().message.len(), 6);
        assert_eq!(tx.bytes(), 4);
        assert_eq!(tx.try_push(q(6)), Ok(()));
        assert_eq!(tx.try_push(q(1)), Err(Refused::Bytes));
    }

    #[tokio::test]
    async fn outbound_admits_one_oversize_message_into_an_empty_queue() {
        let (tx, mut rx) = outbound(100, 10);
        assert_eq!(tx.try_push(q(50)), Ok(()));
        assert_eq!(tx.try_push(q(1)), Err(Refused::Bytes));
        rx.recv().await.unwrap();
        assert_eq!(tx.bytes(), 0);
        assert_eq!(tx.try_push(q(1)), Ok(()));
    }

    #[tokio::test]
    async fn outbound_still_bounds_the_count_and_reports_a_closed_queue() {
        let (tx, rx) = outbound(2, 1 << 20);
        assert_eq!(tx.try_push(q(1)), Ok(()));
        assert_eq!(tx.try_push(q(1)), Ok(()));
        assert_eq!(tx.try_push(q(1)), Err(Refused::Count));
        assert_eq!(tx.bytes(), 2, "a refused message is not counted");
        drop(rx);
        assert_eq!(tx.try_push(q(1)), Err(Refused::Closed));
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn inbox_waits_for_bytes_until_the_consumer_takes_some() {
        let (tx, mut inbox) = inbox(100, 10);
        let waits = Arc::new(AtomicUsize::new(0));
        let count = |w: &Arc<AtomicUsize>| {
            let w = w.clone();
            move || {
                w.fetch_add(1, Ordering::Relaxed);
            }
        };
        tx.send(incoming(8), count(&waits)).await.unwrap();
        assert_eq!(waits.load(Ordering::Relaxed), 0);
        // 8 + 8 > 10: the second waits.
        let second = {
            let (tx, on_wait) = (tx.clone(), count(&waits));
            tokio::spawn(async move { tx.send(incoming(8), on_wait).await.unwrap() })
        };
        // Not finishing is the point; a short window is all one can watch.
        let mut second = second;
        let early = tokio::time::timeout(Duration::from_millis(50), &mut second).await;
        assert!(early.is_err(), "sent past the byte budget");
        assert_eq!(inbox.recv().await.unwrap().message.len(), 8);
        tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("room was made")
            .unwrap();
        assert_eq!(waits.load(Ordering::Relaxed), 1);
        assert_eq!(inbox.try_recv().unwrap().message.len(), 8);
        assert!(inbox.try_recv().is_none());
    }

    #[tokio::test]
    async fn inbox_send_ends_when_the_consumer_is_gone() {
        let (tx, mut inbox) = inbox(100, 10);
        tx.send(incoming(10), || {}).await.unwrap();
        assert!(inbox.try_recv().is_some());
        tx.send(incoming(10), || {}).await.unwrap();
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(incoming(10), || {}).await })
        };
        drop(inbox);
        let result = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_err());
    }
}
