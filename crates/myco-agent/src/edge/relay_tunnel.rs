//! Upgrades (WebSocket) through the relay, so an instance on another node
//! is reached over the mesh's mutual TLS like any other request, even when
//! it listens on loopback only.
//!
//! HTTP/2 has no `Connection: upgrade` (and a 101 is not a final answer),
//! so the relay carries a tunnel as one HTTP/2 stream: the origin edge
//! sends the upgrade request with [`RELAY_UPGRADE`] naming the protocol
//! and a request body that never ends while the tunnel is open (the
//! client's bytes); the relaying node makes the real HTTP/1.1 upgrade to
//! its instance, and when that answers 101 it answers 200 with
//! [`RELAY_UPGRADE`] and the 101's headers, and a response body that
//! carries the instance's bytes. Either side ending its half ends that
//! direction (END_STREAM, then a shutdown of the write half), as
//! `copy_bidirectional` does for a local tunnel. Each direction holds at
//! most [`PIPE_CHUNKS`] chunks of at most [`CHUNK`] bytes in memory; HTTP/2
//! flow control holds the rest back.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::header::{HeaderName, HeaderValue};
use axum::http::{Request, Response, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::body::Held;
use super::metrics::UpstreamError;
use super::pool::Pool;
use super::{rewrite, tunnel};

/// On a relayed request: the protocol to upgrade to (the client's
/// `Upgrade`). On the relay's 200: the instance switched to it.
pub const RELAY_UPGRADE: HeaderName = HeaderName::from_static("myco-relay-upgrade");
/// Chunks in flight per direction.
pub const PIPE_CHUNKS: usize = 8;
/// Largest chunk read from a socket at once.
pub const CHUNK: usize = 16 * 1024;

/// A body fed by a bounded channel: ends when every sender is dropped.
pub struct Piped(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Piped {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A pipe: the sender for one direction, and the body that carries it.
pub fn pipe() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel(PIPE_CHUNKS);
    (tx, Body::new(Piped(rx)))
}

/// Carries bytes both ways between `io` (an upgraded connection) and one
/// HTTP/2 stream (`from` its body in, `to` the sender of our body out),
/// until both directions have ended or one fails.
pub async fn pump<IO, B>(io: IO, mut from: B, to: mpsc::Sender<Bytes>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let outward = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
        // Dropping `to` ends the stream's body: the far side's write half
        // is shut down in turn.
    };
    let inward = async move {
        loop {
            match poll_fn(|cx| Pin::new(&mut from).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && wr.write_all(&data).await.is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "edge: a relayed tunnel broke");
                    return;
                }
                None => {
                    let _ = wr.shutdown().await;
                    return;
                }
            }
        }
    };
    tokio::join!(outward, inward);
}

/// The origin's side once the relay answered [`RELAY_UPGRADE`]: answers
/// the client 101 with the instance's headers, and pumps the client's
/// upgraded connection to and from the relayed stream in a task of its own
/// that holds `slot` and `held` until the tunnel closes.
pub fn splice(
    relayed: Response<Body>,
    client: OnUpgrade,
    to: mpsc::Sender<Bytes>,
    slot: OwnedSemaphorePermit,
    held: Held,
) -> Response<Body> {
    let protocol = relayed.headers().get(&RELAY_UPGRADE).cloned();
    let (mut head, from) = relayed.into_parts();
    head.headers.remove(&RELAY_UPGRADE);
    rewrite::strip_hop_by_hop(&mut head.headers);
    if let Some(p) = protocol {
        tunnel::restore(&mut head.headers, p);
    }
    tokio::spawn(async move {
        let _held = (slot, held);
        match client.await {
            Ok(upgraded) => pump(TokioIo::new(upgraded), from, to).await,
            Err(e) => tracing::debug!(error = %e, "edge: an upgrade did not complete"),
        }
    });
    let mut resp = Response::from_parts(head, Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp
}

/// The relaying node's side: the upgrade request `parts` goes to the local
/// instance at `addr`; on its 101 the answer is 200 with [`RELAY_UPGRADE`],
/// and a task pumps the instance's upgraded connection to and from the
/// stream (`body` in, the answer's body out). Any other answer goes back
/// as it is. `Err`: the instance could not be reached.
pub async fn relay(
    pool: &Pool,
    addr: SocketAddr,
    mut parts: axum::http::request::Parts,
    body: Incoming,
    protocol: HeaderValue,
) -> Result<Response<Body>, UpstreamError> {
    tunnel::restore(&mut parts.headers, protocol.clone());
    let mut out = Request::new(Body::empty());
    *out.method_mut() = parts.method;
    *out.uri_mut() = parts.uri;
    *out.headers_mut() = parts.headers;
    let mut resp =
        super::send::timed(pool.send(addr, out), super::pool::SendError::is_connect).await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut head, incoming) = resp.into_parts();
        rewrite::strip_hop_by_hop(&mut head.headers);
        return Ok(Response::from_parts(head, Body::new(incoming)));
    }
    let instance = hyper::upgrade::on(&mut resp);
    let (mut head, _) = resp.into_parts();
    rewrite::strip_hop_by_hop(&mut head.headers);
    head.status = StatusCode::OK;
    head.headers.insert(RELAY_UPGRADE, protocol);
    let (to, out) = pipe();
    tokio::spawn(async move {
        match instance.await {
            Ok(upgraded) => pump(TokioIo::new(upgraded), body, to).await,
            Err(e) => tracing::debug!(error = %e, "edge relay: an upgrade did not complete"),
        }
    });
    Ok(Response::from_parts(head, out))
}
