//! The authority decision function: pure, deterministic, every check run, deny by default.

use std::cmp::Ordering;

use super::checkout::CheckoutState;
use super::decision::{AuthorityDecision, Blocker, BlockerCode as C, Cause, Evidence, Outcome};
use super::mandate::{Mandate, MandateStatus};
use super::money::Money;
use super::request::{CredentialStatus, EvaluationInput};
use super::scope::{CartBinding, ConfirmationCondition, MerchantScope, PaymentAction};
use super::usage::Usage;

/// Decides whether the request may proceed now.
///
/// A pure function of its input: no clock, no IO. Every check runs and every blocker found is
/// reported, in a fixed order (checkout, request vs snapshot, chain, actor and buyer, then for
/// each mandate from root to leaf: lifecycle, scope, budgets, confirmation; then credential).
/// The outcome follows [`Outcome::from_blockers`]. Checks that cannot be evaluated (amounts in
/// another currency) are skipped only when a hard blocker already explains why.
///
/// ```
/// use agent_mandate::domain::{evaluate, examples, Outcome};
/// let doc = examples::travel_backpack_document();
/// let decision = evaluate(&doc.input());
/// assert_eq!(decision.outcome, Outcome::Allowed);
/// ```
#[must_use]
pub fn evaluate(input: &EvaluationInput<'_>) -> AuthorityDecision {
    let mut out = Vec::new();
    let mut evidence = Vec::with_capacity(input.chain.len() + 3);
    check_checkout(input, &mut out);
    check_request_against_snapshot(input, &mut out);
    if let Some(leaf) = check_chain(input, &mut out) {
        check_actor_and_buyer(input, leaf, &mut out);
        let last = input.chain.len() - 1;
        for (i, mandate) in input.chain.iter().enumerate() {
            check_lifecycle(input, mandate, i == last, &mut out);
            check_scope(input, mandate, &mut out);
            check_budgets(input, mandate, &mut out);
            check_confirmation(input, mandate, &mut out, &mut evidence);
        }
    }
    check_declined(input, &mut out);
    check_credential(input, &mut out);
    check_resource_loop(input, &mut out);
    check_controls(input, &mut out, &mut evidence);

    for m in input.chain {
        evidence.push(Evidence::PaymentMandate(m.id().clone()));
    }
    evidence.push(Evidence::CartSnapshot(input.snapshot.id()));
    evidence.push(Evidence::CheckoutState(
        input.checkout.checkout_id().clone(),
    ));

    AuthorityDecision {
        outcome: Outcome::from_blockers(&out),
        blockers: out,
        evidence,
        request_digest: input.request.digest(),
        evaluated_at: input.now,
    }
}

/// Loop detection: the resource was already paid for `max_payments` times in the window.
fn check_resource_loop(input: &EvaluationInput<'_>, out: &mut Vec<Blocker>) {
    if let Some(rp) = input.resource_payments
        && rp.paid >= rp.limit.max_payments
    {
        out.push(Blocker::new(
            C::ResourceLoopDetected,
            format!(
                "this resource was paid for {} times in the last {} s; the loop limit is {}",
                rp.paid, rp.limit.window_seconds, rp.limit.max_payments
            ),
        ));
    }
}

/// The engine's controls: an open circuit breaker, a cart that departs from the declared
/// purchase intent, and reasons the buyer must confirm (satisfied by a confirmation of the
/// snapshot, as a mandate's rule is; dual confirmation also needs the agent's declaration
/// bound to the snapshot and the amount).
fn check_controls(
    input: &EvaluationInput<'_>,
    out: &mut Vec<Blocker>,
    evidence: &mut Vec<Evidence>,
) {
    let Some(signals) = input.controls else {
        return;
    };
    let req = input.request;
    if let Some(scope) = signals.circuit_open {
        let whose = match scope {
            super::controls::BreakerScope::Credential => "the credential",
            super::controls::BreakerScope::Agent => "the agent",
        };
        out.push(Blocker::new(
            C::CircuitOpen,
            format!("{whose} failed authentication too often: the circuit breaker is open"),
        ));
    }
    if let Some(intent) = &signals.intent
        && let Some(why) = super::controls::intent_mismatch(intent, req, input.snapshot)
    {
        out.push(Blocker::new(
            C::IntentMismatch,
            format!(
                "the cart does not match the declared purchase intent {}: {why}",
                intent.intent_hash()
            ),
        ));
    }
    if signals.intent_required && signals.intent.is_none() && req.action == PaymentAction::Authorize
    {
        out.push(Blocker::new(
            C::IntentMismatch,
            "no purchase intent was declared, and the controls require one for an agent's payment",
        ));
    }
    if signals.confirm.is_empty() || req.action != PaymentAction::Authorize {
        return;
    }
    let confirmation = input
        .confirmations
        .iter()
        .filter(|c| {
            c.buyer_id == req.buyer_id
                && c.by_human()
                && c.in_force(input.now)
                && c.snapshot_id == req.snapshot_id
                && input.chain.iter().any(|x| *x.id() == c.scope.mandate_id)
                && c.scope.actions.contains(req.action)
                && req.amount.fits_within(&c.scope.max_amount)
        })
        .min_by(|a, b| a.id.cmp(&b.id));
    for reason in &signals.confirm {
        let (why, declared) = match reason {
            super::controls::ConfirmReason::Velocity {
                payments,
                window_seconds,
            } => (
                format!(
                    "velocity hold: the agent made {payments} payments in the last {window_seconds} s"
                ),
                true,
            ),
            super::controls::ConfirmReason::MerchantNotAllowlisted => (
                format!(
                    "merchant {} is outside the buyer's allowlist",
                    req.merchant_id
                ),
                true,
            ),
            super::controls::ConfirmReason::DualConfirmation { above } => (
                format!(
                    "the amount is above {above}: the agent's declaration and the buyer's confirmation of this snapshot are both required"
                ),
                signals.declaration.as_ref().is_some_and(|d| d.binds(req)),
            ),
        };
        match (&confirmation, declared) {
            (Some(c), true) => {
                let ev = Evidence::ConfirmationRecord(c.id.clone());
                if !evidence.contains(&ev) {
                    evidence.push(ev);
                }
            }
            _ => out.push(Blocker::new(C::ConfirmationRequired, why)),
        }
    }
}

fn check_checkout(input: &EvaluationInput<'_>, out: &mut Vec<Blocker>) {
    match input.checkout {
        CheckoutState::Valid {
            checkout_id,
            snapshot_id,
        } => {
            if *snapshot_id != input.request.snapshot_id {
                out.push(Blocker::new(
                    C::CartSnapshotMismatch,
                    format!(
                        "checkout {checkout_id} validated snapshot {snapshot_id}, the request is for {}",
                        input.request.snapshot_id
                    ),
                ));
            }
        }
        CheckoutState::Invalid {
            checkout_id,
            blockers,
        } => {
            let causes = blockers
                .iter()
                .map(|b| Cause {
                    code: b.code.to_string(),
                    message: b.message.to_string(),
                })
                .collect();
            out.push(
                Blocker::new(
                    C::CheckoutNotValid,
                    format!("delegated payment cannot proceed because checkout {checkout_id} is not valid"),
                )
                .caused_by(causes),
            );
        }
        CheckoutState::Expired {
            checkout_id,
            expired_at,
        } => out.push(Blocker::new(
            C::CheckoutExpired,
            format!("checkout {checkout_id} expired at {expired_at}"),
        )),
    }
}

fn check_request_against_snapshot(input: &EvaluationInput<'_>, out: &mut Vec<Blocker>) {
    let req = input.request;
    let snap = input.snapshot;
    if req.snapshot_id != snap.id() {
        out.push(Blocker::new(
            C::CartSnapshotMismatch,
            format!(
                "the request is for snapshot {}, the snapshot evaluated is {}",
                req.snapshot_id,
                snap.id()
            ),
        ));
    }
    // A capture or refund settles a payment authorized while the snapshot was current: the
    // snapshot's expiry bounds new spend and order commitment, not settlement.
    let settles = matches!(req.action, PaymentAction::Capture | PaymentAction::Refund);
    if snap.is_expired(input.now) && !settles {
        out.push(Blocker::new(
            C::SnapshotExpired,
            format!("snapshot {} expired at {}", snap.id(), snap.expires_at()),
        ));
    }
    if req.merchant_id != snap.merchant().merchant_id {
        out.push(Blocker::new(
            C::MerchantMismatch,
            format!(
                "the request names merchant {}, the checkout merchant is {}",
                req.merchant_id,
                snap.merchant().merchant_id
            ),
        ));
    }
    let total = snap.total();
    let Ok(ordering) = req.amount.try_cmp(&total) else {
        out.push(Blocker::new(
            C::CurrencyMismatch,
            format!(
                "the request is in {}, the checkout is in {}",
                req.currency(),
                snap.currency()
            ),
        ));
        return;
    };
    let mismatch = match req.action {
        PaymentAction::Prepare | PaymentAction::Authorize | PaymentAction::CommitOrder => {
            ordering != Ordering::Equal
        }
        PaymentAction::Capture | PaymentAction::Refund => ordering == Ordering::Greater,
    };
    if mismatch {
        out.push(Blocker::new(
            C::AmountMismatch,
            format!(
                "{} of {} does not match the snapshot total {}",
                req.action, req.amount, total
            ),
        ));
    }
}

/// Checks the chain's shape; returns the leaf when there is one.
fn check_chain<'a>(input: &EvaluationInput<'a>, out: &mut Vec<Blocker>) -> Option<&'a Mandate> {
    let chain = input.chain;
    let Some(leaf) = chain.last() else {
        out.push(Blocker::new(
            C::AuthorityMissing,
            format!(
                "no mandate authorizes {} for buyer {}",
                input.request.action, input.request.buyer_id
            ),
        ));
        return None;
    };
    if *leaf.id() != input.request.mandate_id {
        out.push(Blocker::new(
            C::AuthorityMissing,
            format!(
                "the request invokes mandate {}, the chain supplied ends at {}",
                input.request.mandate_id,
                leaf.id()
            ),
        ));
    }
    let root = &chain[0];
    let broken = if let Some(parent) = root.parent_id() {
        Some(format!(
            "the chain starts at {}, which was derived from {parent}",
            root.id()
        ))
    } else {
        chain.windows(2).find_map(|pair| {
            if pair[1].parent_id() != Some(pair[0].id()) {
                Some(format!(
                    "{} is not derived from {}",
                    pair[1].id(),
                    pair[0].id()
                ))
            } else if pair[1].buyer_id() != pair[0].buyer_id() {
                Some(format!(
                    "{} belongs to another buyer than {}",
                    pair[1].id(),
                    pair[0].id()
                ))
            } else {
                None
            }
        })
    };
    if let Some(message) = broken {
        out.push(Blocker::new(C::ChainInvalid, message));
    }
    Some(leaf)
}

fn check_actor_and_buyer(input: &EvaluationInput<'_>, leaf: &Mandate, out: &mut Vec<Blocker>) {
    let req = input.request;
    if req.actor != *leaf.actor() {
        out.push(
            Blocker::new(
                C::ActorNotAuthorized,
                format!(
                    "{:?} actor {} is not the actor of mandate {}",
                    req.actor.kind,
                    req.actor.id,
                    leaf.id()
                ),
            )
            .on(leaf.id()),
        );
    }
    if input.suspensions.actor(&req.actor.id) {
        out.push(Blocker::new(
            C::ActorSuspended,
            format!("actor {} is suspended", req.actor.id),
        ));
    }
    if req.buyer_id != *leaf.buyer_id() {
        out.push(
            Blocker::new(
                C::BuyerMismatch,
                format!(
                    "the request is for buyer {}, mandate {} is of buyer {}",
                    req.buyer_id,
                    leaf.id(),
                    leaf.buyer_id()
                ),
            )
            .on(leaf.id()),
        );
    }
    if input.suspensions.buyer(&req.buyer_id) {
        out.push(Blocker::new(
            C::BuyerSuspended,
            format!("buyer {} is suspended", req.buyer_id),
        ));
    }
}

fn check_lifecycle(
    input: &EvaluationInput<'_>,
    m: &Mandate,
    is_leaf: bool,
    out: &mut Vec<Blocker>,
) {
    let now = input.now;
    let mut found: Vec<(C, String)> = Vec::new();
    let status_code = match m.status() {
        MandateStatus::Active => None,
        MandateStatus::PendingConfirmation => Some(C::MandatePendingConfirmation),
        // A used mandate grants no new spend; the capture, refund and order commitment of the
        // payment that used it continue under it.
        MandateStatus::Used if !input.request.action.creates_spend() => None,
        MandateStatus::Used => Some(C::MandateUsed),
        MandateStatus::Expired => Some(C::MandateExpired),
        MandateStatus::Revoked => Some(C::MandateRevoked),
        MandateStatus::Rejected => Some(C::MandateRejected),
    };
    if let Some(code) = status_code {
        let reason = match (
            &m.lifecycle().revoked_reason,
            &m.lifecycle().rejected_reason,
        ) {
            (Some(r), _) if code == C::MandateRevoked => format!(": {r}"),
            (_, Some(r)) if code == C::MandateRejected => format!(": {r}"),
            _ => String::new(),
        };
        found.push((
            code,
            format!("mandate {} is {}{reason}", m.id(), m.status()),
        ));
    }
    let validity = &m.scope().validity;
    if now < validity.not_before {
        found.push((
            C::MandateNotYetValid,
            format!("mandate {} is valid from {}", m.id(), validity.not_before),
        ));
    }
    if now >= validity.expires_at && status_code != Some(C::MandateExpired) {
        found.push((
            C::MandateExpired,
            format!("mandate {} expired at {}", m.id(), validity.expires_at),
        ));
    }
    if is_leaf {
        out.extend(
            found
                .into_iter()
                .map(|(code, msg)| Blocker::new(code, msg).on(m.id())),
        );
        return;
    }
    if input.suspensions.actor(&m.actor().id) {
        found.push((
            C::ActorSuspended,
            format!("actor {} of mandate {} is suspended", m.actor().id, m.id()),
        ));
    }
    if !found.is_empty() {
        let causes = found
            .into_iter()
            .map(|(code, message)| Cause {
                code: code.as_str().to_owned(),
                message,
            })
            .collect();
        out.push(
            Blocker::new(
                C::AncestorNotActive,
                format!("ancestor mandate {} grants no authority now", m.id()),
            )
            .on(m.id())
            .caused_by(causes),
        );
    }
}

/// The part of the request amount that counts against `m`'s maximum: the total less shipping and
/// tax when the mandate does not include them (for requests of the full total).
fn scoped_amount(
    input: &EvaluationInput<'_>,
    m: &Mandate,
) -> Result<Money, super::money::MoneyError> {
    let req = &input.request.amount;
    let totals = input.snapshot.totals();
    if *req != totals.total {
        return Ok(*req);
    }
    let amount_scope = &m.scope().amount;
    let mut scoped = *req;
    if !amount_scope.includes_shipping {
        scoped = scoped.saturating_sub(&totals.shipping)?;
    }
    if !amount_scope.includes_tax {
        scoped = scoped.saturating_sub(&totals.tax)?;
    }
    Ok(scoped)
}

/// Whether the mandate's currency is the request's and the snapshot's (amount checks need it).
fn same_currency(input: &EvaluationInput<'_>, m: &Mandate) -> bool {
    m.currency() == input.request.currency() && m.currency() == input.snapshot.currency()
}

fn check_scope(input: &EvaluationInput<'_>, m: &Mandate, out: &mut Vec<Blocker>) {
    let scope = m.scope();
    let merchant = input.snapshot.merchant();
    let req = input.request;
    let id = m.id();
    match &scope.merchants {
        MerchantScope::Single { merchant_id } => {
            if *merchant_id != merchant.merchant_id {
                out.push(
                    Blocker::new(
                        C::MerchantMismatch,
                        format!(
                            "mandate {id} covers merchant {merchant_id}, the checkout merchant is {}",
                            merchant.merchant_id
                        ),
                    )
                    .on(id),
                );
            }
        }
        MerchantScope::Marketplace {
            marketplace_id,
            allowed_sellers,
        } => {
            if merchant.marketplace_id.as_ref() != Some(marketplace_id) {
                out.push(
                    Blocker::new(
                        C::MerchantMismatch,
                        format!("mandate {id} covers marketplace {marketplace_id} only"),
                    )
                    .on(id),
                );
            } else if let Some(sellers) = allowed_sellers
                && !merchant
                    .seller_id
                    .as_ref()
                    .is_some_and(|s| sellers.contains(s))
            {
                let seller = merchant
                    .seller_id
                    .as_ref()
                    .map_or_else(|| "no seller".to_owned(), |s| format!("seller {s}"));
                out.push(
                    Blocker::new(
                        C::SellerNotAllowed,
                        format!("mandate {id} does not allow {seller}"),
                    )
                    .on(id),
                );
            }
        }
        MerchantScope::Allowlist { merchant_ids } => {
            if !merchant_ids.contains(&merchant.merchant_id) {
                out.push(
                    Blocker::new(
                        C::MerchantMismatch,
                        format!(
                            "merchant {} is not in the allowlist of mandate {id}",
                            merchant.merchant_id
                        ),
                    )
                    .on(id),
                );
            }
        }
    }
    if let Some(mccs) = &scope.mccs
        && !mccs.contains(&merchant.mcc)
    {
        out.push(
            Blocker::new(
                C::MccNotAllowed,
                format!(
                    "merchant category {} is not allowed by mandate {id}",
                    merchant.mcc
                ),
            )
            .on(id),
        );
    }
    match &scope.cart {
        CartBinding::Snapshot { snapshot_id } => {
            if *snapshot_id != input.snapshot.id() {
                out.push(
                    Blocker::new(
                        C::CartSnapshotMismatch,
                        format!(
                            "mandate {id} is bound to snapshot {snapshot_id}, the checkout is snapshot {}",
                            input.snapshot.id()
                        ),
                    )
                    .on(id),
                );
            }
        }
        CartBinding::Open {
            allowed_skus,
            max_line_items,
        } => {
            let items = input.snapshot.items();
            if let Some(skus) = allowed_skus
                && let Some(item) = items.iter().find(|i| !skus.contains(&i.sku))
            {
                out.push(
                    Blocker::new(
                        C::CartOutsideIntent,
                        format!("SKU {} is not covered by mandate {id}", item.sku),
                    )
                    .on(id),
                );
            }
            if let Some(max) = max_line_items
                && items.len() > *max as usize
            {
                out.push(
                    Blocker::new(
                        C::CartOutsideIntent,
                        format!(
                            "the cart has {} lines, mandate {id} allows {max}",
                            items.len()
                        ),
                    )
                    .on(id),
                );
            }
        }
    }
    if !same_currency(input, m) {
        out.push(
            Blocker::new(
                C::CurrencyMismatch,
                format!(
                    "mandate {id} is in {}, the payment is in {}",
                    m.currency(),
                    req.currency()
                ),
            )
            .on(id),
        );
    }
    if !scope.actions.contains(req.action) {
        out.push(
            Blocker::new(
                C::ActionNotAllowed,
                format!("mandate {id} does not allow {}", req.action),
            )
            .on(id),
        );
    }
    if !same_currency(input, m) || req.action == PaymentAction::Refund {
        return;
    }
    let amount_scope = &scope.amount;
    if let Ok(scoped) = scoped_amount(input, m) {
        let max = &amount_scope.max_amount;
        match scoped.try_cmp(max) {
            Ok(Ordering::Greater) => out.push(
                Blocker::new(
                    C::AmountExceedsMandate,
                    format!("{scoped} exceeds the {max} of mandate {id}{}", inclusion(m)),
                )
                .on(id),
            ),
            Ok(Ordering::Less) if req.action.creates_spend() && !amount_scope.allow_lower_amount => out.push(
                Blocker::new(
                    C::LowerAmountNotAllowed,
                    format!("{scoped} is below the {max} of mandate {id}, which allows no lower amount"),
                )
                .on(id),
            ),
            _ => {}
        }
    }
    if req.action == PaymentAction::Capture
        && !amount_scope.allow_partial_capture
        && req.amount.try_cmp(&input.snapshot.total()) == Ok(Ordering::Less)
    {
        out.push(
            Blocker::new(
                C::PartialCaptureNotAllowed,
                format!(
                    "capture of {} is less than {}; mandate {id} allows no partial capture",
                    req.amount,
                    input.snapshot.total()
                ),
            )
            .on(id),
        );
    }
}

fn inclusion(m: &Mandate) -> &'static str {
    let a = &m.scope().amount;
    match (a.includes_shipping, a.includes_tax) {
        (true, true) => " (shipping and tax included)",
        (true, false) => " (shipping included, tax excluded)",
        (false, true) => " (shipping excluded, tax included)",
        (false, false) => " (shipping and tax excluded)",
    }
}

/// The one usage entry of `m`. Two entries for the same mandate are contradictory input: the
/// decision must not depend on their order (I8), so neither is used.
fn find_usage<'a>(input: &EvaluationInput<'a>, m: &Mandate) -> Result<Option<&'a Usage>, ()> {
    let mut entries = input.usage.iter().filter(|u| u.mandate_id == *m.id());
    match (entries.next(), entries.next()) {
        (first, None) => Ok(first),
        (Some(_), Some(_)) | (None, Some(_)) => Err(()),
    }
}

fn check_budgets(input: &EvaluationInput<'_>, m: &Mandate, out: &mut Vec<Blocker>) {
    let req = input.request;
    if !req.action.creates_spend() || !same_currency(input, m) {
        return;
    }
    let scope = m.scope();
    let budgets = &scope.budgets;
    let id = m.id();
    let amount = &req.amount;
    if let Some(max) = &budgets.per_transaction
        && amount.exceeds(max)
    {
        out.push(
            Blocker::new(
                C::TransactionLimitExceeded,
                format!("{amount} exceeds the per-transaction maximum {max} of mandate {id}"),
            )
            .on(id),
        );
    }
    let needs_usage = !budgets.windows.is_empty()
        || budgets.lifetime.is_some()
        || scope.max_uses.is_some()
        || scope.amount.max_payment_attempts.is_some();
    if !needs_usage {
        return;
    }
    let usage = match find_usage(input, m) {
        Ok(Some(u)) if u.currency() == m.currency() => u,
        Ok(_) => {
            out.push(
                Blocker::new(
                    C::UsageUnavailable,
                    format!("no usage in {} was supplied for mandate {id}", m.currency()),
                )
                .on(id),
            );
            return;
        }
        Err(()) => {
            out.push(
                Blocker::new(
                    C::UsageUnavailable,
                    format!("several usage entries were supplied for mandate {id}"),
                )
                .on(id),
            );
            return;
        }
    };
    for w in &budgets.windows {
        let mut reported = usage
            .windows
            .iter()
            .filter(|u| u.window_seconds == w.window_seconds);
        let (Some(wu), None) = (reported.next(), reported.next()) else {
            out.push(
                Blocker::new(
                    C::UsageUnavailable,
                    format!(
                        "no single usage was supplied for the {} s window of mandate {id}",
                        w.window_seconds
                    ),
                )
                .on(id),
            );
            continue;
        };
        if let Some(max) = &w.max_amount {
            let exceeded = match wu.amount.checked_add(amount) {
                Ok(after) => after.exceeds(max),
                Err(_) => true,
            };
            if exceeded {
                out.push(
                    Blocker::new(
                        C::WindowAmountExceeded,
                        format!(
                            "{} used in the last {} s plus {amount} exceeds {max} on mandate {id}",
                            wu.amount, w.window_seconds
                        ),
                    )
                    .on(id),
                );
            }
        }
        if let Some(max) = w.max_count
            && wu.count >= max
        {
            out.push(
                Blocker::new(
                    C::WindowCountExceeded,
                    format!(
                        "{} payments in the last {} s, mandate {id} allows {max}",
                        wu.count, w.window_seconds
                    ),
                )
                .on(id),
            );
        }
    }
    if let Some(max) = &budgets.lifetime {
        let after = usage
            .spent
            .checked_add(&usage.held)
            .and_then(|u| u.checked_add(amount));
        let exceeded = match after {
            Ok(after) => after.exceeds(max),
            Err(_) => true,
        };
        if exceeded {
            out.push(
                Blocker::new(
                    C::LifetimeLimitExceeded,
                    format!(
                        "{} spent and {} held plus {amount} exceeds the lifetime {max} of mandate {id}",
                        usage.spent, usage.held
                    ),
                )
                .on(id),
            );
        }
    }
    if let Some(max) = scope.max_uses
        && usage.uses >= max
        && m.status() != MandateStatus::Used
    {
        out.push(
            Blocker::new(
                C::MandateUsed,
                format!("mandate {id} has been used {} of {max} times", usage.uses),
            )
            .on(id),
        );
    }
    if req.action == PaymentAction::Authorize
        && let Some(max) = scope.amount.max_payment_attempts
        && usage.attempts >= max
    {
        out.push(
            Blocker::new(
                C::AttemptsExhausted,
                format!(
                    "mandate {id} allows {max} payment attempts, {} were made",
                    usage.attempts
                ),
            )
            .on(id),
        );
    }
}

/// The first condition of `m`'s rule that applies to the request, if any.
fn confirmation_trigger(input: &EvaluationInput<'_>, m: &Mandate) -> Option<String> {
    let rule = &m.scope().confirmation;
    let req = input.request;
    let snap = input.snapshot;
    let baseline = rule.baseline.as_ref();
    rule.conditions.iter().find_map(|c| {
        let applies = match c {
            ConfirmationCondition::Always => true,
            ConfirmationCondition::AboveAmount { amount } => {
                // Another currency cannot be compared: ask (deny by default).
                req.amount.exceeds(amount)
            }
            ConfirmationCondition::UrgencyAtLeast { urgency } => {
                req.urgency.is_some_and(|u| u >= *urgency)
            }
            ConfirmationCondition::AmountChanged => {
                baseline.is_none_or(|b| b.total != snap.total())
            }
            ConfirmationCondition::CartChanged => {
                baseline.is_none_or(|b| b.items_digest != snap.items_digest())
            }
            ConfirmationCondition::ShippingChanged => {
                baseline.is_none_or(|b| b.shipping != snap.totals().shipping)
            }
            ConfirmationCondition::PolicyChanged => {
                baseline.is_none_or(|b| b.policy_digest != snap.policy_digest())
            }
        };
        applies.then(|| match c {
            ConfirmationCondition::Always => "every payment".to_owned(),
            ConfirmationCondition::AboveAmount { amount } => format!("payments above {amount}"),
            ConfirmationCondition::UrgencyAtLeast { urgency } => {
                format!("urgency {} or higher", urgency.as_str())
            }
            ConfirmationCondition::AmountChanged => "a changed amount".to_owned(),
            ConfirmationCondition::CartChanged => "a changed cart".to_owned(),
            ConfirmationCondition::ShippingChanged => "changed shipping".to_owned(),
            ConfirmationCondition::PolicyChanged => "changed policies".to_owned(),
        })
    })
}

fn check_confirmation(
    input: &EvaluationInput<'_>,
    m: &Mandate,
    out: &mut Vec<Blocker>,
    evidence: &mut Vec<Evidence>,
) {
    let req = input.request;
    if req.action != PaymentAction::Authorize {
        return;
    }
    let Some(trigger) = confirmation_trigger(input, m) else {
        return;
    };
    // Among confirmations that satisfy the rule, cite the one with the smallest id, so the
    // decision does not depend on the order of the input (I8).
    let satisfying = input.confirmations.iter().filter(|c| {
        c.buyer_id == req.buyer_id
            && c.by_human()
            && c.in_force(input.now)
            && c.snapshot_id == req.snapshot_id
            && input.chain.iter().any(|x| *x.id() == c.scope.mandate_id)
            && c.scope.actions.contains(req.action)
            && req.amount.fits_within(&c.scope.max_amount)
    });
    let satisfying = satisfying.min_by(|a, b| a.id.cmp(&b.id));
    match satisfying {
        Some(c) => {
            let ev = Evidence::ConfirmationRecord(c.id.clone());
            if !evidence.contains(&ev) {
                evidence.push(ev);
            }
        }
        None => out.push(
            Blocker::new(
                C::ConfirmationRequired,
                format!(
                    "mandate {} requires the buyer's confirmation for {trigger}",
                    m.id()
                ),
            )
            .on(m.id()),
        ),
    }
}

/// The buyer declined this cart (a recorded answer that grants no action, see
/// [`Confirmation::is_decline`](crate::domain::Confirmation::is_decline)) under a mandate of
/// the chain, and has not confirmed it since: the latest answer of the buyer counts, a decline
/// given at the same instant as a confirmation wins.
fn check_declined(input: &EvaluationInput<'_>, out: &mut Vec<Blocker>) {
    let req = input.request;
    if req.action != PaymentAction::Authorize {
        return;
    }
    let ours = |c: &&crate::domain::Confirmation| {
        c.buyer_id == req.buyer_id
            && c.by_human()
            && c.confirmed_at <= input.now
            && c.snapshot_id == req.snapshot_id
            && input.chain.iter().any(|x| *x.id() == c.scope.mandate_id)
    };
    let Some(declined) = input
        .confirmations
        .iter()
        .filter(ours)
        .filter(|c| c.is_decline())
        .max_by(|a, b| a.confirmed_at.cmp(&b.confirmed_at).then(b.id.cmp(&a.id)))
    else {
        return;
    };
    let confirmed_since = input.confirmations.iter().filter(ours).any(|c| {
        c.confirmed_at > declined.confirmed_at
            && c.in_force(input.now)
            && c.scope.actions.contains(req.action)
            && req.amount.fits_within(&c.scope.max_amount)
    });
    if !confirmed_since {
        out.push(
            Blocker::new(
                C::ConfirmationDeclined,
                format!(
                    "the buyer declined this cart ({}) under mandate {}",
                    declined.id, declined.scope.mandate_id
                ),
            )
            .on(&declined.scope.mandate_id),
        );
    }
}

fn check_credential(input: &EvaluationInput<'_>, out: &mut Vec<Blocker>) {
    if input.request.action != PaymentAction::Authorize {
        return;
    }
    // The credentials' kill switch of the payer, or of the actor accountable for it (the
    // agent a token's copy of a card comes from): the credential reads suspended.
    let req = input.request;
    let killed = input.credential.is_some()
        && (input.suspensions.credentials(&req.actor.id)
            || super::controls::accountable_actor(req, input.chain)
                .is_some_and(|a| input.suspensions.credentials(a)));
    let credential = if killed {
        Some(CredentialStatus::Suspended)
    } else {
        input.credential
    };
    let problem = match credential {
        Some(CredentialStatus::Usable) => return,
        None => "no payment credential was presented",
        Some(CredentialStatus::Revoked) => "the payment credential is revoked",
        Some(CredentialStatus::Expired) => "the payment credential has expired",
        Some(CredentialStatus::Suspended) => "the payment credential is suspended",
    };
    out.push(Blocker::new(C::CredentialNotUsable, problem));
}
