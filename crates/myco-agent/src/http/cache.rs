//! Cache buckets over HTTP: `PUT/GET /v1/cache/{bucket}` (the config),
//! `GET/PUT/DELETE /v1/cache/{bucket}/{key}` (entries, raw values;
//! `?ttl_ms=N` on PUT overrides the bucket's TTL), `GET /v1/cache` (the
//! buckets). Handlers only translate; [`crate::cache::Cache`] decides.

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
/// and bytes held, evictions, expiries, fallback reads, repairs, moves.
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
pub async fn show(
    State(s): State<ApiState>,
    Path(bucket): Path<String>,
) -> Result<Json<BucketConfig>, HttpError> {
    s.cache
        .bucket(&bucket)
        .map(Json)
        .ok_or_else(|| CacheError::NoBucket(bucket).into())
}

/// `PUT /v1/cache/{bucket}`: create or change it (JSON config; fields
/// left out take their defaults).
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
pub struct PutQuery {
    ttl_ms: Option<u64>,
}

/// `PUT /v1/cache/{bucket}/{key}`: the body is the value; answered once
/// its owners hold it.
pub async fn put(
    State(s): State<ApiState>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<PutQuery>,
    body: Bytes,
) -> Result<Response, HttpError> {
    s.cache.set(&bucket, &key, body.to_vec(), q.ttl_ms).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/cache/{bucket}/{key}`: 204 whether or not it existed.
pub async fn delete(
    State(s): State<ApiState>,
    Path((bucket, key)): Path<(String, String)>,
) -> Result<Response, HttpError> {
    s.cache.delete(&bucket, &key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
