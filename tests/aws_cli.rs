//! AWS mode from the command line (`--features aws`), against a real moto
//! server: `trigflow start --aws --queue-url` puts the start request on the
//! orchestrator's queue; the orchestrator handler (in this test process,
//! fed from the queue as the SQS event source mapping would) starts the
//! execution and runs its synchronous Lambda step; `trigflow status --aws
//! --table` reads the result from DynamoDB. `start --aws --function`
//! invokes the orchestrator function directly: moto's Lambda echoes the
//! payload, so that test checks the request the function receives (the
//! real function answering it is providers/aws/tests/lambda_watch.rs).

use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use serde_json::{Value, json};
use trigflow_aws::testing::MotoServer;
use trigflow_aws::{DynamoStore, LambdaInvoker, Orchestrator, SqsSink};
use trigflow_core::Engine;
use trigflow_worker::Worker;

const DAG: &str = r#"
dag: greet
tasks:
  hello:
    function: lambda+sync:echo
    input: .input
output: '{greeting: ("Hello, " + .results.hello.input.name + "!")}'
"#;

/// The smallest valid zip archive: moto stores the code and never runs it.
const EMPTY_ZIP: [u8; 22] = [
    0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// `trigflow` with moto's endpoint and dummy credentials, and nothing
/// from the caller's AWS or trigflow environment.
fn trigflow(moto: &MotoServer) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trigflow"));
    for (var, _) in std::env::vars() {
        if var.starts_with("AWS_") || var.starts_with("TRIGFLOW_") {
            c.env_remove(var);
        }
    }
    c.env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_ENDPOINT_URL", moto.endpoint());
    c
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "trigflow failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

async fn echo_function(moto: &MotoServer, lambda: &aws_sdk_lambda::Client, name: &str) {
    moto.lambda_without_docker().expect("moto lambda config");
    let role = moto.create_lambda_role("trigflow").expect("role");
    lambda
        .create_function()
        .function_name(name)
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .handler("bootstrap")
        .role(role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new(EMPTY_ZIP.to_vec()))
                .build(),
        )
        .send()
        .await
        .expect("create function");
}

/// What the SQS event source mapping does: receive, hand the batch to the
/// handler, delete what it did not report as failed.
async fn deliver_once(orch: &Orchestrator, sqs: &aws_sdk_sqs::Client, queue: &str) -> usize {
    let out = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let messages = out.messages.unwrap_or_default();
    if messages.is_empty() {
        return 0;
    }
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id, "receiptHandle": m.receipt_handle,
                "body": m.body, "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {}, "md5OfBody": m.md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:trigflow",
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    let answer = orch
        .handle(json!({ "Records": records }))
        .await
        .expect("batch");
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    for m in &messages {
        sqs.delete_message()
            .queue_url(queue)
            .receipt_handle(m.receipt_handle.clone().expect("receipt"))
            .send()
            .await
            .expect("delete");
    }
    messages.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_through_the_queue_and_read_the_status_from_the_table() {
    let moto = MotoServer::start().expect("moto server");
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    echo_function(&moto, &lambda, "echo").await;
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
    let worker = Worker::new(
        Engine::new(),
        Arc::new(store),
        sink.clone(),
        Arc::new(LambdaInvoker::new(lambda).with_sync_sink(sink.clone())),
    );
    let orch = Orchestrator::new(worker.clone(), sink);

    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join("greet.yaml");
    std::fs::write(&wf, DAG).expect("workflow file");

    let out = trigflow(&moto)
        .args([
            "start",
            "--aws",
            "--queue-url",
            &queue,
            "--execution",
            "cli-1",
        ])
        .arg(&wf)
        .args(["--input", r#"{"name": "Ada"}"#])
        .output()
        .expect("run trigflow");
    assert_eq!(ok(out).trim(), "cli-1");

    // The same request again (a user retrying): the execution starts once.
    ok(trigflow(&moto)
        .args([
            "start",
            "--aws",
            "--queue-url",
            &queue,
            "--execution",
            "cli-1",
        ])
        .arg(&wf)
        .args(["--input", r#"{"name": "Ada"}"#])
        .output()
        .expect("run trigflow"));

    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        deliver_once(&orch, &sqs, &queue).await;
        if let Some(state) = worker
            .load(&"cli-1".parse().expect("id"))
            .await
            .expect("load")
            && state.status.is_terminal()
        {
            break state;
        }
        assert!(Instant::now() < deadline, "cli-1 did not finish");
    };
    assert_eq!(
        state.status,
        trigflow_core::state::ExecutionStatus::Succeeded {
            output: json!({"greeting": "Hello, Ada!"})
        }
    );
    // Both start messages consumed, no dead letter, one start event.
    while deliver_once(&orch, &sqs, &queue).await > 0 {}
    let again = worker
        .load(&"cli-1".parse().expect("id"))
        .await
        .expect("load")
        .expect("state");
    assert_eq!(again.events_applied, state.events_applied);

    // status --aws --table: one execution in full, as in the other modes.
    let shown: Value = serde_json::from_str(&ok(trigflow(&moto)
        .args(["status", "--aws", "--table", "trigflow", "cli-1"])
        .output()
        .expect("run trigflow")))
    .expect("status JSON");
    assert_eq!(shown["execution"], "cli-1");
    assert_eq!(shown["workflow"], "greet");
    assert_eq!(shown["status"]["status"], "succeeded", "{shown}");
    assert_eq!(
        shown["status"]["output"],
        json!({"greeting": "Hello, Ada!"})
    );
    // ... and the table of all executions.
    let table = ok(trigflow(&moto)
        .args(["status", "--aws", "--table", "trigflow"])
        .output()
        .expect("run trigflow"));
    let row = table
        .lines()
        .find(|l| l.starts_with("cli-1 "))
        .unwrap_or_else(|| panic!("no row for cli-1 in\n{table}"));
    assert!(row.contains("greet") && row.contains("succeeded"), "{row}");
    // An execution the table does not have.
    let missing = trigflow(&moto)
        .args(["status", "--aws", "--table", "trigflow", "nope"])
        .output()
        .expect("run trigflow");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no execution nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_by_invoking_the_orchestrator_function() {
    let moto = MotoServer::start().expect("moto server");
    let lambda = aws_sdk_lambda::Client::new(&moto.sdk_config().await);
    echo_function(&moto, &lambda, "trigflow-orchestrator").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = dir.path().join("greet.yaml");
    std::fs::write(&wf, DAG).expect("workflow file");

    let answer: Value = serde_json::from_str(&ok(trigflow(&moto)
        .args(["start", "--aws", "--function", "trigflow-orchestrator"])
        .args(["--execution", "cli-2", "--input", r#"{"name": "Bo"}"#])
        .arg(&wf)
        .output()
        .expect("run trigflow")))
    .expect("the function's answer is JSON");
    // moto echoes the request: exactly what the handler's `start` reads.
    assert_eq!(answer["action"], "start");
    assert_eq!(answer["execution"], "cli-2");
    assert_eq!(answer["input"], json!({"name": "Bo"}));
    let wf: trigflow_core::model::Workflow =
        serde_json::from_value(answer["workflow"].clone()).expect("a trigger set");
    assert_eq!(wf.id.as_str(), "greet");

    // Neither a queue nor a function: a clear refusal.
    let out = trigflow(&moto)
        .args(["start", "--aws"])
        .arg(dir.path().join("greet.yaml"))
        .output()
        .expect("run trigflow");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--queue-url"));
}
