//! Delegation: a child mandate is an attenuation of its parent in every dimension (I6).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::ValidationError;
use super::ids::MandateId;
use super::mandate::{Mandate, MandateSpec, MandateStatus};
use super::money::Money;
use super::scope::{Budgets, CartBinding, ConfirmationCondition, ConfirmationRule, MerchantScope};

/// A dimension in which a child could be wider than its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "json-schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Dimension {
    /// The child's `parent_id` is not the parent.
    Parent,
    /// Another buyer.
    Buyer,
    /// Merchants outside the parent's.
    Merchants,
    /// Sellers outside the parent's.
    Sellers,
    /// MCCs outside the parent's.
    Mccs,
    /// A cart binding the parent's does not cover.
    Cart,
    /// Actions the parent does not allow.
    Actions,
    /// A higher maximum amount.
    MaxAmount,
    /// Shipping or tax excluded where the parent includes them.
    AmountInclusion,
    /// Lower amounts allowed where the parent does not allow them.
    LowerAmount,
    /// Partial capture allowed where the parent does not allow it.
    PartialCapture,
    /// More payment attempts.
    Attempts,
    /// Another currency.
    Currency,
    /// Conversion allowed where the parent does not allow it.
    Conversion,
    /// A higher per-transaction maximum.
    PerTransaction,
    /// A window limit missing or higher.
    Window,
    /// A higher lifetime total.
    Lifetime,
    /// Valid before the parent.
    NotBefore,
    /// Valid after the parent.
    ExpiresAt,
    /// More uses.
    Uses,
    /// A confirmation rule that asks less often.
    Confirmation,
}

/// One way the child would be wider than the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "json-schema",
    derive(schemars::JsonSchema),
    schemars(rename = "Widening")
)]
#[serde(remote = "Self")]
pub struct Widening {
    /// The dimension.
    pub dimension: Dimension,
    /// What the child asks for that the parent does not grant.
    pub detail: String,
}

impl fmt::Display for Widening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.dimension, self.detail)
    }
}

/// Why a child mandate cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DelegationError {
    /// The child spec is invalid by itself.
    #[error("invalid child mandate: {0}")]
    Invalid(#[from] ValidationError),
    /// The parent grants no authority now.
    #[error("parent mandate {parent} is {status}, not active")]
    ParentNotActive {
        /// The parent.
        parent: MandateId,
        /// Its status.
        status: MandateStatus,
    },
    /// The child would be wider than the parent; every widening is listed.
    #[error("child mandate {child} is wider than parent {parent} in {} dimension(s): {}",
        .widenings.len(),
        .widenings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Wider {
        /// The parent.
        parent: MandateId,
        /// The child.
        child: MandateId,
        /// Every widening found.
        widenings: Vec<Widening>,
    },
}

impl Mandate {
    /// Derives a child mandate from `self`: validates `child`, requires `self` to be active and
    /// the child to be an attenuation of it in every dimension.
    ///
    /// ```
    /// # use agent_mandate::domain::*;
    /// let parent = examples::travel_backpack_mandate();
    /// let mut child = parent.spec().clone();
    /// child.id = MandateId::new("mandate_child").unwrap();
    /// child.parent_id = Some(parent.id().clone());
    /// child.scope.amount.max_amount = Money::parse("500.00", Currency::EUR).unwrap();
    /// let err = parent.derive(child).unwrap_err();
    /// assert!(err.to_string().contains("MaxAmount"));
    /// ```
    pub fn derive(&self, child: MandateSpec) -> Result<Mandate, DelegationError> {
        let child = Mandate::new(child)?;
        if self.status() != MandateStatus::Active {
            return Err(DelegationError::ParentNotActive {
                parent: self.id().clone(),
                status: self.status(),
            });
        }
        let widenings = widenings(self, &child);
        if !widenings.is_empty() {
            return Err(DelegationError::Wider {
                parent: self.id().clone(),
                child: child.id().clone(),
                widenings,
            });
        }
        Ok(child)
    }
}

/// Every dimension in which `child` is wider than `parent` (empty: a proper attenuation).
pub fn widenings(parent: &Mandate, child: &Mandate) -> Vec<Widening> {
    let mut out = Vec::new();
    let mut push = |dimension, detail: String| out.push(Widening { dimension, detail });
    if child.parent_id() != Some(parent.id()) {
        push(
            Dimension::Parent,
            format!("parent_id is not {}", parent.id()),
        );
    }
    if child.buyer_id() != parent.buyer_id() {
        push(
            Dimension::Buyer,
            format!("buyer {} is not {}", child.buyer_id(), parent.buyer_id()),
        );
    }
    let (p, c) = (parent.scope(), child.scope());
    merchants(&p.merchants, &c.merchants, &mut push);
    match (&p.mccs, &c.mccs) {
        (None, _) => {}
        (Some(_), None) => push(Dimension::Mccs, "any MCC, the parent limits MCCs".into()),
        (Some(pm), Some(cm)) => {
            if let Some(x) = cm.iter().find(|x| !pm.contains(x)) {
                push(
                    Dimension::Mccs,
                    format!("MCC {x} is not allowed by the parent"),
                );
            }
        }
    }
    cart(&p.cart, &c.cart, &mut push);
    if !c.actions.is_subset_of(p.actions) {
        let extra: Vec<_> = c
            .actions
            .iter()
            .filter(|a| !p.actions.contains(*a))
            .map(|a| a.as_str())
            .collect();
        push(
            Dimension::Actions,
            format!("actions {} are not allowed by the parent", extra.join(", ")),
        );
    }
    if c.currency.currency != p.currency.currency {
        push(
            Dimension::Currency,
            format!("{} instead of {}", c.currency.currency, p.currency.currency),
        );
    } else {
        money_cap(
            Dimension::MaxAmount,
            Some(&p.amount.max_amount),
            Some(&c.amount.max_amount),
            &mut push,
        );
        budgets(&p.budgets, &c.budgets, &mut push);
        if !confirmation_at_least(&p.confirmation, &c.confirmation) {
            push(
                Dimension::Confirmation,
                "asks for confirmation in fewer cases than the parent".into(),
            );
        }
    }
    if c.currency.conversion_allowed && !p.currency.conversion_allowed {
        push(
            Dimension::Conversion,
            "allows conversion, the parent does not".into(),
        );
    }
    if (p.amount.includes_shipping && !c.amount.includes_shipping)
        || (p.amount.includes_tax && !c.amount.includes_tax)
    {
        push(
            Dimension::AmountInclusion,
            "excludes shipping or tax that the parent's limit includes".into(),
        );
    }
    if c.amount.allow_lower_amount && !p.amount.allow_lower_amount {
        push(
            Dimension::LowerAmount,
            "allows a lower amount, the parent does not".into(),
        );
    } else if !p.amount.allow_lower_amount
        && c.currency.currency == p.currency.currency
        && (c.amount.max_amount != p.amount.max_amount
            || c.amount.includes_shipping != p.amount.includes_shipping
            || c.amount.includes_tax != p.amount.includes_tax)
    {
        // Without lower amounts the parent allows exactly its maximum (of what it counts): a
        // child pinned to another amount, or counting shipping or tax differently, would
        // allow a payment the parent refuses.
        push(
            Dimension::LowerAmount,
            format!(
                "allows exactly {} (shipping counted: {}, tax counted: {}), the parent only \
                 exactly {} (shipping counted: {}, tax counted: {})",
                c.amount.max_amount,
                c.amount.includes_shipping,
                c.amount.includes_tax,
                p.amount.max_amount,
                p.amount.includes_shipping,
                p.amount.includes_tax
            ),
        );
    }
    if c.amount.allow_partial_capture && !p.amount.allow_partial_capture {
        push(
            Dimension::PartialCapture,
            "allows partial capture, the parent does not".into(),
        );
    }
    count_cap(
        Dimension::Attempts,
        p.amount.max_payment_attempts,
        c.amount.max_payment_attempts,
        &mut push,
    );
    count_cap(Dimension::Uses, p.max_uses, c.max_uses, &mut push);
    if c.validity.not_before < p.validity.not_before {
        push(
            Dimension::NotBefore,
            format!(
                "valid from {}, the parent from {}",
                c.validity.not_before, p.validity.not_before
            ),
        );
    }
    if c.validity.expires_at > p.validity.expires_at {
        push(
            Dimension::ExpiresAt,
            format!(
                "expires at {}, the parent at {}",
                c.validity.expires_at, p.validity.expires_at
            ),
        );
    }
    out
}

fn merchants(p: &MerchantScope, c: &MerchantScope, push: &mut impl FnMut(Dimension, String)) {
    use MerchantScope as M;
    match (p, c) {
        (M::Single { merchant_id: pm }, M::Single { merchant_id: cm }) => {
            if pm != cm {
                push(Dimension::Merchants, format!("merchant {cm} is not {pm}"));
            }
        }
        (M::Allowlist { merchant_ids }, M::Single { merchant_id }) => {
            if !merchant_ids.contains(merchant_id) {
                push(
                    Dimension::Merchants,
                    format!("merchant {merchant_id} is not in the parent's allowlist"),
                );
            }
        }
        (M::Single { merchant_id }, M::Allowlist { merchant_ids }) => {
            if merchant_ids.iter().any(|m| m != merchant_id) {
                push(
                    Dimension::Merchants,
                    format!("the allowlist holds merchants other than {merchant_id}"),
                );
            }
        }
        (M::Allowlist { merchant_ids: pm }, M::Allowlist { merchant_ids: cm }) => {
            if let Some(x) = cm.iter().find(|x| !pm.contains(x)) {
                push(
                    Dimension::Merchants,
                    format!("merchant {x} is not in the parent's allowlist"),
                );
            }
        }
        (
            M::Marketplace {
                marketplace_id: pm,
                allowed_sellers: ps,
            },
            M::Marketplace {
                marketplace_id: cm,
                allowed_sellers: cs,
            },
        ) => {
            if pm != cm {
                push(
                    Dimension::Merchants,
                    format!("marketplace {cm} is not {pm}"),
                );
            } else {
                match (ps, cs) {
                    (None, _) => {}
                    (Some(_), None) => push(
                        Dimension::Sellers,
                        "any seller, the parent limits sellers".into(),
                    ),
                    (Some(ps), Some(cs)) => {
                        if let Some(x) = cs.iter().find(|x| !ps.contains(x)) {
                            push(
                                Dimension::Sellers,
                                format!("seller {x} is not allowed by the parent"),
                            );
                        }
                    }
                }
            }
        }
        (M::Marketplace { .. }, M::Single { .. } | M::Allowlist { .. })
        | (M::Single { .. } | M::Allowlist { .. }, M::Marketplace { .. }) => {
            push(
                Dimension::Merchants,
                "a different kind of merchant scope than the parent's".into(),
            );
        }
    }
}

fn cart(p: &CartBinding, c: &CartBinding, push: &mut impl FnMut(Dimension, String)) {
    use CartBinding as B;
    match (p, c) {
        (B::Snapshot { snapshot_id: ps }, B::Snapshot { snapshot_id: cs }) => {
            if ps != cs {
                push(
                    Dimension::Cart,
                    format!("bound to snapshot {cs}, the parent to {ps}"),
                );
            }
        }
        (B::Snapshot { snapshot_id }, B::Open { .. }) => {
            push(
                Dimension::Cart,
                format!("open, the parent is bound to snapshot {snapshot_id}"),
            );
        }
        // A child bound to one snapshot is narrower than an open parent; the parent's SKU and
        // line limits still apply, since the decision checks every mandate of the chain.
        (B::Open { .. }, B::Snapshot { .. }) => {}
        (
            B::Open {
                allowed_skus: ps,
                max_line_items: pl,
            },
            B::Open {
                allowed_skus: cs,
                max_line_items: cl,
            },
        ) => {
            match (ps, cs) {
                (None, _) => {}
                (Some(_), None) => push(Dimension::Cart, "any SKU, the parent limits SKUs".into()),
                (Some(ps), Some(cs)) => {
                    if let Some(x) = cs.iter().find(|x| !ps.contains(x)) {
                        push(
                            Dimension::Cart,
                            format!("SKU {x} is not allowed by the parent"),
                        );
                    }
                }
            }
            count_cap(Dimension::Cart, *pl, *cl, push);
        }
    }
}

fn money_cap(
    dim: Dimension,
    p: Option<&Money>,
    c: Option<&Money>,
    push: &mut impl FnMut(Dimension, String),
) {
    match (p, c) {
        (None, _) => {}
        (Some(p), None) => push(dim, format!("no limit, the parent's is {p}")),
        (Some(p), Some(c)) => {
            if c.exceeds(p) {
                push(dim, format!("{c} is above the parent's {p}"));
            }
        }
    }
}

fn count_cap(
    dim: Dimension,
    p: Option<u32>,
    c: Option<u32>,
    push: &mut impl FnMut(Dimension, String),
) {
    match (p, c) {
        (None, _) => {}
        (Some(p), None) => push(dim, format!("no limit, the parent's is {p}")),
        (Some(p), Some(c)) => {
            if c > p {
                push(dim, format!("{c} is above the parent's {p}"));
            }
        }
    }
}

fn budgets(p: &Budgets, c: &Budgets, push: &mut impl FnMut(Dimension, String)) {
    money_cap(
        Dimension::PerTransaction,
        p.per_transaction.as_ref(),
        c.per_transaction.as_ref(),
        push,
    );
    money_cap(
        Dimension::Lifetime,
        p.lifetime.as_ref(),
        c.lifetime.as_ref(),
        push,
    );
    // Each parent window must be covered by a child window at least as long with limits no
    // higher: spend inside a longer window bounds spend inside a shorter one.
    for pw in &p.windows {
        let covers_amount = pw.max_amount.as_ref().is_none_or(|pa| {
            c.windows.iter().any(|cw| {
                cw.window_seconds >= pw.window_seconds
                    && cw.max_amount.as_ref().is_some_and(|ca| ca.fits_within(pa))
            })
        });
        let covers_count = pw.max_count.is_none_or(|pc| {
            c.windows.iter().any(|cw| {
                cw.window_seconds >= pw.window_seconds && cw.max_count.is_some_and(|cc| cc <= pc)
            })
        });
        if !covers_amount || !covers_count {
            push(
                Dimension::Window,
                format!(
                    "the parent's {} s window is missing or higher",
                    pw.window_seconds
                ),
            );
        }
    }
}

/// Whether `c` asks for confirmation in every case `p` asks.
fn confirmation_at_least(p: &ConfirmationRule, c: &ConfirmationRule) -> bool {
    use ConfirmationCondition as K;
    if c.conditions.contains(&K::Always) {
        return true;
    }
    // A `*_changed` condition of the child only covers the parent's when both compare with the
    // same baseline (or the child has none, which always counts as changed).
    let baseline_ok = c.baseline.is_none() || c.baseline == p.baseline;
    p.conditions.iter().all(|pc| match pc {
        K::Always => false,
        K::AboveAmount { amount: pa } => c
            .conditions
            .iter()
            .any(|cc| matches!(cc, K::AboveAmount { amount: ca } if ca.fits_within(pa))),
        K::UrgencyAtLeast { urgency: pu } => c
            .conditions
            .iter()
            .any(|cc| matches!(cc, K::UrgencyAtLeast { urgency: cu } if cu <= pu)),
        K::AmountChanged | K::CartChanged | K::ShippingChanged | K::PolicyChanged => {
            baseline_ok && c.conditions.contains(pc)
        }
    })
}

/// Checks an existing parent/child pair (for stores that load both).
pub fn check_attenuation(parent: &Mandate, child: &Mandate) -> Result<(), DelegationError> {
    let w = widenings(parent, child);
    if w.is_empty() {
        Ok(())
    } else {
        Err(DelegationError::Wider {
            parent: parent.id().clone(),
            child: child.id().clone(),
            widenings: w,
        })
    }
}

crate::json::object_only!(Widening);
