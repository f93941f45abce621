//! The route table as the proxy reads it: the core's
//! [`myco_core::edge::RouteTable`], rebuilt when the replicated view or
//! membership changes, and published as an immutable snapshot swapped
//! atomically (`arc-swap`): a request loads it without a lock and without
//! allocating, and a rebuild never waits for requests.
//!
//! Each instance's [`Upstream`] (requests in flight, failure streak,
//! ejection) and each job's [`JobMetrics`] are carried over from the
//! previous snapshot, so a rebuild keeps what the balancer learned.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use std::sync::atomic::AtomicUsize;

use myco_core::edge::{Endpoint, RouteTable};
use myco_core::{MemberState, edge};
use myco_proto::id::NodeId;
use myco_proto::job::Balance;
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::balance::{Hop, Upstream};
use super::metrics::JobMetrics;
use crate::jobs::workflow;
use crate::mesh::MeshHandle;

/// How long changes are gathered before one rebuild.
const COALESCE: Duration = Duration::from_millis(20);
/// A rebuild happens at least this often, whatever the events said (an
/// event lost to a lagging subscriber, a member turning suspect).
const REFRESH: Duration = Duration::from_secs(1);

/// One job as the proxy sees it.
#[derive(Debug)]
pub struct JobEntry {
    /// Instances that take new requests.
    pub ready: Vec<Arc<Upstream>>,
    /// Instances finishing old requests.
    pub draining: Vec<Arc<Upstream>>,
    /// The operator stopped the job.
    pub stopped: bool,
    /// The job's counters.
    pub metrics: Arc<JobMetrics>,
    /// How the job asks to be balanced (`[edge] balance`).
    pub balance: Balance,
    /// The round-robin position, carried across rebuilds like `metrics`.
    pub turn: Arc<AtomicUsize>,
}

/// What the route table is built from: the core's table and where each
/// member's relay listens (its mesh address).
#[derive(Debug, Default, PartialEq)]
pub struct View {
    /// The core's table.
    pub table: RouteTable,
    /// Each member's mesh (and relay) address.
    pub nodes: BTreeMap<NodeId, SocketAddr>,
}

/// How this edge reaches instances (see [`Hop`]).
#[derive(Clone, Debug, Default)]
pub struct HopRule {
    /// This node; `None` (no mesh: unit tests) sends everything direct.
    pub me: Option<NodeId>,
    /// Send to remote instances directly in plaintext rather than through
    /// their node's relay (the operator's choice for a trusted LAN).
    pub direct: bool,
}

impl HopRule {
    /// How to reach an instance on `node`.
    pub fn hop(&self, node: NodeId, nodes: &BTreeMap<NodeId, SocketAddr>) -> Hop {
        match self.me {
            None => Hop::Direct,
            Some(me) if me == node => Hop::Local,
            Some(_) if self.direct => Hop::Direct,
            Some(_) => nodes
                .get(&node)
                .and_then(|a| axum::http::uri::Authority::try_from(a.to_string()).ok())
                // The core lists only members' instances: unreachable.
                .map_or(Hop::Direct, Hop::Relay),
        }
    }
}

/// An immutable route table.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every known job, by name.
    pub jobs: BTreeMap<String, JobEntry>,
}

impl Snapshot {
    /// The snapshot of `view`, reusing `prev`'s upstream state and metrics.
    pub fn build(view: &View, rule: &HopRule, prev: &Snapshot) -> Snapshot {
        let table = &view.table;
        let mut known: BTreeMap<(&str, std::net::SocketAddr), &Arc<Upstream>> = BTreeMap::new();
        for e in prev.jobs.values() {
            for u in e.ready.iter().chain(&e.draining) {
                known.insert((u.instance.as_str(), u.addr), u);
            }
        }
        let upstream = |e: &Endpoint| {
            let hop = rule.hop(e.node, &view.nodes);
            known
                .get(&(e.instance.as_str(), e.addr))
                .filter(|u| u.hop == hop)
                .map(|u| Arc::clone(u))
                .unwrap_or_else(|| {
                    Arc::new(Upstream::new(e.instance.clone(), e.node, e.addr).reached_by(hop))
                })
        };
        let jobs = table
            .iter()
            .map(|(name, r)| {
                let before = prev.jobs.get(name);
                let entry = JobEntry {
                    ready: r.ready.iter().map(upstream).collect(),
                    draining: r.draining.iter().map(upstream).collect(),
                    stopped: r.stopped,
                    metrics: before.map(|e| e.metrics.clone()).unwrap_or_default(),
                    balance: r.balance,
                    turn: before.map(|e| e.turn.clone()).unwrap_or_default(),
                };
                (name.to_string(), entry)
            })
            .collect();
        Snapshot { jobs }
    }
}

/// The published table; clones share it.
#[derive(Clone)]
pub struct Routes {
    current: Arc<ArcSwap<Snapshot>>,
    /// The edge's clock origin: ejection times are milliseconds since.
    epoch: std::time::Instant,
    rule: Arc<HopRule>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new(HopRule::default())
    }
}

impl Routes {
    /// An empty table whose instances will be reached per `rule`.
    pub fn new(rule: HopRule) -> Self {
        Routes {
            current: Arc::default(),
            epoch: std::time::Instant::now(),
            rule: Arc::new(rule),
        }
    }

    /// Milliseconds on the edge's clock (for ejections).
    pub fn now_ms(&self) -> u64 {
        self.ms_at(std::time::Instant::now())
    }

    /// `at` on the edge's clock, in milliseconds (a time already read).
    pub fn ms_at(&self, at: std::time::Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// The table now (a cheap guard; hold it for one request).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The table now, to keep.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `snapshot` as it is (tests build their own).
    #[cfg(test)]
    pub(crate) fn store(&self, snapshot: Snapshot) {
        self.current.store(Arc::new(snapshot));
    }

    /// Replaces the table with the one for `view`.
    pub fn publish(&self, view: &View) {
        let next = Snapshot::build(view, &self.rule, &self.current.load());
        self.current.store(Arc::new(next));
    }
}

/// The core's table, and members' addresses, for what `mesh` holds now.
pub fn table_of(mesh: &MeshHandle) -> View {
    let snap = mesh.snapshot();
    let members: BTreeMap<NodeId, MemberState> =
        snap.members.iter().map(|m| (m.peer.id, m.state)).collect();
    let nodes = snap
        .members
        .iter()
        .map(|m| (m.peer.id, m.peer.addr))
        .collect();
    let jobs = workflow::all_jobs(mesh);
    let instances = workflow::instances(mesh, None);
    View {
        table: edge::RouteTable::build(&jobs, &instances, &members),
        nodes,
    }
}

/// Keeps `routes` equal to the table of `mesh` until the mesh stops:
/// rebuilds after changes to jobs, instances or members (gathered for
/// [`COALESCE`]) and every [`REFRESH`], and publishes only when the table
/// changed.
pub async fn follow(mesh: MeshHandle, routes: Routes) {
    let mut events = mesh.subscribe();
    let mut last = table_of(&mesh);
    routes.publish(&last);
    let mut refresh = tokio::time::interval(REFRESH);
    let mut dirty_since: Option<Instant> = None;
    loop {
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            e = events.recv() => match e {
                Ok(e) if crate::jobs::view::concerns_view(&e) => {
                    dirty_since.get_or_insert_with(Instant::now);
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    dirty_since.get_or_insert_with(Instant::now);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(dirty_since.map_or(far, |t| t + COALESCE)), if dirty_since.is_some() => {
                dirty_since = None;
                last = republish(&mesh, &routes, last);
            }
            _ = refresh.tick() => last = republish(&mesh, &routes, last),
        }
    }
}

fn republish(mesh: &MeshHandle, routes: &Routes, last: View) -> View {
    let table = table_of(mesh);
    if table != last {
        tracing::debug!(jobs = table.table.len(), "edge routes changed");
        routes.publish(&table);
    }
    table
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use myco_proto::instance::{INSTANCE_RECORD_FORMAT, InstanceRecord, InstanceState};

    use super::*;

    fn rec(slot: u32, port: u16) -> InstanceRecord {
        let node = NodeId::from_u64(1);
        InstanceRecord {
            format: INSTANCE_RECORD_FORMAT,
            id: InstanceRecord::id_for("web", slot, 1, node),
            job: "web".into(),
            slot,
            version: 1,
            node,
            state: InstanceState::Ready,
            addr: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            digest: String::new(),
            restarts: 0,
            last_exit: None,
            reason: String::new(),
            avoid_until_ms: None,
            since_ms: 0,
        }
    }

    fn table(recs: &[InstanceRecord]) -> View {
        let members = [(NodeId::from_u64(1), MemberState::Alive)].into();
        View {
            table: RouteTable::build([], recs, &members),
            nodes: BTreeMap::new(),
        }
    }

    #[test]
    fn a_rebuild_keeps_what_the_balancer_learned() {
        let routes = Routes::default();
        routes.publish(&table(&[rec(0, 1000), rec(1, 1001)]));
        let before = routes.load_full();
        let web = &before.jobs["web"];
        let _busy = web.ready[0].begin();
        web.metrics.request();
        // Slot 1 moves to another port (a new instance there); slot 2 appears.
        routes.publish(&table(&[rec(0, 1000), rec(1, 1002), rec(2, 1003)]));
        let after = routes.load_full();
        let web2 = &after.jobs["web"];
        assert_eq!(web2.ready.len(), 3);
        assert!(
            Arc::ptr_eq(&web.ready[0], &web2.ready[0]),
            "same instance, same state"
        );
        assert_eq!(web2.ready[0].in_flight(), 1);
        assert!(
            !Arc::ptr_eq(&web.ready[1], &web2.ready[1]),
            "new address, fresh state"
        );
        assert_eq!(web2.metrics.requests(), 1, "job metrics carried over");
        // The old snapshot is untouched for whoever still holds it.
        assert_eq!(before.jobs["web"].ready.len(), 2);
    }
}
