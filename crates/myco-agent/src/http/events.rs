//! `GET /v1/events`: server-sent events of state and membership changes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Sse as SseResponse;
use axum::response::sse::{Event as Sse, KeepAlive};
use myco_proto::api::ApiEvent;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::ApiState;

/// A subscriber that falls more than the buffer behind gets a `lagged`
/// event with the count it missed, then continues.
pub async fn events(
    State(s): State<ApiState>,
) -> SseResponse<impl tokio_stream::Stream<Item = Result<Sse, Infallible>>> {
    let stream = BroadcastStream::new(s.mesh.subscribe()).map(|item| {
        let event = match item {
            Ok(e) => e,
            Err(BroadcastStreamRecvError::Lagged(missed)) => Arc::new(ApiEvent::Lagged { missed }),
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
