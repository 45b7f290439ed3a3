//! The embedded queue on real database files: delivery, ack, retry,
//! redelivery after a restart, timers across a restart, dead letters.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use trigflow_core::cloudevents::{AttributesReader, Event};
use trigflow_core::event::NewEvent;
use trigflow_core::seams::{DeadLetter, Delivery, EventSink, EventSource};
use trigflow_embedded::{EmbeddedDb, EmbeddedQueue};
use trigflow_worker::Clock;

/// Generous bound for things that happen "soon"; tests poll, never sleep.
const SOON: Duration = Duration::from_secs(10);

fn event(id: &str) -> Event {
    NewEvent {
        source: "test",
        id,
        ty: "test.event",
        subject: Some("s"),
        execution: None,
        index: None,
        attempt: None,
        data: Some(serde_json::json!({"id": id})),
    }
    .build()
    .expect("event")
}

fn decode(d: &Delivery) -> Event {
    serde_json::from_slice(&d.body).expect("body is structured CloudEvents JSON")
}

fn ids(batch: &[Delivery]) -> Vec<String> {
    batch.iter().map(|d| decode(d).id().to_owned()).collect()
}

/// Receives until `n` deliveries arrived (or fails after [`SOON`]).
async fn receive_n(q: &EmbeddedQueue, n: usize) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + SOON;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} deliveries arrived",
            got.len()
        );
        got.extend(q.receive(n - got.len(), left).await.expect("receive"));
    }
    got
}

#[tokio::test]
async fn publish_receive_ack_retry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path().join("q.redb")).expect("open");
    let q = db.queue();
    q.publish(&[event("a"), event("b"), event("c")])
        .await
        .expect("publish");
    assert_eq!(db.pending_counts().expect("counts").queued, 3);

    let batch = q.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(ids(&batch), ["a", "b", "c"]);
    assert!(batch.iter().all(|d| d.attempt == 1));
    assert_eq!(decode(&batch[0]), event("a"), "body round-trips the event");

    // In flight: not delivered again.
    assert!(
        q.receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty()
    );

    q.ack(&[batch[0].id.clone(), batch[2].id.clone()])
        .await
        .expect("ack");
    q.retry(&[batch[1].id.clone()], Duration::ZERO)
        .await
        .expect("retry");
    let again = q.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(ids(&again), ["b"]);
    assert_eq!(again[0].attempt, 2);
    assert_eq!(again[0].id, batch[1].id);

    q.retry(&[again[0].id.clone()], Duration::ZERO)
        .await
        .expect("retry");
    let third = q.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(third[0].attempt, 3);
    q.ack(&[third[0].id.clone()]).await.expect("ack");
    assert_eq!(db.pending_counts().expect("counts").queued, 0);
    assert!(
        q.receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty()
    );
}

#[tokio::test]
async fn receive_respects_max_and_keeps_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path().join("q.redb")).expect("open");
    let q = db.queue();
    let events: Vec<Event> = (0..25).map(|i| event(&format!("e{i:02}"))).collect();
    q.publish(&events).await.expect("publish");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let batch = q.receive(10, Duration::ZERO).await.expect("receive");
        assert!(batch.len() <= 10);
        seen.extend(ids(&batch));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("e{i:02}")).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn retried_message_stays_hidden_until_its_delay_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path().join("q.redb")).expect("open");
    let q = db.queue();
    q.publish(&[event("late")]).await.expect("publish");
    let batch = q.receive(1, Duration::ZERO).await.expect("receive");
    let delay = Duration::from_secs(2);
    let retried_at = tokio::time::Instant::now();
    q.retry(&[batch[0].id.clone()], delay).await.expect("retry");
    let early = q.receive(1, Duration::ZERO).await.expect("receive");
    if retried_at.elapsed() < delay {
        assert!(early.is_empty(), "visible before its delay");
    }
    let later = receive_n(&q, 1).await;
    assert!(retried_at.elapsed() >= delay);
    assert_eq!(ids(&later), ["late"]);
    assert_eq!(later[0].attempt, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_receive_wakes_on_publish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path().join("q.redb")).expect("open");
    let q = db.queue();
    let receiver = {
        let q = q.clone();
        tokio::spawn(async move { q.receive(5, SOON).await })
    };
    q.publish(&[event("x")]).await.expect("publish");
    let got = receiver.await.expect("join").expect("receive");
    assert_eq!(ids(&got), ["x"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receivers_never_share_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path().join("q.redb")).expect("open");
    let q = db.queue();
    let events: Vec<Event> = (0..200).map(|i| event(&i.to_string())).collect();
    q.publish(&events).await.expect("publish");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let q = q.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = q.receive(7, Duration::ZERO).await.expect("receive");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|d| d.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("join"));
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!((total, all.len()), (200, 200));
}

#[tokio::test]
async fn unacked_messages_are_delivered_again_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.redb");
    {
        let db = EmbeddedDb::open(&path).expect("open");
        let q = db.queue();
        q.publish(&[event("1"), event("2"), event("3")])
            .await
            .expect("publish");
        let batch = q.receive(10, Duration::ZERO).await.expect("receive");
        assert_eq!(batch.len(), 3);
        q.ack(&[batch[1].id.clone()]).await.expect("ack");
        // Dropped with "1" and "3" in flight, as in a crash.
    }
    let db = EmbeddedDb::open(&path).expect("reopen");
    let q = db.queue();
    let again = q.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(ids(&again), ["1", "3"]);
    // New messages get numbers after the old ones, so order is kept.
    q.publish(&[event("4")]).await.expect("publish");
    let new = q.receive(10, Duration::ZERO).await.expect("receive");
    assert_eq!(ids(&new), ["4"]);
    let old_max: u64 = again[1].id.parse().expect("numeric id");
    assert!(new[0].id.parse::<u64>().expect("numeric id") > old_max);
}

#[tokio::test]
async fn ack_rejects_a_foreign_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path().join("q.redb")).expect("open");
    let err = db
        .queue()
        .ack(&["receipt-handle".to_owned()])
        .await
        .expect_err("not an embedded id");
    assert!(!err.retryable);
}

/// A clock the test moves by hand.
struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_survive_reopen_and_fire_when_due() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.redb");
    {
        let db = EmbeddedDb::open(&path).expect("open");
        let q = db.queue();
        q.schedule(1_000, &event("due")).await.expect("schedule");
        q.schedule(50_000, &event("later")).await.expect("schedule");
        assert_eq!(db.pending_counts().expect("counts").timers, 2);
    }
    let db = EmbeddedDb::open(&path).expect("reopen");
    assert_eq!(db.pending_counts().expect("counts").timers, 2);
    let q = db.queue();
    let clock = Arc::new(TestClock(AtomicI64::new(10_000)));
    let timer_loop = q.spawn_timer_loop(clock.clone());

    let first = receive_n(&q, 1).await;
    assert_eq!(ids(&first), ["due"]);
    assert_eq!(db.pending_counts().expect("counts").timers, 1);
    // Not due yet at 10 s.
    assert!(
        q.receive(1, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty()
    );

    clock.0.store(60_000, Ordering::SeqCst);
    let second = receive_n(&q, 1).await;
    assert_eq!(ids(&second), ["later"]);
    assert_eq!(db.pending_counts().expect("counts").timers, 0);

    // A timer scheduled while the loop runs wakes it.
    q.schedule(59_000, &event("new")).await.expect("schedule");
    assert_eq!(ids(&receive_n(&q, 1).await), ["new"]);

    db.shutdown();
    timer_loop.await.expect("timer loop stops");
}

#[tokio::test]
async fn dead_letters_are_stored_durably() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.redb");
    let letters: Vec<DeadLetter> = (0..2)
        .map(|i| DeadLetter {
            message_id: i.to_string(),
            event_id: Some(format!("ev{i}")),
            event_source: Some("test".into()),
            execution: None,
            reason: format!("reason {i}"),
            body: "{}".into(),
            at_ms: 1_700_000_000_000 + i,
        })
        .collect();
    {
        let db = EmbeddedDb::open(&path).expect("open");
        let q = db.queue();
        q.dead_letter(&letters).await.expect("dead letter");
        assert_eq!(q.dead_letters().expect("list"), letters);
    }
    let db = EmbeddedDb::open(&path).expect("reopen");
    assert_eq!(db.list_dead_letters().expect("list"), letters);
    assert_eq!(db.pending_counts().expect("counts").dead_letters, 2);
}
