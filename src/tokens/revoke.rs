//! Revocation fan-out: one call revokes an agent's, a credential's or a mandate's tokens.

use super::commands::{RevokeTokens, TokenError};
use super::{token_actor_id, TokenService};
use crate::domain::{
    AuditEvent, AuditKind, IdempotencyKey, LifecycleEvent, MandateStatus, Principal,
};
use crate::engine::{ChangeMandate, EngineError};
use crate::ports::{RevokeTokenRequest, TokenRecord, TokenSelector};

impl TokenService {
    /// Revokes every token `command.selector` reaches, and what it names, in one call;
    /// returns how many tokens this call revoked (already revoked ones are not counted).
    ///
    /// | selector | also revokes | who may |
    /// |---|---|---|
    /// | `token` | nothing else | the token's buyer, its issuer, an operator, a system |
    /// | `issuer` (an agent) | every vault credential it holds ([`crate::engine::Engine::revoke_credentials`]) | the agent itself, an operator, a system |
    /// | `credential` | that vault credential | its buyer, its holder, an operator, a system |
    /// | `mandate` | the mandate ([`crate::engine::Engine::change_mandate`]; its descendants are blocked) | as `change_mandate`'s revoke |
    ///
    /// Order: the permission, then what the selector names, then every selected token is
    /// marked revoked in one atomic store step (a redemption's claim is before it, and then
    /// completes or is refused by the engine, or after it, and is refused), then for each
    /// token: its mandate revoked, its vault credential revoked, the PSP asked to revoke its
    /// side when it can, and a `token_revoked` event. A failure after the atomic step is
    /// returned, and a retry (whose count is 0 for tokens already marked) finishes the
    /// mandates and credentials, which are idempotent.
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
                if mandate.status() != MandateStatus::Revoked {
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
        let mut first_error = None;
        for record in &revoked {
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

    /// The token's mandate, vault credential and PSP side, and its event.
    async fn finish_revocation(
        &self,
        by: &Principal,
        record: &TokenRecord,
        selector: &str,
        command: &RevokeTokens,
    ) -> Result<(), TokenError> {
        let ports = self.engine.ports();
        let actor = token_actor_id(&record.id)?;
        let mandate = ports
            .store
            .mandate(&record.mandate_id)
            .await
            .map_err(EngineError::from)?;
        if mandate.is_some_and(|m| !m.status().is_terminal()) {
            let key = IdempotencyKey::new(format!("tok-revoke-{}", record.id)).map_err(|e| {
                TokenError::Invalid {
                    field: "token_id".into(),
                    message: e.to_string(),
                }
            })?;
            self.engine
                .change_mandate(
                    &Principal::System(actor),
                    &ChangeMandate::new(
                        key,
                        record.mandate_id.clone(),
                        LifecycleEvent::Revoke {
                            reason: command.reason.clone(),
                        },
                    ),
                )
                .await?;
        }
        ports.vault.revoke(&record.credential).await?;
        let psp = ports.provider.revokes_tokens()
            && ports
                .provider
                .revoke_token(&RevokeTokenRequest {
                    token_id: record.id.clone(),
                    credential: record.credential.clone(),
                })
                .await
                .is_ok();
        self.audit(&[AuditEvent {
            at: ports.clock.now(),
            kind: AuditKind::TokenRevoked {
                token_id: record.id.to_string(),
                mandate_id: record.mandate_id.clone(),
                selector: selector.to_owned(),
                psp,
                by: by.clone(),
            },
        }])
        .await
    }
}
