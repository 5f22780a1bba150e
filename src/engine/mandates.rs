//! Mandate commands: create, derive, change (confirm, reject, revoke), the kill switch,
//! confirmations and credentials.

use serde::{Deserialize, Serialize};

use super::commands::{
    ChangeMandate, CreateMandate, DeriveMandate, RecordConfirmation, SetSuspension,
};
use super::error::EngineError;
use super::execute::fingerprint_of;
use super::observe;
use super::{scope, Engine};
use crate::domain::{
    ActorId, AuditEvent, AuditKind, Confirmation, LifecycleEvent, Mandate, MandateStatus, Party,
    Principal,
};
use crate::ports::{IdempotencyScope, NewCredential, StoredCredential, StoredResult, Write};

/// A command's result, and whether it was answered from its idempotency record.
///
/// JSON: `{"value": .., "replay": false}` (`value` is `null` for a command without a result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Recorded<T> {
    /// The result (as it is now, for a replay).
    pub value: T,
    /// Whether it was a replay.
    pub replay: bool,
}

impl Engine {
    /// Runs a mandate command under its key; a replay reads its entity again through `load`.
    pub(super) async fn keyed_command<T, C, F, Fut, L>(
        &self,
        scope: IdempotencyScope,
        operation: &'static str,
        command: &C,
        load: L,
        body: F,
    ) -> Result<Recorded<T>, EngineError>
    where
        C: Serialize,
        L: AsyncLoad<T>,
        F: FnOnce(chrono::DateTime<chrono::Utc>) -> Fut,
        Fut: std::future::Future<Output = Result<(T, StoredResult), EngineError>>,
    {
        let fingerprint = fingerprint_of(command)?;
        self.keyed(
            &scope,
            operation,
            &fingerprint,
            None,
            |result, _| async move {
                Ok(Recorded {
                    value: load.load(self, &result).await?,
                    replay: true,
                })
            },
            |now, _| async move {
                let (value, stored) = body(now).await?;
                Ok((
                    Recorded {
                        value,
                        replay: false,
                    },
                    Some(stored),
                ))
            },
        )
        .await
    }

    pub(super) async fn load_mandate(
        &self,
        id: &crate::domain::MandateId,
    ) -> Result<Mandate, EngineError> {
        observe::store("mandate", self.ports.store.mandate(id))
            .await?
            .ok_or_else(|| EngineError::NotFound {
                entity: "mandate",
                id: id.to_string(),
            })
    }

    /// Creates a root mandate (status `pending_confirmation` or `active`, as its lifecycle
    /// says). Root authority is granted by the mandate's buyer, or by a system process of the
    /// host acting for them; an agent, an operator or another buyer is [`EngineError::NotPermitted`].
    pub async fn create_mandate(
        &self,
        by: &Principal,
        command: &CreateMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        observe::Command::new("create_mandate", Some(by), Some(&command.key))
            .run(self.create_mandate_body(by, command))
            .await
    }

    async fn create_mandate_body(
        &self,
        by: &Principal,
        command: &CreateMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        let scope = scope(&by.scope_id(), "create_mandate", &command.key);
        self.keyed_command(
            scope,
            "create_mandate",
            command,
            LoadMandate,
            |now| async move {
                let spec = command.spec.clone();
                if spec.parent_id.is_some() {
                    return Err(EngineError::Invalid {
                        field: "spec.parent_id".into(),
                        message: "a root mandate has no parent: use derive_mandate".into(),
                    });
                }
                if !(by.is_buyer(&spec.buyer_id) || by.is_system()) {
                    return Err(EngineError::NotPermitted {
                        reason: format!(
                            "{by} may not grant root authority for buyer {}: only that buyer or a system may",
                            spec.buyer_id
                        ),
                    });
                }
                let status = spec.lifecycle.status;
                if !matches!(
                    status,
                    MandateStatus::Active | MandateStatus::PendingConfirmation
                ) {
                    return Err(EngineError::Invalid {
                        field: "spec.lifecycle.status".into(),
                        message: format!(
                            "a new mandate is active or pending_confirmation, not {status}"
                        ),
                    });
                }
                let mandate = Mandate::new(spec).map_err(|e| EngineError::invalid("spec", &e))?;
                self.write(
                    Write::InsertMandate(&mandate),
                    &mut vec![created_event(&mandate, by, now)],
                )
                .await?;
                self.audit(&[]).await?;
                let id = mandate.id().clone();
                Ok((mandate, StoredResult::Mandate(id)))
            },
        )
        .await
    }

    /// Derives a child mandate from an active parent; the child must attenuate the parent in
    /// every dimension (I6). The parent's actor (an agent derives only from its own mandate)
    /// or the parent's buyer may derive; anyone else is [`EngineError::NotPermitted`].
    pub async fn derive_mandate(
        &self,
        by: &Principal,
        command: &DeriveMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        observe::Command::new("derive_mandate", Some(by), Some(&command.key))
            .run(self.derive_mandate_body(by, command))
            .await
    }

    async fn derive_mandate_body(
        &self,
        by: &Principal,
        command: &DeriveMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        let scope = scope(&by.scope_id(), "derive_mandate", &command.key);
        self.keyed_command(
            scope,
            "derive_mandate",
            command,
            LoadMandate,
            |now| async move {
                let Some(parent_id) = command.spec.parent_id.clone() else {
                    return Err(EngineError::Invalid {
                        field: "spec.parent_id".into(),
                        message: "a derived mandate names its parent".into(),
                    });
                };
                let parent = self.load_mandate(&parent_id).await?;
                if !(by.acts_as(parent.actor(), parent.buyer_id())
                    || by.is_buyer(parent.buyer_id()))
                {
                    return Err(EngineError::NotPermitted {
                        reason: format!(
                        "{by} may not delegate mandate {parent_id}: only its actor or its buyer may"
                    ),
                    });
                }
                let child = parent.derive(command.spec.clone())?;
                self.write(
                    Write::InsertMandate(&child),
                    &mut vec![created_event(&child, by, now)],
                )
                .await?;
                self.audit(&[]).await?;
                let id = child.id().clone();
                Ok((child, StoredResult::Mandate(id)))
            },
        )
        .await
    }

    /// Confirms, rejects or revokes a mandate (or marks it used or expired). Revocation
    /// blocks every descendant at evaluation time (`ANCESTOR_NOT_ACTIVE`) and refuses the
    /// capture of authorizations under it; with [`super::EngineConfig::void_on_revoke`] the
    /// open authorizations under it are voided at once (best effort: one that cannot be voided
    /// now stays open for its actor, the buyer or an operator to void).
    ///
    /// Who may: confirm and reject only the mandate's buyer; revoke the buyer, an operator, a
    /// system, or the actor of the mandate or of one of its ancestors; mark used and expire
    /// the buyer, an operator or a system. Anyone else is [`EngineError::NotPermitted`].
    pub async fn change_mandate(
        &self,
        by: &Principal,
        command: &ChangeMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        observe::Command::new("change_mandate", Some(by), Some(&command.key))
            .mandate(&command.mandate_id)
            .run(self.change_mandate_body(by, command))
            .await
    }

    async fn change_mandate_body(
        &self,
        by: &Principal,
        command: &ChangeMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        let recorded = self.change_mandate_keyed(by, command).await?;
        if self.config.void_on_revoke && matches!(command.event, LifecycleEvent::Revoke { .. }) {
            let _ = self.void_under(&command.mandate_id).await;
        }
        Ok(recorded)
    }

    /// Voids every open authorization (authorized, or waiting for the buyer, with a PSP
    /// reference) of attempts under `mandate_id` or under a mandate derived from it. Needs no
    /// spending authority (I16): the mandate's buyer, an operator or a system may; anyone else
    /// is [`EngineError::NotPermitted`]. Returns the attempts as they are after their void; an
    /// attempt whose void failed is left as it was and not returned.
    pub async fn void_open_authorizations(
        &self,
        by: &Principal,
        mandate_id: &crate::domain::MandateId,
    ) -> Result<Vec<crate::domain::PaymentAttempt>, EngineError> {
        observe::Command::new("void_open_authorizations", Some(by), None)
            .mandate(mandate_id)
            .run(self.void_open_authorizations_body(by, mandate_id))
            .await
    }

    async fn void_open_authorizations_body(
        &self,
        by: &Principal,
        mandate_id: &crate::domain::MandateId,
    ) -> Result<Vec<crate::domain::PaymentAttempt>, EngineError> {
        let mandate = self.load_mandate(mandate_id).await?;
        if !(by.is_buyer(mandate.buyer_id()) || by.is_operator() || by.is_system()) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not void the authorizations under mandate {mandate_id}: only its buyer, an operator or a system may"
                ),
            });
        }
        self.void_under(mandate_id).await
    }

    async fn void_under(
        &self,
        mandate_id: &crate::domain::MandateId,
    ) -> Result<Vec<crate::domain::PaymentAttempt>, EngineError> {
        let open = observe::store(
            "attempts_in",
            self.ports.store.attempts_in(
                &[
                    crate::domain::AttemptStatus::Authorized,
                    crate::domain::AttemptStatus::RequiresBuyerAction,
                ],
                OPEN_AUTHORIZATIONS,
            ),
        )
        .await?;
        let mut voided = Vec::new();
        for attempt in open.into_iter().filter(|a| a.provider_ref.is_some()) {
            let chain =
                observe::store("chain", self.ports.store.chain(&attempt.request.mandate_id))
                    .await?;
            if !chain.iter().any(|m| m.id() == mandate_id) {
                continue;
            }
            if let Ok(next) = self.void_now(&attempt, self.now(), None).await {
                voided.push(next);
            }
        }
        Ok(voided)
    }

    async fn change_mandate_keyed(
        &self,
        by: &Principal,
        command: &ChangeMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        let scope = scope(&by.scope_id(), "change_mandate", &command.key);
        self.keyed_command(
            scope,
            "change_mandate",
            command,
            LoadMandate,
            |now| async move {
                let mandate = self.load_mandate(&command.mandate_id).await?;
                self.check_change_permission(by, &mandate, &command.event)
                    .await?;
                let next = mandate.apply(&command.event, now)?;
                let reason = match &command.event {
                    LifecycleEvent::Reject { reason } | LifecycleEvent::Revoke { reason } => {
                        Some(reason.to_string())
                    }
                    LifecycleEvent::Confirm | LifecycleEvent::MarkUsed | LifecycleEvent::Expire => {
                        None
                    }
                };
                self.write(
                    Write::UpdateMandate {
                        mandate: &next,
                        expected: mandate.status(),
                    },
                    &mut vec![AuditEvent {
                        at: now,
                        kind: AuditKind::MandateTransition {
                            mandate_id: next.id().clone(),
                            from: mandate.status(),
                            to: next.status(),
                            event: command.event.as_str().to_owned(),
                            by: by.clone(),
                            reason,
                        },
                    }],
                )
                .await?;
                self.audit(&[]).await?;
                let id = next.id().clone();
                Ok((next, StoredResult::Mandate(id)))
            },
        )
        .await
    }

    async fn check_change_permission(
        &self,
        by: &Principal,
        mandate: &Mandate,
        event: &LifecycleEvent,
    ) -> Result<(), EngineError> {
        let buyer = by.is_buyer(mandate.buyer_id());
        let (allowed, who) = match event {
            LifecycleEvent::Confirm | LifecycleEvent::Reject { .. } => (buyer, "its buyer"),
            LifecycleEvent::MarkUsed | LifecycleEvent::Expire => (
                buyer || by.is_operator() || by.is_system(),
                "its buyer, an operator or a system",
            ),
            LifecycleEvent::Revoke { .. } => (
                buyer || by.is_operator() || by.is_system() || {
                    let chain =
                        observe::store("chain", self.ports.store.chain(mandate.id())).await?;
                    chain.iter().any(|m| by.acts_as(m.actor(), m.buyer_id()))
                },
                "its buyer, an operator, a system, or the actor of it or of an ancestor",
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not {} mandate {}: only {who} may",
                    event.as_str(),
                    mandate.id()
                ),
            })
        }
    }

    /// Turns the kill switch on or off for an actor or a buyer: while on, every mandate of
    /// theirs is blocked (`ACTOR_SUSPENDED`, `BUYER_SUSPENDED`).
    ///
    /// Who may: an operator or a system, for any party, on or off; a buyer may turn it on for
    /// themself (it stays on until an operator or a system turns it off, so a buyer can never
    /// lift a suspension support imposed). A buyer stops one agent by revoking the mandates it
    /// holds: an actor's suspension reaches every buyer it works for. An agent never may.
    pub async fn set_suspension(
        &self,
        by: &Principal,
        command: &SetSuspension,
    ) -> Result<Recorded<()>, EngineError> {
        observe::Command::new("set_suspension", Some(by), Some(&command.key))
            .run(self.set_suspension_body(by, command))
            .await
    }

    async fn set_suspension_body(
        &self,
        by: &Principal,
        command: &SetSuspension,
    ) -> Result<Recorded<()>, EngineError> {
        let scope = scope(&by.scope_id(), "set_suspension", &command.key);
        self.keyed_command(
            scope,
            "set_suspension",
            command,
            LoadUnit,
            |now| async move {
                let own = command.suspended
                    && matches!(&command.party, Party::Buyer(b) if by.is_buyer(b));
                if !(own || by.is_operator() || by.is_system()) {
                    return Err(EngineError::NotPermitted {
                        reason: format!(
                            "{by} may not turn the kill switch {} for {:?}: only an operator or a system may (a buyer may turn it on for themself)",
                            if command.suspended { "on" } else { "off" },
                            command.party
                        ),
                    });
                }
                self.write(
                    Write::Suspend {
                        party: &command.party,
                        suspended: command.suspended,
                    },
                    &mut vec![AuditEvent {
                        at: now,
                        kind: AuditKind::Suspension {
                            party: command.party.clone(),
                            suspended: command.suspended,
                            by: by.clone(),
                            reason: command.reason.to_string(),
                        },
                    }],
                )
                .await?;
                if !command.suspended
                    && let Party::Actor(a) = &command.party {
                        observe::store("reset_blocks", self.ports.store.reset_blocks(a)).await?;
                    }
                self.audit(&[]).await?;
                Ok(((), StoredResult::Done))
            },
        )
        .await
    }

    /// Records a buyer confirmation. Only the buyer may record one: `by` must be the
    /// confirmation's buyer, and `confirmed_by` a `human` actor that buyer acts as (anyone
    /// else is [`EngineError::NotPermitted`]); the mandate must exist, be of the same buyer,
    /// and be in the confirmation's currency.
    pub async fn record_confirmation(
        &self,
        by: &Principal,
        command: &RecordConfirmation,
    ) -> Result<Recorded<Confirmation>, EngineError> {
        observe::Command::new("record_confirmation", Some(by), Some(&command.key))
            .run(self.record_confirmation_body(by, command))
            .await
    }

    async fn record_confirmation_body(
        &self,
        by: &Principal,
        command: &RecordConfirmation,
    ) -> Result<Recorded<Confirmation>, EngineError> {
        let c = &command.confirmation;
        let scope = scope(&by.scope_id(), "record_confirmation", &command.key);
        self.keyed_command(
            scope,
            "record_confirmation",
            command,
            LoadConfirmation(c.clone()),
            |now| async move {
                if !by.is_buyer(&c.buyer_id) {
                    return Err(EngineError::NotPermitted {
                        reason: format!(
                            "{by} may not record a confirmation of buyer {}: only that buyer may",
                            c.buyer_id
                        ),
                    });
                }
                if !by.acts_as(&c.confirmed_by, &c.buyer_id) {
                    return Err(EngineError::Invalid {
                        field: "confirmation.confirmed_by".into(),
                        message: "a confirmation is given by the buyer: a human actor".into(),
                    });
                }
                let mandate = self.load_mandate(&c.scope.mandate_id).await?;
                if *mandate.buyer_id() != c.buyer_id {
                    // Another buyer's mandate does not exist for this caller: the same answer
                    // as a missing one, so the command is no oracle for mandate ids.
                    return Err(EngineError::NotFound {
                        entity: "mandate",
                        id: c.scope.mandate_id.to_string(),
                    });
                }
                if c.scope.max_amount.currency() != mandate.currency() {
                    return Err(EngineError::Invalid {
                        field: "confirmation.scope.max_amount.currency".into(),
                        message: format!("mandate {} is in {}", mandate.id(), mandate.currency()),
                    });
                }
                if c.scope.actions.is_empty() {
                    // An answer that approves nothing is a refusal: `decline_confirmation`
                    // records it (with its own audit event).
                    return Err(EngineError::Invalid {
                        field: "confirmation.scope.actions".into(),
                        message: "approves no action: decline with decline_confirmation".into(),
                    });
                }
                if c.expires_at.is_some_and(|e| e <= c.confirmed_at) {
                    return Err(EngineError::Invalid {
                        field: "confirmation.expires_at".into(),
                        message: "must be after confirmed_at".into(),
                    });
                }
                self.write(
                    Write::InsertConfirmation(c),
                    &mut vec![AuditEvent {
                        at: now,
                        kind: AuditKind::ConfirmationRecorded {
                            confirmation_id: c.id.clone(),
                            buyer_id: c.buyer_id.clone(),
                            snapshot_id: c.snapshot_id,
                            mandate_id: c.scope.mandate_id.clone(),
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

    /// Stores a credential in the vault under `key` (scoped to the credential's owner) and
    /// records its public part (never the secret).
    ///
    /// Idempotent through the vault: the same key with the same credential answers the
    /// credential stored the first time (`replay: true`, audited as a replay, nothing stored),
    /// the same key with another credential is [`EngineError::Vault`] with
    /// [`crate::ports::VaultError::IdempotencyConflict`].
    ///
    /// Who may: the credential's buyer (it is their card) or a system process of the host;
    /// anyone else is [`EngineError::NotPermitted`].
    pub async fn store_credential(
        &self,
        by: &Principal,
        key: &crate::domain::IdempotencyKey,
        credential: NewCredential,
    ) -> Result<Recorded<StoredCredential>, EngineError> {
        observe::Command::new("store_credential", Some(by), Some(key))
            .run(self.store_credential_body(by, key, credential))
            .await
    }

    async fn store_credential_body(
        &self,
        by: &Principal,
        key: &crate::domain::IdempotencyKey,
        credential: NewCredential,
    ) -> Result<Recorded<StoredCredential>, EngineError> {
        if !(by.is_buyer(&credential.buyer_id) || by.is_system()) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not store a credential of buyer {}: only that buyer or a system may",
                    credential.buyer_id
                ),
            });
        }
        let now = self.now();
        // The vault scopes keys to the credential's holder; scope them to who asks as well, so
        // no principal can take a key another one will use (and learn from its answer).
        let key = &principal_key(by, key);
        let outcome = observe::vault("store", self.ports.vault.store(key, credential)).await?;
        let stored = outcome.credential;
        if outcome.replay {
            observe::replay("store_credential");
        }
        let kind = if outcome.replay {
            AuditKind::Replay {
                command: "store_credential".to_owned(),
                actor_id: stored.owner.clone(),
                key: key.clone(),
            }
        } else {
            AuditKind::CredentialStored {
                credential_ref: stored.reference.clone(),
                actor_id: stored.owner.clone(),
                brand: stored.display.brand.clone(),
                last4: stored.display.last4.clone(),
                by: by.clone(),
            }
        };
        self.audit(&[AuditEvent { at: now, kind }]).await?;
        Ok(Recorded {
            value: stored,
            replay: outcome.replay,
        })
    }

    /// Revokes every credential an actor holds (one call for everything an agent holds).
    ///
    /// Who may: the holder itself, an operator or a system (the holder's credentials may be of
    /// many buyers); anyone else is [`EngineError::NotPermitted`].
    pub async fn revoke_credentials(
        &self,
        by: &Principal,
        owner: &ActorId,
    ) -> Result<u32, EngineError> {
        observe::Command::new("revoke_credentials", Some(by), None)
            .run(self.revoke_credentials_body(by, owner))
            .await
    }

    async fn revoke_credentials_body(
        &self,
        by: &Principal,
        owner: &ActorId,
    ) -> Result<u32, EngineError> {
        let holder = matches!(by, Principal::Agent(a) | Principal::System(a) if a == owner);
        if !(holder || by.is_operator() || by.is_system()) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not revoke the credentials of {owner}: only the holder, an operator or a system may"
                ),
            });
        }
        let now = self.now();
        let count = observe::vault("revoke_owner", self.ports.vault.revoke_owner(owner)).await?;
        self.audit(&[AuditEvent {
            at: now,
            kind: AuditKind::CredentialRevoked {
                credential_ref: None,
                actor_id: Some(owner.clone()),
                count,
            },
        }])
        .await?;
        Ok(count)
    }
}

fn created_event(m: &Mandate, by: &Principal, now: chrono::DateTime<chrono::Utc>) -> AuditEvent {
    AuditEvent {
        at: now,
        kind: AuditKind::MandateCreated {
            mandate_id: m.id().clone(),
            parent_id: m.parent_id().cloned(),
            buyer_id: m.buyer_id().clone(),
            actor_id: m.actor().id.clone(),
            status: m.status(),
            by: by.clone(),
        },
    }
}

/// Reads the entity a replayed command produced.
pub(super) trait AsyncLoad<T> {
    async fn load(&self, engine: &Engine, result: &StoredResult) -> Result<T, EngineError>;
}

struct LoadMandate;
impl AsyncLoad<Mandate> for LoadMandate {
    async fn load(&self, engine: &Engine, result: &StoredResult) -> Result<Mandate, EngineError> {
        match result {
            StoredResult::Mandate(id) => engine.load_mandate(id).await,
            other => Err(EngineError::NotFound {
                entity: "mandate",
                id: format!("{other:?}"),
            }),
        }
    }
}

struct LoadUnit;
impl AsyncLoad<()> for LoadUnit {
    async fn load(&self, _: &Engine, _: &StoredResult) -> Result<(), EngineError> {
        Ok(())
    }
}

pub(super) struct LoadConfirmation(pub(super) Confirmation);
impl AsyncLoad<Confirmation> for LoadConfirmation {
    async fn load(&self, _: &Engine, _: &StoredResult) -> Result<Confirmation, EngineError> {
        Ok(self.0.clone())
    }
}

/// How many open authorizations one revocation looks at.
const OPEN_AUTHORIZATIONS: usize = 10_000;

/// `key` in the scope of the principal asking: `scope_id/key`, or its SHA-256 when longer
/// than a key may be.
pub(super) fn principal_key(
    by: &Principal,
    key: &crate::domain::IdempotencyKey,
) -> crate::domain::IdempotencyKey {
    use sha2::{Digest as _, Sha256};
    let text = format!("{}/{}", by.scope_id(), key.as_str());
    let text = if text.len() <= crate::domain::MAX_ID_LEN {
        text
    } else {
        format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
    };
    crate::domain::IdempotencyKey::new(&text).unwrap_or_else(|_| key.clone())
}
