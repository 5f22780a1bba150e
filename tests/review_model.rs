//! Model-based test of the review window (I2, I3, I5): random sequences of schedules, buyer
//! cancels, due runs, restarts, clock moves (backwards too), transient PSP failures and the
//! credentials' kill switch, against a reference model of each payment. After every step each
//! attempt's status, its PSP authorizations (never more than one) and the total held budget
//! agree with the model: nothing is sent twice, sent early or after a cancel, and no hold is
//! lost or kept after the payment ended.
#![cfg(feature = "testkit")]

mod common;
#[allow(unused_imports)]
use common::principals::*;

use std::collections::BTreeMap;
use std::sync::Arc;

use agent_mandate::adapters::memory::MemoryReviewQueue;
use agent_mandate::domain::{examples, AttemptStatus, Operation};
use agent_mandate::engine::{
    attempt_id_for, Controls, Engine, EngineConfig, PaymentOutcome, MAX_REVIEW_TRIES,
};
use agent_mandate::ports::Clock;
use agent_mandate::testkit::{Fault, Op as PspOp};
use chrono::{DateTime, Duration, Utc};
use common::engine::{backpack_spec, key, world_with};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Execute(u8),
    Cancel(u8),
    RunDue,
    Advance(i64),
    Restart,
    Transient,
    KillCredentials(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0u8..4).prop_map(Step::Execute),
        2 => (0u8..4).prop_map(Step::Cancel),
        3 => Just(Step::RunDue),
        3 => (-20i64..45).prop_map(Step::Advance),
        1 => Just(Step::Restart),
        1 => Just(Step::Transient),
        1 => any::<bool>().prop_map(Step::KillCredentials),
    ]
}

/// One payment in the model.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pay {
    /// In its window (its hold held unless `released`), due at `due`, put off `tries` times.
    Waiting {
        due: DateTime<Utc>,
        released: bool,
        tries: u32,
    },
    Sent,
    Cancelled,
}

fn config() -> EngineConfig {
    EngineConfig::default()
        .with_controls(Controls::off().with_review_window(Some(Default::default())))
}

const AMOUNT: i64 = 14400;

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let w = world_with(config(), backpack_spec(true)).await;
    let queue = MemoryReviewQueue::new();
    let build = || {
        Engine::new(w.mem.ports.clone(), config())
            .expect("engine")
            .with_reviews(Arc::new(queue.clone()))
    };
    let mut engine = build();
    let mut model: BTreeMap<u8, Pay> = BTreeMap::new();
    let mut faults = 0u32;
    let mut killed = false;
    // Durable: the store's consecutive refusals and the agent's suspension.
    let mut blocks = 0u32;
    let mut suspended = false;
    let agent = examples::agent().id;
    let id_of = |k: u8| attempt_id_for(&agent, &key(&format!("pay-{k}")));
    for (n, s) in steps.iter().enumerate() {
        let now = w.mem.clock.now();
        match s {
            Step::Execute(k) => {
                let out = engine
                    .execute_payment(&agent_p(), &w.execute(&format!("pay-{k}")))
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {n}: execute: {e}")))?;
                match out {
                    PaymentOutcome::Scheduled { until, .. } => {
                        prop_assert!(!model.contains_key(k), "step {}: scheduled twice", n);
                        prop_assert!(!killed && !suspended, "step {}: scheduled while stopped", n);
                        prop_assert_eq!(until, now + Duration::seconds(30));
                        model.insert(
                            *k,
                            Pay::Waiting {
                                due: until,
                                released: false,
                                tries: 0,
                            },
                        );
                        blocks = 0;
                    }
                    PaymentOutcome::Refused(_) => {
                        prop_assert!(killed || suspended, "step {}: refused", n);
                        prop_assert!(!model.contains_key(k));
                        // Credential refusals count toward the agent's auto-suspension.
                        blocks += 1;
                        if blocks >= 3 {
                            suspended = true;
                        }
                    }
                    PaymentOutcome::Replayed { .. } => {
                        prop_assert!(model.contains_key(k), "step {}: replay of nothing", n);
                    }
                    other => return Err(TestCaseError::fail(format!("step {n}: {other:?}"))),
                }
            }
            Step::Cancel(k) => {
                let got = engine.cancel_review(&buyer_p(), &id_of(*k)).await;
                let waiting = matches!(model.get(k), Some(Pay::Waiting { .. }));
                prop_assert_eq!(got.is_ok(), waiting, "step {}: cancel {:?}", n, got);
                if waiting {
                    model.insert(*k, Pay::Cancelled);
                }
            }
            Step::RunDue => {
                let runs = engine
                    .run_due_reviews(10)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {n}: run: {e}")))?;
                let mut due: Vec<(DateTime<Utc>, String, u8)> = model
                    .iter()
                    .filter_map(|(k, p)| match p {
                        Pay::Waiting { due, .. } if *due <= now => {
                            Some((*due, id_of(*k).to_string(), *k))
                        }
                        _ => None,
                    })
                    .collect();
                due.sort();
                prop_assert_eq!(runs.len(), due.len(), "step {}: due runs", n);
                for (_, _, k) in due {
                    let Some(Pay::Waiting { tries, .. }) = model.get(&k).copied() else {
                        continue;
                    };
                    let next = if killed || suspended {
                        Pay::Cancelled
                    } else if faults > 0 {
                        faults -= 1;
                        if tries + 1 < MAX_REVIEW_TRIES {
                            Pay::Waiting {
                                due: now + Duration::seconds(30),
                                released: true,
                                tries: tries + 1,
                            }
                        } else {
                            Pay::Cancelled
                        }
                    } else {
                        Pay::Sent
                    };
                    model.insert(k, next);
                }
            }
            Step::Advance(secs) => {
                w.mem.clock.advance(Duration::seconds(*secs));
            }
            Step::Restart => {
                // The kill switch is the store's: a restart keeps it.
                engine = build();
            }
            Step::Transient => {
                w.psp.inject(Some(PspOp::Authorize), Fault::Transient);
                faults += 1;
            }
            Step::KillCredentials(on) => {
                engine
                    .suspend_credentials(&operator_p(), &agent, *on)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {n}: kill switch: {e}")))?;
                killed = *on;
            }
        }
        // The world agrees with the model.
        let mut held = 0;
        for k in 0u8..4 {
            let id = id_of(k);
            let stored = w.mem.ports.store.attempt(&id).await.expect("read");
            let auths = match &stored {
                Some(a) => w
                    .psp
                    .authorizations_for(&a.provider_key(Operation::Authorize)),
                None => 0,
            };
            match model.get(&k) {
                None => prop_assert!(stored.is_none(), "step {}: {} exists", n, k),
                Some(p) => {
                    let a = stored.as_ref().expect("the model's attempt is stored");
                    let (status, sent) = match p {
                        Pay::Waiting { released, .. } => {
                            if !released {
                                held += AMOUNT;
                            }
                            (AttemptStatus::AuthorityValidated, 0)
                        }
                        Pay::Sent => {
                            held += AMOUNT;
                            (AttemptStatus::Authorized, 1)
                        }
                        Pay::Cancelled => (AttemptStatus::Cancelled, 0),
                    };
                    prop_assert_eq!(a.status, status, "step {}: payment {} after {:?}", n, k, s);
                    prop_assert_eq!(auths, sent, "step {}: PSP authorizations of {}", n, k);
                }
            }
        }
        prop_assert_eq!(
            w.usage().await.held.minor_units(),
            held,
            "step {}: held after {:?}",
            n,
            s
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_review_window_agrees_with_its_model(steps in prop::collection::vec(step(), 1..30)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run(steps))?;
    }
}
