//! The one error of the forms boundary.

use crate::domain::{Dimension, MandateId};

/// Why a form could not be written or read. Every variant names the field (the mandate's
/// field for an export, the form's JSON path for an import). None is retried: the same input
/// fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormError {
    /// The input is not the form's JSON: bad syntax, a wrong type, a missing member.
    #[error("{field}: malformed: {reason}")]
    Malformed {
        /// JSON path of the member (`.` for the document).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A member is present and well typed but its value is not acceptable.
    #[error("{field}: invalid: {reason}")]
    Invalid {
        /// JSON path or mandate field.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A restriction that the other side cannot express. On export: the mandate restricts
    /// `dimension` and the target format has no narrower-or-equal way to say it. On import: the
    /// AP2 constraint at `field` restricts something the crate's mandates cannot represent.
    /// Nothing is written or read in part.
    #[error("{field}: cannot be represented: {reason}")]
    Unrepresentable {
        /// The dimension of authority concerned, when it is one the crate has (an AP2 payment
        /// instrument or PISP restriction has none).
        dimension: Option<Dimension>,
        /// The mandate field (export) or the AP2 member (import).
        field: String,
        /// Why.
        reason: String,
    },
    /// The chain grants no authority at `now` (broken chain, a mandate not active or outside
    /// its validity, a budget or uses spent): there is nothing to export.
    #[error("no authority: {reason}")]
    NoAuthority {
        /// The mandate concerned, when one is.
        mandate_id: Option<MandateId>,
        /// Why.
        reason: String,
    },
    /// A mandate of the chain has budgets, uses or attempts and no (single) usage entry in its
    /// currency was supplied: its headroom is unknown (deny by default).
    #[error("usage of mandate {mandate_id} is unavailable")]
    UsageUnavailable {
        /// The mandate.
        mandate_id: MandateId,
    },
    /// A digest in the form does not match the content it claims to identify.
    #[error("{field}: hash mismatch: claimed {claimed}, computed {computed}")]
    HashMismatch {
        /// The member holding the claimed digest.
        field: String,
        /// The digest in the input.
        claimed: String,
        /// The digest of the content.
        computed: String,
    },
}

impl FormError {
    /// The field the error names.
    pub fn field(&self) -> &str {
        match self {
            FormError::Malformed { field, .. }
            | FormError::Invalid { field, .. }
            | FormError::Unrepresentable { field, .. }
            | FormError::HashMismatch { field, .. } => field,
            FormError::NoAuthority { .. } => "chain",
            FormError::UsageUnavailable { .. } => "usage",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> FormError {
        FormError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unrepresentable(
        dimension: impl Into<Option<Dimension>>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> FormError {
        FormError::Unrepresentable {
            dimension: dimension.into(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}
