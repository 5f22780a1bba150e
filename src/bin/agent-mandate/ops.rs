//! The operator commands: `audit verify`, `usage`, `attempts --open`, `reconcile`, `purge`,
//! `migrate`. Each returns its report as text or as JSON with stable field names.

use serde_json::{json, Value};

use agent_mandate::domain::{
    ActorId, ChainBreak, ChainFault, MandateId, Money, PaymentAttempt, Principal,
};
use agent_mandate::engine::{Engine, EngineError, MAX_OPEN_ATTEMPTS, TRAIL_CHECK_LIMIT};
use agent_mandate::ports::{AuditError, Clock, SystemClock};

use crate::store::{self, Backend};
use crate::{Failure, Format, Report};

/// The principal the operator commands read as.
fn operator() -> Result<Principal, Failure> {
    ActorId::new("agent-mandate-cli")
        .map(Principal::Operator)
        .map_err(|e| Failure::Usage(format!("operator id: {e}")))
}

fn engine_failure(e: EngineError) -> Failure {
    Failure::Io(format!("{e}"))
}

fn money(m: &Money) -> Value {
    json!({ "amount": m.amount_text(), "currency": m.currency().to_string() })
}

/// `audit verify`: the hash chain, then every stored state against its event.
pub async fn audit_verify(backend: &Backend, format: Format) -> Result<Report, Failure> {
    let opened = store::open(backend).await?;
    let engine = store::engine(&opened, None)?;
    let chain = match opened.audit.verify().await {
        Ok(head) => ChainState::Ok {
            events: head.map_or(0, |h| h.seq),
            head: head.map(|h| h.hash.to_string()),
        },
        Err(AuditError::Broken(b)) => ChainState::Broken(bad_event(&engine, b).await),
        Err(AuditError::Checkpoint { seq }) => ChainState::Broken(BadEvent {
            seq,
            hash: None,
            event: None,
            subject: None,
            fault: "checkpoint",
            why: "the checkpoint does not match the trail or the checkpoint before it".into(),
        }),
        Err(AuditError::Corrupt { seq, message }) => ChainState::Broken(BadEvent {
            seq,
            hash: None,
            event: None,
            subject: None,
            fault: "unreadable",
            why: message,
        }),
        Err(e) => return Err(Failure::Io(format!("cannot read the audit trail: {e}"))),
    };
    let trail = engine
        .verify_trail(TRAIL_CHECK_LIMIT)
        .await
        .map_err(engine_failure)?;
    let mut first_problem = None;
    if let ChainState::Broken(b) = &chain {
        first_problem = Some(b.line());
    } else if let Some(m) = trail.missing.first() {
        first_problem = Some(format!("missing event: {m}"));
    }
    let text = {
        let mut out = match &chain {
            ChainState::Ok { events, head } => format!(
                "audit chain: ok ({events} events{})",
                head.as_ref()
                    .map(|h| format!(", head {h}"))
                    .unwrap_or_default()
            ),
            ChainState::Broken(b) => format!("audit chain: BROKEN\n  {}", b.line()),
        };
        out.push_str(&format!(
            "\nattempts checked: {}\ntrail events: {}\nstaged, not yet delivered: {}\nrepeated deliveries: {}\nmissing events: {}",
            trail.attempts,
            trail.trail_events,
            trail.staged_events,
            trail.repeated_events,
            trail.missing.len()
        ));
        for m in &trail.missing {
            out.push_str(&format!("\n  {m}"));
        }
        out
    };
    let ok = first_problem.is_none();
    let body = json!({
        "ok": ok,
        "chain": match &chain {
            ChainState::Ok { events, head } => json!({ "ok": true, "events": events, "head": head }),
            ChainState::Broken(b) => json!({ "ok": false, "first_bad_event": b.json() }),
        },
        "attempts_checked": trail.attempts,
        "trail_events": trail.trail_events,
        "staged_events": trail.staged_events,
        "repeated_events": trail.repeated_events,
        "missing_events": trail.missing.iter().map(|m| json!(m.to_string())).collect::<Vec<_>>(),
    });
    let report = Report::new(format, text, body);
    match first_problem {
        None => Ok(report),
        Some(line) => Err(Failure::Finding {
            report,
            summary: format!("the audit trail does not verify: {line}"),
        }),
    }
}

enum ChainState {
    Ok { events: u64, head: Option<String> },
    Broken(BadEvent),
}

/// The first bad event of the chain: where, which, and why.
struct BadEvent {
    seq: u64,
    hash: Option<String>,
    event: Option<String>,
    subject: Option<String>,
    fault: &'static str,
    why: String,
}

impl BadEvent {
    fn line(&self) -> String {
        let mut which = Vec::new();
        if let Some(e) = &self.event {
            which.push(e.clone());
        }
        if let Some(s) = &self.subject {
            which.push(s.clone());
        }
        if let Some(h) = &self.hash {
            which.push(format!("hash {h}"));
        }
        let which = if which.is_empty() {
            String::new()
        } else {
            format!(" ({})", which.join(", "))
        };
        format!(
            "first bad event: seq {}{which}: {}: {}",
            self.seq, self.fault, self.why
        )
    }

    fn json(&self) -> Value {
        json!({
            "seq": self.seq,
            "hash": self.hash,
            "event": self.event,
            "subject": self.subject,
            "fault": self.fault,
            "why": self.why,
        })
    }
}

async fn bad_event(engine: &Engine, b: ChainBreak) -> BadEvent {
    let (fault, why) = match b.fault {
        ChainFault::Edited => (
            "edited",
            "its body or hash does not match its hash".to_owned(),
        ),
        ChainFault::Missing => (
            "missing",
            format!(
                "its sequence number skips ahead from {}: the events before it were dropped",
                b.expected_seq
            ),
        ),
        ChainFault::OutOfOrder => (
            "out_of_order",
            format!(
                "its sequence number goes back (expected {}): reordered or duplicated",
                b.expected_seq
            ),
        ),
        ChainFault::BrokenLink => (
            "broken_link",
            "its link does not match the previous event's hash".to_owned(),
        ),
    };
    let mut bad = BadEvent {
        seq: b.seq,
        hash: None,
        event: None,
        subject: None,
        fault,
        why,
    };
    let from = b.seq.min(b.expected_seq).max(1);
    let Ok(by) = operator() else { return bad };
    let found = engine
        .audit_segment(&by, from, 2)
        .await
        .ok()
        .and_then(|page| page.into_iter().find(|e| e.seq == b.seq));
    if let Some(e) = found {
        bad.hash = Some(e.hash.to_string());
        if let Ok(v) = serde_json::from_str::<Value>(&e.body) {
            let kind = &v["event"];
            bad.event = kind["type"].as_str().map(str::to_owned);
            bad.subject = [
                "attempt_id",
                "mandate_id",
                "order_id",
                "actor_id",
                "buyer_id",
            ]
            .iter()
            .find_map(|k| kind[*k].as_str().map(|id| format!("{k} {id}")));
        }
    }
    bad
}

/// `usage MANDATE`: every level of the chain, root first.
pub async fn usage(backend: &Backend, mandate: &str, format: Format) -> Result<Report, Failure> {
    let id = MandateId::new(mandate)
        .map_err(|e| Failure::Usage(format!("invalid mandate id {mandate:?}: {e}")))?;
    let opened = store::open(backend).await?;
    let engine = store::engine(&opened, None)?;
    let usage = engine
        .chain_usage(&operator()?, &id)
        .await
        .map_err(|e| match e {
            EngineError::NotFound { .. } => Failure::Io(format!("no mandate {id}")),
            other => engine_failure(other),
        })?;
    let mut text = format!("mandate {id}: chain of {}, root first", usage.chain.len());
    let mut levels = Vec::new();
    for (m, u) in usage.chain.iter().zip(&usage.usage) {
        let budgets = &m.scope().budgets;
        text.push_str(&format!(
            "\n{} ({}): held {}, spent {}",
            m.id(),
            m.status(),
            u.held,
            u.spent
        ));
        if let Some(limit) = &budgets.lifetime {
            text.push_str(&format!(" of lifetime {limit}"));
        }
        text.push_str(&format!(", uses {}", u.uses));
        if let Some(max) = m.scope().max_uses {
            text.push_str(&format!(" of {max}"));
        }
        text.push_str(&format!(", attempts {}", u.attempts));
        let mut windows = Vec::new();
        for w in &u.windows {
            let limit = budgets
                .windows
                .iter()
                .find(|l| l.window_seconds == w.window_seconds);
            text.push_str(&format!("\n  window {}s: {}", w.window_seconds, w.amount));
            if let Some(max) = limit.and_then(|l| l.max_amount.as_ref()) {
                text.push_str(&format!(" of {max}"));
            }
            text.push_str(&format!(", {} payment(s)", w.count));
            if let Some(max) = limit.and_then(|l| l.max_count) {
                text.push_str(&format!(" of {max}"));
            }
            windows.push(json!({
                "window_seconds": w.window_seconds,
                "amount": money(&w.amount),
                "count": w.count,
                "max_amount": limit.and_then(|l| l.max_amount.as_ref()).map(money),
                "max_count": limit.and_then(|l| l.max_count),
            }));
        }
        levels.push(json!({
            "mandate_id": m.id().to_string(),
            "parent_id": m.parent_id().map(ToString::to_string),
            "status": m.status().to_string(),
            "held": money(&u.held),
            "spent": money(&u.spent),
            "lifetime_limit": budgets.lifetime.as_ref().map(money),
            "uses": u.uses,
            "max_uses": m.scope().max_uses,
            "attempts": u.attempts,
            "windows": windows,
        }));
    }
    Ok(Report::new(
        format,
        text,
        json!({ "mandate_id": id.to_string(), "chain": levels }),
    ))
}

fn attempt_json(a: &PaymentAttempt) -> Value {
    json!({
        "attempt_id": a.id.to_string(),
        "status": a.status.to_string(),
        "mandate_id": a.request.mandate_id.to_string(),
        "buyer_id": a.request.buyer_id.to_string(),
        "amount": money(&a.request.amount),
        "submissions": a.submissions,
        "provider_ref": a.provider_ref.as_ref().map(ToString::to_string),
        "submitted_at": a.submitted_at.map(|t| t.to_rfc3339()),
        "updated_at": a.updated_at.to_rfc3339(),
    })
}

fn attempt_line(a: &PaymentAttempt) -> String {
    format!(
        "{} {} {} mandate {} submitted {} updated {}",
        a.id,
        a.status,
        a.request.amount,
        a.request.mandate_id,
        a.submitted_at
            .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339()),
        a.updated_at.to_rfc3339()
    )
}

/// `attempts --open`: the attempts whose outcome is unknown, oldest first.
pub async fn open_attempts(
    backend: &Backend,
    limit: usize,
    format: Format,
) -> Result<Report, Failure> {
    let opened = store::open(backend).await?;
    let engine = store::engine(&opened, None)?;
    let open = engine
        .open_attempts(&operator()?, limit)
        .await
        .map_err(engine_failure)?;
    let mut text = format!("open attempts: {}", open.len());
    for a in &open {
        text.push_str(&format!("\n  {}", attempt_line(a)));
    }
    Ok(Report::new(
        format,
        text,
        json!({
            "count": open.len(),
            "limit": limit.min(MAX_OPEN_ATTEMPTS),
            "attempts": open.iter().map(attempt_json).collect::<Vec<_>>(),
        }),
    ))
}

/// `reconcile`: the engine's sweep against the PSP.
#[cfg(feature = "http")]
pub async fn reconcile(
    backend: &Backend,
    provider: std::sync::Arc<dyn agent_mandate::ports::PaymentProvider>,
    limit: usize,
    format: Format,
) -> Result<Report, Failure> {
    let opened = store::open(backend).await?;
    let engine = store::engine(&opened, Some(provider))?;
    let swept = engine
        .reconcile_pending(limit)
        .await
        .map_err(engine_failure)?;
    use agent_mandate::domain::AttemptStatus;
    let open = [
        AttemptStatus::PendingProviderResponse,
        AttemptStatus::Ambiguous,
        AttemptStatus::RequiresBuyerAction,
    ];
    let still_open = swept.iter().filter(|a| open.contains(&a.status)).count();
    let mut text = format!(
        "attempts looked at: {}\nstill open: {still_open}",
        swept.len()
    );
    for a in &swept {
        text.push_str(&format!("\n  {}", attempt_line(a)));
    }
    Ok(Report::new(
        format,
        text,
        json!({
            "reconciled": swept.len(),
            "still_open": still_open,
            "attempts": swept.iter().map(attempt_json).collect::<Vec<_>>(),
        }),
    ))
}

/// `purge`: idempotency records past their retention and expired challenge uses.
pub async fn purge(backend: &Backend, format: Format) -> Result<Report, Failure> {
    let opened = store::open(backend).await?;
    let engine = store::engine(&opened, None)?;
    let records = engine.purge_idempotency().await.map_err(engine_failure)?;
    let challenges = opened
        .store
        .purge_challenges(SystemClock.now())
        .await
        .map_err(|e| Failure::Io(format!("{e}")))?;
    Ok(Report::new(
        format,
        format!("purged {records} idempotency record(s) and {challenges} expired challenge(s)"),
        json!({ "idempotency_records": records, "challenges": challenges }),
    ))
}

/// `migrate`: the schema brought to this version's.
pub async fn migrate(backend: &Backend, format: Format) -> Result<Report, Failure> {
    let done = store::migrate(backend).await?;
    let text = if done.is_noop() {
        format!("schema at version {}: nothing to do", done.to)
    } else {
        format!("schema migrated from version {} to {}", done.from, done.to)
    };
    Ok(Report::new(
        format,
        text,
        json!({ "from": done.from, "to": done.to }),
    ))
}
