//! HTTP for spores (`/v1/spores`) and trusted publishers (`/v1/trust`):
//! each handler calls one [`crate::spores::Spores`] workflow and translates
//! its answer.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use myco_proto::api::{SporeInfo, TrustedKey};
use serde_json::json;

use super::ApiState;
use super::errors::HttpError;

/// `POST /v1/spores`: the body is a `.spore` file.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/spores", tag = "spores", request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A .spore file"), responses((status = 200, body = SporeInfo), (status = 201, body = SporeInfo), (status = 400, description = "Not a valid spore", body = myco_proto::api::ApiError), (status = 403, description = "Untrusted publisher", body = myco_proto::api::ApiError))))]
pub async fn push(State(s): State<ApiState>, body: Body) -> Result<Response, HttpError> {
    let digest = s.spores.push(body.into_data_stream()).await?;
    Ok((StatusCode::CREATED, Json(json!({"digest": digest}))).into_response())
}

/// `GET /v1/spores`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/spores", tag = "spores", responses((status = 200, body = Vec<SporeInfo>))))]
pub async fn list(State(s): State<ApiState>) -> Json<Vec<SporeInfo>> {
    Json(s.spores.list().await)
}

/// Bytes read from the file per body chunk of a download.
const DOWNLOAD_READ: usize = 256 * 1024;

/// `GET /v1/spores/{digest or NAME@VERSION}`: the file, fetched from a
/// holder first if this node does not have it; without the token, such a
/// fetch is bounded (one at a time, one per 10 s; 429 otherwise).
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/spores/{which}", tag = "spores", params(("which" = String, Path, description = "A digest or NAME@VERSION")), responses((status = 200, description = "The .spore file", content_type = "application/octet-stream", body = Vec<u8>), (status = 404, description = "No such spore", body = myco_proto::api::ApiError), (status = 429, description = "Fetch without the token, too soon", body = myco_proto::api::ApiError))))]
pub async fn download(
    State(s): State<ApiState>,
    Path(which): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let may_fetch = super::auth::token_matches(&headers, &s.token);
    let path = s.spores.open_as(&which, may_fetch).await?;
    let file = tokio::fs::File::open(&path).await.map_err(|e| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("spore store: {e}"),
        )
    })?;
    // Large reads: each read of a tokio file is a hop to the blocking pool,
    // and the default 4 KiB made a 50 MB download 12,800 of them.
    let stream = tokio_util::io::ReaderStream::with_capacity(file, DOWNLOAD_READ);
    let body = Body::from_stream(stream);
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// `POST /v1/spores/gc`: runs garbage collection now (it also runs hourly).
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/spores/gc", tag = "spores", responses((status = 200, body = Object))))]
pub async fn gc(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, HttpError> {
    let removed = s.spores.collect_garbage().await?;
    Ok(Json(json!({"removed": removed})))
}

/// `GET /v1/trust`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/trust", tag = "trust", responses((status = 200, body = Vec<TrustedKey>))))]
pub async fn trust_list(State(s): State<ApiState>) -> Json<Vec<TrustedKey>> {
    Json(s.spores.trust_list())
}

/// `POST /v1/trust {"key": HEX, "comment": TEXT}`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/trust", tag = "trust", request_body = TrustedKey, responses((status = 200, body = Object), (status = 400, description = "Not a public key", body = myco_proto::api::ApiError))))]
pub async fn trust_add(
    State(s): State<ApiState>,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let req = serde_json::from_slice::<TrustedKey>(&body).map_err(|_| {
        HttpError::bad_request("body must be {\"key\": \"<64 hex digits>\", \"comment\": \"...\"}")
    })?;
    let key = s.spores.trust_add(&req.key, req.comment).await?;
    Ok((StatusCode::CREATED, Json(json!({"trusted": key}))).into_response())
}

/// `DELETE /v1/trust/{key}`: `{"removed": KEY}`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(delete, path = "/v1/trust/{key}", tag = "trust", params(("key" = String, Path, description = "The key, 64 hex digits")), responses((status = 200, body = Object), (status = 400, description = "Not 64 hex digits", body = myco_proto::api::ApiError), (status = 404, description = "Not trusted", body = myco_proto::api::ApiError))))]
pub async fn trust_remove(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let key = s.spores.trust_remove(&key).await?;
    Ok(Json(json!({"removed": key})))
}
