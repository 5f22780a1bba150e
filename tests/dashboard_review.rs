//! The review window on the buyer's dashboard over HTTP: the purchases waiting to be paid are
//! listed with a Cancel button; the buyer's cancel works; another buyer's cancel is 404 and a
//! forged form is refused, both changing nothing (I14: identity is checked, never declared).
#![cfg(all(feature = "dashboard", feature = "testkit"))]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::sync::Arc;

use agent_mandate::adapters::memory::MemoryReviewQueue;
use agent_mandate::dashboard::{Dashboard, DashboardConfig, DashboardSession};
use agent_mandate::domain::{AttemptStatus, Principal};
use agent_mandate::engine::{Controls, EngineConfig, PaymentOutcome};
use agent_mandate::ports::Secret;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use common::engine::{backpack_spec, world_with, World};

/// The stand-in login: `x-test-principal: buyer:ID | agent:ID`, `x-test-session: ID`.
async fn login(mut request: Request, next: Next) -> Response {
    let (principal, session) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header("x-test-principal"), header("x-test-session"))
    };
    let principal = principal.and_then(|p| {
        let (kind, id) = p.split_once(':')?;
        Some(match kind {
            "buyer" => Principal::Buyer(id.parse().ok()?),
            "agent" => Principal::Agent(id.parse().ok()?),
            _ => return None,
        })
    });
    if let Some(p) = principal {
        request.extensions_mut().insert(p);
    }
    if let Some(s) = session {
        request.extensions_mut().insert(DashboardSession(s));
    }
    next.run(request).await
}

struct Served {
    w: World,
    base: String,
    client: reqwest::Client,
}

async fn serve() -> Served {
    let config = EngineConfig::default()
        .with_controls(Controls::off().with_review_window(Some(Default::default())));
    let w = world_with(config, backpack_spec(true)).await;
    let engine = w
        .engine
        .clone()
        .with_reviews(Arc::new(MemoryReviewQueue::new()));
    let w = World { engine, ..w };
    let dash = Dashboard::new(
        w.engine.clone(),
        DashboardConfig::new(Secret::new("test secret of the host, 32 bytes at least"))
            .expect("config")
            .with_base_path("/dash")
            .expect("base"),
    );
    let app = Router::new()
        .nest("/dash", dash.router())
        .layer(middleware::from_fn(login));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = agent_mandate::adapters::http::client_builder()
        .expect("tls")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    Served {
        w,
        base: format!("http://{addr}/dash"),
        client,
    }
}

impl Served {
    async fn get(&self, path: &str, who: &str, session: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .header("x-test-principal", who)
            .header("x-test-session", session)
            .send()
            .await
            .expect("answered");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn post(&self, path: &str, who: &str, session: &str, csrf: &str) -> u16 {
        self.client
            .post(format!("{}{path}", self.base))
            .header("x-test-principal", who)
            .header("x-test-session", session)
            .form(&[("csrf", csrf)])
            .send()
            .await
            .expect("answered")
            .status()
            .as_u16()
    }

    async fn status(&self, id: &agent_mandate::domain::AttemptId) -> AttemptStatus {
        self.w
            .engine
            .ports()
            .store
            .attempt(id)
            .await
            .expect("read")
            .expect("kept")
            .status
    }
}

fn csrf_of(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF field");
    let rest = &body[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end")].to_owned()
}

const ME: &str = "buyer:buyer_456";
const OTHER: &str = "buyer:buyer_999";

#[tokio::test]
async fn the_buyer_sees_the_waiting_purchase_and_cancels_it() {
    let s = serve().await;
    let PaymentOutcome::Scheduled { attempt, .. } =
        s.w.engine
            .execute_payment(&agent_p(), &s.w.execute("pay-1"))
            .await
            .expect("execute")
    else {
        panic!("expected a scheduled payment");
    };
    let (status, page) = s.get("/waiting", ME, "s1").await;
    assert_eq!(status, 200);
    let action = format!("/dash/waiting/reviews/{}/cancel", attempt.id);
    assert!(
        page.contains(&action),
        "the page lists the purchase with its cancel form"
    );
    assert!(page.contains("Cancel this purchase"));
    let path = format!("/waiting/reviews/{}/cancel", attempt.id);

    // A forged token: refused, nothing changes.
    assert_eq!(s.post(&path, ME, "s1", "forged").await, 403);
    // The token of another session of the same buyer: refused.
    let (_, other_session) = s.get("/waiting", ME, "s2").await;
    assert_eq!(s.post(&path, ME, "s1", &csrf_of(&other_session)).await, 403);
    // Another buyer, with a valid token of their own: 404, as for an unknown purchase.
    let (_, theirs) = s.get("/waiting", OTHER, "s3").await;
    assert!(
        !theirs.contains(&action),
        "another buyer does not see the purchase"
    );
    let (_, their_form) = s.get("/stop/all", OTHER, "s3").await;
    assert_eq!(s.post(&path, OTHER, "s3", &csrf_of(&their_form)).await, 404);
    // An agent has no dashboard.
    assert_eq!(s.post(&path, "agent:agent_123", "s4", "x").await, 403);
    assert_eq!(
        s.status(&attempt.id).await,
        AttemptStatus::AuthorityValidated
    );
    assert_eq!(s.w.usage().await.held.minor_units(), 14400);

    // The buyer, with the page's token: cancelled, the hold released.
    assert_eq!(s.post(&path, ME, "s1", &csrf_of(&page)).await, 303);
    assert_eq!(s.status(&attempt.id).await, AttemptStatus::Cancelled);
    assert_eq!(s.w.usage().await.held.minor_units(), 0);
    let (_, after) = s.get("/waiting", ME, "s1").await;
    assert!(
        !after.contains(&action),
        "a cancelled purchase no longer waits"
    );
    // Again: 409, nothing to cancel.
    assert_eq!(s.post(&path, ME, "s1", &csrf_of(&page)).await, 409);
    // An id that names nothing: 404.
    assert_eq!(
        s.post(
            "/waiting/reviews/att_nothing/cancel",
            ME,
            "s1",
            &csrf_of(&page)
        )
        .await,
        404
    );
}
