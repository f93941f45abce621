//! A hybrid logical clock (Kulkarni et al., 2014), fed by the core's input
//! time so the simulator can skew and stall clocks.
//!
//! Timestamps never go backwards on a node, even if its wall clock does,
//! and a timestamp received from a peer moves the clock forward so causally
//! later writes always carry later timestamps. A peer timestamp further in
//! the future than `max_drift` is refused rather than adopted: one node with
//! a wild clock must not drag the whole mesh's clocks into the future.

use myco_proto::{NodeId, Timestamp};

/// A peer's timestamp was too far ahead of this node's clock.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "timestamp {remote_ms} ms is {ahead_ms} ms ahead of this node's clock (bound {max_ms} ms): check NTP on both nodes"
)]
pub struct ClockDrift {
    /// The remote wall time.
    pub remote_ms: u64,
    /// How far ahead it was.
    pub ahead_ms: u64,
    /// The bound.
    pub max_ms: u64,
}

/// One node's hybrid logical clock.
#[derive(Clone, Debug)]
pub struct Hlc {
    last: Timestamp,
    max_drift_ms: u64,
}

impl Hlc {
    /// A clock for `node` that refuses peers more than `max_drift_ms` ahead.
    pub fn new(node: NodeId, max_drift_ms: u64) -> Hlc {
        Hlc {
            last: Timestamp {
                wall_ms: 0,
                logical: 0,
                node,
            },
            max_drift_ms,
        }
    }

    /// The latest timestamp issued or observed.
    pub fn last(&self) -> Timestamp {
        self.last
    }

    /// A new timestamp for a local event at wall time `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> Timestamp {
        if now_ms > self.last.wall_ms {
            self.last.wall_ms = now_ms;
            self.last.logical = 0;
        } else {
            self.bump_logical();
        }
        self.last
    }

    /// Takes a peer's timestamp into account (on receiving its change).
    pub fn observe(&mut self, remote: Timestamp, now_ms: u64) -> Result<(), ClockDrift> {
        if remote.wall_ms > now_ms.saturating_add(self.max_drift_ms) {
            return Err(ClockDrift {
                remote_ms: remote.wall_ms,
                ahead_ms: remote.wall_ms - now_ms,
                max_ms: self.max_drift_ms,
            });
        }
        let wall = now_ms.max(self.last.wall_ms).max(remote.wall_ms);
        if wall == self.last.wall_ms && wall == remote.wall_ms {
            self.last.logical = self.last.logical.max(remote.logical);
            self.bump_logical();
        } else if wall == self.last.wall_ms {
            self.bump_logical();
        } else if wall == remote.wall_ms {
            self.last.wall_ms = wall;
            self.last.logical = remote.logical;
            self.bump_logical();
        } else {
            self.last.wall_ms = wall;
            self.last.logical = 0;
        }
        Ok(())
    }

    /// Moves the clock past a timestamp restored from disk, so a restarted
    /// node never issues a timestamp at or below one it issued before.
    pub fn restore(&mut self, seen: Timestamp) {
        if (seen.wall_ms, seen.logical) > (self.last.wall_ms, self.last.logical) {
            self.last.wall_ms = seen.wall_ms;
            self.last.logical = seen.logical;
        }
    }

    fn bump_logical(&mut self) {
        // 2^32 events in one millisecond cannot happen; if the counter ever
        // saturates, borrow the next millisecond rather than wrap.
        match self.last.logical.checked_add(1) {
            Some(l) => self.last.logical = l,
            None => {
                self.last.wall_ms += 1;
                self.last.logical = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = NodeId([1; 8]);
    const PEER: NodeId = NodeId([2; 8]);

    fn ts(wall_ms: u64, logical: u32) -> Timestamp {
        Timestamp {
            wall_ms,
            logical,
            node: PEER,
        }
    }

    #[test]
    fn ticks_are_strictly_increasing_even_when_wall_time_goes_back() {
        let mut c = Hlc::new(ME, 1000);
        let a = c.tick(100);
        let b = c.tick(100);
        let d = c.tick(50);
        let e = c.tick(200);
        assert!(a < b && b < d && d < e, "{a:?} {b:?} {d:?} {e:?}");
        assert_eq!(d.wall_ms, 100);
    }

    #[test]
    fn observing_a_later_peer_moves_the_clock_past_it() {
        let mut c = Hlc::new(ME, 1000);
        c.tick(100);
        c.observe(ts(500, 7), 120).unwrap();
        let t = c.tick(130);
        assert!(t > ts(500, 7));
        assert_eq!((t.wall_ms, t.logical), (500, 9));
    }

    #[test]
    fn a_peer_too_far_ahead_is_refused_and_not_adopted() {
        let mut c = Hlc::new(ME, 1000);
        c.tick(100);
        let err = c.observe(ts(5000, 0), 100).unwrap_err();
        assert_eq!(err.ahead_ms, 4900);
        assert_eq!(c.tick(101).wall_ms, 101);
    }

    #[test]
    fn restore_prevents_reissuing_old_timestamps() {
        let mut c = Hlc::new(ME, 1000);
        c.restore(Timestamp {
            wall_ms: 900,
            logical: 3,
            node: ME,
        });
        let t = c.tick(10);
        assert_eq!((t.wall_ms, t.logical), (900, 4));
    }
}
