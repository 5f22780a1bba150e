//! Criterion benchmarks of the 402 protocols (no network, no store, no PSP):
//! - agent side: read a 402 answer's `WWW-Authenticate: Payment` challenge, state it in mandate
//!   terms (money, one-line cart snapshot, payment request) and decide it under a mandate of
//!   1.00 EUR per call and 5.00 EUR per day;
//! - seller side: issue a bound challenge, and verify a credential (read, HMAC binding,
//!   expiry, terms);
//! - the same for an x402 `PAYMENT-REQUIRED` answer.
//!
//! Run: `cargo bench --bench protocols --features mpp,x402`

use std::hint::black_box;

use agent_mandate::domain::{
    evaluate, examples, CheckoutState, CredentialStatus, Currency, EvaluationDocument, Mandate,
    Mcc, PaymentAction, PaymentRequest, Suspensions, Usage,
};
use agent_mandate::protocols::mpp::{
    BindingSecret, Challenge, ChallengeIssuer, ChargeRequest, ChargeTerms, Credential, Payload,
};
use agent_mandate::protocols::x402::PaymentRequired;
use agent_mandate::protocols::{AssetRegistry, ChargeContext};
use chrono::Duration;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

const REALM: &str = "api.example.com";
const URL: &str = "https://api.example.com/v1/answer";

/// At most 1.00 EUR per call and 5.00 EUR per day at `api.example.com`, any number of calls.
fn paid_api_mandate() -> Mandate {
    let mut m = serde_json::to_value(examples::travel_backpack_mandate()).unwrap();
    let eur = |a: &str| json!({"amount": a, "currency": "EUR"});
    let s = &mut m["scope"];
    s["merchants"] = json!({"single": {"merchant_id": REALM}});
    s["mccs"] = json!(["5817"]);
    s["cart"] = json!({"open": {"max_line_items": 1}});
    s["amount"]["max_amount"] = eur("1.00");
    s["amount"]["max_payment_attempts"] = serde_json::Value::Null;
    s["budgets"] = json!({"per_transaction": eur("1.00"),
        "windows": [{"window_seconds": 86400, "max_amount": eur("5.00")}]});
    s["max_uses"] = serde_json::Value::Null;
    strip_nulls(&mut m);
    serde_json::from_value(m).unwrap()
}

fn strip_nulls(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

fn issuer() -> ChallengeIssuer {
    ChallengeIssuer::new(
        REALM,
        BindingSecret::new(b"bench secret of thirty-two bytes".to_vec()).unwrap(),
        Duration::minutes(5),
    )
    .unwrap()
}

fn terms() -> ChargeTerms {
    ChargeTerms {
        method: "stripe".into(),
        request: ChargeRequest {
            amount: "50".into(),
            currency: "eur".into(),
            recipient: None,
            description: Some("One answer".into()),
            external_id: None,
            method_details: Some(
                json!({"networkId": "profile_bench", "paymentMethodTypes": ["card"]})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        },
        description: Some("One answer".into()),
        opaque: None,
    }
}

struct Agent {
    mandate: Mandate,
    usage: Usage,
    context: ChargeContext,
    assets: AssetRegistry,
}

impl Agent {
    fn new() -> Agent {
        let mut assets = AssetRegistry::new();
        assets
            .register(
                "eip155:84532",
                "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                Currency::EUR,
                6,
            )
            .unwrap();
        let mandate = paid_api_mandate();
        Agent {
            usage: Usage::none_for(&mandate),
            mandate,
            context: ChargeContext {
                mcc: Mcc::new("5817").unwrap(),
                region: None,
                default_ttl: Duration::minutes(5),
            },
            assets,
        }
    }

    /// The decision for an offer: cart snapshot, payment request, evaluation.
    fn decide(&self, offer: &agent_mandate::protocols::ChargeOffer) -> bool {
        let now = examples::now();
        let cart = offer.cart(&self.context, now).unwrap();
        let request = PaymentRequest {
            actor: examples::agent(),
            buyer_id: examples::buyer(),
            mandate_id: self.mandate.id().clone(),
            action: PaymentAction::Authorize,
            merchant_id: offer.merchant_id.clone(),
            snapshot_id: cart.id(),
            amount: offer.amount,
            urgency: None,
        };
        let doc = EvaluationDocument {
            checkout: CheckoutState::Valid {
                checkout_id: "checkout_402".parse().unwrap(),
                snapshot_id: cart.id(),
            },
            request,
            chain: vec![self.mandate.clone()],
            snapshot: cart,
            usage: vec![self.usage.clone()],
            confirmations: Vec::new(),
            suspensions: Suspensions::default(),
            credential: Some(CredentialStatus::Usable),
            now,
            resource_payments: None,
            controls: None,
        };
        evaluate(&doc.input()).is_allowed()
    }
}

fn mpp(c: &mut Criterion) {
    let mut group = c.benchmark_group("mpp");
    let now = examples::now();
    let header = issuer()
        .issue(&terms(), None, now)
        .unwrap()
        .to_header()
        .unwrap();
    let agent = Agent::new();
    let offer = Challenge::parse(&header)
        .unwrap()
        .offer(&["stripe"], &agent.assets, URL, now)
        .unwrap();
    assert!(
        agent.decide(&offer),
        "the benchmark challenge must be allowed"
    );

    group.bench_function("parse_challenge", |b| {
        b.iter(|| Challenge::parse(black_box(&header)).unwrap())
    });
    group.bench_function("parse_map_decide", |b| {
        b.iter(|| {
            let c = Challenge::parse(black_box(&header)).unwrap();
            let offer = c.offer(&["stripe"], &agent.assets, URL, now).unwrap();
            agent.decide(&offer)
        })
    });
    let issuer = issuer();
    let t = terms();
    group.bench_function("issue_challenge", |b| {
        b.iter(|| {
            issuer
                .issue(black_box(&t), None, now)
                .unwrap()
                .to_header()
                .unwrap()
        })
    });
    let challenge = Challenge::parse(&header).unwrap();
    let auth = Credential::new(
        &challenge,
        Payload::new(json!({"spt": "spt_bench_1"}).as_object().unwrap().clone()),
        None,
    )
    .to_header()
    .unwrap();
    group.bench_function("verify_credential", |b| {
        b.iter(|| {
            let v = issuer.verify(black_box(&auth), None, now).unwrap();
            v.check_terms(&t).unwrap();
            v.credential.settlement_key().unwrap()
        })
    });
    group.finish();
}

fn x402(c: &mut Criterion) {
    let mut group = c.benchmark_group("x402");
    let now = examples::now();
    let agent = Agent::new();
    let required: PaymentRequired = serde_json::from_value(json!({"x402Version": 2,
        "resource": {"url": URL, "description": "One answer"},
        "accepts": [{"scheme": "exact", "network": "eip155:84532", "amount": "500000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60}]}))
    .unwrap();
    let header = required.to_header().unwrap();
    let offer = PaymentRequired::parse(&header)
        .unwrap()
        .offers(&agent.assets, URL, now)[0]
        .clone()
        .unwrap();
    assert!(agent.decide(&offer));
    group.bench_function("parse_payment_required", |b| {
        b.iter(|| PaymentRequired::parse(black_box(&header)).unwrap())
    });
    group.bench_function("parse_map_decide", |b| {
        b.iter(|| {
            let r = PaymentRequired::parse(black_box(&header)).unwrap();
            let offer = r.offers(&agent.assets, URL, now).remove(0).unwrap();
            agent.decide(&offer)
        })
    });
    group.finish();
}

criterion_group!(benches, mpp, x402);
criterion_main!(benches);
