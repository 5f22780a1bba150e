//! The dashboard over real HTTP on 127.0.0.1 for the `dashboard_*` tests, behind a stand-in
//! login that takes the principal and the session from test headers (a host's login layer
//! checks a session cookie instead).

#![allow(dead_code, reason = "each test uses a different subset")]

use agent_mandate::dashboard::{Dashboard, DashboardConfig, DashboardSession};
use agent_mandate::domain::Principal;
use agent_mandate::ports::Secret;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use super::dashboard_seed::{seed, Seeded};

pub const SECRET: &str = "test secret of the host, 32 bytes at least";

/// The stand-in login: `x-test-principal: buyer:ID | agent:ID | operator:ID`,
/// `x-test-session: ID`.
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
            "operator" => Principal::Operator(id.parse().ok()?),
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

/// A served dashboard over the seeded engine.
pub struct Served {
    pub seeded: Seeded,
    pub base: String,
    pub client: reqwest::Client,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The CSRF token of the first form of the page.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF field");
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').expect("end")].to_owned()
    }
}

pub async fn serve() -> Served {
    serve_seeded(seed().await).await
}

/// Serves the dashboard over `seeded` (its engine may be another one over the same ports).
pub async fn serve_seeded(seeded: Seeded) -> Served {
    let config = DashboardConfig::new(Secret::new(SECRET))
        .expect("config")
        .with_base_path("/dash")
        .expect("base");
    let dashboard = Dashboard::new(seeded.engine.clone(), config).with_carts(seeded.carts.clone());
    let app = Router::new()
        .nest("/dash", dashboard.router())
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
        seeded,
        base: format!("http://{addr}/dash"),
        client,
    }
}

impl Served {
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        who: Option<&str>,
        session: Option<&str>,
    ) -> reqwest::RequestBuilder {
        // Nested at /dash, the overview is /dash (axum matches a nested `/` without the slash).
        let path = if path == "/" { "" } else { path };
        let mut r = self.client.request(method, format!("{}{path}", self.base));
        if let Some(w) = who {
            r = r.header("x-test-principal", w);
        }
        if let Some(s) = session {
            r = r.header("x-test-session", s);
        }
        r
    }

    async fn read(r: reqwest::RequestBuilder) -> Page {
        let answer = r.send().await.expect("answered");
        Page {
            status: answer.status().as_u16(),
            headers: answer.headers().clone(),
            body: answer.text().await.expect("body"),
        }
    }

    /// GET as `who` in `session`.
    pub async fn get_as(&self, path: &str, who: Option<&str>, session: Option<&str>) -> Page {
        Self::read(self.request(reqwest::Method::GET, path, who, session)).await
    }

    /// GET as the seeded buyer in session `s1`.
    pub async fn get(&self, path: &str) -> Page {
        self.get_as(path, Some("buyer:buyer_456"), Some("s1")).await
    }

    /// POST a form as `who` in `session`.
    pub async fn post_as(
        &self,
        path: &str,
        who: &str,
        session: &str,
        form: &[(&str, &str)],
    ) -> Page {
        Self::read(
            self.request(reqwest::Method::POST, path, Some(who), Some(session))
                .form(form),
        )
        .await
    }

    /// POST a form as the seeded buyer in session `s1`, with the session's CSRF token.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let token = self.get("/stop/all").await.csrf();
        let mut fields = vec![("csrf", token.as_str())];
        fields.extend_from_slice(form);
        self.post_as(path, "buyer:buyer_456", "s1", &fields).await
    }
}
