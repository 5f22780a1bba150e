//! The engine behind HTTP: an axum service on SQLite with the system clock, and a client that
//! walks a buyer and an agent through it over real HTTP on 127.0.0.1.
//!
//! ```sh
//! cargo run --example service --features axum,sqlite,testkit,http            # serve, run the walk, exit
//! cargo run --example service --features axum,sqlite,testkit,http -- serve   # serve until Ctrl-C
//! ```
//!
//! The authentication layer is a stand-in (a static table of bearer tokens): yours checks
//! sessions, OAuth tokens or certificates, then inserts the caller's `Principal` into the
//! request's extensions. Handlers never read who asks from a body: they take `Authenticated`.
//! The PSP is the test kit's fake; the Stripe adapter plugs in the same way.

use std::collections::HashMap;
use std::sync::Arc;

use agent_mandate::adapters::keyring::{VaultKey, VaultKeyring};
use agent_mandate::adapters::sqlite::{SqliteConfig, SqliteDatabase};
use agent_mandate::domain::{
    examples, AttemptId, CartSnapshot, CheckoutState, Lifecycle, MandateSpec, MandateStatus, Money,
    PaymentRequest, Principal,
};
use agent_mandate::engine::{
    CapturePayment, CommitOrder, CreateMandate, Engine, EngineConfig, ExecutePayment, RefundPayment,
};
use agent_mandate::ports::{
    Clock, CredentialDisplay, CredentialKind, FundingType, NewCredential, Ports, Secret,
    SystemClock,
};
use agent_mandate::service::{
    order_response, payment_response, ApiError, Authenticated, IdempotencyKeyHeader,
};
use agent_mandate::testkit::FakePsp;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

/// What the handlers share.
#[derive(Clone)]
struct App {
    engine: Engine,
    /// The stand-in authentication table: bearer token -> principal.
    tokens: Arc<HashMap<String, Principal>>,
}

/// The stand-in authentication layer: a known bearer token becomes the request's principal;
/// anything else goes on without one (and `Authenticated` answers 401).
async fn authenticate(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(principal) = token.and_then(|t| app.tokens.get(&t).cloned()) {
        request.extensions_mut().insert(principal);
    }
    next.run(request).await
}

/// `POST /mandates`: the body is the mandate's spec.
async fn create_mandate(
    State(app): State<App>,
    Authenticated(by): Authenticated,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Json(spec): Json<MandateSpec>,
) -> Result<Response, ApiError> {
    let recorded = app
        .engine
        .create_mandate(&by, &CreateMandate::new(key, spec))
        .await?;
    let status = if recorded.replay {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(recorded.value)).into_response())
}

/// The body of `POST /payments`.
#[derive(Deserialize)]
struct PayBody {
    request: PaymentRequest,
    snapshot: CartSnapshot,
    checkout: CheckoutState,
    credential: agent_mandate::domain::CredentialRef,
    #[serde(default)]
    capture: bool,
}

async fn execute_payment(
    State(app): State<App>,
    Authenticated(by): Authenticated,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Json(body): Json<PayBody>,
) -> Result<Response, ApiError> {
    let command = ExecutePayment::new(
        key,
        body.request,
        body.snapshot,
        body.checkout,
        body.credential,
    )
    .with_capture(body.capture);
    Ok(payment_response(
        &app.engine.execute_payment(&by, &command).await?,
    ))
}

/// The body of capture and refund: an optional amount.
#[derive(Deserialize, Default)]
struct AmountBody {
    #[serde(default)]
    amount: Option<Money>,
}

async fn capture(
    State(app): State<App>,
    Authenticated(by): Authenticated,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Path(attempt_id): Path<AttemptId>,
    Json(body): Json<AmountBody>,
) -> Result<Response, ApiError> {
    let command = CapturePayment::new(key, attempt_id).with_amount(body.amount);
    Ok(payment_response(&app.engine.capture(&by, &command).await?))
}

async fn refund(
    State(app): State<App>,
    Authenticated(by): Authenticated,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Path(attempt_id): Path<AttemptId>,
    Json(body): Json<AmountBody>,
) -> Result<Response, ApiError> {
    let command = RefundPayment::new(key, attempt_id).with_amount(body.amount);
    Ok(payment_response(&app.engine.refund(&by, &command).await?))
}

async fn commit_order(
    State(app): State<App>,
    Authenticated(by): Authenticated,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Path(attempt_id): Path<AttemptId>,
    Json(checkout): Json<CheckoutState>,
) -> Result<Response, ApiError> {
    let command = CommitOrder::new(key, attempt_id, checkout);
    Ok(order_response(
        &app.engine.commit_order(&by, &command).await?,
    ))
}

/// `GET /payments/{id}`: the attempt, for its agent, its buyer and operators (404 for anyone
/// else, as for a missing one).
async fn payment(
    State(app): State<App>,
    Authenticated(by): Authenticated,
    Path(attempt_id): Path<AttemptId>,
) -> Result<Response, ApiError> {
    Ok(Json(app.engine.attempt(&by, &attempt_id).await?).into_response())
}

/// `GET /payments/{id}/evidence`: the dispute package. A read: the buyer and operators only.
async fn evidence(
    State(app): State<App>,
    Authenticated(by): Authenticated,
    Path(attempt_id): Path<AttemptId>,
) -> Result<Response, ApiError> {
    let evidence = app.engine.dispute_evidence(&attempt_id).await?;
    let buyer = &evidence.attempt.request.buyer_id;
    if !(by.is_buyer(buyer) || by.is_operator()) {
        // Another buyer's payment does not exist for this caller.
        return Err(agent_mandate::engine::EngineError::NotFound {
            entity: "attempt",
            id: attempt_id.to_string(),
        }
        .into());
    }
    Ok(Json(json!({
        "verdict": format!("{:?}", evidence.verdict),
        "attempt": evidence.attempt,
    }))
    .into_response())
}

fn router(app: App) -> Router {
    Router::new()
        .route("/mandates", post(create_mandate))
        .route("/payments", post(execute_payment))
        .route("/payments/{id}", get(payment))
        .route("/payments/{id}/capture", post(capture))
        .route("/payments/{id}/refund", post(refund))
        .route("/payments/{id}/order", post(commit_order))
        .route("/payments/{id}/evidence", get(evidence))
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .with_state(app)
}

/// The story's mandate and cart, dated from the clock (fixtures with fixed dates would be
/// expired under a real clock).
fn fixtures(now: chrono::DateTime<chrono::Utc>) -> Result<(MandateSpec, CartSnapshot), String> {
    let spec = mandate(now);
    Ok((spec, cart(now, "0.00", "15.00")?))
}

fn mandate(now: chrono::DateTime<chrono::Utc>) -> MandateSpec {
    let mut spec = examples::travel_backpack_mandate().spec().clone();
    spec.scope.validity.not_before = now - chrono::Duration::minutes(1);
    spec.scope.validity.expires_at = now + chrono::Duration::days(30);
    spec.lifecycle = Lifecycle::new(MandateStatus::Active, now - chrono::Duration::minutes(1));
    spec
}

/// The backpack with this shipping and tax, offered a minute ago for an hour.
fn cart(
    now: chrono::DateTime<chrono::Utc>,
    shipping: &str,
    tax: &str,
) -> Result<CartSnapshot, String> {
    let mut content =
        examples::backpack_content(shipping, tax, agent_mandate::domain::Currency::EUR);
    content.created_at = now - chrono::Duration::minutes(1);
    content.expires_at = now + chrono::Duration::hours(1);
    CartSnapshot::new(content).map_err(|e| e.to_string())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("agent-mandate-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = SqliteDatabase::open(SqliteConfig::file(dir.join("state.db")))?;
    let key = VaultKey::new("example-key-1", [7u8; 32])?;
    let vault = Arc::new(db.vault(VaultKeyring::new(key)));
    let clock = Arc::new(SystemClock);
    let ports = Ports {
        store: Arc::new(db.store()),
        provider: Arc::new(FakePsp::with_vault(vault.clone())),
        vault: vault.clone(),
        audit: Arc::new(db.audit_sink()),
        clock: clock.clone(),
    };
    let engine = Engine::new(ports, EngineConfig::default())?;
    let buyer = Principal::Buyer(examples::buyer());
    let agent = Principal::Agent(examples::agent().id);
    let tokens: HashMap<String, Principal> = [
        ("buyer-token".to_owned(), buyer.clone()),
        ("agent-token".to_owned(), agent.clone()),
        (
            "stranger-token".to_owned(),
            Principal::Buyer("buyer_mallory".parse()?),
        ),
    ]
    .into_iter()
    .collect();
    // The buyer's card, stored once (the vault answers a retry with the same card).
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
        .await?
        .value;
    let app = App {
        engine,
        tokens: Arc::new(tokens),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router(app)).await });
    println!("serving on http://{addr} (state in {})", dir.display());
    if std::env::args().nth(1).as_deref() == Some("serve") {
        server.await??;
        return Ok(());
    }
    let walk = walk(&format!("http://{addr}"), clock.now(), &card.reference).await;
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    walk
}

/// The client side: every answer checked, so CI fails if the service misbehaves.
async fn walk(
    base: &str,
    now: chrono::DateTime<chrono::Utc>,
    card: &agent_mandate::domain::CredentialRef,
) -> Result<(), Box<dyn std::error::Error>> {
    let http = agent_mandate::adapters::http::client_builder()?.build()?;
    let (spec, snapshot) = fixtures(now)?;
    let post = |path: &str, token: &str, key: &str, body: Value| {
        let mut r = http
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string());
        if !key.is_empty() {
            r = r.header("Idempotency-Key", key);
        }
        r.send()
    };
    let expect = |what: &str, got: StatusCode, want: StatusCode| -> Result<(), String> {
        println!("{what:<58} {got}");
        if got == want {
            Ok(())
        } else {
            Err(format!("{what}: expected {want}, got {got}"))
        }
    };

    let r = post(
        "/mandates",
        "buyer-token",
        "mandate-1",
        serde_json::to_value(&spec)?,
    )
    .await?;
    expect("buyer creates the mandate", r.status(), StatusCode::CREATED)?;
    let r = post(
        "/mandates",
        "agent-token",
        "mandate-2",
        serde_json::to_value(&spec)?,
    )
    .await?;
    expect(
        "an agent may not grant root authority",
        r.status(),
        StatusCode::FORBIDDEN,
    )?;

    let pay = json!({
        "request": examples::authorize_request(&snapshot),
        "snapshot": snapshot,
        "checkout": examples::valid_checkout(snapshot.id()),
        "credential": card,
    });
    let r = post("/payments", "agent-token", "", pay.clone()).await?;
    expect(
        "a payment without Idempotency-Key",
        r.status(),
        StatusCode::BAD_REQUEST,
    )?;
    let body: Value = serde_json::from_slice(&r.bytes().await?)?;
    if body["code"] != "idempotency_key_required" {
        return Err(format!("missing key answered {body}").into());
    }
    let r = post("/payments", "nobody", "pay-1", pay.clone()).await?;
    expect(
        "a payment without a principal",
        r.status(),
        StatusCode::UNAUTHORIZED,
    )?;
    let r = post("/payments", "buyer-token", "pay-1", pay.clone()).await?;
    expect(
        "the buyer may not pay as the agent",
        r.status(),
        StatusCode::FORBIDDEN,
    )?;

    let r = post("/payments", "agent-token", "pay-1", pay.clone()).await?;
    expect(
        "the agent pays (authorized)",
        r.status(),
        StatusCode::CREATED,
    )?;
    let body: Value = serde_json::from_slice(&r.bytes().await?)?;
    let attempt = body["attempt"]["id"]
        .as_str()
        .ok_or("attempt id")?
        .to_owned();
    let r = post("/payments", "agent-token", "pay-1", pay.clone()).await?;
    let replayed = r.headers().get("idempotent-replayed").cloned();
    expect("the same key again: a replay", r.status(), StatusCode::OK)?;
    if replayed.as_ref().and_then(|v| v.to_str().ok()) != Some("true") {
        return Err("a replay without Idempotent-Replayed: true".into());
    }
    let mut other = pay.clone();
    other["capture"] = json!(true);
    let r = post("/payments", "agent-token", "pay-1", other).await?;
    expect(
        "the same key, another body",
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
    )?;

    let over = {
        // 129.00 + 20.99 shipping + 50.00 tax = 199.99, over the mandate's 150.00.
        let big = cart(now, "20.99", "50.00")?;
        json!({
            "request": examples::authorize_request(&big),
            "snapshot": big,
            "checkout": examples::valid_checkout(big.id()),
            "credential": card,
        })
    };
    let r = post("/payments", "agent-token", "pay-2", over).await?;
    expect(
        "over the mandate's maximum: refused with the decision",
        r.status(),
        StatusCode::FORBIDDEN,
    )?;
    let body: Value = serde_json::from_slice(&r.bytes().await?)?;
    if body["decision"]["outcome"] != "blocked" {
        return Err(format!("a refusal without its decision: {body}").into());
    }

    let r = post(
        &format!("/payments/{attempt}/capture"),
        "buyer-token",
        "cap-1",
        json!({}),
    )
    .await?;
    expect(
        "the buyer may not capture",
        r.status(),
        StatusCode::FORBIDDEN,
    )?;
    let r = post(
        &format!("/payments/{attempt}/capture"),
        "agent-token",
        "cap-1",
        json!({}),
    )
    .await?;
    expect("the agent captures", r.status(), StatusCode::CREATED)?;
    let checkout = serde_json::to_value(examples::valid_checkout(snapshot.id()))?;
    let r = post(
        &format!("/payments/{attempt}/order"),
        "stranger-token",
        "order-1",
        checkout.clone(),
    )
    .await?;
    expect(
        "another buyer may not commit the order",
        r.status(),
        StatusCode::FORBIDDEN,
    )?;
    let r = post(
        &format!("/payments/{attempt}/order"),
        "buyer-token",
        "order-1",
        checkout,
    )
    .await?;
    expect(
        "the buyer commits the order",
        r.status(),
        StatusCode::CREATED,
    )?;
    let r = post(
        &format!("/payments/{attempt}/refund"),
        "buyer-token",
        "refund-1",
        json!({"amount": {"amount": "15.00", "currency": "EUR"}}),
    )
    .await?;
    expect("the buyer refunds 15.00", r.status(), StatusCode::CREATED)?;

    let get = |token: &'static str| {
        http.get(format!("{base}/payments/{attempt}/evidence"))
            .bearer_auth(token)
            .send()
    };
    let read = |token: &'static str| {
        http.get(format!("{base}/payments/{attempt}"))
            .bearer_auth(token)
            .send()
    };
    let r = read("stranger-token").await?;
    expect(
        "another buyer reads no payment",
        r.status(),
        StatusCode::NOT_FOUND,
    )?;
    let r = read("agent-token").await?;
    expect("the agent reads its payment", r.status(), StatusCode::OK)?;
    let body: Value = serde_json::from_slice(&r.bytes().await?)?;
    if body["status"] != "partially_refunded" {
        return Err(format!("payment: {body}").into());
    }
    let r = get("stranger-token").await?;
    expect(
        "another buyer sees no evidence",
        r.status(),
        StatusCode::NOT_FOUND,
    )?;
    let r = get("buyer-token").await?;
    expect(
        "the buyer reads the dispute evidence",
        r.status(),
        StatusCode::OK,
    )?;
    let body: Value = serde_json::from_slice(&r.bytes().await?)?;
    if body["verdict"] != "Consistent" {
        return Err(format!("evidence: {body}").into());
    }
    println!("every answer as expected");
    Ok(())
}
