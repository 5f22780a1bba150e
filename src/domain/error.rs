//! The validation error every domain constructor and every deserialiser returns.

use std::fmt;

use super::money::MoneyError;

/// Bad input, rejected before anything is built: names the field and says what is wrong (I11).
///
/// `field` is a path into the input, for example `items[2].unit_price` or `scope.validity`.
///
/// ```
/// use agent_mandate::domain::{Currency, Money};
/// let err = Money::parse("1.234", Currency::EUR).unwrap_err();
/// assert!(err.to_string().contains("precision"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    field: String,
    kind: ValidationKind,
}

impl ValidationError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, kind: ValidationKind) -> Self {
        Self {
            field: field.into(),
            kind,
        }
    }

    /// The path of the offending field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn kind(&self) -> &ValidationKind {
        &self.kind
    }

    /// Prefixes the field path with `outer` (`items[2]` + `quantity` -> `items[2].quantity`).
    #[must_use]
    pub fn within(mut self, outer: impl fmt::Display) -> Self {
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else if self.field.starts_with('[') {
            format!("{outer}{}", self.field)
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "{}: {}", self.field, self.kind)
        }
    }
}

impl std::error::Error for ValidationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ValidationKind::Money(e) => Some(e),
            _ => None,
        }
    }
}

/// What is wrong with a field. Never carries a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationKind {
    /// The value is empty where something is required.
    #[error("must not be empty")]
    Empty,
    /// The text is longer than allowed.
    #[error("is {len} bytes long, at most {max} allowed")]
    TooLong {
        /// Allowed maximum.
        max: usize,
        /// Actual length.
        len: usize,
    },
    /// The list has more entries than allowed.
    #[error("has {len} entries, at most {max} allowed")]
    TooMany {
        /// Allowed maximum.
        max: usize,
        /// Actual count.
        len: usize,
    },
    /// A character that is not allowed (control characters, white space in identifiers).
    #[error("contains a character that is not allowed")]
    InvalidCharacter,
    /// The text does not have the expected shape.
    #[error("expected {expected}")]
    InvalidFormat {
        /// What was expected.
        expected: &'static str,
    },
    /// A money rule was broken.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// A number is outside its allowed range.
    #[error("must be between {min} and {max}, got {value}")]
    OutOfRange {
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
        /// The value given.
        value: u64,
    },
    /// Totals do not add up.
    #[error("expected {expected}, got {found}")]
    DoesNotAddUp {
        /// The computed value (canonical money text).
        expected: String,
        /// The value given.
        found: String,
    },
    /// A time that must come after another does not.
    #[error("must be after {after}")]
    NotAfter {
        /// The field it must come after.
        after: &'static str,
    },
    /// An id given with the input does not match the id computed from the content.
    #[error("claimed id {claimed} does not match the computed id {computed}")]
    IdMismatch {
        /// The id in the input.
        claimed: String,
        /// The id of the content.
        computed: String,
    },
    /// A value appears twice in a set.
    #[error("duplicate value {value}")]
    Duplicate {
        /// The repeated value.
        value: String,
    },
    /// Fields disagree with each other.
    #[error("{reason}")]
    Inconsistent {
        /// Why.
        reason: &'static str,
    },
}

/// Shorthand used by the validators.
pub(crate) fn err(field: impl Into<String>, kind: ValidationKind) -> ValidationError {
    ValidationError::new(field, kind)
}

/// Checks a list is at most `max` long.
pub(crate) fn check_len<T>(field: &str, items: &[T], max: usize) -> Result<(), ValidationError> {
    if items.len() > max {
        return Err(err(
            field,
            ValidationKind::TooMany {
                max,
                len: items.len(),
            },
        ));
    }
    Ok(())
}

/// `FromStr` for the domain's enums by their stable wire names (the names serde reads), for
/// configuration files and command lines: `"agent".parse::<ActorKind>()`.
macro_rules! from_str_by_wire_name {
    ($($t:ty => $expected:literal),* $(,)?) => {
        $(
            impl std::str::FromStr for $t {
                type Err = ValidationError;

                fn from_str(s: &str) -> Result<Self, Self::Err> {
                    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
                        err("", ValidationKind::InvalidFormat { expected: $expected })
                    })
                }
            }
        )*
    };
}

from_str_by_wire_name!(
    super::mandate::ActorKind => "human, agent or system",
    super::mandate::MandateStatus => "a mandate status (active, revoked, ...)",
    super::attempt::AttemptStatus => "an attempt status (authorized, captured, ...)",
    super::attempt::Operation => "authorize, capture, void or refund",
    super::decision::Outcome => "allowed, blocked, requires_confirmation or requires_revalidation",
    super::decision::BlockerCode => "a blocker code (LIFETIME_LIMIT_EXCEEDED, ...)",
    super::scope::PaymentAction => "a payment action (authorize_payment, ...)",
    super::scope::Urgency => "an urgency (low, normal, high, ...)",
);

#[cfg(test)]
mod from_str_tests {
    use super::super::{ActorKind, AttemptStatus, MandateStatus, Outcome, PaymentAction};

    #[test]
    fn enums_parse_their_wire_names_and_refuse_the_rest() {
        assert_eq!("agent".parse::<ActorKind>().ok(), Some(ActorKind::Agent));
        assert_eq!(
            "pending_confirmation".parse::<MandateStatus>().ok(),
            Some(MandateStatus::PendingConfirmation)
        );
        assert_eq!(
            "partially_refunded".parse::<AttemptStatus>().ok(),
            Some(AttemptStatus::PartiallyRefunded)
        );
        assert_eq!("blocked".parse::<Outcome>().ok(), Some(Outcome::Blocked));
        assert_eq!(
            "LIFETIME_LIMIT_EXCEEDED"
                .parse::<super::super::BlockerCode>()
                .ok(),
            Some(super::super::BlockerCode::LifetimeLimitExceeded)
        );
        assert_eq!(
            "capture_payment".parse::<PaymentAction>().ok(),
            Some(PaymentAction::Capture)
        );
        for bad in ["Agent", "", "agent ", "robot"] {
            let e = bad.parse::<ActorKind>().expect_err("refused");
            assert!(
                e.to_string().contains("human, agent or system"),
                "{bad}: {e}"
            );
        }
    }
}
