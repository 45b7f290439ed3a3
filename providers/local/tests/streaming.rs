//! Data-ready events and overlapping execution in local mode, against a
//! real nats-server and a real SeaweedFS (standing in for MinIO):
//!
//! - a producer writes parts while it runs ([`Parts`]) and the consumer of
//!   each part starts before the producer has finished: the producer
//!   blocks after part 0 until the consumer of part 0 has run, so a run
//!   that did not overlap would deadlock (and time out);
//! - MinIO bucket notifications become the same data-ready events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use trigflow_core::Engine;
use trigflow_core::claim::{ClaimCheck, DEFAULT_THRESHOLD};
use trigflow_core::cloudevents::AttributesReader as _;
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::state::{ExecutionState, ExecutionStatus, FunctionError};
use trigflow_local::data::{MINIO_SUBJECT, MinioBridge, from_s3_notification};
use trigflow_local::names::EVENTS_SUBJECT;
use trigflow_local::testing::NatsServer;
use trigflow_local::{Agent, Local, LocalConfig, PartError, Parts};
use trigflow_objstore::testing::SeaweedServer;
use trigflow_worker::Worker;

const PARTS: u64 = 5;

fn workflow() -> Workflow {
    serde_norway::from_str(include_str!(
        "../../../examples/streaming-parts/workflow.yaml"
    ))
    .expect("the example is a valid trigger set")
}

/// The content of part `i`, and what `consume` makes of it.
fn part(i: u64) -> Value {
    json!({"index": i, "values": (0..1000).map(|k| k * (i + 1)).collect::<Vec<u64>>()})
}

fn part_sum(i: u64) -> u64 {
    (0..1000).map(|k| k * (i + 1)).sum()
}

fn bad(cause: String) -> FunctionError {
    FunctionError {
        error: "BadInput".into(),
        cause,
    }
}

async fn wait_finished(observer: &Worker, exec: &ExecutionId) -> ExecutionState {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(state)) = observer.load(exec).await
            && state.status.is_terminal()
        {
            return state;
        }
        assert!(Instant::now() < end, "execution {exec} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn worker_on(local: &Local) -> Worker {
    Worker::new(
        Engine::new(),
        Arc::new(local.store()),
        Arc::new(local.sink()),
        Arc::new(local.invoker()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_start_on_parts_before_the_producer_finishes() {
    let nats = NatsServer::start().expect("start nats-server");
    let weed = SeaweedServer::start().expect("start weed");
    let claims = ClaimCheck::new(
        Arc::new(weed.blobs("parts").await.expect("bucket")),
        DEFAULT_THRESHOLD,
    );
    let config = LocalConfig {
        ack_wait: Duration::from_secs(10),
        call_ack_wait: Duration::from_secs(10),
        ..LocalConfig::with_url(nats.url())
    };
    let connect = || {
        let (config, claims) = (config.clone(), claims.clone());
        async move {
            Local::connect(config)
                .await
                .expect("connect")
                .with_claims(claims)
        }
    };

    // The consumer reports each part index it has finished; the producer
    // waits for part 0's report before writing the rest.
    let (done_tx, done_rx) = watch::channel(Vec::<u64>::new());
    let done_tx = Arc::new(done_tx);
    let (finished_tx, finished_rx) = watch::channel(false);
    let finished_tx = Arc::new(finished_tx);

    let worker_local = connect().await;
    let worker = tokio::spawn(async move {
        worker_on(&worker_local)
            .run(&worker_local.source(), 64, std::future::pending(), |_| {})
            .await;
    });
    let producer_local = connect().await;
    let producer = tokio::spawn(async move {
        let agent = Agent::new(&producer_local).serve_with_parts(
            "nats:produce",
            move |inv, parts: Parts| {
                let mut done = done_rx.clone();
                let finished = finished_tx.clone();
                async move {
                    let n = inv.input["parts"].as_u64().ok_or_else(|| {
                        bad(format!("produce wants {{parts}}, got {}", inv.input))
                    })?;
                    let put = |i: u64| {
                        let parts = parts.clone();
                        async move {
                            let bytes = serde_json::to_vec(&part(i)).unwrap_or_default();
                            parts
                                .put(&format!("produce/part-{i:04}"), bytes)
                                .await
                                .map_err(|e: PartError| bad(e.to_string()))
                        }
                    };
                    put(0).await?;
                    // Part 0 must be consumed while this call is running.
                    tokio::time::timeout(
                        Duration::from_secs(60),
                        done.wait_for(|d| d.contains(&0)),
                    )
                    .await
                    .map_err(|_| bad("part 0 was not consumed while producing".into()))?
                    .map_err(|e| bad(e.to_string()))?;
                    for i in 1..n {
                        put(i).await?;
                    }
                    finished.send_replace(true);
                    Ok(json!({"parts": n}))
                }
            },
        );
        agent
            .run(std::future::pending())
            .await
            .expect("producer agent");
    });
    let consumer_local = connect().await;
    let consumer = tokio::spawn(async move {
        let agent = Agent::new(&consumer_local).serve("nats:consume", move |inv| {
            let done = done_tx.clone();
            let producer_finished = *finished_rx.borrow();
            async move {
                // The agent resolved the reference: this is the part's JSON.
                let data = &inv.input["data"];
                let index = data["index"]
                    .as_u64()
                    .ok_or_else(|| bad(format!("consume wants a part, got {}", inv.input)))?;
                let sum: u64 = data["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_u64).sum())
                    .unwrap_or_default();
                done.send_modify(|d| d.push(index));
                Ok(json!({
                    "part": inv.input["part"],
                    "index": index,
                    "sum": sum,
                    "producer_finished_at_start": producer_finished,
                }))
            }
        });
        agent
            .run(std::future::pending())
            .await
            .expect("consumer agent");
    });

    let client = connect().await;
    let observer = worker_on(&client);
    let exec: ExecutionId = "stream-1".parse().expect("id");
    observer
        .start(&workflow(), exec.clone(), json!({"parts": PARTS}))
        .await
        .expect("start");
    let state = wait_finished(&observer, &exec).await;
    let output = match &state.status {
        ExecutionStatus::Succeeded { output } => output.clone(),
        other => panic!("execution did not succeed: {other:?}"),
    };
    assert_eq!(output["produced"], json!({"parts": PARTS}));
    let parts = output["parts"].as_array().expect("parts list");
    assert_eq!(parts.len() as u64, PARTS, "{output}");
    for (i, p) in parts.iter().enumerate() {
        let i = i as u64;
        assert_eq!(p["part"], json!(format!("produce/part-{i:04}")));
        assert_eq!(p["index"], json!(i));
        assert_eq!(p["sum"], json!(part_sum(i)));
    }
    // Part 0 was consumed while the producer was still running.
    assert_eq!(parts[0]["producer_finished_at_start"], json!(false));
    // One consume per part, even though the trigger is persistent.
    let consumed = state
        .history
        .iter()
        .filter(|f| f.trigger.as_str() == "per-part")
        .count();
    assert_eq!(consumed as u64, PARTS);
    for task in [worker, producer, consumer] {
        task.abort();
    }
}

#[test]
fn a_minio_notification_becomes_the_expected_data_ready_event() {
    let body = include_bytes!("fixtures/minio-put.json");
    let expected: Value =
        serde_json::from_str(include_str!("fixtures/minio-put.expected.json")).expect("json");
    let events = from_s3_notification(body).expect("adapter");
    let got: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).expect("event json"))
        .collect();
    assert_eq!(Value::Array(got), expected);

    // Objects outside `trigflow/{execution}/` (claim-check blobs) and
    // removals announce nothing.
    let other = String::from_utf8_lossy(body).replace(
        "trigflow%2Fjob-42%2Fincoming%2Fscan+01.json",
        "blobs/sha256/ab",
    );
    assert!(
        from_s3_notification(other.as_bytes())
            .expect("adapter")
            .is_empty()
    );
    let removed =
        String::from_utf8_lossy(body).replace("ObjectCreated:Put", "ObjectRemoved:Delete");
    assert!(
        from_s3_notification(removed.as_bytes())
            .expect("adapter")
            .is_empty()
    );
    // A broken one names the JSON path.
    let broken = String::from_utf8_lossy(body).replace("\"name\": \"uploads\"", "\"name\": 7");
    let err = from_s3_notification(broken.as_bytes()).expect_err("bucket name is a number");
    assert_eq!(err.path, "Records[0].s3.bucket.name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_publishes_minio_notifications_to_the_execution() {
    let nats = NatsServer::start().expect("start nats-server");
    let local = Local::connect(LocalConfig::with_url(nats.url()))
        .await
        .expect("connect");
    let bridge = MinioBridge::new(&local);
    // MinIO publishes into the stream (jetstream on), bridge running or not.
    bridge.setup().await.expect("stream");
    let mut spy = local
        .client()
        .subscribe(format!("{EVENTS_SUBJECT}.>"))
        .await
        .expect("subscribe");
    local.client().flush().await.expect("flush");
    let body = include_bytes!("fixtures/minio-put.json").to_vec();
    local
        .jetstream()
        .publish(MINIO_SUBJECT, body.clone().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    // Not a notification: dead-lettered with the reason, not looping.
    local
        .jetstream()
        .publish(MINIO_SUBJECT, b"garbage".to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let run = tokio::spawn({
        let bridge = bridge.clone();
        async move {
            bridge
                .run(async move {
                    let _ = stop_rx.wait_for(|s| *s).await;
                })
                .await
        }
    });
    let m = tokio::time::timeout(Duration::from_secs(20), spy.next())
        .await
        .expect("an event within 20 s")
        .expect("subscription open");
    let event = trigflow_core::event::decode(&m.payload).expect("a CloudEvent");
    let expected = from_s3_notification(&body).expect("adapter");
    assert_eq!(event.id(), expected[0].id());
    assert_eq!(event.ty(), "trigflow.data.ready");
    assert_eq!(m.subject.as_str(), format!("{EVENTS_SUBJECT}.job-42"));
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let letters = local.sink().dead_letters().await.expect("dead letters");
        if let Some(l) = letters.first() {
            assert_eq!(l.body, "garbage");
            assert!(l.reason.contains("not JSON"), "{}", l.reason);
            break;
        }
        assert!(
            Instant::now() < end,
            "no dead letter for the bad notification"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send_replace(true);
    run.await.expect("join").expect("bridge ran");
}
