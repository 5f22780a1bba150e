//! The conformance suite for [`PaymentProvider`] adapters.
//!
//! Every check creates its own payments with fresh keys (`<key_prefix>-<check>-<n>-<op>`, `n`
//! from a process-wide counter), so the suite can run many times against one PSP account; give
//! every run its own [`ProviderFixture::key_prefix`] when the PSP outlives the process.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::domain::{
    AttemptId, BuyerId, CredentialRef, Currency, MerchantId, Money, ProviderKey, ProviderRef,
    ProviderReport, ProviderStatus, SnapshotId,
};
use crate::ports::{
    AuthorizeRequest, CaptureRequest, Lookup, PaymentProvider, ProviderError, RefundRequest,
    VoidRequest,
};

/// What the suite pays with, and for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFixture {
    /// A credential the PSP authorizes.
    pub good: CredentialRef,
    /// A credential the PSP declines.
    pub declining: CredentialRef,
    /// A credential that triggers a buyer action (3-D Secure), if the PSP has one.
    pub three_ds: Option<CredentialRef>,
    /// The amount of every payment; at least 4 minor units (it is split for partial captures
    /// and refunds).
    pub amount: Money,
    /// The merchant of record sent with every authorization.
    pub merchant_id: MerchantId,
    /// The buyer sent with every authorization.
    pub buyer_id: BuyerId,
    /// The snapshot sent with every authorization.
    pub snapshot_id: SnapshotId,
    /// Starts every key and attempt id: unique per run against a PSP that keeps its state,
    /// short (ids are at most 128 bytes), no white space.
    pub key_prefix: String,
}

impl ProviderFixture {
    /// A fixture for [`super::FakePsp::new`] (no vault): `cred_good`, `cred_decline`,
    /// `cred_3ds`, 10.00 in `currency` (10 units for a currency without decimals).
    pub fn for_fake_psp(currency: Currency, key_prefix: impl Into<String>) -> ProviderFixture {
        let id = |s: &str| CredentialRef::new(s).unwrap_or_else(|e| panic!("fixture: {e}"));
        let minor = 10i64.saturating_mul(10i64.pow(currency.exponent()));
        ProviderFixture {
            good: id("cred_good"),
            declining: id("cred_decline"),
            three_ds: Some(id("cred_3ds")),
            amount: Money::from_minor(minor, currency).unwrap_or_else(|e| panic!("fixture: {e}")),
            merchant_id: MerchantId::new("merchant_suite")
                .unwrap_or_else(|e| panic!("fixture: {e}")),
            buyer_id: BuyerId::new("buyer_suite").unwrap_or_else(|e| panic!("fixture: {e}")),
            snapshot_id: SnapshotId::from_bytes([7; 32]),
            key_prefix: key_prefix.into(),
        }
    }
}

/// What the PSP under test supports; a check of an unsupported feature is skipped (or run in
/// its reduced form). `Default` is everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderCapabilities {
    /// The same key with the same request returns the first answer with no second effect; with
    /// other parameters it is refused.
    pub honors_idempotency_keys: bool,
    /// Capture less than authorized.
    pub partial_capture: bool,
    /// Several refunds of one capture.
    pub partial_refunds: bool,
    /// `lookup(Lookup::Key(..))` finds a payment by its authorization key.
    pub lookup_by_key: bool,
    /// Impossible requests (capture after void, refund above the captured amount) are
    /// `Err(Invalid)` and change nothing.
    pub refuses_illegal_transitions: bool,
}

impl Default for ProviderCapabilities {
    fn default() -> ProviderCapabilities {
        ProviderCapabilities {
            honors_idempotency_keys: true,
            partial_capture: true,
            partial_refunds: true,
            lookup_by_key: true,
            refuses_illegal_transitions: true,
        }
    }
}

/// Which checks ran and which were skipped for a missing capability or fixture credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderSuiteReport {
    /// Checks that ran and passed.
    pub passed: Vec<&'static str>,
    /// Checks that were skipped.
    pub skipped: Vec<&'static str>,
}

/// Runs every PSP check; panics naming the first broken rule.
///
/// Checks: `psp_authorize_manual`, `psp_lookup_unknown`, `psp_partial_capture`, `psp_refunds`,
/// `psp_void`, `psp_decline_is_data`, `psp_three_ds`, `psp_idempotent_authorize`,
/// `psp_capture_on_authorize`, `psp_illegal_transitions`. A panic inside the provider fails
/// the suite like a broken rule (I12: adapters never panic).
pub async fn payment_provider_conformance(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    caps: &ProviderCapabilities,
) -> ProviderSuiteReport {
    let mut report = ProviderSuiteReport::default();
    let mut record = |name: &'static str, ran: bool| {
        if ran {
            report.passed.push(name);
        } else {
            report.skipped.push(name);
        }
    };
    record(
        "psp_authorize_manual",
        psp_authorize_manual(psp, fixture, caps).await,
    );
    record(
        "psp_lookup_unknown",
        psp_lookup_unknown(psp, fixture, caps).await,
    );
    record(
        "psp_partial_capture",
        psp_partial_capture(psp, fixture, caps).await,
    );
    record("psp_refunds", psp_refunds(psp, fixture, caps).await);
    record("psp_void", psp_void(psp, fixture, caps).await);
    record(
        "psp_decline_is_data",
        psp_decline_is_data(psp, fixture, caps).await,
    );
    record("psp_three_ds", psp_three_ds(psp, fixture, caps).await);
    record(
        "psp_idempotent_authorize",
        psp_idempotent_authorize(psp, fixture, caps).await,
    );
    record(
        "psp_capture_on_authorize",
        psp_capture_on_authorize(psp, fixture, caps).await,
    );
    record(
        "psp_illegal_transitions",
        psp_illegal_transitions(psp, fixture, caps).await,
    );
    report
}

static RUN: AtomicU64 = AtomicU64::new(1);

/// Fresh keys and ids for one check.
struct Keys {
    base: String,
}

impl Keys {
    fn new(fixture: &ProviderFixture, check: &str) -> Keys {
        let n = RUN.fetch_add(1, Ordering::Relaxed);
        Keys {
            base: format!("{}-{check}-{n}", fixture.key_prefix),
        }
    }

    fn key(&self, op: &str) -> ProviderKey {
        ProviderKey::new(format!("{}-{op}", self.base))
            .unwrap_or_else(|e| panic!("PSP rule fixture.key_prefix: not a valid key: {e}"))
    }

    fn attempt(&self) -> AttemptId {
        AttemptId::new(&self.base)
            .unwrap_or_else(|e| panic!("PSP rule fixture.key_prefix: not a valid id: {e}"))
    }

    fn authorize(
        &self,
        fixture: &ProviderFixture,
        credential: &CredentialRef,
        capture: bool,
    ) -> AuthorizeRequest {
        AuthorizeRequest {
            key: self.key("authorize"),
            attempt_id: self.attempt(),
            amount: fixture.amount,
            credential: credential.clone(),
            capture,
            snapshot_id: fixture.snapshot_id,
            merchant_id: fixture.merchant_id.clone(),
            buyer_id: fixture.buyer_id.clone(),
        }
    }

    fn capture(&self, op: &str, reference: &ProviderRef, amount: Money) -> CaptureRequest {
        CaptureRequest {
            key: self.key(op),
            reference: reference.clone(),
            attempt_id: self.attempt(),
            amount,
        }
    }

    fn void(&self, op: &str, reference: &ProviderRef) -> VoidRequest {
        VoidRequest {
            key: self.key(op),
            reference: reference.clone(),
            attempt_id: self.attempt(),
        }
    }

    fn refund(&self, op: &str, reference: &ProviderRef, amount: Money) -> RefundRequest {
        RefundRequest {
            key: self.key(op),
            reference: reference.clone(),
            attempt_id: self.attempt(),
            amount,
        }
    }
}

fn minor(fixture: &ProviderFixture, units: i64) -> Money {
    Money::from_minor(units, fixture.amount.currency())
        .unwrap_or_else(|e| panic!("PSP rule fixture.amount: {e}"))
}

/// `(half, rest)` of the fixture amount, both above zero.
fn halves(fixture: &ProviderFixture) -> (Money, Money) {
    let total = fixture.amount.minor_units();
    assert!(
        total >= 4,
        "PSP rule fixture.amount: must be at least 4 minor units, got {}",
        fixture.amount
    );
    let half = total / 2;
    (minor(fixture, half), minor(fixture, total - half))
}

fn zero(fixture: &ProviderFixture) -> Money {
    Money::zero(fixture.amount.currency())
}

fn ok<T>(rule: &str, result: Result<T, ProviderError>) -> T {
    result.unwrap_or_else(|e| panic!("PSP rule {rule}: expected an answer, got {e:?}"))
}

/// Checks what every report must satisfy: a reference, amounts in the fixture currency.
fn check_report(rule: &str, fixture: &ProviderFixture, r: &ProviderReport) -> ProviderRef {
    let currency = fixture.amount.currency();
    for (what, m) in [
        ("authorized", r.authorized),
        ("captured", r.captured),
        ("refunded", r.refunded),
    ] {
        assert_eq!(
            m.currency(),
            currency,
            "PSP rule {rule}: {what} must be in the request's currency; report {r:?}"
        );
    }
    r.reference
        .clone()
        .unwrap_or_else(|| panic!("PSP rule {rule}: a report names its reference; got {r:?}"))
}

fn expect_status(rule: &str, r: &ProviderReport, status: ProviderStatus) {
    assert_eq!(r.status, status, "PSP rule {rule}: wrong status in {r:?}");
}

fn expect_amounts(
    rule: &str,
    r: &ProviderReport,
    authorized: Money,
    captured: Money,
    refunded: Money,
) {
    assert_eq!(
        (r.authorized, r.captured, r.refunded),
        (authorized, captured, refunded),
        "PSP rule {rule}: amounts (authorized, captured, refunded) in {r:?}"
    );
}

fn expect_invalid<T: std::fmt::Debug>(rule: &str, result: Result<T, ProviderError>) {
    match result {
        Err(ProviderError::Invalid { .. }) => {}
        other => panic!("PSP rule {rule}: expected Err(Invalid), got {other:?}"),
    }
}

async fn lookup_ref(
    psp: &dyn PaymentProvider,
    rule: &str,
    reference: &ProviderRef,
) -> ProviderReport {
    ok(
        rule,
        psp.lookup(&Lookup::Reference(reference.clone())).await,
    )
    .unwrap_or_else(|| panic!("PSP rule {rule}: lookup must find payment {reference}"))
}

/// Authorizes with `credential` and checks the report is `Authorized` for the full amount.
async fn authorized(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    keys: &Keys,
    rule: &str,
) -> ProviderRef {
    let r = ok(
        rule,
        psp.authorize(&keys.authorize(fixture, &fixture.good, false))
            .await,
    );
    let reference = check_report(rule, fixture, &r);
    expect_status(rule, &r, ProviderStatus::Authorized);
    expect_amounts(rule, &r, fixture.amount, zero(fixture), zero(fixture));
    reference
}

/// A manual-capture authorization is `Authorized` for the amount, with a reference; lookups by
/// reference (and by key) return the same view. Returns whether it ran.
pub async fn psp_authorize_manual(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_authorize_manual";
    let keys = Keys::new(fixture, "auth");
    let request = keys.authorize(fixture, &fixture.good, false);
    let r = ok(rule, psp.authorize(&request).await);
    let reference = check_report(rule, fixture, &r);
    expect_status(rule, &r, ProviderStatus::Authorized);
    expect_amounts(rule, &r, fixture.amount, zero(fixture), zero(fixture));
    assert_eq!(
        r.decline_code, None,
        "PSP rule {rule}: an authorized payment has no decline code"
    );
    let by_ref = lookup_ref(psp, rule, &reference).await;
    assert_eq!(
        by_ref, r,
        "PSP rule {rule}: lookup by reference must equal the authorization"
    );
    if caps.lookup_by_key {
        let by_key = ok(rule, psp.lookup(&Lookup::Key(request.key.clone())).await);
        assert_eq!(
            by_key.as_ref(),
            Some(&r),
            "PSP rule {rule}: lookup by the authorization key must equal the authorization"
        );
        // Sent a moment ago (the wall clock: a real PSP stamps its payments with it).
        let submitted = Lookup::KeySubmitted {
            key: request.key.clone(),
            submitted_at: crate::ports::Clock::now(&crate::ports::SystemClock),
        };
        let by_key = ok(rule, psp.lookup(&submitted).await);
        assert_eq!(
            by_key.as_ref(),
            Some(&r),
            "PSP rule {rule}: lookup by the authorization key and its submission time must \
             equal the authorization"
        );
    }
    true
}

/// Looking up a reference or key the PSP never saw is `Ok(None)`, not an error.
pub async fn psp_lookup_unknown(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_lookup_unknown";
    let keys = Keys::new(fixture, "unknown");
    let reference = ProviderRef::new(format!("pi_{}", keys.base))
        .unwrap_or_else(|e| panic!("PSP rule fixture.key_prefix: {e}"));
    let r = ok(rule, psp.lookup(&Lookup::Reference(reference)).await);
    assert_eq!(r, None, "PSP rule {rule}: an unknown reference is Ok(None)");
    if caps.lookup_by_key {
        let r = ok(rule, psp.lookup(&Lookup::Key(keys.key("authorize"))).await);
        assert_eq!(r, None, "PSP rule {rule}: an unknown key is Ok(None)");
        let submitted = Lookup::KeySubmitted {
            key: keys.key("authorize"),
            submitted_at: crate::ports::Clock::now(&crate::ports::SystemClock),
        };
        let r = ok(rule, psp.lookup(&submitted).await);
        assert_eq!(
            r, None,
            "PSP rule {rule}: an unknown key with its submission time is Ok(None)"
        );
    }
    true
}

/// Capturing part of an authorization reports the captured amount and keeps the authorized
/// one (the whole amount without `partial_capture`).
pub async fn psp_partial_capture(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_partial_capture";
    let keys = Keys::new(fixture, "capture");
    let reference = authorized(psp, fixture, &keys, rule).await;
    let amount = if caps.partial_capture {
        halves(fixture).0
    } else {
        fixture.amount
    };
    let r = ok(
        rule,
        psp.capture(&keys.capture("capture", &reference, amount))
            .await,
    );
    assert_eq!(
        check_report(rule, fixture, &r),
        reference,
        "PSP rule {rule}: the capture reports the same payment"
    );
    expect_status(rule, &r, ProviderStatus::Captured);
    expect_amounts(rule, &r, fixture.amount, amount, zero(fixture));
    let seen = lookup_ref(psp, rule, &reference).await;
    expect_amounts(rule, &seen, fixture.amount, amount, zero(fixture));
    true
}

/// A captured payment is refunded in part then in full (in one refund without
/// `partial_refunds`); the refunded amount adds up.
pub async fn psp_refunds(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_refunds";
    let keys = Keys::new(fixture, "refund");
    let r = ok(
        rule,
        psp.authorize(&keys.authorize(fixture, &fixture.good, true))
            .await,
    );
    let reference = check_report(rule, fixture, &r);
    expect_status(rule, &r, ProviderStatus::Captured);
    let total = fixture.amount;
    if caps.partial_refunds {
        let (first, rest) = halves(fixture);
        let r = ok(
            rule,
            psp.refund(&keys.refund("refund-1", &reference, first))
                .await,
        );
        check_report(rule, fixture, &r);
        expect_amounts(rule, &r, total, total, first);
        let r = ok(
            rule,
            psp.refund(&keys.refund("refund-2", &reference, rest)).await,
        );
        check_report(rule, fixture, &r);
        expect_amounts(rule, &r, total, total, total);
    } else {
        let r = ok(
            rule,
            psp.refund(&keys.refund("refund-1", &reference, total))
                .await,
        );
        check_report(rule, fixture, &r);
        expect_amounts(rule, &r, total, total, total);
    }
    let seen = lookup_ref(psp, rule, &reference).await;
    expect_amounts(rule, &seen, total, total, total);
    true
}

/// Voiding an authorization cancels it.
pub async fn psp_void(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    _caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_void";
    let keys = Keys::new(fixture, "void");
    let reference = authorized(psp, fixture, &keys, rule).await;
    let r = ok(rule, psp.void(&keys.void("void", &reference)).await);
    check_report(rule, fixture, &r);
    expect_status(rule, &r, ProviderStatus::Cancelled);
    assert!(
        r.captured.is_zero(),
        "PSP rule {rule}: nothing is captured after a void: {r:?}"
    );
    let seen = lookup_ref(psp, rule, &reference).await;
    expect_status(rule, &seen, ProviderStatus::Cancelled);
    true
}

/// A decline is data: `Ok` with status `Declined` and a code, nothing captured; never an `Err`.
pub async fn psp_decline_is_data(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    _caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_decline_is_data";
    let keys = Keys::new(fixture, "decline");
    let r = psp
        .authorize(&keys.authorize(fixture, &fixture.declining, false))
        .await
        .unwrap_or_else(|e| panic!("PSP rule {rule}: a decline is an Ok report, not {e:?}"));
    check_report(rule, fixture, &r);
    expect_status(rule, &r, ProviderStatus::Declined);
    assert!(
        r.decline_code.as_deref().is_some_and(|c| !c.is_empty()),
        "PSP rule {rule}: a decline carries the PSP's code: {r:?}"
    );
    assert!(
        r.captured.is_zero(),
        "PSP rule {rule}: nothing is captured on a decline: {r:?}"
    );
    true
}

/// A 3-D Secure credential asks for a buyer action; nothing is captured, and the payment can
/// be voided. Skipped without `fixture.three_ds`.
pub async fn psp_three_ds(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    _caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_three_ds";
    let Some(credential) = &fixture.three_ds else {
        return false;
    };
    let keys = Keys::new(fixture, "3ds");
    let r = ok(
        rule,
        psp.authorize(&keys.authorize(fixture, credential, false))
            .await,
    );
    let reference = check_report(rule, fixture, &r);
    expect_status(rule, &r, ProviderStatus::RequiresAction);
    assert!(
        r.captured.is_zero(),
        "PSP rule {rule}: nothing is captured while the buyer must act: {r:?}"
    );
    let r = ok(rule, psp.void(&keys.void("void", &reference)).await);
    expect_status(rule, &r, ProviderStatus::Cancelled);
    true
}

/// The same key twice gives the same payment and no second one; the same key with another
/// amount is refused; a repeated capture does not capture twice (I3). Skipped without
/// `honors_idempotency_keys`.
pub async fn psp_idempotent_authorize(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_idempotent_authorize";
    if !caps.honors_idempotency_keys {
        return false;
    }
    let keys = Keys::new(fixture, "idem");
    let request = keys.authorize(fixture, &fixture.good, false);
    let first = ok(rule, psp.authorize(&request).await);
    let second = ok(rule, psp.authorize(&request).await);
    let reference = check_report(rule, fixture, &first);
    assert_eq!(
        second.reference.as_ref(),
        Some(&reference),
        "PSP rule {rule}: the same key must return the same payment"
    );
    assert_eq!(
        (first.status.clone(), first.authorized),
        (second.status.clone(), second.authorized),
        "PSP rule {rule}: the same key must return the same answer"
    );
    if caps.lookup_by_key {
        let by_key = ok(rule, psp.lookup(&Lookup::Key(request.key.clone())).await);
        assert_eq!(
            by_key.and_then(|r| r.reference),
            Some(reference.clone()),
            "PSP rule {rule}: the key finds the one payment"
        );
    }
    let mut other = request.clone();
    other.amount = minor(fixture, fixture.amount.minor_units().saturating_sub(1));
    expect_invalid(
        &format!("{rule} (same key, other amount)"),
        psp.authorize(&other).await,
    );
    let capture = keys.capture("capture", &reference, fixture.amount);
    let c1 = ok(rule, psp.capture(&capture).await);
    let c2 = ok(rule, psp.capture(&capture).await);
    assert_eq!(
        c1.captured, c2.captured,
        "PSP rule {rule}: a repeated capture key returns the first answer"
    );
    let seen = lookup_ref(psp, rule, &reference).await;
    expect_amounts(rule, &seen, fixture.amount, fixture.amount, zero(fixture));
    true
}

/// Capturing in the authorization reports `Captured` for the whole amount.
pub async fn psp_capture_on_authorize(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    _caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_capture_on_authorize";
    let keys = Keys::new(fixture, "autocapture");
    let r = ok(
        rule,
        psp.authorize(&keys.authorize(fixture, &fixture.good, true))
            .await,
    );
    check_report(rule, fixture, &r);
    expect_status(rule, &r, ProviderStatus::Captured);
    expect_amounts(rule, &r, fixture.amount, fixture.amount, zero(fixture));
    true
}

/// Impossible requests are `Err(Invalid)` and change nothing: capture or refund of an unknown
/// payment, capture above the authorization, capture after void, void after capture, refund
/// before capture, refunds above the captured amount. Skipped without
/// `refuses_illegal_transitions`.
pub async fn psp_illegal_transitions(
    psp: &dyn PaymentProvider,
    fixture: &ProviderFixture,
    caps: &ProviderCapabilities,
) -> bool {
    let rule = "psp_illegal_transitions";
    if !caps.refuses_illegal_transitions {
        return false;
    }
    let keys = Keys::new(fixture, "illegal");
    let one = minor(fixture, 1);
    let unknown = ProviderRef::new(format!("pi_{}", keys.base))
        .unwrap_or_else(|e| panic!("PSP rule fixture.key_prefix: {e}"));
    expect_invalid(
        &format!("{rule} (capture of an unknown payment)"),
        psp.capture(&keys.capture("cap-unknown", &unknown, one))
            .await,
    );
    expect_invalid(
        &format!("{rule} (refund of an unknown payment)"),
        psp.refund(&keys.refund("ref-unknown", &unknown, one)).await,
    );

    // Authorized: no refund before capture, no capture above the authorization.
    let reference = authorized(psp, fixture, &keys, rule).await;
    let before = lookup_ref(psp, rule, &reference).await;
    expect_invalid(
        &format!("{rule} (refund before capture)"),
        psp.refund(&keys.refund("ref-early", &reference, one)).await,
    );
    let above = fixture
        .amount
        .checked_add(&one)
        .unwrap_or_else(|e| panic!("PSP rule fixture.amount: {e}"));
    expect_invalid(
        &format!("{rule} (capture above the authorization)"),
        psp.capture(&keys.capture("cap-above", &reference, above))
            .await,
    );
    assert_eq!(
        lookup_ref(psp, rule, &reference).await,
        before,
        "PSP rule {rule}: a refused request changes nothing"
    );

    // Voided: no capture after void.
    ok(rule, psp.void(&keys.void("void", &reference)).await);
    let voided = lookup_ref(psp, rule, &reference).await;
    expect_invalid(
        &format!("{rule} (capture after void)"),
        psp.capture(&keys.capture("cap-after-void", &reference, one))
            .await,
    );
    assert_eq!(
        lookup_ref(psp, rule, &reference).await,
        voided,
        "PSP rule {rule}: a refused capture changes nothing"
    );

    // Captured: no void after capture, no refund above the captured amount.
    let keys = Keys::new(fixture, "illegal2");
    let r = ok(
        rule,
        psp.authorize(&keys.authorize(fixture, &fixture.good, true))
            .await,
    );
    let reference = check_report(rule, fixture, &r);
    expect_invalid(
        &format!("{rule} (void after capture)"),
        psp.void(&keys.void("void-after-capture", &reference)).await,
    );
    expect_invalid(
        &format!("{rule} (refund above the captured amount)"),
        psp.refund(&keys.refund("ref-above", &reference, above))
            .await,
    );
    let seen = lookup_ref(psp, rule, &reference).await;
    expect_amounts(rule, &seen, fixture.amount, fixture.amount, zero(fixture));
    expect_status(rule, &seen, ProviderStatus::Captured);
    true
}
