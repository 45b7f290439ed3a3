//! # trigflow-aws
//!
//! trigflow's AWS serverless mode: the orchestrator as a Lambda fed by an
//! SQS queue, its state in DynamoDB, steps as Lambda functions whose
//! results come back through Lambda destinations to the queue.
//!
//! - [`DynamoStore`]: the state store, conditional writes on a version
//!   attribute, large values chunked in one transaction; finished
//!   executions expire through the table's TTL ([`Retention`]).
//! - [`SqsSource`] / [`SqsSink`]: event source and sink on SQS (timers by
//!   message delay, beyond 15 minutes hop by hop or, optionally, as
//!   EventBridge Scheduler one-time schedules: [`scheduler`]).
//! - [`LambdaInvoker`]: asynchronous Lambda invokes carrying trigflow's
//!   invocation fields and idempotency key; synchronous ones for
//!   `lambda+sync:NAME` steps.
//! - [`events`]: adapters from SQS bodies, Lambda destination records, S3
//!   notifications and EventBridge events to CloudEvents.
//! - [`claims`]: the claim check (payloads above 200 KiB through S3).
//! - [`client`]: start executions (through the queue or the function) and
//!   read their status from outside, as `trigflow start --aws` does.
//! - [`Orchestrator`]: the Lambda handler (SQS partial batch responses,
//!   direct `start` / `status` invocations); the `trigflow-orchestrator`
//!   binary runs it under `lambda_runtime`.
//!
//! Features: `testing` adds `testing::MotoServer`, a real moto server on
//! a free loopback port for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let sdk = trigflow_aws::AwsSettings::default().load().await;
//! let store = trigflow_aws::DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), "trigflow");
//! let sink = Arc::new(trigflow_aws::SqsSink::new(aws_sdk_sqs::Client::new(&sdk), "https://sqs..."));
//! let invoker = trigflow_aws::LambdaInvoker::new(aws_sdk_lambda::Client::new(&sdk));
//! let worker = trigflow_worker::Worker::new(
//!     trigflow_core::Engine::new(), Arc::new(store), sink.clone(), Arc::new(invoker));
//! let orchestrator = trigflow_aws::Orchestrator::new(worker, sink);
//! let answer = orchestrator.handle(serde_json::json!({"action": "status", "execution": "e1"})).await;
//! # Ok(()) }
//! ```

pub mod claims;
pub mod client;
pub mod config;
pub mod events;
pub mod handler;
pub mod invoker;
pub mod retention;
pub mod scheduler;
pub mod sqs;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::AwsSettings;
pub use handler::{HandlerError, Orchestrator};
pub use invoker::LambdaInvoker;
pub use retention::Retention;
pub use sqs::{SqsSink, SqsSource};
pub use store::DynamoStore;
