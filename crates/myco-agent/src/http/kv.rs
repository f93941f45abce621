//! The config KV over HTTP. A PUT or DELETE is acknowledged only once
//! [`crate::mesh::MeshHandle::write`] says it is durable and released to
//! peers; reads come from the mesh's read view.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use myco_proto::api::{KvEntry, KvWritten};
use myco_proto::{Table, Timestamp};
use serde::Deserialize;

use super::ApiState;
use super::errors::HttpError;

/// The response header carrying a key's version.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-myco-version");
/// Most entries one listing returns.
pub const MAX_LIST: usize = 10_000;

fn version_header(ts: &Timestamp) -> (HeaderName, HeaderValue) {
    (
        VERSION_HEADER,
        HeaderValue::from_str(&ts.to_string()).expect("versions are ASCII"),
    )
}

/// `GET /v1/kv/{key}`: the raw value.
pub async fn get(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Response, HttpError> {
    let entry = s
        .mesh
        .get(Table::KV, &key)
        .ok_or_else(|| HttpError::not_found(format!("no key {key:?}")))?;
    let headers = [
        version_header(&entry.ts),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        ),
    ];
    Ok((headers, entry.value.unwrap_or_default()).into_response())
}

async fn write(s: &ApiState, key: String, value: Option<Vec<u8>>) -> Result<Response, HttpError> {
    let deleted = value.is_none();
    let ts = s.mesh.write(Table::KV, &key, value).await?;
    let body = KvWritten {
        key,
        version: ts.to_string(),
        deleted,
    };
    Ok(([version_header(&ts)], Json(body)).into_response())
}

/// `PUT /v1/kv/{key}`: the body is the value.
pub async fn put(
    State(s): State<ApiState>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    write(&s, key, Some(body.to_vec())).await
}

/// `DELETE /v1/kv/{key}`.
pub async fn delete(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Response, HttpError> {
    write(&s, key, None).await
}

/// Query of `GET /v1/kv`.
#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

/// `GET /v1/kv?prefix=P`.
pub async fn list(State(s): State<ApiState>, Query(q): Query<ListQuery>) -> Json<Vec<KvEntry>> {
    let limit = q.limit.unwrap_or(MAX_LIST).min(MAX_LIST);
    let found = s.mesh.scan(Table::KV, &q.prefix, limit);
    Json(
        found
            .into_iter()
            .map(|(key, e)| {
                let raw = e.value.unwrap_or_default();
                let (value, value_base64) = match String::from_utf8(raw) {
                    Ok(text) => (Some(text), None),
                    Err(bad) => (
                        None,
                        Some(base64::engine::general_purpose::STANDARD.encode(bad.into_bytes())),
                    ),
                };
                KvEntry {
                    key,
                    value,
                    value_base64,
                    version: e.ts.to_string(),
                }
            })
            .collect(),
    )
}
