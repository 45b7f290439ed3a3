//! Talking to a deployed orchestrator from outside (the `trigflow` CLI's
//! `--aws` mode, scripts): start an execution through the orchestrator's
//! queue or by invoking its function, and read an execution's status from
//! the function or straight from the table.
//!
//! Both ways of starting send the same request the Lambda console test
//! event uses, `{"action": "start", "workflow", "input", "execution"}`:
//! invoked directly, the function answers with the status; sent to the
//! queue, the handler starts the execution when the message arrives (a
//! redelivered start finds the execution existing and is acked).

use aws_sdk_lambda::error::DisplayErrorContext;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::{Value, json};
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::seams::{StateStore, StoreError};
use trigflow_core::state::ExecutionState;

use crate::DynamoStore;
use crate::sqs::MAX_BATCH_BYTES;

/// A failure talking to the orchestrator's resources.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request does not fit in one SQS message.
    #[error(
        "start request for execution {execution} is {size} bytes, over SQS's {limit}-byte message limit; invoke the function instead"
    )]
    TooLarge {
        /// The execution.
        execution: String,
        /// The request size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// SQS refused or could not be reached.
    #[error("SQS SendMessage to {queue}: {message}")]
    Queue {
        /// The queue URL.
        queue: String,
        /// What failed.
        message: String,
    },
    /// Lambda refused the invoke or could not be reached.
    #[error("Lambda Invoke {function}: {message}")]
    Invoke {
        /// The function.
        function: String,
        /// What failed.
        message: String,
    },
    /// The function ran and failed (the handler's error).
    #[error("orchestrator {function} failed: {error}: {message}")]
    Function {
        /// The function.
        function: String,
        /// The error type the runtime reported.
        error: String,
        /// Its message.
        message: String,
    },
    /// The state table could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored state or an answer could not be decoded.
    #[error("{what}: {message}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The decode error.
        message: String,
    },
}

/// The start request (the direct-invocation JSON).
pub fn start_request(workflow: &Workflow, input: &Value, execution: &ExecutionId) -> Value {
    json!({
        "action": "start",
        "workflow": workflow,
        "input": input,
        "execution": execution.as_str(),
    })
}

/// Sends the start request to the orchestrator's queue. On a FIFO queue
/// the message goes to the execution's group, deduplicated on the
/// execution id.
pub async fn start_via_queue(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    workflow: &Workflow,
    input: &Value,
    execution: &ExecutionId,
) -> Result<(), ClientError> {
    let body = start_request(workflow, input, execution).to_string();
    if body.len() > MAX_BATCH_BYTES {
        return Err(ClientError::TooLarge {
            execution: execution.to_string(),
            size: body.len(),
            limit: MAX_BATCH_BYTES,
        });
    }
    let mut req = sqs.send_message().queue_url(queue_url).message_body(body);
    if queue_url.ends_with(".fifo") {
        req = req
            .message_group_id(execution.as_str())
            .message_deduplication_id(format!("start-{execution}"));
    }
    req.send().await.map_err(|e| ClientError::Queue {
        queue: queue_url.to_owned(),
        message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
    })?;
    Ok(())
}

/// Invokes the orchestrator function synchronously with `request` (a
/// `start` or `status` request) and returns its answer. A handler error
/// (`FunctionError`) is [`ClientError::Function`].
pub async fn invoke_orchestrator(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    request: &Value,
) -> Result<Value, ClientError> {
    let out = lambda
        .invoke()
        .function_name(function)
        .invocation_type(InvocationType::RequestResponse)
        .payload(Blob::new(request.to_string()))
        .send()
        .await
        .map_err(|e| ClientError::Invoke {
            function: function.to_owned(),
            message: DisplayErrorContext(&e).to_string(),
        })?;
    let payload = out.payload().map(|b| b.as_ref()).unwrap_or_default();
    let answer: Value = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(payload).map_err(|e| ClientError::Decode {
            what: format!("answer of {function}"),
            message: e.to_string(),
        })?
    };
    if let Some(kind) = out.function_error() {
        return Err(ClientError::Function {
            function: function.to_owned(),
            error: answer
                .get("errorType")
                .and_then(Value::as_str)
                .unwrap_or(kind)
                .to_owned(),
            message: answer
                .get("errorMessage")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| answer.to_string()),
        });
    }
    Ok(answer)
}

/// Reads execution states straight from the table: `only` one, or all
/// (a scan). `Ok` with an empty list when `only` does not exist.
pub async fn read_states(
    dynamo: &aws_sdk_dynamodb::Client,
    table: &str,
    only: Option<&ExecutionId>,
) -> Result<Vec<ExecutionState>, ClientError> {
    let store = DynamoStore::new(dynamo.clone(), table);
    let prefix = trigflow_worker::WorkerConfig::default().key_prefix;
    let keys = match only {
        Some(e) => vec![format!("{prefix}{e}")],
        None => store.list(&prefix).await?,
    };
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let Some(stored) = store.get(&key).await? else {
            continue;
        };
        out.push(
            ExecutionState::from_bytes(&stored.value).map_err(|e| ClientError::Decode {
                what: format!("state {key} in table {table}"),
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}
