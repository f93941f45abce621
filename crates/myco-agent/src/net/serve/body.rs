//! Body wrappers: the request body that times out when it stalls and
//! stops at its limit, and the response body that tells the watchdog
//! when a request is over.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::Response;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::conn::Activity;

/// Why reading a request body failed. The app sees this as a body error;
/// the server then answers 408 or 413 itself.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// No bytes arrived for the stall timeout.
    #[error("the request body stopped arriving; send it without pauses")]
    Stalled,
    /// More bytes arrived than the route allows.
    #[error("the request body is over this route's limit")]
    TooLarge,
    /// The connection failed while reading.
    #[error("reading the request body: {0}")]
    Read(#[from] hyper::Error),
}

/// What happened to a request body, for the answer after the app returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Fine,
    Stalled,
    TooLarge,
}

/// Shared between the body (which sets it) and the request (which reads it).
#[derive(Clone, Default)]
pub(super) struct BodyVerdict(Arc<AtomicU8>);

impl BodyVerdict {
    fn set(&self, v: Verdict) {
        self.0.store(v as u8, Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> Verdict {
        match self.0.load(Ordering::Relaxed) {
            1 => Verdict::Stalled,
            2 => Verdict::TooLarge,
            _ => Verdict::Fine,
        }
    }
}

/// A request body with a byte limit and a stall timer. The timer runs
/// only while the app waits on the body, so a handler that does other
/// work first is not charged for it.
pub(super) struct GuardedBody {
    inner: Incoming,
    limit: u64,
    read: u64,
    stall: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    verdict: BodyVerdict,
    failed: bool,
}

impl GuardedBody {
    pub(super) fn new(inner: Incoming, limit: u64, stall: Duration, verdict: BodyVerdict) -> Self {
        GuardedBody {
            inner,
            limit,
            read: 0,
            stall,
            timer: None,
            verdict,
            failed: false,
        }
    }

    fn fail(&mut self, v: Verdict, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.failed = true;
        self.verdict.set(v);
        Poll::Ready(Some(Err(e)))
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read = this.read.saturating_add(data.len() as u64);
                    if this.read > this.limit {
                        return this.fail(Verdict::TooLarge, BodyError::TooLarge);
                    }
                }
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(Instant::now() + this.stall);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|r| r.map_err(BodyError::Read))),
            Poll::Pending => {
                let stall = this.stall;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if timer.as_mut().poll(cx).is_ready() {
                    return this.fail(Verdict::Stalled, BodyError::Stalled);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Marks a request as in flight until its response body is dropped
/// (hyper drops it once written, or when the connection goes away).
pub(super) struct InFlight(Arc<Activity>);

impl InFlight {
    pub(super) fn new(activity: Arc<Activity>) -> Self {
        InFlight(activity)
    }

    /// Attaches the mark to the response, so it ends with the response.
    pub(super) fn wrap(self, resp: Response<Body>) -> Response<Body> {
        resp.map(|inner| Body::new(Guarded::new(inner, self)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A body that holds `guard` until it ends or is dropped: whatever the
/// guard's `Drop` does (end an in-flight mark, lower a gauge) happens when
/// the response is over, not when the handler returns. The server's
/// watchdog and the edge's in-flight counts both use it.
pub struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G> Guarded<G> {
    /// Wraps `inner`, holding `guard` for as long as it lives.
    pub fn new(inner: Body, guard: G) -> Self {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

impl<G: Unpin + Send + 'static> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
