//! Revocation fan-out: one call revokes an agent's, a credential's or a mandate's tokens.

use super::commands::{RevokeTokens, TokenError};
use super::{token_actor_id, TokenService};
use crate::domain::{
    json_fingerprint, AuditEvent, AuditKind, IdempotencyKey, LifecycleEvent, MandateStatus,
    Principal,
};
use crate::engine::{ChangeMandate, EngineError};
use crate::ports::{
    Begin, IdempotencyScope, ProviderError, RevocationProgress, RevokeTokenRequest, StoredResult,
    TokenRecord, TokenSelector, TokenStatus,
};

fn invalid(field: &str, message: impl Into<String>) -> TokenError {
    TokenError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl TokenService {
    /// Revokes every token `command.selector` reaches, and what it names, in one call;
    /// returns how many tokens this call revoked (already revoked ones are not counted).
    ///
    /// | selector | also revokes | who may |
    /// |---|---|---|
    /// | `token` | nothing else | the token's buyer, its issuer, an operator, a system |
    /// | `issuer` (an agent) | every vault credential it holds ([`crate::engine::Engine::revoke_credentials`]) | the agent itself, an operator, a system |
    /// | `credential` | that vault credential | its buyer, its holder, an operator, a system |
    /// | `mandate` | the mandate ([`crate::engine::Engine::change_mandate`]; its descendants are blocked) | as `change_mandate`'s revoke (also when the mandate is revoked already) |
    ///
    /// A provider ([`Principal::Provider`]) may revoke nothing. (A `System` principal is not
    /// refused for naming a token's redeemer: the redeemer's id is chosen by whoever issues
    /// the token, so an agent could name the host's revoking process and lock it out. A
    /// provider cannot redeem as `System`, so a host has no reason to give it one.)
    ///
    /// Order: the permission, then what the selector names, then every selected token is
    /// marked revoked in one atomic store step (a redemption's claim is before it, and then
    /// completes or is refused by the engine, or after it, and is refused), then for each
    /// selected token marked revoked whose fan-out is not finished (this call's, and those a
    /// failed call left): its mandate revoked, its vault credential revoked, the PSP's side
    /// revoked when the PSP keeps one, then one `token_revoked` event, and the token's
    /// [`RevocationProgress`] marked finished. A failure is returned after every token was
    /// tried; a retry (whose count is 0 for tokens already marked) finishes what is left: the
    /// steps are idempotent, and the event is written once (an idempotency record of the
    /// token's actor guards it against a concurrent fan-out). While the PSP's side cannot be
    /// revoked (a retryable PSP error) the token's event waits and the call fails, so the
    /// caller retries; a PSP that refuses for good is recorded as `psp: false`.
    pub async fn revoke(&self, by: &Principal, command: &RevokeTokens) -> Result<u32, TokenError> {
        let ports = self.engine.ports();
        let now = ports.clock.now();
        let denied = |what: &str| TokenError::NotPermitted {
            reason: format!("{by} may not revoke {what}"),
        };
        let selector_name;
        match &command.selector {
            TokenSelector::Token { token_id } => {
                selector_name = "token";
                let record =
                    self.store
                        .token(token_id)
                        .await?
                        .ok_or_else(|| TokenError::Invalid {
                            field: "selector.token_id".into(),
                            message: format!("no token {token_id}"),
                        })?;
                let issuer =
                    matches!(by, Principal::Agent(a) | Principal::System(a) if *a == record.issuer);
                if !(by.is_buyer(&record.buyer_id) || issuer || by.is_operator() || by.is_system())
                {
                    return Err(denied(&format!("token {token_id}")));
                }
            }
            TokenSelector::Issuer { actor_id } => {
                selector_name = "issuer";
                let holder =
                    matches!(by, Principal::Agent(a) | Principal::System(a) if a == actor_id);
                if !(holder || by.is_operator() || by.is_system()) {
                    return Err(denied(&format!("the tokens of {actor_id}")));
                }
                self.engine.revoke_credentials(by, actor_id).await?;
            }
            TokenSelector::Credential { credential } => {
                selector_name = "credential";
                let stored = ports.vault.describe(credential).await?;
                let holder =
                    matches!(by, Principal::Agent(a) | Principal::System(a) if *a == stored.owner);
                if !(by.is_buyer(&stored.buyer_id) || holder || by.is_operator() || by.is_system())
                {
                    return Err(denied(&format!("credential {credential}")));
                }
                ports.vault.revoke(credential).await?;
                self.audit(&[AuditEvent {
                    at: now,
                    kind: AuditKind::CredentialRevoked {
                        credential_ref: Some(credential.clone()),
                        actor_id: None,
                        count: 1,
                    },
                }])
                .await?;
            }
            TokenSelector::Mandate { mandate_id } => {
                selector_name = "mandate";
                let mandate = ports
                    .store
                    .mandate(mandate_id)
                    .await
                    .map_err(EngineError::from)?
                    .ok_or_else(|| TokenError::Invalid {
                        field: "selector.mandate_id".into(),
                        message: format!("no mandate {mandate_id}"),
                    })?;
                if mandate.status() == MandateStatus::Revoked {
                    // Revoked already: the fan-out still needs who could have revoked it.
                    let chain = ports
                        .store
                        .chain(mandate_id)
                        .await
                        .map_err(EngineError::from)?;
                    let allowed = by.is_buyer(mandate.buyer_id())
                        || by.is_operator()
                        || by.is_system()
                        || chain.iter().any(|m| by.acts_as(m.actor(), m.buyer_id()));
                    if !allowed {
                        return Err(denied(&format!("mandate {mandate_id}")));
                    }
                } else {
                    let key = IdempotencyKey::new(format!("tok-revoke-{mandate_id}"))
                        .or_else(|_| IdempotencyKey::new("tok-revoke-mandate"))
                        .map_err(|e| TokenError::Invalid {
                            field: "selector.mandate_id".into(),
                            message: e.to_string(),
                        })?;
                    self.engine
                        .change_mandate(
                            by,
                            &ChangeMandate::new(
                                key,
                                mandate_id.clone(),
                                LifecycleEvent::Revoke {
                                    reason: command.reason.clone(),
                                },
                            ),
                        )
                        .await?;
                }
            }
        }

        // The order point: every selected token revoked at once.
        let revoked = self.store.revoke(&command.selector, now).await?;
        // Then the fan-out of every selected token marked revoked and not finished: this
        // call's, and any a failed call left half-way.
        let mut unfinished = revoked.clone();
        for t in self.store.tokens(&command.selector).await? {
            if t.status == TokenStatus::Revoked
                && !t.revocation.finished
                && !unfinished.iter().any(|u| u.id == t.id)
            {
                unfinished.push(t);
            }
        }
        let mut first_error = None;
        for record in &unfinished {
            if let Err(e) = self
                .finish_revocation(by, record, selector_name, command)
                .await
            {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(u32::try_from(revoked.len()).unwrap_or(u32::MAX)),
        }
    }

    /// The token's mandate, vault credential and PSP side, then its event, once.
    async fn finish_revocation(
        &self,
        by: &Principal,
        record: &TokenRecord,
        selector: &str,
        command: &RevokeTokens,
    ) -> Result<(), TokenError> {
        if record.revocation.finished {
            return Ok(());
        }
        let ports = self.engine.ports();
        let actor = token_actor_id(&record.id)?;
        let mandate = ports
            .store
            .mandate(&record.mandate_id)
            .await
            .map_err(EngineError::from)?;
        if mandate.is_some_and(|m| !m.status().is_terminal()) {
            let key = IdempotencyKey::new(format!("tok-revoke-{}", record.id))
                .map_err(|e| invalid("token_id", e.to_string()))?;
            let revoked = self
                .engine
                .change_mandate(
                    &Principal::System(actor.clone()),
                    &ChangeMandate::new(
                        key,
                        record.mandate_id.clone(),
                        LifecycleEvent::Revoke {
                            reason: command.reason.clone(),
                        },
                    ),
                )
                .await;
            match revoked {
                Ok(_) => {}
                // A concurrent fan-out is revoking this token's mandate now: it finishes the
                // token (the token is already revoked in its store, so no redemption passes
                // meanwhile), and a fan-out that dies half-way is resumed by the next call.
                Err(EngineError::IdempotencyInFlight { .. }) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        ports.vault.revoke(&record.credential).await?;

        // The PSP's side: retried until it answers; its flag kept so it is asked once more
        // at most after it confirmed.
        let mut psp = record.revocation.psp_revoked;
        if !psp && ports.provider.revokes_tokens() {
            let asked = ports
                .provider
                .revoke_token(&RevokeTokenRequest {
                    token_id: record.id.clone(),
                    credential: record.credential.clone(),
                })
                .await;
            match asked {
                Ok(()) => {
                    psp = true;
                    self.store
                        .record_revocation(
                            &record.id,
                            RevocationProgress::default().with_psp_revoked(),
                        )
                        .await?;
                }
                // Refused for good (it keeps no such token): recorded as `psp: false`.
                Err(ProviderError::Invalid { .. }) => {}
                // Not done, or not known to be (a revocation is safe to ask again): the event
                // waits for the PSP's side and the caller retries.
                Err(e) => return Err(EngineError::Provider(e).into()),
            }
        }

        // The event, once: an idempotency record of the token's actor guards it.
        let now = ports.clock.now();
        let scope = IdempotencyScope {
            actor_id: actor,
            operation: "token_revoked".into(),
            key: IdempotencyKey::new("token-revoked")
                .map_err(|e| invalid("token_id", e.to_string()))?,
        };
        let fingerprint = json_fingerprint(&serde_json::json!({ "token_id": record.id.as_str() }))
            .map_err(|e| invalid("token_id", e.to_string()))?;
        let config = self.engine.config();
        let lease = config.lease();
        let retention = chrono::Duration::from_std(config.retention())
            .unwrap_or_else(|_| chrono::Duration::days(1));
        let begun = ports
            .store
            .begin_idempotent(&scope, &fingerprint, now, lease)
            .await
            .map_err(EngineError::from)?;
        match begun {
            Begin::Started(fence) => {
                let event = AuditEvent {
                    at: now,
                    kind: AuditKind::TokenRevoked {
                        token_id: record.id.to_string(),
                        mandate_id: record.mandate_id.clone(),
                        selector: selector.to_owned(),
                        psp,
                        by: by.clone(),
                    },
                };
                if let Err(e) = self.audit(&[event]).await {
                    let _ = ports.store.abandon_idempotent(&fence).await;
                    return Err(e);
                }
                ports
                    .store
                    .complete_idempotent(&fence, &StoredResult::Done, now + retention)
                    .await
                    .map_err(EngineError::from)?;
            }
            // Written before (a failure after the event left the token unfinished).
            Begin::Replay(_) | Begin::Conflict { .. } => {}
            // A concurrent fan-out writes it and marks the token finished.
            Begin::InFlight { .. } => return Ok(()),
        }
        self.store
            .record_revocation(&record.id, RevocationProgress::default().with_finished())
            .await?;
        Ok(())
    }
}
