//! The `Payment` HTTP authentication scheme of the Machine Payments Protocol, `charge` intent.
//!
//! - Agent side: [`Challenge::parse_all`] reads a 402 answer's `WWW-Authenticate` values;
//!   [`Challenge::offer`] states a challenge in mandate terms ([`ChargeOffer`](crate::protocols::ChargeOffer)),
//!   refusing unknown methods and intents, expired challenges and amounts that do not fit the
//!   currency; [`Credential`] is the `Authorization` value; [`Receipt`] the `Payment-Receipt`.
//! - Seller side: [`ChallengeIssuer`] issues challenges bound by the recommended HMAC-SHA256
//!   over the seven positional slots, with `expires` and an RFC 9530 body digest, and verifies
//!   credentials (binding, expiry, digest); [`VerifyError`] maps each refusal to the scheme's
//!   problem code ([`Problem`]).
//!
//! ```
//! use chrono::{Duration, TimeZone, Utc};
//! use agent_mandate::protocols::mpp::{
//!     BindingSecret, ChallengeIssuer, ChargeRequest, ChargeTerms, Challenge, Credential, Payload,
//! };
//! let now = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
//! let issuer = ChallengeIssuer::new(
//!     "api.example.com", BindingSecret::new(*b"a secret of 32 bytes, not less!!").unwrap(),
//!     Duration::minutes(5),
//! ).unwrap();
//! let terms = ChargeTerms {
//!     method: "stripe".into(),
//!     request: ChargeRequest {
//!         amount: "50".into(), currency: "eur".into(), recipient: None, description: None,
//!         external_id: None, method_details: None,
//!     },
//!     description: Some("One answer".into()),
//!     opaque: None,
//! };
//! let header = issuer.issue(&terms, None, now).unwrap().to_header().unwrap();
//!
//! // The agent reads the challenge and answers it.
//! let challenge = Challenge::parse(&header).unwrap();
//! let mut proof = serde_json::Map::new();
//! proof.insert("spt".into(), "spt_test_123".into());
//! let credential = Credential::new(&challenge, Payload::new(proof), None);
//!
//! // The seller verifies it.
//! let verified = issuer.verify(&credential.to_header().unwrap(), None, now).unwrap();
//! verified.check_terms(&terms).unwrap();
//! assert!(issuer.verify(&credential.to_header().unwrap(), None, now + Duration::minutes(6)).is_err());
//! ```

mod auth_params;
mod binding;
mod challenge;
#[cfg(feature = "http")]
mod client;
mod credential;
mod digest;
#[cfg(feature = "axum")]
mod gate;
mod issuer;
mod payer;
mod problem;
mod respond;
#[cfg(feature = "axum")]
mod settle;
#[cfg(feature = "http")]
mod spt;

pub use auth_params::{MAX_CHALLENGES, MAX_CHALLENGE_HEADER, MAX_PARAMS};
pub use binding::{BindingSecret, Slots, MIN_SECRET_LEN};
pub use challenge::{Challenge, ChargeRequest, Opaque, MAX_ID_LEN, MAX_REQUEST_LEN};
#[cfg(feature = "http")]
pub use client::{ClientError, PaidClient, PaidResponse, PAYMENT_RECEIPT};
pub use credential::{
    ChallengeEcho, Credential, Payload, Receipt, MAX_CREDENTIAL_HEADER, MAX_RECEIPT_HEADER,
};
pub use digest::{body_digest, digest_matches};
#[cfg(feature = "axum")]
pub use gate::{payment_gate, PaymentGate, SettleError, Settler};
pub use issuer::{ChallengeIssuer, ChargeTerms, Verified, VerifyError};
pub use payer::{
    EnginePayer, FixedTokenResponder, GrantBook, PayError, Payer, PayerIdentity, ResponderProvider,
};
pub use problem::{Problem, ProblemCode, PROBLEM_BASE};
pub use respond::{ChallengeResponder, Grant, IssuedToken, ResponderError};
#[cfg(feature = "axum")]
pub use settle::{seller_actor, EngineSettler};
#[cfg(feature = "http")]
pub use spt::StripeSptResponder;
