//! [`SqliteTokenStore`]: the token store on a SQLite database (migration 6). Every operation
//! runs alone on the database's connection thread in one transaction, so a claim and a
//! revocation never interleave.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::SqliteDatabase;
use crate::domain::IdempotencyKey;
use crate::ports::{
    ClaimOutcome, InsertToken, Redemption, RedemptionState, RevocationProgress, TokenId,
    TokenRecord, TokenSelector, TokenStatus, TokenStore, TokenStoreError,
};

/// The [`TokenStore`] on a [`SqliteDatabase`] ([`SqliteDatabase::token_store`]).
#[derive(Debug, Clone)]
pub struct SqliteTokenStore {
    db: SqliteDatabase,
}

impl SqliteTokenStore {
    pub(super) fn new(db: SqliteDatabase) -> SqliteTokenStore {
        SqliteTokenStore { db }
    }

    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, TokenStoreError> + Send + 'static,
    ) -> Result<R, TokenStoreError> {
        self.db.call(f).await?
    }
}

fn fail(e: rusqlite::Error) -> TokenStoreError {
    match e {
        rusqlite::Error::SqliteFailure(ref f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            TokenStoreError::Unavailable {
                message: format!("sqlite: {e}"),
            }
        }
        other => TokenStoreError::Other(Box::new(other)),
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, TokenStoreError> {
    serde_json::to_string(v).map_err(|e| TokenStoreError::Other(Box::new(e)))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, body: &str) -> Result<T, TokenStoreError> {
    serde_json::from_str(body).map_err(|e| TokenStoreError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn read_token(conn: &Connection, id: &str) -> Result<Option<TokenRecord>, TokenStoreError> {
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM tokens WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], |r| r.get(0)).optional())
        .map_err(fail)?;
    body.map(|b| decode(id, &b)).transpose()
}

fn read_redemptions(conn: &Connection, id: &str) -> Result<Vec<Redemption>, TokenStoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT body FROM token_redemptions WHERE token_id = ?1 ORDER BY seq")
        .map_err(fail)?;
    let rows = stmt
        .query_map([id], |r| r.get::<_, String>(0))
        .map_err(fail)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    rows.iter().map(|b| decode(id, b)).collect()
}

fn selected_ids(
    conn: &Connection,
    selector: &TokenSelector,
) -> Result<Vec<String>, TokenStoreError> {
    let (sql, arg) = match selector {
        TokenSelector::Token { token_id } => {
            ("SELECT id FROM tokens WHERE id = ?1", token_id.to_string())
        }
        TokenSelector::Issuer { actor_id } => (
            "SELECT id FROM tokens WHERE issuer = ?1",
            actor_id.to_string(),
        ),
        TokenSelector::Credential { credential } => (
            "SELECT id FROM tokens WHERE source_credential = ?1",
            credential.to_string(),
        ),
        TokenSelector::Mandate { mandate_id } => (
            "SELECT token_id FROM token_lineage WHERE mandate_id = ?1",
            mandate_id.to_string(),
        ),
    };
    let mut stmt = conn.prepare_cached(sql).map_err(fail)?;
    let ids = stmt
        .query_map([arg], |r| r.get::<_, String>(0))
        .map_err(fail)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(fail)?;
    Ok(ids)
}

#[async_trait]
impl TokenStore for SqliteTokenStore {
    async fn insert(&self, record: &TokenRecord) -> Result<InsertToken, TokenStoreError> {
        let record = record.clone();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            if let Some(existing) = read_token(&tx, record.id.as_str())? {
                return Ok(InsertToken::Existing(Box::new(existing)));
            }
            tx.execute(
                "INSERT INTO tokens (id, status, issuer, source_credential, mandate_id, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.id.as_str(),
                    record.status.as_str(),
                    record.issuer.as_str(),
                    record.source_credential.as_str(),
                    record.mandate_id.as_str(),
                    encode(&record)?
                ],
            )
            .map_err(fail)?;
            let mut lineage = record.lineage.clone();
            lineage.push(record.mandate_id.clone());
            for m in lineage {
                tx.execute(
                    "INSERT OR IGNORE INTO token_lineage (token_id, mandate_id) VALUES (?1, ?2)",
                    params![record.id.as_str(), m.as_str()],
                )
                .map_err(fail)?;
            }
            tx.commit().map_err(fail)?;
            Ok(InsertToken::Inserted)
        })
        .await
    }

    async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, TokenStoreError> {
        let id = id.to_string();
        self.call(move |conn| read_token(conn, &id)).await
    }

    async fn claim(&self, redemption: &Redemption) -> Result<ClaimOutcome, TokenStoreError> {
        let redemption = redemption.clone();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let id = redemption.token_id.to_string();
            let Some(token) = read_token(&tx, &id)? else {
                return Ok(ClaimOutcome::Unknown);
            };
            let list = read_redemptions(&tx, &id)?;
            if let Some(previous) = list.iter().find(|r| r.key == redemption.key) {
                return Ok(if previous.fingerprint == redemption.fingerprint {
                    ClaimOutcome::Replay(previous.clone())
                } else {
                    ClaimOutcome::Conflict
                });
            }
            match token.status {
                TokenStatus::Active => {}
                TokenStatus::Revoked => return Ok(ClaimOutcome::Revoked),
            }
            let used = list.iter().filter(|r| r.state.counts_as_use()).count();
            if token
                .limits
                .uses
                .max_uses()
                .is_some_and(|m| used >= m as usize)
            {
                return Ok(ClaimOutcome::Exhausted);
            }
            let mut claimed = redemption.clone();
            claimed.state = RedemptionState::Pending;
            tx.execute(
                "INSERT INTO token_redemptions (token_id, key, seq, body) VALUES (?1, ?2, ?3, ?4)",
                params![
                    id,
                    claimed.key.as_str(),
                    list.len() as i64,
                    encode(&claimed)?
                ],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
            Ok(ClaimOutcome::Claimed)
        })
        .await
    }

    async fn settle(
        &self,
        token_id: &TokenId,
        key: &IdempotencyKey,
        state: &RedemptionState,
    ) -> Result<Redemption, TokenStoreError> {
        let (id, key, state) = (token_id.to_string(), key.clone(), state.clone());
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let mut r = read_redemptions(&tx, &id)?
                .into_iter()
                .find(|r| r.key == key)
                .ok_or_else(|| TokenStoreError::NotFound {
                    entity: "redemption",
                    id: format!("{id}/{key}"),
                })?;
            if matches!(
                r.state,
                RedemptionState::Pending | RedemptionState::Ambiguous { .. }
            ) {
                r.state = state;
                tx.execute(
                    "UPDATE token_redemptions SET body = ?3 WHERE token_id = ?1 AND key = ?2",
                    params![id, key.as_str(), encode(&r)?],
                )
                .map_err(fail)?;
            }
            tx.commit().map_err(fail)?;
            Ok(r)
        })
        .await
    }

    async fn redemptions(&self, token_id: &TokenId) -> Result<Vec<Redemption>, TokenStoreError> {
        let id = token_id.to_string();
        self.call(move |conn| read_redemptions(conn, &id)).await
    }

    async fn redemption(
        &self,
        token_id: &TokenId,
        key: &IdempotencyKey,
    ) -> Result<Option<Redemption>, TokenStoreError> {
        let id = token_id.to_string();
        let key = key.as_str().to_owned();
        self.call(move |conn| {
            let body: Option<String> = conn
                .prepare_cached(
                    "SELECT body FROM token_redemptions WHERE token_id = ?1 AND key = ?2",
                )
                .and_then(|mut s| s.query_row([&id, &key], |r| r.get(0)).optional())
                .map_err(fail)?;
            body.map(|b| decode(&id, &b)).transpose()
        })
        .await
    }

    async fn revoke(
        &self,
        selector: &TokenSelector,
        at: DateTime<Utc>,
    ) -> Result<Vec<TokenRecord>, TokenStoreError> {
        let selector = selector.clone();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let mut revoked = Vec::new();
            for id in selected_ids(&tx, &selector)? {
                let Some(mut t) = read_token(&tx, &id)? else {
                    continue;
                };
                if t.status != TokenStatus::Active || !selector.selects(&t) {
                    continue;
                }
                t.status = TokenStatus::Revoked;
                t.revoked_at = Some(at);
                tx.execute(
                    "UPDATE tokens SET status = 'revoked', body = ?2 WHERE id = ?1",
                    params![id, encode(&t)?],
                )
                .map_err(fail)?;
                revoked.push(t);
            }
            tx.commit().map_err(fail)?;
            revoked.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(revoked)
        })
        .await
    }

    async fn tokens(&self, selector: &TokenSelector) -> Result<Vec<TokenRecord>, TokenStoreError> {
        let selector = selector.clone();
        self.call(move |conn| {
            let mut out = Vec::new();
            for id in selected_ids(conn, &selector)? {
                if let Some(t) = read_token(conn, &id)? {
                    out.push(t);
                }
            }
            out.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(out)
        })
        .await
    }

    async fn record_revocation(
        &self,
        id: &TokenId,
        progress: RevocationProgress,
    ) -> Result<Option<TokenRecord>, TokenStoreError> {
        let id = id.to_string();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(fail)?;
            let out = match read_token(&tx, &id)? {
                Some(mut t) if t.status == TokenStatus::Revoked => {
                    let after = t.revocation.union(progress);
                    if after != t.revocation {
                        t.revocation = after;
                        tx.execute(
                            "UPDATE tokens SET body = ?2 WHERE id = ?1",
                            params![id, encode(&t)?],
                        )
                        .map_err(fail)?;
                    }
                    Some(t)
                }
                other => other,
            };
            tx.commit().map_err(fail)?;
            Ok(out)
        })
        .await
    }
}
