//! The 402 flow end to end on the memory adapters: an agent whose every payment goes through
//! its engine (decision, hold, audit) against a seller whose every settlement goes through its
//! engine (single use, terms, PSP), over real HTTP (axum server, reqwest client).
//!
//! I1 (no payment without an allowed decision), I2 (caps hold under a retry loop), I3 (a
//! challenge paid twice is one payment), I9 (the trails verify), I10 (no token in errors).
#![cfg(all(
    feature = "mpp",
    feature = "http",
    feature = "axum",
    feature = "testkit"
))]

mod common;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use chrono::Duration;

use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{
    examples, AuditKind, BlockerCode, Budgets, CartBinding, LoopLimit, Mandate, MandateSpec, Mcc,
    MerchantScope, WindowLimit,
};
use agent_mandate::engine::{CreateMandate, DisputeVerdict, Engine, EngineConfig};
use agent_mandate::ports::Clock;
use agent_mandate::protocols::mpp::{
    payment_gate, seller_actor, BindingSecret, Challenge, ChallengeIssuer, ChargeRequest,
    ChargeTerms, ClientError, EnginePayer, EngineSettler, FixedTokenResponder, GrantBook,
    PaidClient, PayError, Payer, PayerIdentity, PaymentGate, ResponderProvider,
};
use agent_mandate::protocols::{AssetRegistry, ChargeContext, OfferError};
use agent_mandate::testkit::FakePsp;

use common::engine::{card, eur, key};
use common::principals::{agent_p, buyer_p};

const REALM: &str = "api.example.com";

fn ctx() -> ChargeContext {
    ChargeContext {
        mcc: Mcc::new("5817").unwrap(),
        region: None,
        default_ttl: Duration::minutes(5),
    }
}

/// At most 1.00 EUR per call and 5.00 EUR per day at the API, any number of calls.
fn paid_api_spec() -> MandateSpec {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.scope.merchants = MerchantScope::Single {
        merchant_id: REALM.parse().unwrap(),
    };
    spec.scope.mccs = Some(vec![Mcc::new("5817").unwrap()]);
    spec.scope.cart = CartBinding::Open {
        allowed_skus: None,
        max_line_items: Some(1),
    };
    spec.scope.amount.max_amount = eur("1.00");
    spec.scope.amount.max_payment_attempts = None;
    spec.scope.budgets = Budgets {
        per_transaction: Some(eur("1.00")),
        windows: vec![WindowLimit {
            window_seconds: 86_400,
            max_amount: Some(eur("5.00")),
            max_count: None,
        }],
        lifetime: None,
    };
    spec.scope.max_uses = None;
    spec
}

struct Agent {
    mem: MemoryPorts,
    engine: Engine,
    payer: Arc<EnginePayer>,
    responder: Arc<FixedTokenResponder>,
    mandate: Mandate,
}

async fn agent(loop_limit: Option<LoopLimit>, spec: MandateSpec) -> Agent {
    let book = Arc::new(GrantBook::new());
    let responder = Arc::new(FixedTokenResponder::new("stripe", "pm_card_visa"));
    let (r, b) = (responder.clone(), book.clone());
    let mem = MemoryPorts::new(examples::now(), move |_, _| {
        Arc::new(ResponderProvider::new(r, b))
    });
    let engine = Engine::new(
        mem.ports.clone(),
        EngineConfig::default().with_loop_limit(loop_limit),
    )
    .unwrap();
    let mandate = engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("paid-api-mandate"), spec),
        )
        .await
        .unwrap()
        .value;
    let card = engine
        .store_credential(
            &buyer_p(),
            &key("card"),
            card(&examples::agent().id, "pm_card_visa"),
        )
        .await
        .unwrap()
        .value
        .reference;
    let payer = Arc::new(EnginePayer::new(
        engine.clone(),
        PayerIdentity::of(agent_p(), &mandate, card),
        ctx(),
        AssetRegistry::new(),
        book,
        "stripe",
    ));
    Agent {
        mem,
        engine,
        payer,
        responder,
        mandate,
    }
}

fn issuer() -> ChallengeIssuer {
    ChallengeIssuer::new(
        REALM,
        BindingSecret::new(b"seller secret of thirty-two bytes".to_vec()).unwrap(),
        Duration::minutes(5),
    )
    .unwrap()
}

fn terms(amount: &str) -> ChargeTerms {
    ChargeTerms {
        method: "stripe".into(),
        request: ChargeRequest {
            amount: amount.into(),
            currency: "eur".into(),
            recipient: None,
            description: Some("One answer".into()),
            external_id: None,
            method_details: Some(
                serde_json::json!({"networkId": "profile_seller", "paymentMethodTypes": ["card"]})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        },
        description: Some("One answer".into()),
        opaque: None,
    }
}

const URL: &str = "https://api.example.com/v1/answer";

/// Runs `tries` paid calls of 0.01 EUR, each with a fresh challenge: the number paid before
/// the first refusal, that refusal's codes, and whether anything was paid after it.
async fn retry_loop(a: &Agent, tries: usize) -> (usize, Vec<BlockerCode>, usize) {
    let issuer = issuer();
    let mut paid = 0;
    let mut first_refusal = None;
    let mut paid_after = 0;
    for _ in 0..tries {
        let now = a.mem.clock.now();
        let c = issuer.issue(&terms("1"), None, now).unwrap();
        let offer = c
            .offer(&["stripe"], &AssetRegistry::new(), URL, now)
            .unwrap();
        match a.payer.pay(&c, &offer).await {
            Ok(_) if first_refusal.is_none() => paid += 1,
            Ok(_) => paid_after += 1,
            Err(PayError::Refused { codes, .. }) => {
                if first_refusal.is_none() {
                    first_refusal = Some(codes);
                }
            }
            Err(e) => panic!("unexpected: {e}"),
        }
        a.mem.clock.advance(Duration::milliseconds(100));
    }
    (paid, first_refusal.unwrap_or_default(), paid_after)
}

fn audit_kinds(a: &Agent) -> Vec<AuditKind> {
    a.mem
        .audit
        .events()
        .into_iter()
        .filter_map(|e| e.event().ok().map(|e| e.kind))
        .collect()
}

/// An agent retrying a paid call 10,000 times at 0.01 EUR with loop detection at 100 per hour
/// is stopped by loop detection at the 101st payment (1.00 EUR spent), with a control event.
#[tokio::test]
async fn a_looping_agent_is_stopped_by_loop_detection_first() {
    let a = agent(Some(LoopLimit::new(100, 3600).unwrap()), paid_api_spec()).await;
    let (paid, codes, after) = retry_loop(&a, 10_000).await;
    assert_eq!(paid, 100);
    assert!(
        codes.contains(&BlockerCode::ResourceLoopDetected),
        "{codes:?}"
    );
    assert!(
        !codes.contains(&BlockerCode::WindowAmountExceeded),
        "{codes:?}"
    );
    assert_eq!(after, 0, "nothing is paid after the first refusal");
    assert!(audit_kinds(&a).iter().any(|k| matches!(
        k,
        AuditKind::LoopDetected {
            max_payments: 100,
            ..
        }
    )));
    let usage = a
        .mem
        .ports
        .store
        .usage(std::slice::from_ref(&a.mandate), a.mem.clock.now())
        .await
        .unwrap();
    assert_eq!(usage[0].spent, eur("1.00"));
    assert_eq!(a.responder.grants().len(), 100);
}

/// The same loop with a looser loop limit (1,000 per hour) is stopped by the daily cap first:
/// 500 payments of 0.01 EUR make the 5.00 EUR of the day.
#[tokio::test]
async fn a_looping_agent_is_stopped_by_the_daily_cap_first() {
    let a = agent(Some(LoopLimit::new(1_000, 3600).unwrap()), paid_api_spec()).await;
    let (paid, codes, after) = retry_loop(&a, 10_000).await;
    assert_eq!(paid, 500);
    assert!(
        codes.contains(&BlockerCode::WindowAmountExceeded),
        "{codes:?}"
    );
    assert!(
        !codes.contains(&BlockerCode::ResourceLoopDetected),
        "{codes:?}"
    );
    assert_eq!(after, 0);
    let usage = a
        .mem
        .ports
        .store
        .usage(std::slice::from_ref(&a.mandate), a.mem.clock.now())
        .await
        .unwrap();
    assert_eq!(usage[0].spent, eur("5.00"));
}

/// Paying the same challenge twice is a replay: one payment, the same credential, one grant.
/// A challenge above the per-call cap is refused and nothing is issued.
#[tokio::test]
async fn a_challenge_paid_twice_is_one_payment_and_caps_refuse_before_any_token() {
    let a = agent(None, paid_api_spec()).await;
    let now = a.mem.clock.now();
    let c = issuer().issue(&terms("50"), None, now).unwrap();
    let offer = c
        .offer(&["stripe"], &AssetRegistry::new(), URL, now)
        .unwrap();
    let first = a.payer.pay(&c, &offer).await.unwrap();
    a.mem.clock.advance(Duration::seconds(5));
    let second = a.payer.pay(&c, &offer).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(a.responder.grants().len(), 1);
    let usage = a
        .mem
        .ports
        .store
        .usage(std::slice::from_ref(&a.mandate), a.mem.clock.now())
        .await
        .unwrap();
    assert_eq!(usage[0].spent, eur("0.50"));

    let big = issuer().issue(&terms("101"), None, now).unwrap();
    let offer = big
        .offer(&["stripe"], &AssetRegistry::new(), URL, now)
        .unwrap();
    match a.payer.pay(&big, &offer).await {
        Err(PayError::Refused { codes, .. }) => {
            assert!(
                codes.contains(&BlockerCode::TransactionLimitExceeded),
                "{codes:?}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(
        a.responder.grants().len(),
        1,
        "no token for a refused challenge"
    );
    // Another merchant's challenge is refused too.
    let other = ChallengeIssuer::new(
        "evil.example",
        BindingSecret::new(vec![1; 32]).unwrap(),
        Duration::minutes(5),
    )
    .unwrap()
    .issue(&terms("10"), None, now)
    .unwrap();
    // At its own origin (the realm names it): the mandate refuses the merchant.
    let offer = other
        .offer(
            &["stripe"],
            &AssetRegistry::new(),
            "https://evil.example/v1/answer",
            now,
        )
        .unwrap();
    // At this merchant's origin: a realm naming another host is not even an offer.
    assert!(matches!(
        other.offer(&["stripe"], &AssetRegistry::new(), URL, now),
        Err(OfferError::OriginMismatch { field: "realm", .. })
    ));
    assert!(matches!(
        a.payer.pay(&other, &offer).await,
        Err(PayError::Refused { ref codes, .. }) if codes.contains(&BlockerCode::MerchantMismatch)
    ));
}

/// The grant of a token is never wider than the challenge and the mandate: its amount and
/// currency are the challenge's, its expiry the earlier of the two, its seller the
/// challenge's network id.
#[tokio::test]
async fn grants_are_never_wider_than_challenge_and_mandate() {
    let mut spec = paid_api_spec();
    // The mandate ends two minutes from now, before the challenge's five.
    spec.scope.validity.expires_at = examples::now() + Duration::minutes(2);
    let a = agent(None, spec).await;
    let now = a.mem.clock.now();
    let c = issuer().issue(&terms("75"), None, now).unwrap();
    let offer = c
        .offer(&["stripe"], &AssetRegistry::new(), URL, now)
        .unwrap();
    a.payer.pay(&c, &offer).await.unwrap();
    let g = &a.responder.grants()[0];
    assert_eq!(g.max_amount, eur("0.75"));
    assert_eq!(g.currency, agent_mandate::domain::Currency::EUR);
    assert_eq!(g.expires_at, examples::now() + Duration::minutes(2));
    assert_eq!(g.network_id.as_deref(), Some("profile_seller"));
    assert_eq!(g.challenge_id, c.id());
    // I10: the token never shows in Debug output.
    assert!(!format!("{:?}", a.responder).contains("pm_card_visa"));
    assert!(!format!("{:?}", a.payer).contains("pm_card_visa"));
}

struct Seller {
    mem: MemoryPorts,
    psp: Arc<FakePsp>,
    engine: Engine,
    url: String,
}

async fn seller(price: &str) -> Seller {
    let mut slot = None;
    let mem = MemoryPorts::new(examples::now(), |vault, clock| {
        let psp = Arc::new(FakePsp::with_vault_and_clock(vault, clock));
        slot = Some(psp.clone());
        psp
    });
    let psp = slot.unwrap();
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).unwrap();
    let settler = EngineSettler::new(
        engine.clone(),
        seller_actor("seller_api").unwrap(),
        REALM.parse().unwrap(),
        ctx(),
        "/v1/answer",
        Duration::minutes(5),
    );
    let gate = PaymentGate::new(
        Arc::new(issuer()),
        terms(price),
        Arc::new(settler),
        mem.clock.clone(),
    );
    let app = Router::new()
        .route("/v1/answer", get(|| async { "42" }))
        .route_layer(axum::middleware::from_fn_with_state(gate, payment_gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Seller {
        mem,
        psp,
        engine,
        url: format!("http://{addr}/v1/answer"),
    }
}

/// Over HTTP: 0.50 EUR per call against a mandate of 1.00 per call and 5.00 per day. The
/// agent pays ten calls (each answered with its receipt), the eleventh is refused by the
/// mandate before anything is paid; the seller's PSP took exactly the ten; each receipt names
/// the seller's payment; the seller's dispute evidence is consistent; both trails verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pays_over_http_loops_and_is_stopped() {
    let s = seller("50").await;
    let a = agent(None, paid_api_spec()).await;
    let http = agent_mandate::adapters::http::client_builder()
        .unwrap()
        .build()
        .unwrap();
    // The seller listens on 127.0.0.1 and calls itself api.example.com: the host binds that
    // realm to its origin (a challenge must name the origin the request went to otherwise).
    let client = PaidClient::new(http.clone(), a.payer.clone(), a.mem.clock.clone())
        .with_bound_realm(&s.url, REALM);

    // Without payment: 402, a challenge, no-store, problem details.
    let plain = http.get(&s.url).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 402);
    assert_eq!(plain.headers()["cache-control"], "no-store");
    let challenge =
        Challenge::parse(plain.headers()["www-authenticate"].to_str().unwrap()).unwrap();
    assert_eq!(challenge.realm(), REALM);
    let problem: serde_json::Value = serde_json::from_slice(&plain.bytes().await.unwrap()).unwrap();
    assert_eq!(
        problem["type"],
        "https://paymentauth.org/problems/payment-required"
    );
    assert_eq!(problem["challengeId"], challenge.id());

    let mut receipts = Vec::new();
    let mut refusal = None;
    for _ in 0..12 {
        let req = http.get(&s.url).build().unwrap();
        match client.send(req).await {
            Ok(r) => {
                assert_eq!(r.status, 200);
                assert_eq!(r.body, b"42");
                receipts.push(r.receipt.expect("a receipt"));
            }
            Err(ClientError::Pay(PayError::Refused { codes, .. })) => {
                refusal.get_or_insert(codes);
            }
            Err(e) => panic!("unexpected: {e:?}"),
        }
        a.mem.clock.advance(Duration::seconds(1));
        s.mem.clock.advance(Duration::seconds(1));
    }
    assert_eq!(receipts.len(), 10);
    assert!(refusal
        .unwrap()
        .contains(&BlockerCode::WindowAmountExceeded));
    assert_eq!(
        s.psp.total_captured(agent_mandate::domain::Currency::EUR),
        500
    );

    // Receipts name the seller's payments; the seller's evidence agrees.
    let payments = s.psp.payments();
    for r in &receipts {
        assert_eq!(r.status, "success");
        assert!(payments
            .iter()
            .any(|p| p.reference.as_ref().map(|x| x.as_str()) == Some(r.reference.as_str())));
    }
    let seller_attempts: Vec<_> = s
        .mem
        .audit
        .events()
        .into_iter()
        .filter_map(|e| match e.event().ok()?.kind {
            AuditKind::AttemptTransition { attempt_id, .. } => Some(attempt_id),
            _ => None,
        })
        .collect();
    let first = seller_attempts.first().expect("a seller attempt").clone();
    let evidence = s.engine.dispute_evidence(&first).await.unwrap();
    assert_eq!(
        evidence.verdict,
        DisputeVerdict::Consistent,
        "{:?}",
        evidence.checks
    );
    assert_eq!(evidence.charged, eur("0.50"));
    for engine in [&a.engine, &s.engine] {
        let report = engine.verify_trail(10_000).await.unwrap();
        assert!(report.missing.is_empty(), "{report:?}");
    }
    let usage = a
        .mem
        .ports
        .store
        .usage(std::slice::from_ref(&a.mandate), a.mem.clock.now())
        .await
        .unwrap();
    assert_eq!(usage[0].spent, eur("5.00"));
}

/// The seller refuses what it must: a credential for a used challenge id (another
/// credential), a credential for another price, a garbled credential; each answer is a 402
/// with a fresh challenge and the scheme's problem code, and nothing more is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seller_refuses_reused_ids_other_prices_and_garbage() {
    let s = seller("50").await;
    let now = s.mem.clock.now();
    let c = issuer().issue(&terms("50"), None, now).unwrap();
    let cred = |spt: &str| {
        let mut m = serde_json::Map::new();
        m.insert("spt".into(), spt.into());
        agent_mandate::protocols::mpp::Credential::new(
            &c,
            agent_mandate::protocols::mpp::Payload::new(m),
            None,
        )
        .to_header()
        .unwrap()
    };
    let http = agent_mandate::adapters::http::client_builder()
        .unwrap()
        .build()
        .unwrap();
    let send = |auth: String| {
        let http = http.clone();
        let url = s.url.clone();
        async move {
            http.get(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap()
        }
    };
    let ok = send(cred("pm_card_visa")).await;
    let st = ok.status().as_u16();
    assert_eq!(st, 200);
    assert!(ok.headers().contains_key("payment-receipt"));
    assert_eq!(ok.headers()["cache-control"], "private");
    // The same credential again: a replay. The charge intent says a server must not accept
    // a credential twice, and the core scheme answers an already-used challenge with 402, a
    // fresh challenge and `invalid-challenge`: not served again, and no second charge.
    let again = send(cred("pm_card_visa")).await;
    assert_eq!(again.status().as_u16(), 402);
    assert!(again.headers().contains_key("www-authenticate"));
    assert!(!again.headers().contains_key("payment-receipt"));
    let p: serde_json::Value = serde_json::from_slice(&again.bytes().await.unwrap()).unwrap();
    assert_eq!(
        p["type"],
        "https://paymentauth.org/problems/invalid-challenge"
    );
    assert_eq!(
        s.psp.total_captured(agent_mandate::domain::Currency::EUR),
        50
    );
    // Another credential for the used id.
    let reused = send(cred("pm_card_mastercard")).await;
    assert_eq!(reused.status().as_u16(), 402);
    assert!(reused.headers().contains_key("www-authenticate"));
    let p: serde_json::Value = serde_json::from_slice(&reused.bytes().await.unwrap()).unwrap();
    assert_eq!(
        p["type"],
        "https://paymentauth.org/problems/invalid-challenge"
    );
    // A credential for a cheaper route's challenge.
    let cheap = issuer().issue(&terms("10"), None, now).unwrap();
    let mut m = serde_json::Map::new();
    m.insert("spt".into(), "pm_card_visa".into());
    let cheap = agent_mandate::protocols::mpp::Credential::new(
        &cheap,
        agent_mandate::protocols::mpp::Payload::new(m),
        None,
    );
    let r = send(cheap.to_header().unwrap()).await;
    assert_eq!(r.status().as_u16(), 402);
    let p: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        p["type"],
        "https://paymentauth.org/problems/payment-insufficient"
    );
    // Garbage.
    let r = send("Payment !!!".into()).await;
    assert_eq!(r.status().as_u16(), 402);
    let p: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        p["type"],
        "https://paymentauth.org/problems/malformed-credential"
    );
    assert!(!p.to_string().contains("pm_card"));
    assert_eq!(
        s.psp.total_captured(agent_mandate::domain::Currency::EUR),
        50
    );
}
