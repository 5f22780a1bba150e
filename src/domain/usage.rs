//! What a mandate has already spent and held: supplied by the caller (later by the store) and
//! read by the decision.

use serde::{Deserialize, Serialize};

use super::error::{check_len, ValidationError};
use super::ids::MandateId;
use super::limits::MAX_WINDOWS;
use super::mandate::Mandate;
use super::money::{Currency, Money};

/// Held + spent and the number of payments inside one rolling window, evaluated at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "WindowUsage")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct WindowUsage {
    /// Window length in seconds; matches a `WindowLimit` of the mandate.
    pub window_seconds: u64,
    /// Held + spent inside the window.
    pub amount: Money,
    /// Payments inside the window.
    pub count: u32,
}

/// Usage of one mandate. Amounts are the mandate's own usage plus that of all its descendants
/// (spend by a child counts against every ancestor).
///
/// ```
/// use agent_mandate::domain::{Currency, MandateId, Usage};
/// let usage = Usage::zero(MandateId::new("mandate_001").unwrap(), Currency::EUR);
/// assert!(usage.held.is_zero());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(try_from = "UsageSpec", into = "UsageSpec")]
pub struct Usage {
    /// The mandate.
    pub mandate_id: MandateId,
    /// Spent over the mandate's life (captured or authorized and committed, net of refunds
    /// under the refund policy).
    pub spent: Money,
    /// Currently held (authorizations in flight, ambiguous outcomes).
    pub held: Money,
    /// Per window.
    pub windows: Vec<WindowUsage>,
    /// Payments made under the mandate.
    pub uses: u32,
    /// Payment attempts (authorizations tried).
    pub attempts: u32,
}

/// The plain data of [`Usage`], as deserialised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "UsageSpec")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct UsageSpec {
    /// See [`Usage::mandate_id`].
    pub mandate_id: MandateId,
    /// See [`Usage::spent`].
    pub spent: Money,
    /// See [`Usage::held`].
    pub held: Money,
    /// See [`Usage::windows`].
    #[serde(default)]
    pub windows: Vec<WindowUsage>,
    /// See [`Usage::uses`].
    #[serde(default)]
    pub uses: u32,
    /// See [`Usage::attempts`].
    #[serde(default)]
    pub attempts: u32,
}

impl Usage {
    /// Nothing used yet.
    pub fn zero(mandate_id: MandateId, currency: Currency) -> Usage {
        Usage {
            mandate_id,
            spent: Money::zero(currency),
            held: Money::zero(currency),
            windows: Vec::new(),
            uses: 0,
            attempts: 0,
        }
    }

    /// Nothing used yet on `mandate`, with every window of its budgets reported at zero (a
    /// complete usage entry: the decision finds every window it checks).
    ///
    /// ```
    /// use agent_mandate::domain::{examples, Usage};
    /// let m = examples::travel_backpack_mandate();
    /// let usage = Usage::none_for(&m);
    /// assert_eq!(usage.windows.len(), m.scope().budgets.windows.len());
    /// ```
    pub fn none_for(mandate: &Mandate) -> Usage {
        let currency = mandate.currency();
        let mut usage = Usage::zero(mandate.id().clone(), currency);
        usage.windows = mandate
            .scope()
            .budgets
            .windows
            .iter()
            .map(|w| WindowUsage {
                window_seconds: w.window_seconds,
                amount: Money::zero(currency),
                count: 0,
            })
            .collect();
        usage
    }

    /// The currency of the usage.
    pub fn currency(&self) -> Currency {
        self.spent.currency()
    }

    /// The usage of the window of `seconds`, if reported.
    pub fn window(&self, seconds: u64) -> Option<&WindowUsage> {
        self.windows.iter().find(|w| w.window_seconds == seconds)
    }
}

impl TryFrom<UsageSpec> for Usage {
    type Error = ValidationError;
    fn try_from(s: UsageSpec) -> Result<Self, Self::Error> {
        let currency = s.spent.currency();
        check_len("windows", &s.windows, MAX_WINDOWS)?;
        let mismatch = |field: String, m: &Money| {
            (m.currency() != currency).then(|| {
                super::error::err(
                    field,
                    super::error::ValidationKind::Money(
                        super::money::MoneyError::CurrencyMismatch {
                            left: currency,
                            right: m.currency(),
                        },
                    ),
                )
            })
        };
        if let Some(e) = mismatch("held".into(), &s.held) {
            return Err(e);
        }
        for (i, w) in s.windows.iter().enumerate() {
            if let Some(e) = mismatch(format!("windows[{i}].amount"), &w.amount) {
                return Err(e);
            }
            if s.windows[..i]
                .iter()
                .any(|x| x.window_seconds == w.window_seconds)
            {
                return Err(super::error::err(
                    format!("windows[{i}].window_seconds"),
                    super::error::ValidationKind::Duplicate {
                        value: w.window_seconds.to_string(),
                    },
                ));
            }
        }
        Ok(Usage {
            mandate_id: s.mandate_id,
            spent: s.spent,
            held: s.held,
            windows: s.windows,
            uses: s.uses,
            attempts: s.attempts,
        })
    }
}

impl From<Usage> for UsageSpec {
    fn from(u: Usage) -> Self {
        UsageSpec {
            mandate_id: u.mandate_id,
            spent: u.spent,
            held: u.held,
            windows: u.windows,
            uses: u.uses,
            attempts: u.attempts,
        }
    }
}

/// Loop detection: at most `max_payments` payments for the same resource (the same single-line
/// cart item at the same merchant, under the same mandate) within `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "LoopLimit")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct LoopLimit {
    /// Payments allowed in the window (the next one is blocked); at least 1.
    pub max_payments: u32,
    /// The window, in seconds; at least 1.
    pub window_seconds: u64,
}

impl LoopLimit {
    /// Validates: both at least 1, the window at most ten years.
    pub fn new(max_payments: u32, window_seconds: u64) -> Result<LoopLimit, ValidationError> {
        use super::error::{err, ValidationKind};
        if max_payments == 0 {
            return Err(err(
                "max_payments",
                ValidationKind::OutOfRange {
                    min: 1,
                    max: u64::from(u32::MAX),
                    value: 0,
                },
            ));
        }
        const TEN_YEARS: u64 = 10 * 366 * 86_400;
        if window_seconds == 0 || window_seconds > TEN_YEARS {
            return Err(err(
                "window_seconds",
                ValidationKind::OutOfRange {
                    min: 1,
                    max: TEN_YEARS,
                    value: window_seconds,
                },
            ));
        }
        Ok(LoopLimit {
            max_payments,
            window_seconds,
        })
    }
}

/// How often the resource of a request was paid for within its loop limit's window, counted
/// by the caller (the engine) before the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "ResourcePayments")
)]
#[serde(remote = "Self")]
#[serde(deny_unknown_fields)]
pub struct ResourcePayments {
    /// The limit.
    pub limit: LoopLimit,
    /// Payments for the resource within the window ending now.
    pub paid: u32,
}

crate::json::object_only!(WindowUsage);
crate::json::object_only!(LoopLimit);
crate::json::object_only!(ResourcePayments);
crate::json::object_only!(UsageSpec);
