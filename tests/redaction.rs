//! I10: no raw credential appears in Debug or Display output, serialized values, errors or the
//! audit trail.
//!
//! A property test stores random secrets (`SECRET-` and 12 to 40 characters from an alphabet
//! with no hex digit a-f, so a secret cannot match an id, a hash or an amount by accident) and
//! random CVCs in the vault through the engine, runs payments whose authorizations the fake
//! PSP resolves through the vault (authorize, capture, partial and full refunds, capture on
//! authorization, an injected decline, a timeout then reconcile and void, a transient failure
//! then retry, a 3-D Secure challenge, an order) and the error paths (a malformed display, an
//! empty CVC, an unknown credential reference, a revoked credential, every credential of the
//! actor revoked, direct PSP and vault calls with unusable references). Then no value returned
//! (its `Debug`, `Display` where it has one, its JSON where it serializes), no audit event, no
//! dispute package, no `Debug` of the vault, the store, the engine or the PSP, and nothing the
//! engine traces (every span, field and event, captured at TRACE level by a `tracing-subscriber`
//! fmt layer writing into a buffer) contains a secret or a CVC.
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::fmt::{Debug, Display};

use agent_mandate::domain::examples;
use agent_mandate::domain::{
    AttemptId, AttemptStatus, BlockerCode, CredentialRef, Currency, Money, PaymentAttempt,
};
use agent_mandate::engine::{
    CapturePayment, CommitOrder, EngineConfig, EngineError, Evaluate, ExecutePayment, OrderOutcome,
    PaymentOutcome, RefundPayment, VoidPayment,
};
use agent_mandate::ports::{
    AuditSink as _, AuthorizeRequest, Clock as _, CredentialDisplay, CredentialKind,
    CredentialVault as _, FundingType, Lookup, NewCredential, PaymentProvider as _, ProviderError,
    ResolvedCredential, Secret, StoredCredential, VaultError,
};
use agent_mandate::testkit::{Fault, Op};
use common::engine::{backpack_spec, key, world_with, World};
use proptest::prelude::*;
use serde::Serialize;

/// Every text a value can show, checked against every secret.
struct Watch {
    needles: Vec<(&'static str, String)>,
    leaks: Vec<String>,
    checked: usize,
}

impl Watch {
    fn new(needles: Vec<(&'static str, String)>) -> Watch {
        Watch {
            needles,
            leaks: Vec::new(),
            checked: 0,
        }
    }

    fn text(&mut self, label: &str, text: &str) {
        self.checked += 1;
        for (name, needle) in &self.needles {
            if text.contains(needle.as_str()) {
                self.leaks.push(format!("{name} in {label}: {text}"));
            }
        }
    }

    fn debug(&mut self, label: &str, value: &impl Debug) {
        self.text(&format!("{label} (Debug)"), &format!("{value:?}"));
        self.text(
            &format!("{label} (Debug, alternate)"),
            &format!("{value:#?}"),
        );
    }

    fn display(&mut self, label: &str, value: &impl Display) {
        self.text(&format!("{label} (Display)"), &format!("{value}"));
    }

    fn json(&mut self, label: &str, value: &impl Serialize) {
        let json = serde_json::to_string(value).expect("serializes");
        self.text(&format!("{label} (JSON)"), &json);
    }

    /// Debug and JSON.
    fn data(&mut self, label: &str, value: &(impl Debug + Serialize)) {
        self.debug(label, value);
        self.json(label, value);
    }

    fn error(&mut self, label: &str, e: &(impl Debug + Display)) {
        self.debug(label, e);
        self.display(label, e);
    }

    /// A payment command's outcome: itself, its attempt and its decision.
    fn outcome(&mut self, label: &str, out: &PaymentOutcome) {
        self.debug(label, out);
        if let Some(a) = out.attempt() {
            self.data(&format!("{label}: attempt"), a);
        }
        if let Some(d) = out.decision() {
            self.data(&format!("{label}: decision"), d);
            self.display(&format!("{label}: decision"), d);
        }
    }

    fn result(&mut self, label: &str, r: &Result<PaymentOutcome, EngineError>) {
        match r {
            Ok(out) => self.outcome(label, out),
            Err(e) => self.error(label, e),
        }
    }
}

/// The engine's trace, as a `tracing-subscriber` fmt layer writes it at TRACE level: every
/// event, and every span when it opens and when it closes (with the fields recorded on it).
#[derive(Clone, Default)]
struct Trace(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Trace {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("trace buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Trace {
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync + use<> {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_span_events(
                tracing_subscriber::fmt::format::FmtSpan::NEW
                    | tracing_subscriber::fmt::format::FmtSpan::CLOSE,
            )
            .with_writer(move || writer.clone())
            .finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("trace buffer")).into_owned()
    }
}

#[derive(Debug, Clone)]
struct Input {
    secret: String,
    cvc: String,
    other_secret: String,
    kind: CredentialKind,
    display: CredentialDisplay,
    refund_first: i64,
}

/// Letters and digits with no hex digit a-f and no look-alikes: a secret never matches a
/// hash, an id or an amount.
const BODY: &str = "[G-HJ-NP-Z][G-HJ-NP-Zg-km-z2-9]{11,39}";

fn inputs() -> impl Strategy<Value = Input> {
    let kind = prop_oneof![
        Just(CredentialKind::NetworkToken),
        Just(CredentialKind::SharedPaymentToken),
        Just(CredentialKind::VirtualCard),
        Just(CredentialKind::PaymentMethod),
    ];
    let funding = prop_oneof![
        Just(FundingType::Credit),
        Just(FundingType::Debit),
        Just(FundingType::Prepaid),
        Just(FundingType::Unknown),
    ];
    let display = (
        prop_oneof![Just("visa"), Just("mastercard"), Just("amex"), Just("cb")],
        "[0-9]{4}",
        1u8..=12,
        2030u16..=2199,
        funding,
    )
        .prop_map(
            |(brand, last4, exp_month, exp_year, funding)| CredentialDisplay {
                brand: brand.into(),
                last4,
                exp_month,
                exp_year,
                funding,
            },
        );
    (
        BODY,
        "[0-9]{3,4}",
        "[G-HJ-NP-Zg-km-z]{8}",
        BODY,
        kind,
        display,
        1i64..=14_300,
    )
        .prop_map(
            |(body, digits, tag, other, kind, display, refund_first)| Input {
                secret: format!("SECRET-{body}"),
                cvc: format!("CVC{digits}{tag}"),
                other_secret: format!("SECRET-{other}"),
                kind,
                display,
                refund_first,
            },
        )
}

fn cases() -> u32 {
    std::env::var("REDACTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn new_credential(input: &Input, secret: &str) -> NewCredential {
    NewCredential {
        kind: input.kind,
        owner: examples::agent().id,
        buyer_id: examples::buyer(),
        secret: Secret::new(secret),
        cvc: Some(Secret::new(input.cvc.clone())),
        display: input.display.clone(),
    }
}

fn eur_minor(minor: i64) -> Money {
    Money::from_minor(minor, Currency::EUR).expect("amount")
}

fn attempt_of(label: &str, out: &PaymentOutcome, status: AttemptStatus) -> PaymentAttempt {
    match out.attempt() {
        Some(a) if a.status == status => a.clone(),
        _ => panic!("{label}: expected {status}, got {out:?}"),
    }
}

struct Case<'a> {
    w: &'a World,
    watch: Watch,
    attempts: Vec<AttemptId>,
}

impl Case<'_> {
    fn command(&self, k: &str, credential: &CredentialRef, capture: bool) -> ExecutePayment {
        let mut cmd = self.w.execute(k);
        cmd.credential = credential.clone();
        cmd.capture = capture;
        cmd
    }

    /// Executes, watches the result, and returns the attempt in `status`.
    async fn pay(&mut self, cmd: &ExecutePayment, status: AttemptStatus) -> PaymentAttempt {
        let label = format!("execute {}", cmd.key);
        let out = self.w.engine.execute_payment(&agent_p(), cmd).await;
        self.watch.result(&label, &out);
        let out = out.unwrap_or_else(|e| panic!("{label}: {e}"));
        let a = attempt_of(&label, &out, status);
        self.attempts.push(a.id.clone());
        a
    }

    /// Executes a command that must be refused as not usable.
    async fn refused(&mut self, cmd: &ExecutePayment) {
        let label = format!("execute {}", cmd.key);
        let out = self.w.engine.execute_payment(&agent_p(), cmd).await;
        self.watch.result(&label, &out);
        match out {
            Ok(PaymentOutcome::Refused(d)) => {
                assert!(d.has(BlockerCode::CredentialNotUsable), "{label}: {d:?}")
            }
            other => panic!("{label}: {other:?}"),
        }
    }

    async fn capture(&mut self, a: &PaymentAttempt) -> PaymentAttempt {
        let out = self
            .w
            .engine
            .capture(
                &agent_p(),
                &CapturePayment::new(key(&format!("capture-{}", a.id)), a.id.clone()),
            )
            .await;
        self.watch.result("capture", &out);
        attempt_of("capture", &out.expect("capture"), AttemptStatus::Captured)
    }

    async fn refund(
        &mut self,
        a: &PaymentAttempt,
        n: u32,
        amount: Option<Money>,
        status: AttemptStatus,
    ) -> PaymentAttempt {
        let out = self
            .w
            .engine
            .refund(
                &agent_p(),
                &RefundPayment::new(key(&format!("refund-{}-{n}", a.id)), a.id.clone())
                    .with_amount(amount),
            )
            .await;
        self.watch.result("refund", &out);
        attempt_of("refund", &out.expect("refund"), status)
    }

    async fn void(&mut self, a: &PaymentAttempt) -> PaymentAttempt {
        let out = self
            .w
            .engine
            .void(
                &agent_p(),
                &VoidPayment::new(key(&format!("void-{}", a.id)), a.id.clone()),
            )
            .await;
        self.watch.result("void", &out);
        attempt_of("void", &out.expect("void"), AttemptStatus::Cancelled)
    }
}

async fn run_case(input: &Input) -> Watch {
    let config = EngineConfig::default()
        .with_auto_suspend_after(None)
        .expect("config");
    let w = world_with(config, backpack_spec(true)).await;
    let mut case = Case {
        w: &w,
        watch: Watch::new(vec![
            ("secret", input.secret.clone()),
            ("secret body", input.secret["SECRET-".len()..].to_owned()),
            ("cvc", input.cvc.clone()),
            ("cvc tag", input.cvc[input.cvc.len() - 8..].to_owned()),
            ("other secret", input.other_secret.clone()),
            (
                "other secret body",
                input.other_secret["SECRET-".len()..].to_owned(),
            ),
        ]),
        attempts: Vec::new(),
    };
    let engine = &w.engine;
    let now = w.mem.clock.now();

    // Store: the input, the stored public part, and the malformed ones.
    let new = new_credential(input, &input.secret);
    case.watch.debug("new credential", &new);
    let stored: StoredCredential = engine
        .store_credential(&buyer_p(), &key("card-input"), new)
        .await
        .expect("stored")
        .value;
    case.watch.data("stored credential", &stored);
    let mut bad = new_credential(input, &input.other_secret);
    bad.display.last4 = "42x4".into();
    let err = engine
        .store_credential(&buyer_p(), &key("card-bad-last4"), bad)
        .await
        .expect_err("bad last4");
    assert!(
        matches!(
            err,
            EngineError::Vault(VaultError::Invalid {
                field: "display.last4"
            })
        ),
        "{err:?}"
    );
    case.watch.error("invalid display", &err);
    let mut bad = new_credential(input, &input.other_secret);
    bad.cvc = Some(Secret::new(""));
    let err = engine
        .store_credential(&buyer_p(), &key("card-empty-cvc"), bad)
        .await
        .expect_err("empty cvc");
    assert!(
        matches!(
            err,
            EngineError::Vault(VaultError::Invalid { field: "cvc" })
        ),
        "{err:?}"
    );
    case.watch.error("empty cvc", &err);

    // The vault resolves for the PSP only; what it hands out redacts itself.
    let resolved: ResolvedCredential = w
        .mem
        .vault
        .resolve(&stored.reference, now)
        .await
        .expect("resolve");
    assert_eq!(resolved.secret.expose(), input.secret);
    case.watch.debug("resolved credential", &resolved);
    case.watch.display("resolved secret", &resolved.secret);
    case.watch.debug(
        "credential status",
        &w.mem.vault.status(&stored.reference, now).await,
    );

    // Dry run.
    let cmd = case.command("eval", &stored.reference, false);
    let decision = engine
        .evaluate(
            &agent_p(),
            &Evaluate::new(
                cmd.request.clone(),
                cmd.snapshot.clone(),
                cmd.checkout.clone(),
            )
            .with_credential(stored.reference.clone()),
        )
        .await
        .expect("evaluate");
    assert!(decision.is_allowed(), "{decision:?}");
    case.watch.data("evaluate", &decision);
    case.watch.display("evaluate", &decision);

    // Authorize, capture, refund in part, refund the rest.
    let a = case
        .pay(
            &case.command("pay-1", &stored.reference, false),
            AttemptStatus::Authorized,
        )
        .await;
    let a = case.capture(&a).await;
    let part = eur_minor(input.refund_first.min(a.captured.minor_units() - 1));
    let a = case
        .refund(&a, 1, Some(part), AttemptStatus::PartiallyRefunded)
        .await;
    case.refund(&a, 2, None, AttemptStatus::Refunded).await;

    // Capture on authorization, then an order for it.
    let b = case
        .pay(
            &case.command("pay-2", &stored.reference, true),
            AttemptStatus::Captured,
        )
        .await;
    let order = engine
        .commit_order(
            &agent_p(),
            &CommitOrder::new(
                key("order-2"),
                b.id.clone(),
                examples::valid_checkout(w.snapshot.id()),
            ),
        )
        .await;
    case.watch.debug("commit order", &order);
    match order.expect("order") {
        OrderOutcome::Committed { order, decision } => {
            case.watch.data("order", &order);
            case.watch.data("order decision", &decision);
        }
        other => panic!("{other:?}"),
    }

    // A decline.
    w.psp
        .inject(Some(Op::Authorize), Fault::Decline("card_declined".into()));
    case.pay(
        &case.command("pay-3", &stored.reference, false),
        AttemptStatus::Failed,
    )
    .await;

    // A timeout after the effect, reconciled, then voided.
    w.psp.inject(Some(Op::Authorize), Fault::TimeoutAfterEffect);
    let d = case
        .pay(
            &case.command("pay-4", &stored.reference, false),
            AttemptStatus::Ambiguous,
        )
        .await;
    let d = engine.reconcile(&d.id).await;
    case.watch.debug("reconcile", &d);
    let d = d.expect("reconcile");
    assert_eq!(d.status, AttemptStatus::Authorized);
    case.void(&d).await;

    // A transient failure, then the retry with the same key.
    w.psp.inject(Some(Op::Authorize), Fault::Transient);
    let cmd = case.command("pay-5", &stored.reference, false);
    let err = engine
        .execute_payment(&payer(&cmd), &cmd)
        .await
        .expect_err("transient");
    assert!(err.is_retryable(), "{err:?}");
    case.watch.error("transient", &err);
    case.pay(&cmd, AttemptStatus::Authorized).await;

    // A 3-D Secure challenge.
    w.psp.inject(Some(Op::Authorize), Fault::RequiresAction);
    case.pay(
        &case.command("pay-6", &stored.reference, false),
        AttemptStatus::RequiresBuyerAction,
    )
    .await;

    // An unknown credential reference.
    let unknown: CredentialRef = "cred_999999".parse().expect("ref");
    case.refused(&case.command("pay-7", &unknown, false)).await;

    // A revoked credential (alone), then every credential of the actor.
    let other = engine
        .store_credential(
            &buyer_p(),
            &key("card-other"),
            new_credential(input, &input.other_secret),
        )
        .await
        .expect("stored")
        .value;
    case.watch.data("other credential", &other);
    assert!(w.mem.vault.revoke(&other.reference).await.expect("revoke"));
    case.refused(&case.command("pay-8", &other.reference, false))
        .await;
    let err = w
        .mem
        .vault
        .resolve(&other.reference, now)
        .await
        .expect_err("revoked");
    case.watch.error("resolve revoked", &err);
    let count = engine
        .revoke_credentials(&operator_p(), &examples::agent().id)
        .await
        .expect("revoke all");
    assert!(count >= 1);
    case.refused(&case.command("pay-9", &stored.reference, false))
        .await;

    // The PSP itself, asked with unusable references (the engine would not send them).
    for (label, credential) in [("revoked", &other.reference), ("unknown", &unknown)] {
        let r = w
            .psp
            .authorize(&AuthorizeRequest {
                key: format!("direct-{label}").parse().expect("key"),
                attempt_id: format!("att_direct_{label}").parse().expect("id"),
                amount: w.snapshot.total(),
                credential: credential.clone(),
                capture: false,
                snapshot_id: w.snapshot.id(),
                merchant_id: w.snapshot.merchant().merchant_id.clone(),
                buyer_id: examples::buyer(),
            })
            .await;
        assert!(matches!(r, Err(ProviderError::Invalid { .. })), "{r:?}");
        case.watch.debug(&format!("psp authorize {label}"), &r);
        if let Err(e) = &r {
            case.watch.display(&format!("psp authorize {label}"), e);
        }
    }

    // Everything the attempts left behind.
    for id in case.attempts.clone() {
        let evidence = engine.dispute_evidence(&id).await.expect("evidence");
        case.watch
            .data(&format!("dispute evidence {id}"), &evidence);
        let stored = w.mem.ports.store.attempt(&id).await.expect("attempt");
        case.watch.debug(&format!("stored attempt {id}"), &stored);
        let hold = w.mem.ports.store.hold(&id).await.expect("hold");
        case.watch.debug(&format!("hold {id}"), &hold);
        if let Some(a) = stored
            && let Some(r) = &a.provider_ref
        {
            let found = w.psp.lookup(&Lookup::Reference(r.clone())).await;
            case.watch.debug(&format!("psp lookup {r}"), &found);
        }
    }
    for p in w.psp.payments() {
        case.watch.data("psp payment", &p);
    }
    case.watch.debug("psp effects", &w.psp.effects());

    // The audit trail, event by event.
    w.mem.audit.verify().await.expect("I9");
    let events = w.mem.audit.events();
    assert!(events.len() > 20);
    for e in &events {
        case.watch
            .text(&format!("audit event {} body", e.seq), &e.body);
        case.watch.data(&format!("audit event {}", e.seq), e);
    }

    // The adapters and the engine.
    case.watch.debug("vault", &w.mem.vault);
    case.watch.debug("store", &w.mem.store);
    case.watch.debug("audit sink", &w.mem.audit);
    case.watch.debug("psp", &w.psp);
    case.watch.debug("engine", engine);
    case.watch.debug("memory ports", &w.mem);
    case.watch
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    })]

    /// I10 over random secrets and CVCs, every payment path and every error path, in every
    /// output and in the trace.
    #[test]
    fn no_secret_or_cvc_leaks_through_any_output(input in inputs()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let trace = Trace::default();
        // The runtime polls on this thread: the subscriber sees every span of the case.
        let mut watch = tracing::subscriber::with_default(trace.subscriber(), || {
            rt.block_on(run_case(&input))
        });
        let text = trace.text();
        // The trace is there to be checked: commands, port calls, the PSP, the vault.
        for expected in [
            "command{command=\"store_credential\"",
            "command{command=\"execute_payment\"",
            "psp{call=\"authorize\"",
            "vault{op=\"store\"",
            "store{op=",
            "audit_sink{op=",
            "blockers=CREDENTIAL_NOT_USABLE",
        ] {
            prop_assert!(text.contains(expected), "the trace lacks {expected}");
        }
        watch.text("tracing output", &text);
        prop_assert!(watch.checked > 200, "only {} texts checked", watch.checked);
        prop_assert!(watch.leaks.is_empty(), "I10: {:#?}", watch.leaks);
    }
}

/// I10: the secret type prints `[REDACTED]` in every format, and what holds one shows no secret.
#[test]
fn secret_and_resolved_credential_print_redacted() {
    let value = "SECRET-QZWXKJ7HMNPRT2";
    let cvc = "CVC737TRGKVW";
    let s = Secret::new(value);
    assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
    assert_eq!(format!("{s:#?}"), "Secret([REDACTED])");
    assert_eq!(format!("{s}"), "[REDACTED]");
    assert_eq!(format!("{s:>30}"), "[REDACTED]");
    assert_eq!(s.expose(), value);
    assert_eq!(s.len(), value.len());
    assert_eq!(format!("{:?}", Some(s.clone())), "Some(Secret([REDACTED]))");

    let resolved = ResolvedCredential {
        stored: StoredCredential {
            reference: "cred_1".parse().expect("ref"),
            kind: CredentialKind::NetworkToken,
            owner: examples::agent().id,
            buyer_id: examples::buyer(),
            display: CredentialDisplay {
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2030,
                funding: FundingType::Credit,
            },
        },
        secret: s,
        cvc: Some(Secret::new(cvc)),
    };
    for text in [format!("{resolved:?}"), format!("{resolved:#?}")] {
        assert!(!text.contains(value), "{text}");
        assert!(!text.contains(cvc), "{text}");
        assert!(text.contains("[REDACTED]"), "{text}");
        assert!(
            text.contains("4242"),
            "the display part still shows: {text}"
        );
    }
    let new = NewCredential {
        kind: CredentialKind::VirtualCard,
        owner: examples::agent().id,
        buyer_id: examples::buyer(),
        secret: Secret::new(value),
        cvc: Some(Secret::new(cvc)),
        display: resolved.stored.display.clone(),
    };
    let text = format!("{new:?}");
    assert!(!text.contains(value) && !text.contains(cvc), "{text}");
}
