//! The errors of the 402 wire forms and of mapping an offer to mandate terms.
//!
//! No variant carries a credential, a token, a payload value or a binding secret (I10): JSON
//! problems are reported by path and kind only, since a serde message may quote the value.

use chrono::{DateTime, Utc};

use crate::domain::MoneyError;
use crate::json::InputErrorKind;

/// A header or wire value that cannot be read or written. Never retried: the same bytes give
/// the same error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A required value is empty.
    #[error("{field} is empty")]
    Empty {
        /// The value.
        field: &'static str,
    },
    /// A value is longer than this crate reads.
    #[error("{field} is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// The value.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More items than accepted (challenges in one answer, parameters in one challenge).
    #[error("{field}: more than {max}")]
    TooMany {
        /// The list.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// The header does not follow the auth-param grammar of RFC 9110 section 11.
    #[error("{field}: syntax error at byte {at}: {reason}")]
    Syntax {
        /// The header.
        field: &'static str,
        /// Byte offset.
        at: usize,
        /// What was expected.
        reason: &'static str,
    },
    /// The authentication scheme is not `Payment`.
    #[error("authentication scheme is not Payment")]
    NotPaymentScheme,
    /// A parameter is given twice (one meaning per input).
    #[error("parameter {name} is given more than once")]
    DuplicateParam {
        /// The parameter (lower-cased).
        name: String,
    },
    /// A required parameter or field is absent.
    #[error("{field} is missing")]
    Missing {
        /// The parameter or field.
        field: &'static str,
    },
    /// A value is not the base64 the protocol requires.
    #[error("{field}: {reason}")]
    Base64 {
        /// The value.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A decoded value is not the JSON expected.
    #[error("{field}: JSON problem ({kind:?}) at {path:?}")]
    Json {
        /// The wire value that holds the JSON.
        field: &'static str,
        /// Path of the offending member inside it (empty for the whole document).
        path: String,
        /// The kind of problem.
        kind: InputErrorKind,
    },
    /// JSON that is not in its RFC 8785 (JCS) canonical form where the protocol requires it.
    #[error("{field} is not RFC 8785 (JCS) canonical JSON")]
    NotCanonical {
        /// The value.
        field: &'static str,
    },
    /// A value breaks a rule of the protocol.
    #[error("{field}: {reason}")]
    Invalid {
        /// The value.
        field: &'static str,
        /// The rule.
        reason: &'static str,
    },
}

impl WireError {
    /// The wire value the error is about (`""` for the scheme).
    pub fn field(&self) -> &str {
        match self {
            WireError::Empty { field }
            | WireError::TooLarge { field, .. }
            | WireError::TooMany { field, .. }
            | WireError::Syntax { field, .. }
            | WireError::Missing { field }
            | WireError::Base64 { field, .. }
            | WireError::Json { field, .. }
            | WireError::NotCanonical { field }
            | WireError::Invalid { field, .. } => field,
            WireError::DuplicateParam { name } => name,
            WireError::NotPaymentScheme => "",
        }
    }

    pub(crate) fn json(field: &'static str, e: &crate::json::InputError) -> WireError {
        WireError::Json {
            field,
            path: e.field().chars().take(128).collect(),
            kind: e.kind(),
        }
    }
}

/// An offer (a `Payment` challenge or an x402 payment requirement) that cannot be stated in
/// mandate terms: nothing is paid for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The offer's own wire form is broken.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A payment method this crate does not pay with.
    #[error("payment method {method:?} is not supported")]
    UnknownMethod {
        /// The method (at most 32 characters of it).
        method: String,
    },
    /// A payment intent this crate does not pay.
    #[error("payment intent {intent:?} is not supported")]
    UnknownIntent {
        /// The intent (at most 32 characters of it).
        intent: String,
    },
    /// An x402 scheme this crate does not pay.
    #[error("x402 scheme {scheme:?} is not supported")]
    UnknownScheme {
        /// The scheme (at most 32 characters of it).
        scheme: String,
    },
    /// The challenge expired (or expires before the payment could be made).
    #[error("the offer expired at {expires}")]
    Expired {
        /// When it expired.
        expires: DateTime<Utc>,
        /// The time of the check.
        now: DateTime<Utc>,
    },
    /// Neither an ISO 4217 payment currency nor an asset the host registered.
    #[error(
        "currency or asset {currency:?} is not an ISO 4217 payment currency nor a registered asset"
    )]
    UnknownCurrency {
        /// The identifier (at most 80 characters of it).
        currency: String,
    },
    /// The amount is not a count of base units that fits the currency.
    #[error("{field}: {source}")]
    Amount {
        /// The field (`amount`).
        field: &'static str,
        /// Why.
        #[source]
        source: MoneyError,
    },
    /// A value the mapping needs is not a valid identifier or text of the domain.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The offer names a merchant (an MPP `realm`, an x402 `resource.url`) that is not the
    /// origin the request was sent to: a peer asserts it, so nothing is paid.
    #[error("{field} {asserted:?} does not name the origin requested ({origin})")]
    OriginMismatch {
        /// The field (`realm`, `resource.url`).
        field: &'static str,
        /// What the peer asserted (at most 120 characters of it).
        asserted: String,
        /// The requested origin's authority.
        origin: String,
    },
    /// The payer's book of payments is full of offers that have not expired: a new one is
    /// refused (dropping a live one could let it be paid twice). Retry once some expire.
    #[error("the book of 402 payments is full ({capacity} offers not yet expired)")]
    Capacity {
        /// The book's capacity.
        capacity: usize,
    },
    /// No offer of the answer is payable; the reason for each is kept in order.
    #[error("no payable offer among {}", refused.len())]
    NonePayable {
        /// Why each offer was refused.
        refused: Vec<OfferError>,
    },
}

pub(crate) fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
