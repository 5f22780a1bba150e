//! Fault-injecting wrappers of the store and the vault: each write of a delegation (the
//! vault's store, the mandate's insert, the ACP key's completion) can fail once, before or
//! after it took effect (a lost answer), and the mandate write can stall until released (a
//! store slower than the lease). They count what was really written.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_mandate::acp::DELEGATE_OPERATION;
use agent_mandate::domain::{
    ActorId, AttemptId, AttemptStatus, AuditEvent, BuyerId, CartSnapshot, Confirmation,
    ContentDigest, CredentialRef, CredentialStatus, IdempotencyKey, Mandate, MandateId,
    MandateStatus, Money, Order, Party, PaymentAttempt, SnapshotId, Suspensions, Usage,
};
use agent_mandate::ports::{
    AttemptChange, Begin, CredentialVault, Fence, HoldError, HoldRecord, HoldRequest,
    IdempotencyScope, InputsQuery, InsertOrder, NewCredential, OpenPayment, Opened, PaymentInputs,
    RefundPolicy, ResolvedCredential, StagedEvent, Store, StoreError, StoreOutcome,
    StoredCredential, StoredResult, VaultError, Write, Written,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

/// Which writes fail next (each flag once), and what was written.
#[derive(Debug, Default)]
pub struct Faults {
    pub vault_before: AtomicBool,
    pub vault_after: AtomicBool,
    pub mandate_before: AtomicBool,
    pub mandate_after: AtomicBool,
    pub complete_before: AtomicBool,
    pub complete_after: AtomicBool,
    /// The next mandate write waits at `reached` until `release`.
    pub stall_mandate: AtomicBool,
    pub reached: Notify,
    pub release: Notify,
    /// Credentials the vault newly stored (not replays).
    pub credentials_written: AtomicU32,
    /// Mandates the store inserted.
    pub mandates_written: AtomicU32,
}

impl Faults {
    pub fn arm(flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
    }
    pub fn credentials(&self) -> u32 {
        self.credentials_written.load(Ordering::SeqCst)
    }
    pub fn mandates(&self) -> u32 {
        self.mandates_written.load(Ordering::SeqCst)
    }
}

fn take(flag: &AtomicBool) -> bool {
    flag.swap(false, Ordering::SeqCst)
}

fn down(what: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("injected: {what}"),
    }
}

#[derive(Debug)]
pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    pub faults: Arc<Faults>,
}

impl FaultyStore {
    async fn pause_point(&self) {
        if take(&self.faults.stall_mandate) {
            let released = self.faults.release.notified();
            self.faults.reached.notify_one();
            released.await;
        }
    }
}

#[derive(Debug)]
pub struct FaultyVault {
    pub inner: Arc<dyn CredentialVault>,
    pub faults: Arc<Faults>,
}

fn vault_down(what: &str) -> VaultError {
    VaultError::Unavailable {
        message: format!("injected: {what}"),
    }
}

#[async_trait]
impl CredentialVault for FaultyVault {
    async fn store(
        &self,
        key: &IdempotencyKey,
        credential: NewCredential,
    ) -> Result<StoreOutcome, VaultError> {
        if take(&self.faults.vault_before) {
            return Err(vault_down("vault store (before)"));
        }
        let out = self.inner.store(key, credential).await;
        if let Ok(o) = &out {
            if !o.replay {
                self.faults
                    .credentials_written
                    .fetch_add(1, Ordering::SeqCst);
            }
            if take(&self.faults.vault_after) {
                return Err(vault_down("vault store (after)"));
            }
        }
        out
    }
    async fn describe(&self, reference: &CredentialRef) -> Result<StoredCredential, VaultError> {
        self.inner.describe(reference).await
    }
    async fn resolve(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<ResolvedCredential, VaultError> {
        self.inner.resolve(reference, now).await
    }
    async fn status(
        &self,
        reference: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<CredentialStatus, VaultError> {
        self.inner.status(reference, now).await
    }
    async fn revoke(&self, reference: &CredentialRef) -> Result<bool, VaultError> {
        self.inner.revoke(reference).await
    }
    async fn revoke_owner(&self, owner: &ActorId) -> Result<u32, VaultError> {
        self.inner.revoke_owner(owner).await
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn insert_mandate(&self, mandate: &Mandate) -> Result<(), StoreError> {
        let out = self.inner.insert_mandate(mandate).await;
        if out.is_ok() {
            self.faults.mandates_written.fetch_add(1, Ordering::SeqCst);
        }
        out
    }
    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        self.inner.mandate(id).await
    }
    async fn update_mandate(
        &self,
        mandate: &Mandate,
        expected: MandateStatus,
    ) -> Result<(), StoreError> {
        self.inner.update_mandate(mandate, expected).await
    }
    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        self.inner.chain(leaf).await
    }
    async fn set_suspended(&self, party: &Party, suspended: bool) -> Result<(), StoreError> {
        self.inner.set_suspended(party, suspended).await
    }
    async fn suspensions(
        &self,
        actors: &[ActorId],
        buyer: &BuyerId,
    ) -> Result<Suspensions, StoreError> {
        self.inner.suspensions(actors, buyer).await
    }
    async fn insert_confirmation(&self, confirmation: &Confirmation) -> Result<(), StoreError> {
        self.inner.insert_confirmation(confirmation).await
    }
    async fn confirmations(
        &self,
        buyer: &BuyerId,
        snapshot: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        self.inner.confirmations(buyer, snapshot).await
    }
    async fn put_snapshot(&self, snapshot: &CartSnapshot) -> Result<(), StoreError> {
        self.inner.put_snapshot(snapshot).await
    }
    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError> {
        self.inner.snapshot(id).await
    }
    async fn usage(&self, chain: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError> {
        self.inner.usage(chain, now).await
    }
    async fn place_hold(&self, hold: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        self.inner.place_hold(hold).await
    }
    async fn commit_hold(&self, attempt_id: &AttemptId, amount: Money) -> Result<(), StoreError> {
        self.inner.commit_hold(attempt_id, amount).await
    }
    async fn release_hold(&self, attempt_id: &AttemptId) -> Result<(), StoreError> {
        self.inner.release_hold(attempt_id).await
    }
    async fn refund_hold(
        &self,
        attempt_id: &AttemptId,
        amount: Money,
        policy: RefundPolicy,
    ) -> Result<(), StoreError> {
        self.inner.refund_hold(attempt_id, amount, policy).await
    }
    async fn hold(&self, attempt_id: &AttemptId) -> Result<Option<HoldRecord>, StoreError> {
        self.inner.hold(attempt_id).await
    }
    async fn insert_attempt(&self, attempt: &PaymentAttempt) -> Result<(), StoreError> {
        self.inner.insert_attempt(attempt).await
    }
    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError> {
        self.inner.attempt(id).await
    }
    async fn update_attempt(
        &self,
        attempt: &PaymentAttempt,
        expected: AttemptStatus,
    ) -> Result<(), StoreError> {
        self.inner.update_attempt(attempt, expected).await
    }
    async fn change_attempt(&self, change: &AttemptChange<'_>) -> Result<(), StoreError> {
        self.inner.change_attempt(change).await
    }
    async fn write_audited(
        &self,
        write: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        let mandate = matches!(write, Write::InsertMandate(_));
        if mandate {
            self.pause_point().await;
            if take(&self.faults.mandate_before) {
                return Err(down("mandate write (before)"));
            }
        }
        let out = self.inner.write_audited(write, events).await;
        if mandate && out.is_ok() {
            self.faults.mandates_written.fetch_add(1, Ordering::SeqCst);
            if take(&self.faults.mandate_after) {
                return Err(down("mandate write (after)"));
            }
        }
        out
    }
    async fn payment_inputs(&self, query: &InputsQuery<'_>) -> Result<PaymentInputs, StoreError> {
        self.inner.payment_inputs(query).await
    }
    async fn open_payment(&self, open: &OpenPayment<'_>) -> Result<Opened, HoldError> {
        self.inner.open_payment(open).await
    }
    async fn stage_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.inner.stage_audit(events).await
    }
    async fn staged_audit(&self, limit: usize) -> Result<Vec<StagedEvent>, StoreError> {
        self.inner.staged_audit(limit).await
    }
    async fn ack_audit(&self, through: u64) -> Result<(), StoreError> {
        self.inner.ack_audit(through).await
    }
    async fn attempts_in(
        &self,
        statuses: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        self.inner.attempts_in(statuses, limit).await
    }
    async fn begin_idempotent(
        &self,
        scope: &IdempotencyScope,
        fingerprint: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        self.inner
            .begin_idempotent(scope, fingerprint, now, lease)
            .await
    }
    async fn complete_idempotent(
        &self,
        fence: &Fence,
        result: &StoredResult,
        retain_until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let ours = fence.scope.operation == DELEGATE_OPERATION;
        if ours && take(&self.faults.complete_before) {
            return Err(down("key completion (before)"));
        }
        let out = self
            .inner
            .complete_idempotent(fence, result, retain_until)
            .await;
        if ours && out.is_ok() && take(&self.faults.complete_after) {
            return Err(down("key completion (after)"));
        }
        out
    }
    async fn abandon_idempotent(&self, fence: &Fence) -> Result<(), StoreError> {
        self.inner.abandon_idempotent(fence).await
    }
    async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        self.inner.check_fence(fence).await
    }
    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_idempotent(now).await
    }
    async fn consume_challenge(
        &self,
        use_: &agent_mandate::ports::ChallengeUse,
    ) -> Result<agent_mandate::ports::ChallengeConsumed, StoreError> {
        self.inner.consume_challenge(use_).await
    }
    async fn purge_challenges(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.inner.purge_challenges(now).await
    }
    async fn insert_order(&self, order: &Order) -> Result<InsertOrder, StoreError> {
        self.inner.insert_order(order).await
    }
    async fn order_for(&self, attempt_id: &AttemptId) -> Result<Option<Order>, StoreError> {
        self.inner.order_for(attempt_id).await
    }
    async fn record_block(&self, actor: &ActorId) -> Result<u32, StoreError> {
        self.inner.record_block(actor).await
    }
    async fn reset_blocks(&self, actor: &ActorId) -> Result<(), StoreError> {
        self.inner.reset_blocks(actor).await
    }
}
