//! The edge relay: a request for an instance on another node goes to that
//! node's agent over the mesh's mutual TLS, and that agent forwards it to
//! the instance over loopback. So traffic between nodes is encrypted and
//! authenticated like the rest of the mesh, and an instance may listen on
//! `127.0.0.1` only and stay off the LAN.
//!
//! Transport: HTTP/2 over TLS 1.3 on the mesh's stream listener (the same
//! TCP port number as the UDP mesh port), told apart from the stream
//! protocol by ALPN ([`RELAY_ALPN`]), with the streams' certificates
//! derived from the cluster key: a stranger cannot connect, so a node is
//! never an open proxy. One pooled connection per peer node carries every
//! request to it at once (HTTP/2 streams); bodies stream both ways under
//! HTTP/2 flow control, never held whole.
//!
//! The origin edge chooses the instance (balancing, retries, ejection stay
//! there) and names it in [`RELAY_TO`] (`<job> <instance id>`). The relaying
//! node forwards only to an instance its own route table lists as ready or
//! draining *on this node*; anything else is refused. When it cannot reach
//! the instance it answers 502 with [`RELAY_ERROR`] naming the failure kind,
//! so the origin can retry on another instance exactly as if it had failed
//! to connect itself.
//!
//! After a key rotation, a relay connection whose peer the new ring no
//! longer trusts is closed at once, on both ends (`net::streams::KeyWatch`);
//! one whose peer shares a key with the new ring stays.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::uri::{PathAndQuery, Uri};
use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use myco_proto::id::NodeId;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower_service::Service;

use super::metrics::UpstreamError;
use super::pool::{Pool, SendError};
use super::routes::Routes;
use super::upstream::CONNECT_TIMEOUT;
use crate::net::streams::{RELAY_ALPN, RelayConn, RelayHandler, Streams};

/// Names the instance a relayed request is for: `<job> <instance id>`.
pub const RELAY_TO: HeaderName = HeaderName::from_static("myco-relay-to");
/// On a relay's own 502/504: why it could not reach the instance
/// (`connect`, `timeout`, `protocol`), so the origin classifies it.
pub const RELAY_ERROR: HeaderName = HeaderName::from_static("myco-relay-error");
/// How long an idle relay connection to a node is kept.
pub const RELAY_IDLE: Duration = Duration::from_secs(60);
/// Requests at once on one relay connection (HTTP/2 streams).
pub const MAX_STREAMS: u32 = 1024;
/// The name every leaf carries (see `net::streams::tls`).
const SERVER_NAME: &str = "myco";

/// The pooled HTTP/2 client to other nodes' relays.
pub type RelayClient = Client<RelayConnector, Body>;

/// A client whose connections go to peers' stream ports over mutual TLS.
pub fn client(streams: Streams) -> RelayClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .timer(TokioTimer::new())
        // Windows grow with the link's bandwidth-delay product: big bodies
        // are not held to HTTP/2's 64 KiB default per round trip.
        .http2_adaptive_window(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .pool_idle_timeout(RELAY_IDLE)
        .build(RelayConnector { streams })
}

/// Counters of the relay, both sides.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Requests this node relayed to one of its instances for another edge.
    pub served: AtomicU64,
    /// Relayed requests refused: no such instance on this node, or a bad
    /// `myco-relay-to`.
    pub refused: AtomicU64,
    /// Relayed requests whose instance could not be reached.
    pub failed: AtomicU64,
}

/// Connects to a peer's stream port (the URI's authority) with this ring's
/// relay TLS config.
#[derive(Clone)]
pub struct RelayConnector {
    streams: Streams,
}

impl Service<Uri> for RelayConnector {
    type Response = RelayIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RelayIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        // Taken before the config: a key change during the handshake counts.
        let keys = self.streams.watch_keys();
        let config = self.streams.relay_client_config();
        Box::pin(async move {
            let addr: SocketAddr = dst
                .authority()
                .and_then(|a| a.as_str().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no peer address"))?;
            let connect = async {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
                TlsConnector::from(config).connect(name, tcp).await
            };
            let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "relay connect timed out")
                })??;
            if tls.get_ref().1.alpn_protocol() != Some(RELAY_ALPN) {
                return Err(io::Error::other("the peer does not speak the edge relay"));
            }
            let chain = tls.get_ref().1.peer_certificates().map(<[_]>::to_vec);
            Ok(RelayIo {
                io: TokioIo::new(tls),
                revoked: Box::pin(keys.server_untrusted(chain.unwrap_or_default())),
                untrusted: false,
            })
        })
    }
}

/// A relay connection as hyper's client sees it. After a key rotation that
/// retires the key its peer was trusted under, it fails every read and
/// write, so hyper closes it and the pool drops it at once, rather than
/// when it has idled for [`RELAY_IDLE`]; the next request connects under
/// the new ring.
pub struct RelayIo {
    io: TokioIo<TlsStream<TcpStream>>,
    /// Resolves when the ring no longer trusts the peer.
    revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
    untrusted: bool,
}

impl RelayIo {
    /// Fails once the peer is no longer trusted. Polled by every read: the
    /// HTTP/2 connection task always has one waiting, so it wakes on the
    /// change even when the connection is idle.
    fn trusted(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.untrusted && self.revoked.as_mut().poll(cx).is_ready() {
            self.untrusted = true;
            tracing::debug!(
                "edge relay connection closed: its peer is not trusted after a key change"
            );
        }
        if self.untrusted {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the cluster key ring no longer trusts this relay's node",
            ));
        }
        Ok(())
    }
}

impl Connection for RelayIo {
    fn connected(&self) -> Connected {
        Connected::new().negotiated_h2()
    }
}

impl Read for RelayIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.trusted(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl Write for RelayIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.trusted(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The header value naming `instance` of `job`.
pub fn relay_to(job: &str, instance: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{job} {instance}")).ok()
}

/// The failure a relay reported on its answer, if it reported one.
pub fn reported_failure(resp: &Response<Incoming>) -> Option<UpstreamError> {
    let v = resp.headers().get(&RELAY_ERROR)?;
    Some(match v.as_bytes() {
        b"connect" => UpstreamError::Connect,
        b"timeout" => UpstreamError::Timeout,
        _ => UpstreamError::Protocol,
    })
}

/// What the relaying side needs.
struct Relaying {
    routes: Routes,
    me: NodeId,
    local: Pool,
    counters: Arc<RelayCounters>,
}

/// The handler of inbound relay connections, for
/// [`Streams::set_relay_handler`].
pub fn handler(
    routes: Routes,
    me: NodeId,
    local: Pool,
    counters: Arc<RelayCounters>,
) -> RelayHandler {
    let state = Arc::new(Relaying {
        routes,
        me,
        local,
        counters,
    });
    Arc::new(move |conn: RelayConn, from: SocketAddr| {
        let state = state.clone();
        Box::pin(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(relay_one(&state, req).await) }
            });
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .adaptive_window(true)
                .max_concurrent_streams(MAX_STREAMS)
                .keep_alive_interval(Some(Duration::from_secs(20)))
                .keep_alive_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(conn), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%from, %error, "edge relay connection ended");
            }
        })
    })
}

fn relay_error(status: StatusCode, kind: &'static str, msg: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": msg }).to_string();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(RELAY_ERROR, HeaderValue::from_static(kind));
    r
}

/// An upgrade (WebSocket) for the local instance at `addr`, counted like
/// any relayed request (see `relay_tunnel`).
async fn relay_upgrade(
    state: &Relaying,
    parts: axum::http::request::Parts,
    body: Incoming,
    addr: SocketAddr,
    protocol: HeaderValue,
    job: &str,
    instance: &str,
) -> Response<Body> {
    match super::relay_tunnel::relay(&state.local, addr, parts, body, protocol).await {
        Ok(resp) => {
            state.counters.served.fetch_add(1, Ordering::Relaxed);
            resp
        }
        Err(failure) => failed(state, failure, job, instance),
    }
}

/// The answer when the local instance failed a relayed request, counted.
fn failed(state: &Relaying, failure: UpstreamError, job: &str, instance: &str) -> Response<Body> {
    state.counters.failed.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        job,
        instance,
        error = failure.as_str(),
        "edge relay: the instance failed"
    );
    let (status, msg) = match failure {
        UpstreamError::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "the instance did not answer in time",
        ),
        _ => (StatusCode::BAD_GATEWAY, "the instance could not be reached"),
    };
    relay_error(status, failure.as_str(), msg)
}

/// Forwards one relayed request to the local instance it names.
async fn relay_one(state: &Relaying, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let named = parts.headers.remove(&RELAY_TO);
    let target = named
        .as_ref()
        .and_then(|v| v.to_str().ok()?.split_once(' '));
    let Some((job, instance)) = target else {
        state.counters.refused.fetch_add(1, Ordering::Relaxed);
        return relay_error(StatusCode::BAD_REQUEST, "protocol", "no myco-relay-to");
    };
    // Only an instance this node's table has on this node: never an open
    // proxy to any address, even for members.
    let port = {
        let routes = state.routes.load();
        routes.jobs.get(job).and_then(|e| {
            (e.ready.iter().chain(&e.draining))
                .find(|u| u.instance == instance && u.node == state.me)
                .map(|u| u.addr.port())
        })
    };
    let Some(port) = port else {
        state.counters.refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(job, instance, "edge relay: no such instance here");
        // Nothing was sent: the origin may try another instance.
        return relay_error(StatusCode::BAD_GATEWAY, "connect", "no such instance here");
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // Origin-form: the pool's connection is to the instance itself.
    let root = PathAndQuery::from_static("/");
    parts.uri = Uri::from(parts.uri.path_and_query().unwrap_or(&root).clone());
    if let Some(protocol) = parts.headers.remove(&super::relay_tunnel::RELAY_UPGRADE) {
        return relay_upgrade(state, parts, body, addr, protocol, job, instance).await;
    }
    let mut out = Request::new(Body::new(body));
    *out.method_mut() = parts.method;
    *out.uri_mut() = parts.uri;
    *out.headers_mut() = parts.headers;
    let sent = super::send::timed(state.local.send(addr, out), SendError::is_connect).await;
    match sent {
        Ok(resp) => {
            state.counters.served.fetch_add(1, Ordering::Relaxed);
            let (mut head, incoming) = resp.into_parts();
            super::rewrite::strip_hop_by_hop(&mut head.headers);
            Response::from_parts(head, Body::new(incoming))
        }
        Err(failure) => failed(state, failure, job, instance),
    }
}
