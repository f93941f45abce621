//! Replay protection for sealed datagrams.
//!
//! Each sender seals with a start epoch that grows on every start and a
//! counter that grows on every datagram. A receiver keeps, per sender, the
//! newest epoch seen, the highest counter and a 64-wide window below it, as
//! in IPsec and WireGuard: a datagram from an older epoch, below the window,
//! or already seen is refused. The table is bounded; when full, the sender
//! heard from least recently is forgotten.

use std::collections::BTreeMap;

use myco_proto::NodeId;

use crate::time::Time;

const WINDOW: u64 = 64;

#[derive(Clone, Copy, Debug)]
struct Window {
    epoch: u64,
    top: u64,
    seen: u64,
    last_seen: Time,
}

pub(crate) struct ReplayGuard {
    senders: BTreeMap<NodeId, Window>,
    capacity: usize,
}

impl ReplayGuard {
    pub(crate) fn new(capacity: usize) -> Self {
        ReplayGuard {
            senders: BTreeMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records the datagram and says whether it is fresh.
    pub(crate) fn accept(&mut self, now: Time, sender: NodeId, epoch: u64, counter: u64) -> bool {
        let Some(w) = self.senders.get_mut(&sender) else {
            if self.senders.len() >= self.capacity {
                self.evict_oldest();
            }
            self.senders.insert(
                sender,
                Window {
                    epoch,
                    top: counter,
                    seen: 1,
                    last_seen: now,
                },
            );
            return true;
        };
        if epoch < w.epoch {
            return false;
        }
        if epoch > w.epoch {
            *w = Window {
                epoch,
                top: counter,
                seen: 1,
                last_seen: now,
            };
            return true;
        }
        if counter > w.top {
            let shift = counter - w.top;
            w.seen = if shift >= WINDOW { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.top = counter;
        } else {
            let age = w.top - counter;
            if age >= WINDOW || w.seen & (1 << age) != 0 {
                return false;
            }
            w.seen |= 1 << age;
        }
        w.last_seen = now;
        true
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .senders
            .iter()
            .min_by_key(|(_, w)| w.last_seen)
            .map(|(id, _)| *id)
        {
            self.senders.remove(&oldest);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId([1; 8]);

    #[test]
    fn duplicates_and_old_epochs_are_refused() {
        let mut g = ReplayGuard::new(8);
        assert!(g.accept(Time(0), A, 5, 10));
        assert!(!g.accept(Time(0), A, 5, 10), "exact replay");
        assert!(g.accept(Time(0), A, 5, 12));
        assert!(g.accept(Time(0), A, 5, 11), "reordered but new");
        assert!(!g.accept(Time(0), A, 5, 11));
        assert!(!g.accept(Time(0), A, 4, 100), "older epoch");
        assert!(g.accept(Time(0), A, 6, 0), "a restart starts a new epoch");
        assert!(!g.accept(Time(0), A, 5, 13));
    }

    #[test]
    fn counters_below_the_window_are_refused() {
        let mut g = ReplayGuard::new(8);
        assert!(g.accept(Time(0), A, 1, 1));
        assert!(g.accept(Time(0), A, 1, 200));
        assert!(!g.accept(Time(0), A, 1, 136), "64 behind the top");
        assert!(g.accept(Time(0), A, 1, 137), "63 behind the top");
    }

    #[test]
    fn table_is_bounded_and_forgets_the_quietest_sender() {
        let mut g = ReplayGuard::new(2);
        assert!(g.accept(Time(1), NodeId([1; 8]), 1, 1));
        assert!(g.accept(Time(2), NodeId([2; 8]), 1, 1));
        assert!(g.accept(Time(3), NodeId([3; 8]), 1, 1));
        assert_eq!(g.len(), 2);
        // Sender 1 was evicted, so its window restarted; 2 is still known.
        assert!(!g.accept(Time(4), NodeId([2; 8]), 1, 1));
    }
}
