//! Health, status, nodes and peers, the cluster key, joining, fault
//! injection, and the seed systems' paths (`/mesh/*`, `/api/*`): all
//! answered from the mesh loop's latest [`Snapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use myco_core::{MemberState, MemberView};
use myco_proto::api::{
    ClusterSummary, MemberCounts, NodeInfo, NodeUsage, PeerAdd, Resources, Status,
};
use myco_proto::{MYCO_VERSION, NodeId};
use serde_json::json;

use super::ApiState;
use super::errors::HttpError;
use super::node_load;
use crate::jobs::workflow::Inputs;
use crate::mesh::Snapshot;

/// Converts a member view into its API form, with what `inputs` (the
/// replicated tables) say of it: what its instances reserve
/// ([`node_load::allocated_by_node`], `allocated`) and whether it is
/// draining; `usage` is its latest report ([`crate::usage`]).
pub fn node_info(
    m: &MemberView,
    snap: &Snapshot,
    inputs: &Inputs,
    allocated: &BTreeMap<NodeId, Resources>,
    usage: Option<NodeUsage>,
) -> NodeInfo {
    let manifest = m.manifest.as_ref();
    let allocated = allocated.get(&m.peer.id).copied().unwrap_or_default();
    NodeInfo {
        id: m.peer.id.to_string(),
        name: manifest.map(|m| m.name.clone()).unwrap_or_default(),
        addr: m.peer.addr.to_string(),
        state: m.state.as_str().to_string(),
        draining: inputs.nodes.iter().any(|n| n.id == m.peer.id && n.draining),
        tags: manifest.map(|m| m.tags.clone()).unwrap_or_default(),
        capacity: manifest
            .map(|m| Resources {
                cpu_milli: u64::from(m.capacity.cpu_milli),
                memory_mb: m.capacity.memory_mb,
            })
            .unwrap_or_default(),
        allocated,
        api: manifest.and_then(|m| m.api_addr.clone()),
        edge: manifest.and_then(|m| m.edge_addr.clone()),
        version: manifest.map(|m| m.version.clone()),
        is_self: m.is_self,
        state_age_ms: if m.is_self {
            0
        } else {
            snap.at.since(m.since).as_millis() as u64
        },
        usage,
    }
}

/// Every member, sorted by name then id, so that every node (and the
/// dashboard on each) lists the mesh in the same order.
/// Waits (briefly, see [`crate::usage::Usage::of_all`]) for the live
/// members' use.
async fn all_nodes(st: &ApiState, s: &Snapshot) -> Vec<NodeInfo> {
    let inputs = Inputs::read(&st.mesh);
    let alloc = node_load::allocated_by_node(&inputs.jobs, &inputs.instances);
    let up: Vec<NodeId> = s
        .members
        .iter()
        .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .map(|m| m.peer.id)
        .collect();
    let mut usage = st.usage.of_all(&up).await;
    let mut nodes: Vec<NodeInfo> = s
        .members
        .iter()
        .map(|m| node_info(m, s, &inputs, &alloc, usage.remove(&m.peer.id)))
        .collect();
    nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    nodes
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

fn status_of(s: &ApiState, snap: &Snapshot) -> Status {
    let inputs = Inputs::read(&s.mesh);
    let allocated = node_load::allocated_by_node(&inputs.jobs, &inputs.instances);
    let (jobs, instances) =
        super::summary::count(&inputs.jobs, &inputs.instances, |n| inputs.is_up(n));
    Status {
        node: node_info(&snap.members[0], snap, &inputs, &allocated, s.usage.own()),
        cluster: ClusterSummary {
            members: counts(snap),
            jobs,
            instances,
        },
        cluster_key_id: snap.key_id.to_string(),
        uptime_s: s.started.elapsed().as_secs(),
        version: MYCO_VERSION.to_string(),
    }
}

/// `GET /health`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/health", tag = "node", responses((status = 200, description = "The node is up: `{status, node, connected, version}`", body = Object))))]
pub async fn health(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let snap = s.mesh.snapshot();
    Json(
        json!({"status": "ok", "node": snap.me.id.to_string(), "connected": snap.connected, "version": MYCO_VERSION}),
    )
}

/// `/v1/status`: the node's status and what it can do for instances.
#[derive(serde::Serialize)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::ToSchema))]
pub struct StatusWithCgroups {
    /// The status every release answers.
    #[serde(flatten)]
    pub status: Status,
    /// The cgroup support detected at start (`version`: `v2`, `v1` or
    /// `none`; `limits`: the limiting controllers; `reason` when something
    /// is missing).
    #[cfg_attr(any(test, feature = "openapi"), schema(value_type = Object))]
    pub cgroups: crate::exec::CgroupSupport,
}

/// `GET /v1/status`, `GET /api/cluster/status`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/status", tag = "node", responses((status = 200, body = StatusWithCgroups))))]
pub async fn status(State(s): State<ApiState>) -> Json<StatusWithCgroups> {
    Json(StatusWithCgroups {
        status: status_of(&s, &s.mesh.snapshot()),
        cgroups: (*s.jobs.cgroups).clone(),
    })
}

/// `GET /v1/nodes`, `GET /api/nodes`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/nodes", tag = "node", responses((status = 200, body = Vec<NodeInfo>))))]
pub async fn nodes(State(s): State<ApiState>) -> Json<Vec<NodeInfo>> {
    Json(all_nodes(&s, &s.mesh.snapshot()).await)
}

/// `GET /v1/nodes/{id or name}`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/nodes/{key}", tag = "node", params(("key" = String, Path, description = "A node id or name")), responses((status = 200, body = NodeInfo), (status = 404, description = "No such node", body = myco_proto::api::ApiError))))]
pub async fn node(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<NodeInfo>, HttpError> {
    all_nodes(&s, &s.mesh.snapshot())
        .await
        .into_iter()
        .find(|n| n.id == key || n.name == key)
        .map(Json)
        .ok_or_else(|| {
            HttpError::not_found(format!(
                "no node with id or name {key:?}; `myco nodes` lists them"
            ))
        })
}

/// `GET /v1/peers`, `GET /mesh/peers`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/peers", tag = "node", responses((status = 200, body = Vec<NodeInfo>))))]
pub async fn peers(State(s): State<ApiState>) -> Json<Vec<NodeInfo>> {
    Json(
        all_nodes(&s, &s.mesh.snapshot())
            .await
            .into_iter()
            .filter(|n| !n.is_self)
            .collect(),
    )
}

/// `POST /v1/peers {"addr": "HOST:PORT"}`: join through a peer.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/peers", tag = "node", request_body = PeerAdd, responses((status = 202, description = "Joining through that peer: `{joining}`", body = Object), (status = 400, description = "Not HOST:PORT, or unresolvable", body = myco_proto::api::ApiError))))]
pub async fn peer_add(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    // Parsed whatever the content type: `curl -d` sends a form type.
    let req = serde_json::from_slice::<PeerAdd>(&body)
        .map_err(|_| HttpError::bad_request("body must be JSON: {\"addr\": \"HOST:PORT\"}"))?;
    let addr = tokio::net::lookup_host(req.addr.as_str())
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            HttpError::bad_request(format!(
                "cannot resolve {:?}: want HOST:PORT of a peer's mesh port",
                req.addr
            ))
        })?;
    s.mesh.try_join(addr)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"joining": addr.to_string()})),
    )
        .into_response())
}

/// `POST /v1/debug/faults {"block": ["IP:PORT", ...]}`: cuts this node off
/// from peers' mesh addresses, both ways; `[]` heals. For tests of
/// partitions with real agents on one machine, where `tc netem` is not
/// available; enabled only by `MYCO_FAULTS=1` at start.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/debug/faults", tag = "node", request_body(content = Object, description = "`{\"block\": [\"IP:PORT\"]}`"), responses((status = 200, body = Object), (status = 400, description = "Not a list of addresses", body = myco_proto::api::ApiError), (status = 404, description = "Fault injection is off", body = myco_proto::api::ApiError))))]
pub async fn faults(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, HttpError> {
    if !s.faults {
        return Err(HttpError::not_found(
            "fault injection is off (start the agent with MYCO_FAULTS=1)",
        ));
    }
    let addrs = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("block")?
                .as_array()?
                .iter()
                .map(|a| a.as_str()?.parse::<SocketAddr>().ok())
                .collect::<Option<BTreeSet<_>>>()
        })
        .ok_or_else(|| HttpError::bad_request("body must be {\"block\": [\"IP:PORT\", ...]}"))?;
    s.mesh.faults(addrs).await?;
    Ok(Json(json!({"ok": true})))
}

/// `GET /v1/cluster/key`: the key ring file (token always required).
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/cluster/key", tag = "node", responses((status = 200, description = "The key ring file", content_type = "text/plain", body = String), (status = 401, body = myco_proto::api::ApiError))))]
pub async fn cluster_key(State(s): State<ApiState>) -> Result<Response, HttpError> {
    let path = s.data_dir.join(crate::config::datadir::CLUSTER_KEY);
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading the cluster key: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `GET /mesh/status`: the seed systems' status shape.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/mesh/status", tag = "seed", responses((status = 200, description = "The seed systems' status shape", body = Object))))]
pub async fn mesh_status(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let snap = s.mesh.snapshot();
    let st = status_of(&s, &snap);
    Json(json!({
        "node_id": st.node.id,
        "name": st.node.name,
        "status": if snap.connected { "healthy" } else { "isolated" },
        "peers_count": st.cluster.members.alive.saturating_sub(1),
        "members": st.cluster.members,
        "uptime_s": st.uptime_s,
        "version": st.version,
    }))
}
