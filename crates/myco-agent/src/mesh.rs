//! The mesh event loop: one task owns the core, the UDP socket and the
//! stream transport's inbox.
//!
//! Inputs are closed: a datagram, a stream message, the core's timer, or a
//! [`Command`] from the API over a bounded channel. After each input the
//! loop sends what the core queued, hands merged changes to the store,
//! forwards events to subscribers and, when membership changed or a moment
//! has passed, publishes a [`Snapshot`] for readers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myco_core::{Entry, Event, MemberView, Node, Stats, Time, WriteError};
use myco_proto::api::ApiEvent;
use myco_proto::frame::Peer;
use myco_proto::{Change, MAX_DATAGRAM, Table};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::store::Store;
use crate::streams::{Incoming, Streams};

/// What the API may ask of the mesh loop.
#[derive(Debug)]
pub enum Command {
    /// Join through a peer at this address.
    Join(SocketAddr),
    /// Replace the cluster key ring.
    Rekey(myco_proto::KeyRing),
    /// Leave the mesh; answered once the leave messages are sent.
    Leave(oneshot::Sender<()>),
    /// Write (or with `None` delete) a key; answered with the change, which
    /// the caller must persist, then report with [`Command::Durable`]: the
    /// node sends it to no peer before.
    Write {
        /// Table.
        table: Table,
        /// Key.
        key: String,
        /// Value, or `None` to delete.
        value: Option<Vec<u8>>,
        /// The answer.
        reply: oneshot::Sender<Result<Change, WriteError>>,
    },
    /// These local writes are durable on this node's disk: release them to peers.
    Durable(Vec<myco_proto::Timestamp>),
    /// Read one key.
    Get {
        /// Table.
        table: Table,
        /// Key.
        key: String,
        /// The live entry, if any.
        reply: oneshot::Sender<Option<Entry>>,
    },
    /// Test faults: drop all traffic to and from these mesh addresses
    /// (only reachable when the agent runs with `MYCO_FAULTS=1`).
    Faults(std::collections::BTreeSet<SocketAddr>),
    /// List keys under a prefix.
    Scan {
        /// Table.
        table: Table,
        /// Key prefix.
        prefix: String,
        /// At most this many.
        limit: usize,
        /// Keys and entries in key order.
        reply: oneshot::Sender<Vec<(String, Entry)>>,
    },
}

/// What readers see of the mesh; replaced wholesale, never mutated.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// This node's identity.
    pub me: Peer,
    /// Every known member, self first.
    pub members: Vec<MemberView>,
    /// Traffic counters.
    pub stats: Stats,
    /// Whether any peer is alive.
    pub connected: bool,
    /// The core time the snapshot was taken at.
    pub at: Time,
    /// The id of the cluster key the node seals with.
    pub key_id: myco_proto::KeyId,
    /// Replica entries, tombstones and bytes.
    pub state: (usize, usize, usize),
    /// Digest of the whole replica (equal on converged nodes).
    pub state_digest: u64,
    /// Wall time (ms) below which tombstones were collected mesh-wide.
    pub horizon_ms: u64,
    /// How far the node's hybrid clock runs ahead of its own clock (ms):
    /// a peer with a fast clock pulls it forward, up to `max_clock_drift`.
    pub clock_lead_ms: u64,
}

/// How often the snapshot is refreshed even when nothing was reported:
/// suspicion is not an event, so this bounds how stale `suspect` can be.
const REFRESH: Duration = Duration::from_millis(100);

/// Events buffered per `/v1/events` subscriber before it is told it lagged.
pub const EVENT_BUFFER: usize = 1024;

/// The core's clock: Unix milliseconds read once at start, advanced by the
/// monotonic clock. Timers never jump when NTP steps the wall clock, and the
/// HLC still gets a physical time close to everyone else's (the systemd unit
/// orders the agent after time-sync.target so the start reading is good).
#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
    wall_at_start: u64,
}

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Clock {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            wall_at_start: wall,
        }
    }
    /// Core time now.
    pub fn now(&self) -> Time {
        Time(self.wall_at_start + self.start.elapsed().as_millis() as u64)
    }
    fn instant(&self, t: Time) -> Instant {
        self.start + Duration::from_millis(t.0.saturating_sub(self.wall_at_start))
    }
}

/// Everything the loop owns.
pub struct MeshParts {
    /// The core, restored from the store.
    pub node: Node,
    /// The bound UDP socket.
    pub socket: UdpSocket,
    /// The clock the core runs on.
    pub clock: Clock,
    /// The stream transport.
    pub streams: Streams,
    /// Messages arriving on it.
    pub incoming: mpsc::Receiver<Incoming>,
    /// The durable store.
    pub store: Arc<Store>,
    /// The spore store (blob messages go to it, not to the core).
    pub spores: Arc<crate::spores::SporeStore>,
}

/// Handles to a running loop.
pub struct MeshHandles {
    /// Commands to the loop.
    pub commands: mpsc::Sender<Command>,
    /// The latest snapshot.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Events for `/v1/events`.
    pub events: broadcast::Sender<Arc<ApiEvent>>,
}

/// The loop.
pub struct MeshLoop {
    parts: MeshParts,
    /// Peers cut off by fault injection (empty in production).
    blocked: std::collections::BTreeSet<SocketAddr>,
    /// Background disk work waiting for room in the store's queue.
    backlog: crate::store::Backlog,
    commands: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    events: broadcast::Sender<Arc<ApiEvent>>,
}

impl MeshLoop {
    /// Wraps a started core and its transports.
    pub fn new(parts: MeshParts) -> (MeshLoop, MeshHandles) {
        let (tx, rx) = mpsc::channel(256);
        let (snap_tx, snap_rx) =
            watch::channel(Arc::new(snapshot_of(&parts.node, parts.clock.now())));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let handles = MeshHandles {
            commands: tx,
            snapshot: snap_rx,
            events: events.clone(),
        };
        (
            MeshLoop {
                parts,
                blocked: Default::default(),
                backlog: Default::default(),
                commands: rx,
                snapshot: snap_tx,
                events,
            },
            handles,
        )
    }

    /// Runs until a `Leave` command has been carried out or every command
    /// sender is gone.
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
                Some(msg) = p.incoming.recv() => {
                    if is_blocked(&self.blocked, &p.node, msg.peer) {
                        // fault injection: dropped
                    } else if let Some(blob) = myco_proto::blob::BlobMessage::decode(&msg.message) {
                        p.spores.on_message(blob);
                    } else {
                        p.node.handle_message(p.clock.now(), &msg.message);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => p.node.handle_timeout(p.clock.now()),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Leave(reply)) => {
                        p.node.leave(p.clock.now());
                        leave_reply = Some(reply);
                    }
                    Some(Command::Faults(block)) => {
                        tracing::warn!(blocked = ?block, "fault injection: cutting off peers");
                        self.blocked = block;
                    }
                    Some(cmd) => command(p, cmd),
                    None => break,
                },
            }
            self.flush().await;
            let membership_changed = self.dispatch_events();
            if membership_changed || published.elapsed() >= REFRESH {
                let p = &self.parts;
                self.snapshot
                    .send_replace(Arc::new(snapshot_of(&p.node, p.clock.now())));
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

    /// Sends what the core queued and hands its disk work to the store.
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
            if let Err(e) = p.streams.send(m.to, m.payload) {
                tracing::debug!(to = %m.to, error = %e, "stream message dropped");
            }
        }
        // Removals before merges: the core collects or drops before it
        // merges what the same input brought, and a store removal takes
        // every version no newer than the one named. Nothing is dropped
        // when the store's queue is full: it waits, in order, in the backlog.
        let mut removed = p.node.poll_collected();
        removed.extend(p.node.poll_dropped());
        let merged = p.node.poll_persist();
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
            let member = |id: &myco_proto::NodeId, state: &str| ApiEvent::Member {
                id: id.to_string(),
                state: state.to_string(),
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
                    Some(member(&p.id, "alive"))
                }
                Event::MemberDown(p) => {
                    tracing::warn!(member = %p.id, name = %name(&p.id), addr = %p.addr, "member down");
                    Some(member(&p.id, "down"))
                }
                Event::MemberLeft(p) => {
                    tracing::info!(member = %p.id, name = %name(&p.id), "member left");
                    Some(member(&p.id, "left"))
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

fn command(p: &mut MeshParts, cmd: Command) {
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
        Command::Write {
            table,
            key,
            value,
            reply,
        } => {
            let _ = reply.send(p.node.write(now, table, &key, value));
        }
        Command::Durable(written) => p.node.durable(now, &written),
        Command::Get { table, key, reply } => {
            let _ = reply.send(p.node.get(table, &key).cloned());
        }
        Command::Scan {
            table,
            prefix,
            limit,
            reply,
        } => {
            let found = p
                .node
                .scan(table, &prefix)
                .take(limit)
                .map(|(k, e)| (k.to_string(), e.clone()))
                .collect();
            let _ = reply.send(found);
        }
        Command::Leave(_) | Command::Faults(_) => unreachable!("handled by the loop"),
    }
}

/// Whether a stream message comes from a cut-off peer (fault injection).
fn is_blocked(
    blocked: &std::collections::BTreeSet<SocketAddr>,
    node: &Node,
    peer: Option<myco_proto::NodeId>,
) -> bool {
    if blocked.is_empty() {
        return false;
    }
    let addr = peer.and_then(|id| node.member(id).map(|m| m.peer.addr));
    addr.is_some_and(|a| blocked.contains(&a))
}

fn snapshot_of(node: &Node, at: Time) -> Snapshot {
    Snapshot {
        me: node.identity(),
        members: node.members(),
        stats: node.stats().clone(),
        connected: node.is_connected(),
        at,
        key_id: node.key_id(),
        state: node.state_size(),
        state_digest: node.state_digest(),
        horizon_ms: node.horizon().at,
        clock_lead_ms: node.clock().wall_ms.saturating_sub(at.0),
    }
}
