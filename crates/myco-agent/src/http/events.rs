//! `GET /v1/events`: server-sent events of state and membership changes,
//! through the bounded [`super::sse::SseHub`]: a subscriber cap, a bounded
//! queue per subscriber (a subscriber that falls behind gets
//! `{"type":"lagged","missed":N}` and continues), stalled readers
//! disconnected, and a keep-alive comment on a quiet stream.

use axum::Extension;
use axum::extract::State;
use axum::response::Response;

use super::ApiState;
use crate::net::serve::ConnInfo;

/// The handler.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/v1/events", tag = "events", responses((status = 200, description = "Server-sent events, each `data:` an ApiEvent", content_type = "text/event-stream", body = myco_proto::api::ApiEvent), (status = 503, description = "Too many subscribers", body = myco_proto::api::ApiError))))]
pub async fn events(State(s): State<ApiState>, conn: Option<Extension<ConnInfo>>) -> Response {
    s.front
        .events
        .subscribe(s.mesh.subscribe(), conn.map(|Extension(c)| c))
}
