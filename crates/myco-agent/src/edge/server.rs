//! The edge's listener on the shared bounded server ([`crate::net::serve`]):
//! the same connection cap, header, idle, body and send timeouts as the
//! API's front door, with limits sized for traffic rather than an operator.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use myco_proto::id::NodeId;

use super::proxy::{self, EdgeState};
use super::routes::Routes;
use crate::net::serve::{ServeLimits, Server};

/// Largest request body the edge forwards (streamed, never held whole).
pub const MAX_BODY: u64 = 1 << 30;
/// How long a pooled upstream connection may sit idle: shorter than the
/// usual upstream keep-alive (nginx 75 s, Node 5 s would be the short
/// one), so the pool seldom sends on a connection the instance is closing.
pub const POOL_IDLE: Duration = Duration::from_secs(4);
/// Time to connect to an instance before trying another.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The edge's server limits: more connections than the API (traffic, not
/// an operator), strict line endings (a proxy must not read a request
/// differently from one in front of it), large streamed bodies.
pub fn edge_server() -> Server {
    Server::new(ServeLimits {
        max_connections: 4096,
        reserve_connections: 64,
        strict_line_endings: true,
        max_body_bytes: MAX_BODY,
        ..ServeLimits::default()
    })
    // A reserve connection serves one request of any kind, then closes:
    // the edge has no privileged callers, and one answer beats a refusal.
    .admit_on_reserve(|_| true)
}

/// The pooled HTTP/1.1 client to instances.
pub fn upstream_client() -> Client<HttpConnector, axum::body::Body> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// The edge's app: every request goes to the proxy.
pub fn router(routes: Routes, me: NodeId) -> Router {
    let via_token = format!("myco-{me}");
    let state = EdgeState {
        routes,
        client: upstream_client(),
        via: HeaderValue::from_str(&format!("1.1 {via_token}"))
            .unwrap_or(HeaderValue::from_static("1.1 myco")),
        via_token,
    };
    Router::new()
        .fallback(proxy::handle)
        .with_state(Arc::new(state))
}
