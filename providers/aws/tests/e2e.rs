//! End to end against moto: a DAG with a 100-way map and a join runs
//! through the real handler ([`Orchestrator::handle`]) fed from an SQS
//! queue in batches of up to 10, with state in DynamoDB.
//!
//! Lambda destinations cannot be emulated here, so the test plays the
//! Lambda service: its invoker runs each step and sends the invocation
//! record, in the documented destination format, to the queue (twice, to
//! model at-least-once delivery). Three consumers poll the queue
//! concurrently, as parallel Lambda instances would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use trigflow_aws::testing::MotoServer;
use trigflow_aws::{DynamoStore, Orchestrator, SqsSink};
use trigflow_core::Engine;
use trigflow_core::seams::{InvokeError, Invoker};
use trigflow_core::state::{ExecutionStatus, Invocation};
use trigflow_worker::Worker;

const WIDTH: u64 = 100;

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
output: '{sum: .results.sum, count: (.results.square | length)}'
"#;

/// Plays the Lambda service: runs the step, then delivers the invocation
/// record to the destination queue (twice).
struct PlaysLambda {
    sqs: aws_sdk_sqs::Client,
    queue: String,
    calls: AtomicU64,
    keys: std::sync::Mutex<std::collections::HashSet<String>>,
}

fn run_step(inv: &Invocation) -> Result<Value, (String, String)> {
    let bad = |what: &str| ("BadInput".to_owned(), format!("{what}, got {}", inv.input));
    match inv.function.as_str() {
        "lambda:split" => {
            let n = inv
                .input
                .as_u64()
                .ok_or_else(|| bad("split wants a count"))?;
            Ok(Value::from((0..n).collect::<Vec<u64>>()))
        }
        "lambda:square" => {
            let x = inv
                .input
                .as_u64()
                .ok_or_else(|| bad("square wants a number"))?;
            Ok(Value::from(x * x))
        }
        "lambda:sum" => {
            let items = inv
                .input
                .as_array()
                .ok_or_else(|| bad("sum wants an array"))?;
            Ok(Value::from(
                items.iter().filter_map(Value::as_u64).sum::<u64>(),
            ))
        }
        other => Err(("UnknownFunction".into(), other.into())),
    }
}

#[async_trait]
impl Invoker for PlaysLambda {
    async fn invoke(&self, inv: &Invocation) -> Result<(), InvokeError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.keys.lock().expect("lock").insert(inv.key.clone());
        let request_payload = trigflow_aws::events::invoke_payload(inv);
        let record = match run_step(inv) {
            Ok(result) => json!({
                "version": "1.0",
                "timestamp": "2019-11-24T23:08:25.651Z",
                "requestContext": {
                    "requestId": uuid::Uuid::new_v4().to_string(),
                    "functionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{}:$LATEST", inv.function.trim_start_matches("lambda:")),
                    "condition": "Success",
                    "approximateInvokeCount": 1
                },
                "requestPayload": request_payload,
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
                "responsePayload": result
            }),
            Err((error_type, message)) => json!({
                "version": "1.0",
                "timestamp": "2019-11-24T23:08:25.651Z",
                "requestContext": {
                    "requestId": uuid::Uuid::new_v4().to_string(),
                    "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:x:$LATEST",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": 3
                },
                "requestPayload": request_payload,
                "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
                "responsePayload": {"errorType": error_type, "errorMessage": message}
            }),
        };
        for _ in 0..2 {
            self.sqs
                .send_message()
                .queue_url(&self.queue)
                .message_body(record.to_string())
                .send()
                .await
                .map_err(|e| InvokeError {
                    function: inv.function.clone(),
                    key: inv.key.clone(),
                    message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
                    retryable: true,
                })?;
        }
        Ok(())
    }
}

/// One consumer: what the SQS event source mapping does for a Lambda
/// function — receive up to 10, invoke the handler with the SQS event,
/// delete what succeeded, make the reported failures visible again.
async fn consume(
    orch: Orchestrator,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    done: Arc<std::sync::atomic::AtomicBool>,
    failures: Arc<AtomicU64>,
) {
    while !done.load(Ordering::Relaxed) {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                json!({
                    "messageId": m.message_id,
                    "receiptHandle": m.receipt_handle,
                    "body": m.body,
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body,
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:trigflow",
                    "awsRegion": "us-east-1"
                })
            })
            .collect();
        let answer = orch
            .handle(json!({ "Records": records }))
            .await
            .expect("an SQS batch never fails as a whole");
        let failed: Vec<&str> = answer["batchItemFailures"]
            .as_array()
            .expect("batchItemFailures")
            .iter()
            .filter_map(|f| f["itemIdentifier"].as_str())
            .collect();
        failures.fetch_add(failed.len() as u64, Ordering::Relaxed);
        for m in &messages {
            let (Some(id), Some(receipt)) = (&m.message_id, &m.receipt_handle) else {
                continue;
            };
            if failed.contains(&id.as_str()) {
                sqs.change_message_visibility()
                    .queue_url(&queue)
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .send()
                    .await
                    .expect("visibility");
            } else {
                sqs.delete_message()
                    .queue_url(&queue)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_of_100_and_join_through_the_handler_with_duplicates() {
    let moto = MotoServer::start().expect("moto server");
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name("trigflow")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "trigflow");
    store.create_table().await.expect("table");
    let sink = Arc::new(SqsSink::new(sqs.clone(), &queue));
    let lambda = Arc::new(PlaysLambda {
        sqs: sqs.clone(),
        queue: queue.clone(),
        calls: AtomicU64::new(0),
        keys: Default::default(),
    });
    let worker = Worker::new(Engine::new(), Arc::new(store), sink.clone(), lambda.clone());
    let orch = Orchestrator::new(worker.clone(), sink);

    let wf = trigflow_dag::load_str(DAG, "squares.yaml", &trigflow_dag::LoadOptions::default())
        .expect("valid DAG")
        .workflow;
    let started = orch
        .handle(json!({
            "action": "start",
            "workflow": serde_json::to_value(&wf).expect("workflow encodes"),
            "input": {"n": WIDTH},
            "execution": "squares-1"
        }))
        .await
        .expect("start");
    assert_eq!(started["execution"], "squares-1");
    assert_eq!(started["status"], "running");

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(consume(
                orch.clone(),
                sqs.clone(),
                queue.clone(),
                done.clone(),
                failures.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        let status = orch
            .handle(json!({"action": "status", "execution": "squares-1"}))
            .await
            .expect("status");
        if status["status"] != "running" {
            break status;
        }
        assert!(Instant::now() < deadline, "not finished in time: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    done.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.expect("consumer");
    }

    let expected_sum: u64 = (0..WIDTH).map(|i| i * i).sum();
    assert_eq!(status["status"], "succeeded", "{status}");
    assert_eq!(
        status["output"],
        json!({"sum": expected_sum, "count": WIDTH})
    );
    let state = worker
        .load(&"squares-1".parse().expect("id"))
        .await
        .expect("load")
        .expect("state");
    assert_eq!(
        state.status,
        ExecutionStatus::Succeeded {
            output: json!({"sum": expected_sum, "count": WIDTH})
        }
    );
    let fired = |t: &str| {
        state
            .history
            .iter()
            .filter(|f| f.trigger.as_str() == t)
            .count()
    };
    assert_eq!(fired("collect/square"), 1, "the map's join fired once");
    assert_eq!(fired("start/sum"), 1, "the join before `sum` fired once");
    // split + 100 squares + sum. A consumer that touches the execution
    // while another has written but not yet cleared its outbox dispatches
    // the same invocation again (same key): at-least-once dispatch, and
    // every record also arrived twice, yet each result counted once.
    assert_eq!(lambda.keys.lock().expect("lock").len() as u64, WIDTH + 2);
    assert!(lambda.calls.load(Ordering::Relaxed) >= WIDTH + 2);

    // The same as a fault-free, in-order, exactly-once run of the engine.
    let reference = trigflow_core::sim::run(
        &Engine::new(),
        &wf,
        json!({"n": WIDTH}),
        |inv| {
            run_step(inv)
                .map_err(|(error, cause)| trigflow_core::state::FunctionError { error, cause })
        },
        100_000,
    )
    .expect("reference run");
    assert_eq!(state.status, reference.state.status);
    assert_eq!(state.events_applied, reference.state.events_applied);
    let mut ours: Vec<&str> = state.history.iter().map(|f| f.trigger.as_str()).collect();
    let mut theirs: Vec<&str> = reference
        .state
        .history
        .iter()
        .map(|f| f.trigger.as_str())
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs, "the same firings as the fault-free run");
}

#[tokio::test]
async fn direct_invocations_report_malformed_input() {
    let moto = MotoServer::start().expect("moto server");
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "t");
    store.create_table().await.expect("table");
    let sink = Arc::new(SqsSink::new(sqs, "http://127.0.0.1:1/unused"));
    let worker = Worker::new(
        Engine::new(),
        Arc::new(store),
        sink.clone(),
        Arc::new(trigflow_aws::LambdaInvoker::new(
            aws_sdk_lambda::Client::new(&sdk),
        )),
    );
    let orch = Orchestrator::new(worker, sink);
    use trigflow_aws::HandlerError as H;
    let path_of = |r: Result<Value, H>| match r {
        Err(H::Malformed { path, .. }) => path,
        other => panic!("expected Malformed, got {other:?}"),
    };
    assert_eq!(path_of(orch.handle(json!([1])).await), "$");
    assert_eq!(path_of(orch.handle(json!({"action": 3})).await), "action");
    assert_eq!(
        path_of(orch.handle(json!({"action": "stop"})).await),
        "action"
    );
    assert_eq!(
        path_of(orch.handle(json!({"action": "start"})).await),
        "workflow"
    );
    assert_eq!(
        path_of(
            orch.handle(json!({"action": "start", "workflow": {"triggers": 5}}))
                .await
        ),
        "workflow"
    );
    assert_eq!(
        path_of(orch.handle(json!({"action": "status"})).await),
        "execution"
    );
    assert!(matches!(
        orch.handle(json!({"action": "status", "execution": "nope"})).await,
        Err(H::UnknownExecution(e)) if e == "nope"
    ));
    assert!(matches!(
        orch.handle(json!({"hello": "world"})).await,
        Err(H::Adapter(
            trigflow_aws::events::AdapterError::Unrecognised { .. }
        ))
    ));
}

#[tokio::test]
async fn lambda_invoker_sends_async_invokes_to_moto() {
    let moto = MotoServer::start().expect("moto server");
    moto.lambda_without_docker().expect("moto lambda config");
    let sdk = moto.sdk_config().await;
    let invoker = trigflow_aws::LambdaInvoker::new(aws_sdk_lambda::Client::new(&sdk));
    let inv = Invocation {
        key: "e1/1".into(),
        execution: "e1".parse().expect("id"),
        workflow: "w".parse().expect("id"),
        trigger: "t".parse().expect("id"),
        step: "s".into(),
        function: "lambda:echo".into(),
        input: json!({"x": 1}),
        index: None,
        attempt: 1,
    };
    invoker.invoke(&inv).await.expect("Event invoke accepted");
    let not_lambda = Invocation {
        function: "http://example.invalid/f".into(),
        ..inv
    };
    match invoker.invoke(&not_lambda).await {
        Err(e) => assert!(!e.retryable, "a reference no invoker serves is terminal"),
        Ok(()) => panic!("a non-Lambda reference without fallback must fail"),
    }
}
