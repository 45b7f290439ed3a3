//! The orchestrator Lambda (provided.al2023): SQS batches, destination
//! records, S3 / EventBridge events and direct `start` / `status` calls, all
//! through [`trigflow_aws::Orchestrator`].
//!
//! Environment: `TRIGFLOW_TABLE` (DynamoDB table), `TRIGFLOW_QUEUE_URL`
//! (the orchestrator's queue), optional `TRIGFLOW_DLQ_URL` (where dead
//! letters go, with their reason), optional `TRIGFLOW_RETENTION_DAYS` (how
//! long finished executions stay in the table, default 30), optional
//! `TRIGFLOW_SCHEDULER_ROLE_ARN` (turns on EventBridge Scheduler timers
//! beyond 15 minutes; then `TRIGFLOW_QUEUE_ARN` names their target),
//! optional `TRIGFLOW_BUCKET` (turns on the claim check: payloads above
//! 200 KiB go to this S3 bucket); the AWS SDK reads the rest (region,
//! credentials, `AWS_ENDPOINT_URL`).

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use trigflow_aws::scheduler::SchedulerTimers;
use trigflow_aws::{AwsSettings, DynamoStore, LambdaInvoker, Orchestrator, Retention, SqsSink};

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
    let retention =
        Retention::from_days_var(std::env::var("TRIGFLOW_RETENTION_DAYS").ok().as_deref())?;
    let sdk = AwsSettings::default().load().await;
    let mut sink = SqsSink::new(aws_sdk_sqs::Client::new(&sdk), queue);
    if let Ok(dlq) = std::env::var("TRIGFLOW_DLQ_URL") {
        sink = sink.with_dead_letter_queue(dlq);
    }
    if let Ok(role) = std::env::var("TRIGFLOW_SCHEDULER_ROLE_ARN")
        && !role.is_empty()
    {
        sink = sink.with_scheduler(SchedulerTimers::new(
            aws_sdk_scheduler::Client::new(&sdk),
            env("TRIGFLOW_QUEUE_ARN")?,
            role,
        ));
    }
    let claims = match std::env::var("TRIGFLOW_BUCKET") {
        Ok(bucket) if !bucket.is_empty() => Some(trigflow_aws::claims::s3_claim_check(
            &bucket,
            trigflow_aws::claims::DEFAULT_THRESHOLD,
        )?),
        _ => None,
    };
    let mut invoker = LambdaInvoker::new(aws_sdk_lambda::Client::new(&sdk));
    if let Some(c) = &claims {
        sink = sink.with_claim_check(c.clone());
        invoker = invoker.with_claim_check(c.clone());
    }
    let sink = Arc::new(sink);
    let worker = trigflow_worker::Worker::new(
        trigflow_core::Engine::new(),
        Arc::new(
            DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table).with_retention(retention),
        ),
        sink.clone(),
        Arc::new(invoker.with_sync_sink(sink.clone())),
    );
    let mut orchestrator = Orchestrator::new(worker, sink);
    if let Some(c) = claims {
        orchestrator = orchestrator.with_claim_check(c);
    }
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let orchestrator = orchestrator.clone();
        async move {
            orchestrator
                .handle(event.payload)
                .await
                .map_err(lambda_runtime::Diagnostic::from)
        }
    }))
    .await
}
