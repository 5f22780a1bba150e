//! The engine's safety controls: counters and state (in this process), the signals they give
//! the decision, the alerts they raise, and the hand-over of alerts to the [`AlertSink`].
//!
//! Whom they hold to account: the actor [`accountable_actor`] names for the request and its
//! chain ([`Payer`]): an agent's own request, and a `system` payer's (a scoped token, an ACP
//! allowance) as the nearest agent above it on the chain, so a payment through a token
//! counts, and is held or refused, as the issuing agent's. The buyer paying in person is
//! never held to account.
//!
//! State that is not durable: the rolling-window counters (violations, failed
//! authentications, payments, vault errors), the breakers, the merchants seen per buyer, the
//! mandates whose expiry was announced and the alerts waiting for the sink live in this
//! engine's memory. A restarted process starts from zero and several processes count apart.
//! Durable, in the store: the consecutive-block count and the suspensions it leads to, and
//! the credentials' kill switch ([`Party::Credentials`], read with the suspensions and
//! applied by the decision); so is every alert, as an audit event.

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
    accountable_actor, ActorId, ActorKind, Alert, AlertKind, AuditEvent, AuditKind,
    AuthorityDecision, BlockerCode, BreakerScope, BuyerId, ConfirmReason, ControlSignals,
    CredentialRef, Declaration, Mandate, MandateId, MerchantId, Party, PaymentRequest, Principal,
    PurchaseIntent,
};
use crate::ports::{AlertSink, CredentialKind, StoredCredential, Write};

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

/// The card a credential is, as far as the breaker can tell: the buyer, the kind and what
/// may be shown of it (brand, last four, expiry). Copies of one card (a scoped token's
/// credential is a copy of the agent's) are one card; two cards of one buyer with the same
/// brand, last four and expiry share a breaker (it opens for both: the safe side).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CardKey {
    buyer: BuyerId,
    kind: CredentialKind,
    brand: String,
    last4: String,
    exp_month: u8,
    exp_year: u16,
}

impl CardKey {
    pub(super) fn of(stored: &StoredCredential) -> CardKey {
        CardKey {
            buyer: stored.buyer_id.clone(),
            kind: stored.kind,
            brand: stored.display.brand.clone(),
            last4: stored.display.last4.clone(),
            exp_month: stored.display.exp_month,
            exp_year: stored.display.exp_year,
        }
    }
}

/// What a breaker counts: a card (every credential that is a copy of it) or an agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Tripwire {
    Card(CardKey),
    Agent(ActorId),
}

impl Tripwire {
    fn scope(&self) -> BreakerScope {
        match self {
            Tripwire::Card(_) => BreakerScope::Credential,
            Tripwire::Agent(_) => BreakerScope::Agent,
        }
    }
}

/// Whom the controls hold to account for a payment ([`accountable_actor`]), the buyer of
/// its mandate (alerts go to them, never to a buyer the request merely names), and the card
/// it presents.
#[derive(Debug, Clone)]
pub(super) struct Payer {
    /// The accountable actor: its kill switch applies, alerts name it.
    who: ActorId,
    /// Whose velocity and agent breaker count the payment: the accountable agent; for a
    /// system payer with no agent above it (one service actor may pay for every buyer, as
    /// the ACP service does), that actor for this buyer, so one buyer's payments or declines
    /// never hold or open another buyer's.
    counted: ActorId,
    /// Whether the request is that agent's own (an agent asking as itself): the violations
    /// and intent controls, which judge the agent's conduct, apply only then.
    own: bool,
    /// The buyer of the request's mandate (`None`: no mandate was found).
    buyer: Option<BuyerId>,
    /// The card presented, when the vault describes it.
    card: Option<CardKey>,
}

impl Payer {
    /// The payer of `req` under `chain` (`None`: the buyer in person, no control applies).
    pub(super) fn of(
        req: &PaymentRequest,
        chain: &[Mandate],
        card: Option<&CardKey>,
    ) -> Option<Payer> {
        let who = accountable_actor(req, chain)?.clone();
        let buyer = chain.last().map(|m| m.buyer_id().clone());
        let agent = req.actor.kind == ActorKind::Agent
            || chain
                .iter()
                .any(|m| m.actor().kind == ActorKind::Agent && m.actor().id == who);
        let counted = if agent {
            who.clone()
        } else {
            let for_buyer = buyer.as_ref().unwrap_or(&req.buyer_id);
            ActorId::derived(format!("system:{who}|buyer:{for_buyer}"))
        };
        Some(Payer {
            own: req.actor.kind == ActorKind::Agent,
            who,
            counted,
            buyer,
            card: card.cloned(),
        })
    }
}

/// An alert about `payer`'s request, to the buyer of its mandate.
fn alert_for(payer: &Payer, now: DateTime<Utc>, kind: AlertKind, message: String) -> Alert {
    let alert = Alert::new(now, kind, message).actor(&payer.who);
    match &payer.buyer {
        Some(b) => alert.buyer(b),
        None => alert,
    }
}

/// "agent X", or "X through Y" when the payer is a system actor X is accountable for.
fn named(payer: &Payer, req: &PaymentRequest) -> String {
    if payer.who == req.actor.id {
        format!("agent {}", payer.who)
    } else {
        format!("agent {} (through {})", payer.who, req.actor.id)
    }
}

#[derive(Debug, Default)]
struct State {
    violations: HashMap<ActorId, VecDeque<DateTime<Utc>>>,
    failures: HashMap<Tripwire, VecDeque<DateTime<Utc>>>,
    open: HashMap<Tripwire, DateTime<Utc>>,
    payments: HashMap<ActorId, VecDeque<DateTime<Utc>>>,
    seen: HashMap<BuyerId, HashSet<MerchantId>>,
    vault_errors: VecDeque<DateTime<Utc>>,
    expiry_announced: HashSet<MandateId>,
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
    /// `None` without a payer, the buyer paying in person). The intent (and the control that
    /// requires one) is the agent's own request's; the others apply to every payer.
    pub(super) fn control_signals(
        &self,
        payer: Option<&Payer>,
        req: &PaymentRequest,
        intent: Option<&PurchaseIntent>,
        declaration: Option<&Declaration>,
        now: DateTime<Utc>,
    ) -> Option<ControlSignals> {
        let payer = payer?;
        let c = self.controls_config();
        let mut signals = ControlSignals {
            intent: intent.filter(|_| payer.own).cloned(),
            declaration: declaration.cloned(),
            intent_required: c.intent_required && payer.own,
            ..ControlSignals::default()
        };
        {
            let mut s = self.controls.lock();
            if let Some(b) = c.auth_failures {
                let targets = [
                    payer.card.clone().map(Tripwire::Card),
                    Some(Tripwire::Agent(payer.counted.clone())),
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
                    .get_mut(&payer.counted)
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
    #[expect(
        clippy::too_many_arguments,
        reason = "the refusal's parts, each borrowed from the caller"
    )]
    pub(super) fn control_refusal(
        &self,
        payer: Option<&Payer>,
        req: &PaymentRequest,
        decision: &AuthorityDecision,
        signals: Option<&ControlSignals>,
        counted: bool,
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) -> bool {
        let Some(payer) = payer else {
            return false;
        };
        if decision.has(BlockerCode::ActorSuspended) {
            return false;
        }
        let c = self.controls_config();
        let mut suspend = false;
        let who = named(payer, req);
        let alert =
            |kind: AlertKind, message: String| alert_for(payer, now, kind, message).to_event();
        if payer.own
            && decision.has(BlockerCode::IntentMismatch)
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
            && payer.own
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
                            "{who} made {payments} payments in {window_seconds} s: its next payments need your confirmation"
                        ),
                    )),
                    ConfirmReason::MerchantNotAllowlisted => events.push(alert(
                        AlertKind::NewMerchant {
                            merchant_id: req.merchant_id.clone(),
                            outside_allowlist: true,
                        },
                        format!(
                            "{who} asked to pay {}, outside your allowlist: it needs your confirmation",
                            req.merchant_id
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
        payer: Option<&Payer>,
        count: u32,
        now: DateTime<Utc>,
    ) -> Option<AuditEvent> {
        self.controls_config().violations?;
        let payer = payer?;
        Some(
            alert_for(
                payer,
                now,
                AlertKind::ViolationsSuspended {
                    violations: count,
                    window_seconds: 0,
                },
                format!(
                    "agent {} had {count} blocked requests in a row: suspended",
                    payer.who
                ),
            )
            .to_event(),
        )
    }

    /// The controls' part of an allowed payment: a merchant new for the buyer, mandates close
    /// to expiry.
    pub(super) fn control_allowed(
        &self,
        payer: Option<&Payer>,
        req: &PaymentRequest,
        chain: &[Mandate],
        now: DateTime<Utc>,
        events: &mut Vec<AuditEvent>,
    ) {
        let Some(payer) = payer else {
            return;
        };
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
                    alert_for(
                        payer,
                        now,
                        AlertKind::NewMerchant {
                            merchant_id: req.merchant_id.clone(),
                            outside_allowlist: false,
                        },
                        format!(
                            "{} is paying {} for the first time for you",
                            named(payer, req),
                            req.merchant_id
                        ),
                    )
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
                        .actor(&payer.who)
                        .buyer(m.buyer_id())
                        .to_event(),
                    );
                }
            }
        }
    }

    /// Counts a payment of the payer's accountable agent (velocity).
    pub(super) fn record_payment(&self, payer: Option<&Payer>, now: DateTime<Utc>) {
        if let (Some(payer), Some(rate)) = (payer, self.controls_config().velocity) {
            bump(
                &mut self.controls.lock().payments,
                &payer.counted,
                now,
                &rate,
            );
        }
    }

    /// Whether a PSP decline counts as a failed authentication: a decline code of
    /// `auth_failure_codes` for an agent's own payment; any decline for a payer the agent is
    /// accountable for (a token's redemption: a decline frees the token's use, so a provider
    /// could otherwise test a card without bound through one single-use token).
    pub(super) fn is_auth_failure(
        &self,
        payer: Option<&Payer>,
        decline_code: Option<&str>,
    ) -> bool {
        match payer {
            None => false,
            Some(p) if !p.own => true,
            Some(_) => decline_code.is_some_and(|code| {
                self.controls_config()
                    .auth_failure_codes
                    .iter()
                    .any(|c| c == code)
            }),
        }
    }

    /// Counts a failed authentication of the payer with `credential` (on the card's breaker
    /// and the accountable agent's); opens the breakers past the count and returns their
    /// alerts.
    pub(super) fn record_auth_failure(
        &self,
        payer: Option<&Payer>,
        credential: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Vec<AuditEvent> {
        let Some(b) = self.controls_config().auth_failures else {
            return Vec::new();
        };
        let Some(payer) = payer else {
            return Vec::new();
        };
        let rate = b.rate();
        let mut out = Vec::new();
        let mut s = self.controls.lock();
        let targets = [
            payer.card.clone().map(Tripwire::Card),
            Some(Tripwire::Agent(payer.counted.clone())),
        ];
        for t in targets.into_iter().flatten() {
            let count = bump(&mut s.failures, &t, now, &rate);
            if count > rate.max() && !s.open.contains_key(&t) {
                if s.open.len() >= MAX_KEYS {
                    s.open.clear();
                }
                s.open.insert(t.clone(), now);
                let credential_ref = match &t {
                    Tripwire::Card(_) => Some(credential.clone()),
                    Tripwire::Agent(_) => None,
                };
                out.push(
                    alert_for(
                        payer,
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
                            payer.who,
                            t.scope().as_str()
                        ),
                    )
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
        payer: Option<&Payer>,
        events: &mut Vec<AuditEvent>,
        from: usize,
    ) {
        let Some(payer) = payer else {
            return;
        };
        if !self.controls_config().threshold_alerts {
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
                    alert_for(
                        payer,
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
    /// `agent` holds, and every credential presented by a payer `agent` is accountable for
    /// (its scoped tokens' copies of its cards; see [`accountable_actor`]), effective for the
    /// next payment (the credential reads `suspended`, so the decision blocks it with
    /// `CREDENTIAL_NOT_USABLE`). Asked by an operator or a system; anyone else is
    /// [`EngineError::NotPermitted`]. Durable: the store keeps it ([`Party::Credentials`],
    /// written with its security alert in one change), so every engine over the store, and
    /// this one after a restart, honours it; [`Engine::revoke_credentials`] revokes for good,
    /// in the vault.
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
        let verb = if suspended { "suspended" } else { "resumed" };
        let mut events = vec![Alert::new(
            now,
            AlertKind::CredentialsSuspended { suspended },
            format!("every credential of agent {agent} was {verb} by {by}"),
        )
        .actor(agent)
        .to_event()];
        self.write(
            Write::Suspend {
                party: &Party::Credentials(agent.clone()),
                suspended,
            },
            &mut events,
        )
        .await?;
        self.audit(&events).await
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
        let wire = match target {
            BreakerTarget::Credential(r) => {
                let stored =
                    super::observe::vault("describe", self.ports.vault.describe(r)).await?;
                Tripwire::Card(CardKey::of(&stored))
            }
            BreakerTarget::Agent(a) => Tripwire::Agent(a.clone()),
        };
        {
            let mut s = self.controls.lock();
            s.open.remove(&wire);
            s.failures.remove(&wire);
            // A system payer with no agent above it counts per buyer: its reset resets them all.
            if let BreakerTarget::Agent(a) = target {
                let prefix = format!("system:{a}|buyer:");
                let per_buyer = |t: &Tripwire| matches!(t, Tripwire::Agent(x) if x.as_str().starts_with(&prefix));
                s.open.retain(|t, _| !per_buyer(t));
                s.failures.retain(|t, _| !per_buyer(t));
            }
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
