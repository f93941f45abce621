//! The random writes of a run: when, on which node, which key, what value.
//!
//! Draws come from the world's state stream (never the membership one), so
//! turning the workload on or off leaves the membership run unchanged.

use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::config::Workload;

/// One write to make.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) node: usize,
    pub(crate) key: String,
    /// `None` deletes.
    pub(crate) value: Option<Vec<u8>>,
}

/// Milliseconds until the next write: uniform in `0..=2/rate`, so the mean
/// is `1/rate`. Integer arithmetic only (no `ln` for an exponential draw):
/// floating-point libraries may round differently between machines, and a
/// run must replay anywhere.
pub(crate) fn gap_ms(rng: &mut StdRng, w: &Workload) -> u64 {
    let mean = (1000.0 / w.per_sec.max(0.001)).round() as u64;
    rng.random_range(0..=2 * mean).max(1)
}

/// A write on a random node of `running`. The value names the write (its
/// sequence number `seq`), padded to a random length, so a trace shows
/// which write a node holds.
pub(crate) fn draw(rng: &mut StdRng, w: &Workload, running: &[usize], seq: u64) -> Option<Write> {
    let node = *running.choose(rng)?;
    let key = format!("k{}", rng.random_range(0..w.keys.max(1)));
    let value = (!rng.random_bool(w.deletes)).then(|| {
        let mut v = format!("w{seq}").into_bytes();
        let len = rng.random_range(1..=w.max_value.max(1));
        v.resize(len.max(v.len()), b'.');
        v
    });
    Some(Write { node, key, value })
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn writes_spread_over_nodes_keys_and_kinds() {
        let w = Workload {
            per_sec: 10.0,
            keys: 4,
            deletes: 0.5,
            max_value: 16,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let writes: Vec<Write> = (0..200)
            .map(|s| draw(&mut rng, &w, &[2, 5], s).expect("a node runs"))
            .collect();
        assert!(writes.iter().all(|x| x.node == 2 || x.node == 5));
        assert!(writes.iter().any(|x| x.node == 5));
        assert!(writes.iter().any(|x| x.key == "k3"));
        assert!(writes.iter().any(|x| x.value.is_none()));
        let mut values = writes.iter().filter_map(|x| x.value.as_ref());
        assert!(values.all(|v| v.starts_with(b"w")));
        assert!(draw(&mut rng, &w, &[], 0).is_none());
        let mean = (0..1000).map(|_| gap_ms(&mut rng, &w)).sum::<u64>() / 1000;
        assert!((80..120).contains(&mean), "{mean}");
    }
}
