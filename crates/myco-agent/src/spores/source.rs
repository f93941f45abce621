//! What a fetch knows of one source while it downloads: how many requests
//! it has out, and whether it may be asked now. A busy source is paused
//! for a moment, not dropped: it holds the spore and is serving others, so
//! it will serve us too. Time comes in as an argument, so the policy is
//! tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

use super::download::Source;

/// Requests in flight per source: with [`super::download::CHUNK_LEN`],
/// what one round trip to a source carries.
pub(super) const WINDOW: usize = 6;
/// Chunks that must land before a partial source that lacked one is
/// asked again.
const REST: u64 = 8;
/// The first pause after a `Busy`; each further `Busy` in a row doubles
/// it, up to [`MAX_PAUSE`].
const BUSY_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause after `Busy` answers in a row.
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The pause after a chunk timed out: the source may be overloaded or
/// gone; its next chance tells.
const TIMEOUT_PAUSE: Duration = Duration::from_secs(1);
/// Timeouts in a row (no chunk landed between them) after which a source
/// is dropped from this fetch.
const STRIKES: u32 = 3;

/// Why a request to a source failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// It answered that it cannot serve this chunk (`Lacking`, `Missing`).
    Lacking,
    /// No answer in time.
    TimedOut,
    /// An answer that cannot be right (wrong size or total).
    Bad,
    /// The request could not be queued to it.
    Unsendable,
}

/// One source's state in one fetch.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) source: Source,
    /// Requests out.
    pub(super) inflight: usize,
    /// Dropped from this fetch.
    pub(super) dead: bool,
    /// Not asked again until this many chunks have landed.
    rest_until: u64,
    /// Not asked again before this.
    paused_until: Option<Instant>,
    /// `Busy` answers since the last chunk it sent.
    busy_streak: u32,
    /// Timeouts since the last chunk it sent.
    strikes: u32,
}

impl Peer {
    pub(super) fn new(source: Source) -> Peer {
        Peer {
            source,
            inflight: 0,
            dead: false,
            rest_until: 0,
            paused_until: None,
            busy_streak: 0,
            strikes: 0,
        }
    }

    /// Whether one more request may go to it now.
    pub(super) fn can_ask(&self, landed: u64, now: Instant) -> bool {
        !self.dead
            && self.rest_until <= landed
            && self.paused_until.is_none_or(|t| t <= now)
            && self.inflight < WINDOW
    }

    /// When a pause ends, if it is paused (the fetch wakes then to ask it).
    pub(super) fn wakes_at(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|t| !self.dead && *t > now)
    }

    /// A request was sent.
    pub(super) fn asked(&mut self) {
        self.inflight += 1;
    }

    /// A chunk from it landed: it is healthy again.
    pub(super) fn sent_chunk(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
        self.busy_streak = 0;
        self.strikes = 0;
    }

    /// It answered `Busy`: paused, longer each time in a row, never dropped.
    pub(super) fn busy(&mut self, now: Instant) {
        self.inflight = self.inflight.saturating_sub(1);
        let pause = BUSY_PAUSE
            .saturating_mul(1 << self.busy_streak.min(10))
            .min(MAX_PAUSE);
        self.busy_streak += 1;
        self.paused_until = Some(now + pause);
    }

    /// A request failed (its chunk goes back to the pool, the caller's
    /// part). A holder that lacks the spore or sends bad chunks is
    /// dropped; one that times out is paused, and dropped after
    /// [`STRIKES`] in a row; a partial source rests until more chunks land.
    pub(super) fn failed(&mut self, why: Failure, landed: u64, now: Instant) {
        self.inflight = self.inflight.saturating_sub(1);
        match why {
            Failure::Bad => self.dead = true,
            Failure::Lacking if self.source.complete => self.dead = true,
            Failure::Lacking => self.rest_until = landed + REST,
            Failure::TimedOut => {
                self.strikes += 1;
                self.dead = self.strikes >= STRIKES;
                self.paused_until = Some(now + TIMEOUT_PAUSE);
                if !self.source.complete {
                    self.rest_until = landed + REST;
                }
            }
            Failure::Unsendable => self.paused_until = Some(now + BUSY_PAUSE),
        }
        tracing::debug!(from = %self.source.addr, ?why, dead = self.dead, "chunk not received");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder() -> Peer {
        Peer::new(Source {
            addr: "127.0.0.1:1".parse().unwrap(),
            complete: true,
        })
    }

    #[test]
    fn a_busy_holder_is_paused_then_asked_again_never_dropped() {
        let t0 = Instant::now();
        let mut p = holder();
        for _ in 0..50 {
            p.asked();
            p.busy(t0);
            assert!(!p.dead, "busy dropped the holder");
            assert!(!p.can_ask(0, t0), "asked again at once");
        }
        // Paused at most MAX_PAUSE, however many times in a row.
        assert!(p.can_ask(0, t0 + MAX_PAUSE));
        assert_eq!(p.wakes_at(t0), Some(t0 + MAX_PAUSE));
        assert_eq!(p.inflight, 0);
        // A chunk landing resets the backoff.
        p.asked();
        p.sent_chunk();
        p.asked();
        p.busy(t0);
        assert!(p.can_ask(0, t0 + BUSY_PAUSE));
    }

    #[test]
    fn a_holder_that_times_out_is_dropped_only_after_strikes_in_a_row() {
        let t0 = Instant::now();
        let mut p = holder();
        for _ in 1..STRIKES {
            p.asked();
            p.failed(Failure::TimedOut, 0, t0);
            assert!(!p.dead);
        }
        p.asked();
        p.sent_chunk(); // one chunk lands: the count starts over
        for _ in 1..STRIKES {
            p.asked();
            p.failed(Failure::TimedOut, 0, t0);
        }
        assert!(!p.dead);
        p.asked();
        p.failed(Failure::TimedOut, 0, t0);
        assert!(p.dead);
        assert_eq!(p.wakes_at(t0), None, "a dropped source wakes nothing");
    }

    #[test]
    fn lacking_drops_a_holder_but_rests_a_partial_source() {
        let t0 = Instant::now();
        let mut h = holder();
        h.asked();
        h.failed(Failure::Lacking, 5, t0);
        assert!(h.dead);
        let mut p = Peer::new(Source {
            complete: false,
            ..h.source
        });
        p.asked();
        p.failed(Failure::Lacking, 5, t0);
        assert!(!p.dead);
        assert!(!p.can_ask(5 + REST - 1, t0));
        assert!(p.can_ask(5 + REST, t0));
    }

    #[test]
    fn the_window_bounds_requests_out() {
        let t0 = Instant::now();
        let mut p = holder();
        for _ in 0..WINDOW {
            assert!(p.can_ask(0, t0));
            p.asked();
        }
        assert!(!p.can_ask(0, t0));
    }
}
