//! A started agent: what [`crate::run::start`] returns and
//! [`Running::stop`] takes apart. The binary waits for a signal between
//! the two; an embedder ([`crate::embed`]) holds it as long as it likes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use myco_proto::NodeId;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cache::Cache;
use crate::config::datadir::DataDir;
use crate::config::settings::AgentSettings;
use crate::mesh::MeshHandle;
use crate::msg::Messaging;
use crate::store::Store;

/// A running agent.
pub struct Running {
    /// The settings, with the ports actually bound.
    pub(crate) settings: AgentSettings,
    pub(crate) dir: DataDir,
    pub(crate) id: NodeId,
    pub(crate) mesh: MeshHandle,
    pub(crate) store: Arc<Store>,
    pub(crate) cache: Arc<Cache>,
    pub(crate) msg: Arc<Messaging>,
    pub(crate) resp_task: Option<JoinHandle<()>>,
    pub(crate) gc: JoinHandle<()>,
    pub(crate) jobs: crate::jobs::runtime::JobsRuntime,
    pub(crate) stop_api: oneshot::Sender<()>,
    pub(crate) stop_edge: oneshot::Sender<()>,
    pub(crate) api_task: JoinHandle<std::io::Result<()>>,
    pub(crate) edge_task: JoinHandle<()>,
    pub(crate) mesh_done: oneshot::Receiver<()>,
    /// Join-name and LAN-beacon tasks (`crate::discovery`).
    pub(crate) discovery: Vec<JoinHandle<()>>,
    /// Follows key rotation for the beacons.
    pub(crate) key_watch: tokio::sync::watch::Sender<myco_proto::KeyRing>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("id", &self.id).finish()
    }
}

/// Longest a graceful stop waits for the cache's entries to be
/// acknowledged by their new owners (at most the hand-off bound).
const CACHE_HANDOVER: Duration = Duration::from_secs(5);
/// Longest a graceful stop then waits for the copies still queued.
const CACHE_FLUSH: Duration = Duration::from_millis(500);

impl Running {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.id
    }

    /// The mesh address other nodes join (UDP; streams use TCP on the
    /// same port).
    pub fn mesh_addr(&self) -> SocketAddr {
        self.settings.advertise
    }

    /// The HTTP API's bound address.
    pub fn api_addr(&self) -> SocketAddr {
        self.settings.api
    }

    /// The handle to the mesh loop.
    pub fn mesh(&self) -> &MeshHandle {
        &self.mesh
    }

    /// The cache service (the one HTTP and the Redis protocol use).
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The messaging service (the one HTTP and the Redis protocol use).
    pub fn messaging(&self) -> &Arc<Messaging> {
        &self.msg
    }
}

impl Running {
    /// Hands the instances off (see `JobsRuntime::hand_off`), leaves the
    /// mesh gracefully and stops every service.
    pub async fn stop(self) {
        let Running {
            mesh,
            store,
            cache,
            resp_task,
            gc,
            jobs,
            stop_api,
            stop_edge,
            api_task,
            edge_task,
            mesh_done,
            discovery,
            ..
        } = self;
        discovery.iter().for_each(JoinHandle::abort);
        if let Some(t) = resp_task {
            t.abort();
        }
        gc.abort();
        // Hand the instances off (replacements ready elsewhere, then ours
        // stopped), bounded by MYCO_HANDOFF_MS; with 0 they run on and the
        // next agent adopts them.
        jobs.hand_off().await;
        // Then the cache's entries, to the owners they have without this
        // node (a bucket of one copy kept nothing of this node's keys);
        // none with no hand-off.
        let bound = jobs.handoff_bound().min(CACHE_HANDOVER);
        if !bound.is_zero() {
            cache.hand_over(bound).await;
        }
        jobs.stop();
        tracing::info!("leaving the mesh");
        mesh.leave(Duration::from_secs(2)).await;
        // Copies of writes that reached the cache while it handed over,
        // still queued for their owners: out before the process ends.
        cache.sent_out(CACHE_FLUSH).await;
        let _ = stop_api.send(());
        let _ = stop_edge.send(());
        let _ = tokio::time::timeout(Duration::from_secs(2), api_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), edge_task).await;
        // The loop ends by itself once the leave is sent; give it a moment.
        drop(mesh);
        if tokio::time::timeout(Duration::from_secs(2), mesh_done)
            .await
            .is_err()
        {
            tracing::warn!("the mesh loop did not stop in time");
        }
        // Waits for queued writes to reach the disk.
        if let Ok(store) = Arc::try_unwrap(store) {
            store.close().await;
        }
        tracing::info!("stopped");
    }
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Tells systemd (`Type=notify`) about readiness; a no-op outside systemd.
pub(crate) fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &a));
    if let Err(e) = sent {
        tracing::debug!(error = %e, "systemd notification failed");
    }
}
