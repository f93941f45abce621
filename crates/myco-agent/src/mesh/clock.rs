//! The core's clock.

use std::time::{Duration, Instant};

use myco_core::Time;

/// The core's clock: Unix milliseconds read once at start, advanced by the
/// monotonic clock. Timers never jump when NTP steps the wall clock, and the
/// HLC still gets a physical time close to everyone else's (the systemd unit
/// orders the agent after time-sync.target so the start reading is good).
#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
    wall_at_start: u64,
}

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Clock {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            start: Instant::now(),
            wall_at_start: wall,
        }
    }

    /// Core time now.
    pub fn now(&self) -> Time {
        Time(self.wall_at_start + self.start.elapsed().as_millis() as u64)
    }

    /// The monotonic instant of a core time (for sleeping until a deadline).
    pub(crate) fn instant(&self, t: Time) -> Instant {
        self.start + Duration::from_millis(t.0.saturating_sub(self.wall_at_start))
    }
}
