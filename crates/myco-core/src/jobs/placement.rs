//! Placement: which node holds each slot of each job. A pure, deterministic
//! function of replicated state, so every node computes the same answer
//! from the same view and starts what lands on itself, with nobody to
//! coordinate.
//!
//! The rule, per job (jobs in name order, stopped jobs skipped):
//!
//! 1. **Eligible nodes:** up, with a manifest, every tag constraint matched,
//!    and not avoided for this job (a node that gave up on it after a crash
//!    loop, per its instance record, until `avoid_until_ms`).
//! 2. **Keep** (all jobs first, so running work is never displaced by new
//!    work): a slot with a live instance record (`launching`, `ready`, or
//!    `failed` while restarting) on an eligible node stays there if the
//!    node still fits it and, under `spread`, holds no more than its share.
//!    Two such nodes (a healed split) keep the higher ranked one.
//! 3. **Place** every other slot on a node that fits. `spread`: prefer a
//!    node whose zone (tag `zone`, absent counts as one zone) and which
//!    itself hold fewer than `ceil(count / zones)` and `ceil(count /
//!    nodes)` of the job, then the highest rendezvous rank. `pack`: the
//!    most allocated node that fits (larger of its CPU and memory shares),
//!    then the highest rank.
//!
//! The rendezvous (highest random weight) rank of a node for a slot is a
//! hash of (job, slot, node): when a node joins or leaves, only the slots
//! whose best node changed move. Capacity is accounted as slots are
//! assigned, so no node is ever given more than it offers. A slot no node
//! can hold stays pending, with the reasons.

use std::collections::BTreeMap;
use std::fmt;

use myco_proto::NodeId;
use myco_proto::instance::InstanceRecord;
use myco_proto::job::JobRecord;

mod explain;
mod hash;
mod placer;
mod scratch;
#[cfg(test)]
pub(crate) mod tests;

pub use explain::{JobPlan, Rejection, SlotPlan};
use placer::Placer;

/// Whether a member can run work, as membership says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liveness {
    /// Alive or suspect: it holds its slots.
    Up,
    /// Declared failed.
    Down,
    /// Left on purpose.
    Left,
}

/// What a node offers, from its manifest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    /// CPU in thousandths of a core.
    pub cpu_milli: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Processes and threads; `None` when the node does not say (then pids
    /// are not accounted on it).
    pub pids: Option<u64>,
}

/// One member as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// The node id.
    pub id: NodeId,
    /// Up, down or left.
    pub liveness: Liveness,
    /// Its tags; `None` until its manifest arrived (then it is not
    /// eligible: its capacity is unknown).
    pub tags: Option<BTreeMap<String, String>>,
    /// What it offers.
    pub capacity: Capacity,
    /// It is handing its instances off before it leaves (its mark in
    /// `Table::NODES`): up, but chosen for nothing.
    pub draining: bool,
}

/// Everything placement reads: one node's view of the replicated state.
#[derive(Clone, Copy, Debug)]
pub struct Cluster<'a> {
    /// Wall time (ms, the HLC's physical time): avoidances end by it.
    pub wall_ms: u64,
    /// Every member, in any order.
    pub nodes: &'a [NodeView],
    /// The current record of every job (one per name), in any order.
    pub jobs: &'a [JobRecord],
    /// Every instance record, in any order.
    pub instances: &'a [InstanceRecord],
    /// Records of other versions of the jobs (`Table::JOB_VERSIONS`), in
    /// any order: an instance of an older version that a rollout keeps
    /// holds its own version's resources. Needed only for the versions
    /// that instances run; one missing is charged at the current size.
    pub versions: &'a [JobRecord],
}

/// Where one slot goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// On this node.
    Node(NodeId),
    /// Nowhere yet, and why.
    Pending(String),
}

/// The placement of one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPlacement {
    /// The job version placed.
    pub version: u64,
    /// One entry per slot, slot 0 first.
    pub slots: Vec<Slot>,
}

/// Resources placed on one node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocated {
    /// CPU in thousandths of a core.
    pub cpu_milli: u64,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Processes and threads.
    pub pids: u64,
}

/// The outcome of [`place`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// A digest of every input placement read (normalized: what changes no
    /// decision is left out). Equal fingerprints give equal placements;
    /// the settle rule watches it.
    pub fingerprint: u64,
    /// The digest of the members' part of the inputs alone (up nodes,
    /// their tags and capacity): it changes at gossip speed, the rest at
    /// push speed, so the settle rule gives it longer.
    pub members_fingerprint: u64,
    jobs: BTreeMap<String, JobPlacement>,
    allocated: Vec<(NodeId, Allocated)>,
}

impl Placement {
    /// The placement of one job; `None` for unknown or stopped jobs.
    pub fn job(&self, name: &str) -> Option<&JobPlacement> {
        self.jobs.get(name)
    }

    /// Every placed job, by name.
    pub fn jobs(&self) -> impl Iterator<Item = (&str, &JobPlacement)> {
        self.jobs.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The `(job, slot)`s assigned to `node`, in job then slot order.
    pub fn assigned_to(&self, node: NodeId) -> impl Iterator<Item = (&str, u32)> {
        self.jobs.iter().flat_map(move |(name, p)| {
            p.slots.iter().enumerate().filter_map(move |(i, s)| {
                (*s == Slot::Node(node)).then_some((name.as_str(), i as u32))
            })
        })
    }

    /// What placement put on `node` (zero for unknown nodes).
    pub fn allocated(&self, node: NodeId) -> Allocated {
        self.allocated
            .binary_search_by_key(&node, |(id, _)| *id)
            .map(|i| self.allocated[i].1)
            .unwrap_or_default()
    }

    /// Slots assigned, over all jobs.
    pub fn assigned_count(&self) -> usize {
        let assigned = |p: &JobPlacement| {
            p.slots
                .iter()
                .filter(|s| matches!(s, Slot::Node(_)))
                .count()
        };
        self.jobs.values().map(assigned).sum()
    }
}

/// Places every job of `cluster`.
pub fn place(cluster: &Cluster<'_>) -> Placement {
    Placer::new(cluster).run(None).0
}

/// What [`place`] would do with `job` added (or replacing the job of the
/// same name), slot by slot, and why every other node was not chosen. For
/// `myco job plan`: changes nothing.
pub fn plan(cluster: &Cluster<'_>, job: &JobRecord) -> JobPlan {
    let mut jobs: Vec<JobRecord> = cluster
        .jobs
        .iter()
        .filter(|j| j.name() != job.name())
        .cloned()
        .collect();
    jobs.push(job.clone());
    let with = Cluster {
        jobs: &jobs,
        ..*cluster
    };
    let placer = Placer::new(&with);
    let target = placer.jobs.iter().position(|j| j.name() == job.name());
    let (_, plan) = placer.run(target);
    plan.unwrap_or_else(|| JobPlan::stopped(job))
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slot::Node(n) => write!(f, "{n}"),
            Slot::Pending(why) => write!(f, "pending ({why})"),
        }
    }
}
