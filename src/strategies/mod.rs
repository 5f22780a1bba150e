//! Proptest strategies that generate *valid* domain values, for property suites inside and
//! outside this crate (feature `proptest`).
//!
//! Everything generated passes its own constructor: snapshots add up, mandates validate, and a
//! child from [`child_of`] is accepted by `parent.derive(child)` whenever the parent is active.
//! Amounts stay at most 10^15 minor units (line prices at most 10^6), so sums never reach the
//! money limit; times are whole seconds around [`reference_time`].
//!
//! Documents from [`evaluation_document`] are built to *fit* first (the chain covers the request,
//! budgets have room, a confirmation is on record) and each part is then broken with some
//! probability, so `allowed`, `blocked`, `requires_confirmation` and `requires_revalidation` are
//! all common and limits are hit exactly at their boundaries. [`allowed_document`] never breaks
//! anything; [`arbitrary_document`] is nonsense on purpose (unrelated chains, mixed currencies,
//! usage at the money limit).
//!
//! ```
//! use agent_mandate::domain::{evaluate, Outcome};
//! use agent_mandate::strategies;
//! use proptest::prelude::*;
//! use proptest::test_runner::{Config, TestRunner};
//!
//! let mut runner = TestRunner::new(Config::with_cases(16));
//! runner
//!     .run(&strategies::allowed_document(), |doc| {
//!         prop_assert_eq!(evaluate(&doc.input()).outcome, Outcome::Allowed);
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

mod child;
mod child_limits;
mod document;
mod fit;
mod mandate;
mod pick;
mod request;
mod scope;
mod snapshot;
mod target;
mod usage;
mod values;

use chrono::{DateTime, Duration, Utc};

use crate::domain::{examples, Currency, Money};

pub use child::{child_for, child_of};
pub use document::{allowed_document, arbitrary_document, evaluation_document};
pub use mandate::{
    active_root_mandate, actor, lifecycle, mandate_status, payment_action, root_mandate,
    root_mandate_for,
};
pub use request::request_for;
pub use snapshot::{cart_content, line_item, merchant, snapshot, snapshot_in};
pub use usage::usage_for;
pub use values::{any_money, currency, id, mcc, money, money_up_to_limit, snapshot_id, text};

/// The largest amount generated, in minor units: 10^15 is at most 10^15 major units for every
/// exponent (0 to 3), the largest amount [`Money`] accepts.
const LIMIT: i64 = 1_000_000_000_000_000;

/// The instant documents are evaluated at (the Travel Backpack story's `now`, 2026-06-28
/// 09:00 UTC); generated times lie within a few days of it.
pub fn reference_time() -> DateTime<Utc> {
    examples::now()
}

fn at(seconds: i64) -> DateTime<Utc> {
    reference_time() + Duration::seconds(seconds)
}

fn cash(minor: i64, currency: Currency) -> Money {
    // Invariant: clamped to 0..=LIMIT, which every currency accepts (see `LIMIT`).
    Money::from_minor(minor.clamp(0, LIMIT), currency).expect("clamped amount is in range")
}
