//! The config KV over HTTP. A PUT or DELETE is acknowledged only once
//! [`crate::mesh::MeshHandle::write`] says it is durable and released to
//! peers; reads come from the mesh's read view.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use myco_proto::api::KvWritten;
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
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/kv/{key}", tag = "kv", params(("key" = String, Path, description = "The key (may contain `/`)")), responses((status = 200, description = "The raw value; its version in `x-myco-version`", content_type = "application/octet-stream", body = Vec<u8>), (status = 404, description = "No such key", body = myco_proto::api::ApiError))))]
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
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(put, path = "/v1/kv/{key}", tag = "kv", params(("key" = String, Path, description = "The key (may contain `/`)")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value, at most 64 KiB"), responses((status = 200, body = KvWritten), (status = 413, description = "Value too large", body = myco_proto::api::ApiError))))]
pub async fn put(
    State(s): State<ApiState>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    write(&s, key, Some(body.to_vec())).await
}

/// `DELETE /v1/kv/{key}`.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(delete, path = "/v1/kv/{key}", tag = "kv", params(("key" = String, Path, description = "The key (may contain `/`)")), responses((status = 200, body = KvWritten))))]
pub async fn delete(
    State(s): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Response, HttpError> {
    write(&s, key, None).await
}

/// Query of `GET /v1/kv`.
#[derive(Deserialize)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::IntoParams))]
#[cfg_attr(any(test, feature = "openapi"), into_params(parameter_in = Query))]
pub struct ListQuery {
    /// Only keys that start with this.
    #[serde(default)]
    prefix: String,
    /// Most entries in the page (default 1000, at most 10000).
    limit: Option<usize>,
    /// The `next` of the page before.
    cursor: Option<String>,
}

/// Entries one page holds by default.
pub const DEFAULT_PAGE: usize = 1000;
/// Bytes of JSON one page holds at most (at least one entry is always sent;
/// a value is at most 64 KiB, so one entry is never near this).
pub const PAGE_BYTES: usize = 4 << 20;
/// Listings built at once; more wait their turn, so memory for listings is
/// at most this many pages whatever the number of callers.
pub const LISTINGS_AT_ONCE: usize = 4;

static LISTINGS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(LISTINGS_AT_ONCE);

/// `GET /v1/kv?prefix=P[&limit=N][&cursor=C]`: one page,
/// `{"entries": [...], "next": C or null}`. A page ends at `limit` entries
/// (default [`DEFAULT_PAGE`], at most [`MAX_LIST`]) or [`PAGE_BYTES`] of
/// JSON, whichever first; `next` is the cursor of the page after it.
/// UTF-8 values are `value`, others `value_base64`. The page is encoded
/// straight from the read view, entry by entry, with nothing copied.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/kv", tag = "kv", params(ListQuery), responses((status = 200, body = myco_proto::api::KvPage), (status = 400, description = "Bad query string or cursor", body = myco_proto::api::ApiError))))]
pub async fn list(
    State(s): State<ApiState>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, HttpError> {
    let q = super::errors::query(q)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_LIST);
    let after = match &q.cursor {
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    HttpError::bad_request("cursor is not one this API gave: pass the `next` of the previous page as is")
                })?,
        ),
        None => None,
    };
    let _turn = LISTINGS.acquire().await.expect("never closed");
    let view = s.mesh.view();
    // Encoding 4 MiB is CPU work: off the async workers' hands.
    let body = tokio::task::spawn_blocking(move || page(&view, &q.prefix, after.as_deref(), limit))
        .await
        .map_err(|e| {
            HttpError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("listing failed: {e}"),
            )
        })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// Encodes one page as JSON.
fn page(view: &crate::mesh::ReadView, prefix: &str, after: Option<&str>, limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(b"{\"entries\":[");
    let mut n = 0usize;
    let mut last: Option<String> = None;
    let mut item = Vec::new();
    let more = view.visit(Table::KV, prefix, after, |key, e| {
        if n == limit {
            return false;
        }
        item.clear();
        let raw = e.value.as_deref().unwrap_or_default();
        let (value, value_base64) = match std::str::from_utf8(raw) {
            Ok(text) => (Some(text), None),
            Err(_) => (None, Some(STANDARD.encode(raw))),
        };
        let entry = EntryRef {
            key,
            value,
            value_base64,
            version: e.ts.to_string(),
        };
        serde_json::to_writer(&mut item, &entry).expect("entries serialize");
        if n > 0 && out.len() + item.len() + 64 > PAGE_BYTES {
            return false;
        }
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&item);
        n += 1;
        last = Some(key.to_string());
        true
    });
    out.extend_from_slice(b"],\"next\":");
    match last.filter(|_| more) {
        Some(k) => {
            serde_json::to_writer(&mut out, &URL_SAFE_NO_PAD.encode(k)).expect("strings serialize")
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    out
}

/// [`myco_proto::api::KvEntry`] borrowing from the view.
#[derive(serde::Serialize)]
struct EntryRef<'a> {
    key: &'a str,
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    version: String,
}
