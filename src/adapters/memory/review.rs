//! [`MemoryReviewQueue`]: the review queue in memory (one mutex: every operation is atomic).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{AttemptId, BuyerId};
use crate::ports::{ReviewEntry, ReviewQueue, ReviewState, StoreError, MAX_REVIEW_BATCH};

/// The [`ReviewQueue`] in memory. Cheap to clone: clones share the entries, so an engine
/// rebuilt over a clone (a restart in a test) sees what the first one scheduled.
///
/// ```
/// use agent_mandate::adapters::memory::MemoryReviewQueue;
/// let queue = MemoryReviewQueue::new();
/// let shared = queue.clone();
/// assert_eq!(queue.len(), shared.len());
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryReviewQueue {
    entries: Arc<Mutex<BTreeMap<String, ReviewEntry>>>,
}

impl MemoryReviewQueue {
    /// An empty queue.
    pub fn new() -> MemoryReviewQueue {
        MemoryReviewQueue::default()
    }

    /// How many entries, in any state.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ReviewEntry>> {
        // A panic while holding the lock leaves whole entries (every change is one insert).
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self, attempt_id: &AttemptId, state: ReviewState, at: DateTime<Utc>) -> bool {
        let mut entries = self.lock();
        match entries.get_mut(attempt_id.as_str()) {
            Some(e) if e.state == ReviewState::Pending => {
                e.state = state;
                e.closed_at = Some(at);
                true
            }
            _ => false,
        }
    }
}

fn sorted(mut out: Vec<ReviewEntry>, limit: usize) -> Vec<ReviewEntry> {
    out.sort_by(|a, b| {
        a.due_at
            .cmp(&b.due_at)
            .then_with(|| a.attempt_id.as_str().cmp(b.attempt_id.as_str()))
    });
    out.truncate(limit.min(MAX_REVIEW_BATCH));
    out
}

#[async_trait]
impl ReviewQueue for MemoryReviewQueue {
    async fn schedule(&self, entry: &ReviewEntry) -> Result<ReviewEntry, StoreError> {
        let mut entries = self.lock();
        Ok(entries
            .entry(entry.attempt_id.as_str().to_owned())
            .or_insert_with(|| entry.clone())
            .clone())
    }

    async fn entry(&self, attempt_id: &AttemptId) -> Result<Option<ReviewEntry>, StoreError> {
        Ok(self.lock().get(attempt_id.as_str()).cloned())
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ReviewEntry>, StoreError> {
        let out = self
            .lock()
            .values()
            .filter(|e| e.state == ReviewState::Pending && e.due_at <= now)
            .cloned()
            .collect();
        Ok(sorted(out, limit))
    }

    async fn pending_for(
        &self,
        buyer: &BuyerId,
        limit: usize,
    ) -> Result<Vec<ReviewEntry>, StoreError> {
        let out = self
            .lock()
            .values()
            .filter(|e| e.state == ReviewState::Pending && &e.buyer_id == buyer)
            .cloned()
            .collect();
        Ok(sorted(out, limit))
    }

    async fn complete(
        &self,
        attempt_id: &AttemptId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.close(attempt_id, ReviewState::Sent, at))
    }

    async fn cancel(&self, attempt_id: &AttemptId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.close(attempt_id, ReviewState::Cancelled, at))
    }

    async fn postpone(
        &self,
        attempt_id: &AttemptId,
        due_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut entries = self.lock();
        match entries.get_mut(attempt_id.as_str()) {
            Some(e) if e.state == ReviewState::Pending => {
                e.due_at = due_at;
                e.tries = e.tries.saturating_add(1);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}
