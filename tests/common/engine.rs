//! An engine on the memory adapters and the fake PSP, with the Travel Backpack story loaded.

use super::principals::*;
use std::sync::Arc;

use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::examples;
use agent_mandate::domain::AttemptId;
use agent_mandate::domain::{
    Actor, ActorId, ActorKind, CartSnapshot, CredentialRef, IdempotencyKey, Mandate, MandateSpec,
    Money, Usage,
};
use agent_mandate::engine::{
    CapturePayment, CreateMandate, Engine, EngineConfig, ExecutePayment, RefundPayment, VoidPayment,
};
use agent_mandate::ports::{CredentialDisplay, CredentialKind, FundingType, NewCredential, Secret};
use agent_mandate::testkit::FakePsp;

/// Everything a scenario touches.
pub struct World {
    pub mem: MemoryPorts,
    pub psp: Arc<FakePsp>,
    pub engine: Engine,
    pub card: CredentialRef,
    pub snapshot: CartSnapshot,
    pub mandate: Mandate,
}

pub fn key(s: &str) -> IdempotencyKey {
    s.parse().expect("test key")
}

/// The agent's capture of `attempt` under key `k` (`None`: all that was authorized).
pub fn agent_capture(k: &str, attempt: &AttemptId, amount: Option<Money>) -> CapturePayment {
    CapturePayment::new(key(k), attempt.clone()).with_amount(amount)
}

/// The agent's refund of `attempt` under key `k` (`None`: all that is not refunded yet).
pub fn agent_refund(k: &str, attempt: &AttemptId, amount: Option<Money>) -> RefundPayment {
    RefundPayment::new(key(k), attempt.clone()).with_amount(amount)
}

/// The agent's void of `attempt` under key `k`.
pub fn agent_void(k: &str, attempt: &AttemptId) -> VoidPayment {
    VoidPayment::new(key(k), attempt.clone())
}

/// A human who administers the platform (creates root mandates, confirms, suspends).
pub fn admin() -> Actor {
    Actor {
        id: "human_buyer_456".parse::<ActorId>().expect("id"),
        kind: ActorKind::Human,
    }
}

pub fn card(owner: &ActorId, secret: &str) -> NewCredential {
    NewCredential {
        kind: CredentialKind::PaymentMethod,
        owner: owner.clone(),
        buyer_id: examples::buyer(),
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

/// The Travel Backpack mandate, with room for many payments when `roomy`.
pub fn backpack_spec(roomy: bool) -> MandateSpec {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    if roomy {
        let eur = |a: &str| Money::parse(a, agent_mandate::domain::Currency::EUR).expect("amount");
        spec.scope.max_uses = None;
        spec.scope.amount.max_payment_attempts = None;
        spec.scope.budgets.lifetime = Some(eur("100000.00"));
        spec.scope.budgets.windows[0].max_amount = Some(eur("100000.00"));
        spec.scope.budgets.windows[0].max_count = None;
    }
    spec
}

/// Euros.
pub fn eur(a: &str) -> Money {
    Money::parse(a, agent_mandate::domain::Currency::EUR).expect("amount")
}

/// The Travel Backpack mandate (lifetime cap 150.00 EUR) without the use and attempt counts,
/// so only the lifetime cap stands between two 144.00 EUR payments.
pub async fn capped_world() -> World {
    let mut spec = backpack_spec(false);
    spec.scope.max_uses = None;
    spec.scope.amount.max_payment_attempts = None;
    world_with(EngineConfig::default(), spec).await
}

/// Money the fake PSP holds or took: authorized and not voided, in minor units.
pub fn psp_money(psp: &FakePsp) -> i64 {
    psp.payments()
        .iter()
        .filter(|p| {
            matches!(
                p.status,
                agent_mandate::domain::ProviderStatus::Authorized
                    | agent_mandate::domain::ProviderStatus::Captured
            )
        })
        .map(|p| p.authorized.minor_units())
        .sum()
}

pub async fn world() -> World {
    world_with(EngineConfig::default(), backpack_spec(false)).await
}

pub async fn roomy_world() -> World {
    world_with(EngineConfig::default(), backpack_spec(true)).await
}

pub async fn world_with(config: EngineConfig, spec: MandateSpec) -> World {
    let mut slot = None;
    let mem = MemoryPorts::new(examples::now(), |vault, _clock| {
        let psp = Arc::new(FakePsp::with_vault(vault));
        slot = Some(psp.clone());
        psp
    });
    let psp = slot.expect("psp built");
    let engine = Engine::new(mem.ports.clone(), config).expect("engine configuration");
    let mandate = engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("create-mandate-001"), spec),
        )
        .await
        .expect("mandate created")
        .value;
    let card = engine
        .store_credential(
            &buyer_p(),
            &key("card"),
            card(&examples::agent().id, "pm_card_visa"),
        )
        .await
        .expect("card stored")
        .value
        .reference;
    World {
        mem,
        psp,
        engine,
        card,
        snapshot: examples::travel_backpack_snapshot(),
        mandate,
    }
}

impl World {
    /// The agent's execute command for the story's snapshot.
    pub fn execute(&self, k: &str) -> ExecutePayment {
        ExecutePayment::new(
            key(k),
            examples::authorize_request(&self.snapshot),
            self.snapshot.clone(),
            examples::valid_checkout(self.snapshot.id()),
            self.card.clone(),
        )
    }

    /// Usage of the story's mandate now.
    pub async fn usage(&self) -> Usage {
        let now = agent_mandate::ports::Clock::now(&*self.mem.clock);
        let chain = vec![self.mandate.clone()];
        self.mem
            .ports
            .store
            .usage(&chain, now)
            .await
            .expect("usage")
            .remove(0)
    }
}
