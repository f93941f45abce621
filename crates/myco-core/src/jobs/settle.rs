//! The settle rule: a node starts (and, for moved slots, stops) nothing
//! until its view of the placement inputs has been unchanged for a settle
//! period. See the [`crate::jobs`] docs for the guarantee this gives.

use std::time::Duration;

use crate::time::Time;

/// Tracks how long the placement inputs have been unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settle {
    period: Duration,
    fingerprint: Option<u64>,
    since: Time,
}

impl Settle {
    /// A tracker that needs `period` of unchanged inputs, counted from the
    /// first [`Settle::observe`].
    pub fn new(period: Duration) -> Settle {
        Settle {
            period,
            fingerprint: None,
            since: Time::ZERO,
        }
    }

    /// Records the fingerprint of this pass's placement inputs
    /// ([`super::placement::Placement::fingerprint`]); a change restarts
    /// the period.
    pub fn observe(&mut self, now: Time, fingerprint: u64) {
        if self.fingerprint != Some(fingerprint) {
            self.fingerprint = Some(fingerprint);
            self.since = now;
        }
    }

    /// Whether the inputs have been unchanged for the whole period.
    pub fn is_settled(&self, now: Time) -> bool {
        self.settled_at().is_some_and(|t| now >= t)
    }

    /// When the inputs will have been stable long enough if nothing
    /// changes: run a pass then. `None` before the first observation.
    pub fn settled_at(&self) -> Option<Time> {
        self.fingerprint.map(|_| self.since + self.period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_only_after_a_full_period_without_change() {
        let mut s = Settle::new(Duration::from_millis(1_000));
        assert!(!s.is_settled(Time(10_000)), "nothing observed yet");
        s.observe(Time(0), 1);
        assert!(!s.is_settled(Time(999)));
        s.observe(Time(500), 1);
        assert!(
            s.is_settled(Time(1_000)),
            "the same fingerprint does not restart"
        );
        s.observe(Time(1_200), 2);
        assert!(!s.is_settled(Time(2_100)));
        assert_eq!(s.settled_at(), Some(Time(2_200)));
        assert!(s.is_settled(Time(2_200)));
    }
}
