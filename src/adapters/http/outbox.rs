//! The outbox of audit events waiting for webhook delivery.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::domain::ChainedEvent;
use crate::ports::AuditError;

/// Where audit events wait until a webhook receiver acknowledged them (2xx). A durable
/// implementation (the SQLite store) survives a restart; with [`MemoryOutbox`] the inner
/// audit sink is the durable record and [`super::WebhookAuditSink::recover`] re-enqueues from
/// it.
///
/// Contract: `enqueue` of a seq already enqueued (delivered, dead-lettered or not) changes
/// nothing; `pending` returns undelivered events lowest seq first; `mark_delivered` is
/// idempotent; `mark_dead_lettered` moves a pending event to the dead letters, where it is
/// kept (never pending again, listed by `dead_lettered`), and is idempotent; `last_enqueued`
/// is the highest seq ever enqueued.
#[async_trait]
pub trait Outbox: Send + Sync + Debug {
    /// Keeps `event` for delivery; enqueueing the same seq twice is a no-op.
    async fn enqueue(&self, event: &ChainedEvent) -> Result<(), AuditError>;
    /// Up to `limit` undelivered events, lowest seq first.
    async fn pending(&self, limit: usize) -> Result<Vec<ChainedEvent>, AuditError>;
    /// Marks `seq` delivered (after a 2xx). Idempotent.
    async fn mark_delivered(&self, seq: u64) -> Result<(), AuditError>;
    /// Moves the pending event `seq` to the dead letters (the receiver refused it
    /// permanently): it is kept, never returned by `pending` again, and enqueueing it again
    /// changes nothing. A seq that is not pending (delivered, already dead-lettered, never
    /// enqueued) is left as it is. Idempotent.
    async fn mark_dead_lettered(&self, seq: u64) -> Result<(), AuditError>;
    /// Up to `limit` dead-lettered events, lowest seq first, exactly as enqueued.
    async fn dead_lettered(&self, limit: usize) -> Result<Vec<ChainedEvent>, AuditError>;
    /// The highest seq ever enqueued (None when empty), for recovery.
    async fn last_enqueued(&self) -> Result<Option<u64>, AuditError>;

    /// How many events wait (provided; reads every pending event).
    async fn pending_count(&self) -> Result<usize, AuditError> {
        Ok(self.pending(usize::MAX).await?.len())
    }
}

/// An [`Outbox`] in memory: undelivered events in a map by seq, dead-lettered events in
/// another, plus the set of delivered seqs as a watermark (every seq up to it is delivered)
/// and the few above it.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use agent_mandate::adapters::http::{MemoryOutbox, Outbox};
/// use agent_mandate::domain::{AuditHash, ChainedEvent};
/// let outbox = MemoryOutbox::new();
/// let event = ChainedEvent::link(1, AuditHash::GENESIS, "{}".into());
/// outbox.enqueue(&event).await.unwrap();
/// outbox.enqueue(&event).await.unwrap(); // a no-op
/// assert_eq!(outbox.pending(10).await.unwrap(), vec![event]);
/// outbox.mark_delivered(1).await.unwrap();
/// assert!(outbox.pending(10).await.unwrap().is_empty());
/// assert_eq!(outbox.last_enqueued().await.unwrap(), Some(1));
/// # });
/// ```
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pending: BTreeMap<u64, ChainedEvent>,
    /// Dead-lettered events (kept; never pending again).
    dead: BTreeMap<u64, ChainedEvent>,
    /// Every seq `<= watermark` is delivered.
    watermark: u64,
    /// Delivered seqs above the watermark.
    delivered_above: std::collections::BTreeSet<u64>,
    last: Option<u64>,
}

impl State {
    fn delivered(&self, seq: u64) -> bool {
        seq <= self.watermark || self.delivered_above.contains(&seq)
    }
}

impl MemoryOutbox {
    /// An empty outbox.
    pub fn new() -> MemoryOutbox {
        MemoryOutbox::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is a few map operations that cannot panic half-way; a poisoned lock
        // still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Outbox for MemoryOutbox {
    async fn enqueue(&self, event: &ChainedEvent) -> Result<(), AuditError> {
        let mut s = self.lock();
        if s.delivered(event.seq)
            || s.pending.contains_key(&event.seq)
            || s.dead.contains_key(&event.seq)
        {
            return Ok(());
        }
        s.pending.insert(event.seq, event.clone());
        s.last = Some(s.last.map_or(event.seq, |l| l.max(event.seq)));
        Ok(())
    }

    async fn pending(&self, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        Ok(self.lock().pending.values().take(limit).cloned().collect())
    }

    async fn mark_delivered(&self, seq: u64) -> Result<(), AuditError> {
        let mut s = self.lock();
        s.pending.remove(&seq);
        if seq > s.watermark {
            s.delivered_above.insert(seq);
        }
        loop {
            let next = s.watermark.saturating_add(1);
            if !s.delivered_above.remove(&next) {
                break;
            }
            s.watermark = next;
        }
        Ok(())
    }

    async fn mark_dead_lettered(&self, seq: u64) -> Result<(), AuditError> {
        let mut s = self.lock();
        if let Some(event) = s.pending.remove(&seq) {
            s.dead.insert(seq, event);
        }
        Ok(())
    }

    async fn dead_lettered(&self, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        Ok(self.lock().dead.values().take(limit).cloned().collect())
    }

    async fn last_enqueued(&self) -> Result<Option<u64>, AuditError> {
        Ok(self.lock().last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AuditHash;

    fn ev(seq: u64) -> ChainedEvent {
        ChainedEvent::link(seq, AuditHash::GENESIS, format!("{{\"n\":{seq}}}"))
    }

    #[tokio::test]
    async fn the_outbox_contract() {
        let o = MemoryOutbox::new();
        assert_eq!(o.last_enqueued().await.expect("ok"), None);
        for seq in [3, 1, 2, 1] {
            o.enqueue(&ev(seq)).await.expect("ok");
        }
        let seqs = |v: Vec<ChainedEvent>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
        assert_eq!(seqs(o.pending(10).await.expect("ok")), vec![1, 2, 3]);
        assert_eq!(seqs(o.pending(2).await.expect("ok")), vec![1, 2]);
        o.mark_delivered(2).await.expect("ok");
        o.mark_delivered(2).await.expect("ok");
        assert_eq!(seqs(o.pending(10).await.expect("ok")), vec![1, 3]);
        o.enqueue(&ev(2))
            .await
            .expect("a delivered seq is not enqueued again");
        assert_eq!(seqs(o.pending(10).await.expect("ok")), vec![1, 3]);
        o.mark_delivered(1).await.expect("ok");
        o.mark_delivered(3).await.expect("ok");
        assert!(o.pending(10).await.expect("ok").is_empty());
        assert_eq!(o.pending_count().await.expect("ok"), 0);
        assert_eq!(o.last_enqueued().await.expect("ok"), Some(3));
        o.enqueue(&ev(1)).await.expect("ok");
        assert!(o.pending(10).await.expect("ok").is_empty());
    }
}
