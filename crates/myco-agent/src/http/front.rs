//! The API's front door wired together: the bounded server
//! ([`crate::net::serve`]) with the API's reserve admission and body
//! limits, the Host/Origin guard ([`super::guard`]), the event hub
//! ([`super::sse`]), dashboard sessions, and their counters in `/metrics`.
//!
//! Bare-LF refusal ([`ServeLimits::strict_line_endings`]) stays off here:
//! it protects a gateway from reading a request differently from a proxy in
//! front of it, and nothing proxies the API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use myco_proto::api::ApiEvent;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::MAX_BODY;
use super::auth::token_matches;
use super::guard::HostPolicy;
use super::sse::{SseEvent, SseHub, SseLimits};
use crate::net::serve::{ServeLimits, Server};

/// Largest spore upload (`POST /v1/spores`, streamed to disk).
pub const MAX_SPORE_UPLOAD: u64 = 1 << 30;

/// Most dashboard sessions at once; a new login past it ends the oldest.
pub const MAX_SESSIONS: usize = 64;
/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The dashboard session cookie's name.
pub const SESSION_COOKIE: &str = "myco_session";

/// What the front door shares with handlers and the metrics module.
#[derive(Clone)]
pub struct FrontDoor {
    /// The bounded server's counters.
    pub serve: Arc<crate::net::serve::ServeCounters>,
    /// Which hosts the API answers to (and its refusal counters).
    pub hosts: HostPolicy,
    /// `/v1/events` subscribers.
    pub events: SseHub,
    /// Dashboard logins.
    pub sessions: Sessions,
}

impl FrontDoor {
    /// The front door of an API with this host policy, event limits and
    /// server; `server` is the one [`api_server`] built.
    pub fn new(server: &Server, hosts: HostPolicy, events: SseLimits) -> Self {
        FrontDoor {
            serve: server.counters(),
            hosts,
            events: SseHub::new(events),
            sessions: Sessions::default(),
        }
    }
}

/// The bounded server for the API: a reserve connection serves `/health`
/// and token holders only; `POST /v1/spores` may send up to
/// [`MAX_SPORE_UPLOAD`], every other request [`MAX_BODY`].
pub fn api_server(token: Arc<str>) -> Server {
    Server::new(ServeLimits::default())
        .admit_on_reserve(move |head: &Parts| {
            head.uri.path() == "/health" || token_matches(&head.headers, &token)
        })
        .body_limit(|head: &Parts| {
            if head.uri.path() == "/v1/spores" && head.method == axum::http::Method::POST {
                MAX_SPORE_UPLOAD
            } else if let Some(limit) = super::cache::body_limit(head) {
                limit
            } else {
                MAX_BODY as u64
            }
        })
}

impl SseEvent for Arc<ApiEvent> {
    fn name(&self) -> &str {
        match self.as_ref() {
            ApiEvent::State { .. } => "state",
            ApiEvent::Member { .. } => "member",
            ApiEvent::Job { .. } => "job",
            ApiEvent::Lagged { .. } => "lagged",
        }
    }

    fn data(&self) -> String {
        serde_json::to_string(self.as_ref()).expect("events serialize")
    }

    fn lagged(missed: u64) -> Self {
        Arc::new(ApiEvent::Lagged { missed })
    }
}

/// Dashboard sessions: random ids that stand for "logged in with the
/// token", so a browser never keeps the token itself nor puts it in a URL.
/// Bounded ([`MAX_SESSIONS`]) and expiring ([`SESSION_TTL`]).
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<BTreeMap<String, Instant>>>,
    created: Arc<AtomicU64>,
}

impl Sessions {
    /// Starts a session and returns its id.
    pub fn create(&self, now: Instant) -> String {
        let id = hex::encode(crate::config::datadir::random_bytes::<32>());
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, expires| *expires > now);
        while map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(id.clone(), now + SESSION_TTL);
        self.created.fetch_add(1, Ordering::Relaxed);
        id
    }

    /// Whether `id` is a live session.
    pub fn valid(&self, id: &str, now: Instant) -> bool {
        let map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        // Ids are 64 hex characters; a lookup by a secret key in a BTreeMap
        // leaks at most which prefix exists, which is random.
        map.get(id).is_some_and(|expires| *expires > now)
    }

    /// Sessions now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id in a request's `Cookie` header, if any.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

fn counter(family: &Family<Vec<(&'static str, String)>, Counter>, label: &str, n: u64) {
    family
        .get_or_create(&vec![("reason", label.to_string())])
        .inc_by(n);
}

/// Registers the front door's counters: connections refused and closed
/// by reason, requests refused by reason, event subscribers.
pub fn register(r: &mut Registry, front: &FrontDoor) {
    let s = front.serve.snapshot();
    let open = Gauge::<i64>::default();
    open.set(s.open as i64);
    r.register("http_connections_open", "API connections open now", open);
    let accepted = Counter::<u64>::default();
    accepted.inc_by(s.accepted);
    r.register(
        "http_connections_accepted",
        "API connections accepted",
        accepted,
    );
    let refused = Family::<Vec<(&'static str, String)>, Counter>::default();
    counter(&refused, "over_cap", s.refused_over_cap);
    counter(&refused, "reserve_evicted", s.reserve_evicted);
    counter(&refused, "emfile", s.emfile);
    r.register(
        "http_connections_refused",
        "API connections closed before a request, by reason (over the cap with the reserve full, evicted from the reserve while idle, out of file descriptors)",
        refused,
    );
    let closed = Family::<Vec<(&'static str, String)>, Counter>::default();
    counter(&closed, "header_timeout", s.header_timeouts);
    counter(&closed, "idle", s.idle_closed);
    counter(&closed, "send_stall", s.send_timeouts);
    counter(&closed, "bare_lf", s.bare_lf_refused);
    counter(&closed, "handler", s.closed_by_handler);
    r.register(
        "http_connections_closed",
        "API connections the server closed, by reason (slow request head, idle keep-alive, client not reading the response, bare LF, stalled event reader)",
        closed,
    );
    let guard = front.hosts.counters();
    let requests = Family::<Vec<(&'static str, String)>, Counter>::default();
    counter(&requests, "reserve", s.reserve_refused);
    counter(&requests, "body_timeout", s.body_timeouts);
    counter(&requests, "body_too_large", s.body_too_large);
    counter(
        &requests,
        "host",
        guard.refused_host.load(Ordering::Relaxed),
    );
    counter(
        &requests,
        "origin",
        guard.refused_origin.load(Ordering::Relaxed),
    );
    r.register(
        "http_requests_refused",
        "API requests refused, by reason (reserve connection without the token: 503, body stalled: 408, body over the limit: 413, Host not allowed: 421, foreign Origin: 403)",
        requests,
    );
    let e = front.events.counters();
    let active = Gauge::<i64>::default();
    active.set(e.active.load(Ordering::Relaxed) as i64);
    r.register("events_subscribers", "/v1/events subscribers now", active);
    let ev = Family::<Vec<(&'static str, String)>, Counter>::default();
    counter(&ev, "over_cap", e.refused_over_cap.load(Ordering::Relaxed));
    counter(&ev, "stalled", e.stalled_closed.load(Ordering::Relaxed));
    r.register(
        "events_subscribers_refused",
        "/v1/events subscribers refused at the cap (over_cap) or disconnected for reading nothing while events waited (stalled)",
        ev,
    );
    let skipped = Counter::<u64>::default();
    skipped.inc_by(e.skipped.load(Ordering::Relaxed));
    r.register(
        "events_skipped",
        "Events a subscriber missed because its queue was full (it was told with a lagged event)",
        skipped,
    );
    let queued = Gauge::<i64>::default();
    queued.set(e.queued_bytes.load(Ordering::Relaxed) as i64);
    r.register(
        "events_queued_bytes",
        "Bytes of events queued for all subscribers now",
        queued,
    );
}
