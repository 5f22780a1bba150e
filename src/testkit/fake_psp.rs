//! A deterministic, fault-injecting fake payment service provider.

use std::collections::VecDeque;

use crate::adapters::memory::hash::FastMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{
    CredentialRef, Currency, Money, ProviderKey, ProviderRef, ProviderReport, ProviderStatus,
};
use crate::ports::{
    AuthorizeRequest, CaptureRequest, Clock, CredentialVault, Lookup, PaymentProvider,
    ProviderError, RefundRequest, SystemClock, VaultError, VoidRequest,
};

/// A fault [`FakePsp`] injects into one call (see [`FakePsp::inject`]).
///
/// | fault | effect at the PSP | the caller gets |
/// |---|---|---|
/// | `Pass` | normal | normal (a placeholder in plans) |
/// | `Decline(code)` | authorize: a declined payment is recorded | `Ok` `Declined` report with `code` (other ops: `Err(Invalid)`, no effect) |
/// | `RequiresAction` | authorize: a payment awaiting the buyer is recorded | `Ok` `RequiresAction` report (other ops: `Err(Invalid)`, no effect) |
/// | `Invalid` | none | `Err(Invalid)` |
/// | `Transient` | none | `Err(Transient)` |
/// | `TimeoutBeforeEffect` | none | `Err(Ambiguous)` (lookup: `Err(Transient)`) |
/// | `TimeoutAfterEffect` | applied | `Err(Ambiguous)` (lookup: `Err(Transient)`) |
/// | `LostResponse` | applied | `Err(Ambiguous)` (lookup: `Err(Transient)`) |
/// | `DuplicateDelivery` | the request is processed twice; the second is deduplicated by its key | the report |
/// | `UnknownStatus(s)` | none | `Ok` report with `ProviderStatus::Unknown(s)` and the payment's current amounts |
///
/// `Decline` and `RequiresAction` decide the outcome of a request that creates a payment; a
/// replay of a key the PSP already answered returns the stored report and consumes the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// No fault: process normally (lets a plan skip a call).
    Pass,
    /// Decline the authorization with this code.
    Decline(String),
    /// Refuse the request as invalid, without effect.
    Invalid,
    /// Fail transiently (503), without effect.
    Transient,
    /// Time out before the PSP processed the request.
    TimeoutBeforeEffect,
    /// Time out after the PSP processed the request.
    TimeoutAfterEffect,
    /// Lose the connection after the PSP processed the request.
    LostResponse,
    /// Deliver the request twice (a proxy retry).
    DuplicateDelivery,
    /// Answer with a status the library does not know, without effect.
    UnknownStatus(String),
    /// Ask for a buyer action (3-D Secure) at authorization.
    RequiresAction,
}

/// A [`PaymentProvider`] operation, to aim faults and count calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`PaymentProvider::authorize`].
    Authorize,
    /// [`PaymentProvider::capture`].
    Capture,
    /// [`PaymentProvider::void`].
    Void,
    /// [`PaymentProvider::refund`].
    Refund,
    /// [`PaymentProvider::lookup`].
    Lookup,
}

/// One effect [`FakePsp`] applied: money authorized, captured, released or refunded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PspEffect {
    /// The operation (`Authorize` also for an authorization completed by
    /// [`FakePsp::complete_buyer_action`]).
    pub op: Op,
    /// The idempotency key of the request that caused it.
    pub key: ProviderKey,
    /// The payment.
    pub reference: ProviderRef,
    /// The amount authorized, captured, released (void) or refunded.
    pub amount: Money,
}

/// What the credential (or a forced fault) makes of an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Approve,
    Decline(String),
    Challenge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    Authorize(AuthorizeRequest),
    Capture(CaptureRequest),
    Void(VoidRequest),
    Refund(RefundRequest),
}

#[derive(Debug)]
struct Payment {
    reference: ProviderRef,
    authorize_key: ProviderKey,
    requested: Money,
    capture: bool,
    status: ProviderStatus,
    authorized: Money,
    captured: Money,
    refunded: Money,
    decline_code: Option<String>,
}

impl Payment {
    fn report(&self) -> ProviderReport {
        ProviderReport {
            reference: Some(self.reference.clone()),
            status: self.status.clone(),
            authorized: self.authorized,
            captured: self.captured,
            refunded: self.refunded,
            decline_code: self.decline_code.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    next_ref: u64,
    payments: Vec<Payment>,
    by_ref: FastMap<ProviderRef, usize>,
    by_auth_key: FastMap<ProviderKey, usize>,
    answered: FastMap<ProviderKey, (Request, ProviderReport)>,
    faults: VecDeque<(Option<Op>, Fault)>,
    calls: FastMap<Op, u32>,
    authorizations: FastMap<ProviderKey, u32>,
    effects: Vec<PspEffect>,
}

impl State {
    /// The stored answer for `key`: `Ok(Some)` for the same request, `Err(Invalid)` for another.
    fn replay(
        &self,
        key: &ProviderKey,
        request: &Request,
    ) -> Result<Option<ProviderReport>, ProviderError> {
        match self.answered.get(key) {
            Some((stored, report)) if stored == request => Ok(Some(report.clone())),
            Some(_) => Err(invalid(format!(
                "idempotency key {key} was already used with different parameters"
            ))),
            None => Ok(None),
        }
    }

    fn payment_mut(&mut self, reference: &ProviderRef) -> Result<&mut Payment, ProviderError> {
        let idx = *self
            .by_ref
            .get(reference)
            .ok_or_else(|| invalid(format!("no such payment: {reference}")))?;
        self.payments
            .get_mut(idx)
            .ok_or_else(|| invalid(format!("no such payment: {reference}")))
    }

    fn find(&self, lookup: &Lookup) -> Option<ProviderReport> {
        let idx = match lookup {
            Lookup::Reference(r) => self.by_ref.get(r),
            Lookup::Key(k) | Lookup::KeySubmitted { key: k, .. } => self.by_auth_key.get(k),
        };
        idx.and_then(|&i| self.payments.get(i)).map(Payment::report)
    }

    fn remember(&mut self, key: &ProviderKey, request: Request, report: &ProviderReport) {
        self.answered.insert(key.clone(), (request, report.clone()));
    }

    fn effect(&mut self, op: Op, key: &ProviderKey, reference: &ProviderRef, amount: Money) {
        if op == Op::Authorize {
            let n = self.authorizations.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
        }
        self.effects.push(PspEffect {
            op,
            key: key.clone(),
            reference: reference.clone(),
            amount,
        });
    }

    fn total(&self, op: Op, currency: Currency) -> i64 {
        self.effects
            .iter()
            .filter(|e| e.op == op && e.amount.currency() == currency)
            .fold(0i64, |acc, e| acc.saturating_add(e.amount.minor_units()))
    }
}

fn invalid(message: impl Into<String>) -> ProviderError {
    ProviderError::Invalid {
        message: message.into(),
    }
}

fn ambiguous(message: &str) -> ProviderError {
    ProviderError::Ambiguous {
        message: message.into(),
    }
}

fn transient(message: &str) -> ProviderError {
    ProviderError::Transient {
        message: message.into(),
        retry_after: None,
    }
}

/// What to do with a call after its fault is known.
enum Plan {
    /// Answer at once, without effect.
    Answer(Result<ProviderReport, ProviderError>),
    /// Process the request.
    Process {
        deliveries: u8,
        ambiguous_after: Option<&'static str>,
        forced: Option<Verdict>,
    },
}

/// A fake PSP: thread-safe, deterministic, and fault-injecting.
///
/// It keeps the PSP's side of the world: payments (`pi_1`, `pi_2`, ...) with their status and
/// amounts, and an idempotency table keyed by [`ProviderKey`] (shared by all operations, like
/// Stripe's): the same key with the same request returns the stored report with no second
/// effect; the same key with a different request is `Err(Invalid)`. Only `Ok` answers are
/// stored; a refused request may be sent again.
///
/// The outcome of an authorization depends on the credential:
///
/// * with a vault ([`FakePsp::with_vault`]), the reference is resolved (unknown or unusable:
///   `Err(Invalid)`) and the secret decides, with Stripe's test tokens: `tok_chargeDeclined` or
///   `pm_card_chargeCustomerFail` declines (`card_declined`), `tok_threeDSecure` or
///   `pm_card_threeDSecure2Required` requires a buyer action, anything else authorizes;
/// * without one, the reference text decides: `cred_decline` declines, `cred_3ds` requires a
///   buyer action, anything else authorizes.
///
/// A declined or challenged authorization still records a payment (with a reference, zero
/// authorized), which lookups find. Capture (in part or in full) only from `Authorized`; void
/// from `Authorized` or `RequiresAction`; refunds from `Captured`, up to the captured amount;
/// anything else is `Err(Invalid)` and changes nothing. Refunds keep the status `Captured`
/// (the amounts tell how much was refunded).
///
/// Faults are queued with [`FakePsp::inject`] or [`FakePsp::set_plan`] and consumed by the
/// next matching call; see [`Fault`] for what each does. Counters ([`FakePsp::calls`],
/// [`FakePsp::authorizations_for`], [`FakePsp::effects`], totals) let tests check I3: one key
/// never causes more than one authorization.
pub struct FakePsp {
    vault: Option<Arc<dyn CredentialVault>>,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl Default for FakePsp {
    fn default() -> FakePsp {
        FakePsp::new()
    }
}

impl fmt::Debug for FakePsp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FakePsp")
            .field("vault", &self.vault.is_some())
            .field("payments", &state.payments.len())
            .field("queued_faults", &state.faults.len())
            .finish()
    }
}

impl FakePsp {
    /// A PSP that decides by the credential reference text (no vault).
    pub fn new() -> FakePsp {
        FakePsp {
            vault: None,
            clock: Arc::new(SystemClock),
            state: Mutex::new(State::default()),
        }
    }

    /// A PSP that resolves credentials through `vault` (at the system clock's time) and
    /// decides by the secret.
    pub fn with_vault(vault: Arc<dyn CredentialVault>) -> FakePsp {
        FakePsp::with_vault_and_clock(vault, Arc::new(SystemClock))
    }

    /// A PSP that resolves credentials through `vault` at `clock`'s time (use a
    /// [`crate::adapters::memory::ManualClock`] for expiry tests).
    pub fn with_vault_and_clock(vault: Arc<dyn CredentialVault>, clock: Arc<dyn Clock>) -> FakePsp {
        FakePsp {
            vault: Some(vault),
            clock,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change under the lock is completed before it is released, so a poisoned
        // lock (a panicking test thread) still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `fault` for the next call of `op` (`None`: the next call of any operation).
    pub fn inject(&self, op: Option<Op>, fault: Fault) {
        self.lock().faults.push_back((op, fault));
    }

    /// Replaces the queue: the n-th next call (of any operation) gets the n-th fault; use
    /// [`Fault::Pass`] for a call that should go through.
    pub fn set_plan(&self, plan: Vec<Fault>) {
        self.lock().faults = plan.into_iter().map(|f| (None, f)).collect();
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many faults are still queued.
    pub fn queued_faults(&self) -> usize {
        self.lock().faults.len()
    }

    /// How many calls of `op` the PSP received (a duplicated delivery counts once).
    pub fn calls(&self, op: Op) -> u32 {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// How many authorizations (money authorized) requests with `key` caused: the PSP side of
    /// I3, never more than 1.
    pub fn authorizations_for(&self, key: &ProviderKey) -> u32 {
        self.lock().authorizations.get(key).copied().unwrap_or(0)
    }

    /// Every effect, in order.
    pub fn effects(&self) -> Vec<PspEffect> {
        self.lock().effects.clone()
    }

    /// Sum of the amounts ever authorized in `currency`, in minor units (voids do not
    /// subtract).
    pub fn total_authorized(&self, currency: Currency) -> i64 {
        self.lock().total(Op::Authorize, currency)
    }

    /// Sum of the amounts captured in `currency`, in minor units.
    pub fn total_captured(&self, currency: Currency) -> i64 {
        self.lock().total(Op::Capture, currency)
    }

    /// Sum of the amounts refunded in `currency`, in minor units.
    pub fn total_refunded(&self, currency: Currency) -> i64 {
        self.lock().total(Op::Refund, currency)
    }

    /// The PSP's current view of a payment.
    pub fn payment(&self, reference: &ProviderRef) -> Option<ProviderReport> {
        self.lock().find(&Lookup::Reference(reference.clone()))
    }

    /// Every payment, in order of creation.
    pub fn payments(&self) -> Vec<ProviderReport> {
        self.lock().payments.iter().map(Payment::report).collect()
    }

    /// Simulates the buyer completing (`approved`) or failing a 3-D Secure challenge on a
    /// payment in `RequiresAction`: it becomes `Authorized` (or `Captured`, if its
    /// authorization asked to capture) or `Declined` (`authentication_failed`). Returns the
    /// new view, or `None` if there is no such payment awaiting the buyer.
    pub fn complete_buyer_action(
        &self,
        reference: &ProviderRef,
        approved: bool,
    ) -> Option<ProviderReport> {
        let mut state = self.lock();
        let p = state.payment_mut(reference).ok()?;
        if p.status != ProviderStatus::RequiresAction {
            return None;
        }
        if !approved {
            p.status = ProviderStatus::Declined;
            p.decline_code = Some("authentication_failed".into());
            return Some(p.report());
        }
        p.authorized = p.requested;
        if p.capture {
            p.status = ProviderStatus::Captured;
            p.captured = p.requested;
        } else {
            p.status = ProviderStatus::Authorized;
        }
        let (report, key, amount, capture) =
            (p.report(), p.authorize_key.clone(), p.requested, p.capture);
        state.effect(Op::Authorize, &key, reference, amount);
        if capture {
            state.effect(Op::Capture, &key, reference, amount);
        }
        Some(report)
    }

    /// Counts the call and takes the first queued fault aimed at `op`.
    fn begin(&self, op: Op) -> Option<Fault> {
        let mut state = self.lock();
        let n = state.calls.entry(op).or_insert(0);
        *n = n.saturating_add(1);
        let i = state
            .faults
            .iter()
            .position(|(target, _)| target.is_none_or(|t| t == op))?;
        state.faults.remove(i).map(|(_, f)| f)
    }

    /// What `fault` means for a mutating call; `unknown` builds the report of an unknown status.
    fn plan(
        op: Op,
        fault: Option<Fault>,
        unknown: impl FnOnce(String) -> Result<ProviderReport, ProviderError>,
    ) -> Plan {
        let process = |deliveries, ambiguous_after, forced| Plan::Process {
            deliveries,
            ambiguous_after,
            forced,
        };
        match fault {
            None | Some(Fault::Pass) => process(1, None, None),
            Some(Fault::DuplicateDelivery) => process(2, None, None),
            Some(Fault::TimeoutAfterEffect) => process(
                1,
                Some("timed out after the PSP processed the request"),
                None,
            ),
            Some(Fault::LostResponse) => {
                process(1, Some("connection lost before the response arrived"), None)
            }
            Some(Fault::Decline(code)) if op == Op::Authorize => {
                process(1, None, Some(Verdict::Decline(code)))
            }
            Some(Fault::RequiresAction) if op == Op::Authorize => {
                process(1, None, Some(Verdict::Challenge))
            }
            Some(Fault::Decline(_) | Fault::RequiresAction | Fault::Invalid) => {
                Plan::Answer(Err(invalid("injected fault: request refused")))
            }
            Some(Fault::Transient) => Plan::Answer(Err(transient("injected fault: 503"))),
            Some(Fault::TimeoutBeforeEffect) => Plan::Answer(Err(ambiguous(
                "timed out before the PSP processed the request",
            ))),
            Some(Fault::UnknownStatus(s)) => Plan::Answer(unknown(s)),
        }
    }

    /// Runs a mutating call without vault access (capture, void, refund).
    fn mutate(
        &self,
        op: Op,
        reference: &ProviderRef,
        apply: impl Fn(&mut State) -> Result<ProviderReport, ProviderError>,
    ) -> Result<ProviderReport, ProviderError> {
        let fault = self.begin(op);
        let unknown = |s: String| {
            let mut report = self
                .lock()
                .find(&Lookup::Reference(reference.clone()))
                .ok_or_else(|| invalid(format!("no such payment: {reference}")))?;
            report.status = ProviderStatus::Unknown(s);
            Ok(report)
        };
        match FakePsp::plan(op, fault, unknown) {
            Plan::Answer(answer) => answer,
            Plan::Process {
                deliveries,
                ambiguous_after,
                forced: _,
            } => {
                let mut result = apply(&mut self.lock());
                for _ in 1..deliveries {
                    result = apply(&mut self.lock());
                }
                match ambiguous_after {
                    Some(message) => Err(ambiguous(message)),
                    None => result,
                }
            }
        }
    }

    /// Decides an authorization by its credential.
    async fn verdict(&self, credential: &CredentialRef) -> Result<Verdict, ProviderError> {
        let Some(vault) = &self.vault else {
            return Ok(match credential.as_str() {
                "cred_decline" => Verdict::Decline("card_declined".into()),
                "cred_3ds" => Verdict::Challenge,
                _ => Verdict::Approve,
            });
        };
        let resolved = vault
            .resolve(credential, self.clock.now())
            .await
            .map_err(|e| match e {
                VaultError::NotFound { .. }
                | VaultError::NotUsable { .. }
                | VaultError::Invalid { .. }
                | VaultError::IdempotencyConflict { .. }
                | VaultError::KeyUnavailable { .. }
                | VaultError::Integrity { .. }
                | VaultError::Corrupt { .. }
                | VaultError::Other(_) => invalid(format!("credential refused: {e}")),
                VaultError::Unavailable { .. } => transient("credential vault unavailable"),
            })?;
        Ok(match resolved.secret.expose() {
            "tok_chargeDeclined" | "pm_card_chargeCustomerFail" => {
                Verdict::Decline("card_declined".into())
            }
            "tok_threeDSecure" | "pm_card_threeDSecure2Required" => Verdict::Challenge,
            _ => Verdict::Approve,
        })
    }

    /// One delivery of an authorization.
    async fn deliver_authorize(
        &self,
        req: &AuthorizeRequest,
        forced: Option<Verdict>,
    ) -> Result<ProviderReport, ProviderError> {
        let request = Request::Authorize(req.clone());
        if let Some(report) = self.lock().replay(&req.key, &request)? {
            return Ok(report);
        }
        if req.amount.is_zero() {
            return Err(invalid("the amount must be above zero"));
        }
        let verdict = match forced {
            Some(v) => v,
            None => self.verdict(&req.credential).await?,
        };
        let mut state = self.lock();
        // Checked again: a concurrent request with the same key may have won the race.
        if let Some(report) = state.replay(&req.key, &request)? {
            return Ok(report);
        }
        state.next_ref = state.next_ref.saturating_add(1);
        let reference = ProviderRef::new(format!("pi_{}", state.next_ref))
            .map_err(|e| invalid(format!("cannot name the payment: {e}")))?;
        let zero = Money::zero(req.amount.currency());
        let mut payment = Payment {
            reference: reference.clone(),
            authorize_key: req.key.clone(),
            requested: req.amount,
            capture: req.capture,
            status: ProviderStatus::Authorized,
            authorized: zero,
            captured: zero,
            refunded: zero,
            decline_code: None,
        };
        match verdict {
            Verdict::Approve => {
                payment.authorized = req.amount;
                if req.capture {
                    payment.status = ProviderStatus::Captured;
                    payment.captured = req.amount;
                }
            }
            Verdict::Decline(code) => {
                payment.status = ProviderStatus::Declined;
                payment.decline_code = Some(code);
            }
            Verdict::Challenge => payment.status = ProviderStatus::RequiresAction,
        }
        let report = payment.report();
        if !payment.authorized.is_zero() {
            state.effect(Op::Authorize, &req.key, &reference, req.amount);
        }
        if !payment.captured.is_zero() {
            state.effect(Op::Capture, &req.key, &reference, req.amount);
        }
        let idx = state.payments.len();
        state.payments.push(payment);
        state.by_ref.insert(reference, idx);
        state.by_auth_key.insert(req.key.clone(), idx);
        state.remember(&req.key, request, &report);
        Ok(report)
    }
}

fn capture_once(state: &mut State, req: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
    let request = Request::Capture(req.clone());
    if let Some(report) = state.replay(&req.key, &request)? {
        return Ok(report);
    }
    let p = state.payment_mut(&req.reference)?;
    if p.status != ProviderStatus::Authorized {
        return Err(invalid(format!(
            "cannot capture a payment in status {:?}",
            p.status
        )));
    }
    if req.amount.is_zero() || req.amount.currency() != p.authorized.currency() {
        return Err(invalid(
            "the capture amount must be above zero, in the payment's currency",
        ));
    }
    if req.amount.exceeds(&p.authorized) {
        return Err(invalid("the capture amount exceeds the authorized amount"));
    }
    p.status = ProviderStatus::Captured;
    p.captured = req.amount;
    let report = p.report();
    state.effect(Op::Capture, &req.key, &req.reference, req.amount);
    state.remember(&req.key, request, &report);
    Ok(report)
}

fn void_once(state: &mut State, req: &VoidRequest) -> Result<ProviderReport, ProviderError> {
    let request = Request::Void(req.clone());
    if let Some(report) = state.replay(&req.key, &request)? {
        return Ok(report);
    }
    let p = state.payment_mut(&req.reference)?;
    match p.status {
        ProviderStatus::Authorized | ProviderStatus::RequiresAction => {}
        ProviderStatus::Captured
        | ProviderStatus::Declined
        | ProviderStatus::Cancelled
        | ProviderStatus::NotFound
        | ProviderStatus::Unknown(_) => {
            return Err(invalid(format!(
                "cannot void a payment in status {:?}",
                p.status
            )))
        }
    }
    p.status = ProviderStatus::Cancelled;
    let (report, released) = (p.report(), p.authorized);
    state.effect(Op::Void, &req.key, &req.reference, released);
    state.remember(&req.key, request, &report);
    Ok(report)
}

fn refund_once(state: &mut State, req: &RefundRequest) -> Result<ProviderReport, ProviderError> {
    let request = Request::Refund(req.clone());
    if let Some(report) = state.replay(&req.key, &request)? {
        return Ok(report);
    }
    let p = state.payment_mut(&req.reference)?;
    if p.status != ProviderStatus::Captured {
        return Err(invalid(format!(
            "cannot refund a payment in status {:?}",
            p.status
        )));
    }
    if req.amount.is_zero() {
        return Err(invalid("the refund amount must be above zero"));
    }
    let total = p
        .refunded
        .checked_add(&req.amount)
        .map_err(|e| invalid(format!("bad refund amount: {e}")))?;
    if total.exceeds(&p.captured) {
        return Err(invalid("refunds would exceed the captured amount"));
    }
    p.refunded = total;
    let report = p.report();
    state.effect(Op::Refund, &req.key, &req.reference, req.amount);
    state.remember(&req.key, request, &report);
    Ok(report)
}

/// The deadline the fake PSP declares: it answers at once, so any short time is honest.
pub const FAKE_PSP_DEADLINE: Duration = Duration::from_secs(10);

#[async_trait]
impl PaymentProvider for FakePsp {
    fn deadline(&self) -> Duration {
        FAKE_PSP_DEADLINE
    }

    async fn authorize(&self, request: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        let fault = self.begin(Op::Authorize);
        let unknown = |s: String| {
            let zero = Money::zero(request.amount.currency());
            let mut report = self
                .lock()
                .find(&Lookup::Key(request.key.clone()))
                .unwrap_or(ProviderReport {
                    reference: None,
                    status: ProviderStatus::NotFound,
                    authorized: zero,
                    captured: zero,
                    refunded: zero,
                    decline_code: None,
                });
            report.status = ProviderStatus::Unknown(s);
            Ok(report)
        };
        match FakePsp::plan(Op::Authorize, fault, unknown) {
            Plan::Answer(answer) => answer,
            Plan::Process {
                deliveries,
                ambiguous_after,
                forced,
            } => {
                let mut result = self.deliver_authorize(request, forced.clone()).await;
                for _ in 1..deliveries {
                    result = self.deliver_authorize(request, forced.clone()).await;
                }
                match ambiguous_after {
                    Some(message) => Err(ambiguous(message)),
                    None => result,
                }
            }
        }
    }

    async fn capture(&self, request: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        self.mutate(Op::Capture, &request.reference, |s| {
            capture_once(s, request)
        })
    }

    async fn void(&self, request: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        self.mutate(Op::Void, &request.reference, |s| void_once(s, request))
    }

    async fn refund(&self, request: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        self.mutate(Op::Refund, &request.reference, |s| refund_once(s, request))
    }

    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        let fault = self.begin(Op::Lookup);
        match fault {
            None | Some(Fault::Pass) | Some(Fault::DuplicateDelivery) => {
                Ok(self.lock().find(lookup))
            }
            Some(Fault::UnknownStatus(s)) => Ok(self.lock().find(lookup).map(|mut r| {
                r.status = ProviderStatus::Unknown(s);
                r
            })),
            Some(Fault::Transient) => Err(transient("injected fault: 503")),
            Some(Fault::TimeoutBeforeEffect | Fault::TimeoutAfterEffect | Fault::LostResponse) => {
                Err(transient("injected fault: the lookup timed out"))
            }
            Some(Fault::Invalid | Fault::Decline(_) | Fault::RequiresAction) => {
                Err(invalid("injected fault: request refused"))
            }
        }
    }
}
