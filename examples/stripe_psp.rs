//! The Stripe-compatible PSP adapter: configuration against a local or a real endpoint.
//!
//! Run against localstripe (installed and started by the script):
//!
//! ```text
//! scripts/with-localstripe.sh cargo run --example stripe_psp --features http,memory
//! ```
//!
//! or against Stripe's test mode:
//!
//! ```text
//! STRIPE_BASE_URL=https://api.stripe.com STRIPE_API_KEY=sk_test_... \
//!   cargo run --example stripe_psp --features http,memory
//! ```
//!
//! Without `LOCALSTRIPE_URL` or `STRIPE_API_KEY` it prints the configuration and stops.
//! The API key is a `Secret`: it never shows in `Debug`, errors or logs. The card is Stripe's
//! test payment method `pm_card_visa`, stored in the vault; only the adapter resolves it.

use std::sync::Arc;
use std::time::Duration;

use agent_mandate::adapters::http::{StripeConfig, StripeProvider};
use agent_mandate::adapters::memory::MemoryVault;
use agent_mandate::domain::{
    ActorId, AttemptId, BuyerId, Currency, MerchantId, Money, ProviderKey, SnapshotId,
};
use agent_mandate::ports::{
    AuthorizeRequest, CaptureRequest, CredentialDisplay, CredentialKind, CredentialVault,
    FundingType, Lookup, NewCredential, PaymentProvider, Secret, SystemClock,
};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let local = std::env::var("LOCALSTRIPE_URL").ok();
    let key = std::env::var("STRIPE_API_KEY").ok();
    let base = std::env::var("STRIPE_BASE_URL")
        .ok()
        .or_else(|| local.clone())
        .unwrap_or_else(|| "https://api.stripe.com".to_owned());
    let api_key = Secret::new(key.clone().unwrap_or_else(|| "sk_test_localstripe".into()));

    // 1. Configuration: base URL, key, timeouts. A connect failure is Transient (nothing was
    //    sent); past the request timeout, and on any 5xx or 409 of a call that can move
    //    money, the outcome is Ambiguous (the hold is kept; reconcile with lookup). Only a
    //    429 (documented as not processed) is Transient among the PSP's answers.
    let config = StripeConfig::new(&base, api_key)?
        .with_timeouts(Duration::from_secs(3), Duration::from_secs(30));
    println!("config: {config:?}");
    if local.is_none() && key.is_none() {
        println!("no LOCALSTRIPE_URL or STRIPE_API_KEY: nothing sent");
        return Ok(());
    }

    // 2. The vault keeps the payment method; the adapter resolves it at call time.
    let vault = Arc::new(MemoryVault::new());
    let card = vault
        .store(
            &"store-card-1".parse()?,
            NewCredential {
                kind: CredentialKind::PaymentMethod,
                owner: ActorId::new("agent_example")?,
                buyer_id: BuyerId::new("buyer_example")?,
                secret: Secret::new("pm_card_visa"),
                cvc: None,
                display: CredentialDisplay {
                    brand: "visa".into(),
                    last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2034,
                    funding: FundingType::Credit,
                },
            },
        )
        .await?
        .credential;
    let psp = StripeProvider::new(config, vault, Arc::new(SystemClock))?;

    // 3. Authorize (manual capture), capture part, look it up. The engine does this for you;
    //    here the port is called directly to show the mapping.
    let run = std::process::id();
    let amount = Money::parse("25.00", Currency::EUR)?;
    let report = psp
        .authorize(&AuthorizeRequest {
            key: ProviderKey::new(format!("example-{run}-authorize"))?,
            attempt_id: AttemptId::new(format!("example-{run}"))?,
            amount,
            credential: card.reference.clone(),
            capture: false,
            snapshot_id: SnapshotId::from_bytes([0; 32]),
            merchant_id: MerchantId::new("merchant_example")?,
            buyer_id: BuyerId::new("buyer_example")?,
        })
        .await?;
    println!("authorize: {report:?}");
    let Some(reference) = report.reference.clone() else {
        return Err("no PaymentIntent reference".into());
    };
    let captured = psp
        .capture(&CaptureRequest {
            key: ProviderKey::new(format!("example-{run}-capture"))?,
            reference: reference.clone(),
            attempt_id: AttemptId::new(format!("example-{run}"))?,
            amount: Money::parse("20.00", Currency::EUR)?,
        })
        .await?;
    println!("capture 20.00 of 25.00: {captured:?}");
    let seen = psp.lookup(&Lookup::Reference(reference)).await?;
    println!("lookup: {seen:?}");
    Ok(())
}
