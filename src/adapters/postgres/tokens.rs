//! [`PostgresTokenStore`]: the token store on PostgreSQL (migration 5). A claim and a
//! revocation lock the token's row (`SELECT ... FOR UPDATE`) in their transaction, so they
//! never interleave, from any number of service instances.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::IsolationLevel;

use super::schema::prepare;
use super::tx::{client, in_transaction, PortError, Tx};
use crate::domain::IdempotencyKey;
use crate::ports::{
    ClaimOutcome, InsertToken, Redemption, RedemptionState, RevocationProgress, TokenId,
    TokenRecord, TokenSelector, TokenStatus, TokenStore, TokenStoreError,
};

impl PortError for TokenStoreError {
    fn unavailable(message: String) -> Self {
        TokenStoreError::Unavailable { message }
    }
    fn other(error: Box<dyn std::error::Error + Send + Sync>) -> Self {
        TokenStoreError::Other(error)
    }
}

/// The [`TokenStore`] on PostgreSQL.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use agent_mandate::adapters::postgres::{PostgresStore, PostgresTokenStore};
/// let store = PostgresStore::connect(&std::env::var("DATABASE_URL")?).await?;
/// let tokens = PostgresTokenStore::from_pool(store.pool().clone()).await?;
/// # let _ = tokens;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresTokenStore {
    pool: Pool,
    retries: u32,
}

impl std::fmt::Debug for PostgresTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresTokenStore").finish_non_exhaustive()
    }
}

impl PostgresTokenStore {
    /// Uses an existing pool (for example [`super::PostgresStore::pool`]) and applies the
    /// migrations (a no-op when they are applied already).
    pub async fn from_pool(pool: Pool) -> Result<PostgresTokenStore, TokenStoreError> {
        let retries = 8;
        prepare(&pool, None, retries, true).await?;
        Ok(PostgresTokenStore { pool, retries })
    }

    /// Like [`PostgresTokenStore::from_pool`] but runs no migration: checks that the schema
    /// is current.
    pub async fn from_pool_checked(pool: Pool) -> Result<PostgresTokenStore, TokenStoreError> {
        let retries = 8;
        prepare(&pool, None, retries, false).await?;
        Ok(PostgresTokenStore { pool, retries })
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, Tx<TokenStoreError>> {
    serde_json::to_string(v).map_err(|e| Tx::Fail(TokenStoreError::Other(Box::new(e))))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, body: &str) -> Result<T, TokenStoreError> {
    serde_json::from_str(body).map_err(|e| TokenStoreError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

async fn read_token<C: GenericClient>(
    c: &C,
    id: &str,
    lock: bool,
) -> Result<Option<TokenRecord>, Tx<TokenStoreError>> {
    let sql = if lock {
        "SELECT body FROM tokens WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT body FROM tokens WHERE id = $1"
    };
    match c.query_opt(sql, &[&id]).await? {
        None => Ok(None),
        Some(row) => {
            let body: String = row.try_get(0)?;
            decode(id, &body).map(Some).map_err(Tx::Fail)
        }
    }
}

async fn read_redemptions<C: GenericClient>(
    c: &C,
    id: &str,
) -> Result<Vec<Redemption>, Tx<TokenStoreError>> {
    let rows = c
        .query(
            "SELECT body FROM token_redemptions WHERE token_id = $1 ORDER BY seq",
            &[&id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let body: String = r.try_get(0)?;
            decode(id, &body).map_err(Tx::Fail)
        })
        .collect()
}

async fn selected_ids<C: GenericClient>(
    c: &C,
    selector: &TokenSelector,
) -> Result<Vec<String>, Tx<TokenStoreError>> {
    let (sql, arg) = match selector {
        TokenSelector::Token { token_id } => (
            "SELECT id FROM tokens WHERE id = $1 ORDER BY id",
            token_id.to_string(),
        ),
        TokenSelector::Issuer { actor_id } => (
            "SELECT id FROM tokens WHERE issuer = $1 ORDER BY id",
            actor_id.to_string(),
        ),
        TokenSelector::Credential { credential } => (
            "SELECT id FROM tokens WHERE source_credential = $1 ORDER BY id",
            credential.to_string(),
        ),
        TokenSelector::Mandate { mandate_id } => (
            "SELECT token_id FROM token_lineage WHERE mandate_id = $1 ORDER BY token_id",
            mandate_id.to_string(),
        ),
    };
    let rows = c.query(sql, &[&arg]).await?;
    rows.iter()
        .map(|r| r.try_get::<_, String>(0).map_err(Tx::from))
        .collect()
}

#[async_trait]
impl TokenStore for PostgresTokenStore {
    async fn insert(&self, record: &TokenRecord) -> Result<InsertToken, TokenStoreError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            TokenStoreError,
            |tx| {
                let inserted = tx
                    .execute(
                        "INSERT INTO tokens (id, status, issuer, source_credential, mandate_id, body) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                        &[
                            &record.id.as_str(),
                            &record.status.as_str(),
                            &record.issuer.as_str(),
                            &record.source_credential.as_str(),
                            &record.mandate_id.as_str(),
                            &encode(record)?,
                        ],
                    )
                    .await?;
                if inserted == 0 {
                    match read_token(&tx, record.id.as_str(), false).await? {
                        Some(existing) => InsertToken::Existing(Box::new(existing)),
                        None => {
                            return Err(Tx::Fail(TokenStoreError::Unavailable {
                                message: "a token row vanished during insert".into(),
                            }))
                        }
                    }
                } else {
                    let mut lineage = record.lineage.clone();
                    lineage.push(record.mandate_id.clone());
                    for m in &lineage {
                        tx.execute(
                            "INSERT INTO token_lineage (token_id, mandate_id) VALUES ($1, $2) \
                             ON CONFLICT DO NOTHING",
                            &[&record.id.as_str(), &m.as_str()],
                        )
                        .await?;
                    }
                    InsertToken::Inserted
                }
            }
        )
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, TokenStoreError> {
        let c = client::<TokenStoreError>(&self.pool).await?;
        super::tx::once(read_token(&c, id.as_str(), false).await)
    }

    async fn claim(&self, redemption: &Redemption) -> Result<ClaimOutcome, TokenStoreError> {
        let id = redemption.token_id.to_string();
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            TokenStoreError,
            |tx| {
                match read_token(&tx, &id, true).await? {
                    None => ClaimOutcome::Unknown,
                    Some(token) => {
                        let list = read_redemptions(&tx, &id).await?;
                        if let Some(previous) = list.iter().find(|r| r.key == redemption.key) {
                            if previous.fingerprint == redemption.fingerprint {
                                ClaimOutcome::Replay(previous.clone())
                            } else {
                                ClaimOutcome::Conflict
                            }
                        } else if token.status == TokenStatus::Revoked {
                            ClaimOutcome::Revoked
                        } else if token.limits.uses.max_uses().is_some_and(|m| {
                            list.iter().filter(|r| r.state.counts_as_use()).count() >= m as usize
                        }) {
                            ClaimOutcome::Exhausted
                        } else {
                            let mut claimed = redemption.clone();
                            claimed.state = RedemptionState::Pending;
                            tx.execute(
                                "INSERT INTO token_redemptions (token_id, key, seq, body) \
                                 VALUES ($1, $2, $3, $4)",
                                &[
                                    &id,
                                    &claimed.key.as_str(),
                                    &(list.len() as i64),
                                    &encode(&claimed)?,
                                ],
                            )
                            .await?;
                            ClaimOutcome::Claimed
                        }
                    }
                }
            }
        )
    }

    async fn settle(
        &self,
        token_id: &TokenId,
        key: &IdempotencyKey,
        state: &RedemptionState,
    ) -> Result<Redemption, TokenStoreError> {
        let id = token_id.to_string();
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            TokenStoreError,
            |tx| {
                let row = tx
                    .query_opt(
                        "SELECT body FROM token_redemptions WHERE token_id = $1 AND key = $2 FOR UPDATE",
                        &[&id, &key.as_str()],
                    )
                    .await?
                    .ok_or_else(|| {
                        Tx::Fail(TokenStoreError::NotFound {
                            entity: "redemption",
                            id: format!("{id}/{key}"),
                        })
                    })?;
                let body: String = row.try_get(0)?;
                let mut r: Redemption = decode(&id, &body).map_err(Tx::Fail)?;
                if matches!(
                    r.state,
                    RedemptionState::Pending | RedemptionState::Ambiguous { .. }
                ) {
                    r.state = state.clone();
                    tx.execute(
                        "UPDATE token_redemptions SET body = $3 WHERE token_id = $1 AND key = $2",
                        &[&id, &key.as_str(), &encode(&r)?],
                    )
                    .await?;
                }
                r
            }
        )
    }

    async fn redemptions(&self, token_id: &TokenId) -> Result<Vec<Redemption>, TokenStoreError> {
        let c = client::<TokenStoreError>(&self.pool).await?;
        super::tx::once(read_redemptions(&c, token_id.as_str()).await)
    }

    async fn redemption(
        &self,
        token_id: &TokenId,
        key: &IdempotencyKey,
    ) -> Result<Option<Redemption>, TokenStoreError> {
        let c = client::<TokenStoreError>(&self.pool).await?;
        let id = token_id.as_str();
        let read = async {
            match c
                .query_opt(
                    "SELECT body FROM token_redemptions WHERE token_id = $1 AND key = $2",
                    &[&id, &key.as_str()],
                )
                .await?
            {
                None => Ok(None),
                Some(row) => {
                    let body: String = row.try_get(0)?;
                    decode(id, &body).map(Some).map_err(Tx::Fail)
                }
            }
        };
        super::tx::once(read.await)
    }

    async fn revoke(
        &self,
        selector: &TokenSelector,
        at: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>, TokenStoreError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            TokenStoreError,
            |tx| {
                let mut revoked = Vec::new();
                // Ids in order, each row locked: two revocations never deadlock.
                for id in selected_ids(&tx, selector).await? {
                    let Some(mut t) = read_token(&tx, &id, true).await? else {
                        continue;
                    };
                    if t.status != TokenStatus::Active || !selector.selects(&t) {
                        continue;
                    }
                    t.status = TokenStatus::Revoked;
                    t.revoked_at = Some(at);
                    tx.execute(
                        "UPDATE tokens SET status = 'revoked', body = $2 WHERE id = $1",
                        &[&id, &encode(&t)?],
                    )
                    .await?;
                    revoked.push(t);
                }
                revoked
            }
        )
    }

    async fn tokens(&self, selector: &TokenSelector) -> Result<Vec<TokenRecord>, TokenStoreError> {
        let c = client::<TokenStoreError>(&self.pool).await?;
        let result = async {
            let mut out = Vec::new();
            for id in selected_ids(&c, selector).await? {
                if let Some(t) = read_token(&c, &id, false).await? {
                    out.push(t);
                }
            }
            Ok(out)
        }
        .await;
        super::tx::once(result)
    }

    async fn record_revocation(
        &self,
        id: &TokenId,
        progress: RevocationProgress,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        in_transaction!(
            &self.pool,
            self.retries,
            IsolationLevel::ReadCommitted,
            TokenStoreError,
            |tx| {
                match read_token(&tx, id.as_str(), true).await? {
                    Some(mut t) if t.status == TokenStatus::Revoked => {
                        let after = t.revocation.union(progress);
                        if after != t.revocation {
                            t.revocation = after;
                            tx.execute(
                                "UPDATE tokens SET body = $2 WHERE id = $1",
                                &[&id.as_str(), &encode(&t)?],
                            )
                            .await?;
                        }
                        Some(t)
                    }
                    other => other,
                }
            }
        )
    }
}
