//! Signed delegations: a captured signed request cannot mint a second token (the replay
//! cache), a platform's key signs only for that platform (keys bound to principals), the
//! timestamp window's edges, a full replay cache, oversized headers, and verification as the
//! default of `AcpConfig::new` (I11: a refused request stores nothing).
#![cfg(all(
    feature = "acp",
    feature = "axum",
    feature = "testkit",
    feature = "http"
))]

mod acp_support;

use acp_support::*;
use agent_mandate::acp::{AcpConfig, AcpError};
use chrono::Duration;
use serde_json::Value;

const EX: &str = "examples.delegate_payment.json";

fn request() -> Value {
    example(EX, "delegate_payment_request")
}

/// POSTs `body` signed by `pair` at `ts` under `bearer` with `key`.
async fn signed_post(
    h: &Harness,
    bearer: &str,
    key: &str,
    pair: &ring::signature::Ed25519KeyPair,
    ts: &str,
    body: &Value,
) -> Answer {
    let sig = sign(pair, ts, body);
    let mut headers = standard_headers(key);
    headers[0] = ("Authorization", bearer);
    headers.push(("Timestamp", ts));
    headers.push(("Signature", &sig));
    h.post_raw(
        "/agentic_commerce/delegate_payment",
        &headers,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}

#[tokio::test]
async fn acp_signed_request_replayed_with_new_key_is_refused() {
    let h = harness(signed).await;
    let ts = "2025-09-29T11:00:00Z";
    let first = signed_post(&h, PLATFORM_BEARER, "k1", &platform_pair(), ts, &request()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    // The captured request, with a fresh Idempotency-Key: refused, nothing stored.
    let replay = signed_post(&h, PLATFORM_BEARER, "k2", &platform_pair(), ts, &request()).await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert_eq!(replay.body["code"], "unauthorized");
    assert_eq!(credentials_stored(&h.memory), 1);
    // The platform's own retry (same signature, same key) is the idempotent replay.
    h.memory.clock.advance(Duration::seconds(10));
    let retry = signed_post(&h, PLATFORM_BEARER, "k1", &platform_pair(), ts, &request()).await;
    assert_eq!(retry.status, 201, "{}", retry.body);
    assert_eq!(retry.body, first.body);
    assert_eq!(retry.headers["idempotent-replayed"], "true");
    // A new signature (another timestamp) of the same body under a new key is a new request.
    let fresh = signed_post(
        &h,
        PLATFORM_BEARER,
        "k2",
        &platform_pair(),
        "2025-09-29T11:00:10Z",
        &request(),
    )
    .await;
    assert_eq!(fresh.status, 201, "{}", fresh.body);
    assert_ne!(fresh.body["id"], first.body["id"]);
}

#[tokio::test]
async fn a_request_signed_by_platform_a_under_platform_b_is_401() {
    let h =
        harness(|c| signed(c).with_platform_key(platform_b_principal(), platform_b_key())).await;
    let ts = "2025-09-29T11:00:00Z";
    // A's key, B's principal.
    let cross = signed_post(&h, PLATFORM_B_BEARER, "k", &platform_pair(), ts, &request()).await;
    assert_eq!(cross.status, 401, "{}", cross.body);
    // B's key, A's principal.
    let cross = signed_post(&h, PLATFORM_BEARER, "k", &platform_b_pair(), ts, &request()).await;
    assert_eq!(cross.status, 401, "{}", cross.body);
    assert_eq!(credentials_stored(&h.memory), 0);
    // Each with its own key; the same Idempotency-Key in two platforms is two delegations.
    let a = signed_post(&h, PLATFORM_BEARER, "k", &platform_pair(), ts, &request()).await;
    let b = signed_post(
        &h,
        PLATFORM_B_BEARER,
        "k",
        &platform_b_pair(),
        ts,
        &request(),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(b.status, 201, "{}", b.body);
    assert_ne!(a.body["id"], b.body["id"]);
    // A's accepted request replayed by B (B holds a leaked bearer of its own) is refused.
    let stolen = signed_post(
        &h,
        PLATFORM_B_BEARER,
        "k9",
        &platform_pair(),
        ts,
        &request(),
    )
    .await;
    assert_eq!(stolen.status, 401);
    assert_eq!(credentials_stored(&h.memory), 2);
}

#[tokio::test]
async fn a_platform_with_no_key_is_401_when_another_platform_has_one() {
    let h = harness(signed).await;
    let ts = "2025-09-29T11:00:00Z";
    let b = signed_post(
        &h,
        PLATFORM_B_BEARER,
        "k",
        &platform_b_pair(),
        ts,
        &request(),
    )
    .await;
    assert_eq!(b.status, 401, "{}", b.body);
    let unsigned = h
        .post_raw(
            "/agentic_commerce/delegate_payment",
            &[
                ("Authorization", PLATFORM_B_BEARER),
                ("Content-Type", "application/json"),
                ("API-Version", VERSION),
                ("Idempotency-Key", "k2"),
            ],
            serde_json::to_vec(&request()).unwrap(),
        )
        .await;
    assert_eq!(unsigned.status, 401);
    assert_eq!(credentials_stored(&h.memory), 0);
}

/// The window is closed at both ends (`|Timestamp - now| <= window`); a signature is
/// remembered through its last valid instant.
#[tokio::test]
async fn replays_at_the_window_edges_are_refused() {
    let h = harness(|c| signed(c).with_timestamp_window(Duration::seconds(300))).await;
    // The clock is at 11:00:00; a timestamp 300 s ahead is the early edge.
    let ts = "2025-09-29T11:05:00Z";
    let first = signed_post(&h, PLATFORM_BEARER, "e1", &platform_pair(), ts, &request()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    // The late edge: now = ts + 300 s, still inside; the replay is still refused.
    h.memory.clock.advance(Duration::seconds(600));
    let replay = signed_post(&h, PLATFORM_BEARER, "e2", &platform_pair(), ts, &request()).await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    let retry = signed_post(&h, PLATFORM_BEARER, "e1", &platform_pair(), ts, &request()).await;
    assert_eq!(retry.status, 201, "the platform's own retry at the edge");
    // One second later the timestamp itself is refused.
    h.memory.clock.advance(Duration::seconds(1));
    for key in ["e1", "e3"] {
        let late = signed_post(&h, PLATFORM_BEARER, key, &platform_pair(), ts, &request()).await;
        assert_eq!(late.status, 401, "{key}");
    }
    assert_eq!(credentials_stored(&h.memory), 1);
}

#[tokio::test]
async fn a_full_replay_cache_refuses_new_signatures_with_retry_after() {
    let h = harness(|c| {
        signed(c)
            .with_replay_cache_capacity(1)
            .with_timestamp_window(Duration::seconds(60))
    })
    .await;
    let t0 = "2025-09-29T11:00:00Z";
    let t1 = "2025-09-29T11:00:01Z";
    assert_eq!(
        signed_post(&h, PLATFORM_BEARER, "c1", &platform_pair(), t0, &request())
            .await
            .status,
        201
    );
    let full = signed_post(&h, PLATFORM_BEARER, "c2", &platform_pair(), t1, &request()).await;
    assert_eq!(full.status, 429, "{}", full.body);
    let after: u64 = full.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after >= 60, "{after}");
    // The remembered signature was not forgotten to make room.
    let replay = signed_post(&h, PLATFORM_BEARER, "c3", &platform_pair(), t0, &request()).await;
    assert_eq!(replay.status, 401);
    h.memory.clock.advance(Duration::seconds(61));
    let t2 = "2025-09-29T11:01:01Z";
    assert_eq!(
        signed_post(&h, PLATFORM_BEARER, "c2", &platform_pair(), t2, &request())
            .await
            .status,
        201
    );
    assert_eq!(credentials_stored(&h.memory), 2);
}

#[tokio::test]
async fn oversized_signature_and_timestamp_headers_are_401() {
    let (_memory, service) = service(signed);
    let p = platform_principal();
    let body = request();
    let huge = "A".repeat(1 << 20);
    let long_ts = format!("2025-09-29T11:00:00{}Z", ".0".repeat(5000));
    let ts = "2025-09-29T11:00:00Z";
    let good = sign(&platform_pair(), ts, &body);
    for (what, sig, t) in [
        ("1 MiB signature", huge.as_str(), ts),
        ("87-character signature", &format!("{good}A"), ts),
        ("10 kB timestamp", good.as_str(), long_ts.as_str()),
    ] {
        let e = delegate_as(
            &service,
            &p,
            "big",
            &[("Signature", sig), ("Timestamp", t)],
            &body,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AcpError::Unauthorized { .. }), "{what}: {e:?}");
        assert!(e.to_string().len() < 200, "{what}: the reason stays short");
    }
}

#[test]
fn verification_is_the_default_and_the_opt_out_is_named() {
    let signed = AcpConfig::new(
        "acp-vault".parse().unwrap(),
        "5651".parse().unwrap(),
        platform_principal(),
        platform_key(),
    );
    assert!(signed.verifies_signatures());
    assert_eq!(signed.platform_keys().len(), 1);
    assert_eq!(signed.platform_keys()[0].0, platform_principal());
    let unsigned =
        AcpConfig::unsigned_for_testing("acp-vault".parse().unwrap(), "5651".parse().unwrap());
    assert!(!unsigned.verifies_signatures());
    assert!(unsigned
        .with_platform_key(platform_principal(), platform_key())
        .verifies_signatures());
}

#[tokio::test]
async fn an_unsigned_service_ignores_signatures_but_a_signed_one_requires_them() {
    let (_m, unsigned) = service(|c| c);
    let p = platform_principal();
    assert!(delegate_as(&unsigned, &p, "u1", &[], &request())
        .await
        .is_ok());
    let (_m, signed_service) = service(signed);
    let e = delegate_as(&signed_service, &p, "u1", &[], &request())
        .await
        .unwrap_err();
    assert!(matches!(e, AcpError::Unauthorized { .. }), "{e:?}");
}

/// Ed25519's S + L (the group order) is another 64-byte signature of the same message; base64url
/// has other spellings of the same bytes. Neither gets a captured request past the cache.
#[tokio::test]
async fn a_malleated_or_respelled_signature_is_not_a_new_request() {
    use base64::Engine as _;
    let (_memory, service) = service(signed);
    let p = platform_principal();
    let body = request();
    let ts = "2025-09-29T11:00:00Z";
    let good = sign(&platform_pair(), ts, &body);
    assert!(delegate_as(
        &service,
        &p,
        "m1",
        &[("Signature", &good), ("Timestamp", ts)],
        &body
    )
    .await
    .is_ok());
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&good)
        .unwrap();
    // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = u16::from(raw[32 + i]) + u16::from(L[i]) + carry;
        raw[32 + i] = (v & 0xff) as u8;
        carry = v >> 8;
    }
    let malleated = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
    // The last character carries 4 unused bits: another spelling of the same bytes.
    let mut respelled = good.clone();
    let last = respelled.pop().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    respelled.push(alphabet.as_bytes()[idx ^ 1] as char);
    for (what, sig) in [("S + L", malleated), ("trailing bits", respelled)] {
        let e = delegate_as(
            &service,
            &p,
            "m2",
            &[("Signature", &sig), ("Timestamp", ts)],
            &body,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, AcpError::Unauthorized { .. }), "{what}: {e:?}");
    }
}
