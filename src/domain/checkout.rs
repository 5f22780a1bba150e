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

impl super::canonical::Canonical for UpstreamBlocker {
    fn write_canonical<S: super::canonical::Sink>(&self, o: &mut super::canonical::Jcs<'_, S>) {
        o.begin();
        o.field_str("code", self.code.as_str());
        o.field_str("message", self.message.as_str());
        o.end();
    }
}

impl super::canonical::Canonical for CheckoutState {
    /// The serde shape (`{"valid":{...}}`), in canonical form.
    fn write_canonical<S: super::canonical::Sink>(&self, o: &mut super::canonical::Jcs<'_, S>) {
        o.begin();
        match self {
            CheckoutState::Valid {
                checkout_id,
                snapshot_id,
            } => {
                o.key("valid");
                o.begin();
                o.field_str("checkout_id", checkout_id.as_str());
                o.field_digest("snapshot_id", snapshot_id.as_bytes());
                o.end();
            }
            CheckoutState::Invalid {
                checkout_id,
                blockers,
            } => {
                o.key("invalid");
                o.begin();
                o.field_list("blockers", blockers);
                o.field_str("checkout_id", checkout_id.as_str());
                o.end();
            }
            CheckoutState::Expired {
                checkout_id,
                expired_at,
            } => {
                o.key("expired");
                o.begin();
                o.field_str("checkout_id", checkout_id.as_str());
                o.field_time("expired_at", expired_at);
                o.end();
            }
        }
        o.end();
    }
}
