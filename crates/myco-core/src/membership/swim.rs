//! SWIM, from foca, fed the core's time: what foca asks for during a call
//! is collected in [`SwimOut`], then turned into datagrams, timers, member
//! table changes and events by [`Membership::apply`]. Also the two repairs
//! foca needs around rejoins and cluster growth.

use std::time::Duration;

use foca::{Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Runtime};
use myco_proto::Frame;
use myco_proto::frame::Peer;
use rand::rngs::StdRng;

use super::Membership;
use super::members::Update;
use crate::node::Event;
use crate::stats::Stats;
use crate::time::Time;

/// foca with the core's identity, codec and seeded random source.
pub(crate) type Swim = Foca<Peer, PostcardCodec, StdRng, NoCustomBroadcast>;

/// A timer foca asked for; the router fires it through
/// [`Membership::handle_timer`].
pub(crate) type SwimTimer = foca::Timer<Peer>;

/// Collects what foca asks for during one call; drained right after.
#[derive(Default)]
pub(super) struct SwimOut {
    send: Vec<(Peer, Vec<u8>)>,
    timers: Vec<(Duration, SwimTimer)>,
    notes: Vec<OwnedNotification<Peer>>,
}

impl Runtime<Peer> for SwimOut {
    fn notify(&mut self, notification: foca::Notification<'_, Peer>) {
        self.notes.push(notification.to_owned());
    }
    fn send_to(&mut self, to: Peer, data: &[u8]) {
        self.send.push((to, data.to_vec()));
    }
    fn submit_after(&mut self, event: SwimTimer, after: Duration) {
        self.timers.push((after, event));
    }
}

impl Membership {
    /// Turns what foca asked for into datagrams, timers, table changes and events.
    pub(super) fn apply(&mut self, now: Time, stats: &mut Stats, out: SwimOut) {
        for (peer, data) in out.send {
            // foca keeps this node's former identities as down members and
            // announces to them; that would be a datagram to ourselves.
            if peer.id == self.me.id {
                continue;
            }
            self.send(stats, peer.addr, &Frame::Swim(data));
        }
        for (after, timer) in out.timers {
            self.timers.push((now + after, timer));
        }
        let mut someone_up = false;
        let mut someone_down = false;
        let mut rejoined = false;
        for note in out.notes {
            match note {
                // foca also renames one down identity into another (even our
                // own former one): only an active member is up.
                OwnedNotification::Rename(_, peer)
                    if peer.id == self.me.id
                        || !self.swim.iter_members().any(|m| m.id() == &peer) => {}
                OwnedNotification::MemberUp(peer) | OwnedNotification::Rename(_, peer) => {
                    match self.members.up(now, peer) {
                        Update::Changed => {
                            tracing::debug!(node = %self.me.id, member = %peer.id, "member up");
                            someone_up = true;
                            self.pushpull.changed(now);
                            self.event(Event::MemberUp(peer));
                        }
                        Update::Full => stats.drop("members_full"),
                        Update::Unchanged => {}
                    }
                }
                OwnedNotification::MemberDown(peer) => {
                    if self.members.down(now, peer) == Update::Changed {
                        self.pushpull.changed(now);
                        tracing::debug!(node = %self.me.id, member = %peer.id, "member down");
                        someone_down = true;
                        self.event(Event::MemberDown(peer));
                    }
                }
                OwnedNotification::Active => {
                    self.connected = true;
                    self.event(Event::Connected);
                }
                OwnedNotification::Idle => {
                    self.connected = false;
                    self.event(Event::Isolated);
                }
                OwnedNotification::Rejoin(peer) => {
                    tracing::debug!(node = %self.me.id, bump = peer.bump, "rejoined after being declared down");
                    self.me = peer;
                    self.event(Event::Rejoined(peer));
                    // foca resets to disconnected on a rejoin, voiding its
                    // timers, without an Idle notice: make it re-evaluate,
                    // and say hello to the seeds until it is connected.
                    self.connected = false;
                    rejoined = true;
                }
                OwnedNotification::Defunct => {}
            }
        }
        if someone_up {
            self.request_manifests(now, stats);
        }
        if someone_down {
            // A death is news every survivor acts on (its slots move):
            // pass it on now rather than at the next gossip round or
            // probe, which cost up to a gossip period per hop. Each node
            // does this once per death it learns, so a death costs a few
            // datagrams per node; suspicion is untouched.
            let mut again = SwimOut::default();
            if let Err(e) = self.swim.gossip(&mut again) {
                tracing::debug!(node = %self.me.id, error = %e, "gossip of a death failed");
            }
            self.apply(now, stats, again);
        }
        if rejoined {
            let mut again = SwimOut::default();
            if let Err(e) = self.swim.apply_many(std::iter::empty(), true, &mut again) {
                tracing::debug!(node = %self.me.id, error = %e, "reconnect after rejoin failed");
            }
            self.apply(now, stats, again);
        }
    }

    /// A rejoin resets foca and voids its suspect-to-down timers; a suspect
    /// that never hears of its suspicion then stays suspect forever. Do
    /// what the lost timer would have done, a little later than it would.
    pub(super) fn expire_stuck_suspects(&mut self, now: Time, stats: &mut Stats) {
        let limit = self.cfg.suspect_to_down_after * 3;
        let suspects: Vec<foca::Member<Peer>> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .cloned()
            .collect();
        self.suspected_since
            .retain(|id, _| suspects.iter().any(|m| m.id().id == *id));
        let mut expired = Vec::new();
        for m in suspects {
            let since = *self.suspected_since.entry(m.id().id).or_insert(now);
            if now.since(since) >= limit {
                expired.push(foca::Member::new(
                    *m.id(),
                    m.incarnation(),
                    foca::State::Down,
                ));
            }
        }
        if expired.is_empty() {
            return;
        }
        let mut out = SwimOut::default();
        if let Err(e) = self.swim.apply_many(expired.into_iter(), true, &mut out) {
            tracing::debug!(node = %self.me.id, error = %e, "expiring stuck suspects failed");
        }
        self.apply(now, stats, out);
    }

    /// foca derives retransmissions and suspicion from the cluster size; keep
    /// them in step as the mesh grows, in powers of two to avoid churn.
    pub(super) fn resize_swim(&mut self) {
        let bucket = (self.members.len() + 1).next_power_of_two() as u32;
        if bucket != self.swim_size_bucket {
            self.swim_size_bucket = bucket;
            if let Err(e) = self.swim.set_config(self.cfg.foca(bucket as usize)) {
                tracing::debug!(node = %self.me.id, error = %e, "swim config not updated");
            }
        }
    }

    /// The identity foca holds as suspect under `id`, if any (the last one
    /// listed, as [`Membership::members`] sees it).
    pub(super) fn suspect_of(&self, id: myco_proto::NodeId) -> Option<Peer> {
        self.swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect && m.id().id == id)
            .map(|m| *m.id())
            .last()
    }
}
