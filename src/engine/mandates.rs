//! Mandate commands: create, derive, change (confirm, reject, revoke), the kill switch,
//! confirmations and credentials.

use serde::Serialize;

use super::commands::{
    ChangeMandate, CreateMandate, DeriveMandate, RecordConfirmation, SetSuspension,
};
use super::error::EngineError;
use super::execute::fingerprint_of;
use super::{scope, Engine};
use crate::domain::{
    Actor, ActorId, ActorKind, AuditEvent, AuditKind, Confirmation, LifecycleEvent, Mandate,
    MandateStatus,
};
use crate::ports::{IdempotencyScope, NewCredential, StoredCredential, StoredResult, Write};

/// A command's result, and whether it was answered from its idempotency record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded<T> {
    /// The result (as it is now, for a replay).
    pub value: T,
    /// Whether it was a replay.
    pub replay: bool,
}

impl Engine {
    /// Runs a mandate command under its key; a replay reads its entity again through `load`.
    async fn keyed_command<T, C, F, Fut, L>(
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

    async fn load_mandate(&self, id: &crate::domain::MandateId) -> Result<Mandate, EngineError> {
        self.ports
            .store
            .mandate(id)
            .await?
            .ok_or_else(|| EngineError::NotFound {
                entity: "mandate",
                id: id.to_string(),
            })
    }

    /// Creates a root mandate (status `pending_confirmation` or `active`, as its lifecycle
    /// says). Only a human or a system may grant root authority.
    pub async fn create_mandate(
        &self,
        command: &CreateMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        let scope = scope(&command.by.id, "create_mandate", &command.key);
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
                if command.by.kind == ActorKind::Agent {
                    return Err(EngineError::NotPermitted {
                        reason: format!("agent {} cannot grant root authority", command.by.id),
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
                    &mut vec![created_event(&mandate, &command.by, now)],
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
    /// every dimension (I6). The parent's actor or a human may derive.
    pub async fn derive_mandate(
        &self,
        command: &DeriveMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        let scope = scope(&command.by.id, "derive_mandate", &command.key);
        self.keyed_command(scope, "derive_mandate", command, LoadMandate, |now| async move {
            let Some(parent_id) = command.spec.parent_id.clone() else {
                return Err(EngineError::Invalid {
                    field: "spec.parent_id".into(),
                    message: "a derived mandate names its parent".into(),
                });
            };
            let parent = self.load_mandate(&parent_id).await?;
            if command.by != *parent.actor() && command.by.kind != ActorKind::Human {
                return Err(EngineError::NotPermitted {
                    reason: format!(
                        "actor {} may not delegate mandate {parent_id}: only its actor or a human may",
                        command.by.id
                    ),
                });
            }
            let child = parent.derive(command.spec.clone())?;
            self.write(
                Write::InsertMandate(&child),
                &mut vec![created_event(&child, &command.by, now)],
            )
            .await?;
            self.audit(&[]).await?;
            let id = child.id().clone();
            Ok((child, StoredResult::Mandate(id)))
        })
        .await
    }

    /// Confirms, rejects or revokes a mandate (or marks it used or expired). Revocation
    /// blocks every descendant at evaluation time (`ANCESTOR_NOT_ACTIVE`) and refuses the
    /// capture of authorizations under it; with [`super::EngineConfig::void_on_revoke`] the
    /// open authorizations under it are voided at once (best effort: one that cannot be voided
    /// now stays open for its actor, the buyer or an operator to void).
    pub async fn change_mandate(
        &self,
        command: &ChangeMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        let recorded = self.change_mandate_keyed(command).await?;
        if self.config.void_on_revoke && matches!(command.event, LifecycleEvent::Revoke { .. }) {
            let _ = self.void_open_authorizations(&command.mandate_id).await;
        }
        Ok(recorded)
    }

    /// Voids every open authorization (authorized, or waiting for the buyer, with a PSP
    /// reference) of attempts under `mandate_id` or under a mandate derived from it. Needs no
    /// spending authority (I16). Returns the attempts as they are after their void; an attempt
    /// whose void failed is left as it was and not returned.
    pub async fn void_open_authorizations(
        &self,
        mandate_id: &crate::domain::MandateId,
    ) -> Result<Vec<crate::domain::PaymentAttempt>, EngineError> {
        let open = self
            .ports
            .store
            .attempts_in(
                &[
                    crate::domain::AttemptStatus::Authorized,
                    crate::domain::AttemptStatus::RequiresBuyerAction,
                ],
                OPEN_AUTHORIZATIONS,
            )
            .await?;
        let mut voided = Vec::new();
        for attempt in open.into_iter().filter(|a| a.provider_ref.is_some()) {
            let chain = self.ports.store.chain(&attempt.request.mandate_id).await?;
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
        command: &ChangeMandate,
    ) -> Result<Recorded<Mandate>, EngineError> {
        let scope = scope(&command.by.id, "change_mandate", &command.key);
        self.keyed_command(
            scope,
            "change_mandate",
            command,
            LoadMandate,
            |now| async move {
                let mandate = self.load_mandate(&command.mandate_id).await?;
                self.check_change_permission(&command.by, &mandate, &command.event)
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
                            by: command.by.id.clone(),
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
        by: &Actor,
        mandate: &Mandate,
        event: &LifecycleEvent,
    ) -> Result<(), EngineError> {
        let allowed = match event {
            LifecycleEvent::Confirm | LifecycleEvent::Reject { .. } => by.kind == ActorKind::Human,
            LifecycleEvent::MarkUsed | LifecycleEvent::Expire => by.kind != ActorKind::Agent,
            LifecycleEvent::Revoke { .. } => {
                by.kind != ActorKind::Agent || {
                    let chain = self.ports.store.chain(mandate.id()).await?;
                    chain.iter().any(|m| m.actor() == by)
                }
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(EngineError::NotPermitted {
                reason: format!(
                    "{:?} actor {} may not {} mandate {}",
                    by.kind,
                    by.id,
                    event.as_str(),
                    mandate.id()
                ),
            })
        }
    }

    /// Turns the kill switch on or off for an actor or a buyer: while on, every mandate of
    /// theirs is blocked (`ACTOR_SUSPENDED`, `BUYER_SUSPENDED`). Agents may not use it.
    pub async fn set_suspension(
        &self,
        command: &SetSuspension,
    ) -> Result<Recorded<()>, EngineError> {
        let scope = scope(&command.by.id, "set_suspension", &command.key);
        self.keyed_command(
            scope,
            "set_suspension",
            command,
            LoadUnit,
            |now| async move {
                if command.by.kind == ActorKind::Agent {
                    return Err(EngineError::NotPermitted {
                        reason: format!("agent {} cannot operate the kill switch", command.by.id),
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
                            by: command.by.id.clone(),
                            reason: command.reason.to_string(),
                        },
                    }],
                )
                .await?;
                if !command.suspended {
                    if let crate::domain::Party::Actor(a) = &command.party {
                        self.ports.store.reset_blocks(a).await?;
                    }
                }
                self.audit(&[]).await?;
                Ok(((), StoredResult::Done))
            },
        )
        .await
    }

    /// Records a buyer confirmation. It must come from a human, for an existing mandate of
    /// the same buyer, in the mandate's currency.
    pub async fn record_confirmation(
        &self,
        command: &RecordConfirmation,
    ) -> Result<Recorded<Confirmation>, EngineError> {
        let c = &command.confirmation;
        let scope = scope(&c.confirmed_by.id, "record_confirmation", &command.key);
        self.keyed_command(
            scope,
            "record_confirmation",
            command,
            LoadConfirmation(c.clone()),
            |now| async move {
                if !c.by_human() {
                    return Err(EngineError::Invalid {
                        field: "confirmation.confirmed_by.kind".into(),
                        message: "a confirmation comes from a human".into(),
                    });
                }
                let mandate = self.load_mandate(&c.scope.mandate_id).await?;
                if *mandate.buyer_id() != c.buyer_id {
                    return Err(EngineError::Invalid {
                        field: "confirmation.buyer_id".into(),
                        message: format!("mandate {} is of another buyer", mandate.id()),
                    });
                }
                if c.scope.max_amount.currency() != mandate.currency() {
                    return Err(EngineError::Invalid {
                        field: "confirmation.scope.max_amount.currency".into(),
                        message: format!("mandate {} is in {}", mandate.id(), mandate.currency()),
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
    pub async fn store_credential(
        &self,
        key: &crate::domain::IdempotencyKey,
        credential: NewCredential,
    ) -> Result<Recorded<StoredCredential>, EngineError> {
        let now = self.now();
        let outcome = self.ports.vault.store(key, credential).await?;
        let stored = outcome.credential;
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
            }
        };
        self.audit(&[AuditEvent { at: now, kind }]).await?;
        Ok(Recorded {
            value: stored,
            replay: outcome.replay,
        })
    }

    /// Revokes every credential an actor holds (one call for everything an agent holds).
    pub async fn revoke_credentials(&self, owner: &ActorId) -> Result<u32, EngineError> {
        let now = self.now();
        let count = self.ports.vault.revoke_owner(owner).await?;
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

fn created_event(m: &Mandate, by: &Actor, now: chrono::DateTime<chrono::Utc>) -> AuditEvent {
    AuditEvent {
        at: now,
        kind: AuditKind::MandateCreated {
            mandate_id: m.id().clone(),
            parent_id: m.parent_id().cloned(),
            buyer_id: m.buyer_id().clone(),
            actor_id: m.actor().id.clone(),
            status: m.status(),
            by: by.id.clone(),
        },
    }
}

/// Reads the entity a replayed command produced.
trait AsyncLoad<T> {
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

struct LoadConfirmation(Confirmation);
impl AsyncLoad<Confirmation> for LoadConfirmation {
    async fn load(&self, _: &Engine, _: &StoredResult) -> Result<Confirmation, EngineError> {
        Ok(self.0.clone())
    }
}

/// How many open authorizations one revocation looks at.
const OPEN_AUTHORIZATIONS: usize = 10_000;
