//! [`MeshHandle`]: the one way the rest of the agent (HTTP handlers, the
//! spore workflow, later the scheduler and the supervisor) reaches the mesh
//! loop. Writes go to the loop and come back durable; reads and membership
//! come from what the loop published, without waiting for it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myco_core::Entry;
use myco_proto::api::ApiEvent;
use myco_proto::frame::Peer;
use myco_proto::{KeyRing, Table, Timestamp};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::commands::Command;
use super::{ReadView, Snapshot};
use crate::store::StoreError;

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The core refused it (key or value size).
    #[error(transparent)]
    Refused(#[from] myco_core::WriteError),
    /// The disk did not take it; the node applied it but sends it to no
    /// peer, and a later write of the key supersedes it.
    #[error("the write was not made durable: {0}")]
    NotDurable(#[source] StoreError),
    /// Too many writes wait for the disk at once.
    #[error("too many writes are waiting for the disk; try again shortly")]
    Busy,
    /// The mesh loop has stopped.
    #[error("the agent is shutting down; try another node")]
    Stopped,
}

/// Why a command other than a write was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// The loop's command queue is full.
    #[error("the mesh loop is busy; try again")]
    Busy,
    /// The mesh loop has stopped.
    #[error("the agent is shutting down; try another node")]
    Stopped,
}

/// A handle to a running mesh loop; clones share it.
#[derive(Clone)]
pub struct MeshHandle {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) snapshot: watch::Receiver<Arc<Snapshot>>,
    pub(super) view: watch::Receiver<Arc<ReadView>>,
    pub(super) events: broadcast::Sender<Arc<ApiEvent>>,
}

impl MeshHandle {
    /// Writes (or with `None` deletes) a key of any table. Returns its
    /// version once it is on this node's disk (fsynced) and released to
    /// peers; concurrent writes share commits. A later read on this node
    /// sees it (or something newer).
    pub async fn write(
        &self,
        table: Table,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<Timestamp, WriteError> {
        let (reply, answer) = oneshot::channel();
        let cmd = Command::Write {
            table,
            key: key.to_string(),
            value,
            reply,
        };
        self.commands
            .send(cmd)
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// The live entry of a key, from the latest published view.
    pub fn get(&self, table: Table, key: &str) -> Option<Entry> {
        self.view.borrow().get(table, key).cloned()
    }

    /// Up to `limit` live entries under `prefix`, in key order. Copied from
    /// the latest published view on the caller's task: a big listing never
    /// occupies the loop.
    pub fn scan(&self, table: Table, prefix: &str, limit: usize) -> Vec<(String, Entry)> {
        // The view is taken out of the channel first, so the loop can
        // publish the next one while this copies.
        let view = self.view();
        view.scan(table, prefix, limit)
    }

    /// The latest published view of every table.
    pub fn view(&self) -> Arc<ReadView> {
        self.view.borrow().clone()
    }

    /// The published views from now on: `changed()` wakes on the next.
    pub fn views(&self) -> watch::Receiver<Arc<ReadView>> {
        self.view.clone()
    }

    /// The latest membership snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// This node's identity.
    pub fn me(&self) -> Peer {
        self.snapshot.borrow().me
    }

    /// State and membership events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ApiEvent>> {
        self.events.subscribe()
    }

    /// Publishes an event of another part of the agent (the jobs
    /// runtime's decisions) to every subscriber; none listening is fine.
    pub fn publish(&self, event: ApiEvent) {
        let _ = self.events.send(Arc::new(event));
    }

    /// Joins through a peer, waiting for room in the command queue.
    pub async fn join(&self, addr: SocketAddr) -> Result<(), CommandError> {
        self.send(Command::Join(addr)).await
    }

    /// Joins through a peer if the command queue has room now.
    pub fn try_join(&self, addr: SocketAddr) -> Result<(), CommandError> {
        self.commands
            .try_send(Command::Join(addr))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommandError::Busy,
                mpsc::error::TrySendError::Closed(_) => CommandError::Stopped,
            })
    }

    /// Replaces the cluster key ring.
    pub async fn rekey(&self, ring: KeyRing) -> Result<(), CommandError> {
        self.send(Command::Rekey(ring)).await
    }

    /// Cuts this node off from these mesh addresses (fault injection).
    pub async fn faults(&self, blocked: BTreeSet<SocketAddr>) -> Result<(), CommandError> {
        self.send(Command::Faults(blocked)).await
    }

    /// Leaves the mesh and waits, at most `within`, for the leave messages
    /// to be sent; the loop then stops.
    pub async fn leave(&self, within: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.send(Command::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), CommandError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| CommandError::Stopped)
    }
}
