//! The cache's and messaging's part of `/metrics`, in base units (bytes,
//! counts), from the services' counters at scrape time.

use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cache::Cache;
use crate::msg::Messaging;

type Labels = Vec<(&'static str, String)>;

fn counter(r: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    r.register(name, help, c);
}

fn gauge(r: &mut Registry, name: &str, help: &str, value: usize) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    r.register(name, help, g);
}

/// Registers the cache and messaging metrics.
pub fn register(r: &mut Registry, cache: &Cache, msg: &Messaging) {
    let s = cache.stats();
    let c = cache.counters();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    gauge(
        r,
        "cache_entries",
        "Cache entries this node holds (tombstones included)",
        s.entries,
    );
    gauge(
        r,
        "cache_bytes",
        "Bytes of cache entries this node holds",
        s.bytes,
    );
    counter(
        r,
        "cache_hits",
        "Cache reads through this node that found a live value",
        get(&c.hits),
    );
    counter(
        r,
        "cache_misses",
        "Cache reads through this node that found none",
        get(&c.misses),
    );
    let evicted = Family::<Labels, Counter>::default();
    evicted
        .get_or_create(&vec![("reason", "lru".into())])
        .inc_by(s.evicted_lru);
    evicted
        .get_or_create(&vec![("reason", "budget".into())])
        .inc_by(s.evicted_budget);
    r.register(
        "cache_evictions",
        "Cache entries evicted: lru for a bucket's max_entries, budget for the node's byte budget",
        evicted,
    );
    counter(
        r,
        "cache_expired",
        "Cache entries removed because they expired",
        s.expired,
    );
    let increments = Family::<Labels, Counter>::default();
    increments
        .get_or_create(&vec![("result", "applied".into())])
        .inc_by(get(&c.increments));
    increments
        .get_or_create(&vec![("result", "refused".into())])
        .inc_by(get(&c.increments_refused));
    r.register(
        "cache_increments",
        "Counter increments through this node: applied, or refused (the key held no integer, or the sum would overflow)",
        increments,
    );
    counter(
        r,
        "cache_forwards",
        "Cache reads and writes sent to other nodes",
        get(&c.forwards),
    );
    counter(
        r,
        "cache_fallback_reads",
        "Cache reads answered by a lower-ranked node after a higher one missed",
        get(&c.fallback_reads),
    );
    counter(
        r,
        "cache_stand_in_writes",
        "Cache writes acknowledged with the next ranked node standing in for an owner that could not be reached or was slow",
        get(&c.stand_in_writes),
    );
    counter(
        r,
        "cache_read_repairs",
        "Cache entries sent to owners that answered without them or with an older version",
        get(&c.read_repairs),
    );
    counter(
        r,
        "cache_rebalanced_entries",
        "Cache entries sent to new owners after membership changes",
        get(&c.moved),
    );
    counter(
        r,
        "cache_messages_dropped",
        "Cache stream messages dropped (undecodable, unexpected, queue full)",
        get(&c.dropped),
    );
    let m = msg.counters();
    counter(
        r,
        "msg_published",
        "Messages published from this node",
        get(&m.published),
    );
    counter(
        r,
        "msg_delivered",
        "Messages handed to this node's subscribers",
        get(&m.delivered),
    );
    counter(
        r,
        "msg_lost",
        "Messages lost for this node's subscribers (their queue was full, or the publishing node's stream queue to this node)",
        get(&m.lost),
    );
    counter(
        r,
        "msg_unsent",
        "Messages published from this node that a peer's stream queue refused (reported to that peer as lost)",
        get(&m.unsent),
    );
    counter(
        r,
        "msg_dropped",
        "Messaging stream messages dropped (undecodable, unexpected, queue full)",
        get(&m.dropped),
    );
    counter(
        r,
        "msg_requests",
        "Requests made from this node",
        get(&m.requests),
    );
    counter(
        r,
        "msg_request_timeouts",
        "Requests from this node not answered in time",
        get(&m.request_timeouts),
    );
    counter(
        r,
        "msg_requests_unanswerable",
        "Requests from this node with no subscriber anywhere",
        get(&m.requests_unanswerable),
    );
}
