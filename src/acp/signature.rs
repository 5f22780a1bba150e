//! The detached request signature (`Signature` and `Timestamp` headers).
//!
//! The OpenAPI document says only "detached JSON signature for request verification"; the
//! protocol's RFC says the client serialises the request with a canonical JSON scheme, signs
//! it with its private key, base64url-encodes the signature, and that the server advertises
//! the algorithms it accepts out of band (naming Ed25519 and ES256). This crate accepts
//! **Ed25519** (RFC 8032) over:
//!
//! ```text
//! message = Timestamp header value (its exact bytes) || "." || JCS(body)
//! Signature = base64url(signature), without padding (64 bytes: 86 characters)
//! ```
//!
//! where `JCS(body)` is the RFC 8785 canonical form of the body as parsed (keys sorted, no
//! white space). Why this choice:
//!
//! * Ed25519 is an asymmetric scheme the RFC names: the service verifying requests holds only
//!   the platform's public key, so neither it nor a leak of its configuration can forge a
//!   platform's request (an HMAC secret could). Signatures are deterministic, 64 bytes, and
//!   verification needs no parameters to negotiate. `ring` (already in the dependency tree
//!   through `rustls`) verifies them.
//! * JCS, because the RFC asks for a canonical JSON form: a proxy that re-indents or reorders
//!   the body does not break the signature, and the body signed is the body judged (the same
//!   canonical form is the idempotency fingerprint's).
//! * The timestamp is inside the signed message, so a captured request cannot be replayed
//!   with a fresh `Timestamp`; it must be within the window (default ±300 s) of the service's
//!   clock.
//! * Each key is bound to the platform principal that may use it
//!   ([`AcpConfig::new`](super::AcpConfig::new), [`AcpConfig::with_platform_key`](super::AcpConfig::with_platform_key)):
//!   a request signed by platform A's key under platform B's principal is refused.
//! * The `Idempotency-Key` is outside the signed message, so the service remembers each
//!   accepted signed message (its digest: a malleated signature or another encoding of the
//!   same message is the same request), until its timestamp leaves the window, with the
//!   caller and key it came with: the same signature under another key (or caller) is a replay, refused (401);
//!   under the same key it is the platform's retry, answered from the idempotency record.

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use sha2::Digest as _;

use super::error::AcpError;

/// The default accepted distance between `Timestamp` and the service's clock.
pub const DEFAULT_TIMESTAMP_WINDOW_SECONDS: i64 = 300;

/// A platform's Ed25519 public key (32 bytes).
///
/// ```
/// use agent_mandate::acp::PlatformKey;
/// let key = PlatformKey::ed25519(&[7u8; 32]).unwrap();
/// assert!(PlatformKey::ed25519(&[7u8; 31]).is_err());
/// # let _ = key;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PlatformKey([u8; 32]);

impl std::fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlatformKey(ed25519:{})", hex::encode(&self.0[..4]))
    }
}

impl PlatformKey {
    /// A raw 32-byte Ed25519 public key.
    pub fn ed25519(public_key: &[u8]) -> Result<PlatformKey, &'static str> {
        <[u8; 32]>::try_from(public_key)
            .map(PlatformKey)
            .map_err(|_| "an Ed25519 public key is 32 bytes")
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

/// The bytes a platform signs: `timestamp || "." || JCS(body)`.
///
/// ```
/// let body = serde_json::json!({"b": 1, "a": "x"});
/// let m = agent_mandate::acp::signing_input("2026-01-01T00:00:00Z", &body);
/// assert_eq!(m, br#"2026-01-01T00:00:00Z.{"a":"x","b":1}"#);
/// ```
pub fn signing_input(timestamp: &str, body: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(timestamp.len() + 512);
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b'.');
    crate::domain::write_json_value(&mut out, body);
    out
}

fn unauthorized(reason: impl Into<String>) -> AcpError {
    AcpError::Unauthorized {
        reason: reason.into(),
    }
}

/// A signature that verified: the SHA-256 of the key that verified it and the message it
/// signs (the replay cache keys on them, not on the signature's bytes, so another encoding or
/// a malleated signature of the same message is the same request) and the end of its timestamp's window (the cache
/// remembers it until then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) message: [u8; 32],
    pub(crate) until: DateTime<Utc>,
}

/// The longest `Timestamp` header read (an RFC 3339 time is at most 35 bytes).
const MAX_TIMESTAMP_BYTES: usize = 64;

/// The length of an unpadded base64url Ed25519 signature.
const SIGNATURE_CHARS: usize = 86;

/// Verifies `signature` (the header) over `timestamp` (the header) and `body` with any of
/// `keys` (the keys of the calling platform only), and the timestamp's distance to `now`.
/// Every failure is [`AcpError::Unauthorized`].
pub(crate) fn verify<'k>(
    keys: impl IntoIterator<Item = &'k PlatformKey>,
    signature: Option<&[u8]>,
    timestamp: Option<&[u8]>,
    body: &serde_json::Value,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<Verified, AcpError> {
    let timestamp = timestamp.ok_or_else(|| unauthorized("no Timestamp header"))?;
    if timestamp.len() > MAX_TIMESTAMP_BYTES {
        return Err(unauthorized("Timestamp is too long"));
    }
    let timestamp =
        std::str::from_utf8(timestamp).map_err(|_| unauthorized("Timestamp is not UTF-8"))?;
    let at = crate::domain::parse_time(timestamp)
        .map_err(|m| unauthorized(format!("Timestamp: {m}")))?;
    if (at - now).abs() > window {
        return Err(unauthorized(format!(
            "Timestamp {timestamp} is outside the window of {} s",
            window.num_seconds()
        )));
    }
    let signature = signature.ok_or_else(|| unauthorized("no Signature header"))?;
    if signature.len() != SIGNATURE_CHARS {
        return Err(unauthorized("Signature is not 86 base64url characters"));
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| unauthorized("Signature is not unpadded base64url"))?;
    if raw.len() != 64 {
        return Err(unauthorized("Signature is not 64 bytes"));
    }
    let message = signing_input(timestamp, body);
    if let Some(key) = keys.into_iter().find(|k| k.verify(&message, &raw)) {
        let mut digest = sha2::Sha256::new();
        digest.update(key.0);
        digest.update(&message);
        Ok(Verified {
            message: digest.finalize().into(),
            until: at + window,
        })
    } else {
        Err(unauthorized(
            "Signature does not verify with a key of this platform",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    fn pair() -> ring::signature::Ed25519KeyPair {
        ring::signature::Ed25519KeyPair::from_seed_unchecked(&[9u8; 32]).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_for_its_timestamp_body_and_key() {
        let now = crate::domain::examples::now();
        let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = serde_json::json!({"a": 1});
        let kp = pair();
        let key = PlatformKey::ed25519(kp.public_key().as_ref()).unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(kp.sign(&signing_input(&ts, &body)).as_ref());
        let w = Duration::seconds(300);
        let keys = [key];
        assert!(verify(
            &keys,
            Some(sig.as_bytes()),
            Some(ts.as_bytes()),
            &body,
            now,
            w
        )
        .is_ok());
        let other = serde_json::json!({"a": 2});
        assert!(verify(
            &keys,
            Some(sig.as_bytes()),
            Some(ts.as_bytes()),
            &other,
            now,
            w
        )
        .is_err());
        let later = now + Duration::seconds(301);
        assert!(verify(
            &keys,
            Some(sig.as_bytes()),
            Some(ts.as_bytes()),
            &body,
            later,
            w
        )
        .is_err());
        let padded = format!("{sig}==");
        assert!(verify(
            &keys,
            Some(padded.as_bytes()),
            Some(ts.as_bytes()),
            &body,
            now,
            w
        )
        .is_err());
        let stranger = PlatformKey::ed25519(&[1u8; 32]).unwrap();
        assert!(verify(
            &[stranger],
            Some(sig.as_bytes()),
            Some(ts.as_bytes()),
            &body,
            now,
            w
        )
        .is_err());
    }
}
