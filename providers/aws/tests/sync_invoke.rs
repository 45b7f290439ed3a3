//! Synchronous Lambda steps (`lambda+sync:NAME`) on moto: `RequestResponse`
//! invokes whose answer is published to the orchestrator's queue as the
//! completion event, and a workflow that uses one runs to completion
//! through the handler. moto's Docker-less Lambda echoes the payload, or
//! answers what the test queued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use serde_json::{Value, json};
use trigflow_aws::invoker::sync_result;
use trigflow_aws::testing::MotoServer;
use trigflow_aws::{DynamoStore, LambdaInvoker, Orchestrator, SqsSink};
use trigflow_core::Engine;
use trigflow_core::seams::Invoker;
use trigflow_core::state::{FunctionError, Invocation};
use trigflow_worker::Worker;

/// The smallest valid zip archive (an empty one): moto stores the code and
/// never runs it without Docker.
const EMPTY_ZIP: [u8; 22] = [
    0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

struct Aws {
    moto: MotoServer,
    sqs: aws_sdk_sqs::Client,
    lambda: aws_sdk_lambda::Client,
    queue: String,
}

async fn setup() -> Aws {
    let moto = MotoServer::start().expect("moto server");
    moto.lambda_without_docker().expect("moto lambda config");
    let sdk = moto.sdk_config().await;
    let role = moto.create_lambda_role("trigflow-step").expect("role");
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    lambda
        .create_function()
        .function_name("echo")
        .runtime(aws_sdk_lambda::types::Runtime::Python312)
        .handler("index.handler")
        .role(role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new(EMPTY_ZIP.to_vec()))
                .build(),
        )
        .send()
        .await
        .expect("create function");
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name("trigflow")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    Aws {
        moto,
        sqs,
        lambda,
        queue,
    }
}

fn invocation(function: &str) -> Invocation {
    Invocation {
        key: "e1/1".into(),
        execution: "e1".parse().expect("id"),
        workflow: "w".parse().expect("id"),
        trigger: "t".parse().expect("id"),
        step: "greet".into(),
        function: function.into(),
        input: json!({"name": "Ada"}),
        index: None,
        attempt: 1,
    }
}

/// Receives one message body from the queue (deleting it).
async fn one_message(aws: &Aws) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = aws
            .sqs
            .receive_message()
            .queue_url(&aws.queue)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        if let Some(m) = out.messages.unwrap_or_default().into_iter().next() {
            aws.sqs
                .delete_message()
                .queue_url(&aws.queue)
                .receipt_handle(m.receipt_handle.expect("receipt"))
                .send()
                .await
                .expect("delete");
            return serde_json::from_str(&m.body.expect("body")).expect("JSON body");
        }
        assert!(Instant::now() < deadline, "no message on the queue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_invoke_publishes_the_response_as_the_completion_event() {
    let aws = setup().await;
    let sink = Arc::new(SqsSink::new(aws.sqs.clone(), &aws.queue));
    let invoker = LambdaInvoker::new(aws.lambda.clone()).with_sync_sink(sink);

    // moto echoes the request payload: the completion carries it.
    let inv = invocation("lambda+sync:echo");
    invoker.invoke(&inv).await.expect("sync invoke");
    let event = one_message(&aws).await;
    let expected = serde_json::to_value(
        inv.completion(Ok(trigflow_aws::events::invoke_payload(&inv)))
            .expect("event"),
    )
    .expect("encodes");
    assert_eq!(event, expected);
    assert_eq!(event["type"], "trigflow.function.succeeded");
    assert_eq!(event["id"], "e1/1");
    assert_eq!(event["subject"], "greet");
    assert_eq!(event["data"]["input"], json!({"name": "Ada"}));

    // What the function answers (queued in moto) is the result, by name or
    // ARN.
    aws.moto
        .lambda_results(&[r#"{"greeting": "Hello, Ada!"}"#])
        .expect("queue a result");
    let by_arn = invocation("lambda+sync:arn:aws:lambda:us-east-1:123456789012:function:echo");
    invoker.invoke(&by_arn).await.expect("sync invoke");
    let event = one_message(&aws).await;
    assert_eq!(event["data"], json!({"greeting": "Hello, Ada!"}));
    assert_eq!(event["source"], by_arn.result_source());

    // Without a sink for the result, a synchronous reference is refused.
    let no_sink = LambdaInvoker::new(aws.lambda.clone());
    let err = no_sink
        .invoke(&invocation("lambda+sync:echo"))
        .await
        .expect_err("no sink");
    assert!(!err.retryable);
    assert!(trigflow_aws::invoker::sync_target("lambda+sync:").is_none());
    assert!(trigflow_aws::invoker::lambda_target("lambda+sync:echo").is_none());
}

#[test]
fn function_errors_become_failed_results() {
    assert_eq!(sync_result(None, br#"{"a": 1}"#), Ok(json!({"a": 1})));
    assert_eq!(sync_result(None, b""), Ok(Value::Null));
    assert_eq!(sync_result(None, b"plain"), Ok(json!("plain")));
    assert_eq!(
        sync_result(
            Some("Unhandled"),
            br#"{"errorType": "ValueError", "errorMessage": "bad name"}"#
        ),
        Err(FunctionError {
            error: "ValueError".into(),
            cause: "bad name".into()
        })
    );
    let Err(e) = sync_result(Some("Unhandled"), b"") else {
        panic!("a FunctionError is a failure whatever the payload");
    };
    assert_eq!(e.error, "Unhandled");
}

/// A workflow whose step is synchronous runs to completion: start, then
/// the queue's messages go through the handler as the SQS event source
/// mapping would deliver them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_with_a_sync_step_completes_through_the_handler() {
    let aws = setup().await;
    let sdk = aws.moto.sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "trigflow");
    store.create_table().await.expect("table");
    let sink = Arc::new(SqsSink::new(aws.sqs.clone(), &aws.queue));
    let invoker = LambdaInvoker::new(aws.lambda.clone()).with_sync_sink(sink.clone());
    let worker = Worker::new(
        Engine::new(),
        Arc::new(store),
        sink.clone(),
        Arc::new(invoker),
    );
    let orch = Orchestrator::new(worker, sink);
    let wf = trigflow_dag::load_str(
        r#"
dag: greet
tasks:
  hello:
    function: lambda+sync:echo
    input: .input
output: .results.hello.input
"#,
        "greet.yaml",
        &trigflow_dag::LoadOptions::default(),
    )
    .expect("valid DAG")
    .workflow;
    let started = orch
        .handle(json!({
            "action": "start",
            "workflow": serde_json::to_value(&wf).expect("encodes"),
            "input": {"name": "Ada"},
            "execution": "greet-1"
        }))
        .await
        .expect("start");
    assert_eq!(started["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = orch
            .handle(json!({"action": "status", "execution": "greet-1"}))
            .await
            .expect("status");
        if status["status"] != "running" {
            assert_eq!(status["status"], "succeeded", "{status}");
            // moto echoed the payload; the workflow picked its input back out.
            assert_eq!(status["output"], json!({"name": "Ada"}));
            break;
        }
        assert!(Instant::now() < deadline, "not finished: {status}");
        let body = one_message(&aws).await;
        let answer = orch
            .handle(json!({"Records": [{
                "messageId": "m1",
                "receiptHandle": "r1",
                "body": body.to_string(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:trigflow",
                "awsRegion": "us-east-1"
            }]}))
            .await
            .expect("batch");
        assert_eq!(answer["batchItemFailures"], json!([]));
    }
}
