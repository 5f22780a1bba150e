//! A table of bad delegate payment requests over real HTTP: each is a typed refusal with the
//! published status and error body (I11: the field named, nothing stored; I12: no panic), and
//! every body validates against the published `Error` schema (the 401 and the version errors
//! follow the OpenAPI's 401 example and the RFC's well-known version codes, which the bundle's
//! closed enums do not list: they are checked against those instead).
#![cfg(all(
    feature = "acp",
    feature = "axum",
    feature = "testkit",
    feature = "http"
))]

mod acp_support;

use acp_support::*;
use serde_json::{json, Value};

const DP: &str = "schema.delegate_payment.json";

enum Edit {
    /// Replace the value at a JSON pointer.
    Set(&'static str, Value),
    /// Remove the member at a JSON pointer.
    Remove(&'static str),
    /// Send these raw bytes as the body.
    Raw(&'static [u8]),
    /// Replace a header (or remove it with `None`), or add one.
    Header(&'static str, Option<&'static str>),
    /// Nothing (the case lives in the harness's configuration or clock).
    Nothing,
}

struct Case {
    name: &'static str,
    edit: Edit,
    status: u16,
    code: &'static str,
    param: Option<&'static str>,
}

fn case(
    name: &'static str,
    edit: Edit,
    status: u16,
    code: &'static str,
    param: Option<&'static str>,
) -> Case {
    Case {
        name,
        edit,
        status,
        code,
        param,
    }
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let p = v.pointer_mut(parent).unwrap();
    match p {
        Value::Object(m) => {
            m.remove(last);
        }
        Value::Array(a) => {
            a.remove(last.parse::<usize>().unwrap());
        }
        _ => panic!("{pointer}"),
    }
}

fn cases() -> Vec<Case> {
    use Edit::*;
    let card = "invalid_card";
    vec![
        // --- headers ---
        case(
            "no Authorization",
            Header("Authorization", None),
            401,
            "unauthorized",
            None,
        ),
        case(
            "unknown bearer",
            Header("Authorization", Some("Bearer nope")),
            401,
            "unauthorized",
            None,
        ),
        case(
            "no API-Version",
            Header("API-Version", None),
            400,
            "missing_api_version",
            Some("API-Version"),
        ),
        case(
            "unknown API-Version",
            Header("API-Version", Some("2025-09-29")),
            400,
            "unsupported_api_version",
            Some("API-Version"),
        ),
        case(
            "garbage API-Version",
            Header("API-Version", Some("latest")),
            400,
            "unsupported_api_version",
            Some("API-Version"),
        ),
        case(
            "no Idempotency-Key",
            Header("Idempotency-Key", None),
            400,
            "idempotency_key_required",
            None,
        ),
        case(
            "Idempotency-Key of 256 characters",
            Header(
                "Idempotency-Key",
                Some(Box::leak("k".repeat(256).into_boxed_str())),
            ),
            400,
            "idempotency_key_required",
            Some("Idempotency-Key"),
        ),
        case(
            "Idempotency-Key with a space",
            Header("Idempotency-Key", Some("a b")),
            400,
            "idempotency_key_required",
            Some("Idempotency-Key"),
        ),
        case(
            "Content-Type text/plain",
            Header("Content-Type", Some("text/plain")),
            400,
            card,
            Some("Content-Type"),
        ),
        case(
            "no Content-Type",
            Header("Content-Type", None),
            400,
            card,
            Some("Content-Type"),
        ),
        case(
            "Timestamp that is not a time",
            Header("Timestamp", Some("yesterday")),
            400,
            card,
            Some("Timestamp"),
        ),
        // --- body: JSON ---
        case("empty body", Raw(b""), 400, card, Some("$")),
        case("not JSON", Raw(b"card please"), 400, card, Some("$")),
        case(
            "truncated JSON",
            Raw(b"{\"payment_method\": {"),
            400,
            card,
            Some("$"),
        ),
        case("a JSON array", Raw(b"[]"), 400, card, Some("$")),
        case(
            "duplicate key",
            Raw(br#"{"metadata": {}, "metadata": {}}"#),
            400,
            card,
            Some("$"),
        ),
        // --- body: schema ---
        case(
            "unknown top-level field",
            Set("/order_id", json!("ord_1")),
            400,
            card,
            Some("$.order_id"),
        ),
        case(
            "unknown card field",
            Set("/payment_method/pin", json!("1234")),
            400,
            card,
            Some("$.payment_method.pin"),
        ),
        case(
            "unknown allowance field",
            Set("/allowance/order_id", json!("o")),
            400,
            card,
            Some("$.allowance.order_id"),
        ),
        case(
            "missing payment_method",
            Remove("/payment_method"),
            400,
            card,
            Some("$.payment_method"),
        ),
        case(
            "missing allowance",
            Remove("/allowance"),
            400,
            card,
            Some("$.allowance"),
        ),
        case(
            "missing risk_signals",
            Remove("/risk_signals"),
            400,
            card,
            Some("$.risk_signals"),
        ),
        case(
            "missing metadata",
            Remove("/metadata"),
            400,
            card,
            Some("$.metadata"),
        ),
        case(
            "missing card number",
            Remove("/payment_method/number"),
            400,
            card,
            Some("$.payment_method.number"),
        ),
        case(
            "missing funding type",
            Remove("/payment_method/display_card_funding_type"),
            400,
            card,
            Some("$.payment_method.display_card_funding_type"),
        ),
        case(
            "missing max_amount",
            Remove("/allowance/max_amount"),
            400,
            card,
            Some("$.allowance.max_amount"),
        ),
        case(
            "type bank",
            Set("/payment_method/type", json!("bank")),
            400,
            card,
            Some("$.payment_method.type"),
        ),
        case(
            "card_number_type dpan",
            Set("/payment_method/card_number_type", json!("dpan")),
            400,
            card,
            Some("$.payment_method.card_number_type"),
        ),
        case(
            "number as a number",
            Set("/payment_method/number", json!(4242424242424242u64)),
            400,
            card,
            Some("$.payment_method.number"),
        ),
        case(
            "exp_month of 3 characters",
            Set("/payment_method/exp_month", json!("011")),
            400,
            card,
            Some("$.payment_method.exp_month"),
        ),
        case(
            "cvc of 5 characters",
            Set("/payment_method/cvc", json!("12345")),
            400,
            card,
            Some("$.payment_method.cvc"),
        ),
        case(
            "display_last4 letters",
            Set("/payment_method/display_last4", json!("42a2")),
            400,
            card,
            Some("$.payment_method.display_last4"),
        ),
        case(
            "checks_performed unknown",
            Set("/payment_method/checks_performed", json!(["avs", "3ds"])),
            400,
            card,
            Some("$.payment_method.checks_performed[1]"),
        ),
        case(
            "metadata value a number",
            Set("/metadata/campaign", json!(4)),
            400,
            card,
            Some("$.metadata.campaign"),
        ),
        case(
            "virtual a string",
            Set("/payment_method/virtual", json!("no")),
            400,
            card,
            Some("$.payment_method.virtual"),
        ),
        case(
            "null card name",
            Set("/payment_method/name", Value::Null),
            400,
            card,
            Some("$.payment_method.name"),
        ),
        case(
            "currency upper case",
            Set("/allowance/currency", json!("USD")),
            400,
            card,
            Some("$.allowance.currency"),
        ),
        case(
            "currency of 4 letters",
            Set("/allowance/currency", json!("usdt")),
            400,
            card,
            Some("$.allowance.currency"),
        ),
        case(
            "max_amount a string",
            Set("/allowance/max_amount", json!("2000")),
            400,
            card,
            Some("$.allowance.max_amount"),
        ),
        case(
            "max_amount 2000.0",
            Raw(b"MAX_AMOUNT_FLOAT"),
            400,
            card,
            Some("$.allowance.max_amount"),
        ),
        case(
            "max_amount beyond 64 bits",
            Raw(b"MAX_AMOUNT_HUGE"),
            400,
            card,
            Some("$.allowance.max_amount"),
        ),
        case(
            "reason recurring",
            Set("/allowance/reason", json!("recurring")),
            400,
            card,
            Some("$.allowance.reason"),
        ),
        case(
            "expires_at not a time",
            Set("/allowance/expires_at", json!("next week")),
            400,
            card,
            Some("$.allowance.expires_at"),
        ),
        case(
            "merchant_id of 257 characters",
            Set("/allowance/merchant_id", json!("m".repeat(257))),
            400,
            card,
            Some("$.allowance.merchant_id"),
        ),
        case(
            "risk type unknown",
            Set("/risk_signals/0/type", json!("velocity")),
            400,
            card,
            Some("$.risk_signals[0].type"),
        ),
        case(
            "risk score a string",
            Set("/risk_signals/0/score", json!("10")),
            400,
            card,
            Some("$.risk_signals[0].score"),
        ),
        case(
            "country of 3 letters",
            Set("/billing_address/country", json!("USA")),
            400,
            card,
            Some("$.billing_address.country"),
        ),
        case(
            "line_one of 61 characters",
            Set("/billing_address/line_one", json!("x".repeat(61))),
            400,
            card,
            Some("$.billing_address.line_one"),
        ),
        case(
            "address without city",
            Remove("/billing_address/city"),
            400,
            card,
            Some("$.billing_address.city"),
        ),
        // --- body: semantics (422) ---
        case(
            "card number fails Luhn",
            Set("/payment_method/number", json!("4242424242424241")),
            422,
            card,
            Some("$.payment_method.number"),
        ),
        case(
            "card number with letters",
            Set("/payment_method/number", json!("4242abcd42424242")),
            422,
            card,
            Some("$.payment_method.number"),
        ),
        case(
            "card number too short",
            Set("/payment_method/number", json!("42424242")),
            422,
            card,
            Some("$.payment_method.number"),
        ),
        case(
            "exp_month 13",
            Set("/payment_method/exp_month", json!("13")),
            422,
            card,
            Some("$.payment_method.exp_month"),
        ),
        case(
            "exp_year 26",
            Set("/payment_method/exp_year", json!("26")),
            422,
            card,
            Some("$.payment_method.exp_year"),
        ),
        case(
            "card expired",
            Set("/payment_method/exp_year", json!("2024")),
            422,
            card,
            Some("$.payment_method.exp_year"),
        ),
        case(
            "exp_month without exp_year",
            Remove("/payment_method/exp_year"),
            422,
            card,
            Some("$.payment_method.exp_year"),
        ),
        case(
            "cvc letters",
            Set("/payment_method/cvc", json!("2a3")),
            422,
            card,
            Some("$.payment_method.cvc"),
        ),
        case(
            "iin not the card's",
            Set("/payment_method/iin", json!("555555")),
            422,
            card,
            Some("$.payment_method.iin"),
        ),
        case(
            "display_last4 not the card's",
            Set("/payment_method/display_last4", json!("1111")),
            422,
            card,
            Some("$.payment_method.display_last4"),
        ),
        case(
            "brand with a space",
            Set("/payment_method/display_brand", json!("American Express")),
            422,
            card,
            Some("$.payment_method.display_brand"),
        ),
        case(
            "currency not ISO 4217",
            Set("/allowance/currency", json!("abc")),
            422,
            card,
            Some("$.allowance.currency"),
        ),
        case(
            "max_amount zero",
            Set("/allowance/max_amount", json!(0)),
            422,
            card,
            Some("$.allowance.max_amount"),
        ),
        case(
            "max_amount negative",
            Set("/allowance/max_amount", json!(-5)),
            422,
            card,
            Some("$.allowance.max_amount"),
        ),
        case(
            "max_amount overflows the currency",
            Set("/allowance/max_amount", json!(9_000_000_000_000_000_000i64)),
            422,
            card,
            Some("$.allowance.max_amount"),
        ),
        case(
            "max_amount beyond 2^53",
            Set("/allowance/max_amount", json!(9_007_199_254_740_993i64)),
            422,
            card,
            Some("$.allowance.max_amount"),
        ),
        case(
            "allowance already expired",
            Set("/allowance/expires_at", json!("2025-09-29T10:59:59Z")),
            422,
            card,
            Some("$.allowance.expires_at"),
        ),
        case(
            "merchant id with a space",
            Set("/allowance/merchant_id", json!("acme store")),
            422,
            card,
            Some("$.allowance.merchant_id"),
        ),
        case(
            "risk signal says block",
            Set("/risk_signals/0/action", json!("blocked")),
            422,
            card,
            Some("$.risk_signals[0].action"),
        ),
        case(
            "51 metadata entries",
            Set(
                "/metadata",
                Value::Object((0..51).map(|i| (format!("k{i}"), json!("v"))).collect()),
            ),
            422,
            card,
            Some("$.metadata"),
        ),
        case(
            "empty session id",
            Set("/allowance/checkout_session_id", json!("")),
            422,
            card,
            Some("$.allowance.checkout_session_id"),
        ),
        case("nothing wrong (control)", Nothing, 201, "", None),
    ]
}

fn body_for(raw: &[u8], valid: &Value) -> Vec<u8> {
    let text = serde_json::to_string(valid).unwrap();
    match raw {
        b"MAX_AMOUNT_FLOAT" => text
            .replace("\"max_amount\":2000", "\"max_amount\":2000.0")
            .into_bytes(),
        b"MAX_AMOUNT_HUGE" => text
            .replace(
                "\"max_amount\":2000",
                "\"max_amount\":99999999999999999999999",
            )
            .into_bytes(),
        other => other.to_vec(),
    }
}

#[tokio::test]
async fn every_bad_request_is_a_typed_published_refusal() {
    let h = harness(|c| c).await;
    let error = validator(DP, "Error");
    let valid = example("examples.delegate_payment.json", "delegate_payment_request");
    let table = cases();
    assert!(table.len() >= 41, "{} cases", table.len());
    let mut failures = Vec::new();
    for (i, c) in table.into_iter().enumerate() {
        let key = format!("bad-{i}");
        let mut headers: Vec<(&str, String)> = standard_headers(&key)
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect();
        let mut body = valid.clone();
        let mut raw = None;
        match &c.edit {
            Edit::Set(p, v) => {
                let (parent, last) = p.rsplit_once('/').unwrap();
                match body.pointer_mut(parent).unwrap() {
                    Value::Object(m) => {
                        m.insert(last.to_owned(), v.clone());
                    }
                    Value::Array(a) => a[last.parse::<usize>().unwrap()] = v.clone(),
                    _ => panic!(),
                }
            }
            Edit::Remove(p) => remove(&mut body, p),
            Edit::Raw(r) => raw = Some(body_for(r, &valid)),
            Edit::Header(name, value) => {
                headers.retain(|(k, _)| k != name);
                if let Some(v) = value {
                    headers.push((name, (*v).to_owned()));
                }
            }
            Edit::Nothing => {}
        }
        let bytes = raw.unwrap_or_else(|| serde_json::to_vec(&body).unwrap());
        let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = h
            .post_raw("/agentic_commerce/delegate_payment", &hs, bytes)
            .await;
        let ok = a.status == c.status
            && (c.status == 201 || a.body["code"] == c.code)
            && a.body.get("param").and_then(Value::as_str) == c.param;
        if !ok {
            failures.push(format!(
                "{}: expected {} {} {:?}, got {} {}",
                c.name, c.status, c.code, c.param, a.status, a.body
            ));
            continue;
        }
        if c.status == 201 {
            continue;
        }
        assert!(
            a.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            c.name
        );
        match c.code {
            "unauthorized" => assert_eq!(
                a.body,
                json!({"type": "unauthorized", "code": "unauthorized", "message": "Unauthorized"}),
                "{}: the OpenAPI's 401 example",
                c.name
            ),
            "missing_api_version" | "unsupported_api_version" => {
                assert_eq!(a.body["type"], "invalid_request");
                assert_eq!(a.body["supported_versions"], json!(["2026-04-17"]));
            }
            _ => {
                let errs: Vec<String> = error.iter_errors(&a.body).map(|e| e.to_string()).collect();
                assert!(errs.is_empty(), "{}: {errs:?} {}", c.name, a.body);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing was stored for any refusal: only the control case's card is in the vault.
    assert_eq!(credentials_stored(&h.memory), 1);
}

#[tokio::test]
async fn signature_failures_are_401_and_store_nothing() {
    let h = harness(|c| signed(c).with_timestamp_window(chrono::Duration::seconds(300))).await;
    let body = example("examples.delegate_payment.json", "delegate_payment_request");
    let now = "2025-09-29T11:00:00Z";
    let good = sign(&platform_pair(), now, &body);
    let stale_ts = "2025-09-29T10:54:59Z";
    let stale = sign(&platform_pair(), stale_ts, &body);
    let future_ts = "2025-09-29T11:05:01Z";
    let future = sign(&platform_pair(), future_ts, &body);
    let stranger = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).unwrap();
    let foreign = sign(&stranger, now, &body);
    let mut other = body.clone();
    other["allowance"]["max_amount"] = json!(999_999);
    let for_other = sign(&platform_pair(), now, &other);
    let padded = format!("{good}==");
    let std_b64 = good.replace('-', "+").replace('_', "/") + "+";
    for (what, sig, ts) in [
        ("no signature", None, Some(now)),
        ("no timestamp", Some(good.as_str()), None),
        ("stale timestamp", Some(stale.as_str()), Some(stale_ts)),
        ("future timestamp", Some(future.as_str()), Some(future_ts)),
        (
            "signature for another timestamp",
            Some(good.as_str()),
            Some("2025-09-29T11:00:01Z"),
        ),
        ("another key", Some(foreign.as_str()), Some(now)),
        (
            "signature of another body",
            Some(for_other.as_str()),
            Some(now),
        ),
        ("padded base64url", Some(padded.as_str()), Some(now)),
        ("not base64url", Some(std_b64.as_str()), Some(now)),
        ("empty signature", Some(""), Some(now)),
    ] {
        let key = what.replace(' ', "-");
        let mut headers = standard_headers(&key);
        if let Some(s) = sig {
            headers.push(("Signature", s));
        }
        if let Some(t) = ts {
            headers.push(("Timestamp", t));
        }
        let a = h
            .post_raw(
                "/agentic_commerce/delegate_payment",
                &headers,
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert_eq!(a.body["code"], "unauthorized", "{what}");
    }
    assert_eq!(credentials_stored(&h.memory), 0);
    let mut headers = standard_headers("good");
    headers.push(("Signature", &good));
    headers.push(("Timestamp", now));
    let a = h
        .post_raw(
            "/agentic_commerce/delegate_payment",
            &headers,
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
}
