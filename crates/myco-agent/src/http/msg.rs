//! App messaging over HTTP: `POST /v1/msg/{topic}` (publish; `?node=ID`
//! for one node's subscribers), `GET /v1/msg/{topic}` (subscribe:
//! server-sent events), `POST /v1/msg/{topic}/request?timeout_ms=N`
//! (request/reply: 503 no subscriber anywhere, 504 no answer in time),
//! `POST /v1/replies/{id}` (a subscriber's answer).
//!
//! Each event's data is JSON `{"topic", "body" (UTF-8) or "body_base64",
//! "from", "reply" (requests only)}`. A subscriber whose queue overflowed
//! gets an event named `lost` with `{"lost": N}` before the next message.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use myco_proto::msg::Published;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ApiState;
use super::errors::HttpError;
use crate::msg::{Delivery, MsgError};

/// Events queued between a subscription and its connection.
const EVENTS_AHEAD: usize = 16;
/// How often a quiet subscription checks for lost messages to report.
const LOST_CHECK: Duration = Duration::from_secs(1);
/// Default wait of a request.
const DEFAULT_TIMEOUT_MS: u64 = 5000;

impl From<MsgError> for HttpError {
    fn from(e: MsgError) -> HttpError {
        let code = match &e {
            MsgError::Topic(_) => StatusCode::BAD_REQUEST,
            MsgError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            MsgError::NoSubscriber(_) | MsgError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            MsgError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            MsgError::NoRequest(_) => StatusCode::NOT_FOUND,
        };
        HttpError::new(code, e.to_string())
    }
}

/// The event data of one delivery.
pub fn event_json(d: &Delivery) -> serde_json::Value {
    let mut v = serde_json::json!({"topic": d.topic, "from": d.from.to_string()});
    match std::str::from_utf8(&d.body) {
        Ok(text) => v["body"] = text.into(),
        Err(_) => v["body_base64"] = STANDARD.encode(&d.body).into(),
    }
    if let Some(r) = &d.reply {
        v["reply"] = r.clone().into();
    }
    v
}

/// Query of a publish.
#[derive(Deserialize)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::IntoParams))]
#[cfg_attr(any(test, feature = "openapi"), into_params(parameter_in = Query))]
pub struct PublishQuery {
    /// Only this node's subscribers (node id or name).
    node: Option<String>,
}

/// `POST /v1/msg/{topic}`: `{"nodes": N, "receivers": M}`, the nodes it
/// was sent to and the subscribers it reached.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/msg/{topic}", tag = "msg", params(("topic" = String, Path, description = "The topic: 1 to 128 of a-z A-Z 0-9 . _ - :"), PublishQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The message body, at most 256 KiB"), responses((status = 200, description = "The nodes it was sent to and the subscribers it reached", body = Published), (status = 400, description = "Bad topic or query string", body = myco_proto::api::ApiError), (status = 401, description = "Missing or wrong token", body = myco_proto::api::ApiError), (status = 404, description = "No such node", body = myco_proto::api::ApiError), (status = 413, description = "Body too large", body = myco_proto::api::ApiError))))]
pub async fn publish(
    State(s): State<ApiState>,
    Path(topic): Path<String>,
    q: Result<Query<PublishQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let q = super::errors::query(q)?;
    let only = match q.node {
        Some(n) => Some(node_of(&s, &n)?),
        None => None,
    };
    let reach = s.msg.publish(&topic, body.to_vec(), only)?;
    Ok(Json(Published {
        nodes: reach.nodes,
        receivers: reach.receivers,
    })
    .into_response())
}

/// A node named by id or name.
fn node_of(s: &ApiState, which: &str) -> Result<myco_proto::NodeId, HttpError> {
    s.mesh
        .snapshot()
        .members
        .iter()
        .find(|m| {
            m.peer.id.to_string() == which || m.manifest.as_ref().is_some_and(|f| f.name == which)
        })
        .map(|m| m.peer.id)
        .ok_or_else(|| HttpError::not_found(format!("no node {which:?} in the mesh")))
}

/// `GET /v1/msg/{topic}`: server-sent events, one per message.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/msg/{topic}", tag = "msg", params(("topic" = String, Path, description = "The topic: 1 to 128 of a-z A-Z 0-9 . _ - :")), responses((status = 200, description = "Server-sent events, one per message; each `data:` is JSON `{\"topic\", \"body\" (UTF-8) or \"body_base64\", \"from\" (node id), \"reply\" (requests only)}`; an event named `lost` carries `{\"lost\": N}` after an overflow", content_type = "text/event-stream", body = String), (status = 400, description = "Bad topic", body = myco_proto::api::ApiError), (status = 503, description = "Too many subscribers on this node", body = myco_proto::api::ApiError))))]
pub async fn subscribe(
    State(s): State<ApiState>,
    Path(topic): Path<String>,
) -> Result<Response, HttpError> {
    let mut sub = s.msg.subscribe(&topic)?;
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(EVENTS_AHEAD);
    tokio::spawn(async move {
        // Losses are also reported when no message follows them.
        let mut check = tokio::time::interval(LOST_CHECK);
        loop {
            tokio::select! {
                _ = check.tick() => {
                    let lost = sub.take_lost();
                    if lost > 0 {
                        let e = Event::default().event("lost").data(serde_json::json!({"lost": lost}).to_string());
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                }
                got = sub.recv() => {
                    let Some(d) = got else { return };
                    let lost = sub.take_lost();
                    if lost > 0 {
                        let e = Event::default().event("lost").data(serde_json::json!({"lost": lost}).to_string());
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    let e = Event::default().data(event_json(&d).to_string());
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
                // The client went away: unsubscribe (dropping `sub`).
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Query of a request.
#[derive(Deserialize)]
#[cfg_attr(any(test, feature = "openapi"), derive(utoipa::IntoParams))]
#[cfg_attr(any(test, feature = "openapi"), into_params(parameter_in = Query))]
pub struct RequestQuery {
    /// How long to wait for the answer, in ms (default 5000).
    timeout_ms: Option<u64>,
}

/// `POST /v1/msg/{topic}/request?timeout_ms=N`: the answer's body.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/msg/{topic}/request", tag = "msg", params(("topic" = String, Path, description = "The topic: 1 to 128 of a-z A-Z 0-9 . _ - :"), RequestQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The request body, at most 256 KiB"), responses((status = 200, description = "The answer's body", content_type = "application/octet-stream", body = Vec<u8>), (status = 400, description = "Bad topic or query string", body = myco_proto::api::ApiError), (status = 401, description = "Missing or wrong token", body = myco_proto::api::ApiError), (status = 413, description = "Body too large", body = myco_proto::api::ApiError), (status = 503, description = "No subscriber anywhere, or too many requests waiting on this node", body = myco_proto::api::ApiError), (status = 504, description = "No answer in time", body = myco_proto::api::ApiError))))]
pub async fn request(
    State(s): State<ApiState>,
    Path(topic): Path<String>,
    q: Result<Query<RequestQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Response, HttpError> {
    let q = super::errors::query(q)?;
    let answer = s
        .msg
        .request(
            &topic,
            body.to_vec(),
            q.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        )
        .await?;
    Ok(answer.into_response())
}

/// `POST /v1/replies/{id}`: the body answers the request.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(post, path = "/v1/replies/{id}", tag = "msg", params(("id" = String, Path, description = "The `reply` of the request's event")), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The answer, at most 256 KiB"), responses((status = 204, description = "Handed to the requester"), (status = 401, description = "Missing or wrong token", body = myco_proto::api::ApiError), (status = 404, description = "No request waits for this id", body = myco_proto::api::ApiError), (status = 413, description = "Body too large", body = myco_proto::api::ApiError))))]
pub async fn reply(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, HttpError> {
    s.msg.reply(&id, body.to_vec())?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
