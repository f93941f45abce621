//! The model of a graceful stop (`myco_agent::cache::leave`): the node
//! walks its entries and sends each to the owners it has without the
//! node and without members stopping too (marked draining), skipping
//! members whose process has ended (their connections are refused);
//! passes on every write it stores from then on; leaves the membership
//! once the walk is acknowledged; and ends a moment later with what it
//! sent still delivered (`Cache::sent_out`).

use myco_core::cache::owners;
use myco_proto::cache::CacheEntry;
use rand::RngExt;

use super::{BUCKET, Event, Sim};

/// How long the walk's acknowledgements take, ms (a few entries to a few
/// thousand on loopback).
const WALK_MS: (u64, u64) = (5, 400);
/// From leaving the membership to the process's end, ms.
const END_MS: (u64, u64) = (1, 50);

impl Sim {
    /// `n` starts a graceful stop: fixes the members before and after it
    /// as it sees them, and walks its entries.
    pub(super) fn start_leave(&mut self, n: usize) {
        let me = self.ids[n];
        let mut before = self.nodes[n].view.clone();
        before.sort_unstable();
        // Not to members stopping too: the agent skips peers marked
        // draining (`leave`), which every node knows as the stop begins.
        // Handed to one that ended a moment later, a key of one copy went.
        let after: Vec<_> = before
            .iter()
            .copied()
            .filter(|id| *id != me && self.nodes[self.index(*id)].leaving.is_none())
            .collect();
        if after.is_empty() {
            // Alone: nothing to hand to; it just goes.
            self.departed.push((self.now, n));
            let life = self.nodes[n].life;
            self.depart(n, life);
            return;
        }
        self.nodes[n].leaving = Some((before, after));
        for (_, key, entry) in self.nodes[n].store.entries_after(None, usize::MAX) {
            self.pass_on_if_leaving(n, &key, &entry);
        }
        let life = self.nodes[n].life;
        let at = self.now + self.leave_rng.random_range(WALK_MS.0..=WALK_MS.1);
        self.at(at, Event::Depart { node: n, life });
    }

    /// Once `n` hands over, a version it holds goes to the owners the key
    /// has without it too (`Cache::pass_on_if_leaving`).
    pub(super) fn pass_on_if_leaving(&mut self, n: usize, key: &str, entry: &CacheEntry) {
        let Some((_, after)) = &self.nodes[n].leaving else {
            return;
        };
        // Members whose process has ended are skipped, as the agent skips
        // those whose connection is refused (`leave::Walk`): the key goes
        // to the next member in its ranking. One still up but about to end
        // is not known to it, nor to the agent.
        let reachable: Vec<_> = after
            .iter()
            .copied()
            .filter(|id| !self.cfg.skip_ended || self.nodes[self.index(*id)].up)
            .collect();
        // Every owner without it, not only the new ones: this node may
        // hold a version they lack (a writer with an old view wrote here).
        for o in owners(BUCKET, key, &reachable, self.cfg.replicas) {
            self.send_copy(n, o, key, entry);
        }
    }

    /// `n`'s walk is done: it leaves the membership, and ends shortly.
    pub(super) fn depart(&mut self, n: usize, life: u32) {
        if !self.nodes[n].up || self.nodes[n].life != life {
            return;
        }
        if self.nodes[n].leaving.is_some() {
            self.handed_over.push((self.now, n));
            self.report.handed_over += 1;
        }
        let mut next = self.members().clone();
        if next.remove(&n) {
            self.report.changes += 1;
            self.new_members(next);
        }
        let at = self.now + self.leave_rng.random_range(END_MS.0..=END_MS.1);
        self.at(at, Event::Down { node: n, life });
    }

    /// `n`'s process ends; its messages in flight still arrive.
    pub(super) fn down(&mut self, n: usize, life: u32) {
        if !self.nodes[n].up || self.nodes[n].life != life {
            return;
        }
        if self.nodes[n].leaving.take().is_some() {
            self.graceful_lives.insert((n, life));
        }
        self.nodes[n].up = false;
        self.nodes[n].life += 1;
    }
}
