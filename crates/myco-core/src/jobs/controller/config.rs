//! How a controller is set up: its configuration, and what the shell
//! found running after an agent restart.

use std::time::Duration;

use crate::jobs::fence::FenceConfig;
use crate::jobs::reconcile;

/// How a controller behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerConfig {
    /// How long membership must be unchanged before this node starts or
    /// moves anything ([`reconcile::DEFAULT_SETTLE`]).
    pub settle: Duration,
    /// How long every placement input must be unchanged
    /// ([`reconcile::DEFAULT_STATE_SETTLE`]; at most `settle`).
    pub state_settle: Duration,
    /// Seeds the controller's random stream (restart jitter).
    pub seed: u64,
    /// How long an instance replaced by a rollout stays `draining` (still
    /// running, no new edge traffic) before it is stopped
    /// ([`DEFAULT_DRAIN`]).
    pub drain: Duration,
    /// How `duplicates = "never"` jobs are fenced ([`super::fence`]).
    pub fence: FenceConfig,
}

/// How long a replaced instance drains by default: long enough for the
/// edge to see `draining` (one record push, milliseconds) and for short
/// requests under way to finish; short, so a rollout step is quick.
pub const DEFAULT_DRAIN: Duration = Duration::from_millis(1_500);

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            settle: reconcile::DEFAULT_SETTLE,
            state_settle: reconcile::DEFAULT_STATE_SETTLE,
            seed: 0,
            drain: DEFAULT_DRAIN,
            fence: FenceConfig::default(),
        }
    }
}

/// A process the shell found running after an agent restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its instance id.
    pub id: String,
    /// Its job.
    pub job: String,
    /// Its slot.
    pub slot: u32,
    /// The job version it runs.
    pub version: u64,
    /// The address it was given (`ip:port`), if it has one.
    pub addr: Option<std::net::SocketAddr>,
}
