//! The engine's safety controls: counters and state (in this process), the signals they give
//! the decision, the alerts they raise, and the hand-over of alerts to the [`AlertSink`].
//!
//! State that is not durable: the rolling-window counters (violations, failed
//! authentications, payments, vault errors), the breakers, the merchants seen per buyer, the
//! mandates whose expiry was announced, the credentials' kill switch and the alerts waiting
//! for the sink live in this engine's memory. A restarted process starts from zero and
//! several processes count apart. The consecutive-block count and the suspensions it leads
//! to are the store's (durable), as before; so is every alert, as an audit event.

mod config;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

pub use config::{
    Breaker, Controls, MerchantControl, Rate, DEFAULT_AUTH_FAILURE_CODES, MAX_ALERT_ENQUEUE_TIMEOUT,
};

use super::error::EngineError;
use super::Engine;
use crate::domain::{
    ActorId, ActorKind, Alert, AlertKind, AuditEvent, AuditKind, AuthorityDecision, BlockerCode,
    BreakerScope, BuyerId, ConfirmReason, ControlSignals, CredentialRef, Declaration, Mandate,
    MandateId, MerchantId, PaymentRequest, Principal, PurchaseIntent,
};
use crate::ports::AlertSink;

/// The most keys a counter map keeps (past it, expired entries are dropped, then all).
const MAX_KEYS: usize = 100_000;

/// The most alerts waiting for the sink (past it, the oldest are dropped and counted: they
/// stay on the audit trail).
pub const MAX_ALERT_BACKLOG: usize = 10_000;

/// The breaker a person resets ([`Engine::reset_breaker`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerTarget {
    /// A credential's breaker.
    Credential(CredentialRef),
    /// An agent's breaker.
    Agent(ActorId),
}

impl BreakerTarget {
    fn scope(&self) -> BreakerScope {
        match self {
            BreakerTarget::Credential(_) => BreakerScope::Credential,
            BreakerTarget::Agent(_) => BreakerScope::Agent,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    violations: HashMap<ActorId, VecDeque<DateTime<Utc>>>,
    failures: HashMap<BreakerTarget, VecDeque<DateTime<Utc>>>,
    open: HashMap<BreakerTarget, DateTime<Utc>>,
    payments: HashMap<ActorId, VecDeque<DateTime<Utc>>>,
    seen: HashMap<BuyerId, HashSet<MerchantId>>,
    vault_errors: VecDeque<DateTime<Utc>>,
    expiry_announced: HashSet<MandateId>,
    killed: HashSet<ActorId>,
}

/// The controls' state in this engine (see the module's docs).
#[derive(Debug, Default)]
pub(super) struct ControlState {
    state: Mutex<State>,
    backlog: Mutex<VecDeque<Alert>>,
    dropped: AtomicU64,
}

/// Drops times at or before `now - window`; returns how many are left.
fn prune(times: &mut VecDeque<DateTime<Utc>>, now: DateTime<Utc>, rate: &Rate) -> u32 {
    let since = now - rate.chrono_window();
    while times.front().is_some_and(|t| *t <= since) {
        times.pop_front();
    }
    u32::try_from(times.len()).unwrap_or(u32::MAX)
}

/// Records one event at `now` in `key`'s window; returns the count in the window.
fn bump<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, VecDeque<DateTime<Utc>>>,
    key: &K,
    now: DateTime<Utc>,
    rate: &Rate,
) -> u32 {
    if map.len() >= MAX_KEYS && !map.contains_key(key) {
        let since = now - rate.chrono_window();
        map.retain(|_, t| t.back().is_some_and(|t| *t > since));
        if map.len() >= MAX_KEYS {
            map.clear();
        }
    }
    let times = map.entry(key.clone()).or_default();
    times.push_back(now);
    // Keep at most one more than the control needs to see.
    let cap = usize::try_from(rate.max())
        .unwrap_or(usize::MAX)
        .saturating_add(2);
    while times.len() > cap {
        times.pop_front();
    }
    prune(times, now, rate)
}

fn is_agent(req: &PaymentRequest) -> bool {
    req.actor.kind == ActorKind::Agent
}

impl ControlState {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a few map operations: a panic elsewhere leaves the state usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn backlog(&self) -> MutexGuard<'_, VecDeque<Alert>> {
        self.backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait(&self, alerts: impl IntoIterator<Item = Alert>) {
        let mut b = self.backlog();
        for a in alerts {
            if b.len() >= MAX_ALERT_BACKLOG {
                b.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            b.push_back(a);
        }
    }

    /// Whether `owner`'s credentials are switched off.
    pub(super) fn credentials_killed(&self, owner: &ActorId) -> bool {
        self.lock().killed.contains(owner)
    }
}

impl Engine {
    /// Sends this engine's alerts to `sink` (they are audit events either way).
    ///
    /// ```
    /// # #[cfg(feature = "testkit")] {
    /// use std::sync::Arc;
    /// use agent_mandate::adapters::memory::{MemoryAlerts, MemoryPorts};
    /// use agent_mandate::engine::{Controls, Engine, EngineConfig};
    /// use agent_mandate::testkit::FakePsp;
    /// let memory = MemoryPorts::new(agent_mandate::domain::examples::now(), |vault, _| {
    ///     Arc::new(FakePsp::with_vault(vault))
    /// });
    /// let config = EngineConfig::default().with_controls(Controls::recommended());
    /// let alerts = Arc::new(MemoryAlerts::new());
    /// let engine = Engine::new(memory.ports.clone(), config).unwrap().with_alerts(alerts);
    /// # let _ = engine;
    /// # }
    /// ```
    #[must_use]
    pub fn with_alerts(mut self, sink: Arc<dyn AlertSink>) -> Engine {
        self.alerts = Some(sink);
        self
    }

    /// Alerts the sink has not taken over yet (it refused or was slow; each flush tries
    /// again).
    pub fn alerts_waiting(&self) -> usize {
        self.controls.backlog().len()
    }

    /// Alerts dropped from the waiting list past [`MAX_ALERT_BACKLOG`] (they are on the audit
    /// trail).
    pub fn alerts_dropped(&self) -> u64 {
        self.controls.dropped.load(Ordering::Relaxed)
    }

    fn controls_config(&self) -> &Controls {
        &self.config.controls
    }

    /// What the controls tell the decision about `req` at `now` (`None`: nothing; always
    /// `None` for a request whose actor is not an agent).
    pub(super) fn control_signals(
        &self,
        req: &PaymentRequest,
        intent: Option<&PurchaseIntent>,
        declaration: Option<&Declaration>,
        credential: Option<&CredentialRef>,
        now: DateTime<Utc>,
    ) -> Option<ControlSignals> {
        if !is_agent(req) {
            return None;
        }
        let c = self.controls_config();
        let mut signals = ControlSignals {
            intent: intent.cloned(),
            declaration: declaration.cloned(),
            ..ControlSignals::default()
        };
        {
            let mut s = self.controls.lock();
            if let Some(b) = c.auth_failures {
                let targets = [
                    credential.map(|r| BreakerTarget::Credential(r.clone())),
                    Some(BreakerTarget::Agent(req.actor.id.clone())),
                ];
                for t in targets.into_iter().flatten() {
                    let Some(opened) = s.open.get(&t).copied() else {
                        continue;
                    };
                    if now < opened + b.chrono_cool_down() {
                        signals.circuit_open = Some(t.scope());
                        break;
                    }
                    // Cooled down: closed, counting from zero.
                    s.open.remove(&t);
                    s.failures.remove(&t);
                }
            }
            if let Some(rate) = c.velocity {
                let count = s
                    .payments
                    .get_mut(&req.actor.id)
                    .map_or(0, |t| prune(t, now, &rate));
                if count >= rate.max() {
                    signals.confirm.push(ConfirmReason::Velocity {
                        payments: count,
                        window_seconds: rate.window_seconds(),
                    });
                }
            }
        }
        if let MerchantControl::Allowlist(list) = &c.merchants
            && !list.contains(&req.merchant_id)
        {
            signals.confirm.push(ConfirmReason::MerchantNotAllowlisted);
        }
        if let Some(above) = &c.dual_confirmation_above {
            // Another currency cannot be compared: both confirmations are required.
            if req.amount.currency() != above.currency() || req.amount.exceeds(above) {
                signals
                    .confirm
                    .push(ConfirmReason::DualConfirmation { above: *above });
            }
        }
        (!signals.is_empty()).then_some(signals)
    }

    /// The controls' part of a refusal: alerts, and whether the agent is to be suspended (an
    /// intent mismatch, or violations past the rolling window's count). `counted`: the
    /// refusal is a decision's (not a lost hold race) and may count as a violation.
    pub(super) fn control_refusal(
        &self,
        req: &PaymentRequest,
        decision: &AuthorityDecision,
        signals: Option<&ControlSignals>,
        counted: bool,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) -> bool {
        if !is_agent(req) || decision.has(BlockerCode::ActorSuspended) {
            return false;
        }
        let c = self.controls_config();
        let mut suspend = false;
        let alert = |kind: AlertKind, message: String| {
            Alert::new(now, kind, message)
                .actor(&req.actor.id)
                .buyer(&req.buyer_id)
                .to_event()
        };
        if decision.has(BlockerCode::IntentMismatch)
            && c.intent_suspends
            && let Some(intent) = signals.and_then(|s| s.intent.as_ref())
        {
            events.push(alert(
                AlertKind::IntentMismatch {
                    intent_hash: intent.intent_hash(),
                    snapshot_id: req.snapshot_id,
                },
                format!(
                    "agent {} asked to pay a cart that departs from its declared intent: suspended",
                    req.actor.id
                ),
            ));
            suspend = true;
        }
        if let Some(rate) = c.violations
            && counted
            && self.config.counts_toward_suspension(decision)
        {
            let count = bump(
                &mut self.controls.lock().violations,
                &req.actor.id,
                now,
                &rate,
            );
            if count > rate.max() && !suspend {
                events.push(alert(
                    AlertKind::ViolationsSuspended {
                        violations: count,
                        window_seconds: rate.window_seconds(),
                    },
                    format!(
                        "agent {} had {count} spending-control violations in {} s: suspended",
                        req.actor.id,
                        rate.window_seconds()
                    ),
                ));
                suspend = true;
            }
        }
        if decision.has(BlockerCode::ConfirmationRequired) {
            for reason in signals.map_or(&[][..], |s| &s.confirm[..]) {
                match reason {
                    ConfirmReason::Velocity {
                        payments,
                        window_seconds,
                    } => events.push(alert(
                        AlertKind::VelocityHold {
                            payments: *payments,
                            window_seconds: *window_seconds,
                        },
                        format!(
                            "agent {} made {payments} payments in {window_seconds} s: its next payments need your confirmation",
                            req.actor.id
                        ),
                    )),
                    ConfirmReason::MerchantNotAllowlisted => events.push(alert(
                        AlertKind::NewMerchant {
                            merchant_id: req.merchant_id.clone(),
                            outside_allowlist: true,
                        },
                        format!(
                            "agent {} asked to pay {}, outside your allowlist: it needs your confirmation",
                            req.actor.id, req.merchant_id
                        ),
                    )),
                    ConfirmReason::DualConfirmation { .. } => {}
                }
            }
        }
        suspend
    }

    /// The security alert that goes with a suspension after consecutive blocks (when the
    /// violations control is on).
    pub(super) fn consecutive_alert(
        &self,
        req: &PaymentRequest,
        count: u32,
        now: DateTime<Utc>,
    ) -> Option<AuditEvent> {
        self.controls_config().violations?;
        Some(
            Alert::new(
                now,
                AlertKind::ViolationsSuspended {
                    violations: count,
                    window_seconds: 0,
                },
                format!(
                    "agent {} had {count} blocked requests in a row: suspended",
                    req.actor.id
                ),
            )
            .actor(&req.actor.id)
            .buyer(&req.buyer_id)
            .to_event(),
        )
    }

    /// The controls' part of an allowed payment: a merchant new for the buyer, mandates close
    /// to expiry.
    pub(super) fn control_allowed(
        &self,
        req: &PaymentRequest,
        chain: &[Mandate],
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) {
        if !is_agent(req) {
            return;
        }
        let c = self.controls_config();
        let mut s = self.controls.lock();
        if c.merchants == MerchantControl::AlertNew {
            if s.seen.len() >= MAX_KEYS && !s.seen.contains_key(&req.buyer_id) {
                s.seen.clear();
            }
            let seen = s.seen.entry(req.buyer_id.clone()).or_default();
            if seen.len() < crate::domain::limits::MAX_LIST * 10
                && seen.insert(req.merchant_id.clone())
            {
                events.push(
                    Alert::new(
                        now,
                        AlertKind::NewMerchant {
                            merchant_id: req.merchant_id.clone(),
                            outside_allowlist: false,
                        },
                        format!(
                            "agent {} is paying {} for the first time for you",
                            req.actor.id, req.merchant_id
                        ),
                    )
                    .actor(&req.actor.id)
                    .buyer(&req.buyer_id)
                    .to_event(),
                );
            }
        }
        if let Some(lead) = c.expiry_lead {
            let lead = chrono::Duration::from_std(lead).unwrap_or(chrono::Duration::MAX);
            for m in chain {
                let expires_at = m.scope().validity.expires_at;
                if now < expires_at
                    && expires_at - now <= lead
                    && !s.expiry_announced.contains(m.id())
                {
                    if s.expiry_announced.len() >= MAX_KEYS {
                        s.expiry_announced.clear();
                    }
                    s.expiry_announced.insert(m.id().clone());
                    events.push(
                        Alert::new(
                            now,
                            AlertKind::MandateExpiring {
                                mandate_id: m.id().clone(),
                                expires_at,
                            },
                            format!("mandate {} expires at {expires_at}", m.id()),
                        )
                        .actor(&req.actor.id)
                        .buyer(m.buyer_id())
                        .to_event(),
                    );
                }
            }
        }
    }

    /// Counts a payment of the request's agent (velocity).
    pub(super) fn record_payment(&self, req: &PaymentRequest, now: DateTime<Utc>) {
        if let (true, Some(rate)) = (is_agent(req), self.controls_config().velocity) {
            bump(
                &mut self.controls.lock().payments,
                &req.actor.id,
                now,
                &rate,
            );
        }
    }

    /// Whether a decline code is a failed authentication.
    pub(super) fn is_auth_failure(&self, decline_code: Option<&str>) -> bool {
        decline_code.is_some_and(|code| {
            self.controls_config()
                .auth_failure_codes
                .iter()
                .any(|c| c == code)
        })
    }

    /// Counts a failed authentication of the request's agent with `credential`; opens the
    /// breakers past the count and returns their alerts.
    pub(super) fn record_auth_failure(
        &self,
        req: &PaymentRequest,
        credential: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Vec<AuditEvent> {
        let Some(b) = self.controls_config().auth_failures else {
            return Vec::new();
        };
        if !is_agent(req) {
            return Vec::new();
        }
        let rate = b.rate();
        let mut out = Vec::new();
        let mut s = self.controls.lock();
        for t in [
            BreakerTarget::Credential(credential.clone()),
            BreakerTarget::Agent(req.actor.id.clone()),
        ] {
            let count = bump(&mut s.failures, &t, now, &rate);
            if count > rate.max() && !s.open.contains_key(&t) {
                if s.open.len() >= MAX_KEYS {
                    s.open.clear();
                }
                s.open.insert(t.clone(), now);
                let credential_ref = match &t {
                    BreakerTarget::Credential(r) => Some(r.clone()),
                    BreakerTarget::Agent(_) => None,
                };
                out.push(
                    Alert::new(
                        now,
                        AlertKind::CircuitOpened {
                            scope: t.scope(),
                            credential_ref,
                            failures: count,
                            window_seconds: rate.window_seconds(),
                        },
                        format!(
                            "{count} failed authentications in {} s for agent {}: the {} breaker is open",
                            rate.window_seconds(),
                            req.actor.id,
                            t.scope().as_str()
                        ),
                    )
                    .actor(&req.actor.id)
                    .buyer(&req.buyer_id)
                    .to_event(),
                );
            }
        }
        out
    }

    /// Counts a vault decryption or integrity error; the alert when they exceed the count.
    pub(super) fn record_vault_error(&self, now: DateTime<Utc>) -> Option<AuditEvent> {
        let rate = self.controls_config().vault_errors?;
        let count = {
            let mut s = self.controls.lock();
            s.vault_errors.push_back(now);
            prune(&mut s.vault_errors, now, &rate)
        };
        (count > rate.max()).then(|| {
            Alert::new(
                now,
                AlertKind::VaultErrors {
                    errors: count,
                    window_seconds: rate.window_seconds(),
                },
                format!(
                    "{count} vault decryption or integrity errors in {} s",
                    rate.window_seconds()
                ),
            )
            .to_event()
        })
    }

    /// The buyer's alerts for the threshold events in `events[from..]`.
    pub(super) fn threshold_alerts(
        &self,
        req: &PaymentRequest,
        events: &mut Vec<AuditEvent>,
        from: usize,
    ) {
        if !self.controls_config().threshold_alerts || !is_agent(req) {
            return;
        }
        let alerts: Vec<AuditEvent> = events
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| match &e.kind {
                AuditKind::Threshold {
                    mandate_id,
                    limit,
                    used,
                    max,
                    percent,
                } => Some(
                    Alert::new(
                        e.at,
                        AlertKind::Threshold {
                            mandate_id: mandate_id.clone(),
                            limit: limit.clone(),
                            percent: *percent,
                        },
                        format!(
                            "mandate {mandate_id} reached {percent}% of a limit: {used} of {max}"
                        ),
                    )
                    .actor(&req.actor.id)
                    .buyer(&req.buyer_id)
                    .to_event(),
                ),
                _ => None,
            })
            .collect();
        events.extend(alerts);
    }

    /// Hands the alerts among `events` (just appended to the audit sink) and those waiting
    /// over to the alert sink, each bounded by the enqueue timeout; after the first failure
    /// or timeout the rest wait for the next flush (so one flush waits at most one timeout).
    pub(super) async fn hand_over_alerts(&self, events: &[AuditEvent]) {
        let Some(sink) = &self.alerts else {
            return;
        };
        let fresh = events.iter().filter_map(|e| match &e.kind {
            AuditKind::Alert { alert } => Some((**alert).clone()),
            _ => None,
        });
        let mut queue: VecDeque<Alert> = std::mem::take(&mut *self.controls.backlog());
        queue.extend(fresh);
        if queue.is_empty() {
            return;
        }
        let timeout = self.controls_config().alert_enqueue_timeout;
        // Outside a tokio runtime (an executor without a timer) the hand-over is not
        // bounded here: the sink's own contract (a quick local enqueue) bounds it.
        // Without a feature that links tokio there is no timer to bound it with either.
        #[cfg(any(feature = "sqlite", feature = "postgres", feature = "http"))]
        let timer = tokio::runtime::Handle::try_current().is_ok();
        #[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "http")))]
        let _ = timeout;
        while let Some(alert) = queue.pop_front() {
            #[cfg(any(feature = "sqlite", feature = "postgres", feature = "http"))]
            let handed = if timer {
                tokio::time::timeout(timeout, sink.enqueue(&alert))
                    .await
                    .unwrap_or_else(|_| {
                        Err(crate::ports::AlertError::Unavailable {
                            message: "the enqueue timed out".into(),
                        })
                    })
            } else {
                sink.enqueue(&alert).await
            };
            #[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "http")))]
            let handed = sink.enqueue(&alert).await;
            match handed {
                Ok(()) => super::observe::alert_delivered(&alert),
                Err(_) => {
                    super::observe::alert_waiting();
                    queue.push_front(alert);
                    break;
                }
            }
        }
        self.controls.wait(queue);
    }

    /// The credentials' kill switch: suspends (`suspended: true`) or resumes every credential
    /// `agent` holds, effective for the next payment (its credential's status reads
    /// `suspended`, so the decision blocks it with `CREDENTIAL_NOT_USABLE`). Asked by an
    /// operator or a system; anyone else is [`EngineError::NotPermitted`]. Recorded as a
    /// security alert on the audit trail. Kept in this engine's memory (not durable: a
    /// restart resumes them; [`Engine::revoke_credentials`] revokes for good, in the vault).
    pub async fn suspend_credentials(
        &self,
        by: &Principal,
        agent: &ActorId,
        suspended: bool,
    ) -> Result<(), EngineError> {
        if !(by.is_operator() || by.is_system()) {
            return Err(EngineError::NotPermitted {
                reason: format!(
                    "{by} may not switch the credentials of {agent}: only an operator or a system may"
                ),
            });
        }
        let now = self.now();
        {
            let mut s = self.controls.lock();
            if suspended {
                s.killed.insert(agent.clone());
            } else {
                s.killed.remove(agent);
            }
        }
        let verb = if suspended { "suspended" } else { "resumed" };
        self.audit(&[Alert::new(
            now,
            AlertKind::CredentialsSuspended { suspended },
            format!("every credential of agent {agent} was {verb} by {by}"),
        )
        .actor(agent)
        .to_event()])
            .await
    }

    /// Resets a circuit breaker (closes it and clears its count). Asked by an operator (a
    /// person); anyone else is [`EngineError::NotPermitted`]. Recorded as an alert.
    pub async fn reset_breaker(
        &self,
        by: &Principal,
        target: &BreakerTarget,
    ) -> Result<(), EngineError> {
        if !by.is_operator() {
            return Err(EngineError::NotPermitted {
                reason: format!("{by} may not reset a circuit breaker: only an operator may"),
            });
        }
        let now = self.now();
        {
            let mut s = self.controls.lock();
            s.open.remove(target);
            s.failures.remove(target);
        }
        let (credential_ref, actor) = match target {
            BreakerTarget::Credential(r) => (Some(r.clone()), None),
            BreakerTarget::Agent(a) => (None, Some(a)),
        };
        let mut alert = Alert::new(
            now,
            AlertKind::CircuitReset {
                scope: target.scope(),
                credential_ref,
            },
            format!("a {} breaker was reset by {by}", target.scope().as_str()),
        );
        if let Some(a) = actor {
            alert = alert.actor(a);
        }
        self.audit(&[alert.to_event()]).await
    }
}

impl Engine {
    /// Whether alerts wait for the sink.
    pub(super) fn controls_waiting(&self) -> bool {
        self.alerts.is_some() && !self.controls.backlog().is_empty()
    }
}
