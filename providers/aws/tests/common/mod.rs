//! The moto harness shared by the end-to-end tests: an [`Invoker`] that
//! plays the Lambda service (runs the step in the test, then sends the
//! documented destination record to the orchestrator's queue), and a
//! consumer that plays the SQS event source mapping (receive up to 10,
//! invoke the handler with the SQS event, delete what succeeded, make the
//! reported failures visible again).
//!
//! Lambda destinations cannot be emulated on moto, hence the first; moto
//! does not run event source mappings, hence the second.

// Each test file uses the part it needs.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{Value, json};
use trigflow_aws::Orchestrator;
use trigflow_core::seams::{InvokeError, Invoker};
use trigflow_core::state::Invocation;

/// A step: the function's result, or `(errorType, errorMessage)`.
pub type Step = Arc<dyn Fn(&Invocation) -> Result<Value, (String, String)> + Send + Sync>;

/// Plays the Lambda service: runs the step, then delivers the invocation
/// record to the destination queue `copies` times (at-least-once).
pub struct PlaysLambda {
    sqs: aws_sdk_sqs::Client,
    queue: String,
    step: Step,
    copies: usize,
    /// Dispatches (the same invocation may be dispatched more than once).
    pub calls: AtomicU64,
    /// The distinct idempotency keys dispatched.
    pub keys: Mutex<HashSet<String>>,
}

impl PlaysLambda {
    /// Runs `step` for every invocation and sends its record `copies`
    /// times to `queue`.
    pub fn new(sqs: aws_sdk_sqs::Client, queue: &str, copies: usize, step: Step) -> Self {
        Self {
            sqs,
            queue: queue.to_owned(),
            step,
            copies,
            calls: AtomicU64::new(0),
            keys: Mutex::default(),
        }
    }
}

/// The destination record Lambda sends after an asynchronous invoke, in
/// the documented format (OnSuccess, or OnFailure after the retries).
pub fn destination_record(inv: &Invocation, result: Result<Value, (String, String)>) -> Value {
    let request_payload = trigflow_aws::events::invoke_payload(inv);
    let arn = if inv.function.starts_with("arn:") {
        format!("{}:$LATEST", inv.function)
    } else {
        let name = inv.function.trim_start_matches("lambda:");
        format!("arn:aws:lambda:us-east-1:123456789012:function:{name}:$LATEST")
    };
    match result {
        Ok(result) => json!({
            "version": "1.0",
            "timestamp": "2019-11-24T23:08:25.651Z",
            "requestContext": {
                "requestId": uuid::Uuid::new_v4().to_string(),
                "functionArn": arn,
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
                "functionArn": arn,
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": request_payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": error_type, "errorMessage": message}
        }),
    }
}

#[async_trait]
impl Invoker for PlaysLambda {
    async fn invoke(&self, inv: &Invocation) -> Result<(), InvokeError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.keys.lock().expect("lock").insert(inv.key.clone());
        let record = destination_record(inv, (self.step)(inv));
        for _ in 0..self.copies {
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

/// One consumer, until `done`: what the SQS event source mapping does for
/// a Lambda function. Counts the reported batch-item failures.
pub async fn consume(
    orch: Orchestrator,
    sqs: aws_sdk_sqs::Client,
    queue: String,
    done: Arc<AtomicBool>,
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

/// Consumers running until the returned guard is stopped.
pub struct Consumers {
    done: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Batch-item failures reported so far.
    pub failures: Arc<AtomicU64>,
}

impl Consumers {
    /// Starts `n` consumers of `queue` feeding `orch`.
    pub fn start(n: usize, orch: &Orchestrator, sqs: &aws_sdk_sqs::Client, queue: &str) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|_| {
                tokio::spawn(consume(
                    orch.clone(),
                    sqs.clone(),
                    queue.to_owned(),
                    done.clone(),
                    failures.clone(),
                ))
            })
            .collect();
        Self {
            done,
            tasks,
            failures,
        }
    }

    /// Stops them and waits until they have.
    pub async fn stop(self) {
        self.done.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("consumer");
        }
    }
}
