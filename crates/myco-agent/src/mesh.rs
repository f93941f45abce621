//! The mesh event loop: one task owns the core and the UDP socket.
//!
//! Inputs are closed: a datagram, the core's timer, or a [`Command`] from
//! the API over a bounded channel. After each input the loop sends what the
//! core queued, logs its events and, when something changed or a moment
//! has passed, publishes a [`Snapshot`] for readers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myco_core::{Event, MemberView, Node, Stats, Time};
use myco_proto::MAX_DATAGRAM;
use myco_proto::frame::Peer;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

/// What the API may ask of the mesh loop.
#[derive(Debug)]
pub enum Command {
    /// Join through a peer at this address.
    Join(SocketAddr),
    /// Replace the cluster key ring.
    Rekey(myco_proto::KeyRing),
    /// Leave the mesh; answered once the leave messages are sent.
    Leave(oneshot::Sender<()>),
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
}

/// How often the snapshot is refreshed even when nothing was reported:
/// suspicion is not an event, so this bounds how stale `suspect` can be.
const REFRESH: Duration = Duration::from_millis(100);

/// The core's clock: milliseconds since the loop started, monotonic.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Clock {
        Clock(Instant::now())
    }
    /// Core time now.
    pub fn now(&self) -> Time {
        Time(self.0.elapsed().as_millis() as u64)
    }
    fn instant(&self, t: Time) -> Instant {
        self.0 + Duration::from_millis(t.0)
    }
}

/// The loop and its handles.
pub struct MeshLoop {
    node: Node,
    socket: UdpSocket,
    clock: Clock,
    commands: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Arc<Snapshot>>,
}

impl MeshLoop {
    /// Wraps a started core and a bound socket; returns the loop, the
    /// command sender and the snapshot receiver.
    pub fn new(
        node: Node,
        socket: UdpSocket,
        clock: Clock,
    ) -> (
        MeshLoop,
        mpsc::Sender<Command>,
        watch::Receiver<Arc<Snapshot>>,
    ) {
        let (tx, rx) = mpsc::channel(64);
        let (snap_tx, snap_rx) = watch::channel(Arc::new(snapshot_of(&node, clock.now())));
        (
            MeshLoop {
                node,
                socket,
                clock,
                commands: rx,
                snapshot: snap_tx,
            },
            tx,
            snap_rx,
        )
    }

    /// Runs until a `Leave` command has been carried out or every command
    /// sender is gone.
    pub async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut published = Instant::now();
        let mut leave_reply: Option<oneshot::Sender<()>> = None;
        loop {
            let wake = self
                .node
                .poll_timeout()
                .map(|t| self.clock.instant(t))
                .unwrap_or_else(|| Instant::now() + REFRESH);
            let wake = wake.min(published + REFRESH);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    // A datagram longer than the buffer arrives truncated to
                    // MAX_DATAGRAM + 1 bytes, so the core still sees it as oversize.
                    Ok((n, from)) => self.node.handle_datagram(self.clock.now(), from, &buf[..n]),
                    Err(e) => tracing::debug!(error = %e, "recv failed"),
                },
                _ = tokio::time::sleep_until(wake.into()) => self.node.handle_timeout(self.clock.now()),
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Join(addr)) => self.node.join(self.clock.now(), addr),
                    Some(Command::Rekey(keys)) => {
                        tracing::info!(key_id = %keys.primary_id(), keys = ?keys, "cluster key ring reloaded");
                        self.node.set_keys(keys);
                    }
                    Some(Command::Leave(reply)) => {
                        self.node.leave(self.clock.now());
                        leave_reply = Some(reply);
                    }
                    None => return,
                },
            }
            self.flush().await;
            let changed = self.log_events();
            if changed || published.elapsed() >= REFRESH {
                self.snapshot
                    .send_replace(Arc::new(snapshot_of(&self.node, self.clock.now())));
                published = Instant::now();
            }
            if let Some(reply) = leave_reply.take() {
                let _ = reply.send(());
                return;
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            if let Err(e) = self.socket.send_to(&t.payload, t.to).await {
                tracing::debug!(to = %t.to, error = %e, "send failed");
            }
        }
    }

    fn log_events(&mut self) -> bool {
        let mut any = false;
        while let Some(event) = self.node.poll_event() {
            any = true;
            // A member's name arrives with its manifest, after it is seen up;
            // later events about it carry the name.
            let name = |node: &Node, p: &Peer| {
                node.members()
                    .into_iter()
                    .find(|m| m.peer.id == p.id)
                    .and_then(|m| m.manifest)
                    .map(|m| m.name)
                    .unwrap_or_default()
            };
            match event {
                Event::MemberUp(p) => tracing::info!(member = %p.id, addr = %p.addr, "member up"),
                Event::MemberDown(p) => {
                    tracing::warn!(member = %p.id, name = %name(&self.node, &p), addr = %p.addr, "member down")
                }
                Event::MemberLeft(p) => {
                    tracing::info!(member = %p.id, name = %name(&self.node, &p), "member left")
                }
                Event::ManifestChanged(id) => {
                    let m = self
                        .node
                        .members()
                        .into_iter()
                        .find(|m| m.peer.id == id)
                        .and_then(|m| m.manifest);
                    if let Some(m) = m {
                        tracing::info!(member = %id, name = %m.name, version = %m.version, tags = ?m.tags, "member identified");
                    }
                }
                Event::Connected => tracing::info!("connected to the mesh"),
                Event::Isolated => tracing::warn!("no live peers: retrying join addresses"),
                Event::Rejoined(p) => {
                    tracing::warn!(bump = p.bump, "this node was declared down; rejoined")
                }
            }
        }
        any
    }
}

fn snapshot_of(node: &Node, at: Time) -> Snapshot {
    Snapshot {
        me: node.identity(),
        members: node.members(),
        stats: node.stats().clone(),
        connected: node.is_connected(),
        at,
        key_id: node.key_id(),
    }
}
