//! The conformance suite of the [`ReviewQueue`] port: every adapter runs [`review_queue_suite`].

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::domain::{examples, AttemptId, BuyerId};
use crate::ports::{ReviewEntry, ReviewQueue, ReviewState};

fn entry(id: &str, buyer: &BuyerId, due_at: DateTime<Utc>, now: DateTime<Utc>) -> ReviewEntry {
    let request = examples::authorize_request(&examples::travel_backpack_snapshot());
    ReviewEntry {
        attempt_id: AttemptId::derived(id.to_owned()),
        buyer_id: buyer.clone(),
        actor_id: request.actor.id.clone(),
        mandate_id: request.mandate_id.clone(),
        merchant_id: request.merchant_id.clone(),
        amount: request.amount,
        scheduled_at: now,
        due_at,
        state: ReviewState::Pending,
        closed_at: None,
        tries: 0,
        command: "{\"opaque\":true}".to_owned(),
    }
}

/// Runs every rule of the [`ReviewQueue`] contract against `queue`, which must be empty.
/// `prefix` makes the attempt ids unique when several runs share one database.
///
/// Checks: scheduling is idempotent per attempt (the first entry stays); `due` lists only
/// pending entries due at `now`, earliest first, within `limit`; `pending_for` lists one
/// buyer's pending entries; `complete` and `cancel` close a pending entry once and answer
/// `false` afterwards (and on an unknown attempt); of many concurrent closes of one entry
/// exactly one answers `true`; `postpone` moves a pending entry and counts a try, and nothing
/// else; entries survive with every field as written.
pub async fn review_queue_suite(queue: Arc<dyn ReviewQueue>, prefix: &str) {
    let now = examples::now();
    let buyer = examples::buyer();
    let other: BuyerId = "buyer_other".parse().expect("id");
    let id = |n: &str| AttemptId::derived(format!("{prefix}_{n}"));
    let a = entry(
        &format!("{prefix}_a"),
        &buyer,
        now + Duration::seconds(30),
        now,
    );
    let b = entry(
        &format!("{prefix}_b"),
        &buyer,
        now + Duration::seconds(10),
        now,
    );
    let c = entry(
        &format!("{prefix}_c"),
        &other,
        now + Duration::seconds(20),
        now,
    );

    // Scheduling: stored as written, idempotent per attempt.
    assert_eq!(queue.schedule(&a).await.expect("schedule"), a);
    let mut again = a.clone();
    again.due_at = now + Duration::seconds(99);
    assert_eq!(
        queue.schedule(&again).await.expect("schedule again"),
        a,
        "scheduling an attempt twice keeps the first entry"
    );
    queue.schedule(&b).await.expect("schedule b");
    queue.schedule(&c).await.expect("schedule c");
    assert_eq!(
        queue.entry(&a.attempt_id).await.expect("entry"),
        Some(a.clone())
    );
    assert_eq!(queue.entry(&id("missing")).await.expect("entry"), None);

    // Due: nothing before its time, earliest first, bounded.
    assert!(
        queue.due(now, 10).await.expect("due").is_empty(),
        "nothing is due before its time"
    );
    let due: Vec<_> = queue
        .due(now + Duration::seconds(30), 10)
        .await
        .expect("due")
        .into_iter()
        .map(|e| e.attempt_id)
        .collect();
    assert_eq!(
        due,
        vec![
            b.attempt_id.clone(),
            c.attempt_id.clone(),
            a.attempt_id.clone()
        ]
    );
    assert_eq!(
        queue
            .due(now + Duration::seconds(30), 1)
            .await
            .expect("due")
            .len(),
        1
    );
    assert_eq!(
        queue
            .due(now + Duration::seconds(15), 10)
            .await
            .expect("due")
            .len(),
        1
    );

    // One buyer's pending entries.
    let mine: Vec<_> = queue
        .pending_for(&buyer, 10)
        .await
        .expect("pending")
        .into_iter()
        .map(|e| e.attempt_id)
        .collect();
    assert_eq!(mine, vec![b.attempt_id.clone(), a.attempt_id.clone()]);
    assert_eq!(
        queue.pending_for(&other, 10).await.expect("pending").len(),
        1
    );

    // Closing: once.
    let later = now + Duration::seconds(40);
    assert!(queue
        .complete(&b.attempt_id, later)
        .await
        .expect("complete"));
    assert!(!queue
        .complete(&b.attempt_id, later)
        .await
        .expect("complete twice"));
    assert!(!queue
        .cancel(&b.attempt_id, later)
        .await
        .expect("cancel after sent"));
    assert!(!queue
        .postpone(&b.attempt_id, later)
        .await
        .expect("postpone after sent"));
    let sent = queue
        .entry(&b.attempt_id)
        .await
        .expect("entry")
        .expect("kept");
    assert_eq!(
        (sent.state, sent.closed_at),
        (ReviewState::Sent, Some(later))
    );
    assert!(queue.cancel(&c.attempt_id, later).await.expect("cancel"));
    assert!(!queue
        .complete(&c.attempt_id, later)
        .await
        .expect("complete after cancel"));
    let cancelled = queue
        .entry(&c.attempt_id)
        .await
        .expect("entry")
        .expect("kept");
    assert_eq!(cancelled.state, ReviewState::Cancelled);
    assert!(!queue
        .cancel(&id("missing"), later)
        .await
        .expect("cancel unknown"));
    assert!(
        queue
            .due(later, 10)
            .await
            .expect("due")
            .iter()
            .all(|e| e.attempt_id == a.attempt_id),
        "closed entries are never due"
    );
    assert!(queue
        .pending_for(&other, 10)
        .await
        .expect("pending")
        .is_empty());

    // Postponing: a pending entry only, one try each.
    assert!(queue
        .postpone(&a.attempt_id, later + Duration::seconds(30))
        .await
        .expect("postpone"));
    let moved = queue
        .entry(&a.attempt_id)
        .await
        .expect("entry")
        .expect("kept");
    assert_eq!(
        (moved.due_at, moved.tries),
        (later + Duration::seconds(30), 1)
    );
    assert!(queue.due(later, 10).await.expect("due").is_empty());

    // Concurrent closes of one entry: exactly one wins.
    let race = entry(&format!("{prefix}_race"), &buyer, now, now);
    queue.schedule(&race).await.expect("schedule race");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let q = queue.clone();
        let rid = race.attempt_id.clone();
        tasks.push(async move {
            if i % 2 == 0 {
                q.complete(&rid, now).await
            } else {
                q.cancel(&rid, now).await
            }
        });
    }
    let wins = futures_join(tasks).await;
    assert_eq!(
        wins.iter().filter(|w| matches!(w, Ok(true))).count(),
        1,
        "exactly one of concurrent closes wins: {wins:?}"
    );
}

/// Polls every future on this task until all are done (no runtime needed).
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
