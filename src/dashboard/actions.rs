//! The actions (POST): each checks the CSRF token first, then posts the engine's command as
//! the authenticated buyer, then sends the browser back to a page (303).

use axum::extract::{Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::buyer::buyer_of;
use super::pages::{href, PageError};
use super::{csrf, Dashboard, DashboardSession};
use crate::domain::{
    Actor, ActorId, ActorKind, BuyerId, ChannelRef, Confirmation, ConfirmationId,
    ConfirmationScope, IdempotencyKey, LifecycleEvent, MandateId, Party, PaymentAction, Principal,
    SnapshotId, Text,
};
use crate::engine::{ChangeMandate, DeclineConfirmation, RecordConfirmation, SetSuspension};
use crate::service::Authenticated;

/// Every field a form may post; each action reads the ones it needs. Missing fields are
/// empty, so the CSRF check always runs first and a bad form answers an HTML page.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Posted {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    mandate_id: String,
    #[serde(default)]
    snapshot_id: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    void_open: String,
    #[serde(default)]
    reason: String,
}

/// The buyer of a post whose token verifies.
fn checked(
    d: &Dashboard,
    by: &Principal,
    session: &DashboardSession,
    form: &Posted,
) -> Result<BuyerId, PageError> {
    let buyer = buyer_of(by).ok_or_else(PageError::forbidden)?;
    if !csrf::verify(&d.config.csrf_secret, by, &session.0, &form.csrf) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired or did not come from your dashboard. Reload the page and try again.",
        ));
    }
    Ok(buyer)
}

fn back(d: &Dashboard, path: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&href(d, path)) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// An idempotency key for a dashboard command: `dash-` and a digest of what it is about.
fn key(parts: &[&str]) -> Result<IdempotencyKey, PageError> {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = hex::encode(h.finalize());
    IdempotencyKey::new(format!("dash-{}", &digest[..40]))
        .map_err(|_| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "key"))
}

fn reason(text: &str, default: &str) -> Result<Text, PageError> {
    let t = text.trim();
    Text::new(if t.is_empty() { default } else { t })
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, format!("reason: {e}")))
}

fn mandate_id(text: &str) -> Result<MandateId, PageError> {
    text.parse().map_err(|_| PageError::not_found())
}

/// `POST /waiting/mandates/{id}/confirm`.
pub(crate) async fn confirm_mandate(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    Path(id): Path<String>,
    Form(form): Form<Posted>,
) -> Result<Response, PageError> {
    checked(&d, &by, &session, &form)?;
    let id = mandate_id(&id)?;
    // The buyer's read: another buyer's mandate is not found (and nothing is changed).
    d.engine.mandate(&by, &id).await?;
    let command = ChangeMandate::new(key(&["confirm", id.as_str()])?, id, LifecycleEvent::Confirm);
    d.engine.change_mandate(&by, &command).await?;
    Ok(back(&d, "/waiting"))
}

/// `POST /waiting/mandates/{id}/reject`.
pub(crate) async fn reject_mandate(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    Path(id): Path<String>,
    Form(form): Form<Posted>,
) -> Result<Response, PageError> {
    checked(&d, &by, &session, &form)?;
    let id = mandate_id(&id)?;
    d.engine.mandate(&by, &id).await?;
    let event = LifecycleEvent::Reject {
        reason: reason(&form.reason, "rejected from the dashboard")?,
    };
    let command = ChangeMandate::new(key(&["reject", id.as_str()])?, id, event);
    d.engine.change_mandate(&by, &command).await?;
    Ok(back(&d, "/waiting"))
}

/// `POST /waiting/confirmations/approve`: records the buyer's confirmation of exactly the cart
/// the page showed, if the agent still waits on that cart.
pub(crate) async fn approve_payment(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    Form(form): Form<Posted>,
) -> Result<Response, PageError> {
    let buyer = checked(&d, &by, &session, &form)?;
    let mandate = mandate_id(&form.mandate_id)?;
    let seen: SnapshotId = form
        .snapshot_id
        .parse()
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "snapshot_id is not a snapshot id"))?;
    let view = d.view(&by, &buyer).await?;
    if view.mandate(&mandate).is_none() {
        return Err(PageError::not_found());
    }
    let pending = d.pending_payments(&view).await;
    let Some(p) = pending.iter().find(|p| p.mandate_id == mandate) else {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "Nothing waits for your confirmation under this mandate any more.",
        ));
    };
    if p.snapshot_id != seen {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "The cart changed since you looked at it. Nothing was approved: review the new cart.",
        ));
    }
    let Some(cart) = &p.cart else {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "The cart of this payment is not available, so it cannot be approved here.",
        ));
    };
    let now = d.engine.ports().clock.now();
    if cart.is_expired(now) {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            "This cart has expired. Nothing was approved.",
        ));
    }
    let digest = hex::encode(Sha256::digest(
        format!("{buyer}\0{mandate}\0{seen}").as_bytes(),
    ));
    let id = ConfirmationId::new(format!("conf_dash_{}", &digest[..32]))
        .map_err(|_| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "id"))?;
    let confirmed_by = Actor {
        id: ActorId::new(buyer.as_str())
            .map_err(|_| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "id"))?,
        kind: ActorKind::Human,
    };
    let confirmation = Confirmation {
        id,
        buyer_id: buyer.clone(),
        confirmed_by,
        confirmed_at: now,
        expires_at: Some(cart.expires_at()),
        snapshot_id: seen,
        scope: ConfirmationScope {
            mandate_id: mandate.clone(),
            actions: [PaymentAction::Authorize].into_iter().collect(),
            max_amount: cart.total(),
        },
        channel_ref: ChannelRef::new("dashboard")
            .map_err(|_| PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "channel"))?,
    };
    let command = RecordConfirmation::new(
        key(&["approve", mandate.as_str(), seen.to_string().as_str()])?,
        confirmation,
    );
    d.engine.record_confirmation(&by, &command).await?;
    Ok(back(&d, "/waiting"))
}

/// `POST /waiting/confirmations/reject`: records the buyer's refusal of the cart the page
/// showed ([`Engine::decline_confirmation`](crate::engine::Engine::decline_confirmation)):
/// the agent's next request for that cart under that mandate is refused
/// (`CONFIRMATION_DECLINED`). A replayed form answers the first decline.
pub(crate) async fn dismiss_payment(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    Form(form): Form<Posted>,
) -> Result<Response, PageError> {
    checked(&d, &by, &session, &form)?;
    let mandate = mandate_id(&form.mandate_id)?;
    let seen: SnapshotId = form
        .snapshot_id
        .parse()
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "snapshot_id is not a snapshot id"))?;
    // The buyer's read: another buyer's mandate is not found (and nothing is recorded).
    d.engine.mandate(&by, &mandate).await?;
    let command = DeclineConfirmation::new(
        key(&["decline", mandate.as_str(), seen.to_string().as_str()])?,
        mandate,
        seen,
        reason(&form.reason, "declined from the dashboard")?,
    );
    d.engine.decline_confirmation(&by, &command).await?;
    Ok(back(&d, "/waiting"))
}

fn confirmed(form: &Posted) -> Result<(), PageError> {
    if form.confirm == "yes" {
        Ok(())
    } else {
        Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Confirm first: nothing was stopped.",
        ))
    }
}

/// `POST /stop/agents/{actor}`: revokes every usable mandate of the buyer the agent holds
/// (which stops what it delegated too), and voids their open authorizations if asked.
pub(crate) async fn stop_agent(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    Path(actor): Path<String>,
    Form(form): Form<Posted>,
) -> Result<Response, PageError> {
    let buyer = checked(&d, &by, &session, &form)?;
    confirmed(&form)?;
    let actor: ActorId = actor.parse().map_err(|_| PageError::not_found())?;
    let view = d.view(&by, &buyer).await?;
    if !view.agents().contains(&actor) {
        return Err(PageError::not_found());
    }
    let why = reason(
        &form.reason,
        &format!("agent {actor} stopped from the dashboard"),
    )?;
    let live: Vec<MandateId> = view
        .live_mandates_of(&actor)
        .into_iter()
        .map(|m| m.id().clone())
        .collect();
    for id in &live {
        let command = ChangeMandate::new(
            key(&["revoke", id.as_str()])?,
            id.clone(),
            LifecycleEvent::Revoke {
                reason: why.clone(),
            },
        );
        d.engine.change_mandate(&by, &command).await?;
    }
    if form.void_open == "yes" {
        // Every mandate of the buyer the agent holds, stopped before or now: the engine voids
        // the open authorizations of attempts whose chain passes through it, so its
        // delegates' (sub-agents', tokens') authorizations go with its own.
        let held: Vec<MandateId> = view
            .mandates_of(&actor)
            .into_iter()
            .map(|m| m.id().clone())
            .collect();
        for id in &held {
            d.engine.void_open_authorizations(&by, id).await?;
        }
    }
    Ok(back(&d, "/stop"))
}

/// `POST /stop/all`: the buyer's own kill switch.
pub(crate) async fn stop_all(
    State(d): State<Dashboard>,
    Authenticated(by): Authenticated,
    session: DashboardSession,
    Form(form): Form<Posted>,
) -> Result<Response, PageError> {
    let buyer = checked(&d, &by, &session, &form)?;
    confirmed(&form)?;
    let now = d.engine.ports().clock.now();
    let command = SetSuspension::new(
        key(&[
            "stop-all",
            buyer.as_str(),
            &now.timestamp_micros().to_string(),
        ])?,
        Party::Buyer(buyer),
        true,
        reason(&form.reason, "everything stopped from the dashboard")?,
    );
    d.engine.set_suspension(&by, &command).await?;
    Ok(back(&d, "/stop"))
}
