//! x402 on the agent's side end to end, over real HTTP against an in-test seller: a 402 with
//! `PAYMENT-REQUIRED` is decided through the engine (mandate caps, hold, idempotency by the
//! offer's identity, audit, loop detection), signed through the [`X402Signer`] port within
//! its grant, sent again with `PAYMENT-SIGNATURE`, and the `PAYMENT-RESPONSE` is the receipt.
//!
//! I1 (nothing signed without an allowed decision), I2 (caps hold under a retry loop), I3 (the
//! same requirement paid twice is one payment), I6 (no grant wider than requirement and
//! mandate), I10 (no signature in Debug or errors).
#![cfg(all(
    feature = "x402",
    feature = "http",
    feature = "axum",
    feature = "testkit"
))]

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Duration;

use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{
    examples, AuditKind, BlockerCode, Budgets, CartBinding, Currency, LoopLimit, Mandate,
    MandateSpec, Mcc, MerchantScope, Money, WindowLimit,
};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig};
use agent_mandate::ports::Clock;
use agent_mandate::protocols::x402::{
    check_grant, FixedX402Signer, PaymentPayload, PaymentRequired, PaymentRequirements,
    ResourceInfo, SettlementResponse, SignerError, SignerProvider, X402Book, X402Client,
    X402ClientError, X402Grant, X402Payer, X402Signer, PAYMENT_IDENTIFIER,
};
use agent_mandate::protocols::{AssetRegistry, ChargeContext, OfferError, PayError, PayerIdentity};

use common::engine::{card, key};
use common::principals::{agent_p, buyer_p};

const NETWORK: &str = "eip155:84532";
const USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const FROM: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";

fn usd(a: &str) -> Money {
    Money::parse(a, Currency::USD).unwrap()
}

fn requirement(amount: &str) -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: NETWORK.into(),
        amount: amount.into(),
        asset: USDC.into(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 60,
        extra: Some(
            serde_json::json!({"name": "USDC", "version": "2"})
                .as_object()
                .unwrap()
                .clone(),
        ),
    }
}

// ---------------------------------------------------------------- the seller

#[derive(Debug, Default)]
struct SellerState {
    accepts: Vec<PaymentRequirements>,
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
    nonces: HashSet<String>,
    received: Vec<PaymentPayload>,
    settled: u32,
}

#[derive(Clone)]
struct Seller {
    state: Arc<Mutex<SellerState>>,
    url: String,
}

impl Seller {
    fn set_accepts(&self, accepts: Vec<PaymentRequirements>) {
        self.state.lock().unwrap().accepts = accepts;
    }
    fn settled(&self) -> u32 {
        self.state.lock().unwrap().settled
    }
    fn received(&self) -> Vec<PaymentPayload> {
        self.state.lock().unwrap().received.clone()
    }
}

fn required(state: &SellerState, url: &str) -> PaymentRequired {
    PaymentRequired {
        x402_version: 2,
        error: Some("PAYMENT-SIGNATURE header is required".into()),
        resource: Some(ResourceInfo {
            url: url.into(),
            description: Some("Premium data".into()),
            mime_type: Some("application/json".into()),
        }),
        accepts: state.accepts.clone(),
        extensions: state.extensions.clone(),
    }
}

fn with_header(mut resp: Response, name: &'static str, value: String) -> Response {
    resp.headers_mut()
        .insert(name, HeaderValue::from_str(&value).unwrap());
    resp
}

/// A seller that checks the payload against what it asked (the requirement, the recipient,
/// the amount, the window) and refuses a nonce it has seen (as the token contract would).
async fn protected(
    axum::extract::State((seller, url)): axum::extract::State<(Seller, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = seller.state.lock().unwrap();
    let Some(sig) = headers.get("payment-signature") else {
        let header = required(&s, &url).to_header().unwrap();
        return with_header(
            (StatusCode::PAYMENT_REQUIRED, "{}").into_response(),
            "payment-required",
            header,
        );
    };
    let payload = PaymentPayload::parse(sig.to_str().unwrap()).unwrap();
    s.received.push(payload.clone());
    let auth = payload.payload["authorization"].clone();
    let nonce = auth["nonce"].as_str().unwrap().to_owned();
    let fail = |reason: &str| {
        let r = SettlementResponse {
            success: false,
            error_reason: Some(reason.into()),
            payer: Some(FROM.into()),
            transaction: String::new(),
            network: NETWORK.into(),
            amount: None,
            extensions: None,
        };
        with_header(
            (StatusCode::PAYMENT_REQUIRED, "{}").into_response(),
            "payment-response",
            r.to_header().unwrap(),
        )
    };
    if !s.accepts.contains(&payload.accepted) {
        return fail("invalid_payment_requirements");
    }
    if auth["value"] != payload.accepted.amount.as_str() {
        return fail("invalid_exact_evm_payload_authorization_value_mismatch");
    }
    if auth["to"] != payload.accepted.pay_to.as_str() {
        return fail("invalid_exact_evm_payload_recipient_mismatch");
    }
    if !s.nonces.insert(nonce.clone()) {
        return fail("invalid_transaction_state");
    }
    s.settled += 1;
    let r = SettlementResponse {
        success: true,
        error_reason: None,
        payer: Some(FROM.into()),
        transaction: format!("0x{}", &nonce[2..]),
        network: NETWORK.into(),
        amount: Some(payload.accepted.amount.clone()),
        extensions: None,
    };
    with_header(
        (StatusCode::OK, "premium").into_response(),
        "payment-response",
        r.to_header().unwrap(),
    )
}

async fn seller(accepts: Vec<PaymentRequirements>) -> Seller {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/premium", listener.local_addr().unwrap());
    let seller = Seller {
        state: Arc::new(Mutex::new(SellerState {
            accepts,
            ..SellerState::default()
        })),
        url: url.clone(),
    };
    let app = Router::new()
        .route("/premium", get(protected))
        .with_state((seller.clone(), url));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    seller
}

// ---------------------------------------------------------------- the agent

fn ctx() -> ChargeContext {
    ChargeContext {
        mcc: Mcc::new("5817").unwrap(),
        region: None,
        default_ttl: Duration::minutes(5),
    }
}

/// At most 1.00 USD per call and 0.05 USD per day at the seller's host.
fn spec_for(host: &str) -> MandateSpec {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.scope.merchants = MerchantScope::Single {
        merchant_id: host.parse().unwrap(),
    };
    spec.scope.mccs = Some(vec![Mcc::new("5817").unwrap()]);
    spec.scope.cart = CartBinding::Open {
        allowed_skus: None,
        max_line_items: Some(1),
    };
    spec.scope.currency.currency = Currency::USD;
    spec.scope.amount.max_amount = usd("1.00");
    spec.scope.amount.max_payment_attempts = None;
    spec.scope.budgets = Budgets {
        per_transaction: Some(usd("1.00")),
        windows: vec![WindowLimit {
            window_seconds: 86_400,
            max_amount: Some(usd("0.05")),
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
    signer: Arc<FixedX402Signer>,
    payer: Arc<X402Payer>,
    client: X402Client,
    mandate: Mandate,
}

fn assets() -> AssetRegistry {
    let mut a = AssetRegistry::new();
    a.register(NETWORK, USDC, Currency::USD, 6).unwrap();
    a
}

async fn agent(seller: &Seller, loop_limit: Option<LoopLimit>, spec: Option<MandateSpec>) -> Agent {
    let host = seller.url.split('/').nth(2).unwrap().to_owned();
    let book = Arc::new(X402Book::new());
    let signer = Arc::new(FixedX402Signer::new(FROM, &[NETWORK]));
    let (s, b) = (signer.clone(), book.clone());
    let mem = MemoryPorts::new(examples::now(), move |_, clock| {
        Arc::new(SignerProvider::new(s, b, clock))
    });
    let engine = Engine::new(
        mem.ports.clone(),
        EngineConfig::default().with_loop_limit(loop_limit),
    )
    .unwrap();
    let mandate = engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("x402-mandate"), spec.unwrap_or_else(|| spec_for(&host))),
        )
        .await
        .unwrap()
        .value;
    let wallet = engine
        .store_credential(
            &buyer_p(),
            &key("wallet"),
            card(&examples::agent().id, "wallet-ref"),
        )
        .await
        .unwrap()
        .value
        .reference;
    let payer = Arc::new(X402Payer::new(
        engine.clone(),
        PayerIdentity::of(agent_p(), &mandate, wallet),
        ctx(),
        assets(),
        book,
        signer.clone(),
    ));
    let client = X402Client::new(
        agent_mandate::adapters::http::client_builder()
            .unwrap()
            .build()
            .unwrap(),
        payer.clone(),
        mem.clock.clone(),
    );
    Agent {
        mem,
        engine,
        signer,
        payer,
        client,
        mandate,
    }
}

impl Agent {
    async fn get(
        &self,
        url: &str,
        call: Option<&str>,
    ) -> Result<agent_mandate::protocols::x402::X402Response, X402ClientError> {
        let req = agent_mandate::adapters::http::client_builder()
            .unwrap()
            .build()
            .unwrap()
            .get(url)
            .build()
            .unwrap();
        self.client.send_call(req, call).await
    }
    async fn usage(&self) -> agent_mandate::domain::Usage {
        self.mem
            .ports
            .store
            .usage(std::slice::from_ref(&self.mandate), self.mem.clock.now())
            .await
            .unwrap()
            .remove(0)
    }
}

// ---------------------------------------------------------------- tests

/// 402 -> decide -> sign -> retry with `PAYMENT-SIGNATURE` -> 200 with `PAYMENT-RESPONSE`:
/// the payload is the requirement's exactly (recipient, value, asset, network), its window
/// runs from the decision for the requirement's timeout, the settlement is the receipt, the
/// engine spent 0.01 USD and its trail verifies; no signature shows in Debug.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pays_an_x402_seller_through_its_mandate() {
    let s = seller(vec![requirement("10000")]).await;
    let a = agent(&s, None, None).await;
    let r = a.get(&s.url, None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"premium");
    let settlement = r.settlement.unwrap();
    assert!(settlement.success);
    assert_eq!(settlement.network, NETWORK);
    assert_eq!(s.settled(), 1);

    let p = &s.received()[0];
    assert_eq!(p.accepted, requirement("10000"));
    let auth = &p.payload["authorization"];
    assert_eq!(auth["to"], PAY_TO);
    assert_eq!(auth["value"], "10000");
    assert_eq!(auth["from"], FROM);
    let now = examples::now().timestamp();
    assert_eq!(auth["validAfter"], now.to_string());
    assert_eq!(auth["validBefore"], (now + 60).to_string());
    assert_eq!(p.resource.as_ref().unwrap().url, s.url);

    let g = &a.signer.grants()[0];
    assert_eq!(g.money, usd("0.01"));
    assert_eq!(a.usage().await.spent, usd("0.01"));
    let report = a.engine.verify_trail(10_000).await.unwrap();
    assert!(report.missing.is_empty(), "{report:?}");
    let sig = p.payload["signature"].as_str().unwrap().to_owned();
    assert!(!format!("{p:?} {:?} {:?}", a.payer, r.payment_id).contains(&sig));
}

/// The same requirement paid again (no call id) is a replay of the same payment: the same
/// payload is sent, nothing is signed or spent twice, and the seller (which refuses a used
/// nonce) rejects it. With a call id per call, each call is its own payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_requirement_is_paid_once() {
    let s = seller(vec![requirement("10000")]).await;
    let a = agent(&s, None, None).await;
    a.get(&s.url, None).await.unwrap();
    a.mem.clock.advance(Duration::seconds(1));
    match a.get(&s.url, None).await {
        Err(X402ClientError::Rejected { status, settlement }) => {
            assert_eq!(status, 402);
            assert_eq!(
                settlement.unwrap().error_reason.as_deref(),
                Some("invalid_transaction_state")
            );
        }
        other => panic!("expected the replayed payload to be refused, got {other:?}"),
    }
    let received = s.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0], received[1], "the same payload, not a new one");
    assert_eq!(a.signer.grants().len(), 1, "signed once");
    assert_eq!(a.usage().await.spent, usd("0.01"), "spent once");

    // One payment per call id; a retry of a call reuses its payment.
    a.get(&s.url, Some("call-1")).await.unwrap();
    a.get(&s.url, Some("call-2")).await.unwrap();
    assert!(a.get(&s.url, Some("call-2")).await.is_err());
    assert_eq!(s.settled(), 3);
    assert_eq!(a.signer.grants().len(), 3);
    assert_eq!(a.usage().await.spent, usd("0.03"));
}

/// An agent retrying 10,000 times at 0.01 USD (a new call each time) is stopped by the daily
/// cap of 0.05 USD after five payments; with loop detection at 3 per hour, by loop detection
/// after three, with a control event. Nothing is signed after the first refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_agent_is_stopped_by_the_cap_or_loop_detection() {
    for (limit, paid_max, code) in [
        (None, 5, BlockerCode::WindowAmountExceeded),
        (
            Some(LoopLimit::new(3, 3600).unwrap()),
            3,
            BlockerCode::ResourceLoopDetected,
        ),
    ] {
        let s = seller(vec![requirement("10000")]).await;
        let a = agent(&s, limit, None).await;
        let mut paid = 0;
        let mut first = None;
        for i in 0..10_000 {
            match a.get(&s.url, Some(&format!("call-{i}"))).await {
                Ok(_) => {
                    assert!(first.is_none(), "paid after a refusal");
                    paid += 1
                }
                Err(X402ClientError::Pay(PayError::Refused { codes, .. })) => {
                    first.get_or_insert(codes);
                    if i > paid_max + 20 {
                        break;
                    }
                }
                Err(e) => panic!("{e:?}"),
            }
            a.mem.clock.advance(Duration::milliseconds(100));
        }
        assert_eq!(paid, paid_max);
        assert!(first.unwrap().contains(&code));
        assert_eq!(s.settled() as usize, paid_max);
        assert_eq!(
            a.signer.grants().len(),
            paid_max,
            "nothing signed when refused"
        );
        if limit.is_some() {
            let loop_events = a
                .mem
                .audit
                .events()
                .into_iter()
                .filter_map(|e| e.event().ok())
                .filter(|e| matches!(e.kind, AuditKind::LoopDetected { .. }))
                .count();
            assert!(loop_events >= 1);
        }
    }
}

/// What the mandate or the registry refuses is never signed: a requirement above the
/// per-call cap; an asset on another network, an unregistered asset, another scheme (no
/// payable requirement); a requirement at another host is another merchant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requirements_are_never_signed() {
    let s = seller(vec![requirement("1010000")]).await;
    let a = agent(&s, None, None).await;
    match a.get(&s.url, None).await {
        Err(X402ClientError::Pay(PayError::Refused { codes, .. })) => {
            assert!(
                codes.contains(&BlockerCode::TransactionLimitExceeded),
                "{codes:?}"
            )
        }
        other => panic!("{other:?}"),
    }

    let mut other_network = requirement("10000");
    other_network.network = "eip155:8453".into();
    let mut other_asset = requirement("10000");
    other_asset.asset = "0x0000000000000000000000000000000000000001".into();
    let mut other_scheme = requirement("10000");
    other_scheme.scheme = "upto".into();
    s.set_accepts(vec![other_network, other_asset, other_scheme]);
    match a.get(&s.url, None).await {
        Err(X402ClientError::NoPayableRequirement { refused }) => {
            assert_eq!(refused.len(), 3);
            assert!(
                matches!(refused[1], OfferError::UnknownCurrency { .. }),
                "{refused:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(a.signer.grants().is_empty(), "nothing was signed");
    assert!(s.received().is_empty(), "no PAYMENT-SIGNATURE was sent");
    assert_eq!(a.usage().await.spent, usd("0.00"));

    // Another host: the mandate's merchant scope refuses it.
    let mut spec = spec_for("other.example");
    spec.id = "mandate_x402_other".parse().unwrap();
    let s2 = seller(vec![requirement("10000")]).await;
    let b = agent(&s2, None, Some(spec)).await;
    assert!(matches!(
        b.get(&s2.url, None).await,
        Err(X402ClientError::Pay(PayError::Refused { ref codes, .. }))
            if codes.contains(&BlockerCode::MerchantMismatch)
    ));
    assert!(b.signer.grants().is_empty());
}

/// A signer error leaves the payment unpaid (nothing sent to the seller, nothing spent); the
/// grant's window ends at the mandate's expiry when it comes before the requirement's
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signer_errors_and_the_mandates_expiry_bound_the_payment() {
    let s = seller(vec![requirement("10000")]).await;
    let a = agent(&s, None, None).await;
    a.signer.fail_with(Some(SignerError::Refused {
        reason: "key locked".into(),
    }));
    match a.get(&s.url, Some("c1")).await {
        Err(X402ClientError::Pay(PayError::NotPaid { reason })) => {
            assert!(
                reason.contains("key locked") || reason.contains("Failed"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(s.received().is_empty());
    assert_eq!(a.usage().await.spent, usd("0.00"));
    assert_eq!(
        a.usage().await.held,
        usd("0.00"),
        "a definitive refusal releases the hold"
    );

    let host = s.url.split('/').nth(2).unwrap().to_owned();
    let mut spec = spec_for(&host);
    spec.id = "mandate_x402_short".parse().unwrap();
    spec.scope.validity.expires_at = examples::now() + Duration::seconds(30);
    let b = agent(&s, None, Some(spec)).await;
    b.get(&s.url, None).await.unwrap();
    let auth = &s.received()[0].payload["authorization"];
    assert_eq!(
        auth["validBefore"],
        (examples::now().timestamp() + 30).to_string(),
        "the mandate ends first"
    );
}

/// The signer refuses a grant that is not exactly its requirement or has expired, naming the
/// field: another network, asset, recipient or amount, a window longer than the timeout, an
/// empty or past window; an unsupported network is not its own.
#[tokio::test]
async fn grants_that_are_not_the_requirement_are_not_signed() {
    let req = requirement("10000");
    let now = examples::now();
    let good = X402Grant {
        payment_id: "p1".into(),
        scheme: "exact".into(),
        network: NETWORK.into(),
        asset: USDC.to_ascii_lowercase(),
        pay_to: PAY_TO.into(),
        amount: "10000".into(),
        money: usd("0.01"),
        valid_after: now,
        valid_before: now + Duration::seconds(60),
    };
    check_grant(&req, &good, now).unwrap();
    let field = |g: X402Grant, at| match check_grant(&req, &g, at) {
        Err(SignerError::Grant { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let mut g = good.clone();
    g.network = "eip155:1".into();
    assert_eq!(field(g, now), "network");
    let mut g = good.clone();
    g.asset = "0x0000000000000000000000000000000000000001".into();
    assert_eq!(field(g, now), "asset");
    let mut g = good.clone();
    g.pay_to = FROM.into();
    assert_eq!(field(g, now), "payTo");
    let mut g = good.clone();
    g.amount = "10001".into();
    assert_eq!(field(g, now), "amount");
    let mut g = good.clone();
    g.valid_before = now + Duration::seconds(61);
    assert_eq!(field(g, now), "validBefore");
    let mut g = good.clone();
    g.valid_before = now;
    assert_eq!(field(g, now), "validBefore");
    assert_eq!(
        field(good.clone(), now + Duration::seconds(60)),
        "validBefore"
    );

    let signer = FixedX402Signer::new(FROM, &[NETWORK]);
    let mut wide = good.clone();
    wide.amount = "20000".into();
    assert!(matches!(
        signer.sign(&req, &wide).await,
        Err(SignerError::Grant {
            field: "amount",
            ..
        })
    ));
    let mut mainnet = req.clone();
    mainnet.network = "eip155:8453".into();
    assert!(!signer.accepts(&mainnet));
    assert!(matches!(
        signer.sign(&mainnet, &good).await,
        Err(SignerError::Unsupported { .. })
    ));
    let signed = signer.sign(&req, &good).await.unwrap();
    assert_eq!(
        signer.sign(&req, &good).await.unwrap(),
        signed,
        "idempotent"
    );
    let sig = signed.payload["signature"].as_str().unwrap();
    assert!(!format!("{signed:?} {signer:?}").contains(sig));
}

/// A server advertising `payment-identifier` gets the payment's id echoed in the extension
/// (the same id when the payment is replayed, another for another call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_identifier_extension_is_echoed_with_the_payments_id() {
    let s = seller(vec![requirement("10000")]).await;
    s.state.lock().unwrap().extensions = Some(
        serde_json::json!({PAYMENT_IDENTIFIER: {"info": {"required": false}, "schema": {"type": "object"}}})
            .as_object()
            .unwrap()
            .clone(),
    );
    let a = agent(&s, None, None).await;
    a.get(&s.url, Some("one")).await.unwrap();
    a.get(&s.url, Some("two")).await.unwrap();
    let ids: Vec<String> = s
        .received()
        .iter()
        .map(|p| {
            p.extensions.as_ref().unwrap()[PAYMENT_IDENTIFIER]["info"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(ids[0].starts_with("pay_") && ids[0].len() == 36, "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(
        s.received()[0].extensions.as_ref().unwrap()[PAYMENT_IDENTIFIER]["info"]["required"],
        false
    );
}
