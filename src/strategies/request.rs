//! Payment requests and confirmations near what a mandate and a snapshot need.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{
    Actor, ActorId, ActorKind, BuyerId, CartSnapshot, ChannelRef, Confirmation, ConfirmationId,
    ConfirmationScope, Mandate, MandateId, MerchantId, PaymentAction, PaymentRequest,
};

use super::cash;
use super::fit::{fits, maybe};
use super::mandate::{actor, payment_action};
use super::pick::pick;
use super::scope::urgency;
use super::values::{currency, id, snapshot_id};

/// A request on `snapshot` under `mandate`: by its actor, for its buyer, of the snapshot's
/// total at its merchant, for an action the mandate allows; each of these holds with
/// probability `fit` percent (0 to 100; more counts as 100) and is wrong otherwise.
pub fn request_for(
    snapshot: &CartSnapshot,
    mandate: &Mandate,
    fit: u8,
) -> BoxedStrategy<PaymentRequest> {
    let allowed: Vec<PaymentAction> = mandate.scope().actions.iter().collect();
    let (snapshot, mandate) = (snapshot.clone(), mandate.clone());
    (fits(fit), prop::sample::select(allowed), payment_action())
        .prop_flat_map(move |(own, allowed, any)| {
            request_near(&snapshot, &mandate, if own { allowed } else { any }, fit)
        })
        .boxed()
}

pub(super) fn request_near(
    snap: &CartSnapshot,
    leaf: &Mandate,
    action: PaymentAction,
    fit: u8,
) -> BoxedStrategy<PaymentRequest> {
    let (snap, leaf) = (snap.clone(), leaf.clone());
    (
        (
            fits(fit),
            fits(fit),
            fits(fit),
            fits(fit),
            fits(fit),
            fits(fit),
        ),
        (actor(), id::<BuyerId>("buyer"), id::<MandateId>("mandate")),
        (
            id::<MerchantId>("merchant"),
            snapshot_id(),
            pick(),
            currency(),
        ),
        maybe(30, urgency()),
    )
        .prop_map(
            move |(
                (a, b, m, mer, s, amt),
                (actor, buyer, mandate),
                (merchant, sid, k, cur),
                urgency,
            )| {
                let total = snap.total();
                let amount = if amt {
                    total
                } else if cur != total.currency() && k.sel % 4 == 0 {
                    cash(total.minor_units(), cur)
                } else if k.sel % 2 == 0 {
                    cash(k.between(0, total.minor_units()), total.currency())
                } else {
                    cash(k.up(total.minor_units() + 1), total.currency())
                };
                PaymentRequest {
                    actor: if a { leaf.actor().clone() } else { actor },
                    buyer_id: if b { leaf.buyer_id().clone() } else { buyer },
                    mandate_id: if m { leaf.id().clone() } else { mandate },
                    action,
                    merchant_id: if mer {
                        snap.merchant().merchant_id.clone()
                    } else {
                        merchant
                    },
                    snapshot_id: if s { snap.id() } else { sid },
                    amount,
                    urgency,
                }
            },
        )
        .boxed()
}

pub(super) fn confirmation_near(
    req: &PaymentRequest,
    chain_ids: Vec<MandateId>,
    now: DateTime<Utc>,
    fit: u8,
) -> BoxedStrategy<Confirmation> {
    let req = req.clone();
    let ids = if chain_ids.is_empty() {
        vec![req.mandate_id.clone()]
    } else {
        chain_ids
    };
    (
        (fits(fit), 0u8..9),
        (
            id::<ConfirmationId>("confirmation"),
            id::<ChannelRef>("push"),
            id::<ActorId>("person"),
            prop::sample::select(ids),
        ),
        (
            0i64..=3_600,
            prop::option::of(1i64..=3_600),
            pick(),
            prop::sample::subsequence(PaymentAction::ALL.to_vec(), 0..=5),
        ),
        (
            id::<BuyerId>("buyer"),
            snapshot_id(),
            id::<MandateId>("mandate"),
            currency(),
        ),
    )
        .prop_map(
            move |(
                (ok, broken),
                (cid, channel_ref, person, mandate_id),
                (ago, lasts, k, extra),
                (other_buyer, other_snapshot, other_mandate, other_currency),
            )| {
                let amount = req.amount;
                let without: crate::domain::ActionSet = extra
                    .iter()
                    .copied()
                    .filter(|a| *a != PaymentAction::Authorize)
                    .collect();
                let mut actions = without;
                actions.insert(PaymentAction::Authorize);
                let mut c = Confirmation {
                    id: cid,
                    buyer_id: req.buyer_id.clone(),
                    confirmed_by: Actor {
                        id: person,
                        kind: ActorKind::Human,
                    },
                    confirmed_at: now - Duration::seconds(ago),
                    expires_at: lasts.map(|s| now + Duration::seconds(s)),
                    snapshot_id: req.snapshot_id,
                    scope: ConfirmationScope {
                        mandate_id,
                        actions,
                        max_amount: cash(k.up(amount.minor_units()), amount.currency()),
                    },
                    channel_ref,
                };
                if !ok {
                    match broken {
                        0 => c.buyer_id = other_buyer,
                        1 => c.confirmed_by.kind = ActorKind::Agent,
                        2 => c.confirmed_at = now + Duration::seconds(1 + ago),
                        3 => c.expires_at = Some(now - Duration::seconds(ago)),
                        4 => c.snapshot_id = other_snapshot,
                        5 => c.scope.mandate_id = other_mandate,
                        6 => c.scope.actions = without,
                        7 => {
                            c.scope.max_amount =
                                cash(k.down(amount.minor_units()), amount.currency());
                        }
                        _ => c.scope.max_amount = cash(amount.minor_units(), other_currency),
                    }
                }
                c
            },
        )
        .boxed()
}
