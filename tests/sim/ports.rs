//! Port wrappers that park at a yield point before every call and then delegate; the audit
//! wrapper also refuses appends when the `audit` fault class is on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use agent_mandate::domain::{
    ActorId, AttemptId, AttemptStatus, AuditEvent, BuyerId, CartSnapshot, ChainedEvent,
    Confirmation, ContentDigest, CredentialRef, CredentialStatus, IdempotencyKey, Mandate,
    MandateId, MandateStatus, Money, Order, Party, PaymentAttempt, SnapshotId, Suspensions, Usage,
};
use agent_mandate::ports::{
    AttemptChange, AuditError, AuditReceipt, AuditSink, Begin, CredentialVault, Fence, HoldError,
    HoldRecord, HoldRequest, IdempotencyScope, InputsQuery, InsertOrder, NewCredential,
    OpenPayment, Opened, PaymentInputs, RefundPolicy, ResolvedCredential, StagedEvent, Store,
    StoreError, StoreOutcome, StoredCredential, StoredResult, VaultError, Write, Written,
};

use super::exec::yield_point;
use super::Ctx;

/// A [`Store`] whose every call is a yield point.
#[derive(Debug)]
pub struct YieldingStore(pub Arc<dyn Store>);

#[async_trait]
impl Store for YieldingStore {
    async fn insert_mandate(&self, m: &Mandate) -> Result<(), StoreError> {
        yield_point("store.insert_mandate").await;
        self.0.insert_mandate(m).await
    }
    async fn mandate(&self, id: &MandateId) -> Result<Option<Mandate>, StoreError> {
        yield_point("store.mandate").await;
        self.0.mandate(id).await
    }
    async fn update_mandate(&self, m: &Mandate, e: MandateStatus) -> Result<(), StoreError> {
        yield_point("store.update_mandate").await;
        self.0.update_mandate(m, e).await
    }
    async fn chain(&self, leaf: &MandateId) -> Result<Vec<Mandate>, StoreError> {
        yield_point("store.chain").await;
        self.0.chain(leaf).await
    }
    async fn set_suspended(&self, p: &Party, s: bool) -> Result<(), StoreError> {
        yield_point("store.set_suspended").await;
        self.0.set_suspended(p, s).await
    }
    async fn suspensions(&self, a: &[ActorId], b: &BuyerId) -> Result<Suspensions, StoreError> {
        yield_point("store.suspensions").await;
        self.0.suspensions(a, b).await
    }
    async fn insert_confirmation(&self, c: &Confirmation) -> Result<(), StoreError> {
        yield_point("store.insert_confirmation").await;
        self.0.insert_confirmation(c).await
    }
    async fn confirmations(
        &self,
        b: &BuyerId,
        s: &SnapshotId,
    ) -> Result<Vec<Confirmation>, StoreError> {
        yield_point("store.confirmations").await;
        self.0.confirmations(b, s).await
    }
    async fn put_snapshot(&self, s: &CartSnapshot) -> Result<(), StoreError> {
        yield_point("store.put_snapshot").await;
        self.0.put_snapshot(s).await
    }
    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<CartSnapshot>, StoreError> {
        yield_point("store.snapshot").await;
        self.0.snapshot(id).await
    }
    async fn usage(&self, c: &[Mandate], now: DateTime<Utc>) -> Result<Vec<Usage>, StoreError> {
        yield_point("store.usage").await;
        self.0.usage(c, now).await
    }
    async fn place_hold(&self, h: &HoldRequest) -> Result<Vec<Usage>, HoldError> {
        yield_point("store.place_hold").await;
        self.0.place_hold(h).await
    }
    async fn commit_hold(&self, a: &AttemptId, m: Money) -> Result<(), StoreError> {
        yield_point("store.commit_hold").await;
        self.0.commit_hold(a, m).await
    }
    async fn release_hold(&self, a: &AttemptId) -> Result<(), StoreError> {
        yield_point("store.release_hold").await;
        self.0.release_hold(a).await
    }
    async fn refund_hold(
        &self,
        a: &AttemptId,
        m: Money,
        p: RefundPolicy,
    ) -> Result<(), StoreError> {
        yield_point("store.refund_hold").await;
        self.0.refund_hold(a, m, p).await
    }
    async fn hold(&self, a: &AttemptId) -> Result<Option<HoldRecord>, StoreError> {
        yield_point("store.hold").await;
        self.0.hold(a).await
    }
    async fn insert_attempt(&self, a: &PaymentAttempt) -> Result<(), StoreError> {
        yield_point("store.insert_attempt").await;
        self.0.insert_attempt(a).await
    }
    async fn attempt(&self, id: &AttemptId) -> Result<Option<PaymentAttempt>, StoreError> {
        yield_point("store.attempt").await;
        self.0.attempt(id).await
    }
    async fn update_attempt(&self, a: &PaymentAttempt, e: AttemptStatus) -> Result<(), StoreError> {
        yield_point("store.update_attempt").await;
        self.0.update_attempt(a, e).await
    }
    async fn change_attempt(&self, change: &AttemptChange<'_>) -> Result<(), StoreError> {
        yield_point("store.change_attempt").await;
        self.0.change_attempt(change).await
    }
    async fn payment_inputs(&self, q: &InputsQuery<'_>) -> Result<PaymentInputs, StoreError> {
        yield_point("store.payment_inputs").await;
        self.0.payment_inputs(q).await
    }
    async fn open_payment(&self, open: &OpenPayment<'_>) -> Result<Opened, HoldError> {
        yield_point("store.open_payment").await;
        self.0.open_payment(open).await
    }
    async fn attempts_in(
        &self,
        s: &[AttemptStatus],
        limit: usize,
    ) -> Result<Vec<PaymentAttempt>, StoreError> {
        yield_point("store.attempts_in").await;
        self.0.attempts_in(s, limit).await
    }
    async fn begin_idempotent(
        &self,
        s: &IdempotencyScope,
        f: &ContentDigest,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        yield_point("store.begin_idempotent").await;
        self.0.begin_idempotent(s, f, now, lease).await
    }
    async fn complete_idempotent(
        &self,
        f: &Fence,
        r: &StoredResult,
        until: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        yield_point("store.complete_idempotent").await;
        self.0.complete_idempotent(f, r, until).await
    }
    async fn abandon_idempotent(&self, f: &Fence) -> Result<(), StoreError> {
        yield_point("store.abandon_idempotent").await;
        self.0.abandon_idempotent(f).await
    }
    async fn check_fence(&self, f: &Fence) -> Result<(), StoreError> {
        yield_point("store.check_fence").await;
        self.0.check_fence(f).await
    }
    async fn purge_idempotent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        yield_point("store.purge_idempotent").await;
        self.0.purge_idempotent(now).await
    }
    async fn write_audited(
        &self,
        w: Write<'_>,
        events: &[AuditEvent],
    ) -> Result<Written, StoreError> {
        yield_point("store.write_audited").await;
        self.0.write_audited(w, events).await
    }
    async fn stage_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        yield_point("store.stage_audit").await;
        self.0.stage_audit(events).await
    }
    async fn staged_audit(&self, limit: usize) -> Result<Vec<StagedEvent>, StoreError> {
        yield_point("store.staged_audit").await;
        self.0.staged_audit(limit).await
    }
    async fn ack_audit(&self, through: u64) -> Result<(), StoreError> {
        yield_point("store.ack_audit").await;
        self.0.ack_audit(through).await
    }
    async fn insert_order(&self, o: &Order) -> Result<InsertOrder, StoreError> {
        yield_point("store.insert_order").await;
        self.0.insert_order(o).await
    }
    async fn order_for(&self, a: &AttemptId) -> Result<Option<Order>, StoreError> {
        yield_point("store.order_for").await;
        self.0.order_for(a).await
    }
    async fn record_block(&self, a: &ActorId) -> Result<u32, StoreError> {
        yield_point("store.record_block").await;
        self.0.record_block(a).await
    }
    async fn reset_blocks(&self, a: &ActorId) -> Result<(), StoreError> {
        yield_point("store.reset_blocks").await;
        self.0.reset_blocks(a).await
    }
    async fn consume_challenge(
        &self,
        u: &agent_mandate::ports::ChallengeUse,
    ) -> Result<agent_mandate::ports::ChallengeConsumed, StoreError> {
        yield_point("store.consume_challenge").await;
        self.0.consume_challenge(u).await
    }

    async fn purge_challenges(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        yield_point("store.purge_challenges").await;
        self.0.purge_challenges(now).await
    }
}

/// An [`AuditSink`] whose appends are yield points and, under the `audit` fault class,
/// sometimes refused (nothing appended).
#[derive(Debug)]
pub struct YieldingAudit {
    pub inner: Arc<dyn AuditSink>,
    pub ctx: Arc<Ctx>,
}

impl YieldingAudit {
    fn refuse(&self) -> Result<(), AuditError> {
        if self.ctx.faults.audit && !self.ctx.quiet() && self.ctx.rng().chance(4) {
            return Err(AuditError::Unavailable {
                message: "simulated: audit sink unavailable".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl AuditSink for YieldingAudit {
    async fn append(&self, event: &AuditEvent) -> Result<AuditReceipt, AuditError> {
        yield_point("audit.append").await;
        self.refuse()?;
        self.inner.append(event).await
    }
    async fn append_all(&self, events: &[AuditEvent]) -> Result<Option<AuditReceipt>, AuditError> {
        yield_point("audit.append_all").await;
        self.refuse()?;
        self.inner.append_all(events).await
    }
    async fn read(&self, from_seq: u64, limit: usize) -> Result<Vec<ChainedEvent>, AuditError> {
        yield_point("audit.read").await;
        self.inner.read(from_seq, limit).await
    }
    async fn head(&self) -> Result<Option<AuditReceipt>, AuditError> {
        yield_point("audit.head").await;
        self.inner.head().await
    }
    async fn verify(&self) -> Result<Option<AuditReceipt>, AuditError> {
        yield_point("audit.verify").await;
        self.inner.verify().await
    }
}

/// A [`CredentialVault`] whose every call is a yield point.
#[derive(Debug)]
pub struct YieldingVault(pub Arc<dyn CredentialVault>);

#[async_trait]
impl CredentialVault for YieldingVault {
    async fn store(
        &self,
        k: &IdempotencyKey,
        c: NewCredential,
    ) -> Result<StoreOutcome, VaultError> {
        yield_point("vault.store").await;
        self.0.store(k, c).await
    }
    async fn describe(&self, r: &CredentialRef) -> Result<StoredCredential, VaultError> {
        yield_point("vault.describe").await;
        self.0.describe(r).await
    }
    async fn resolve(
        &self,
        r: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<ResolvedCredential, VaultError> {
        yield_point("vault.resolve").await;
        self.0.resolve(r, now).await
    }
    async fn status(
        &self,
        r: &CredentialRef,
        now: DateTime<Utc>,
    ) -> Result<CredentialStatus, VaultError> {
        yield_point("vault.status").await;
        self.0.status(r, now).await
    }
    async fn revoke(&self, r: &CredentialRef) -> Result<bool, VaultError> {
        yield_point("vault.revoke").await;
        self.0.revoke(r).await
    }
    async fn revoke_owner(&self, owner: &ActorId) -> Result<u32, VaultError> {
        yield_point("vault.revoke_owner").await;
        self.0.revoke_owner(owner).await
    }
}
