//! Shared fixtures of the `forms_*` suites: AP2 v0.2 documents built to their published
//! schemas, and a validator for those schemas (with the shared `types/` resolved locally).

#![allow(dead_code)]

use std::path::PathBuf;

use agent_mandate::domain::{
    examples, Actor, ActorId, ActorKind, BuyerId, IdempotencyKey, MandateId, Merchant,
};
use agent_mandate::forms::{Ap2Context, ReadCheckout};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub fn interop() -> PathBuf {
    PathBuf::from("/work/shared/interop")
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn digest(bytes: &[u8]) -> String {
    b64(&Sha256::digest(bytes))
}

pub fn now() -> DateTime<Utc> {
    examples::now()
}

pub fn epoch(offset: Duration) -> i64 {
    (now() + offset).timestamp()
}

struct LocalTypes;

impl jsonschema::Retrieve for LocalTypes {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let s = uri.as_str();
        let name = s.rsplit('/').next().unwrap_or_default();
        let path = interop().join("ap2-v0.2/types").join(name);
        let text = std::fs::read_to_string(&path)?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// The published AP2 schema `file`, compiled.
pub fn ap2_validator(file: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(interop().join("ap2-v0.2").join(file)).expect("schema file");
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    jsonschema::options()
        .with_retriever(LocalTypes)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[track_caller]
pub fn assert_schema_valid(file: &str, doc: &Value) {
    let v = ap2_validator(file);
    let errs: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errs.is_empty(), "{file}: {errs:?}\n{doc:#}");
}

pub fn cnf() -> Value {
    json!({"jwk": {"kty": "EC", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}})
}

/// An open checkout mandate: merchant_001, one backpack.
pub fn open_checkout() -> Value {
    json!({
        "vct": "mandate.checkout.open.1",
        "constraints": [
            {"type": "checkout.allowed_merchants", "allowed": [{"id": "merchant_001", "name": "Trail Co"}]},
            {"type": "checkout.line_items", "items": [
                {"id": "req_bag", "acceptable_items": [
                    {"id": "BAG-TRAVEL-42", "title": "Travel backpack 42 l"},
                    {"id": "BAG-TRAVEL-40", "title": "Travel backpack 40 l"}
                ], "quantity": 1}
            ]}
        ],
        "cnf": cnf(),
        "iat": epoch(Duration::minutes(-30)),
        "exp": epoch(Duration::hours(6))
    })
}

pub fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON")
}

/// The UCP-style checkout payload the merchant signs.
pub fn checkout_payload() -> Value {
    json!({
        "id": "cs_backpack_1",
        "currency": "EUR",
        "status": "ready_for_complete",
        "line_items": [
            {"id": "li_1", "item": {"id": "BAG-TRAVEL-42", "title": "Travel backpack 42 l", "price": 12900}, "quantity": 1}
        ],
        "totals": [
            {"type": "subtotal", "amount": 12900},
            {"type": "fulfillment", "amount": 500},
            {"type": "tax", "amount": 0},
            {"type": "total", "amount": 13400}
        ]
    })
}

pub fn jwt(header: &Value, payload: &Value) -> String {
    format!(
        "{}.{}.{}",
        b64(&bytes(header)),
        b64(&bytes(payload)),
        b64(b"signature-bytes")
    )
}

pub fn es256() -> Value {
    json!({"alg": "ES256", "typ": "JWT", "kid": "merchant_001-key"})
}

/// A closed checkout mandate over `payload`, with its correct hash.
pub fn checkout_mandate_for(payload: &Value) -> Value {
    let jwt = jwt(&es256(), payload);
    json!({
        "vct": "mandate.checkout.1",
        "checkout_jwt": jwt,
        "checkout_hash": digest(jwt.as_bytes()),
        "iat": epoch(Duration::minutes(-5)),
        "exp": epoch(Duration::minutes(55))
    })
}

pub fn checkout_mandate() -> Value {
    checkout_mandate_for(&checkout_payload())
}

/// An open payment mandate referencing `open_checkout()`.
pub fn open_payment() -> Value {
    json!({
        "vct": "mandate.payment.open.1",
        "constraints": [
            {"type": "payment.reference", "conditional_transaction_id": digest(&bytes(&open_checkout()))},
            {"type": "payment.amount_range", "currency": "EUR", "max": 15000},
            {"type": "payment.allowed_payees", "allowed": [
                {"id": "merchant_001", "name": "Trail Co", "website": "https://trail.example"},
                {"id": "merchant_002", "name": "Other"}
            ]},
            {"type": "payment.budget", "max": 30000, "currency": "EUR"},
            {"type": "payment.agent_recurrence", "frequency": "MONTHLY", "max_occurrences": 3},
            {"type": "payment.execution_date", "not_before": "2026-06-28T08:00:00Z", "not_after": "2026-07-15"}
        ],
        "cnf": cnf(),
        "risk_data": {"device": "phone"},
        "iat": epoch(Duration::minutes(-30)),
        "exp": epoch(Duration::days(30))
    })
}

pub fn closed_payment() -> Value {
    json!({
        "vct": "mandate.payment.1",
        "transaction_id": digest(b"checkout"),
        "payee": {"id": "merchant_001", "name": "Trail Co"},
        "payment_amount": {"amount": 13400, "currency": "EUR"},
        "payment_instrument": {"id": "pi_1", "type": "card"}
    })
}

pub fn checkout_receipt() -> Value {
    json!({"status": "Success", "iss": "merchant_001", "iat": epoch(Duration::zero()),
           "reference": digest(b"closed"), "order_id": "order_1"})
}

pub fn payment_receipt() -> Value {
    json!({"status": "Error", "iss": "psp", "iat": epoch(Duration::zero()),
           "reference": digest(b"closed"), "payment_id": "pay_1",
           "error": "declined", "error_description": "card declined"})
}

pub fn merchant() -> Merchant {
    Merchant {
        merchant_id: "merchant_001".parse().unwrap(),
        marketplace_id: None,
        seller_id: None,
        mcc: "5948".parse().unwrap(),
    }
}

pub fn read() -> ReadCheckout {
    ReadCheckout::new(merchant(), now())
}

pub fn ctx() -> Ap2Context {
    Ap2Context::new(
        IdempotencyKey::new("idem_ap2_1").unwrap(),
        MandateId::new("mandate_ap2_1").unwrap(),
        BuyerId::new("buyer_456").unwrap(),
        Actor {
            id: ActorId::new("agent_123").unwrap(),
            kind: ActorKind::Agent,
        },
        now(),
    )
}
