//! What a proxied response holds until it ends or the client goes away:
//! the request's in-flight counts, since a slow download is load on its
//! instance as much as a slow response head. The body itself is the
//! server's [`Guarded`]; this is its guard.

use std::sync::Arc;

use axum::body::Body;

use super::balance::InFlight;
use super::metrics::JobMetrics;
use crate::net::serve::Guarded;

/// Ends its request's in-flight counts (the instance's and the job's) when
/// dropped.
pub struct Held {
    _upstream: InFlight,
    job: Arc<JobMetrics>,
}

impl Held {
    /// Holds `upstream`; the job's in-flight gauge was raised by the caller.
    pub fn new(upstream: InFlight, job: Arc<JobMetrics>) -> Self {
        Held {
            _upstream: upstream,
            job,
        }
    }

    /// `inner`, holding the counts until it ends.
    pub fn body(self, inner: Body) -> Body {
        Body::new(Guarded::new(inner, self))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.job.in_flight(-1);
    }
}
