//! Interop with implementations no one here wrote: the official Python SDKs `pympp` (Machine
//! Payments Protocol) and `x402`, installed by `scripts/with-mpp-sdk.sh` (`MPP_SDK_PYTHON`).
//!
//! - the SDK parses our challenges, finds their HMAC binding valid under the shared secret,
//!   and answers them with credentials our server accepts;
//! - our client parses the SDK's challenges, and both sides compute the same challenge id for
//!   the same inputs and secret (with and without `expires`, `digest`, `opaque`);
//! - the SDK reads our credentials and receipts, and we read its receipts;
//! - x402 headers round-trip through the `x402` package's models both ways.
//!
//! All cases go to one Python process (one start-up, well under a second of work).
#![cfg(all(feature = "mpp", feature = "x402"))]

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use agent_mandate::protocols::mpp::{
    body_digest, BindingSecret, Challenge, ChallengeIssuer, ChargeRequest, ChargeTerms, Credential,
    Payload, Receipt, Slots,
};
use agent_mandate::protocols::x402::{PaymentPayload, PaymentRequired, SettlementResponse};
use agent_mandate::protocols::AssetRegistry;

const SECRET: &str = "interop secret shared by both sides";
const REALM: &str = "api.example.com";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 28, 9, 0, 0).unwrap()
}

fn sdk_python() -> Option<String> {
    match std::env::var("MPP_SDK_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var_os("REQUIRE_MPP_SDK").is_none(),
                "REQUIRE_MPP_SDK is set but MPP_SDK_PYTHON is not"
            );
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: mpp_interop: MPP_SDK_PYTHON not set (run scripts/with-mpp-sdk.sh cargo test --features mpp,x402 --test mpp_interop)"
            );
            None
        }
    }
}

fn run_sdk(python: &str, cases: &[Value]) -> (Vec<Value>, Value) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/sdk.py");
    let mut child = Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the SDK's python");
    let doc = json!({"secret": SECRET, "cases": cases});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sdk.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = v["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), cases.len());
    for (i, r) in results.iter().enumerate() {
        assert!(
            r.get("error").is_none(),
            "case {i} ({}): {}",
            cases[i]["op"],
            r["error"]
        );
    }
    (results, v["versions"].clone())
}

fn issuer() -> ChallengeIssuer {
    ChallengeIssuer::new(
        REALM,
        BindingSecret::new(SECRET.as_bytes().to_vec()).unwrap(),
        Duration::minutes(5),
    )
    .unwrap()
}

fn terms(amount: &str, description: Option<&str>, opaque: bool) -> ChargeTerms {
    ChargeTerms {
        method: "stripe".into(),
        request: ChargeRequest {
            amount: amount.into(),
            currency: "eur".into(),
            recipient: None,
            description: description.map(str::to_owned),
            external_id: Some("order_42".into()),
            method_details: Some(
                json!({"networkId": "profile_test", "paymentMethodTypes": ["card"]})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        },
        description: description.map(str::to_owned),
        opaque: opaque.then(|| {
            [("pi".to_owned(), "pi_123".to_owned())]
                .into_iter()
                .collect()
        }),
    }
}

#[test]
fn the_official_sdks_interoperate_with_our_codecs() {
    let Some(python) = sdk_python() else { return };

    // Our challenges, in several shapes.
    let ours: Vec<(ChargeTerms, Option<&[u8]>)> = vec![
        (terms("50", Some("One answer"), false), None),
        (
            terms("100", None, true),
            Some(b"{\"q\":\"weather\"}".as_slice()),
        ),
        (terms("1", Some("quote \" and \\ backslash"), true), None),
    ];
    let issued: Vec<Challenge> = ours
        .iter()
        .map(|(t, body)| issuer().issue(t, *body, now()).unwrap())
        .collect();
    let our_receipt = Receipt::success("stripe", "pi_ours_1", now());

    // The SDK's challenges: same inputs as a Rust binding below.
    let sdk_inputs = vec![
        json!({"realm": REALM, "method": "stripe", "intent": "charge",
               "request": {"amount": "50", "currency": "eur", "description": "Weather"},
               "expires": "2026-06-28T09:05:00Z"}),
        json!({"realm": REALM, "method": "stripe", "intent": "charge",
               "request": {"amount": "250", "currency": "usd", "recipient": "acct_1",
                           "methodDetails": {"networkId": "profile_x", "paymentMethodTypes": ["card", "link"]}},
               "expires": "2026-06-28T09:05:00Z", "digest": body_digest(b"{}"),
               "opaque": {"b": "2", "a": "1"}, "description": "Digest and opaque"}),
        json!({"realm": REALM, "method": "stripe", "intent": "charge",
               "request": {"amount": "7", "currency": "jpy"}}),
    ];

    // x402 values: ours, and plain JSON for the package to build its models from.
    let x402_req = json!({"x402Version": 2, "error": "PAYMENT-SIGNATURE header is required",
        "resource": {"url": "https://api.example.com/premium", "description": "Premium", "mimeType": "application/json"},
        "accepts": [{"scheme": "exact", "network": "eip155:84532", "amount": "10000",
            "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "maxTimeoutSeconds": 60,
            "extra": {"name": "USDC", "version": "2"}}]});
    let x402_sig = json!({"x402Version": 2, "resource": x402_req["resource"], "accepted": x402_req["accepts"][0],
        "payload": {"signature": "0x2d6a", "authorization": {"from": "0x857b", "to": "0x2096", "value": "10000",
            "validAfter": "1740672089", "validBefore": "1740672154", "nonce": "0xf374"}}});
    let x402_resp = json!({"success": true, "transaction": "0x1234", "network": "eip155:84532", "payer": "0x857b", "amount": "10000"});
    let our_required: PaymentRequired = serde_json::from_value(x402_req.clone()).unwrap();
    let our_signature: PaymentPayload = serde_json::from_value(x402_sig.clone()).unwrap();
    let our_response: SettlementResponse = serde_json::from_value(x402_resp.clone()).unwrap();

    let mut cases = Vec::new();
    for c in &issued {
        cases.push(
            json!({"op": "answer_challenge", "header": c.to_header().unwrap(),
                          "payload": {"spt": "spt_interop_1", "externalId": "client_7"},
                          "source": "did:example:agent"}),
        );
    }
    for input in &sdk_inputs {
        let mut case = input.clone();
        case["op"] = json!("issue_challenge");
        cases.push(case);
    }
    let our_cred = Credential::new(
        &issued[0],
        Payload::new(json!({"spt": "spt_ours"}).as_object().unwrap().clone()),
        None,
    );
    cases.push(json!({"op": "read_credential", "header": our_cred.to_header().unwrap()}));
    cases.push(json!({"op": "receipts", "header": our_receipt.to_header().unwrap()}));
    cases.push(json!({"op": "x402_roundtrip",
        "required": our_required.to_header().unwrap(),
        "signature": our_signature.to_header().unwrap(),
        "response": our_response.to_header().unwrap()}));
    cases.push(json!({"op": "x402_issue", "required": x402_req, "signature": x402_sig, "response": x402_resp}));

    let (results, versions) = run_sdk(&python, &cases);
    let _ = writeln!(std::io::stderr(), "mpp_interop: SDK versions {versions}");
    let mut r = results.into_iter();

    // 1. The SDK reads our challenges, finds them bound under the secret, answers them; our
    //    server accepts its credentials and the terms match.
    for ((t, body), c) in ours.iter().zip(&issued) {
        let got = r.next().unwrap();
        assert_eq!(got["id"], c.id());
        assert_eq!(
            got["sdk_verifies_binding"], true,
            "the SDK recomputes our id: {got}"
        );
        assert_eq!(got["request"], Value::Object(c.request().clone()));
        assert_eq!(got["expires"], c.expires().unwrap());
        assert_eq!(got["description"].as_str(), c.description());
        let auth = got["authorization"].as_str().unwrap();
        let verified = issuer()
            .verify(auth, *body, now())
            .expect("our server accepts the SDK's credential");
        verified.check_terms(t).unwrap();
        assert_eq!(
            verified.credential.payload.str("spt"),
            Some("spt_interop_1")
        );
        assert_eq!(
            verified.credential.source.as_deref(),
            Some("did:example:agent")
        );
        // And refuses it past expiry, or for another body.
        assert!(issuer()
            .verify(auth, *body, now() + Duration::minutes(5))
            .is_err());
        if body.is_some() {
            assert!(issuer().verify(auth, Some(b"{}"), now()).is_err());
        }
    }

    // 2. Our client reads the SDK's challenges; both sides compute the same id.
    let secret = BindingSecret::new(SECRET.as_bytes().to_vec()).unwrap();
    for input in &sdk_inputs {
        let got = r.next().unwrap();
        let header = got["header"].as_str().unwrap();
        let c =
            Challenge::parse(header).unwrap_or_else(|e| panic!("we read the SDK's {header}: {e}"));
        assert_eq!(c.id(), got["id"].as_str().unwrap());
        assert_eq!(got["id"], got["id_again"]);
        let ours = secret.challenge_id(&Slots {
            realm: c.realm(),
            method: c.method(),
            intent: c.intent(),
            request: c.request_wire(),
            expires: c.expires(),
            digest: c.digest(),
            opaque: c.opaque(),
        });
        assert_eq!(ours, c.id(), "same inputs, same secret, same id");
        assert_eq!(Value::Object(c.request().clone()), input["request"]);
        if input.get("expires").is_some() {
            let offer = c
                .offer(
                    &["stripe"],
                    &AssetRegistry::new(),
                    "https://api.example.com/x",
                    now(),
                )
                .unwrap();
            assert_eq!(offer.merchant_id.as_str(), REALM);
        }
    }

    // 3. The SDK reads our credential and receipt; we read its receipt.
    let got = r.next().unwrap();
    assert_eq!(got["id"], issued[0].id());
    assert_eq!(got["payload"]["spt"], "spt_ours");
    let got = r.next().unwrap();
    assert_eq!(got["reference"], "pi_ours_1");
    let theirs = Receipt::parse(got["theirs"].as_str().unwrap()).unwrap();
    assert_eq!(theirs.reference, "pi_sdk_1");
    assert_eq!(theirs.method, "stripe");

    // 4. x402: ours through the package's models and back, and the package's own encodings.
    let got = r.next().unwrap();
    assert_eq!(
        PaymentRequired::parse(got["required"].as_str().unwrap()).unwrap(),
        our_required
    );
    assert_eq!(
        PaymentPayload::parse(got["signature"].as_str().unwrap()).unwrap(),
        our_signature
    );
    assert_eq!(
        SettlementResponse::parse(got["response"].as_str().unwrap()).unwrap(),
        our_response
    );
    let got = r.next().unwrap();
    assert_eq!(
        PaymentRequired::parse(got["required"].as_str().unwrap()).unwrap(),
        our_required
    );
    assert_eq!(
        PaymentPayload::parse(got["signature"].as_str().unwrap()).unwrap(),
        our_signature
    );
    assert_eq!(
        SettlementResponse::parse(got["response"].as_str().unwrap()).unwrap(),
        our_response
    );
}
