//! Instances over HTTP (`/v1/instances`) and the seed systems' workload
//! paths (`/api/workloads`, Mxc's vocabulary for jobs).
//!
//! An instance record is written by its node on change, never renewed, so
//! a record of a node that is down or left is stale: its slot is being
//! placed elsewhere. The listing leaves those out unless `?all=true`, and
//! every entry says its node's membership state.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use myco_core::jobs::placement;
use myco_proto::instance::InstanceRecord;
use myco_proto::jobs_api::{InstanceInfo, JobInfo, Workload};
use serde::Deserialize;

use super::ApiState;
use super::errors::HttpError;
use super::jobs;
use crate::jobs::workflow::{self, Inputs};

/// Query of `GET /v1/instances`.
#[derive(Deserialize, Default)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::IntoParams))]
#[cfg_attr(any(test, feature = "openapi"), into_params(parameter_in = Query))]
pub struct InstancesQuery {
    /// Only this job's instances.
    job: Option<String>,
    /// Also instances whose node is down or left.
    #[serde(default)]
    all: bool,
}

/// The API view of one instance record.
pub fn info(r: &InstanceRecord, inputs: &Inputs) -> InstanceInfo {
    let (node_name, node_state) = inputs
        .names
        .get(&r.node)
        .map(|(n, s)| (n.clone(), s.as_str().to_string()))
        .unwrap_or_else(|| (String::new(), "unknown".into()));
    InstanceInfo {
        id: r.id.clone(),
        job: r.job.clone(),
        node: r.node.to_string(),
        node_name,
        node_state,
        state: r.state.as_str().to_string(),
        addr: r.addr.map(|a| a.to_string()).unwrap_or_default(),
        digest: r.digest.clone(),
        restarts: r.restarts,
        reason: r.reason.clone(),
        version: r.version,
        slot: r.slot,
        last_exit: r.last_exit,
        since_ms: r.since_ms,
    }
}

fn listing(inputs: &Inputs, job: Option<&str>, all: bool) -> Vec<InstanceInfo> {
    let mut out: Vec<InstanceInfo> = inputs
        .instances
        .iter()
        .filter(|r| job.is_none_or(|j| r.job == j))
        .filter(|r| all || inputs.is_up(r.node))
        .map(|r| info(r, inputs))
        .collect();
    out.sort_unstable_by(|a, b| (&a.job, a.slot, &a.id).cmp(&(&b.job, b.slot, &b.id)));
    out
}

/// `GET /v1/instances[?job=NAME][&all=true]`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/instances", tag = "instances", params(InstancesQuery), responses((status = 200, body = Vec<InstanceInfo>), (status = 400, description = "Bad query string", body = myco_proto::api::ApiError))))]
pub async fn list(
    State(s): State<ApiState>,
    q: Result<Query<InstancesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<InstanceInfo>>, HttpError> {
    let q = super::errors::query(q)?;
    let inputs = Inputs::read(&s.mesh);
    Ok(Json(listing(&inputs, q.job.as_deref(), q.all)))
}

fn workload(job: JobInfo, instances: Vec<InstanceInfo>) -> Workload {
    let status = if job.stopped {
        "stopped"
    } else if job.ready >= job.desired {
        "running"
    } else if !job.pending.is_empty() {
        "pending"
    } else {
        "starting"
    };
    Workload {
        id: job.name.clone(),
        name: job.name,
        status: status.into(),
        spore: job.spore,
        version: job.version,
        desired: job.desired,
        ready: job.ready,
        instances,
    }
}

fn workloads_of(s: &ApiState, only: Option<&str>) -> Vec<Workload> {
    let inputs = Inputs::read(&s.mesh);
    let placed = placement::place(&inputs.cluster());
    inputs
        .jobs
        .iter()
        .filter(|j| only.is_none_or(|o| j.name() == o))
        // Stopped jobs are removed ones, as in `GET /v1/jobs`.
        .filter(|j| !j.stopped)
        .map(|j| {
            let info = jobs::info(j, &inputs, &placed);
            workload(info, listing(&inputs, Some(j.name()), false))
        })
        .collect()
}

/// `GET /api/workloads`: every job with its instances.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/api/workloads", tag = "seed", responses((status = 200, body = Vec<Workload>))))]
pub async fn workloads(State(s): State<ApiState>) -> Json<Vec<Workload>> {
    Json(workloads_of(&s, None))
}

/// `GET /api/workloads/{id}`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/api/workloads/{id}", tag = "seed", params(("id" = String, Path)), responses((status = 200, body = Workload), (status = 404, description = "No such job", body = myco_proto::api::ApiError))))]
pub async fn workload_show(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Workload>, HttpError> {
    workloads_of(&s, Some(&id)).pop().map(Json).ok_or_else(|| {
        HttpError::not_found(format!("no workload {id:?}; GET /api/workloads lists them"))
    })
}

/// `POST /api/workloads`: the same as `POST /v1/jobs`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/api/workloads", tag = "seed", request_body(content = Object, description = "A job file (JSON form)"), responses((status = 200, body = myco_proto::jobs_api::Deployed), (status = 201, body = myco_proto::jobs_api::Deployed), (status = 400, description = "Invalid job", body = myco_proto::api::ApiError))))]
pub async fn workload_create(
    State(s): State<ApiState>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let (change, rec) = workflow::deploy(&s.mesh, &body).await?;
    Ok(jobs::written(&s, change, &rec))
}

/// `POST /api/workloads/{id}/stop`: the same as `DELETE /v1/jobs/{id}`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/api/workloads/{id}/stop", tag = "seed", params(("id" = String, Path)), responses((status = 200, body = myco_proto::jobs_api::Deployed), (status = 404, description = "No such job", body = myco_proto::api::ApiError))))]
pub async fn workload_stop(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, HttpError> {
    let (change, rec) = workflow::stop(&s.mesh, &id).await?;
    Ok(jobs::written(&s, change, &rec))
}
