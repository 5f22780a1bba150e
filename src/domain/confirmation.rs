//! Buyer confirmations: structured events bound to a snapshot and a scope, never chat messages.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::canonical::SnapshotId;
use super::ids::{BuyerId, ChannelRef, ConfirmationId, MandateId};
use super::mandate::{Actor, ActorKind};
use super::money::Money;
use super::scope::ActionSet;

/// What a confirmation approves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ConfirmationScope")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct ConfirmationScope {
    /// The mandate it was given under (any mandate of the request's chain).
    pub mandate_id: MandateId,
    /// The actions approved.
    pub actions: ActionSet,
    /// The most that may be charged under it.
    pub max_amount: Money,
}

/// A recorded buyer confirmation.
///
/// It satisfies a confirmation rule only when: its buyer is the request's buyer, it was given by
/// a human, it names the request's snapshot, its mandate is in the chain, it covers the action
/// and the amount (same currency), it was given at or before `now`, and has not expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Confirmation")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct Confirmation {
    /// Its id.
    pub id: ConfirmationId,
    /// The buyer.
    pub buyer_id: BuyerId,
    /// Who confirmed (must be a human).
    pub confirmed_by: Actor,
    /// When.
    #[serde(deserialize_with = "crate::domain::canonical::time")]
    pub confirmed_at: DateTime<Utc>,
    /// Until when it counts; `None`: as long as the mandate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "crate::domain::canonical::opt_time")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The snapshot confirmed.
    pub snapshot_id: SnapshotId,
    /// The scope confirmed.
    pub scope: ConfirmationScope,
    /// The channel it came through.
    pub channel_ref: ChannelRef,
}

impl Confirmation {
    /// Whether it was given by a human (an agent cannot confirm for the buyer).
    pub fn by_human(&self) -> bool {
        self.confirmed_by.kind == ActorKind::Human
    }

    /// Whether it is the buyer's refusal: an answer that approves no action (recorded by
    /// `Engine::decline_confirmation`). A request for its snapshot under its mandate is refused
    /// with `CONFIRMATION_DECLINED` until the buyer confirms that snapshot later.
    pub fn is_decline(&self) -> bool {
        self.scope.actions.is_empty()
    }

    /// Whether it is in force at `now`.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.confirmed_at <= now && self.expires_at.is_none_or(|e| now < e)
    }
}

crate::json::object_only!(ConfirmationScope);
crate::json::object_only!(Confirmation);
