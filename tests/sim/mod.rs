//! The deterministic simulator's parts (see `tests/simulation.rs`): a seeded RNG, the fault
//! classes, a single-threaded executor with yield points, yielding port wrappers, a PSP model
//! with its own ledger, the world (engine, mandates, backends), the clients and the invariants.

pub mod check;
pub mod client;
pub mod exec;
pub mod ports;
pub mod psp;
pub mod run;
pub mod world;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agent_mandate::adapters::memory::ManualClock;

/// SplitMix64: small, fast, and good enough to pick interleavings and faults.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x05EE_D0FA_6E17)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The fault classes (`SIM_FAULTS=slow,late,gateway,drop,transient,stall,crash,audit`, or
/// `all`, or `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// The PSP answers after the engine's idempotency lease (its effect lands within the
    /// call's deadline).
    pub slow: bool,
    /// The PSP times out (`Ambiguous`) and applies the effect later, within the deadline.
    pub late: bool,
    /// The PSP applies the effect and answers with a gateway error (`Ambiguous`).
    pub gateway: bool,
    /// The PSP applies the effect and the answer is lost (`Ambiguous` after a timeout).
    pub drop: bool,
    /// The PSP processes nothing and says so (`Transient`).
    pub transient: bool,
    /// The process stalls: virtual time jumps (past the lease, past a window) while commands
    /// are between two awaits. Without it, time only moves while no command can run.
    pub stall: bool,
    /// The process dies between two awaits; a new engine takes over the same state.
    pub crash: bool,
    /// The audit sink refuses an append (`Unavailable`).
    pub audit: bool,
}

impl Faults {
    pub const NAMES: [&'static str; 8] = [
        "slow",
        "late",
        "gateway",
        "drop",
        "transient",
        "stall",
        "crash",
        "audit",
    ];

    pub fn all() -> Faults {
        Faults {
            slow: true,
            late: true,
            gateway: true,
            drop: true,
            transient: true,
            stall: true,
            crash: true,
            audit: true,
        }
    }

    pub fn parse(text: &str) -> Faults {
        let mut f = Faults::default();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "all" => f = Faults::all(),
                "none" => {}
                "slow" => f.slow = true,
                "late" => f.late = true,
                "gateway" => f.gateway = true,
                "drop" => f.drop = true,
                "transient" => f.transient = true,
                "stall" => f.stall = true,
                "crash" => f.crash = true,
                "audit" => f.audit = true,
                other => panic!(
                    "SIM_FAULTS: unknown fault class {other:?} (known: {:?})",
                    Self::NAMES
                ),
            }
        }
        f
    }

    pub fn names(&self) -> String {
        let on = [
            self.slow,
            self.late,
            self.gateway,
            self.drop,
            self.transient,
            self.stall,
            self.crash,
            self.audit,
        ];
        let names: Vec<&str> = Self::NAMES
            .iter()
            .zip(on)
            .filter_map(|(n, on)| on.then_some(*n))
            .collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }
}

/// What the simulator shares with the port wrappers and the PSP model: the RNG (so every
/// fault is a function of the seed), the fault classes, the clock, and a switch that turns
/// faults off (setup and quiescence).
#[derive(Debug)]
pub struct Ctx {
    pub rng: Mutex<Rng>,
    pub faults: Faults,
    pub clock: Arc<ManualClock>,
    quiet: AtomicBool,
}

impl Ctx {
    pub fn new(seed: u64, faults: Faults, clock: Arc<ManualClock>) -> Ctx {
        Ctx {
            rng: Mutex::new(Rng::new(seed)),
            faults,
            clock,
            quiet: AtomicBool::new(true),
        }
    }

    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.store(quiet, Ordering::SeqCst);
    }

    pub fn quiet(&self) -> bool {
        self.quiet.load(Ordering::SeqCst)
    }

    pub fn rng(&self) -> std::sync::MutexGuard<'_, Rng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Virtual now, in microseconds since the epoch.
    pub fn now_micros(&self) -> i64 {
        use agent_mandate::ports::Clock as _;
        self.clock.now().timestamp_micros()
    }
}
