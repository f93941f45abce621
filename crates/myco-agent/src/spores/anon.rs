//! The gate on fetches an unauthenticated read may cause.
//!
//! Reads are open on a loopback API, and a spore download is a read; but a
//! fetch costs a holder bandwidth and writes a replicated holder record. So
//! a caller without the token may make this node fetch only through this
//! gate: one such fetch at a time, and at most one started per
//! [`ANON_FETCH_INTERVAL`]. Everything else an anonymous caller asks for
//! is served only if it is already local. A token holder is never gated.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one unauthenticated fetch starts per this interval, per node.
pub const ANON_FETCH_INTERVAL: Duration = Duration::from_secs(10);

/// One unauthenticated fetch at a time, one start per interval.
#[derive(Debug, Default)]
pub struct AnonFetchGate {
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    running: bool,
    last_start: Option<Instant>,
}

/// Held while an unauthenticated fetch runs; dropping it frees the gate.
#[derive(Debug)]
pub struct AnonFetchPermit<'a> {
    gate: &'a AnonFetchGate,
}

impl AnonFetchGate {
    /// A permit if no unauthenticated fetch runs and none started within
    /// [`ANON_FETCH_INTERVAL`] of `now`.
    pub fn try_start(&self, now: Instant) -> Option<AnonFetchPermit<'_>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let recent = s
            .last_start
            .is_some_and(|t| now.saturating_duration_since(t) < ANON_FETCH_INTERVAL);
        if s.running || recent {
            return None;
        }
        s.running = true;
        s.last_start = Some(now);
        Some(AnonFetchPermit { gate: self })
    }
}

impl Drop for AnonFetchPermit<'_> {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        s.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time_and_one_start_per_interval() {
        let gate = AnonFetchGate::default();
        let t0 = Instant::now();
        let first = gate.try_start(t0).expect("the first is let through");
        assert!(gate.try_start(t0).is_none(), "two at once");
        drop(first);
        assert!(
            gate.try_start(t0 + ANON_FETCH_INTERVAL / 2).is_none(),
            "a second start within the interval"
        );
        let later = gate.try_start(t0 + ANON_FETCH_INTERVAL);
        assert!(later.is_some(), "one start per interval once it passed");
        assert!(
            gate.try_start(t0 + ANON_FETCH_INTERVAL * 3).is_none(),
            "still running: one at a time"
        );
    }
}
