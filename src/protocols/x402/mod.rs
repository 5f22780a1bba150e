//! x402 v2 over HTTP: `PAYMENT-REQUIRED` (server to client), `PAYMENT-SIGNATURE` (client to
//! server) and `PAYMENT-RESPONSE` (server to client), each standard base64 (with padding) of a
//! JSON object; and the mapping of a payment requirement (`accepts[]`) to mandate terms.
//!
//! On the agent's side, [`X402Client`] (with `http`) handles a 402: it reads
//! `PAYMENT-REQUIRED`, states each requirement in mandate terms, pays the first one the signer
//! accepts through [`X402Payer`] (the engine decides, holds and audits; [`SignerProvider`] signs
//! through the [`X402Signer`] port within an [`X402Grant`]), sends `PAYMENT-SIGNATURE` and reads
//! `PAYMENT-RESPONSE` as the receipt. [`FixedX402Signer`] is a test double; no EVM signer ships.
//!
//! On the seller's side (with `http`; the middleware with `axum` too), `x402_gate` answers 402
//! with `PAYMENT-REQUIRED`, checks a `PAYMENT-SIGNATURE` in the specification's order
//! ([`verify_payment`]: readable, one of the route's requirements, verified by the
//! [`Facilitator`]) and settles it through the seller's engine ([`X402EngineSettler`]: single use
//! of the authorization, then [`FacilitatorProvider`] calls `/settle`).
//!
//! Unknown JSON members are ignored (other implementations add fields); duplicate keys, `null`
//! for an optional member and non-canonical base64 are refused (one meaning per input).
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use agent_mandate::domain::Currency;
//! use agent_mandate::protocols::AssetRegistry;
//! use agent_mandate::protocols::x402::PaymentRequired;
//! // The example of the x402 HTTP transport.
//! let header = "eyJ4NDAyVmVyc2lvbiI6MiwiZXJyb3IiOiJQQVlNRU5ULVNJR05BVFVSRSBoZWFkZXIgaXMgcmVxdWlyZWQiLCJyZXNvdXJjZSI6eyJ1cmwiOiJodHRwczovL2FwaS5leGFtcGxlLmNvbS9wcmVtaXVtLWRhdGEiLCJkZXNjcmlwdGlvbiI6IkFjY2VzcyB0byBwcmVtaXVtIG1hcmtldCBkYXRhIiwibWltZVR5cGUiOiJhcHBsaWNhdGlvbi9qc29uIn0sImFjY2VwdHMiOlt7InNjaGVtZSI6ImV4YWN0IiwibmV0d29yayI6ImVpcDE1NTo4NDUzMiIsImFtb3VudCI6IjEwMDAwIiwiYXNzZXQiOiIweDAzNkNiRDUzODQyYzU0MjY2MzRlNzkyOTU0MWVDMjMxOGYzZENGN2UiLCJwYXlUbyI6IjB4MjA5NjkzQmM2YWZjMEM1MzI4YkEzNkZhRjAzQzUxNEVGMzEyMjg3QyIsIm1heFRpbWVvdXRTZWNvbmRzIjo2MCwiZXh0cmEiOnsibmFtZSI6IlVTREMiLCJ2ZXJzaW9uIjoiMiJ9fV19";
//! let required = PaymentRequired::parse(header).unwrap();
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
//! // Not payable until the host registers the asset...
//! let none = AssetRegistry::new();
//! assert!(required.offers(&none, "https://api.example.com/premium-data", now)[0].is_err());
//! // ...with its decimals, as standing for US dollars: 10,000 base units are one cent.
//! let mut assets = AssetRegistry::new();
//! assets.register("eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", Currency::USD, 6).unwrap();
//! let offer = required.offers(&assets, "https://api.example.com/premium-data", now)[0].clone().unwrap();
//! assert_eq!(offer.amount.to_string(), "0.01 USD");
//! assert_eq!(offer.merchant_id.as_str(), "api.example.com");
//! ```

use std::fmt;

#[cfg(feature = "http")]
mod client;
#[cfg(feature = "x402-evm")]
mod evm;
#[cfg(feature = "http")]
mod facilitator;
#[cfg(all(feature = "http", feature = "axum"))]
mod gate;
mod payer;
#[cfg(feature = "http")]
mod settle;
mod signer;

#[cfg(feature = "http")]
pub use client::{X402Client, X402ClientError, X402Response};
#[cfg(feature = "x402-evm")]
pub use evm::{keccak256, recover_address, EvmExactSigner, EvmKey, TransferAuthorization};
#[cfg(feature = "http")]
pub use facilitator::{
    verify_payment, Facilitator, FacilitatorError, HttpFacilitator, PaymentCheckError,
    VerifyResponse,
};
#[cfg(all(feature = "http", feature = "axum"))]
pub use gate::{x402_gate, X402Gate};
pub use payer::{SignerProvider, X402Book, X402Payer, PAYMENT_IDENTIFIER};
#[cfg(feature = "http")]
pub use settle::{FacilitatorProvider, X402EngineSettler, X402SettleError};
pub use signer::{check_grant, FixedX402Signer, SignedPayload, SignerError, X402Grant, X402Signer};

use chrono::{DateTime, Duration, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::domain::{MerchantId, SellerId};
use crate::protocols::asset::{money_from_base_units, AssetRegistry};
use crate::protocols::b64;
use crate::protocols::charge::{ChargeOffer, Protocol};
use crate::protocols::error::{clip, OfferError, WireError};
use crate::protocols::origin::{mismatch, requested_origin, Origin};

/// The `PAYMENT-REQUIRED` header.
pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
/// The `PAYMENT-SIGNATURE` header.
pub const PAYMENT_SIGNATURE: &str = "PAYMENT-SIGNATURE";
/// The `PAYMENT-RESPONSE` header.
pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
/// The longest header value read.
pub const MAX_HEADER: usize = 32 * 1024;
/// The most payment requirements read from one answer.
pub const MAX_ACCEPTS: usize = 16;
/// The longest `maxTimeoutSeconds` accepted (one day).
pub const MAX_TIMEOUT_SECONDS: u64 = 86_400;

/// What a protected resource is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// Its URL.
    pub url: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One accepted way to pay (`accepts[]`, and `accepted` in a payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Scheme (`exact`).
    pub scheme: String,
    /// CAIP-2 network (`eip155:84532`).
    pub network: String,
    /// Amount in atomic units of `asset`.
    pub amount: String,
    /// Token address, or an ISO 4217 code for fiat.
    pub asset: String,
    /// Recipient.
    pub pay_to: String,
    /// Time allowed to complete the payment.
    pub max_timeout_seconds: u64,
    /// Scheme-specific data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The `PAYMENT-REQUIRED` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Protocol version: 2.
    pub x402_version: u32,
    /// Why payment is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The accepted ways to pay (1 to [`MAX_ACCEPTS`]).
    pub accepts: Vec<PaymentRequirements>,
    /// Extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The `PAYMENT-SIGNATURE` object. Its `payload` is a bearer authorization: never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Protocol version: 2.
    pub x402_version: u32,
    /// The resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The requirement paid.
    pub accepted: PaymentRequirements,
    /// Scheme-specific proof (signature and authorization).
    pub payload: serde_json::Map<String, serde_json::Value>,
    /// Extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

impl fmt::Debug for PaymentPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaymentPayload")
            .field("x402_version", &self.x402_version)
            .field("resource", &self.resource)
            .field("accepted", &self.accepted)
            .field("payload", &"<redacted>")
            .finish()
    }
}

/// The `PAYMENT-RESPONSE` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementResponse {
    /// Whether settlement succeeded.
    pub success: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// The payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash (empty on failure).
    pub transaction: String,
    /// CAIP-2 network.
    pub network: String,
    /// Amount settled in atomic units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// Extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

fn decode<T: DeserializeOwned>(field: &'static str, value: &str) -> Result<T, WireError> {
    if value.len() > MAX_HEADER {
        return Err(WireError::TooLarge {
            field,
            len: value.len(),
            max: MAX_HEADER,
        });
    }
    let bytes = b64::std_decode(field, value)?;
    let json = std::str::from_utf8(&bytes).map_err(|_| WireError::Invalid {
        field,
        reason: "not UTF-8",
    })?;
    crate::json::from_json(json).map_err(|e| WireError::json(field, &e))
}

fn encode<T: Serialize>(field: &'static str, value: &T) -> Result<String, WireError> {
    let json = serde_json::to_vec(value).map_err(|_| WireError::Invalid {
        field,
        reason: "not representable as JSON",
    })?;
    Ok(b64::std_encode(&json))
}

fn check_version(v: u32) -> Result<(), WireError> {
    if v != 2 {
        return Err(WireError::Invalid {
            field: "x402Version",
            reason: "only x402 version 2 is read",
        });
    }
    Ok(())
}

fn check_requirement(r: &PaymentRequirements) -> Result<(), WireError> {
    for (field, v) in [
        ("scheme", &r.scheme),
        ("network", &r.network),
        ("amount", &r.amount),
        ("asset", &r.asset),
        ("payTo", &r.pay_to),
    ] {
        if v.is_empty() {
            return Err(WireError::Empty { field });
        }
    }
    Ok(())
}

impl PaymentRequired {
    /// Reads a `PAYMENT-REQUIRED` value: version 2, 1 to [`MAX_ACCEPTS`] requirements, none
    /// with an empty required member.
    pub fn parse(value: &str) -> Result<PaymentRequired, WireError> {
        let r: PaymentRequired = decode(PAYMENT_REQUIRED, value)?;
        check_version(r.x402_version)?;
        if r.accepts.is_empty() {
            return Err(WireError::Empty { field: "accepts" });
        }
        if r.accepts.len() > MAX_ACCEPTS {
            return Err(WireError::TooMany {
                field: "accepts",
                max: MAX_ACCEPTS,
            });
        }
        r.accepts.iter().try_for_each(check_requirement)?;
        Ok(r)
    }

    /// The header value.
    pub fn to_header(&self) -> Result<String, WireError> {
        encode(PAYMENT_REQUIRED, self)
    }

    /// Each requirement in mandate terms (see [`PaymentRequirements::offer`]); the resource is
    /// the answer's `resource.url`, or `requested_url` when it has none.
    ///
    /// `requested_url` is the URL the agent requested (after any redirect): the merchant is its
    /// origin's authority. A `resource.url` of another origin (scheme, host, port) is a name the
    /// peer merely asserts: every requirement is then refused with
    /// [`OfferError::OriginMismatch`], and nothing is paid.
    pub fn offers(
        &self,
        assets: &AssetRegistry,
        requested_url: &str,
        now: DateTime<Utc>,
    ) -> Vec<Result<ChargeOffer, OfferError>> {
        let bound = requested_origin(requested_url).and_then(|origin| match &self.resource {
            Some(r) => match Origin::of_url(&r.url) {
                None => Err(OfferError::Invalid {
                    field: "resource.url",
                    reason: "not an absolute URL with a host".into(),
                }),
                Some(o) if o != origin => Err(mismatch("resource.url", &r.url, &origin)),
                Some(_) => Ok((r.url.as_str(), r.description.clone())),
            },
            None => Ok((requested_url, None)),
        });
        self.accepts
            .iter()
            .map(|r| match &bound {
                Ok((url, description)) => r.offer(assets, url, description.clone(), now),
                Err(e) => Err(e.clone()),
            })
            .collect()
    }
}

impl PaymentRequirements {
    /// The offer's identity: `sha256:` and the hex SHA-256 of the JSON of this requirement
    /// and the resource URL.
    pub fn offer_id(&self, resource: &str) -> String {
        let mut h = Sha256::new();
        h.update(resource.as_bytes());
        h.update(b"\n");
        let v = serde_json::to_value(self).unwrap_or_default();
        let mut out = Vec::new();
        crate::domain::write_json_value(&mut out, &v);
        h.update(&out);
        format!("sha256:{}", hex::encode(h.finalize()))
    }

    /// This requirement in mandate terms: scheme `exact` only; the asset an ISO 4217 code or a
    /// registered asset of `network`; the amount in its atomic units; the resource URL's origin
    /// is the merchant and `payTo` the seller; it expires `maxTimeoutSeconds` after `now`.
    pub fn offer(
        &self,
        assets: &AssetRegistry,
        resource: &str,
        description: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<ChargeOffer, OfferError> {
        check_requirement(self)?;
        if self.scheme != "exact" {
            return Err(OfferError::UnknownScheme {
                scheme: clip(&self.scheme, 32),
            });
        }
        if self.max_timeout_seconds == 0 || self.max_timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(OfferError::Invalid {
                field: "maxTimeoutSeconds",
                reason: format!("must be 1 to {MAX_TIMEOUT_SECONDS}"),
            });
        }
        let asset = assets.currency(&self.network, &self.asset)?;
        let amount = money_from_base_units("amount", &self.amount, asset.currency, asset.decimals)?;
        let origin = Origin::of_url(resource).ok_or_else(|| OfferError::Invalid {
            field: "resource.url",
            reason: "not an absolute URL with a host".into(),
        })?;
        let merchant_id = MerchantId::new(origin.authority()).map_err(|e| OfferError::Invalid {
            field: "resource.url",
            reason: e.to_string(),
        })?;
        let seller_id = SellerId::new(&self.pay_to).map_err(|e| OfferError::Invalid {
            field: "payTo",
            reason: e.to_string(),
        })?;
        let timeout = i64::try_from(self.max_timeout_seconds).unwrap_or(i64::MAX);
        Ok(ChargeOffer {
            protocol: Protocol::X402,
            offer_id: self.offer_id(resource),
            merchant_id,
            seller_id: Some(seller_id),
            amount,
            resource: resource.to_owned(),
            description,
            expires_at: Some(now + Duration::seconds(timeout)),
        })
    }
}

impl PaymentPayload {
    /// Reads a `PAYMENT-SIGNATURE` value (version 2).
    pub fn parse(value: &str) -> Result<PaymentPayload, WireError> {
        let p: PaymentPayload = decode(PAYMENT_SIGNATURE, value)?;
        check_version(p.x402_version)?;
        check_requirement(&p.accepted)?;
        Ok(p)
    }

    /// The header value.
    pub fn to_header(&self) -> Result<String, WireError> {
        encode(PAYMENT_SIGNATURE, self)
    }
}

impl SettlementResponse {
    /// Reads a `PAYMENT-RESPONSE` value.
    pub fn parse(value: &str) -> Result<SettlementResponse, WireError> {
        let r: SettlementResponse = decode(PAYMENT_RESPONSE, value)?;
        if r.network.is_empty() {
            return Err(WireError::Empty { field: "network" });
        }
        if r.success && r.transaction.is_empty() {
            return Err(WireError::Empty {
                field: "transaction",
            });
        }
        Ok(r)
    }

    /// The header value.
    pub fn to_header(&self) -> Result<String, WireError> {
        encode(PAYMENT_RESPONSE, self)
    }
}
