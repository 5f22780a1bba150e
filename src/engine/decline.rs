//! The buyer declines to confirm a payment: [`Engine::decline_confirmation`].
//!
//! A payment that waits for the buyer's confirmation stays refused until the buyer confirms
//! it; without a way to say no, an agent could keep asking for the same cart and the buyer's
//! "no" left no trace. The decline is recorded durably as the buyer's answer for that cart
//! under that mandate (a confirmation that approves no action, stored with the others, so
//! every store keeps it without a new table), audited as `confirmation_declined`, and the
//! agent's later request for that cart is refused with `CONFIRMATION_DECLINED` (a hard
//! blocker: asking again does not help) until the buyer confirms that cart after all.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::EngineError;
use super::mandates::{LoadConfirmation, Recorded};
use super::{scope, Engine};
use crate::domain::{
    ActionSet, Actor, ActorId, ActorKind, AuditEvent, AuditKind, ChannelRef, Confirmation,
    ConfirmationId, ConfirmationScope, IdempotencyKey, MandateId, Money, Principal, SnapshotId,
    Text,
};
use crate::ports::{StoredResult, Write};

/// Decline to confirm the cart `snapshot_id` an agent asked to pay under `mandate_id`. Asked
/// by that mandate's buyer only.
///
/// ```
/// use agent_mandate::domain::{MandateId, Text};
/// use agent_mandate::engine::DeclineConfirmation;
/// let snapshot = agent_mandate::domain::examples::travel_backpack_snapshot().id();
/// let command = DeclineConfirmation::new(
///     "decline-1".parse()?,
///     MandateId::new("mandate_travel")?,
///     snapshot,
///     Text::new("too expensive")?,
/// );
/// assert_eq!(command.reason.as_str(), "too expensive");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DeclineConfirmation {
    /// Idempotency key.
    pub key: IdempotencyKey,
    /// The mandate the agent asked under.
    pub mandate_id: MandateId,
    /// The cart declined.
    pub snapshot_id: SnapshotId,
    /// Why, in the buyer's words (audited).
    pub reason: Text,
}

impl DeclineConfirmation {
    /// A decline of `snapshot_id` under `mandate_id`.
    pub fn new(
        key: IdempotencyKey,
        mandate_id: MandateId,
        snapshot_id: SnapshotId,
        reason: Text,
    ) -> Self {
        DeclineConfirmation {
            key,
            mandate_id,
            snapshot_id,
            reason,
        }
    }
}

impl Engine {
    /// Records the buyer's refusal of a payment that waits for their confirmation: the
    /// mandate's buyer declines cart `snapshot_id` under `mandate_id`. From then on a request
    /// to pay that cart under that mandate (or a mandate derived from it) is refused with
    /// `CONFIRMATION_DECLINED`, until the buyer records a confirmation of that cart later.
    /// Audited as `confirmation_declined` with the reason. The answer is a [`Confirmation`]
    /// whose scope approves no action ([`Confirmation::is_decline`]).
    ///
    /// Who may: the buyer of the mandate, only. Another buyer is [`EngineError::NotFound`]
    /// (as for a mandate that does not exist: no oracle for ids); an agent, an operator or a
    /// system is [`EngineError::NotPermitted`] (a refusal is the buyer's own word, as a
    /// confirmation is: no one answers for them).
    ///
    /// Idempotent under `key` in the buyer's scope: the same key with the same command
    /// answers the first decline (`replay: true`), with another command
    /// [`EngineError::IdempotencyConflict`].
    pub async fn decline_confirmation(
        &self,
        by: &Principal,
        command: &DeclineConfirmation,
    ) -> Result<Recorded<Confirmation>, EngineError> {
        super::observe::Command::new("decline_confirmation", Some(by), Some(&command.key))
            .mandate(&command.mandate_id)
            .run(self.decline_confirmation_body(by, command))
            .await
    }

    async fn decline_confirmation_body(
        &self,
        by: &Principal,
        command: &DeclineConfirmation,
    ) -> Result<Recorded<Confirmation>, EngineError> {
        let Principal::Buyer(buyer) = by else {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not decline a payment confirmation: only the mandate's buyer may"
                ),
            });
        };
        let mandate = self.load_mandate(&command.mandate_id).await?;
        if mandate.buyer_id() != buyer {
            return Err(EngineError::NotFound {
                entity: "mandate",
                id: command.mandate_id.to_string(),
            });
        }
        let now = self.now();
        let digest = hex::encode(Sha256::digest(
            format!("{}\n{}", by.scope_id(), command.key.as_str()).as_bytes(),
        ));
        let invalid = |field: &str, e: crate::domain::ValidationError| EngineError::Invalid {
            field: field.into(),
            message: e.to_string(),
        };
        let decline = Confirmation {
            id: ConfirmationId::new(format!("decl_{}", &digest[..32]))
                .map_err(|e| invalid("confirmation.id", e))?,
            buyer_id: buyer.clone(),
            confirmed_by: Actor {
                id: ActorId::new(buyer.as_str()).map_err(|e| invalid("buyer_id", e))?,
                kind: ActorKind::Human,
            },
            confirmed_at: now,
            expires_at: None,
            snapshot_id: command.snapshot_id,
            scope: ConfirmationScope {
                mandate_id: command.mandate_id.clone(),
                actions: ActionSet::EMPTY,
                max_amount: Money::zero(mandate.currency()),
            },
            channel_ref: ChannelRef::new("decline").map_err(|e| invalid("channel_ref", e))?,
        };
        let key_scope = scope(&by.scope_id(), "decline_confirmation", &command.key);
        let c = &decline;
        self.keyed_command(
            key_scope,
            "decline_confirmation",
            command,
            LoadConfirmation(decline.clone()),
            |now| async move {
                self.write(
                    Write::InsertConfirmation(c),
                    &mut vec![AuditEvent {
                        at: now,
                        kind: AuditKind::ConfirmationDeclined {
                            confirmation_id: c.id.clone(),
                            buyer_id: c.buyer_id.clone(),
                            snapshot_id: c.snapshot_id,
                            mandate_id: c.scope.mandate_id.clone(),
                            reason: command.reason.as_str().to_owned(),
                        },
                    }],
                )
                .await?;
                self.audit(&[]).await?;
                Ok((c.clone(), StoredResult::Confirmation(c.id.clone())))
            },
        )
        .await
    }
}
