//! The edge relay's pooled HTTP/2 connections across a key rotation: one
//! connection per peer, reused while the ring still trusts the peer, and
//! closed at once (not after its 60 s idle timeout) by the end whose new
//! ring retired the key the peer was trusted under.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use myco_agent::edge::relay::{self, RelayClient};
use myco_agent::net::streams::{RelayHandler, Streams};

mod streams_util;
use streams_util::{WAIT, key, node, until};

/// Relay connections opened and ended on the serving side.
#[derive(Default)]
struct Conns {
    opened: AtomicU64,
    ended: AtomicU64,
}

/// Counts an end however the connection's future stops (done or dropped).
struct Ended(Arc<Conns>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// A relay server that answers every request 200 "ok".
fn answering(conns: Arc<Conns>) -> RelayHandler {
    Arc::new(move |conn, _from| {
        let conns = conns.clone();
        Box::pin(async move {
            conns.opened.fetch_add(1, Ordering::SeqCst);
            let _ended = Ended(conns);
            let ok = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Body::from("ok")))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(conn), ok)
                .await;
        })
    })
}

async fn get(client: &RelayClient, to: &Streams) -> Result<u16, String> {
    let req = Request::get(format!("http://{}/x", to.local_addr()))
        .body(Body::empty())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    Ok(resp.status().as_u16())
}

#[tokio::test]
async fn pooled_relay_connections_close_when_a_rotation_retires_their_key() {
    let (a, _a_rx) = node(1, &[key(1)]).await;
    let (b, _b_rx) = node(2, &[key(1), key(2)]).await;
    let conns = Arc::new(Conns::default());
    b.set_relay_handler(answering(conns.clone()));
    let client = relay::client(a.clone());
    let opened = || conns.opened.load(Ordering::SeqCst);
    let ended = || conns.ended.load(Ordering::SeqCst);

    // One connection carries every request.
    for _ in 0..3 {
        assert_eq!(get(&client, &b).await, Ok(200));
    }
    assert_eq!(
        (opened(), ended()),
        (1, 0),
        "the pooled connection is reused"
    );

    // A learns k2 and keeps k1: B's k1 leaf is still trusted, the
    // connection stays.
    a.set_keys(&[key(2), key(1)]).unwrap();
    assert_eq!(get(&client, &b).await, Ok(200));
    assert_eq!(
        (opened(), ended()),
        (1, 0),
        "kept while the ring shares a key"
    );
    assert_eq!(a.stats().untrusted_after_rekey, 0);

    // A retires k1: its idle connection to B, made under k1, closes now,
    // with no request to notice it.
    a.set_keys(&[key(2)]).unwrap();
    until(&a, "a closing its relay connection", |_| ended() == 1).await;
    assert_eq!(a.stats().untrusted_after_rekey, 1);
    // The next request connects under the new ring.
    assert_eq!(get(&client, &b).await, Ok(200));
    assert_eq!(opened(), 2);

    // The serving end checks too: B moves to a key A does not hold, and
    // closes the connection A made under k2.
    b.set_keys(&[key(3)]).unwrap();
    until(&b, "b closing the relay connection", |_| ended() == 2).await;
    assert_eq!(b.stats().untrusted_after_rekey, 1);
    assert!(get(&client, &b).await.is_err(), "no shared key: refused");
}
