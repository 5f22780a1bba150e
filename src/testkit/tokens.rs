//! Token test doubles: a deterministic [`TokenGenerator`].

use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::ports::{TokenGenerator, TokenGeneratorError};

/// A deterministic [`TokenGenerator`] for tests: SHA-256 of the seed and a counter. Never use
/// it outside tests: its values are predictable from the seed.
///
/// ```
/// use agent_mandate::ports::TokenGenerator;
/// use agent_mandate::testkit::SeededTokenGenerator;
/// let (a, b) = (SeededTokenGenerator::new(1), SeededTokenGenerator::new(1));
/// let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
/// a.fill(&mut x).unwrap();
/// b.fill(&mut y).unwrap();
/// assert_eq!(x, y);
/// ```
#[derive(Debug)]
pub struct SeededTokenGenerator {
    seed: u64,
    counter: AtomicU64,
}

impl SeededTokenGenerator {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> SeededTokenGenerator {
        SeededTokenGenerator {
            seed,
            counter: AtomicU64::new(0),
        }
    }
}

impl TokenGenerator for SeededTokenGenerator {
    fn fill(&self, out: &mut [u8]) -> Result<(), TokenGeneratorError> {
        for chunk in out.chunks_mut(32) {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let mut h = Sha256::new();
            h.update(self.seed.to_be_bytes());
            h.update(n.to_be_bytes());
            let block = h.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        Ok(())
    }
}
