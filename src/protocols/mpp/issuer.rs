//! The seller side: issuing bound challenges and verifying credentials.
//!
//! Verification runs in the order the scheme asks: the credential is read, then its binding
//! (the id is the HMAC of the echoed slots under this server's secret, the realm is this
//! server's), its expiry and the body digest are checked. Single use of the challenge id is a
//! store operation the caller runs next; the amount is checked last, against what the route
//! charges now ([`Verified::check_terms`]).

use chrono::{DateTime, Duration, SecondsFormat, Utc};

use super::binding::{BindingSecret, Slots};
use super::challenge::{
    charge_request, decode_jcs_object, encode_jcs_object, parse_expires, Challenge, ChargeRequest,
    Opaque,
};
use super::credential::Credential;
use super::digest::{body_digest, digest_matches};
use super::problem::{Problem, ProblemCode};
use crate::protocols::error::WireError;

/// What a route charges: the method, the `charge` request, and what else the challenge binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeTerms {
    /// The payment method (`stripe`).
    pub method: String,
    /// The request.
    pub request: ChargeRequest,
    /// A description for display.
    pub description: Option<String>,
    /// Server correlation data, bound and echoed.
    pub opaque: Option<Opaque>,
}

/// Issues and verifies challenges under one realm and binding secret.
#[derive(Debug, Clone)]
pub struct ChallengeIssuer {
    realm: String,
    secret: BindingSecret,
    previous: Vec<BindingSecret>,
    ttl: Duration,
}

/// Why a credential is refused. Each maps to the scheme's problem code
/// ([`VerifyError::problem_code`]); none carries credential material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The credential cannot be read.
    #[error("malformed credential: {0}")]
    Malformed(#[from] WireError),
    /// The id is not this server's binding of the echoed challenge (or another realm's).
    #[error("challenge {field} does not verify: not issued by this server with these parameters")]
    Binding {
        /// What did not verify (`id`, `realm`).
        field: &'static str,
    },
    /// The challenge expired.
    #[error("challenge expired at {expires}")]
    Expired {
        /// When.
        expires: DateTime<Utc>,
    },
    /// The challenge has no `expires` (this server always sets one).
    #[error("challenge has no expires")]
    NoExpiry,
    /// The request body's digest is not the challenge's.
    #[error("request body does not match the challenge's digest")]
    DigestMismatch,
    /// The challenge id was used before.
    #[error("challenge id already used")]
    Replayed,
    /// The credential pays other terms than the route charges now.
    #[error("credential {field} does not match what the resource charges")]
    TermsMismatch {
        /// Which (`amount`, `currency`, `method`, `recipient`).
        field: &'static str,
        /// Whether it pays less than asked.
        insufficient: bool,
    },
    /// The method's payload lacks what the method needs.
    #[error("payload: {field} is missing or not a string")]
    Payload {
        /// The member.
        field: &'static str,
    },
}

impl VerifyError {
    /// The scheme's problem code for this refusal.
    pub fn problem_code(&self) -> ProblemCode {
        match self {
            VerifyError::Malformed(_) | VerifyError::Payload { .. } => {
                ProblemCode::MalformedCredential
            }
            VerifyError::Binding { .. } | VerifyError::Replayed | VerifyError::NoExpiry => {
                ProblemCode::InvalidChallenge
            }
            VerifyError::Expired { .. } => ProblemCode::PaymentExpired,
            VerifyError::DigestMismatch => ProblemCode::VerificationFailed,
            VerifyError::TermsMismatch { insufficient, .. } => {
                if *insufficient {
                    ProblemCode::PaymentInsufficient
                } else {
                    ProblemCode::VerificationFailed
                }
            }
        }
    }

    /// The problem details body for this refusal.
    pub fn problem(&self) -> Problem {
        Problem::new(self.problem_code(), self.to_string())
    }
}

/// A credential whose binding, expiry and digest verified.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The credential.
    pub credential: Credential,
    /// Its request, decoded.
    pub request: ChargeRequest,
    /// When its challenge expires (the single-use record is kept until then).
    pub expires_at: DateTime<Utc>,
}

impl Verified {
    /// The challenge id.
    pub fn challenge_id(&self) -> &str {
        &self.credential.challenge.id
    }

    /// Checks that the credential pays what `terms` charge: method, currency, amount and
    /// recipient. Run after the challenge id was consumed.
    pub fn check_terms(&self, terms: &ChargeTerms) -> Result<(), VerifyError> {
        let mismatch = |field, insufficient| {
            Err(VerifyError::TermsMismatch {
                field,
                insufficient,
            })
        };
        if self.credential.challenge.method != terms.method {
            return mismatch("method", false);
        }
        if !self
            .request
            .currency
            .eq_ignore_ascii_case(&terms.request.currency)
        {
            return mismatch("currency", false);
        }
        if self.request.amount != terms.request.amount {
            let paid: Option<u128> = self.request.amount.parse().ok();
            let asked: Option<u128> = terms.request.amount.parse().ok();
            let insufficient = matches!((paid, asked), (Some(p), Some(a)) if p < a);
            return mismatch("amount", insufficient);
        }
        if self.request.recipient != terms.request.recipient {
            return mismatch("recipient", false);
        }
        Ok(())
    }
}

impl ChallengeIssuer {
    /// An issuer for `realm` (non-empty, no control characters) whose challenges live `ttl`
    /// (at least one second).
    pub fn new(
        realm: &str,
        secret: BindingSecret,
        ttl: Duration,
    ) -> Result<ChallengeIssuer, WireError> {
        if realm.is_empty() {
            return Err(WireError::Empty { field: "realm" });
        }
        if realm.chars().any(char::is_control) {
            return Err(WireError::Invalid {
                field: "realm",
                reason: "control characters cannot be sent in a header",
            });
        }
        if ttl < Duration::seconds(1) {
            return Err(WireError::Invalid {
                field: "ttl",
                reason: "a challenge lives at least one second",
            });
        }
        Ok(ChallengeIssuer {
            realm: realm.to_owned(),
            secret,
            previous: Vec::new(),
            ttl,
        })
    }

    /// Also verifies challenges bound under a previous secret (rotation: keep it until its
    /// challenges expired).
    pub fn with_previous_secret(mut self, secret: BindingSecret) -> ChallengeIssuer {
        self.previous.push(secret);
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A challenge for `terms` at `now`, expiring `now + ttl`, bound to `body` by an RFC 9530
    /// digest when the request has one. `opaque` always carries a `nonce` member (16 random
    /// bytes, base64url) besides the terms' own members, so every challenge has its own id.
    pub fn issue(
        &self,
        terms: &ChargeTerms,
        body: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Challenge, WireError> {
        if terms.method.is_empty() || !terms.method.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(WireError::Invalid {
                field: "method",
                reason: "a payment method id is lowercase ASCII letters",
            });
        }
        let request = encode_jcs_object("request", &terms.request)?;
        let request_json = decode_jcs_object("request", &request)?;
        // A nonce in `opaque` keeps two challenges with the same terms, issued in the same
        // second, apart: their ids differ, so one payer's use never refuses another's.
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce).map_err(|_| WireError::Invalid {
            field: "opaque",
            reason: "the operating system's random source failed",
        })?;
        let mut opaque_map = terms.opaque.clone().unwrap_or_default();
        opaque_map
            .entry("nonce".to_owned())
            .or_insert_with(|| crate::protocols::b64::url_encode(&nonce));
        let opaque = Some(encode_jcs_object("opaque", &opaque_map)?);
        let expires_at = now + self.ttl;
        let expires = expires_at.to_rfc3339_opts(SecondsFormat::Secs, true);
        let digest = body.map(body_digest);
        let id = self.secret.challenge_id(&Slots {
            realm: &self.realm,
            method: &terms.method,
            intent: "charge",
            request: &request,
            expires: Some(&expires),
            digest: digest.as_deref(),
            opaque: opaque.as_deref(),
        });
        let challenge = Challenge {
            id,
            realm: self.realm.clone(),
            method: terms.method.clone(),
            intent: "charge".into(),
            request,
            request_json,
            expires: Some(expires),
            expires_at: Some(expires_at),
            digest,
            description: terms.description.clone(),
            opaque,
        };
        // Refuse now what could not be sent (control characters in the description).
        challenge.to_header()?;
        Ok(challenge)
    }

    /// Verifies an `Authorization` value for a request with `body` at `now`: readable, bound
    /// by this server, not expired, body digest matching. Single use and the amount come next.
    pub fn verify(
        &self,
        authorization: &str,
        body: Option<&[u8]>,
        now: DateTime<Utc>,
    ) -> Result<Verified, VerifyError> {
        let credential = Credential::parse(authorization)?;
        let echo = &credential.challenge;
        if echo.realm != self.realm {
            return Err(VerifyError::Binding { field: "realm" });
        }
        let slots = Slots {
            realm: &echo.realm,
            method: &echo.method,
            intent: &echo.intent,
            request: &echo.request,
            expires: echo.expires.as_deref(),
            digest: echo.digest.as_deref(),
            opaque: echo.opaque.as_deref(),
        };
        let bound = std::iter::once(&self.secret)
            .chain(self.previous.iter())
            .any(|s| s.verify(&echo.id, &slots));
        if !bound {
            return Err(VerifyError::Binding { field: "id" });
        }
        let expires_at = match &echo.expires {
            Some(e) => parse_expires(e)?,
            None => return Err(VerifyError::NoExpiry),
        };
        if expires_at <= now {
            return Err(VerifyError::Expired {
                expires: expires_at,
            });
        }
        if let Some(d) = &echo.digest
            && !digest_matches(d, body.unwrap_or_default())?
        {
            return Err(VerifyError::DigestMismatch);
        }
        let request = charge_request(&decode_jcs_object("request", &echo.request)?)?;
        Ok(Verified {
            credential,
            request,
            expires_at,
        })
    }
}
