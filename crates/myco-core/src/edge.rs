//! The edge gateway's route table, as a pure function of replicated state.
//!
//! Every node proxies HTTP to ready instances anywhere in the mesh. Which
//! instances may take a request is decided here, from the same inputs on
//! every node (job records, instance records, membership), so two nodes
//! with the same view route to the same set. The agent rebuilds the table
//! when its view changes and publishes it to the proxy as an immutable
//! snapshot; the proxy only picks among what the table lists.
//!
//! The rules:
//! - an instance takes new requests when its record says `ready`, it has an
//!   address, and its node is alive or suspect (a suspect node may still be
//!   answering; a down or left node's records are stale, and its slots are
//!   being placed elsewhere);
//! - `draining` instances on live nodes are listed apart: they finish what
//!   they have and get nothing new;
//! - a job is known when it has a job record or an instance record; a known
//!   job with no ready instance is "unavailable" (503), an unknown one is
//!   "not found" (404). A stopped job stays known, so its callers get a 503
//!   that says it is stopped rather than a 404 that says it never existed.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use myco_proto::id::NodeId;
use myco_proto::instance::{InstanceRecord, InstanceState};
use myco_proto::job::{Balance, JobRecord};

use crate::MemberState;

/// One instance the edge may send requests to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The instance id.
    pub instance: String,
    /// The node that runs it.
    pub node: NodeId,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// A job's endpoints, each list sorted by instance id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobRoutes {
    /// Instances that take new requests.
    pub ready: Vec<Endpoint>,
    /// Instances finishing old requests; no new ones.
    pub draining: Vec<Endpoint>,
    /// The operator stopped the job.
    pub stopped: bool,
    /// How the job asks edges to choose among `ready` (its `[edge]`
    /// section; the default for a job known only by instance records).
    pub balance: Balance,
}

/// Every known job's routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    jobs: BTreeMap<String, JobRoutes>,
}

/// Whether a member in this state may be sent requests.
fn is_up(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

impl RouteTable {
    /// The table for these job records, instance records and members.
    /// Instances of nodes not in `members` are left out: their node is not
    /// known to be up.
    pub fn build<'a>(
        jobs: impl IntoIterator<Item = &'a JobRecord>,
        instances: impl IntoIterator<Item = &'a InstanceRecord>,
        members: &BTreeMap<NodeId, MemberState>,
    ) -> RouteTable {
        let mut table: BTreeMap<String, JobRoutes> = BTreeMap::new();
        for job in jobs {
            let routes = table.entry(job.name().to_string()).or_default();
            routes.stopped = job.stopped;
            routes.balance = job.spec.edge.balance;
        }
        for r in instances {
            let routes = table.entry(r.job.clone()).or_default();
            let up = members.get(&r.node).is_some_and(|s| is_up(*s));
            let Some(addr) = r.addr else { continue };
            if !up {
                continue;
            }
            let endpoint = Endpoint {
                instance: r.id.clone(),
                node: r.node,
                addr,
            };
            match r.state {
                InstanceState::Ready => routes.ready.push(endpoint),
                InstanceState::Draining => routes.draining.push(endpoint),
                InstanceState::Launching | InstanceState::Failed | InstanceState::Stopped => {}
            }
        }
        for routes in table.values_mut() {
            routes.ready.sort_unstable();
            routes.ready.dedup();
            routes.draining.sort_unstable();
            routes.draining.dedup();
        }
        RouteTable { jobs: table }
    }

    /// A job's routes; `None` when the job is unknown.
    pub fn get(&self, job: &str) -> Option<&JobRoutes> {
        self.jobs.get(job)
    }

    /// Every known job with its routes, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &JobRoutes)> {
        self.jobs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many jobs are known.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether no job is known.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

#[cfg(test)]
#[path = "edge_tests.rs"]
mod tests;
