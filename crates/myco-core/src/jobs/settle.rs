//! The settle rule: a node starts (and, for moved slots, stops) nothing
//! until its view of the placement inputs has been unchanged for a settle
//! period. See the [`crate::jobs`] docs for the guarantee this gives.
//!
//! Two periods, because the inputs travel at two speeds: membership (who
//! is up, tags, capacity) spreads by SWIM gossip over a few protocol
//! rounds, replicated records (jobs, instances) by a direct push in
//! milliseconds. The members' part of the inputs must be unchanged for the
//! long period and everything for the short one, so a deploy on a stable
//! mesh waits only the short one.

use std::time::Duration;

use crate::time::Time;

/// Tracks how long the placement inputs have been unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settle {
    period: Duration,
    fingerprint: Option<u64>,
    since: Time,
    members_period: Duration,
    members: Option<u64>,
    members_since: Time,
}

impl Settle {
    /// A tracker that needs `period` of unchanged inputs, counted from the
    /// first [`Settle::observe`].
    pub fn new(period: Duration) -> Settle {
        Settle::split(period, period)
    }

    /// A tracker that needs `members_period` without a change of the
    /// members' part of the inputs and `period` without any change.
    pub fn split(members_period: Duration, period: Duration) -> Settle {
        Settle {
            period,
            fingerprint: None,
            since: Time::ZERO,
            members_period,
            members: None,
            members_since: Time::ZERO,
        }
    }

    /// Records the fingerprint of this pass's placement inputs
    /// ([`super::placement::Placement::fingerprint`]), counting every
    /// change as a change of members too; a change restarts the period.
    pub fn observe(&mut self, now: Time, fingerprint: u64) {
        self.observe_parts(now, fingerprint, fingerprint);
    }

    /// Records the fingerprints of the members' part
    /// ([`super::placement::Placement::members_fingerprint`]) and of all
    /// of this pass's placement inputs.
    pub fn observe_parts(&mut self, now: Time, members: u64, fingerprint: u64) {
        if self.members != Some(members) {
            self.members = Some(members);
            self.members_since = now;
        }
        if self.fingerprint != Some(fingerprint) {
            self.fingerprint = Some(fingerprint);
            self.since = now;
        }
    }

    /// Like [`Settle::observe_parts`], for a change of members that only
    /// took nodes away (declared down or left; every remaining up node as
    /// it was): it needs no settle period of its own. A departure is final
    /// in SWIM (a node declared down comes back as a new life) and the node
    /// that declares it gossips it at once, so waiting buys no certainty,
    /// only delay before a dead node's slots start elsewhere (this wait was
    /// 300 ms of a ~2 s failover). Two survivors that learned it at
    /// different times place its slots alike unless they also differ in
    /// another change; one that has not learned it yet still counts the
    /// slot as held by the dead node and starts nothing. A departure never
    /// shortens a wait already running (a join or a record change just
    /// before it).
    pub fn observe_departure(&mut self, now: Time, members: u64, fingerprint: u64) {
        let (was, before, since) = (self.members, self.members_since, self.since);
        self.observe_parts(now, members, fingerprint);
        if was.is_some() && was != Some(members) {
            let as_if = |period: Duration| Time(now.0.saturating_sub(period.as_millis() as u64));
            self.members_since = as_if(self.members_period).max(before);
            self.since = as_if(self.period).max(since);
        }
    }

    /// Whether the inputs have been unchanged for the whole period.
    pub fn is_settled(&self, now: Time) -> bool {
        self.settled_at().is_some_and(|t| now >= t)
    }

    /// When the inputs will have been stable long enough if nothing
    /// changes: run a pass then. `None` before the first observation.
    pub fn settled_at(&self) -> Option<Time> {
        self.fingerprint
            .map(|_| (self.since + self.period).max(self.members_since + self.members_period))
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

    #[test]
    fn a_departure_needs_no_period_but_never_shortens_a_running_wait() {
        let mut s = Settle::split(Duration::from_millis(1_500), Duration::from_millis(300));
        s.observe_parts(Time(0), 1, 10);
        assert!(s.is_settled(Time(1_500)));
        s.observe_departure(Time(5_000), 2, 20);
        assert_eq!(s.settled_at(), Some(Time(5_000)), "settled at once");
        // A join at 6 s, then a departure at 6.1 s: the join's wait holds.
        s.observe_parts(Time(6_000), 3, 30);
        s.observe_departure(Time(6_100), 4, 40);
        assert_eq!(s.settled_at(), Some(Time(7_500)));
        // A record change at 9 s, then a departure at 9.1 s: the record's
        // short wait holds.
        s.observe_parts(Time(9_000), 4, 41);
        s.observe_departure(Time(9_100), 5, 50);
        assert_eq!(s.settled_at(), Some(Time(9_300)));
        // The same members again is no change of members: the short wait.
        s.observe_departure(Time(12_000), 5, 51);
        assert_eq!(s.settled_at(), Some(Time(12_300)));
    }

    #[test]
    fn members_need_the_long_period_records_the_short_one() {
        let mut s = Settle::split(Duration::from_millis(1_500), Duration::from_millis(300));
        s.observe_parts(Time(0), 1, 10);
        assert_eq!(
            s.settled_at(),
            Some(Time(1_500)),
            "a new view waits for both"
        );
        s.observe_parts(Time(5_000), 1, 11);
        assert_eq!(
            s.settled_at(),
            Some(Time(5_300)),
            "a record change on a stable membership waits the short period"
        );
        s.observe_parts(Time(6_000), 2, 12);
        assert!(
            !s.is_settled(Time(6_300)),
            "a member change waits the long one"
        );
        assert!(s.is_settled(Time(7_500)));
    }
}
