//! Push-pull of member lists, so that every pair of members learns of each
//! other within seconds of a join storm instead of waiting for a probe.
//!
//! SWIM spreads news by gossip, a few times each; after a storm of
//! thousands of joins some news runs out of retransmissions before it
//! reaches everyone, and a pair that missed each other then meets only
//! when one probes the other, up to a probe round (nodes × 300 ms) later.
//!
//! Every tick, a node sends a slice of its up members (in id order, from a
//! rotating cursor, as many as fit one datagram) to a random up member, a
//! push. The receiver learns what the slice tells it and answers with the
//! up members of the same id range that the slice lacks: both ends of the
//! exchange end up with the union of their views of that range. The
//! cursor sweeps the whole id space in `members / slice` pushes.
//!
//! It is fast while the view changes (pushes every tick, two of them) and
//! slow once it holds still (one push every [`CALM_PERIOD`]), so an idle
//! mesh pays about one datagram of member list per node per period.
//! It replaces foca's periodic announce, whose answer (a random sample of
//! the receiver's members) teaches a missing member only by chance.
//!
//! Received members go to foca as alive at incarnation 0: foca ignores
//! that for any member it already knows in the same or a newer life and
//! for one it holds down, so a summary can teach an unknown member but
//! never revive a dead one nor undo a suspicion.

use std::time::Duration;

use myco_proto::frame::{Peer, Summary};
use myco_proto::{Frame, NodeId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::Membership;
use super::swim::SwimOut;
use crate::stats::Stats;
use crate::time::Time;

/// Pushes per tick while the view changes.
const FAST_PUSHES: usize = 2;
/// The view holds still once nothing changed for this long.
const CALM_AFTER: Duration = Duration::from_secs(10);
/// How often a node pushes once its view holds still.
const CALM_PERIOD: Duration = Duration::from_secs(30);

/// The push-pull state of one node.
pub(super) struct PushPull {
    /// Where the next slice starts.
    cursor: NodeId,
    /// When the view last changed, or an exchange found a difference.
    changed: Time,
    /// When the next push is due once calm.
    next_calm: Time,
    /// Picks the member to push to.
    rng: StdRng,
}

impl PushPull {
    pub(super) fn new(now: Time, seed: u64) -> Self {
        PushPull {
            cursor: NodeId::default(),
            changed: now,
            next_calm: now,
            // A stream of its own, so push-pull does not shift foca's
            // random choices (probe order, gossip targets).
            rng: StdRng::seed_from_u64(seed ^ 0x7075_7368_7075_6c6c),
        }
    }

    /// Notes that the view changed, so pushes go fast for a while.
    pub(super) fn changed(&mut self, now: Time) {
        self.changed = now;
    }

    /// How many pushes are due at `now`.
    fn due(&mut self, now: Time) -> usize {
        if now.since(self.changed) < CALM_AFTER {
            self.next_calm = now + CALM_PERIOD;
            FAST_PUSHES
        } else if now >= self.next_calm {
            self.next_calm = now + CALM_PERIOD;
            1
        } else {
            0
        }
    }
}

impl Membership {
    /// Sends the pushes due at `now`, each to a random up member.
    pub(super) fn push_members(&mut self, now: Time, stats: &mut Stats) {
        for _ in 0..self.pushpull.due(now) {
            let pick = NodeId(self.pushpull.rng.random());
            let Some(to) = self.members.up_at_or_after(pick) else {
                return;
            };
            let from = self.pushpull.cursor;
            let (members, next) =
                self.members
                    .slice(self.me, from, None, &[], Summary::MEMBER_BUDGET);
            self.pushpull.cursor = next.unwrap_or_default();
            let summary = Summary {
                from,
                to: next,
                push: true,
                members,
            };
            self.send(stats, to.addr, &Frame::Summary(summary));
        }
    }

    /// A summary from a member: learn from it, and answer a push with
    /// what it lacks.
    pub(super) fn handle_summary(
        &mut self,
        now: Time,
        stats: &mut Stats,
        from: std::net::SocketAddr,
        summary: Summary,
    ) {
        if summary.to.is_some_and(|to| to <= summary.from) {
            return stats.drop("bad_summary");
        }
        if summary.push {
            let (lacking, _) = self.members.slice(
                self.me,
                summary.from,
                summary.to,
                &summary.members,
                Summary::MEMBER_BUDGET,
            );
            if !lacking.is_empty() {
                // The views differ: keep exchanging fast for a while.
                self.pushpull.changed(now);
                let answer = Summary {
                    push: false,
                    members: lacking,
                    ..summary
                };
                self.send(stats, from, &Frame::Summary(answer));
            }
            // An empty answer is not sent: the pusher learns nothing
            // from it, and an idle mesh then pays for the push alone.
        }
        let me = self.me.id;
        let news: Vec<foca::Member<Peer>> = summary
            .members
            .into_iter()
            .filter(|p| p.id != me && !self.members.knows(p))
            .map(foca::Member::alive)
            .collect();
        if news.is_empty() {
            return;
        }
        self.pushpull.changed(now);
        let mut out = SwimOut::default();
        // No broadcast: the news spreads by push-pull; gossiping each
        // one again would crowd out the news foca itself has to spread.
        if let Err(e) = self.swim.apply_many(news.into_iter(), false, &mut out) {
            tracing::debug!(node = %self.me.id, error = %e, "applying a summary failed");
        }
        self.apply(now, stats, out);
    }
}
