//! Whole evaluation documents: checkout states, suspensions, credentials, chains and times
//! near a fit, assembled into allowed, near-miss and arbitrary documents.

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::domain::{
    ActorId, BuyerId, CartSnapshot, CheckoutId, CheckoutState, CredentialStatus,
    EvaluationDocument, Lifecycle, Mandate, MandateId, MandateStatus, PaymentAction,
    PaymentRequest, Suspensions, UpstreamBlocker, UpstreamCode, Usage,
};

use super::child::child_spec;
use super::fit::{choose, fits, misses_less};
use super::mandate::{payment_action, root_mandate, root_spec};
use super::request::{confirmation_near, request_near};
use super::snapshot::{cart_content_timed, snapshot};
use super::target::Target;
use super::usage::{huge_usage, usage_near};
use super::values::{currency, id, snapshot_id, text};
use super::{at, reference_time};

pub(super) fn checkout_near(snapshot: &CartSnapshot, fit: u8) -> BoxedStrategy<CheckoutState> {
    let own = snapshot.id();
    let good = id::<CheckoutId>("checkout")
        .prop_map(move |checkout_id| CheckoutState::Valid {
            checkout_id,
            snapshot_id: own,
        })
        .boxed();
    let blocker = (id::<UpstreamCode>("UPSTREAM"), text())
        .prop_map(|(code, message)| UpstreamBlocker { code, message });
    let bad = prop_oneof![
        (id::<CheckoutId>("checkout"), snapshot_id()).prop_map(|(checkout_id, snapshot_id)| {
            CheckoutState::Valid {
                checkout_id,
                snapshot_id,
            }
        }),
        (
            id::<CheckoutId>("checkout"),
            prop::collection::vec(blocker, 0..=2)
        )
            .prop_map(|(checkout_id, blockers)| CheckoutState::Invalid {
                checkout_id,
                blockers,
            }),
        (id::<CheckoutId>("checkout"), -3_600i64..=0).prop_map(|(checkout_id, s)| {
            CheckoutState::Expired {
                checkout_id,
                expired_at: at(s),
            }
        }),
    ]
    .boxed();
    choose(fit, good, bad)
}

pub(super) fn suspensions_near(
    req: &PaymentRequest,
    chain: &[Mandate],
    fit: u8,
) -> BoxedStrategy<Suspensions> {
    let mut actors: Vec<ActorId> = chain.iter().map(|m| m.actor().id.clone()).collect();
    actors.push(req.actor.id.clone());
    let buyer = req.buyer_id.clone();
    let bad = prop_oneof![
        Just(Suspensions::default()),
        prop::sample::select(actors).prop_map(|a| Suspensions {
            actors: vec![a.clone()],
            buyers: Vec::new(),
            credentials: vec![a],
        }),
        Just(Suspensions {
            actors: Vec::new(),
            buyers: vec![buyer],
            credentials: Vec::new(),
        }),
        (id::<ActorId>("agent"), id::<BuyerId>("buyer")).prop_map(|(a, b)| Suspensions {
            actors: vec![a],
            buyers: vec![b],
            credentials: Vec::new(),
        }),
    ]
    .boxed();
    choose(fit, Just(Suspensions::default()).boxed(), bad)
}

pub(super) fn credential_near(fit: u8) -> BoxedStrategy<Option<CredentialStatus>> {
    choose(
        fit,
        Just(Some(CredentialStatus::Usable)).boxed(),
        prop::sample::select(vec![
            None,
            Some(CredentialStatus::Revoked),
            Some(CredentialStatus::Expired),
            Some(CredentialStatus::Suspended),
            Some(CredentialStatus::Usable),
        ])
        .boxed(),
    )
}

/// A chain of mandates ready for evaluation, and the request action it is built around.
#[derive(Debug, Clone)]
pub(super) struct Draft {
    snapshot: CartSnapshot,
    action: PaymentAction,
    chain: Vec<Mandate>,
    leaf: Mandate,
}

pub(super) fn now_near(d: &Draft, fit: u8) -> BoxedStrategy<DateTime<Utc>> {
    let second = Duration::seconds(1);
    let v = &d.leaf.scope().validity;
    let mut boundaries = vec![
        reference_time(),
        d.snapshot.expires_at(),
        d.snapshot.expires_at() - second,
        v.not_before,
        v.not_before - second,
        v.expires_at,
        v.expires_at - second,
    ];
    if let Some(root) = d.chain.first() {
        boundaries.push(root.scope().validity.expires_at);
    }
    choose(
        fit,
        Just(reference_time()).boxed(),
        prop::sample::select(boundaries).boxed(),
    )
}

pub(super) fn chain_below(
    parent: Mandate,
    t: Target,
    depth: usize,
    fit: u8,
) -> BoxedStrategy<Vec<Mandate>> {
    if depth == 0 {
        return Just(vec![parent]).boxed();
    }
    child_spec(&parent, Some(t.clone()), fit)
        .prop_filter_map("valid child", |s| Mandate::new(s).ok())
        .prop_flat_map(move |child| {
            let parent = parent.clone();
            chain_below(child, t.clone(), depth - 1, fit).prop_map(move |mut rest| {
                rest.insert(0, parent.clone());
                rest
            })
        })
        .boxed()
}

pub(super) fn draft(fit: u8) -> BoxedStrategy<Draft> {
    (currency(), payment_action(), fits(fit), 0usize..=2)
        .prop_flat_map(move |(cur, action, fresh, depth)| {
            cart_content_timed(cur, fresh)
                .prop_filter_map("valid snapshot", |c| CartSnapshot::new(c).ok())
                .prop_flat_map(move |snapshot| {
                    let t = Target::of(&snapshot, action);
                    let chain = root_spec(t.clone(), fit)
                        .prop_filter_map("valid mandate", |s| Mandate::new(s).ok())
                        .prop_flat_map(move |root| {
                            chain_below(root.clone(), t.clone(), depth, fit).prop_map(
                                move |chain| {
                                    let leaf =
                                        chain.last().cloned().unwrap_or_else(|| root.clone());
                                    (chain, leaf)
                                },
                            )
                        });
                    (Just(snapshot), chain)
                })
                .prop_map(move |(snapshot, (chain, leaf))| Draft {
                    snapshot,
                    action,
                    chain,
                    leaf,
                })
        })
        .boxed()
}

pub(super) fn document_with_fit(fit: u8) -> BoxedStrategy<EvaluationDocument> {
    draft(fit)
        .prop_flat_map(move |d| {
            (
                request_near(&d.snapshot, &d.leaf, d.action, fit),
                now_near(&d, fit),
                checkout_near(&d.snapshot, fit),
                credential_near(fit),
                Just(d),
            )
        })
        .prop_flat_map(move |(request, now, checkout, credential, d)| {
            let need = if request.amount.currency() == d.snapshot.currency() {
                request.amount.minor_units()
            } else {
                0
            };
            let usage: Vec<BoxedStrategy<Option<Usage>>> = d
                .chain
                .iter()
                .map(|m| {
                    (misses_less(fit, 4), usage_near(m, need, fit))
                        .prop_map(|(present, u)| present.then_some(u))
                        .boxed()
                })
                .collect();
            let ids: Vec<MandateId> = d.chain.iter().map(|m| m.id().clone()).collect();
            let count = if fit >= 100 { 1..=2 } else { 0..=2 };
            (
                usage
                    .prop_map(|u| u.into_iter().flatten().collect::<Vec<_>>())
                    .prop_shuffle(),
                prop::collection::vec(confirmation_near(&request, ids, now, fit), count),
                suspensions_near(&request, &d.chain, fit),
                Just((request, now, checkout, credential, d)),
            )
        })
        .prop_map(
            |(usage, confirmations, suspensions, (request, now, checkout, credential, d))| {
                EvaluationDocument {
                    request,
                    chain: d.chain,
                    snapshot: d.snapshot,
                    checkout,
                    usage,
                    confirmations,
                    suspensions,
                    credential,
                    now,
                    resource_payments: None,
                    controls: None,
                }
            },
        )
        .boxed()
}

/// A whole evaluation document with a chain of 1 to 3 mandates (a root and up to two derived
/// children, each an attenuation of its parent). A fifth of the documents fit exactly and
/// evaluate to `allowed`; a fifth are one step from it (checkout or snapshot expired, the
/// confirmation or the leaf's activation missing); the others break a few random parts
/// (merchant, MCC, cart, currency, action, amount, caps, windows, lifetime, uses, attempts,
/// validity, status, actor, buyer, confirmation, credential, checkout, suspensions), often
/// exactly at a limit.
pub fn evaluation_document() -> BoxedStrategy<EvaluationDocument> {
    prop_oneof![
        1 => allowed_document(),
        1 => one_step_from_allowed(),
        1 => document_with_fit(97),
        1 => document_with_fit(90),
        1 => document_with_fit(60),
    ]
    .boxed()
}

/// An allowed document with one thing taken away: it needs revalidation or a confirmation.
pub(super) fn one_step_from_allowed() -> BoxedStrategy<EvaluationDocument> {
    (allowed_document(), 0u8..4, id::<CheckoutId>("checkout"))
        .prop_map(|(mut d, which, checkout_id)| {
            match which {
                0 => {
                    d.checkout = CheckoutState::Expired {
                        checkout_id,
                        expired_at: d.now,
                    };
                }
                1 => d.now = d.snapshot.expires_at(),
                2 => d.confirmations.clear(),
                _ => {
                    if let Some(leaf) = d.chain.pop() {
                        let mut spec = leaf.spec().clone();
                        spec.lifecycle = Lifecycle::new(
                            MandateStatus::PendingConfirmation,
                            spec.lifecycle.created_at,
                        );
                        d.chain.push(match Mandate::new(spec) {
                            Ok(pending) => pending,
                            Err(_) => leaf,
                        });
                    }
                }
            }
            d
        })
        .boxed()
}

/// A document in which everything fits: evaluating it gives `allowed`.
pub fn allowed_document() -> BoxedStrategy<EvaluationDocument> {
    document_with_fit(100)
}

/// A document that makes little sense, for robustness (I12): unrelated or half-linked chains of
/// 0 to 3 mandates in mixed currencies, requests for strangers, usage up to the money limit,
/// any checkout, credential and time. Every value is still individually valid.
pub fn arbitrary_document() -> BoxedStrategy<EvaluationDocument> {
    (
        snapshot(),
        prop::collection::vec((root_mandate(), any::<bool>(), any::<bool>()), 0..=3),
        payment_action(),
        root_mandate(),
        any::<bool>(),
    )
        .prop_flat_map(|(snapshot, raw, action, stranger, use_leaf)| {
            let mut chain: Vec<Mandate> = Vec::new();
            for (m, link, same_buyer) in raw {
                let linked = chain.last().filter(|_| link).and_then(|prev| {
                    let mut spec = m.spec().clone();
                    spec.parent_id = Some(prev.id().clone());
                    if same_buyer {
                        spec.buyer_id = prev.buyer_id().clone();
                    }
                    Mandate::new(spec).ok()
                });
                chain.push(linked.unwrap_or(m));
            }
            let leaf = chain
                .last()
                .filter(|_| use_leaf)
                .cloned()
                .unwrap_or(stranger);
            let mut ids: Vec<MandateId> = chain.iter().map(|m| m.id().clone()).collect();
            ids.push(leaf.id().clone());
            (
                request_near(&snapshot, &leaf, action, 50),
                prop::collection::vec(huge_usage(ids.clone()), 0..=4),
                prop_oneof![Just(reference_time()), (-259_200i64..=259_200).prop_map(at)],
                (checkout_near(&snapshot, 50), credential_near(50)),
                Just((snapshot, chain, ids)),
            )
        })
        .prop_flat_map(
            |(request, usage, now, (checkout, credential), (snapshot, chain, ids))| {
                (
                    prop::collection::vec(confirmation_near(&request, ids, now, 50), 0..=2),
                    suspensions_near(&request, &chain, 50),
                    Just((request, usage, now, checkout, credential, snapshot, chain)),
                )
            },
        )
        .prop_map(
            |(
                confirmations,
                suspensions,
                (request, usage, now, checkout, credential, snapshot, chain),
            )| {
                EvaluationDocument {
                    request,
                    chain,
                    snapshot,
                    checkout,
                    usage,
                    confirmations,
                    suspensions,
                    credential,
                    now,
                    resource_payments: None,
                    controls: None,
                }
            },
        )
        .boxed()
}
