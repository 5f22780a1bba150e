//! Differential test: agent-mandate, Cedar and Rego agree on allow versus deny on seeded random
//! requests, and agree with what each request was built to be.
//!
//! Defends DESIGN.md section 6 ("identical decisions" with Cedar and Rego) and, through the
//! blocker codes, I8 (every blocker reported) on the spending rules. The number of requests
//! comes from `PEERS_DIFF_CASES` (default 10,000; run 100,000 before a release).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use agent_mandate::domain::{evaluate, BlockerCode as C, Outcome};
use peers::{generate, Engines, Generator, Refusal, BENCH_CASES, BENCH_SEED};

const SEED: u64 = 0xD1FF_0006;
const BATCH: usize = 1_000;

fn requested_cases() -> usize {
    std::env::var("PEERS_DIFF_CASES")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(10_000)
}

/// The blocker codes agent-mandate may report when a request breaks only `refusal`.
fn expected_codes(refusal: Refusal) -> &'static [C] {
    match refusal {
        Refusal::WrongActor => &[C::ActorNotAuthorized],
        Refusal::NotActive => &[
            C::MandateExpired,
            C::MandateNotYetValid,
            C::MandateUsed,
            C::MandatePendingConfirmation,
            C::AncestorNotActive,
        ],
        Refusal::CurrencyMismatch => &[C::CurrencyMismatch],
        Refusal::MerchantNotAllowed => &[C::MerchantMismatch],
        Refusal::MccNotAllowed => &[C::MccNotAllowed],
        Refusal::OverPerTransaction => &[C::TransactionLimitExceeded, C::AmountExceedsMandate],
        Refusal::OverWindow => &[C::WindowAmountExceeded],
        Refusal::OverAncestorCap => &[C::LifetimeLimitExceeded],
        Refusal::Revoked => &[C::MandateRevoked, C::AncestorNotActive],
    }
}

#[derive(Default)]
struct Tally {
    cases: usize,
    allowed: usize,
    alone: BTreeMap<Refusal, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn check_batch(&mut self, engines: &mut Engines) {
        for i in 0..engines.cases.len() {
            self.cases += 1;
            let v = engines.verdicts(i);
            let case = &engines.cases[i];
            let decision = evaluate(&engines.native[i].input());
            let codes: BTreeSet<C> = decision.blockers.iter().map(|b| b.code).collect();
            let mut problems = Vec::new();
            if !v.agree() {
                problems.push(format!(
                    "engines disagree: agent-mandate={} cedar={} rego={}",
                    v.native, v.cedar, v.rego
                ));
            } else if v.native != case.intended_allow() || v.native != case.rule_allows() {
                problems.push(format!(
                    "all engines {} a case built to be {}",
                    if v.native { "allow" } else { "deny" },
                    if case.intended_allow() {
                        "allowed"
                    } else {
                        "refused"
                    }
                ));
            }
            let cedar_errors = engines.cedar.errors(&engines.cedar_requests[i]);
            if cedar_errors != 0 {
                problems.push(format!("cedar evaluation errors: {cedar_errors}"));
            }
            if engines.rego.decide(&engines.rego_requests[i]).is_none() {
                problems.push("rego evaluation error".to_owned());
            }
            match case.refusals.as_slice() {
                [] => {
                    self.allowed += 1;
                    if decision.outcome != Outcome::Allowed || !codes.is_empty() {
                        problems.push(format!("allowed case reports blockers {codes:?}"));
                    }
                }
                [only] => {
                    *self.alone.entry(*only).or_default() += 1;
                    let expected = expected_codes(*only);
                    if codes.is_empty() || codes.iter().any(|c| !expected.contains(c)) {
                        problems.push(format!(
                            "{only:?} alone should report only {expected:?}, reported {codes:?}"
                        ));
                    }
                }
                _ => {}
            }
            if !problems.is_empty() {
                self.failures.push(format!(
                    "{}\n  agent-mandate: {} {:?}\n{case}",
                    problems.join("; "),
                    decision.outcome,
                    decision
                        .blockers
                        .iter()
                        .map(|b| format!("{}: {}", b.code, b.message))
                        .collect::<Vec<_>>(),
                ));
            }
        }
    }
}

#[test]
fn agent_mandate_cedar_and_rego_agree_on_seeded_requests() {
    let total = requested_cases();
    let mut generator = Generator::new(SEED);
    let mut tally = Tally::default();
    let mut done = 0;
    while done < total {
        let n = BATCH.min(total - done);
        let mut engines = Engines::new(generator.take(n)).expect("engines set up");
        tally.check_batch(&mut engines);
        done += n;
    }
    for (i, failure) in tally.failures.iter().take(25).enumerate() {
        eprintln!("--- failure {} ---\n{failure}", i + 1);
    }
    assert!(
        tally.failures.is_empty(),
        "{} of {} requests failed (first 25 printed above)",
        tally.failures.len(),
        tally.cases
    );
    eprintln!(
        "{} requests: {} allowed, refused alone: {:?}",
        tally.cases, tally.allowed, tally.alone
    );
    // Not vacuous: allowed requests and every kind of refusal on its own.
    assert!(tally.allowed > 0, "no allowed request was generated");
    for refusal in Refusal::ALL {
        assert!(
            tally.alone.get(&refusal).copied().unwrap_or(0) > 0,
            "no request breaks only {refusal:?}"
        );
    }
}

#[test]
fn benchmark_set_is_distinct_and_mixes_every_outcome() {
    let cases = generate(BENCH_SEED, BENCH_CASES);
    assert!(cases.len() >= 1_000);
    let distinct: HashSet<_> = cases
        .iter()
        .map(|c| {
            (
                c.actor.clone(),
                c.amount,
                c.currency,
                c.merchant.clone(),
                c.mcc.clone(),
                c.now,
            )
        })
        .collect();
    assert_eq!(distinct.len(), cases.len(), "requests repeat");
    assert!(cases.iter().any(|c| c.intended_allow()));
    for refusal in Refusal::ALL {
        assert!(
            cases.iter().any(|c| c.refusals == [refusal]),
            "the benchmark set has no request breaking only {refusal:?}"
        );
    }
    let mut engines = Engines::new(cases).expect("engines set up");
    for i in 0..engines.cases.len() {
        let v = engines.verdicts(i);
        assert!(
            v.agree() && v.native == engines.cases[i].intended_allow(),
            "{v:?}\n{}",
            engines.cases[i]
        );
    }
}
