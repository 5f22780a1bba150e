//! The engine's `tracing` output: a span per command with the principal's scope id, the
//! idempotency key's digest (never the key), the attempt, the mandate, the outcome, the
//! decision and its blocker codes; a child span per port call (store, vault, audit sink, PSP
//! with its classification and latency). Captured with a `tracing-subscriber` fmt layer
//! writing into a buffer. Secrets are the redaction test's business (`tests/redaction.rs`);
//! here: what is recorded, and that a key's text never is.
#![cfg(feature = "testkit")]

mod common;
use common::principals::*;

use std::sync::{Arc, Mutex};

use agent_mandate::domain::{AttemptStatus, CredentialRef, IdempotencyKey};
use agent_mandate::engine::{CapturePayment, EngineConfig, KeyDigest, PaymentOutcome};
use agent_mandate::testkit::{Fault, Op};
use common::engine::{backpack_spec, world_with};

#[derive(Clone, Default)]
struct Trace(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Trace {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("trace").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Trace {
    fn subscriber(&self, level: tracing::Level) -> impl tracing::Subscriber + Send + Sync + use<> {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(move || writer.clone())
            .finish()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("trace")).into_owned()
    }

    /// The spans named `name` as they closed (with every field recorded on them): the
    /// innermost span of each `close` line, `name{fields}`.
    fn closed(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}{{");
        self.text()
            .lines()
            .filter_map(|l| {
                let (context, _) = l.split_once(": agent_mandate::engine: close")?;
                // `TIMESTAMP LEVEL parent{..}:child:grandchild{..}`: the closing span is the
                // last one (a span with no field recorded shows without braces).
                let (_, rest) = context.trim_start().split_once(' ')?;
                let (_, spans) = rest.trim_start().split_once(' ')?;
                let mut depth = 0usize;
                let mut start = 0;
                for (i, c) in spans.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth = depth.saturating_sub(1),
                        ':' if depth == 0 => start = i + 1,
                        _ => {}
                    }
                }
                let context = spans;
                let span = &context[start..];
                span.starts_with(&prefix).then(|| span.to_owned())
            })
            .collect()
    }
}

/// The tests of this file run one at a time: `tracing` caches whether a callsite is enabled
/// process-wide, and a thread-local subscriber set on another thread while a callsite is
/// first registered can leave a span of this thread unrecorded (seen as a missing command
/// span under load).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A key that reads like caller data.
const KEY: &str = "order-4711-jane.doe@example.com";

#[test]
fn commands_and_port_calls_have_spans_with_digests_not_keys() {
    let _serial = serial();
    let rt = runtime();
    let w = rt.block_on(world_with(EngineConfig::default(), backpack_spec(true)));
    let trace = Trace::default();
    let key: IdempotencyKey = KEY.parse().expect("key");
    let attempt =
        tracing::subscriber::with_default(trace.subscriber(tracing::Level::TRACE), || {
            rt.block_on(async {
                let mut cmd = w.execute("x");
                cmd.key = key.clone();
                let out = w
                    .engine
                    .execute_payment(&agent_p(), &cmd)
                    .await
                    .expect("pays");
                let attempt = out.attempt().expect("attempt").clone();
                // A replay, a refusal, a capture.
                let again = w
                    .engine
                    .execute_payment(&agent_p(), &cmd)
                    .await
                    .expect("replay");
                assert!(again.is_replay());
                let mut bad = w.execute("bad-credential");
                bad.credential = "cred_999999".parse::<CredentialRef>().expect("ref");
                let refused = w
                    .engine
                    .execute_payment(&agent_p(), &bad)
                    .await
                    .expect("refused");
                assert!(matches!(refused, PaymentOutcome::Refused(_)));
                w.engine
                    .capture(
                        &agent_p(),
                        &CapturePayment::new("capture-1".parse().expect("key"), attempt.id.clone()),
                    )
                    .await
                    .expect("captured");
                attempt
            })
        });
    let text = trace.text();
    assert!(!text.contains(KEY), "the key's text is traced:\n{text}");
    assert!(!text.contains("4711") && !text.contains("jane"), "{text}");
    let digest = KeyDigest(&key).to_string();

    let commands = trace.closed("command");
    let executes: Vec<&String> = commands
        .iter()
        .filter(|l| l.contains("command=\"execute_payment\""))
        .collect();
    assert_eq!(executes.len(), 3, "{commands:#?}");
    let first = executes[0];
    for field in [
        format!("key={digest}"),
        "principal=agent:".to_owned(),
        format!("attempt_id={}", attempt.id),
        "outcome=\"done\"".to_owned(),
        "status=\"authorized\"".to_owned(),
        "decision=\"allowed\"".to_owned(),
        "hold=\"placed\"".to_owned(),
    ] {
        assert!(first.contains(&field), "{field} missing from {first}");
    }
    assert!(
        executes[1].contains("replay=true") && executes[1].contains("outcome=\"replayed\""),
        "{}",
        executes[1]
    );
    assert!(
        executes[2].contains("outcome=\"refused\"")
            && executes[2].contains("decision=\"blocked\"")
            && executes[2].contains("blockers=CREDENTIAL_NOT_USABLE"),
        "{}",
        executes[2]
    );
    assert!(
        commands
            .iter()
            .any(|l| l.contains("command=\"capture_payment\"") && l.contains("outcome=\"done\"")),
        "{commands:#?}"
    );

    let psp = trace.closed("psp");
    assert!(
        psp.iter().any(|l| l.contains("call=\"authorize\"")
            && l.contains("outcome=\"authorized\"")
            && l.contains("latency_us=")),
        "{psp:#?}"
    );
    assert!(
        psp.iter()
            .any(|l| l.contains("call=\"capture\"") && l.contains("outcome=\"captured\"")),
        "{psp:#?}"
    );
    for (span, op) in [
        ("store", "payment_inputs"),
        ("store", "open_payment"),
        ("store", "change_attempt"),
        ("store", "begin_idempotent"),
        ("vault", "describe_and_status"),
        ("audit_sink", "append_all"),
    ] {
        assert!(
            trace
                .closed(span)
                .iter()
                .any(|l| l.contains(&format!("op=\"{op}\"")) && l.contains("outcome=\"ok\"")),
            "no {span} span for {op}:\n{}",
            trace.text()
        );
    }
    assert_eq!(attempt.status, AttemptStatus::Authorized);
}

#[test]
fn errors_are_traced_by_code_never_by_message() {
    let _serial = serial();
    let rt = runtime();
    let w = rt.block_on(world_with(EngineConfig::default(), backpack_spec(true)));
    let trace = Trace::default();
    tracing::subscriber::with_default(trace.subscriber(tracing::Level::TRACE), || {
        rt.block_on(async {
            // The PSP's message is its own text: it is never traced, its class is.
            w.psp.inject(Some(Op::Authorize), Fault::Transient);
            let err = w
                .engine
                .execute_payment(&agent_p(), &w.execute("pay-transient"))
                .await
                .expect_err("transient");
            assert_eq!(err.code(), "PSP_UNAVAILABLE");
            // A conflict's message quotes the key.
            let mut other = w.execute("pay-conflict");
            w.engine
                .execute_payment(&agent_p(), &other)
                .await
                .expect("pays");
            other.capture = true;
            let err = w
                .engine
                .execute_payment(&agent_p(), &other)
                .await
                .expect_err("conflict");
            assert_eq!(err.code(), "IDEMPOTENCY_CONFLICT");
        })
    });
    let text = trace.text();
    assert!(
        !text.contains("pay-conflict"),
        "a key in the trace:\n{text}"
    );
    assert!(
        !text.contains("pay-transient"),
        "a key in the trace:\n{text}"
    );
    let commands = trace.closed("command");
    assert!(
        commands
            .iter()
            .any(|l| l.contains("outcome=\"error\"") && l.contains("error=\"PSP_UNAVAILABLE\"")),
        "{commands:#?}"
    );
    assert!(
        commands
            .iter()
            .any(|l| l.contains("error=\"IDEMPOTENCY_CONFLICT\"")),
        "{commands:#?}"
    );
    assert!(
        trace
            .closed("psp")
            .iter()
            .any(|l| l.contains("outcome=\"transient\"")),
        "{text}"
    );
    // A server-side failure warns.
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("failed") && l.contains("PSP_UNAVAILABLE")),
        "{text}"
    );
}

#[test]
fn at_info_level_only_commands_and_psp_calls_are_traced() {
    let _serial = serial();
    let rt = runtime();
    let w = rt.block_on(world_with(EngineConfig::default(), backpack_spec(true)));
    let trace = Trace::default();
    tracing::subscriber::with_default(trace.subscriber(tracing::Level::INFO), || {
        rt.block_on(async {
            w.engine
                .execute_payment(&agent_p(), &w.execute("pay-1"))
                .await
                .expect("pays");
        })
    });
    assert_eq!(trace.closed("command").len(), 1, "{}", trace.text());
    assert_eq!(trace.closed("psp").len(), 1, "{}", trace.text());
    assert!(trace.closed("store").is_empty(), "{}", trace.text());
    assert!(trace.closed("vault").is_empty(), "{}", trace.text());
}
