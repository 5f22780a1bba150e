//! The upstream checkout state, given to the decision as a fact with its own blockers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::canonical::SnapshotId;
use super::ids::{CheckoutId, Text, UpstreamCode};

/// A blocker reported by the checkout service (`INVENTORY_STALE`, `RETURN_POLICY_MISSING`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamBlocker {
    /// The upstream code.
    pub code: UpstreamCode,
    /// Its message.
    pub message: Text,
}

/// What the checkout service says about the checkout. Payment authority never overrides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CheckoutState {
    /// Valid for the given snapshot.
    Valid {
        /// The checkout.
        checkout_id: CheckoutId,
        /// The snapshot it validated.
        snapshot_id: SnapshotId,
    },
    /// Not valid, with the upstream reasons.
    Invalid {
        /// The checkout.
        checkout_id: CheckoutId,
        /// Why (nested as causes of `CHECKOUT_NOT_VALID`).
        #[serde(default)]
        blockers: Vec<UpstreamBlocker>,
    },
    /// Expired: must be prepared again.
    Expired {
        /// The checkout.
        checkout_id: CheckoutId,
        /// When it expired.
        expired_at: DateTime<Utc>,
    },
}

impl CheckoutState {
    /// The checkout id.
    pub fn checkout_id(&self) -> &CheckoutId {
        match self {
            CheckoutState::Valid { checkout_id, .. }
            | CheckoutState::Invalid { checkout_id, .. }
            | CheckoutState::Expired { checkout_id, .. } => checkout_id,
        }
    }
}
