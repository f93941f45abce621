//! `GET /mesh/routes` (the seed systems' path): this node's edge route
//! table, each job with its ready and draining instances, their nodes and
//! addresses, and what this edge knows of them (in flight, ejected).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use myco_proto::edge_api::{JobRoute, RouteEndpoint, Routes};

use super::ApiState;
use crate::edge::balance::Upstream;

/// The handler.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/mesh/routes", tag = "mesh", responses((status = 200, body = Routes))))]
pub async fn routes(State(s): State<ApiState>) -> Json<Routes> {
    let snap = s.mesh.snapshot();
    let names: BTreeMap<_, _> = snap
        .members
        .iter()
        .map(|m| {
            let name = m.manifest.as_ref().map(|x| x.name.clone());
            (m.peer.id, name.unwrap_or_default())
        })
        .collect();
    let edge_addr = snap
        .members
        .iter()
        .find(|m| m.is_self)
        .and_then(|m| m.manifest.as_ref()?.edge_addr.clone())
        .unwrap_or_default();
    let table = s.edge.routes.load_full();
    let now_ms = s.edge.routes.now_ms();
    let endpoint = |u: &std::sync::Arc<Upstream>| RouteEndpoint {
        instance: u.instance.clone(),
        node: u.node.to_string(),
        node_name: names.get(&u.node).cloned().unwrap_or_default(),
        addr: u.addr.to_string(),
        in_flight: u.in_flight(),
        ejected: u.is_ejected(now_ms),
    };
    let routes = table
        .jobs
        .iter()
        .map(|(job, e)| JobRoute {
            job: job.clone(),
            ready: e.ready.iter().map(endpoint).collect(),
            draining: e.draining.iter().map(endpoint).collect(),
            stopped: e.stopped,
        })
        .collect();
    Json(Routes {
        edge: edge_addr,
        routes,
    })
}
