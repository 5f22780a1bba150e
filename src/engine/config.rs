//! Engine configuration.

use std::time::Duration;

use crate::domain::BlockerCode;
use crate::ports::RefundPolicy;

/// The blockers that count toward auto-suspension by default: those that show the actor acting
/// outside its authority (identity, scope, lifecycle, confirmation, credential). Not counted:
/// budget usage (lifetime, window amount and count, uses, attempts: a well-behaved agent can
/// lose a race for the last headroom), upstream facts (checkout, snapshot expiry, usage
/// unavailable), the buyer's suspension, and the actor's own suspension (it is suspended
/// already).
pub const DEFAULT_SUSPEND_ON: &[BlockerCode] = &[
    // identity
    BlockerCode::AuthorityMissing,
    BlockerCode::ChainInvalid,
    BlockerCode::ActorNotAuthorized,
    BlockerCode::BuyerMismatch,
    BlockerCode::CredentialNotUsable,
    // scope
    BlockerCode::CartSnapshotMismatch,
    BlockerCode::CartOutsideIntent,
    BlockerCode::AmountMismatch,
    BlockerCode::AmountExceedsMandate,
    BlockerCode::LowerAmountNotAllowed,
    BlockerCode::PartialCaptureNotAllowed,
    BlockerCode::CurrencyMismatch,
    BlockerCode::MerchantMismatch,
    BlockerCode::SellerNotAllowed,
    BlockerCode::MccNotAllowed,
    BlockerCode::ActionNotAllowed,
    BlockerCode::TransactionLimitExceeded,
    // lifecycle
    BlockerCode::MandateNotYetValid,
    BlockerCode::MandateExpired,
    BlockerCode::MandateRevoked,
    BlockerCode::MandatePendingConfirmation,
    BlockerCode::MandateRejected,
    BlockerCode::AncestorNotActive,
    // confirmation
    BlockerCode::ConfirmationRequired,
];

/// The least time an idempotency record is kept (ACP: at least 24 hours).
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// How the engine behaves. `EngineConfig::default()` is the documented default.
///
/// The fields are private: a configuration is built from the default with the `with_*`
/// methods, each of which refuses a value out of range with a [`ConfigError`] naming the
/// field, so that a configuration the engine runs with has always been checked. The getters
/// of the same names read it.
///
/// ```
/// use std::time::Duration;
/// use agent_mandate::engine::EngineConfig;
///
/// let config = EngineConfig::default()
///     .with_auto_suspend_after(Some(5))?
///     .with_lease(Duration::from_secs(90), Duration::from_secs(15))?;
/// assert_eq!(config.auto_suspend_after(), Some(5));
/// assert_eq!(config.threshold_percent(), Some(80));
/// assert_eq!(config.lease(), Duration::from_secs(90));
/// // Out of range: refused, naming the field.
/// let err = EngineConfig::default().with_retention(Duration::from_secs(60)).unwrap_err();
/// assert_eq!(err.field, "retention");
/// # Ok::<(), agent_mandate::engine::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// Suspend an actor after this many blocked requests in a row; `None`: never. Only
    /// blocked decisions with at least one blocker in `suspend_on` count; a refusal of the
    /// atomic budget hold (a race lost for the last headroom) never counts.
    pub(crate) auto_suspend_after: Option<u32>,
    /// The blockers that count toward `auto_suspend_after` (default: [`DEFAULT_SUSPEND_ON`]).
    pub(crate) suspend_on: Vec<BlockerCode>,
    /// When a mandate is revoked, void the open authorizations (authorized, not captured) of
    /// attempts under it or under a mandate derived from it (default: off; the host may call
    /// [`crate::engine::Engine::void_open_authorizations`] itself). Captures of those
    /// authorizations are refused after the revocation either way.
    pub(crate) void_on_revoke: bool,
    /// Emit a threshold event when a payment makes usage cross this share (percent) of a
    /// lifetime or window limit; `None`: never.
    pub(crate) threshold_percent: Option<u8>,
    /// How long completed idempotency records are kept (at least [`MIN_RETENTION`]).
    pub(crate) retention: Duration,
    /// How long a command holds its idempotency key before another caller may take it over
    /// (after a crash). Must exceed the PSP's deadline by at least `deadline_margin`.
    pub(crate) lease: Duration,
    /// The least time between the PSP's deadline and the end of a lease; also added to the
    /// PSP's deadline before a "not found" lookup may fail a submission (clock skew, a
    /// request still in the PSP's queue).
    pub(crate) deadline_margin: Duration,
    /// Whether refunds give budget headroom back (default: they do not).
    pub(crate) refund_policy: RefundPolicy,
    /// How often a refused hold is decided again with fresh usage before giving up.
    pub(crate) hold_retries: u8,
    /// The longest retry hint of an in-flight key (`EngineError::IdempotencyInFlight`): the
    /// hint is the shorter of this and what remains of the holder's lease. Most commands
    /// finish in milliseconds, so a client told to wait out a 60 s lease would wait for
    /// nothing; one that retries too early gets the same answer again. Default 1 s.
    pub(crate) in_flight_retry_after: Duration,
    /// Loop detection: at most this many payments for the same resource (the line of a
    /// one-line cart, at one merchant, under one mandate) in the window; the next is blocked
    /// with `RESOURCE_LOOP_DETECTED` and a `loop_detected` control event. Counted in this
    /// process. `None` (the default): no loop detection.
    pub(crate) loop_limit: Option<crate::domain::LoopLimit>,
    /// The safety controls (default: every control off; see [`super::Controls`]).
    pub(crate) controls: super::controls::Controls,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            auto_suspend_after: Some(3),
            suspend_on: DEFAULT_SUSPEND_ON.to_vec(),
            void_on_revoke: false,
            threshold_percent: Some(80),
            retention: MIN_RETENTION,
            lease: Duration::from_secs(60),
            deadline_margin: Duration::from_secs(10),
            refund_policy: RefundPolicy::RETAIN,
            hold_retries: 3,
            in_flight_retry_after: Duration::from_secs(1),
            loop_limit: None,
            controls: super::controls::Controls::default(),
        }
    }
}

/// A configuration value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("engine configuration: {field} {message}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub message: &'static str,
}

impl EngineConfig {
    /// Suspend an actor after this many blocked requests in a row (`None`: never).
    pub fn auto_suspend_after(&self) -> Option<u32> {
        self.auto_suspend_after
    }

    /// The blockers that count toward auto-suspension.
    pub fn suspend_on(&self) -> &[BlockerCode] {
        &self.suspend_on
    }

    /// Whether revoking a mandate voids its open authorizations.
    pub fn void_on_revoke(&self) -> bool {
        self.void_on_revoke
    }

    /// The usage share (percent) that emits a threshold event (`None`: never).
    pub fn threshold_percent(&self) -> Option<u8> {
        self.threshold_percent
    }

    /// How long completed idempotency records are kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// How long a command holds its idempotency key.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The least time between the PSP's deadline and the end of a lease.
    pub fn deadline_margin(&self) -> Duration {
        self.deadline_margin
    }

    /// Whether refunds give budget headroom back.
    pub fn refund_policy(&self) -> RefundPolicy {
        self.refund_policy
    }

    /// How often a refused hold is decided again with fresh usage.
    pub fn hold_retries(&self) -> u8 {
        self.hold_retries
    }

    /// The longest retry hint of an in-flight key.
    pub fn in_flight_retry_after(&self) -> Duration {
        self.in_flight_retry_after
    }

    /// Loop detection (`None`: off).
    pub fn loop_limit(&self) -> Option<crate::domain::LoopLimit> {
        self.loop_limit
    }

    /// Sets how often a refused hold is decided again with fresh usage before giving up (0:
    /// never again).
    pub fn with_hold_retries(mut self, retries: u8) -> Self {
        self.hold_retries = retries;
        self
    }

    /// Sets the longest retry hint of an in-flight key; refuses zero (a client told to retry
    /// at once would spin) and more than the lease (no holder keeps a key longer).
    pub fn with_in_flight_retry_after(mut self, after: Duration) -> Result<Self, ConfigError> {
        if after.is_zero() {
            return Err(ConfigError {
                field: "in_flight_retry_after",
                message: "must be more than zero",
            });
        }
        if after > self.lease {
            return Err(ConfigError {
                field: "in_flight_retry_after",
                message: "must not exceed the lease",
            });
        }
        self.in_flight_retry_after = after;
        Ok(self)
    }

    /// Sets the retention of idempotency records; refuses less than 24 hours.
    pub fn with_retention(mut self, retention: Duration) -> Result<Self, ConfigError> {
        if retention < MIN_RETENTION {
            return Err(ConfigError {
                field: "retention",
                message: "must be at least 24 hours",
            });
        }
        self.retention = retention;
        Ok(self)
    }

    /// Sets the threshold share; refuses 0 and more than 100.
    pub fn with_threshold_percent(mut self, percent: Option<u8>) -> Result<Self, ConfigError> {
        if percent.is_some_and(|p| p == 0 || p > 100) {
            return Err(ConfigError {
                field: "threshold_percent",
                message: "must be 1 to 100",
            });
        }
        self.threshold_percent = percent;
        Ok(self)
    }

    /// Sets the auto-suspension count; refuses 0.
    pub fn with_auto_suspend_after(mut self, after: Option<u32>) -> Result<Self, ConfigError> {
        if after == Some(0) {
            return Err(ConfigError {
                field: "auto_suspend_after",
                message: "must be at least 1",
            });
        }
        self.auto_suspend_after = after;
        Ok(self)
    }

    /// Sets the idempotency lease and the deadline margin; the PSP's deadline is checked
    /// against them when the engine is built ([`crate::engine::Engine::new`]).
    pub fn with_lease(mut self, lease: Duration, margin: Duration) -> Result<Self, ConfigError> {
        if lease.is_zero() {
            return Err(ConfigError {
                field: "lease",
                message: "must be more than zero",
            });
        }
        if margin >= lease {
            return Err(ConfigError {
                field: "deadline_margin",
                message: "must be shorter than the lease",
            });
        }
        self.lease = lease;
        self.deadline_margin = margin;
        Ok(self)
    }

    /// `Ok` when a PSP call with `deadline` ends (answer or timeout) at least
    /// `deadline_margin` before the lease of its command lapses (I13).
    pub fn check_deadline(&self, deadline: Duration) -> Result<(), ConfigError> {
        match deadline.checked_add(self.deadline_margin) {
            Some(end) if end < self.lease => Ok(()),
            _ => Err(ConfigError {
                field: "lease",
                message: "must exceed the PSP's deadline plus the deadline margin",
            }),
        }
    }

    /// How long after a submission a PSP "not found" is final: the PSP's deadline plus the
    /// margin.
    pub fn settle_after(&self, deadline: Duration) -> chrono::Duration {
        chrono::Duration::from_std(deadline.saturating_add(self.deadline_margin))
            .unwrap_or(chrono::Duration::MAX)
    }

    /// Sets loop detection (see [`EngineConfig::loop_limit`]).
    pub fn with_loop_limit(mut self, limit: Option<crate::domain::LoopLimit>) -> Self {
        self.loop_limit = limit;
        self
    }

    /// Sets the blockers that count toward auto-suspension.
    pub fn with_suspend_on(mut self, codes: &[BlockerCode]) -> Self {
        self.suspend_on = codes.to_vec();
        self
    }

    /// Voids the open authorizations under a mandate when it is revoked (or not).
    pub fn with_void_on_revoke(mut self, void: bool) -> Self {
        self.void_on_revoke = void;
        self
    }

    /// Whether a blocked decision counts toward auto-suspension.
    pub fn counts_toward_suspension(&self, decision: &crate::domain::AuthorityDecision) -> bool {
        decision.outcome == crate::domain::Outcome::Blocked
            && !decision.has(BlockerCode::ActorSuspended)
            && decision
                .blockers
                .iter()
                .any(|b| self.suspend_on.contains(&b.code))
    }

    /// The safety controls.
    pub fn controls(&self) -> &super::controls::Controls {
        &self.controls
    }

    /// Sets the safety controls (each validated when built: see [`super::Controls`]).
    pub fn with_controls(mut self, controls: super::controls::Controls) -> Self {
        self.controls = controls;
        self
    }

    /// Sets the refund policy.
    pub fn with_refund_policy(mut self, policy: RefundPolicy) -> Self {
        self.refund_policy = policy;
        self
    }
}
