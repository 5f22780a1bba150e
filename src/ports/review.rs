//! The review queue port: purchases held in their review window, durable across restarts.
//!
//! An allowed, non-urgent payment of an agent is held (its budget hold placed) and scheduled
//! here instead of being sent to the PSP; `Engine::run_due_reviews` sends what is due and
//! `Engine::cancel_review` withdraws one. The queue is bookkeeping: which of sent or cancelled
//! wins a race is decided by the attempt's compare-and-set in the [`Store`](super::Store), so a
//! queue that lags (a crash between the attempt's change and the entry's) is repaired by the
//! next `run_due_reviews`, which closes the entry after the attempt's state.

use std::fmt::Debug;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::store::StoreError;
use crate::domain::{ActorId, AttemptId, BuyerId, MandateId, MerchantId, Money};

/// The most entries one call of [`ReviewQueue::due`] or [`ReviewQueue::pending_for`] returns.
pub const MAX_REVIEW_BATCH: usize = 1_000;

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// In its window, or due and not yet sent.
    Pending,
    /// Its attempt left the window toward the PSP (sent, or in the hands of reconciliation).
    Sent,
    /// Its attempt was withdrawn (the buyer cancelled, or its authority lapsed).
    Cancelled,
}

impl ReviewState {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Pending => "pending",
            ReviewState::Sent => "sent",
            ReviewState::Cancelled => "cancelled",
        }
    }
}

/// One payment in its review window. Carries no secret: the command holds the credential's
/// vault reference, never the credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewEntry {
    /// The attempt (one entry per attempt).
    pub attempt_id: AttemptId,
    /// The buyer who may cancel it.
    pub buyer_id: BuyerId,
    /// The agent that asked for it.
    pub actor_id: ActorId,
    /// The mandate it is paid under.
    pub mandate_id: MandateId,
    /// The merchant.
    pub merchant_id: MerchantId,
    /// The amount held.
    pub amount: Money,
    /// When it was scheduled.
    pub scheduled_at: DateTime<Utc>,
    /// When it may be sent.
    pub due_at: DateTime<Utc>,
    /// Its state.
    pub state: ReviewState,
    /// When it left `pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
    /// How many times sending it was put off (a transient PSP failure).
    #[serde(default)]
    pub tries: u32,
    /// The execute command, as JSON (opaque to the queue: the engine reads it back).
    pub command: String,
}

/// The durable queue of payments in their review window.
///
/// Contract (checked by `agent_mandate::testkit::review_suite`, run against every adapter):
///
/// * [`schedule`](ReviewQueue::schedule) inserts an entry unless one exists for its attempt,
///   and returns the stored one (scheduling twice is a no-op: a retry after a crash);
/// * [`due`](ReviewQueue::due) lists pending entries with `due_at <= now`, earliest first
///   (ties by attempt id), at most `limit` (capped at [`MAX_REVIEW_BATCH`]);
/// * [`complete`](ReviewQueue::complete) and [`cancel`](ReviewQueue::cancel) move a pending
///   entry to `sent` or `cancelled` and answer `true`; on any other entry (or none) they
///   change nothing and answer `false`, so of two racing closes exactly one answers `true`;
/// * [`postpone`](ReviewQueue::postpone) moves a pending entry's due time and counts a try.
///
/// ```
/// # #[cfg(feature = "memory")] {
/// use agent_mandate::adapters::memory::MemoryReviewQueue;
/// use agent_mandate::ports::ReviewQueue;
/// let queue = MemoryReviewQueue::new();
/// # let _ = &queue as &dyn ReviewQueue;
/// # }
/// ```
#[async_trait]
pub trait ReviewQueue: Send + Sync + Debug {
    /// Inserts `entry` (its state is stored as given, normally pending) unless an entry for
    /// its attempt exists; returns the stored entry.
    async fn schedule(&self, entry: &ReviewEntry) -> Result<ReviewEntry, StoreError>;

    /// The entry of `attempt_id`, in any state.
    async fn entry(&self, attempt_id: &AttemptId) -> Result<Option<ReviewEntry>, StoreError>;

    /// Pending entries due at `now`, earliest first, at most `limit`. A stored entry that
    /// cannot be read is left out (and left for an operator), never an error for the others.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<ReviewEntry>, StoreError>;

    /// Pending entries of `buyer`, earliest due first, at most `limit` (due or not).
    async fn pending_for(
        &self,
        buyer: &BuyerId,
        limit: usize,
    ) -> Result<Vec<ReviewEntry>, StoreError>;

    /// Pending -> sent at `at`; `false` when the entry is missing or not pending.
    async fn complete(&self, attempt_id: &AttemptId, at: DateTime<Utc>)
        -> Result<bool, StoreError>;

    /// Pending -> cancelled at `at`; `false` when the entry is missing or not pending.
    async fn cancel(&self, attempt_id: &AttemptId, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// A pending entry is due again at `due_at`, one more try counted; `false` otherwise.
    async fn postpone(
        &self,
        attempt_id: &AttemptId,
        due_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
}
