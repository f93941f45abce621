//! One attempt of the proxy: the prepared request to the chosen instance,
//! over this node's pool (a local instance, or a remote one when direct
//! forwarding is allowed) or through the instance's node's relay.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::http::uri::{PathAndQuery, Scheme, Uri};
use axum::http::{Request, Response};
use tokio::sync::mpsc;

use super::balance::{Hop, Upstream};
use super::metrics::UpstreamError;
use super::pool::SendError;
use super::proxy::{EdgeState, RESPONSE_TIMEOUT};

/// Sends `out` (method and headers set) for `path` to `up`, waiting at
/// most [`RESPONSE_TIMEOUT`] for the head. With `upgrade`, a request that
/// goes through the relay carries its tunnel as one stream whose bodies
/// hold the bytes (`relay_tunnel`): the sender of ours comes back too.
pub async fn once(
    edge: &EdgeState,
    up: &Upstream,
    job: &str,
    path: &PathAndQuery,
    mut out: Request<Body>,
    upgrade: bool,
) -> (
    Result<Response<Body>, UpstreamError>,
    Option<mpsc::Sender<Bytes>>,
) {
    let relay = match (&up.hop, &edge.relay) {
        (Hop::Relay(node), Some(relay)) => Some((node, relay)),
        _ => None,
    };
    let Some((node, relay)) = relay else {
        // Origin-form: the pool's connection is to the instance.
        *out.uri_mut() = Uri::from(path.clone());
        let sent = timed(edge.pool.send(local_addr(up), out), SendError::is_connect).await;
        let result = sent.map(|resp| resp.map(Body::new));
        return (result, None);
    };
    *out.uri_mut() = uri_at(node.clone(), path);
    if let Some(v) = super::relay::relay_to(job, &up.instance) {
        out.headers_mut().insert(super::relay::RELAY_TO, v);
    }
    let mut to_relay = None;
    if upgrade && let Some(protocol) = out.headers_mut().remove(header::UPGRADE) {
        out.headers_mut().remove(header::CONNECTION);
        out.headers_mut()
            .insert(super::relay_tunnel::RELAY_UPGRADE, protocol);
        let (tx, body) = super::relay_tunnel::pipe();
        *out.body_mut() = body;
        to_relay = Some(tx);
    }
    let sent = timed(
        relay.request(out),
        hyper_util::client::legacy::Error::is_connect,
    )
    .await;
    let result = sent.and_then(|resp| match super::relay::reported_failure(&resp) {
        Some(failure) => Err(failure),
        None => Ok(resp.map(Body::new)),
    });
    (result, to_relay)
}

/// Waits at most [`RESPONSE_TIMEOUT`] for the answer's head; a failure as
/// the kind the metrics and the retry rule know (a connect failure sent
/// nothing, so another instance may be tried). Every path to an instance
/// (this node's pool, the relay, the relaying side) classifies with it.
pub async fn timed<R, E: std::error::Error>(
    sent: impl std::future::Future<Output = Result<R, E>>,
    is_connect: impl FnOnce(&E) -> bool,
) -> Result<R, UpstreamError> {
    match tokio::time::timeout(RESPONSE_TIMEOUT, sent).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, source = ?e.source(), "edge: a request to an instance failed");
            Err(if is_connect(&e) {
                UpstreamError::Connect
            } else {
                UpstreamError::Protocol
            })
        }
        Err(_) => Err(UpstreamError::Timeout),
    }
}

/// Where the pool connects for `up`: loopback for a local instance (it
/// may listen there only), its address otherwise.
fn local_addr(up: &Upstream) -> std::net::SocketAddr {
    match up.hop {
        Hop::Local => std::net::SocketAddr::from(([127, 0, 0, 1], up.addr.port())),
        _ => up.addr,
    }
}

/// `http://AUTHORITY/PATH`: the relay's client routes by the authority
/// (the node id).
fn uri_at(authority: axum::http::uri::Authority, path: &PathAndQuery) -> Uri {
    let mut parts = axum::http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path.clone());
    Uri::from_parts(parts).unwrap_or_default()
}
