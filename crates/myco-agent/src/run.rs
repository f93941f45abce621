//! Starting and stopping an agent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use myco_core::{Node, NodeSetup};
use myco_proto::frame::Peer;
use myco_proto::{ClusterKey, KeyRing, MYCO_VERSION, NodeManifest};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::config::datadir::{self, DataDir, random_bytes};
use crate::config::settings::AgentSettings;
use crate::config::sysinfo;
use crate::http::guard::HostPolicy;
use crate::http::sse::SseLimits;
use crate::http::{self, ApiState};
use crate::mesh::{Clock, MeshHandle, MeshLoop, MeshParts};
use crate::net::streams::{StreamConfig, Streams};
use crate::spores::{SporeStore, Spores};
use crate::store::Store;

pub use crate::running::Running;
use crate::running::{notify_systemd, shutdown_signal};

/// The state store's file in the data dir.
pub const STORE_FILE: &str = "state.redb";

/// What the data dir gave at start.
struct Started {
    dir: DataDir,
    signing: ed25519_dalek::SigningKey,
    boot: u64,
    keys: KeyRing,
    token: String,
}

/// Reads (or creates) the data dir's files; blocking file I/O, so it runs
/// on the blocking pool.
async fn open_data_dir(settings: &AgentSettings) -> anyhow::Result<Started> {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let dir = DataDir::create(&settings.data_dir)?;
        let signing = dir.identity()?;
        let boot = dir.next_boot()?;
        let keys = load_keys(&settings, &dir)?;
        dir.write_cluster_keys(&keys)?;
        let token = dir.api_token()?;
        Ok(Started {
            dir,
            signing,
            boot,
            keys,
            token,
        })
    })
    .await
    .context("reading the data dir")?
}

/// Where the cluster key ring came from.
fn load_keys(settings: &AgentSettings, dir: &DataDir) -> anyhow::Result<KeyRing> {
    if let Some(path) = &settings.cluster_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --cluster-key-file {}", path.display()))?;
        return Ok(datadir::parse_keys(&text, &path.display().to_string())?);
    }
    if let Ok(text) = std::env::var("MYCO_CLUSTER_KEY") {
        return Ok(datadir::parse_keys(&text, "MYCO_CLUSTER_KEY")?);
    }
    if let Some(ring) = dir.read_cluster_keys()? {
        return Ok(ring);
    }
    let key = ClusterKey::from_bytes(random_bytes::<32>());
    if settings.join.is_empty() {
        tracing::info!(key_id = %key.id(), "generated a new cluster key; print it for other nodes with `myco cluster key --data-dir {}`", dir.path().display());
    } else {
        tracing::warn!(key_id = %key.id(), "no cluster key given, so a new one was generated: this node can only join nodes that share it (pass --cluster-key-file or MYCO_CLUSTER_KEY)");
    }
    Ok(KeyRing::new(key))
}

/// Binds the mesh's UDP socket. With port 0, the OS picks a free UDP port,
/// but streams need the same number over TCP, which may be taken (by any
/// connection's ephemeral port, say): try other ports until both are free.
async fn bind_mesh_socket(bind: SocketAddr) -> std::io::Result<UdpSocket> {
    if bind.port() != 0 {
        return UdpSocket::bind(bind).await;
    }
    let mut tries = 0;
    loop {
        let socket = UdpSocket::bind(bind).await?;
        let mut tcp = bind;
        tcp.set_port(socket.local_addr()?.port());
        // A probe only: streams bind the port themselves a moment later.
        match std::net::TcpListener::bind(tcp) {
            Ok(_) => return Ok(socket),
            Err(e) if tries >= 32 => return Err(e),
            Err(_) => tries += 1,
        }
    }
}

/// Starts an agent: binds its ports, opens its store, joins the mesh and
/// starts every service; [`Running::stop`] leaves the mesh gracefully.
/// A mesh port of 0 takes a free one (UDP and TCP share its number), as
/// do an API or edge port of 0; the manifest carries the bound ports.
pub async fn start(settings: AgentSettings) -> anyhow::Result<Running> {
    let mut settings = settings;
    let started = Instant::now();
    let Started {
        dir,
        signing,
        boot,
        keys,
        token,
    } = open_data_dir(&settings).await?;
    let id = datadir::node_id_of(&signing);
    crate::log_identity::set(&id.to_string(), &settings.name);

    let socket = bind_mesh_socket(settings.bind).await.with_context(|| {
        format!(
            "binding the mesh port {}: is another agent running? choose another with --bind",
            settings.bind
        )
    })?;
    let api_listener = tokio::net::TcpListener::bind(settings.api)
        .await
        .with_context(|| {
            format!(
                "binding the API on {}: is another agent running? choose another with --api",
                settings.api
            )
        })?;
    let edge_listener = tokio::net::TcpListener::bind(settings.edge)
        .await
        .with_context(|| {
            format!(
                "binding the edge gateway on {}: is another agent or proxy on it? choose another with --edge",
                settings.edge
            )
        })?;

    if settings.bind.port() == 0 {
        let port = socket
            .local_addr()
            .context("the mesh socket's port")?
            .port();
        settings.bind.set_port(port);
        settings.advertise.set_port(port);
    }
    settings.api = api_listener.local_addr().context("the API's port")?;
    settings.edge = edge_listener.local_addr().context("the edge's port")?;
    let mut manifest = NodeManifest {
        format: NodeManifest::FORMAT,
        id,
        boot,
        name: settings.name.clone(),
        tags: settings.tags.clone(),
        capacity: sysinfo::detect(),
        mesh_addr: settings.advertise,
        api_addr: Some(settings.api.to_string()),
        edge_addr: Some(settings.edge.to_string()),
        version: MYCO_VERSION.to_string(),
        key_id: keys.primary_id().to_string(),
        speaks: myco_proto::compat::THIS_BUILD,
    };
    crate::exec::microvm::tag_manifest(&mut manifest.tags);
    // Fault injection (tests only): `/v1/debug/faults`, and a node may
    // claim an older release's records range (`MYCO_SPEAKS_RECORDS=1`: r1)
    // for tests of a mixed-release mesh.
    let faults = std::env::var("MYCO_FAULTS").is_ok_and(|v| v == "1");
    if faults
        && let Some(max) = std::env::var("MYCO_SPEAKS_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
    {
        manifest.speaks.records.max = max;
    }
    manifest.validate().context("node name and tags")?;

    let store_path = dir.path().join(STORE_FILE);
    let (store, loaded) = tokio::task::spawn_blocking(move || Store::open(&store_path))
        .await
        .context("opening the store")??;
    let store = Arc::new(store);
    let store_recovered = loaded.recovered.is_some();
    if let Some(r) = &loaded.recovered {
        tracing::error!(recovery = ?r, "the state store was damaged; its data will be fetched again from peers");
    }
    let mut stream_config = StreamConfig::default();
    // Test hook: `MYCO_STREAM_QUEUE=N` (with MYCO_FAULTS=1) makes the
    // per-peer stream queues that small, so a burst overflows them.
    if faults
        && let Some(n) = std::env::var("MYCO_STREAM_QUEUE")
            .ok()
            .and_then(|v| v.parse().ok())
    {
        stream_config.queue_per_peer = n;
    }
    let (streams, incoming) = Streams::bind(settings.bind, &keys.keys(), id, stream_config)
        .await
        .with_context(|| {
            format!(
                "binding the stream port tcp/{}: choose another with --bind",
                settings.bind
            )
        })?;

    let spore_store = SporeStore::open(dir.path(), streams.clone(), settings.advertise)
        .await
        .context("opening the spore store")?;

    let clock = Clock::start();
    let peer = Peer {
        id,
        addr: settings.advertise,
        boot,
        bump: 0,
    };
    let node = Node::new(
        clock.now(),
        NodeSetup {
            peer,
            manifest: manifest.clone(),
            keys: keys.clone(),
            seed: u64::from_le_bytes(random_bytes::<8>()),
            config: settings.core.clone(),
        },
    );
    let restored = loaded.changes.len();
    let mut node = node;
    node.restore(loaded.changes);
    tracing::info!(entries = restored, "state restored from disk");
    let followers = http::logs::Followers::default();
    let remote_logs = crate::logs::RemoteLogs::start(
        streams.clone(),
        settings.advertise,
        dir.path().to_path_buf(),
        followers.clone(),
    );
    let (loop_streams, loop_store, loop_spores, loop_logs) = (
        streams.clone(),
        store.clone(),
        spore_store.clone(),
        remote_logs.clone(),
    );
    // Cache and messaging handle their stream messages on the connection
    // readers' tasks once started (`Streams::handle_directly`); what
    // arrives before that comes through the mesh loop into these queues.
    let (cache_tx, cache_rx) = tokio::sync::mpsc::channel(crate::cache::INBOX);
    let (msg_tx, msg_rx) = tokio::sync::mpsc::channel(crate::msg::INBOX);
    let apps = crate::mesh::AppRoutes {
        cache: Some(cache_tx),
        msg: Some(msg_tx),
    };
    let (mesh, mesh_done) = spawn_mesh_thread(socket, move |socket| MeshParts {
        node,
        socket,
        clock,
        streams: loop_streams,
        incoming,
        store: loop_store,
        spores: loop_spores,
        logs: loop_logs,
        apps,
    })?;
    let cache = crate::cache::Cache::start(
        mesh.clone(),
        streams.clone(),
        crate::cache::budget_from_env(),
        cache_rx,
    );
    let messaging = crate::msg::Messaging::start(mesh.clone(), streams.clone(), msg_rx);
    let resp_task = match settings.resp {
        Some(addr) => Some(
            crate::resp::serve(
                addr,
                cache.clone(),
                messaging.clone(),
                Arc::from(token.as_str()),
            )
            .await
            .with_context(|| {
                format!("binding the Redis protocol on {addr}: choose another with --resp")
            })?,
        ),
        None => None,
    };

    let (key_watch, key_updates) = tokio::sync::watch::channel(keys.clone());
    let discovery = crate::discovery::start(&settings, &mesh, key_updates).with_context(|| {
        "--discover lan: cannot open the multicast socket (another program on the port? choose another with --discover lan:PORT)"
    })?;

    let spores = Arc::new(Spores::new(
        spore_store,
        mesh.clone(),
        settings.spore_retention,
    ));
    let jobs = crate::jobs::runtime::start(crate::jobs::runtime::RuntimeParts {
        mesh: mesh.clone(),
        spores: spores.clone(),
        data_dir: dir.path().to_path_buf(),
        config: crate::jobs::JobsConfig::from_env().context("jobs settings")?,
    })
    .await;
    let (stop_edge, edge_stopped) = oneshot::channel::<()>();
    let edge_options = crate::edge::EdgeOptions {
        streams: streams.clone(),
        direct: settings.edge_direct,
        prefer_local: settings.edge_prefer_local,
    };
    let (edge, edge_task) = crate::edge::start(mesh.clone(), edge_listener, edge_options, async {
        let _ = edge_stopped.await;
    });
    let token: Arc<str> = Arc::from(token.as_str());
    let server = http::front::api_server(token.clone());
    let state = ApiState {
        mesh: mesh.clone(),
        spores: spores.clone(),
        token,
        open_reads: settings.api.ip().is_loopback(),
        started,
        data_dir: dir.path().to_path_buf(),
        store: store.clone(),
        streams,
        store_recovered,
        faults,
        front: http::front::FrontDoor::new(
            &server,
            HostPolicy::new(settings.api, &settings.api_allowed_hosts),
            SseLimits {
                keep_alive: settings.events_keepalive,
                ..SseLimits::default()
            },
        ),
        jobs: jobs.shared.clone(),
        logs: followers,
        remote_logs,
        edge,
        cache: cache.clone(),
        usage: crate::usage::Usage::start(messaging.clone()),
        msg: messaging.clone(),
    };
    let (state_cache, state_msg) = (cache, messaging);
    let gc = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(3600));
        loop {
            every.tick().await;
            match spores.collect_garbage().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "spore garbage collection"),
                Err(e) => {
                    tracing::warn!(error = %e, "spore garbage collection stopped early; it runs again in an hour")
                }
            }
        }
    });
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let api_task = tokio::spawn(async move {
        server
            .serve(api_listener, http::router(state), async {
                let _ = api_stopped.await;
            })
            .await
    });
    tracing::info!(node = %id, name = %settings.name, mesh = %settings.bind, advertise = %settings.advertise,
        api = %format!("http://{}", settings.api), edge = %settings.edge, key_id = %keys.primary_id(), "myco agent ready");
    Ok(Running {
        settings,
        dir,
        id,
        mesh,
        store,
        cache: state_cache,
        msg: state_msg,
        resp_task,
        gc,
        jobs,
        stop_api,
        stop_edge,
        api_task,
        edge_task,
        mesh_done,
        discovery,
        key_watch,
    })
}

/// Runs an agent until SIGTERM or SIGINT, then leaves the mesh gracefully.
pub async fn run(settings: AgentSettings) -> anyhow::Result<()> {
    let running = start(settings).await?;
    notify_systemd("READY=1");
    let reload = tokio::spawn(reload_keys_on_sighup(
        running.settings.clone(),
        running.dir.clone(),
        running.mesh.clone(),
        running.key_watch.clone(),
    ));
    shutdown_signal().await;
    reload.abort();
    notify_systemd("STOPPING=1");
    running.stop().await;
    Ok(())
}

/// Runs the mesh loop on its own thread with its own single-threaded
/// runtime, so SWIM probes and acks never wait behind API work (a few
/// large listings on the API's runtime once delayed acks long enough for
/// peers to declare this node down). The UDP socket is moved to that
/// runtime, so its readiness is driven there too. Stream connections stay
/// on the main runtime and hand messages over through a channel. Returns
/// the loop's handle and a receiver that completes when the loop ends.
fn spawn_mesh_thread(
    socket: UdpSocket,
    parts: impl FnOnce(UdpSocket) -> MeshParts + Send + 'static,
) -> anyhow::Result<(MeshHandle, oneshot::Receiver<()>)> {
    let socket = socket.into_std().context("moving the mesh socket")?;
    let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("myco-mesh".into())
        .spawn(move || {
            crate::mesh::priority::raise_this_thread();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = handle_tx.send(Err(anyhow::anyhow!("starting the mesh runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let socket = match UdpSocket::from_std(socket) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = handle_tx
                            .send(Err(anyhow::anyhow!("registering the mesh socket: {e}")));
                        return;
                    }
                };
                let (mesh_loop, mesh) = MeshLoop::new(parts(socket));
                let _ = handle_tx.send(Ok(mesh));
                mesh_loop.run().await;
            });
            let _ = done_tx.send(());
        })
        .context("starting the mesh thread")?;
    let mesh = handle_rx
        .recv()
        .context("the mesh thread stopped before it started")??;
    Ok((mesh, done_rx))
}

/// SIGHUP re-reads the cluster key source, for rotation without a restart.
async fn reload_keys_on_sighup(
    settings: AgentSettings,
    dir: DataDir,
    mesh: MeshHandle,
    key_watch: tokio::sync::watch::Sender<KeyRing>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let (settings, dir) = (settings.clone(), dir.clone());
        // File reads: on the blocking pool.
        let loaded = tokio::task::spawn_blocking(move || {
            let ring = load_keys(&settings, &dir)?;
            dir.write_cluster_keys(&ring)?;
            Ok::<_, anyhow::Error>(ring)
        })
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("key reload task failed: {e}")));
        match loaded {
            Ok(ring) => {
                key_watch.send_replace(ring.clone());
                if mesh.rekey(ring).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "SIGHUP: cluster keys not reloaded; the old ones stay in use")
            }
        }
    }
}
