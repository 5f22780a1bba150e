//! Redeeming a token: check, claim, charge through the engine, settle.

use chrono::Duration;
use sha2::{Digest as _, Sha256};

use super::commands::{RedeemToken, RedemptionOutcome, RefusalCode, TokenError};
use super::secret::{hash_secret, parse};
use super::{rules, token_actor_id, TokenService};
use crate::domain::{
    json_fingerprint, Actor, ActorKind, AttemptId, AttemptStatus, AuditEvent, AuditKind,
    CartContent, CartSnapshot, Channel, CheckoutContext, CheckoutId, CheckoutState, EvidenceRef,
    IdempotencyKey, LineItem, Merchant, MerchantScope, Money, PaymentAction, PaymentAttempt,
    PaymentRequest, Principal, Sku, Text, Totals,
};
use crate::engine::{EngineError, ExecutePayment, PaymentOutcome};
use crate::ports::{ClaimOutcome, Redemption, RedemptionState, TokenId, TokenRecord};

/// What to do with a key claimed before.
enum Next {
    /// Answer this (a recorded outcome).
    Answer(RedemptionOutcome),
    /// Drive the charge on, at the first claim's time.
    Charge(chrono::DateTime<chrono::Utc>),
}

/// How long the one-line cart snapshot of a redemption stays valid.
const SNAPSHOT_TTL_MINUTES: i64 = 15;

fn invalid(field: &str, message: impl Into<String>) -> TokenError {
    TokenError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

impl TokenService {
    /// Redeems a token (see [`RedeemToken`]): `by` must be `Principal::Provider` with the id
    /// of the provider the token names (a `System` principal is refused: the host's trusted
    /// process is never a token's redeemer). Every refusal is an `Ok` [`RedemptionOutcome::Refused`]
    /// with a stable [`RefusalCode`], and is audited; errors are for failures of the ports.
    ///
    /// Idempotent per (token, key): the same key with the same amount and buyer answers the
    /// recorded outcome (a charge is never made twice; a refusal recorded after the claim
    /// is answered again), even after the token was revoked or expired (status and time
    /// apply to new claims only), another amount or buyer is [`TokenError::IdempotencyConflict`]; a
    /// redemption that failed half-way (a port down) is driven on by the same key.
    pub async fn redeem(
        &self,
        by: &Principal,
        command: &RedeemToken,
    ) -> Result<RedemptionOutcome, TokenError> {
        let now = self.engine.ports().clock.now();
        // Find and verify: one answer for "not a token", "no such token" and "wrong secret".
        let Some(presented) = parse(&command.token) else {
            return self.refuse(by, None, RefusalCode::Unknown, now).await;
        };
        let record = match self.store.token(&presented.id).await? {
            Some(r) if r.hash.ct_eq(&hash_secret(&presented.id, &presented.secret)) => r,
            Some(_) | None => return self.refuse(by, None, RefusalCode::Unknown, now).await,
        };
        drop(presented);
        if let Err(code) = rules::check_presenter(&record, by, command.buyer_id.as_ref()) {
            return self.refuse(by, Some(&record.id), code, now).await;
        }

        let fingerprint = json_fingerprint(&serde_json::json!({
            "token_id": record.id.as_str(),
            "amount": command.amount,
            "buyer_id": command.buyer_id,
        }))
        .map_err(|e| invalid("amount", e.to_string()))?;
        let key = scoped_key(by, &record.id, &command.key)?;

        // A key claimed before answers its record first: the token's status and time apply
        // to new claims only, so a charge retried after the token was revoked or expired
        // answers `Charged`, never a refusal that would hide it.
        let previous = self.store.redemption(&record.id, &key).await?;
        let charged_at = match previous {
            Some(previous) if previous.fingerprint != fingerprint => {
                return Err(TokenError::IdempotencyConflict {
                    key: command.key.clone(),
                    operation: "redeem_token",
                })
            }
            Some(previous) => match self.answer_previous(&record.id, previous).await? {
                Next::Answer(outcome) => return Ok(outcome),
                Next::Charge(at) => at,
            },
            None => {
                if let Err(code) = rules::check_new_claim(&record, &command.amount, now) {
                    return self.refuse(by, Some(&record.id), code, now).await;
                }
                // Claim one use: the atomic step a revocation is ordered against.
                let claim = Redemption {
                    token_id: record.id.clone(),
                    key: key.clone(),
                    fingerprint,
                    amount: command.amount,
                    state: RedemptionState::Pending,
                    claimed_at: now,
                };
                match self.store.claim(&claim).await? {
                    ClaimOutcome::Claimed => claim.claimed_at,
                    // Claimed by a concurrent call with the key since the look-up.
                    ClaimOutcome::Replay(previous) => {
                        match self.answer_previous(&record.id, previous).await? {
                            Next::Answer(outcome) => return Ok(outcome),
                            Next::Charge(at) => at,
                        }
                    }
                    ClaimOutcome::Conflict => {
                        return Err(TokenError::IdempotencyConflict {
                            key: command.key.clone(),
                            operation: "redeem_token",
                        })
                    }
                    ClaimOutcome::Revoked => {
                        return self
                            .refuse(by, Some(&record.id), RefusalCode::Revoked, now)
                            .await
                    }
                    ClaimOutcome::Exhausted => {
                        return self
                            .refuse(by, Some(&record.id), RefusalCode::Exhausted, now)
                            .await
                    }
                    ClaimOutcome::Unknown => {
                        return self.refuse(by, None, RefusalCode::Unknown, now).await
                    }
                }
            }
        };

        // Charge through the engine, as the token's own actor.
        let outcome = self.charge(&record, command, &key, charged_at).await?;
        let (state, result) = match outcome {
            PaymentOutcome::Refused(decision) => {
                let reasons: Vec<String> = decision
                    .codes()
                    .into_iter()
                    .map(|c| c.as_str().to_owned())
                    .collect();
                (
                    refused_state(RefusalCode::DecisionBlocked, &reasons, None),
                    RedemptionOutcome::Refused {
                        token_id: Some(record.id.clone()),
                        code: RefusalCode::DecisionBlocked,
                        reasons,
                        replay: false,
                    },
                )
            }
            PaymentOutcome::Done { attempt, .. }
            | PaymentOutcome::Replayed { attempt }
            | PaymentOutcome::Scheduled { attempt, .. } => classify(&record.id, attempt),
        };
        self.store.settle(&record.id, &key, &state).await?;
        let mut events = Vec::new();
        if let Some(attempt) = result.attempt() {
            events.push(AuditEvent {
                at: now,
                kind: AuditKind::TokenRedeemed {
                    token_id: record.id.to_string(),
                    attempt_id: attempt.id.clone(),
                    state: state.as_str().to_owned(),
                },
            });
        } else if let Some(code) = result.refusal() {
            events.push(refused_event(by, Some(&record.id), code, now));
        }
        self.audit(&events).await?;
        Ok(result)
    }

    /// What a key claimed before answers: its recorded outcome, or (pending, ambiguous) the
    /// charge driven on at the time of the first claim: the engine's request (its one-line
    /// cart and the cart's id) must be the same on every retry of the key, or a retry after a
    /// lost answer would be an idempotency conflict instead of a replay.
    async fn answer_previous(
        &self,
        token: &TokenId,
        previous: Redemption,
    ) -> Result<Next, TokenError> {
        Ok(match previous.state {
            RedemptionState::Pending | RedemptionState::Ambiguous { .. } => {
                Next::Charge(previous.claimed_at)
            }
            RedemptionState::Charged { attempt_id } => Next::Answer(RedemptionOutcome::Charged {
                token_id: token.clone(),
                attempt: Box::new(self.attempt(&attempt_id).await?),
                replay: true,
            }),
            RedemptionState::Refused { codes, .. } => {
                let code = codes
                    .first()
                    .and_then(|c| RefusalCode::from_wire(c))
                    .unwrap_or(RefusalCode::DecisionBlocked);
                Next::Answer(RedemptionOutcome::Refused {
                    token_id: Some(token.clone()),
                    code,
                    reasons: codes.into_iter().skip(1).collect(),
                    replay: true,
                })
            }
        })
    }

    async fn refuse(
        &self,
        by: &Principal,
        token: Option<&TokenId>,
        code: RefusalCode,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<RedemptionOutcome, TokenError> {
        match self.refusals.decide(by, now) {
            super::refusals::RefusalAudit::Write { suppressed } => {
                let mut event = refused_event(by, token, code, now);
                if let AuditKind::TokenRefused { suppressed: s, .. } = &mut event.kind {
                    *s = (suppressed > 0).then_some(suppressed);
                }
                self.audit(&[event]).await?;
            }
            super::refusals::RefusalAudit::Suppress => {}
        }
        Ok(RedemptionOutcome::Refused {
            token_id: token.cloned(),
            code,
            reasons: Vec::new(),
            replay: false,
        })
    }

    async fn attempt(&self, id: &AttemptId) -> Result<PaymentAttempt, TokenError> {
        self.engine
            .ports()
            .store
            .attempt(id)
            .await
            .map_err(EngineError::from)?
            .ok_or_else(|| {
                TokenError::Engine(EngineError::NotFound {
                    entity: "attempt",
                    id: id.to_string(),
                })
            })
    }

    /// `execute_payment` with capture: a one-line cart snapshot of the charge at the time of
    /// the claim (so a driven-on redemption sends the same command), under the key derived
    /// from the redemption's.
    async fn charge(
        &self,
        record: &TokenRecord,
        command: &RedeemToken,
        key: &IdempotencyKey,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<PaymentOutcome, TokenError> {
        let ports = self.engine.ports();
        let mandate = ports
            .store
            .mandate(&record.mandate_id)
            .await
            .map_err(EngineError::from)?
            .ok_or_else(|| invalid("token", format!("no mandate {}", record.mandate_id)))?;
        let marketplace_id = match &mandate.scope().merchants {
            MerchantScope::Marketplace { marketplace_id, .. } => Some(marketplace_id.clone()),
            MerchantScope::Single { .. } | MerchantScope::Allowlist { .. } => None,
        };
        let amount = command.amount;
        let zero = Money::zero(amount.currency());
        let description = match &command.description {
            Some(d) => d.clone(),
            None => Text::new(format!("charge of token {}", record.id))
                .map_err(|e| invalid("description", e.to_string()))?,
        };
        let redemption_ref = EvidenceRef::new(format!("token-redemption:{}", key.as_str()))
            .map_err(|e| invalid("key", e.to_string()))?;
        let snapshot = CartSnapshot::new(CartContent {
            id: None,
            cart_id: None,
            merchant: Merchant {
                merchant_id: record.redeemer.merchant_id.clone(),
                marketplace_id,
                seller_id: record.redeemer.seller_id.clone(),
                mcc: record.redeemer.mcc,
            },
            items: vec![LineItem {
                sku: Sku::new("token-charge").map_err(|e| invalid("sku", e.to_string()))?,
                description,
                quantity: 1,
                unit_price: amount,
            }],
            totals: Totals {
                subtotal: amount,
                shipping: zero,
                tax: zero,
                discount: zero,
                total: amount,
            },
            context: CheckoutContext {
                region: None,
                channel: Channel::Agent,
                buyer_type: None,
            },
            fact_refs: vec![redemption_ref],
            policy_refs: Vec::new(),
            created_at: at,
            expires_at: at + Duration::minutes(SNAPSHOT_TTL_MINUTES),
        })
        .map_err(|e| invalid("amount", e.to_string()))?;
        ports
            .store
            .put_snapshot(&snapshot)
            .await
            .map_err(EngineError::from)?;
        let actor = Actor {
            id: token_actor_id(&record.id)?,
            kind: ActorKind::System,
        };
        let checkout_id = CheckoutId::new(format!(
            "tokco_{}",
            &key.as_str()[..key.as_str().len().min(100)]
        ))
        .map_err(|e| invalid("key", e.to_string()))?;
        let execute = ExecutePayment::new(
            key.clone(),
            PaymentRequest {
                actor: actor.clone(),
                buyer_id: record.buyer_id.clone(),
                mandate_id: record.mandate_id.clone(),
                action: PaymentAction::Authorize,
                merchant_id: record.redeemer.merchant_id.clone(),
                snapshot_id: snapshot.id(),
                amount,
                urgency: None,
            },
            snapshot.clone(),
            CheckoutState::Valid {
                checkout_id,
                snapshot_id: snapshot.id(),
            },
            record.credential.clone(),
        )
        .with_capture(true);
        Ok(self
            .engine
            .execute_payment(&Principal::System(actor.id), &execute)
            .await?)
    }
}

/// The redemption key: `tokr_` + SHA-256 of the provider, the token and the provider's key,
/// so two providers (or two tokens) never share one.
fn scoped_key(
    by: &Principal,
    token: &TokenId,
    key: &IdempotencyKey,
) -> Result<IdempotencyKey, TokenError> {
    let mut h = Sha256::new();
    h.update(b"agent-mandate/token-redemption/v1\n");
    h.update(by.scope_id().as_str().as_bytes());
    h.update(b"\n");
    h.update(token.as_str().as_bytes());
    h.update(b"\n");
    h.update(key.as_str().as_bytes());
    IdempotencyKey::new(format!("tokr_{}", hex::encode(&h.finalize()[..24])))
        .map_err(|e| invalid("key", e.to_string()))
}

fn refused_state(
    code: RefusalCode,
    reasons: &[String],
    attempt: Option<AttemptId>,
) -> RedemptionState {
    let mut codes = vec![code.as_str().to_owned()];
    codes.extend(reasons.iter().cloned());
    RedemptionState::Refused {
        codes,
        attempt_id: attempt,
    }
}

fn refused_event(
    by: &Principal,
    token: Option<&TokenId>,
    code: RefusalCode,
    now: chrono::DateTime<chrono::Utc>,
) -> AuditEvent {
    AuditEvent {
        at: now,
        kind: AuditKind::TokenRefused {
            token_id: token.map(|t| t.to_string()),
            code: code.as_str().to_owned(),
            by: by.clone(),
            suppressed: None,
        },
    }
}

/// The redemption's state and answer for the attempt the engine left.
fn classify(token: &TokenId, attempt: PaymentAttempt) -> (RedemptionState, RedemptionOutcome) {
    let id = attempt.id.clone();
    match attempt.status {
        AttemptStatus::Captured
        | AttemptStatus::PartiallyCaptured
        | AttemptStatus::PartiallyRefunded
        | AttemptStatus::Refunded => (
            RedemptionState::Charged { attempt_id: id },
            RedemptionOutcome::Charged {
                token_id: token.clone(),
                attempt: Box::new(attempt),
                replay: false,
            },
        ),
        AttemptStatus::Failed | AttemptStatus::Cancelled => {
            let reasons: Vec<String> = attempt.decline_code.iter().cloned().collect();
            (
                refused_state(RefusalCode::Declined, &reasons, Some(id)),
                RedemptionOutcome::Refused {
                    token_id: Some(token.clone()),
                    code: RefusalCode::Declined,
                    reasons,
                    replay: false,
                },
            )
        }
        AttemptStatus::NotStarted
        | AttemptStatus::AuthorityValidated
        | AttemptStatus::PendingProviderResponse
        | AttemptStatus::RequiresBuyerAction
        | AttemptStatus::Authorized
        | AttemptStatus::Ambiguous => (
            RedemptionState::Ambiguous { attempt_id: id },
            RedemptionOutcome::Pending {
                token_id: token.clone(),
                attempt: Box::new(attempt),
            },
        ),
    }
}
