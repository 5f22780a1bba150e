//! x402 on the seller's side, over real HTTP: the `x402_gate` middleware in front of a route,
//! an in-test facilitator (`/verify`, `/settle`), settlement through the seller's engine; and
//! the agent of `x402_agent.rs` paying it.
//!
//! The verification order (header, offered requirement, facilitator verify, single use, then
//! settle), single use of an authorization, and the facilitator's errors classified (a
//! verification moves no money; a settlement that may have been broadcast is ambiguous).
#![cfg(all(
    feature = "x402",
    feature = "http",
    feature = "axum",
    feature = "testkit"
))]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Duration;

use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{
    examples, AttemptStatus, AuditKind, Budgets, CartBinding, Currency, Mcc, MerchantScope, Money,
    WindowLimit,
};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig};
use agent_mandate::protocols::mpp::seller_actor;
use agent_mandate::protocols::x402::{
    x402_gate, Facilitator, FacilitatorError, FacilitatorProvider, FixedX402Signer,
    HttpFacilitator, PaymentPayload, PaymentRequirements, ResourceInfo, SettlementResponse,
    SignerProvider, X402Book, X402Client, X402ClientError, X402EngineSettler, X402Gate, X402Payer,
};
use agent_mandate::protocols::{AssetRegistry, ChargeContext, PayerIdentity};

use common::engine::{card, key};
use common::principals::{agent_p, buyer_p};

const NETWORK: &str = "eip155:84532";
const USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const FROM: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";

fn usd(a: &str) -> Money {
    Money::parse(a, Currency::USD).unwrap()
}

fn requirement() -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: NETWORK.into(),
        amount: "10000".into(),
        asset: USDC.into(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 60,
        extra: None,
    }
}

fn assets() -> AssetRegistry {
    let mut a = AssetRegistry::new();
    a.register(NETWORK, USDC, Currency::USD, 6).unwrap();
    a
}

fn ctx() -> ChargeContext {
    ChargeContext {
        mcc: Mcc::new("5817").unwrap(),
        region: None,
        default_ttl: Duration::minutes(5),
    }
}

// ---------------------------------------------------------------- the facilitator

#[derive(Debug, Clone)]
enum Answer {
    Ok,
    Invalid(&'static str),
    Status(u16),
    SettleFails(&'static str),
    Slow(StdDuration),
}

#[derive(Debug, Default)]
struct FacState {
    verify: Option<Answer>,
    settle: Option<Answer>,
    calls: Vec<(String, serde_json::Value)>,
}

#[derive(Clone, Default)]
struct Fac {
    state: Arc<Mutex<FacState>>,
    url: String,
}

impl Fac {
    fn calls(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }
}

async fn fac_handle(State(fac): State<Fac>, uri: Uri, body: Bytes) -> Response {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let answer = {
        let mut s = fac.state.lock().unwrap();
        s.calls.push((uri.path().to_owned(), body.clone()));
        match uri.path() {
            "/facilitator/verify" => s.verify.clone(),
            _ => s.settle.clone(),
        }
        .unwrap_or(Answer::Ok)
    };
    // The request is the spec's: version 2, the payload and the requirement it pays.
    assert_eq!(body["x402Version"], 2);
    assert_eq!(
        body["paymentPayload"]["accepted"],
        body["paymentRequirements"]
    );
    let nonce = body["paymentPayload"]["payload"]["authorization"]["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    match answer {
        Answer::Status(s) => return (StatusCode::from_u16(s).unwrap(), "{}").into_response(),
        Answer::Slow(d) => tokio::time::sleep(d).await,
        _ => {}
    }
    let verify = uri.path() == "/facilitator/verify";
    let json = match (verify, answer) {
        (true, Answer::Invalid(r)) => {
            serde_json::json!({"isValid": false, "invalidReason": r, "payer": FROM})
        }
        (true, _) => serde_json::json!({"isValid": true, "payer": FROM}),
        (false, Answer::SettleFails(r)) => serde_json::json!({
            "success": false, "errorReason": r, "transaction": "", "network": NETWORK
        }),
        (false, _) => serde_json::json!({
            "success": true, "transaction": format!("0x{}", &nonce[2..]),
            "network": NETWORK, "payer": FROM
        }),
    };
    json.to_string().into_response()
}

async fn facilitator() -> Fac {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fac = Fac {
        url: format!("http://{}/facilitator", listener.local_addr().unwrap()),
        ..Fac::default()
    };
    let app = Router::new().fallback(fac_handle).with_state(fac.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    fac
}

fn http_facilitator(url: &str) -> HttpFacilitator {
    HttpFacilitator::new(
        url,
        StdDuration::from_secs(2),
        StdDuration::from_millis(700),
    )
    .unwrap()
}

// ---------------------------------------------------------------- the seller

struct Seller {
    mem: MemoryPorts,
    engine: Engine,
    url: String,
    fac: Fac,
}

async fn seller() -> Seller {
    let fac = facilitator().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/premium", listener.local_addr().unwrap());
    let f: Arc<dyn Facilitator> = Arc::new(http_facilitator(&fac.url));
    let f2 = f.clone();
    let mem = MemoryPorts::new(examples::now(), move |vault, clock| {
        Arc::new(FacilitatorProvider::new(f2, vault, clock))
    });
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).unwrap();
    let settler = X402EngineSettler::new(
        engine.clone(),
        seller_actor("seller_x402").unwrap(),
        ctx(),
        assets(),
    );
    let gate = X402Gate::new(
        ResourceInfo {
            url: url.clone(),
            description: Some("Premium data".into()),
            mime_type: None,
        },
        vec![requirement()],
        f,
        Arc::new(settler),
    );
    let app = Router::new()
        .route("/premium", get(|| async { "premium" }))
        .route_layer(axum::middleware::from_fn_with_state(gate, x402_gate));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Seller {
        mem,
        engine,
        url,
        fac,
    }
}

impl Seller {
    fn captured(&self) -> usize {
        self.mem
            .audit
            .events()
            .into_iter()
            .filter_map(|e| e.event().ok())
            .filter(|e| {
                matches!(
                    &e.kind,
                    AuditKind::AttemptTransition {
                        to: AttemptStatus::Captured,
                        ..
                    }
                )
            })
            .count()
    }
}

// ---------------------------------------------------------------- the agent

async fn agent(host: &str) -> (X402Client, Arc<FixedX402Signer>) {
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
    let book = Arc::new(X402Book::new());
    let signer = Arc::new(FixedX402Signer::new(FROM, &[NETWORK]));
    let (s, b) = (signer.clone(), book.clone());
    let mem = MemoryPorts::new(examples::now(), move |_, clock| {
        Arc::new(SignerProvider::new(s, b, clock))
    });
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).unwrap();
    let mandate = engine
        .create_mandate(&buyer_p(), &CreateMandate::new(key("m"), spec))
        .await
        .unwrap()
        .value;
    let wallet = engine
        .store_credential(&buyer_p(), &key("w"), card(&examples::agent().id, "wallet"))
        .await
        .unwrap()
        .value
        .reference;
    let payer = Arc::new(X402Payer::new(
        engine,
        PayerIdentity::of(agent_p(), &mandate, wallet),
        ctx(),
        assets(),
        book,
        signer.clone(),
    ));
    (
        X402Client::new(
            agent_mandate::adapters::http::client_builder()
                .unwrap()
                .build()
                .unwrap(),
            payer,
            mem.clock.clone(),
        ),
        signer,
    )
}

fn host(url: &str) -> String {
    url.split('/').nth(2).unwrap().to_owned()
}

async fn get_with(url: &str, signature: Option<&str>) -> reqwest::Response {
    let mut r = agent_mandate::adapters::http::client_builder()
        .unwrap()
        .build()
        .unwrap()
        .get(url);
    if let Some(s) = signature {
        r = r.header("payment-signature", s);
    }
    r.send().await.unwrap()
}

fn settlement(resp: &reqwest::Response) -> Option<SettlementResponse> {
    resp.headers()
        .get("payment-response")
        .map(|v| SettlementResponse::parse(v.to_str().unwrap()).unwrap())
}

// ---------------------------------------------------------------- tests

/// The agent pays the gated route: the facilitator is asked to verify, then to settle, the
/// seller's engine captures 0.01 USD (a single-use mandate, an attempt, an audit trail that
/// verifies), the answer carries `PAYMENT-RESPONSE` with the facilitator's transaction.
/// The same payload again is a replay (served, no second settlement); another payload with
/// the same authorization is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pays_an_x402_gate_settled_through_the_sellers_engine() {
    let s = seller().await;
    let plain = get_with(&s.url, None).await;
    assert_eq!(plain.status().as_u16(), 402);
    assert!(plain.headers().contains_key("payment-required"));

    let (client, _) = agent(&host(&s.url)).await;
    let r = client
        .send(
            agent_mandate::adapters::http::client_builder()
                .unwrap()
                .build()
                .unwrap()
                .get(&s.url)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"premium");
    let settled = r.settlement.unwrap();
    assert!(settled.success);
    assert_eq!(settled.payer.as_deref(), Some(FROM));
    assert_eq!(
        s.fac.calls(),
        vec!["/facilitator/verify", "/facilitator/settle"]
    );
    assert_eq!(s.captured(), 1);
    let report = s.engine.verify_trail(10_000).await.unwrap();
    assert!(report.missing.is_empty(), "{report:?}");

    // The same payload again: served, not settled twice.
    let payload = {
        let st = s.fac.state.lock().unwrap();
        serde_json::from_value::<PaymentPayload>(st.calls[0].1["paymentPayload"].clone()).unwrap()
    };
    let again = get_with(&s.url, Some(&payload.to_header().unwrap())).await;
    assert_eq!(again.status().as_u16(), 200);
    assert_eq!(settlement(&again).unwrap().transaction, settled.transaction);
    assert_eq!(
        s.fac
            .calls()
            .iter()
            .filter(|c| c.ends_with("settle"))
            .count(),
        1
    );
    assert_eq!(s.captured(), 1);

    // Another payload for the same authorization (same payer and nonce): single use.
    let mut forged = payload.clone();
    forged
        .payload
        .insert("signature".into(), "0xdeadbeef".into());
    let reused = get_with(&s.url, Some(&forged.to_header().unwrap())).await;
    assert_eq!(reused.status().as_u16(), 402);
    assert_eq!(
        settlement(&reused).unwrap().error_reason.as_deref(),
        Some("invalid_transaction_state")
    );
    assert_eq!(s.captured(), 1);
}

/// Checked in order, each refusal before the next step: an unreadable header is a 400 with no
/// facilitator call; a payload for a requirement the route does not offer (another network,
/// asset, recipient or amount) is a 402 with a fresh `PAYMENT-REQUIRED` and no facilitator
/// call; a payload the facilitator finds invalid is a 402 with its reason and no settlement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_in_the_specs_order() {
    let s = seller().await;
    let (client, _) = agent(&host(&s.url)).await;
    client
        .send(
            agent_mandate::adapters::http::client_builder()
                .unwrap()
                .build()
                .unwrap()
                .get(&s.url)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let good = {
        let st = s.fac.state.lock().unwrap();
        serde_json::from_value::<PaymentPayload>(st.calls[0].1["paymentPayload"].clone()).unwrap()
    };
    s.fac.state.lock().unwrap().calls.clear();

    assert_eq!(
        get_with(&s.url, Some("not base64!"))
            .await
            .status()
            .as_u16(),
        400
    );
    for change in [
        |r: &mut PaymentRequirements| r.network = "eip155:8453".into(),
        |r: &mut PaymentRequirements| r.asset = "0x0000000000000000000000000000000000000001".into(),
        |r: &mut PaymentRequirements| r.pay_to = FROM.into(),
        |r: &mut PaymentRequirements| r.amount = "1".into(),
    ] {
        let mut p = good.clone();
        change(&mut p.accepted);
        let r = get_with(&s.url, Some(&p.to_header().unwrap())).await;
        assert_eq!(r.status().as_u16(), 402);
        assert!(r.headers().contains_key("payment-required"));
    }
    assert!(s.fac.calls().is_empty(), "the facilitator was never asked");

    s.fac.state.lock().unwrap().verify = Some(Answer::Invalid("insufficient_funds"));
    let mut p = good.clone();
    p.payload.insert("signature".into(), "0x01".into());
    let r = get_with(&s.url, Some(&p.to_header().unwrap())).await;
    assert_eq!(r.status().as_u16(), 402);
    assert_eq!(
        settlement(&r).unwrap().error_reason.as_deref(),
        Some("insufficient_funds")
    );
    assert_eq!(s.fac.calls(), vec!["/facilitator/verify"]);
    assert_eq!(s.captured(), 1);
}

/// A settlement that fails (`success: false`) is a decline: 402, nothing captured. A
/// facilitator that answers 500 to `/settle` leaves the seller's attempt ambiguous (the
/// transfer may have been broadcast): 503, nothing captured, the agent sees a rejection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_ambiguous_settlements_capture_nothing() {
    let s = seller().await;
    let (client, _) = agent(&host(&s.url)).await;
    s.fac.state.lock().unwrap().settle = Some(Answer::SettleFails("insufficient_funds"));
    match client
        .send_call(
            agent_mandate::adapters::http::client_builder()
                .unwrap()
                .build()
                .unwrap()
                .get(&s.url)
                .build()
                .unwrap(),
            Some("a"),
        )
        .await
    {
        Err(X402ClientError::Rejected { status, .. }) => assert_eq!(status, 402),
        other => panic!("{other:?}"),
    }
    s.fac.state.lock().unwrap().settle = Some(Answer::Status(500));
    match client
        .send_call(
            agent_mandate::adapters::http::client_builder()
                .unwrap()
                .build()
                .unwrap()
                .get(&s.url)
                .build()
                .unwrap(),
            Some("b"),
        )
        .await
    {
        Err(X402ClientError::Rejected { status, .. }) => assert_eq!(status, 503),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.captured(), 0);
    let ambiguous = s
        .mem
        .audit
        .events()
        .into_iter()
        .filter_map(|e| e.event().ok())
        .filter(|e| {
            matches!(
                &e.kind,
                AuditKind::AttemptTransition {
                    to: AttemptStatus::Ambiguous,
                    ..
                }
            )
        })
        .count();
    assert_eq!(ambiguous, 1);
}

/// The HTTP facilitator client classifies: a failed verification is transient (no money
/// moves), a failed settlement ambiguous (5xx, timeout) unless nothing was sent (connection
/// refused: transient) or the facilitator refused (4xx: refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facilitator_client_classifies_failures() {
    let fac = facilitator().await;
    let f = http_facilitator(&fac.url);
    let mut payload_json = serde_json::json!({
        "x402Version": 2,
        "accepted": requirement(),
        "payload": {"signature": "0x00", "authorization": {"nonce": "0x0102", "from": FROM}},
    });
    payload_json["accepted"] = serde_json::to_value(requirement()).unwrap();
    let payload: PaymentPayload = serde_json::from_value(payload_json).unwrap();
    let req = requirement();
    for (answer, verify_class, settle_class) in [
        (Answer::Status(500), "transient", "ambiguous"),
        (Answer::Status(502), "transient", "ambiguous"),
        (Answer::Status(429), "transient", "transient"),
        (Answer::Status(400), "refused", "refused"),
        (
            Answer::Slow(StdDuration::from_secs(2)),
            "transient",
            "ambiguous",
        ),
    ] {
        {
            let mut st = fac.state.lock().unwrap();
            st.verify = Some(answer.clone());
            st.settle = Some(answer.clone());
        }
        let class = |e: FacilitatorError| match e {
            FacilitatorError::Refused { .. } => "refused",
            FacilitatorError::Transient { .. } => "transient",
            FacilitatorError::Ambiguous { .. } => "ambiguous",
            _ => "other",
        };
        assert_eq!(
            class(f.verify(&payload, &req).await.unwrap_err()),
            verify_class,
            "{answer:?}"
        );
        assert_eq!(
            class(f.settle(&payload, &req).await.unwrap_err()),
            settle_class,
            "{answer:?}"
        );
    }
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", l.local_addr().unwrap())
    };
    let f = http_facilitator(&closed);
    assert!(matches!(
        f.settle(&payload, &req).await,
        Err(FacilitatorError::Transient { .. })
    ));
}
