//! The buyer's dashboard on the memory adapters, seeded with a buyer, three agents, a
//! delegation tree, payments (captured, held, refused) and a payment waiting for the buyer's
//! confirmation. Serves on 127.0.0.1 until stopped.
//!
//! ```sh
//! cargo run --example dashboard --features dashboard,testkit            # http://127.0.0.1:8088/dashboard
//! DASHBOARD_ADDR=127.0.0.1:9000 cargo run --example dashboard --features dashboard,testkit
//! ```
//!
//! The login is a stand-in: every request is the demo buyer in one session. Yours checks the
//! session cookie, then inserts the buyer's `Principal` and a `DashboardSession` into the
//! request's extensions; the dashboard never reads who asks from the request itself.

#[path = "../tests/dashboard_seed/mod.rs"]
mod dashboard_seed;

use agent_mandate::dashboard::{Dashboard, DashboardConfig, DashboardSession};
use agent_mandate::ports::Secret;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;

/// The stand-in login layer.
async fn login(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(dashboard_seed::buyer_p());
    request
        .extensions_mut()
        .insert(DashboardSession("demo-session".to_owned()));
    next.run(request).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeded = dashboard_seed::seed().await;
    let config = DashboardConfig::new(Secret::new(
        "demo secret: use 32+ random bytes from your secret store",
    ))?
    .with_base_path("/dashboard")?
    .with_poll_seconds(5)?;
    let dashboard = Dashboard::new(seeded.engine.clone(), config).with_carts(seeded.carts.clone());
    let app = Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .nest("/dashboard", dashboard.router())
        .layer(middleware::from_fn(login));
    let addr = std::env::var("DASHBOARD_ADDR").unwrap_or_else(|_| "127.0.0.1:8088".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("dashboard on http://{}/dashboard", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
