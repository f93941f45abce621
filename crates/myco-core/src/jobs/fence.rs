//! Fencing for `duplicates = "never"` jobs: a lease in the manner of Gray
//! and Cheriton, with no lease holder to ask. Pure: time comes in.
//!
//! **Registered nodes** are the members this node knows that have not
//! left on purpose (`Left`), up or down, plus every node named by an
//! instance record in the replica (the replica is on disk, so a node
//! restarted alone still knows who ran work; membership alone would show
//! it only itself). A node **sees** itself and the members that are up and
//! not suspected. It **has a majority** when it sees more than half of the
//! registered nodes. Two sides of a split cannot both have one, unless
//! their registered sets differ (see ARCHITECTURE.md for that limit).
//!
//! The rules (the controller applies them to the reconciler's actions):
//! - **Minority fences at once**: a node without a majority stops every
//!   `never` instance it runs and starts none; the job's status says why
//!   ([`Quorum::reason`]).
//! - **Majority waits the lease out**: a node with a majority starts a
//!   `never` slot only when no registered node went out of its sight (not
//!   up: down, left, or unknown to membership) less than
//!   [`FenceConfig::wait`] ago by its own clock, and no live record of that
//!   slot (another id) exists on an up node. The wait counts from when
//!   this node saw the node go, which is after the split: the minority
//!   stopped by then if its own detection lags this node's by at most
//!   `T` and its stop took at most the job's `kill_timeout_ms`, both on
//!   its clock, which runs at most `rho` slower than this one.

use std::collections::BTreeMap;
use std::time::Duration;

use myco_proto::NodeId;

use super::controller::View;
use super::placement::Liveness;
use crate::time::Time;

/// How fencing is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FenceConfig {
    /// The fence time `T`: how much later than the majority side a
    /// minority node may notice that it lost the majority (it stops its
    /// `never` instances the moment it notices).
    pub fence: Duration,
    /// The drift bound `rho` between two nodes' clock rates, in parts per
    /// million.
    pub drift_ppm: u32,
    /// Added to the wait for what the bound does not cover (scheduling,
    /// a pass that runs late).
    pub margin: Duration,
}

/// The fence time by default: a minority node notices within a probe
/// round over its members plus the probe timeout (300 ms per member,
/// 150 ms), the majority no sooner than the suspicion time (1 s): 3 s
/// covers meshes of up to about ten nodes (`MYCO_FENCE_MS` for more).
pub const DEFAULT_FENCE: Duration = Duration::from_secs(3);

/// The clock rate drift assumed by default: 1 %, a hundred times what a
/// quartz crystal drifts, so a VM's clock being slewed by NTP fits too.
pub const DEFAULT_DRIFT_PPM: u32 = 10_000;

/// The margin by default.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(500);

impl Default for FenceConfig {
    fn default() -> Self {
        FenceConfig {
            fence: DEFAULT_FENCE,
            drift_ppm: DEFAULT_DRIFT_PPM,
            margin: DEFAULT_MARGIN,
        }
    }
}

impl FenceConfig {
    /// How long a majority node waits, after it saw a node go, before it
    /// starts a `never` slot: `(T + kill) * (1 + rho) + margin`, `kill`
    /// being the job's `kill_timeout_ms` (the minority's stop takes that
    /// long at most).
    pub fn wait(&self, kill: Duration) -> Duration {
        let base = self.fence + kill;
        let drift = base.as_micros() * u128::from(self.drift_ppm) / 1_000_000;
        base + Duration::from_micros(drift as u64) + self.margin
    }
}

/// What this node sees of the registered nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quorum {
    /// Nodes it sees (itself included).
    pub sees: usize,
    /// Registered nodes (itself included).
    pub registered: usize,
}

impl Quorum {
    /// Whether it sees more than half of the registered nodes.
    pub fn majority(&self) -> bool {
        2 * self.sees > self.registered
    }

    /// Why `never` jobs do not run here, in the words the API shows.
    pub fn reason(&self) -> String {
        format!(
            "no majority: sees {} of {} nodes",
            self.sees, self.registered
        )
    }
}

/// One node's fencing state: its quorum, and since when each registered
/// node has been out of its placement's sight.
#[derive(Clone, Debug, Default)]
pub struct Fence {
    quorum: Quorum,
    /// Registered nodes not up, by when this node first saw them so.
    gone: BTreeMap<NodeId, Time>,
}

impl Fence {
    /// Takes in a new view (members with their liveness, `suspects`, the
    /// instance records' nodes) at `now`.
    pub fn observe(&mut self, now: Time, me: NodeId, view: &View) {
        let liveness = |id: NodeId| view.nodes.iter().find(|n| n.id == id).map(|n| n.liveness);
        let mut registered: Vec<NodeId> = view
            .nodes
            .iter()
            .filter(|n| n.liveness != Liveness::Left)
            .map(|n| n.id)
            .chain(view.instances.iter().map(|r| r.node))
            .filter(|&id| liveness(id) != Some(Liveness::Left))
            .chain(std::iter::once(me))
            .collect();
        registered.sort_unstable();
        registered.dedup();
        let sees = registered
            .iter()
            .filter(|&&id| {
                id == me || liveness(id) == Some(Liveness::Up) && !view.suspects.contains(&id)
            })
            .count();
        self.quorum = Quorum {
            sees,
            registered: registered.len(),
        };
        // Out of sight: every node placement does not count as up, those
        // that left included (what they ran may still be stopping).
        let out: Vec<NodeId> = registered
            .iter()
            .copied()
            .chain(view.nodes.iter().map(|n| n.id))
            .filter(|&id| id != me && liveness(id) != Some(Liveness::Up))
            .collect();
        self.gone.retain(|id, _| out.contains(id));
        for id in out {
            self.gone.entry(id).or_insert(now);
        }
    }

    /// This node's quorum as last observed.
    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    /// When the lease of every node gone so far has surely run out, for a
    /// job whose wait is `wait` (None: no node is out of sight).
    pub fn clear_at(&self, wait: Duration) -> Option<Time> {
        self.gone.values().max().map(|&t| t + wait)
    }
}

#[cfg(test)]
mod tests;
