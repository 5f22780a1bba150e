//! Regression tests of the tokens' hostile review, and the attacks on the fixes: a retried
//! redemption after revocation or expiry answers its recorded outcome (I3); the revocation
//! fan-out is resumable (I15: one `token_revoked` event per token); a provider is no host
//! process (I14: authority from an authenticated principal of the right kind); a retried
//! issue completes when the clock moved; refusals a caller causes are bounded in the audit.
#![cfg(all(feature = "tokens", feature = "testkit"))]

mod tokens_support;

use agent_mandate::domain::{ActorId, LifecycleEvent, MandateStatus, Party, Principal, Text};
use agent_mandate::engine::{
    ChangeMandate, CreateMandate, DeriveMandate, EngineError, SetSuspension,
};
use agent_mandate::ports::{TokenSelector, TokenStatus, TokenUses};
use agent_mandate::tokens::{
    RedeemToken, RedemptionOutcome, RefusalCode, RevokeTokens, TokenError,
};
use chrono::Duration;
use tokens_support::*;

const MONTH: u64 = 30 * 86_400;

fn charged_replay(o: &RedemptionOutcome) -> bool {
    matches!(o, RedemptionOutcome::Charged { replay: true, .. })
}

fn revoke_cmd(selector: TokenSelector) -> RevokeTokens {
    RevokeTokens::new(selector, Text::new("hostile review").unwrap())
}

fn count(bodies: &[String], needle: &str) -> usize {
    bodies.iter().filter(|b| b.contains(needle)).count()
}

// ----- a retried redemption answers its record whatever the token's status now -----

#[tokio::test]
async fn token_redeem_replay_after_revoke_answers_charged() {
    let f = Fixture::memory().await;
    let issued = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let token = issued.token.unwrap();
    let cmd = RedeemToken::new(key("charge-1"), token.clone(), eur("5.00"));
    let first = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert!(
        matches!(first, RedemptionOutcome::Charged { replay: false, .. }),
        "{first:?}"
    );
    f.tokens
        .revoke(
            &agent_principal(),
            &revoke_cmd(TokenSelector::Token {
                token_id: issued.record.id.clone(),
            }),
        )
        .await
        .unwrap();
    let before = count(&f.audit_bodies().await, "token_refused");
    // The answer was lost: the provider retries with the same key.
    let again = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert!(charged_replay(&again), "{again:?}");
    assert_eq!(count(&f.audit_bodies().await, "token_refused"), before);
    // A new key is refused: the token is revoked.
    let other = RedeemToken::new(key("charge-2"), token, eur("5.00"));
    let out = f.tokens.redeem(&provider("prov_a"), &other).await.unwrap();
    assert_eq!(out.refusal(), Some(RefusalCode::Revoked));
}

#[tokio::test]
async fn a_charged_redemption_retried_after_expiry_answers_charged() {
    let f = Fixture::memory().await;
    let issued = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), 3_600)
        .await;
    let token = issued.token.unwrap();
    let cmd = RedeemToken::new(key("charge-1"), token.clone(), eur("5.00"));
    let first = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert!(matches!(first, RedemptionOutcome::Charged { .. }));
    f.advance(Duration::hours(2));
    let again = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert!(charged_replay(&again), "{again:?}");
    let other = RedeemToken::new(key("charge-2"), token, eur("5.00"));
    let out = f.tokens.redeem(&provider("prov_a"), &other).await.unwrap();
    assert_eq!(out.refusal(), Some(RefusalCode::Expired));
}

#[tokio::test]
async fn a_replay_still_checks_who_presents_it_and_what_it_asks() {
    let f = Fixture::memory().await;
    let issued = f
        .issue(
            "prov_a",
            per_use("10.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let token = issued.token.unwrap();
    let cmd = RedeemToken::new(key("charge-1"), token.clone(), eur("5.00"));
    f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    f.tokens
        .revoke(
            &agent_principal(),
            &revoke_cmd(TokenSelector::Token {
                token_id: issued.record.id.clone(),
            }),
        )
        .await
        .unwrap();
    // Another provider with the same key and token learns nothing of the charge.
    let out = f.tokens.redeem(&provider("prov_b"), &cmd).await.unwrap();
    assert_eq!(out.refusal(), Some(RefusalCode::WrongProvider));
    // The host's system principal with the provider's id is no provider.
    let sys = Principal::System(ActorId::new("prov_a").unwrap());
    let out = f.tokens.redeem(&sys, &cmd).await.unwrap();
    assert_eq!(out.refusal(), Some(RefusalCode::WrongProvider));
    // The same key with another amount is a conflict, not a replay.
    let other = RedeemToken::new(key("charge-1"), token, eur("6.00"));
    assert!(matches!(
        f.tokens.redeem(&provider("prov_a"), &other).await,
        Err(TokenError::IdempotencyConflict { .. })
    ));
}

// ----- a provider is not the host -----

#[tokio::test]
async fn provider_principal_cannot_revoke_other_issuers_tokens() {
    let f = Fixture::memory().await;
    let issued = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let agent_id = agent().id;
    let issuer = revoke_cmd(TokenSelector::Issuer {
        actor_id: agent_id.clone(),
    });
    {
        let by = provider("prov_a");
        assert!(
            matches!(
                f.tokens.revoke(&by, &issuer).await,
                Err(TokenError::NotPermitted { .. })
            ),
            "{by:?}"
        );
        for selector in [
            TokenSelector::Token {
                token_id: issued.record.id.clone(),
            },
            TokenSelector::Credential {
                credential: f.credential.clone(),
            },
            TokenSelector::Mandate {
                mandate_id: f.mandate.clone(),
            },
        ] {
            let out = f.tokens.revoke(&by, &revoke_cmd(selector.clone())).await;
            assert!(
                matches!(out, Err(TokenError::NotPermitted { .. }))
                    || matches!(
                        out,
                        Err(TokenError::Engine(EngineError::NotPermitted { .. }))
                    ),
                "{by:?} {selector:?}: {out:?}"
            );
        }
    }
    // Nothing was revoked: the token, the agent's card and the mandate are as they were.
    let record = f.tokens.token(&issued.record.id).await.unwrap().unwrap();
    assert_eq!(record.status, TokenStatus::Active);
    assert_eq!(
        f.memory
            .ports
            .vault
            .status(&f.credential, now())
            .await
            .unwrap(),
        agent_mandate::domain::CredentialStatus::Usable
    );
    let root = f
        .engine
        .mandate(&agent_principal(), &f.mandate)
        .await
        .unwrap();
    assert_eq!(root.status(), MandateStatus::Active);
}

#[tokio::test]
async fn a_provider_principal_is_refused_by_every_engine_command_and_read() {
    let f = Fixture::memory().await;
    let issued = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let token = issued.token.clone().unwrap();
    let charged = f.redeem("prov_a", &token, "5.00").await;
    let attempt = charged.attempt().expect("charged").id.clone();
    let p = provider("prov_a");
    // Named after the token's own actor too: a provider never acts as it.
    let as_token = Principal::Provider(ActorId::new(issued.record.id.as_str()).unwrap());
    for by in [&p, &as_token] {
        let mut spec = root_spec("mandate_by_provider", "50.00");
        spec.actor = agent();
        assert!(f
            .engine
            .create_mandate(by, &CreateMandate::new(key("pm1"), spec))
            .await
            .is_err());
        let mut child = root_spec("mandate_child_p", "5.00");
        child.parent_id = Some(f.mandate.clone());
        assert!(f
            .engine
            .derive_mandate(by, &DeriveMandate::new(key("pm2"), child))
            .await
            .is_err());
        for id in [&f.mandate, &issued.record.mandate_id] {
            assert!(f
                .engine
                .change_mandate(
                    by,
                    &ChangeMandate::new(
                        key("pm3"),
                        id.clone(),
                        LifecycleEvent::Revoke {
                            reason: Text::new("x").unwrap()
                        }
                    )
                )
                .await
                .is_err());
            assert!(f.engine.mandate(by, id).await.is_err());
            assert!(f.engine.chain_usage(by, id).await.is_err());
        }
        assert!(f
            .engine
            .store_credential(by, &key("pm4"), card(&agent().id, &buyer(), "pm_x"))
            .await
            .is_err());
        assert!(f.engine.revoke_credentials(by, &agent().id).await.is_err());
        assert!(f.engine.attempt(by, &attempt).await.is_err());
        assert!(f.engine.open_attempts(by, 10).await.is_err());
        assert!(f.engine.audit_segment(by, 0, 10).await.is_err());
        assert!(f.engine.buyer_events(by, &buyer(), 0, 10).await.is_err());
        assert!(f
            .engine
            .set_suspension(
                by,
                &SetSuspension::new(
                    key("pm5"),
                    Party::Actor(agent().id),
                    true,
                    Text::new("x").unwrap()
                )
            )
            .await
            .is_err());
        assert!(f
            .engine
            .suspend_credentials(by, &agent().id, true)
            .await
            .is_err());
        // Tokens: it issues none.
        let cmd = agent_mandate::tokens::IssueToken::new(
            key("pm6"),
            f.mandate.clone(),
            f.credential.clone(),
            redeemer("prov_a"),
            per_use("1.00", TokenUses::Single),
            MONTH,
        );
        assert!(matches!(
            f.tokens.issue(by, &cmd).await,
            Err(TokenError::NotPermitted { .. })
        ));
    }
    assert_eq!(
        f.tokens
            .token(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        TokenStatus::Active
    );
}

// ----- wrappers that fail on cue -----

mod flaky {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use agent_mandate::domain::{ActorId, CredentialRef, CredentialStatus, IdempotencyKey};
    use agent_mandate::ports::{
        ClaimOutcome, CredentialVault, InsertToken, NewCredential, Redemption, RedemptionState,
        ResolvedCredential, RevocationProgress, StoreOutcome, StoredCredential, TokenId,
        TokenRecord, TokenSelector, TokenStore, TokenStoreError, VaultError,
    };
    use chrono::{DateTime, Utc};

    fn take(n: &AtomicU32) -> bool {
        n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok()
    }

    /// A vault whose `revoke` fails the next `fail_revoke` times.
    #[derive(Debug)]
    pub struct Vault {
        pub inner: Arc<dyn CredentialVault>,
        pub fail_revoke: AtomicU32,
    }

    #[async_trait::async_trait]
    impl CredentialVault for Vault {
        async fn store(
            &self,
            key: &IdempotencyKey,
            c: NewCredential,
        ) -> Result<StoreOutcome, VaultError> {
            self.inner.store(key, c).await
        }
        async fn describe(&self, r: &CredentialRef) -> Result<StoredCredential, VaultError> {
            self.inner.describe(r).await
        }
        async fn resolve(
            &self,
            r: &CredentialRef,
            now: DateTime<Utc>,
        ) -> Result<ResolvedCredential, VaultError> {
            self.inner.resolve(r, now).await
        }
        async fn status(
            &self,
            r: &CredentialRef,
            now: DateTime<Utc>,
        ) -> Result<CredentialStatus, VaultError> {
            self.inner.status(r, now).await
        }
        async fn revoke(&self, r: &CredentialRef) -> Result<bool, VaultError> {
            if take(&self.fail_revoke) {
                return Err(VaultError::Unavailable {
                    message: "vault down".into(),
                });
            }
            self.inner.revoke(r).await
        }
        async fn revoke_owner(&self, owner: &ActorId) -> Result<u32, VaultError> {
            self.inner.revoke_owner(owner).await
        }
    }

    /// A token store whose `insert` fails the next `fail_insert` times.
    #[derive(Debug)]
    pub struct Store {
        pub inner: Arc<dyn TokenStore>,
        pub fail_insert: AtomicU32,
    }

    #[async_trait::async_trait]
    impl TokenStore for Store {
        async fn insert(&self, record: &TokenRecord) -> Result<InsertToken, TokenStoreError> {
            if take(&self.fail_insert) {
                return Err(TokenStoreError::Unavailable {
                    message: "token store down".into(),
                });
            }
            self.inner.insert(record).await
        }
        async fn token(&self, id: &TokenId) -> Result<Option<TokenRecord>, TokenStoreError> {
            self.inner.token(id).await
        }
        async fn claim(&self, r: &Redemption) -> Result<ClaimOutcome, TokenStoreError> {
            self.inner.claim(r).await
        }
        async fn settle(
            &self,
            t: &TokenId,
            k: &IdempotencyKey,
            s: &RedemptionState,
        ) -> Result<Redemption, TokenStoreError> {
            self.inner.settle(t, k, s).await
        }
        async fn redemptions(&self, t: &TokenId) -> Result<Vec<Redemption>, TokenStoreError> {
            self.inner.redemptions(t).await
        }
        async fn revoke(
            &self,
            s: &TokenSelector,
            at: DateTime<Utc>,
        ) -> Result<Vec<TokenRecord>, TokenStoreError> {
            self.inner.revoke(s, at).await
        }
        async fn tokens(&self, s: &TokenSelector) -> Result<Vec<TokenRecord>, TokenStoreError> {
            self.inner.tokens(s).await
        }
        async fn record_revocation(
            &self,
            id: &TokenId,
            p: RevocationProgress,
        ) -> Result<Option<TokenRecord>, TokenStoreError> {
            self.inner.record_revocation(id, p).await
        }
    }
}

/// A token service over the fixture's store, PSP, clock and token store, with a vault whose
/// `revoke` fails the next `fails` times.
fn with_flaky_vault(f: &Fixture, fails: u32) -> agent_mandate::tokens::TokenService {
    let mut ports = f.memory.ports.clone();
    ports.vault = std::sync::Arc::new(flaky::Vault {
        inner: f.memory.ports.vault.clone(),
        fail_revoke: std::sync::atomic::AtomicU32::new(fails),
    });
    let engine = agent_mandate::engine::Engine::new(ports, EngineConfig::default()).unwrap();
    agent_mandate::tokens::TokenService::new(
        engine,
        f.tokens.store().clone(),
        std::sync::Arc::new(agent_mandate::testkit::SeededTokenGenerator::new(9)),
    )
}

use agent_mandate::domain::CredentialStatus;
use agent_mandate::engine::EngineConfig;

async fn revoked_state(
    f: &Fixture,
    issued: &agent_mandate::tokens::IssuedToken,
) -> (MandateStatus, CredentialStatus) {
    let m = f
        .memory
        .ports
        .store
        .mandate(&issued.record.mandate_id)
        .await
        .unwrap()
        .unwrap();
    let c = f
        .memory
        .ports
        .vault
        .status(&issued.record.credential, now())
        .await
        .unwrap();
    (m.status(), c)
}

fn revoked_events(bodies: &[String], token: &str) -> usize {
    bodies
        .iter()
        .filter(|b| b.contains("token_revoked") && b.contains(token))
        .count()
}

// ----- the revocation fan-out is resumable -----

#[tokio::test]
async fn token_revoke_retry_finishes_after_vault_failure() {
    let f = Fixture::with(
        EngineConfig::default(),
        true,
        std::sync::Arc::new(agent_mandate::adapters::memory::MemoryTokenStore::new()),
    )
    .await;
    let issued = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let flaky = with_flaky_vault(&f, 1);
    let cmd = revoke_cmd(TokenSelector::Token {
        token_id: issued.record.id.clone(),
    });
    assert!(flaky.revoke(&agent_principal(), &cmd).await.is_err());
    // Marked revoked (redemptions refused), the rest not done yet.
    assert_eq!(
        f.tokens
            .token(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .status,
        TokenStatus::Revoked
    );
    assert_eq!(
        revoked_events(&f.audit_bodies().await, issued.record.id.as_str()),
        0
    );
    // The retry finishes it.
    assert_eq!(flaky.revoke(&agent_principal(), &cmd).await.unwrap(), 0);
    let (m, c) = revoked_state(&f, &issued).await;
    assert_eq!(m, MandateStatus::Revoked);
    assert_eq!(c, CredentialStatus::Revoked);
    let psp = f.psp.as_ref().unwrap();
    assert_eq!(
        psp.revoked.lock().unwrap().clone(),
        vec![issued.record.id.to_string()]
    );
    let bodies = f.audit_bodies().await;
    assert_eq!(revoked_events(&bodies, issued.record.id.as_str()), 1);
    assert!(
        f.tokens
            .token(&issued.record.id)
            .await
            .unwrap()
            .unwrap()
            .revocation
            .finished
    );
    // A third call changes nothing and writes nothing.
    assert_eq!(flaky.revoke(&agent_principal(), &cmd).await.unwrap(), 0);
    assert_eq!(
        revoked_events(&f.audit_bodies().await, issued.record.id.as_str()),
        1
    );
    assert_eq!(psp.revoked.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_wider_selector_finishes_what_a_failed_one_left() {
    let f = Fixture::memory().await;
    let a = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let b = f
        .issue("prov_b", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let flaky = with_flaky_vault(&f, 1);
    assert!(flaky
        .revoke(
            &agent_principal(),
            &revoke_cmd(TokenSelector::Token {
                token_id: a.record.id.clone()
            })
        )
        .await
        .is_err());
    // The buyer revokes the whole credential: b now, and a's unfinished fan-out.
    let n = f
        .tokens
        .revoke(
            &Principal::Buyer(buyer()),
            &revoke_cmd(TokenSelector::Credential {
                credential: f.credential.clone(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let bodies = f.audit_bodies().await;
    for t in [&a, &b] {
        assert_eq!(
            revoked_state(&f, t).await,
            (MandateStatus::Revoked, CredentialStatus::Revoked)
        );
        assert_eq!(revoked_events(&bodies, t.record.id.as_str()), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_revocations_racing_write_one_event_per_token() {
    for round in 0..5 {
        let f = Fixture::memory().await;
        let mut issued = Vec::new();
        for _ in 0..4 {
            issued.push(
                f.issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
                    .await,
            );
        }
        let sel = revoke_cmd(TokenSelector::Issuer {
            actor_id: agent().id,
        });
        let t1 = f.tokens.clone();
        let t2 = f.tokens.clone();
        let (s1, s2) = (sel.clone(), sel.clone());
        let a = tokio::spawn(async move { t1.revoke(&agent_principal(), &s1).await });
        let ops = Principal::Operator(ActorId::new("ops_1").unwrap());
        let b = tokio::spawn(async move { t2.revoke(&ops, &s2).await });
        let (ra, rb) = (a.await.unwrap(), b.await.unwrap());
        assert!(ra.is_ok() && rb.is_ok(), "round {round}: {ra:?} {rb:?}");
        // Together they marked every token once (whichever marked it counts it).
        assert_eq!(ra.unwrap() + rb.unwrap(), 4, "round {round}");
        // Finish anything a concurrent fan-out left to the other (nothing, once both returned).
        assert_eq!(f.tokens.revoke(&agent_principal(), &sel).await.unwrap(), 0);
        let bodies = f.audit_bodies().await;
        for t in &issued {
            assert_eq!(
                revoked_events(&bodies, t.record.id.as_str()),
                1,
                "round {round}: {}",
                t.record.id
            );
            let record = f.tokens.token(&t.record.id).await.unwrap().unwrap();
            assert!(record.revocation.finished, "round {round}");
        }
    }
}

/// A PSP that keeps token sides and fails `revoke_token` the next `fails` times.
#[derive(Debug)]
struct FailingRevokePsp {
    inner: std::sync::Arc<agent_mandate::testkit::FakePsp>,
    fails: std::sync::atomic::AtomicU32,
    invalid: bool,
    asked: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl agent_mandate::ports::PaymentProvider for FailingRevokePsp {
    fn deadline(&self) -> std::time::Duration {
        self.inner.deadline()
    }
    async fn authorize(
        &self,
        r: &agent_mandate::ports::AuthorizeRequest,
    ) -> Result<agent_mandate::domain::ProviderReport, agent_mandate::ports::ProviderError> {
        self.inner.authorize(r).await
    }
    async fn capture(
        &self,
        r: &agent_mandate::ports::CaptureRequest,
    ) -> Result<agent_mandate::domain::ProviderReport, agent_mandate::ports::ProviderError> {
        self.inner.capture(r).await
    }
    async fn void(
        &self,
        r: &agent_mandate::ports::VoidRequest,
    ) -> Result<agent_mandate::domain::ProviderReport, agent_mandate::ports::ProviderError> {
        self.inner.void(r).await
    }
    async fn refund(
        &self,
        r: &agent_mandate::ports::RefundRequest,
    ) -> Result<agent_mandate::domain::ProviderReport, agent_mandate::ports::ProviderError> {
        self.inner.refund(r).await
    }
    async fn lookup(
        &self,
        l: &agent_mandate::ports::Lookup,
    ) -> Result<Option<agent_mandate::domain::ProviderReport>, agent_mandate::ports::ProviderError>
    {
        self.inner.lookup(l).await
    }
    fn revokes_tokens(&self) -> bool {
        true
    }
    async fn revoke_token(
        &self,
        _r: &agent_mandate::ports::RevokeTokenRequest,
    ) -> Result<(), agent_mandate::ports::ProviderError> {
        use std::sync::atomic::Ordering;
        self.asked.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fails
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_sub(1))
            .is_ok();
        if self.invalid {
            return Err(agent_mandate::ports::ProviderError::Invalid {
                message: "no such token".into(),
            });
        }
        if failing {
            return Err(agent_mandate::ports::ProviderError::Transient {
                message: "psp down".into(),
                retry_after: None,
            });
        }
        Ok(())
    }
}

fn with_psp(
    f: &Fixture,
    psp: std::sync::Arc<FailingRevokePsp>,
) -> agent_mandate::tokens::TokenService {
    let mut ports = f.memory.ports.clone();
    ports.provider = psp;
    let engine = agent_mandate::engine::Engine::new(ports, EngineConfig::default()).unwrap();
    agent_mandate::tokens::TokenService::new(
        engine,
        f.tokens.store().clone(),
        std::sync::Arc::new(agent_mandate::testkit::SeededTokenGenerator::new(9)),
    )
}

#[tokio::test]
async fn a_psp_failing_revoke_is_retried_and_the_event_waits_for_it() {
    let f = Fixture::memory().await;
    let issued = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let psp = std::sync::Arc::new(FailingRevokePsp {
        inner: f.fake.clone(),
        fails: std::sync::atomic::AtomicU32::new(2),
        invalid: false,
        asked: std::sync::atomic::AtomicU32::new(0),
    });
    let tokens = with_psp(&f, psp.clone());
    let cmd = revoke_cmd(TokenSelector::Token {
        token_id: issued.record.id.clone(),
    });
    for _ in 0..2 {
        assert!(matches!(
            tokens.revoke(&agent_principal(), &cmd).await,
            Err(TokenError::Engine(EngineError::Provider(_)))
        ));
        // What the crate holds is revoked already; the event waits for the PSP.
        assert_eq!(
            revoked_state(&f, &issued).await,
            (MandateStatus::Revoked, CredentialStatus::Revoked)
        );
        assert_eq!(
            revoked_events(&f.audit_bodies().await, issued.record.id.as_str()),
            0
        );
    }
    assert_eq!(tokens.revoke(&agent_principal(), &cmd).await.unwrap(), 0);
    let bodies = f.audit_bodies().await;
    let ev: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("token_revoked") && b.contains(issued.record.id.as_str()))
        .collect();
    assert_eq!(ev.len(), 1);
    assert!(ev[0].contains("\"psp\":true"), "{}", ev[0]);
    let record = f.tokens.token(&issued.record.id).await.unwrap().unwrap();
    assert!(record.revocation.psp_revoked && record.revocation.finished);
    // Asked three times, never again once confirmed.
    tokens.revoke(&agent_principal(), &cmd).await.unwrap();
    assert_eq!(psp.asked.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_psp_refusing_revoke_for_good_is_recorded_as_not_revoked() {
    let f = Fixture::memory().await;
    let issued = f
        .issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
    let psp = std::sync::Arc::new(FailingRevokePsp {
        inner: f.fake.clone(),
        fails: std::sync::atomic::AtomicU32::new(0),
        invalid: true,
        asked: std::sync::atomic::AtomicU32::new(0),
    });
    let tokens = with_psp(&f, psp);
    let cmd = revoke_cmd(TokenSelector::Token {
        token_id: issued.record.id.clone(),
    });
    assert_eq!(tokens.revoke(&agent_principal(), &cmd).await.unwrap(), 1);
    let bodies = f.audit_bodies().await;
    let ev: Vec<&String> = bodies
        .iter()
        .filter(|b| b.contains("token_revoked") && b.contains(issued.record.id.as_str()))
        .collect();
    assert_eq!(ev.len(), 1);
    assert!(ev[0].contains("\"psp\":false"), "{}", ev[0]);
}

#[tokio::test]
async fn a_provider_retrying_after_revocation_gets_no_new_charge() {
    let f = Fixture::memory().await;
    let issued = f
        .issue(
            "prov_a",
            per_use("10.00", TokenUses::CapBounded { max_uses: None }),
            MONTH,
        )
        .await;
    let token = issued.token.unwrap();
    let cmd = RedeemToken::new(key("k1"), token.clone(), eur("5.00"));
    f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    let flaky = with_flaky_vault(&f, 1);
    let _ = flaky
        .revoke(
            &agent_principal(),
            &revoke_cmd(TokenSelector::Token {
                token_id: issued.record.id.clone(),
            }),
        )
        .await;
    // Half-way revoked: the child mandate may still be active, the token is not.
    let captured = f.fake.total_captured(agent_mandate::domain::Currency::EUR);
    let again = f.tokens.redeem(&provider("prov_a"), &cmd).await.unwrap();
    assert!(charged_replay(&again));
    let fresh = RedeemToken::new(key("k2"), token, eur("5.00"));
    let out = f.tokens.redeem(&provider("prov_a"), &fresh).await.unwrap();
    assert_eq!(out.refusal(), Some(RefusalCode::Revoked));
    assert_eq!(
        f.fake.total_captured(agent_mandate::domain::Currency::EUR),
        captured
    );
}

#[tokio::test]
async fn the_fan_out_of_a_revoked_mandate_still_needs_permission() {
    let f = Fixture::memory().await;
    f.issue("prov_a", per_use("10.00", TokenUses::Single), MONTH)
        .await;
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
    let cmd = revoke_cmd(TokenSelector::Mandate {
        mandate_id: f.mandate.clone(),
    });
    for by in [
        Principal::Agent("agent_other".parse().unwrap()),
        provider("prov_a"),
    ] {
        assert!(matches!(
            f.tokens.revoke(&by, &cmd).await,
            Err(TokenError::NotPermitted { .. })
        ));
    }
    assert_eq!(
        f.tokens
            .revoke(&Principal::Buyer(buyer()), &cmd)
            .await
            .unwrap(),
        1
    );
}

// ----- a retried issue completes -----

#[tokio::test]
async fn token_issue_retry_after_insert_failure_completes() {
    let f = Fixture::memory().await;
    let store = std::sync::Arc::new(flaky::Store {
        inner: f.tokens.store().clone(),
        fail_insert: std::sync::atomic::AtomicU32::new(1),
    });
    let tokens = agent_mandate::tokens::TokenService::new(
        f.engine.clone(),
        store,
        std::sync::Arc::new(agent_mandate::testkit::SeededTokenGenerator::new(5)),
    );
    let cmd = agent_mandate::tokens::IssueToken::new(
        key("issue-flaky"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_a"),
        per_use("10.00", TokenUses::Single),
        MONTH,
    );
    assert!(tokens.issue(&agent_principal(), &cmd).await.is_err());
    f.advance(Duration::seconds(1));
    let issued = tokens.issue(&agent_principal(), &cmd).await.unwrap();
    let value = issued.token.clone().expect("a value");
    assert!(!issued.replay);
    // The record is the orphaned child's: one child, redeemable, revocable by the fan-out.
    let child = f
        .memory
        .ports
        .store
        .mandate(&issued.record.mandate_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(issued.record.issued_at, child.lifecycle().created_at);
    let out = f.redeem("prov_a", &value, "4.00").await;
    assert!(matches!(out, RedemptionOutcome::Charged { .. }), "{out:?}");
    // Another command under the key is still a conflict.
    let other = agent_mandate::tokens::IssueToken::new(
        key("issue-flaky"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_a"),
        per_use("9.00", TokenUses::Single),
        MONTH,
    );
    assert!(matches!(
        tokens.issue(&agent_principal(), &other).await,
        Err(TokenError::IdempotencyConflict { .. })
    ));
}

#[tokio::test]
async fn a_retried_issue_with_other_limits_after_a_failure_is_a_conflict() {
    let f = Fixture::memory().await;
    let store = std::sync::Arc::new(flaky::Store {
        inner: f.tokens.store().clone(),
        fail_insert: std::sync::atomic::AtomicU32::new(1),
    });
    let tokens = agent_mandate::tokens::TokenService::new(
        f.engine.clone(),
        store,
        std::sync::Arc::new(agent_mandate::testkit::SeededTokenGenerator::new(5)),
    );
    let first = agent_mandate::tokens::IssueToken::new(
        key("issue-x"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_a"),
        per_use("10.00", TokenUses::Single),
        MONTH,
    );
    assert!(tokens.issue(&agent_principal(), &first).await.is_err());
    let wider = agent_mandate::tokens::IssueToken::new(
        key("issue-x"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_a"),
        per_use("50.00", TokenUses::Single),
        MONTH,
    );
    assert!(matches!(
        tokens.issue(&agent_principal(), &wider).await,
        Err(TokenError::IdempotencyConflict { .. })
    ));
}

// ----- refusals a caller causes are bounded in the audit -----

#[tokio::test]
async fn token_refusals_of_one_caller_are_bounded_and_counted() {
    let f = Fixture::memory().await;
    let tokens = f
        .tokens
        .clone()
        .with_refusal_audit_bound(3, Duration::minutes(1));
    let garbage = agent_mandate::ports::Secret::new("amtok_not_a_token");
    let refused = |b: &String| b.contains("token_refused");
    let before = f.audit_bodies().await.iter().filter(|b| refused(b)).count();
    for i in 0..50 {
        let cmd = RedeemToken::new(key(&format!("g{i}")), garbage.clone(), eur("1.00"));
        let out = tokens.redeem(&provider("prov_evil"), &cmd).await.unwrap();
        assert_eq!(out.refusal(), Some(RefusalCode::Unknown));
    }
    // Another caller is not silenced by the first.
    let cmd = RedeemToken::new(key("other"), garbage.clone(), eur("1.00"));
    tokens.redeem(&provider("prov_b"), &cmd).await.unwrap();
    let bodies = f.audit_bodies().await;
    assert_eq!(bodies.iter().filter(|b| refused(b)).count() - before, 4);
    // The next window's first event carries the count of what was not written.
    f.advance(Duration::minutes(1));
    let cmd = RedeemToken::new(key("later"), garbage, eur("1.00"));
    tokens.redeem(&provider("prov_evil"), &cmd).await.unwrap();
    let bodies = f.audit_bodies().await;
    let last = bodies.iter().rev().find(|b| refused(b)).unwrap();
    assert!(last.contains("\"suppressed\":47"), "{last}");
}

#[tokio::test]
async fn a_retried_issue_after_the_parent_was_revoked_issues_nothing() {
    let f = Fixture::memory().await;
    let store = std::sync::Arc::new(flaky::Store {
        inner: f.tokens.store().clone(),
        fail_insert: std::sync::atomic::AtomicU32::new(1),
    });
    let tokens = agent_mandate::tokens::TokenService::new(
        f.engine.clone(),
        store,
        std::sync::Arc::new(agent_mandate::testkit::SeededTokenGenerator::new(5)),
    );
    let cmd = agent_mandate::tokens::IssueToken::new(
        key("issue-r"),
        f.mandate.clone(),
        f.credential.clone(),
        redeemer("prov_a"),
        per_use("10.00", TokenUses::Single),
        MONTH,
    );
    assert!(tokens.issue(&agent_principal(), &cmd).await.is_err());
    // Between the attempts the buyer revokes the mandate (no token exists to fan out to).
    f.engine
        .change_mandate(
            &Principal::Buyer(buyer()),
            &ChangeMandate::new(
                key("rv-parent"),
                f.mandate.clone(),
                LifecycleEvent::Revoke {
                    reason: Text::new("stop").unwrap(),
                },
            ),
        )
        .await
        .unwrap();
    assert!(matches!(
        tokens.issue(&agent_principal(), &cmd).await,
        Err(TokenError::Invalid { ref field, .. }) if field == "parent_id"
    ));
}

#[tokio::test]
async fn an_agent_naming_the_hosts_process_as_provider_does_not_lock_it_out() {
    let f = Fixture::memory().await;
    // The host's revoking process is System("scheduler"); the agent names it as redeemer.
    let mut named = redeemer("prov_a");
    named.provider = ActorId::new("scheduler").unwrap();
    let cmd = agent_mandate::tokens::IssueToken::new(
        key("issue-sched"),
        f.mandate.clone(),
        f.credential.clone(),
        named,
        per_use("10.00", TokenUses::Single),
        MONTH,
    );
    let issued = f.tokens.issue(&agent_principal(), &cmd).await.unwrap();
    let sys = Principal::System(ActorId::new("scheduler").unwrap());
    let n = f
        .tokens
        .revoke(
            &sys,
            &revoke_cmd(TokenSelector::Issuer {
                actor_id: agent().id,
            }),
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    // And the system process cannot redeem the token it was named in.
    let cmd = RedeemToken::new(key("sys"), issued.token.unwrap(), eur("1.00"));
    let out = f.tokens.redeem(&sys, &cmd).await.unwrap();
    assert_eq!(out.refusal(), Some(RefusalCode::WrongProvider));
}
