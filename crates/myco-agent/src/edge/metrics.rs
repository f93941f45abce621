//! Per-job edge metrics: atomics bumped by requests (no lock, no lookup by
//! name: each route-table entry holds its job's [`JobMetrics`]), encoded
//! into the API's `/metrics` on each scrape like the front door's
//! counters.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Upper bounds of the latency buckets, seconds (the last is +Inf).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Retries may be at most one request in this many (20 %)...
pub const RETRY_SHARE: u64 = 5;
/// ...plus this many.
pub const RETRY_FLOOR: u64 = 10;

/// Why a request to an instance failed (both paths).
pub use myco_edge_wire::UpstreamError;

/// One job's counters.
#[derive(Debug, Default)]
pub struct JobMetrics {
    requests: AtomicU64,
    /// By status class, 1xx to 5xx.
    responses: [AtomicU64; 5],
    errors: [AtomicU64; 3],
    retries: AtomicU64,
    ejections: AtomicU64,
    in_flight: AtomicI64,
    /// Per bucket (not cumulative), the last one +Inf.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_us: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl JobMetrics {
    /// A request for the job arrived.
    pub fn request(&self) {
        bump(&self.requests);
    }

    /// The edge answered with `status` after `took` (to the response head).
    pub fn response(&self, status: u16, took: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        bump(&self.responses[class]);
        let secs = took.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|b| *b < secs);
        bump(&self.latency[i]);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A request to an instance failed this way.
    pub fn upstream_error(&self, kind: UpstreamError) {
        bump(&self.errors[kind as usize]);
    }

    /// A request was sent again to another instance.
    pub fn retry(&self) {
        bump(&self.retries);
    }

    /// An instance was ejected.
    pub fn ejection(&self) {
        bump(&self.ejections);
    }

    /// Requests in flight: +1 or -1.
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Ordering::Relaxed);
    }

    /// Whether one more retry fits the job's retry budget: retries stay
    /// under [`RETRY_SHARE`] of requests, plus [`RETRY_FLOOR`] so a quiet
    /// job can still retry. A sick mesh is then not flooded with a second
    /// copy of every request.
    pub fn retry_allowed(&self) -> bool {
        let (retries, requests) = (
            self.retries.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        );
        retries < requests / RETRY_SHARE + RETRY_FLOOR
    }

    /// Total requests so far (tests read it).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Total retries so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

type Labels = Vec<(&'static str, String)>;

/// Sum, count and per-bucket counts (upper bound, count).
type HistogramData = (f64, u64, Vec<(f64, u64)>);

/// A histogram copied out of atomics at scrape time.
#[derive(Default)]
struct LatencySnapshot(Mutex<HistogramData>);

impl fmt::Debug for LatencySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LatencySnapshot")
    }
}

impl TypedMetric for LatencySnapshot {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencySnapshot {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        encoder.encode_histogram::<NoLabelSet>(g.0, g.1, &g.2, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The job label is `myco_job`, as on every other family: Prometheus sets
/// `job` (the scrape job) itself and would rename ours `exported_job`.
fn job_label(job: &str) -> Labels {
    vec![(JOB_LABEL, job.to_string())]
}

const JOB_LABEL: &str = "myco_job";

/// Registers the edge's metrics for these jobs.
pub fn register<'a>(r: &mut Registry, jobs: impl Iterator<Item = (&'a str, &'a JobMetrics)>) {
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let requests = Family::<Labels, Counter>::default();
    let responses = Family::<Labels, Counter>::default();
    let errors = Family::<Labels, Counter>::default();
    let retries = Family::<Labels, Counter>::default();
    let ejections = Family::<Labels, Counter>::default();
    let in_flight = Family::<Labels, Gauge>::default();
    let latency = Family::<Labels, LatencySnapshot>::default();
    for (job, m) in jobs {
        requests
            .get_or_create(&job_label(job))
            .inc_by(load(&m.requests));
        for (i, c) in m.responses.iter().enumerate() {
            let labels = vec![
                (JOB_LABEL, job.to_string()),
                ("class", format!("{}xx", i + 1)),
            ];
            responses.get_or_create(&labels).inc_by(load(c));
        }
        for kind in UpstreamError::ALL {
            let labels = vec![(JOB_LABEL, job.to_string()), ("kind", kind.as_str().into())];
            errors
                .get_or_create(&labels)
                .inc_by(load(&m.errors[kind as usize]));
        }
        retries
            .get_or_create(&job_label(job))
            .inc_by(load(&m.retries));
        ejections
            .get_or_create(&job_label(job))
            .inc_by(load(&m.ejections));
        in_flight
            .get_or_create(&job_label(job))
            .set(m.in_flight.load(Ordering::Relaxed));
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(m.latency.iter().map(load))
            .collect();
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = load(&m.latency_sum_us) as f64 / 1e6;
        *latency
            .get_or_create(&job_label(job))
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (sum, count, buckets);
    }
    r.register("edge_requests", "Requests the edge took, by job", requests);
    r.register(
        "edge_responses",
        "Responses the edge sent, by job and status class (its own errors included)",
        responses,
    );
    r.register(
        "edge_upstream_errors",
        "Requests to an instance that failed, by job and kind (connect, timeout, protocol)",
        errors,
    );
    r.register(
        "edge_retries",
        "Requests sent again to another instance after a connection failure",
        retries,
    );
    r.register(
        "edge_ejections",
        "Instances left out after consecutive failures",
        ejections,
    );
    r.register(
        "edge_in_flight",
        "Requests in flight through the edge now, by job",
        in_flight,
    );
    r.register(
        "edge_request_duration_seconds",
        "Time from a request's arrival to its response head, by job",
        latency,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_budget() {
        let m = JobMetrics::default();
        for _ in 0..RETRY_FLOOR {
            assert!(m.retry_allowed());
            m.retry();
        }
        assert!(!m.retry_allowed(), "the floor is spent with no requests");
        for _ in 0..RETRY_SHARE * 3 {
            m.request();
        }
        for _ in 0..3 {
            assert!(m.retry_allowed());
            m.retry();
        }
        assert!(!m.retry_allowed());
    }

    #[test]
    fn counters_reach_the_exposition() {
        let m = JobMetrics::default();
        m.request();
        m.response(200, Duration::from_millis(3));
        m.response(503, Duration::from_millis(30));
        m.upstream_error(UpstreamError::Connect);
        m.retry();
        let mut r = Registry::with_prefix("myco");
        register(&mut r, [("hello", &m)].into_iter());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(
            out.contains(r#"myco_edge_requests_total{myco_job="hello"} 1"#),
            "{out}"
        );
        assert!(out.contains(r#"myco_edge_responses_total{myco_job="hello",class="2xx"} 1"#));
        assert!(out.contains(r#"myco_edge_responses_total{myco_job="hello",class="5xx"} 1"#));
        assert!(
            out.contains(r#"myco_edge_upstream_errors_total{myco_job="hello",kind="connect"} 1"#)
        );
        assert!(out.contains(r#"myco_edge_retries_total{myco_job="hello"} 1"#));
        assert!(out.contains(r#"myco_edge_request_duration_seconds_count{myco_job="hello"} 2"#));
        assert!(out.contains(
            r#"myco_edge_request_duration_seconds_bucket{le="0.005",myco_job="hello"} 1"#
        ));
    }
}
