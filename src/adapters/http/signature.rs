//! The webhook signature scheme, [Standard Webhooks](https://www.standardwebhooks.com/)
//! (signature version `v1`), and the helper a receiver verifies it with.
//!
//! Every delivery is a `POST` whose body is the [`crate::domain::ChainedEvent`] as JSON (its
//! `seq` and `hash` included), with:
//!
//! | header | value |
//! |---|---|
//! | `webhook-id` | `evt_<seq>_<event hash>`: the event's sequence number in decimal and its chain hash in 64 lower-case hex digits; the same on every redelivery (deduplicate on it: delivery is at least once) |
//! | `webhook-timestamp` | the time of this attempt, unix seconds |
//! | `webhook-signature` | `v1,<base64 HMAC-SHA256(key, signed content)>` |
//!
//! The signed content is the message id, the timestamp and the exact body bytes joined by
//! dots:
//!
//! ```text
//! <webhook-id>.<webhook-timestamp>.<body>
//! ```
//!
//! The sequence number and the event hash are inside the signed message id (and the signed
//! body), so a captured delivery replayed under a later sequence number or another event
//! hash does not verify, and cannot make the receiver drop the real event of that seq as a
//! duplicate. A receiver recomputes the HMAC over the raw body (before any JSON parsing),
//! compares in constant time, and refuses a timestamp further than its tolerance from its own
//! clock. Several space-separated entries may appear in `webhook-signature` (secret
//! rotation); one `v1` match is enough, entries of other versions are ignored.
//!
//! The secret is `whsec_` followed by the standard base64 of the key bytes (padding
//! optional; a secret without the prefix is read as the base64 alone, as the Standard
//! Webhooks libraries do). The key is at least [`MIN_SECRET_BYTES`] (16) bytes; the standard
//! recommends 24 to 64. A shorter key is refused by [`sign`], [`verify_signature`] and the
//! sink's configuration with [`SignatureError::WeakSecret`]; a secret that is not base64 with
//! [`SignatureError::MalformedSecret`]. [`encode_secret`] writes a key in this form.
//!
//! Any Standard Webhooks receiver library verifies these deliveries (the tests check the
//! `standardwebhooks` package from PyPI); [`verify_signature`] also checks the message id and
//! returns the sequence number and hash it authenticated.
//!
//! ```
//! use agent_mandate::adapters::http::{
//!     encode_secret, message_id, sign, verify_signature, DeliveryHeaders, SignatureError,
//! };
//! use agent_mandate::domain::AuditHash;
//! use agent_mandate::ports::Secret;
//! let secret = encode_secret(b"0123456789abcdef0123456789");
//! assert!(secret.expose().starts_with("whsec_"));
//! let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let body = br#"{"seq":1}"#;
//! let id = message_id(1, &AuditHash([7; 32]));
//! let timestamp = now.timestamp().to_string();
//! let signature = sign(&secret, &id, now.timestamp(), body).unwrap();
//! assert!(signature.starts_with("v1,"));
//! let headers = DeliveryHeaders {
//!     id: &id,
//!     timestamp: &timestamp,
//!     signature: &signature,
//! };
//! let tolerance = std::time::Duration::from_secs(300);
//! let verified = verify_signature(&secret, &headers, body, now, tolerance).unwrap();
//! assert_eq!((verified.timestamp, verified.seq), (now.timestamp(), 1));
//! // The same delivery replayed under another sequence number does not verify.
//! let later = message_id(2, &AuditHash([7; 32]));
//! let replayed = DeliveryHeaders { id: &later, ..headers };
//! assert_eq!(
//!     verify_signature(&secret, &replayed, body, now, tolerance),
//!     Err(SignatureError::Mismatch)
//! );
//! assert_eq!(
//!     verify_signature(&Secret::new("whsec_"), &headers, body, now, tolerance),
//!     Err(SignatureError::WeakSecret { min_bytes: 16 })
//! );
//! ```

use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::domain::AuditHash;
use crate::ports::Secret;

/// The message id header.
pub const ID_HEADER: &str = "webhook-id";
/// The timestamp header.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// The version of the signature, the name of its entries in the signature header.
pub const SIGNATURE_VERSION: &str = "v1";
/// The prefix of a secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The shortest webhook key accepted, in bytes (a random 16-byte key is 128 bits).
pub const MIN_SECRET_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// Standard base64, padding optional (what the Standard Webhooks libraries read).
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a signature does not verify, or cannot be made. Never carries the secret or the
/// expected MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A header is malformed or absent (names it: `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`).
    #[error("malformed webhook header: {field}")]
    Malformed {
        /// `webhook-id`, `webhook-timestamp` or `webhook-signature`.
        field: &'static str,
    },
    /// The timestamp is further from now than the tolerance (a replay or a skewed clock).
    #[error("signature timestamp {timestamp} is outside the tolerance of {tolerance_secs} s around {now}")]
    Stale {
        /// The header's timestamp.
        timestamp: i64,
        /// The receiver's time (unix seconds).
        now: i64,
        /// The tolerance.
        tolerance_secs: u64,
    },
    /// No `v1` signature matches the body and headers (tampered body, replayed under another
    /// message id or timestamp, wrong secret).
    #[error("the signature does not match the delivery")]
    Mismatch,
    /// The key is empty or shorter than [`MIN_SECRET_BYTES`]: nothing is signed or verified
    /// with it.
    #[error("the webhook secret must be at least {min_bytes} bytes")]
    WeakSecret {
        /// The minimum length, in bytes.
        min_bytes: usize,
    },
    /// The secret is not `whsec_` followed by standard base64.
    #[error("the webhook secret must be `whsec_` followed by the base64 of the key")]
    MalformedSecret,
}

/// The three Standard Webhooks headers of a delivery, as received (raw header values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryHeaders<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`.
    pub timestamp: &'a str,
    /// `webhook-signature`.
    pub signature: &'a str,
}

/// What a verified delivery authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The signature's timestamp (unix seconds).
    pub timestamp: i64,
    /// The event's sequence number (from the message id).
    pub seq: u64,
    /// The event's chain hash (from the message id).
    pub event_hash: AuditHash,
}

/// The key bytes of `secret` (`whsec_<base64>`), at least [`MIN_SECRET_BYTES`] long.
pub(crate) fn secret_key(secret: &Secret) -> Result<Zeroizing<Vec<u8>>, SignatureError> {
    let text = secret.expose();
    let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
    let key = Zeroizing::new(
        SECRET_BASE64
            .decode(encoded)
            .map_err(|_| SignatureError::MalformedSecret)?,
    );
    if key.len() < MIN_SECRET_BYTES {
        return Err(SignatureError::WeakSecret {
            min_bytes: MIN_SECRET_BYTES,
        });
    }
    Ok(key)
}

/// `key` as a secret in the Standard Webhooks form: `whsec_` and its standard base64.
pub fn encode_secret(key: &[u8]) -> Secret {
    let encoded = Zeroizing::new(STANDARD.encode(key));
    Secret::new(format!("{SECRET_PREFIX}{}", encoded.as_str()))
}

/// The message id of the event `seq` with chain hash `event_hash`:
/// `evt_<seq>_<64 lower-case hex digits>`.
pub fn message_id(seq: u64, event_hash: &AuditHash) -> String {
    format!("evt_{seq}_{}", event_hash.to_hex())
}

/// The sequence number and the event hash of a [`message_id`]; refuses any other spelling
/// (leading zeros, a sign, upper-case hex), so one event has one id.
pub fn parse_message_id(id: &str) -> Result<(u64, AuditHash), SignatureError> {
    let malformed = SignatureError::Malformed { field: ID_HEADER };
    let rest = id.strip_prefix("evt_").ok_or(malformed.clone())?;
    let (seq_text, hash_text) = rest.split_once('_').ok_or(malformed.clone())?;
    let canonical_seq = !seq_text.is_empty()
        && seq_text.bytes().all(|b| b.is_ascii_digit())
        && (seq_text == "0" || !seq_text.starts_with('0'));
    if !canonical_seq {
        return Err(malformed);
    }
    let seq = seq_text.parse::<u64>().map_err(|_| malformed.clone())?;
    if hash_text.len() != 64
        || !hash_text
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(malformed);
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hash_text, &mut hash).map_err(|_| malformed)?;
    Ok((seq, AuditHash(hash)))
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail; an empty MAC state is
    // the fallback only to avoid a panic path (the key is checked long enough before).
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as KeyInit>::new(&Default::default()));
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    mac
}

/// The `webhook-signature` value for the message `id` with `body`, at `timestamp` (unix
/// seconds): `v1,<base64>`.
pub fn sign(
    secret: &Secret,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignatureError> {
    let key = secret_key(secret)?;
    let tag = mac(&key, id, timestamp, body).finalize().into_bytes();
    Ok(format!("{SIGNATURE_VERSION},{}", STANDARD.encode(tag)))
}

/// Verifies a delivery: the secret is a long enough key, the headers parse (the message id
/// is one of [`message_id`]), the timestamp is within `tolerance` of `now`, and one of the
/// `v1` signatures is the HMAC-SHA256 of `<id>.<timestamp>.<body>` under the key
/// (constant-time comparison). Returns what it authenticated.
pub fn verify_signature(
    secret: &Secret,
    headers: &DeliveryHeaders<'_>,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<Verified, SignatureError> {
    let key = secret_key(secret)?;
    let (seq, event_hash) = parse_message_id(headers.id)?;
    let timestamp_text = headers.timestamp;
    let canonical_timestamp = !timestamp_text.is_empty()
        && timestamp_text.bytes().all(|b| b.is_ascii_digit())
        && (timestamp_text == "0" || !timestamp_text.starts_with('0'));
    let timestamp = timestamp_text
        .parse::<i64>()
        .ok()
        .filter(|_| canonical_timestamp)
        .ok_or(SignatureError::Malformed {
            field: TIMESTAMP_HEADER,
        })?;
    let malformed_signature = SignatureError::Malformed {
        field: SIGNATURE_HEADER,
    };
    let mut signatures = Vec::new();
    for entry in headers.signature.split(' ').filter(|e| !e.is_empty()) {
        let (version, value) = entry.split_once(',').ok_or(malformed_signature.clone())?;
        if version == SIGNATURE_VERSION {
            let sig = STANDARD
                .decode(value)
                .map_err(|_| malformed_signature.clone())?;
            signatures.push(sig);
        }
    }
    if signatures.is_empty() {
        return Err(malformed_signature);
    }
    let now_secs = now.timestamp();
    let tolerance_secs = tolerance.as_secs();
    if now_secs.abs_diff(timestamp) > tolerance_secs {
        return Err(SignatureError::Stale {
            timestamp,
            now: now_secs,
            tolerance_secs,
        });
    }
    let expected = mac(&key, headers.id, timestamp, body);
    if signatures
        .iter()
        .any(|sig| expected.clone().verify_slice(sig).is_ok())
    {
        Ok(Verified {
            timestamp,
            seq,
            event_hash,
        })
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"unit test key, 26 bytes...";

    fn secret() -> Secret {
        encode_secret(KEY)
    }

    fn at(t: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(t, 0).expect("time")
    }

    fn headers<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> DeliveryHeaders<'a> {
        DeliveryHeaders {
            id,
            timestamp,
            signature,
        }
    }

    const H: AuditHash = AuditHash([0xab; 32]);

    /// The signed content is `<id>.<timestamp>.<body>` under the decoded key, as the standard
    /// says: computed here by hand.
    #[test]
    fn the_signature_is_the_standard_one() {
        let id = message_id(5, &H);
        assert_eq!(id, format!("evt_5_{}", "ab".repeat(32)));
        let mut by_hand = <HmacSha256 as KeyInit>::new_from_slice(KEY).expect("key");
        by_hand.update(format!("{id}.1000.body").as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(by_hand.finalize().into_bytes()));
        assert_eq!(sign(&secret(), &id, 1_000, b"body"), Ok(expected.clone()));
        // With or without the prefix, padded or not: the same key.
        let bare = Secret::new(secret().expose().trim_start_matches(SECRET_PREFIX));
        assert_eq!(sign(&bare, &id, 1_000, b"body"), Ok(expected.clone()));
        let unpadded = Secret::new(secret().expose().trim_end_matches('='));
        assert_ne!(unpadded.expose(), secret().expose());
        assert_eq!(sign(&unpadded, &id, 1_000, b"body"), Ok(expected));
    }

    #[test]
    fn sign_and_verify() {
        let s = secret();
        let id = message_id(5, &H);
        let sig = sign(&s, &id, 1_000, b"body").expect("signed");
        let tol = Duration::from_secs(300);
        let ok = verify_signature(&s, &headers(&id, "1000", &sig), b"body", at(1_100), tol)
            .expect("verifies");
        assert_eq!((ok.timestamp, ok.seq, ok.event_hash), (1_000, 5, H));
        assert_eq!(
            verify_signature(&s, &headers(&id, "1000", &sig), b"bodY", at(1_000), tol),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed: moving it (to pass the tolerance) breaks the signature.
        assert_eq!(
            verify_signature(&s, &headers(&id, "1001", &sig), b"body", at(1_000), tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(
                &encode_secret(b"another key of 24 bytes!"),
                &headers(&id, "1000", &sig),
                b"body",
                at(1_000),
                tol
            ),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_signature(&s, &headers(&id, "1000", &sig), b"body", at(1_301), tol),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            verify_signature(&s, &headers(&id, "1000", &sig), b"body", at(699), tol),
            Err(SignatureError::Stale { .. })
        ));
        // Rotation: a second signature under the new secret; entries of other versions are
        // ignored.
        let new = encode_secret(b"the rotated key, 24 byte");
        let rotated = format!(
            "v1a,AAAA {sig} {}",
            sign(&new, &id, 1_000, b"body").expect("signed")
        );
        assert_eq!(
            verify_signature(
                &new,
                &headers(&id, "1000", &rotated),
                b"body",
                at(1_000),
                tol
            )
            .map(|v| v.seq),
            Ok(5)
        );
    }

    /// I9, I15: a captured delivery replayed under a later sequence number (or another event
    /// hash) must not verify: both are in the signed message id. Under a scheme that signed
    /// only the timestamp and the body, with the sequence number in an unsigned header, the
    /// replay verified and the receiver dropped the real event of that seq as a duplicate.
    #[test]
    fn replayed_delivery_with_a_later_seq_or_another_hash_does_not_verify() {
        let s = secret();
        let id = message_id(5, &H);
        let sig = sign(&s, &id, 1_000, b"body").expect("signed");
        let tol = Duration::from_secs(300);
        for other in [
            message_id(6, &H),
            message_id(50, &H),
            message_id(5, &AuditHash([0xcd; 32])),
        ] {
            assert_eq!(
                verify_signature(&s, &headers(&other, "1000", &sig), b"body", at(1_000), tol),
                Err(SignatureError::Mismatch),
                "{other}"
            );
        }
        // One event has one id: another spelling of the same seq is refused.
        let zero_padded = id.replacen("evt_5_", "evt_05_", 1);
        assert_eq!(
            verify_signature(
                &s,
                &headers(&zero_padded, "1000", &sig),
                b"body",
                at(1_000),
                tol
            ),
            Err(SignatureError::Malformed { field: ID_HEADER })
        );
        // A header with only another version's entry does not verify.
        let other_version = sig.replacen("v1,", "v2,", 1);
        assert_eq!(
            verify_signature(
                &s,
                &headers(&id, "1000", &other_version),
                b"body",
                at(1_000),
                tol
            ),
            Err(SignatureError::Malformed {
                field: SIGNATURE_HEADER
            })
        );
    }

    /// I10: an empty or short key neither signs nor verifies (anyone could forge with an
    /// empty key); a secret that is not base64 is named as such.
    #[test]
    fn empty_short_or_malformed_secrets_are_refused() {
        let id = message_id(1, &H);
        let good = sign(&secret(), &id, 1, b"").expect("signed");
        for weak in [
            Secret::new(""),
            Secret::new("whsec_"),
            encode_secret(b"k"),
            encode_secret(b"fifteen bytes!!"),
        ] {
            assert_eq!(
                sign(&weak, &id, 1, b""),
                Err(SignatureError::WeakSecret { min_bytes: 16 }),
                "{}",
                weak.len()
            );
            let forged = {
                let key = SECRET_BASE64
                    .decode(weak.expose().trim_start_matches(SECRET_PREFIX))
                    .expect("base64");
                let tag = mac(&key, &id, 1, b"").finalize().into_bytes();
                format!("v1,{}", STANDARD.encode(tag))
            };
            for sig in [&forged, &good] {
                assert_eq!(
                    verify_signature(
                        &weak,
                        &headers(&id, "1", sig),
                        b"",
                        at(1),
                        Duration::from_secs(1)
                    ),
                    Err(SignatureError::WeakSecret { min_bytes: 16 })
                );
            }
        }
        for malformed in [
            "whsec_not base64!",
            "whsec_unit_test_secret_1",
            "whsec_QUJD*",
        ] {
            assert_eq!(
                sign(&Secret::new(malformed), &id, 1, b""),
                Err(SignatureError::MalformedSecret),
                "{malformed}"
            );
        }
        assert!(sign(&encode_secret(b"sixteen bytes!!!"), &id, 1, b"").is_ok());
    }

    #[test]
    fn malformed_headers_are_named_never_panic() {
        let s = secret();
        let tol = Duration::from_secs(1);
        let id = message_id(1, &H);
        for (sig, field) in [
            ("", SIGNATURE_HEADER),
            ("v1", SIGNATURE_HEADER),
            ("v1,***", SIGNATURE_HEADER),
            ("v2,AAAA", SIGNATURE_HEADER),
            ("garbage", SIGNATURE_HEADER),
        ] {
            assert_eq!(
                verify_signature(&s, &headers(&id, "1", sig), b"", at(1), tol),
                Err(SignatureError::Malformed { field }),
                "{sig}"
            );
        }
        for t in ["", "-1", "+1", "x", "01", "1.5", "99999999999999999999999"] {
            assert_eq!(
                verify_signature(&s, &headers(&id, t, "v1,AAAA"), b"", at(1), tol),
                Err(SignatureError::Malformed {
                    field: TIMESTAMP_HEADER
                }),
                "{t}"
            );
        }
        let hex = "ab".repeat(32);
        for bad in [
            String::new(),
            "msg_1".into(),
            format!("evt_1{hex}"),
            format!("evt__{hex}"),
            format!("evt_-1_{hex}"),
            format!("evt_1_{}", "AB".repeat(32)),
            format!("evt_1_{}", "ab".repeat(31)),
            format!("evt_1_{hex}00"),
            format!("evt_99999999999999999999999_{hex}"),
        ] {
            assert_eq!(
                verify_signature(&s, &headers(&bad, "1", "v1,AAAA"), b"", at(1), tol),
                Err(SignatureError::Malformed { field: ID_HEADER }),
                "{bad}"
            );
        }
        assert_eq!(parse_message_id(&format!("evt_0_{hex}")), Ok((0, H)));
        assert_eq!(
            parse_message_id(&message_id(u64::MAX, &H)),
            Ok((u64::MAX, H))
        );
        let _ = verify_signature(
            &s,
            &headers(&id, "9223372036854775807", "v1,AAAA"),
            b"",
            at(-4_000_000_000),
            tol,
        );
    }
}
