//! The world's agenda: timed actions drained in (time, insertion) order, so
//! equal times never depend on a heap's whims and a run stays a pure
//! function of its seed.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use myco_core::Time;

/// Something the world will do at a given virtual time.
pub(crate) enum Action {
    /// A datagram arrives.
    Deliver {
        from: usize,
        to: usize,
        payload: Vec<u8>,
    },
    /// A stream message arrives, on a connection opened to life `boot` of
    /// `to`; a later life never gets it (that connection broke).
    Message {
        from: usize,
        to: usize,
        boot: u64,
        payload: Vec<u8>,
    },
    /// A node's timer may be due; stale unless `token` is the node's current one.
    Wake { node: usize, token: u64 },
    /// A node's first start.
    Start { node: usize },
    /// A random running node writes (the workload).
    Write,
    /// Node `node`'s disk finishes a commit (an fsync after a local write),
    /// if it still runs life `boot`.
    Commit { node: usize, boot: u64 },
}

struct Scheduled {
    at: Time,
    seq: u64,
    action: Action,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so the max-heap pops the earliest action, ties in insertion order.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Default)]
pub(crate) struct Queue {
    heap: BinaryHeap<Scheduled>,
    seq: u64,
}

impl Queue {
    pub(crate) fn push(&mut self, at: Time, action: Action) {
        self.seq += 1;
        self.heap.push(Scheduled {
            at,
            seq: self.seq,
            action,
        });
    }

    /// The earliest action due at or before `until`, with its time.
    pub(crate) fn pop_due(&mut self, until: Time) -> Option<(Time, Action)> {
        if self.heap.peek()?.at > until {
            return None;
        }
        self.heap.pop().map(|s| (s.at, s.action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_ties_in_insertion_order() {
        let mut q = Queue::default();
        q.push(Time(5), Action::Start { node: 1 });
        q.push(Time(3), Action::Start { node: 2 });
        q.push(Time(5), Action::Start { node: 3 });
        let order: Vec<usize> = std::iter::from_fn(|| q.pop_due(Time(10)))
            .map(|(_, a)| match a {
                Action::Start { node } => node,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, [2, 1, 3]);
        q.push(Time(11), Action::Write);
        assert!(q.pop_due(Time(10)).is_none(), "not due yet");
    }
}
