//! What the engine tells the outside about its work: a `tracing` span for every command and
//! read, a child span for every port call it makes (store, PSP, vault, audit sink), and, with
//! the `metrics` feature, counters, gauges and histograms through the `metrics` facade.
//!
//! Instrumented at the engine's call sites, so third-party adapters are covered without
//! implementing anything. Cheap when nobody listens: a span is created only when a subscriber
//! is interested in it (otherwise the calls below skip their work after one check), every
//! field is a `&'static str`, an integer, or a value whose `Display` runs only when a
//! subscriber records it, and no metric is computed without the `metrics` feature.
//!
//! Never a secret, and never caller text that could carry one: principals appear as their
//! scope id, idempotency keys as [`KeyDigest`], errors as their stable code
//! ([`EngineError::code`]: messages may quote a PSP's or a caller's text), PSP answers as their
//! classification, decisions as their outcome and blocker codes (never blocker messages).
//! Credential material never reaches this module: the engine only holds references.
//!
//! Latency is measured with [`std::time::Instant`], the monotonic timer, and only when a span
//! or a recorder will take it; it decides nothing (the clock port stays the only source of the
//! time the engine decides with).

use std::fmt;
use std::future::Future;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use tracing::field::{display, Empty};
use tracing::{Instrument as _, Level, Span};

use super::error::EngineError;
use crate::domain::{
    AttemptId, AttemptStatus, AuthorityDecision, Blocker, IdempotencyKey, MandateId,
    PaymentAttempt, Principal, ProviderReport, ProviderStatus,
};
use crate::ports::{AuditError, HoldError, ProviderError, StoreError, VaultError};

/// The digest of an idempotency key as spans show it: `k_` and the first 16 hex digits of
/// SHA-256 over a domain tag and the key. A key is caller text (an order number, an email
/// folded into a key): spans never show it, yet the digest of a known key can be computed to
/// find its spans (`KeyDigest(&key).to_string()`). A guessable key stays guessable from its
/// digest: keys are correlation ids, never secrets. Computed only when a subscriber records
/// the field.
#[derive(Debug, Clone, Copy)]
pub struct KeyDigest<'a>(pub &'a IdempotencyKey);

impl fmt::Display for KeyDigest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut h = Sha256::new();
        h.update(b"agent-mandate/trace-key/v1\n");
        h.update(self.0.as_str().as_bytes());
        let digest = h.finalize();
        write!(f, "k_{}", hex::encode(&digest[..8]))
    }
}

/// A principal as spans show it: its idempotency scope id (`kind:id`), formatted only when a
/// subscriber records it.
struct ScopeId<'a>(&'a Principal);

impl fmt::Display for ScopeId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.scope_id(), f)
    }
}

/// The codes of a decision's blockers, comma-separated (never their messages).
struct Codes<'a>(&'a [Blocker]);

impl fmt::Display for Codes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(b.code.as_str())?;
        }
        Ok(())
    }
}

/// A command (or read) about to run: its span, and its name for the metrics.
pub(super) struct Command {
    name: &'static str,
    span: Span,
    /// The attempt and the mandate were named before the command ran (not again after).
    attempt_named: bool,
    mandate_named: bool,
}

impl Command {
    /// A command span (level INFO), named `command` with the command in its `command` and
    /// `otel.name` fields; `by` and `key` are recorded as [`ScopeId`] and [`KeyDigest`].
    pub(super) fn new(
        name: &'static str,
        by: Option<&Principal>,
        key: Option<&IdempotencyKey>,
    ) -> Command {
        let span = tracing::info_span!(
            target: "agent_mandate::engine",
            "command",
            command = name,
            otel.name = name,
            principal = Empty,
            key = Empty,
            attempt_id = Empty,
            mandate_id = Empty,
            outcome = Empty,
            status = Empty,
            decision = Empty,
            blockers = Empty,
            replay = Empty,
            resumed = Empty,
            hold = Empty,
            retries = Empty,
            count = Empty,
            error = Empty,
        );
        Command::with(name, span, by, key)
    }

    /// A read span (level DEBUG), with the same fields as a command's.
    pub(super) fn read(name: &'static str, by: Option<&Principal>) -> Command {
        let span = tracing::debug_span!(
            target: "agent_mandate::engine",
            "read",
            command = name,
            otel.name = name,
            principal = Empty,
            key = Empty,
            attempt_id = Empty,
            mandate_id = Empty,
            outcome = Empty,
            status = Empty,
            decision = Empty,
            blockers = Empty,
            replay = Empty,
            resumed = Empty,
            hold = Empty,
            retries = Empty,
            count = Empty,
            error = Empty,
        );
        Command::with(name, span, by, None)
    }

    fn with(
        name: &'static str,
        span: Span,
        by: Option<&Principal>,
        key: Option<&IdempotencyKey>,
    ) -> Command {
        if !span.is_disabled() {
            if let Some(by) = by {
                span.record("principal", display(ScopeId(by)));
            }
            if let Some(key) = key {
                span.record("key", display(KeyDigest(key)));
            }
        }
        Command {
            name,
            span,
            attempt_named: false,
            mandate_named: false,
        }
    }

    /// Names the attempt the command is about.
    pub(super) fn attempt(mut self, id: &AttemptId) -> Command {
        if !self.span.is_disabled() {
            self.span.record("attempt_id", display(id));
            self.attempt_named = true;
        }
        self
    }

    /// Names the attempt the command is about, computed only when the span is enabled.
    pub(super) fn attempt_with(self, id: impl FnOnce() -> AttemptId) -> Command {
        if self.span.is_disabled() {
            return self;
        }
        let id = id();
        self.attempt(&id)
    }

    /// Names the mandate the command is about.
    pub(super) fn mandate(mut self, id: &MandateId) -> Command {
        if !self.span.is_disabled() {
            self.span.record("mandate_id", display(id));
            self.mandate_named = true;
        }
        self
    }

    /// Runs `fut` inside the span, then records how it ended (span fields, one event, the
    /// command metrics).
    pub(super) async fn run<T, F>(self, fut: F) -> Result<T, EngineError>
    where
        T: Outcome,
        F: Future<Output = Result<T, EngineError>>,
    {
        let result = if self.span.is_disabled() {
            fut.await
        } else {
            fut.instrument(self.span.clone()).await
        };
        self.finish(&result);
        result
    }

    fn finish<T: Outcome>(&self, result: &Result<T, EngineError>) {
        let (name, span) = (self.name, &self.span);
        let enabled = !span.is_disabled();
        match result {
            Ok(value) => {
                let outcome = value.outcome();
                metrics::command(name, outcome, None);
                if enabled {
                    span.record("outcome", outcome);
                    if let Some(a) = value.attempt() {
                        if !self.attempt_named {
                            span.record("attempt_id", display(&a.id));
                        }
                        span.record("status", a.status.as_str());
                    }
                    if let (Some(m), false) = (value.mandate_id(), self.mandate_named) {
                        span.record("mandate_id", display(m));
                    }
                    if let Some(n) = value.count() {
                        span.record("count", n);
                    }
                }
                // In the span when it is enabled, else in the caller's.
                span.in_scope(|| {
                    tracing::event!(
                        target: "agent_mandate::engine",
                        Level::DEBUG,
                        outcome,
                        "finished"
                    );
                });
            }
            Err(e) => {
                let code = e.code();
                metrics::command(name, "error", Some(code));
                if enabled {
                    span.record("outcome", "error");
                    span.record("error", code);
                }
                // Failures of the service (a dependency down, an answer it cannot read) warn;
                // a caller's mistake (bad input, no permission, a conflict) is routine.
                let server = e.is_retryable()
                    || matches!(
                        e.error_type(),
                        super::ErrorType::ProcessingError | super::ErrorType::ServiceUnavailable
                    );
                span.in_scope(|| {
                    if server {
                        tracing::event!(
                            target: "agent_mandate::engine",
                            Level::WARN,
                            command = name,
                            error = code,
                            retryable = e.is_retryable(),
                            "failed"
                        );
                    } else {
                        tracing::event!(
                            target: "agent_mandate::engine",
                            Level::DEBUG,
                            command = name,
                            error = code,
                            "refused"
                        );
                    }
                });
            }
        }
    }
}

/// What a command's result says about how it ended (for its span and metrics).
pub(super) trait Outcome {
    /// `done`, `refused` (a decision other than allowed), `replayed`, or an order's
    /// `committed`, `existing`, `failed`.
    fn outcome(&self) -> &'static str {
        "done"
    }
    /// The attempt the command produced or read.
    fn attempt(&self) -> Option<&PaymentAttempt> {
        None
    }
    /// The mandate the command produced or read.
    fn mandate_id(&self) -> Option<&MandateId> {
        None
    }
    /// How many things it handled (attempts swept, events delivered, records purged).
    fn count(&self) -> Option<u64> {
        None
    }
}

impl Outcome for super::PaymentOutcome {
    fn outcome(&self) -> &'static str {
        match self {
            super::PaymentOutcome::Refused(_) => "refused",
            super::PaymentOutcome::Done { .. } => "done",
            super::PaymentOutcome::Replayed { .. } => "replayed",
            super::PaymentOutcome::Scheduled { .. } => "scheduled",
        }
    }
    fn attempt(&self) -> Option<&PaymentAttempt> {
        super::PaymentOutcome::attempt(self)
    }
}

impl Outcome for super::OrderOutcome {
    fn outcome(&self) -> &'static str {
        match self {
            super::OrderOutcome::Committed { .. } => "committed",
            super::OrderOutcome::Existing { .. } => "existing",
            super::OrderOutcome::Failed { .. } => "failed",
        }
    }
    fn attempt(&self) -> Option<&PaymentAttempt> {
        match self {
            super::OrderOutcome::Failed { recovery, .. } => Some(&recovery.attempt),
            super::OrderOutcome::Committed { .. } | super::OrderOutcome::Existing { .. } => None,
        }
    }
}

impl<T: Outcome> Outcome for super::Recorded<T> {
    fn outcome(&self) -> &'static str {
        if self.replay {
            "replayed"
        } else {
            self.value.outcome()
        }
    }
    fn attempt(&self) -> Option<&PaymentAttempt> {
        self.value.attempt()
    }
    fn mandate_id(&self) -> Option<&MandateId> {
        self.value.mandate_id()
    }
}

impl Outcome for AuthorityDecision {
    fn outcome(&self) -> &'static str {
        if self.is_allowed() {
            "done"
        } else {
            "refused"
        }
    }
}

impl Outcome for PaymentAttempt {
    fn attempt(&self) -> Option<&PaymentAttempt> {
        Some(self)
    }
}

impl Outcome for crate::domain::Mandate {
    fn mandate_id(&self) -> Option<&MandateId> {
        Some(self.id())
    }
}

impl Outcome for crate::domain::Confirmation {
    fn mandate_id(&self) -> Option<&MandateId> {
        Some(&self.scope.mandate_id)
    }
}

impl Outcome for super::ChainUsage {
    fn mandate_id(&self) -> Option<&MandateId> {
        self.chain.last().map(|m| m.id())
    }
}

impl Outcome for super::DisputeEvidence {
    fn attempt(&self) -> Option<&PaymentAttempt> {
        Some(&self.attempt)
    }
}

impl Outcome for super::TrailReport {
    fn outcome(&self) -> &'static str {
        if self.is_complete() {
            "done"
        } else {
            "incomplete"
        }
    }
    fn count(&self) -> Option<u64> {
        Some(self.missing.len() as u64)
    }
}

impl Outcome for () {}

impl Outcome for crate::ports::StoredCredential {}

impl<T> Outcome for Vec<T> {
    fn count(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl Outcome for u32 {
    fn count(&self) -> Option<u64> {
        Some(u64::from(*self))
    }
}

impl Outcome for u64 {
    fn count(&self) -> Option<u64> {
        Some(*self)
    }
}

impl Outcome for usize {
    fn count(&self) -> Option<u64> {
        Some(*self as u64)
    }
}

/// Whether the spans of a command may be listening (a cheap check before `Span::current`).
fn listening() -> bool {
    tracing::level_enabled!(Level::INFO)
}

/// A decision was made (and recorded on the trail) for `command`.
pub(super) fn decision(command: &'static str, d: &AuthorityDecision) {
    metrics::decision(command, d);
    if listening() {
        let span = Span::current();
        span.record("decision", d.outcome.as_str());
        if !d.blockers.is_empty() {
            span.record("blockers", display(Codes(&d.blockers)));
        }
    }
}

/// The command was answered from its idempotency record.
pub(super) fn replay(command: &'static str) {
    metrics::replay(command);
    if listening() {
        Span::current().record("replay", true);
    }
}

/// The command resumes an attempt a previous call with its key left unfinished.
pub(super) fn resumed() {
    if listening() {
        Span::current().record("resumed", true);
    }
}

/// A budget hold was placed on a chain (`true`) or refused at a limit (`false`).
pub(super) fn hold(placed: bool) {
    let result = if placed { "placed" } else { "refused" };
    metrics::hold(result);
    if listening() {
        Span::current().record("hold", result);
    }
}

/// The decision is made again after a hold refused by a race (`tries` so far).
pub(super) fn retry(tries: u8) {
    if listening() {
        Span::current().record("retries", tries);
    }
}

/// The actor was suspended by the consecutive-block control.
pub(super) fn auto_suspended(actor: &crate::domain::ActorId, blocks: u32) {
    metrics::auto_suspended();
    tracing::event!(
        target: "agent_mandate::engine",
        Level::WARN,
        actor_id = %actor,
        consecutive_blocks = blocks,
        "actor suspended automatically"
    );
}

/// The alert sink took an alert over.
pub(super) fn alert_delivered(alert: &crate::domain::Alert) {
    tracing::event!(
        target: "agent_mandate::engine",
        Level::INFO,
        control = alert.kind.as_str(),
        "alert handed to the alert sink"
    );
}

/// The alert sink refused or was slow: alerts wait for the next flush.
pub(super) fn alert_waiting() {
    tracing::event!(
        target: "agent_mandate::engine",
        Level::WARN,
        "the alert sink did not take an alert over in time: it waits for the next flush"
    );
}

/// An attempt moved from `from` to `to` (stored).
pub(super) fn transition(id: &AttemptId, from: AttemptStatus, to: AttemptStatus) {
    if to == AttemptStatus::Ambiguous && from != AttemptStatus::Ambiguous {
        metrics::ambiguous();
        tracing::event!(
            target: "agent_mandate::engine",
            Level::WARN,
            attempt_id = %id,
            from = from.as_str(),
            "PSP outcome unknown: the attempt is ambiguous until reconciled"
        );
    }
}

/// The attempts of unknown outcome the engine just listed, all of them when fewer than the
/// limit of the listing (sets the gauge per status).
pub(super) fn open_attempts(attempts: &[PaymentAttempt]) {
    metrics::open_attempts(attempts);
}

/// A flush of the audit outbox (span `audit_flush`, level DEBUG): how many events it
/// delivered; a flush that stops on an error is counted.
pub(super) async fn flush<F>(fut: F) -> Result<usize, EngineError>
where
    F: Future<Output = Result<usize, EngineError>>,
{
    let span = tracing::debug_span!(
        target: "agent_mandate::engine",
        "audit_flush",
        delivered = Empty,
        outcome = Empty
    );
    if span.is_disabled() {
        let result = fut.await;
        if let Err(e) = &result {
            flush_failed(e);
        }
        return result;
    }
    let result = fut.instrument(span.clone()).await;
    match &result {
        Ok(n) => {
            span.record("delivered", *n as u64);
            span.record("outcome", "ok");
        }
        Err(e) => {
            span.record("outcome", "error");
            flush_failed(e);
        }
    }
    result
}

fn flush_failed(e: &EngineError) {
    metrics::flush_failed();
    tracing::event!(
        target: "agent_mandate::engine",
        Level::WARN,
        error = e.code(),
        "audit events wait in the outbox: the flush failed"
    );
}

/// `n` events were delivered to the audit sink and acknowledged.
pub(super) fn delivered(n: usize) {
    metrics::delivered(n);
}

/// The audit outbox was drained.
pub(super) fn outbox_drained() {
    metrics::outbox_depth(0);
}

/// Delivering `waiting` staged events to the sink failed: the outbox holds at least those.
pub(super) fn outbox_stuck(waiting: usize) {
    metrics::outbox_depth(waiting);
}

/// The outbox holds exactly `staged` events (the trail check read them all).
pub(super) fn outbox_depth(staged: usize) {
    metrics::outbox_depth(staged);
}

/// The `elapsed` time in whole microseconds.
fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Why a port call failed, as a bounded label (never its message).
pub(super) trait Class {
    /// The class.
    fn class(&self) -> &'static str;
}

impl Class for StoreError {
    fn class(&self) -> &'static str {
        match self {
            StoreError::NotFound { .. } => "not_found",
            StoreError::Conflict { .. } => "conflict",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Fenced { .. } => "fenced",
            StoreError::SchemaBehind { .. } => "schema_behind",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Other(_) => "other",
        }
    }
}

impl Class for HoldError {
    fn class(&self) -> &'static str {
        match self {
            HoldError::Refused { .. } => "refused",
            HoldError::Duplicate { .. } => "duplicate",
            HoldError::Currency { .. } => "currency",
            HoldError::Store(e) => e.class(),
        }
    }
}

impl Class for VaultError {
    fn class(&self) -> &'static str {
        match self {
            VaultError::NotFound { .. } => "not_found",
            VaultError::NotUsable { .. } => "not_usable",
            VaultError::Invalid { .. } => "invalid",
            VaultError::IdempotencyConflict { .. } => "conflict",
            VaultError::KeyUnavailable { .. } => "key_unavailable",
            VaultError::Integrity { .. } => "integrity",
            VaultError::Corrupt { .. } => "corrupt",
            VaultError::Unavailable { .. } => "unavailable",
            VaultError::Other(_) => "other",
        }
    }
}

impl Class for AuditError {
    fn class(&self) -> &'static str {
        match self {
            AuditError::Broken(_) | AuditError::Checkpoint { .. } => "broken",
            AuditError::Corrupt { .. } => "corrupt",
            AuditError::Unavailable { .. } => "unavailable",
            AuditError::Other(_) => "other",
        }
    }
}

impl Class for ProviderError {
    fn class(&self) -> &'static str {
        match self {
            ProviderError::Invalid { .. } => "invalid",
            ProviderError::Transient { .. } => "transient",
            ProviderError::Ambiguous { .. } => "ambiguous",
        }
    }
}

/// Runs a port call inside `span` (when enabled), recording its outcome and latency.
async fn port<T, E, F>(span: Span, fut: F) -> Result<T, E>
where
    E: Class,
    F: Future<Output = Result<T, E>>,
{
    if span.is_disabled() {
        return fut.await;
    }
    // Timing only (see the module docs): the monotonic timer feeds a span field and a
    // histogram, never a decision, a deadline or a stored time, which come from the Clock port.
    let start = Instant::now();
    let result = fut.instrument(span.clone()).await;
    span.record("latency_us", micros(start));
    span.record(
        "outcome",
        match &result {
            Ok(_) => "ok",
            Err(e) => e.class(),
        },
    );
    result
}

/// A call of the store port `op` (span `store`, level DEBUG).
pub(super) async fn store<T, E, F>(op: &'static str, fut: F) -> Result<T, E>
where
    E: Class,
    F: Future<Output = Result<T, E>>,
{
    let span = tracing::debug_span!(
        target: "agent_mandate::engine",
        "store",
        op,
        outcome = Empty,
        latency_us = Empty
    );
    port(span, fut).await
}

/// A call of the credential vault port `op` (span `vault`, level DEBUG). Its arguments and
/// answers are never recorded (a stored credential's secret passes through `store`).
pub(super) async fn vault<T, F>(op: &'static str, fut: F) -> Result<T, VaultError>
where
    F: Future<Output = Result<T, VaultError>>,
{
    let span = tracing::debug_span!(
        target: "agent_mandate::engine",
        "vault",
        op,
        outcome = Empty,
        latency_us = Empty
    );
    port(span, fut).await
}

/// A call of the audit sink port `op` (span `audit_sink`, level DEBUG).
pub(super) async fn audit<T, F>(op: &'static str, fut: F) -> Result<T, AuditError>
where
    F: Future<Output = Result<T, AuditError>>,
{
    let span = tracing::debug_span!(
        target: "agent_mandate::engine",
        "audit_sink",
        op,
        outcome = Empty,
        latency_us = Empty
    );
    port(span, fut).await
}

/// A call of the PSP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Psp {
    Authorize,
    Capture,
    Void,
    Refund,
    Lookup,
}

impl Psp {
    fn as_str(self) -> &'static str {
        match self {
            Psp::Authorize => "authorize",
            Psp::Capture => "capture",
            Psp::Void => "void",
            Psp::Refund => "refund",
            Psp::Lookup => "lookup",
        }
    }
}

/// What a PSP answer is, as a bounded label.
pub(super) trait PspAnswer {
    /// The class of an answer: the reported status.
    fn class(&self) -> &'static str;
}

impl PspAnswer for ProviderReport {
    fn class(&self) -> &'static str {
        match self.status {
            ProviderStatus::RequiresAction => "requires_action",
            ProviderStatus::Authorized => "authorized",
            ProviderStatus::Captured => "captured",
            ProviderStatus::Declined => "declined",
            ProviderStatus::Cancelled => "cancelled",
            ProviderStatus::NotFound => "not_found",
            ProviderStatus::Unknown(_) => "unknown_status",
        }
    }
}

impl PspAnswer for Option<ProviderReport> {
    fn class(&self) -> &'static str {
        match self {
            Some(report) => report.class(),
            None => "not_found",
        }
    }
}

/// A call of the PSP port for `attempt` (span `psp`, level INFO): its classification (the
/// reported status, or the error's class) and latency go to the span and to the
/// `agent_mandate_psp_call_duration_seconds` histogram.
pub(super) async fn psp<T, F>(call: Psp, attempt: &AttemptId, fut: F) -> Result<T, ProviderError>
where
    T: PspAnswer,
    F: Future<Output = Result<T, ProviderError>>,
{
    let span = tracing::info_span!(
        target: "agent_mandate::engine",
        "psp",
        call = call.as_str(),
        attempt_id = Empty,
        outcome = Empty,
        latency_us = Empty
    );
    if span.is_disabled() && !metrics::ON {
        return fut.await;
    }
    // Timing only (see the module docs): the monotonic timer feeds a span field and a
    // histogram, never a decision, a deadline or a stored time, which come from the Clock port.
    let start = Instant::now();
    let result = if span.is_disabled() {
        fut.await
    } else {
        span.record("attempt_id", display(attempt));
        fut.instrument(span.clone()).await
    };
    let elapsed = start.elapsed();
    let class = match &result {
        Ok(answer) => answer.class(),
        Err(e) => e.class(),
    };
    metrics::psp(call.as_str(), class, elapsed);
    if !span.is_disabled() {
        span.record(
            "latency_us",
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        );
        span.record("outcome", class);
    }
    result
}

/// The metrics (feature `metrics`); every function is empty without it.
#[cfg(feature = "metrics")]
mod metrics {
    use std::time::Duration;

    use crate::domain::{AttemptStatus, AuthorityDecision, PaymentAttempt};

    pub(super) const ON: bool = true;

    pub(super) fn command(
        command: &'static str,
        outcome: &'static str,
        code: Option<&'static str>,
    ) {
        ::metrics::counter!(
            "agent_mandate_commands_total",
            "command" => command,
            "outcome" => outcome
        )
        .increment(1);
        if let Some(code) = code {
            ::metrics::counter!(
                "agent_mandate_command_errors_total",
                "command" => command,
                "code" => code
            )
            .increment(1);
        }
    }

    pub(super) fn decision(command: &'static str, d: &AuthorityDecision) {
        ::metrics::counter!(
            "agent_mandate_decisions_total",
            "command" => command,
            "outcome" => d.outcome.as_str()
        )
        .increment(1);
        for b in &d.blockers {
            ::metrics::counter!(
                "agent_mandate_decision_blockers_total",
                "command" => command,
                "code" => b.code.as_str()
            )
            .increment(1);
        }
    }

    pub(super) fn replay(command: &'static str) {
        ::metrics::counter!("agent_mandate_idempotency_replays_total", "command" => command)
            .increment(1);
    }

    pub(super) fn hold(result: &'static str) {
        ::metrics::counter!("agent_mandate_holds_total", "result" => result).increment(1);
    }

    pub(super) fn auto_suspended() {
        ::metrics::counter!("agent_mandate_auto_suspensions_total").increment(1);
    }

    pub(super) fn ambiguous() {
        ::metrics::counter!("agent_mandate_attempts_ambiguous_total").increment(1);
    }

    pub(super) fn open_attempts(attempts: &[PaymentAttempt]) {
        for status in [
            AttemptStatus::PendingProviderResponse,
            AttemptStatus::Ambiguous,
            AttemptStatus::RequiresBuyerAction,
        ] {
            let n = attempts.iter().filter(|a| a.status == status).count();
            // A count of attempts, not money: the metrics facade takes gauge values as f64.
            ::metrics::gauge!("agent_mandate_attempts_open", "status" => status.as_str())
                .set(n as f64);
        }
    }

    pub(super) fn outbox_depth(depth: usize) {
        // A count of events, not money: the metrics facade takes gauge values as f64.
        ::metrics::gauge!("agent_mandate_audit_outbox_depth").set(depth as f64);
    }

    pub(super) fn delivered(n: usize) {
        ::metrics::counter!("agent_mandate_audit_events_delivered_total").increment(n as u64);
    }

    pub(super) fn flush_failed() {
        ::metrics::counter!("agent_mandate_audit_flush_failures_total").increment(1);
    }

    pub(super) fn psp(call: &'static str, class: &'static str, elapsed: Duration) {
        ::metrics::histogram!(
            "agent_mandate_psp_call_duration_seconds",
            "call" => call,
            "classification" => class
        )
        .record(elapsed.as_secs_f64());
    }
}

/// Without the `metrics` feature: nothing.
#[cfg(not(feature = "metrics"))]
mod metrics {
    use std::time::Duration;

    use crate::domain::{AuthorityDecision, PaymentAttempt};

    pub(super) const ON: bool = false;

    pub(super) fn command(_: &'static str, _: &'static str, _: Option<&'static str>) {}
    pub(super) fn decision(_: &'static str, _: &AuthorityDecision) {}
    pub(super) fn replay(_: &'static str) {}
    pub(super) fn hold(_: &'static str) {}
    pub(super) fn auto_suspended() {}
    pub(super) fn ambiguous() {}
    pub(super) fn open_attempts(_: &[PaymentAttempt]) {}
    pub(super) fn outbox_depth(_: usize) {}
    pub(super) fn delivered(_: usize) {}
    pub(super) fn flush_failed() {}
    pub(super) fn psp(_: &'static str, _: &'static str, _: Duration) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_digest_hides_the_key_and_is_stable() {
        let key: IdempotencyKey = "order-4711-jane@example.com".parse().expect("key");
        let digest = KeyDigest(&key).to_string();
        assert!(digest.starts_with("k_"), "{digest}");
        assert_eq!(digest.len(), 2 + 16);
        assert!(
            !digest.contains("4711") && !digest.contains("jane"),
            "{digest}"
        );
        assert_eq!(digest, KeyDigest(&key).to_string());
        let other: IdempotencyKey = "order-4712-jane@example.com".parse().expect("key");
        assert_ne!(digest, KeyDigest(&other).to_string());
    }

    #[test]
    fn codes_show_codes_only() {
        let blockers = vec![
            Blocker::new(
                crate::domain::BlockerCode::MandateExpired,
                "caller text SECRET-X".to_owned(),
            ),
            Blocker::new(
                crate::domain::BlockerCode::LifetimeLimitExceeded,
                "more".to_owned(),
            ),
        ];
        let text = Codes(&blockers).to_string();
        assert_eq!(text, "MANDATE_EXPIRED,LIFETIME_LIMIT_EXCEEDED");
    }
}
