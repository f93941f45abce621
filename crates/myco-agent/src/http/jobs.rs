//! Jobs over HTTP: `/v1/jobs...`. Handlers parse, call one operation of
//! [`crate::jobs::workflow`], and shape the answer; the counts and pending
//! reasons come from the replicated instance records and the same
//! placement function every node runs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use myco_core::jobs::placement::{self, Placement, Rejection, Slot};
use myco_core::jobs::rollout::{self, Rollout, SlotPhase};
use myco_proto::instance::InstanceState;
use myco_proto::job::{Duplicates, JobRecord};
use myco_proto::jobs_api::{
    DeployChange, Deployed, JobInfo, JobVersionInfo, PendingSlot, PlanInfo, Rejected,
    RevertRequest, RolloutInfo, ScaleRequest, SlotPlanInfo,
};

use super::ApiState;
use super::errors::HttpError;
use crate::jobs::workflow::{self, Inputs, JobFlowError};

impl From<JobFlowError> for HttpError {
    fn from(e: JobFlowError) -> HttpError {
        let e = match e {
            JobFlowError::Write(w) => return HttpError::from(w),
            other => other,
        };
        let code = match &e {
            JobFlowError::Invalid(_) => StatusCode::BAD_REQUEST,
            JobFlowError::UnknownSpore(_) => StatusCode::UNPROCESSABLE_ENTITY,
            JobFlowError::NotFound(_) | JobFlowError::NoSuchVersion { .. } => StatusCode::NOT_FOUND,
            JobFlowError::Conflict(_) | JobFlowError::Stopped(_) => StatusCode::CONFLICT,
            JobFlowError::Damaged(_) | JobFlowError::Write(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError::new(code, e.to_string())
    }
}

/// The API view of one job, counts and pending slots included.
pub fn info(rec: &JobRecord, inputs: &Inputs, placed: &Placement) -> JobInfo {
    let (mut running, mut ready) = (0, 0);
    for i in inputs.instances.iter().filter(|i| i.job == rec.name()) {
        if !inputs.is_up(i.node) {
            continue;
        }
        match i.state {
            InstanceState::Ready => {
                ready += 1;
                running += 1;
            }
            InstanceState::Launching | InstanceState::Draining => running += 1,
            InstanceState::Failed | InstanceState::Stopped => {}
        }
    }
    let pending = placed
        .job(rec.name())
        .map(|p| {
            p.slots
                .iter()
                .enumerate()
                .filter_map(|(slot, s)| match s {
                    Slot::Pending(reason) => Some(PendingSlot {
                        slot: slot as u32,
                        reason: reason.clone(),
                    }),
                    Slot::Node(_) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let pending = crate::jobs::fence::pending(rec, inputs).unwrap_or(pending);
    JobInfo {
        name: rec.name().to_string(),
        version: rec.version,
        spore: rec.digest().to_string(),
        spore_ref: rec.spore_ref.clone(),
        stopped: rec.stopped,
        desired: if rec.stopped { 0 } else { rec.spec.count },
        count: rec.spec.count,
        running,
        ready,
        pending,
        created_ms: rec.created_ms,
        updated_ms: rec.updated_ms,
        spec: rec.spec.clone(),
        duplicates: match rec.spec.duplicates {
            Duplicates::Allowed => "allowed",
            Duplicates::Never => "never",
        }
        .into(),
        rollout: rollout::rollouts(
            inputs.wall_ms,
            &inputs.nodes,
            std::slice::from_ref(rec),
            &inputs.instances,
        )
        .job(rec.name())
        .map(|r| rollout_info(r, rec.spec.count)),
    }
}

/// The API view of a rollout: counts of slots by phase, derived on
/// every read from the same function the nodes act on.
pub fn rollout_info(r: &Rollout, count: u32) -> RolloutInfo {
    let phase = |f: fn(&SlotPhase) -> bool| r.slots.iter().filter(|p| f(p)).count() as u32;
    RolloutInfo {
        from_version: r.from,
        to_version: r.version,
        done: r.replaced() as u32,
        total: count,
        state: match (&r.failure, r.auto_revert) {
            (None, _) => "rolling",
            (Some(_), true) => "reverting",
            (Some(_), false) => "halted",
        }
        .into(),
        waiting: phase(|p| matches!(p, SlotPhase::Waiting)),
        starting: phase(|p| matches!(p, SlotPhase::Starting)),
        proving: phase(|p| matches!(p, SlotPhase::Proving { .. })),
        failure: r
            .failure
            .as_ref()
            .map(|f| format!("{} (slot {}): {}", f.instance, f.slot, f.reason)),
    }
}

/// Every job, as [`info`] shows them, by name.
pub fn all_infos(s: &ApiState) -> Vec<JobInfo> {
    let inputs = Inputs::read(&s.mesh);
    let placed = placement::place(&inputs.cluster());
    inputs
        .jobs
        .iter()
        .map(|r| info(r, &inputs, &placed))
        .collect()
}

/// One job, as [`info`] shows it, stopped ones too.
pub fn one_info(s: &ApiState, name: &str) -> Result<JobInfo, HttpError> {
    let inputs = Inputs::read(&s.mesh);
    let rec = inputs
        .jobs
        .iter()
        .find(|j| j.name() == name)
        .ok_or_else(|| HttpError::from(JobFlowError::NotFound(name.to_string())))?;
    let placed = placement::place(&inputs.cluster());
    Ok(info(rec, &inputs, &placed))
}

/// The answer of a write: 201 for a new version, 200 otherwise.
pub fn written(s: &ApiState, change: DeployChange, rec: &JobRecord) -> Response {
    let code = match change {
        DeployChange::Created | DeployChange::NewVersion | DeployChange::Started => {
            StatusCode::CREATED
        }
        _ => StatusCode::OK,
    };
    // The view is read after the write, so the counts are this node's
    // latest; the record itself is the one just written.
    let mut job = one_info(s, rec.name()).unwrap_or_else(|_| {
        let inputs = Inputs::read(&s.mesh);
        info(rec, &inputs, &placement::place(&inputs.cluster()))
    });
    job.spec = rec.spec.clone();
    (code, Json(Deployed { change, job })).into_response()
}

/// The query of `GET /v1/jobs` and `GET /v1/jobs/{name}`.
#[derive(Debug, Default, serde::Deserialize)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::IntoParams))]
#[cfg_attr(any(test, feature = "openapi"), into_params(parameter_in = Query))]
pub struct JobsQuery {
    /// Also stopped (removed) jobs, whose records stay for their history.
    #[serde(default)]
    all: bool,
}

/// `GET /v1/jobs`: the jobs that are not stopped (`?all=true`: those too).
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobsQuery), responses((status = 200, body = Vec<JobInfo>), (status = 400, description = "Bad query string", body = myco_proto::api::ApiError))))]
pub async fn list(
    State(s): State<ApiState>,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<Vec<JobInfo>>, HttpError> {
    let q = super::errors::query(q)?;
    let mut jobs = all_infos(&s);
    jobs.retain(|j| q.all || !j.stopped);
    Ok(Json(jobs))
}

/// `GET /v1/jobs/{name}`: 404 for a stopped job as for an unknown one
/// (`DELETE` stops and removes), unless `?all=true`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path), JobsQuery), responses((status = 200, body = JobInfo), (status = 400, description = "Bad query string", body = myco_proto::api::ApiError), (status = 404, description = "No such job, or it was stopped", body = myco_proto::api::ApiError))))]
pub async fn show(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobInfo>, HttpError> {
    let q = super::errors::query(q)?;
    let job = one_info(&s, &name)?;
    if job.stopped && !q.all {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            format!(
                "job {name:?} was stopped and removed; `myco job history {name}` lists its versions, `myco deploy` starts it again"
            ),
        ));
    }
    Ok(Json(job))
}

/// `POST /v1/jobs`: create or update a job (JSON, the job file's schema).
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body(content = Object, description = "A job file (JSON form)"), responses((status = 200, body = Deployed), (status = 201, body = Deployed), (status = 400, description = "Invalid job", body = myco_proto::api::ApiError), (status = 422, description = "Unknown spore", body = myco_proto::api::ApiError), (status = 409, description = "The job has [edge] settings (job record format 3) and a live node of an older release cannot read them: the message names the nodes to upgrade", body = myco_proto::api::ApiError))))]
pub async fn deploy(State(s): State<ApiState>, body: Bytes) -> Result<Response, HttpError> {
    let (change, rec) = workflow::deploy(&s.mesh, &body).await?;
    Ok(written(&s, change, &rec))
}

/// `DELETE /v1/jobs/{name}`: stop and remove the job: its instances stop,
/// and it leaves the listings; its records stay for its history (`?all=true`
/// shows it, `myco deploy` starts it again).
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(delete, path = "/v1/jobs/{name}", tag = "jobs", params(("name" = String, Path)), responses((status = 200, body = Deployed), (status = 404, description = "No such job", body = myco_proto::api::ApiError))))]
pub async fn stop(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, HttpError> {
    let (change, rec) = workflow::stop(&s.mesh, &name).await?;
    Ok(written(&s, change, &rec))
}

fn json_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    shape: &str,
) -> Result<T, HttpError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("body must be JSON {shape}: {e}")))
}

/// `POST /v1/jobs/{name}/scale` `{"count": N}`: the same version, N
/// slots; 409 for a stopped job, as restart and revert.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/jobs/{name}/scale", tag = "jobs", params(("name" = String, Path)), request_body = ScaleRequest, responses((status = 200, body = Deployed), (status = 400, description = "Bad body", body = myco_proto::api::ApiError), (status = 404, description = "No such job", body = myco_proto::api::ApiError), (status = 409, description = "The job is stopped: deploy it to start it", body = myco_proto::api::ApiError))))]
pub async fn scale(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let req: ScaleRequest = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request(format!("body must be JSON {{\"count\": N}}: {e}")))?;
    let (change, rec) = workflow::scale(&s.mesh, &name, req.count).await?;
    Ok(written(&s, change, &rec))
}

/// `POST /v1/jobs/{name}/revert` `[{"version": N}]`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/jobs/{name}/revert", tag = "jobs", params(("name" = String, Path)), request_body = RevertRequest, responses((status = 200, body = Deployed), (status = 400, description = "Bad body", body = myco_proto::api::ApiError), (status = 404, description = "No such job or version", body = myco_proto::api::ApiError), (status = 409, description = "The job is stopped (deploy it to start it), or has no other version to go back to", body = myco_proto::api::ApiError))))]
pub async fn revert(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let req: RevertRequest = json_body(&body, "{\"version\": N} or nothing")?;
    let (change, rec) = workflow::revert(&s.mesh, &name, req.version).await?;
    Ok(written(&s, change, &rec))
}

/// `POST /v1/jobs/{name}/restart`: a rolling restart (the same spec as a
/// new version, replaced blue/green).
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/jobs/{name}/restart", tag = "jobs", params(("name" = String, Path)), responses((status = 201, description = "The new version, rolling out", body = Deployed), (status = 401, description = "Missing or wrong token", body = myco_proto::api::ApiError), (status = 404, description = "No such job", body = myco_proto::api::ApiError), (status = 409, description = "The job is stopped: deploy it to start it", body = myco_proto::api::ApiError), (status = 503, description = "The new version could not be stored", body = myco_proto::api::ApiError))))]
pub async fn restart(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, HttpError> {
    let (change, rec) = workflow::restart(&s.mesh, &name).await?;
    Ok(written(&s, change, &rec))
}

/// `GET /v1/jobs/{name}/versions`: the history, oldest first.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/jobs/{name}/versions", tag = "jobs", params(("name" = String, Path)), responses((status = 200, body = Vec<JobVersionInfo>), (status = 404, description = "No such job", body = myco_proto::api::ApiError))))]
pub async fn versions(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<JobVersionInfo>>, HttpError> {
    let current = workflow::current(&s.mesh, &name)?.map(|r| r.version);
    let all = workflow::versions(&s.mesh, &name)?;
    Ok(Json(
        all.into_iter()
            .map(|r| JobVersionInfo {
                version: r.version,
                current: Some(r.version) == current,
                spore: r.digest().to_string(),
                spore_ref: r.spore_ref.clone(),
                deployed_ms: r.updated_ms,
                spec: r.spec,
            })
            .collect(),
    ))
}

/// `POST /v1/jobs/plan`: the dry run of a deploy; changes nothing.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/jobs/plan", tag = "jobs", request_body(content = Object, description = "A job file (JSON form)"), responses((status = 200, body = PlanInfo), (status = 400, description = "Invalid job", body = myco_proto::api::ApiError))))]
pub async fn plan(State(s): State<ApiState>, body: Bytes) -> Result<Json<PlanInfo>, HttpError> {
    let (plan, inputs) = workflow::plan(&s.mesh, &body)?;
    let name_of = |id| {
        inputs
            .names
            .get(&id)
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    };
    let slots = plan
        .slots
        .iter()
        .map(|sp| {
            let (node, pending) = match &sp.outcome {
                Slot::Node(id) => (Some(*id), None),
                Slot::Pending(why) => (None, Some(why.clone())),
            };
            SlotPlanInfo {
                slot: sp.slot,
                node: node.map(|id| id.to_string()),
                node_name: node.map(name_of),
                pending,
                kept: sp.kept,
                rejected: sp
                    .rejected
                    .iter()
                    .map(|(id, why): &(_, Rejection)| Rejected {
                        node: id.to_string(),
                        node_name: name_of(*id),
                        reason: why.to_string(),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Json(PlanInfo {
        job: plan.job,
        version: plan.version,
        slots,
    }))
}

/// `GET /v1/jobs/plan`: the job named `plan` (the path's POST is the dry run).
pub async fn show_plan_job(
    s: State<ApiState>,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> Result<Json<JobInfo>, HttpError> {
    show(s, Path("plan".into()), q).await
}

/// `DELETE /v1/jobs/plan`: stops the job named `plan`.
pub async fn stop_plan_job(s: State<ApiState>) -> Result<Response, HttpError> {
    stop(s, Path("plan".into())).await
}
