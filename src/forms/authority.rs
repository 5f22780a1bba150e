//! The effective authority of a mandate chain at a time: the meet of every mandate of the
//! chain, net of what each has already spent, held and used.

use chrono::{DateTime, Utc};

use super::error::FormError;
use crate::domain::{
    ActionSet, Actor, BuyerId, CartBinding, ConfirmationCondition, Currency, Mandate, MandateId,
    MandateStatus, Mcc, MerchantId, MerchantScope, Money, Usage,
};

/// What a mandate chain lets its leaf's actor do at `now`, in every dimension the forms speak
/// about: the tightest value over the chain (a child never widens its parent, and the decision
/// checks every mandate of the chain, so the meet is what the engine would allow), with budgets
/// and counts net of the supplied usage.
///
/// Restrictions no form can carry are kept as the mandate that imposes them (`cart`,
/// `exact_amount`, `attempts`, `confirmation_other`, `marketplace`) so each export can refuse
/// them by name.
///
/// ```
/// use agent_mandate::domain::{examples, Usage};
/// use agent_mandate::forms::EffectiveAuthority;
/// let m = examples::travel_backpack_mandate();
/// let a = EffectiveAuthority::of(std::slice::from_ref(&m), &[Usage::none_for(&m)], examples::now()).unwrap();
/// assert_eq!(a.max_amount, m.scope().amount.max_amount);
/// assert!(a.cart.is_some()); // bound to one cart snapshot
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EffectiveAuthority {
    /// The leaf mandate (the one the actor invokes).
    pub leaf: MandateId,
    /// The buyer.
    pub buyer_id: BuyerId,
    /// The leaf's actor.
    pub actor: Actor,
    /// The currency of every mandate of the chain.
    pub currency: Currency,
    /// Merchants allowed by every single-merchant or allowlist mandate of the chain (sorted).
    pub merchants: Vec<MerchantId>,
    /// A mandate of the chain scoped to a marketplace (with or without a seller list).
    pub marketplace: Option<MandateId>,
    /// MCCs allowed by every mandate that limits them (sorted); `None`: any.
    pub mccs: Option<Vec<Mcc>>,
    /// A mandate that binds the cart (to a snapshot, SKUs or a line count), with the field.
    pub cart: Option<(MandateId, String)>,
    /// Actions allowed by every mandate.
    pub actions: ActionSet,
    /// The most one payment may be now: the lowest of every maximum amount, per-transaction
    /// maximum, lifetime headroom (limit less spent and held), window amount headroom and
    /// "confirm above" threshold of the chain.
    pub max_amount: Money,
    /// The most all payments together may be now (lifetime and window headrooms); `None`: only
    /// the per-payment cap applies.
    pub total_headroom: Option<Money>,
    /// A mandate that allows no amount lower than its maximum.
    pub exact_amount: Option<MandateId>,
    /// The tightest payment-attempt headroom and the mandate imposing it.
    pub attempts: Option<(MandateId, u32)>,
    /// Payments left: the lowest of every uses headroom and window count headroom; `None`: no
    /// count limit.
    pub uses: Option<u32>,
    /// The latest `not_before` of the chain (at or before `now`).
    pub not_before: DateTime<Utc>,
    /// The earliest `expires_at` of the chain (after `now`).
    pub expires_at: DateTime<Utc>,
    /// The lowest "confirm above" threshold of the chain (already folded into `max_amount`).
    pub confirmation_above: Option<Money>,
    /// A confirmation condition a payment under a form could meet with nobody asked (`always`,
    /// `urgency_at_least`, `*_changed`), with the mandate imposing it.
    pub confirmation_other: Option<(MandateId, String)>,
}

fn no_authority(m: &Mandate, reason: impl Into<String>) -> FormError {
    FormError::NoAuthority {
        mandate_id: Some(m.id().clone()),
        reason: reason.into(),
    }
}

fn lower(a: Money, b: Money) -> Money {
    if b.exceeds(&a) {
        a
    } else {
        b
    }
}

fn lower_opt(a: Option<Money>, b: Money) -> Option<Money> {
    Some(a.map_or(b, |a| lower(a, b)))
}

fn lower_count(a: Option<u32>, b: u32) -> Option<u32> {
    Some(a.map_or(b, |a| a.min(b)))
}

impl EffectiveAuthority {
    /// The effective authority of `chain` (root first, leaf last) at `now`, with `usage` per
    /// mandate (needed for every mandate with budgets, uses or attempts).
    ///
    /// Refused with [`FormError::NoAuthority`] when the chain is empty or broken (a root with a
    /// parent, a link that is not parent to child, another buyer, another currency), when a
    /// mandate is not active or `now` is outside its validity, or when a budget, a count or the
    /// amount left is spent; with [`FormError::UsageUnavailable`] when a needed usage entry is
    /// missing, doubled or in another currency.
    pub fn of(
        chain: &[Mandate],
        usage: &[Usage],
        now: DateTime<Utc>,
    ) -> Result<EffectiveAuthority, FormError> {
        let (Some(root), Some(leaf)) = (chain.first(), chain.last()) else {
            return Err(FormError::NoAuthority {
                mandate_id: None,
                reason: "the chain is empty".into(),
            });
        };
        if root.parent_id().is_some() {
            return Err(no_authority(
                root,
                "the chain's root was derived from another mandate",
            ));
        }
        for pair in chain.windows(2) {
            if pair[1].parent_id() != Some(pair[0].id()) {
                return Err(no_authority(
                    &pair[1],
                    format!("{} is not derived from {}", pair[1].id(), pair[0].id()),
                ));
            }
            if pair[1].buyer_id() != pair[0].buyer_id() {
                return Err(no_authority(&pair[1], "another buyer than its parent"));
            }
        }
        let currency = root.currency();
        let mut out = EffectiveAuthority {
            leaf: leaf.id().clone(),
            buyer_id: leaf.buyer_id().clone(),
            actor: leaf.actor().clone(),
            currency,
            merchants: Vec::new(),
            marketplace: None,
            mccs: None,
            cart: None,
            actions: root.scope().actions,
            max_amount: root.scope().amount.max_amount,
            total_headroom: None,
            exact_amount: None,
            attempts: None,
            uses: None,
            not_before: root.scope().validity.not_before,
            expires_at: root.scope().validity.expires_at,
            confirmation_above: None,
            confirmation_other: None,
        };
        let mut merchants: Option<Vec<MerchantId>> = None;
        for m in chain {
            out.add(m, usage, now, &mut merchants)?;
        }
        out.merchants = merchants.unwrap_or_default();
        out.merchants.sort();
        if out.marketplace.is_none() && out.merchants.is_empty() {
            return Err(no_authority(
                leaf,
                "no merchant is allowed by every mandate",
            ));
        }
        if out.actions.is_empty() {
            return Err(no_authority(leaf, "no action is allowed by every mandate"));
        }
        if let Some(above) = out.confirmation_above {
            out.max_amount = lower(out.max_amount, above);
        }
        if out.max_amount.is_zero() {
            return Err(no_authority(leaf, "no amount is left to pay"));
        }
        if out.uses == Some(0) {
            return Err(no_authority(leaf, "no payment is left"));
        }
        Ok(out)
    }

    fn add(
        &mut self,
        m: &Mandate,
        usage: &[Usage],
        now: DateTime<Utc>,
        merchants: &mut Option<Vec<MerchantId>>,
    ) -> Result<(), FormError> {
        let scope = m.scope();
        if m.currency() != self.currency {
            return Err(no_authority(m, "another currency than the chain's root"));
        }
        if m.status() != MandateStatus::Active {
            return Err(no_authority(m, format!("the mandate is {}", m.status())));
        }
        if !scope.validity.contains(now) {
            return Err(no_authority(
                m,
                format!("{now} is outside the mandate's validity"),
            ));
        }
        if scope.validity.not_before > self.not_before {
            self.not_before = scope.validity.not_before;
        }
        if scope.validity.expires_at < self.expires_at {
            self.expires_at = scope.validity.expires_at;
        }
        let allowed: Option<Vec<MerchantId>> = match &scope.merchants {
            MerchantScope::Single { merchant_id } => Some(vec![merchant_id.clone()]),
            MerchantScope::Allowlist { merchant_ids } => Some(merchant_ids.clone()),
            MerchantScope::Marketplace { .. } => {
                self.marketplace.get_or_insert_with(|| m.id().clone());
                None
            }
        };
        if let Some(allowed) = allowed {
            *merchants = Some(match merchants.take() {
                None => allowed,
                Some(prev) => prev.into_iter().filter(|x| allowed.contains(x)).collect(),
            });
        }
        if let Some(mccs) = &scope.mccs {
            self.mccs = Some(match self.mccs.take() {
                None => mccs.clone(),
                Some(prev) => prev.into_iter().filter(|x| mccs.contains(x)).collect(),
            });
            if let Some(v) = self.mccs.as_mut() {
                v.sort();
            }
            if self.mccs.as_ref().is_some_and(Vec::is_empty) {
                return Err(no_authority(m, "no MCC is allowed by every mandate"));
            }
        }
        match &scope.cart {
            CartBinding::Snapshot { .. } => {
                self.cart
                    .get_or_insert_with(|| (m.id().clone(), "scope.cart.snapshot_id".into()));
            }
            CartBinding::Open {
                allowed_skus,
                max_line_items,
            } => {
                if allowed_skus.is_some() {
                    self.cart
                        .get_or_insert_with(|| (m.id().clone(), "scope.cart.allowed_skus".into()));
                } else if max_line_items.is_some() {
                    self.cart.get_or_insert_with(|| {
                        (m.id().clone(), "scope.cart.max_line_items".into())
                    });
                }
            }
        }
        self.actions = scope
            .actions
            .iter()
            .filter(|a| self.actions.contains(*a))
            .collect();
        self.max_amount = lower(self.max_amount, scope.amount.max_amount);
        if !scope.amount.allow_lower_amount {
            self.exact_amount.get_or_insert_with(|| m.id().clone());
        }
        if let Some(p) = scope.budgets.per_transaction {
            self.max_amount = lower(self.max_amount, p);
        }
        for c in &scope.confirmation.conditions {
            match c {
                ConfirmationCondition::AboveAmount { amount } => {
                    self.confirmation_above = lower_opt(self.confirmation_above, *amount);
                }
                ConfirmationCondition::Always
                | ConfirmationCondition::UrgencyAtLeast { .. }
                | ConfirmationCondition::AmountChanged
                | ConfirmationCondition::CartChanged
                | ConfirmationCondition::ShippingChanged
                | ConfirmationCondition::PolicyChanged => {
                    self.confirmation_other.get_or_insert_with(|| {
                        (m.id().clone(), format!("scope.confirmation: {c:?}"))
                    });
                }
            }
        }
        let needs_usage = !scope.budgets.windows.is_empty()
            || scope.budgets.lifetime.is_some()
            || scope.max_uses.is_some()
            || scope.amount.max_payment_attempts.is_some();
        if !needs_usage {
            return Ok(());
        }
        let unavailable = || FormError::UsageUnavailable {
            mandate_id: m.id().clone(),
        };
        let mut entries = usage.iter().filter(|u| u.mandate_id == *m.id());
        let u = match (entries.next(), entries.next()) {
            (Some(u), None) if u.currency() == self.currency => u,
            _ => return Err(unavailable()),
        };
        let used = u.spent.checked_add(&u.held).map_err(|_| unavailable())?;
        if let Some(lifetime) = &scope.budgets.lifetime {
            let left = lifetime.saturating_sub(&used).map_err(|_| unavailable())?;
            self.total_headroom = lower_opt(self.total_headroom, left);
            self.max_amount = lower(self.max_amount, left);
        }
        for w in &scope.budgets.windows {
            let mut reported = u
                .windows
                .iter()
                .filter(|x| x.window_seconds == w.window_seconds);
            let (Some(wu), None) = (reported.next(), reported.next()) else {
                return Err(unavailable());
            };
            if let Some(max) = &w.max_amount {
                let left = max.saturating_sub(&wu.amount).map_err(|_| unavailable())?;
                self.total_headroom = lower_opt(self.total_headroom, left);
                self.max_amount = lower(self.max_amount, left);
            }
            if let Some(max) = w.max_count {
                self.uses = lower_count(self.uses, max.saturating_sub(wu.count));
            }
        }
        if let Some(max) = scope.max_uses {
            self.uses = lower_count(self.uses, max.saturating_sub(u.uses));
        }
        if let Some(max) = scope.amount.max_payment_attempts {
            let left = max.saturating_sub(u.attempts);
            if left == 0 {
                return Err(no_authority(m, "no payment attempt is left"));
            }
            if self.attempts.as_ref().is_none_or(|(_, a)| left < *a) {
                self.attempts = Some((m.id().clone(), left));
            }
        }
        Ok(())
    }
}
