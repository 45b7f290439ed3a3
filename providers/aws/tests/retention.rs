//! Finished executions expire: on moto, every DynamoDB item of an execution
//! that has finished (its state head, the chunks of a large state, its
//! seen-set segments) carries the table's TTL attribute, and no item of a
//! running execution does. Read back from the table itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use trigflow_aws::retention::{RetentionError, TTL_ATTRIBUTE};
use trigflow_aws::testing::MotoServer;
use trigflow_aws::{DynamoStore, Retention};
use trigflow_core::Engine;
use trigflow_core::cloudevents::Event;
use trigflow_core::seams::{
    DeadLetter, Delivery, EventSink, InvokeError, Invoker, SinkError, StateStore,
};
use trigflow_core::state::{ExecutionStatus, FunctionError, Invocation};
use trigflow_worker::{Worker, WorkerConfig};

/// The retention clock: a fixed instant (ms), so the expected TTL is exact.
const NOW_MS: i64 = 1_800_000_000_123;
const DAYS: u64 = 7;

fn fixed_clock() -> i64 {
    NOW_MS
}

const DAG: &str = r#"
dag: squares
tasks:
  split:
    function: lambda:split
    input: .input.n
  square:
    function: lambda:square
    depends: [split]
    foreach: .results.split
  sum:
    function: lambda:sum
    depends: [square]
output: .results.sum
"#;

/// Records invocations; the test delivers their results itself.
#[derive(Default)]
struct Calls(Mutex<Vec<Invocation>>);

#[async_trait]
impl Invoker for Calls {
    async fn invoke(&self, inv: &Invocation) -> Result<(), InvokeError> {
        self.0.lock().expect("lock").push(inv.clone());
        Ok(())
    }
}

/// Keeps published events for the test to deliver.
#[derive(Default)]
struct Published(Mutex<Vec<Event>>);

#[async_trait]
impl EventSink for Published {
    async fn publish(&self, events: &[Event]) -> Result<(), SinkError> {
        self.0.lock().expect("lock").extend_from_slice(events);
        Ok(())
    }
    async fn schedule(&self, _: i64, e: &Event) -> Result<(), SinkError> {
        panic!("this workflow sets no timer: {e:?}")
    }
    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        panic!("unexpected dead letters: {letters:?}")
    }
}

fn result_of(inv: &Invocation) -> Result<Value, FunctionError> {
    match inv.function.as_str() {
        "lambda:split" => Ok(Value::from(
            (0..inv.input.as_u64().unwrap_or(0)).collect::<Vec<u64>>(),
        )),
        "lambda:square" => Ok(Value::from(inv.input.as_u64().unwrap_or(0).pow(2))),
        "lambda:sum" => Ok(Value::from(
            inv.input
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).sum::<u64>())
                .unwrap_or(0),
        )),
        other => Err(FunctionError {
            error: "Unknown".into(),
            cause: other.into(),
        }),
    }
}

/// Delivers the published events, then the results of the recorded calls
/// (of `execution`), `limit` at most; returns how many results it
/// delivered.
async fn deliver(
    worker: &Worker,
    sink: &Published,
    calls: &Calls,
    execution: &str,
    limit: usize,
) -> usize {
    loop {
        let events = std::mem::take(&mut *sink.0.lock().expect("lock"));
        if events.is_empty() {
            break;
        }
        let deliveries = events
            .iter()
            .enumerate()
            .map(|(i, e)| Delivery {
                id: format!("published-{i}"),
                body: serde_json::to_vec(e).expect("encodes"),
                attempt: 1,
            })
            .collect();
        let report = worker.process_batch(deliveries).await;
        assert!(
            report.retry.is_empty() && report.dead_lettered.is_empty(),
            "{report:?}"
        );
    }
    let pending: Vec<Invocation> = {
        let mut all = calls.0.lock().expect("lock");
        let (mine, rest): (Vec<_>, Vec<_>) = all
            .drain(..)
            .partition(|i| i.execution.as_str() == execution);
        let (now, later) = mine.split_at(limit.min(mine.len()));
        *all = rest.into_iter().chain(later.iter().cloned()).collect();
        now.to_vec()
    };
    let deliveries = pending
        .iter()
        .map(|inv| Delivery {
            id: inv.key.clone(),
            body: serde_json::to_vec(&inv.completion(result_of(inv)).expect("event"))
                .expect("encodes"),
            attempt: 1,
        })
        .collect::<Vec<_>>();
    let n = deliveries.len();
    let report = worker.process_batch(deliveries).await;
    assert!(report.retry.is_empty(), "{report:?}");
    assert!(report.dead_lettered.is_empty(), "{report:?}");
    n
}

/// Every item whose key names `execution`, with its TTL (if any).
async fn items_of(
    client: &aws_sdk_dynamodb::Client,
    execution: &str,
) -> HashMap<String, Option<i64>> {
    let out = client
        .scan()
        .table_name("trigflow")
        .consistent_read(true)
        .send()
        .await
        .expect("scan");
    assert!(out.last_evaluated_key.is_none(), "one page suffices here");
    out.items()
        .iter()
        .filter_map(|item| {
            let pk = item.get("pk")?.as_s().ok()?.clone();
            let of_execution = pk.starts_with(&format!("exec/{execution}\u{1f}"))
                || pk == format!("exec/{execution}")
                || pk.starts_with(&format!("seen/{execution}/"));
            of_execution.then(|| {
                let ttl = match item.get(TTL_ATTRIBUTE) {
                    Some(AttributeValue::N(n)) => Some(n.parse::<i64>().expect("numeric ttl")),
                    None => None,
                    Some(other) => panic!("{pk}: ttl is not a number: {other:?}"),
                };
                (pk, ttl)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_executions_carry_a_ttl_and_running_ones_none() {
    let moto = MotoServer::start().expect("moto server");
    let sdk = moto.sdk_config().await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    // Small segments and chunks, so that the executions below have both:
    // the TTL must reach every kind of item.
    let config = WorkerConfig {
        seen_segment_keys: 4,
        ..WorkerConfig::default()
    };
    let retention = Retention::days(DAYS)
        .for_worker(&config)
        .with_clock(fixed_clock);
    let store = DynamoStore::new(client.clone(), "trigflow")
        .with_chunk_size(1024)
        .with_retention(retention);
    store.create_table().await.expect("table");
    let store: Arc<dyn StateStore> = Arc::new(store);
    let calls = Arc::new(Calls::default());
    let sink = Arc::new(Published::default());
    let worker = Worker::new(Engine::new(), store, sink.clone(), calls.clone()).with_config(config);
    let wf = trigflow_dag::load_str(DAG, "squares.yaml", &trigflow_dag::LoadOptions::default())
        .expect("valid DAG")
        .workflow;

    worker
        .start(&wf, "done".parse().expect("id"), json!({"n": 12}))
        .await
        .expect("start");
    worker
        .start(&wf, "waiting".parse().expect("id"), json!({"n": 12}))
        .await
        .expect("start");

    // `waiting`: split and 10 of 12 squares, then it waits for the rest.
    assert_eq!(deliver(&worker, &sink, &calls, "waiting", 1).await, 1);
    assert_eq!(deliver(&worker, &sink, &calls, "waiting", 10).await, 10);
    // `done`: everything, one result per batch.
    let mut delivered = 0;
    while deliver(&worker, &sink, &calls, "done", 1).await == 1 {
        delivered += 1;
        assert!(delivered < 100, "runaway workflow");
    }
    let done = worker
        .load(&"done".parse().expect("id"))
        .await
        .expect("load")
        .expect("state");
    let expected: u64 = (0..12u64).map(|i| i * i).sum();
    assert_eq!(
        done.status,
        ExecutionStatus::Succeeded {
            output: json!(expected)
        }
    );
    assert!(
        !done.seen_segments.is_empty(),
        "the finished execution has segments"
    );
    let waiting = worker
        .load(&"waiting".parse().expect("id"))
        .await
        .expect("load")
        .expect("state");
    assert_eq!(waiting.status, ExecutionStatus::Running);
    assert!(!waiting.seen_segments.is_empty(), "the running one too");

    let expected_ttl = NOW_MS / 1000 + (DAYS * 86_400) as i64;
    let finished = items_of(&client, "done").await;
    assert!(finished.contains_key("exec/done"), "{finished:?}");
    assert!(
        finished.keys().any(|k| k.starts_with("exec/done\u{1f}")),
        "the finished state is chunked: {finished:?}"
    );
    for id in &done.seen_segments {
        assert!(
            finished.contains_key(&format!("seen/done/{id}")),
            "{finished:?}"
        );
    }
    for (pk, ttl) in &finished {
        assert_eq!(*ttl, Some(expected_ttl), "{pk}");
    }
    let running = items_of(&client, "waiting").await;
    assert!(running.len() >= 2, "{running:?}");
    for (pk, ttl) in &running {
        assert_eq!(*ttl, None, "{pk} of a running execution must not expire");
    }

    // The finished state still reads back whole (chunks + segments).
    let again = worker
        .load(&"done".parse().expect("id"))
        .await
        .expect("load")
        .expect("state");
    assert_eq!(again.status, done.status);
}

#[test]
fn retention_comes_from_the_environment_variable() {
    assert_eq!(
        Retention::from_days_var(None)
            .expect("default")
            .keep
            .as_secs(),
        30 * 86_400
    );
    assert_eq!(
        Retention::from_days_var(Some("90"))
            .expect("90")
            .keep
            .as_secs(),
        90 * 86_400
    );
    for bad in ["0", "-1", "thirty", "1.5"] {
        assert!(
            matches!(
                Retention::from_days_var(Some(bad)),
                Err(RetentionError::NotDays { .. })
            ),
            "{bad}"
        );
    }
    // Values that are not execution states, and running states, never
    // expire.
    let r = Retention::days(1);
    assert_eq!(r.expiry("exec/x", b"not json"), None);
    assert_eq!(
        r.expiry("other/x", br#"{"execution":"x","status":"succeeded"}"#),
        None
    );
    assert_eq!(
        r.expiry("exec/x", br#"{"execution":"x","status":"running"}"#),
        None
    );
    let e = r
        .expiry(
            "exec/x",
            br#"{"execution":"x","status":"failed","seen_segments":["a"]}"#,
        )
        .expect("a failed execution expires");
    assert_eq!(e.related, vec!["seen/x/a".to_owned()]);
}
