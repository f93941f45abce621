//! `GET /metrics`: Prometheus metrics, encoded from a snapshot on each
//! scrape: the core's counters are the source of truth, so nothing here can
//! drift from them.

use std::time::Duration;

use myco_core::MemberState;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::mesh::Snapshot;
use crate::net::streams::StreamStats;
use crate::store::StoreStats;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// What one scrape reads.
pub struct Sources<'a> {
    /// The mesh loop's snapshot.
    pub snap: &'a Snapshot,
    /// Time since start.
    pub uptime: Duration,
    /// Store counters.
    pub store: StoreStats,
    /// Whether the store was found damaged at start.
    pub store_recovered: bool,
    /// Stream transport counters.
    pub streams: StreamStats,
    /// Spores refused, by reason.
    pub spores_refused: std::collections::BTreeMap<&'static str, u64>,
    /// The jobs runtime.
    pub jobs: &'a crate::jobs::JobsShared,
    /// Log messages between nodes dropped (undecodable or unexpected).
    pub log_messages_dropped: u64,
}

/// A gauge in seconds from a count of milliseconds.
fn seconds(registry: &mut Registry, name: &str, help: &str, ms: u64) {
    let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    g.set(ms as f64 / 1000.0);
    registry.register(name, help, g);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

/// Encodes every metric for one scrape.
pub fn encode_registry(src: &Sources<'_>) -> Registry {
    let (snap, uptime) = (src.snap, src.uptime);
    let mut r = Registry::with_prefix("myco");
    let members = Family::<Labels, Gauge>::default();
    for state in [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Down,
        MemberState::Left,
    ] {
        let n = snap.members.iter().filter(|m| m.state == state).count();
        members
            .get_or_create(&vec![("state", state.as_str().to_string())])
            .set(n as i64);
    }
    r.register(
        "members",
        "Members of the mesh by state, as this node sees them (self included)",
        members,
    );
    let connected = Gauge::<i64>::default();
    connected.set(i64::from(snap.connected));
    r.register("connected", "1 when at least one peer is alive", connected);
    let up = Gauge::<i64>::default();
    up.set(uptime.as_secs() as i64);
    r.register("uptime_seconds", "Seconds since the agent started", up);
    let st = &snap.stats;
    counter(
        &mut r,
        "datagrams_in",
        "Datagrams received on the mesh port",
        st.datagrams_in,
    );
    counter(
        &mut r,
        "datagrams_out",
        "Datagrams sent on the mesh port",
        st.datagrams_out,
    );
    counter(
        &mut r,
        "bytes_in",
        "Bytes received on the mesh port",
        st.bytes_in,
    );
    counter(
        &mut r,
        "bytes_out",
        "Bytes sent on the mesh port",
        st.bytes_out,
    );
    let dropped = Family::<Labels, Counter>::default();
    for (reason, n) in &st.dropped {
        dropped
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(*n);
    }
    r.register("datagrams_dropped", "Datagrams refused, by reason", dropped);
    let frames = Family::<Labels, Counter>::default();
    for (kind, n) in &st.frames_in {
        frames
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc_by(*n);
    }
    r.register("frames_in", "Frames accepted, by kind", frames);
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![
        ("version", myco_proto::MYCO_VERSION.to_string()),
        ("node", snap.me.id.to_string()),
    ])
    .set(1);
    r.register("build_info", "Build and node identity", info);

    let (entries, tombstones, bytes) = snap.state;
    gauge(
        &mut r,
        "state_entries",
        "Replicated entries held, tombstones included",
        entries as i64,
    );
    gauge(
        &mut r,
        "state_tombstones",
        "Tombstones held",
        tombstones as i64,
    );
    gauge(
        &mut r,
        "state_bytes",
        "Bytes of replicated keys and values held",
        bytes as i64,
    );
    // Base units (seconds) as Prometheus expects; the core counts in ms.
    seconds(
        &mut r,
        "state_horizon_seconds",
        "Wall time (Unix seconds) below which tombstones were collected on every node; 0 before the first collection",
        snap.horizon_ms,
    );
    seconds(
        &mut r,
        "state_clock_lead_seconds",
        "How far this node's hybrid clock runs ahead of its wall clock; over a second means a peer's clock is fast: check NTP",
        snap.clock_lead_ms,
    );
    counter(
        &mut r,
        "state_horizon_resets",
        "Times this node found itself behind a collection horizon it had no part in and refilled from peers",
        snap.stats.horizon_resets,
    );
    let st = &src.store;
    counter(
        &mut r,
        "store_transactions",
        "Store write transactions (group commits)",
        st.transactions,
    );
    counter(
        &mut r,
        "store_changes_written",
        "Changes made durable",
        st.changes_written,
    );
    counter(
        &mut r,
        "store_bytes_written",
        "Record bytes written to the store",
        st.bytes_written,
    );
    counter(
        &mut r,
        "store_fsyncs",
        "fsyncs issued by store commits",
        st.fsyncs,
    );
    counter(
        &mut r,
        "store_errors",
        "Store batches that failed",
        st.errors,
    );
    counter(
        &mut r,
        "store_queue_full",
        "Background disk work that found the store queue full and waited in the backlog",
        st.queue_full,
    );
    counter(
        &mut r,
        "store_tombstones_removed",
        "Tombstones garbage-collected from disk",
        st.removed,
    );
    gauge(
        &mut r,
        "store_recovered",
        "1 if the store was found damaged at start and rebuilt from peers",
        i64::from(src.store_recovered),
    );
    stream_metrics(&mut r, &src.streams);
    counter(
        &mut r,
        "stream_unrouted",
        "Stream messages on a channel this node has no handler for (from a newer build), dropped",
        snap.stream_unrouted,
    );
    counter(
        &mut r,
        "log_messages_dropped",
        "Remote log messages dropped: undecodable, another version, or for no request",
        src.log_messages_dropped,
    );
    let refused = Family::<Labels, Counter>::default();
    for (reason, n) in &src.spores_refused {
        refused
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(*n);
    }
    r.register(
        "spores_refused",
        "Spores refused on push or fetch, by reason",
        refused,
    );
    super::metrics_jobs::register(&mut r, src.jobs);
    r
}

fn stream_metrics(r: &mut Registry, s: &StreamStats) {
    counter(
        r,
        "stream_exchanges",
        "Requests whose asking task wrote them and read the answer itself, on a pooled connection",
        s.exchanges,
    );
    counter(
        r,
        "stream_exchange_connections",
        "Connections opened for exchanges",
        s.exchange_connections,
    );
    counter(
        r,
        "stream_messages_sent",
        "Replication messages written to peers",
        s.sent_messages,
    );
    counter(
        r,
        "stream_bytes_sent",
        "Payload bytes of replication messages sent",
        s.sent_bytes,
    );
    counter(
        r,
        "stream_messages_received",
        "Replication messages received",
        s.received_messages,
    );
    counter(
        r,
        "stream_bytes_received",
        "Payload bytes of replication messages received",
        s.received_bytes,
    );
    let failures = Family::<Labels, Counter>::default();
    for (reason, n) in [
        ("connect", s.connect_failures),
        ("outbound_handshake", s.outbound_handshake_failures),
        ("inbound_handshake", s.inbound_handshake_failures),
        ("oversize", s.oversize_refused),
        ("queue_full", s.queue_full),
        ("queue_bytes_full", s.queue_bytes_full),
        ("unreachable", s.unreachable_refused),
        ("unknown_channel", s.unknown_channel),
        ("send", s.send_failures),
        ("inbound_refused", s.inbound_refused),
        ("untrusted_after_rekey", s.untrusted_after_rekey),
    ] {
        failures
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(n);
    }
    r.register(
        "stream_failures",
        "Stream transport failures and refusals, by reason",
        failures,
    );
    counter(
        r,
        "stream_incoming_waits",
        "Times a peer's connection waited for room in the incoming byte budget (backpressure, nothing lost)",
        s.incoming_waits,
    );
    counter(
        r,
        "stream_answers_back",
        "Answers written back on the connection their request came in on",
        s.answers_back,
    );
    counter(
        r,
        "stream_peers_evicted",
        "Outgoing peer connections evicted to stay within the limit",
        s.peers_evicted,
    );
}

/// The text exposition for one scrape.
pub fn encode(src: &Sources<'_>) -> String {
    let mut out = String::new();
    text::encode(&mut out, &encode_registry(src)).expect("writing to a String cannot fail");
    out
}

/// The handler.
#[cfg_attr(any(test, feature = "openapi"), utoipa::path(get, path = "/metrics", tag = "node", responses((status = 200, description = "Prometheus text exposition", content_type = "application/openmetrics-text", body = String))))]
pub async fn metrics(State(s): State<ApiState>) -> Response {
    let mut registry = encode_registry(&Sources {
        snap: &s.mesh.snapshot(),
        uptime: s.started.elapsed(),
        store: s.store.stats(),
        store_recovered: s.store_recovered,
        streams: s.streams.stats(),
        spores_refused: s.spores.store().refusals(),
        jobs: &s.jobs,
        log_messages_dropped: s.remote_logs.dropped(),
    });
    super::front::register(&mut registry, &s.front);
    counter(
        &mut registry,
        "spores_busy_answers",
        "Spore chunk requests answered busy (serving was full); the asker pauses and asks again",
        s.spores.store().busy_answers(),
    );
    counter(
        &mut registry,
        "spores_bad_messages",
        "Blob (spore chunk) messages from peers that did not decode, dropped",
        s.spores.store().bad_messages(),
    );
    registry.register(
        "spore_fetch_seconds",
        "Seconds each spore fetch from peers took, from start to the file verified and in place (not the HTTP download that asked for it)",
        s.spores.store().fetch_histogram(),
    );
    crate::edge::register_metrics(&mut registry, &s.edge);
    super::metrics_node::register(&mut registry, &s);
    super::metrics_cache::register(&mut registry, &s.cache, &s.msg);
    let mut body = String::new();
    text::encode(&mut body, &registry).expect("writing to a String cannot fail");
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}
