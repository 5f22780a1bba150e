//! Alerts: what a control tells a person (the buyer, security, operations), as typed values.
//! An alert is also an audit event ([`AuditKind::Alert`](super::AuditKind::Alert)); the
//! [`AlertSink`](crate::ports::AlertSink) port delivers it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::audit::LimitKind;
use super::canonical::{IntentHash, SnapshotId};
use super::controls::{BreakerScope, RiskVector};
use super::ids::{ActorId, BuyerId, CredentialRef, MandateId, MerchantId};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Someone should look.
    Warning,
    /// Someone must act now (a suspension, an open breaker).
    Critical,
}

/// Who an alert is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// The buyer whose money it is.
    Buyer,
    /// The security team.
    Security,
    /// The people who run the service.
    Operations,
}

/// What an alert is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(tag = "control", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertKind {
    /// The agent's own spending-control violations suspended its authority.
    ViolationsSuspended {
        /// Violations counted in the window (or in a row).
        violations: u32,
        /// The window (0: in a row).
        window_seconds: u64,
    },
    /// A circuit breaker opened after failed authentications.
    CircuitOpened {
        /// Credential or agent.
        scope: BreakerScope,
        /// The credential (for a credential's breaker).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_ref: Option<CredentialRef>,
        /// Failures counted in the window.
        failures: u32,
        /// The window.
        window_seconds: u64,
    },
    /// A circuit breaker was reset by a person.
    CircuitReset {
        /// Credential or agent.
        scope: BreakerScope,
        /// The credential (for a credential's breaker).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_ref: Option<CredentialRef>,
    },
    /// Velocity hold: further payments need the buyer's confirmation.
    VelocityHold {
        /// Payments counted in the window.
        payments: u32,
        /// The window.
        window_seconds: u64,
    },
    /// A merchant never seen before for this buyer, or outside the allowlist.
    NewMerchant {
        /// The merchant.
        merchant_id: MerchantId,
        /// Whether it is outside the allowlist (the payment then needs the buyer's
        /// confirmation).
        outside_allowlist: bool,
    },
    /// The cart at execution did not match the declared purchase intent.
    IntentMismatch {
        /// The declared intent's hash.
        intent_hash: IntentHash,
        /// The snapshot refused.
        snapshot_id: SnapshotId,
    },
    /// The vault failed to decrypt or authenticate stored credentials.
    VaultErrors {
        /// Errors counted in the window.
        errors: u32,
        /// The window.
        window_seconds: u64,
    },
    /// Spend crossed a share of a limit.
    Threshold {
        /// The mandate.
        mandate_id: MandateId,
        /// Which limit.
        limit: LimitKind,
        /// The share crossed, in percent.
        percent: u8,
    },
    /// A mandate expires within the configured lead time.
    MandateExpiring {
        /// The mandate.
        mandate_id: MandateId,
        /// When it expires.
        #[serde(serialize_with = "super::canonical::serialize_time")]
        #[serde(deserialize_with = "super::canonical::time")]
        expires_at: DateTime<Utc>,
    },
    /// Every credential of an agent was suspended (the credentials' kill switch), or resumed.
    CredentialsSuspended {
        /// On (`true`) or off.
        suspended: bool,
    },
}

/// One alert: what happened, how urgent, for whom, its risk vector, and whom it concerns.
/// Never carries a credential's secret (a reference at most).
///
/// ```
/// use agent_mandate::domain::{examples, Alert, AlertKind, Audience, Severity};
/// let alert = Alert::new(
///     examples::now(),
///     AlertKind::VelocityHold { payments: 10, window_seconds: 3600 },
///     "velocity hold",
/// );
/// assert_eq!(alert.severity, Severity::Warning);
/// assert_eq!(alert.audience, Audience::Buyer);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub struct Alert {
    /// When.
    #[serde(serialize_with = "super::canonical::serialize_time")]
    #[serde(deserialize_with = "super::canonical::time")]
    pub at: DateTime<Utc>,
    /// What.
    pub kind: AlertKind,
    /// How urgent.
    pub severity: Severity,
    /// For whom.
    pub audience: Audience,
    /// The risk vector, when the alert is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskVector>,
    /// The agent concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<ActorId>,
    /// The buyer concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_id: Option<BuyerId>,
    /// A sentence for a person.
    pub message: String,
}

impl AlertKind {
    /// The default severity, audience and risk vector of this kind of alert.
    pub fn routing(&self) -> (Severity, Audience, Option<RiskVector>) {
        match self {
            AlertKind::ViolationsSuspended { .. } => (Severity::Critical, Audience::Security, None),
            AlertKind::CircuitOpened { .. } => (
                Severity::Critical,
                Audience::Security,
                Some(RiskVector::WrongCredential),
            ),
            AlertKind::CircuitReset { .. } => (Severity::Info, Audience::Security, None),
            AlertKind::VelocityHold { .. } => (
                Severity::Warning,
                Audience::Buyer,
                Some(RiskVector::WrongAmount),
            ),
            AlertKind::NewMerchant {
                outside_allowlist, ..
            } => (
                if *outside_allowlist {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                Audience::Buyer,
                Some(RiskVector::WrongPlace),
            ),
            AlertKind::IntentMismatch { .. } => (
                Severity::Critical,
                Audience::Security,
                Some(RiskVector::WrongThing),
            ),
            AlertKind::VaultErrors { .. } => (
                Severity::Critical,
                Audience::Security,
                Some(RiskVector::WrongCredential),
            ),
            AlertKind::Threshold { .. } => (
                Severity::Warning,
                Audience::Buyer,
                Some(RiskVector::WrongAmount),
            ),
            AlertKind::MandateExpiring { .. } => (Severity::Info, Audience::Buyer, None),
            AlertKind::CredentialsSuspended { .. } => (
                Severity::Critical,
                Audience::Security,
                Some(RiskVector::WrongCredential),
            ),
        }
    }

    /// The stable name of the control (the `control` member of its JSON).
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertKind::ViolationsSuspended { .. } => "violations_suspended",
            AlertKind::CircuitOpened { .. } => "circuit_opened",
            AlertKind::CircuitReset { .. } => "circuit_reset",
            AlertKind::VelocityHold { .. } => "velocity_hold",
            AlertKind::NewMerchant { .. } => "new_merchant",
            AlertKind::IntentMismatch { .. } => "intent_mismatch",
            AlertKind::VaultErrors { .. } => "vault_errors",
            AlertKind::Threshold { .. } => "threshold",
            AlertKind::MandateExpiring { .. } => "mandate_expiring",
            AlertKind::CredentialsSuspended { .. } => "credentials_suspended",
        }
    }
}

impl Alert {
    /// An alert of `kind` with its default severity, audience and risk vector.
    pub fn new(at: DateTime<Utc>, kind: AlertKind, message: impl Into<String>) -> Alert {
        let (severity, audience, risk) = kind.routing();
        Alert {
            at,
            kind,
            severity,
            audience,
            risk,
            actor_id: None,
            buyer_id: None,
            message: message.into(),
        }
    }

    /// Names the agent concerned.
    #[must_use]
    pub fn actor(mut self, actor_id: &ActorId) -> Alert {
        self.actor_id = Some(actor_id.clone());
        self
    }

    /// Names the buyer concerned.
    #[must_use]
    pub fn buyer(mut self, buyer_id: &BuyerId) -> Alert {
        self.buyer_id = Some(buyer_id.clone());
        self
    }

    /// The audit event that records it.
    pub fn to_event(&self) -> super::AuditEvent {
        super::AuditEvent {
            at: self.at,
            kind: super::AuditKind::Alert {
                alert: Box::new(self.clone()),
            },
        }
    }
}
