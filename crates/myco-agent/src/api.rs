//! The HTTP API and the seed systems' paths, answered from the mesh
//! loop's latest [`Snapshot`].
//!
//! Authorization: every mutating request needs `Authorization: Bearer
//! TOKEN`; when the API listens off loopback, every request but `/health`
//! and `/metrics` needs it; the cluster key needs it always.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use myco_core::{MemberState, MemberView};
use myco_proto::MYCO_VERSION;
use myco_proto::api::{ApiError, MemberCounts, NodeInfo, PeerAdd, Resources, Status};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::mesh::{Command, Snapshot};
use crate::{kv, metrics, spores_api};

/// Largest request body the API reads; bigger ones get 413 before buffering.
/// A KV value may be up to 64 KiB; the rest is headroom for JSON bodies.
pub const MAX_BODY: usize = 64 * 1024 + 1024;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The mesh loop's latest view.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// Commands to the mesh loop.
    pub commands: mpsc::Sender<Command>,
    /// The API token.
    pub token: Arc<str>,
    /// Whether reads are open (the API listens on loopback).
    pub open_reads: bool,
    /// When the agent started.
    pub started: Instant,
    /// The data dir (the cluster key is read from it on request).
    pub data_dir: PathBuf,
    /// The durable store (writes wait on it before they are acknowledged).
    pub store: Arc<crate::store::Store>,
    /// Events for `/v1/events`.
    pub events: crate::kv::EventSender,
    /// The stream transport (for its counters).
    pub streams: crate::streams::Streams,
    /// Whether the store was found damaged at start.
    pub store_recovered: bool,
    /// The spore content store.
    pub spores: Arc<crate::spores::SporeStore>,
    /// How long an unreferenced spore is kept.
    pub spore_retention: std::time::Duration,
    /// Whether `/v1/debug/faults` is enabled (`MYCO_FAULTS=1`, tests only).
    pub faults: bool,
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/status", get(status))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{key}", get(node))
        .route("/v1/peers", get(peers).post(peer_add))
        .route("/v1/cluster/key", get(cluster_key))
        .route("/v1/kv", get(kv::list))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/events", get(kv::events))
        .route(
            "/v1/spores",
            get(spores_api::list)
                .post(spores_api::push)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/spores/{which}", get(spores_api::download))
        .route("/v1/spores/gc", axum::routing::post(spores_api::gc))
        .route(
            "/v1/trust",
            get(spores_api::trust_list).post(spores_api::trust_add),
        )
        .route(
            "/v1/trust/{key}",
            axum::routing::delete(spores_api::trust_remove),
        )
        .route("/v1/debug/faults", axum::routing::post(faults))
        .route("/mesh/status", get(mesh_status))
        .route("/mesh/peers", get(peers))
        .route("/api/nodes", get(nodes))
        .route("/api/cluster/status", get(status))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such path; see the API table in the README",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A JSON error answer.
pub(crate) fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ApiError { error: msg.into() })).into_response()
}

fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the token's length is not secret, its bytes are.
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

async fn authorize(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let always_open = matches!(path, "/health" | "/metrics");
    let needs_token = !always_open
        && (!matches!(*req.method(), Method::GET | Method::HEAD)
            || !s.open_reads
            || path == "/v1/cluster/key");
    if needs_token && !token_matches(req.headers(), &s.token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token: pass --token, set MYCO_API_TOKEN, or point --data-dir at this node's data dir",
        );
    }
    next.run(req).await
}

fn snap(s: &ApiState) -> Arc<Snapshot> {
    s.snapshot.borrow().clone()
}

/// Converts a member view into its API form.
pub fn node_info(m: &MemberView, snap: &Snapshot) -> NodeInfo {
    let manifest = m.manifest.as_ref();
    NodeInfo {
        id: m.peer.id.to_string(),
        name: manifest.map(|m| m.name.clone()).unwrap_or_default(),
        addr: m.peer.addr.to_string(),
        state: m.state.as_str().to_string(),
        tags: manifest.map(|m| m.tags.clone()).unwrap_or_default(),
        capacity: manifest
            .map(|m| Resources {
                cpu_milli: u64::from(m.capacity.cpu_milli),
                memory_mb: m.capacity.memory_mb,
            })
            .unwrap_or_default(),
        allocated: Resources::default(),
        api: manifest.and_then(|m| m.api_addr.clone()),
        edge: manifest.and_then(|m| m.edge_addr.clone()),
        version: manifest.map(|m| m.version.clone()),
        is_self: m.is_self,
        state_age_ms: if m.is_self {
            0
        } else {
            snap.at.since(m.since).as_millis() as u64
        },
    }
}

fn all_nodes(s: &Snapshot) -> Vec<NodeInfo> {
    s.members.iter().map(|m| node_info(m, s)).collect()
}

fn counts(s: &Snapshot) -> MemberCounts {
    let mut c = MemberCounts::default();
    for m in &s.members {
        match m.state {
            MemberState::Alive => c.alive += 1,
            MemberState::Suspect => c.suspect += 1,
            MemberState::Down => c.down += 1,
            MemberState::Left => c.left += 1,
        }
    }
    c
}

fn status_of(s: &ApiState) -> Status {
    let snap = snap(s);
    Status {
        node: node_info(&snap.members[0], &snap),
        cluster: counts(&snap),
        cluster_key_id: snap.key_id.to_string(),
        uptime_s: s.started.elapsed().as_secs(),
        version: MYCO_VERSION.to_string(),
    }
}

async fn health(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let snap = snap(&s);
    Json(
        json!({"status": "ok", "node": snap.me.id.to_string(), "connected": snap.connected, "version": MYCO_VERSION}),
    )
}

async fn status(State(s): State<ApiState>) -> Json<Status> {
    Json(status_of(&s))
}

async fn nodes(State(s): State<ApiState>) -> Json<Vec<NodeInfo>> {
    Json(all_nodes(&snap(&s)))
}

async fn node(State(s): State<ApiState>, Path(key): Path<String>) -> Response {
    let snap = snap(&s);
    match all_nodes(&snap)
        .into_iter()
        .find(|n| n.id == key || n.name == key)
    {
        Some(n) => Json(n).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no node with id or name {key:?}; `myco nodes` lists them"),
        ),
    }
}

async fn peers(State(s): State<ApiState>) -> Json<Vec<NodeInfo>> {
    let snap = snap(&s);
    Json(
        all_nodes(&snap)
            .into_iter()
            .filter(|n| !n.is_self)
            .collect(),
    )
}

async fn peer_add(State(s): State<ApiState>, body: axum::body::Bytes) -> Response {
    // Parsed whatever the content type: `curl -d` sends a form type.
    let Ok(req) = serde_json::from_slice::<PeerAdd>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be JSON: {\"addr\": \"HOST:PORT\"}",
        );
    };
    let addr = match tokio::net::lookup_host(req.addr.as_str())
        .await
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(addr) => addr,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "cannot resolve {:?}: want HOST:PORT of a peer's mesh port",
                    req.addr
                ),
            );
        }
    };
    match s.commands.try_send(Command::Join(addr)) {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"joining": addr.to_string()})),
        )
            .into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the mesh loop is busy; try again",
        ),
    }
}

/// `POST /v1/debug/faults {"block": ["IP:PORT", ...]}`: cuts this node off
/// from peers' mesh addresses, both ways; `[]` heals. For tests of
/// partitions with real agents on one machine, where `tc netem` is not
/// available; enabled only by `MYCO_FAULTS=1` at start.
async fn faults(State(s): State<ApiState>, body: axum::body::Bytes) -> Response {
    if !s.faults {
        return error(
            StatusCode::NOT_FOUND,
            "fault injection is off (start the agent with MYCO_FAULTS=1)",
        );
    }
    let addrs = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("block")?
                .as_array()?
                .iter()
                .map(|a| a.as_str()?.parse::<std::net::SocketAddr>().ok())
                .collect::<Option<Vec<_>>>()
        });
    let Some(addrs) = addrs else {
        return error(
            StatusCode::BAD_REQUEST,
            "body must be {\"block\": [\"IP:PORT\", ...]}",
        );
    };
    match s
        .commands
        .send(Command::Faults(addrs.into_iter().collect()))
        .await
    {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down",
        ),
    }
}

async fn cluster_key(State(s): State<ApiState>) -> Response {
    match std::fs::read_to_string(s.data_dir.join(crate::datadir::CLUSTER_KEY)) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the cluster key: {e}"),
        ),
    }
}

async fn mesh_status(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let st = status_of(&s);
    Json(json!({
        "node_id": st.node.id,
        "name": st.node.name,
        "status": if snap(&s).connected { "healthy" } else { "isolated" },
        "peers_count": st.cluster.alive.saturating_sub(1),
        "members": st.cluster,
        "uptime_s": st.uptime_s,
        "version": st.version,
    }))
}

async fn metrics_text(State(s): State<ApiState>) -> Response {
    let body = metrics::encode(&metrics::Sources {
        snap: &snap(&s),
        uptime: s.started.elapsed(),
        store: s.store.stats(),
        store_recovered: s.store_recovered,
        streams: s.streams.stats(),
        spores_refused: s.spores.refusals(),
    });
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn dashboard() -> Html<&'static str> {
    Html(include_str!("dashboard.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_check_is_exact() {
        let mut h = HeaderMap::new();
        assert!(!token_matches(&h, "abc"));
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert!(token_matches(&h, "abc"));
        assert!(!token_matches(&h, "abd"));
        assert!(!token_matches(&h, "abcd"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(!token_matches(&h, "abc"));
    }
}
