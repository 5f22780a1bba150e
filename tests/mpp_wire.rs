//! I11 and I12 for the 402 wire forms: every bad challenge, credential, receipt and x402 header
//! is refused with a typed error naming what is wrong, never a panic; I17: one spelling per
//! value (padding, alphabet, trailing bits, JCS, duplicate keys and parameters, `null`).
//!
//! One table of bad inputs, each row with the error it must produce; all failing rows are
//! reported at once. Then the happy paths the table mutates, and a property: any string given
//! as any header is read without panicking.
#![cfg(all(feature = "mpp", feature = "x402"))]

use base64::Engine as _;
use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use agent_mandate::domain::Currency;
use agent_mandate::json::InputErrorKind as K;
use agent_mandate::protocols::mpp::{
    body_digest, BindingSecret, Challenge, ChallengeIssuer, ChargeRequest, ChargeTerms, Credential,
    Payload, ProblemCode, Receipt, Slots, VerifyError,
};
use agent_mandate::protocols::x402::{PaymentPayload, PaymentRequired, SettlementResponse};
use agent_mandate::protocols::{AssetRegistry, OfferError, WireError};

const SECRET: &[u8] = b"test secret, 32 bytes long......";
const REALM: &str = "api.example.com";
const URL: &str = "https://api.example.com/v1/answer";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 28, 9, 0, 0).unwrap()
}

fn b64u(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn b64s(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn issuer() -> ChallengeIssuer {
    ChallengeIssuer::new(
        REALM,
        BindingSecret::new(SECRET.to_vec()).unwrap(),
        Duration::minutes(5),
    )
    .unwrap()
}

fn terms(amount: &str, currency: &str) -> ChargeTerms {
    ChargeTerms {
        method: "stripe".into(),
        request: ChargeRequest {
            amount: amount.into(),
            currency: currency.into(),
            recipient: None,
            description: Some("One answer".into()),
            external_id: None,
            method_details: None,
        },
        description: Some("One answer".into()),
        opaque: None,
    }
}

fn challenge() -> Challenge {
    issuer().issue(&terms("50", "eur"), None, now()).unwrap()
}

fn payload() -> Payload {
    let mut m = serde_json::Map::new();
    m.insert("spt".into(), "spt_test_secret_value".into());
    Payload::new(m)
}

fn credential() -> Credential {
    Credential::new(&challenge(), payload(), None)
}

fn cred_header(c: &Credential) -> String {
    c.to_header().unwrap()
}

fn cred_json(json: &str) -> String {
    format!("Payment {}", b64u(json.as_bytes()))
}

/// A challenge header with `params` written as given (values quoted unless they start with
/// `=`, which writes the rest as a token).
fn header(params: &[(&str, &str)]) -> String {
    let parts: Vec<String> = params
        .iter()
        .map(|(k, v)| match v.strip_prefix('=') {
            Some(token) => format!("{k}={token}"),
            None => format!("{k}=\"{v}\""),
        })
        .collect();
    format!("Payment {}", parts.join(", "))
}

const REQ: &str = r#"{"amount":"50","currency":"eur"}"#;

fn base(replace: &[(&'static str, String)], drop: &[&str]) -> String {
    let mut params: Vec<(&'static str, String)> = vec![
        ("id", "abc".into()),
        ("realm", REALM.into()),
        ("method", "stripe".into()),
        ("intent", "charge".into()),
        ("request", b64u(REQ.as_bytes())),
        ("expires", "2026-06-28T09:05:00Z".into()),
    ];
    for (k, v) in replace {
        match params.iter_mut().find(|(n, _)| n == k) {
            Some(p) => p.1 = v.clone(),
            None => params.push((k, v.clone())),
        }
    }
    params.retain(|(k, _)| !drop.contains(k));
    let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    header(&refs)
}

fn with_request(json: &str) -> String {
    base(&[("request", b64u(json.as_bytes()))], &[])
}

fn offer(h: &str) -> Result<(), OfferError> {
    let mut assets = AssetRegistry::new();
    assets
        .register(
            "tempo",
            "0x20c0000000000000000000000000000000000000",
            Currency::USD,
            6,
        )
        .unwrap();
    let c = Challenge::parse(h)?;
    c.offer(&["stripe", "tempo"], &assets, URL, now())
        .map(|_| ())
}

fn verify(h: &str) -> Result<(), VerifyError> {
    issuer().verify(h, None, now()).map(|_| ())
}

fn verify_terms(h: &str, t: &ChargeTerms) -> Result<(), VerifyError> {
    issuer().verify(h, None, now())?.check_terms(t)
}

fn echo_with(f: impl FnOnce(&mut Credential)) -> String {
    let mut c = credential();
    f(&mut c);
    cred_header(&c)
}

fn x402_required(json: &str) -> String {
    b64s(json.as_bytes())
}

const X402_REQ: &str = r#"{"x402Version":2,"resource":{"url":"https://api.example.com/premium"},"accepts":[{"scheme":"exact","network":"eip155:84532","amount":"10000","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","payTo":"0x209693Bc6afc0C5328bA36FaF03C514EF312287C","maxTimeoutSeconds":60}]}"#;

fn x402_offer(json: &str) -> Result<(), OfferError> {
    let mut assets = AssetRegistry::new();
    assets
        .register(
            "eip155:84532",
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            Currency::USD,
            6,
        )
        .unwrap();
    let r = PaymentRequired::parse(&x402_required(json))?;
    r.offers(&assets, URL, now()).remove(0).map(|_| ())
}

struct Row {
    name: &'static str,
    ok: bool,
    got: String,
}

macro_rules! row {
    ($rows:ident, $name:expr, $expr:expr, $pat:pat) => {{
        let got = $expr;
        $rows.push(Row {
            name: $name,
            ok: matches!(got, $pat),
            got: format!("{got:?}"),
        });
    }};
}

#[test]
fn bad_input_table() {
    let mut rows: Vec<Row> = Vec::new();
    let long = "a".repeat(20_000);

    // --- challenges: header grammar -------------------------------------------------------
    row!(
        rows,
        "empty header",
        Challenge::parse(""),
        Err(WireError::NotPaymentScheme)
    );
    row!(
        rows,
        "another scheme",
        Challenge::parse("Basic realm=\"x\""),
        Err(WireError::NotPaymentScheme)
    );
    row!(
        rows,
        "token68 instead of params",
        Challenge::parse("Payment abc"),
        Err(WireError::Invalid {
            field: "Payment",
            ..
        })
    );
    row!(
        rows,
        "unterminated quoted-string",
        Challenge::parse("Payment id=\"abc"),
        Err(WireError::Syntax { .. })
    );
    row!(
        rows,
        "quoted-pair at the end",
        Challenge::parse("Payment id=\"abc\\"),
        Err(WireError::Syntax { .. })
    );
    row!(
        rows,
        "params without comma",
        Challenge::parse("Payment id=a realm=b"),
        Err(WireError::Syntax { .. })
    );
    row!(
        rows,
        "no space after scheme",
        Challenge::parse("Payment\tid=a"),
        Err(WireError::Syntax { .. })
    );
    row!(
        rows,
        "empty token value",
        Challenge::parse("Payment id=, realm=x"),
        Err(WireError::Syntax { .. })
    );
    row!(
        rows,
        "control character in quoted value",
        Challenge::parse("Payment id=\"a\u{7}b\""),
        Err(WireError::Syntax { .. })
    );
    row!(
        rows,
        "CRLF in quoted value",
        Challenge::parse("Payment id=\"a\r\nb\""),
        Err(WireError::Syntax { .. })
    );
    row!(
        rows,
        "duplicate parameter",
        Challenge::parse(&base(&[], &[]).replace("id=\"abc\"", "id=\"abc\", id=\"abd\"")),
        Err(WireError::DuplicateParam { .. })
    );
    row!(
        rows,
        "duplicate parameter in another case",
        Challenge::parse(&base(&[], &[]).replace("id=\"abc\"", "id=\"abc\", ID=\"abd\"")),
        Err(WireError::DuplicateParam { .. })
    );
    row!(
        rows,
        "oversize header",
        Challenge::parse(&base(&[("description", long.clone())], &[])),
        Err(WireError::TooLarge { .. })
    );
    row!(
        rows,
        "too many challenges",
        Challenge::parse_all([vec![base(&[], &[]); 17].join(", ").as_str()]),
        Err(WireError::TooMany { .. })
    );
    row!(
        rows,
        "too many parameters",
        Challenge::parse(&format!(
            "{}, {}",
            base(&[], &[]),
            (0..40)
                .map(|i| format!("x{i}=1"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(WireError::TooMany { .. })
    );
    row!(
        rows,
        "two Payment challenges where one is read",
        Challenge::parse(&format!("{}, {}", base(&[], &[]), base(&[], &[]))),
        Err(WireError::TooMany { .. })
    );

    // --- challenges: required parameters ---------------------------------------------------
    row!(
        rows,
        "missing id",
        Challenge::parse(&base(&[], &["id"])),
        Err(WireError::Missing { field: "id" })
    );
    row!(
        rows,
        "empty id",
        Challenge::parse(&base(&[("id", String::new())], &[])),
        Err(WireError::Empty { field: "id" })
    );
    row!(
        rows,
        "id too long",
        Challenge::parse(&base(&[("id", "i".repeat(300))], &[])),
        Err(WireError::TooLarge { field: "id", .. })
    );
    row!(
        rows,
        "missing realm",
        Challenge::parse(&base(&[], &["realm"])),
        Err(WireError::Missing { field: "realm" })
    );
    row!(
        rows,
        "missing method",
        Challenge::parse(&base(&[], &["method"])),
        Err(WireError::Missing { field: "method" })
    );
    row!(
        rows,
        "method in capitals",
        Challenge::parse(&base(&[("method", "Stripe".into())], &[])),
        Err(WireError::Invalid {
            field: "method",
            ..
        })
    );
    row!(
        rows,
        "method with a digit",
        Challenge::parse(&base(&[("method", "stripe2".into())], &[])),
        Err(WireError::Invalid {
            field: "method",
            ..
        })
    );
    row!(
        rows,
        "missing intent",
        Challenge::parse(&base(&[], &["intent"])),
        Err(WireError::Missing { field: "intent" })
    );
    row!(
        rows,
        "intent with a space",
        Challenge::parse(&base(&[("intent", "char ge".into())], &[])),
        Err(WireError::Invalid {
            field: "intent",
            ..
        })
    );
    row!(
        rows,
        "missing request",
        Challenge::parse(&base(&[], &["request"])),
        Err(WireError::Missing { field: "request" })
    );

    // --- challenges: request encoding ------------------------------------------------------
    row!(
        rows,
        "request with padding",
        Challenge::parse(&base(
            &[("request", format!("{}=", b64u(br#"{"a":"1"}"#)))],
            &[]
        )),
        Err(WireError::Base64 {
            field: "request",
            ..
        })
    );
    row!(
        rows,
        "request in the standard alphabet",
        Challenge::parse(&base(&[("request", "ab+/".into())], &[])),
        Err(WireError::Base64 {
            field: "request",
            ..
        })
    );
    row!(
        rows,
        "truncated base64url request",
        Challenge::parse(&base(
            &[("request", b64u(REQ.as_bytes())[..5].to_owned())],
            &[]
        )),
        Err(WireError::Base64 {
            field: "request",
            ..
        })
    );
    row!(
        rows,
        "request with non-zero trailing bits",
        Challenge::parse(&base(&[("request", "eR".into())], &[])),
        Err(WireError::Base64 {
            field: "request",
            ..
        })
    );
    row!(
        rows,
        "request not JSON",
        with_request("amount=50")
            .as_str()
            .parse::<String>()
            .map(|h| Challenge::parse(&h))
            .unwrap(),
        Err(WireError::Json {
            field: "request",
            kind: K::Syntax,
            ..
        })
    );
    row!(
        rows,
        "request a JSON array",
        Challenge::parse(&with_request(r#"["50","eur"]"#)),
        Err(WireError::Invalid {
            field: "request",
            ..
        })
    );
    row!(
        rows,
        "request not JCS (white space)",
        Challenge::parse(&with_request(r#"{"amount": "50","currency":"eur"}"#)),
        Err(WireError::NotCanonical { field: "request" })
    );
    row!(
        rows,
        "request not JCS (key order)",
        Challenge::parse(&with_request(r#"{"currency":"eur","amount":"50"}"#)),
        Err(WireError::NotCanonical { field: "request" })
    );
    row!(
        rows,
        "request not JCS (escaped slash)",
        Challenge::parse(&with_request(r#"{"amount":"50","currency":"e\/r"}"#)),
        Err(WireError::NotCanonical { field: "request" })
    );
    row!(
        rows,
        "request with a duplicate key",
        Challenge::parse(&with_request(
            r#"{"amount":"50","amount":"60","currency":"eur"}"#
        )),
        Err(WireError::NotCanonical { .. } | WireError::Json { .. })
    );
    row!(
        rows,
        "request with a float",
        Challenge::parse(&with_request(r#"{"amount":"50","currency":"eur","x":1.5}"#)),
        Err(WireError::NotCanonical { field: "request" })
    );
    row!(
        rows,
        "request not UTF-8",
        Challenge::parse(&base(&[("request", b64u(b"{\"a\":\"\xff\"}"))], &[])),
        Err(WireError::Invalid {
            field: "request",
            ..
        })
    );
    row!(
        rows,
        "expires not a date-time",
        Challenge::parse(&base(&[("expires", "tomorrow".into())], &[])),
        Err(WireError::Invalid {
            field: "expires",
            ..
        })
    );
    row!(
        rows,
        "expires without an offset",
        Challenge::parse(&base(&[("expires", "2026-06-28T09:05:00".into())], &[])),
        Err(WireError::Invalid {
            field: "expires",
            ..
        })
    );
    row!(
        rows,
        "digest without colons",
        Challenge::parse(&base(
            &[(
                "digest",
                "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=".into()
            )],
            &[]
        )),
        Err(WireError::Invalid {
            field: "digest",
            ..
        })
    );
    row!(
        rows,
        "digest of the wrong length",
        Challenge::parse(&base(&[("digest", "sha-256=:AAAA:".into())], &[])),
        Err(WireError::Invalid {
            field: "digest",
            ..
        })
    );
    row!(
        rows,
        "digest with no sha-256",
        Challenge::parse(&base(
            &[("digest", format!("sha-512=:{}:", b64s(&[0; 64])))],
            &[]
        )),
        Err(WireError::Invalid {
            field: "digest",
            ..
        })
    );
    row!(
        rows,
        "opaque with a non-string value",
        Challenge::parse(&base(&[("opaque", b64u(br#"{"n":1}"#))], &[])),
        Err(WireError::Invalid {
            field: "opaque",
            ..
        })
    );
    row!(
        rows,
        "opaque not JCS",
        Challenge::parse(&base(&[("opaque", b64u(br#"{"b":"1","a":"2"}"#))], &[])),
        Err(WireError::NotCanonical { field: "opaque" })
    );

    // --- challenges: mandate terms ---------------------------------------------------------
    row!(
        rows,
        "unknown method",
        offer(&base(&[("method", "lightning".into())], &[])),
        Err(OfferError::UnknownMethod { .. })
    );
    row!(
        rows,
        "unknown intent",
        offer(&base(&[("intent", "session".into())], &[])),
        Err(OfferError::UnknownIntent { .. })
    );
    row!(
        rows,
        "expired challenge",
        offer(&base(&[("expires", "2026-06-28T09:00:00Z".into())], &[])),
        Err(OfferError::Expired { .. })
    );
    row!(
        rows,
        "amount with decimals",
        offer(&with_request(r#"{"amount":"1.5","currency":"eur"}"#)),
        Err(OfferError::Amount {
            field: "amount",
            ..
        })
    );
    row!(
        rows,
        "negative amount",
        offer(&with_request(r#"{"amount":"-5","currency":"eur"}"#)),
        Err(OfferError::Amount {
            field: "amount",
            ..
        })
    );
    row!(
        rows,
        "zero amount",
        offer(&with_request(r#"{"amount":"0","currency":"eur"}"#)),
        Err(OfferError::Invalid {
            field: "amount",
            ..
        })
    );
    row!(
        rows,
        "amount with a leading zero",
        offer(&with_request(r#"{"amount":"050","currency":"eur"}"#)),
        Err(OfferError::Invalid {
            field: "amount",
            ..
        })
    );
    row!(
        rows,
        "amount beyond any money",
        offer(&with_request(
            r#"{"amount":"999999999999999999999999999999999999999","currency":"eur"}"#
        )),
        Err(OfferError::Amount {
            field: "amount",
            ..
        })
    );
    row!(
        rows,
        "amount as a JSON number",
        offer(&with_request(r#"{"amount":50,"currency":"eur"}"#)),
        Err(OfferError::Wire(WireError::Json {
            field: "request",
            kind: K::WrongType,
            ..
        }))
    );
    row!(
        rows,
        "amount missing",
        offer(&with_request(r#"{"currency":"eur"}"#)),
        Err(OfferError::Wire(WireError::Json {
            field: "request",
            kind: K::MissingField,
            ..
        }))
    );
    row!(
        rows,
        "unknown currency",
        offer(&with_request(r#"{"amount":"50","currency":"xyz"}"#)),
        Err(OfferError::UnknownCurrency { .. })
    );
    row!(
        rows,
        "non-payment ISO code",
        offer(&with_request(r#"{"amount":"50","currency":"xau"}"#)),
        Err(OfferError::UnknownCurrency { .. })
    );
    row!(
        rows,
        "unregistered token",
        offer(&with_request(r#"{"amount":"50","currency":"0xdead"}"#)),
        Err(OfferError::UnknownCurrency { .. })
    );
    row!(rows, "token amount below the currency's minor unit", offer(&base(&[("method", "tempo".into()), ("request", b64u(br#"{"amount":"10001","currency":"0x20c0000000000000000000000000000000000000"}"#))], &[])), Err(OfferError::Amount { field: "amount", .. }));
    row!(
        rows,
        "realm not a merchant id",
        offer(&base(&[("realm", "api example com".into())], &[])),
        Err(OfferError::Invalid { field: "realm", .. })
    );
    for (name, realm) in [
        ("realm of another host", "evil.example"),
        ("realm of a sub-domain", "pay.api.example.com"),
        ("realm of another port", "api.example.com:8443"),
        ("realm of another scheme", "http://api.example.com"),
    ] {
        row!(
            rows,
            name,
            offer(&base(&[("realm", realm.into())], &[])),
            Err(OfferError::OriginMismatch { field: "realm", .. })
        );
    }
    row!(
        rows,
        "recipient not a seller id",
        offer(&with_request(
            r#"{"amount":"50","currency":"eur","recipient":"a b"}"#
        )),
        Err(OfferError::Invalid {
            field: "recipient",
            ..
        })
    );

    // --- credentials: reading --------------------------------------------------------------
    row!(
        rows,
        "credential of another scheme",
        verify("Bearer abc"),
        Err(VerifyError::Malformed(WireError::NotPaymentScheme))
    );
    row!(
        rows,
        "credential without a token",
        verify("Payment"),
        Err(VerifyError::Malformed(WireError::Missing { .. }))
    );
    row!(
        rows,
        "credential with padding",
        verify(&format!("{}=", cred_header(&credential()))),
        Err(VerifyError::Malformed(WireError::Base64 {
            field: "credential",
            ..
        }))
    );
    row!(
        rows,
        "truncated credential",
        verify(&cred_header(&credential())[..41]),
        Err(VerifyError::Malformed(
            WireError::Base64 { .. } | WireError::Invalid { .. } | WireError::Json { .. }
        ))
    );
    row!(
        rows,
        "credential not JSON",
        verify(&cred_json("challenge")),
        Err(VerifyError::Malformed(WireError::Json {
            kind: K::Syntax,
            ..
        }))
    );
    row!(
        rows,
        "credential without payload",
        verify(&cred_json(
            r#"{"challenge":{"id":"a","realm":"r","method":"stripe","intent":"charge","request":"e30"}}"#
        )),
        Err(VerifyError::Malformed(WireError::Json {
            kind: K::MissingField,
            ..
        }))
    );
    row!(
        rows,
        "credential without challenge",
        verify(&cred_json(r#"{"payload":{}}"#)),
        Err(VerifyError::Malformed(WireError::Json {
            kind: K::MissingField,
            ..
        }))
    );
    row!(
        rows,
        "credential with an empty id",
        verify(&echo_with(|c| c.challenge.id.clear())),
        Err(VerifyError::Malformed(WireError::Empty { .. }))
    );
    row!(
        rows,
        "credential payload an array",
        verify(&cred_json(
            r#"{"challenge":{"id":"a","realm":"r","method":"stripe","intent":"charge","request":"e30"},"payload":[]}"#
        )),
        Err(VerifyError::Malformed(WireError::Json {
            kind: K::WrongType,
            ..
        }))
    );
    row!(
        rows,
        "credential with null source",
        verify(&cred_json(
            r#"{"challenge":{"id":"a","realm":"r","method":"stripe","intent":"charge","request":"e30"},"payload":{},"source":null}"#
        )),
        Err(VerifyError::Malformed(WireError::Json { .. }))
    );
    row!(
        rows,
        "credential with a duplicate key",
        verify(&cred_json(
            r#"{"challenge":{"id":"a","id":"b","realm":"r","method":"stripe","intent":"charge","request":"e30"},"payload":{}}"#
        )),
        Err(VerifyError::Malformed(WireError::Json { .. }))
    );
    row!(
        rows,
        "oversize credential",
        verify(&format!("Payment {}", "A".repeat(40_000))),
        Err(VerifyError::Malformed(WireError::TooLarge { .. }))
    );

    // --- credentials: binding, expiry, digest ----------------------------------------------
    row!(
        rows,
        "wrong HMAC",
        verify(&echo_with(|c| c.challenge.id = b64u(&[7u8; 32]))),
        Err(VerifyError::Binding { field: "id" })
    );
    row!(
        rows,
        "id not base64url",
        verify(&echo_with(|c| c.challenge.id = "not an id".into())),
        Err(VerifyError::Binding { field: "id" })
    );
    row!(
        rows,
        "id from another secret",
        verify(&{
            let other = ChallengeIssuer::new(
                REALM,
                BindingSecret::new(b"another secret of enough length".to_vec()).unwrap(),
                Duration::minutes(5),
            )
            .unwrap();
            let c = other.issue(&terms("50", "eur"), None, now()).unwrap();
            cred_header(&Credential::new(&c, payload(), None))
        }),
        Err(VerifyError::Binding { field: "id" })
    );
    row!(
        rows,
        "another realm",
        verify(&echo_with(|c| c.challenge.realm = "evil.example".into())),
        Err(VerifyError::Binding { field: "realm" })
    );
    row!(
        rows,
        "request changed in the echo",
        verify(&echo_with(
            |c| c.challenge.request = b64u(br#"{"amount":"1","currency":"eur"}"#)
        )),
        Err(VerifyError::Binding { field: "id" })
    );
    row!(
        rows,
        "expires changed in the echo",
        verify(&echo_with(
            |c| c.challenge.expires = Some("2099-01-01T00:00:00Z".into())
        )),
        Err(VerifyError::Binding { field: "id" })
    );
    row!(
        rows,
        "method changed in the echo",
        verify(&echo_with(|c| c.challenge.method = "card".into())),
        Err(VerifyError::Binding { field: "id" })
    );
    row!(
        rows,
        "digest added in the echo",
        verify(&echo_with(|c| c.challenge.digest = Some(body_digest(b"x")))),
        Err(VerifyError::Binding { field: "id" })
    );
    row!(
        rows,
        "expired challenge",
        issuer()
            .verify(
                &cred_header(&credential()),
                None,
                now() + Duration::minutes(5)
            )
            .map(|_| ()),
        Err(VerifyError::Expired { .. })
    );
    row!(
        rows,
        "bound challenge without expires",
        verify(&echo_with(|c| {
            c.challenge.expires = None;
            let s = BindingSecret::new(SECRET.to_vec()).unwrap();
            c.challenge.id = s.challenge_id(&Slots {
                realm: REALM,
                method: "stripe",
                intent: "charge",
                request: &c.challenge.request,
                expires: None,
                digest: None,
                opaque: c.challenge.opaque.as_deref(),
            });
        })),
        Err(VerifyError::NoExpiry)
    );
    row!(
        rows,
        "body digest mismatch",
        {
            let c = issuer()
                .issue(&terms("50", "eur"), Some(b"{\"q\":1}"), now())
                .unwrap();
            issuer()
                .verify(
                    &cred_header(&Credential::new(&c, payload(), None)),
                    Some(b"{\"q\":2}"),
                    now(),
                )
                .map(|_| ())
        },
        Err(VerifyError::DigestMismatch)
    );
    row!(
        rows,
        "body digest bound, no body sent",
        {
            let c = issuer()
                .issue(&terms("50", "eur"), Some(b"{\"q\":1}"), now())
                .unwrap();
            issuer()
                .verify(
                    &cred_header(&Credential::new(&c, payload(), None)),
                    None,
                    now(),
                )
                .map(|_| ())
        },
        Err(VerifyError::DigestMismatch)
    );

    // --- credentials: terms ----------------------------------------------------------------
    row!(
        rows,
        "amount lower than charged",
        verify_terms(&cred_header(&credential()), &terms("100", "eur")),
        Err(VerifyError::TermsMismatch {
            field: "amount",
            insufficient: true
        })
    );
    row!(
        rows,
        "amount higher than charged",
        verify_terms(&cred_header(&credential()), &terms("10", "eur")),
        Err(VerifyError::TermsMismatch {
            field: "amount",
            insufficient: false
        })
    );
    row!(
        rows,
        "currency differs",
        verify_terms(&cred_header(&credential()), &terms("50", "usd")),
        Err(VerifyError::TermsMismatch {
            field: "currency",
            ..
        })
    );
    row!(
        rows,
        "method differs",
        verify_terms(
            &cred_header(&credential()),
            &ChargeTerms {
                method: "card".into(),
                ..terms("50", "eur")
            }
        ),
        Err(VerifyError::TermsMismatch {
            field: "method",
            ..
        })
    );

    // --- receipts --------------------------------------------------------------------------
    row!(rows, "receipt with a failed status", Receipt::parse(&b64u(br#"{"method":"stripe","reference":"pi_1","status":"failed","timestamp":"2026-06-28T09:00:00Z"}"#)), Err(WireError::Invalid { field: "status", .. }));
    row!(
        rows,
        "receipt with a bad timestamp",
        Receipt::parse(&b64u(
            br#"{"method":"stripe","reference":"pi_1","status":"success","timestamp":"yesterday"}"#
        )),
        Err(WireError::Invalid {
            field: "timestamp",
            ..
        })
    );
    row!(rows, "receipt method in capitals", Receipt::parse(&b64u(br#"{"method":"Stripe","reference":"pi_1","status":"success","timestamp":"2026-06-28T09:00:00Z"}"#)), Err(WireError::Invalid { field: "method", .. }));
    row!(
        rows,
        "receipt without reference",
        Receipt::parse(&b64u(
            br#"{"method":"stripe","status":"success","timestamp":"2026-06-28T09:00:00Z"}"#
        )),
        Err(WireError::Json {
            kind: K::MissingField,
            ..
        })
    );
    row!(
        rows,
        "receipt with padding",
        Receipt::parse(&format!("{}=", b64u(br#"{"a":1}"#))),
        Err(WireError::Base64 { .. })
    );

    // --- x402 ------------------------------------------------------------------------------
    row!(
        rows,
        "x402 not base64",
        PaymentRequired::parse("not base64!"),
        Err(WireError::Base64 { .. })
    );
    row!(
        rows,
        "x402 without padding",
        PaymentRequired::parse(x402_required(X402_REQ).trim_end_matches('=')),
        Err(WireError::Base64 { .. })
    );
    row!(
        rows,
        "x402 base64url alphabet",
        PaymentRequired::parse(&b64u(X402_REQ.as_bytes())),
        Err(WireError::Base64 { .. })
    );
    row!(
        rows,
        "x402 version 1",
        PaymentRequired::parse(&x402_required(
            &X402_REQ.replace("\"x402Version\":2", "\"x402Version\":1")
        )),
        Err(WireError::Invalid {
            field: "x402Version",
            ..
        })
    );
    row!(
        rows,
        "x402 empty accepts",
        PaymentRequired::parse(&x402_required(r#"{"x402Version":2,"accepts":[]}"#)),
        Err(WireError::Empty { field: "accepts" })
    );
    row!(
        rows,
        "x402 too many accepts",
        PaymentRequired::parse(&x402_required(&{
            let v: serde_json::Value = serde_json::from_str(X402_REQ).unwrap();
            let one = v["accepts"][0].clone();
            serde_json::json!({"x402Version": 2, "accepts": vec![one; 17]}).to_string()
        })),
        Err(WireError::TooMany {
            field: "accepts",
            ..
        })
    );
    row!(
        rows,
        "x402 amount as a number",
        PaymentRequired::parse(&x402_required(&X402_REQ.replace("\"10000\"", "10000"))),
        Err(WireError::Json {
            kind: K::WrongType,
            ..
        })
    );
    row!(
        rows,
        "x402 empty payTo",
        PaymentRequired::parse(&x402_required(
            &X402_REQ.replace("0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "")
        )),
        Err(WireError::Empty { field: "payTo" })
    );
    row!(
        rows,
        "x402 duplicate key",
        PaymentRequired::parse(&x402_required(
            &X402_REQ.replace("\"x402Version\":2", "\"x402Version\":2,\"x402Version\":2")
        )),
        Err(WireError::Json { .. })
    );
    row!(
        rows,
        "x402 null optional member",
        PaymentRequired::parse(&x402_required(
            &X402_REQ.replace("\"x402Version\":2", "\"x402Version\":2,\"error\":null")
        )),
        Err(WireError::Json { .. })
    );
    row!(
        rows,
        "x402 oversize",
        PaymentRequired::parse(&"A".repeat(40_000)),
        Err(WireError::TooLarge { .. })
    );
    row!(
        rows,
        "x402 scheme upto",
        x402_offer(&X402_REQ.replace("\"exact\"", "\"upto\"")),
        Err(OfferError::UnknownScheme { .. })
    );
    row!(
        rows,
        "x402 unregistered asset",
        x402_offer(&X402_REQ.replace(
            "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
            "0x0000000000000000000000000000000000000001"
        )),
        Err(OfferError::UnknownCurrency { .. })
    );
    row!(
        rows,
        "x402 same asset on another network",
        x402_offer(&X402_REQ.replace("eip155:84532", "eip155:1")),
        Err(OfferError::UnknownCurrency { .. })
    );
    row!(
        rows,
        "x402 amount below a cent",
        x402_offer(&X402_REQ.replace("\"10000\"", "\"10001\"")),
        Err(OfferError::Amount { .. })
    );
    row!(
        rows,
        "x402 zero timeout",
        x402_offer(&X402_REQ.replace("\"maxTimeoutSeconds\":60", "\"maxTimeoutSeconds\":0")),
        Err(OfferError::Invalid {
            field: "maxTimeoutSeconds",
            ..
        })
    );
    for (name, url) in [
        (
            "x402 resource url of another host",
            "https://evil.example/premium",
        ),
        (
            "x402 resource url of another port",
            "https://api.example.com:8443/premium",
        ),
        (
            "x402 resource url of another scheme",
            "http://api.example.com/premium",
        ),
    ] {
        row!(
            rows,
            name,
            x402_offer(&X402_REQ.replace("https://api.example.com/premium", url)),
            Err(OfferError::OriginMismatch {
                field: "resource.url",
                ..
            })
        );
    }
    row!(
        rows,
        "x402 relative resource url",
        x402_offer(&X402_REQ.replace("https://api.example.com/premium", "/premium")),
        Err(OfferError::Invalid {
            field: "resource.url",
            ..
        })
    );
    row!(
        rows,
        "x402 payload without accepted",
        PaymentPayload::parse(&x402_required(r#"{"x402Version":2,"payload":{}}"#)),
        Err(WireError::Json {
            kind: K::MissingField,
            ..
        })
    );
    row!(
        rows,
        "x402 response success without transaction",
        SettlementResponse::parse(&x402_required(
            r#"{"success":true,"transaction":"","network":"eip155:84532"}"#
        )),
        Err(WireError::Empty {
            field: "transaction"
        })
    );
    row!(
        rows,
        "x402 response without network",
        SettlementResponse::parse(&x402_required(r#"{"success":false,"transaction":""}"#)),
        Err(WireError::Json {
            kind: K::MissingField,
            ..
        })
    );

    let failed: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: got {}", r.name, r.got))
        .collect();
    assert!(rows.len() >= 60, "{} rows", rows.len());
    assert!(
        failed.is_empty(),
        "{} of {} rows failed:\n{}",
        failed.len(),
        rows.len(),
        failed.join("\n")
    );
    // I10: no credential material in any error.
    for r in &rows {
        assert!(
            !r.got.contains("spt_test_secret_value"),
            "{} leaks the payload",
            r.name
        );
    }
}

#[test]
fn problem_codes_follow_the_scheme() {
    assert_eq!(
        VerifyError::Replayed.problem_code(),
        ProblemCode::InvalidChallenge
    );
    assert_eq!(
        VerifyError::DigestMismatch.problem_code(),
        ProblemCode::VerificationFailed
    );
    assert_eq!(
        VerifyError::Malformed(WireError::NotPaymentScheme).problem_code(),
        ProblemCode::MalformedCredential
    );
    let p = VerifyError::Binding { field: "id" }.problem();
    assert_eq!(p.kind, "https://paymentauth.org/problems/invalid-challenge");
    assert_eq!(p.status, 402);
    let json: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
    assert_eq!(
        json["type"],
        "https://paymentauth.org/problems/invalid-challenge"
    );
}

#[test]
fn issued_challenges_round_trip_and_verify() {
    let opaque = [("pi".to_owned(), "pi_123".to_owned())]
        .into_iter()
        .collect();
    let t = ChargeTerms {
        opaque: Some(opaque),
        ..terms("50", "eur")
    };
    let c = issuer().issue(&t, Some(b"{}"), now()).unwrap();
    let h = c.to_header().unwrap();
    let parsed = Challenge::parse(&h).unwrap();
    assert_eq!(parsed, c);
    assert_eq!(parsed.digest(), Some(body_digest(b"{}").as_str()));
    let cred = Credential::new(&parsed, payload(), Some("did:example:agent".into()));
    let back = Credential::parse(&cred.to_header().unwrap()).unwrap();
    assert_eq!(back, cred);
    let v = issuer()
        .verify(&cred.to_header().unwrap(), Some(b"{}"), now())
        .unwrap();
    v.check_terms(&t).unwrap();
    assert_eq!(v.challenge_id(), c.id());
    // The settlement key is stable per credential and differs per payload.
    let k1 = cred.settlement_key().unwrap();
    assert_eq!(k1, back.settlement_key().unwrap());
    let mut m = serde_json::Map::new();
    m.insert("spt".into(), "spt_other".into());
    let other = Credential::new(&parsed, Payload::new(m), None);
    assert_ne!(k1, other.settlement_key().unwrap());
    assert!(!format!("{k1:?}").contains("spt_"));
    // A rotated secret still verifies its unexpired challenges.
    let rotated = ChallengeIssuer::new(
        REALM,
        BindingSecret::new(b"the next secret, long enough....".to_vec()).unwrap(),
        Duration::minutes(5),
    )
    .unwrap()
    .with_previous_secret(BindingSecret::new(SECRET.to_vec()).unwrap());
    rotated
        .verify(&cred.to_header().unwrap(), Some(b"{}"), now())
        .unwrap();
}

#[test]
fn the_specs_examples_parse() {
    // The Payment scheme's example challenge (folded onto one line).
    let c = Challenge::parse(r#"Payment id="x7Tg2pLqR9mKvNwY3hBcZa", realm="api.example.com", method="example", intent="charge", expires="2025-01-15T12:05:00Z", request="eyJhbW91bnQiOiIxMDAwIiwiY3VycmVuY3kiOiJVU0QiLCJyZWNpcGllbnQiOiJhY2N0XzEyMyJ9""#).unwrap();
    let o = c
        .offer(
            &["example"],
            &AssetRegistry::new(),
            URL,
            Utc.with_ymd_and_hms(2025, 1, 15, 12, 0, 0).unwrap(),
        )
        .unwrap();
    assert_eq!(o.amount.to_string(), "10.00 USD");
    assert_eq!(o.seller_id.unwrap().as_str(), "acct_123");
    // Its example credential.
    let cred = Credential::parse("Payment eyJjaGFsbGVuZ2UiOnsiaWQiOiJ4N1RnMnBMcVI5bUt2TndZM2hCY1phIiwicmVhbG0iOiJhcGkuZXhhbXBsZS5jb20iLCJtZXRob2QiOiJleGFtcGxlIiwiaW50ZW50IjoiY2hhcmdlIiwicmVxdWVzdCI6ImV5SmhiVzkxYm5RaU9pSXhNREF3SWl3aVkzVnljbVZ1WTNraU9pSlZVMFFpTENKeVpXTnBjR2xsYm5RaU9pSmhZMk4wWHpFeU15SjkiLCJleHBpcmVzIjoiMjAyNS0wMS0xNVQxMjowNTowMFoifSwicGF5bG9hZCI6eyJwcm9vZiI6IjB4YWJjMTIzLi4uIn19").unwrap();
    assert_eq!(cred.challenge.id, "x7Tg2pLqR9mKvNwY3hBcZa");
    // The Stripe method's example receipt.
    let r = Receipt::parse("eyJtZXRob2QiOiJzdHJpcGUiLCJyZWZlcmVuY2UiOiJwaV8xTjRadjMyZVp2S1lsbzJDUGhWUGtKbFciLCJzdGF0dXMiOiJzdWNjZXNzIiwidGltZXN0YW1wIjoiMjAyNS0wMS0xNVQxMjowNDozMloifQ").unwrap();
    assert_eq!(r.reference, "pi_1N4Zv32eZvKYlo2CPhVPkJlW");
    // The digest example of the scheme (RFC 9530 form).
    assert!(agent_mandate::protocols::mpp::digest_matches(
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:",
        b"{\"hello\": \"world\"}"
    )
    .is_ok());
    // The x402 transport's PAYMENT-RESPONSE example.
    let s = SettlementResponse::parse("eyJzdWNjZXNzIjp0cnVlLCJ0cmFuc2FjdGlvbiI6IjB4MTIzNDU2Nzg5MGFiY2RlZjEyMzQ1Njc4OTBhYmNkZWYxMjM0NTY3ODkwYWJjZGVmMTIzNDU2Nzg5MGFiY2RlZiIsIm5ldHdvcmsiOiJlaXAxNTU6ODQ1MzIiLCJwYXllciI6IjB4ODU3YjA2NTE5RTkxZTNBNTQ1Mzg3OTFiRGJiMEUyMjM3M2UzNmI2NiJ9").unwrap();
    assert!(s.success);
    let back = SettlementResponse::parse(&s.to_header().unwrap()).unwrap();
    assert_eq!(back, s);
}

fn mutated_headers() -> impl Strategy<Value = String> {
    let valid = vec![
        challenge().to_header().unwrap(),
        cred_header(&credential()),
        x402_required(X402_REQ),
        Receipt::success("stripe", "pi_1", now())
            .to_header()
            .unwrap(),
    ];
    (
        proptest::sample::select(valid),
        any::<prop::sample::Index>(),
        any::<u8>(),
        0usize..3,
    )
        .prop_map(|(v, at, byte, op)| {
            let mut bytes = v.into_bytes();
            let i = at
                .index(bytes.len().max(1))
                .min(bytes.len().saturating_sub(1));
            match op {
                0 => bytes.truncate(i),
                1 => bytes[i] = byte,
                _ => bytes.insert(i, byte),
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
}

fn every_reader(s: &str) {
    let _ = Challenge::parse(s);
    let _ = Challenge::parse_all([s, s]);
    let _ = Credential::parse(s);
    let _ = Receipt::parse(s);
    let _ = issuer().verify(s, Some(s.as_bytes()), now());
    let _ = agent_mandate::protocols::mpp::digest_matches(s, b"");
    let _ = PaymentRequired::parse(s);
    let _ = PaymentPayload::parse(s);
    let _ = SettlementResponse::parse(s);
    let _ = offer(s);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// I12: any string is read as any header without panicking.
    #[test]
    fn any_string_is_read_without_panic(s in any::<String>()) {
        every_reader(&s);
    }

    /// I12: strings shaped like challenges (schemes, params, quotes, commas) too.
    #[test]
    fn challenge_shaped_strings_are_read_without_panic(
        s in r#"(Payment|payment|Basic)?( |,|\t)?([a-zA-Z]{1,6}( )?=( )?("([^"\\]|\\.){0,12}"?|[a-zA-Z0-9=+/_-]{0,16})(, ?|,,)?){0,8}"#
    ) {
        every_reader(&s);
    }

    /// I12: valid headers with a byte cut, replaced or inserted are refused or read, never a panic.
    #[test]
    fn mutated_valid_headers_are_read_without_panic(s in mutated_headers()) {
        every_reader(&s);
    }
}
