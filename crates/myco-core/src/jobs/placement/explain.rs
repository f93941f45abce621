//! The explanation `myco job plan` prints: per slot, the chosen node and,
//! for every other node, why it was not chosen.

use std::fmt;

use myco_proto::NodeId;
use myco_proto::job::JobRecord;

use super::Slot;
use super::placer::{Need, Node, Placer};

/// Why a node was not chosen for a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Declared failed.
    Down,
    /// Left the mesh.
    Left,
    /// Up, but its manifest (tags, capacity) has not arrived yet.
    NoManifest,
    /// Up, but handing its instances off before it leaves.
    Draining,
    /// A tag constraint is not matched, e.g. `zone=b`.
    Constraint(String),
    /// The job's driver needs what the node's manifest does not offer
    /// (`microvm`: KVM and QEMU, the `myco.microvm` tag).
    NoDriver(&'static str),
    /// It gave up on this job after a crash loop; avoided until then
    /// (wall ms).
    Avoided {
        /// End of the avoidance, wall ms.
        until_ms: u64,
    },
    /// Not enough of one resource left.
    Insufficient {
        /// `cpu`, `memory` or `pids`.
        resource: &'static str,
        /// What one instance needs.
        need: u64,
        /// What the node had free when the slot was placed.
        free: u64,
    },
    /// It (or its zone) already holds its share of this job's slots.
    SpreadLimit,
    /// It could hold the slot, but another node ranked higher.
    Outranked,
}

impl Rejection {
    /// The reason without per-node figures, to count nodes by reason.
    pub fn summary(&self) -> String {
        match self {
            Rejection::Constraint(c) => format!("constraint {c} not matched"),
            Rejection::Avoided { .. } => "avoided after a crash loop".into(),
            Rejection::Insufficient { resource, need, .. } => {
                format!("insufficient {resource} (need {need}{})", unit(resource))
            }
            other => other.to_string(),
        }
    }
}

fn unit(resource: &str) -> &'static str {
    match resource {
        "memory" => " MB",
        "cpu" => " milli",
        _ => "",
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Down => f.write_str("down"),
            Rejection::Left => f.write_str("left"),
            Rejection::NoManifest => f.write_str("manifest not yet known"),
            Rejection::Draining => f.write_str("draining: leaving the mesh"),
            Rejection::Constraint(c) => write!(f, "constraint {c} not matched"),
            Rejection::NoDriver(d) => write!(f, "cannot run {d} instances (no KVM or no QEMU)"),
            Rejection::Avoided { until_ms } => {
                write!(f, "avoided after a crash loop until {until_ms} ms")
            }
            Rejection::Insufficient {
                resource,
                need,
                free,
            } => {
                let u = unit(resource);
                write!(
                    f,
                    "insufficient {resource} (need {need}{u}, free {free}{u})"
                )
            }
            Rejection::SpreadLimit => f.write_str("spread limit: already holds its share"),
            Rejection::Outranked => f.write_str("fits, ranked lower"),
        }
    }
}

/// One slot of a [`JobPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotPlan {
    /// The slot number.
    pub slot: u32,
    /// Where it goes.
    pub outcome: Slot,
    /// It stays where it runs now.
    pub kept: bool,
    /// Every node not chosen, and why (empty for a kept slot).
    pub rejected: Vec<(NodeId, Rejection)>,
}

/// What [`super::plan`] reports for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPlan {
    /// The job's name.
    pub job: String,
    /// The version planned.
    pub version: u64,
    /// One entry per slot, slot 0 first (none for a stopped job).
    pub slots: Vec<SlotPlan>,
}

/// What the placer knew when it chose a node for a slot.
pub(super) struct Context<'c> {
    pub(super) need: &'c Need,
    pub(super) chosen: Option<u32>,
    pub(super) over_share: &'c dyn Fn(u32) -> bool,
}

/// The resource node `n` lacks for `need`, if any.
pub(super) fn shortfall(n: &Node, need: &Need) -> Option<Rejection> {
    let short = |resource, need: u64, free: u64| {
        (free < need).then_some(Rejection::Insufficient {
            resource,
            need,
            free,
        })
    };
    short("memory", need.mem, n.free_mem)
        .or_else(|| short("cpu", need.cpu, n.free_cpu))
        .or_else(|| short("pids", need.pids, n.free_pids))
}

impl JobPlan {
    pub(super) fn new(job: &JobRecord) -> JobPlan {
        JobPlan {
            job: job.name().to_string(),
            version: job.version,
            slots: Vec::new(),
        }
    }

    pub(super) fn stopped(job: &JobRecord) -> JobPlan {
        JobPlan::new(job)
    }

    pub(super) fn keep(&mut self, slot: u32, node: NodeId) {
        self.slots.push(SlotPlan {
            slot,
            outcome: Slot::Node(node),
            kept: true,
            rejected: Vec::new(),
        });
    }

    pub(super) fn place(&mut self, slot: u32, p: &Placer<'_>, j: usize, ctx: &Context<'_>) {
        let mut rejected = Vec::new();
        for (n, view) in p.views.iter().enumerate() {
            if Some(n as u32) == ctx.chosen {
                continue;
            }
            let why = if p.is_eligible(j, n) {
                shortfall(&p.nodes[n], ctx.need).unwrap_or(if (ctx.over_share)(n as u32) {
                    Rejection::SpreadLimit
                } else {
                    Rejection::Outranked
                })
            } else {
                p.ineligible(j, n).unwrap_or(Rejection::NoManifest)
            };
            rejected.push((view.id, why));
        }
        let outcome = match ctx.chosen {
            Some(n) => Slot::Node(p.views[n as usize].id),
            None => Slot::Pending(p.pending_reason(j)),
        };
        self.slots.push(SlotPlan {
            slot,
            outcome,
            kept: false,
            rejected,
        });
        self.slots.sort_by_key(|s| s.slot);
    }
}
