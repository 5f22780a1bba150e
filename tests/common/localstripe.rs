//! The Stripe adapter against localstripe (`LOCALSTRIPE_URL`, set by
//! `scripts/with-localstripe.sh`), and an engine built on it.

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

use crate::common::principals::*;
use std::sync::Arc;
use std::time::Duration;

use agent_mandate::adapters::http::{StripeConfig, StripeProvider};
use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{examples, CartSnapshot, CredentialRef, Mandate, Usage};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig, ExecutePayment};
use agent_mandate::ports::Secret;

use crate::common::engine::{backpack_spec, card, key};

/// The API key sent to localstripe (it accepts any).
pub const API_KEY: &str = "sk_test_agent_mandate_localstripe";

/// The card localstripe (and Stripe) authorizes.
pub const PM_GOOD: &str = "pm_card_visa";
/// The card whose charge localstripe (and Stripe) declines (`card_declined`).
pub const PM_DECLINE: &str = "pm_card_chargeCustomerFail";
/// A 3-D Secure 2 test card: confirmation answers `requires_action` (localstripe has no
/// `pm_card_threeDSecure2Required` shortcut, so the test creates a payment method with it).
pub const CARD_3DS: &str = "4000002760003184";

/// `LOCALSTRIPE_URL`, or `None` after printing why the test is skipped (a failure instead
/// when `REQUIRE_LOCALSTRIPE` is set, as in CI: there the tests must run, not skip).
pub fn localstripe_url(test: &str) -> Option<String> {
    match std::env::var("LOCALSTRIPE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("REQUIRE_LOCALSTRIPE").is_none(),
                "{test}: REQUIRE_LOCALSTRIPE is set but LOCALSTRIPE_URL is not"
            );
            // Straight to the stderr handle, not `eprintln!`: the test harness captures the
            // macro's output of a passing test, and a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: LOCALSTRIPE_URL not set (run scripts/with-localstripe.sh cargo test --all-features ...)"
            );
            None
        }
    }
}

/// A unique prefix for keys and ids in this process (localstripe outlives it when shared).
pub fn run_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}{}x{}", std::process::id(), nanos % 1_000_000_000)
}

/// A config for `url` with short timeouts.
pub fn config(url: &str) -> StripeConfig {
    StripeConfig::new(url, Secret::new(API_KEY))
        .expect("config")
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(10))
}

/// Creates a card payment method at localstripe (test setup only: Stripe itself refuses raw
/// card numbers without special permission; its test mode has `pm_card_*` shortcuts).
pub async fn create_card_pm(url: &str, number: &str) -> String {
    let response = agent_mandate::adapters::http::client_builder()
        .unwrap()
        .build()
        .unwrap()
        .post(format!("{url}/v1/payment_methods"))
        .bearer_auth(API_KEY)
        .form(&[
            ("type", "card"),
            ("card[number]", number),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2030"),
            ("card[cvc]", "123"),
        ])
        .send()
        .await
        .expect("localstripe reachable");
    let bytes = response.bytes().await.expect("body");
    let body: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
    body["id"].as_str().expect("payment method id").to_owned()
}

/// Memory ports with the Stripe adapter for `config` as the PSP.
pub fn ports(config: StripeConfig) -> (MemoryPorts, Arc<StripeProvider>) {
    let mut slot = None;
    let mem = MemoryPorts::new(examples::now(), |vault, clock| {
        let psp = Arc::new(StripeProvider::new(config, vault, clock).expect("provider"));
        slot = Some(psp.clone());
        psp
    });
    (mem, slot.expect("provider built"))
}

/// An engine on memory ports and the Stripe adapter, with the (roomy) Travel Backpack mandate
/// and three cards stored for the agent: good, declining, 3-D Secure.
pub struct StripeWorld {
    pub mem: MemoryPorts,
    pub psp: Arc<StripeProvider>,
    pub engine: Engine,
    pub good: CredentialRef,
    pub declining: CredentialRef,
    pub three_ds: CredentialRef,
    pub mandate: Mandate,
    pub snapshot: CartSnapshot,
}

impl StripeWorld {
    /// The agent's execute command for the story's snapshot with `credential`.
    pub fn execute(&self, k: &str, credential: &CredentialRef, capture: bool) -> ExecutePayment {
        ExecutePayment::new(
            key(k),
            examples::authorize_request(&self.snapshot),
            self.snapshot.clone(),
            examples::valid_checkout(self.snapshot.id()),
            credential.clone(),
        )
        .with_capture(capture)
    }

    /// Usage of the story's mandate now.
    pub async fn usage(&self) -> Usage {
        let now = agent_mandate::ports::Clock::now(&*self.mem.clock);
        self.mem
            .ports
            .store
            .usage(std::slice::from_ref(&self.mandate), now)
            .await
            .expect("usage")
            .remove(0)
    }
}

pub async fn stripe_world(url: &str, config: StripeConfig) -> StripeWorld {
    let mut spec = backpack_spec(true);
    spec.scope.amount.allow_partial_capture = true;
    stripe_world_with(url, config, spec).await
}

/// [`stripe_world`] with the mandate `spec`.
pub async fn stripe_world_with(
    url: &str,
    config: StripeConfig,
    spec: agent_mandate::domain::MandateSpec,
) -> StripeWorld {
    let (mem, psp) = ports(config);
    let engine =
        Engine::new(mem.ports.clone(), EngineConfig::default()).expect("engine configuration");
    let mandate = engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("create-mandate-001"), spec),
        )
        .await
        .expect("mandate created")
        .value;
    let three_ds_pm = create_card_pm(url, CARD_3DS).await;
    let mut refs = Vec::new();
    for pm in [PM_GOOD, PM_DECLINE, three_ds_pm.as_str()] {
        refs.push(
            engine
                .store_credential(&buyer_p(), &key(pm), card(&examples::agent().id, pm))
                .await
                .expect("card stored")
                .value
                .reference,
        );
    }
    let three_ds = refs.pop().expect("3ds");
    let declining = refs.pop().expect("declining");
    let good = refs.pop().expect("good");
    StripeWorld {
        mem,
        psp,
        engine,
        good,
        declining,
        three_ds,
        mandate,
        snapshot: examples::travel_backpack_snapshot(),
    }
}
