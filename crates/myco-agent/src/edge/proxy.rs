//! The proxy itself: one request in, one instance chosen, the request
//! forwarded with its body streamed, the answer streamed back.
//!
//! A request that failed to connect (refused, unreachable, connect timeout),
//! or an idempotent one whose connection broke, is sent once more to
//! another instance when its body can be sent again: no body, or a small
//! one with a declared length, which is read first ([`RETRY_BODY_MAX`]). A
//! larger body streams straight through and is never retried. Errors are JSON: 404 unknown job, 503 no ready instance,
//! 502 the instances failed, 504 no answer in time, 508 a loop.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{Response, StatusCode};

use myco_proto::job::Balance;

use super::balance::{self, Upstream};
use super::body::Held;
use super::metrics::{JobMetrics, UpstreamError};
use super::rewrite::{self, PathOrWhole, REQUEST_ID};
use super::routes::Routes;
use super::{send, tunnel};
use crate::net::serve::ConnInfo;
use tracing::Instrument;

/// Largest request body read whole before sending, so that a connect
/// failure can be retried on another instance.
pub const RETRY_BODY_MAX: u64 = 64 * 1024;
/// Longest wait for an instance's response head (both paths).
pub use myco_edge_wire::RESPONSE_TIMEOUT;

/// What every edge request shares.
pub struct EdgeState {
    /// The published route table.
    pub routes: Routes,
    /// The keep-alive pool to instances (local, or direct on trusted LANs).
    pub pool: super::pool::Pool,
    /// This edge's `Via` entry (`1.1 myco-<node id>`).
    pub via: HeaderValue,
    /// The token in `Via` that marks this edge (`myco-<node id>`).
    pub via_token: String,
    /// Open WebSocket (upgrade) tunnels.
    pub tunnels: super::tunnel::Tunnels,
    /// The pooled HTTP/2 client to other nodes' relays (`None`: no mesh).
    pub relay: Option<super::relay::RelayClient>,
    /// Take a local instance when it is as good as the balancer's choice.
    pub prefer_local: bool,
}

/// The 503's words when a job has no ready instance (both paths).
pub(crate) fn no_ready(job: &str, stopped: bool) -> String {
    if stopped {
        format!("job {job:?} is stopped")
    } else {
        format!("job {job:?} has no ready instance right now; retry shortly")
    }
}

/// The JSON body of every edge error answer, on both paths: `error`, and
/// `job` when the request named one.
pub(crate) fn error_body(msg: &str, job: Option<&str>) -> String {
    match job {
        Some(j) => serde_json::json!({ "error": msg, "job": j }),
        None => serde_json::json!({ "error": msg }),
    }
    .to_string()
}

/// A JSON error answer.
fn error(status: StatusCode, msg: &str, job: Option<&str>) -> Response<Body> {
    let mut r = Response::new(Body::from(error_body(msg, job)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

thread_local! {
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new(getrandom::u64().unwrap_or(0x853c_49e6_748f_ea9b) | 1);
}

/// A fast per-thread random number (xorshift64*): balancing and request
/// ids need spread, not secrecy.
pub(crate) fn random() -> u64 {
    RNG.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// A fresh request id: 32 hex digits (the API's requests use it too).
/// Not through `format!`: that costs a formatter per request.
pub(crate) fn fresh_id() -> String {
    let mut id = String::with_capacity(32);
    fresh_id_into(&mut id);
    id
}

/// A fresh request id appended to `id` (the fast path reuses one buffer).
pub(crate) fn fresh_id_into(id: &mut String) {
    myco_edge_wire::head::push_hex_id(id, random(), random());
}

/// The request body, as it can be sent: once (streamed) or again (read).
enum Payload {
    Again(Bytes),
    Once(Option<Body>),
}

impl Payload {
    fn take(&mut self) -> Option<Body> {
        match self {
            Payload::Again(b) => Some(Body::from(b.clone())),
            Payload::Once(b) => b.take(),
        }
    }
}

/// Reads the body first when it is small and of a known length, so it can
/// be sent twice. Returns `None` if reading failed (the server answers
/// 408/413).
///
/// The length is the body's own (hyper's framing: `Content-Length`, an
/// empty body, or unknown for chunked HTTP/1.1 and for HTTP/2 DATA frames
/// without a length), not the headers': hop-by-hop headers such as
/// `Transfer-Encoding` are gone by the time this runs, and a body judged
/// empty from what was left would be dropped.
async fn payload(body: Body) -> Option<Payload> {
    match http_body::Body::size_hint(&body).exact() {
        Some(n) if n <= RETRY_BODY_MAX => Some(Payload::Again(
            axum::body::to_bytes(body, n as usize).await.ok()?,
        )),
        _ => Some(Payload::Once(Some(body))),
    }
}

/// The handler for every request on the edge. Everything it logs is in
/// a span carrying the request id (the client's `X-Request-Id`, or a fresh
/// one, which the upstream then receives too) and, once known, the job.
pub async fn handle(State(edge): State<Arc<EdgeState>>, mut req: Request) -> Response<Body> {
    let id = rewrite::request_id(req.headers_mut(), fresh_id);
    // At debug, like the access log line: an info span is made for every
    // request (the subscriber formats its fields and keeps it in its
    // registry), about 5% of the edge's CPU in a profile under load, for
    // the rare info line a request logs (ejections, which name the
    // instance anyway).
    let span = tracing::debug_span!(
        "edge",
        request_id = id.to_str().unwrap_or_default(),
        job = tracing::field::Empty
    );
    let mut r = forward(edge, req).instrument(span).await;
    // Answers made here (404, 400, 508) carry the id as proxied ones do.
    if !r.headers().contains_key(REQUEST_ID) {
        r.headers_mut().insert(REQUEST_ID, id);
    }
    r
}

async fn forward(edge: Arc<EdgeState>, mut req: Request) -> Response<Body> {
    let started = Instant::now();
    let routes = edge.routes.load();
    let upgrade = tunnel::wanted(req.headers());
    let mut client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // HTTP/2 clients name the host in the URI (`:authority`), not `Host`:
    // the same for routing, and for the instance (which speaks HTTP/1.1).
    if !parts.headers.contains_key(header::HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    // A HeaderValue clone shares its bytes: no copy of the host.
    let host = parts.headers.get(header::HOST).cloned();
    let mut host = host.as_ref().and_then(|v| v.to_str().ok());
    // Host names are case-insensitive and job names lowercase: a copy
    // only for the rare host with capitals.
    let lowered;
    if let Some(h) = host
        && h.bytes().any(|c| c.is_ascii_uppercase())
    {
        lowered = h.to_ascii_lowercase();
        host = Some(&lowered);
    }
    let root = PathAndQuery::from_static("/");
    let pq = parts.uri.path_and_query().unwrap_or(&root).clone();
    let Some(target) = rewrite::target(host, &pq, |j| routes.jobs.contains_key(j)) else {
        return error(
            StatusCode::NOT_FOUND,
            "no job named: use http://EDGE/<job>/... or Host: <job>",
            None,
        );
    };
    let job = target.job;
    tracing::Span::current().record("job", job);
    let Some(entry) = routes.jobs.get(job) else {
        tracing::debug!(job, "edge: no such job");
        return error(
            StatusCode::NOT_FOUND,
            &format!("no job {job:?} in the mesh; `myco jobs` lists them"),
            Some(job),
        );
    };
    let m = &entry.metrics;
    m.request();
    if rewrite::is_loop(&parts.headers, &edge.via_token) {
        let r = error(
            StatusCode::LOOP_DETECTED,
            "this request already passed through this edge (Via): a routing loop",
            Some(job),
        );
        m.response(508, started.elapsed());
        return r;
    }
    let request_id = rewrite::request_id(&mut parts.headers, fresh_id);
    if entry.ready.is_empty() {
        let msg = no_ready(job, entry.stopped);
        tracing::debug!(job, "edge: no ready instance");
        return finish(
            m,
            started,
            error(StatusCode::SERVICE_UNAVAILABLE, &msg, Some(job)),
            &request_id,
            &edge.via,
        );
    }
    rewrite::strip_hop_by_hop(&mut parts.headers);
    let mut slot = None;
    if let Some(protocol) = upgrade {
        slot = edge.tunnels.slot();
        if slot.is_none() {
            let msg = format!(
                "this edge has {} tunnels open, its limit; retry shortly",
                tunnel::MAX_TUNNELS
            );
            return finish(
                m,
                started,
                error(StatusCode::SERVICE_UNAVAILABLE, &msg, Some(job)),
                &request_id,
                &edge.via,
            );
        }
        tunnel::restore(&mut parts.headers, protocol);
    }
    let peer = parts.extensions.get::<ConnInfo>().map(|c| c.peer.ip());
    if let Some(ip) = peer {
        rewrite::add_forwarding(&mut parts.headers, ip, &edge.via);
    }
    let path = match &target.path {
        PathOrWhole::Whole => pq.clone(),
        PathOrWhole::Stripped(p) => match PathAndQuery::try_from(p.as_str()) {
            Ok(p) => p,
            Err(_) => return error(StatusCode::BAD_REQUEST, "the path is not valid", Some(job)),
        },
    };
    let Some(mut payload) = payload(body).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
            Some(job),
        );
    };
    let now_ms = || edge.routes.now_ms();
    let mut tried: Option<&Arc<Upstream>> = None;
    let mut last = UpstreamError::Connect;
    for attempt in 0..2 {
        let exclude = tried.map(|u| &**u);
        let chosen = match entry.balance {
            Balance::RoundRobin => {
                balance::round_robin(&entry.ready, exclude, now_ms(), &entry.turn)
            }
            Balance::LeastRequests | Balance::PreferLocal => {
                balance::pick(&entry.ready, exclude, now_ms(), &mut random)
            }
        };
        let Some(mut up) = chosen else {
            break;
        };
        // The node's `--edge-prefer-local` applies to jobs that chose no
        // other way; a job that asked for round robin gets round robin.
        let local_first = match entry.balance {
            Balance::PreferLocal => true,
            Balance::LeastRequests => edge.prefer_local,
            Balance::RoundRobin => false,
        };
        if local_first {
            up = balance::prefer_local(&entry.ready, up, exclude, now_ms());
        }
        if attempt > 0 && !m.retry_allowed() {
            tracing::debug!(job, "edge: retry budget spent; not retrying");
            break;
        }
        let Some(body) = payload.take() else { break };
        if attempt > 0 {
            m.retry();
        }
        // A fresh head each time: the request's extensions stay here, and
        // the pool speaks HTTP/1.1 to instances whatever the client spoke.
        let mut out = axum::http::Request::new(body);
        *out.method_mut() = parts.method.clone();
        *out.headers_mut() = parts.headers.clone();
        let guard = up.begin();
        m.in_flight(1);
        // `to_relay` feeds an upgrade's tunnel through the relay.
        let (sent, mut to_relay) = send::once(&edge, up, job, &path, out, slot.is_some()).await;
        let failure = match sent {
            Ok(resp) => {
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let (Some(client), Some(slot)) = (client_upgrade.take(), slot.take())
                {
                    up.succeeded();
                    let held = Held::new(guard, m.clone());
                    let resp = tunnel::splice(resp, client, slot, held);
                    return finish(m, started, resp, &request_id, &edge.via);
                }
                if resp
                    .headers()
                    .contains_key(super::relay_tunnel::RELAY_UPGRADE)
                    && let (Some(client), Some(slot), Some(to)) =
                        (client_upgrade.take(), slot.take(), to_relay.take())
                {
                    up.succeeded();
                    let held = Held::new(guard, m.clone());
                    let resp = super::relay_tunnel::splice(resp, client, to, slot, held);
                    return finish(m, started, resp, &request_id, &edge.via);
                }
                if resp.status().is_server_error() {
                    note_failure(up, m, now_ms());
                } else {
                    up.succeeded();
                }
                tracing::debug!(request_id = ?request_id, job, instance = %up.instance,
                    status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "edge request");
                let (mut head, incoming) = resp.into_parts();
                rewrite::strip_hop_by_hop(&mut head.headers);
                let body = Held::new(guard, m.clone()).body(incoming);
                return finish(
                    m,
                    started,
                    Response::from_parts(head, body),
                    &request_id,
                    &edge.via,
                );
            }
            Err(failure) => failure,
        };
        m.in_flight(-1);
        drop(guard);
        m.upstream_error(failure);
        note_failure(up, m, now_ms());
        tracing::debug!(request_id = ?request_id, job, instance = %up.instance, error = failure.as_str(), "edge upstream failed");
        last = failure;
        tried = Some(up);
        if !may_retry(failure, &parts.method) {
            break;
        }
    }
    let resp = match last {
        UpstreamError::Timeout => error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("no instance of {job:?} answered in time"),
            Some(job),
        ),
        _ => error(
            StatusCode::BAD_GATEWAY,
            &format!("the instances of {job:?} could not be reached"),
            Some(job),
        ),
    };
    finish(m, started, resp, &request_id, &edge.via)
}

/// Whether a request that failed this way may go to another instance (if
/// its body can be sent again). A failed connect sent nothing; a broken
/// connection (often a pooled one the instance closed as it died) may have
/// delivered the request, so only idempotent methods go again; a timeout
/// means the instance may still be working on it.
fn may_retry(failure: UpstreamError, method: &axum::http::Method) -> bool {
    match failure {
        UpstreamError::Connect => true,
        UpstreamError::Protocol => method.is_idempotent(),
        UpstreamError::Timeout => false,
    }
}

fn note_failure(up: &Upstream, m: &JobMetrics, now_ms: u64) {
    if up.failed(now_ms) {
        m.ejection();
        tracing::info!(instance = %up.instance, addr = %up.addr, "edge: instance ejected after consecutive failures");
    }
}

/// Counts the answer and sets the headers every answer carries.
fn finish(
    m: &JobMetrics,
    started: Instant,
    mut resp: Response<Body>,
    request_id: &HeaderValue,
    via: &HeaderValue,
) -> Response<Body> {
    m.response(resp.status().as_u16(), started.elapsed());
    let h = resp.headers_mut();
    h.insert(REQUEST_ID, request_id.clone());
    h.append(header::VIA, via.clone());
    resp
}
