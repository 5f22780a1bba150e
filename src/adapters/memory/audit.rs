//! The audit trail in memory (I9).

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::{AuditEvent, AuditHash, ChainedEvent};
use crate::ports::{AuditError, AuditReceipt, AuditSink};

/// An [`AuditSink`] in memory: a vector of chained events behind a mutex, so appends are
/// serialised (no two events share a number, none is lost).
///
/// Besides the port, it has `tamper_*` methods that damage the stored chain on purpose. They
/// exist only so tests can show that [`AuditSink::verify`] detects an edited, dropped or
/// reordered event; production code never calls them.
///
/// ```
/// # tokio_test_block_on(async {
/// use agent_mandate::adapters::memory::MemoryAuditSink;
/// use agent_mandate::domain::{AuditEvent, AuditKind, AttemptId};
/// use agent_mandate::ports::AuditSink;
/// let sink = MemoryAuditSink::new();
/// let event = AuditEvent {
///     at: chrono::DateTime::UNIX_EPOCH,
///     kind: AuditKind::OrderFailed {
///         attempt_id: AttemptId::new("att_1").unwrap(),
///         reason: "out of stock".into(),
///     },
/// };
/// let receipt = sink.append(&event).await.unwrap();
/// assert_eq!(receipt.seq, 1);
/// assert_eq!(sink.verify().await.unwrap(), Some(receipt));
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Default)]
pub struct MemoryAuditSink {
    events: Mutex<Vec<ChainedEvent>>,
}

impl MemoryAuditSink {
    /// An empty trail.
    pub fn new() -> MemoryAuditSink {
        MemoryAuditSink::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ChainedEvent>> {
        // A panic while holding the lock cannot leave the vector half-written (every change
        // is one push or one in-place edit), so a poisoned lock is still consistent.
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of every stored event, in stored order (for tests and tooling).
    pub fn events(&self) -> Vec<ChainedEvent> {
        self.lock().clone()
    }

    /// **For tamper-detection tests only.** Replaces the body of the event numbered `seq`
    /// without re-hashing it, as an attacker editing the store would. Returns whether such an
    /// event was found.
    pub fn tamper_edit_body(&self, seq: u64, body: impl Into<String>) -> bool {
        let mut events = self.lock();
        match events.iter_mut().find(|e| e.seq == seq) {
            Some(e) => {
                e.body = body.into();
                true
            }
            None => false,
        }
    }

    /// **For tamper-detection tests only.** Removes the event numbered `seq`, as an attacker
    /// deleting a row would. Returns whether such an event was found.
    pub fn tamper_remove(&self, seq: u64) -> bool {
        let mut events = self.lock();
        match events.iter().position(|e| e.seq == seq) {
            Some(i) => {
                events.remove(i);
                true
            }
            None => false,
        }
    }

    /// **For tamper-detection tests only.** Swaps the stored positions of the events numbered
    /// `a` and `b` (each keeps its own number, link and hash), as a reordering would. Returns
    /// whether both were found.
    pub fn tamper_swap(&self, a: u64, b: u64) -> bool {
        let mut events = self.lock();
        let ia = events.iter().position(|e| e.seq == a);
        let ib = events.iter().position(|e| e.seq == b);
        match (ia, ib) {
            (Some(ia), Some(ib)) => {
                events.swap(ia, ib);
                true
            }
            _ => false,
        }
    }
}

impl fmt::Debug for MemoryAuditSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events = self.lock();
        f.debug_struct("MemoryAuditSink")
            .field("events", &events.len())
            .field("head_seq", &events.last().map(|e| e.seq))
            .finish()
    }
}

fn receipt(e: &ChainedEvent) -> AuditReceipt {
    AuditReceipt {
        seq: e.seq,
        hash: e.hash,
    }
}

/// Chains `event` after the last stored one.
fn push(events: &mut Vec<ChainedEvent>, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
    let (seq, prev) = match events.last() {
        Some(last) => (
            last.seq.checked_add(1).ok_or_else(|| AuditError::Corrupt {
                seq: last.seq,
                message: "the sequence number cannot grow any further".into(),
            })?,
            last.hash,
        ),
        None => (1, AuditHash::GENESIS),
    };
    let chained = ChainedEvent::link(seq, prev, event.to_body());
    let r = receipt(&chained);
    events.push(chained);
    Ok(r)
}

#[async_trait]
impl AuditSink for MemoryAuditSink {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        push(&mut self.lock(), event)
    }

    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        let mut stored = self.lock();
        let mut last = None;
        for e in events {
            last = Some(push(&mut stored, e)?);
        }
        Ok(last)
    }

    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        let events = self.lock();
        let from_seq = from_seq.max(1);
        // Fast path: an untampered trail holds event n at index n - 1.
        let start = usize::try_from(from_seq - 1)
            .ok()
            .filter(|&i| events.get(i).is_some_and(|e| e.seq == from_seq))
            .or_else(|| events.iter().position(|e| e.seq >= from_seq));
        Ok(match start {
            Some(i) => events.iter().skip(i).take(limit).cloned().collect(),
            None => Vec::new(),
        })
    }

    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        Ok(self.lock().last().map(receipt))
    }
}
