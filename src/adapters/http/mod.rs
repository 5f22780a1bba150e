//! HTTP adapters (feature `http`): a Stripe-compatible [`crate::ports::PaymentProvider`] and
//! a signed-webhook [`crate::ports::AuditSink`].
//!
//! - [`StripeProvider`]: PaymentIntents with manual capture over reqwest (rustls, no
//!   OpenSSL). Base URL, timeouts and API version are configurable, so it points at Stripe, a
//!   Stripe-compatible PSP or a local test server. Error classification: see [`classify`].
//!
//! What it does not do: take raw card numbers (the vault hands it a `pm_...` payment method),
//! complete a 3-D Secure challenge (the attempt waits in `requires_buyer_action`; the buyer
//! acts in the PSP's front end), or receive the PSP's webhooks.

pub mod classify;
mod stripe;
mod stripe_wire;

pub use classify::{StripeCall, StripeError};
pub use stripe::{StripeConfig, StripeConfigError, StripeProvider, STRIPE_API_VERSION};
