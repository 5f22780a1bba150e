//! `WWW-Authenticate: Payment` challenges and the `charge` intent's request.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth_params::{parse_challenges, quote, RawChallenge};
use super::digest::check_digest_syntax;
use crate::domain::{MerchantId, SellerId};
use crate::protocols::asset::{money_from_base_units, AssetRegistry};
use crate::protocols::b64;
use crate::protocols::charge::{ChargeOffer, Protocol};
use crate::protocols::error::{clip, OfferError, WireError};
use crate::protocols::origin::{mismatch, requested_origin};

/// The longest challenge id read.
pub const MAX_ID_LEN: usize = 256;
/// The longest decoded `request` or `opaque` read.
pub const MAX_REQUEST_LEN: usize = 8 * 1024;

/// One `Payment` challenge, with its values as they were on the wire (the binding covers the
/// wire form) and the decoded request.
#[derive(Clone, PartialEq, Eq)]
pub struct Challenge {
    pub(crate) id: String,
    pub(crate) realm: String,
    pub(crate) method: String,
    pub(crate) intent: String,
    pub(crate) request: String,
    pub(crate) request_json: serde_json::Map<String, serde_json::Value>,
    pub(crate) expires: Option<String>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) digest: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) opaque: Option<String>,
}

impl fmt::Debug for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenge")
            .field("id", &self.id)
            .field("realm", &self.realm)
            .field("method", &self.method)
            .field("intent", &self.intent)
            .field("request", &self.request_json)
            .field("expires", &self.expires)
            .field("digest", &self.digest)
            .field("opaque", &self.opaque.is_some())
            .finish()
    }
}

/// The shared fields of a `charge` intent's request (unknown fields are ignored, as the
/// scheme requires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChargeRequest {
    /// Amount in base units of `currency`, as a string of digits.
    pub amount: String,
    /// ISO 4217 code (any case) or a method-defined asset identifier.
    pub currency: String,
    /// The payee, in the method's own format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Human-readable description (display only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The merchant's reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Method-specific details (Stripe: `networkId`, `paymentMethodTypes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method_details: Option<serde_json::Map<String, serde_json::Value>>,
}

fn lower_alpha(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase())
}

fn intent_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Decodes a base64url JCS JSON object, refusing any other spelling of it.
pub(crate) fn decode_jcs_object(
    field: &'static str,
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, WireError> {
    if text.len() > MAX_REQUEST_LEN * 4 / 3 + 4 {
        return Err(WireError::TooLarge {
            field,
            len: text.len(),
            max: MAX_REQUEST_LEN * 4 / 3 + 4,
        });
    }
    let bytes = b64::url_decode(field, text)?;
    let json = std::str::from_utf8(&bytes).map_err(|_| WireError::Invalid {
        field,
        reason: "not UTF-8",
    })?;
    let value: serde_json::Value =
        crate::json::from_json(json).map_err(|e| WireError::json(field, &e))?;
    let serde_json::Value::Object(map) = value else {
        return Err(WireError::Invalid {
            field,
            reason: "must be a JSON object",
        });
    };
    let obj = serde_json::Value::Object(map);
    if has_float(&obj) {
        return Err(WireError::NotCanonical { field });
    }
    let mut canonical = Vec::with_capacity(bytes.len());
    crate::domain::write_json_value(&mut canonical, &obj);
    if canonical != bytes {
        return Err(WireError::NotCanonical { field });
    }
    match obj {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err(WireError::Invalid {
            field,
            reason: "must be a JSON object",
        }),
    }
}

/// Floats have no single spelling this crate writes as RFC 8785 does; they are refused in
/// bound values.
fn has_float(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(a) => a.iter().any(has_float),
        serde_json::Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

/// base64url of the JCS form of a JSON object.
pub(crate) fn encode_jcs_object<T: Serialize>(
    field: &'static str,
    value: &T,
) -> Result<String, WireError> {
    let v = serde_json::to_value(value).map_err(|_| WireError::Invalid {
        field,
        reason: "not representable as JSON",
    })?;
    if !v.is_object() {
        return Err(WireError::Invalid {
            field,
            reason: "must be a JSON object",
        });
    }
    if has_float(&v) {
        return Err(WireError::Invalid {
            field,
            reason: "floating-point numbers are not accepted in bound values",
        });
    }
    let mut out = Vec::new();
    crate::domain::write_json_value(&mut out, &v);
    if out.len() > MAX_REQUEST_LEN {
        return Err(WireError::TooLarge {
            field,
            len: out.len(),
            max: MAX_REQUEST_LEN,
        });
    }
    Ok(b64::url_encode(&out))
}

pub(crate) fn check_opaque(text: &str) -> Result<(), WireError> {
    let map = decode_jcs_object("opaque", text)?;
    if map.values().any(|v| !v.is_string()) {
        return Err(WireError::Invalid {
            field: "opaque",
            reason: "must be a flat map of strings",
        });
    }
    Ok(())
}

pub(crate) fn parse_expires(text: &str) -> Result<DateTime<Utc>, WireError> {
    crate::domain::parse_time(text).map_err(|_| WireError::Invalid {
        field: "expires",
        reason: "not an RFC 3339 date-time",
    })
}

impl Challenge {
    /// Reads the one `Payment` challenge of a header value (other schemes are ignored).
    ///
    /// ```
    /// use agent_mandate::protocols::mpp::Challenge;
    /// let c = Challenge::parse(concat!(
    ///     r#"Payment id="x7Tg2pLqR9mKvNwY3hBcZa", realm="api.example.com", method="example", "#,
    ///     r#"intent="charge", expires="2025-01-15T12:05:00Z", "#,
    ///     r#"request="eyJhbW91bnQiOiIxMDAwIiwiY3VycmVuY3kiOiJ1c2QiLCJyZWNpcGllbnQiOiJhY2N0XzEyMyJ9""#,
    /// )).unwrap();
    /// assert_eq!(c.charge().unwrap().amount, "1000");
    /// ```
    pub fn parse(value: &str) -> Result<Challenge, WireError> {
        let mut found = None;
        for raw in parse_challenges(value)? {
            if raw.scheme.eq_ignore_ascii_case("payment") {
                if found.is_some() {
                    return Err(WireError::TooMany {
                        field: "Payment challenges",
                        max: 1,
                    });
                }
                found = Some(raw);
            }
        }
        match found {
            Some(raw) => Challenge::from_raw(&raw),
            None => Err(WireError::NotPaymentScheme),
        }
    }

    /// Reads every `Payment` challenge of an answer's `WWW-Authenticate` values. A value that
    /// breaks the header grammar is an error for the whole answer; a `Payment` challenge that
    /// breaks the scheme's rules is an error in its own slot, so a client can still pick a good
    /// one.
    pub fn parse_all<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Result<Challenge, WireError>>, WireError> {
        let mut out = Vec::new();
        for value in values {
            for raw in parse_challenges(value)? {
                if raw.scheme.eq_ignore_ascii_case("payment") {
                    if out.len() == super::auth_params::MAX_CHALLENGES {
                        return Err(WireError::TooMany {
                            field: "WWW-Authenticate",
                            max: super::auth_params::MAX_CHALLENGES,
                        });
                    }
                    out.push(Challenge::from_raw(&raw));
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn from_raw(raw: &RawChallenge) -> Result<Challenge, WireError> {
        if raw.token68 {
            return Err(WireError::Invalid {
                field: "Payment",
                reason: "a Payment challenge carries auth-params, not a token68",
            });
        }
        let required = |field: &'static str| -> Result<String, WireError> {
            match raw.get(field) {
                None => Err(WireError::Missing { field }),
                Some("") => Err(WireError::Empty { field }),
                Some(v) => Ok(v.to_owned()),
            }
        };
        let id = required("id")?;
        if id.len() > MAX_ID_LEN {
            return Err(WireError::TooLarge {
                field: "id",
                len: id.len(),
                max: MAX_ID_LEN,
            });
        }
        let realm = required("realm")?;
        let method = required("method")?;
        if !lower_alpha(&method) {
            return Err(WireError::Invalid {
                field: "method",
                reason: "a payment method id is lowercase ASCII letters",
            });
        }
        let intent = required("intent")?;
        if !intent_token(&intent) {
            return Err(WireError::Invalid {
                field: "intent",
                reason: "an intent is ASCII letters, digits and '-'",
            });
        }
        let request = required("request")?;
        let request_json = decode_jcs_object("request", &request)?;
        let expires = raw.get("expires").map(str::to_owned);
        let expires_at = match &expires {
            Some(e) => Some(parse_expires(e)?),
            None => None,
        };
        let digest = raw.get("digest").map(str::to_owned);
        if let Some(d) = &digest {
            check_digest_syntax(d)?;
        }
        let opaque = raw.get("opaque").map(str::to_owned);
        if let Some(o) = &opaque {
            check_opaque(o)?;
        }
        Ok(Challenge {
            id,
            realm,
            method,
            intent,
            request,
            request_json,
            expires,
            expires_at,
            digest,
            description: raw.get("description").map(str::to_owned),
            opaque,
        })
    }

    /// The header value: `Payment id="..", realm="..", method="..", intent="..", request="..",`
    /// then `digest`, `expires`, `description`, `opaque` when present.
    pub fn to_header(&self) -> Result<String, WireError> {
        let mut s = String::with_capacity(256 + self.request.len());
        s.push_str("Payment id=");
        quote("id", &self.id, &mut s)?;
        s.push_str(", realm=");
        quote("realm", &self.realm, &mut s)?;
        s.push_str(", method=");
        quote("method", &self.method, &mut s)?;
        s.push_str(", intent=");
        quote("intent", &self.intent, &mut s)?;
        s.push_str(", request=");
        quote("request", &self.request, &mut s)?;
        if let Some(d) = &self.digest {
            s.push_str(", digest=");
            quote("digest", d, &mut s)?;
        }
        if let Some(e) = &self.expires {
            s.push_str(", expires=");
            quote("expires", e, &mut s)?;
        }
        if let Some(d) = &self.description {
            s.push_str(", description=");
            quote("description", d, &mut s)?;
        }
        if let Some(o) = &self.opaque {
            s.push_str(", opaque=");
            quote("opaque", o, &mut s)?;
        }
        Ok(s)
    }

    /// The challenge id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The protection space.
    pub fn realm(&self) -> &str {
        &self.realm
    }
    /// The payment method (`stripe`, `card`, ...).
    pub fn method(&self) -> &str {
        &self.method
    }
    /// The intent (`charge`).
    pub fn intent(&self) -> &str {
        &self.intent
    }
    /// The `request` as on the wire (base64url of JCS JSON).
    pub fn request_wire(&self) -> &str {
        &self.request
    }
    /// The decoded request.
    pub fn request(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.request_json
    }
    /// `expires` as on the wire.
    pub fn expires(&self) -> Option<&str> {
        self.expires.as_deref()
    }
    /// `expires` as a time.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }
    /// The RFC 9530 digest the request body must have.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
    /// The description (display only).
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// `opaque` as on the wire.
    pub fn opaque(&self) -> Option<&str> {
        self.opaque.as_deref()
    }

    /// The request read as a `charge` request.
    pub fn charge(&self) -> Result<ChargeRequest, WireError> {
        charge_request(&self.request_json)
    }

    /// This challenge in mandate terms, for the `charge` intent of one of `methods`: the realm
    /// is the merchant, the `recipient` the seller, `amount` in base units of `currency` (an
    /// ISO 4217 code, or an asset registered for the method) becomes money, `resource` the
    /// cart line. Refuses an unknown method or intent, an expired challenge, and an amount that
    /// does not fit the currency.
    ///
    /// `resource` is the URL the agent requested (after any redirect): the realm must name its
    /// origin (`host`, `host:port`, or `scheme://host[:port]`; see [`OfferError::OriginMismatch`]),
    /// and the merchant is that origin's authority, never a name the peer merely asserts.
    pub fn offer(
        &self,
        methods: &[&str],
        assets: &AssetRegistry,
        resource: &str,
        now: DateTime<Utc>,
    ) -> Result<ChargeOffer, OfferError> {
        self.offer_bound(methods, assets, resource, None, now)
    }

    /// As [`Challenge::offer`], with the realm the host bound to the requested origin (when it
    /// did): then the realm must be exactly that, and it is the merchant.
    pub(crate) fn offer_bound(
        &self,
        methods: &[&str],
        assets: &AssetRegistry,
        resource: &str,
        bound_realm: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<ChargeOffer, OfferError> {
        if !methods.contains(&self.method.as_str()) {
            return Err(OfferError::UnknownMethod {
                method: clip(&self.method, 32),
            });
        }
        if self.intent != "charge" {
            return Err(OfferError::UnknownIntent {
                intent: clip(&self.intent, 32),
            });
        }
        if let Some(expires) = self.expires_at
            && expires <= now
        {
            return Err(OfferError::Expired { expires, now });
        }
        let charge = self.charge()?;
        let asset = assets.currency(&self.method, &charge.currency)?;
        let amount =
            money_from_base_units("amount", &charge.amount, asset.currency, asset.decimals)?;
        let realm_invalid = |e: crate::domain::ValidationError| OfferError::Invalid {
            field: "realm",
            reason: e.to_string(),
        };
        MerchantId::new(&self.realm).map_err(realm_invalid)?;
        let origin = requested_origin(resource)?;
        let merchant = match bound_realm {
            Some(bound) if bound == self.realm => bound.to_owned(),
            Some(_) => return Err(mismatch("realm", &self.realm, &origin)),
            None if origin.is_named_by(&self.realm) => origin.authority(),
            None => return Err(mismatch("realm", &self.realm, &origin)),
        };
        let merchant_id = MerchantId::new(&merchant).map_err(realm_invalid)?;
        let seller_id = match &charge.recipient {
            Some(r) => Some(SellerId::new(r).map_err(|e| OfferError::Invalid {
                field: "recipient",
                reason: e.to_string(),
            })?),
            None => None,
        };
        Ok(ChargeOffer {
            protocol: Protocol::Mpp,
            offer_id: self.id.clone(),
            merchant_id,
            seller_id,
            amount,
            resource: resource.to_owned(),
            description: charge.description.or_else(|| self.description.clone()),
            expires_at: self.expires_at,
        })
    }
}

pub(crate) fn charge_request(
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<ChargeRequest, WireError> {
    let text = serde_json::Value::Object(map.clone()).to_string();
    crate::json::from_json::<ChargeRequest>(&text).map_err(|e| WireError::json("request", &e))
}

/// Server-defined correlation data for `opaque`: a flat map of strings.
pub type Opaque = BTreeMap<String, String>;
