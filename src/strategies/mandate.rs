//! Root mandates: actors, actions, statuses, lifecycles, and mandates fitted to a request or
//! random.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{
    Actor, ActorId, ActorKind, BuyerId, CartSnapshot, Currency, CurrencyScope, Lifecycle, Mandate,
    MandateId, MandateScope, MandateSpec, MandateStatus, PaymentAction, Text,
};

use super::fit::{chance, choose, fits};
use super::scope::{
    actions_for, amount_scope_for, budgets_for, cart_binding_for, confirmation_for, mcc_scope_for,
    merchant_scope_for, uses_limit, validity_for,
};
use super::snapshot::snapshot;
use super::target::Target;
use super::values::{currency, evidence_refs, id, text};

/// An actor, usually an agent.
pub fn actor() -> BoxedStrategy<Actor> {
    (
        id::<ActorId>("agent"),
        prop_oneof![
            6 => Just(ActorKind::Agent),
            1 => Just(ActorKind::Human),
            1 => Just(ActorKind::System)
        ],
    )
        .prop_map(|(id, kind)| Actor { id, kind })
        .boxed()
}

/// Any payment action, authorize favoured.
pub fn payment_action() -> BoxedStrategy<PaymentAction> {
    prop_oneof![
        5 => Just(PaymentAction::Authorize),
        2 => Just(PaymentAction::Prepare),
        1 => Just(PaymentAction::Capture),
        1 => Just(PaymentAction::Refund),
        1 => Just(PaymentAction::CommitOrder),
    ]
    .boxed()
}

/// Any mandate status.
pub fn mandate_status() -> BoxedStrategy<MandateStatus> {
    prop::sample::select(MandateStatus::ALL.to_vec()).boxed()
}

pub(super) fn status_for(fit: u8) -> BoxedStrategy<MandateStatus> {
    choose(fit, Just(MandateStatus::Active).boxed(), mandate_status())
}

/// A lifecycle in `status` created at `created_at`, with the timestamps (and reasons) the
/// status requires, all at or after `created_at`.
pub fn lifecycle(status: MandateStatus, created_at: DateTime<Utc>) -> BoxedStrategy<Lifecycle> {
    lifecycle_noise()
        .prop_map(move |noise| lifecycle_from(status, created_at, noise))
        .boxed()
}

pub(super) type LifecycleNoise = (i64, i64, Option<Text>);

pub(super) fn lifecycle_noise() -> BoxedStrategy<LifecycleNoise> {
    (0i64..3_600, 0i64..3_600, prop::option::of(text())).boxed()
}

pub(super) fn lifecycle_from(
    status: MandateStatus,
    created_at: DateTime<Utc>,
    (a, b, reason): LifecycleNoise,
) -> Lifecycle {
    let activated = created_at + Duration::seconds(a);
    let later = activated + Duration::seconds(b);
    let mut l = Lifecycle::new(MandateStatus::PendingConfirmation, created_at);
    l.status = status;
    match status {
        MandateStatus::PendingConfirmation => {}
        MandateStatus::Active => l.activated_at = Some(activated),
        MandateStatus::Used => {
            l.activated_at = Some(activated);
            l.used_at = Some(later);
        }
        MandateStatus::Expired => l.expired_at = Some(later),
        MandateStatus::Revoked => {
            l.activated_at = Some(activated);
            l.revoked_at = Some(later);
            l.revoked_reason = reason;
        }
        MandateStatus::Rejected => {
            l.rejected_at = Some(later);
            l.rejected_reason = reason;
        }
    }
    l
}

pub(super) fn root_spec(t: Target, fit: u8) -> BoxedStrategy<MandateSpec> {
    (fits(fit), currency(), chance(1, 5))
        .prop_flat_map(move |(same, other, conversion)| {
            let cur = if same { t.currency } else { other };
            root_spec_in(&t, fit, cur, conversion)
        })
        .boxed()
}

pub(super) fn root_spec_in(
    t: &Target,
    fit: u8,
    cur: Currency,
    conversion: bool,
) -> BoxedStrategy<MandateSpec> {
    (
        (
            id::<MandateId>("mandate"),
            id::<BuyerId>("buyer"),
            actor(),
            evidence_refs(),
        ),
        (
            merchant_scope_for(t, fit),
            mcc_scope_for(t, fit),
            cart_binding_for(t, fit),
            actions_for(t.action, fit),
        ),
        amount_scope_for(t, fit, cur),
        budgets_for(t, fit, cur),
        confirmation_for(t, cur),
        (
            uses_limit(fit),
            validity_for(fit),
            status_for(fit),
            lifecycle_noise(),
        ),
    )
        .prop_map(
            move |(
                (id, buyer_id, actor, evidence_refs),
                (merchants, mccs, cart, actions),
                amount,
                budgets,
                confirmation,
                (max_uses, validity, status, noise),
            )| {
                let created = validity.not_before - Duration::seconds(60);
                MandateSpec {
                    id,
                    buyer_id,
                    actor,
                    parent_id: None,
                    scope: MandateScope {
                        merchants,
                        mccs,
                        cart,
                        amount,
                        currency: CurrencyScope {
                            currency: cur,
                            conversion_allowed: conversion,
                        },
                        budgets,
                        actions,
                        confirmation,
                        max_uses,
                        validity,
                    },
                    lifecycle: lifecycle_from(status, created, noise),
                    evidence_refs,
                }
            },
        )
        .boxed()
}

/// A root mandate fitted to a request of `action` on `snapshot` (its total, at its merchant):
/// each dimension (merchant, MCC, cart, currency, action, amount, budgets, validity, status)
/// covers the request with probability `fit` percent (0 to 100; more counts as 100) and misses
/// it otherwise, at the boundary when it can. At `fit` 100 the mandate allows the request
/// (given usage with room and a usable credential).
pub fn root_mandate_for(
    snapshot: &CartSnapshot,
    action: PaymentAction,
    fit: u8,
) -> BoxedStrategy<Mandate> {
    root_spec(Target::of(snapshot, action), fit)
        .prop_filter_map("valid mandate", |s| Mandate::new(s).ok())
        .boxed()
}

/// A root mandate with random scopes: merchants (single, marketplace, allowlist), MCCs, cart
/// binding, caps, windows, actions, confirmation rule, validity, any status with its lifecycle
/// timestamps.
pub fn root_mandate() -> BoxedStrategy<Mandate> {
    (snapshot(), payment_action())
        .prop_flat_map(|(s, a)| {
            (prop_oneof![Just(50u8), Just(90u8)], Just(Target::of(&s, a)))
                .prop_flat_map(|(fit, t)| root_spec(t, fit))
        })
        .prop_filter_map("valid mandate", |s| Mandate::new(s).ok())
        .boxed()
}

/// Like [`root_mandate`], always `active` (a parent [`Mandate::derive`] accepts children of).
pub fn active_root_mandate() -> BoxedStrategy<Mandate> {
    (root_mandate(), lifecycle_noise())
        .prop_filter_map("valid mandate", |(m, noise)| {
            let mut spec = m.spec().clone();
            spec.lifecycle =
                lifecycle_from(MandateStatus::Active, spec.lifecycle.created_at, noise);
            Mandate::new(spec).ok()
        })
        .boxed()
}
