//! agent-mandate side by side with two general policy engines, Cedar (`cedar-policy`) and Rego
//! (`regorus`), on the same spending rules.
//!
//! This crate is not published: it holds the criterion comparison (`benches/engines.rs`), the
//! differential test (`tests/differential.rs`) and an allocation counter
//! (`src/bin/peers-allocs.rs`), so that the library's own dependency tree and test time do not
//! grow.
//!
//! The shared rule subset, written once per engine: the actor is the leaf mandate's actor; every
//! mandate of the chain is active and inside its validity window at `now`; the currency is the
//! mandates' currency; merchant and MCC are in the leaf's allowlists; the amount is at most the
//! leaf's per-transaction maximum; the leaf's 24 h window spend plus the amount is at most its
//! window cap; for each ancestor (up to three), its spend plus the amount is at most its cap (its
//! lifetime budget); nothing in the chain is revoked. Children attenuate their parents (subset
//! of merchants and MCCs, lower per-transaction maximum), so the leaf's scope checks imply the
//! ancestors' ones that agent-mandate also runs.
//!
//! What this crate does *not* do: compare anything but allow versus deny (agent-mandate also
//! reports every blocker with a code; Cedar reports the policies that fired; Rego a boolean), or
//! exercise rules only agent-mandate has (snapshots, checkout state, confirmation, credentials),
//! which are fixed to pass.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

use std::fmt;

pub mod case;
pub mod cedar;
pub mod native;
pub mod rego;

use agent_mandate::domain::EvaluationDocument;

pub use case::{generate, Case, Generator, Refusal};
pub use cedar::{CedarEngine, CedarRequest};
pub use rego::{RegoEngine, RegoRequest};

/// Seed of the benchmark set.
pub const BENCH_SEED: u64 = 0x5EED_0006;

/// Size of the benchmark set.
pub const BENCH_CASES: usize = 1_024;

/// Why the engines could not be set up for a set of cases (a bug of this crate).
#[derive(Debug)]
pub struct SetupError(String);

impl SetupError {
    /// An error with `message`.
    pub fn new(message: impl fmt::Display) -> SetupError {
        SetupError(message.to_string())
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

macro_rules! setup_error_from {
    ($($t:ty),* $(,)?) => {
        $(impl From<$t> for SetupError {
            fn from(e: $t) -> SetupError {
                SetupError::new(e)
            }
        })*
    };
}

setup_error_from!(
    agent_mandate::domain::ValidationError,
    agent_mandate::domain::MoneyError,
    cedar_policy::ParseErrors,
    cedar_policy::entities_errors::EntitiesError,
    anyhow::Error,
);

/// The three engines, prepared for the same cases.
#[derive(Debug)]
pub struct Engines {
    /// The cases, in order.
    pub cases: Vec<Case>,
    /// agent-mandate's inputs, one per case.
    pub native: Vec<EvaluationDocument>,
    /// Cedar, with every case's entities loaded.
    pub cedar: CedarEngine,
    /// Cedar's requests, one per case.
    pub cedar_requests: Vec<CedarRequest>,
    /// Rego, with every case's data loaded.
    pub rego: RegoEngine,
    /// Rego's requests, one per case.
    pub rego_requests: Vec<RegoRequest>,
}

/// The decisions of the three engines on one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdicts {
    /// agent-mandate allowed.
    pub native: bool,
    /// Cedar allowed.
    pub cedar: bool,
    /// Rego allowed.
    pub rego: bool,
}

impl Verdicts {
    /// Whether all three agree.
    pub fn agree(&self) -> bool {
        self.native == self.cedar && self.cedar == self.rego
    }
}

impl Engines {
    /// Prepares all three engines for `cases` (nothing of this is timed).
    pub fn new(cases: Vec<Case>) -> Result<Engines, SetupError> {
        let native = cases
            .iter()
            .map(native::document)
            .collect::<Result<_, _>>()?;
        let (cedar, cedar_requests) = CedarEngine::new(&cases)?;
        let (rego, rego_requests) = RegoEngine::new(&cases)?;
        Ok(Engines {
            cases,
            native,
            cedar,
            cedar_requests,
            rego,
            rego_requests,
        })
    }

    /// The benchmark set: [`BENCH_CASES`] cases from [`BENCH_SEED`].
    pub fn bench_set() -> Result<Engines, SetupError> {
        Engines::new(generate(BENCH_SEED, BENCH_CASES))
    }

    /// Each engine's decision on case `i`.
    pub fn verdicts(&mut self, i: usize) -> Verdicts {
        Verdicts {
            native: native::allows(&self.native[i]),
            cedar: self.cedar.allows(&self.cedar_requests[i]),
            rego: self.rego.allows(&self.rego_requests[i]),
        }
    }
}
