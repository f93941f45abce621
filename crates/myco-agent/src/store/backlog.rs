//! Background disk work (changes merged from peers, collected tombstones)
//! that the store's queue could not take yet, kept in order.
//!
//! Dropping such work would leave the disk behind what the node told its
//! peers; with tombstone collection that is not harmless (a lost tombstone
//! under a recorded horizon could bring an old value back after a restart).
//! So nothing is dropped: work waits here, in order, and past a bound the
//! mesh loop waits for the disk instead (backpressure).

use std::collections::VecDeque;

use myco_proto::{Change, Table, Timestamp};
use tokio::sync::mpsc::error::TrySendError;

use super::{Reply, Request, Store, StoreError};

/// Changes that may wait in memory before the mesh loop waits for the disk.
const MAX_WAITING_CHANGES: usize = 64 * 1024;

/// Work waiting for room in the store's queue.
#[derive(Default)]
pub struct Backlog {
    waiting: VecDeque<Request>,
    changes: usize,
}

fn size(r: &Request) -> usize {
    match r {
        Request::Write(c, _) => c.len(),
        Request::Remove(v) => v.len(),
    }
}

impl Backlog {
    /// Queues merged changes to persist, after anything still waiting.
    pub async fn persist(&mut self, store: &Store, changes: Vec<Change>) -> Result<(), StoreError> {
        self.add(store, Request::Write(changes, None)).await
    }

    /// Queues local writes to persist, after anything still waiting, and
    /// calls `done` on the store's writer thread once they are durable (or
    /// failed). `done` must not block; it is dropped uncalled if the store
    /// stops first.
    pub async fn persist_then(
        &mut self,
        store: &Store,
        changes: Vec<Change>,
        done: impl FnOnce(Result<(), StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let reply: Reply = Box::new(done);
        self.add(store, Request::Write(changes, Some(reply))).await
    }

    /// Queues removals (only of versions no newer than those named).
    pub async fn remove(
        &mut self,
        store: &Store,
        versions: Vec<(Table, String, Timestamp)>,
    ) -> Result<(), StoreError> {
        self.add(store, Request::Remove(versions)).await
    }

    /// Hands everything waiting to the store, waiting for room: before the
    /// loop stops, so a graceful stop leaves nothing behind.
    pub async fn finish(&mut self, store: &Store) -> Result<(), StoreError> {
        self.send_waiting(store, 0).await
    }

    /// Hands waiting work to the store, oldest first, while it has room.
    pub fn drain(&mut self, store: &Store) -> Result<(), StoreError> {
        while let Some(r) = self.waiting.pop_front() {
            let n = size(&r);
            match store.queue.try_send(r) {
                Ok(()) => self.changes -= n,
                Err(TrySendError::Full(r)) => {
                    self.waiting.push_front(r);
                    return Ok(());
                }
                Err(TrySendError::Closed(_)) => return Err(StoreError::Closed),
            }
        }
        Ok(())
    }

    async fn add(&mut self, store: &Store, request: Request) -> Result<(), StoreError> {
        if matches!(&request, Request::Write(_, None) | Request::Remove(_)) && size(&request) == 0 {
            return Ok(());
        }
        self.changes += size(&request);
        self.waiting.push_back(request);
        self.drain(store)?;
        if !self.waiting.is_empty() {
            store
                .counters
                .queue_full
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        // Past the bound, wait for the disk.
        self.send_waiting(store, MAX_WAITING_CHANGES).await
    }

    /// Sends waiting work, oldest first, waiting for room, until at most
    /// `most` changes wait.
    async fn send_waiting(&mut self, store: &Store, most: usize) -> Result<(), StoreError> {
        while self.changes > most {
            let Some(r) = self.waiting.pop_front() else {
                break;
            };
            self.changes -= size(&r);
            store.queue.send(r).await.map_err(|_| StoreError::Closed)?;
        }
        Ok(())
    }
}
