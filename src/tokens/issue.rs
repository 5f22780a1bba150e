//! Issuing a token: a child mandate, a vault credential of its own, a record, a value shown once.

use super::commands::{IssueToken, IssuedToken, TokenError};
use super::secret::{draw_secret, hash_secret, issue_digest, token_value};
use super::{rules, token_actor_id, TokenService};
use crate::domain::{
    Actor, ActorKind, AuditEvent, AuditKind, CredentialStatus, IdempotencyKey, MandateId,
    MandateStatus, Principal,
};
use crate::engine::DeriveMandate;
use crate::ports::{
    InsertToken, NewCredential, RevocationProgress, TokenDisplay, TokenId, TokenRecord, TokenStatus,
};

fn invalid(field: &str, message: impl Into<String>) -> TokenError {
    TokenError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn derived_key(prefix: &str, digest: &[u8; 32]) -> Result<IdempotencyKey, TokenError> {
    IdempotencyKey::new(format!("{prefix}{}", hex::encode(&digest[..20])))
        .map_err(|e| invalid("key", e.to_string()))
}

impl TokenService {
    /// Issues a token under `command.parent_id` (see [`IssueToken`]).
    ///
    /// Who may: the parent mandate's actor or its buyer (anyone else is
    /// [`TokenError::NotPermitted`]). Refused with [`TokenError::Invalid`]: limits without a
    /// cap, caps in another currency than the token's or the mandate's, a time to live out of
    /// range, a credential of another buyer or holder, or one not usable now. A token wider
    /// than its mandate is refused by the delegation check
    /// ([`crate::engine::EngineError::Delegation`] inside [`TokenError::Engine`]).
    ///
    /// Idempotent per (principal, key): the same key answers the stored record with
    /// `replay: true` and no value (a value is shown once); another command under the key is
    /// [`TokenError::IdempotencyConflict`].
    pub async fn issue(
        &self,
        by: &Principal,
        command: &IssueToken,
    ) -> Result<IssuedToken, TokenError> {
        rules::check_limits(&command.limits, command.ttl_seconds)
            .map_err(|(field, message)| invalid(field, message))?;
        let ports = self.engine.ports();
        let parent = ports
            .store
            .mandate(&command.parent_id)
            .await
            .map_err(crate::engine::EngineError::from)?
            .ok_or_else(|| invalid("parent_id", format!("no mandate {}", command.parent_id)))?;
        if !(by.acts_as(parent.actor(), parent.buyer_id()) || by.is_buyer(parent.buyer_id())) {
            return Err(TokenError::NotPermitted {
                reason: format!(
                    "{by} may not issue a token under mandate {}: only its actor or its buyer may",
                    parent.id()
                ),
            });
        }
        if parent.currency() != command.limits.currency {
            return Err(invalid(
                "limits.currency",
                format!("mandate {} is in {}", parent.id(), parent.currency()),
            ));
        }

        let digest = issue_digest(by.scope_id().as_str(), command.key.as_str());
        let mut id_bytes = [0u8; 16];
        id_bytes.copy_from_slice(&digest[..16]);
        let id = TokenId::from_bytes(id_bytes);
        if let Some(existing) = self.store.token(&id).await? {
            return self.replayed(command, existing);
        }

        let source = ports.vault.describe(&command.credential).await?;
        if source.buyer_id != *parent.buyer_id() {
            return Err(invalid(
                "credential",
                format!(
                    "credential {} is another buyer's than mandate {}",
                    command.credential,
                    parent.id()
                ),
            ));
        }
        if source.owner != parent.actor().id {
            return Err(invalid(
                "credential",
                format!(
                    "credential {} is not held by the actor of mandate {}",
                    command.credential,
                    parent.id()
                ),
            ));
        }
        let now = ports.clock.now();
        match ports.vault.status(&command.credential, now).await? {
            CredentialStatus::Usable => {}
            other => {
                return Err(invalid(
                    "credential",
                    format!("credential {} is not usable: {other:?}", command.credential),
                ))
            }
        }

        // 1. The authority: a child mandate (the delegation check refuses a wider token).
        let actor = Actor {
            id: token_actor_id(&id)?,
            kind: ActorKind::System,
        };
        let mandate_id = MandateId::new(format!("tokm_{}", &id.as_str()[4..]))
            .map_err(|e| invalid("parent_id", e.to_string()))?;
        // Its times are the first attempt's: a retry after a failure past this step (the
        // vault, the generator, the token store) finds the child by its id and rebuilds the
        // same spec, instead of a spec at a later time the engine would take for another
        // command under the key (an idempotency conflict forever, and an orphaned child).
        let existing = ports
            .store
            .mandate(&mandate_id)
            .await
            .map_err(crate::engine::EngineError::from)?;
        let issued_at = existing.as_ref().map_or(now, |m| m.lifecycle().created_at);
        let spec = rules::child_spec(
            &parent,
            mandate_id.clone(),
            actor.clone(),
            &command.redeemer,
            &command.limits,
            command.ttl_seconds,
            issued_at,
        );
        let child = match existing {
            Some(child) => {
                let same = child.parent_id() == Some(parent.id())
                    && *child.actor() == spec.actor
                    && *child.buyer_id() == spec.buyer_id
                    && *child.scope() == spec.scope;
                if !same {
                    return Err(TokenError::IdempotencyConflict {
                        key: command.key.clone(),
                        operation: "issue_token",
                    });
                }
                // The derive is not asked again: what it would refuse now is refused here (a
                // parent or child revoked, expired or used since the first attempt).
                for m in [&parent, &child] {
                    if m.status() != MandateStatus::Active {
                        return Err(invalid(
                            "parent_id",
                            format!("mandate {} is {}", m.id(), m.status().as_str()),
                        ));
                    }
                }
                child
            }
            None => {
                self.engine
                    .derive_mandate(
                        by,
                        &DeriveMandate::new(derived_key("tok-m-", &digest)?, spec),
                    )
                    .await?
                    .value
            }
        };

        // 2. The token's own vault credential: the orchestrator's secret is resolved through
        // the vault port here, held only as a `Secret` (redacted, zeroized on drop) and
        // handed straight back to the vault under the token's actor; no caller, PSP or event
        // sees it.
        let resolved = ports.vault.resolve(&command.credential, now).await?;
        let token_principal = Principal::System(actor.id.clone());
        let stored = self
            .engine
            .store_credential(
                &token_principal,
                &derived_key("tok-c-", &digest)?,
                NewCredential {
                    kind: resolved.stored.kind,
                    owner: actor.id.clone(),
                    buyer_id: parent.buyer_id().clone(),
                    secret: resolved.secret.clone(),
                    cvc: resolved.cvc.clone(),
                    display: resolved.stored.display.clone(),
                },
            )
            .await?
            .value;
        drop(resolved);

        // 3. The record and the value.
        let secret = draw_secret(self.generator.as_ref())?;
        let mut lineage = ports
            .store
            .chain(parent.id())
            .await
            .map_err(crate::engine::EngineError::from)?
            .iter()
            .map(|m| m.id().clone())
            .collect::<Vec<_>>();
        if lineage.last() != Some(parent.id()) {
            lineage.push(parent.id().clone());
        }
        let record = TokenRecord {
            id: id.clone(),
            hash: hash_secret(&id, &secret),
            buyer_id: parent.buyer_id().clone(),
            issuer: parent.actor().id.clone(),
            lineage,
            mandate_id: child.id().clone(),
            credential: stored.reference.clone(),
            source_credential: command.credential.clone(),
            redeemer: command.redeemer.clone(),
            limits: command.limits.clone(),
            display: TokenDisplay {
                brand: source.display.brand.clone(),
                last4: source.display.last4.clone(),
                funding: source.display.funding,
            },
            issued_at,
            expires_at: child.scope().validity.expires_at,
            status: TokenStatus::Active,
            revoked_at: None,
            revocation: RevocationProgress::default(),
        };
        match self.store.insert(&record).await? {
            InsertToken::Inserted => {}
            InsertToken::Existing(existing) => return self.replayed(command, *existing),
        }
        let value = token_value(&id, &secret);
        let mut secret = secret;
        zeroize::Zeroize::zeroize(&mut secret);
        self.audit(&[AuditEvent {
            at: now,
            kind: AuditKind::TokenIssued {
                token_id: id.to_string(),
                mandate_id: record.mandate_id.clone(),
                parent_id: parent.id().clone(),
                buyer_id: record.buyer_id.clone(),
                provider: record.redeemer.provider.clone(),
                by: by.clone(),
            },
        }])
        .await?;
        Ok(IssuedToken {
            token: Some(value),
            record,
            replay: false,
        })
    }

    fn replayed(
        &self,
        command: &IssueToken,
        existing: TokenRecord,
    ) -> Result<IssuedToken, TokenError> {
        let same = existing.lineage.last() == Some(&command.parent_id)
            && existing.source_credential == command.credential
            && existing.redeemer == command.redeemer
            && existing.limits == command.limits;
        if !same {
            return Err(TokenError::IdempotencyConflict {
                key: command.key.clone(),
                operation: "issue_token",
            });
        }
        Ok(IssuedToken {
            token: None,
            record: existing,
            replay: true,
        })
    }
}
