//! [`MemoryTokenStore`]: the token store in memory (one lock, so every operation is atomic).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::IdempotencyKey;
use crate::ports::{
    ClaimOutcome, InsertToken, Redemption, RedemptionState, RevocationProgress, TokenId,
    TokenRecord, TokenSelector, TokenStatus, TokenStore, TokenStoreError,
};

#[derive(Debug, Default)]
struct State {
    tokens: BTreeMap<TokenId, TokenRecord>,
    redemptions: BTreeMap<TokenId, Vec<Redemption>>,
}

/// The [`TokenStore`] in memory.
///
/// ```
/// use agent_mandate::adapters::memory::MemoryTokenStore;
/// let store = MemoryTokenStore::new();
/// # let _ = store;
/// ```
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    state: Mutex<State>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> MemoryTokenStore {
        MemoryTokenStore::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, TokenStoreError> {
        self.state.lock().map_err(|_| TokenStoreError::Unavailable {
            message: "the token store's lock is poisoned".into(),
        })
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn insert(&self, record: &TokenRecord) -> Result<InsertToken, TokenStoreError> {
        let mut s = self.lock()?;
        if let Some(existing) = s.tokens.get(&record.id) {
            return Ok(InsertToken::Existing(Box::new(existing.clone())));
        }
        s.tokens.insert(record.id.clone(), record.clone());
        Ok(InsertToken::Inserted)
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, TokenStoreError> {
        Ok(self.lock()?.tokens.get(id).cloned())
    }

    async fn claim(&self, redemption: &Redemption) -> Result<ClaimOutcome, TokenStoreError> {
        let mut s = self.lock()?;
        let Some(token) = s.tokens.get(&redemption.token_id) else {
            return Ok(ClaimOutcome::Unknown);
        };
        let status = token.status;
        let max = token.limits.uses.max_uses();
        let list = s
            .redemptions
            .entry(redemption.token_id.clone())
            .or_default();
        if let Some(previous) = list.iter().find(|r| r.key == redemption.key) {
            return Ok(if previous.fingerprint == redemption.fingerprint {
                ClaimOutcome::Replay(previous.clone())
            } else {
                ClaimOutcome::Conflict
            });
        }
        match status {
            TokenStatus::Active => {}
            TokenStatus::Revoked => return Ok(ClaimOutcome::Revoked),
        }
        let used = list.iter().filter(|r| r.state.counts_as_use()).count();
        if max.is_some_and(|m| used >= m as usize) {
            return Ok(ClaimOutcome::Exhausted);
        }
        let mut claimed = redemption.clone();
        claimed.state = RedemptionState::Pending;
        list.push(claimed);
        Ok(ClaimOutcome::Claimed)
    }

    async fn settle(
        &self,
        token_id: &TokenId,
        key: &IdempotencyKey,
        state: &RedemptionState,
    ) -> Result<Redemption, TokenStoreError> {
        let mut s = self.lock()?;
        let r = s
            .redemptions
            .get_mut(token_id)
            .and_then(|list| list.iter_mut().find(|r| r.key == *key))
            .ok_or_else(|| TokenStoreError::NotFound {
                entity: "redemption",
                id: format!("{token_id}/{key}"),
            })?;
        if matches!(
            r.state,
            RedemptionState::Pending | RedemptionState::Ambiguous { .. }
        ) {
            r.state = state.clone();
        }
        Ok(r.clone())
    }

    async fn redemptions(&self, token_id: &TokenId) -> Result<Vec<Redemption>, TokenStoreError> {
        Ok(self
            .lock()?
            .redemptions
            .get(token_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn redemption(
        &self,
        token_id: &TokenId,
        key: &IdempotencyKey,
    ) -> Result<Option<Redemption>, TokenStoreError> {
        Ok(self
            .lock()?
            .redemptions
            .get(token_id)
            .and_then(|list| list.iter().find(|r| r.key == *key))
            .cloned())
    }

    async fn revoke(
        &self,
        selector: &TokenSelector,
        at: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>, TokenStoreError> {
        let mut s = self.lock()?;
        let mut revoked = Vec::new();
        for t in s.tokens.values_mut() {
            if t.status == TokenStatus::Active && selector.selects(t) {
                t.status = TokenStatus::Revoked;
                t.revoked_at = Some(at);
                revoked.push(t.clone());
            }
        }
        Ok(revoked)
    }

    async fn tokens(&self, selector: &TokenSelector) -> Result<Vec<TokenRecord>, TokenStoreError> {
        Ok(self
            .lock()?
            .tokens
            .values()
            .filter(|t| selector.selects(t))
            .cloned()
            .collect())
    }

    async fn record_revocation(
        &self,
        id: &TokenId,
        progress: RevocationProgress,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        let mut s = self.lock()?;
        Ok(s.tokens.get_mut(id).map(|t| {
            if t.status == TokenStatus::Revoked {
                t.revocation = t.revocation.union(progress);
            }
            t.clone()
        }))
    }
}
