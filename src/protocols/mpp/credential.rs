//! `Authorization: Payment` credentials and `Payment-Receipt` receipts.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::challenge::Challenge;
use crate::domain::IdempotencyKey;
use crate::protocols::b64;
use crate::protocols::error::WireError;

/// The longest `Authorization` value read (the scheme asks servers to accept at least 4 KiB).
pub const MAX_CREDENTIAL_HEADER: usize = 32 * 1024;
/// The longest `Payment-Receipt` value read.
pub const MAX_RECEIPT_HEADER: usize = 8 * 1024;

/// The challenge a credential answers, echoed as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeEcho {
    /// Challenge id.
    pub id: String,
    /// Protection space.
    pub realm: String,
    /// Payment method.
    pub method: String,
    /// Intent.
    pub intent: String,
    /// base64url JCS request, as on the wire.
    pub request: String,
    /// Description, if the challenge had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// base64url JCS opaque map, if the challenge had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opaque: Option<String>,
    /// RFC 9530 digest, if the challenge had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Expiry, if the challenge had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl From<&Challenge> for ChallengeEcho {
    fn from(c: &Challenge) -> ChallengeEcho {
        ChallengeEcho {
            id: c.id.clone(),
            realm: c.realm.clone(),
            method: c.method.clone(),
            intent: c.intent.clone(),
            request: c.request.clone(),
            description: c.description.clone(),
            opaque: c.opaque.clone(),
            digest: c.digest.clone(),
            expires: c.expires.clone(),
        }
    }
}

/// The method-specific proof of a credential (a shared payment token, a signature): a bearer
/// secret, never printed (`Debug` names its fields only).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(serde_json::Map<String, serde_json::Value>);

impl Payload {
    /// Wraps a JSON object.
    pub fn new(map: serde_json::Map<String, serde_json::Value>) -> Payload {
        Payload(map)
    }

    /// A string member (for example the Stripe method's `spt`).
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(serde_json::Value::as_str)
    }

    /// The JSON object.
    pub fn as_map(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&String> = self.0.keys().collect();
        write!(f, "Payload(<redacted> {keys:?})")
    }
}

/// An `Authorization: Payment` credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The challenge answered.
    pub challenge: ChallengeEcho,
    /// The payer, if stated (a DID is recommended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The proof.
    pub payload: Payload,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("challenge", &self.challenge)
            .field("source", &self.source)
            .field("payload", &self.payload)
            .finish()
    }
}

impl Credential {
    /// A credential answering `challenge` with `payload`.
    pub fn new(challenge: &Challenge, payload: Payload, source: Option<String>) -> Credential {
        Credential {
            challenge: ChallengeEcho::from(challenge),
            source,
            payload,
        }
    }

    /// Reads an `Authorization` value: `Payment` (any case), one or more spaces, base64url
    /// without padding of a JSON object with `challenge` and `payload`.
    pub fn parse(value: &str) -> Result<Credential, WireError> {
        const FIELD: &str = "Authorization";
        if value.len() > MAX_CREDENTIAL_HEADER {
            return Err(WireError::TooLarge {
                field: FIELD,
                len: value.len(),
                max: MAX_CREDENTIAL_HEADER,
            });
        }
        let Some((scheme, rest)) = value.split_once(' ') else {
            return Err(if value.eq_ignore_ascii_case("payment") {
                WireError::Missing {
                    field: "credential",
                }
            } else {
                WireError::NotPaymentScheme
            });
        };
        if !scheme.eq_ignore_ascii_case("payment") {
            return Err(WireError::NotPaymentScheme);
        }
        let token = rest.trim_start_matches(' ');
        let bytes = b64::url_decode("credential", token)?;
        let json = std::str::from_utf8(&bytes).map_err(|_| WireError::Invalid {
            field: "credential",
            reason: "not UTF-8",
        })?;
        let cred: Credential =
            crate::json::from_json(json).map_err(|e| WireError::json("credential", &e))?;
        if cred.challenge.id.is_empty() {
            return Err(WireError::Empty {
                field: "challenge.id",
            });
        }
        Ok(cred)
    }

    /// The `Authorization` value (the JSON in RFC 8785 form).
    pub fn to_header(&self) -> Result<String, WireError> {
        let v = serde_json::to_value(self).map_err(|_| WireError::Invalid {
            field: "credential",
            reason: "not representable as JSON",
        })?;
        let mut out = Vec::new();
        crate::domain::write_json_value(&mut out, &v);
        Ok(format!("Payment {}", b64::url_encode(&out)))
    }

    /// The idempotency key of settling this credential: `mpp-` and the SHA-256 (hex) of the
    /// challenge id and the JCS form of the payload. The same credential always gives the same
    /// key (a retry is a replay, one PSP call); another credential for the same challenge gives
    /// another key; the key reveals nothing of the payload.
    pub fn settlement_key(&self) -> Result<IdempotencyKey, WireError> {
        let mut h = Sha256::new();
        h.update(self.challenge.id.as_bytes());
        h.update(b"\n");
        let mut payload = Vec::new();
        crate::domain::write_json_value(
            &mut payload,
            &serde_json::Value::Object(self.payload.0.clone()),
        );
        h.update(&payload);
        IdempotencyKey::new(format!("mpp-{}", hex::encode(h.finalize()))).map_err(|_| {
            WireError::Invalid {
                field: "challenge.id",
                reason: "no idempotency key can be made",
            }
        })
    }
}

/// A `Payment-Receipt`: the payment was verified and settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Always `success` (receipts are only sent on success).
    pub status: String,
    /// The payment method.
    pub method: String,
    /// Settlement time (RFC 3339).
    pub timestamp: String,
    /// The method's reference (Stripe: the PaymentIntent id).
    pub reference: String,
    /// Echoed from the credential's payload, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

impl Receipt {
    /// A success receipt.
    pub fn success(method: &str, reference: &str, at: DateTime<Utc>) -> Receipt {
        Receipt {
            status: "success".into(),
            method: method.into(),
            timestamp: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            reference: reference.into(),
            external_id: None,
        }
    }

    /// Reads a `Payment-Receipt` value. Refuses a status other than `success`, a method that is
    /// not lowercase letters and a timestamp that is not RFC 3339.
    pub fn parse(value: &str) -> Result<Receipt, WireError> {
        if value.len() > MAX_RECEIPT_HEADER {
            return Err(WireError::TooLarge {
                field: "Payment-Receipt",
                len: value.len(),
                max: MAX_RECEIPT_HEADER,
            });
        }
        let bytes = b64::url_decode("Payment-Receipt", value.trim_matches(' '))?;
        let json = std::str::from_utf8(&bytes).map_err(|_| WireError::Invalid {
            field: "Payment-Receipt",
            reason: "not UTF-8",
        })?;
        let r: Receipt =
            crate::json::from_json(json).map_err(|e| WireError::json("Payment-Receipt", &e))?;
        if r.status != "success" {
            return Err(WireError::Invalid {
                field: "status",
                reason: "a receipt's status is success",
            });
        }
        if r.method.is_empty() || !r.method.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(WireError::Invalid {
                field: "method",
                reason: "a payment method id is lowercase ASCII letters",
            });
        }
        crate::domain::parse_time(&r.timestamp).map_err(|_| WireError::Invalid {
            field: "timestamp",
            reason: "not an RFC 3339 date-time",
        })?;
        Ok(r)
    }

    /// The `Payment-Receipt` value.
    pub fn to_header(&self) -> Result<String, WireError> {
        let v = serde_json::to_value(self).map_err(|_| WireError::Invalid {
            field: "Payment-Receipt",
            reason: "not representable as JSON",
        })?;
        let mut out = Vec::new();
        crate::domain::write_json_value(&mut out, &v);
        Ok(b64::url_encode(&out))
    }
}
