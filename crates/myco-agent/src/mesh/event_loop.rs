//! The mesh event loop: one task owns the core, the UDP socket and the
//! stream transport's inbox.
//!
//! Inputs are closed: a datagram, a stream message, the core's timer, a
//! [`Command`] over a bounded channel, or the store's word that local writes
//! are durable. After each input the loop sends what the core queued, hands
//! its disk work to the store, applies its changes to the [`ReadView`],
//! forwards events to subscribers and publishes what changed: the view when
//! state changed, a [`Snapshot`] when membership changed or a moment passed.
//!
//! The one durable write path: a [`Command::Write`] is applied by the core,
//! queued to the store (through the [`Backlog`], in order with background
//! work, never waiting on the disk), and when the store's writer has
//! committed it, a [`Durable`] note comes back to the loop, which releases
//! the write to peers (`Node::durable`) and only then answers the writer.
//! Many writers queue at once and share the store's group commit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myco_core::{Event, MemberState, MemberView, Node};
use myco_proto::api::ApiEvent;
use myco_proto::blob::BlobMessage;
use myco_proto::channel::Channel;
use myco_proto::{Change, MAX_DATAGRAM, Timestamp};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot, watch};

use super::commands::Command;
use super::handle::{MeshHandle, WriteError};
use super::{MeshParts, ReadView, Snapshot};
use crate::net::streams::Incoming;
use crate::store::{Backlog, StoreError};

/// How often the snapshot is refreshed even when nothing was reported:
/// suspicion is not an event, so this bounds how stale `suspect` can be.
const REFRESH: Duration = Duration::from_millis(100);

/// Events buffered per `/v1/events` subscriber before it is told it lagged.
pub const EVENT_BUFFER: usize = 1024;

/// Commands queued for the loop before senders wait.
const COMMAND_QUEUE: usize = 256;

/// Local writes applied but not yet durable, at most; more are refused as
/// busy. The core hides at most 4096 unreleased writes from anti-entropy,
/// so past that many waiting for the disk, the write path is behind anyway.
pub const MAX_PENDING_WRITES: usize = 4096;

/// Commands handled in one turn of the loop before it sends, publishes and
/// looks at its other inputs: a burst of writes then costs one publish and
/// one store request, while datagrams wait at most this many commands.
const COMMAND_BATCH: usize = 64;

/// A local write the core applied, waiting for the disk.
struct Pending {
    ts: Timestamp,
    reply: oneshot::Sender<Result<Timestamp, WriteError>>,
    /// Its place among [`MAX_PENDING_WRITES`], freed once answered.
    _slot: OwnedSemaphorePermit,
}

/// The store's word that a batch of local writes is durable (or failed).
struct Durable {
    writes: Vec<Pending>,
    result: Result<(), StoreError>,
}

/// The loop.
pub struct MeshLoop {
    parts: MeshParts,
    /// Peers cut off by fault injection (empty in production).
    blocked: BTreeSet<SocketAddr>,
    /// Background disk work waiting for room in the store's queue.
    backlog: Backlog,
    commands: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<Arc<ApiEvent>>,
    /// The loop's own copy of the read view, changed in place between
    /// publishes (see [`ReadView`] for why that is cheap).
    view: ReadView,
    view_dirty: bool,
    published_view: watch::Sender<Arc<ReadView>>,
    /// Where the store's writer thread reports durable local writes; each
    /// note holds a slot, so the channel never holds more than it can.
    durable_tx: mpsc::Sender<Durable>,
    durable: mpsc::Receiver<Durable>,
    write_slots: Arc<Semaphore>,
    /// Writes applied in this turn, queued for the disk together at its end.
    applied: Vec<(Change, Pending)>,
    /// Messages on a channel this node has no handler for.
    unrouted: u64,
    /// Each member's state as subscribers last heard it, so every change
    /// (suspect included, which the core reports as no event) becomes one
    /// `member` event carrying the state before it.
    told: BTreeMap<myco_proto::NodeId, MemberState>,
}

impl MeshLoop {
    /// Wraps a started core and its transports.
    pub fn new(parts: MeshParts) -> (MeshLoop, MeshHandle) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let at = parts.clock.now();
        let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot::of(&parts.node, at, 0)));
        let view = ReadView::of(&parts.node);
        let (view_tx, view_rx) = watch::channel(Arc::new(view.clone()));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (durable_tx, durable) = mpsc::channel(MAX_PENDING_WRITES);
        let handle = MeshHandle {
            commands: tx,
            snapshot: snap_rx,
            view: view_rx,
            events: events.clone(),
        };
        let mesh = MeshLoop {
            parts,
            blocked: BTreeSet::new(),
            backlog: Backlog::default(),
            commands: rx,
            snapshot: snap_tx,
            events,
            view,
            view_dirty: false,
            published_view: view_tx,
            durable_tx,
            durable,
            write_slots: Arc::new(Semaphore::new(MAX_PENDING_WRITES)),
            applied: Vec::new(),
            unrouted: 0,
            told: BTreeMap::new(),
        };
        (mesh, handle)
    }

    /// Runs until a `Leave` command has been carried out or every handle
    /// is gone.
    pub async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut published = Instant::now();
        let mut leave_reply: Option<oneshot::Sender<()>> = None;
        loop {
            let p = &mut self.parts;
            let wake = p
                .node
                .poll_timeout()
                .map(|t| p.clock.instant(t))
                .unwrap_or_else(|| Instant::now() + REFRESH);
            let wake = wake.min(published + REFRESH);
            tokio::select! {
                r = p.socket.recv_from(&mut buf) => match r {
                    // A datagram longer than the buffer arrives truncated to
                    // MAX_DATAGRAM + 1 bytes, so the core still sees it as oversize.
                    Ok((n, from)) if !self.blocked.contains(&from) => p.node.handle_datagram(p.clock.now(), from, &buf[..n]),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "recv failed"),
                },
                Some(msg) = p.incoming.recv() => self.route(msg),
                Some(first) = self.durable.recv() => self.release(first),
                _ = tokio::time::sleep_until(wake.into()) => p.node.handle_timeout(p.clock.now()),
                cmd = self.commands.recv() => match cmd {
                    Some(first) => {
                        leave_reply = self.commands_from(first);
                        self.queue_writes().await;
                    }
                    None => break,
                },
            }
            self.flush().await;
            let membership_changed = self.dispatch_events();
            if self.view_dirty {
                self.published_view
                    .send_replace(Arc::new(self.view.clone()));
                self.view_dirty = false;
            }
            if membership_changed || published.elapsed() >= REFRESH {
                let p = &self.parts;
                let snap = Snapshot::of(&p.node, p.clock.now(), self.unrouted);
                self.tell_member_changes(&snap.members);
                self.snapshot.send_replace(Arc::new(snap));
                published = Instant::now();
            }
            if let Some(reply) = leave_reply.take() {
                let _ = reply.send(());
                break;
            }
        }
        if let Err(e) = self.backlog.finish(&self.parts.store).await {
            tracing::warn!(error = %e, "background disk work lost at stop; peers resend it");
        }
    }

    /// Hands a stream message to whoever handles its channel.
    fn route(&mut self, msg: Incoming) {
        let p = &mut self.parts;
        if is_blocked(&self.blocked, &p.node, msg.peer) {
            return; // fault injection: dropped
        }
        match msg.channel {
            Channel::Sync => p.node.handle_message(p.clock.now(), &msg.message),
            // Moving bytes is I/O, not a decision: the core never sees blobs.
            Channel::Blob => match BlobMessage::decode(&msg.message) {
                Some(blob) => p.spores.on_message(blob),
                None => {
                    self.unrouted += 1;
                    tracing::debug!(from = %msg.from, "undecodable blob message dropped");
                }
            },
            // Log reading between nodes: I/O, decoded and bounded there.
            Channel::Jobs => p.logs.on_bytes(&msg.message),
            // Cache and messaging: handed to their services' bounded queues.
            Channel::Cache | Channel::Msg => {
                if !p.apps.route(msg.channel, msg.message) {
                    self.unrouted += 1;
                    tracing::debug!(from = %msg.from, channel = msg.channel.name(), "no handler for this channel, or its queue is full; message dropped");
                }
            }
        }
    }

    /// Handles `first` and whatever else is queued, up to [`COMMAND_BATCH`];
    /// stops at a leave and returns its reply.
    fn commands_from(&mut self, first: Command) -> Option<oneshot::Sender<()>> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(cmd) = next.take() {
            taken += 1;
            if let Command::Leave(reply) = cmd {
                let p = &mut self.parts;
                p.node.leave(p.clock.now());
                return Some(reply);
            }
            self.command(cmd);
            if taken < COMMAND_BATCH {
                next = self.commands.try_recv().ok();
            }
        }
        None
    }

    fn command(&mut self, cmd: Command) {
        let p = &mut self.parts;
        let now = p.clock.now();
        match cmd {
            Command::Join(addr) => p.node.join(now, addr),
            Command::Rekey(keys) => {
                tracing::info!(key_id = %keys.primary_id(), keys = ?keys, "cluster key ring reloaded");
                match p.streams.set_keys(&keys.keys()) {
                    Ok(()) => p.node.set_keys(keys),
                    Err(e) => {
                        tracing::error!(error = %e, "new cluster keys refused; the old ones stay in use")
                    }
                }
            }
            Command::Faults(block) => {
                tracing::warn!(blocked = ?block, "fault injection: cutting off peers");
                self.blocked = block;
            }
            Command::Write {
                table,
                key,
                value,
                reply,
            } => self.write(table, &key, value, reply),
            Command::Leave(_) => unreachable!("handled by the loop"),
        }
    }

    /// Applies a local write; [`MeshLoop::queue_writes`] sends it to the
    /// disk, and the answer waits for [`MeshLoop::release`].
    fn write(
        &mut self,
        table: myco_proto::Table,
        key: &str,
        value: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<Timestamp, WriteError>>,
    ) {
        let Ok(slot) = self.write_slots.clone().try_acquire_owned() else {
            let _ = reply.send(Err(WriteError::Busy));
            return;
        };
        let p = &mut self.parts;
        let change = match p.node.write(p.clock.now(), table, key, value) {
            Ok(change) => change,
            Err(e) => {
                let _ = reply.send(Err(WriteError::Refused(e)));
                return;
            }
        };
        self.view.apply(&change);
        self.view_dirty = true;
        let pending = Pending {
            ts: change.ts,
            reply,
            _slot: slot,
        };
        self.applied.push((change, pending));
    }

    /// Queues this turn's local writes for the disk as one request, in
    /// order behind any background work still waiting.
    async fn queue_writes(&mut self) {
        if self.applied.is_empty() {
            return;
        }
        let (changes, writes): (Vec<Change>, Vec<Pending>) = self.applied.drain(..).unzip();
        let notes = self.durable_tx.clone();
        let done = move |result| {
            // Never full: a note holds at least one write's slot, and the
            // channel has a place for each slot.
            let _ = notes.try_send(Durable { writes, result });
        };
        let queued = self
            .backlog
            .persist_then(&self.parts.store, changes, done)
            .await;
        if let Err(e) = queued {
            // The store stopped: `done` was dropped with the replies, so
            // the writers hear that the agent is stopping.
            tracing::warn!(error = %e, "local writes not queued for the disk");
        }
    }

    /// Releases durable local writes to peers, then answers their writers.
    /// Takes every note already waiting, so one batch costs one call.
    fn release(&mut self, first: Durable) {
        let mut notes = vec![first];
        while let Ok(more) = self.durable.try_recv() {
            notes.push(more);
        }
        let p = &mut self.parts;
        let durable: Vec<Timestamp> = notes
            .iter()
            .filter(|n| n.result.is_ok())
            .flat_map(|n| n.writes.iter().map(|w| w.ts))
            .collect();
        if !durable.is_empty() {
            p.node.durable(p.clock.now(), &durable);
        }
        for note in notes {
            if let Err(e) = &note.result {
                tracing::error!(error = %e, writes = note.writes.len(), "writes not durable");
            }
            for w in note.writes {
                let answer = match &note.result {
                    Ok(()) => Ok(w.ts),
                    Err(e) => Err(WriteError::NotDurable(each(e))),
                };
                let _ = w.reply.send(answer);
            }
        }
    }

    /// Sends what the core queued, hands its disk work to the store and
    /// its changes to the read view.
    async fn flush(&mut self) {
        let p = &mut self.parts;
        while let Some(t) = p.node.poll_transmit() {
            if self.blocked.contains(&t.to) {
                continue;
            }
            if let Err(e) = p.socket.send_to(&t.payload, t.to).await {
                tracing::debug!(to = %t.to, error = %e, "send failed");
            }
        }
        while let Some(m) = p.node.poll_message() {
            if self.blocked.contains(&m.to) {
                continue;
            }
            // A refused send is counted by the transport; anti-entropy
            // repairs whatever it carried.
            if let Err(e) = p.streams.send(m.to, Channel::Sync, m.payload) {
                tracing::debug!(to = %m.to, error = %e, "stream message dropped");
            }
        }
        // Removals before merges: the core collects or drops before it
        // merges what the same input brought, and a removal takes every
        // version no newer than the one named. Nothing is dropped when the
        // store's queue is full: it waits, in order, in the backlog.
        let mut removed = p.node.poll_collected();
        removed.extend(p.node.poll_dropped());
        let merged = p.node.poll_persist();
        if !removed.is_empty() || !merged.is_empty() {
            for (table, key, ts) in &removed {
                self.view.remove(*table, key, *ts);
            }
            for change in &merged {
                self.view.apply(change);
            }
            self.view_dirty = true;
        }
        let mut result = self.backlog.remove(&p.store, removed).await;
        if result.is_ok() {
            result = self.backlog.persist(&p.store, merged).await;
        }
        if result.is_ok() {
            result = self.backlog.drain(&p.store);
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "background disk work not queued");
        }
    }

    /// Sends a `member` event for each member whose state differs from what
    /// subscribers last heard. Runs on every snapshot, which a membership
    /// event publishes at once and the refresh every 100 ms, so a suspicion
    /// (no core event) is told within 100 ms. Members no longer listed are
    /// forgotten without an event: the core lists down and left members
    /// until it drops them, and their last state was told.
    fn tell_member_changes(&mut self, members: &[MemberView]) {
        let mut seen = BTreeMap::new();
        for m in members.iter().filter(|m| !m.is_self) {
            seen.insert(m.peer.id, m.state);
            let before = self.told.get(&m.peer.id).copied();
            if before == Some(m.state) {
                continue;
            }
            let name = m
                .manifest
                .as_ref()
                .map(|x| x.name.clone())
                .unwrap_or_default();
            if m.state == MemberState::Suspect {
                tracing::info!(member = %m.peer.id, %name, "member suspected");
            }
            let event = ApiEvent::Member {
                id: m.peer.id.to_string(),
                name,
                state: m.state.as_str().to_string(),
                previous: before.map(|b| b.as_str().to_string()),
            };
            // No subscribers is not an error.
            let _ = self.events.send(Arc::new(event));
        }
        self.told = seen;
    }

    /// Logs events and forwards them to subscribers; true if membership changed.
    fn dispatch_events(&mut self) -> bool {
        let mut membership = false;
        while let Some(event) = self.parts.node.poll_event() {
            let node = &self.parts.node;
            // A member's name arrives with its manifest, after it is seen up.
            let name = |id: &myco_proto::NodeId| {
                node.member(*id)
                    .and_then(|m| m.manifest)
                    .map(|m| m.name)
                    .unwrap_or_default()
            };
            let api = match &event {
                // The core's own bookkeeping (tombstone collection) is not
                // desired state: subscribers do not see it.
                Event::StateChanged(c) if c.table == myco_proto::Table::GC => None,
                Event::StateChanged(c) => {
                    tracing::trace!(table = c.table.0, key = %c.key, version = %c.ts, "state changed");
                    Some(ApiEvent::State {
                        table: c.table.name(),
                        key: c.key.clone(),
                        version: c.ts.to_string(),
                        deleted: c.value.is_none(),
                    })
                }
                Event::MemberUp(p) => {
                    tracing::info!(member = %p.id, addr = %p.addr, "member up");
                    None
                }
                Event::MemberDown(p) => {
                    tracing::warn!(member = %p.id, name = %name(&p.id), addr = %p.addr, "member down");
                    None
                }
                Event::MemberLeft(p) => {
                    tracing::info!(member = %p.id, name = %name(&p.id), "member left");
                    None
                }
                Event::ManifestChanged(id) => {
                    let m = node.member(*id).and_then(|m| m.manifest);
                    if let Some(m) = m {
                        tracing::info!(member = %id, name = %m.name, version = %m.version, tags = ?m.tags, "member identified");
                    }
                    None
                }
                Event::Connected => {
                    tracing::info!("connected to the mesh");
                    None
                }
                Event::Isolated => {
                    tracing::warn!("no live peers: retrying join addresses");
                    None
                }
                Event::Rejoined(p) => {
                    tracing::warn!(bump = p.bump, "this node was declared down; rejoined");
                    None
                }
            };
            membership |= !matches!(event, Event::StateChanged(_));
            if let Some(api) = api {
                // No subscribers is not an error.
                let _ = self.events.send(Arc::new(api));
            }
        }
        membership
    }
}

/// Whether a stream message comes from a cut-off peer (fault injection).
fn is_blocked(
    blocked: &BTreeSet<SocketAddr>,
    node: &Node,
    peer: Option<myco_proto::NodeId>,
) -> bool {
    if blocked.is_empty() {
        return false;
    }
    let addr = peer.and_then(|id| node.member(id).map(|m| m.peer.addr));
    addr.is_some_and(|a| blocked.contains(&a))
}

/// A store error for each writer of a failed batch (I/O errors do not clone).
fn each(e: &StoreError) -> StoreError {
    match e {
        StoreError::Write { reason } => StoreError::Write {
            reason: reason.clone(),
        },
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Write {
            reason: other.to_string(),
        },
    }
}
