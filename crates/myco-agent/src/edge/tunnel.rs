//! Protocol upgrades (WebSocket) passed through: the upgrade request goes
//! to an instance with its `Connection: upgrade` and `Upgrade` headers,
//! and when the instance answers 101 the client's connection and the
//! instance's are spliced byte for byte until either side closes.
//!
//! A tunnel leaves the bounded server's connection accounting once it is
//! spliced, so tunnels have their own cap ([`MAX_TUNNELS`]): past it an
//! upgrade gets 503.

use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::body::Held;
use super::rewrite;

/// Most tunnels open at once per edge.
pub const MAX_TUNNELS: usize = 1024;

/// The tunnel slots; clones share them.
#[derive(Clone, Debug)]
pub struct Tunnels(Arc<Semaphore>);

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels(Arc::new(Semaphore::new(MAX_TUNNELS)))
    }
}

impl Tunnels {
    /// A slot for one more tunnel, if any is free.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }

    /// Tunnels open now.
    pub fn open(&self) -> usize {
        MAX_TUNNELS - self.0.available_permits()
    }
}

/// The protocol a request asks to upgrade to (`Connection: upgrade` and
/// an `Upgrade` header), if any.
pub fn wanted(h: &HeaderMap) -> Option<HeaderValue> {
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE).cloned()).flatten()
}

/// Puts the upgrade headers back after the hop-by-hop ones were removed.
pub fn restore(h: &mut HeaderMap, protocol: HeaderValue) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, protocol);
}

/// Answers the client 101 with the instance's headers and splices the two
/// connections in a task of their own, which holds `slot` and `held` (the
/// in-flight counts) until the tunnel closes.
pub fn splice(
    mut upstream: Response<Body>,
    client: OnUpgrade,
    slot: OwnedSemaphorePermit,
    held: Held,
) -> Response<Body> {
    let instance = hyper::upgrade::on(&mut upstream);
    let protocol = upstream.headers().get(header::UPGRADE).cloned();
    let (mut head, _) = upstream.into_parts();
    rewrite::strip_hop_by_hop(&mut head.headers);
    if let Some(p) = protocol {
        restore(&mut head.headers, p);
    }
    tokio::spawn(async move {
        let _held = (slot, held);
        let (client, instance) = match tokio::try_join!(client, instance) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "edge: an upgrade did not complete");
                return;
            }
        };
        let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(instance));
        if let Err(e) = tokio::io::copy_bidirectional(&mut a, &mut b).await {
            tracing::debug!(error = %e, "edge: a tunnel ended with an error");
        }
    });
    let mut resp = Response::from_parts(head, Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(wanted(&h), None);
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(wanted(&h), Some(HeaderValue::from_static("websocket")));
        h.remove(header::UPGRADE);
        assert_eq!(wanted(&h), None);
    }

    #[test]
    fn the_cap_is_counted() {
        let t = Tunnels::default();
        let held: Vec<_> = (0..MAX_TUNNELS).map(|_| t.slot().unwrap()).collect();
        assert!(t.slot().is_none());
        assert_eq!(t.open(), MAX_TUNNELS);
        drop(held);
        assert_eq!(t.open(), 0);
    }
}
