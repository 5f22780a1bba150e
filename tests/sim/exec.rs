//! A single-threaded executor for the engine's futures. Every port call first parks at a
//! yield point (returns `Pending` once); the simulator then picks which in-flight command to
//! poll next, so concurrent commands interleave at every await, in an order the seed decides.
//!
//! A future that returns `Pending` without reaching a yield point waits on IO (the SQLite
//! worker thread): it is polled again until it reaches the next yield point or completes, so
//! the order of steps stays deterministic.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use agent_mandate::adapters::memory::ManualClock;
use agent_mandate::ports::Clock as _;

/// Where a parked future waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Park {
    /// At a yield point: runnable.
    Now,
    /// Until virtual time reaches this instant (microseconds since the epoch).
    Until(i64),
}

thread_local! {
    static SIGNAL: Cell<Option<Park>> = const { Cell::new(None) };
    /// The port call a task last parked before (for the trace).
    static POINT: Cell<&'static str> = const { Cell::new("") };
}

/// The port call the last parked task is about to make.
pub fn last_point() -> &'static str {
    POINT.with(|p| p.get())
}

/// Returns `Pending` once, marking a yield point.
#[derive(Debug)]
pub struct YieldPoint(bool, &'static str);

impl Future for YieldPoint {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            POINT.with(|p| p.set(self.1));
            SIGNAL.with(|s| s.set(Some(Park::Now)));
            Poll::Pending
        }
    }
}

/// A yield point before the port call `point` (`store.place_hold`, `psp.authorize`...).
pub fn yield_point(point: &'static str) -> YieldPoint {
    YieldPoint(false, point)
}

/// Completes once virtual time reaches `until` (microseconds).
#[derive(Debug)]
pub struct Sleep {
    until: i64,
    clock: Arc<ManualClock>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.clock.now().timestamp_micros() >= self.until {
            Poll::Ready(())
        } else {
            POINT.with(|p| p.set("waiting for virtual time"));
            SIGNAL.with(|s| s.set(Some(Park::Until(self.until))));
            Poll::Pending
        }
    }
}

pub fn sleep_until(clock: &Arc<ManualClock>, until: i64) -> Sleep {
    Sleep {
        until,
        clock: clock.clone(),
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// One in-flight command.
pub struct Task<T> {
    pub id: u64,
    pub label: String,
    pub park: Park,
    fut: BoxFuture<T>,
}

/// What one step of a task did.
pub enum Polled<T> {
    Parked,
    Done(T),
}

impl<T> Task<T> {
    pub fn new(id: u64, label: String, fut: BoxFuture<T>) -> Task<T> {
        Task {
            id,
            label,
            park: Park::Now,
            fut,
        }
    }

    pub fn runnable(&self, now: i64) -> bool {
        match self.park {
            Park::Now => true,
            Park::Until(t) => now >= t,
        }
    }

    /// Polls until the next yield point or completion.
    pub fn step(&mut self) -> Polled<T> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut spins = 0u32;
        loop {
            SIGNAL.with(|s| s.set(None));
            match self.fut.as_mut().poll(&mut cx) {
                Poll::Ready(v) => return Polled::Done(v),
                Poll::Pending => {
                    if let Some(p) = SIGNAL.with(|s| s.take()) {
                        self.park = p;
                        return Polled::Parked;
                    }
                    // Waiting on IO (another thread): poll again shortly.
                    spins += 1;
                    if spins < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(20));
                    }
                }
            }
        }
    }
}

/// Runs `fut` to completion, ignoring yield points (setup and invariant checks). Must not
/// wait on virtual time.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    let mut spins = 0u64;
    loop {
        SIGNAL.with(|s| s.set(None));
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => {
                match SIGNAL.with(|s| s.take()) {
                    Some(Park::Until(_)) => panic!("block_on: a future waits on virtual time"),
                    Some(Park::Now) => continue,
                    None => {}
                }
                spins += 1;
                if spins > 64 {
                    std::thread::sleep(std::time::Duration::from_micros(20));
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
}
