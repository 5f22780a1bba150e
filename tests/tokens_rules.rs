//! Scoped payment tokens on the memory adapters: every rule of issue and redemption has a
//! negative test (wrong provider, expired, over the per-use cap, over the period cap, the
//! period rolling over, exhausted uses, revoked, unknown, another buyer's), plus replay,
//! refund headroom and the revocation fan-out (I1, I2, I3, I6, I10).
#![cfg(all(feature = "tokens", feature = "testkit"))]

mod tokens_support;

use agent_mandate::domain::{Currency, LifecycleEvent, Principal, Text};
use agent_mandate::engine::{ChangeMandate, EngineConfig, EngineError, RefundPayment};
use agent_mandate::ports::{RefundPolicy, Secret, TokenSelector, TokenStatus, TokenUses};
use agent_mandate::testkit::Op;
use agent_mandate::tokens::{
    IssueToken, RedeemToken, RedemptionOutcome, RefusalCode, RevokeTokens, TokenError,
};
use chrono::Duration;
use tokens_support::*;

const MONTH: u64 = 30 * 86_400;

fn code(o: &RedemptionOutcome) -> Option<RefusalCode> {
    o.refusal()
}

fn charged(o: &RedemptionOutcome) -> bool {
    matches!(o, RedemptionOutcome::Charged { .. })
}

#[tokio::test]
async fn a_token_charges_its_provider_within_its_caps() {
    let f = Fixture::memory().await;
    let issued = f
        .issue(
            "prov_a",
            monthly("100.00", TokenUses::CapBounded { max_uses: None }),
            MONTH * 3,
        )
        .await;
    let token = issued.token.clone().expect("shown once");
    assert!(token.expose().starts_with("amtok_"));
    assert_eq!(issued.record.display.last4, "4242");
    assert_eq!(issued.record.display.brand, "visa");
    let out = f.redeem("prov_a", &token, "30.00").await;
    assert!(charged(&out), "{out:?}");
    assert_eq!(f.fake.total_captured(Currency::EUR), 3000);
    // The token's child mandate is under the buyer's.
    let child = f
        .memory
        .ports
        .store
        .mandate(&issued.record.mandate_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.parent_id(), Some(&f.mandate));
}

#[tokio::test]
async fn another_provider_is_refused_and_audited() {
    let f = Fixture::memory().await;
    let issued = f
        .issue(
            "prov_a",
            monthly("100.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let token = issued.token.unwrap();
    let out = f.redeem("prov_b", &token, "10.00").await;
    assert_eq!(code(&out), Some(RefusalCode::WrongProvider));
    assert_eq!(f.fake.calls(Op::Authorize), 0);
    let bodies = f.audit_bodies().await;
    assert!(
        bodies.iter().any(|b| b.contains("\"token_refused\"")
            && b.contains("TOKEN_WRONG_PROVIDER")
            && b.contains("prov_b")
            && b.contains(issued.record.id.as_str())),
        "{bodies:#?}"
    );
    // An agent principal with the provider's id is not the provider either.
    let cmd = RedeemToken::new(key("as-agent"), token.clone(), eur("1.00"));
    let out = f
        .tokens
        .redeem(&Principal::Agent("prov_a".parse().unwrap()), &cmd)
        .await
        .unwrap();
    assert_eq!(code(&out), Some(RefusalCode::WrongProvider));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let f = Fixture::memory().await;
    let token = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            3600,
        )
        .await
        .token
        .unwrap();
    f.advance(Duration::seconds(3600));
    let out = f.redeem("prov_a", &token, "10.00").await;
    assert_eq!(code(&out), Some(RefusalCode::Expired));
    assert_eq!(f.fake.calls(Op::Authorize), 0);
}

#[tokio::test]
async fn above_the_per_use_cap_is_refused() {
    let f = Fixture::memory().await;
    let token = f
        .issue(
            "prov_a",
            per_use("50.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await
        .token
        .unwrap();
    assert_eq!(
        code(&f.redeem("prov_a", &token, "50.01").await),
        Some(RefusalCode::OverPerUseCap)
    );
    assert_eq!(
        code(&f.redeem("prov_a", &token, "0.00").await),
        Some(RefusalCode::OverPerUseCap)
    );
    assert!(charged(&f.redeem("prov_a", &token, "50.00").await));
}

#[tokio::test]
async fn another_currency_is_refused() {
    let f = Fixture::memory().await;
    let token = f
        .issue("prov_a", per_use("50.00", TokenUses::Single), MONTH)
        .await
        .token
        .unwrap();
    let usd = agent_mandate::domain::Money::parse("5.00", Currency::USD).unwrap();
    let cmd = RedeemToken::new(key("usd"), token, usd);
    let out = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert_eq!(code(&out), Some(RefusalCode::CurrencyMismatch));
}

#[tokio::test]
async fn above_the_period_cap_is_refused_until_the_period_rolls_over() {
    let f = Fixture::memory().await;
    let token = f
        .issue(
            "prov_a",
            monthly("100.00", TokenUses::CapBounded { max_uses: None }),
            MONTH * 3,
        )
        .await
        .token
        .unwrap();
    assert_eq!(
        code(&f.redeem("prov_a", &token, "100.01").await),
        Some(RefusalCode::OverPeriodCap)
    );
    assert!(charged(&f.redeem("prov_a", &token, "60.00").await));
    f.advance(Duration::days(10));
    assert!(charged(&f.redeem("prov_a", &token, "40.00").await));
    let out = f.redeem("prov_a", &token, "0.01").await;
    assert_eq!(code(&out), Some(RefusalCode::DecisionBlocked), "{out:?}");
    let RedemptionOutcome::Refused { reasons, .. } = &out else {
        unreachable!()
    };
    assert!(
        reasons.iter().any(|r| r == "WINDOW_AMOUNT_EXCEEDED"),
        "{reasons:?}"
    );
    // 30 days after the first charge it leaves the window: 60.00 of headroom comes back.
    f.advance(Duration::days(20));
    assert_eq!(
        code(&f.redeem("prov_a", &token, "60.01").await),
        Some(RefusalCode::DecisionBlocked)
    );
    assert!(charged(&f.redeem("prov_a", &token, "60.00").await));
    assert_eq!(f.fake.total_captured(Currency::EUR), 16_000);
}

#[tokio::test]
async fn uses_are_exhausted_at_the_bound() {
    let f = Fixture::memory().await;
    let token = f
        .issue(
            "prov_a",
            per_use("10.00", TokenUses::CapBounded { max_uses: Some(2) }),
            MONTH,
        )
        .await
        .token
        .unwrap();
    assert!(charged(&f.redeem("prov_a", &token, "1.00").await));
    assert!(charged(&f.redeem("prov_a", &token, "1.00").await));
    assert_eq!(
        code(&f.redeem("prov_a", &token, "1.00").await),
        Some(RefusalCode::Exhausted)
    );
    assert_eq!(f.fake.calls(Op::Authorize), 2);
}

#[tokio::test]
async fn a_single_use_token_replays_its_key_and_refuses_another() {
    let f = Fixture::memory().await;
    let token = f
        .issue("prov_a", per_use("20.00", TokenUses::Single), MONTH)
        .await
        .token
        .unwrap();
    let cmd = RedeemToken::new(key("k1"), token.clone(), eur("20.00"));
    let first = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    let again = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert!(charged(&first) && charged(&again) && again.is_replay());
    assert_eq!(first.attempt().unwrap().id, again.attempt().unwrap().id);
    let other = RedeemToken::new(key("k2"), token.clone(), eur("20.00"));
    let out = f.tokens.redeem(&provider("prov_a"), &other).await.unwrap();
    assert_eq!(code(&out), Some(RefusalCode::Exhausted));
    assert_eq!(f.fake.calls(Op::Authorize), 1);
    // The same key with another amount is a conflict, not a second charge.
    let changed = RedeemToken::new(key("k1"), token, eur("19.00"));
    let err = f
        .tokens
        .redeem(&provider("prov_a"), &changed)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TokenError::IdempotencyConflict { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_refused_redemption_replays_its_refusal() {
    let f = Fixture::memory().await;
    let token = f
        .issue(
            "prov_a",
            monthly("10.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await
        .token
        .unwrap();
    assert!(charged(&f.redeem("prov_a", &token, "10.00").await));
    let cmd = RedeemToken::new(key("over"), token, eur("1.00"));
    let first = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert_eq!(code(&first), Some(RefusalCode::DecisionBlocked));
    let again = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert_eq!(code(&again), Some(RefusalCode::DecisionBlocked));
    assert!(again.is_replay());
}

#[tokio::test]
async fn a_revoked_token_is_refused() {
    let f = Fixture::memory().await;
    let issued = f
        .issue(
            "prov_a",
            per_use("10.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let token = issued.token.unwrap();
    let n = f
        .tokens
        .revoke(
            &agent_principal(),
            &RevokeTokens::new(
                TokenSelector::Token {
                    token_id: issued.record.id.clone(),
                },
                Text::new("leaked").unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        code(&f.redeem("prov_a", &token, "1.00").await),
        Some(RefusalCode::Revoked)
    );
    assert_eq!(f.fake.calls(Op::Authorize), 0);
    // Its mandate and its vault credential are revoked too.
    let m = f
        .memory
        .ports
        .store
        .mandate(&issued.record.mandate_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.status(), agent_mandate::domain::MandateStatus::Revoked);
    let st = f
        .memory
        .ports
        .vault
        .status(&issued.record.credential, now())
        .await
        .unwrap();
    assert_ne!(st, agent_mandate::domain::CredentialStatus::Usable);
}

#[tokio::test]
async fn an_unknown_token_and_a_wrong_secret_get_one_answer() {
    let f = Fixture::memory().await;
    let token = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await
        .token
        .unwrap();
    let mut wrong = token.expose().to_owned();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    for value in [
        wrong,
        format!("amtok_{}_{}", "ab".repeat(16), "cd".repeat(32)),
        "not a token".to_owned(),
        String::new(),
    ] {
        let cmd = RedeemToken::new(f.next_key("u"), Secret::new(value), eur("1.00"));
        let out = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
        assert_eq!(
            out,
            RedemptionOutcome::Refused {
                token_id: None,
                code: RefusalCode::Unknown,
                reasons: vec![],
                replay: false
            }
        );
    }
    assert_eq!(f.fake.calls(Op::Authorize), 0);
}

#[tokio::test]
async fn a_token_of_another_buyer_is_refused() {
    let f = Fixture::memory().await;
    let token = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await
        .token
        .unwrap();
    let cmd = RedeemToken::new(key("b"), token, eur("1.00")).with_buyer(
        "buyer_other"
            .parse::<agent_mandate::domain::BuyerId>()
            .unwrap(),
    );
    let out = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert_eq!(code(&out), Some(RefusalCode::WrongBuyer));
    // And a token cannot be issued on another buyer's credential.
    let other = f
        .engine
        .store_credential(
            &Principal::Buyer("buyer_other".parse().unwrap()),
            &key("other-card"),
            card(&agent().id, &"buyer_other".parse().unwrap(), "pm_other"),
        )
        .await
        .unwrap()
        .value
        .reference;
    let cmd = IssueToken::new(
        key("x"),
        f.mandate.clone(),
        other,
        redeemer("prov_a"),
        per_use("1.00", TokenUses::Single),
        60,
    );
    let err = f.tokens.issue(&agent_principal(), &cmd).await.unwrap_err();
    assert!(
        matches!(&err, TokenError::Invalid { field, .. } if field == "credential"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_token_wider_than_its_mandate_is_refused_at_issue() {
    let f = Fixture::memory().await;
    let cmd = IssueToken::new(
        key("wide"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_a"),
        per_use("1000.01", TokenUses::Single),
        60,
    );
    let err = f.tokens.issue(&agent_principal(), &cmd).await.unwrap_err();
    assert!(
        matches!(err, TokenError::Engine(EngineError::Delegation(_))),
        "{err:?}"
    );
    // A provider outside the mandate's merchants.
    let cmd = IssueToken::new(
        key("elsewhere"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_c"),
        per_use("1.00", TokenUses::Single),
        60,
    );
    let err = f.tokens.issue(&agent_principal(), &cmd).await.unwrap_err();
    assert!(
        matches!(err, TokenError::Engine(EngineError::Delegation(_))),
        "{err:?}"
    );
}

#[tokio::test]
async fn bad_limits_and_strangers_are_refused_at_issue() {
    let f = Fixture::memory().await;
    let mk = |limits, ttl| {
        IssueToken::new(
            key("bad"),
            f.mandate.clone(),
            f.credential.clone(),
            redeemer("prov_a"),
            limits,
            ttl,
        )
    };
    let no_cap = agent_mandate::ports::TokenLimits {
        currency: Currency::EUR,
        per_use: None,
        per_period: None,
        uses: TokenUses::Single,
    };
    for (cmd, field) in [
        (mk(no_cap, 60), "limits"),
        (
            mk(
                per_use("1.00", TokenUses::CapBounded { max_uses: Some(0) }),
                60,
            ),
            "limits.uses.max_uses",
        ),
        (mk(per_use("1.00", TokenUses::Single), 0), "ttl_seconds"),
    ] {
        let err = f.tokens.issue(&agent_principal(), &cmd).await.unwrap_err();
        assert!(
            matches!(&err, TokenError::Invalid { field: f, .. } if f == field),
            "{err:?}"
        );
    }
    let cmd = mk(per_use("1.00", TokenUses::Single), 60);
    let err = f
        .tokens
        .issue(&Principal::Agent("agent_other".parse().unwrap()), &cmd)
        .await
        .unwrap_err();
    assert!(matches!(err, TokenError::NotPermitted { .. }));
    let err = f.tokens.issue(&provider("prov_a"), &cmd).await.unwrap_err();
    assert!(matches!(err, TokenError::NotPermitted { .. }));
}

#[tokio::test]
async fn a_retried_issue_answers_the_record_without_the_value() {
    let f = Fixture::memory().await;
    let cmd = IssueToken::new(
        key("same"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_a"),
        per_use("5.00", TokenUses::Single),
        60,
    );
    let first = f.tokens.issue(&agent_principal(), &cmd).await.unwrap();
    let again = f.tokens.issue(&agent_principal(), &cmd).await.unwrap();
    assert!(first.token.is_some() && again.token.is_none() && again.replay);
    assert_eq!(first.record, again.record);
    let other = IssueToken::new(
        key("same"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_a"),
        per_use("6.00", TokenUses::Single),
        60,
    );
    assert!(matches!(
        f.tokens
            .issue(&agent_principal(), &other)
            .await
            .unwrap_err(),
        TokenError::IdempotencyConflict { .. }
    ));
}

async fn refund_then_redeem(policy: RefundPolicy) -> bool {
    let f = Fixture::with(
        EngineConfig::default().with_refund_policy(policy),
        false,
        std::sync::Arc::new(agent_mandate::adapters::memory::MemoryTokenStore::new()),
    )
    .await;
    let token = f
        .issue(
            "prov_a",
            monthly("100.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await
        .token
        .unwrap();
    let out = f.redeem("prov_a", &token, "100.00").await;
    let attempt = out.attempt().unwrap().id.clone();
    f.engine
        .refund(
            &Principal::Buyer(buyer()),
            &RefundPayment::new(key("refund"), attempt).with_amount(eur("60.00")),
        )
        .await
        .unwrap();
    charged(&f.redeem("prov_a", &token, "50.00").await)
}

#[tokio::test]
async fn a_refund_restores_period_headroom_only_as_the_refund_policy_says() {
    assert!(
        !refund_then_redeem(RefundPolicy::RETAIN).await,
        "retain gives nothing back"
    );
    assert!(
        refund_then_redeem(RefundPolicy::RESTORE_ALL).await,
        "restore_all gives the window back"
    );
}

#[tokio::test]
async fn revoking_a_credential_a_mandate_or_an_agent_fans_out_to_its_tokens() {
    let f = Fixture::with(
        EngineConfig::default(),
        true,
        std::sync::Arc::new(agent_mandate::adapters::memory::MemoryTokenStore::new()),
    )
    .await;
    let a = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let b = f
        .issue("prov_b", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    // A second orchestrator credential of the same agent.
    let second = f
        .engine
        .store_credential(
            &Principal::Buyer(buyer()),
            &key("card2"),
            card(&agent().id, &buyer(), "pm_second"),
        )
        .await
        .unwrap()
        .value
        .reference;
    let cmd = IssueToken::new(
        key("c"),
        f.mandate.clone(),
        second.clone(),
        redeemer("prov_a"),
        per_use("10.00", TokenUses::Single),
        MONTH,
    );
    let c = f.tokens.issue(&agent_principal(), &cmd).await.unwrap();

    // A stranger may not.
    let stranger = Principal::Agent("agent_other".parse().unwrap());
    let sel = TokenSelector::Credential {
        credential: f.credential.clone(),
    };
    assert!(matches!(
        f.tokens
            .revoke(
                &stranger,
                &RevokeTokens::new(sel.clone(), Text::new("x").unwrap())
            )
            .await,
        Err(TokenError::NotPermitted { .. })
    ));

    let n = f
        .tokens
        .revoke(
            &Principal::Buyer(buyer()),
            &RevokeTokens::new(sel.clone(), Text::new("card lost").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        f.tokens
            .revoke(
                &Principal::Buyer(buyer()),
                &RevokeTokens::new(sel, Text::new("again").unwrap())
            )
            .await
            .unwrap(),
        0
    );
    for t in [&a, &b] {
        assert_eq!(
            f.tokens.token(&t.record.id).await.unwrap().unwrap().status,
            TokenStatus::Revoked
        );
    }
    assert_eq!(
        code(&f.redeem("prov_a", a.token.as_ref().unwrap(), "1.00").await),
        Some(RefusalCode::Revoked)
    );
    assert!(charged(
        &f.redeem("prov_a", c.token.as_ref().unwrap(), "1.00").await
    ));
    let psp = f.psp.as_ref().unwrap();
    let mut asked = psp.revoked.lock().unwrap().clone();
    asked.sort();
    let mut want = vec![a.record.id.to_string(), b.record.id.to_string()];
    want.sort();
    assert_eq!(asked, want, "the PSP is asked once per token it can revoke");
    let bodies = f.audit_bodies().await;
    assert_eq!(
        bodies
            .iter()
            .filter(|b| b.contains("\"token_revoked\""))
            .count(),
        2
    );

    // Revoking the agent reaches its remaining token, and its own credentials.
    let cmd = IssueToken::new(
        key("d"),
        f.mandate.clone(),
        second.clone(),
        redeemer("prov_b"),
        per_use("10.00", TokenUses::Single),
        MONTH,
    );
    f.tokens.issue(&agent_principal(), &cmd).await.unwrap();
    let n = f
        .tokens
        .revoke(
            &agent_principal(),
            &RevokeTokens::new(
                TokenSelector::Issuer {
                    actor_id: agent().id,
                },
                Text::new("agent retired").unwrap(),
            ),
        )
        .await;
    // The agent's orchestrator credentials are revoked, so no new token can be issued on them.
    assert_eq!(n.unwrap(), 2, "c and d");
    assert_ne!(
        f.memory.ports.vault.status(&second, now()).await.unwrap(),
        agent_mandate::domain::CredentialStatus::Usable
    );
}

#[tokio::test]
async fn revoking_the_parent_mandate_revokes_its_tokens_in_one_call() {
    let f = Fixture::memory().await;
    let a = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let b = f
        .issue(
            "prov_b",
            per_use("10.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let n = f
        .tokens
        .revoke(
            &Principal::Buyer(buyer()),
            &RevokeTokens::new(
                TokenSelector::Mandate {
                    mandate_id: f.mandate.clone(),
                },
                Text::new("stop").unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(n, 2);
    let root = f
        .memory
        .ports
        .store
        .mandate(&f.mandate)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(root.status(), agent_mandate::domain::MandateStatus::Revoked);
    for t in [&a, &b] {
        assert_eq!(
            code(
                &f.redeem(
                    if t.record.redeemer.provider.as_str() == "prov_a" {
                        "prov_a"
                    } else {
                        "prov_b"
                    },
                    t.token.as_ref().unwrap(),
                    "1.00"
                )
                .await
            ),
            Some(RefusalCode::Revoked)
        );
    }
    // Another agent may not revoke the buyer's mandate.
    let f = Fixture::memory().await;
    let err = f
        .tokens
        .revoke(
            &Principal::Agent("agent_other".parse().unwrap()),
            &RevokeTokens::new(
                TokenSelector::Mandate {
                    mandate_id: f.mandate.clone(),
                },
                Text::new("x").unwrap(),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, TokenError::Engine(EngineError::NotPermitted { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_mandate_revoked_directly_blocks_its_tokens_through_the_decision() {
    let f = Fixture::memory().await;
    let token = f
        .issue(
            "prov_a",
            per_use("10.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await
        .token
        .unwrap();
    f.engine
        .change_mandate(
            &Principal::Buyer(buyer()),
            &ChangeMandate::new(
                key("rv"),
                f.mandate.clone(),
                LifecycleEvent::Revoke {
                    reason: Text::new("x").unwrap(),
                },
            ),
        )
        .await
        .unwrap();
    let out = f.redeem("prov_a", &token, "1.00").await;
    assert_eq!(code(&out), Some(RefusalCode::DecisionBlocked));
    let RedemptionOutcome::Refused { reasons, .. } = out else {
        unreachable!()
    };
    assert!(
        reasons.contains(&"ANCESTOR_NOT_ACTIVE".to_owned()),
        "{reasons:?}"
    );
    assert_eq!(f.fake.calls(Op::Authorize), 0);
}

/// A redemption whose PSP answer was lost is finished by a retry with the same key after the
/// clock moved: the retry replays the first attempt (same cart, same time), it is never an
/// idempotency conflict that would leave a used token with no answer.
#[tokio::test]
async fn a_retry_after_a_lost_answer_replays_the_attempt_when_the_clock_moved() {
    let f = Fixture::memory().await;
    let token = f
        .issue("prov_a", per_use("20.00", TokenUses::Single), MONTH)
        .await
        .token
        .unwrap();
    f.fake.inject(
        Some(Op::Authorize),
        agent_mandate::testkit::Fault::TimeoutAfterEffect,
    );
    let cmd = RedeemToken::new(key("lost"), token, eur("20.00"));
    let first = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert!(!charged(&first) || first.attempt().is_some(), "{first:?}");
    f.advance(Duration::seconds(90));
    let again = f.tokens.redeem(&provider("prov_a"), &cmd).await;
    let again = again.expect("the same key after the clock moved is a replay, not a conflict");
    assert!(again.refusal().is_none(), "{again:?}");
    if let (Some(a), Some(b)) = (first.attempt(), again.attempt()) {
        assert_eq!(a.id, b.id, "one attempt for one key");
    }
    assert!(f.fake.calls(Op::Authorize) <= 2);
}
