//! The edge's listener on the shared bounded server ([`crate::net::serve`]):
//! the same connection cap, header, idle, body and send timeouts as the
//! API's front door, with limits sized for traffic rather than an operator.

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderValue;
use myco_proto::id::NodeId;

use super::proxy::{self, EdgeState};
use super::routes::Routes;
use crate::net::serve::{ServeLimits, Server};

/// Largest request body the edge forwards (streamed, never held whole).
pub const MAX_BODY: u64 = 1 << 30;
/// The edge's server limits: more connections than the API (traffic, not
/// an operator), strict line endings (a proxy must not read a request
/// differently from one in front of it), large streamed bodies.
pub fn edge_server() -> Server {
    Server::new(ServeLimits {
        max_connections: 4096,
        reserve_connections: 64,
        strict_line_endings: true,
        max_body_bytes: MAX_BODY,
        h2c: true,
        ..ServeLimits::default()
    })
    // A reserve connection serves one request of any kind, then closes:
    // the edge has no privileged callers, and one answer beats a refusal.
    .admit_on_reserve(|_| true)
}

/// The edge's app: every request goes to the proxy.
pub fn router(
    routes: Routes,
    me: NodeId,
    pool: super::pool::Pool,
    relay: Option<super::relay::RelayClient>,
    prefer_local: bool,
) -> Router {
    app(state(routes, me, pool, relay, prefer_local))
}

/// The app over `state` (shared with the fast path).
pub fn app(state: Arc<EdgeState>) -> Router {
    Router::new().fallback(proxy::handle).with_state(state)
}

/// What every edge request shares.
pub fn state(
    routes: Routes,
    me: NodeId,
    pool: super::pool::Pool,
    relay: Option<super::relay::RelayClient>,
    prefer_local: bool,
) -> Arc<EdgeState> {
    let via_token = format!("myco-{me}");
    Arc::new(EdgeState {
        routes,
        pool,
        via: HeaderValue::from_str(&format!("1.1 {via_token}"))
            .unwrap_or(HeaderValue::from_static("1.1 myco")),
        via_token,
        tunnels: super::tunnel::Tunnels::default(),
        relay,
        prefer_local,
    })
}
