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
/// `mark_delivered` is idempotent, `last_enqueued` is the highest seq ever enqueued,
/// `pending_count` agrees with `pending`, and a dead-lettered event leaves `pending`, is kept
/// (listed by `dead_lettered` exactly as enqueued) and is never enqueued again. Panics naming
/// the broken rule.
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

    // Dead letters: 5 is refused for good, 4 and 6 go on.
    assert!(
        o.dead_lettered(10).await.expect("dead_lettered").is_empty(),
        "outbox rule: nothing is dead-lettered until asked"
    );
    for seq in [4, 5, 6] {
        o.enqueue(&ev(seq)).await.expect("enqueue");
    }
    o.mark_dead_lettered(5).await.expect("mark_dead_lettered");
    o.mark_dead_lettered(5)
        .await
        .expect("mark_dead_lettered is idempotent");
    assert_eq!(
        seqs(o.pending(10).await.expect("pending")),
        vec![4, 6],
        "outbox rule: a dead-lettered event is no longer pending"
    );
    assert_eq!(o.pending_count().await.expect("count"), 2);
    assert_eq!(
        o.dead_lettered(10).await.expect("dead_lettered"),
        vec![ev(5)],
        "outbox rule: a dead-lettered event is kept, exactly as enqueued"
    );
    o.enqueue(&ev(5)).await.expect("enqueue");
    assert_eq!(
        seqs(o.pending(10).await.expect("pending")),
        vec![4, 6],
        "outbox rule: a dead-lettered seq is not enqueued again"
    );
    // Dead-lettering a delivered or unknown seq changes nothing.
    o.mark_dead_lettered(1).await.expect("mark_dead_lettered");
    o.mark_dead_lettered(99).await.expect("mark_dead_lettered");
    assert_eq!(
        seqs(o.dead_lettered(10).await.expect("dead_lettered")),
        vec![5]
    );
    o.mark_delivered(4).await.expect("mark_delivered");
    o.mark_delivered(6).await.expect("mark_delivered");
    assert!(o.pending(10).await.expect("pending").is_empty());
    assert_eq!(
        seqs(o.dead_lettered(0).await.expect("dead_lettered")),
        Vec::<u64>::new()
    );
    assert_eq!(
        o.last_enqueued().await.expect("last_enqueued"),
        Some(6),
        "outbox rule: last_enqueued counts dead-lettered events"
    );
}
