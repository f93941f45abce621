//! The response body streamed back from an instance, holding the request's
//! in-flight counts until it ends or the client goes away: a slow download
//! is load on its instance as much as a slow response head.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use http_body::{Frame, SizeHint};

use super::balance::InFlight;
use super::metrics::JobMetrics;

/// A body that ends its request's in-flight counts when dropped.
pub struct TrackedBody {
    inner: Body,
    _upstream: InFlight,
    job: Arc<JobMetrics>,
}

impl TrackedBody {
    /// Wraps `inner`; the job's in-flight gauge was raised by the caller.
    pub fn new(inner: Body, upstream: InFlight, job: Arc<JobMetrics>) -> Self {
        TrackedBody {
            inner,
            _upstream: upstream,
            job,
        }
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.job.in_flight(-1);
    }
}

impl http_body::Body for TrackedBody {
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
