//! Shared set-up of the ACP tests: memory adapters, the fake PSP, the router over real HTTP on
//! 127.0.0.1, the published specification files (copied under `tests/acp_spec`, Apache-2.0).

#![allow(dead_code)]

pub mod faults;

use std::path::PathBuf;
use std::sync::Arc;

use agent_mandate::acp::router::{router, AcpMerchant};
use agent_mandate::acp::{AcpConfig, AcpService, PlatformKey};
use agent_mandate::adapters::memory::MemoryPorts;
use agent_mandate::domain::{MerchantId, Principal};
use agent_mandate::engine::{Engine, EngineConfig};
use agent_mandate::testkit::FakePsp;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use ring::signature::KeyPair as _;
use serde_json::Value;

pub const PLATFORM_BEARER: &str = "Bearer sk_test_platform";
pub const PLATFORM_B_BEARER: &str = "Bearer sk_test_platform_b";
pub const VERSION: &str = "2026-04-17";

/// The tests' clock: before every allowance expiry of the published examples.
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 9, 29, 11, 0, 0).unwrap()
}

pub fn spec(file: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/acp_spec")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn example(file: &str, name: &str) -> Value {
    spec(file)
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("no example {name} in {file}"))
}

/// A validator for `$defs/<def>` of a published schema bundle, formats asserted.
pub fn validator(file: &str, def: &str) -> jsonschema::Validator {
    let bundle = spec(file);
    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": bundle["$defs"],
        "$ref": format!("#/$defs/{def}"),
    });
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{file}#{def}: {e}"))
}

#[track_caller]
pub fn assert_valid(file: &str, def: &str, value: &Value) {
    let v = validator(file, def);
    let errors: Vec<String> = v
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{def}: {errors:?}\n{value:#}");
}

/// The platform's Ed25519 key pair (a fixed seed).
pub fn platform_pair() -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[42u8; 32]).unwrap()
}

pub fn platform_key() -> PlatformKey {
    PlatformKey::ed25519(platform_pair().public_key().as_ref()).unwrap()
}

/// The principal the harness authenticates `PLATFORM_BEARER` as.
pub fn platform_principal() -> Principal {
    Principal::Agent("platform_1".parse().unwrap())
}

/// The second platform (`PLATFORM_B_BEARER`) and its key pair.
pub fn platform_b_principal() -> Principal {
    Principal::Agent("platform_2".parse().unwrap())
}

pub fn platform_b_pair() -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[43u8; 32]).unwrap()
}

pub fn platform_b_key() -> PlatformKey {
    PlatformKey::ed25519(platform_b_pair().public_key().as_ref()).unwrap()
}

/// The configuration of a service that verifies signatures: platform 1's key.
pub fn signed(c: AcpConfig) -> AcpConfig {
    c.with_platform_key(platform_principal(), platform_key())
}

/// `Signature` for `body` at `timestamp` by `pair`.
pub fn sign(pair: &ring::signature::Ed25519KeyPair, timestamp: &str, body: &Value) -> String {
    let input = agent_mandate::acp::signing_input(timestamp, body);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.sign(&input).as_ref())
}

pub struct Harness {
    pub memory: MemoryPorts,
    pub service: AcpService,
    pub base: String,
    pub http: reqwest::Client,
}

/// Authentication as a host would do it: the platform's bearer token becomes its principal;
/// `Bearer merchant:<id>` becomes the merchant of a redemption.
async fn authenticate(mut request: Request, next: Next) -> Response {
    let auth = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match auth.as_deref() {
        Some(PLATFORM_BEARER) => {
            request.extensions_mut().insert(platform_principal());
        }
        Some(PLATFORM_B_BEARER) => {
            request.extensions_mut().insert(platform_b_principal());
        }
        Some(a) if a.starts_with("Bearer merchant:") => {
            let id = a.trim_start_matches("Bearer merchant:");
            if let Ok(m) = MerchantId::new(id) {
                request.extensions_mut().insert(AcpMerchant(m));
            }
        }
        _ => {}
    }
    next.run(request).await
}

pub fn service(config: impl FnOnce(AcpConfig) -> AcpConfig) -> (MemoryPorts, AcpService) {
    let memory = MemoryPorts::new(start(), |vault, clock| {
        Arc::new(FakePsp::with_vault_and_clock(vault, clock))
    });
    let engine = Engine::new(memory.ports.clone(), EngineConfig::default()).unwrap();
    // Most tests are about other rules than signatures: they opt out explicitly; the
    // signature tests add the platform's key with `signed`.
    let base =
        AcpConfig::unsigned_for_testing("acp-vault".parse().unwrap(), "5651".parse().unwrap());
    let service = AcpService::new(engine, config(base));
    (memory, service)
}

pub async fn harness(config: impl FnOnce(AcpConfig) -> AcpConfig) -> Harness {
    let (memory, service) = service(config);
    let app = router(service.clone()).layer(axum::middleware::from_fn(authenticate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let http = agent_mandate::adapters::http::client_builder()
        .unwrap()
        .build()
        .unwrap();
    Harness {
        memory,
        service,
        base: format!("http://{addr}"),
        http,
    }
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Harness {
    /// POSTs `body` (raw bytes) to the endpoint with `headers` (name, value).
    pub async fn post_raw(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.base)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A delegation with the standard headers and `key`.
    pub async fn delegate(&self, key: &str, body: &Value) -> Answer {
        self.post_raw(
            "/agentic_commerce/delegate_payment",
            &standard_headers(key),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn redeem(&self, merchant: &str, key: &str, token: &str, session: &Value) -> Answer {
        let auth = format!("Bearer merchant:{merchant}");
        let body = serde_json::json!({"token": token, "checkout_session": session});
        self.post_raw(
            "/agentic_commerce/redeem",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
            ],
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }
}

pub fn standard_headers(key: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("Authorization", PLATFORM_BEARER),
        ("Content-Type", "application/json"),
        ("API-Version", VERSION),
        ("Idempotency-Key", key),
        ("Request-Id", "req_123"),
    ]
}

/// The published request example, with its allowance bound to `session` and `merchant`.
pub fn request_for(session: &str, merchant: &str, max_amount: i64) -> Value {
    let mut r = example("examples.delegate_payment.json", "delegate_payment_request");
    r["allowance"]["checkout_session_id"] = session.into();
    r["allowance"]["merchant_id"] = merchant.into();
    r["allowance"]["max_amount"] = max_amount.into();
    r
}

/// The audit bodies of the trail so far.
pub fn audit_bodies(memory: &MemoryPorts) -> Vec<Value> {
    memory
        .audit
        .events()
        .iter()
        .map(|e| serde_json::from_str(&e.body).unwrap())
        .collect()
}

/// How many distinct credentials the audit trail says were stored.
pub fn credentials_stored(memory: &MemoryPorts) -> usize {
    let refs: std::collections::BTreeSet<String> = memory
        .audit
        .events()
        .iter()
        .filter(|e| e.body.contains("\"credential_stored\""))
        .filter_map(|e| {
            let at = e.body.find("\"credential_ref\":\"")? + 18;
            let len = e.body[at..].find('"')?;
            Some(e.body[at..at + len].to_owned())
        })
        .collect();
    refs.len()
}

/// A service over the memory adapters whose store and vault inject the faults of the
/// returned [`faults::Faults`] (the PSP and the audit sink are the memory ones).
pub fn faulty_service(
    config: impl FnOnce(AcpConfig) -> AcpConfig,
) -> (MemoryPorts, Arc<faults::Faults>, AcpService) {
    let memory = MemoryPorts::new(start(), |vault, clock| {
        Arc::new(FakePsp::with_vault_and_clock(vault, clock))
    });
    let f = Arc::new(faults::Faults::default());
    let mut ports = memory.ports.clone();
    ports.store = Arc::new(faults::FaultyStore {
        inner: ports.store.clone(),
        faults: f.clone(),
    });
    ports.vault = Arc::new(faults::FaultyVault {
        inner: ports.vault.clone(),
        faults: f.clone(),
    });
    let engine = Engine::new(ports, EngineConfig::default()).unwrap();
    let base =
        AcpConfig::unsigned_for_testing("acp-vault".parse().unwrap(), "5651".parse().unwrap());
    (memory, f, AcpService::new(engine, config(base)))
}

/// The standard headers of `key` (and `extra`), as the service reads them.
pub fn request_headers(key: &str, extra: &[(&str, &str)]) -> agent_mandate::acp::RequestHeaders {
    let mut h = agent_mandate::acp::RequestHeaders::new();
    for (k, v) in standard_headers(key)
        .into_iter()
        .chain(extra.iter().copied())
    {
        h.insert(k, v.as_bytes());
    }
    h
}

/// A delegation straight to the service, as `caller` (platform 1 by default).
pub async fn delegate_as(
    service: &AcpService,
    caller: &Principal,
    key: &str,
    extra: &[(&str, &str)],
    body: &Value,
) -> Result<agent_mandate::acp::Delegated, agent_mandate::acp::AcpError> {
    service
        .delegate(
            Some(caller),
            None,
            &request_headers(key, extra),
            &serde_json::to_vec(body).unwrap(),
        )
        .await
}

/// The audit events of type `delegated`.
pub fn delegated_events(memory: &MemoryPorts) -> Vec<Value> {
    audit_bodies(memory)
        .into_iter()
        .filter(|b| b["event"]["type"] == "delegated")
        .collect()
}
