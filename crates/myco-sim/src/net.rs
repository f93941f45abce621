//! The virtual network: what happens to one datagram, or one stream
//! message, between two nodes.
//!
//! Stream messages model the agent's TCP+TLS connections: they pay the
//! same latency and jitter as datagrams and meet the same partitions, but
//! are never duplicated, and on each (sender, receiver) pair a message
//! never overtakes an earlier one. A random loss (`stream_loss`, which
//! `SimConfig::from_seed` sets to the datagram loss) stands for a broken
//! connection: the transport never retries, the replication protocol
//! above repairs by anti-entropy, which is the behaviour under test. Later
//! messages on the pair still arrive (the transport reconnects).

use std::collections::BTreeMap;

use rand::RngExt;
use rand::rngs::StdRng;

use crate::config::NetConfig;

/// Nodes on one side cut from the others, in both directions or one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Partition {
    /// `side[i]` says whether node `i` is on the cut side.
    pub(crate) side: Vec<bool>,
    /// Only datagrams leaving the cut side are lost.
    pub(crate) one_way: bool,
}

impl Partition {
    pub(crate) fn new(nodes: usize, cut: &[usize], one_way: bool) -> Partition {
        let mut side = vec![false; nodes];
        for &i in cut {
            side[i] = true;
        }
        Partition { side, one_way }
    }

    pub(crate) fn blocks(&self, from: usize, to: usize) -> bool {
        self.side[from] != self.side[to] && (!self.one_way || self.side[from])
    }
}

/// What becomes of a datagram.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Cut by a partition.
    Blocked,
    /// Lost at random.
    Lost,
    /// Arrives after `delay` ms, and a second copy after `copy` ms if duplicated.
    Arrives { delay: u64, copy: Option<u64> },
}

pub(crate) struct Net {
    latency_ms: u64,
    jitter_ms: u64,
    loss: f64,
    duplicate: f64,
    stream_loss: f64,
    pub(crate) partition: Option<Partition>,
    /// Per (sender, receiver), when the last stream message arrives.
    last_message: BTreeMap<(usize, usize), u64>,
}

impl Net {
    /// A network with latency and jitter but no fault yet.
    pub(crate) fn new(cfg: &NetConfig) -> Net {
        Net {
            latency_ms: cfg.latency.as_millis() as u64,
            jitter_ms: cfg.jitter.as_millis() as u64,
            loss: 0.0,
            duplicate: 0.0,
            stream_loss: 0.0,
            partition: None,
            last_message: BTreeMap::new(),
        }
    }

    /// Turns loss and duplication on, as the safety phase starts.
    pub(crate) fn degrade(&mut self, cfg: &NetConfig) {
        self.loss = cfg.loss;
        self.duplicate = cfg.duplicate;
        self.stream_loss = cfg.stream_loss;
    }

    /// Stops every fault: loss, duplication, partition.
    pub(crate) fn calm(&mut self) {
        self.loss = 0.0;
        self.duplicate = 0.0;
        self.stream_loss = 0.0;
        self.partition = None;
    }

    pub(crate) fn fate(&self, rng: &mut StdRng, from: usize, to: usize) -> Fate {
        if self.partition.as_ref().is_some_and(|p| p.blocks(from, to)) {
            return Fate::Blocked;
        }
        // Draw only for faults that are on, so a quiet run spends its
        // randomness on delays alone.
        if self.loss > 0.0 && rng.random_bool(self.loss) {
            return Fate::Lost;
        }
        let delay = self.delay(rng);
        let copy =
            (self.duplicate > 0.0 && rng.random_bool(self.duplicate)).then(|| self.delay(rng));
        Fate::Arrives { delay, copy }
    }

    /// The fate of a stream message sent at `now_ms`: like a datagram's,
    /// never duplicated, and never arriving before an earlier message of
    /// the same pair (equal arrival times keep sending order downstream).
    pub(crate) fn message(
        &mut self,
        rng: &mut StdRng,
        now_ms: u64,
        from: usize,
        to: usize,
    ) -> Fate {
        if self.partition.as_ref().is_some_and(|p| p.blocks(from, to)) {
            return Fate::Blocked;
        }
        if self.stream_loss > 0.0 && rng.random_bool(self.stream_loss) {
            return Fate::Lost;
        }
        let delay = self.delay(rng);
        let last = self.last_message.entry((from, to)).or_default();
        let arrival = (now_ms + delay).max(*last);
        *last = arrival;
        Fate::Arrives {
            delay: arrival - now_ms,
            copy: None,
        }
    }

    fn delay(&self, rng: &mut StdRng) -> u64 {
        let jitter = if self.jitter_ms == 0 {
            0
        } else {
            rng.random_range(0..=self.jitter_ms)
        };
        self.latency_ms + jitter
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rand::SeedableRng;

    use super::*;

    #[test]
    fn one_way_partition_cuts_only_datagrams_leaving_the_side() {
        let p = Partition::new(4, &[0, 1], true);
        assert!(p.blocks(0, 2));
        assert!(!p.blocks(2, 0));
        assert!(!p.blocks(0, 1));
        let both = Partition::new(4, &[0, 1], false);
        assert!(both.blocks(0, 2) && both.blocks(2, 0) && !both.blocks(2, 3));
    }

    #[test]
    fn stream_messages_keep_their_order_and_are_never_copied() {
        let cfg = NetConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(50),
            loss: 0.0,
            duplicate: 0.5,
            stream_loss: 0.0,
        };
        let mut net = Net::new(&cfg);
        net.degrade(&cfg);
        let mut rng = StdRng::seed_from_u64(3);
        let mut last = 0;
        let mut held_back = false;
        for now in 0..200 {
            match net.message(&mut rng, now, 0, 1) {
                Fate::Arrives { delay, copy: None } => {
                    assert!(now + delay >= last, "overtook an earlier message");
                    // Arriving with the previous one: held back behind it.
                    held_back |= now > 0 && now + delay == last;
                    last = now + delay;
                }
                other => panic!("no fault but {other:?}"),
            }
        }
        assert!(held_back, "a message waits behind a slower earlier one");
        net.partition = Some(Partition::new(2, &[1], true));
        assert_eq!(net.message(&mut rng, 300, 1, 0), Fate::Blocked);
        assert!(matches!(
            net.message(&mut rng, 300, 0, 1),
            Fate::Arrives { .. }
        ));
    }

    #[test]
    fn delays_stay_within_latency_plus_jitter_and_loss_is_applied() {
        let cfg = NetConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            loss: 0.5,
            duplicate: 0.5,
            stream_loss: 0.5,
        };
        let mut net = Net::new(&cfg);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            match net.fate(&mut rng, 0, 1) {
                Fate::Arrives { delay, copy: None } => assert!((10..=15).contains(&delay)),
                other => panic!("a calm network must deliver once: {other:?}"),
            }
        }
        net.degrade(&cfg);
        let fates: Vec<Fate> = (0..200).map(|_| net.fate(&mut rng, 0, 1)).collect();
        assert!(fates.contains(&Fate::Lost));
        assert!(
            fates
                .iter()
                .any(|f| matches!(f, Fate::Arrives { copy: Some(_), .. }))
        );
        net.partition = Some(Partition::new(2, &[0], false));
        assert_eq!(net.fate(&mut rng, 0, 1), Fate::Blocked);
        net.calm();
        assert!(matches!(
            net.fate(&mut rng, 0, 1),
            Fate::Arrives { copy: None, .. }
        ));
    }
}
