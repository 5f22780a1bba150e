//! A paid API over HTTP 402 (the `Payment` scheme, Stripe charge method) end to end: a seller
//! charging 0.50 EUR per call, settled through its engine and the Stripe adapter against
//! localstripe; an agent holding a mandate of at most 1.00 EUR per call and 5.00 EUR per day,
//! every payment decided, held and audited by its engine. The agent calls the API in a loop:
//! ten calls are paid and served with receipts, the eleventh is refused by the mandate (the
//! daily cap) before anything is paid. Then the receipts, the seller's PSP, both audit trails
//! and the dispute evidence are checked against each other.
//!
//! ```text
//! scripts/with-localstripe.sh cargo run --example paid_api --features mpp,http,axum,memory
//! ```
//!
//! localstripe has no shared payment tokens: the agent's test responder hands the seller
//! localstripe's test payment method `pm_card_visa` as the token, and the seller stores it as a
//! payment method. With Stripe, the responder issues a real shared payment token whose usage
//! limits are the grant (amount, currency, expiry of the challenge and the mandate).

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use chrono::Duration;

use agent_mandate::adapters::http::{StripeConfig, StripeProvider};
use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{
    Actor, ActorKind, AmountScope, AuditKind, Budgets, BuyerId, CartBinding, ConfirmationRule,
    Currency, CurrencyScope, Lifecycle, LoopLimit, MandateScope, MandateSpec, MandateStatus, Mcc,
    MerchantScope, Money, PaymentAction, Principal, Validity, WindowLimit,
};
use agent_mandate::engine::{CreateMandate, DisputeVerdict, Engine, EngineConfig};
use agent_mandate::ports::{
    Clock, CredentialDisplay, CredentialKind, FundingType, Lookup, NewCredential, Secret,
};
use agent_mandate::protocols::mpp::{
    payment_gate, seller_actor, BindingSecret, ChallengeIssuer, ChargeRequest, ChargeTerms,
    ClientError, EnginePayer, EngineSettler, FixedTokenResponder, GrantBook, PaidClient, PayError,
    PayerIdentity, PaymentGate, ResponderProvider,
};
use agent_mandate::protocols::{AssetRegistry, ChargeContext};

const REALM: &str = "api.example.com";

fn eur(a: &str) -> Money {
    Money::parse(a, Currency::EUR).expect("amount")
}

fn context() -> ChargeContext {
    ChargeContext {
        mcc: Mcc::new("5817").expect("mcc"),
        region: None,
        default_ttl: Duration::minutes(5),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(localstripe) = std::env::var("LOCALSTRIPE_URL") else {
        println!("LOCALSTRIPE_URL is not set: run scripts/with-localstripe.sh cargo run --example paid_api --features mpp,http,axum,memory");
        return Ok(());
    };
    let start = agent_mandate::ports::SystemClock.now();

    // --- The seller: 0.50 EUR per call, settled through its engine and the Stripe adapter.
    let config = StripeConfig::new(&localstripe, Secret::new("sk_test_paid_api"))?;
    let mut psp_slot = None;
    let seller_mem = MemoryPorts::new(start, |vault, clock| {
        let psp = Arc::new(StripeProvider::new(config, vault, clock).expect("stripe adapter"));
        psp_slot = Some(psp.clone());
        psp
    });
    let seller_psp = psp_slot.expect("psp");
    let seller_engine = Engine::new(seller_mem.ports.clone(), EngineConfig::default())?;
    let ttl = Duration::minutes(5);
    let issuer = Arc::new(ChallengeIssuer::new(
        REALM,
        BindingSecret::new(b"the seller's binding secret, 32+ bytes".to_vec())?,
        ttl,
    )?);
    let terms = ChargeTerms {
        method: "stripe".into(),
        request: ChargeRequest {
            amount: "50".into(),
            currency: "eur".into(),
            recipient: None,
            description: Some("One answer".into()),
            external_id: None,
            method_details:
                serde_json::json!({"networkId": "profile_paid_api", "paymentMethodTypes": ["card"]})
                    .as_object()
                    .cloned(),
        },
        description: Some("One answer".into()),
        opaque: None,
    };
    let settler = EngineSettler::new(
        seller_engine.clone(),
        seller_actor("paid_api_seller")?,
        REALM.parse()?,
        context(),
        "/v1/answer",
        ttl,
    )
    .with_credential_kind(CredentialKind::PaymentMethod);
    let gate = PaymentGate::new(issuer, terms, Arc::new(settler), seller_mem.clock.clone());
    let app = Router::new()
        .route("/v1/answer", get(|| async { "{\"answer\": 42}" }))
        .route_layer(axum::middleware::from_fn_with_state(gate, payment_gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/v1/answer", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // --- The agent: a mandate of at most 1.00 EUR per call and 5.00 EUR per day.
    let book = Arc::new(GrantBook::new());
    let responder = Arc::new(FixedTokenResponder::new("stripe", "pm_card_visa"));
    let (r, b) = (responder.clone(), book.clone());
    let agent_mem = MemoryPorts::new(start, move |_, _| Arc::new(ResponderProvider::new(r, b)));
    let agent_engine = Engine::new(
        agent_mem.ports.clone(),
        EngineConfig::default().with_loop_limit(Some(LoopLimit::new(20, 3600)?)),
    )?;
    let buyer = BuyerId::new("buyer_paid_api")?;
    let agent = Actor {
        id: "agent_paid_api".parse()?,
        kind: ActorKind::Agent,
    };
    let mandate = agent_engine
        .create_mandate(
            &Principal::Buyer(buyer.clone()),
            &CreateMandate::new(
                "paid-api-mandate".parse()?,
                MandateSpec {
                    id: "mandate_paid_api".parse()?,
                    buyer_id: buyer.clone(),
                    actor: agent.clone(),
                    parent_id: None,
                    scope: MandateScope {
                        merchants: MerchantScope::Single {
                            merchant_id: REALM.parse()?,
                        },
                        mccs: Some(vec![Mcc::new("5817")?]),
                        cart: CartBinding::Open {
                            allowed_skus: None,
                            max_line_items: Some(1),
                        },
                        amount: AmountScope {
                            max_amount: eur("1.00"),
                            includes_shipping: true,
                            includes_tax: true,
                            allow_lower_amount: true,
                            allow_partial_capture: false,
                            max_payment_attempts: None,
                        },
                        currency: CurrencyScope {
                            currency: Currency::EUR,
                            conversion_allowed: false,
                        },
                        budgets: Budgets {
                            per_transaction: Some(eur("1.00")),
                            windows: vec![WindowLimit {
                                window_seconds: 86_400,
                                max_amount: Some(eur("5.00")),
                                max_count: None,
                            }],
                            lifetime: None,
                        },
                        actions: [PaymentAction::Authorize, PaymentAction::Capture]
                            .into_iter()
                            .collect(),
                        confirmation: ConfirmationRule::never(),
                        max_uses: None,
                        validity: Validity {
                            not_before: start - Duration::hours(1),
                            expires_at: start + Duration::days(1),
                        },
                    },
                    lifecycle: Lifecycle::new(MandateStatus::Active, start - Duration::hours(1)),
                    evidence_refs: Vec::new(),
                },
            ),
        )
        .await?
        .value;
    let card = agent_engine
        .store_credential(
            &Principal::Buyer(buyer.clone()),
            &"paid-api-card".parse()?,
            NewCredential {
                kind: CredentialKind::PaymentMethod,
                owner: agent.id.clone(),
                buyer_id: buyer.clone(),
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
        .value
        .reference;
    let payer = Arc::new(EnginePayer::new(
        agent_engine.clone(),
        PayerIdentity::of(Principal::Agent(agent.id.clone()), &mandate, card),
        context(),
        AssetRegistry::new(),
        book,
        "stripe",
    ));
    let http = agent_mandate::adapters::http::client_builder()?.build()?;
    // The seller listens on 127.0.0.1 and calls itself api.example.com: the host binds that
    // realm to its origin (otherwise a challenge must name the origin the request went to).
    let client =
        PaidClient::new(http.clone(), payer, agent_mem.clock.clone()).with_bound_realm(&url, REALM);

    // --- The agent loops on the paid call.
    let mut receipts = Vec::new();
    let mut stopped = None;
    for call in 1..=15 {
        let request = http.get(&url).build()?;
        match client.send(request).await {
            Ok(answer) => {
                let receipt = answer.receipt.ok_or("a paid answer without a receipt")?;
                println!(
                    "call {call:2}: {} {} receipt {} at {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body),
                    receipt.reference,
                    receipt.timestamp
                );
                receipts.push(receipt);
            }
            Err(ClientError::Pay(PayError::Refused { codes, .. })) => {
                println!("call {call:2}: refused by the mandate before paying: {codes:?}");
                stopped.get_or_insert(codes);
            }
            Err(e) => return Err(e.into()),
        }
        agent_mem.clock.advance(Duration::seconds(2));
        seller_mem.clock.advance(Duration::seconds(2));
    }

    // --- Everything agrees.
    let codes = stopped.ok_or("the agent was never stopped")?;
    println!("stopped by: {codes:?}");
    if receipts.len() != 10 {
        return Err(format!("{} calls paid, expected 10", receipts.len()).into());
    }
    let mut charged = 0;
    for r in &receipts {
        let report = agent_mandate::ports::PaymentProvider::lookup(
            &*seller_psp,
            &Lookup::Reference(r.reference.parse()?),
        )
        .await?
        .ok_or("a receipt names no payment at the PSP")?;
        charged += report.captured.minor_units();
    }
    println!(
        "localstripe captured {} for {} receipts",
        Currency::EUR.format_minor(charged.into()),
        receipts.len()
    );
    let spent = agent_mem
        .ports
        .store
        .usage(std::slice::from_ref(&mandate), agent_mem.clock.now())
        .await?
        .remove(0)
        .spent;
    println!("the agent's mandate spent {spent}");
    if spent.minor_units() != charged || spent != eur("5.00") {
        return Err("the agent's spend and the seller's charges disagree".into());
    }
    for (who, engine) in [("agent", &agent_engine), ("seller", &seller_engine)] {
        let report = engine.verify_trail(10_000).await?;
        if !report.missing.is_empty() {
            return Err(format!("{who}: audit events missing: {:?}", report.missing).into());
        }
        println!(
            "{who}: audit trail verified ({} events)",
            report.trail_events
        );
    }
    let seller_attempt = seller_mem
        .audit
        .events()
        .into_iter()
        .find_map(|e| match e.event().ok()?.kind {
            AuditKind::AttemptTransition { attempt_id, .. } => Some(attempt_id),
            _ => None,
        })
        .ok_or("no seller payment in the audit trail")?;
    let evidence = seller_engine.dispute_evidence(&seller_attempt).await?;
    println!(
        "dispute evidence for {seller_attempt}: {:?}, charged {}",
        evidence.verdict, evidence.charged
    );
    if evidence.verdict != DisputeVerdict::Consistent {
        return Err(format!("inconsistent evidence: {:?}", evidence.checks).into());
    }
    Ok(())
}
