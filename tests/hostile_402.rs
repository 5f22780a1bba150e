//! A hostile review of the 402 payment paths (the `Payment` scheme and x402), on both sides:
//! peers slower than the deadlines, answers that lie or come twice, grants wider than
//! challenge and mandate, identities a peer merely asserts, oversized and ambiguous input,
//! replay. Each test states the correct behaviour; a test the code does not meet yet is
//! `#[ignore = "open: ..."]` and says what is wrong.
#![cfg(all(
    feature = "mpp",
    feature = "x402",
    feature = "http",
    feature = "axum",
    feature = "testkit"
))]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Duration;

use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{
    examples, Budgets, CartBinding, Currency, Mandate, MandateSpec, Mcc, MerchantScope, Money,
    WindowLimit,
};
use agent_mandate::engine::{CreateMandate, Engine, EngineConfig};
use agent_mandate::ports::Clock;
use agent_mandate::protocols::mpp::{
    payment_gate, seller_actor, BindingSecret, Challenge, ChallengeIssuer, ChallengeResponder,
    ChargeRequest, ChargeTerms, ClientError, Credential, EnginePayer, EngineSettler,
    FixedTokenResponder, Grant, GrantBook, IssuedToken, PaidClient, Payer, PayerIdentity,
    PaymentGate, ResponderError, ResponderProvider,
};
use agent_mandate::protocols::x402::{
    FixedX402Signer, PaymentRequired, PaymentRequirements, ResourceInfo, SettlementResponse,
    SignerProvider, X402Book, X402Client, X402ClientError, X402Payer,
};
use agent_mandate::protocols::{AssetRegistry, ChargeContext, WireError};
use agent_mandate::testkit::FakePsp;

use common::engine::{card, eur, key};
use common::principals::{agent_p, buyer_p};

const REALM: &str = "api.example.com";
const NETWORK: &str = "eip155:84532";
const USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const FROM: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";

fn ctx() -> ChargeContext {
    ChargeContext {
        mcc: Mcc::new("5817").unwrap(),
        region: None,
        default_ttl: Duration::minutes(5),
    }
}

fn usd(a: &str) -> Money {
    Money::parse(a, Currency::USD).unwrap()
}

/// At most `per_call` per call and 5.00 per day at `merchant`, in `currency`.
fn spec(merchant: &str, currency: Currency) -> MandateSpec {
    let m = |a: &str| Money::parse(a, currency).unwrap();
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.scope.merchants = MerchantScope::Single {
        merchant_id: merchant.parse().unwrap(),
    };
    spec.scope.mccs = Some(vec![Mcc::new("5817").unwrap()]);
    spec.scope.cart = CartBinding::Open {
        allowed_skus: None,
        max_line_items: Some(1),
    };
    spec.scope.currency.currency = currency;
    spec.scope.amount.max_amount = m("1.00");
    spec.scope.amount.max_payment_attempts = None;
    spec.scope.budgets = Budgets {
        per_transaction: Some(m("1.00")),
        windows: vec![WindowLimit {
            window_seconds: 86_400,
            max_amount: Some(m("5.00")),
            max_count: None,
        }],
        lifetime: None,
    };
    spec.scope.max_uses = None;
    // A mandate valid for a month: long past any single call.
    spec.scope.validity.expires_at = examples::now() + Duration::days(30);
    spec
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn host_of(url: &str) -> String {
    url.split('/').nth(2).unwrap().to_owned()
}

// ---------------------------------------------------------------- the MPP agent

struct MppAgent {
    mem: MemoryPorts,
    payer: Arc<EnginePayer>,
    responder: Arc<FixedTokenResponder>,
    mandate: Mandate,
}

/// A responder slower than any deadline: it answers after `delay`, then as `inner`.
#[derive(Debug)]
struct SlowResponder {
    inner: Arc<FixedTokenResponder>,
    delay: std::time::Duration,
}

#[async_trait]
impl ChallengeResponder for SlowResponder {
    fn method(&self) -> &str {
        "stripe"
    }
    async fn respond(
        &self,
        challenge: &Challenge,
        grant: &Grant,
    ) -> Result<IssuedToken, ResponderError> {
        tokio::time::sleep(self.delay).await;
        self.inner.respond(challenge, grant).await
    }
}

async fn mpp_agent_with(merchant: &str, delay: Option<std::time::Duration>) -> MppAgent {
    let book = Arc::new(GrantBook::new());
    let responder = Arc::new(FixedTokenResponder::new("stripe", "pm_card_visa"));
    let port: Arc<dyn ChallengeResponder> = match delay {
        None => responder.clone(),
        Some(delay) => Arc::new(SlowResponder {
            inner: responder.clone(),
            delay,
        }),
    };
    let b = book.clone();
    let mem = MemoryPorts::new(examples::now(), move |_, _| {
        Arc::new(ResponderProvider::new(port, b))
    });
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).unwrap();
    let mandate = engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("hostile-mandate"), spec(merchant, Currency::EUR)),
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
    MppAgent {
        mem,
        payer,
        responder,
        mandate,
    }
}

async fn mpp_agent(merchant: &str) -> MppAgent {
    mpp_agent_with(merchant, None).await
}

/// `client` sends a GET of `url`.
async fn send_with(
    client: PaidClient,
    url: &str,
) -> Result<agent_mandate::protocols::mpp::PaidResponse, ClientError> {
    client
        .send(
            agent_mandate::adapters::http::client_builder()
                .unwrap()
                .build()
                .unwrap()
                .get(url)
                .build()
                .unwrap(),
        )
        .await
}

impl MppAgent {
    fn client(&self) -> PaidClient {
        PaidClient::new(
            agent_mandate::adapters::http::client_builder()
                .unwrap()
                .build()
                .unwrap(),
            self.payer.clone(),
            self.mem.clock.clone(),
        )
    }
    async fn get(
        &self,
        url: &str,
    ) -> Result<agent_mandate::protocols::mpp::PaidResponse, ClientError> {
        send_with(self.client(), url).await
    }
    /// As `get`, with the host binding `REALM` to the origin of `url` (a seller known by a
    /// name other than its address: the challenge must name exactly that realm).
    async fn get_bound(
        &self,
        url: &str,
    ) -> Result<agent_mandate::protocols::mpp::PaidResponse, ClientError> {
        send_with(self.client().with_bound_realm(url, REALM), url).await
    }
    async fn attempts(&self) -> usize {
        self.mem
            .ports
            .store
            .usage(std::slice::from_ref(&self.mandate), self.mem.clock.now())
            .await
            .unwrap()
            .remove(0)
            .attempts as usize
    }
}

fn issuer_for(realm: &str) -> ChallengeIssuer {
    ChallengeIssuer::new(
        realm,
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

fn challenge_402(issuer: &ChallengeIssuer, amount: &str) -> Response {
    let c = issuer.issue(&terms(amount), None, examples::now()).unwrap();
    let mut resp = (StatusCode::PAYMENT_REQUIRED, "{}").into_response();
    resp.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_str(&c.to_header().unwrap()).unwrap(),
    );
    resp
}

/// A seller of `realm` that asks 0.50 EUR without a credential and serves `42` with one (it
/// checks nothing: the agent's side is under test).
async fn mpp_naive_seller(realm: &str) -> String {
    let issuer = Arc::new(issuer_for(realm));
    let app = Router::new()
        .route(
            "/v1/answer",
            get(
                |State(issuer): State<Arc<ChallengeIssuer>>, headers: HeaderMap| async move {
                    if headers.contains_key("authorization") {
                        (StatusCode::OK, "42").into_response()
                    } else {
                        challenge_402(&issuer, "50")
                    }
                },
            ),
        )
        .with_state(issuer);
    format!("{}/v1/answer", serve(app).await)
}

// ---------------------------------------------------------------- MPP: identities

/// A seller at one host names another merchant's realm (one the mandate allows) and its own
/// Stripe profile: the mandate's merchant scope would be checked against a name the peer
/// merely asserted, and the token would go to the asserting seller. The merchant of a
/// payment must be the origin the agent actually reached (or a realm the host has bound to
/// that origin), so nothing is paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_a_realm_naming_another_host_is_not_paid() {
    // The seller really is 127.0.0.1:port; it claims to be api.example.com.
    let url = mpp_naive_seller(REALM).await;
    let a = mpp_agent(REALM).await;
    let r = a.get(&url).await;
    assert!(r.is_err(), "paid a realm the peer asserted: {r:?}");
    assert!(a.responder.grants().is_empty(), "a token was issued");
    assert_eq!(a.attempts().await, 0);
}

/// Guard: a seller whose realm is its own origin is paid (the honest case of the test
/// above; proves the setup can pay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_a_realm_that_is_the_requested_host_is_paid() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    drop(listener);
    // Re-bind a server whose realm is its own host:port.
    let issuer = Arc::new(issuer_for(&host));
    let app = Router::new()
        .route(
            "/v1/answer",
            get(
                |State(issuer): State<Arc<ChallengeIssuer>>, headers: HeaderMap| async move {
                    if headers.contains_key("authorization") {
                        (StatusCode::OK, "42").into_response()
                    } else {
                        challenge_402(&issuer, "50")
                    }
                },
            ),
        )
        .with_state(issuer);
    let listener = tokio::net::TcpListener::bind(&host).await.unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let a = mpp_agent(&host).await;
    let r = a.get(&format!("http://{host}/v1/answer")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(a.responder.grants().len(), 1);
}

/// After paying, the seller answers the retry with a redirect to another origin: the paid
/// request follows no redirect, so the credential (`Authorization`) goes nowhere else (the
/// other origin is not even asked), and the answer is a typed rejection, paid once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_the_credential_does_not_follow_a_redirect_to_another_origin() {
    let (thief, seen) = thief().await;
    let issuer = Arc::new(issuer_for(REALM));
    let app = Router::new()
        .route(
            "/v1/answer",
            get(
                |State((issuer, thief)): State<(Arc<ChallengeIssuer>, String)>,
                 headers: HeaderMap| async move {
                    if headers.contains_key("authorization") {
                        (
                            StatusCode::TEMPORARY_REDIRECT,
                            [("location", format!("{thief}/steal"))],
                        )
                            .into_response()
                    } else {
                        challenge_402(&issuer, "50")
                    }
                },
            ),
        )
        .with_state((issuer, thief));
    let url = format!("{}/v1/answer", serve(app).await);
    let a = mpp_agent(REALM).await;
    let r = a.get_bound(&url).await;
    assert!(
        matches!(r, Err(ClientError::Redirected { status: 307 })),
        "{r:?}"
    );
    assert_eq!(a.responder.grants().len(), 1, "the setup did not pay");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|h| !h.contains_key("authorization")),
        "the credential reached another origin"
    );
    assert!(seen.is_empty(), "the paid request followed a redirect");
}

/// Guard of the realm binding: a realm the host bound to the origin is paid there; the same
/// realm from an origin it is not bound to is not (nothing is issued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_a_realm_the_host_bound_to_the_origin_is_paid_only_there() {
    let url = mpp_naive_seller(REALM).await;
    let other = mpp_naive_seller(REALM).await;
    let a = mpp_agent(REALM).await;
    let r = send_with(a.client().with_bound_realm(&other, REALM), &url).await;
    assert!(
        matches!(&r, Err(ClientError::NoPayableChallenge { refused })
            if matches!(refused[..], [agent_mandate::protocols::OfferError::OriginMismatch { field: "realm", .. }])),
        "{r:?}"
    );
    assert!(a.responder.grants().is_empty());
    let r = a.get_bound(&url).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(a.responder.grants().len(), 1);
}

/// Another origin that records the headers of every request it gets.
async fn thief() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/steal",
            get(
                |State(seen): State<Arc<Mutex<Vec<HeaderMap>>>>, headers: HeaderMap| async move {
                    seen.lock().unwrap().push(headers);
                    (StatusCode::OK, "thanks")
                },
            ),
        )
        .with_state(seen.clone());
    (serve(app).await, seen)
}

// ---------------------------------------------------------------- MPP: answers that lie

/// The seller answers the paid retry with another 402 and a fresh challenge: the client
/// reports the refusal and pays nothing more (one token, one payment).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_a_retry_answered_by_another_402_is_paid_once() {
    let issuer = Arc::new(issuer_for(REALM));
    let app = Router::new()
        .route(
            "/v1/answer",
            get(|State(issuer): State<Arc<ChallengeIssuer>>| async move {
                challenge_402(&issuer, "50")
            }),
        )
        .with_state(issuer);
    let url = format!("{}/v1/answer", serve(app).await);
    let a = mpp_agent(REALM).await;
    let r = a.get_bound(&url).await;
    assert!(
        matches!(r, Err(ClientError::Rejected { status: 402, .. })),
        "{r:?}"
    );
    assert_eq!(a.responder.grants().len(), 1);
    assert_eq!(a.attempts().await, 1);
}

// ---------------------------------------------------------------- MPP: replay and races

/// The same challenge paid by two tasks at once: one token, one payment; every credential
/// handed out is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_the_same_challenge_paid_by_two_tasks_at_once_is_one_payment() {
    let a = mpp_agent(REALM).await;
    let c = issuer_for(REALM)
        .issue(&terms("50"), None, examples::now())
        .unwrap();
    let offer = c
        .offer(
            &["stripe"],
            &AssetRegistry::new(),
            "https://api.example.com/v1/answer",
            examples::now(),
        )
        .unwrap();
    let (p1, p2) = (a.payer.clone(), a.payer.clone());
    let (c1, c2, o1, o2) = (c.clone(), c.clone(), offer.clone(), offer.clone());
    let t1 = tokio::spawn(async move { p1.pay(&c1, &o1).await });
    let t2 = tokio::spawn(async move { p2.pay(&c2, &o2).await });
    let (r1, r2) = (t1.await.unwrap(), t2.await.unwrap());
    let creds: Vec<String> = [&r1, &r2]
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|c| c.to_header().unwrap()))
        .collect();
    assert!(!creds.is_empty(), "neither task paid: {r1:?} {r2:?}");
    assert!(creds.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        a.responder.grants().len(),
        1,
        "a second token was asked for"
    );
    assert_eq!(a.attempts().await, 1);
    // And a third, later: a replay, the same credential.
    let again = a.payer.pay(&c, &offer).await.unwrap().to_header().unwrap();
    assert_eq!(again, creds[0]);
    assert_eq!(a.responder.grants().len(), 1);
}

/// A seller reuses a paid challenge's id (and realm) with other terms (a larger amount): the
/// agent never issues a second token nor one for the larger amount; at most it hands back
/// the credential of the payment already made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_a_challenge_id_reused_with_other_terms_is_never_a_second_payment() {
    let a = mpp_agent(REALM).await;
    let now = examples::now();
    let url = "https://api.example.com/v1/answer";
    let issuer = issuer_for(REALM);
    let first = issuer.issue(&terms("50"), None, now).unwrap();
    let paid = a
        .payer
        .pay(
            &first,
            &first
                .offer(&["stripe"], &AssetRegistry::new(), url, now)
                .unwrap(),
        )
        .await
        .unwrap()
        .to_header()
        .unwrap();
    let dearer = issuer.issue(&terms("90"), None, now).unwrap();
    let header = first
        .to_header()
        .unwrap()
        .replace(first.request_wire(), dearer.request_wire());
    let forged = Challenge::parse(&header).unwrap();
    assert_eq!(forged.id(), first.id());
    let offer = forged
        .offer(&["stripe"], &AssetRegistry::new(), url, now)
        .unwrap();
    assert_eq!(offer.amount, eur("0.90"));
    let r = a.payer.pay(&forged, &offer).await;
    if let Ok(c) = &r {
        assert_eq!(
            c.payload.str("spt"),
            Some("pm_card_visa"),
            "a new token for a reused id"
        );
    }
    assert!(!paid.is_empty());
    let grants = a.responder.grants();
    assert_eq!(grants.len(), 1, "a second token: {grants:?}");
    assert_eq!(grants[0].max_amount, eur("0.50"));
    assert_eq!(a.attempts().await, 1);
}

// ---------------------------------------------------------------- MPP: grants

/// A challenge without `expires` (the scheme allows it): the token's expiry must not be the
/// mandate's (months away) but at most the payment's own snapshot validity (the host's
/// default TTL): a seller holding the token must not be able to charge it long after the
/// call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_a_grant_for_a_challenge_without_expiry_lives_no_longer_than_its_snapshot() {
    let a = mpp_agent(REALM).await;
    let now = examples::now();
    let mandate_expires = a.mandate.spec().scope.validity.expires_at;
    assert!(
        mandate_expires > now + Duration::days(1),
        "test needs a long mandate"
    );
    let issued = issuer_for(REALM).issue(&terms("50"), None, now).unwrap();
    // The same challenge without `expires` (an agent only reads it; the binding is the
    // seller's business).
    let header = issued.to_header().unwrap();
    let start = header.find(", expires=").unwrap();
    let end = start + header[start + 2..].find(", ").unwrap() + 2;
    let header = format!("{}{}", &header[..start], &header[end..]);
    let c = Challenge::parse(&header).unwrap();
    assert!(c.expires_at().is_none());
    let offer = c
        .offer(
            &["stripe"],
            &AssetRegistry::new(),
            "https://api.example.com/v1/answer",
            now,
        )
        .unwrap();
    a.payer.pay(&c, &offer).await.unwrap();
    let g = a.responder.grants().remove(0);
    assert!(
        g.expires_at <= now + ctx().default_ttl,
        "the token lives until {} (the mandate's expiry), not the call's {}",
        g.expires_at,
        now + ctx().default_ttl
    );
}

/// A peer slower than the payment provider's deadline (the token issuer answers after the
/// engine's budget for the call is gone): the provider must give up within its own
/// `deadline()` (the engine's lease arithmetic, I13, counts on it) and report the outcome as
/// unknown, not hold the command past its lease and then report success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_a_token_issuer_slower_than_the_deadline_is_cut_off_at_the_deadline() {
    let a = mpp_agent_with(REALM, Some(std::time::Duration::from_secs(15))).await;
    let c = issuer_for(REALM)
        .issue(&terms("50"), None, examples::now())
        .unwrap();
    let offer = c
        .offer(
            &["stripe"],
            &AssetRegistry::new(),
            "https://api.example.com/v1/answer",
            examples::now(),
        )
        .unwrap();
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(std::time::Duration::from_secs(12), a.payer.pay(&c, &offer)).await;
    let elapsed = started.elapsed();
    let r = r.unwrap_or_else(|_| panic!("still waiting after {elapsed:?}: past the 10 s deadline"));
    assert!(r.is_err(), "a late token was taken as paid: {r:?}");
}

// ---------------------------------------------------------------- MPP: bad numbers and input

/// Amounts that are not one plain positive count of base units are refused before anything
/// is decided.
#[test]
fn mpp_amounts_that_are_not_plain_positive_base_units_are_refused() {
    let now = examples::now();
    let issuer = issuer_for(REALM);
    for bad in [
        "0",
        "00",
        "-1",
        "-0",
        "+1",
        "01",
        "1.0",
        "1,00",
        " 1",
        "1 ",
        "1e2",
        "0x10",
        "\u{0661}",
        "١٠",
        "",
        "99999999999999999999999999999999999999",
        "340282366920938463463374607431768211456",
        "999999999999999999999999999999999999999999",
    ] {
        let Ok(c) = issuer.issue(&terms(bad), None, now) else {
            continue; // not even issuable: fine
        };
        let c = Challenge::parse(&c.to_header().unwrap()).unwrap();
        let r = c.offer(
            &["stripe"],
            &AssetRegistry::new(),
            "https://api.example.com/x",
            now,
        );
        assert!(r.is_err(), "amount {bad:?} was read as {r:?}");
    }
    // Currencies: unknown, look-alike, or an unregistered asset.
    for (currency, amount) in [
        ("eu", "50"),
        ("euro", "50"),
        ("XXX", "50"),
        ("usdc", "50"),
        ("e\u{0443}r", "50"),
    ] {
        let mut t = terms(amount);
        t.request.currency = currency.into();
        let Ok(c) = issuer.issue(&t, None, now) else {
            continue;
        };
        let r = c.offer(
            &["stripe"],
            &AssetRegistry::new(),
            "https://api.example.com/x",
            now,
        );
        assert!(r.is_err(), "currency {currency:?} was read as {r:?}");
    }
    // JPY has no minor unit: 50 yen are 50, never 0.50.
    let mut t = terms("50");
    t.request.currency = "jpy".into();
    let c = issuer.issue(&t, None, now).unwrap();
    let o = c
        .offer(
            &["stripe"],
            &AssetRegistry::new(),
            "https://api.example.com/x",
            now,
        )
        .unwrap();
    assert_eq!(o.amount, Money::parse("50", Currency::JPY).unwrap());
}

/// Oversized and ambiguous headers are typed errors: too many challenges (in one value or
/// across values), a value past the size limit, duplicate parameters (also in another case),
/// a `Payment` scheme spelled in another case is still one scheme.
#[test]
fn mpp_oversized_and_ambiguous_challenge_headers_are_typed_errors() {
    let now = examples::now();
    let one = issuer_for(REALM)
        .issue(&terms("50"), None, now)
        .unwrap()
        .to_header()
        .unwrap();
    // 17 challenges in one value, and 17 values of one.
    let many = vec![one.as_str(); 17].join(", ");
    assert!(Challenge::parse_all([many.as_str()]).is_err());
    assert!(Challenge::parse_all(vec![one.as_str(); 17]).is_err());
    // 10,000 values: refused without reading them all into challenges.
    assert!(Challenge::parse_all(vec![one.as_str(); 10_000]).is_err());
    // A value past 16 KiB.
    let huge = format!("{one}, description=\"{}\"", "a".repeat(20_000));
    assert!(matches!(
        Challenge::parse(&huge),
        Err(WireError::TooLarge { .. })
    ));
    // Duplicate parameters, also in another case.
    let dup = format!("{one}, id=\"other\"");
    assert!(Challenge::parse(&dup).is_err());
    let dup_case = format!("{one}, ID=\"other\"");
    assert!(Challenge::parse(&dup_case).is_err());
    let dup_realm = format!("{one}, Realm=\"evil.example\"");
    assert!(Challenge::parse(&dup_realm).is_err());
    // Two Payment challenges where one is expected, one spelled PAYMENT.
    let two = format!("{one}, {}", one.replacen("Payment", "PAYMENT", 1));
    assert!(Challenge::parse(&two).is_err());
    assert_eq!(Challenge::parse_all([two.as_str()]).unwrap().len(), 2);
}

/// Over HTTP: a 402 with thousands of `WWW-Authenticate` values is refused and nothing is
/// paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpp_a_402_with_thousands_of_challenges_pays_nothing() {
    let issuer = Arc::new(issuer_for(REALM));
    let app = Router::new()
        .route(
            "/v1/answer",
            get(|State(issuer): State<Arc<ChallengeIssuer>>| async move {
                let mut resp = (StatusCode::PAYMENT_REQUIRED, "{}").into_response();
                let c = issuer.issue(&terms("50"), None, examples::now()).unwrap();
                let v = HeaderValue::from_str(&c.to_header().unwrap()).unwrap();
                for _ in 0..2_000 {
                    resp.headers_mut().append("www-authenticate", v.clone());
                }
                resp
            }),
        )
        .with_state(issuer);
    let url = format!("{}/v1/answer", serve(app).await);
    let a = mpp_agent(REALM).await;
    let r = a.get_bound(&url).await;
    assert!(r.is_err(), "{r:?}");
    assert!(a.responder.grants().is_empty());
}

// ---------------------------------------------------------------- MPP: the seller

struct Shop {
    psp: Arc<FakePsp>,
    url: String,
    served: Arc<AtomicU32>,
}

/// One seller (one engine, store and issuer) with two routes priced apart: `/cheap` at 0.10
/// and `/dear` at 0.50 EUR; `served` counts the handler runs.
async fn shop() -> Shop {
    let mut slot = None;
    let mem = MemoryPorts::new(examples::now(), |vault, clock| {
        let psp = Arc::new(FakePsp::with_vault_and_clock(vault, clock));
        slot = Some(psp.clone());
        psp
    });
    let psp = slot.unwrap();
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).unwrap();
    let issuer = Arc::new(issuer_for(REALM));
    let gate = |resource: &str, price: &str| {
        let settler = EngineSettler::new(
            engine.clone(),
            seller_actor("seller_api").unwrap(),
            REALM.parse().unwrap(),
            ctx(),
            resource,
            Duration::minutes(5),
        );
        PaymentGate::new(
            issuer.clone(),
            terms(price),
            Arc::new(settler),
            mem.clock.clone(),
        )
    };
    let served = Arc::new(AtomicU32::new(0));
    let (s1, s2) = (served.clone(), served.clone());
    let cheap = Router::new()
        .route(
            "/cheap",
            get(move || async move {
                s1.fetch_add(1, Ordering::SeqCst);
                "cheap"
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            gate("/cheap", "10"),
            payment_gate,
        ));
    let dear = Router::new()
        .route(
            "/dear",
            get(move || async move {
                s2.fetch_add(1, Ordering::SeqCst);
                "dear"
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            gate("/dear", "50"),
            payment_gate,
        ));
    let url = serve(cheap.merge(dear)).await;
    Shop { psp, url, served }
}

fn credential_for(amount: &str, spt: &str) -> String {
    let c = issuer_for(REALM)
        .issue(&terms(amount), None, examples::now())
        .unwrap();
    let mut m = serde_json::Map::new();
    m.insert("spt".into(), spt.into());
    Credential::new(&c, agent_mandate::protocols::mpp::Payload::new(m), None)
        .to_header()
        .unwrap()
}

async fn send(url: &str, auth: &str) -> reqwest::Response {
    agent_mandate::adapters::http::client_builder()
        .unwrap()
        .build()
        .unwrap()
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
}

/// The same credential presented twice: one charge, and the resource is served once (the
/// charge intent: "Servers MUST NOT accept the same credential twice"; the card method: a
/// replay gets the cached answer, the handler does not run again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_a_replayed_credential_is_served_once() {
    let s = shop().await;
    let cred = credential_for("50", "pm_card_visa");
    assert_eq!(send(&format!("{}/dear", s.url), &cred).await.status(), 200);
    let _ = send(&format!("{}/dear", s.url), &cred).await;
    let _ = send(&format!("{}/dear", s.url), &cred).await;
    assert_eq!(s.psp.total_captured(Currency::EUR), 50);
    assert_eq!(s.served.load(Ordering::SeqCst), 1, "served a replay again");
}

/// The same credential presented by two clients at once: exactly one charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_the_same_credential_presented_concurrently_is_one_charge() {
    let s = shop().await;
    let cred = credential_for("50", "pm_card_visa");
    let url = format!("{}/dear", s.url);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, cred) = (url.clone(), cred.clone());
        tasks.push(tokio::spawn(
            async move { send(&url, &cred).await.status() },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert!(ok >= 1);
    assert_eq!(s.psp.total_captured(Currency::EUR), 50);
}

/// Two credentials for one challenge (another token for a used id) presented at once:
/// exactly one is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_two_credentials_for_one_challenge_at_once_are_one_charge() {
    let s = shop().await;
    let c = issuer_for(REALM)
        .issue(&terms("50"), None, examples::now())
        .unwrap();
    let url = format!("{}/dear", s.url);
    let mut tasks = Vec::new();
    for spt in [
        "pm_card_visa",
        "pm_card_mastercard",
        "pm_card_amex",
        "pm_card_visa_debit",
    ] {
        let mut m = serde_json::Map::new();
        m.insert("spt".into(), spt.into());
        let cred = Credential::new(&c, agent_mandate::protocols::mpp::Payload::new(m), None)
            .to_header()
            .unwrap();
        let url = url.clone();
        tasks.push(tokio::spawn(
            async move { send(&url, &cred).await.status() },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(s.psp.total_captured(Currency::EUR), 50);
    assert_eq!(s.served.load(Ordering::SeqCst), 1);
}

/// A credential for the cheap route's challenge presented on the dear route is refused
/// (payment-insufficient) and charges nothing; presented then on its own route it still
/// pays (the refusal did not burn it), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_a_credential_priced_for_another_route_is_refused_without_a_charge() {
    let s = shop().await;
    let cred = credential_for("10", "pm_card_visa");
    let r = send(&format!("{}/dear", s.url), &cred).await;
    assert_eq!(r.status(), 402);
    let p: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        p["type"],
        "https://paymentauth.org/problems/payment-insufficient"
    );
    assert_eq!(s.psp.total_captured(Currency::EUR), 0);
    assert_eq!(s.served.load(Ordering::SeqCst), 0);
    assert_eq!(send(&format!("{}/cheap", s.url), &cred).await.status(), 200);
    assert_eq!(s.psp.total_captured(Currency::EUR), 10);
    // The dear route's credential on the cheap route: more than asked is not "close enough".
    let dear = credential_for("50", "pm_card_mastercard");
    assert_eq!(send(&format!("{}/cheap", s.url), &dear).await.status(), 402);
    assert_eq!(s.psp.total_captured(Currency::EUR), 10);
}

/// A credential for a challenge another seller (another realm, another secret) issued is
/// refused here, charging nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_a_credential_for_another_realms_challenge_is_refused() {
    let s = shop().await;
    let other = ChallengeIssuer::new(
        "evil.example",
        BindingSecret::new(b"another secret of thirty-two byte".to_vec()).unwrap(),
        Duration::minutes(5),
    )
    .unwrap()
    .issue(&terms("50"), None, examples::now())
    .unwrap();
    let mut m = serde_json::Map::new();
    m.insert("spt".into(), "pm_card_visa".into());
    let cred = Credential::new(&other, agent_mandate::protocols::mpp::Payload::new(m), None)
        .to_header()
        .unwrap();
    assert_eq!(send(&format!("{}/dear", s.url), &cred).await.status(), 402);
    assert_eq!(s.psp.total_captured(Currency::EUR), 0);
}

// ---------------------------------------------------------------- x402: the agent

struct X402Agent {
    signer: Arc<FixedX402Signer>,
    payer: Arc<X402Payer>,
    client: X402Client,
}

fn assets() -> AssetRegistry {
    let mut a = AssetRegistry::new();
    a.register(NETWORK, USDC, Currency::USD, 6).unwrap();
    a
}

async fn x402_agent(merchant: &str) -> X402Agent {
    let book = Arc::new(X402Book::new());
    let signer = Arc::new(FixedX402Signer::new(FROM, &[NETWORK]));
    let (s, b) = (signer.clone(), book.clone());
    let mem = MemoryPorts::new(examples::now(), move |_, clock| {
        Arc::new(SignerProvider::new(s, b, clock))
    });
    let engine = Engine::new(mem.ports.clone(), EngineConfig::default()).unwrap();
    let mandate = engine
        .create_mandate(
            &buyer_p(),
            &CreateMandate::new(key("x402-mandate"), spec(merchant, Currency::USD)),
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
    X402Agent {
        signer,
        payer,
        client,
    }
}

impl X402Agent {
    async fn get(
        &self,
        url: &str,
    ) -> Result<agent_mandate::protocols::x402::X402Response, X402ClientError> {
        self.client
            .send(
                agent_mandate::adapters::http::client_builder()
                    .unwrap()
                    .build()
                    .unwrap()
                    .get(url)
                    .build()
                    .unwrap(),
            )
            .await
    }
}

fn requirement(amount: &str) -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: NETWORK.into(),
        amount: amount.into(),
        asset: USDC.into(),
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 60,
        extra: None,
    }
}

fn required(url: Option<&str>, accepts: Vec<PaymentRequirements>) -> PaymentRequired {
    PaymentRequired {
        x402_version: 2,
        error: None,
        resource: url.map(|u| ResourceInfo {
            url: u.into(),
            description: None,
            mime_type: None,
        }),
        accepts,
        extensions: None,
    }
}

fn x402_402(required: &PaymentRequired) -> Response {
    let mut resp = (StatusCode::PAYMENT_REQUIRED, "{}").into_response();
    resp.headers_mut().insert(
        "payment-required",
        HeaderValue::from_str(&required.to_header().unwrap()).unwrap(),
    );
    resp
}

fn settlement(network: &str, amount: Option<&str>) -> String {
    SettlementResponse {
        success: true,
        error_reason: None,
        payer: Some(FROM.into()),
        transaction: "0xabc".into(),
        network: network.into(),
        amount: amount.map(str::to_owned),
        extensions: None,
    }
    .to_header()
    .unwrap()
}

/// An x402 seller: without `PAYMENT-SIGNATURE` it answers 402 with `resource` (None: no
/// resource member) and 0.01 USD; with one, `paid` decides the answer.
async fn x402_seller(
    resource: Option<String>,
    paid: fn(&str) -> Response,
    extra: String,
) -> String {
    let app = Router::new()
        .route(
            "/premium",
            get(
                move |State((resource, extra)): State<(Option<String>, String)>,
                      headers: HeaderMap| async move {
                    if headers.contains_key("payment-signature") {
                        paid(&extra)
                    } else {
                        x402_402(&required(resource.as_deref(), vec![requirement("10000")]))
                    }
                },
            ),
        )
        .with_state((resource, extra));
    format!("{}/premium", serve(app).await)
}

/// The x402 analogue of the realm test: a seller at one host whose `resource.url` names
/// another (one the mandate allows). The merchant must be the origin the agent reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_a_resource_url_naming_another_host_is_not_paid() {
    let url = x402_seller(
        Some("https://api.example.com/premium".into()),
        |_| {
            (
                StatusCode::OK,
                [("payment-response", settlement(NETWORK, Some("10000")))],
                "premium",
            )
                .into_response()
        },
        String::new(),
    )
    .await;
    let a = x402_agent(REALM).await;
    let r = a.get(&url).await;
    assert!(r.is_err(), "paid a merchant the peer asserted: {r:?}");
    assert!(a.signer.grants().is_empty(), "something was signed");
}

/// After the signature is sent, the seller redirects to another origin: the bearer payment
/// authorization in `PAYMENT-SIGNATURE` must not follow it (reqwest strips `Authorization`
/// on a cross-origin redirect, not this header).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_the_payment_signature_does_not_follow_a_redirect_to_another_origin() {
    let (thief, seen) = thief().await;
    let url = x402_seller(
        None,
        |thief| {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [("location", format!("{thief}/steal"))],
            )
                .into_response()
        },
        thief,
    )
    .await;
    let a = x402_agent(&host_of(&url)).await;
    let _ = a.get(&url).await;
    assert_eq!(a.signer.grants().len(), 1, "the setup did not sign");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|h| !h.contains_key("payment-signature")),
        "the signed payment authorization reached another origin"
    );
}

/// A request redirected before the 402: the host that asks for payment is not the host the
/// caller named, and the mandate (which allows the caller's host only) must not pay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_a_402_after_a_redirect_is_not_charged_to_the_host_first_asked() {
    // The paying host, with no resource member (the client fills in the URL).
    let other = x402_seller(
        None,
        |_| {
            (
                StatusCode::OK,
                [("payment-response", settlement(NETWORK, Some("10000")))],
                "premium",
            )
                .into_response()
        },
        String::new(),
    )
    .await;
    let app = Router::new()
        .route(
            "/premium",
            get(|State(other): State<String>| async move {
                (StatusCode::FOUND, [("location", other)]).into_response()
            }),
        )
        .with_state(other);
    let url = format!("{}/premium", serve(app).await);
    let a = x402_agent(&host_of(&url)).await;
    let r = a.get(&url).await;
    assert!(
        r.is_err(),
        "paid another host under the first host's name: {r:?}"
    );
    assert!(a.signer.grants().is_empty());
}

/// The seller answers success with a `PAYMENT-RESPONSE` for another network and another
/// amount than the requirement paid: that is not a receipt of this payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_a_settlement_for_another_network_or_amount_is_not_taken_as_the_receipt() {
    let url = x402_seller(
        None,
        |_| {
            (
                StatusCode::OK,
                [(
                    "payment-response",
                    settlement("eip155:1", Some("999999999")),
                )],
                "premium",
            )
                .into_response()
        },
        String::new(),
    )
    .await;
    let a = x402_agent(&host_of(&url)).await;
    let r = a.get(&url).await;
    assert_eq!(a.signer.grants().len(), 1, "the setup did not sign");
    assert!(
        r.is_err(),
        "a settlement of 999999999 on eip155:1 was returned as the receipt of 10000 on {NETWORK}: {:?}",
        r.map(|r| r.settlement)
    );
}

/// A settlement naming another payer than the one that signed, or another amount with the
/// right network, is no receipt either; the error keeps the settlement for a dispute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_a_settlement_for_another_payer_is_not_taken_as_the_receipt() {
    let url = x402_seller(
        None,
        |_| {
            let mut s = SettlementResponse::parse(&settlement(NETWORK, Some("10000"))).unwrap();
            s.payer = Some(PAY_TO.into());
            (
                StatusCode::OK,
                [("payment-response", s.to_header().unwrap())],
                "premium",
            )
                .into_response()
        },
        String::new(),
    )
    .await;
    let a = x402_agent(&host_of(&url)).await;
    let r = a.get(&url).await;
    assert!(
        matches!(&r, Err(X402ClientError::SettlementMismatch { field: "payer", settlement, .. })
            if settlement.payer.as_deref() == Some(PAY_TO)),
        "{:?}",
        r.map(|r| r.settlement)
    );
    let url = x402_seller(
        None,
        |_| {
            (
                StatusCode::OK,
                [("payment-response", settlement(NETWORK, Some("10001")))],
                "premium",
            )
                .into_response()
        },
        String::new(),
    )
    .await;
    let a = x402_agent(&host_of(&url)).await;
    let r = a.get(&url).await;
    assert!(
        matches!(
            &r,
            Err(X402ClientError::SettlementMismatch {
                field: "amount",
                ..
            })
        ),
        "{:?}",
        r.map(|r| r.settlement)
    );
}

/// Guard: the paid retry answered by another 402 with another requirement is a refusal; one
/// signature, nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_a_retry_answered_by_another_402_signs_once() {
    let url = x402_seller(
        None,
        |_| x402_402(&required(None, vec![requirement("20000")])),
        String::new(),
    )
    .await;
    let a = x402_agent(&host_of(&url)).await;
    let r = a.get(&url).await;
    assert!(
        matches!(r, Err(X402ClientError::Rejected { status: 402, .. })),
        "{r:?}"
    );
    assert_eq!(a.signer.grants().len(), 1);
}

/// The same requirement paid by two tasks at once: one signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_the_same_requirement_paid_by_two_tasks_at_once_is_one_signature() {
    let a = x402_agent(REALM).await;
    let req = required(
        Some("https://api.example.com/premium"),
        vec![requirement("10000")],
    );
    let offer = req
        .offers(
            &assets(),
            "https://api.example.com/premium",
            examples::now(),
        )
        .remove(0)
        .unwrap();
    let accepted = req.accepts[0].clone();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (p, r, acc, o) = (
            a.payer.clone(),
            req.clone(),
            accepted.clone(),
            offer.clone(),
        );
        tasks.push(tokio::spawn(async move {
            p.pay(&r, &acc, &o, None)
                .await
                .map(|p| p.to_header().unwrap())
        }));
    }
    let mut payloads = Vec::new();
    for t in tasks {
        if let Ok(p) = t.await.unwrap() {
            payloads.push(p);
        }
    }
    assert!(!payloads.is_empty());
    assert!(payloads.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(a.signer.grants().len(), 1, "signed twice");
}

/// Amounts, decimals, networks and assets: only a registered asset on its own network, an
/// amount on the mandate currency's minor unit, plain positive digits.
#[test]
fn x402_look_alike_assets_networks_and_odd_amounts_are_refused() {
    let now = examples::now();
    let url = "https://api.example.com/premium";
    let offer = |r: PaymentRequirements| r.offer(&assets(), url, None, now);
    // The registered asset, on its network: 0.01 USD.
    assert_eq!(offer(requirement("10000")).unwrap().amount, usd("0.01"));
    // Off the cent: refused, never rounded.
    for bad in [
        "10001", "1", "9999", "0", "010000", "-10000", "+10000", "1e4", "10000.0", " 10000",
    ] {
        assert!(offer(requirement(bad)).is_err(), "amount {bad:?}");
    }
    // 39 digits and more.
    assert!(offer(requirement(&"9".repeat(39))).is_err());
    assert!(offer(requirement(&"1".repeat(200))).is_err());
    // Another network, a network in another case, a look-alike address, an address with a
    // trailing space.
    let with = |network: &str, asset: &str| {
        let mut r = requirement("10000");
        r.network = network.into();
        r.asset = asset.into();
        r
    };
    for (network, asset) in [
        ("eip155:8453", USDC),
        ("EIP155:84532", USDC),
        ("eip155:84532 ", USDC),
        (NETWORK, "0x036CbD53842c5426634e7929541eC2318f3dCF7f"),
        (NETWORK, "0x036CbD53842c5426634e7929541eC2318f3dCF7e "),
        (NETWORK, "036CbD53842c5426634e7929541eC2318f3dCF7e"),
        (NETWORK, "USDC"),
    ] {
        assert!(
            offer(with(network, asset)).is_err(),
            "{network:?} {asset:?}"
        );
    }
    // maxTimeoutSeconds: zero and past a day are refused.
    let mut r = requirement("10000");
    r.max_timeout_seconds = 0;
    assert!(offer(r.clone()).is_err());
    r.max_timeout_seconds = u64::MAX;
    assert!(offer(r).is_err());
    // A v1 `maxAmountRequired` next to `amount` does not change what is paid.
    let mut v = serde_json::to_value(required(Some(url), vec![requirement("10000")])).unwrap();
    v["accepts"][0]["maxAmountRequired"] = "1".into();
    let header = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(v.to_string())
    };
    if let Ok(parsed) = PaymentRequired::parse(&header) {
        let o = parsed.offers(&assets(), url, now).remove(0).unwrap();
        assert_eq!(o.amount, usd("0.01"));
    }
    // Too many requirements.
    let many = required(Some(url), vec![requirement("10000"); 17]);
    let header = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_string(&many).unwrap())
    };
    assert!(PaymentRequired::parse(&header).is_err());
}
