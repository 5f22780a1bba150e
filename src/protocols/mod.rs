//! HTTP 402 payment protocols, on the agent's side and the seller's.
//!
//! Two open specifications define how a server answers 402 with what a call costs and how a
//! client pays: the Machine Payments Protocol's `Payment` HTTP authentication scheme
//! ([`mpp`], feature `mpp`) and x402 v2 ([`x402`], feature `x402`). Both leave client-side
//! budget management out of scope; here no offer is paid unless a mandate allows it. These
//! modules are thin codecs: they read and write the wire forms and state an offer in mandate
//! terms ([`ChargeOffer`]: merchant, money, resource, expiry) and as a one-line cart snapshot,
//! so the decision, the hold, the audit trail and dispute evidence work as for any checkout.
//!
//! Every payment of either protocol runs through the engine under a [`PayerIdentity`] (the
//! decision, the hold, idempotency, audit, loop detection); [`PayError`] says why one was not
//! made. Credentials come from ports: an MPP `ChallengeResponder` (for the Stripe method, a
//! shared payment token issued with Stripe's API), an x402 `X402Signer`.
//!
//! What they do not do: convert between currencies or assets (an on-chain asset is payable only
//! when the host registered it in an [`AssetRegistry`], with its decimals), or ship an EVM
//! signer (the x402 signer is a port; the crate has a test double only). The x402 seller side
//! talks to a facilitator over HTTP; no chain is read here.

mod asset;
mod b64;
#[cfg(any(feature = "mpp", feature = "x402"))]
mod book;
mod charge;
mod error;
#[cfg(feature = "mpp")]
pub mod mpp;
#[cfg(any(feature = "mpp", feature = "x402"))]
mod origin;
mod pay;
#[cfg(feature = "x402")]
pub mod x402;

pub use asset::{
    asset_base_units, base_units, money_from_base_units, AssetRegistry, RegisteredAsset,
    MAX_ASSET_DECIMALS,
};
#[cfg(any(feature = "mpp", feature = "x402"))]
pub use book::DEFAULT_BOOK_CAPACITY;
pub use charge::{resource_sku, ChargeContext, ChargeOffer, Protocol, RESOURCE_SKU_PREFIX};
pub use error::{OfferError, WireError};
pub use pay::{PayError, PayerIdentity};
