//! The configuration of the engine's safety controls.

use std::time::Duration;

use crate::domain::{MerchantId, Money};

use super::super::config::ConfigError;

/// The longest window or cool-down a control accepts (ten years, as a mandate window).
const MAX_WINDOW: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// The longest time the engine waits for an alert sink to take an alert over.
pub const MAX_ALERT_ENQUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// "More than `max` in `window`": the control acts on the event that makes the count in the
/// rolling window `(now - window, now]` exceed `max`.
///
/// ```
/// use std::time::Duration;
/// use agent_mandate::engine::Rate;
/// let rate = Rate::new(3, Duration::from_secs(3600))?;
/// assert_eq!(rate.max(), 3);
/// assert_eq!(Rate::new(3, Duration::ZERO).unwrap_err().field, "window");
/// # Ok::<(), agent_mandate::engine::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    max: u32,
    window: Duration,
}

impl Rate {
    /// More than `max` in `window`; refuses a window of zero or longer than ten years, at
    /// least one second.
    pub fn new(max: u32, window: Duration) -> Result<Rate, ConfigError> {
        if window < Duration::from_secs(1) || window > MAX_WINDOW {
            return Err(ConfigError {
                field: "window",
                message: "must be 1 s to 10 years",
            });
        }
        Ok(Rate { max, window })
    }

    /// The count the window may hold without the control acting.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The rolling window.
    pub fn window(&self) -> Duration {
        self.window
    }

    pub(crate) fn window_seconds(&self) -> u64 {
        self.window.as_secs()
    }

    pub(crate) fn chrono_window(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX)
    }
}

/// A circuit breaker: opens when failures exceed `rate`, refuses payments until a person
/// resets it or `cool_down` has passed since it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    rate: Rate,
    cool_down: Duration,
}

impl Breaker {
    /// A breaker; refuses a cool-down of zero or longer than ten years.
    pub fn new(rate: Rate, cool_down: Duration) -> Result<Breaker, ConfigError> {
        if cool_down.is_zero() || cool_down > MAX_WINDOW {
            return Err(ConfigError {
                field: "cool_down",
                message: "must be more than zero and at most 10 years",
            });
        }
        Ok(Breaker { rate, cool_down })
    }

    /// When it opens.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// How long it stays open without a reset.
    pub fn cool_down(&self) -> Duration {
        self.cool_down
    }

    pub(crate) fn chrono_cool_down(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.cool_down).unwrap_or(chrono::Duration::MAX)
    }
}

/// What the merchant control does with a merchant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MerchantControl {
    /// Nothing.
    #[default]
    Off,
    /// Alert the buyer on a merchant not seen before for them (the payment goes on).
    AlertNew,
    /// Alert on a merchant outside the list, and require the buyer's confirmation for it.
    Allowlist(Vec<MerchantId>),
}

/// The engine's safety controls ([`crate::engine::EngineConfig::controls`]). Every control
/// holds the request's accountable actor to account ([`crate::domain::accountable_actor`]):
/// an agent's own request, or a system payer's (a scoped token's redemption) as the agent
/// above it; the violations and intent controls judge an agent's own requests only. A
/// buyer's or an operator's actions never count.
///
/// `Controls::default()` is every control off (the engine's behaviour without them);
/// [`Controls::recommended`] is every control on with the documented defaults:
///
/// | control | recommended |
/// |---|---|
/// | `violations` | more than 3 in a rolling hour: suspend, alert security |
/// | `auth_failures` | more than 5 in 10 minutes per credential or agent: breaker open 30 minutes |
/// | `velocity` | more than 10 payments an hour per agent: buyer's confirmation |
/// | `merchants` | alert on a merchant new for the buyer |
/// | `intent_suspends` | on: a cart that departs from the declared intent suspends the agent |
/// | `intent_required` | on: an agent's payment without a declared intent is refused (`INTENT_MISMATCH`) |
/// | `vault_errors` | more than 1 in an hour: alert security |
/// | `threshold_alerts` | on: the 80% threshold events alert the buyer |
/// | `expiry_lead` | 24 hours |
/// | `dual_confirmation_above` | none (an amount needs a currency: set it) |
/// | `review_window` | 30 s for an agent's payment below `time_sensitive` (with a review queue attached) |
///
/// ```
/// use std::time::Duration;
/// use agent_mandate::engine::{Controls, EngineConfig, Rate};
/// let controls = Controls::recommended()
///     .with_velocity(Some(Rate::new(20, Duration::from_secs(3600))?))
///     .with_alert_enqueue_timeout(Duration::from_millis(20))?;
/// let config = EngineConfig::default().with_controls(controls);
/// assert_eq!(config.controls().velocity().unwrap().max(), 20);
/// assert!(Controls::default().with_alert_enqueue_timeout(Duration::ZERO).is_err());
/// # Ok::<(), agent_mandate::engine::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Controls {
    pub(crate) violations: Option<Rate>,
    pub(crate) auth_failures: Option<Breaker>,
    pub(crate) auth_failure_codes: Vec<String>,
    pub(crate) velocity: Option<Rate>,
    pub(crate) merchants: MerchantControl,
    pub(crate) intent_suspends: bool,
    pub(crate) intent_required: bool,
    pub(crate) vault_errors: Option<Rate>,
    pub(crate) threshold_alerts: bool,
    pub(crate) expiry_lead: Option<Duration>,
    pub(crate) dual_confirmation_above: Option<Money>,
    pub(crate) alert_enqueue_timeout: Duration,
    pub(crate) review_window: Option<crate::engine::ReviewWindow>,
}

/// The PSP decline codes that mean a failed 3-D Secure or issuer authentication.
pub const DEFAULT_AUTH_FAILURE_CODES: &[&str] = &[
    "authentication_failed",
    "three_d_secure_failed",
    "payment_intent_authentication_failure",
];

impl Default for Controls {
    fn default() -> Self {
        Controls {
            violations: None,
            auth_failures: None,
            auth_failure_codes: DEFAULT_AUTH_FAILURE_CODES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            velocity: None,
            merchants: MerchantControl::Off,
            intent_suspends: false,
            intent_required: false,
            vault_errors: None,
            threshold_alerts: false,
            expiry_lead: None,
            dual_confirmation_above: None,
            alert_enqueue_timeout: Duration::from_millis(50),
            review_window: None,
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

impl Controls {
    /// Every control off.
    pub fn off() -> Controls {
        Controls::default()
    }

    /// Every control on with the documented defaults (see the type's table).
    pub fn recommended() -> Controls {
        Controls {
            violations: Some(Rate {
                max: 3,
                window: HOUR,
            }),
            auth_failures: Some(Breaker {
                rate: Rate {
                    max: 5,
                    window: Duration::from_secs(600),
                },
                cool_down: Duration::from_secs(1800),
            }),
            velocity: Some(Rate {
                max: 10,
                window: HOUR,
            }),
            merchants: MerchantControl::AlertNew,
            intent_suspends: true,
            intent_required: true,
            vault_errors: Some(Rate {
                max: 1,
                window: HOUR,
            }),
            threshold_alerts: true,
            expiry_lead: Some(Duration::from_secs(24 * 3600)),
            review_window: Some(crate::engine::ReviewWindow::default()),
            ..Controls::default()
        }
    }

    /// Spending-control violations of an agent: more than `max` in the window suspends it
    /// and alerts security (`None`: off; the consecutive count is
    /// [`crate::engine::EngineConfig::auto_suspend_after`]).
    pub fn violations(&self) -> Option<Rate> {
        self.violations
    }

    /// Failed authentications per credential and per agent (`None`: off).
    pub fn auth_failures(&self) -> Option<Breaker> {
        self.auth_failures
    }

    /// The decline codes counted as failed authentications (with `Invalid` answers).
    pub fn auth_failure_codes(&self) -> &[String] {
        &self.auth_failure_codes
    }

    /// Payments per agent before a velocity hold (`None`: off).
    pub fn velocity(&self) -> Option<Rate> {
        self.velocity
    }

    /// The merchant control.
    pub fn merchants(&self) -> &MerchantControl {
        &self.merchants
    }

    /// Whether a cart that departs from the declared intent suspends the agent (the payment
    /// is refused with `INTENT_MISMATCH` either way).
    pub fn intent_suspends(&self) -> bool {
        self.intent_suspends
    }

    /// Whether an agent's own payment must declare its purchase intent
    /// ([`crate::engine::ExecutePayment::with_intent`]): without one it is refused with
    /// `INTENT_MISMATCH` ("no purchase intent was declared"). Off in `Controls::default()`,
    /// on in [`Controls::recommended`]. A payer an agent is accountable for (a token's
    /// redemption) declares none and is not asked to.
    pub fn intent_required(&self) -> bool {
        self.intent_required
    }

    /// Vault decryption errors before security is alerted (`None`: off).
    pub fn vault_errors(&self) -> Option<Rate> {
        self.vault_errors
    }

    /// Whether threshold events alert the buyer.
    pub fn threshold_alerts(&self) -> bool {
        self.threshold_alerts
    }

    /// How long before a mandate's expiry the buyer is told (`None`: never).
    pub fn expiry_lead(&self) -> Option<Duration> {
        self.expiry_lead
    }

    /// Above this amount a payment needs the agent's declaration and the buyer's
    /// confirmation (`None`: never). A payment in another currency needs both too (it cannot
    /// be compared: deny by default).
    pub fn dual_confirmation_above(&self) -> Option<&Money> {
        self.dual_confirmation_above.as_ref()
    }

    /// How long the engine waits for the alert sink to take one alert over.
    pub fn alert_enqueue_timeout(&self) -> Duration {
        self.alert_enqueue_timeout
    }

    /// The review window: how long an agent's non-urgent payment waits, held, before it goes
    /// to the PSP (`None`: off). It applies only on an engine with a review queue
    /// (`Engine::with_reviews`).
    pub fn review_window(&self) -> Option<crate::engine::ReviewWindow> {
        self.review_window
    }

    /// Sets the review window.
    pub fn with_review_window(mut self, window: Option<crate::engine::ReviewWindow>) -> Self {
        self.review_window = window;
        self
    }

    /// Sets the violations control.
    pub fn with_violations(mut self, rate: Option<Rate>) -> Self {
        self.violations = rate;
        self
    }

    /// Sets the authentication breaker.
    pub fn with_auth_failures(mut self, breaker: Option<Breaker>) -> Self {
        self.auth_failures = breaker;
        self
    }

    /// Sets the decline codes counted as failed authentications; refuses an empty code and
    /// more than 64 codes.
    pub fn with_auth_failure_codes(mut self, codes: &[&str]) -> Result<Self, ConfigError> {
        if codes.len() > 64 || codes.iter().any(|c| c.is_empty() || c.len() > 128) {
            return Err(ConfigError {
                field: "auth_failure_codes",
                message: "must be at most 64 codes of 1 to 128 bytes",
            });
        }
        self.auth_failure_codes = codes.iter().map(|s| (*s).to_owned()).collect();
        Ok(self)
    }

    /// Sets the velocity control.
    pub fn with_velocity(mut self, rate: Option<Rate>) -> Self {
        self.velocity = rate;
        self
    }

    /// Sets the merchant control; refuses an empty allowlist (it would hold every payment:
    /// say so with a list) and one longer than 1,000 merchants.
    pub fn with_merchants(mut self, control: MerchantControl) -> Result<Self, ConfigError> {
        if let MerchantControl::Allowlist(list) = &control
            && (list.is_empty() || list.len() > crate::domain::limits::MAX_LIST)
        {
            return Err(ConfigError {
                field: "merchants",
                message: "an allowlist must name 1 to 1,000 merchants",
            });
        }
        self.merchants = control;
        Ok(self)
    }

    /// Sets whether an intent mismatch suspends the agent.
    pub fn with_intent_suspends(mut self, on: bool) -> Self {
        self.intent_suspends = on;
        self
    }

    /// Sets whether an agent's payment must declare its purchase intent.
    ///
    /// ```
    /// use agent_mandate::engine::Controls;
    /// assert!(!Controls::default().intent_required());
    /// assert!(Controls::recommended().intent_required());
    /// assert!(!Controls::recommended().with_intent_required(false).intent_required());
    /// ```
    pub fn with_intent_required(mut self, on: bool) -> Self {
        self.intent_required = on;
        self
    }

    /// Sets the vault-error control.
    pub fn with_vault_errors(mut self, rate: Option<Rate>) -> Self {
        self.vault_errors = rate;
        self
    }

    /// Sets whether threshold events alert the buyer.
    pub fn with_threshold_alerts(mut self, on: bool) -> Self {
        self.threshold_alerts = on;
        self
    }

    /// Sets the expiry lead time; refuses zero and more than ten years.
    pub fn with_expiry_lead(mut self, lead: Option<Duration>) -> Result<Self, ConfigError> {
        if lead.is_some_and(|l| l.is_zero() || l > MAX_WINDOW) {
            return Err(ConfigError {
                field: "expiry_lead",
                message: "must be more than zero and at most 10 years",
            });
        }
        self.expiry_lead = lead;
        Ok(self)
    }

    /// Sets the dual-confirmation amount.
    pub fn with_dual_confirmation_above(mut self, amount: Option<Money>) -> Self {
        self.dual_confirmation_above = amount;
        self
    }

    /// Sets how long the engine waits for the alert sink; refuses zero and more than
    /// [`MAX_ALERT_ENQUEUE_TIMEOUT`].
    pub fn with_alert_enqueue_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() || timeout > MAX_ALERT_ENQUEUE_TIMEOUT {
            return Err(ConfigError {
                field: "alert_enqueue_timeout",
                message: "must be more than zero and at most 5 s",
            });
        }
        self.alert_enqueue_timeout = timeout;
        Ok(self)
    }
}
