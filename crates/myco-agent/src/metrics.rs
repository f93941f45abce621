//! Prometheus metrics, encoded from a snapshot on each scrape: the core's
//! counters are the source of truth, so nothing here can drift from them.

use std::time::Duration;

use myco_core::MemberState;
use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::mesh::Snapshot;

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

/// Encodes every metric for one scrape.
pub fn encode_registry(snap: &Snapshot, uptime: Duration) -> Registry {
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
    r
}

/// The text exposition for one scrape.
pub fn encode(snap: &Snapshot, uptime: Duration) -> String {
    let mut out = String::new();
    text::encode(&mut out, &encode_registry(snap, uptime))
        .expect("writing to a String cannot fail");
    out
}
