//! The HTTP edge gateway: every node proxies HTTP to ready instances
//! anywhere in the mesh.
//!
//! - [`routes`]: the route table (the core's [`myco_core::edge::RouteTable`],
//!   rebuilt on changes, published as an atomically swapped snapshot);
//! - [`rewrite`]: which job a request is for, and the heads as they leave
//!   (hop-by-hop headers, `X-Request-Id`, `X-Forwarded-*`, `Via`, loops);
//! - [`balance`]: power of two choices, passive ejection;
//! - [`proxy`]: the handler (forward, retry once on connect failure,
//!   JSON errors), each attempt sent by [`send`]; [`body`] keeps
//!   in-flight counts until a response ends;
//! - [`tunnel`]: WebSocket (upgrade) passthrough;
//! - [`server`]: the listener on the shared bounded server;
//! - [`pool`]: the keep-alive pool to instances; [`upstream`]: its
//!   connections (quick ACKs) and timings;
//! - [`metrics`]: per-job counters for `/metrics`.
//! - [`fast`]: plain keep-alive requests to local instances served
//!   without hyper (hyper takes the connection over for anything else).
//!
//! - [`relay`]: requests for instances on other nodes go through that
//!   node's agent, HTTP/2 over the mesh's mutual TLS; [`relay_tunnel`]:
//!   upgrades (WebSocket) through it.

pub mod balance;
pub mod body;
pub mod fast;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod relay;
pub mod relay_tunnel;
pub mod rewrite;
pub mod routes;
pub mod send;
pub mod server;
pub mod tunnel;
pub mod upstream;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::mesh::MeshHandle;
use crate::net::serve::ServeCounters;
pub use routes::Routes;

/// What the rest of the agent (the API's `/mesh/routes` and `/metrics`)
/// reads of the running edge; clones share it.
#[derive(Clone, Default)]
pub struct Edge {
    /// The published route table.
    pub routes: Routes,
    /// The edge server's connection counters.
    pub serve: Arc<ServeCounters>,
    /// The relay's counters (requests relayed here for other edges).
    pub relay: Arc<relay::RelayCounters>,
}

/// How the edge reaches instances on other nodes.
#[derive(Clone)]
pub struct EdgeOptions {
    /// The mesh's streams, whose listener and certificates carry the relay.
    pub streams: crate::net::streams::Streams,
    /// Send to remote instances directly in plaintext instead (trusted
    /// LANs; `--edge-direct`). The relay still serves other nodes.
    pub direct: bool,
    /// Take a local instance when it is as good as the balancer's choice
    /// (`--edge-prefer-local`).
    pub prefer_local: bool,
}

/// Starts the edge on `listener`: the route follower and the server, both
/// until `shutdown` completes (the follower also ends with the mesh).
pub fn start(
    mesh: MeshHandle,
    listener: TcpListener,
    options: EdgeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (Edge, tokio::task::JoinHandle<()>) {
    let me = mesh.me().id;
    let routes = Routes::new(routes::HopRule {
        me: Some(me),
        direct: options.direct,
    });
    // The first table is built before the first request can arrive.
    routes.publish(&routes::table_of(&mesh));
    let server = server::edge_server();
    let edge = Edge {
        routes: routes.clone(),
        serve: server.counters(),
        relay: Arc::default(),
    };
    let pool = pool::Pool::new();
    options.streams.set_relay_handler(relay::handler(
        routes.clone(),
        me,
        pool.clone(),
        edge.relay.clone(),
    ));
    let relay_client = relay::client(options.streams);
    let state = server::state(
        routes.clone(),
        me,
        pool,
        Some(relay_client),
        options.prefer_local,
    );
    let app = server::app(state.clone());
    let fast = fast::enabled();
    tracing::debug!(fast, "edge: fast path (MYCO_EDGE_FAST)");
    let server = server.fast_path(fast.then(|| Arc::new(fast::Fast::new(state)) as _));
    let follower = tokio::spawn(routes::follow(mesh, routes));
    let task = tokio::spawn(async move {
        if let Err(e) = server.serve(listener, app, shutdown).await {
            tracing::error!(error = %e, "the edge listener failed; the edge is down");
        }
        follower.abort();
    });
    (edge, task)
}

/// Registers the edge's metrics: per job (see [`metrics`]) and its
/// connections.
pub fn register_metrics(r: &mut prometheus_client::registry::Registry, edge: &Edge) {
    let table = edge.routes.load_full();
    metrics::register(r, table.jobs.iter().map(|(j, e)| (j.as_str(), &*e.metrics)));
    let s = edge.serve.snapshot();
    let open = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    open.set(s.open as i64);
    r.register(
        "edge_connections_open",
        "Edge client connections open now",
        open,
    );
    let accepted = prometheus_client::metrics::counter::Counter::<u64>::default();
    accepted.inc_by(s.accepted);
    r.register(
        "edge_connections_accepted",
        "Edge client connections accepted",
        accepted,
    );
    let refused = prometheus_client::metrics::counter::Counter::<u64>::default();
    refused.inc_by(s.refused_over_cap);
    for (name, help, c) in [
        (
            "edge_relay_served",
            "Requests relayed to an instance here for another node's edge",
            &edge.relay.served,
        ),
        (
            "edge_relay_refused",
            "Relayed requests refused: no such instance on this node",
            &edge.relay.refused,
        ),
        (
            "edge_relay_failed",
            "Relayed requests whose instance here could not be reached",
            &edge.relay.failed,
        ),
    ] {
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        counter.inc_by(c.load(std::sync::atomic::Ordering::Relaxed));
        r.register(name, help, counter);
    }
    r.register(
        "edge_connections_refused",
        "Edge client connections closed at once: the cap and its reserve were full",
        refused,
    );
}
