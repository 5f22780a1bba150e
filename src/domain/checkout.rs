//! The upstream checkout state, given to the decision as a fact with its own blockers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::canonical::SnapshotId;
use super::error::{check_len, err, ValidationError, ValidationKind};
use super::ids::{CheckoutId, Text, UpstreamCode};
use super::limits::{bounded, MAX_UPSTREAM_BLOCKERS, MAX_UPSTREAM_MESSAGE_LEN};

/// A blocker reported by the checkout service (`INVENTORY_STALE`, `RETURN_POLICY_MISSING`).
///
/// Its message is at most [`MAX_UPSTREAM_MESSAGE_LEN`] bytes (checked when deserialised, by
/// [`UpstreamBlocker::new`] and by [`CheckoutState::validate`]); it has no causes of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "UpstreamBlocker")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct UpstreamBlocker {
    /// The upstream code.
    pub code: UpstreamCode,
    /// Its message.
    #[serde(deserialize_with = "upstream_message")]
    pub message: Text,
}

impl UpstreamBlocker {
    /// A blocker whose message is at most [`MAX_UPSTREAM_MESSAGE_LEN`] bytes.
    pub fn new(code: UpstreamCode, message: Text) -> Result<UpstreamBlocker, ValidationError> {
        check_message(&message).map_err(|kind| err("message", kind))?;
        Ok(UpstreamBlocker { code, message })
    }
}

fn check_message(message: &Text) -> Result<(), ValidationKind> {
    let len = message.as_str().len();
    if len > MAX_UPSTREAM_MESSAGE_LEN {
        return Err(ValidationKind::TooLong {
            max: MAX_UPSTREAM_MESSAGE_LEN,
            len,
        });
    }
    Ok(())
}

fn upstream_message<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
    let message = Text::deserialize(d)?;
    check_message(&message).map_err(serde::de::Error::custom)?;
    Ok(message)
}

/// What the checkout service says about the checkout. Payment authority never overrides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "CheckoutState")
)]
#[serde(remote = "Self")]
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
        /// Why (nested as causes of `CHECKOUT_NOT_VALID`): at most [`MAX_UPSTREAM_BLOCKERS`].
        #[serde(default, deserialize_with = "bounded::<_, _, MAX_UPSTREAM_BLOCKERS>")]
        blockers: Vec<UpstreamBlocker>,
    },
    /// Expired: must be prepared again.
    Expired {
        /// The checkout.
        checkout_id: CheckoutId,
        /// When it expired.
        #[serde(deserialize_with = "crate::domain::canonical::time")]
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

    /// Checks the limits a deserialised state is held to: at most [`MAX_UPSTREAM_BLOCKERS`]
    /// upstream blockers, each message at most [`MAX_UPSTREAM_MESSAGE_LEN`] bytes. For states
    /// built in code, before they reach a decision.
    ///
    /// ```
    /// use agent_mandate::domain::{CheckoutState, UpstreamBlocker};
    /// let blocker = UpstreamBlocker {
    ///     code: "INVENTORY_STALE".parse().unwrap(),
    ///     message: "Inventory must be revalidated".parse().unwrap(),
    /// };
    /// let state = CheckoutState::Invalid {
    ///     checkout_id: "checkout_789".parse().unwrap(),
    ///     blockers: vec![blocker; 65],
    /// };
    /// assert_eq!(state.validate().unwrap_err().field(), "invalid.blockers");
    /// ```
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let CheckoutState::Invalid { blockers, .. } = self {
            check_len("invalid.blockers", blockers, MAX_UPSTREAM_BLOCKERS)?;
            for (i, b) in blockers.iter().enumerate() {
                check_message(&b.message)
                    .map_err(|kind| err(format!("invalid.blockers[{i}].message"), kind))?;
            }
        }
        Ok(())
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

crate::json::object_only!(UpstreamBlocker);
crate::json::object_only!(CheckoutState);
