//! The config KV and the event stream over HTTP.
//!
//! A PUT is acknowledged only after the store reports the write durable
//! (fsynced); the mesh loop has already applied it, and sends it to peers
//! once told it is durable (write-ahead: nothing leaves a node before its
//! own disk has it).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response, Sse as SseResponse};
use base64::Engine;
use myco_core::{Entry, WriteError};
use myco_proto::api::{ApiEvent, KvEntry, KvWritten};
use myco_proto::{Change, Table};
use serde::Deserialize;
use tokio::sync::{broadcast, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::api::{ApiState, error};
use crate::mesh::Command;

/// The response header carrying a key's version.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-myco-version");
/// Most entries one listing returns.
pub const MAX_LIST: usize = 10_000;

async fn ask<T>(
    s: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    let (tx, rx) = oneshot::channel();
    let unavailable = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent is shutting down; try another node",
        )
    };
    s.commands.send(make(tx)).await.map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

fn version_header(entry: &Entry) -> (HeaderName, HeaderValue) {
    (
        VERSION_HEADER,
        HeaderValue::from_str(&entry.ts.to_string()).expect("versions are ASCII"),
    )
}

/// `GET /v1/kv/{key}`: the raw value.
pub async fn get(State(s): State<ApiState>, Path(key): Path<String>) -> Response {
    match ask(&s, |reply| Command::Get {
        table: Table::KV,
        key: key.clone(),
        reply,
    })
    .await
    {
        Ok(Some(entry)) => {
            let value = entry.value.clone().unwrap_or_default();
            (
                [
                    version_header(&entry),
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    ),
                ],
                value,
            )
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no key {key:?}")),
        Err(r) => r,
    }
}

/// Writes a key of any table and waits until it is durable, then lets
/// the node send it to peers; the error is the HTTP answer to give. Every
/// write of the agent (KV, spores index, trust table) goes through here.
pub(crate) async fn write_durable(
    s: &ApiState,
    table: Table,
    key: &str,
    value: Option<Vec<u8>>,
) -> Result<Change, Response> {
    let change = match ask(s, |reply| Command::Write {
        table,
        key: key.to_string(),
        value,
        reply,
    })
    .await?
    {
        Ok(change) => change,
        Err(e @ WriteError::ValueTooLarge { .. }) => {
            return Err(error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()));
        }
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, e.to_string())),
    };
    if let Err(e) = s.store.persist(vec![change.clone()]).await {
        tracing::error!(error = %e, key = %key, "write not durable");
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the write was not made durable: {e}"),
        ));
    }
    // Fire and forget: if the loop is gone the agent is stopping, and the
    // write is on disk, so it spreads from there after a restart.
    if s.commands
        .send(Command::Durable(vec![change.ts]))
        .await
        .is_err()
    {
        tracing::debug!(key = %key, "durable write not released: the mesh loop stopped");
    }
    Ok(change)
}

/// Scans a table under a prefix.
pub(crate) async fn scan(
    s: &ApiState,
    table: Table,
    prefix: &str,
    limit: usize,
) -> Result<Vec<(String, Entry)>, Response> {
    ask(s, |reply| Command::Scan {
        table,
        prefix: prefix.to_string(),
        limit,
        reply,
    })
    .await
}

async fn write(s: &ApiState, key: String, value: Option<Vec<u8>>) -> Response {
    let deleted = value.is_none();
    let change = match write_durable(s, Table::KV, &key, value).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let version = change.ts.to_string();
    let header = (
        VERSION_HEADER,
        HeaderValue::from_str(&version).expect("versions are ASCII"),
    );
    (
        [header],
        Json(KvWritten {
            key,
            version,
            deleted,
        }),
    )
        .into_response()
}

/// `PUT /v1/kv/{key}`: the body is the value.
pub async fn put(State(s): State<ApiState>, Path(key): Path<String>, body: Bytes) -> Response {
    write(&s, key, Some(body.to_vec())).await
}

/// `DELETE /v1/kv/{key}`.
pub async fn delete(State(s): State<ApiState>, Path(key): Path<String>) -> Response {
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
pub async fn list(State(s): State<ApiState>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(MAX_LIST).min(MAX_LIST);
    match ask(&s, |reply| Command::Scan {
        table: Table::KV,
        prefix: q.prefix.clone(),
        limit,
        reply,
    })
    .await
    {
        Ok(found) => Json(
            found
                .into_iter()
                .map(|(key, e)| {
                    let raw = e.value.unwrap_or_default();
                    let (value, value_base64) = match String::from_utf8(raw) {
                        Ok(text) => (Some(text), None),
                        Err(bad) => (
                            None,
                            Some(
                                base64::engine::general_purpose::STANDARD.encode(bad.into_bytes()),
                            ),
                        ),
                    };
                    KvEntry {
                        key,
                        value,
                        value_base64,
                        version: e.ts.to_string(),
                    }
                })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(r) => r,
    }
}

/// `GET /v1/events`: server-sent events of state and membership changes.
/// A subscriber that falls more than the buffer behind gets a `lagged`
/// event with the count it missed, then continues.
pub async fn events(
    State(s): State<ApiState>,
) -> SseResponse<impl tokio_stream::Stream<Item = Result<Sse, Infallible>>> {
    let stream = BroadcastStream::new(s.events.subscribe()).map(|item| {
        let event = match item {
            Ok(e) => e,
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                std::sync::Arc::new(ApiEvent::Lagged { missed })
            }
        };
        let kind = match event.as_ref() {
            ApiEvent::State { .. } => "state",
            ApiEvent::Member { .. } => "member",
            ApiEvent::Lagged { .. } => "lagged",
        };
        Ok(Sse::default()
            .event(kind)
            .json_data(event.as_ref())
            .expect("events serialize"))
    });
    SseResponse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// Keeps the broadcast type in one place for the router.
pub type EventSender = broadcast::Sender<std::sync::Arc<ApiEvent>>;
