//! [`ShardRouter`]: picks one of several stores (or engines, or whole port sets) by the root
//! mandate of a delegation tree.
//!
//! Budgets are per delegation root: every hold, usage sum and cap of a payment lives on the
//! accounts of one tree (I2). A service that outgrows one database can therefore give each
//! tree to one shard (a PostgreSQL database of its own, with its own audit trail) and route
//! every command of that tree there. Nothing of one tree is ever on two shards, so the
//! per-database guarantees (no overspend, one authorization per key, one order per attempt)
//! hold per tree without any cross-shard transaction. See `docs/design.md`, "Sharding by
//! root mandate".

use sha2::{Digest, Sha256};

use crate::domain::MandateId;
use crate::ports::{Store, StoreError};

/// Why a routing question has no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// A router needs at least one shard.
    #[error("a shard router needs at least one shard")]
    NoShards,
    /// A mandate was found on a shard its root does not route to: the tree was written
    /// through the wrong shard (a placement bug; nothing is moved automatically).
    #[error(
        "mandate {mandate} (root {root}) is stored on shard {found_on}, but its root routes to shard {belongs_on}"
    )]
    Misplaced {
        /// The mandate asked about.
        mandate: MandateId,
        /// Its delegation root.
        root: MandateId,
        /// The shard it was found on.
        found_on: usize,
        /// The shard its root routes to.
        belongs_on: usize,
    },
    /// A shard's store failed (names the shard).
    #[error("shard {shard}: {source}")]
    Store {
        /// The shard.
        shard: usize,
        /// The failure.
        #[source]
        source: StoreError,
    },
}

/// Routes by root mandate id over a fixed list of shards.
///
/// A root goes to shard `u64(SHA-256("agent-mandate/shard/v1\n" || root id)[..8]) mod n`:
/// stable across processes and restarts, the same in every service instance given the
/// same list in the same order. Changing the number of shards moves roots: this router
/// does not migrate anything, so the list is fixed for the life of the data (see the
/// design notes for what a resharding would take).
///
/// `T` is whatever the service keeps per shard: an `Arc<dyn Store>`, a whole
/// [`crate::ports::Ports`], or an `Engine` built on them.
///
/// ```
/// use agent_mandate::adapters::shard::ShardRouter;
/// use agent_mandate::domain::MandateId;
///
/// let router = ShardRouter::new(vec!["db-a", "db-b"]).unwrap();
/// let root = MandateId::new("mandate_root_1").unwrap();
/// let shard = router.index_for_root(&root);
/// assert!(shard < 2);
/// assert_eq!(router.for_root(&root), &["db-a", "db-b"][shard]);
/// // The same root always routes to the same shard.
/// assert_eq!(router.index_for_root(&root), shard);
/// ```
#[derive(Debug, Clone)]
pub struct ShardRouter<T> {
    shards: Vec<T>,
}

impl<T> ShardRouter<T> {
    /// A router over `shards` (in a fixed order: the order is part of the routing).
    pub fn new(shards: Vec<T>) -> Result<ShardRouter<T>, ShardError> {
        if shards.is_empty() {
            return Err(ShardError::NoShards);
        }
        Ok(ShardRouter { shards })
    }

    /// The shards, in routing order.
    pub fn shards(&self) -> &[T] {
        &self.shards
    }

    /// The number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always `false`: a router has at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The index of the shard that owns the tree rooted at `root`.
    pub fn index_for_root(&self, root: &MandateId) -> usize {
        let mut h = Sha256::new();
        h.update(b"agent-mandate/shard/v1\n");
        h.update(root.as_str().as_bytes());
        let digest = h.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let n = self.shards.len() as u64;
        // The remainder is below the shard count, which is a usize.
        usize::try_from(u64::from_be_bytes(first) % n).unwrap_or(0)
    }

    /// The shard that owns the tree rooted at `root`.
    pub fn for_root(&self, root: &MandateId) -> &T {
        &self.shards[self.index_for_root(root)]
    }

    /// Finds the shard that stores `mandate` (any mandate of a tree, leaf or root) by asking
    /// each shard's store for its chain, and checks that its root routes there; `None` when
    /// no shard has it. A service calls it once per mandate it has not seen (mandates never
    /// move) when a command names a leaf and not its root.
    pub async fn locate<'a, F>(
        &'a self,
        mandate: &MandateId,
        store_of: F,
    ) -> Result<Option<usize>, ShardError>
    where
        F: Fn(&'a T) -> &'a dyn Store,
    {
        for (i, shard) in self.shards.iter().enumerate() {
            let chain = store_of(shard)
                .chain(mandate)
                .await
                .or_else(|e| match e {
                    StoreError::NotFound { .. } => Ok(Vec::new()),
                    other => Err(other),
                })
                .map_err(|source| ShardError::Store { shard: i, source })?;
            let Some(root) = chain.last() else { continue };
            let belongs_on = self.index_for_root(root.id());
            if belongs_on != i {
                return Err(ShardError::Misplaced {
                    mandate: mandate.clone(),
                    root: root.id().clone(),
                    found_on: i,
                    belongs_on,
                });
            }
            return Ok(Some(i));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_stable_and_spreads_roots() {
        assert!(matches!(
            ShardRouter::<u8>::new(Vec::new()),
            Err(ShardError::NoShards)
        ));
        let router = ShardRouter::new(vec![0u8, 1]).unwrap();
        let mut counts = [0usize; 2];
        for i in 0..200 {
            let root = MandateId::new(format!("root_{i}")).unwrap();
            let a = router.index_for_root(&root);
            assert_eq!(a, router.index_for_root(&root));
            assert_eq!(*router.for_root(&root) as usize, a);
            counts[a] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
        let one = ShardRouter::new(vec![()]).unwrap();
        assert_eq!(one.index_for_root(&MandateId::new("x").unwrap()), 0);
    }
}
