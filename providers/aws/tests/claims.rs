//! The claim check in AWS mode, on moto S3 + SQS + Lambda: the sink
//! publishes large event data as a reference, the invoker sends large
//! inputs as a reference, and the handler resolves references before the
//! engine sees them, so a workflow moving a large value runs as if it were
//! inline. A reference to a missing object is dead-lettered with the
//! reason. (The threshold is 1 KiB here instead of 200 KiB, to keep the
//! test's values small.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use serde_json::{Value, json};
use trigflow_aws::testing::MotoServer;
use trigflow_aws::{DynamoStore, LambdaInvoker, Orchestrator, SqsSink};
use trigflow_core::Engine;
use trigflow_core::claim::{ClaimCheck, REF_KEY};
use trigflow_core::cloudevents::Event;
use trigflow_core::seams::{DeadLetter, EventSink};
use trigflow_core::state::ExecutionStatus;
use trigflow_objstore::{S3Blobs, S3Settings};
use trigflow_worker::Worker;

const THRESHOLD: usize = 1024;

const EMPTY_ZIP: [u8; 22] = [
    0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

struct Aws {
    moto: MotoServer,
    sqs: aws_sdk_sqs::Client,
    lambda: aws_sdk_lambda::Client,
    queue: String,
    dlq: String,
    claims: ClaimCheck,
}

async fn setup() -> Aws {
    let moto = MotoServer::start().expect("moto server");
    moto.lambda_without_docker().expect("moto lambda config");
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let mut urls = Vec::new();
    for name in ["trigflow", "dead"] {
        urls.push(
            sqs.create_queue()
                .queue_name(name)
                .send()
                .await
                .expect("queue")
                .queue_url
                .expect("url"),
        );
    }
    let blobs = S3Blobs::new(
        S3Settings::new(moto.endpoint(), "trigflow-blobs").with_credentials("testing", "testing"),
    )
    .expect("S3 settings");
    blobs.ensure_bucket().await.expect("bucket");
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let role = moto.create_lambda_role("step").expect("role");
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
        .expect("function");
    let dlq = urls.pop().expect("dlq");
    let queue = urls.pop().expect("queue");
    Aws {
        moto,
        sqs,
        lambda,
        queue,
        dlq,
        claims: ClaimCheck::new(Arc::new(blobs), THRESHOLD),
    }
}

async fn receive(aws: &Aws, url: &str) -> Vec<(String, String)> {
    let out = aws
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    let mut got = Vec::new();
    for m in out.messages.unwrap_or_default() {
        aws.sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(m.receipt_handle.expect("receipt"))
            .send()
            .await
            .expect("delete");
        got.push((m.message_id.expect("id"), m.body.expect("body")));
    }
    got
}

fn sqs_event(messages: &[(String, String)]) -> Value {
    json!({"Records": messages.iter().map(|(id, body)| json!({
        "messageId": id, "receiptHandle": format!("r-{id}"), "body": body,
        "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
        "md5OfBody": "", "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:trigflow", "awsRegion": "us-east-1"
    })).collect::<Vec<_>>()})
}

fn big(n: usize) -> Value {
    json!({"text": "x".repeat(n), "n": n})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_event_data_travels_by_reference_through_sqs() {
    let aws = setup().await;
    let sink = SqsSink::new(aws.sqs.clone(), &aws.queue).with_claim_check(aws.claims.clone());
    let event = |id: &str, data: Value| -> Event {
        serde_json::from_value(json!({
            "specversion": "1.0", "id": id, "source": "test", "type": "user.event",
            "subject": "s", "trigflowexecution": "e1",
            "datacontenttype": "application/json", "data": data
        }))
        .expect("event")
    };
    let large = big(10 * THRESHOLD);
    sink.publish(&[
        event("small", json!({"a": 1})),
        event("large", large.clone()),
    ])
    .await
    .expect("publish");
    let mut bodies: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.len() < 2 {
        assert!(Instant::now() < deadline, "messages missing");
        for (_, body) in receive(&aws, &aws.queue).await {
            assert!(
                body.len() < 2 * THRESHOLD,
                "a message stays small: {}",
                body.len()
            );
            bodies.push(serde_json::from_str(&body).expect("JSON"));
        }
    }
    let small = bodies.iter().find(|b| b["id"] == "small").expect("small");
    assert_eq!(small["data"], json!({"a": 1}), "small data stays inline");
    let sent = bodies.iter().find(|b| b["id"] == "large").expect("large");
    let reference = &sent["data"][REF_KEY];
    assert!(
        reference["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("s3://trigflow-blobs/"))
    );
    assert_eq!(
        aws.claims
            .resolve(sent["data"].clone())
            .await
            .expect("resolve"),
        large
    );
    // The object holds exactly the data's JSON.
    let stored = aws
        .claims
        .store()
        .get(reference["uri"].as_str().expect("uri"))
        .await
        .expect("object");
    assert_eq!(
        serde_json::from_slice::<Value>(&stored).expect("JSON"),
        large
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_value_flows_through_a_workflow_as_if_inline() {
    let aws = setup().await;
    let sdk = aws.moto.sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "trigflow");
    store.create_table().await.expect("table");
    let sink = Arc::new(
        SqsSink::new(aws.sqs.clone(), &aws.queue)
            .with_dead_letter_queue(&aws.dlq)
            .with_claim_check(aws.claims.clone()),
    );
    let invoker = LambdaInvoker::new(aws.lambda.clone())
        .with_sync_sink(sink.clone())
        .with_claim_check(aws.claims.clone());
    let worker = Worker::new(
        Engine::new(),
        Arc::new(store),
        sink.clone(),
        Arc::new(invoker),
    );
    let orch = Orchestrator::new(worker.clone(), sink).with_claim_check(aws.claims.clone());
    let wf = trigflow_dag::load_str(
        "dag: carry\ntasks:\n  hello:\n    function: lambda+sync:echo\n    input: .input\noutput: '{n: .results.hello.input.n, same: (.results.hello.input == .input)}'\n",
        "carry.yaml",
        &trigflow_dag::LoadOptions::default(),
    )
    .expect("valid DAG")
    .workflow;
    let input = big(20 * THRESHOLD);
    orch.handle(json!({
        "action": "start",
        "workflow": serde_json::to_value(&wf).expect("encodes"),
        "input": input,
        "execution": "carry-1"
    }))
    .await
    .expect("start");

    // moto echoed the payload: the step's input went out as a reference,
    // so its result (the echo) carries one too, and the message is small.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut saw_reference = false;
    let state = loop {
        let messages = receive(&aws, &aws.queue).await;
        for (_, body) in &messages {
            assert!(
                body.len() < 4 * THRESHOLD,
                "a message stays small: {}",
                body.len()
            );
            saw_reference |= body.contains(REF_KEY);
        }
        if !messages.is_empty() {
            let answer = orch.handle(sqs_event(&messages)).await.expect("batch");
            assert_eq!(answer["batchItemFailures"], json!([]));
        }
        let state = worker
            .load(&"carry-1".parse().expect("id"))
            .await
            .expect("load")
            .expect("state");
        if state.status.is_terminal() {
            break state;
        }
        assert!(Instant::now() < deadline, "not finished");
    };
    assert!(saw_reference, "the large value travelled by reference");
    assert_eq!(
        state.status,
        ExecutionStatus::Succeeded {
            output: json!({"n": 20 * THRESHOLD, "same": true})
        }
    );
    // The workflow's context holds the value itself, never a reference.
    assert_eq!(state.context["results"]["hello"]["input"], input);

    // A reference to an object that does not exist: dead-lettered with
    // the reason, not retried forever.
    let dangling = json!({
        "specversion": "1.0", "id": "dangling", "source": "test", "type": "user.event",
        "subject": "s", "trigflowexecution": "carry-1", "datacontenttype": "application/json",
        "data": trigflow_core::claim::reference("s3://trigflow-blobs/blobs/sha256/00", 3, "00")
    });
    let answer = orch
        .handle(sqs_event(&[("m-dangling".into(), dangling.to_string())]))
        .await
        .expect("batch");
    assert_eq!(answer["batchItemFailures"], json!([]));
    let letters = receive(&aws, &aws.dlq).await;
    assert_eq!(letters.len(), 1);
    let letter: DeadLetter = serde_json::from_str(&letters[0].1).expect("dead letter");
    assert_eq!(letter.message_id, "m-dangling");
    assert_eq!(letter.event_id.as_deref(), Some("dangling"));
    assert!(letter.reason.contains("claim check"), "{}", letter.reason);
}

#[test]
fn the_s3_endpoint_follows_the_aws_environment() {
    use std::collections::HashMap;
    let endpoint = |vars: &[(&str, &str)]| {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        trigflow_aws::claims::s3_endpoint(|k| map.get(k).cloned())
    };
    assert_eq!(endpoint(&[]), "https://s3.us-east-1.amazonaws.com");
    assert_eq!(
        endpoint(&[("AWS_REGION", "eu-west-3")]),
        "https://s3.eu-west-3.amazonaws.com"
    );
    assert_eq!(
        endpoint(&[
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
        ]),
        "http://127.0.0.1:5000"
    );
    assert_eq!(
        endpoint(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
        ]),
        "http://127.0.0.1:9000"
    );
}
