//! End to end against moto: a DAG with a 100-way map and a join runs
//! through the real handler ([`Orchestrator::handle`]) fed from an SQS
//! queue in batches of up to 10, with state in DynamoDB.
//!
//! Lambda destinations cannot be emulated here, so the test plays the
//! Lambda service (`common::PlaysLambda`): its invoker runs each step and
//! sends the invocation record, in the documented destination format, to
//! the queue (twice, to model at-least-once delivery). Three consumers
//! (`common::Consumers`) poll the queue concurrently, as parallel Lambda
//! instances would.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trigflow_aws::testing::MotoServer;
use trigflow_aws::{DynamoStore, Orchestrator, SqsSink};
use trigflow_core::Engine;
use trigflow_core::seams::Invoker;
use trigflow_core::state::{ExecutionStatus, Invocation};
use trigflow_worker::Worker;

use common::{Consumers, PlaysLambda};

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
    let lambda = Arc::new(PlaysLambda::new(sqs.clone(), &queue, 2, Arc::new(run_step)));
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

    let consumers = Consumers::start(3, &orch, &sqs, &queue);
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
    consumers.stop().await;

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
