//! The webhook signature scheme (version `v2`), and the helper a receiver verifies it with.
//!
//! Every delivery is a `POST` whose body is the [`crate::domain::ChainedEvent`] as JSON, with:
//!
//! | header | value |
//! |---|---|
//! | `Agent-Mandate-Signature` | `t=<unix seconds>,v2=<hex HMAC-SHA256(secret, signed string)>` |
//! | `Agent-Mandate-Seq` | the event's sequence number (deduplicate on it: delivery is at least once) |
//! | `Agent-Mandate-Event-Hash` | the event's chain hash (64 lower-case hex digits) |
//!
//! The signed string covers the timestamp, the sequence number, the event hash and the body,
//! so none of the headers a receiver acts on can be changed without breaking the signature
//! (a captured delivery replayed with a later `Agent-Mandate-Seq` does not verify, and cannot
//! make the receiver drop the real event of that seq as a duplicate):
//!
//! ```text
//! v2.<t>.<seq>.<event hash>.<body>
//! ```
//!
//! that is the literal `v2`, a `.`, the timestamp in decimal (as in the header, without a
//! sign or leading zeros), a `.`, the sequence number in decimal (likewise), a `.`, the event
//! hash in lower-case hex, a `.`, then the exact body bytes. A receiver recomputes the HMAC
//! with the shared secret over the raw body (before any JSON parsing) and the two headers,
//! compares in constant time, and refuses a timestamp further than its tolerance from its own
//! clock (replay protection). Several `v2=` entries may appear (secret rotation); one match is
//! enough. Entries of other versions (the former `v1`, which covered only `"<t>.<body>"`) are
//! ignored: a header with no `v2` entry does not verify. [`verify_signature`] does all of
//! this, and returns the sequence number and hash it authenticated.
//!
//! The secret is at least [`MIN_SECRET_BYTES`] (16) bytes: an empty or short secret is
//! refused by [`sign`], [`verify_signature`] and the sink's configuration, with
//! [`SignatureError::WeakSecret`].
//!
//! ```
//! use agent_mandate::adapters::http::{sign, verify_signature, DeliveryHeaders, SignatureError};
//! use agent_mandate::domain::AuditHash;
//! use agent_mandate::ports::Secret;
//! let secret = Secret::new("whsec_test_0123456789");
//! let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let body = br#"{"seq":1}"#;
//! let hash = AuditHash([7; 32]);
//! let signature = sign(&secret, now.timestamp(), 1, &hash, body).unwrap();
//! let headers = DeliveryHeaders {
//!     signature: &signature,
//!     seq: "1",
//!     event_hash: &hash.to_hex(),
//! };
//! let tolerance = std::time::Duration::from_secs(300);
//! let verified = verify_signature(&secret, &headers, body, now, tolerance).unwrap();
//! assert_eq!((verified.timestamp, verified.seq), (now.timestamp(), 1));
//! // The same delivery replayed under another sequence number does not verify.
//! let replayed = DeliveryHeaders { seq: "2", ..headers };
//! assert_eq!(
//!     verify_signature(&secret, &replayed, body, now, tolerance),
//!     Err(SignatureError::Mismatch)
//! );
//! assert_eq!(
//!     verify_signature(&Secret::new(""), &headers, body, now, tolerance),
//!     Err(SignatureError::WeakSecret { min_bytes: 16 })
//! );
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::AuditHash;
use crate::ports::Secret;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Agent-Mandate-Signature";
/// The sequence number header.
pub const SEQ_HEADER: &str = "Agent-Mandate-Seq";
/// The event hash header.
pub const EVENT_HASH_HEADER: &str = "Agent-Mandate-Event-Hash";
/// The version of the signed string, and the name of its entry in the signature header.
pub const SIGNATURE_VERSION: &str = "v2";
/// The shortest webhook secret accepted, in bytes (a random 16-byte secret is 128 bits).
pub const MIN_SECRET_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature does not verify, or cannot be made. Never carries the secret or the
/// expected MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A header is malformed (names the part: `t` or `v2` of the signature header, `seq`,
    /// `event_hash`).
    #[error("malformed signature header: {field}")]
    Malformed {
        /// `t`, `v2`, `seq` or `event_hash`.
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
    /// No `v2` signature matches the body and headers (tampered body, replayed under another
    /// seq or hash, wrong secret).
    #[error("the signature does not match the delivery")]
    Mismatch,
    /// The secret is empty or shorter than [`MIN_SECRET_BYTES`]: nothing is signed or
    /// verified with it.
    #[error("the webhook secret must be at least {min_bytes} bytes")]
    WeakSecret {
        /// The minimum length, in bytes.
        min_bytes: usize,
    },
}

/// The three headers of a delivery, as received (raw header values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryHeaders<'a> {
    /// `Agent-Mandate-Signature`.
    pub signature: &'a str,
    /// `Agent-Mandate-Seq`.
    pub seq: &'a str,
    /// `Agent-Mandate-Event-Hash`.
    pub event_hash: &'a str,
}

/// What a verified delivery authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The signature's timestamp (unix seconds).
    pub timestamp: i64,
    /// The event's sequence number (deduplicate on it).
    pub seq: u64,
    /// The event's chain hash.
    pub event_hash: AuditHash,
}

fn check_secret(secret: &Secret) -> Result<(), SignatureError> {
    if secret.expose().len() < MIN_SECRET_BYTES {
        return Err(SignatureError::WeakSecret {
            min_bytes: MIN_SECRET_BYTES,
        });
    }
    Ok(())
}

fn mac(
    secret: &Secret,
    timestamp: i64,
    seq: u64,
    event_hash: &AuditHash,
    body: &[u8],
) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail; an empty MAC state is
    // the fallback only to avoid a panic path (the secret is checked non-empty before).
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as hmac::KeyInit>::new(&Default::default()));
    mac.update(
        format!(
            "{SIGNATURE_VERSION}.{timestamp}.{seq}.{}.",
            event_hash.to_hex()
        )
        .as_bytes(),
    );
    mac.update(body);
    mac
}

/// The `Agent-Mandate-Signature` value for the event `seq` with chain hash `event_hash` and
/// JSON `body`, at `timestamp` (unix seconds): `t=<timestamp>,v2=<hex>`.
pub fn sign(
    secret: &Secret,
    timestamp: i64,
    seq: u64,
    event_hash: &AuditHash,
    body: &[u8],
) -> Result<String, SignatureError> {
    check_secret(secret)?;
    let tag = mac(secret, timestamp, seq, event_hash, body)
        .finalize()
        .into_bytes();
    Ok(format!(
        "t={timestamp},{SIGNATURE_VERSION}={}",
        hex::encode(tag)
    ))
}

/// Verifies a delivery: the secret is long enough, the headers parse, the signature's
/// timestamp is within `tolerance` of `now`, and one of its `v2` signatures is the
/// HMAC-SHA256 of the signed string (see the module docs) under `secret` (constant-time
/// comparison). Returns what it authenticated.
pub fn verify_signature(
    secret: &Secret,
    headers: &DeliveryHeaders<'_>,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<Verified, SignatureError> {
    check_secret(secret)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in headers.signature.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed { field: "t" })?;
        match k {
            "t" => {
                let t = v
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed { field: "t" })?;
                timestamp = Some(t);
            }
            SIGNATURE_VERSION => {
                let sig = hex::decode(v).map_err(|_| SignatureError::Malformed { field: "v2" })?;
                signatures.push(sig);
            }
            _ => {} // other versions are ignored
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed { field: "t" })?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed { field: "v2" });
    }
    let seq_text = headers.seq.trim();
    if seq_text.is_empty() || !seq_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed { field: "seq" });
    }
    let seq = seq_text
        .parse::<u64>()
        .map_err(|_| SignatureError::Malformed { field: "seq" })?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(headers.event_hash.trim(), &mut hash).map_err(|_| {
        SignatureError::Malformed {
            field: "event_hash",
        }
    })?;
    let event_hash = AuditHash(hash);
    let now_secs = now.timestamp();
    let tolerance_secs = tolerance.as_secs();
    let skew = now_secs.abs_diff(timestamp);
    if skew > tolerance_secs {
        return Err(SignatureError::Stale {
            timestamp,
            now: now_secs,
            tolerance_secs,
        });
    }
    let expected = mac(secret, timestamp, seq, &event_hash, body);
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

    const SECRET: &str = "whsec_unit_test_secret_1";

    fn at(t: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(t, 0).expect("time")
    }

    fn headers<'a>(signature: &'a str, seq: &'a str, hash: &'a str) -> DeliveryHeaders<'a> {
        DeliveryHeaders {
            signature,
            seq,
            event_hash: hash,
        }
    }

    const H: AuditHash = AuditHash([0xab; 32]);

    #[test]
    fn sign_and_verify() {
        let s = Secret::new(SECRET);
        let hash = H.to_hex();
        let header = sign(&s, 1_000, 5, &H, b"body").expect("signed");
        assert!(header.starts_with("t=1000,v2="), "{header}");
        let tol = Duration::from_secs(300);
        let ok = verify_signature(&s, &headers(&header, "5", &hash), b"body", at(1_100), tol)
            .expect("verifies");
        assert_eq!((ok.timestamp, ok.seq, ok.event_hash), (1_000, 5, H));
        assert_eq!(
            verify_signature(&s, &headers(&header, "5", &hash), b"bodY", at(1_000), tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(
                &Secret::new("whsec_another_secret_2"),
                &headers(&header, "5", &hash),
                b"body",
                at(1_000),
                tol
            ),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_signature(&s, &headers(&header, "5", &hash), b"body", at(1_301), tol),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            verify_signature(&s, &headers(&header, "5", &hash), b"body", at(699), tol),
            Err(SignatureError::Stale { .. })
        ));
        // Rotation: a second signature under the new secret.
        let new = Secret::new("whsec_rotated_secret_3");
        let rotated = format!(
            "{header},v2={}",
            sign(&new, 1_000, 5, &H, b"body")
                .expect("signed")
                .split_once("v2=")
                .map(|(_, sig)| sig.to_owned())
                .expect("a v2 part")
        );
        assert_eq!(
            verify_signature(
                &new,
                &headers(&rotated, "5", &hash),
                b"body",
                at(1_000),
                tol
            )
            .map(|v| v.seq),
            Ok(5)
        );
    }

    /// I9, I15: a captured delivery replayed with a later `Agent-Mandate-Seq` (or another
    /// event hash) must not verify; under the former scheme only `"<t>.<body>"` was signed,
    /// so the replay verified and the receiver dropped the real event of that seq as a
    /// duplicate.
    #[test]
    fn replayed_delivery_with_a_later_seq_or_another_hash_does_not_verify() {
        let s = Secret::new(SECRET);
        let hash = H.to_hex();
        let header = sign(&s, 1_000, 5, &H, b"body").expect("signed");
        let tol = Duration::from_secs(300);
        for (seq, h) in [
            ("6", hash.as_str()),
            ("50", hash.as_str()),
            ("5", &AuditHash([0xcd; 32]).to_hex()),
        ] {
            assert_eq!(
                verify_signature(&s, &headers(&header, seq, h), b"body", at(1_000), tol),
                Err(SignatureError::Mismatch),
                "{seq} {h}"
            );
        }
        // The seq is read as a number: "05" names the same event as "5".
        assert!(
            verify_signature(&s, &headers(&header, "05", &hash), b"body", at(1_000), tol).is_ok()
        );
        // A header with only the former `v1` entry does not verify.
        let v1 = header.replace("v2=", "v1=");
        assert_eq!(
            verify_signature(&s, &headers(&v1, "5", &hash), b"body", at(1_000), tol),
            Err(SignatureError::Malformed { field: "v2" })
        );
    }

    /// I10: an empty or short secret neither signs nor verifies (anyone could forge with an
    /// empty key).
    #[test]
    fn empty_or_short_secrets_are_refused() {
        let hash = H.to_hex();
        let good = sign(&Secret::new(SECRET), 1, 1, &H, b"").expect("signed");
        for weak in ["", "k", "fifteen_bytes!!"] {
            let s = Secret::new(weak);
            assert_eq!(
                sign(&s, 1, 1, &H, b""),
                Err(SignatureError::WeakSecret { min_bytes: 16 }),
                "{weak:?}"
            );
            let forged = {
                let tag = mac(&s, 1, 1, &H, b"").finalize().into_bytes();
                format!("t=1,v2={}", hex::encode(tag))
            };
            for header in [&forged, &good] {
                assert_eq!(
                    verify_signature(
                        &s,
                        &headers(header, "1", &hash),
                        b"",
                        at(1),
                        Duration::from_secs(1)
                    ),
                    Err(SignatureError::WeakSecret { min_bytes: 16 })
                );
            }
        }
        assert!(sign(&Secret::new("sixteen_bytes!!!"), 1, 1, &H, b"").is_ok());
    }

    #[test]
    fn malformed_headers_are_named_never_panic() {
        let s = Secret::new(SECRET);
        let tol = Duration::from_secs(1);
        let hash = H.to_hex();
        for (h, field) in [
            ("", "t"),
            ("v2=00", "t"),
            ("t=x,v2=00", "t"),
            ("t=1", "v2"),
            ("t=1,v2=zz", "v2"),
            ("garbage", "t"),
        ] {
            assert_eq!(
                verify_signature(&s, &headers(h, "1", &hash), b"", at(1), tol),
                Err(SignatureError::Malformed { field }),
                "{h}"
            );
        }
        for seq in ["", "-1", "+1", "x", "99999999999999999999999"] {
            assert_eq!(
                verify_signature(&s, &headers("t=1,v2=00", seq, &hash), b"", at(1), tol),
                Err(SignatureError::Malformed { field: "seq" }),
                "{seq}"
            );
        }
        for h in ["", "00", &"g".repeat(64), &"0".repeat(66)] {
            assert_eq!(
                verify_signature(&s, &headers("t=1,v2=00", "1", h), b"", at(1), tol),
                Err(SignatureError::Malformed {
                    field: "event_hash"
                }),
                "{h}"
            );
        }
        let _ = verify_signature(
            &s,
            &headers("t=-9223372036854775808,v2=00", "1", &hash),
            b"",
            at(4_000_000_000),
            tol,
        );
    }
}
