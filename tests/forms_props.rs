//! I6 for forms: for arbitrary mandate chains (the crate's strategies) and usage, whatever an
//! export writes reads back (in mandate terms) no wider than any mandate of the chain, by the
//! crate's own comparison (`widenings`: narrower-or-equal in every dimension), and within
//! every budget's and count's headroom left by the usage. Exports that refuse are counted: the
//! property must also hold on a real share of successful exports.

#![cfg(all(feature = "forms", feature = "proptest"))]

use std::cell::Cell;

use agent_mandate::domain::{
    widenings, CartBinding, Lifecycle, Mandate, MandateId, MandateScope, MandateSpec,
    MandateStatus, Money, Usage,
};
use agent_mandate::forms::{
    to_acp_allowance, to_stripe_spt, to_visa_instruction, AcpTarget, EffectiveAuthority,
    StripeTarget, VisaTarget,
};
use agent_mandate::strategies::{active_root_mandate, child_of, lifecycle, reference_time};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Drops, each with a chance, the restrictions no form carries, so that many exports succeed.
fn loosen(m: &Mandate, keep: [bool; 6]) -> Option<Mandate> {
    let mut s = m.spec().clone();
    if !keep[0] {
        s.scope.cart = CartBinding::Open {
            allowed_skus: None,
            max_line_items: None,
        };
    }
    if !keep[1] {
        s.scope.mccs = None;
    }
    if !keep[2] {
        s.scope.confirmation.conditions.retain(|c| {
            matches!(
                c,
                agent_mandate::domain::ConfirmationCondition::AboveAmount { .. }
            )
        });
    }
    if !keep[3] {
        s.scope.amount.max_payment_attempts = None;
    }
    if !keep[4] {
        s.scope.amount.allow_lower_amount = true;
    }
    if !keep[5] {
        s.scope.actions = agent_mandate::domain::PaymentAction::ALL
            .into_iter()
            .collect();
    }
    Mandate::new(s).ok()
}

/// Six chances to keep a restriction, one in five each.
fn keeps() -> impl Strategy<Value = [bool; 6]> {
    let k = || prop::bool::weighted(0.2);
    (k(), k(), k(), k(), k(), k()).prop_map(|(a, b, c, d, e, f)| [a, b, c, d, e, f])
}

fn chain() -> impl Strategy<Value = Vec<Mandate>> {
    (active_root_mandate(), keeps())
        .prop_filter_map("loosened", |(m, keep)| loosen(&m, keep))
        .prop_flat_map(|root| {
            let r = root.clone();
            (Just(root), prop::option::of(child_of(&r)), keeps())
        })
        .prop_flat_map(|(root, child, keep)| {
            let created = child
                .as_ref()
                .map(|c| c.lifecycle.created_at)
                .unwrap_or(root.lifecycle().created_at);
            (
                Just(root),
                Just(child),
                Just(keep),
                lifecycle(MandateStatus::Active, created),
            )
        })
        .prop_map(|(root, child, keep, life)| {
            let child = child.and_then(|mut c| {
                c.lifecycle = life;
                let c = root.derive(c).ok()?;
                loosen(&c, keep).and_then(|l| root.derive(l.spec().clone()).ok())
            });
            let mut v = vec![root];
            v.extend(child);
            v
        })
}

/// Usage of each mandate: some share of every limit used (eighths), as `Usage::none_for` shaped.
fn usage_for(m: &Mandate, k: [u8; 3]) -> Usage {
    let mut u = Usage::none_for(m);
    let part = |money: &Money, e: u8| {
        Money::from_minor(money.minor_units() / 8 * i64::from(e), money.currency()).unwrap()
    };
    if let Some(l) = &m.scope().budgets.lifetime {
        u.spent = part(l, k[0]);
    }
    for (wu, w) in u.windows.iter_mut().zip(&m.scope().budgets.windows) {
        if let Some(a) = &w.max_amount {
            wu.amount = part(a, k[1]);
        }
        if let Some(c) = w.max_count {
            wu.count = c.min(u32::from(k[2]));
        }
    }
    if let Some(n) = m.scope().max_uses {
        u.uses = n.min(u32::from(k[2]));
    }
    u
}

fn as_mandate(scope: MandateScope, parent: &Mandate) -> Result<Mandate, TestCaseError> {
    Mandate::new(MandateSpec {
        id: MandateId::new("readback").unwrap(),
        buyer_id: parent.buyer_id().clone(),
        actor: parent.actor().clone(),
        parent_id: Some(parent.id().clone()),
        scope,
        lifecycle: Lifecycle::new(MandateStatus::Active, reference_time()),
        evidence_refs: Vec::new(),
    })
    .map_err(|e| TestCaseError::fail(format!("readback is not a valid mandate: {e}")))
}

/// The readback is narrower-or-equal than every mandate of the chain, and fits the headroom.
fn check(scope: MandateScope, chain: &[Mandate], usage: &[Usage]) -> Result<(), TestCaseError> {
    for (m, u) in chain.iter().zip(usage) {
        let rb = as_mandate(scope.clone(), m)?;
        let w = widenings(m, &rb);
        prop_assert!(w.is_empty(), "wider than {}: {:?}", m.id(), w);
        let total = rb.scope().budgets.lifetime.expect("forms cap their total");
        let used = u.spent.checked_add(&u.held).unwrap();
        if let Some(l) = &m.scope().budgets.lifetime {
            prop_assert!(
                !used.checked_add(&total).unwrap().exceeds(l),
                "lifetime headroom"
            );
        }
        for (w, wu) in m.scope().budgets.windows.iter().zip(&u.windows) {
            if let Some(max) = &w.max_amount {
                prop_assert!(
                    !wu.amount.checked_add(&total).unwrap().exceeds(max),
                    "window headroom"
                );
            }
            if let Some(c) = w.max_count {
                let uses = rb
                    .scope()
                    .max_uses
                    .expect("a count limit needs a counting form");
                prop_assert!(wu.count + uses <= c, "window count headroom");
            }
        }
        if let Some(n) = m.scope().max_uses {
            let uses = rb
                .scope()
                .max_uses
                .expect("a uses limit needs a counting form");
            prop_assert!(u.uses + uses <= n, "uses headroom");
        }
    }
    Ok(())
}

#[test]
fn no_export_widens_any_mandate_of_the_chain() {
    let ok = Cell::new([0u32; 3]);
    let tried = Cell::new(0u32);
    let authorities = Cell::new(0u32);
    let mut runner = TestRunner::new(Config {
        cases: 768,
        ..Config::default()
    });
    runner
        .run(&(chain(), any::<[u8; 3]>(), 1u32..4), |(chain, k, q)| {
            let k = k.map(|x| x % 5);
            let usage: Vec<Usage> = chain.iter().map(|m| usage_for(m, k)).collect();
            // A time inside every mandate's validity when there is one.
            let now = chain
                .iter()
                .map(|m| m.scope().validity.not_before)
                .max()
                .unwrap_or_else(reference_time);
            tried.set(tried.get() + 1);
            let a = match EffectiveAuthority::of(&chain, &usage, now) {
                Ok(a) => a,
                Err(_) => return Ok(()),
            };
            authorities.set(authorities.get() + 1);
            let pick = a.merchants.first().cloned();
            let mut n = ok.get();
            let mut stripe = StripeTarget::new();
            let mut acp = AcpTarget::new("cs_prop");
            let mut visa = VisaTarget::new().with_quantity(q);
            if let Some(p) = pick {
                stripe = stripe.with_merchant(p.clone());
                acp = acp.with_merchant(p.clone());
                visa = visa.with_merchant(p);
            }
            if let Some(mcc) = a.mccs.as_ref().and_then(|l| l.first()) {
                visa = visa.with_mcc(*mcc);
            }
            if let Ok(f) = to_stripe_spt(&a, &stripe) {
                n[0] += 1;
                check(
                    f.scope(now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    &chain,
                    &usage,
                )?;
            }
            if let Ok(f) = to_acp_allowance(&a, &acp) {
                n[1] += 1;
                check(
                    f.scope(now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    &chain,
                    &usage,
                )?;
            }
            if let Ok(f) = to_visa_instruction(&a, &visa) {
                n[2] += 1;
                check(
                    f.scope(now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                    &chain,
                    &usage,
                )?;
            }
            ok.set(n);
            Ok(())
        })
        .unwrap();
    let n = ok.get();
    eprintln!(
        "cases {}, with authority {}, successful exports (stripe, acp, visa): {n:?}",
        tried.get(),
        authorities.get()
    );
    // The property must not hold only vacuously.
    assert!(
        n.iter().all(|x| *x >= 20),
        "too few successful exports: {n:?}"
    );
}
