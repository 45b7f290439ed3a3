//! The state machine of runtime/asl/tests/cross_mode.rs (embedded and on
//! NATS there) in AWS mode: its Task resources are Lambda ARNs, used as
//! they are (no resource map), invoked asynchronously by the orchestrator
//! handler on moto, with results coming back as destination records to
//! the SQS queue (delivered twice each), the Retry's 1-second wait as an
//! SQS delay, state in DynamoDB. The output is the one worked out by hand
//! there, and the flaky pricer's first call for each order is retried.
//!
//! The document, input and expected output below are the same as in
//! cross_mode.rs; keep them in step. Like there, a second test runs the
//! machine with its Map distributed (each order a child execution).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trigflow_asl::{AslOptions, load_str_with};
use trigflow_aws::testing::MotoServer;
use trigflow_aws::{DynamoStore, Orchestrator, SqsSink};
use trigflow_core::Engine;
use trigflow_core::state::Invocation;
use trigflow_worker::Worker;

use common::{Consumers, PlaysLambda};

const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:";

/// The state machine, as a Step Functions user would write it (one
/// fixture shared by the embedded, NATS and AWS-mode tests).
fn document() -> Value {
    serde_json::from_str(include_str!(
        "../../../runtime/asl/tests/fixtures/cross_mode/machine.asl.json"
    ))
    .expect("fixture")
}

fn input() -> Value {
    serde_json::from_str(include_str!(
        "../../../runtime/asl/tests/fixtures/cross_mode/input.json"
    ))
    .expect("fixture")
}

/// What the specification prescribes for [`input`], worked out by hand:
/// each order gets its total (qty x price) and an action (ship when in
/// stock, else backorder), the summary is `[sum of totals, label]`, all
/// added to the input.
fn expected_output() -> Value {
    serde_json::from_str(include_str!(
        "../../../runtime/asl/tests/fixtures/cross_mode/expected.json"
    ))
    .expect("fixture")
}

fn bad(cause: String) -> (String, String) {
    ("BadInput".into(), cause)
}

/// The four functions, as the Lambda functions behind the ARNs would
/// answer. The pricer fails the first invocation of each order: that
/// invocation's key fails every time it is dispatched (a re-dispatch
/// after a crash is the same call), later keys succeed.
fn functions(flaked: Arc<Mutex<HashMap<String, String>>>) -> common::Step {
    Arc::new(move |inv: &Invocation| {
        let name = inv
            .function
            .strip_prefix(ARN)
            .ok_or_else(|| bad(format!("not one of the ARNs: {}", inv.function)))?;
        let input = &inv.input;
        match name {
            "validate" => {
                let orders = input["orders"]
                    .as_array()
                    .ok_or_else(|| bad(format!("validate wants orders, got {input}")))?;
                Ok(json!({"count": orders.len()}))
            }
            "price" => {
                let id = input["id"].as_str().unwrap_or_default().to_owned();
                let first_key = flaked
                    .lock()
                    .expect("flaked")
                    .entry(id.clone())
                    .or_insert_with(|| inv.key.clone())
                    .clone();
                if first_key == inv.key {
                    return Err(("Flaky".into(), format!("first attempt for {id}")));
                }
                let (Some(q), Some(p)) = (input["qty"].as_i64(), input["price"].as_i64()) else {
                    return Err(bad(format!("price wants qty and price, got {input}")));
                };
                let mut order = input.clone();
                order["total"] = json!(q * p);
                Ok(order)
            }
            "total" => {
                let items = input
                    .as_array()
                    .ok_or_else(|| bad(format!("total wants an array, got {input}")))?;
                Ok(json!(
                    items
                        .iter()
                        .filter_map(|o| o["total"].as_i64())
                        .sum::<i64>()
                ))
            }
            "label" => {
                let n = input["n"]
                    .as_i64()
                    .ok_or_else(|| bad(format!("label wants n, got {input}")))?;
                Ok(json!(format!("{n} orders")))
            }
            other => Err(("UnknownFunction".into(), other.into())),
        }
    })
}

/// Runs `doc` on moto through the handler to its end; returns the final
/// status answer, the distinct invocation keys, and the orders whose first
/// pricing call failed.
async fn run_on_aws(doc: Value, execution: &str) -> (Value, usize, Vec<String>) {
    // Task resources are used as they are: Lambda ARNs, which the Lambda
    // invoker takes directly.
    let opts = AslOptions {
        resources: BTreeMap::new(),
        name: Some("cross-mode".into()),
        ..AslOptions::default()
    };
    let wf = match load_str_with(&doc.to_string(), "cross_mode.asl.json", &opts) {
        Ok(l) => l.workflow,
        Err(e) => panic!("load failed:\n{e}"),
    };

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
        .expect("url");
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "trigflow");
    store.create_table().await.expect("table");
    let sink = Arc::new(SqsSink::new(sqs.clone(), &queue));
    let flaked = Arc::new(Mutex::new(HashMap::new()));
    let lambda = Arc::new(PlaysLambda::new(
        sqs.clone(),
        &queue,
        2,
        functions(flaked.clone()),
    ));
    let worker = Worker::new(Engine::new(), Arc::new(store), sink.clone(), lambda.clone());
    let orch = Orchestrator::new(worker, sink);

    let started = orch
        .handle(json!({
            "action": "start",
            "workflow": serde_json::to_value(&wf).expect("workflow encodes"),
            "input": input(),
            "execution": execution
        }))
        .await
        .expect("start");
    assert_eq!(started["status"], "running");
    let consumers = Consumers::start(2, &orch, &sqs, &queue);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = orch
            .handle(json!({"action": "status", "execution": execution}))
            .await
            .expect("status");
        if status["status"] != "running" {
            break status;
        }
        assert!(Instant::now() < deadline, "not finished in time: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    consumers.stop().await;
    let keys = lambda.keys.lock().expect("keys").len();
    let mut retried: Vec<String> = flaked.lock().expect("flaked").keys().cloned().collect();
    retried.sort();
    (status, keys, retried)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cross_mode_state_machine_gives_the_same_output_on_aws() {
    let (status, keys, retried) = run_on_aws(document(), "cross-aws").await;
    assert_eq!(status["status"], "succeeded", "{status}");
    assert_eq!(status["output"], expected_output());
    // validate + 3 orders x 2 pricing attempts + total + label, each a
    // distinct invocation; every order's first attempt failed and was
    // retried.
    assert_eq!(keys, 9);
    assert_eq!(retried, ["a", "b", "c"]);
}

/// The same machine with its Map distributed, as cross_mode.rs runs it
/// too: each order a child execution, started and reporting back through
/// the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_distributed_map_gives_the_same_output_on_aws() {
    let mut doc = document();
    doc["States"]["PerOrder"]["ItemProcessor"]["ProcessorConfig"] = json!({"Mode": "DISTRIBUTED"});
    let (status, keys, retried) = run_on_aws(doc, "cross-aws-distributed").await;
    assert_eq!(status["status"], "succeeded", "{status}");
    assert_eq!(status["output"], expected_output());
    assert_eq!(keys, 9);
    assert_eq!(retried, ["a", "b", "c"]);
}
