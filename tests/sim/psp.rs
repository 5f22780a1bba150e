//! A PSP model with a ledger of its own, idempotent by key like Stripe, with faults the seed
//! chooses: slow answers (after the engine's lease), effects applied before a gateway error or
//! a lost answer, late processing (within the call's deadline), and `Transient` only when
//! nothing was processed. Its ledger is the truth the invariants compare the store with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use agent_mandate::domain::{
    AttemptId, Currency, Money, ProviderKey, ProviderRef, ProviderReport, ProviderStatus,
};
use agent_mandate::ports::{
    AuthorizeRequest, CaptureRequest, Lookup, PaymentProvider, ProviderError, RefundRequest,
    VoidRequest,
};

use super::exec::{sleep_until, yield_point};
use super::Ctx;

const SECOND: i64 = 1_000_000;

/// What the PSP knows of one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayStatus {
    Authorized,
    Captured,
    Cancelled,
    Declined,
}

#[derive(Debug, Clone)]
pub struct Payment {
    pub reference: ProviderRef,
    pub attempt_id: AttemptId,
    pub currency: Currency,
    pub status: PayStatus,
    pub authorized: i64,
    pub captured: i64,
    pub refunded: i64,
}

impl Payment {
    /// Money the buyer is charged or has reserved now: authorized and not voided, or
    /// captured and not refunded.
    pub fn money(&self) -> i64 {
        match self.status {
            PayStatus::Authorized => self.authorized,
            PayStatus::Captured => self.captured - self.refunded,
            PayStatus::Cancelled | PayStatus::Declined => 0,
        }
    }

    fn report(&self) -> ProviderReport {
        let m = |v: i64| Money::from_minor(v, self.currency).expect("amount");
        ProviderReport {
            reference: Some(self.reference.clone()),
            status: match self.status {
                PayStatus::Authorized => ProviderStatus::Authorized,
                PayStatus::Captured => ProviderStatus::Captured,
                PayStatus::Cancelled => ProviderStatus::Cancelled,
                PayStatus::Declined => ProviderStatus::Declined,
            },
            authorized: m(self.authorized),
            captured: m(self.captured),
            refunded: m(self.refunded),
            decline_code: (self.status == PayStatus::Declined).then(|| "card_declined".into()),
        }
    }
}

#[derive(Debug, Clone)]
enum Effect {
    Authorize(AuthorizeRequest),
    Capture(CaptureRequest),
    Void(VoidRequest),
    Refund(RefundRequest),
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub payments: Vec<Payment>,
    by_auth_key: HashMap<ProviderKey, usize>,
    by_ref: HashMap<ProviderRef, usize>,
    answers: HashMap<ProviderKey, Result<ProviderReport, ProviderError>>,
    /// Effects the PSP will apply later: (instant, key, effect).
    scheduled: Vec<(i64, ProviderKey, Effect)>,
    /// Authorize calls that reached the PSP, per attempt.
    pub calls: u64,
}

impl Ledger {
    fn apply(
        &mut self,
        key: &ProviderKey,
        effect: &Effect,
        decline: bool,
    ) -> Result<ProviderReport, ProviderError> {
        if let Some(a) = self.answers.get(key) {
            return a.clone();
        }
        let invalid = |m: &str| Err(ProviderError::Invalid { message: m.into() });
        let answer = match effect {
            Effect::Authorize(r) => {
                let i = self.payments.len();
                let authorized = r.amount.minor_units();
                let p = Payment {
                    reference: ProviderRef::new(format!("pi_{i:06}")).expect("ref"),
                    attempt_id: r.attempt_id.clone(),
                    currency: r.amount.currency(),
                    status: if decline {
                        PayStatus::Declined
                    } else if r.capture {
                        PayStatus::Captured
                    } else {
                        PayStatus::Authorized
                    },
                    authorized: if decline { 0 } else { authorized },
                    captured: if r.capture && !decline { authorized } else { 0 },
                    refunded: 0,
                };
                let report = p.report();
                self.by_auth_key.insert(key.clone(), i);
                self.by_ref.insert(p.reference.clone(), i);
                self.payments.push(p);
                Ok(report)
            }
            Effect::Capture(r) => match self
                .by_ref
                .get(&r.reference)
                .map(|&i| &mut self.payments[i])
            {
                Some(p)
                    if p.status == PayStatus::Authorized
                        && r.amount.minor_units() <= p.authorized =>
                {
                    p.status = PayStatus::Captured;
                    p.captured = r.amount.minor_units();
                    Ok(p.report())
                }
                Some(_) => invalid("payment cannot be captured"),
                None => invalid("no such payment"),
            },
            Effect::Void(r) => match self
                .by_ref
                .get(&r.reference)
                .map(|&i| &mut self.payments[i])
            {
                Some(p) if p.status == PayStatus::Authorized => {
                    p.status = PayStatus::Cancelled;
                    Ok(p.report())
                }
                Some(_) => invalid("payment cannot be voided"),
                None => invalid("no such payment"),
            },
            Effect::Refund(r) => match self
                .by_ref
                .get(&r.reference)
                .map(|&i| &mut self.payments[i])
            {
                Some(p)
                    if p.status == PayStatus::Captured
                        && p.refunded + r.amount.minor_units() <= p.captured =>
                {
                    p.refunded += r.amount.minor_units();
                    Ok(p.report())
                }
                Some(_) => invalid("refund exceeds the captured amount"),
                None => invalid("no such payment"),
            },
        };
        self.answers.insert(key.clone(), answer.clone());
        answer
    }

    fn known(&self, key: &ProviderKey) -> bool {
        self.answers.contains_key(key) || self.scheduled.iter().any(|(_, k, _)| k == key)
    }

    fn apply_due(&mut self, now: i64) {
        let mut i = 0;
        while i < self.scheduled.len() {
            if self.scheduled[i].0 <= now {
                let (_, key, effect) = self.scheduled.remove(i);
                let _ = self.apply(&key, &effect, false);
            } else {
                i += 1;
            }
        }
    }

    /// Payments per attempt (for I3).
    pub fn payments_of<'a>(
        &'a self,
        attempt: &'a AttemptId,
    ) -> impl Iterator<Item = &'a Payment> + 'a {
        self.payments
            .iter()
            .filter(move |p| &p.attempt_id == attempt)
    }
}

enum Fault {
    None,
    Transient,
    Gateway,
    Drop,
    Slow,
    Late,
}

/// The PSP model.
#[derive(Debug)]
pub struct PspModel {
    ctx: Arc<Ctx>,
    ledger: Mutex<Ledger>,
    /// The engine's lease, the per-call deadline (if declared) and the slowest answer past
    /// the lease, in microseconds.
    lease: i64,
    deadline: Option<i64>,
    slowest: i64,
}

impl PspModel {
    pub fn new(
        ctx: Arc<Ctx>,
        lease: std::time::Duration,
        deadline: Option<std::time::Duration>,
        slowest: std::time::Duration,
    ) -> PspModel {
        PspModel {
            ctx,
            ledger: Mutex::new(Ledger::default()),
            lease: lease.as_micros() as i64,
            deadline: deadline.map(|d| d.as_micros() as i64),
            slowest: slowest.as_micros() as i64,
        }
    }

    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the effects whose time has come.
    pub fn apply_due(&self) {
        let now = self.ctx.now_micros();
        self.ledger().apply_due(now);
    }

    fn pick(&self) -> Fault {
        let f = self.ctx.faults;
        if self.ctx.quiet() {
            return Fault::None;
        }
        let mut rng = self.ctx.rng();
        if rng.chance(60) {
            return Fault::None;
        }
        let on = [
            (f.transient, 0),
            (f.gateway, 1),
            (f.drop, 2),
            (f.slow, 3),
            (f.late, 4),
        ];
        let choices: Vec<u8> = on.iter().filter(|(on, _)| *on).map(|(_, c)| *c).collect();
        if choices.is_empty() {
            return Fault::None;
        }
        match choices[rng.below(choices.len() as u64) as usize] {
            0 => Fault::Transient,
            1 => Fault::Gateway,
            2 => Fault::Drop,
            3 => Fault::Slow,
            _ => Fault::Late,
        }
    }

    async fn call(
        &self,
        point: &'static str,
        key: &ProviderKey,
        effect: Effect,
    ) -> Result<ProviderReport, ProviderError> {
        yield_point(point).await;
        self.apply_due();
        let now = self.ctx.now_micros();
        let decline = !self.ctx.quiet() && self.ctx.rng().chance(3);
        let ambiguous = |m: &str| ProviderError::Ambiguous { message: m.into() };
        match self.pick() {
            Fault::None => self.ledger().apply(key, &effect, decline),
            Fault::Transient => {
                if self.ledger().known(key) {
                    return self.ledger().apply(key, &effect, decline);
                }
                Err(ProviderError::Transient {
                    message: "simulated 503: not processed".into(),
                    retry_after: None,
                })
            }
            Fault::Gateway => {
                let _ = self.ledger().apply(key, &effect, decline);
                if std::env::var_os("SIM_UNSAFE_5XX").is_some() {
                    // The classification this crate used to ship: a 5xx is "not processed".
                    // Only for showing that the simulator catches it; runs with it fail.
                    return Err(ProviderError::Transient {
                        message: "simulated 502 after the effect, classified transient".into(),
                        retry_after: None,
                    });
                }
                Err(ambiguous("simulated 502 after the effect"))
            }
            Fault::Drop => {
                let _ = self.ledger().apply(key, &effect, decline);
                let wait = self.ctx.rng().between(1, 15) as i64 * SECOND;
                sleep_until(&self.ctx.clock, now + wait).await;
                Err(ambiguous("simulated: connection lost, answer dropped"))
            }
            Fault::Slow => {
                // The answer comes after the lease; the effect within the deadline, or any
                // time before the answer when none is declared.
                let (effect_at, answer_at) = {
                    let mut rng = self.ctx.rng();
                    let a =
                        now + self.lease + rng.between(SECOND as u64, self.slowest as u64) as i64;
                    let by = self.deadline.unwrap_or(a - now);
                    (now + rng.below(by as u64) as i64, a)
                };
                self.ledger()
                    .scheduled
                    .push((effect_at, key.clone(), effect.clone()));
                sleep_until(&self.ctx.clock, answer_at).await;
                self.apply_due();
                self.ledger().apply(key, &effect, false)
            }
            Fault::Late => {
                let by = self.deadline.unwrap_or(self.lease + self.slowest);
                let at = now + self.ctx.rng().between(SECOND as u64, by as u64) as i64;
                self.ledger().scheduled.push((at, key.clone(), effect));
                Err(ambiguous(
                    "simulated timeout: the PSP processes the request later",
                ))
            }
        }
    }
}

#[async_trait]
impl PaymentProvider for PspModel {
    fn deadline(&self) -> std::time::Duration {
        super::world::PSP_DEADLINE.unwrap_or(std::time::Duration::from_secs(20))
    }

    async fn authorize(&self, r: &AuthorizeRequest) -> Result<ProviderReport, ProviderError> {
        self.ledger().calls += 1;
        self.call("psp.authorize", &r.key, Effect::Authorize(r.clone()))
            .await
    }
    async fn capture(&self, r: &CaptureRequest) -> Result<ProviderReport, ProviderError> {
        self.call("psp.capture", &r.key, Effect::Capture(r.clone()))
            .await
    }
    async fn void(&self, r: &VoidRequest) -> Result<ProviderReport, ProviderError> {
        self.call("psp.void", &r.key, Effect::Void(r.clone())).await
    }
    async fn refund(&self, r: &RefundRequest) -> Result<ProviderReport, ProviderError> {
        self.call("psp.refund", &r.key, Effect::Refund(r.clone()))
            .await
    }
    async fn lookup(&self, lookup: &Lookup) -> Result<Option<ProviderReport>, ProviderError> {
        yield_point("psp.lookup").await;
        self.apply_due();
        if self.ctx.faults.transient && !self.ctx.quiet() && self.ctx.rng().chance(5) {
            return Err(ProviderError::Transient {
                message: "simulated 503 on lookup".into(),
                retry_after: None,
            });
        }
        let l = self.ledger();
        let i = match lookup {
            Lookup::Reference(r) => l.by_ref.get(r),
            Lookup::Key(k) | Lookup::KeySubmitted { key: k, .. } => l.by_auth_key.get(k),
        };
        Ok(i.map(|&i| l.payments[i].report()))
    }
}
