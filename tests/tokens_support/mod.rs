//! Fixtures shared by the `tokens_*` tests: a buyer's root mandate held by an agent, the
//! agent's orchestrator credential, two providers, and a token service over them.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use agent_mandate::adapters::memory::{ManualClock, MemoryPorts, MemoryTokenStore};
use agent_mandate::domain::ProviderReport;
use agent_mandate::domain::{
    examples, ActionSet, Actor, ActorId, AmountScope, Budgets, BuyerId, CartBinding,
    ConfirmationRule, CredentialRef, Currency, CurrencyScope, IdempotencyKey, Lifecycle, MandateId,
    MandateScope, MandateSpec, MandateStatus, MerchantScope, Money, PaymentAction, Principal,
    Validity,
};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig};
use agent_mandate::ports::{
    AuthorizeRequest, CaptureRequest, CredentialDisplay, CredentialKind, FundingType, Lookup,
    NewCredential, PaymentProvider, PeriodCap, ProviderError, Redeemer, RefundRequest,
    RevokeTokenRequest, Secret, TokenLimits, TokenStore, TokenUses, VoidRequest,
};
use agent_mandate::testkit::{FakePsp, SeededTokenGenerator};
use agent_mandate::tokens::{
    IssueToken, IssuedToken, RedeemToken, RedemptionOutcome, TokenService,
};
use chrono::{DateTime, Duration, Utc};

pub const CARD: &str = "pm_card_visa_4242_orchestrator";

pub fn eur(a: &str) -> Money {
    Money::parse(a, Currency::EUR).unwrap()
}

pub fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

pub fn buyer() -> BuyerId {
    examples::buyer()
}

pub fn agent() -> Actor {
    examples::agent()
}

pub fn agent_principal() -> Principal {
    Principal::Agent(agent().id)
}

pub fn provider(name: &str) -> Principal {
    Principal::Provider(ActorId::new(name).unwrap())
}

pub fn redeemer(name: &str) -> Redeemer {
    Redeemer {
        provider: ActorId::new(name).unwrap(),
        merchant_id: format!("merchant_{name}").parse().unwrap(),
        seller_id: None,
        mcc: "5734".parse().unwrap(),
    }
}

pub fn monthly(cap: &str, uses: TokenUses) -> TokenLimits {
    TokenLimits {
        currency: Currency::EUR,
        per_use: None,
        per_period: Some(PeriodCap {
            amount: eur(cap),
            period_seconds: 30 * 86_400,
        }),
        uses,
    }
}

pub fn per_use(cap: &str, uses: TokenUses) -> TokenLimits {
    TokenLimits {
        currency: Currency::EUR,
        per_use: Some(eur(cap)),
        per_period: None,
        uses,
    }
}

/// A PSP that can revoke its side of tokens, and counts the calls; everything else is the
/// fake PSP's.
#[derive(Debug)]
pub struct RevokingPsp {
    pub inner: Arc<FakePsp>,
    pub revoked: Mutex<Vec<String>>,
}

use std::sync::Mutex;

#[async_trait::async_trait]
impl PaymentProvider for RevokingPsp {
    fn deadline(&self) -> std::time::Duration {
        self.inner.deadline()
    }
    async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.authorize(r).await
    }
    async fn capture(&self, r: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.capture(r).await
    }
    async fn void(&self, r: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.void(r).await
    }
    async fn refund(&self, r: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        self.inner.refund(r).await
    }
    async fn lookup(&self, l: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        self.inner.lookup(l).await
    }
    fn revokes_tokens(&self) -> bool {
        true
    }
    async fn revoke_token(&self, r: &RevokeTokenRequest) -> Result<(), ProviderError> {
        self.revoked.lock().unwrap().push(r.token_id.to_string());
        Ok(())
    }
}

pub struct Fixture {
    pub memory: MemoryPorts,
    pub engine: Engine,
    pub tokens: TokenService,
    pub credential: CredentialRef,
    pub mandate: MandateId,
    pub psp: Option<Arc<RevokingPsp>>,
    pub fake: Arc<FakePsp>,
    n: AtomicU32,
}

pub fn now() -> DateTime<Utc> {
    examples::now()
}

pub fn root_spec(id: &str, max: &str) -> MandateSpec {
    let start = now() - Duration::hours(1);
    MandateSpec {
        id: id.parse().unwrap(),
        buyer_id: buyer(),
        actor: agent(),
        parent_id: None,
        scope: MandateScope {
            merchants: MerchantScope::Allowlist {
                merchant_ids: vec![
                    "merchant_prov_a".parse().unwrap(),
                    "merchant_prov_b".parse().unwrap(),
                ],
            },
            mccs: None,
            cart: CartBinding::Open {
                allowed_skus: None,
                max_line_items: None,
            },
            amount: AmountScope {
                max_amount: eur(max),
                includes_shipping: true,
                includes_tax: true,
                allow_lower_amount: true,
                allow_partial_capture: true,
                max_payment_attempts: None,
            },
            currency: CurrencyScope {
                currency: Currency::EUR,
                conversion_allowed: false,
            },
            budgets: Budgets::default(),
            actions: PaymentAction::ALL.into_iter().collect::<ActionSet>(),
            confirmation: ConfirmationRule::never(),
            max_uses: None,
            validity: Validity {
                not_before: start,
                expires_at: start + Duration::days(400),
            },
        },
        lifecycle: Lifecycle::new(MandateStatus::Active, start),
        evidence_refs: Vec::new(),
    }
}

pub fn card(owner: &ActorId, buyer: &BuyerId, secret: &str) -> NewCredential {
    NewCredential {
        kind: CredentialKind::PaymentMethod,
        owner: owner.clone(),
        buyer_id: buyer.clone(),
        secret: Secret::new(secret),
        cvc: None,
        display: CredentialDisplay {
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
            funding: FundingType::Credit,
        },
    }
}

impl Fixture {
    pub async fn memory() -> Fixture {
        Fixture::build(
            EngineConfig::default(),
            false,
            Arc::new(MemoryTokenStore::new()),
        )
        .await
    }

    pub async fn with(
        config: EngineConfig,
        revoking_psp: bool,
        store: Arc<dyn TokenStore>,
    ) -> Fixture {
        Fixture::build(config, revoking_psp, store).await
    }

    async fn build(
        config: EngineConfig,
        revoking_psp: bool,
        store: Arc<dyn TokenStore>,
    ) -> Fixture {
        let mut psp = None;
        let mut fake_out = None;
        let memory = MemoryPorts::new(now(), |vault, clock: Arc<ManualClock>| {
            let fake = Arc::new(FakePsp::with_vault_and_clock(vault, clock));
            fake_out = Some(fake.clone());
            if revoking_psp {
                let p = Arc::new(RevokingPsp {
                    inner: fake,
                    revoked: Mutex::new(Vec::new()),
                });
                psp = Some(p.clone());
                p as Arc<dyn PaymentProvider>
            } else {
                fake as Arc<dyn PaymentProvider>
            }
        });
        let fake = fake_out.unwrap();
        let engine = Engine::new(memory.ports.clone(), config).unwrap();
        let tokens = TokenService::new(
            engine.clone(),
            store,
            Arc::new(SeededTokenGenerator::new(42)),
        );
        let b = Principal::Buyer(buyer());
        let mandate = engine
            .create_mandate(
                &b,
                &CreateMandate::new(key("root"), root_spec("mandate_root", "1000.00")),
            )
            .await
            .unwrap()
            .value
            .id()
            .clone();
        let credential = engine
            .store_credential(&b, &key("card"), card(&agent().id, &buyer(), CARD))
            .await
            .unwrap()
            .value
            .reference;
        Fixture {
            memory,
            engine,
            tokens,
            credential,
            mandate,
            psp,
            fake,
            n: AtomicU32::new(0),
        }
    }

    pub fn next_key(&self, prefix: &str) -> IdempotencyKey {
        key(&format!(
            "{prefix}-{}",
            self.n.fetch_add(1, Ordering::Relaxed)
        ))
    }

    pub async fn issue(&self, provider_name: &str, limits: TokenLimits, ttl: u64) -> IssuedToken {
        let cmd = IssueToken::new(
            self.next_key("issue"),
            self.mandate.clone(),
            self.credential.clone(),
            redeemer(provider_name),
            limits,
            ttl,
        );
        self.tokens.issue(&agent_principal(), &cmd).await.unwrap()
    }

    pub async fn redeem(
        &self,
        provider_name: &str,
        token: &Secret,
        amount: &str,
    ) -> RedemptionOutcome {
        let cmd = RedeemToken::new(self.next_key("redeem"), token.clone(), eur(amount));
        self.tokens
            .redeem(&provider(provider_name), &cmd)
            .await
            .unwrap()
    }

    pub fn advance(&self, by: Duration) {
        self.memory.clock.advance(by);
    }

    pub async fn audit_bodies(&self) -> Vec<String> {
        use agent_mandate::ports::AuditSink;
        let _ = self.engine.flush_audit().await;
        self.memory
            .audit
            .read(0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.body)
            .collect()
    }
}
