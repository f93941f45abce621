//! The two hashes placement uses. Both are fixed functions of their input
//! (no per-process seed), so every node on every platform ranks alike.

/// FNV-1a, 64 bit, over a sequence of fields.
pub(super) struct Fnv(u64);

impl Fnv {
    pub(super) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(super) fn bytes(&mut self, b: &[u8]) -> &mut Fnv {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub(super) fn u64(&mut self, v: u64) -> &mut Fnv {
        self.bytes(&v.to_be_bytes())
    }

    /// A string and its length, so `("ab", "c")` and `("a", "bc")` differ.
    pub(super) fn str(&mut self, s: &str) -> &mut Fnv {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    pub(super) fn finish(&self) -> u64 {
        self.0
    }
}

/// The SplitMix64 finalizer: a bijection whose every output bit depends on
/// every input bit, so `mix(key ^ node)` orders nodes like a fresh random
/// permutation per key. That is what rendezvous hashing needs.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
