//! The Travel Backpack story of "Delegated Payment Needs More Than a Token", told with
//! agent-mandate's authority decision.
//!
//! A buyer tells an agent: "Buy the Travel Backpack if the final total is under EUR 150." The
//! agent holds a payment credential. Watch the decision change as the facts change; then the
//! engine carries the allowed request through: budget hold, PSP authorization, capture, order,
//! a verified audit chain and the dispute evidence. State is kept in a SQLite file (a new one
//! under the temp dir, or the path given as the first argument), the card too: in the file's
//! credential vault, its number sealed with AES-256-GCM under a key-encryption key. The PSP is
//! the testkit's fake.
//!
//! The vault key comes from `AGENT_MANDATE_VAULT_KEY` (64 hex digits, for example from
//! `openssl rand -hex 32`); without it the demo generates a key for this run only. The key is
//! never printed.
//!
//! Run: `cargo run --example travel_backpack --features testkit,sqlite [-- PATH.db]`
//!
//! Run it twice with the same path and the same `AGENT_MANDATE_VAULT_KEY`: the second run finds
//! the mandate, the card, the payment, the capture and the order in the file, answers every
//! command from its idempotency record (no second card, no second authorization) and verifies
//! the audit chain the first run wrote.

use std::sync::Arc;

use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
use agent_mandate::adapters::memory::ManualClock;
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::{evaluate, examples, Currency, EvaluationDocument, Outcome, Principal};
use agent_mandate::engine::{
    CapturePayment, CommitOrder, CreateMandate, DisputeVerdict, Engine, EngineConfig,
    ExecutePayment, OrderOutcome, PaymentOutcome,
};
use agent_mandate::ports::{
    AuditSink, CredentialDisplay, CredentialKind, FundingType, NewCredential, Ports, Secret,
};
use agent_mandate::testkit::FakePsp;

fn tell(step: &str, doc: &EvaluationDocument) -> Outcome {
    let decision = evaluate(&doc.input());
    println!("== {step}");
    println!(
        "   request: {} {} at {} for snapshot {}",
        doc.request.action, doc.request.amount, doc.request.merchant_id, doc.request.snapshot_id
    );
    for line in decision.to_string().lines() {
        println!("   {line}");
    }
    println!();
    decision.outcome
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("Buyer buyer_456 to agent agent_123: \"Buy the Travel Backpack if the final total is under EUR 150.\"");
    println!("Mandate mandate_001: merchant_001, MCC 5948, BAG-TRAVEL-42, at most 150.00 EUR including shipping and tax.\n");

    // 1. A payment artifact is present, but checkout is blocked upstream.
    let mut doc = examples::document_for(examples::over_limit_snapshot());
    doc.checkout = examples::invalid_checkout();
    let first = tell(
        "1. Inventory is stale and the return policy is missing",
        &doc,
    );

    // 2. Checkout is fixed, but shipping and tax bring the total to 153.00.
    let doc = examples::document_for(examples::over_limit_snapshot());
    let second = tell(
        "2. Checkout valid, total 129.00 + 9.00 shipping + 15.00 tax = 153.00 EUR",
        &doc,
    );

    // 3. The same cart priced in USD.
    let usd = agent_mandate::domain::CartSnapshot::new(examples::backpack_content(
        "0.00",
        "15.00",
        Currency::USD,
    ))
    .expect("the USD cart is valid");
    let doc = examples::document_for(usd);
    let third = tell("3. The checkout is in USD", &doc);

    // 4. Free shipping: 129.00 + 15.00 tax = 144.00 EUR.
    let doc = examples::travel_backpack_document();
    let fourth = tell("4. Free shipping: 144.00 EUR, inside the mandate", &doc);

    assert_eq!(
        [first, second, third, fourth],
        [
            Outcome::Blocked,
            Outcome::Blocked,
            Outcome::Blocked,
            Outcome::Allowed
        ],
        "the story's decisions changed"
    );
    println!("The agent may now request authorization of 144.00 EUR; the token was evidence, never the authority.\n");
    pay(examples::travel_backpack_document()).await
}

/// The allowed request, carried through by the engine on a SQLite file.
async fn pay(doc: EvaluationDocument) -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args().nth(1) {
        Some(path) => std::path::PathBuf::from(path),
        None => std::env::temp_dir().join(format!(
            "agent-mandate-travel-backpack-{}.db",
            std::process::id()
        )),
    };
    let db = SqliteDatabase::open(SqliteConfig::file(&path))?;
    println!(
        "== 5. The engine, with its state in {} (WAL, synchronous=FULL)",
        path.display()
    );
    let vault = Arc::new(db.vault(VaultKeyring::new(vault_key()?)));
    let audit = Arc::new(db.audit_sink());
    let ports = Ports {
        store: Arc::new(db.store()),
        provider: Arc::new(FakePsp::with_vault(vault.clone())),
        vault,
        audit: audit.clone(),
        clock: Arc::new(ManualClock::new(examples::now())),
    };
    let engine = Engine::new(ports, EngineConfig::default())?;
    // Who asks is never read from a request body: a real service authenticates each caller
    // (the buyer's session, the agent's credential) and hands the engine a `Principal`.
    let buyer = Principal::Buyer(examples::buyer());
    let agent = Principal::Agent(examples::agent().id);
    engine
        .create_mandate(
            &buyer,
            &CreateMandate::new(
                "mandate-001-create".parse()?,
                examples::travel_backpack_mandate().spec().clone(),
            ),
        )
        .await?;
    let card = engine
        .store_credential(
            &buyer,
            &"agent-123-card-1".parse()?,
            NewCredential {
                kind: CredentialKind::PaymentMethod,
                owner: examples::agent().id,
                buyer_id: examples::buyer(),
                secret: Secret::new("pm_card_visa"),
                cvc: None,
                display: CredentialDisplay {
                    brand: "visa".into(),
                    last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2030,
                    funding: FundingType::Credit,
                },
            },
        )
        .await?;
    println!(
        "   card:      {} ({} ending {}), {}; the secret stays in the vault, encrypted",
        card.value.reference,
        card.value.display.brand,
        card.value.display.last4,
        if card.replay {
            "stored by an earlier run (same key: the same card)"
        } else {
            "stored now"
        }
    );
    let card = card.value;

    let outcome = engine
        .execute_payment(
            &agent,
            &ExecutePayment::new(
                "agent-123-backpack-1".parse()?,
                doc.request.clone(),
                doc.snapshot.clone(),
                doc.checkout.clone(),
                card.reference.clone(),
            ),
        )
        .await?;
    let replayed = outcome.is_replay();
    let (PaymentOutcome::Done { attempt, .. } | PaymentOutcome::Replayed { attempt }) = outcome
    else {
        return Err(format!("the payment was not executed: {outcome:?}").into());
    };
    if replayed {
        println!("   (found in the database: every command below is answered from its record)");
    }
    println!(
        "   authorize: attempt {} is {} for {} at the PSP ({})",
        attempt.id,
        attempt.status,
        attempt.authorized,
        attempt
            .provider_ref
            .as_ref()
            .map(|r| r.as_str())
            .unwrap_or("-")
    );
    let captured = engine
        .capture(
            &agent,
            &CapturePayment::new("agent-123-backpack-1-capture".parse()?, attempt.id.clone()),
        )
        .await?;
    let captured = captured.attempt().ok_or("the capture was refused")?;
    println!("   capture:   {} {}", captured.status, captured.captured);
    let order = engine
        .commit_order(
            &agent,
            &CommitOrder::new(
                "agent-123-backpack-1-order".parse()?,
                attempt.id.clone(),
                doc.checkout.clone(),
            ),
        )
        .await?;
    let (OrderOutcome::Committed { order, .. } | OrderOutcome::Existing { order }) = order else {
        return Err(format!("the order was not committed: {order:?}").into());
    };
    println!("   order:     {} committed for {}", order.id, order.amount);
    let head = audit.verify().await?.ok_or("the audit trail is empty")?;
    println!(
        "   audit:     {} events, chain verified, head {}",
        head.seq, head.hash
    );

    let evidence = engine.dispute_evidence(&attempt.id).await?;
    println!("\n== 6. Dispute evidence for {}", attempt.id);
    println!("   snapshot:   {}", evidence.snapshot_id);
    println!(
        "   authorized: {}   charged: {}",
        evidence.authorized, evidence.charged
    );
    if let Some(d) = &evidence.decision {
        println!(
            "   decision:   {} (audit event {}), request {}",
            d.outcome, d.seq, d.request_digest
        );
    }
    for check in &evidence.checks {
        let mark = if check.passed { "ok  " } else { "FAIL" };
        println!("   [{mark}] {:<28} {}", check.name, check.detail);
    }
    println!(
        "   audit segment: {} events; verdict: {:?}",
        evidence.audit_segment.len(),
        evidence.verdict
    );
    if evidence.verdict != DisputeVerdict::Consistent {
        return Err("the dispute evidence is inconsistent".into());
    }
    Ok(())
}

/// The vault's key-encryption key: `AGENT_MANDATE_VAULT_KEY` (64 hex digits) if set, else a key
/// generated for this run (a card stored under it cannot be read by a later run). Never
/// printed: its `Debug` shows the id only.
fn vault_key() -> Result<VaultKey, Box<dyn std::error::Error>> {
    match std::env::var("AGENT_MANDATE_VAULT_KEY") {
        Ok(hex) => {
            println!("   vault key: from AGENT_MANDATE_VAULT_KEY (id \"env-1\")");
            Ok(VaultKey::from_hex("env-1", &Secret::new(hex))?)
        }
        Err(_) => {
            let id = format!("demo-{}", std::process::id());
            println!(
                "   vault key: generated for this demo run (id {id:?}); set \
                 AGENT_MANDATE_VAULT_KEY to keep one across runs"
            );
            Ok(VaultKey::generate(id)?)
        }
    }
}
