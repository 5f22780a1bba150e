//! A redemption racing a revocation either completes before it or is refused, never half:
//! concurrent tasks on the memory and SQLite token stores. After both: every redemption is
//! charged or refused (none pending), the PSP captured exactly the charged ones, each
//! charged redemption was claimed before the revocation, no hold is left open, and every
//! redemption started after the revocation returned is refused (I1, I2, I5).
#![cfg(all(feature = "tokens", feature = "testkit", feature = "sqlite"))]

mod tokens_support;

use std::sync::Arc;

use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::{Currency, Text};
use agent_mandate::engine::EngineConfig;
use agent_mandate::ports::{RedemptionState, TokenSelector, TokenStore, TokenUses};
use agent_mandate::tokens::{RedeemToken, RedemptionOutcome, RefusalCode, RevokeTokens};
use tokens_support::*;

async fn race(make: impl Fn() -> Arc<dyn TokenStore>, rounds: usize) {
    for round in 0..rounds {
        let f = Arc::new(Fixture::with(EngineConfig::default(), false, make()).await);
        let issued = f
            .issue(
                "prov_a",
                per_use("5.00", TokenUses::CapBounded { max_uses: None }),
                86_400,
            )
            .await;
        let token = issued.token.clone().unwrap();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (f, token) = (f.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let cmd = RedeemToken::new(key(&format!("r{round}-{i}")), token, eur("1.00"));
                f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap()
            }));
        }
        let revoker = {
            let (f, id) = (f.clone(), issued.record.id.clone());
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                f.tokens
                    .revoke(
                        &agent_principal(),
                        &RevokeTokens::new(
                            TokenSelector::Token { token_id: id },
                            Text::new("race").unwrap(),
                        ),
                    )
                    .await
                    .unwrap()
            })
        };
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        assert_eq!(revoker.await.unwrap(), 1);
        let mut charged = 0i64;
        for o in &outcomes {
            match o {
                RedemptionOutcome::Charged { .. } => charged += 1,
                // Refused at the claim (revoked), by the decision (the token's mandate revoked),
                // or by the PSP (its vault credential revoked between decision and charge):
                // each with nothing charged and the hold released (checked below).
                RedemptionOutcome::Refused { code, .. } => assert!(
                    matches!(
                        code,
                        RefusalCode::Revoked | RefusalCode::DecisionBlocked | RefusalCode::Declined
                    ),
                    "refused for {code}"
                ),
                other => panic!("half: {other:?}"),
            }
        }
        // The PSP captured exactly the charged redemptions.
        assert_eq!(f.fake.total_captured(Currency::EUR), charged * 100);
        // The store agrees: no pending claim, charged == charged, claims before the revocation.
        let record = f.tokens.token(&issued.record.id).await.unwrap().unwrap();
        let revoked_at = record.revoked_at.unwrap();
        let list = f
            .tokens
            .store()
            .redemptions(&issued.record.id)
            .await
            .unwrap();
        assert!(list.iter().all(|r| !matches!(
            r.state,
            RedemptionState::Pending | RedemptionState::Ambiguous { .. }
        )));
        let stored_charged = list
            .iter()
            .filter(|r| matches!(r.state, RedemptionState::Charged { .. }))
            .count() as i64;
        assert_eq!(stored_charged, charged);
        assert!(list.iter().all(|r| r.claimed_at <= revoked_at));
        // No hold left open under the token's mandate: everything held was captured.
        let child = f
            .memory
            .ports
            .store
            .mandate(&issued.record.mandate_id)
            .await
            .unwrap()
            .unwrap();
        let usage = f.memory.ports.store.usage(&[child], now()).await.unwrap();
        assert!(usage[0].held.amount().is_zero(), "{usage:?}");
        assert_eq!(usage[0].spent.minor_units(), charged * 100);
        // After the revocation returned, nothing more is charged.
        let late = RedeemToken::new(key(&format!("late{round}")), token.clone(), eur("1.00"));
        let out = f.tokens.redeem(&provider("prov_a"), &late).await.unwrap();
        assert_eq!(out.refusal(), Some(RefusalCode::Revoked));
        assert_eq!(f.fake.total_captured(Currency::EUR), charged * 100);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redemption_racing_revocation_on_the_memory_store() {
    race(
        || Arc::new(agent_mandate::adapters::memory::MemoryTokenStore::new()),
        10,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redemption_racing_revocation_on_the_sqlite_store() {
    race(
        || {
            Arc::new(
                SqliteDatabase::open(SqliteConfig::in_memory())
                    .unwrap()
                    .token_store(),
            )
        },
        10,
    )
    .await;
}
