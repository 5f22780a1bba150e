//! The webhook signature scheme, and the helper a receiver verifies it with.
//!
//! Every delivery is a `POST` whose body is the [`crate::domain::ChainedEvent`] as JSON, with:
//!
//! | header | value |
//! |---|---|
//! | `Agent-Mandate-Signature` | `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` |
//! | `Agent-Mandate-Seq` | the event's sequence number (deduplicate on it: delivery is at least once) |
//! | `Agent-Mandate-Event-Hash` | the event's chain hash |
//!
//! The signed message is the decimal timestamp, a `.`, then the exact body bytes. A receiver
//! recomputes the HMAC with the shared secret over the raw body (before any JSON parsing),
//! compares in constant time, and refuses a timestamp further than its tolerance from its own
//! clock (replay protection). Several `v1=` entries may appear (secret rotation); one match is
//! enough. [`verify_signature`] does all of this.
//!
//! ```
//! use agent_mandate::adapters::http::{sign, verify_signature, SignatureError};
//! use agent_mandate::ports::Secret;
//! let secret = Secret::new("whsec_test");
//! let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
//! let body = br#"{"seq":1}"#;
//! let header = sign(&secret, now.timestamp(), body);
//! let tolerance = std::time::Duration::from_secs(300);
//! assert_eq!(verify_signature(&secret, &header, body, now, tolerance), Ok(now.timestamp()));
//! assert_eq!(
//!     verify_signature(&secret, &header, br#"{"seq":2}"#, now, tolerance),
//!     Err(SignatureError::Mismatch)
//! );
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ports::Secret;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Agent-Mandate-Signature";
/// The sequence number header.
pub const SEQ_HEADER: &str = "Agent-Mandate-Seq";
/// The event hash header.
pub const EVENT_HASH_HEADER: &str = "Agent-Mandate-Event-Hash";

type HmacSha256 = Hmac<Sha256>;

/// Why a signature does not verify. Never carries the secret or the expected MAC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header is not `t=<unix>,v1=<hex>[,v1=<hex>...]` (names the part).
    #[error("malformed signature header: {field}")]
    Malformed {
        /// `t` or `v1`.
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
    /// No `v1` signature matches the body (tampered body, wrong secret).
    #[error("the signature does not match the body")]
    Mismatch,
}

fn mac(secret: &Secret, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail; an empty MAC state is
    // the fallback only to avoid a panic path.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Agent-Mandate-Signature` value for `body` at `timestamp` (unix seconds).
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Verifies a delivery: the header's timestamp is within `tolerance` of `now`, and one of its
/// `v1` signatures is the HMAC-SHA256 of `"<t>.<body>"` under `secret` (constant-time
/// comparison). Returns the timestamp.
pub fn verify_signature(
    secret: &Secret,
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<i64, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
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
            "v1" => {
                let sig = hex::decode(v).map_err(|_| SignatureError::Malformed { field: "v1" })?;
                signatures.push(sig);
            }
            _ => {} // other schemes are ignored
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed { field: "t" })?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed { field: "v1" });
    }
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
    let expected = mac(secret, timestamp, body);
    if signatures
        .iter()
        .any(|sig| expected.clone().verify_slice(sig).is_ok())
    {
        Ok(timestamp)
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(t, 0).expect("time")
    }

    #[test]
    fn sign_and_verify() {
        let s = Secret::new("whsec_1");
        let header = sign(&s, 1_000, b"body");
        let tol = Duration::from_secs(300);
        assert_eq!(
            verify_signature(&s, &header, b"body", at(1_100), tol),
            Ok(1_000)
        );
        assert_eq!(
            verify_signature(&s, &header, b"bodY", at(1_000), tol),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&Secret::new("whsec_2"), &header, b"body", at(1_000), tol),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_signature(&s, &header, b"body", at(1_301), tol),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            verify_signature(&s, &header, b"body", at(699), tol),
            Err(SignatureError::Stale { .. })
        ));
        // Rotation: a second signature under the new secret.
        let rotated = format!(
            "{header},v1={}",
            sign(&Secret::new("new"), 1_000, b"body")
                .split_once("v1=")
                .map(|(_, sig)| sig.to_owned())
                .expect("a v1 part")
        );
        assert_eq!(
            verify_signature(&Secret::new("new"), &rotated, b"body", at(1_000), tol),
            Ok(1_000)
        );
    }

    #[test]
    fn malformed_headers_are_named_never_panic() {
        let s = Secret::new("k");
        let tol = Duration::from_secs(1);
        for (h, field) in [
            ("", "t"),
            ("v1=00", "t"),
            ("t=x,v1=00", "t"),
            ("t=1", "v1"),
            ("t=1,v1=zz", "v1"),
            ("garbage", "t"),
        ] {
            assert_eq!(
                verify_signature(&s, h, b"", at(1), tol),
                Err(SignatureError::Malformed { field }),
                "{h}"
            );
        }
        let _ = verify_signature(
            &s,
            "t=-9223372036854775808,v1=00",
            b"",
            at(4_000_000_000),
            tol,
        );
    }
}
