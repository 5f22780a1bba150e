//! The Agentic Commerce Protocol's delegate payment (API version 2026-04-17), feature `acp`.
//!
//! An agent platform sends a card and an allowance to `POST /agentic_commerce/delegate_payment`;
//! the service stores the card in the [`CredentialVault`](crate::ports::CredentialVault),
//! turns the allowance into a single-use mandate under the buyer, and answers with the vault
//! token id. A merchant completing the checkout session presents the token: the session
//! becomes the cart snapshot and the payment runs through the engine
//! ([`ExecutePayment`](crate::engine::ExecutePayment): decision, hold, PSP, audit), whose
//! decision binds the allowance's merchant, session, maximum, expiry and single use.
//!
//! * [`DelegatePaymentRequest`]: the strict reader of the published request schema.
//! * [`AcpService::delegate`]: headers, signature ([`signature`]), body, idempotency, vault,
//!   mandate; every refusal an [`AcpError`] with the published status and body.
//! * [`AcpService::redeem`]: a [`CheckoutSession`] and a token in, a payment out, or a
//!   [`RedeemError`] with an ACP error code.
//! * [`router`] (with `axum`): the endpoint, and the redemption route.
//!
//! What it does **not** do: PCI scope (the card number is in the vault and in memory while the
//! request is read; nothing here logs it), 3-D Secure, multi-use allowances (the schema has
//! only `one_time`), refunds through ACP (the engine's refund works on the attempt).

mod checkout;
mod delegate;
mod error;
mod redeem;
mod replay;
mod request;
#[cfg(feature = "axum")]
pub mod router;
pub mod signature;

pub use checkout::{CheckoutSession, SessionError};
pub use delegate::{
    credential_of, mandate_for, session_ref, AcpConfig, AcpService, Delegated, RequestHeaders,
    DELEGATE_OPERATION, MAX_BODY_BYTES, TOKEN_PREFIX,
};
pub use error::{AcpError, AcpErrorBody, SUPPORTED_VERSIONS};
pub use redeem::{RedeemError, Redeemed, Redemption};
pub use replay::DEFAULT_REPLAY_CACHE_CAPACITY;
pub use request::{
    Address, Allowance, AllowanceReason, CardNumberType, CardType, CheckPerformed,
    CheckedAllowance, DelegatePaymentRequest, DisplayFunding, PaymentMethodCard, RiskAction,
    RiskSignal, RiskType, MAX_METADATA_ENTRIES, MAX_METADATA_KEY, MAX_METADATA_VALUE,
};
pub use signature::{signing_input, PlatformKey};
