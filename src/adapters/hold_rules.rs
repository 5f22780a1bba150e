//! The rules that resolve a budget hold (commit, release, refund), shared by every store
//! adapter so that the memory, SQLite and PostgreSQL ledgers refuse the same things with the
//! same words and move the same counters (see the budget contract in [`crate::ports::Store`]).
//! Pure: the adapters read the hold, call [`resolve`], and write what it returns.

use crate::domain::{AttemptId, Currency};
use crate::ports::{HoldOp, HoldState, StoreError};

/// A hold's figures, in minor units of its currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Figures {
    pub(crate) state: HoldState,
    pub(crate) currency: Currency,
    pub(crate) amount: i64,
    pub(crate) committed: i64,
    pub(crate) refunded: i64,
    /// Refunds that gave lifetime headroom back.
    pub(crate) lifetime_back: i64,
    /// Refunds that gave window headroom back.
    pub(crate) window_back: i64,
}

/// What a resolution does: the hold's figures after it, and the change of every account of
/// the hold's chain (`held`, `spent`, `uses`) and of every window that still contains the hold
/// (its amount and count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resolution {
    pub(crate) next: Figures,
    pub(crate) held: i64,
    pub(crate) spent: i64,
    pub(crate) uses: i64,
    pub(crate) window_amount: i64,
    pub(crate) window_count: i64,
}

pub(crate) fn state_name(state: HoldState) -> &'static str {
    match state {
        HoldState::Held => "held",
        HoldState::Committed => "committed",
        HoldState::Released => "released",
    }
}

fn conflict(attempt_id: &AttemptId, message: String) -> StoreError {
    StoreError::Conflict {
        entity: "hold",
        id: attempt_id.to_string(),
        message,
    }
}

/// Applies `op` to the hold `h` of `attempt_id`: a commit (at most the amount held; the rest
/// is released; zero commits like a release) or a release of a held hold, or a refund of a
/// committed one (refunds never exceed the commit; the policy says what headroom comes back).
/// Anything else is a [`StoreError::Conflict`] naming the hold.
pub(crate) fn resolve(
    attempt_id: &AttemptId,
    h: &Figures,
    op: HoldOp,
) -> Result<Resolution, StoreError> {
    let cur = h.currency;
    let wrong_state = |verb: &str| {
        conflict(
            attempt_id,
            format!("cannot {verb}: the hold is {}", state_name(h.state)),
        )
    };
    match op {
        HoldOp::Commit(amount) => {
            if h.state != HoldState::Held {
                return Err(wrong_state("commit"));
            }
            if amount.currency() != cur {
                return Err(conflict(
                    attempt_id,
                    format!("cannot commit {amount}: the hold is in {cur}"),
                ));
            }
            let c = amount.minor_units();
            if c > h.amount {
                return Err(conflict(
                    attempt_id,
                    format!(
                        "cannot commit {amount}: more than the {} held",
                        cur.format_minor(i128::from(h.amount))
                    ),
                ));
            }
            let zero = c == 0;
            Ok(Resolution {
                next: Figures {
                    state: HoldState::Committed,
                    committed: c,
                    ..*h
                },
                held: -h.amount,
                spent: c,
                uses: if zero { -1 } else { 0 },
                window_amount: c - h.amount,
                window_count: if zero { -1 } else { 0 },
            })
        }
        HoldOp::Verify => {
            if h.state != HoldState::Held {
                return Err(wrong_state("submit against it"));
            }
            Ok(Resolution {
                next: *h,
                held: 0,
                spent: 0,
                uses: 0,
                window_amount: 0,
                window_count: 0,
            })
        }
        HoldOp::Release => {
            if h.state != HoldState::Held {
                return Err(wrong_state("release"));
            }
            Ok(Resolution {
                next: Figures {
                    state: HoldState::Released,
                    committed: 0,
                    ..*h
                },
                held: -h.amount,
                spent: 0,
                uses: -1,
                window_amount: -h.amount,
                window_count: -1,
            })
        }
        HoldOp::Refund(amount, policy) => {
            if h.state != HoldState::Committed {
                return Err(wrong_state("refund"));
            }
            if amount.currency() != cur {
                return Err(conflict(
                    attempt_id,
                    format!("cannot refund {amount}: the hold is in {cur}"),
                ));
            }
            let r = amount.minor_units();
            let total = h.refunded.saturating_add(r);
            if total > h.committed {
                return Err(conflict(
                    attempt_id,
                    format!(
                        "cannot refund {amount}: refunds would reach {}, more than the {} committed",
                        cur.format_minor(i128::from(total)),
                        cur.format_minor(i128::from(h.committed))
                    ),
                ));
            }
            let lifetime = if policy.restores_lifetime { r } else { 0 };
            let window = if policy.restores_windows { r } else { 0 };
            Ok(Resolution {
                next: Figures {
                    refunded: total,
                    lifetime_back: h.lifetime_back + lifetime,
                    window_back: h.window_back + window,
                    ..*h
                },
                held: 0,
                spent: -lifetime,
                uses: 0,
                window_amount: -window,
                window_count: 0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Money;
    use crate::ports::RefundPolicy;

    fn eur(minor: i64) -> Money {
        Money::from_minor(minor, Currency::EUR).expect("amount")
    }

    fn held(amount: i64) -> Figures {
        Figures {
            state: HoldState::Held,
            currency: Currency::EUR,
            amount,
            committed: 0,
            refunded: 0,
            lifetime_back: 0,
            window_back: 0,
        }
    }

    /// I5: a hold resolves at most once, never for more than held, refunds never beyond the
    /// commit, never in another currency; each refusal names the hold.
    #[test]
    fn refusals() {
        let id = AttemptId::new("att_1").expect("id");
        let committed = resolve(&id, &held(100), HoldOp::Commit(eur(60)))
            .expect("commit")
            .next;
        let refusals = [
            (
                held(100),
                HoldOp::Commit(eur(101)),
                "more than the 1.00 EUR held",
            ),
            (
                held(100),
                HoldOp::Commit(Money::from_minor(1, Currency::USD).expect("usd")),
                "the hold is in EUR",
            ),
            (
                held(100),
                HoldOp::Refund(eur(1), RefundPolicy::RETAIN),
                "the hold is held",
            ),
            (
                committed,
                HoldOp::Commit(eur(1)),
                "cannot commit: the hold is committed",
            ),
            (
                committed,
                HoldOp::Release,
                "cannot release: the hold is committed",
            ),
            (
                committed,
                HoldOp::Refund(eur(61), RefundPolicy::RETAIN),
                "more than the 0.60 EUR committed",
            ),
        ];
        for (h, op, words) in refusals {
            match resolve(&id, &h, op) {
                Err(StoreError::Conflict {
                    entity,
                    id: key,
                    message,
                }) => {
                    assert_eq!((entity, key.as_str()), ("hold", "att_1"));
                    assert!(message.contains(words), "{op:?}: {message}");
                }
                other => panic!("{op:?}: expected a conflict, got {other:?}"),
            }
        }
    }

    /// The counters each resolution moves (I2: what leaves `held` enters `spent` or nowhere).
    #[test]
    fn deltas() {
        let id = AttemptId::new("att_1").expect("id");
        let c = resolve(&id, &held(100), HoldOp::Commit(eur(60))).expect("commit");
        assert_eq!(
            (c.held, c.spent, c.uses, c.window_amount, c.window_count),
            (-100, 60, 0, -40, 0)
        );
        let z = resolve(&id, &held(100), HoldOp::Commit(eur(0))).expect("zero commit");
        assert_eq!((z.uses, z.window_count), (-1, -1));
        let r = resolve(&id, &held(100), HoldOp::Release).expect("release");
        assert_eq!(
            (r.held, r.spent, r.uses, r.window_amount),
            (-100, 0, -1, -100)
        );
        let back = resolve(
            &id,
            &c.next,
            HoldOp::Refund(eur(20), RefundPolicy::RESTORE_ALL),
        )
        .expect("refund");
        assert_eq!((back.spent, back.window_amount), (-20, -20));
        assert_eq!(
            (
                back.next.refunded,
                back.next.lifetime_back,
                back.next.window_back
            ),
            (20, 20, 20)
        );
        let kept =
            resolve(&id, &c.next, HoldOp::Refund(eur(20), RefundPolicy::RETAIN)).expect("refund");
        assert_eq!(
            (kept.spent, kept.window_amount, kept.next.lifetime_back),
            (0, 0, 0)
        );
    }
}
