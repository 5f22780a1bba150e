//! The audit trail in memory (I9).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::adapters::audit_index::{self, Link, Window};
use crate::domain::{
    verify_checkpoints, AuditCheckpoint, AuditEvent, AuditHash, AuditSubject, BuyerId, BuyerIndex,
    ChainedEvent, CHECKPOINT_INTERVAL,
};
use crate::ports::{verify_events, AuditError, AuditReceipt, AuditSegment, AuditSink};

/// An [`AuditSink`] in memory: a vector of chained events behind a mutex, so appends are
/// serialised (no two events share a number, none is lost). Events are indexed by the
/// attempts and mandates they name and by their buyer ([`BuyerIndex`]), and a checkpoint is sealed every
/// [`CHECKPOINT_INTERVAL`] events, so [`AuditSink::segment`] verifies only the windows around
/// a subject's events.
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
    trail: Mutex<Trail>,
}

#[derive(Default)]
struct Trail {
    events: Vec<ChainedEvent>,
    checkpoints: Vec<AuditCheckpoint>,
    index: HashMap<String, Vec<u64>>,
    /// The buyer each mandate and attempt belongs to (first fact wins).
    owners: HashMap<AuditSubject, BuyerId>,
    /// The buyer of the last decision, for the automatic suspension after it.
    buyers: BuyerIndex,
}

impl Trail {
    /// The stored events numbered `from..=to` (`to`: `None` for the head), in stored order.
    fn range(&self, from: u64, to: Option<u64>) -> Vec<ChainedEvent> {
        self.span(from, to).to_vec()
    }

    /// The events numbered `from..=to` (to the head without `to`), borrowed.
    fn span(&self, from: u64, to: Option<u64>) -> &[ChainedEvent] {
        let events = &self.events;
        // Fast path: an untampered trail holds event n at index n - 1.
        let start = usize::try_from(from.max(1) - 1)
            .ok()
            .filter(|&i| events.get(i).is_some_and(|e| e.seq == from.max(1)))
            .or_else(|| events.iter().position(|e| e.seq >= from));
        let Some(start) = start else {
            return &[];
        };
        let tail = &events[start..];
        let len = tail
            .iter()
            .position(|e| to.is_some_and(|t| e.seq > t))
            .unwrap_or(tail.len());
        &tail[..len]
    }

    fn around(&self, n: u64) -> Window {
        let cps = &self.checkpoints;
        let i = cps.partition_point(|c| c.seq < n);
        Window {
            before: i.checked_sub(2).and_then(|j| cps.get(j).copied()),
            lo: i.checked_sub(1).and_then(|j| cps.get(j).copied()),
            hi: cps.get(i).copied(),
        }
    }

    /// Seals the checkpoints due up to the head.
    fn seal_due(&mut self) {
        let head = self.events.last().map_or(0, |e| e.seq);
        let last = self.checkpoints.last().copied();
        let Some((from, upto)) = audit_index::due(last.as_ref(), head) else {
            return;
        };
        // Borrowed, not cloned: only the links are sealed.
        let links: Vec<Link> = self
            .span(from, Some(upto))
            .iter()
            .map(|e| (e.seq, e.prev_hash, e.hash))
            .collect();
        let sealed = audit_index::seal(last.as_ref(), &links);
        self.checkpoints.extend(sealed);
    }
}

impl MemoryAuditSink {
    /// An empty trail.
    pub fn new() -> MemoryAuditSink {
        MemoryAuditSink::default()
    }

    fn trail(&self) -> MutexGuard<'_, Trail> {
        // A panic while holding the lock cannot leave the trail half-written (every change
        // is one push or one in-place edit), so a poisoned lock is still consistent.
        self.trail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The trail's name for [`AuditSink::trail_id`]: this sink's address (a
    /// [`super::MemoryStore::with_trail`] holds the same `Arc`).
    pub(crate) fn trail_id_of(&self) -> Option<crate::ports::TrailId> {
        Some(crate::ports::TrailId::new(format!(
            "memory:{:p}",
            std::ptr::from_ref(self)
        )))
    }

    /// Appends `events` for a store that writes this trail directly, under one lock; returns
    /// the alert events, which the store stages instead (see
    /// [`crate::ports::Store::direct_trail`]).
    pub(crate) fn append_direct(
        &self,
        events: &[AuditEvent],
    ) -> Result<Vec<AuditEvent>, crate::ports::StoreError> {
        let mut alerts = Vec::new();
        let mut trail = self.trail();
        for e in events {
            if matches!(e.kind, crate::domain::AuditKind::Alert { .. }) {
                alerts.push(e.clone());
            } else {
                push(&mut trail, e).map_err(|e| crate::ports::StoreError::Other(Box::new(e)))?;
            }
        }
        Ok(alerts)
    }

    /// A copy of every stored event, in stored order (for tests and tooling).
    pub fn events(&self) -> Vec<ChainedEvent> {
        self.trail().events.clone()
    }

    /// A copy of every checkpoint, in order (for tests and tooling).
    pub fn checkpoints(&self) -> Vec<AuditCheckpoint> {
        self.trail().checkpoints.clone()
    }

    /// **For tamper-detection tests only.** Replaces the event hash recorded by the
    /// checkpoint numbered `seq`; with `reseal`, also recomputes its seal as an attacker who
    /// knows the scheme would. Returns whether such a checkpoint was found.
    pub fn tamper_checkpoint(&self, seq: u64, hash: AuditHash, reseal: bool) -> bool {
        let mut trail = self.trail();
        let Some(i) = trail.checkpoints.iter().position(|c| c.seq == seq) else {
            return false;
        };
        let prev = i
            .checked_sub(1)
            .and_then(|j| trail.checkpoints.get(j).copied());
        let c = &mut trail.checkpoints[i];
        c.hash = hash;
        if reseal {
            *c = AuditCheckpoint::after(prev.as_ref(), seq, hash);
        }
        true
    }

    /// **For tamper-detection tests only.** Removes the checkpoint numbered `seq`. Returns
    /// whether it was found.
    pub fn tamper_remove_checkpoint(&self, seq: u64) -> bool {
        let mut trail = self.trail();
        let before = trail.checkpoints.len();
        trail.checkpoints.retain(|c| c.seq != seq);
        trail.checkpoints.len() != before
    }

    /// **For tamper-detection tests only.** Replaces the event numbered `seq` with `body`
    /// re-hashed, and re-links every event after it through the head (a rewrite of history
    /// by someone who knows the hash scheme); the checkpoints are left as they were. Returns
    /// whether such an event was found.
    pub fn tamper_rewrite_from(&self, seq: u64, body: impl Into<String>) -> bool {
        let mut trail = self.trail();
        let Some(i) = trail.events.iter().position(|e| e.seq == seq) else {
            return false;
        };
        let mut body = Some(body.into());
        let mut prev = trail.events[i].prev_hash;
        for e in trail.events[i..].iter_mut() {
            let b = body.take().unwrap_or_else(|| e.body.clone());
            *e = ChainedEvent::link(e.seq, prev, b);
            prev = e.hash;
        }
        true
    }

    /// **For tamper-detection tests only.** Replaces the body of the event numbered `seq`
    /// without re-hashing it, as an attacker editing the store would. Returns whether such an
    /// event was found.
    pub fn tamper_edit_body(&self, seq: u64, body: impl Into<String>) -> bool {
        let mut trail = self.trail();
        let events = &mut trail.events;
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
        let mut trail = self.trail();
        let events = &mut trail.events;
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
        let mut trail = self.trail();
        let events = &mut trail.events;
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
        let trail = self.trail();
        let events = &trail.events;
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

/// Chains `event` after the last stored one, indexes it and seals a due checkpoint.
fn push(trail: &mut Trail, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
    let (seq, prev) = match trail.events.last() {
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
    trail.events.push(chained);
    for subject in AuditSubject::of(&event.kind) {
        trail.index.entry(subject.key()).or_default().push(seq);
    }
    let owners = &trail.owners;
    let facts = trail
        .buyers
        .facts(&event.kind, |s| Ok::<_, AuditError>(owners.get(s).cloned()))?;
    if let Some(buyer) = facts.buyer {
        for owned in facts.owns {
            trail.owners.entry(owned).or_insert_with(|| buyer.clone());
        }
        let key = AuditSubject::Buyer(buyer).key();
        trail.index.entry(key).or_default().push(seq);
    }
    if seq % CHECKPOINT_INTERVAL == 0 {
        trail.seal_due();
    }
    Ok(r)
}

#[async_trait]
impl AuditSink for MemoryAuditSink {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        push(&mut self.trail(), event)
    }

    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        let mut stored = self.trail();
        let mut last = None;
        for e in events {
            last = Some(push(&mut stored, e)?);
        }
        Ok(last)
    }

    fn trail_id(&self) -> Option<crate::ports::TrailId> {
        self.trail_id_of()
    }

    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        let trail = self.trail();
        let events = &trail.events;
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
        Ok(self.trail().events.last().map(receipt))
    }

    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        let head = verify_events(self).await?;
        let trail = self.trail();
        let hashes: HashMap<u64, AuditHash> =
            trail.events.iter().map(|e| (e.seq, e.hash)).collect();
        verify_checkpoints(&trail.checkpoints, |s| hashes.get(&s).copied())?;
        Ok(head)
    }

    async fn indexed(
        &self,
        subject: &AuditSubject,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<Vec<ChainedEvent>>, AuditError> {
        let trail = self.trail();
        let Some(seqs) = trail.index.get(&subject.key()) else {
            return Ok(Some(Vec::new()));
        };
        let start = seqs.partition_point(|&n| n < from_seq);
        let events = &trail.events;
        let out = seqs[start..]
            .iter()
            .take(limit)
            .filter_map(|&n| {
                // Fast path: an untampered trail holds event n at index n - 1.
                usize::try_from(n - 1)
                    .ok()
                    .and_then(|i| events.get(i))
                    .filter(|e| e.seq == n)
                    .or_else(|| events.iter().find(|e| e.seq == n))
                    .cloned()
            })
            .collect();
        Ok(Some(out))
    }

    async fn segment(&self, subject: &AuditSubject) -> Result<AuditSegment, AuditError> {
        let trail = self.trail();
        let seqs = trail.index.get(&subject.key()).cloned().unwrap_or_default();
        let windows = audit_index::plan(&seqs, |n| Ok::<_, AuditError>(trail.around(n)))?;
        let read = windows
            .into_iter()
            .map(|w| (w, trail.range(w.first(), w.last())))
            .collect();
        Ok(audit_index::assemble(subject, read))
    }
}
