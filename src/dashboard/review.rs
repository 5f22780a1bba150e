//! Purchases in their review window on the "Waiting for you" page, each with a Cancel button
//! (`POST /waiting/reviews/{attempt}/cancel`, with the CSRF token like every action).

use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::buyer::buyer_of;
use super::pages::{href, Ctx, PageError};
use super::{csrf, Dashboard, DashboardSession};
use crate::domain::AttemptId;
use crate::engine::EngineError;
use crate::service::Authenticated;

/// How many waiting purchases the page lists.
const MAX_SHOWN: usize = 50;

/// The section of the buyer's purchases waiting in their review window (empty without a
/// review queue).
pub(crate) async fn section(d: &Dashboard, ctx: &Ctx) -> Markup {
    let Some(queue) = d.engine.reviews() else {
        return html! {};
    };
    let waiting = queue.pending_for(&ctx.buyer, MAX_SHOWN).await;
    html! {
        h2 { "Purchases about to be paid" }
        @match &waiting {
            Err(_) => p.meta { "The purchases waiting to be paid cannot be read now; reload the page." },
            Ok(list) if list.is_empty() => p.meta { "No purchase waits to be paid." },
            Ok(list) => {
                @for e in list {
                    div.card {
                        h3 { (e.amount) " at " (e.merchant_id) " by agent " (e.actor_id) }
                        p.meta { "Paid at " (e.due_at.format("%Y-%m-%d %H:%M:%S UTC")) " unless you cancel it · mandate " (e.mandate_id) }
                        form.inline method="post" action=(href(d, &format!("/waiting/reviews/{}/cancel", e.attempt_id))) {
                            (ctx.csrf_field())
                            button type="submit" { "Cancel this purchase" }
                        }
                    }
                }
            },
        }
    }
}

/// The cancel form: its CSRF token only.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CancelForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /waiting/reviews/{attempt}/cancel`: the buyer cancels a purchase in its window.
/// Another buyer's purchase (or an unknown one) is 404, never a hint that it exists.
pub(crate) async fn cancel(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    Path(attempt): Path<String>,
    Form(form): Form<CancelForm>,
) -> Result<Response, PageError> {
    buyer_of(&by).ok_or_else(PageError::forbidden)?;
    if !csrf::verify(&d.config.csrf_secret, &by, &session.0, &form.csrf) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from your dashboard. Reload the page and try again.",
        ));
    }
    let id: AttemptId = attempt.parse().map_err(|_| PageError::not_found())?;
    match d.engine.cancel_review(&by, &id).await {
        Ok(_) => {}
        Err(EngineError::NotPermitted { .. } | EngineError::NotFound { .. }) => {
            return Err(PageError::not_found());
        }
        Err(EngineError::Transition(_) | EngineError::Invalid { .. }) => {
            return Err(PageError::new(
                StatusCode::CONFLICT,
                "This purchase is no longer waiting: it was paid or cancelled already.",
            ));
        }
        Err(e) => return Err(e.into()),
    }
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&href(&d, "/waiting")) {
        r.headers_mut().insert(LOCATION, v);
    }
    Ok(r)
}
