//! Request ids on the API, as on the edge: the client's `X-Request-Id`
//! (if short printable ASCII) or a fresh one, returned on the answer, and
//! a span carrying it around the handler, so every line the request logs
//! (a deploy's "job written", an error) names it. Work the request hands
//! to other tasks (the mesh loop's write, the job runtime's starts) logs
//! in those tasks' own spans: the id stops at the handoff.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::edge::rewrite::{REQUEST_ID, request_id};

/// The middleware: outermost, so every answer carries the id.
pub async fn layer(mut req: Request, next: Next) -> Response {
    // The edge's per-thread generator: no system call per request.
    let id = request_id(req.headers_mut(), crate::edge::proxy::fresh_id);
    let span = tracing::info_span!(
        "api",
        request_id = id.to_str().unwrap_or_default(),
        method = %req.method(),
        path = req.uri().path(),
    );
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "api request"
        );
    });
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}
