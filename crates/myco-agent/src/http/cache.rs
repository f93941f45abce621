//! Cache buckets over HTTP: `PUT/GET /v1/cache/{bucket}` (the config),
//! `GET/PUT/DELETE /v1/cache/{bucket}/{key}` (entries, raw values;
//! `?ttl_ms=N` on PUT overrides the bucket's TTL), `POST` on an entry to
//! add to a counter (`?by=N`), `GET /v1/cache` (the buckets). Handlers only translate; [`crate::cache::Cache`] decides.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use myco_proto::cache::BucketConfig;
use serde::Deserialize;

use super::ApiState;
use super::errors::HttpError;
use crate::cache::CacheError;

/// Largest request body on entry routes: a value of the largest size.
pub const MAX_BODY: usize = myco_proto::cache::MAX_VALUE;

/// The body limit of cache and messaging writes (cache values and message
/// bodies are larger than the API's usual JSON), for the server's check
/// before the body is read; `None` for other requests.
pub fn body_limit(head: &axum::http::request::Parts) -> Option<u64> {
    let path = head.uri.path();
    if head.method == axum::http::Method::PUT && path.starts_with("/v1/cache/") {
        Some(MAX_BODY as u64 + 1024)
    } else if head.method == axum::http::Method::POST
        && (path.starts_with("/v1/msg/") || path.starts_with("/v1/replies/"))
    {
        Some(myco_proto::msg::MAX_BODY as u64)
    } else {
        None
    }
}

impl From<CacheError> for HttpError {
    fn from(e: CacheError) -> HttpError {
        let code = match &e {
            CacheError::NoBucket(_) => StatusCode::NOT_FOUND,
            CacheError::Input(myco_proto::cache::CacheInputError::Value(_)) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            CacheError::Input(_) => StatusCode::BAD_REQUEST,
            CacheError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            CacheError::Counter(myco_proto::cache::CounterError::Invalid) => {
                StatusCode::BAD_REQUEST
            }
            // The request is fine; what the key holds is not a counter.
            CacheError::Counter(_) => StatusCode::CONFLICT,
            CacheError::Config(_) => {
                let CacheError::Config(w) = e else {
                    unreachable!("matched just above")
                };
                return HttpError::from(w);
            }
        };
        HttpError::new(code, e.to_string())
    }
}

/// `GET /v1/cache`: `{"buckets": [{"name", "ttl_ms", "max_entries",
/// "replicas"}], "node": {...}}`, `node` being this node's share: entries
/// and bytes held, evictions, expiries, fallback reads, stand-in writes,
/// repairs, moves.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/cache", tag = "cache", responses((status = 200, description = "`{\"buckets\": [{\"name\", \"ttl_ms\", \"max_entries\", \"replicas\"}], \"node\": {\"entries\", \"bytes\", \"evicted_lru\", \"evicted_budget\", \"expired\", \"stale_writes\", \"fallback_reads\", \"stand_in_writes\", \"read_repairs\", \"moved\", \"dropped\"}}`", body = Object))))]
pub async fn list(State(s): State<ApiState>) -> Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let st = s.cache.stats();
    let c = s.cache.counters();
    let node = serde_json::json!({
        "entries": st.entries,
        "bytes": st.bytes,
        "evicted_lru": st.evicted_lru,
        "evicted_budget": st.evicted_budget,
        "expired": st.expired,
        "stale_writes": st.stale_writes,
        "fallback_reads": c.fallback_reads.load(Relaxed),
        "stand_in_writes": c.stand_in_writes.load(Relaxed),
        "read_repairs": c.read_repairs.load(Relaxed),
        "moved": c.moved.load(Relaxed),
        "dropped": c.dropped.load(Relaxed),
    });
    let buckets: Vec<serde_json::Value> = s
        .cache
        .buckets()
        .into_iter()
        .map(|(name, c)| serde_json::json!({"name": name, "ttl_ms": c.ttl_ms, "max_entries": c.max_entries, "replicas": c.replicas}))
        .collect();
    Json(serde_json::json!({ "buckets": buckets, "node": node }))
}

/// `GET /v1/cache/{bucket}`: its config.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/cache/{bucket}", tag = "cache", params(("bucket" = String, Path, description = "The bucket: 1 to 64 characters")), responses((status = 200, body = BucketConfig), (status = 404, description = "No such bucket", body = myco_proto::api::ApiError))))]
pub async fn show(
    State(s): State<ApiState>,
    Path(bucket): Path<String>,
) -> Result<Json<BucketConfig>, HttpError> {
    s.cache
        .bucket_soon(&bucket)
        .await
        .map(Json)
        .ok_or_else(|| CacheError::NoBucket(bucket).into())
}

/// `PUT /v1/cache/{bucket}`: create or change it (JSON config; fields
/// left out take their defaults).
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(put, path = "/v1/cache/{bucket}", tag = "cache", params(("bucket" = String, Path, description = "The bucket: 1 to 64 characters")), request_body(content = BucketConfig, description = "The config; fields left out (or an empty body) take their defaults"), responses((status = 200, description = "The bucket's config now", body = BucketConfig), (status = 400, description = "Bad name or config", body = myco_proto::api::ApiError), (status = 401, description = "Missing or wrong token", body = myco_proto::api::ApiError), (status = 413, description = "Body too large", body = myco_proto::api::ApiError), (status = 503, description = "The config could not be stored", body = myco_proto::api::ApiError))))]
pub async fn create(
    State(s): State<ApiState>,
    Path(bucket): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let config: BucketConfig = if body.is_empty() {
        BucketConfig::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            HttpError::bad_request(format!(
                "the body must be JSON {{\"ttl_ms\": N, \"max_entries\": N, \"replicas\": N}}: {e}"
            ))
        })?
    };
    s.cache.create_bucket(&bucket, config).await?;
    Ok((StatusCode::OK, Json(config)).into_response())
}

/// `GET /v1/cache/{bucket}/{key}`: the raw value; 404 if absent or expired.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/cache/{bucket}/{key}", tag = "cache", params(("bucket" = String, Path, description = "The bucket: 1 to 64 characters"), ("key" = String, Path, description = "The key (may contain `/`), at most 1024 bytes")), responses((status = 200, description = "The raw value", content_type = "application/octet-stream", body = Vec<u8>), (status = 400, description = "Bad bucket name or key", body = myco_proto::api::ApiError), (status = 404, description = "No such bucket, or no such entry (never set, deleted or expired)", body = myco_proto::api::ApiError), (status = 503, description = "Too few owners answered", body = myco_proto::api::ApiError))))]
pub async fn get(
    State(s): State<ApiState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    match s.cache.get(&bucket, &key).await? {
        Some(v) => Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )],
            v,
        )
            .into_response()),
        None => Err(HttpError::not_found(format!(
            "no entry {key:?} in bucket {bucket:?} (never set, deleted or expired)"
        ))),
    }
}

/// Query of an entry PUT.
#[derive(Deserialize)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::IntoParams))]
#[cfg_attr(any(test, feature = "openapi"), into_params(parameter_in = Query))]
pub struct PutQuery {
    /// This entry's lifetime in ms, instead of the bucket's TTL.
    ttl_ms: Option<u64>,
}

/// `PUT /v1/cache/{bucket}/{key}`: the body is the value; answered once
/// its owners hold it.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(put, path = "/v1/cache/{bucket}/{key}", tag = "cache", params(("bucket" = String, Path, description = "The bucket: 1 to 64 characters"), ("key" = String, Path, description = "The key (may contain `/`), at most 1024 bytes"), PutQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value, at most 1 MiB"), responses((status = 204, description = "Its owners hold it"), (status = 400, description = "Bad bucket name, key or query string", body = myco_proto::api::ApiError), (status = 401, description = "Missing or wrong token", body = myco_proto::api::ApiError), (status = 404, description = "No such bucket", body = myco_proto::api::ApiError), (status = 413, description = "Value too large", body = myco_proto::api::ApiError), (status = 503, description = "Too few owners answered", body = myco_proto::api::ApiError))))]
pub async fn put(
    State(s): State<ApiState>,
    Path((bucket, key)): Path<(String, String)>,
    q: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let q = super::errors::query(q)?;
    s.cache.set(&bucket, &key, body.to_vec(), q.ttl_ms).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/cache/{bucket}/{key}`: 204 whether or not it existed.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(delete, path = "/v1/cache/{bucket}/{key}", tag = "cache", params(("bucket" = String, Path, description = "The bucket: 1 to 64 characters"), ("key" = String, Path, description = "The key (may contain `/`), at most 1024 bytes")), responses((status = 204, description = "Gone (whether or not it existed)"), (status = 400, description = "Bad bucket name or key", body = myco_proto::api::ApiError), (status = 401, description = "Missing or wrong token", body = myco_proto::api::ApiError), (status = 404, description = "No such bucket", body = myco_proto::api::ApiError), (status = 503, description = "Too few owners answered", body = myco_proto::api::ApiError))))]
pub async fn delete(
    State(s): State<ApiState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    s.cache.delete(&bucket, &key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Query of an entry POST (an increment).
#[derive(Deserialize)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::IntoParams))]
#[cfg_attr(any(test, feature = "openapi"), into_params(parameter_in = Query))]
pub struct IncrQuery {
    /// What to add (negative to subtract); 1 if left out.
    by: Option<i64>,
}

/// `POST /v1/cache/{bucket}/{key}`: adds `?by=N` (default 1) to the
/// decimal integer the entry holds (none counts as 0), atomically on the
/// key's primary; answers `{"value": N}`, the sum, once two owners hold it.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/cache/{bucket}/{key}", tag = "cache", params(("bucket" = String, Path, description = "The bucket: 1 to 64 characters"), ("key" = String, Path, description = "The key (may contain `/`), at most 1024 bytes"), IncrQuery), responses((status = 200, description = "The sum: `{\"value\": N}`", body = Object), (status = 400, description = "Bad bucket name, key or query string", body = myco_proto::api::ApiError), (status = 401, description = "Missing or wrong token", body = myco_proto::api::ApiError), (status = 404, description = "No such bucket", body = myco_proto::api::ApiError), (status = 409, description = "The entry holds no decimal 64-bit integer, or the sum would overflow", body = myco_proto::api::ApiError), (status = 503, description = "The key's primary or too few owners answered (the increment may have been applied)", body = myco_proto::api::ApiError))))]
pub async fn incr(
    State(s): State<ApiState>,
    Path((bucket, key)): Path<(String, String)>,
    q: Result<Query<IncrQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let q = super::errors::query(q)?;
    let value = s.cache.incr(&bucket, &key, q.by.unwrap_or(1)).await?;
    Ok(Json(serde_json::json!({ "value": value })).into_response())
}
