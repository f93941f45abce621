//! The virtual network: what happens to one datagram between two nodes.

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
    pub(crate) partition: Option<Partition>,
}

impl Net {
    /// A network with latency and jitter but no fault yet.
    pub(crate) fn new(cfg: &NetConfig) -> Net {
        Net {
            latency_ms: cfg.latency.as_millis() as u64,
            jitter_ms: cfg.jitter.as_millis() as u64,
            loss: 0.0,
            duplicate: 0.0,
            partition: None,
        }
    }

    /// Turns loss and duplication on, as the safety phase starts.
    pub(crate) fn degrade(&mut self, cfg: &NetConfig) {
        self.loss = cfg.loss;
        self.duplicate = cfg.duplicate;
    }

    /// Stops every fault: loss, duplication, partition.
    pub(crate) fn calm(&mut self) {
        self.loss = 0.0;
        self.duplicate = 0.0;
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
    fn delays_stay_within_latency_plus_jitter_and_loss_is_applied() {
        let cfg = NetConfig {
            latency: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            loss: 0.5,
            duplicate: 0.5,
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
