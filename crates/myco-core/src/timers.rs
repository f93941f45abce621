//! A deterministic timer queue: earliest deadline first, ties in order of
//! insertion, so two runs with the same inputs fire timers identically.

use std::collections::BTreeMap;

use crate::time::Time;

pub(crate) struct Timers<T> {
    queue: BTreeMap<(Time, u64), T>,
    seq: u64,
}

impl<T> Timers<T> {
    pub(crate) fn new() -> Self {
        Timers {
            queue: BTreeMap::new(),
            seq: 0,
        }
    }

    pub(crate) fn insert(&mut self, at: Time, timer: T) {
        self.seq += 1;
        self.queue.insert((at, self.seq), timer);
    }

    pub(crate) fn next_deadline(&self) -> Option<Time> {
        self.queue.first_key_value().map(|((at, _), _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`, if any.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<T> {
        match self.queue.first_key_value() {
            Some(((at, _), _)) if *at <= now => self.queue.pop_first().map(|(_, t)| t),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_then_insertion_order() {
        let mut t = Timers::new();
        t.insert(Time(20), "c");
        t.insert(Time(10), "a");
        t.insert(Time(10), "b");
        assert_eq!(t.next_deadline(), Some(Time(10)));
        assert_eq!(t.pop_due(Time(9)), None);
        assert_eq!(t.pop_due(Time(15)), Some("a"));
        assert_eq!(t.pop_due(Time(15)), Some("b"));
        assert_eq!(t.pop_due(Time(15)), None);
        assert_eq!(t.pop_due(Time(20)), Some("c"));
        assert_eq!(t.len(), 0);
    }
}
