//! Shared payment tokens for the Stripe charge method, over real HTTP against an in-test
//! server that answers like Stripe (localstripe has no shared payment tokens):
//!
//! - the agent's [`StripeSptResponder`] issues a token with `POST
//!   /v1/shared_payment/issued_tokens`, its usage limits the grant's (never wider than the
//!   challenge and the mandate), with an `Idempotency-Key` per challenge; a grant wider than
//!   the challenge, or expired, is refused before anything is sent; the issuer's errors are
//!   classified as the Stripe adapter classifies them; the key and the payment method never
//!   show in `Debug` or an error;
//! - the seller's Stripe adapter charges a shared payment token as
//!   `shared_payment_granted_token` when configured to, and refuses it otherwise;
//! - end to end: agent and seller engines, the seller's gate, both talking to the fake Stripe.
#![cfg(all(
    feature = "mpp",
    feature = "http",
    feature = "axum",
    feature = "testkit"
))]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Duration;

use agent_mandate::adapters::http::{StripeConfig, StripeProvider};
use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{
    examples, AttemptId, BlockerCode, BuyerId, Currency, MerchantId, Money, ProviderKey, SnapshotId,
};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig};
use agent_mandate::ports::{
    AuthorizeRequest, Clock, CredentialDisplay, CredentialKind, CredentialVault, FundingType,
    NewCredential, PaymentProvider, ProviderError, Secret,
};
use agent_mandate::protocols::mpp::Grant;
use agent_mandate::protocols::mpp::{
    payment_gate, seller_actor, BindingSecret, Challenge, ChallengeIssuer, ChallengeResponder,
    ChargeRequest, ChargeTerms, EnginePayer, EngineSettler, GrantBook, PaidClient, PayError, Payer,
    PayerIdentity, PaymentGate, ResponderError, ResponderProvider, StripeSptResponder,
};
use agent_mandate::protocols::{AssetRegistry, ChargeContext};

use common::engine::{card, eur, key};
use common::principals::{agent_p, buyer_p};

const REALM: &str = "api.example.com";
const API_KEY: &str = "sk_test_agent_secret_key_123";
const PM: &str = "pm_card_visa_secret_42";
const URL: &str = "https://api.example.com/v1/answer";

// ---------------------------------------------------------------- the fake Stripe

#[derive(Debug, Clone)]
enum Mode {
    /// Issue tokens (one per idempotency key) and succeed PaymentIntents.
    Ok,
    /// Answer every request with this status and body.
    Status(u16, &'static str),
    /// Answer after this long.
    Delay(StdDuration),
}

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    form: Vec<(String, String)>,
    idempotency_key: Option<String>,
    authorization: Option<String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct FakeState {
    mode: Option<Mode>,
    seen: Vec<Seen>,
    tokens: HashMap<String, String>,
    intents: u32,
}

#[derive(Debug, Clone, Default)]
struct FakeStripe {
    state: Arc<Mutex<FakeState>>,
    url: String,
}

impl FakeStripe {
    fn set(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }
    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

const TOKENS: &str = "/v1/shared_payment/issued_tokens";
const INTENTS: &str = "/v1/payment_intents";

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

async fn handle(
    State(fake): State<FakeStripe>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        path: uri.path().to_owned(),
        form: form(&body),
        idempotency_key: headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_owned()),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
    };
    let mode = {
        let mut s = fake.state.lock().unwrap();
        s.seen.push(seen.clone());
        s.mode.clone().unwrap_or(Mode::Ok)
    };
    match mode {
        Mode::Status(status, body) => {
            return (StatusCode::from_u16(status).unwrap(), body.to_owned()).into_response()
        }
        Mode::Delay(d) => {
            tokio::time::sleep(d).await;
        }
        Mode::Ok => {}
    }
    if method != Method::POST {
        return (StatusCode::NOT_FOUND, "{}").into_response();
    }
    let mut s = fake.state.lock().unwrap();
    match uri.path() {
        TOKENS => {
            let n = s.tokens.len();
            let key = seen.idempotency_key.clone().unwrap_or_default();
            let id = s
                .tokens
                .entry(key)
                .or_insert_with(|| format!("spt_test_{n}"))
                .clone();
            serde_json::json!({"id": id, "object": "shared_payment.issued_token"})
                .to_string()
                .into_response()
        }
        INTENTS => {
            s.intents += 1;
            let amount: i64 = seen.field("amount").unwrap().parse().unwrap();
            serde_json::json!({
                "id": format!("pi_test_{}", s.intents),
                "status": "succeeded",
                "amount": amount,
                "currency": seen.field("currency").unwrap(),
                "amount_received": amount,
                "latest_charge": {"status": "succeeded", "amount": amount,
                    "amount_captured": amount, "amount_refunded": 0, "captured": true},
            })
            .to_string()
            .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "{}").into_response(),
    }
}

async fn fake_stripe() -> FakeStripe {
    let mut fake = FakeStripe::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    fake.url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().fallback(handle).with_state(fake.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    fake
}

fn config(url: &str) -> StripeConfig {
    StripeConfig::new(url, Secret::new(API_KEY))
        .unwrap()
        .with_timeouts(StdDuration::from_secs(2), StdDuration::from_millis(700))
}

// ---------------------------------------------------------------- challenges and grants

fn issuer() -> ChallengeIssuer {
    ChallengeIssuer::new(
        REALM,
        BindingSecret::new(b"seller secret of thirty-two bytes".to_vec()).unwrap(),
        Duration::minutes(5),
    )
    .unwrap()
}

fn terms_with(amount: &str, network: Option<&str>) -> ChargeTerms {
    ChargeTerms {
        method: "stripe".into(),
        request: ChargeRequest {
            amount: amount.into(),
            currency: "eur".into(),
            recipient: None,
            description: Some("One answer".into()),
            external_id: None,
            method_details: network.map(|n| {
                serde_json::json!({"networkId": n, "paymentMethodTypes": ["card"]})
                    .as_object()
                    .unwrap()
                    .clone()
            }),
        },
        description: Some("One answer".into()),
        opaque: None,
    }
}

fn terms(amount: &str) -> ChargeTerms {
    terms_with(amount, Some("profile_seller"))
}

fn ctx() -> ChargeContext {
    ChargeContext {
        mcc: agent_mandate::domain::Mcc::new("5817").unwrap(),
        region: None,
        default_ttl: Duration::minutes(5),
    }
}

struct Direct {
    mem: MemoryPorts,
    fake: FakeStripe,
    responder: StripeSptResponder,
    card: agent_mandate::domain::CredentialRef,
}

async fn direct() -> Direct {
    let fake = fake_stripe().await;
    let mem = MemoryPorts::new(examples::now(), |_, _| {
        Arc::new(agent_mandate::testkit::FakePsp::new())
    });
    let card = mem
        .vault
        .store(&key("card"), card(&examples::agent().id, PM))
        .await
        .unwrap()
        .credential
        .reference;
    let responder =
        StripeSptResponder::new(config(&fake.url), mem.vault.clone(), mem.clock.clone()).unwrap();
    Direct {
        mem,
        fake,
        responder,
        card,
    }
}

impl Direct {
    /// A challenge of `amount` cents and its grant under a mandate valid for an hour.
    fn challenge(&self, t: &ChargeTerms) -> (Challenge, Grant) {
        let now = self.mem.clock.now();
        let c = issuer().issue(t, None, now).unwrap();
        let offer = c
            .offer(&["stripe"], &AssetRegistry::new(), URL, now)
            .unwrap();
        let mut g = Grant::for_offer(&c, &offer, now + Duration::hours(1));
        g.credential = Some(self.card.clone());
        (c, g)
    }
}

fn no_secret(text: &str) {
    assert!(!text.contains(API_KEY), "the API key leaked: {text}");
    assert!(!text.contains(PM), "the payment method leaked: {text}");
}

// ---------------------------------------------------------------- the responder

/// The token request carries the grant's limits: currency, maximum in minor units, expiry
/// (the challenge's, earlier than the mandate's), the seller's network id, the payment method
/// from the vault, the API key as a bearer, and an idempotency key per challenge; the
/// payload is `{"spt": <id>}` and the reference reveals nothing of it. Asked again for the same
/// challenge, the responder returns the same token; a second responder (another process)
/// sends the same idempotency key and the issuer answers the same token.
#[tokio::test]
async fn a_token_is_issued_with_the_grants_usage_limits() {
    let d = direct().await;
    let (c, g) = d.challenge(&terms("50"));
    let token = d.responder.respond(&c, &g).await.unwrap();
    let seen = d.fake.seen_at(TOKENS);
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.field("payment_method"), Some(PM));
    assert_eq!(s.field("usage_limits[currency]"), Some("eur"));
    assert_eq!(s.field("usage_limits[max_amount]"), Some("50"));
    let expires = c.expires_at().unwrap();
    assert_eq!(
        s.field("usage_limits[expires_at]"),
        Some(expires.timestamp().to_string().as_str())
    );
    assert_eq!(
        s.field("seller_details[network_id]"),
        Some("profile_seller")
    );
    assert_eq!(s.form.len(), 5, "{:?}", s.form);
    assert_eq!(
        s.idempotency_key.as_deref(),
        Some(StripeSptResponder::key_for(&c).as_str())
    );
    assert_eq!(
        s.authorization.as_deref(),
        Some(format!("Bearer {API_KEY}").as_str())
    );
    assert_eq!(token.payload.str("spt"), Some("spt_test_0"));
    assert!(!token.reference.contains("spt_test_0"));

    // The same challenge again: the same token, nothing sent.
    let again = d.responder.respond(&c, &g).await.unwrap();
    assert_eq!(again.payload, token.payload);
    assert_eq!(d.fake.seen_at(TOKENS).len(), 1);
    // Another process: the same key, the issuer's same token.
    let other = StripeSptResponder::new(
        config(&d.fake.url),
        d.mem.vault.clone(),
        d.mem.clock.clone(),
    )
    .unwrap();
    let third = other.respond(&c, &g).await.unwrap();
    assert_eq!(third.payload, token.payload);
    let seen = d.fake.seen_at(TOKENS);
    assert_eq!(seen[1].idempotency_key, seen[0].idempotency_key);
    // Another challenge: another key.
    let (c2, g2) = d.challenge(&terms("50"));
    let t2 = d.responder.respond(&c2, &g2).await.unwrap();
    assert_ne!(t2.payload, token.payload);

    no_secret(&format!("{:?} {:?} {:?}", d.responder, token, g));
}

/// Each way a grant can be wider than its challenge, or stale, is refused before any request
/// is sent (naming the field): a larger amount, another currency, an expiry after the
/// challenge's, an expired grant, another seller, a challenge naming no seller, a grant of
/// another challenge, no payment credential; a credential that is not a payment method is
/// refused too; another method is not this responder's.
#[tokio::test]
async fn grants_wider_than_the_challenge_or_expired_issue_nothing() {
    let d = direct().await;
    let field = |r: Result<_, ResponderError>| match r {
        Err(ResponderError::Grant { field, .. }) => field,
        other => panic!("expected a grant refusal, got {other:?}"),
    };
    let (c, g) = d.challenge(&terms("50"));

    let mut wide = g.clone();
    wide.max_amount = eur("0.51");
    assert_eq!(field(d.responder.respond(&c, &wide).await), "max_amount");

    let mut usd = g.clone();
    usd.currency = Currency::USD;
    usd.max_amount = Money::parse("0.50", Currency::USD).unwrap();
    assert_eq!(field(d.responder.respond(&c, &usd).await), "currency");

    let mut late = g.clone();
    late.expires_at = c.expires_at().unwrap() + Duration::seconds(1);
    assert_eq!(field(d.responder.respond(&c, &late).await), "expires_at");

    let mut seller = g.clone();
    seller.network_id = Some("profile_other".into());
    assert_eq!(field(d.responder.respond(&c, &seller).await), "network_id");

    let mut nobody = g.clone();
    nobody.network_id = None;
    assert_eq!(field(d.responder.respond(&c, &nobody).await), "network_id");

    let (anon, anon_grant) = d.challenge(&terms_with("50", None));
    assert_eq!(
        field(d.responder.respond(&anon, &anon_grant).await),
        "network_id"
    );

    let (other, _) = d.challenge(&terms("50"));
    assert_eq!(field(d.responder.respond(&other, &g).await), "challenge_id");

    let mut none = g.clone();
    none.credential = None;
    assert_eq!(field(d.responder.respond(&c, &none).await), "credential");

    // Expired: the clock passes the grant's expiry.
    d.mem.clock.advance(Duration::minutes(6));
    assert_eq!(field(d.responder.respond(&c, &g).await), "expires_at");
    assert!(d.fake.seen().is_empty(), "nothing was asked of the issuer");

    // A credential that is not a payment method.
    let d = direct().await;
    let mut spt = card(&examples::agent().id, "spt_not_a_pm");
    spt.kind = CredentialKind::SharedPaymentToken;
    let r = d
        .mem
        .vault
        .store(&key("spt-cred"), spt)
        .await
        .unwrap()
        .credential
        .reference;
    let (c, mut g) = d.challenge(&terms("50"));
    g.credential = Some(r);
    assert!(matches!(
        d.responder.respond(&c, &g).await,
        Err(ResponderError::Refused { .. })
    ));
    // Another method.
    let mut t = terms("50");
    t.method = "tempo".into();
    let now = d.mem.clock.now();
    let tempo = issuer().issue(&t, None, now).unwrap();
    assert!(matches!(
        d.responder.respond(&tempo, &g).await,
        Err(ResponderError::Method { .. })
    ));
    assert!(d.fake.seen().is_empty());
}

/// The issuer's answers are classified as the Stripe adapter classifies them: a refusal
/// (4xx, a card error, 404) is definitive; a rate limit is transient; a 5xx, 408, 409, an
/// `idempotency_error`, an unreadable 2xx or a timeout after sending is ambiguous (a token may
/// exist); a connection refused is transient (nothing sent). No error carries the API key or
/// the payment method, even when the issuer's message echoes it.
#[tokio::test]
async fn issuer_errors_are_classified_and_redacted() {
    let d = direct().await;
    let cases: Vec<(Mode, &str)> = vec![
        (
            Mode::Status(
                400,
                r#"{"error":{"type":"invalid_request_error","message":"No such PaymentMethod: 'pm_card_visa_secret_42'"}}"#,
            ),
            "refused",
        ),
        (Mode::Status(401, "{}"), "refused"),
        (
            Mode::Status(
                402,
                r#"{"error":{"type":"card_error","code":"card_declined"}}"#,
            ),
            "refused",
        ),
        (Mode::Status(404, "{}"), "refused"),
        (Mode::Status(429, "{}"), "transient"),
        (Mode::Status(500, "{}"), "ambiguous"),
        (Mode::Status(502, "<html>bad gateway</html>"), "ambiguous"),
        (Mode::Status(503, ""), "ambiguous"),
        (Mode::Status(408, ""), "ambiguous"),
        (Mode::Status(409, "{}"), "ambiguous"),
        (
            Mode::Status(
                400,
                r#"{"error":{"type":"idempotency_error","message":"keys reused"}}"#,
            ),
            "ambiguous",
        ),
        (Mode::Status(200, "not json"), "ambiguous"),
        (Mode::Status(200, r#"{"id":""}"#), "ambiguous"),
        (Mode::Status(200, r#"{"object":"x"}"#), "ambiguous"),
        (Mode::Delay(StdDuration::from_secs(2)), "ambiguous"),
    ];
    for (mode, want) in cases {
        d.fake.set(mode.clone());
        let (c, g) = d.challenge(&terms("50"));
        let got = d.responder.respond(&c, &g).await;
        let class = match &got {
            Err(ResponderError::Refused { .. }) => "refused",
            Err(ResponderError::Transient { .. }) => "transient",
            Err(ResponderError::Ambiguous { .. }) => "ambiguous",
            other => panic!("{mode:?}: {other:?}"),
        };
        assert_eq!(class, want, "{mode:?}: {got:?}");
        let e = got.unwrap_err();
        no_secret(&format!("{e} {e:?}"));
    }
    // Nothing listening: not sent, transient.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let r =
        StripeSptResponder::new(config(&closed), d.mem.vault.clone(), d.mem.clock.clone()).unwrap();
    let (c, g) = d.challenge(&terms("50"));
    let e = r.respond(&c, &g).await.unwrap_err();
    assert!(matches!(e, ResponderError::Transient { .. }), "{e:?}");
    no_secret(&format!("{e} {e:?} {r:?}"));
}

// ---------------------------------------------------------------- the seller's adapter

fn spt_credential(token: &str) -> NewCredential {
    NewCredential {
        kind: CredentialKind::SharedPaymentToken,
        owner: examples::agent().id,
        buyer_id: examples::buyer(),
        secret: Secret::new(token),
        cvc: None,
        display: CredentialDisplay {
            brand: "spt".into(),
            last4: "0000".into(),
            exp_month: 12,
            exp_year: 2030,
            funding: FundingType::Unknown,
        },
    }
}

fn authorize(credential: agent_mandate::domain::CredentialRef) -> AuthorizeRequest {
    AuthorizeRequest {
        key: ProviderKey::new("spt-authorize-1").unwrap(),
        attempt_id: AttemptId::new("att_spt_1").unwrap(),
        amount: eur("0.50"),
        credential,
        capture: true,
        snapshot_id: SnapshotId::from_bytes([1; 32]),
        merchant_id: MerchantId::new(REALM).unwrap(),
        buyer_id: BuyerId::new("buyer_spt").unwrap(),
    }
}

/// With shared payment tokens on, the Stripe adapter charges an SPT credential as
/// `shared_payment_granted_token` (with automatic payment methods, no redirects), never as a
/// `payment_method`; with the option off (the default) it refuses the credential before
/// sending anything. A payment method credential is still sent as `payment_method`.
#[tokio::test]
async fn the_stripe_adapter_charges_a_shared_payment_token_when_configured() {
    let fake = fake_stripe().await;
    let mem = MemoryPorts::new(examples::now(), |_, _| {
        Arc::new(agent_mandate::testkit::FakePsp::new())
    });
    let spt = mem
        .vault
        .store(&key("spt"), spt_credential("spt_test_granted"))
        .await
        .unwrap()
        .credential
        .reference;
    let pm = mem
        .vault
        .store(&key("pm"), card(&examples::agent().id, PM))
        .await
        .unwrap()
        .credential
        .reference;

    let off = StripeProvider::new(config(&fake.url), mem.vault.clone(), mem.clock.clone()).unwrap();
    match off.authorize(&authorize(spt.clone())).await {
        Err(ProviderError::Invalid { message }) => {
            assert!(message.contains("with_shared_payment_tokens"), "{message}");
            assert!(!message.contains("spt_test_granted"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(fake.seen().is_empty(), "nothing sent");

    let on = StripeProvider::new(
        config(&fake.url).with_shared_payment_tokens(true),
        mem.vault.clone(),
        mem.clock.clone(),
    )
    .unwrap();
    let report = on.authorize(&authorize(spt)).await.unwrap();
    assert_eq!(report.captured, eur("0.50"));
    let s = &fake.seen_at(INTENTS)[0];
    assert_eq!(
        s.field("shared_payment_granted_token"),
        Some("spt_test_granted")
    );
    assert_eq!(s.field("automatic_payment_methods[enabled]"), Some("true"));
    assert_eq!(
        s.field("automatic_payment_methods[allow_redirects]"),
        Some("never")
    );
    assert_eq!(s.field("payment_method"), None);
    assert_eq!(s.field("payment_method_types[]"), None);
    assert_eq!(s.field("amount"), Some("50"));
    assert_eq!(s.field("currency"), Some("eur"));
    assert_eq!(s.field("confirm"), Some("true"));
    assert_eq!(s.idempotency_key.as_deref(), Some("spt-authorize-1"));

    let mut req = authorize(pm);
    req.key = ProviderKey::new("pm-authorize-1").unwrap();
    on.authorize(&req).await.unwrap();
    let s = &fake.seen_at(INTENTS)[1];
    assert_eq!(s.field("payment_method"), Some(PM));
    assert_eq!(s.field("shared_payment_granted_token"), None);
    assert!(!format!("{on:?}").contains(API_KEY));
}

// ---------------------------------------------------------------- end to end

fn paid_api_spec() -> agent_mandate::domain::MandateSpec {
    use agent_mandate::domain::{Budgets, CartBinding, MerchantScope, WindowLimit};
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.scope.merchants = MerchantScope::Single {
        merchant_id: REALM.parse().unwrap(),
    };
    spec.scope.mccs = Some(vec![agent_mandate::domain::Mcc::new("5817").unwrap()]);
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
    payer: Arc<EnginePayer>,
    mandate: agent_mandate::domain::Mandate,
}

async fn agent(stripe: &FakeStripe, spec: agent_mandate::domain::MandateSpec) -> Agent {
    let book = Arc::new(GrantBook::new());
    let b = book.clone();
    let url = stripe.url.clone();
    let mem = MemoryPorts::new(examples::now(), move |vault, clock| {
        let responder = StripeSptResponder::new(config(&url), vault, clock).unwrap();
        Arc::new(ResponderProvider::new(Arc::new(responder), b))
    });
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).unwrap();
    let mandate = engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("paid-api-mandate"), spec),
        )
        .await
        .unwrap()
        .value;
    let card = engine
        .store_credential(&buyer_p(), &key("card"), card(&examples::agent().id, PM))
        .await
        .unwrap()
        .value
        .reference;
    let payer = Arc::new(EnginePayer::new(
        engine,
        PayerIdentity::of(agent_p(), &mandate, card),
        ctx(),
        AssetRegistry::new(),
        book,
        "stripe",
    ));
    Agent {
        mem,
        payer,
        mandate,
    }
}

/// Through the engine: the token's expiry is the mandate's when the mandate ends before the
/// challenge; a challenge above the per-call cap is refused by the mandate and no token is
/// asked for; paying the same challenge twice asks for one token; an ambiguous issuance keeps
/// the payment unpaid (no credential handed out) and the hold in place.
#[tokio::test]
async fn through_the_engine_no_token_is_wider_than_the_mandate() {
    let stripe = fake_stripe().await;
    let mut spec = paid_api_spec();
    spec.scope.validity.expires_at = examples::now() + Duration::minutes(2);
    let a = agent(&stripe, spec).await;
    let now = a.mem.clock.now();
    let c = issuer().issue(&terms("75"), None, now).unwrap();
    let offer = c
        .offer(&["stripe"], &AssetRegistry::new(), URL, now)
        .unwrap();
    let first = a.payer.pay(&c, &offer).await.unwrap();
    let seen = stripe.seen_at(TOKENS);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].field("usage_limits[expires_at]"),
        Some(
            (examples::now() + Duration::minutes(2))
                .timestamp()
                .to_string()
                .as_str()
        ),
        "the mandate ends first"
    );
    assert_eq!(seen[0].field("usage_limits[max_amount]"), Some("75"));
    assert_eq!(first.payload.str("spt"), Some("spt_test_0"));
    let again = a.payer.pay(&c, &offer).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(stripe.seen_at(TOKENS).len(), 1, "one token per challenge");

    let big = issuer().issue(&terms("101"), None, now).unwrap();
    let offer = big
        .offer(&["stripe"], &AssetRegistry::new(), URL, now)
        .unwrap();
    match a.payer.pay(&big, &offer).await {
        Err(PayError::Refused { codes, .. }) => assert!(
            codes.contains(&BlockerCode::TransactionLimitExceeded),
            "{codes:?}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(stripe.seen_at(TOKENS).len(), 1, "no token for a refusal");

    stripe.set(Mode::Status(502, ""));
    let c = issuer().issue(&terms("20"), None, now).unwrap();
    let offer = c
        .offer(&["stripe"], &AssetRegistry::new(), URL, now)
        .unwrap();
    match a.payer.pay(&c, &offer).await {
        Err(PayError::NotPaid { reason }) => no_secret(&reason),
        other => panic!("expected not paid, got {other:?}"),
    }
    let usage = a
        .mem
        .ports
        .store
        .usage(std::slice::from_ref(&a.mandate), a.mem.clock.now())
        .await
        .unwrap();
    assert_eq!(
        usage[0].held,
        eur("0.20"),
        "the ambiguous issuance keeps its hold"
    );
    assert_eq!(usage[0].spent, eur("0.75"));
}

/// Agent and seller over HTTP, both on the fake Stripe: the agent issues a token for the
/// challenge, the seller charges it as `shared_payment_granted_token` for exactly the
/// challenge's amount, the answer carries the receipt naming the seller's PaymentIntent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_pays_a_seller_with_a_shared_payment_token() {
    let stripe = fake_stripe().await;
    // The seller.
    let url = stripe.url.clone();
    let mem = MemoryPorts::new(examples::now(), move |vault, clock| {
        Arc::new(
            StripeProvider::new(config(&url).with_shared_payment_tokens(true), vault, clock)
                .unwrap(),
        )
    });
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).unwrap();
    let settler = EngineSettler::new(
        engine,
        seller_actor("seller_api").unwrap(),
        REALM.parse().unwrap(),
        ctx(),
        "/v1/answer",
        Duration::minutes(5),
    );
    let gate = PaymentGate::new(
        Arc::new(issuer()),
        terms("60"),
        Arc::new(settler),
        mem.clock.clone(),
    );
    let app = Router::new()
        .route("/v1/answer", get(|| async { "42" }))
        .route_layer(axum::middleware::from_fn_with_state(gate, payment_gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let seller_url = format!("http://{}/v1/answer", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let a = agent(&stripe, paid_api_spec()).await;
    let client = PaidClient::new(
        agent_mandate::adapters::http::client_builder()
            .unwrap()
            .build()
            .unwrap(),
        a.payer.clone(),
        a.mem.clock.clone(),
    )
    // The seller listens on 127.0.0.1 and calls itself api.example.com: the host binds it.
    .with_bound_realm(&seller_url, REALM);
    let r = client
        .send(
            agent_mandate::adapters::http::client_builder()
                .unwrap()
                .build()
                .unwrap()
                .get(&seller_url)
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"42");
    let receipt = r.receipt.unwrap();
    assert_eq!(receipt.reference, "pi_test_1");
    let token = &stripe.seen_at(TOKENS)[0];
    assert_eq!(token.field("usage_limits[max_amount]"), Some("60"));
    assert_eq!(
        token.field("seller_details[network_id]"),
        Some("profile_seller")
    );
    let charge = &stripe.seen_at(INTENTS)[0];
    assert_eq!(
        charge.field("shared_payment_granted_token"),
        Some("spt_test_0")
    );
    assert_eq!(charge.field("amount"), Some("60"));
    assert_eq!(charge.field("payment_method"), None);
    assert_eq!(a.payer.methods(), vec!["stripe".to_owned()]);
}
