//! Finding the mesh again: the join addresses a node keeps, and the pace at
//! which an isolated node says hello to them and to the members it lost.
//!
//! foca only accepts an announce addressed to a known identity, so a node
//! joins by address with `Hello` and announces to the identity the answer
//! carries. While a node sees no live peer it repeats that every
//! [`HELLO_RETRY`]: a restarted or fully isolated node finds its way back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::time::Time;

/// Most join addresses a node keeps retrying.
const MAX_SEEDS: usize = 64;
/// How often an isolated node says hello to its join addresses.
pub(crate) const HELLO_RETRY: Duration = Duration::from_secs(1);

/// The join addresses (seeds), each with when it is next said hello to,
/// and when the lost members are next knocked on.
pub(crate) struct Join {
    seeds: BTreeMap<SocketAddr, Time>,
    /// When an isolated node next says hello to the members it saw go down.
    next_knock: Time,
}

impl Join {
    pub(crate) fn new(now: Time) -> Self {
        Join {
            seeds: BTreeMap::new(),
            next_knock: now,
        }
    }

    /// Keeps `addr` as a seed, retried from `now + HELLO_RETRY` on. The
    /// caller says hello to it now. When the list is full, the lowest
    /// address is forgotten: the newest wish wins.
    pub(crate) fn add(&mut self, now: Time, addr: SocketAddr) {
        if !self.seeds.contains_key(&addr)
            && self.seeds.len() >= MAX_SEEDS
            && let Some(first) = self.seeds.keys().next().copied()
        {
            self.seeds.remove(&first);
        }
        self.seeds.insert(addr, now + HELLO_RETRY);
    }

    /// The seeds due for a hello at `now`, in address order; each is
    /// rescheduled one [`HELLO_RETRY`] later.
    pub(crate) fn due(&mut self, now: Time) -> Vec<SocketAddr> {
        let due: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(a, _)| *a)
            .collect();
        for addr in &due {
            self.seeds.insert(*addr, now + HELLO_RETRY);
        }
        due
    }

    /// Whether it is time to knock on the lost members' doors; if so, the
    /// next knock is one [`HELLO_RETRY`] later.
    ///
    /// foca stops announcing to down members once it has no live one, so
    /// after a partition in which each side saw the other down (and the
    /// seeds are gone) nobody would call first.
    pub(crate) fn knock_due(&mut self, now: Time) -> bool {
        if now < self.next_knock {
            return false;
        }
        self.next_knock = now + HELLO_RETRY;
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seeds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn a_seed_is_retried_once_per_retry_period() {
        let mut j = Join::new(Time(0));
        j.add(Time(0), addr(1));
        assert!(j.due(Time(999)).is_empty(), "the join itself said hello");
        assert_eq!(j.due(Time(1000)), vec![addr(1)]);
        assert!(j.due(Time(1500)).is_empty());
        assert_eq!(j.due(Time(2000)), vec![addr(1)]);
    }

    #[test]
    fn the_seed_list_is_bounded_and_keeps_the_newest() {
        let mut j = Join::new(Time(0));
        for port in 1..=(MAX_SEEDS as u16 + 5) {
            j.add(Time(0), addr(port));
        }
        assert_eq!(j.len(), MAX_SEEDS);
        let due = j.due(Time(1000));
        assert!(due.contains(&addr(MAX_SEEDS as u16 + 5)));
        assert!(!due.contains(&addr(1)));
        // Joining a known address again does not evict anyone.
        j.add(Time(1000), addr(MAX_SEEDS as u16 + 5));
        assert_eq!(j.len(), MAX_SEEDS);
    }

    #[test]
    fn knocks_are_paced() {
        let mut j = Join::new(Time(100));
        assert!(!j.knock_due(Time(50)));
        assert!(j.knock_due(Time(100)));
        assert!(!j.knock_due(Time(1099)));
        assert!(j.knock_due(Time(1100)));
    }
}
