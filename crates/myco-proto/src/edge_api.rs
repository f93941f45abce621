//! The JSON shapes of the edge gateway's API (`GET /mesh/routes`).

use serde::{Deserialize, Serialize};

/// One instance the edge routes to (or drains).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteEndpoint {
    /// The instance id.
    pub instance: String,
    /// The node that runs it (node id).
    pub node: String,
    /// The node's name (empty until its manifest arrived).
    #[serde(default)]
    pub node_name: String,
    /// Where it listens (`ip:port`).
    pub addr: String,
    /// Requests this edge has in flight to it now.
    #[serde(default)]
    pub in_flight: u32,
    /// Whether this edge has ejected it after consecutive failures.
    #[serde(default)]
    pub ejected: bool,
}

/// One job's routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobRoute {
    /// The job's name.
    pub job: String,
    /// Instances that take new requests.
    pub ready: Vec<RouteEndpoint>,
    /// Instances finishing old requests, taking no new ones.
    pub draining: Vec<RouteEndpoint>,
    /// The operator stopped the job.
    #[serde(default)]
    pub stopped: bool,
}

/// `GET /mesh/routes`: this node's route table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Routes {
    /// Where this node's edge listens.
    pub edge: String,
    /// Every known job, by name.
    pub routes: Vec<JobRoute>,
}
