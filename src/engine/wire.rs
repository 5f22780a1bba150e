//! The JSON form of [`PaymentOutcome`]: an object tagged by `outcome`, with the refusal's
//! decision under `decision` as in the other variants (a tagged newtype variant would spread the
//! decision's own fields, its `outcome` among them, over the tagged object).

use serde::{Deserialize, Serialize};

use super::commands::PaymentOutcome;
use crate::domain::{AuthorityDecision, PaymentAttempt};

#[derive(Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "PaymentOutcome")
)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum PaymentOutcomeWire {
    /// The decision was not `allowed`: nothing was held, nothing sent to the PSP.
    Refused {
        /// The decision.
        decision: AuthorityDecision,
    },
    /// The command ran now.
    Done {
        /// The attempt after the command.
        attempt: PaymentAttempt,
        /// The decision made for it (none for a void).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decision: Option<AuthorityDecision>,
    },
    /// Answered from the idempotency record: the attempt as it is now, no PSP call made.
    Replayed {
        /// The attempt.
        attempt: PaymentAttempt,
    },
    /// Held in its review window until `until`: nothing sent yet.
    Scheduled {
        /// The attempt.
        attempt: PaymentAttempt,
        /// The decision made for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decision: Option<AuthorityDecision>,
        /// When it may be sent.
        until: chrono::DateTime<chrono::Utc>,
    },
}

impl From<PaymentOutcome> for PaymentOutcomeWire {
    fn from(o: PaymentOutcome) -> Self {
        match o {
            PaymentOutcome::Refused(decision) => PaymentOutcomeWire::Refused { decision },
            PaymentOutcome::Done { attempt, decision } => {
                PaymentOutcomeWire::Done { attempt, decision }
            }
            PaymentOutcome::Replayed { attempt } => PaymentOutcomeWire::Replayed { attempt },
            PaymentOutcome::Scheduled {
                attempt,
                decision,
                until,
            } => PaymentOutcomeWire::Scheduled {
                attempt,
                decision,
                until,
            },
        }
    }
}

impl From<PaymentOutcomeWire> for PaymentOutcome {
    fn from(w: PaymentOutcomeWire) -> Self {
        match w {
            PaymentOutcomeWire::Refused { decision } => PaymentOutcome::Refused(decision),
            PaymentOutcomeWire::Done { attempt, decision } => {
                PaymentOutcome::Done { attempt, decision }
            }
            PaymentOutcomeWire::Replayed { attempt } => PaymentOutcome::Replayed { attempt },
            PaymentOutcomeWire::Scheduled {
                attempt,
                decision,
                until,
            } => PaymentOutcome::Scheduled {
                attempt,
                decision,
                until,
            },
        }
    }
}
