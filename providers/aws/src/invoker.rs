//! The Lambda invoker: asynchronous `Invoke` (InvocationType `Event`).
//!
//! The payload is [`crate::events::invoke_payload`]: the step's input under
//! `input` and trigflow's fields (execution, step, key, index, attempt, ...)
//! under `trigflow`. The function's result comes back through its
//! `OnSuccess` / `OnFailure` destination (the orchestrator's queue), whose
//! record carries that payload, so [`crate::events`] can rebuild the
//! completion event. The idempotency key is the invocation key; a function
//! that must run at most once checks it.
//!
//! Function references: `lambda:NAME` (a name, ARN or `name:alias`) or a
//! full `arn:aws:lambda:...` ARN. Other references go to a fallback
//! invoker when one is set (e.g. HTTP or command functions), else fail.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use trigflow_core::seams::{InvokeError, Invoker};
use trigflow_core::state::Invocation;

use crate::events::invoke_payload;

/// Largest asynchronous invoke payload Lambda accepts.
pub const MAX_EVENT_PAYLOAD: usize = 256 * 1024;
/// Invokes in flight at once in a batch.
const CONCURRENCY: usize = 16;

/// Invokes Lambda functions asynchronously.
#[derive(Clone)]
pub struct LambdaInvoker {
    client: Client,
    fallback: Option<Arc<dyn Invoker>>,
}

impl std::fmt::Debug for LambdaInvoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaInvoker")
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

/// The Lambda function name or ARN a reference names, if it is a Lambda
/// reference.
pub fn lambda_target(function: &str) -> Option<&str> {
    if let Some(name) = function.strip_prefix("lambda:") {
        return (!name.is_empty()).then_some(name);
    }
    function.starts_with("arn:aws:lambda:").then_some(function)
}

impl LambdaInvoker {
    /// An invoker using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            fallback: None,
        }
    }

    /// Sends non-Lambda references to `fallback`.
    pub fn with_fallback(mut self, fallback: Arc<dyn Invoker>) -> Self {
        self.fallback = Some(fallback);
        self
    }
}

fn error(inv: &Invocation, message: String, retryable: bool) -> InvokeError {
    InvokeError {
        function: inv.function.clone(),
        key: inv.key.clone(),
        message,
        retryable,
    }
}

/// Lambda error codes after which the same invoke may succeed.
const RETRYABLE_CODES: &[&str] = &[
    "TooManyRequestsException",
    "ServiceException",
    "ResourceNotReadyException",
    "ResourceConflictException",
    "EC2ThrottledException",
    "ThrottlingException",
];

#[async_trait]
impl Invoker for LambdaInvoker {
    async fn invoke(&self, inv: &Invocation) -> Result<(), InvokeError> {
        let Some(target) = lambda_target(&inv.function) else {
            return match &self.fallback {
                Some(f) => f.invoke(inv).await,
                None => Err(error(
                    inv,
                    "not a Lambda reference (lambda:NAME or arn:aws:lambda:...) and no fallback invoker is configured".into(),
                    false,
                )),
            };
        };
        let payload = serde_json::to_vec(&invoke_payload(inv))
            .map_err(|e| error(inv, format!("payload: {e}"), false))?;
        if payload.len() > MAX_EVENT_PAYLOAD {
            return Err(error(
                inv,
                format!(
                    "payload of {} bytes is over Lambda's {MAX_EVENT_PAYLOAD}-byte limit for asynchronous invokes",
                    payload.len()
                ),
                false,
            ));
        }
        match self
            .client
            .invoke()
            .function_name(target)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let retryable = match &e {
                    SdkError::TimeoutError(_)
                    | SdkError::DispatchFailure(_)
                    | SdkError::ResponseError(_) => true,
                    SdkError::ServiceError(s) => {
                        s.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c))
                            || s.raw().status().is_server_error()
                    }
                    _ => false,
                };
                Err(error(
                    inv,
                    format!("Lambda Invoke {target}: {}", DisplayErrorContext(&e)),
                    retryable,
                ))
            }
        }
    }

    async fn invoke_batch(&self, invocations: &[Invocation]) -> Vec<Result<(), InvokeError>> {
        // Lambda has no batch invoke: run the calls concurrently, keeping
        // the results in order.
        let mut out = Vec::with_capacity(invocations.len());
        for chunk in invocations.chunks(CONCURRENCY) {
            out.extend(futures::future::join_all(chunk.iter().map(|inv| self.invoke(inv))).await);
        }
        out
    }
}
