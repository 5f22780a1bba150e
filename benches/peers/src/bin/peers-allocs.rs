//! Heap allocations per decision, for each engine, on the allowed path and on each blocked path
//! of the benchmark set (DESIGN.md section 6 goal: at most 2 on agent-mandate's allowed path).
//!
//! A counting global allocator wraps the system allocator in this binary only; the library and
//! the benchmarks keep the system allocator untouched. Every decision is made once before
//! counting, so one-time lazy initialisation is not charged to it. Counted: `alloc`,
//! `alloc_zeroed` and `realloc` calls between the start of the decision and the drop of its
//! result, including building the engine's request (Cedar's `Context`, Rego's input `Value`).
//!
//! Run: `cargo run -p peers --release --bin peers-allocs`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use agent_mandate::domain::evaluate;
use peers::{Engines, Refusal};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Min, max and mean allocations of one engine over a group of cases.
#[derive(Default, Clone, Copy)]
struct Stats {
    n: usize,
    min: usize,
    max: usize,
    sum: usize,
}

impl Stats {
    fn add(&mut self, allocations: usize) {
        self.min = if self.n == 0 {
            allocations
        } else {
            self.min.min(allocations)
        };
        self.max = self.max.max(allocations);
        self.sum += allocations;
        self.n += 1;
    }

    fn cell(&self) -> String {
        if self.n == 0 {
            return "-".to_owned();
        }
        if self.min == self.max {
            return self.min.to_string();
        }
        format!(
            "{}-{} (mean {:.1})",
            self.min,
            self.max,
            self.sum as f64 / self.n as f64
        )
    }
}

fn main() {
    let mut engines = Engines::bench_set().expect("engines set up");
    // One-time initialisation (lazy statics, caches) happens here, uncounted.
    for i in 0..engines.cases.len() {
        assert!(engines.verdicts(i).agree(), "{}", engines.cases[i]);
    }

    // Group: "allowed", each refusal alone, and "blocked (all)".
    let mut groups: BTreeMap<String, [Stats; 3]> = BTreeMap::new();
    for i in 0..engines.cases.len() {
        let native = count(|| drop(black_box(evaluate(&engines.native[i].input()))));
        let cedar = count(|| drop(black_box(engines.cedar.decide(&engines.cedar_requests[i]))));
        let rego = count(|| {
            black_box(engines.rego.decide(&engines.rego_requests[i]));
        });
        let mut keys = Vec::new();
        match engines.cases[i].refusals.as_slice() {
            [] => keys.push("allowed".to_owned()),
            [only] => {
                keys.push(format!("blocked: {only:?}"));
                keys.push("blocked: any single refusal".to_owned());
            }
            _ => {}
        }
        for key in keys {
            let stats = groups.entry(key).or_default();
            stats[0].add(native);
            stats[1].add(cedar);
            stats[2].add(rego);
        }
    }

    println!(
        "Heap allocations per decision (benchmark set, {} requests)\n",
        engines.cases.len()
    );
    println!("| path | requests | agent-mandate | Cedar | Rego |");
    println!("|---|---:|---:|---:|---:|");
    let mut order = vec![
        "allowed".to_owned(),
        "blocked: any single refusal".to_owned(),
    ];
    order.extend(Refusal::ALL.iter().map(|r| format!("blocked: {r:?}")));
    for key in order {
        if let Some([n, c, r]) = groups.get(&key) {
            println!(
                "| {key} | {} | {} | {} | {} |",
                n.n,
                n.cell(),
                c.cell(),
                r.cell()
            );
        }
    }
}
