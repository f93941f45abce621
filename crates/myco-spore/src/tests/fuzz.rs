//! Seeded fuzzing: random and mutated inputs must never panic, and a
//! mutated spore must never verify.

use super::*;

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(2024);
    let valid = small_spore();
    for i in 0..2000 {
        let len = rng.random_range(0..600);
        let mut b = vec![0u8; len];
        rng.fill(&mut b[..]);
        // Half of them get a valid prefix so parsing goes deeper.
        if i % 2 == 0 {
            let keep = rng.random_range(0..valid.len().min(40));
            b.splice(0..0, valid[..keep].iter().copied());
        }
        let _ = verify_bytes(&b);
        let _ = crate::inspect(b.as_slice());
    }
}

#[test]
fn mutated_spores_never_panic_nor_verify() {
    let mut rng = StdRng::seed_from_u64(7);
    let valid = small_spore();
    for _ in 0..2000 {
        let mut b = valid.clone();
        match rng.random_range(0..4) {
            // Several random byte changes.
            0 => {
                for _ in 0..rng.random_range(1..8) {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
            }
            // Delete a range.
            1 => {
                let i = rng.random_range(0..b.len());
                let j = rng.random_range(i..b.len().min(i + 64) + 1);
                b.drain(i..j.max(i + 1).min(b.len()));
            }
            // Insert random bytes.
            2 => {
                let i = rng.random_range(0..=b.len());
                let n = rng.random_range(1..32);
                let extra: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                b.splice(i..i, extra);
            }
            // Duplicate a chunk somewhere else.
            _ => {
                let i = rng.random_range(0..b.len());
                let j = rng.random_range(i..b.len().min(i + 100)) + 1;
                let chunk = b[i..j].to_vec();
                let at = rng.random_range(0..=b.len());
                b.splice(at..at, chunk);
            }
        }
        if b == valid {
            continue;
        }
        assert!(verify_bytes(&b).is_err(), "a mutated spore verified");
        let _ = crate::inspect(b.as_slice());
    }
}
