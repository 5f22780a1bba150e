//! A keyed fast hasher for the memory adapters' maps (ids are short; SipHash dominated).

use std::hash::{BuildHasher, Hasher};

/// The hasher of the memory adapters' maps: a folded 64x64->128-bit multiply per 8 bytes, keyed
/// per ledger from the standard library's random keys. Several times faster than SipHash on
/// short ids, which matters inside the lock; the random key keeps collisions unpredictable
/// from outside (the ids are the engine's own, not a cryptographic boundary).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeededState {
    seed: u64,
}

impl Default for SeededState {
    fn default() -> SeededState {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x243f_6a88_85a3_08d3);
        SeededState { seed: h.finish() }
    }
}

impl BuildHasher for SeededState {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher { acc: self.seed }
    }
}

/// See [`SeededState`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct FoldHasher {
    acc: u64,
}

pub(crate) const FOLD_A: u64 = 0x9e37_79b9_7f4a_7c15;
pub(crate) const FOLD_B: u64 = 0xa076_1d64_78bd_642f;

pub(crate) fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a).wrapping_mul(u128::from(b));
    (p as u64) ^ ((p >> 64) as u64)
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.acc = fold(self.acc ^ u64::from_le_bytes(w), FOLD_A);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.acc = fold(self.acc ^ u64::from_le_bytes(w), FOLD_A ^ rest.len() as u64);
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.acc = fold(self.acc ^ u64::from(i), FOLD_B);
    }

    fn write_u32(&mut self, i: u32) {
        self.acc = fold(self.acc ^ u64::from(i), FOLD_A);
    }

    fn write_u64(&mut self, i: u64) {
        self.acc = fold(self.acc ^ i, FOLD_A);
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        fold(self.acc, FOLD_B)
    }
}

/// A `HashMap` with [`SeededState`].
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, SeededState>;

/// A `HashSet` with [`SeededState`].
pub(crate) type FastSet<K> = std::collections::HashSet<K, SeededState>;
