//! The HTTP API: the router and what its handlers share.
//!
//! One module per resource ([`status`] (with [`summary`]), [`kv`], [`events`], [`spores`],
//! [`jobs`], [`instances`] (with `/api/workloads`), [`logs`],
//! [`metrics`], [`dashboard`]); [`auth`] checks the token, [`errors`] maps
//! domain errors to status codes. Handlers depend on domain services (the
//! [`MeshHandle`], the [`Spores`] workflows), never on each other, and only
//! translate: parse the request, call one operation, shape the answer.

pub mod auth;
pub mod cache;
pub mod dashboard;
pub mod errors;
pub mod events;
pub mod front;
pub mod guard;
pub mod instances;
pub mod jobs;
pub mod kv;
pub mod logs;
pub mod metrics;
mod metrics_cache;
mod metrics_jobs;
mod metrics_node;
pub mod msg;
pub mod node_load;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod spores;
pub mod sse;
pub mod status;
pub mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};

use crate::mesh::MeshHandle;
use crate::net::streams::Streams;
use crate::spores::Spores;
use crate::store::Store;
use errors::HttpError;

/// Largest request body the API reads; bigger ones get 413 before buffering.
/// A KV value may be up to 64 KiB; the rest is headroom for JSON bodies.
pub const MAX_BODY: usize = 64 * 1024 + 1024;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The mesh: writes, reads, membership.
    pub mesh: MeshHandle,
    /// The spore workflows.
    pub spores: Arc<Spores>,
    /// The API token.
    pub token: Arc<str>,
    /// Whether reads are open (the API listens on loopback).
    pub open_reads: bool,
    /// When the agent started.
    pub started: Instant,
    /// The data dir (the cluster key is read from it on request).
    pub data_dir: PathBuf,
    /// The durable store (for its counters).
    pub store: Arc<Store>,
    /// The stream transport (for its counters).
    pub streams: Streams,
    /// Whether the store was found damaged at start.
    pub store_recovered: bool,
    /// Whether `/v1/debug/faults` is enabled (`MYCO_FAULTS=1`, tests only).
    pub faults: bool,
    /// Connection limits, host policy, event hub and dashboard sessions.
    pub front: front::FrontDoor,
    /// The jobs runtime's counters, cgroup support and local instances.
    pub jobs: Arc<crate::jobs::JobsShared>,
    /// Bounds `/v1/logs` followers.
    pub logs: logs::Followers,
    /// Reads the logs of instances on other nodes.
    pub remote_logs: std::sync::Arc<crate::logs::RemoteLogs>,
    /// The edge gateway (its route table for `/mesh/routes`, its metrics).
    pub edge: crate::edge::Edge,
    /// Cache buckets across the mesh.
    pub cache: Arc<crate::cache::Cache>,
    /// App messaging across the mesh.
    pub msg: Arc<crate::msg::Messaging>,
    /// Every node's live CPU and memory use.
    pub usage: Arc<crate::usage::Usage>,
}

/// Builds the router.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard::dashboard))
        .route("/login", get(dashboard::login_form).post(dashboard::login))
        .route("/health", get(status::health))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/v1/status", get(status::status))
        .route("/v1/nodes", get(status::nodes))
        .route("/v1/nodes/{key}", get(status::node))
        .route("/v1/peers", get(status::peers).post(status::peer_add))
        .route("/v1/cluster/key", get(status::cluster_key))
        .route("/v1/kv", get(kv::list))
        .route(
            "/v1/kv/{*key}",
            get(kv::get).put(kv::put).delete(kv::delete),
        )
        .route("/v1/events", get(events::events))
        .route("/v1/jobs", get(jobs::list).post(jobs::deploy))
        // A job may be named `plan`: GET and DELETE of this path are its.
        .route(
            "/v1/jobs/plan",
            post(jobs::plan)
                .get(jobs::show_plan_job)
                .delete(jobs::stop_plan_job),
        )
        .route("/v1/jobs/{name}", get(jobs::show).delete(jobs::stop))
        .route("/v1/jobs/{name}/scale", post(jobs::scale))
        .route("/v1/jobs/{name}/revert", post(jobs::revert))
        .route("/v1/jobs/{name}/restart", post(jobs::restart))
        .route("/v1/jobs/{name}/versions", get(jobs::versions))
        .route("/v1/instances", get(instances::list))
        .route(
            "/v1/spores",
            get(spores::list)
                .post(spores::push)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/spores/{which}", get(spores::download))
        .route("/v1/spores/gc", post(spores::gc))
        .route("/v1/trust", get(spores::trust_list).post(spores::trust_add))
        .route("/v1/trust/{key}", delete(spores::trust_remove))
        .route("/v1/logs/{job}", get(logs::logs))
        .route("/v1/debug/faults", post(status::faults))
        .route("/v1/cache", get(cache::list))
        .route("/v1/cache/{bucket}", get(cache::show).put(cache::create))
        .route(
            "/v1/cache/{bucket}/{*key}",
            get(cache::get)
                .put(cache::put)
                .post(cache::incr)
                .delete(cache::delete)
                .layer(DefaultBodyLimit::max(cache::MAX_BODY)),
        )
        .route(
            "/v1/msg/{topic}",
            get(msg::subscribe)
                .post(msg::publish)
                .layer(DefaultBodyLimit::max(myco_proto::msg::MAX_BODY)),
        )
        .route(
            "/v1/msg/{topic}/request",
            post(msg::request).layer(DefaultBodyLimit::max(myco_proto::msg::MAX_BODY)),
        )
        .route(
            "/v1/replies/{id}",
            post(msg::reply).layer(DefaultBodyLimit::max(myco_proto::msg::MAX_BODY)),
        )
        .route("/mesh/status", get(status::mesh_status))
        .route("/mesh/peers", get(status::peers))
        .route("/mesh/routes", get(routes::routes))
        .route("/api/nodes", get(status::nodes))
        .route("/api/cluster/status", get(status::status))
        .route(
            "/api/workloads",
            get(instances::workloads).post(instances::workload_create),
        )
        .route("/api/workloads/{id}", get(instances::workload_show))
        .route("/api/workloads/{id}/stop", post(instances::workload_stop))
        // After every route: a known path asked with another method is
        // the JSON error too (axum's own 405 has an empty body); axum
        // still adds the `Allow` header.
        .method_not_allowed_fallback(errors::method_not_allowed)
        .fallback(|| async {
            HttpError::not_found("no such path; see the API table in the README")
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        // Outermost: a request for a host this API does not serve (DNS
        // rebinding) is refused before authorization and routing.
        .layer(middleware::from_fn_with_state(
            state.front.hosts.clone(),
            guard::guard,
        ))
        // Around everything, refusals included: each answer names its request.
        .layer(middleware::from_fn(request_id::layer))
        .with_state(state)
}
