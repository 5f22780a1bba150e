//! The buyer's dashboard (feature `dashboard`): an axum [`Router`] of server-rendered pages the
//! host mounts behind its own login.
//!
//! The host authenticates; the dashboard shows what the engine's reads let the authenticated
//! buyer see and posts the engine's commands as that buyer. Every request needs two request
//! extensions the host's login layer inserts after checking the session:
//!
//! * the caller's [`Principal`](crate::domain::Principal) (read by
//!   [`Authenticated`](crate::service::Authenticated)); only a `Buyer` principal gets pages,
//!   any other principal is refused with 403;
//! * a [`DashboardSession`]: an opaque, stable id of the login session (a digest of the
//!   session cookie will do). Every form carries a CSRF token, the HMAC-SHA256 of the
//!   principal and this id under the host's secret ([`DashboardConfig::new`]); a post whose
//!   token does not verify (compared in constant time) changes nothing and answers 403.
//!
//! | page | path | what |
//! |---|---|---|
//! | Overview | `GET /` | every mandate tree of the buyer (root, delegated children, agents), a bar per limit (lifetime, each window, uses) with the 80% mark and held against spent; recent alerts |
//! | Mandate | `GET /mandates/{id}` | one mandate, its chain and its limits |
//! | Activity | `GET /activity?agent=` | payment attempts and refused requests: status, amount, merchant, snapshot, the blockers of a refusal |
//! | Evidence | `GET /activity/{attempt}` | the attempt's dispute evidence, its checks and the audit chain's verification |
//! | Waiting for you | `GET /waiting` | mandates waiting for the buyer, and payments waiting for a confirmation (the cart's lines and totals) |
//! | Stop | `GET /stop`, `GET /stop/agents/{actor}`, `GET /stop/all` | the kill switch per agent and for everything, each behind a confirmation step |
//!
//! | action | path | engine command (as the buyer) |
//! |---|---|---|
//! | confirm or reject a mandate | `POST /waiting/mandates/{id}/confirm`, `.../reject` | [`Engine::change_mandate`] |
//! | approve a payment | `POST /waiting/confirmations/approve` | [`Engine::record_confirmation`], only for the cart the buyer saw: a post naming another snapshot than the one the agent now waits on is refused (409) |
//! | decline a payment | `POST /waiting/confirmations/reject` | [`Engine::decline_confirmation`]: the buyer's refusal of that cart under that mandate, audited; the agent's next request for it is refused (`CONFIRMATION_DECLINED`) |
//! | stop an agent | `POST /stop/agents/{actor}` | [`Engine::change_mandate`] (revoke) on each of the buyer's mandates the agent holds, which also stops what it delegated; optionally [`Engine::void_open_authorizations`] |
//! | stop everything | `POST /stop/all` | [`Engine::set_suspension`] on the buyer: every agent and every credential of the buyer is blocked at its next decision (`BUYER_SUSPENDED`); only support can lift it |
//!
//! Pages poll themselves (a few lines of script, every [`DashboardConfig::with_poll_seconds`]
//! seconds, only the `<main>` element, never while a control in it has focus); without script
//! they are complete. No asset is loaded from anywhere: CSS and script are inline and allowed
//! by their hashes in the `Content-Security-Policy`.
//!
//! ```no_run
//! # #[cfg(feature = "testkit")] {
//! use agent_mandate::dashboard::{Dashboard, DashboardConfig};
//! use agent_mandate::ports::Secret;
//! # fn engine() -> agent_mandate::engine::Engine { unimplemented!() }
//! let config = DashboardConfig::new(Secret::new("a host secret of at least 32 bytes....."))?
//!     .with_base_path("/dashboard")?;
//! let router: axum::Router = Dashboard::new(engine(), config).router();
//! // host: Router::new().nest("/dashboard", router).layer(your_login_layer)
//! # let _ = router;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod actions;
mod buyer;
mod csrf;
mod feeds;
mod pages;
mod review;
mod view;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;

use crate::domain::{AuditEvent, BuyerId};
use crate::engine::Engine;
use crate::ports::Secret;

pub use buyer::{MAX_ACTIVITY, MAX_ALERTS};
pub use feeds::{Alert, AlertContext, AlertFeed, AlertLevel, CartSource, MemoryCarts, TrailAlerts};
pub use pages::PageError;
pub use view::palette;

/// The shortest CSRF secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// A refused dashboard configuration; names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardConfigError {
    /// The CSRF secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("csrf_secret: at least {MIN_SECRET_LEN} bytes are needed, got {len}")]
    WeakSecret {
        /// Its length.
        len: usize,
    },
    /// The base path is not empty or `/` followed by path characters, without a trailing `/`.
    #[error("base_path: {0}")]
    BasePath(&'static str),
    /// The poll interval is outside 2 to 3600 seconds.
    #[error("poll_seconds: must be 2 to 3600, got {0}")]
    PollSeconds(u32),
}

/// How the dashboard is set up.
///
/// ```
/// use agent_mandate::dashboard::DashboardConfig;
/// use agent_mandate::ports::Secret;
/// let config = DashboardConfig::new(Secret::new("0123456789abcdef0123456789abcdef"))?
///     .with_base_path("/me")?
///     .with_poll_seconds(5)?;
/// assert_eq!(config.base_path(), "/me");
/// assert!(DashboardConfig::new(Secret::new("short")).is_err());
/// # Ok::<(), agent_mandate::dashboard::DashboardConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DashboardConfig {
    csrf_secret: Arc<Secret>,
    base_path: String,
    poll_seconds: u32,
}

impl DashboardConfig {
    /// A configuration with the host's CSRF secret (at least [`MIN_SECRET_LEN`] bytes, kept
    /// out of every output), links relative to `/` and a 10-second poll.
    pub fn new(csrf_secret: Secret) -> Result<DashboardConfig, DashboardConfigError> {
        if csrf_secret.len() < MIN_SECRET_LEN {
            return Err(DashboardConfigError::WeakSecret {
                len: csrf_secret.len(),
            });
        }
        Ok(DashboardConfig {
            csrf_secret: Arc::new(csrf_secret),
            base_path: String::new(),
            poll_seconds: 10,
        })
    }

    /// The path the host mounts the router at (`""` or `/x`, no trailing `/`), for links.
    pub fn with_base_path(
        mut self,
        path: impl Into<String>,
    ) -> Result<DashboardConfig, DashboardConfigError> {
        let path = path.into();
        if !(path.is_empty() || path.starts_with('/')) {
            return Err(DashboardConfigError::BasePath("must start with /"));
        }
        if path.ends_with('/') {
            return Err(DashboardConfigError::BasePath("must not end with /"));
        }
        if !path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
        {
            return Err(DashboardConfigError::BasePath(
                "only ASCII letters, digits, / - _ . are allowed",
            ));
        }
        self.base_path = path;
        Ok(self)
    }

    /// How often a page refreshes its content, in seconds (2 to 3600).
    pub fn with_poll_seconds(
        mut self,
        seconds: u32,
    ) -> Result<DashboardConfig, DashboardConfigError> {
        if !(2..=3600).contains(&seconds) {
            return Err(DashboardConfigError::PollSeconds(seconds));
        }
        self.poll_seconds = seconds;
        Ok(self)
    }

    /// The base path of links.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The poll interval in seconds.
    pub fn poll_seconds(&self) -> u32 {
        self.poll_seconds
    }
}

/// The login session of a request: an opaque id the host's login layer inserts into the
/// request's extensions next to the principal (stable for the session, different for every
/// session). The CSRF token is bound to it and to the principal.
#[derive(Clone, PartialEq, Eq)]
pub struct DashboardSession(pub String);

impl std::fmt::Debug for DashboardSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A session id can be a bearer credential: never printed.
        f.write_str("DashboardSession(..)")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DashboardSession {
    type Rejection = pages::PageError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<DashboardSession>()
            .filter(|s| !s.0.is_empty())
            .cloned()
            .ok_or_else(pages::PageError::unauthorized)
    }
}

/// The dashboard: the engine, its configuration and the feeds it shows.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub(crate) engine: Engine,
    pub(crate) config: DashboardConfig,
    pub(crate) carts: Arc<dyn CartSource>,
    pub(crate) alerts: Arc<dyn AlertFeed>,
    /// Per buyer: where to read the trail on from, and the events read so far (at most
    /// [`MAX_CACHED_BUYERS`] buyers, the least recently shown evicted first).
    pub(crate) cursors: Arc<Mutex<Cursors>>,
}

/// The most buyers whose events a [`Dashboard`] keeps in memory between pages. Past it, the
/// buyer whose page was shown least recently is forgotten; their next page reads their events
/// again through the audit sink's buyer index (time proportional to their own events).
pub const MAX_CACHED_BUYERS: usize = 256;

/// Per buyer: the next sequence number to read and the buyer's events read so far, with
/// when each entry was last used (a counter), evicting the least recently used.
#[derive(Debug, Default)]
pub(crate) struct Cursors {
    entries: HashMap<BuyerId, CachedTrail>,
    clock: u64,
}

#[derive(Debug)]
struct CachedTrail {
    next: u64,
    events: Vec<(u64, AuditEvent)>,
    used: u64,
}

impl Cursors {
    /// The buyer's entry, marked as used now.
    pub(crate) fn get(&mut self, buyer: &BuyerId) -> Option<(u64, Vec<(u64, AuditEvent)>)> {
        self.clock += 1;
        let now = self.clock;
        self.entries.get_mut(buyer).map(|e| {
            e.used = now;
            (e.next, e.events.clone())
        })
    }

    /// Keeps the buyer's events read up to `next` (unless another page read further), then
    /// evicts the least recently used entries past [`MAX_CACHED_BUYERS`].
    pub(crate) fn put(&mut self, buyer: &BuyerId, next: u64, events: Vec<(u64, AuditEvent)>) {
        self.clock += 1;
        let used = self.clock;
        if self.entries.get(buyer).is_some_and(|e| e.next > next) {
            return;
        }
        self.entries
            .insert(buyer.clone(), CachedTrail { next, events, used });
        while self.entries.len() > MAX_CACHED_BUYERS {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(b, _)| b.clone())
            else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// How many buyers are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Dashboard {
    /// A dashboard over `engine`, with no cart source (payments waiting for a confirmation
    /// are listed without their lines and cannot be approved until the cart is known) and the
    /// trail's control events as its alerts ([`TrailAlerts`]).
    pub fn new(engine: Engine, config: DashboardConfig) -> Dashboard {
        Dashboard {
            engine,
            config,
            carts: Arc::new(MemoryCarts::default()),
            alerts: Arc::new(TrailAlerts),
            cursors: Arc::new(Mutex::new(Cursors::default())),
        }
    }

    /// Where the carts of refused payments are found (the engine keeps the snapshot of a
    /// payment it allowed, not of one it refused).
    pub fn with_carts(mut self, carts: Arc<dyn CartSource>) -> Dashboard {
        self.carts = carts;
        self
    }

    /// The feed of recent alerts shown on the overview.
    pub fn with_alerts(mut self, alerts: Arc<dyn AlertFeed>) -> Dashboard {
        self.alerts = alerts;
        self
    }

    /// The router: mount it (with `Router::nest` at [`DashboardConfig::base_path`]) behind a
    /// layer that inserts the [`Principal`](crate::domain::Principal) and the
    /// [`DashboardSession`].
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(pages::overview))
            .route("/mandates/{id}", get(pages::mandate))
            .route("/activity", get(pages::activity))
            .route("/activity/{attempt}", get(pages::evidence))
            .route("/waiting", get(pages::waiting))
            .route(
                "/waiting/mandates/{id}/confirm",
                post(actions::confirm_mandate),
            )
            .route(
                "/waiting/mandates/{id}/reject",
                post(actions::reject_mandate),
            )
            .route(
                "/waiting/confirmations/approve",
                post(actions::approve_payment),
            )
            .route(
                "/waiting/confirmations/reject",
                post(actions::dismiss_payment),
            )
            .route("/waiting/reviews/{attempt}/cancel", post(review::cancel))
            .route("/stop", get(pages::stop))
            .route(
                "/stop/agents/{actor}",
                get(pages::stop_agent).post(actions::stop_agent),
            )
            .route("/stop/all", get(pages::stop_all).post(actions::stop_all))
            .with_state(self)
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn the_cache_keeps_at_most_max_buyers_and_evicts_the_least_recently_shown() {
        let mut c = Cursors::default();
        let b = |i: usize| BuyerId::new(format!("buyer_{i}")).unwrap();
        for i in 0..MAX_CACHED_BUYERS {
            c.put(&b(i), 1, Vec::new());
        }
        // Buyer 0 is shown again: buyer 1 is now the least recently shown.
        assert!(c.get(&b(0)).is_some());
        for i in MAX_CACHED_BUYERS..MAX_CACHED_BUYERS + 10 {
            c.put(&b(i), 1, Vec::new());
            assert!(c.len() <= MAX_CACHED_BUYERS);
        }
        assert!(c.get(&b(0)).is_some());
        assert!(c.get(&b(1)).is_none());
        // A page that read less than the cache holds does not go back.
        c.put(&b(0), 9, Vec::new());
        c.put(&b(0), 3, Vec::new());
        assert_eq!(c.get(&b(0)).map(|e| e.0), Some(9));
    }
}
