//! The Agentic Commerce Protocol's delegate payment, end to end on the memory adapters and the
//! testkit's fake PSP: an agent platform delegates a card (signed with its Ed25519 key) for one
//! checkout session; the merchant redeems the vault token for that session; a second use and
//! another merchant are refused, and the audit trail says why.
//!
//! Run: `cargo run --example acp_delegate_payment --features acp,testkit`

use std::sync::Arc;

use agent_mandate::acp::{
    signing_input, AcpConfig, AcpService, CheckoutSession, PlatformKey, Redemption, RequestHeaders,
};
use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{IdempotencyKey, MerchantId, Principal};
use agent_mandate::engine::{Engine, EngineConfig};
use agent_mandate::testkit::FakePsp;
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use ring::signature::KeyPair as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = Utc
        .with_ymd_and_hms(2026, 4, 20, 9, 0, 0)
        .single()
        .ok_or("time")?;
    let memory = MemoryPorts::new(now, |vault, clock| {
        Arc::new(FakePsp::with_vault_and_clock(vault, clock))
    });
    let engine = Engine::new(memory.ports.clone(), EngineConfig::default())?;

    // The platform's signing key; the service knows its public half.
    let platform =
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).map_err(|_| "key")?;
    // The key is bound to the principal the host authenticates the platform as.
    let caller = Principal::Agent("agent_platform".parse()?);
    let config = AcpConfig::new(
        "acp-vault".parse()?,
        "5651".parse()?,
        caller.clone(),
        PlatformKey::ed25519(platform.public_key().as_ref())?,
    );
    let service = AcpService::new(engine, config);

    // 1. The agent platform delegates a card for checkout session cs_42 at acme_store.
    let body = serde_json::json!({
        "payment_method": {
            "type": "card", "card_number_type": "fpan", "virtual": false,
            "number": "4242424242424242", "exp_month": "11", "exp_year": "2027",
            "name": "Jane Doe", "cvc": "223", "checks_performed": ["avs", "cvv"],
            "iin": "424242", "display_card_funding_type": "credit", "display_brand": "visa",
            "display_last4": "4242", "metadata": {}
        },
        "allowance": {
            "reason": "one_time", "max_amount": 5000, "currency": "usd",
            "checkout_session_id": "cs_42", "merchant_id": "acme_store",
            "expires_at": "2026-04-20T10:00:00Z"
        },
        "risk_signals": [{"type": "card_testing", "score": 3, "action": "authorized"}],
        "metadata": {"source": "agent_checkout"}
    });
    let timestamp = "2026-04-20T09:00:00Z";
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(platform.sign(&signing_input(timestamp, &body)).as_ref());
    let headers = RequestHeaders::new()
        .with("Authorization", "Bearer sk_platform")
        .with("Content-Type", "application/json")
        .with("API-Version", "2026-04-17")
        .with("Idempotency-Key", "550e8400-e29b-41d4-a716-446655440000")
        .with("Timestamp", timestamp)
        .with("Signature", &signature);
    let delegated = service
        .delegate(Some(&caller), None, &headers, &serde_json::to_vec(&body)?)
        .await?;
    println!("201 {}", delegated.body());

    // 2. The merchant completes cs_42 (total $43.30) with the token.
    let session = CheckoutSession::parse(
        br#"{"id": "cs_42", "status": "ready_for_payment", "currency": "usd",
        "line_items": [{"id": "li_1", "item": {"id": "jacket_blue_m"}, "quantity": 1,
          "name": "Denim Jacket", "unit_amount": 3900, "totals": []}],
        "totals": [{"type": "items_base_amount", "display_text": "Items", "amount": 3900},
                   {"type": "tax", "display_text": "Tax", "amount": 330},
                   {"type": "fulfillment", "display_text": "Shipping", "amount": 100},
                   {"type": "total", "display_text": "Total", "amount": 4330}],
        "messages": [], "links": [], "capabilities": {}, "fulfillment_options": []}"#,
    )?;
    let acme = MerchantId::new("acme_store")?;
    let paid = service
        .redeem(&Redemption::new(
            delegated.token.clone(),
            acme.clone(),
            session.clone(),
            IdempotencyKey::new("complete-cs_42")?,
        ))
        .await?;
    println!(
        "paid: attempt {} {:?} {}",
        paid.attempt.id, paid.attempt.status, paid.attempt.captured
    );

    // 3. A second use of the token, and another merchant, are refused.
    let again = service
        .redeem(&Redemption::new(
            delegated.token.clone(),
            acme,
            session.clone(),
            IdempotencyKey::new("complete-cs_42-again")?,
        ))
        .await
        .err()
        .ok_or("a second use must be refused")?;
    println!("second use: {} {}", again.status(), again.body());
    let other = service
        .redeem(&Redemption::new(
            delegated.token.clone(),
            MerchantId::new("evil_store")?,
            session,
            IdempotencyKey::new("evil-1")?,
        ))
        .await
        .err()
        .ok_or("another merchant must be refused")?;
    println!("other merchant: {} {}", other.status(), other.body());
    if let Some(d) = other.decision() {
        println!("  blockers: {:?}", d.codes());
    }
    println!(
        "audit trail: {} events, verified: {:?}",
        memory.audit.events().len(),
        agent_mandate::domain::verify_chain(
            &memory.audit.events(),
            1,
            agent_mandate::domain::AuditHash::GENESIS
        )
        .is_ok()
    );
    Ok(())
}
