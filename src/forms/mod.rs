//! Mandate forms in and out (feature `forms`): the effective authority of a mandate chain
//! written as the limits of other payment systems, and AP2 v0.2 mandates read into the crate's
//! commands and cart snapshots.
//!
//! Pure conversions: no IO, no clock reads (the time a conversion needs is a parameter), no
//! signature verification (an AP2 credential's signature is checked by the caller before it is
//! read here).
//!
//! **No form widens authority.** Every export starts from [`EffectiveAuthority`], the meet of
//! every mandate of a chain at `now` net of its usage, and either writes a narrower or equal
//! form or fails with [`FormError::Unrepresentable`] naming the [`Dimension`] the target cannot
//! express; every import either represents each constraint of the AP2 mandate or fails naming
//! it. Each exported form reads back into mandate terms ([`StripeSpt::scope`],
//! [`AcpAllowance::scope`], [`VisaPurchaseInstruction::scope`]) so the property "the form is no
//! wider than any mandate of the chain" is checked with the crate's own
//! [`widenings`](crate::domain::widenings) comparison.
//!
//! | form | direction | function |
//! |---|---|---|
//! | Stripe shared payment token `usage_limits` + `seller_details` | out | [`to_stripe_spt`] |
//! | ACP delegate-payment `allowance` | out | [`to_acp_allowance`] |
//! | Visa Intelligent Commerce purchase instruction | out | [`to_visa_instruction`] |
//! | AP2 open payment mandate | in | [`import_open_payment_mandate`] |
//! | AP2 open checkout mandate | in (checked against a snapshot) | [`OpenCheckoutMandate`] |
//! | AP2 closed checkout mandate | in (cart snapshot, hash checked) | [`import_checkout_mandate`] |
//!
//! `docs/design.forms.md` has a table per format: each field, its mandate term, and what
//! happens when it cannot be represented.
//!
//! ```
//! use agent_mandate::domain::{examples, Usage};
//! use agent_mandate::forms::{to_stripe_spt, EffectiveAuthority, FormError, StripeTarget};
//! let m = examples::travel_backpack_mandate();
//! let now = examples::now();
//! let usage = [Usage::none_for(&m)];
//! // The example mandate limits the cart to one SKU: a token cannot express that.
//! let authority = EffectiveAuthority::of(std::slice::from_ref(&m), &usage, now).unwrap();
//! let err = to_stripe_spt(&authority, &StripeTarget::new()).unwrap_err();
//! assert!(matches!(err, FormError::Unrepresentable { .. }));
//! ```

mod ap2;
mod authority;
mod error;
mod export;

pub use ap2::{
    import_ap2, import_checkout_mandate, import_open_payment_mandate, Ap2Context, Ap2Import,
    CheckoutReference, OpenCheckoutMandate, ReadCheckout,
};
pub use authority::EffectiveAuthority;
pub use error::FormError;
pub use export::{
    to_acp_allowance, to_stripe_spt, to_visa_instruction, AcpAllowance, AcpTarget, SellerDetails,
    StripeSpt, StripeTarget, StripeUsageLimits, VisaDeclineThreshold, VisaPurchaseInstruction,
    VisaTarget, VisaTransactionData,
};

#[doc(no_inline)]
pub use crate::domain::Dimension;
