//! The pages (GET).

use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use serde::Deserialize;

use super::buyer::{buyer_of, BuyerView, Tree, MAX_ALERTS};
use super::feeds::{AlertContext, AlertLevel};
use super::view::{self, bar, document, legend, meters, Nav};
use super::{csrf, Dashboard, DashboardSession};
use crate::domain::{
    ActorId, AttemptId, BuyerId, Mandate, MandateId, MandateStatus, MerchantScope, Outcome,
    Principal,
};
use crate::engine::{DisputeVerdict, EngineError};
use crate::service::Authenticated;

/// An answer that is not the page asked for, as a small HTML page.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn unauthorized() -> PageError {
        PageError::new(StatusCode::UNAUTHORIZED, "Sign in first.")
    }

    pub(crate) fn forbidden() -> PageError {
        PageError::new(
            StatusCode::FORBIDDEN,
            "This dashboard is for buyers: sign in as the buyer.",
        )
    }

    pub(crate) fn not_found() -> PageError {
        PageError::new(StatusCode::NOT_FOUND, "Not found.")
    }
}

impl From<EngineError> for PageError {
    fn from(e: EngineError) -> PageError {
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &e {
            // Never an oracle: "not yours" reads as "not found", with no id echoed.
            EngineError::NotFound { .. } => "Not found.".to_owned(),
            _ if status.is_server_error() => {
                "Something went wrong on our side; nothing was changed by this page. Try again."
                    .to_owned()
            }
            _ => e.to_string(),
        };
        PageError { status, message }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    link rel="icon" href="data:,";
                    title { (self.status.as_u16()) " · agent-mandate" }
                }
                body { main { h1 { (self.status.canonical_reason().unwrap_or("Error")) } p { (self.message) } } }
            }
        };
        with_headers(self.status, body.into_string())
    }
}

fn with_headers(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(VARY, HeaderValue::from_static("X-Dashboard-Fragment"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if let Ok(v) = HeaderValue::from_str(view::csp()) {
        h.insert("content-security-policy", v);
    }
    r
}

/// What every page starts with: the buyer, the session's CSRF token, whether only the
/// fragment is asked for.
pub(crate) struct Ctx {
    pub by: Principal,
    pub buyer: BuyerId,
    pub token: String,
    pub fragment: bool,
}

impl Ctx {
    pub(crate) fn new(
        d: &Dashboard,
        by: Principal,
        session: &DashboardSession,
        headers: &HeaderMap,
    ) -> Result<Ctx, PageError> {
        let buyer = buyer_of(&by).ok_or_else(PageError::forbidden)?;
        let token = csrf::token(&d.config.csrf_secret, &by, &session.0);
        Ok(Ctx {
            by,
            buyer,
            token,
            fragment: headers.contains_key("x-dashboard-fragment"),
        })
    }

    fn page(&self, d: &Dashboard, nav: Nav, title: &str, main: Markup) -> Response {
        let body = if self.fragment {
            main.into_string()
        } else {
            document(&d.config, &self.buyer, nav, title, main).into_string()
        };
        with_headers(StatusCode::OK, body)
    }

    /// The hidden CSRF field of a form.
    pub(crate) fn csrf_field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.token); }
    }
}

pub(crate) fn href(d: &Dashboard, path: &str) -> String {
    format!("{}{path}", d.config.base_path())
}

/// An id as one path segment or query value: every byte other than an ASCII letter, digit,
/// `-`, `.`, `_` or `~` percent-encoded (so `/`, `?`, `#`, `%`, `&`, `+` and any non-ASCII
/// character stay inside the segment; the router decodes it back). An id that is a dot
/// segment (`.`, `..`) cannot be built (see `domain::ids`), so a browser never resolves a link
/// to another page.
///
/// ```ignore
/// assert_eq!(seg("x/y"), "x%2Fy");
/// assert_eq!(seg("../all"), "..%2Fall");
/// ```
pub(crate) fn seg(id: impl std::fmt::Display) -> String {
    let text = id.to_string();
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn status_badge(status: MandateStatus) -> Markup {
    let class = match status {
        MandateStatus::Active => "status good",
        MandateStatus::PendingConfirmation => "status muted",
        MandateStatus::Used
        | MandateStatus::Expired
        | MandateStatus::Revoked
        | MandateStatus::Rejected => "status warn",
    };
    html! { span class=(class) { (status.as_str().replace('_', " ")) } }
}

fn merchants(m: &Mandate) -> String {
    match &m.scope().merchants {
        MerchantScope::Single { merchant_id } => merchant_id.to_string(),
        MerchantScope::Marketplace { marketplace_id, .. } => {
            format!("marketplace {marketplace_id}")
        }
        MerchantScope::Allowlist { merchant_ids } => merchant_ids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A mandate's card: who holds it, its status, its limits as bars.
pub(crate) fn mandate_card(d: &Dashboard, m: &Mandate, usage: &crate::domain::Usage) -> Markup {
    let link = href(d, &format!("/mandates/{}", seg(m.id())));
    html! {
        h3 { a href=(link) { (m.id()) } " " (status_badge(m.status())) }
        p.meta {
            (m.actor().kind_str()) " " strong { (m.actor().id) }
            " · up to " (m.scope().amount.max_amount) " a payment"
            " · at " (merchants(m))
            " · until " (m.scope().validity.expires_at.format("%Y-%m-%d %H:%M UTC"))
        }
        @for meter in meters(m, usage) { (bar(&meter)) }
    }
}

fn tree(d: &Dashboard, t: &Tree) -> Markup {
    html! {
        div.card {
            (mandate_card(d, &t.node.mandate, &t.node.usage))
            @if !t.children.is_empty() {
                div.children { @for c in &t.children { (tree(d, c)) } }
            }
        }
    }
}

async fn alerts(d: &Dashboard, ctx: &Ctx, v: &BuyerView) -> Result<Markup, PageError> {
    let context = AlertContext {
        engine: &d.engine,
        by: &ctx.by,
        buyer: &ctx.buyer,
        events: &v.events,
    };
    let list = d.alerts.recent(&context, MAX_ALERTS).await?;
    Ok(html! {
        h2 { "Recent alerts" }
        @if list.is_empty() { p.meta { "No alerts." } }
        @else {
            div.card { ul {
                @for a in &list {
                    li {
                        @match a.level {
                            AlertLevel::Critical => strong.warn { "Stopped: " },
                            AlertLevel::Warning => strong.warn { "Warning: " },
                        }
                        (a.title)
                        @if !a.detail.is_empty() { " (" (a.detail) ")" }
                        span.meta { " · " (a.at.format("%Y-%m-%d %H:%M UTC")) }
                    }
                }
            } }
        }
    })
}

/// `GET /`: the mandate trees and recent alerts.
pub(crate) async fn overview(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let ctx = Ctx::new(&d, by, &session, &headers)?;
    let v = d.view(&ctx.by, &ctx.buyer).await?;
    let waiting = v
        .mandates
        .iter()
        .filter(|m| m.mandate.status() == MandateStatus::PendingConfirmation)
        .count()
        + d.pending_payments(&v).await.len();
    let alerts = alerts(&d, &ctx, &v).await?;
    let main = html! {
        h1 { "Overview" }
        @if v.suspended() {
            p.notice { strong { "Everything is stopped." } " Your kill switch is on: no agent can pay. Support can turn it off." }
        }
        @if waiting > 0 {
            p.notice { a href=(href(&d, "/waiting")) { (waiting) " waiting for you" } }
        }
        (alerts)
        h2 { "Mandates" }
        (legend())
        @let trees = v.trees();
        @if trees.is_empty() { p.meta { "No mandates yet." } }
        @for t in &trees { (tree(&d, t)) }
    };
    Ok(ctx.page(&d, Nav::Overview, "Overview", main))
}

/// `GET /mandates/{id}`: one mandate with its chain.
pub(crate) async fn mandate(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let ctx = Ctx::new(&d, by, &session, &headers)?;
    let id: MandateId = id.parse().map_err(|_| PageError::not_found())?;
    let cu = d.engine.chain_usage(&ctx.by, &id).await?;
    let main = html! {
        h1 { "Mandate " (id) }
        (legend())
        @for (m, u) in cu.chain.iter().zip(&cu.usage) {
            div.card {
                @if m.id() != &id { p.meta { "Delegated from:" } }
                (mandate_card(&d, m, u))
            }
        }
        p { a href=(href(&d, &format!("/activity?mandate={}", seg(&id)))) { "Its payments" } }
    };
    Ok(ctx.page(&d, Nav::Overview, "Mandate", main))
}

/// The filter of the activity page.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct ActivityQuery {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    mandate: String,
}

fn outcome_text(o: Outcome) -> &'static str {
    match o {
        Outcome::Allowed => "allowed",
        Outcome::Blocked => "refused",
        Outcome::RequiresConfirmation => "waiting for your confirmation",
        Outcome::RequiresRevalidation => "checkout out of date",
    }
}

/// `GET /activity`: payment requests, newest first.
pub(crate) async fn activity(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    headers: HeaderMap,
    Query(q): Query<ActivityQuery>,
) -> Result<Response, PageError> {
    let ctx = Ctx::new(&d, by, &session, &headers)?;
    let v = d.view(&ctx.by, &ctx.buyer).await?;
    let agents = v.agents();
    let agent: Option<ActorId> = match q.agent.as_str() {
        "" => None,
        a => Some(a.parse().map_err(|_| PageError::not_found())?),
    };
    let mandate: Option<MandateId> = match q.mandate.as_str() {
        "" => None,
        m => Some(m.parse().map_err(|_| PageError::not_found())?),
    };
    let rows = d.activity(&ctx.by, &v, agent.as_ref()).await;
    let rows: Vec<_> = rows
        .into_iter()
        .filter(|r| mandate.as_ref().is_none_or(|m| *m == r.mandate_id))
        .collect();
    let main = html! {
        h1 { "Activity" }
        form method="get" action=(href(&d, "/activity")) {
            label for="agent" { "Agent" }
            select id="agent" name="agent" {
                option value="" selected[agent.is_none()] { "All agents" }
                @for a in &agents {
                    option value=(a) selected[agent.as_ref() == Some(a)] { (a) }
                }
            }
            button type="submit" { "Show" }
        }
        @if rows.is_empty() { p.meta { "No payments yet." } }
        @for r in &rows {
            div.card {
                h3 {
                    (r.amount)
                    @if let Some(m) = &r.merchant { " at " (m) }
                    " "
                    @match &r.attempt {
                        Some(a) => span.status.good { (a.status.as_str().replace('_', " ")) },
                        None => span.status.warn { (outcome_text(r.outcome)) },
                    }
                }
                p.meta {
                    (r.at.format("%Y-%m-%d %H:%M UTC")) " · agent " strong { (r.actor) }
                    " · mandate " a href=(href(&d, &format!("/mandates/{}", seg(&r.mandate_id)))) { (r.mandate_id) }
                }
                p.meta { "Cart " code { (r.snapshot_id) } }
                @if !r.blockers.is_empty() {
                    ul {
                        @for b in &r.blockers {
                            li { code { (b.code) } " " (b.message) }
                        }
                    }
                }
                @if let Some(a) = &r.attempt {
                    p { a href=(href(&d, &format!("/activity/{}", seg(&a.id)))) { "Evidence and audit check" } }
                }
            }
        }
    };
    Ok(ctx.page(&d, Nav::Activity, "Activity", main))
}

/// `GET /activity/{attempt}`: the dispute evidence of one of the buyer's attempts.
pub(crate) async fn evidence(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let ctx = Ctx::new(&d, by, &session, &headers)?;
    let id: AttemptId = id.parse().map_err(|_| PageError::not_found())?;
    // The buyer's read first: another buyer's attempt is not found.
    d.engine.attempt(&ctx.by, &id).await?;
    let e = d.engine.dispute_evidence(&id).await?;
    let main = html! {
        h1 { "Payment " (id) }
        div.card {
            p {
                strong { "Verdict: " }
                @match e.verdict {
                    DisputeVerdict::Consistent => span.good { "consistent: authorized by an allowed decision for this cart, and the audit trail is intact" },
                    DisputeVerdict::Inconsistent => span.warn { "inconsistent: see the failed checks" },
                }
            }
            p.meta {
                "Status " (e.attempt.status.as_str().replace('_', " "))
                " · authorized " (e.authorized) " · charged " (e.charged)
                " · merchant " (e.attempt.request.merchant_id)
                " · agent " (e.attempt.request.actor.id)
            }
        }
        h2 { "Checks" }
        div.card { table {
            thead { tr { th { "Check" } th { "Result" } th { "Detail" } } }
            tbody {
                @for c in &e.checks {
                    tr {
                        td { code { (c.name) } }
                        td { @if c.passed { span.good { "passed" } } @else { span.warn { "failed" } } }
                        td { (c.detail) }
                    }
                }
            }
        } }
        @if let Some(s) = &e.snapshot {
            h2 { "Cart" }
            (cart_table(s))
        }
        h2 { "Audit events" }
        div.card { table {
            thead { tr { th.num { "#" } th { "Event" } th { "Hash" } } }
            tbody {
                @for ev in &e.audit_segment {
                    tr {
                        td.num { (ev.seq) }
                        td { (event_type(&ev.body)) }
                        td { code { (ev.hash.to_hex().get(..16).unwrap_or_default()) "…" } }
                    }
                }
            }
        } }
    };
    Ok(ctx.page(&d, Nav::Activity, "Payment evidence", main))
}

/// The `type` of an event body, for a table row.
fn event_type(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["event"]["type"].as_str().map(|t| t.replace('_', " ")))
        .unwrap_or_else(|| "event".to_owned())
}

/// A cart's lines and totals.
pub(crate) fn cart_table(s: &crate::domain::CartSnapshot) -> Markup {
    let t = s.totals();
    html! {
        div.card {
            p.meta { "From " strong { (s.merchant().merchant_id) } " · valid until " (s.expires_at().format("%Y-%m-%d %H:%M UTC")) }
            table {
                thead { tr { th { "Item" } th.num { "Qty" } th.num { "Price" } th.num { "Line" } } }
                tbody {
                    @for i in s.items() {
                        tr {
                            td { (i.description) }
                            td.num { (i.quantity) }
                            td.num { (i.unit_price) }
                            td.num { @match i.line_total() { Ok(m) => (m), Err(_) => "—" } }
                        }
                    }
                }
                tfoot {
                    tr { td colspan="3" { "Subtotal" } td.num { (t.subtotal) } }
                    tr { td colspan="3" { "Shipping" } td.num { (t.shipping) } }
                    tr { td colspan="3" { "Tax" } td.num { (t.tax) } }
                    @if !t.discount.is_zero() { tr { td colspan="3" { "Discount" } td.num { "−" (t.discount) } } }
                    tr { th colspan="3" { "Total" } th.num { (t.total) } }
                }
            }
        }
    }
}

/// `GET /waiting`: mandates and payments waiting for the buyer.
pub(crate) async fn waiting(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let ctx = Ctx::new(&d, by, &session, &headers)?;
    let v = d.view(&ctx.by, &ctx.buyer).await?;
    let pending_mandates: Vec<_> = v
        .mandates
        .iter()
        .filter(|m| m.mandate.status() == MandateStatus::PendingConfirmation)
        .collect();
    let payments = d.pending_payments(&v).await;
    let reviews = super::review::section(&d, &ctx).await;
    let main = html! {
        h1 { "Waiting for you" }
        (reviews)
        h2 { "Payments to confirm" }
        @if payments.is_empty() { p.meta { "No payment waits for your confirmation." } }
        @for (i, p) in payments.iter().enumerate() {
            div.card {
                h3 { (p.amount) " for agent " (p.actor) }
                p.meta { "Asked " (p.at.format("%Y-%m-%d %H:%M UTC")) " under mandate " (p.mandate_id) " · cart " code { (p.snapshot_id) } }
                @match &p.cart {
                    Some(cart) => {
                        (cart_table(cart))
                        form.inline method="post" action=(href(&d, "/waiting/confirmations/approve")) {
                            (ctx.csrf_field())
                            input type="hidden" name="mandate_id" value=(p.mandate_id);
                            input type="hidden" name="snapshot_id" value=(p.snapshot_id);
                            button.primary type="submit" { "Approve " (cart.total()) }
                        }
                    },
                    None => p { "The cart of this payment is not available here; ask the agent to show it to you again." },
                }
                form.inline method="post" action=(href(&d, "/waiting/confirmations/reject")) {
                    (ctx.csrf_field())
                    input type="hidden" name="mandate_id" value=(p.mandate_id);
                    input type="hidden" name="snapshot_id" value=(p.snapshot_id);
                    button type="submit" aria-describedby=(format!("reject-note-{i}")) { "Reject" }
                }
                p.meta id=(format!("reject-note-{i}")) { "Rejecting records your refusal: the agent cannot pay this cart." }
            }
        }
        h2 { "Mandates to confirm" }
        @if pending_mandates.is_empty() { p.meta { "No mandate waits for your confirmation." } }
        (legend())
        @for (i, m) in pending_mandates.iter().enumerate() {
            div.card {
                (mandate_card(&d, &m.mandate, &m.usage))
                form.inline method="post" action=(href(&d, &format!("/waiting/mandates/{}/confirm", seg(m.mandate.id())))) {
                    (ctx.csrf_field())
                    button.primary type="submit" { "Confirm" }
                }
                form method="post" action=(href(&d, &format!("/waiting/mandates/{}/reject", seg(m.mandate.id())))) {
                    (ctx.csrf_field())
                    label for=(format!("reason-{i}")) { "Reason for rejecting (optional)" }
                    input type="text" id=(format!("reason-{i}")) name="reason" maxlength="200";
                    button type="submit" { "Reject" }
                }
            }
        }
    };
    Ok(ctx.page(&d, Nav::Waiting, "Waiting for you", main))
}

/// `GET /stop`: the kill switches.
pub(crate) async fn stop(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let ctx = Ctx::new(&d, by, &session, &headers)?;
    let v = d.view(&ctx.by, &ctx.buyer).await?;
    let main = html! {
        h1 { "Stop" }
        @if v.suspended() {
            p.notice { strong { "Everything is stopped." } " Your kill switch is on: no agent can pay with your cards. Support can turn it off." }
        }
        h2 { "Everything" }
        div.card {
            p { "Blocks every agent and every card of yours at once. Payments already authorized stay as they are." }
            @if !v.suspended() { p { a href=(href(&d, "/stop/all")) { strong.warn { "Stop everything…" } } } }
        }
        h2 { "One agent" }
        @let agents = v.agents();
        @if agents.is_empty() { p.meta { "No agents." } }
        @for a in &agents {
            @let live = v.live_mandates_of(a);
            div.card {
                h3 { (a) }
                p.meta { (live.len()) " usable mandate(s)" }
                @if live.is_empty() { p.meta { "Stopped: it holds no usable mandate of yours." } }
                @else { p { a href=(href(&d, &format!("/stop/agents/{}", seg(a)))) { strong.warn { "Stop " (a) "…" } } } }
            }
        }
    };
    Ok(ctx.page(&d, Nav::Stop, "Stop", main))
}

/// `GET /stop/agents/{actor}`: the confirmation step of stopping one agent.
pub(crate) async fn stop_agent(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    headers: HeaderMap,
    Path(actor): Path<String>,
) -> Result<Response, PageError> {
    let ctx = Ctx::new(&d, by, &session, &headers)?;
    let actor: ActorId = actor.parse().map_err(|_| PageError::not_found())?;
    let v = d.view(&ctx.by, &ctx.buyer).await?;
    if !v.agents().contains(&actor) {
        return Err(PageError::not_found());
    }
    let live = v.live_mandates_of(&actor);
    let below = v.delegated_below(&actor);
    let main = html! {
        h1 { "Stop " (actor) "?" }
        div.card {
            p { "These mandates will be revoked now. A revocation cannot be undone: to let the agent pay again you give it a new mandate." }
            ul { @for m in &live { li { (m.id()) " (" (m.status().as_str().replace('_', " ")) ")" } } }
            @if !below.is_empty() {
                p { "Also stopped, because they were delegated from it:" }
                ul { @for m in &below { li { (m.id()) " held by " (m.actor().id) } } }
            }
            form method="post" action=(href(&d, &format!("/stop/agents/{}", seg(&actor)))) {
                (ctx.csrf_field())
                input type="hidden" name="confirm" value="yes";
                label.check for="void_open" {
                    input type="checkbox" id="void_open" name="void_open" value="yes";
                    " Also cancel its open authorizations (money held at the merchant is released)"
                }
                label for="reason" { "Reason (optional)" }
                input type="text" id="reason" name="reason" maxlength="200";
                button.danger type="submit" { "Yes, stop " (actor) " now" }
            }
            p { a href=(href(&d, "/stop")) { "Cancel" } }
        }
    };
    Ok(ctx.page(&d, Nav::Stop, "Stop an agent", main))
}

/// `GET /stop/all`: the confirmation step of stopping everything.
pub(crate) async fn stop_all(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let ctx = Ctx::new(&d, by, &session, &headers)?;
    let main = html! {
        h1 { "Stop everything?" }
        div.card {
            p { "Every agent and every card of yours is blocked at its next payment. Only support can turn this off again." }
            form method="post" action=(href(&d, "/stop/all")) {
                (ctx.csrf_field())
                input type="hidden" name="confirm" value="yes";
                label for="reason" { "Reason (optional)" }
                input type="text" id="reason" name="reason" maxlength="200";
                button.danger type="submit" { "Yes, stop everything now" }
            }
            p { a href=(href(&d, "/stop")) { "Cancel" } }
        }
    };
    Ok(ctx.page(&d, Nav::Stop, "Stop everything", main))
}

trait KindStr {
    fn kind_str(&self) -> &'static str;
}

impl KindStr for crate::domain::Actor {
    fn kind_str(&self) -> &'static str {
        match self.kind {
            crate::domain::ActorKind::Agent => "agent",
            crate::domain::ActorKind::Human => "person",
            crate::domain::ActorKind::System => "system",
        }
    }
}
