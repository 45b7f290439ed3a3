//! The orchestrator Lambda (provided.al2023): SQS batches, destination
//! records, S3 / EventBridge events and direct `start` / `status` calls, all
//! through [`trigflow_aws::Orchestrator`].
//!
//! Environment: `TRIGFLOW_TABLE` (DynamoDB table), `TRIGFLOW_QUEUE_URL`
//! (the orchestrator's queue), optional `TRIGFLOW_DLQ_URL` (where dead
//! letters go, with their reason); the AWS SDK reads the rest (region,
//! credentials, `AWS_ENDPOINT_URL`).

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use trigflow_aws::{AwsSettings, DynamoStore, LambdaInvoker, Orchestrator, SqsSink};

fn env(name: &str) -> Result<String, lambda_runtime::Error> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .without_time()
        .init();
    let table = env("TRIGFLOW_TABLE")?;
    let queue = env("TRIGFLOW_QUEUE_URL")?;
    let sdk = AwsSettings::default().load().await;
    let mut sink = SqsSink::new(aws_sdk_sqs::Client::new(&sdk), queue);
    if let Ok(dlq) = std::env::var("TRIGFLOW_DLQ_URL") {
        sink = sink.with_dead_letter_queue(dlq);
    }
    let sink = Arc::new(sink);
    let worker = trigflow_worker::Worker::new(
        trigflow_core::Engine::new(),
        Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table)),
        sink.clone(),
        Arc::new(LambdaInvoker::new(aws_sdk_lambda::Client::new(&sdk))),
    );
    let orchestrator = Orchestrator::new(worker, sink);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let orchestrator = orchestrator.clone();
        async move {
            orchestrator
                .handle(event.payload)
                .await
                .map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
