//! HTTP adapters (feature `http`): a Stripe-compatible [`crate::ports::PaymentProvider`] and
//! a signed-webhook [`crate::ports::AuditSink`].
//!
//! - [`StripeProvider`]: PaymentIntents with manual capture over reqwest (rustls, no
//!   OpenSSL). Base URL, timeouts and API version are configurable, so it points at Stripe, a
//!   Stripe-compatible PSP or a local test server. Errors are classified by the table in
//!   [`classify`]; declines are `Ok` reports.
//! - [`WebhookAuditSink`]: keeps the chain of record in an inner [`crate::ports::AuditSink`]
//!   and delivers every event to a URL, signed in the Standard Webhooks format (HMAC-SHA256;
//!   the scheme and the receiver's [`verify_signature`] are in [`signature`]), at least once,
//!   in sequence order,
//!   through an [`Outbox`] (here [`MemoryOutbox`]; the SQLite adapter provides a durable one),
//!   retried with exponential backoff.
//!
//! What they do not do: take raw card numbers (the vault hands the PSP adapter a `pm_...`
//! payment method), complete a 3-D Secure challenge (the attempt waits in
//! `requires_buyer_action`; the buyer acts in the PSP's front end), or receive the PSP's own
//! webhooks. The delivery loop needs a tokio runtime.

mod alerts;
pub mod classify;
mod outbox;
pub mod signature;
mod stripe;
mod stripe_wire;
mod tls;
mod webhook;

pub use alerts::WebhookAlertSink;
pub use classify::{StripeCall, StripeError};
pub use outbox::{MemoryOutbox, Outbox};
pub use signature::{
    encode_secret, message_id, parse_message_id, sign, verify_signature, DeliveryHeaders,
    SignatureError, Verified, ID_HEADER, MIN_SECRET_BYTES, SECRET_PREFIX, SIGNATURE_HEADER,
    SIGNATURE_VERSION, TIMESTAMP_HEADER,
};
#[cfg(feature = "mpp")]
pub(crate) use stripe::{stripe_client, stripe_send, stripe_url, Form};
pub use stripe::{
    stripe_minimum_charge, StripeConfig, StripeConfigError, StripeProvider, STRIPE_API_VERSION,
};
pub use tls::{client_builder, TlsConfigError};
pub use webhook::{
    is_permanent_refusal, DeadLetter, Delivered, DeliveryError, DeliveryLoop, WebhookAuditSink,
    WebhookConfig, WebhookConfigError, WebhookError,
};
