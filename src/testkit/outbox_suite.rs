//! The conformance suite for webhook [`Outbox`] adapters (feature `http`).

use crate::adapters::http::Outbox;
use crate::domain::{AuditHash, ChainedEvent};

fn ev(seq: u64) -> ChainedEvent {
    ChainedEvent::link(seq, AuditHash::GENESIS, format!("{{\"n\":{seq}}}"))
}

fn seqs(v: Vec<ChainedEvent>) -> Vec<u64> {
    v.into_iter().map(|e| e.seq).collect()
}

/// Checks the [`Outbox`] contract on an EMPTY outbox: enqueue is idempotent per seq (also
/// after delivery), `pending` is undelivered events lowest seq first and exactly as enqueued,
/// `mark_delivered` is idempotent, `last_enqueued` is the highest seq ever enqueued, and
/// `pending_count` agrees with `pending`. Panics naming the broken rule.
pub async fn outbox_conformance(o: &dyn Outbox) {
    assert_eq!(
        o.last_enqueued().await.expect("last_enqueued"),
        None,
        "outbox rule: a new outbox is empty"
    );
    for seq in [3, 1, 2, 1] {
        o.enqueue(&ev(seq)).await.expect("enqueue");
    }
    let pending = o.pending(10).await.expect("pending");
    assert_eq!(
        pending,
        vec![ev(1), ev(2), ev(3)],
        "outbox rule: pending is lowest seq first, each once, exactly as enqueued"
    );
    assert_eq!(
        seqs(o.pending(2).await.expect("pending")),
        vec![1, 2],
        "outbox rule: pending honours its limit"
    );
    o.mark_delivered(2).await.expect("mark_delivered");
    o.mark_delivered(2)
        .await
        .expect("mark_delivered is idempotent");
    assert_eq!(seqs(o.pending(10).await.expect("pending")), vec![1, 3]);
    o.enqueue(&ev(2)).await.expect("enqueue");
    assert_eq!(
        seqs(o.pending(10).await.expect("pending")),
        vec![1, 3],
        "outbox rule: a delivered seq is not enqueued again"
    );
    assert_eq!(o.pending_count().await.expect("count"), 2);
    o.mark_delivered(1).await.expect("mark_delivered");
    o.mark_delivered(3).await.expect("mark_delivered");
    assert!(o.pending(10).await.expect("pending").is_empty());
    assert_eq!(o.pending_count().await.expect("count"), 0);
    assert_eq!(
        o.last_enqueued().await.expect("last_enqueued"),
        Some(3),
        "outbox rule: last_enqueued is the highest seq ever enqueued"
    );
    o.enqueue(&ev(1)).await.expect("enqueue");
    assert!(
        o.pending(10).await.expect("pending").is_empty(),
        "outbox rule: a delivered seq is not enqueued again"
    );
}
