//! Redemption: a merchant completing a checkout session presents the vault token; the payment
//! runs through the engine under the allowance's mandate.

use crate::domain::{
    AttemptStatus, AuthorityDecision, BlockerCode, CheckoutState, IdempotencyKey, Merchant,
    MerchantId, PaymentAction, PaymentAttempt, PaymentRequest,
};
use crate::engine::{EngineError, ExecutePayment, PaymentOutcome};

use super::checkout::{CheckoutSession, SessionError};
use super::delegate::{credential_of, hash_hex, mandate_for, session_ref, AcpService};

/// A merchant's redemption of a vault token for a checkout session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Redemption {
    /// The vault token (`vt_...`) the agent gave the merchant.
    pub token: String,
    /// The redeeming merchant, as the host authenticated it (never from the request body).
    pub merchant_id: MerchantId,
    /// The session being completed.
    pub session: CheckoutSession,
    /// The merchant's idempotency key for this completion (scoped to the merchant).
    pub key: IdempotencyKey,
}

impl Redemption {
    /// The redemption of `token` by `merchant_id` for `session` under `key`.
    pub fn new(
        token: impl Into<String>,
        merchant_id: MerchantId,
        session: CheckoutSession,
        key: IdempotencyKey,
    ) -> Redemption {
        Redemption {
            token: token.into(),
            merchant_id,
            session,
            key,
        }
    }
}

/// A redemption that paid (or had paid: a replay).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Redeemed {
    /// The payment attempt (authorized, or captured with capture on).
    pub attempt: PaymentAttempt,
    /// Whether the merchant's key had run before (no second PSP call).
    pub replayed: bool,
}

/// Why a redemption did not pay. Refusals by the decision carry it: the engine recorded it in
/// the audit trail (the decision event names every blocker).
///
/// | variant | status | `code` |
/// |---|---|---|
/// | `InvalidSession` | 400 | `invalid_checkout_session` |
/// | `UnknownToken` | 404 | `invalid_token` |
/// | `MerchantMismatch` | 403 | `merchant_mismatch` |
/// | `SessionMismatch` | 403 | `checkout_session_mismatch` |
/// | `AmountExceeded` | 422 | `amount_exceeds_allowance` |
/// | `CurrencyMismatch` | 422 | `currency_mismatch` |
/// | `Expired` | 422 | `allowance_expired` |
/// | `AlreadyUsed` | 409 | `token_already_used` |
/// | `CheckoutNotReady` | 409 | `checkout_not_ready` |
/// | `Refused` | 403 | `payment_refused` |
/// | `Declined` | 402 | `payment_declined` |
/// | `Pending` | 202 | `payment_pending` |
/// | `IdempotencyConflict` | 422 | `idempotency_conflict` |
/// | `IdempotencyInFlight` | 409 (+ `Retry-After`) | `idempotency_in_flight` |
/// | `Rejected` | the engine's (4xx, 500, 502) | the engine's code, lower case |
/// | `Unavailable` | 503 (+ `Retry-After`) | `service_unavailable` |
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RedeemError {
    /// The session cannot be a cart snapshot. Nothing was decided.
    #[error("invalid checkout session: {0}")]
    InvalidSession(SessionError),
    /// No token of this service has this id.
    #[error("unknown vault token")]
    UnknownToken,
    /// The token's allowance is for another merchant.
    #[error("the token's allowance is for another merchant")]
    MerchantMismatch(Box<AuthorityDecision>),
    /// The token's allowance is for another checkout session.
    #[error("the token's allowance is for another checkout session")]
    SessionMismatch(Box<AuthorityDecision>),
    /// The session's total is above the allowance's maximum.
    #[error("the total is above the allowance's max_amount")]
    AmountExceeded(Box<AuthorityDecision>),
    /// The session's currency is not the allowance's.
    #[error("the session's currency is not the allowance's")]
    CurrencyMismatch(Box<AuthorityDecision>),
    /// The allowance has expired.
    #[error("the allowance has expired")]
    Expired(Box<AuthorityDecision>),
    /// The token was used already.
    #[error("the token has been used")]
    AlreadyUsed(Box<AuthorityDecision>),
    /// The session is not ready for payment (or expired).
    #[error("the checkout session is not ready for payment")]
    CheckoutNotReady(Box<AuthorityDecision>),
    /// Any other blocker (revoked, suspended, credential not usable...).
    #[error("refused: {codes:?}")]
    Refused {
        /// The blocker codes.
        codes: Vec<BlockerCode>,
        /// The decision.
        decision: Box<AuthorityDecision>,
    },
    /// The PSP declined (the hold is released; the token may be presented again).
    #[error("the payment was declined ({decline_code:?})")]
    Declined {
        /// The PSP's code.
        decline_code: Option<String>,
        /// The attempt.
        attempt: Box<PaymentAttempt>,
    },
    /// The outcome is not final (ambiguous, or the buyer must act): the hold stays.
    #[error("the payment is {status:?}")]
    Pending {
        /// Its status.
        status: AttemptStatus,
        /// The attempt.
        attempt: Box<PaymentAttempt>,
    },
    /// The merchant's key was used with another completion (another session, token or
    /// total). Permanent: use a new key.
    #[error("Idempotency-Key has already been used with a different request")]
    IdempotencyConflict,
    /// A completion with this key is still running. Retry after the hint.
    #[error("A request with this Idempotency-Key is currently being processed")]
    IdempotencyInFlight {
        /// When to retry.
        retry_after: std::time::Duration,
    },
    /// The engine refused the command for a reason that retrying will not change (not
    /// permitted, invalid, a transition not allowed, an outcome the PSP left unknown, which
    /// is reconciled): its status and stable code.
    #[error("{message}")]
    Rejected {
        /// The HTTP status ([`EngineError::http_status`](crate::engine::EngineError::http_status)).
        status: u16,
        /// The engine's stable code in lower case (`not_permitted`, `invalid_input`...).
        code: String,
        /// What happened (for logs; 5xx bodies say only that it failed).
        message: String,
    },
    /// A port is unavailable now; retry with the same key.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<EngineError> for RedeemError {
    /// Only unavailability is 503: the merchant's retry loop must end on a permanent error.
    fn from(e: EngineError) -> RedeemError {
        match e {
            EngineError::IdempotencyConflict { .. } => RedeemError::IdempotencyConflict,
            EngineError::IdempotencyInFlight { retry_after, .. } => {
                RedeemError::IdempotencyInFlight { retry_after }
            }
            e if e.http_status() == 503 => RedeemError::Unavailable(e.to_string()),
            e => RedeemError::Rejected {
                status: e.http_status(),
                code: e.code().to_ascii_lowercase(),
                message: e.to_string(),
            },
        }
    }
}

impl RedeemError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            RedeemError::InvalidSession(_) => 400,
            RedeemError::UnknownToken => 404,
            RedeemError::MerchantMismatch(_)
            | RedeemError::SessionMismatch(_)
            | RedeemError::Refused { .. } => 403,
            RedeemError::AmountExceeded(_)
            | RedeemError::CurrencyMismatch(_)
            | RedeemError::Expired(_) => 422,
            RedeemError::AlreadyUsed(_) | RedeemError::CheckoutNotReady(_) => 409,
            RedeemError::Declined { .. } => 402,
            RedeemError::Pending { .. } => 202,
            RedeemError::IdempotencyConflict => 422,
            RedeemError::IdempotencyInFlight { .. } => 409,
            RedeemError::Rejected { status, .. } => *status,
            RedeemError::Unavailable(_) => 503,
        }
    }

    /// The retry hint (`Retry-After`): the in-flight hint, one second when unavailable.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            RedeemError::IdempotencyInFlight { retry_after } => Some(*retry_after),
            RedeemError::Unavailable(_) => Some(std::time::Duration::from_secs(1)),
            _ => None,
        }
    }

    /// The ACP error code.
    pub fn code(&self) -> &str {
        match self {
            RedeemError::InvalidSession(_) => "invalid_checkout_session",
            RedeemError::UnknownToken => "invalid_token",
            RedeemError::MerchantMismatch(_) => "merchant_mismatch",
            RedeemError::SessionMismatch(_) => "checkout_session_mismatch",
            RedeemError::AmountExceeded(_) => "amount_exceeds_allowance",
            RedeemError::CurrencyMismatch(_) => "currency_mismatch",
            RedeemError::Expired(_) => "allowance_expired",
            RedeemError::AlreadyUsed(_) => "token_already_used",
            RedeemError::CheckoutNotReady(_) => "checkout_not_ready",
            RedeemError::Refused { .. } => "payment_refused",
            RedeemError::Declined { .. } => "payment_declined",
            RedeemError::Pending { .. } => "payment_pending",
            RedeemError::IdempotencyConflict => "idempotency_conflict",
            RedeemError::IdempotencyInFlight { .. } => "idempotency_in_flight",
            RedeemError::Rejected { code, .. } => code,
            RedeemError::Unavailable(_) => "service_unavailable",
        }
    }

    /// The decision that refused it, if one did.
    pub fn decision(&self) -> Option<&AuthorityDecision> {
        match self {
            RedeemError::MerchantMismatch(d)
            | RedeemError::SessionMismatch(d)
            | RedeemError::AmountExceeded(d)
            | RedeemError::CurrencyMismatch(d)
            | RedeemError::Expired(d)
            | RedeemError::AlreadyUsed(d)
            | RedeemError::CheckoutNotReady(d)
            | RedeemError::Refused { decision: d, .. } => Some(d),
            _ => None,
        }
    }

    /// The body in the protocol's `Error` shape (`type`, `code`, `message`, `param`).
    pub fn body(&self) -> serde_json::Value {
        let kind = match self {
            RedeemError::Unavailable(_) => "service_unavailable",
            RedeemError::Declined { .. } | RedeemError::Pending { .. } => "processing_error",
            RedeemError::Rejected { status, .. } if *status >= 500 => "processing_error",
            _ => "invalid_request",
        };
        let mut body = serde_json::json!({
            "type": kind,
            "code": self.code(),
            "message": match self {
                RedeemError::Unavailable(_) => "Service unavailable".to_owned(),
                RedeemError::Rejected { status, .. } if *status >= 500 => {
                    "The payment could not be completed".to_owned()
                }
                e => e.to_string(),
            },
        });
        let param = match self {
            RedeemError::InvalidSession(e) => Some(e.param.clone()),
            RedeemError::UnknownToken => Some("$.payment_data.instrument.credential.token".into()),
            _ => None,
        };
        if let (Some(p), Some(o)) = (param, body.as_object_mut()) {
            o.insert("param".into(), p.into());
        }
        body
    }
}

/// The upstream code a session that is not the allowance's gets.
pub const SESSION_MISMATCH: &str = "ACP_CHECKOUT_SESSION_MISMATCH";

fn classify(decision: AuthorityDecision) -> RedeemError {
    let codes = decision.codes();
    let has = |c: BlockerCode| codes.contains(&c);
    let session = decision.blockers.iter().any(|b| {
        b.code == BlockerCode::CheckoutNotValid
            && b.causes.iter().any(|c| c.code == SESSION_MISMATCH)
    });
    let d = Box::new(decision);
    if has(BlockerCode::MerchantMismatch) {
        RedeemError::MerchantMismatch(d)
    } else if session {
        RedeemError::SessionMismatch(d)
    } else if has(BlockerCode::MandateExpired) {
        RedeemError::Expired(d)
    } else if has(BlockerCode::MandateUsed) {
        RedeemError::AlreadyUsed(d)
    } else if has(BlockerCode::CurrencyMismatch) {
        RedeemError::CurrencyMismatch(d)
    } else if has(BlockerCode::AmountExceedsMandate)
        || has(BlockerCode::TransactionLimitExceeded)
        || has(BlockerCode::LifetimeLimitExceeded)
    {
        RedeemError::AmountExceeded(d)
    } else if has(BlockerCode::CheckoutNotValid)
        || has(BlockerCode::CheckoutExpired)
        || has(BlockerCode::SnapshotExpired)
    {
        RedeemError::CheckoutNotReady(d)
    } else {
        RedeemError::Refused { codes, decision: d }
    }
}

impl AcpService {
    /// Redeems a vault token for a checkout session: the session becomes the cart snapshot
    /// (merchant: the redeeming merchant, with the configured MCC), the checkout state says
    /// whether the session is ready and whether it is the allowance's session (another session
    /// is an invalid checkout with the upstream blocker `ACP_CHECKOUT_SESSION_MISMATCH`), and
    /// `ExecutePayment` runs under the allowance's mandate as the service's system actor, under
    /// a key derived from the merchant and its key. The mandate's own scope refuses another
    /// merchant (`MERCHANT_MISMATCH`), more than the maximum (`AMOUNT_EXCEEDS_MANDATE`), use
    /// after expiry (`MANDATE_EXPIRED`) and a second use (`MANDATE_USED`); the engine records
    /// each decision in the audit trail.
    pub async fn redeem(&self, redemption: &Redemption) -> Result<Redeemed, RedeemError> {
        let reference = credential_of(&redemption.token).ok_or(RedeemError::UnknownToken)?;
        let mandate_id = mandate_for(&reference).map_err(|_| RedeemError::UnknownToken)?;
        let ports = self.engine().ports();
        let mandate = ports
            .store
            .mandate(&mandate_id)
            .await
            .map_err(|e| RedeemError::Unavailable(e.to_string()))?
            .ok_or(RedeemError::UnknownToken)?;
        if mandate.actor() != &self.service_actor() {
            return Err(RedeemError::UnknownToken);
        }
        let now = ports.clock.now();
        let merchant = Merchant {
            merchant_id: redemption.merchant_id.clone(),
            marketplace_id: None,
            seller_id: None,
            mcc: self.config().mcc(),
        };
        let (snapshot, state) = redemption
            .session
            .snapshot(merchant, now, self.config().snapshot_ttl())
            .map_err(RedeemError::InvalidSession)?;
        let bound = session_ref(&redemption.session.id)
            .map(|r| mandate.spec().evidence_refs.contains(&r))
            .unwrap_or(false);
        let checkout = if bound {
            state
        } else {
            CheckoutState::Invalid {
                checkout_id: state.checkout_id().clone(),
                blockers: vec![crate::domain::UpstreamBlocker {
                    code: SESSION_MISMATCH.parse().map_err(
                        |e: crate::domain::ValidationError| RedeemError::Unavailable(e.to_string()),
                    )?,
                    message: "the vault token's allowance is for another checkout session"
                        .parse()
                        .map_err(|e: crate::domain::ValidationError| {
                            RedeemError::Unavailable(e.to_string())
                        })?,
                }],
            }
        };
        let key = IdempotencyKey::new(format!(
            "acp-r-{}",
            &hash_hex(&[redemption.merchant_id.as_str(), redemption.key.as_str()])[..40]
        ))
        .map_err(|e| RedeemError::Unavailable(e.to_string()))?;
        let command = ExecutePayment::new(
            key,
            PaymentRequest {
                actor: self.service_actor(),
                buyer_id: mandate.buyer_id().clone(),
                mandate_id,
                action: PaymentAction::Authorize,
                merchant_id: redemption.merchant_id.clone(),
                snapshot_id: snapshot.id(),
                amount: snapshot.total(),
                urgency: None,
            },
            snapshot,
            checkout,
            reference,
        )
        .with_capture(self.config().capture());
        let outcome = self
            .engine()
            .execute_payment(&self.service_principal(), &command)
            .await?;
        let (attempt, replayed) = match outcome {
            PaymentOutcome::Refused(d) => return Err(classify(d)),
            PaymentOutcome::Done { attempt, .. } | PaymentOutcome::Scheduled { attempt, .. } => {
                (attempt, false)
            }
            PaymentOutcome::Replayed { attempt } => (attempt, true),
        };
        match attempt.status {
            AttemptStatus::Authorized
            | AttemptStatus::Captured
            | AttemptStatus::PartiallyCaptured
            | AttemptStatus::PartiallyRefunded
            | AttemptStatus::Refunded => Ok(Redeemed { attempt, replayed }),
            AttemptStatus::Failed | AttemptStatus::Cancelled => Err(RedeemError::Declined {
                decline_code: attempt.decline_code.clone(),
                attempt: Box::new(attempt),
            }),
            AttemptStatus::NotStarted
            | AttemptStatus::AuthorityValidated
            | AttemptStatus::PendingProviderResponse
            | AttemptStatus::RequiresBuyerAction
            | AttemptStatus::Ambiguous => Err(RedeemError::Pending {
                status: attempt.status,
                attempt: Box::new(attempt),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{ProviderError, StoreError};
    use std::time::Duration;

    #[test]
    fn engine_errors_keep_their_meaning_and_only_unavailability_is_503() {
        let key = crate::domain::IdempotencyKey::new("k").unwrap();
        let conflict = RedeemError::from(EngineError::IdempotencyConflict {
            key: key.clone(),
            operation: "execute_payment",
        });
        assert_eq!(
            (conflict.status(), conflict.code()),
            (422, "idempotency_conflict")
        );
        assert_eq!(conflict.retry_after(), None);
        let in_flight = RedeemError::from(EngineError::IdempotencyInFlight {
            key,
            retry_after: Duration::from_secs(7),
        });
        assert_eq!(
            (in_flight.status(), in_flight.code()),
            (409, "idempotency_in_flight")
        );
        assert_eq!(in_flight.retry_after(), Some(Duration::from_secs(7)));
        let denied = RedeemError::from(EngineError::NotPermitted {
            reason: "no".into(),
        });
        assert_eq!((denied.status(), denied.code()), (403, "not_permitted"));
        let invalid = RedeemError::from(EngineError::Invalid {
            field: "request.amount".into(),
            message: "bad".into(),
        });
        assert_eq!((invalid.status(), invalid.code()), (400, "invalid_input"));
        assert_eq!(invalid.body()["type"], "invalid_request");
        let down = RedeemError::from(EngineError::Store(StoreError::Unavailable {
            message: "postgres://u:hunter2@db".into(),
        }));
        assert_eq!((down.status(), down.code()), (503, "service_unavailable"));
        assert_eq!(down.retry_after(), Some(Duration::from_secs(1)));
        assert!(!down.body().to_string().contains("hunter2"));
        let broken = RedeemError::from(EngineError::Store(StoreError::Corrupt {
            table: "attempts",
            key: "a".into(),
            message: "hunter2".into(),
        }));
        assert_eq!(broken.status(), 500);
        assert_eq!(broken.body()["type"], "processing_error");
        assert!(!broken.body().to_string().contains("hunter2"));
        let psp = RedeemError::from(EngineError::Provider(ProviderError::Transient {
            message: "psp down".into(),
            retry_after: None,
        }));
        assert_eq!(
            psp.status(),
            503,
            "a PSP that is down now is unavailability"
        );
    }
}
