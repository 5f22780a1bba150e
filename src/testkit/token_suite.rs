//! The [`TokenStore`] contract, as plain `async fn`s every adapter (and a third party's) runs.

use chrono::{DateTime, Duration, Utc};

use crate::domain::{ContentDigest, Currency, IdempotencyKey, MandateId, Money};
use crate::ports::{
    ClaimOutcome, FundingType, InsertToken, Redeemer, Redemption, RedemptionState,
    RevocationProgress, TokenDisplay, TokenHash, TokenId, TokenLimits, TokenRecord, TokenSelector,
    TokenStatus, TokenStore, TokenUses,
};

fn record(n: u8, issuer: &str, credential: &str, lineage: &[&str], uses: TokenUses) -> TokenRecord {
    let at: DateTime<Utc> = crate::domain::examples::now();
    let id = TokenId::from_bytes([n; 16]);
    TokenRecord {
        hash: TokenHash([n; 32]),
        buyer_id: "buyer_1".parse().expect("id"),
        issuer: issuer.parse().expect("id"),
        lineage: lineage.iter().map(|m| m.parse().expect("id")).collect(),
        mandate_id: MandateId::new(format!("tokm_{}", &id.as_str()[4..])).expect("id"),
        credential: format!("cred_tok_{n}").parse().expect("id"),
        source_credential: credential.parse().expect("id"),
        redeemer: Redeemer {
            provider: "prov_a".parse().expect("id"),
            merchant_id: "merchant_a".parse().expect("id"),
            seller_id: None,
            mcc: "5734".parse().expect("mcc"),
        },
        limits: TokenLimits {
            currency: Currency::EUR,
            per_use: Some(Money::parse("10.00", Currency::EUR).expect("money")),
            per_period: None,
            uses,
        },
        display: TokenDisplay {
            brand: "visa".into(),
            last4: "4242".into(),
            funding: FundingType::Credit,
        },
        issued_at: at,
        expires_at: at + Duration::days(30),
        status: TokenStatus::Active,
        revoked_at: None,
        revocation: RevocationProgress::default(),
        id,
    }
}

fn redemption(token: &TokenRecord, key: &str, amount: &str) -> Redemption {
    let amount = Money::parse(amount, Currency::EUR).expect("money");
    Redemption {
        token_id: token.id.clone(),
        key: IdempotencyKey::new(key).expect("key"),
        fingerprint: ContentDigest::from_bytes(
            sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(
                amount.to_string().as_bytes(),
            ))
            .into(),
        ),
        amount,
        state: RedemptionState::Pending,
        claimed_at: token.issued_at,
    }
}

/// Runs every check of the token store contract on an empty `store`; panics naming the
/// first broken rule.
pub async fn token_store_conformance(store: &dyn TokenStore) {
    let single = record(
        1,
        "agent_a",
        "cred_a",
        &["m_root", "m_mid"],
        TokenUses::Single,
    );
    let multi = record(
        2,
        "agent_a",
        "cred_b",
        &["m_root"],
        TokenUses::CapBounded { max_uses: Some(2) },
    );
    let other = record(
        3,
        "agent_b",
        "cred_a",
        &["m_other"],
        TokenUses::CapBounded { max_uses: None },
    );

    // insert never overwrites; token reads back exactly.
    for r in [&single, &multi, &other] {
        assert_eq!(
            store.insert(r).await.expect("insert"),
            InsertToken::Inserted,
            "insert a new token"
        );
        assert_eq!(
            store.token(&r.id).await.expect("read").as_ref(),
            Some(r),
            "a token reads back as written"
        );
    }
    let mut changed = single.clone();
    changed.limits.uses = TokenUses::CapBounded { max_uses: None };
    assert_eq!(
        store.insert(&changed).await.expect("insert"),
        InsertToken::Existing(Box::new(single.clone())),
        "insert never overwrites"
    );
    assert_eq!(
        store
            .token(&TokenId::from_bytes([9; 16]))
            .await
            .expect("read"),
        None,
        "an unknown token is None"
    );

    // claim: uses, replay, conflict.
    let a = redemption(&single, "k1", "5.00");
    assert_eq!(
        store.claim(&a).await.expect("claim"),
        ClaimOutcome::Claimed,
        "first claim of a single-use token"
    );
    assert_eq!(
        store.claim(&a).await.expect("claim"),
        ClaimOutcome::Replay(a.clone()),
        "the same key and fingerprint replays"
    );
    assert_eq!(
        store
            .claim(&redemption(&single, "k1", "6.00"))
            .await
            .expect("claim"),
        ClaimOutcome::Conflict,
        "the same key with another fingerprint conflicts"
    );
    assert_eq!(
        store
            .claim(&redemption(&single, "k2", "5.00"))
            .await
            .expect("claim"),
        ClaimOutcome::Exhausted,
        "a pending use takes the single use"
    );
    // A refusal gives the use back; a charge keeps it; a settled redemption stays settled.
    let refused = RedemptionState::Refused {
        codes: vec!["TOKEN_DECLINED".into()],
        attempt_id: None,
    };
    let after = store
        .settle(&single.id, &a.key, &refused)
        .await
        .expect("settle");
    assert_eq!(after.state, refused, "settle records the state");
    let b = redemption(&single, "k3", "5.00");
    assert_eq!(
        store.claim(&b).await.expect("claim"),
        ClaimOutcome::Claimed,
        "a refused redemption frees its use"
    );
    let charged = RedemptionState::Charged {
        attempt_id: "att_1".parse().expect("id"),
    };
    store
        .settle(&single.id, &b.key, &charged)
        .await
        .expect("settle");
    let again = store
        .settle(&single.id, &b.key, &refused)
        .await
        .expect("settle");
    assert_eq!(
        again.state, charged,
        "a settled redemption is not settled again"
    );
    assert_eq!(
        store
            .claim(&redemption(&single, "k4", "5.00"))
            .await
            .expect("claim"),
        ClaimOutcome::Exhausted,
        "a charged use stays taken"
    );
    assert!(
        store
            .settle(
                &single.id,
                &IdempotencyKey::new("nope").expect("key"),
                &charged
            )
            .await
            .is_err(),
        "settling an unknown redemption fails"
    );
    let list = store.redemptions(&single.id).await.expect("list");
    assert_eq!(
        list.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["k1", "k3"],
        "redemptions oldest first"
    );

    for k in ["m1", "m2"] {
        assert_eq!(
            store
                .claim(&redemption(&multi, k, "1.00"))
                .await
                .expect("claim"),
            ClaimOutcome::Claimed,
            "within max_uses"
        );
    }
    assert_eq!(
        store
            .claim(&redemption(&multi, "m3", "1.00"))
            .await
            .expect("claim"),
        ClaimOutcome::Exhausted,
        "at max_uses"
    );
    let mut ghost = redemption(&multi, "g", "1.00");
    ghost.token_id = TokenId::from_bytes([8; 16]);
    assert_eq!(
        store.claim(&ghost).await.expect("claim"),
        ClaimOutcome::Unknown,
        "a claim on no token"
    );

    // revoke: selectors, once, atomic with claims.
    let at = single.issued_at + Duration::hours(1);
    let by_mandate = store
        .revoke(
            &TokenSelector::Mandate {
                mandate_id: "m_mid".parse().expect("id"),
            },
            at,
        )
        .await
        .expect("revoke");
    assert_eq!(
        by_mandate.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [single.id.as_str()],
        "a mandate selects its descendants' tokens only"
    );
    assert_eq!(by_mandate[0].status, TokenStatus::Revoked);
    assert_eq!(by_mandate[0].revoked_at, Some(at));
    let by_cred = store
        .revoke(
            &TokenSelector::Credential {
                credential: "cred_a".parse().expect("id"),
            },
            at,
        )
        .await
        .expect("revoke");
    assert_eq!(
        by_cred.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [other.id.as_str()],
        "already revoked tokens are not returned again"
    );
    assert_eq!(
        store
            .claim(&redemption(&other, "o1", "1.00"))
            .await
            .expect("claim"),
        ClaimOutcome::Revoked,
        "a revoked token is not claimed"
    );
    assert_eq!(
        store.claim(&a).await.expect("claim"),
        ClaimOutcome::Replay(after),
        "a key seen before still answers after revocation"
    );
    let by_issuer = store
        .revoke(
            &TokenSelector::Issuer {
                actor_id: "agent_a".parse().expect("id"),
            },
            at,
        )
        .await
        .expect("revoke");
    assert_eq!(
        by_issuer.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [multi.id.as_str()],
        "the issuer's remaining token"
    );
    let all = store
        .tokens(&TokenSelector::Mandate {
            mandate_id: "m_root".parse().expect("id"),
        })
        .await
        .expect("tokens");
    assert_eq!(all.len(), 2, "tokens lists revoked tokens too");
    assert!(all.iter().all(|t| t.status == TokenStatus::Revoked));
    assert!(
        store
            .revoke(
                &TokenSelector::Token {
                    token_id: single.id.clone()
                },
                at
            )
            .await
            .expect("revoke")
            .is_empty(),
        "revocation is idempotent"
    );

    // A redemption reads back by (token, key), whatever the token's status now.
    let claimed = store.redemptions(&single.id).await.expect("redemptions");
    for r in &claimed {
        assert_eq!(
            store
                .redemption(&single.id, &r.key)
                .await
                .expect("redemption")
                .as_ref(),
            Some(r),
            "a redemption reads back by its key"
        );
    }
    let unknown_key = crate::domain::IdempotencyKey::new("never-claimed").expect("key");
    assert_eq!(
        store
            .redemption(&single.id, &unknown_key)
            .await
            .expect("redemption"),
        None,
        "an unclaimed key has no redemption"
    );

    // The fan-out's progress: flags set on a revoked token only, never cleared.
    assert_eq!(single.revocation, RevocationProgress::default());
    let after = store
        .record_revocation(&single.id, RevocationProgress::default().with_psp_revoked())
        .await
        .expect("record")
        .expect("known");
    assert!(after.revocation.psp_revoked && !after.revocation.finished);
    let after = store
        .record_revocation(&single.id, RevocationProgress::default().with_finished())
        .await
        .expect("record")
        .expect("known");
    assert!(
        after.revocation.psp_revoked && after.revocation.finished,
        "flags add up, none is cleared"
    );
    assert_eq!(
        store
            .token(&single.id)
            .await
            .expect("read")
            .expect("known")
            .revocation,
        after.revocation,
        "the progress is stored"
    );
    let fresh = record(4, "agent_c", "cred_c", &["m_fresh"], TokenUses::Single);
    store.insert(&fresh).await.expect("insert");
    let left = store
        .record_revocation(&fresh.id, RevocationProgress::default().with_finished())
        .await
        .expect("record")
        .expect("known");
    assert_eq!(left, fresh, "an active token is left as it is");
    let nobody = TokenId::from_bytes([0xee; 16]);
    assert_eq!(
        store
            .record_revocation(&nobody, RevocationProgress::default().with_finished())
            .await
            .expect("record"),
        None,
        "an unknown token"
    );
}
