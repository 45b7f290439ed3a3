//! Event source and sink against a real nats-server.

use std::time::{Duration, Instant};

use trigflow_core::event::NewEvent;
use trigflow_core::ids::ExecutionId;
use trigflow_core::seams::{DeadLetter, EventSink, EventSource};
use trigflow_local::testing::NatsServer;
use trigflow_local::{Local, LocalConfig};
use trigflow_worker::{Clock, SystemClock};

async fn connect(server: &NatsServer) -> Local {
    Local::connect(LocalConfig::with_url(server.url()))
        .await
        .expect("connect to the test server")
}

fn event(exec: &str, id: &str) -> trigflow_core::cloudevents::Event {
    let exec: ExecutionId = exec.parse().expect("execution id");
    NewEvent {
        source: "test",
        id,
        ty: "test.ping",
        subject: Some("ping"),
        execution: Some(&exec),
        index: None,
        attempt: None,
        data: Some(serde_json::json!({"id": id})),
    }
    .build()
    .expect("event")
}

fn ids_of(batch: &[trigflow_core::seams::Delivery]) -> Vec<String> {
    let mut ids: Vec<String> = batch
        .iter()
        .map(|d| {
            let ev = trigflow_core::event::decode(&d.body).expect("a CloudEvent");
            trigflow_core::cloudevents::AttributesReader::id(&ev).to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// Receives until `n` deliveries arrived or the deadline passed.
async fn receive_n(
    source: &dyn EventSource,
    n: usize,
    deadline: Duration,
) -> Vec<trigflow_core::seams::Delivery> {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < end {
        out.extend(
            source
                .receive(n - out.len(), Duration::from_millis(200))
                .await
                .expect("receive"),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_publishes_are_dropped_by_the_server() {
    let server = NatsServer::start().expect("start nats-server");
    let local = connect(&server).await;
    let sink = local.sink();
    let source = local.source();
    let a = event("e.1", "a");
    sink.publish(&[a.clone(), event("e.1", "b")])
        .await
        .expect("publish");
    sink.publish(&[a]).await.expect("publish again");
    let batch = receive_n(&source, 3, Duration::from_secs(2)).await;
    assert_eq!(ids_of(&batch), vec!["a", "b"]);
    assert!(batch.iter().all(|d| d.attempt == 1));
    source
        .ack(&batch.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
        .await
        .expect("ack");
    // Nothing comes back once acked.
    let again = source
        .receive(10, Duration::from_millis(300))
        .await
        .expect("receive");
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_delivery_comes_back_with_the_next_attempt() {
    let server = NatsServer::start().expect("start nats-server");
    let local = connect(&server).await;
    let source = local.source();
    local
        .sink()
        .publish(&[event("e1", "x")])
        .await
        .expect("publish");
    let first = receive_n(&source, 1, Duration::from_secs(2)).await;
    assert_eq!(first.len(), 1);
    let asked = Instant::now();
    source
        .retry(&[first[0].id.clone()], Duration::from_millis(300))
        .await
        .expect("nak");
    let second = receive_n(&source, 1, Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1);
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "the delay was not honoured"
    );
    assert_eq!(second[0].attempt, 2);
    assert_eq!(second[0].body, first[0].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_the_consumer_split_the_events() {
    let server = NatsServer::start().expect("start nats-server");
    let local = connect(&server).await;
    let other = connect(&server).await;
    let events: Vec<_> = (0..100).map(|i| event("e1", &format!("{i:03}"))).collect();
    local.sink().publish(&events).await.expect("publish");
    let (s1, s2) = (local.source(), other.source());
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while seen.len() < 100 && Instant::now() < end {
        for s in [&s1, &s2] {
            let b = s
                .receive(7, Duration::from_millis(100))
                .await
                .expect("receive");
            seen.extend(ids_of(&b));
            s.ack(&b.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
                .await
                .expect("ack");
        }
    }
    seen.sort();
    let expected: Vec<String> = (0..100).map(|i| format!("{i:03}")).collect();
    assert_eq!(
        seen, expected,
        "every event exactly once across the two workers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_when_due_even_after_the_scheduling_process_is_gone() {
    let server = NatsServer::start().expect("start nats-server");
    let fire_at = SystemClock.now_ms() + 1_500;
    {
        // The "first worker": schedules, runs one timer pass before the
        // timer is due, and goes away.
        let local = connect(&server).await;
        let sink = local.sink();
        sink.schedule(fire_at, &event("e1", "t1"))
            .await
            .expect("schedule");
        let fired = sink
            .timer_loop()
            .tick(16, Duration::from_millis(300))
            .await
            .expect("tick");
        assert_eq!(fired, 0, "fired before it was due");
    }
    let local = connect(&server).await;
    let source = local.source();
    let timers = local.sink().timer_loop();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let loop_task = tokio::spawn(async move {
        timers
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    let got = receive_n(&source, 1, Duration::from_secs(10)).await;
    let _ = stop.send(());
    loop_task.await.expect("timer loop");
    assert_eq!(ids_of(&got), vec!["t1"]);
    assert!(SystemClock.now_ms() >= fire_at, "delivered before its time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_stored_with_their_reason() {
    let server = NatsServer::start().expect("start nats-server");
    let local = connect(&server).await;
    let sink = local.sink();
    let letter = DeadLetter {
        message_id: "m1".into(),
        event_id: Some("x".into()),
        event_source: Some("test".into()),
        execution: Some("e.1".into()),
        reason: "unknown execution e.1\nsecond line".into(),
        body: "{}".into(),
        at_ms: 1,
    };
    sink.dead_letter(std::slice::from_ref(&letter))
        .await
        .expect("dead letter");
    assert_eq!(sink.dead_letters().await.expect("read"), vec![letter]);
    // The reason is also in a header, for tools that only see headers.
    let stream = local
        .jetstream()
        .get_stream(trigflow_local::names::DEAD_STREAM)
        .await
        .expect("dead-letter stream");
    let raw = stream.get_raw_message(1).await.expect("first dead letter");
    assert_eq!(raw.subject.as_str(), "trigflow.dead.e=2E1");
    let reason = raw
        .headers
        .get(trigflow_local::names::HEADER_REASON)
        .map(|v| v.as_str().to_owned());
    assert_eq!(reason.as_deref(), Some("unknown execution e.1 second line"));
}

/// More events and calls in one batch than async-nats keeps publish acks
/// in flight (5,000): every one is stored, none waits forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_larger_than_the_client_ack_window_are_published() {
    use trigflow_core::seams::Invoker as _;
    const N: usize = 12_000;
    let server = NatsServer::start().expect("start nats-server");
    let local = connect(&server).await;
    let events: Vec<_> = (0..N).map(|i| event("e.big", &i.to_string())).collect();
    tokio::time::timeout(Duration::from_secs(120), local.sink().publish(&events))
        .await
        .expect("publishing 12,000 events must not hang")
        .expect("publish");
    let calls: Vec<trigflow_core::state::Invocation> = (0..N)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "key": format!("e.big/work/{i}"),
                "execution": "e.big",
                "workflow": "w",
                "function": "nats:work",
                "input": i,
                "trigger": "work",
                "step": "work",
                "attempt": 1
            }))
            .expect("an invocation")
        })
        .collect();
    let results = tokio::time::timeout(
        Duration::from_secs(120),
        local.invoker().invoke_batch(&calls),
    )
    .await
    .expect("dispatching 12,000 calls must not hang");
    assert_eq!(results.len(), N);
    assert!(results.iter().all(Result::is_ok));
    for (stream, want) in [
        (trigflow_local::names::EVENTS_STREAM, N),
        (trigflow_local::names::CALLS_STREAM, N),
    ] {
        let info = local
            .jetstream()
            .get_stream(stream)
            .await
            .expect("stream")
            .info()
            .await
            .expect("info")
            .state
            .messages;
        assert_eq!(info, want as u64, "{stream}");
    }
}
