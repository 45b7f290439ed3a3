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
//!
//! Synchronous steps: `lambda+sync:NAME` (NAME as above, ARNs included)
//! invokes with InvocationType `RequestResponse` and waits for the
//! function. Its response becomes the completion event right away
//! (`function.succeeded` with the response as data, or `function.failed`
//! with `{error: errorType, cause: errorMessage}` when Lambda reports a
//! `FunctionError`), published through the sink given to
//! [`LambdaInvoker::with_sync_sink`] (the orchestrator's queue), so it
//! reaches the execution like any other event. Use it for short steps
//! whose functions have no destinations configured, or to call a function
//! that is not set up for trigflow: the orchestrator waits (and bills) for
//! the function's run, and the payload limit is 6 MB instead of 256 KiB.
//! If the call fails or its result cannot be published, the dispatch is
//! retried and the function may run again with the same idempotency key.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use serde_json::Value;
use trigflow_core::claim::ClaimCheck;
use trigflow_core::seams::{EventSink, InvokeError, Invoker};
use trigflow_core::state::{FunctionError, Invocation};

use crate::events::invoke_payload;

/// Largest asynchronous invoke payload Lambda accepts.
pub const MAX_EVENT_PAYLOAD: usize = 256 * 1024;
/// Largest synchronous (`RequestResponse`) invoke payload Lambda accepts.
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// Reference prefix of synchronous Lambda steps.
pub const SYNC_PREFIX: &str = "lambda+sync:";
/// Invokes in flight at once in a batch.
const CONCURRENCY: usize = 16;

/// Invokes Lambda functions asynchronously.
#[derive(Clone)]
pub struct LambdaInvoker {
    client: Client,
    fallback: Option<Arc<dyn Invoker>>,
    sync_sink: Option<Arc<dyn EventSink>>,
    claims: Option<ClaimCheck>,
}

impl std::fmt::Debug for LambdaInvoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaInvoker")
            .field("fallback", &self.fallback.is_some())
            .field("sync_sink", &self.sync_sink.is_some())
            .field("claims", &self.claims.is_some())
            .finish_non_exhaustive()
    }
}

/// The Lambda function name or ARN a reference names, if it is an
/// asynchronous Lambda reference (`lambda:NAME` or an ARN).
pub fn lambda_target(function: &str) -> Option<&str> {
    if let Some(name) = function.strip_prefix("lambda:") {
        return (!name.is_empty()).then_some(name);
    }
    function.starts_with("arn:aws:lambda:").then_some(function)
}

/// The Lambda function name or ARN of a synchronous reference
/// (`lambda+sync:NAME`).
pub fn sync_target(function: &str) -> Option<&str> {
    function
        .strip_prefix(SYNC_PREFIX)
        .filter(|name| !name.is_empty())
}

/// The step result a synchronous invoke's answer stands for: the response
/// payload (JSON; an empty payload is `null`, a non-JSON one a string), or,
/// when Lambda reports a `FunctionError`, the runtime's `{errorType,
/// errorMessage}` as the failure (the same mapping as a failure
/// destination record).
pub fn sync_result(function_error: Option<&str>, payload: &[u8]) -> Result<Value, FunctionError> {
    let response = if payload.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
    };
    let Some(kind) = function_error else {
        return Ok(response);
    };
    let error = response
        .get("errorType")
        .and_then(Value::as_str)
        .unwrap_or(kind)
        .to_owned();
    let cause = match response.get("errorMessage").and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => format!("Lambda reported FunctionError {kind}: {response}"),
    };
    Err(FunctionError { error, cause })
}

impl LambdaInvoker {
    /// An invoker using `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            fallback: None,
            sync_sink: None,
            claims: None,
        }
    }

    /// Inputs above the claim check's threshold are stored in S3 and the
    /// function receives the reference under `input` (see
    /// [`crate::claims`]).
    pub fn with_claim_check(mut self, claims: ClaimCheck) -> Self {
        self.claims = Some(claims);
        self
    }

    /// The payload for `inv`, its input offloaded when it is large.
    async fn payload(&self, inv: &Invocation) -> Result<Vec<u8>, InvokeError> {
        let payload = serde_json::to_vec(&invoke_payload(inv))
            .map_err(|e| error(inv, format!("payload: {e}"), false))?;
        let Some(claims) = &self.claims else {
            return Ok(payload);
        };
        if payload.len() <= claims.threshold() {
            return Ok(payload);
        }
        let input = claims.offload(inv.input.clone()).await.map_err(|e| {
            error(
                inv,
                format!("claim check of the input: {e}"),
                e.is_retryable(),
            )
        })?;
        let offloaded = Invocation {
            input,
            ..inv.clone()
        };
        serde_json::to_vec(&invoke_payload(&offloaded))
            .map_err(|e| error(inv, format!("payload: {e}"), false))
    }

    /// Where the results of synchronous steps (`lambda+sync:NAME`) are
    /// published: the orchestrator's own sink. Without one, synchronous
    /// references fail (terminally).
    pub fn with_sync_sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sync_sink = Some(sink);
        self
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

fn retryable<E: ProvideErrorMetadata>(
    e: &SdkError<E, aws_sdk_lambda::config::http::HttpResponse>,
) -> bool {
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            s.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c))
                || s.raw().status().is_server_error()
        }
        _ => false,
    }
}

impl LambdaInvoker {
    /// A `RequestResponse` invoke whose answer is published as the
    /// completion event.
    async fn invoke_sync(&self, inv: &Invocation, target: &str) -> Result<(), InvokeError> {
        let Some(sink) = &self.sync_sink else {
            return Err(error(
                inv,
                "synchronous Lambda reference but no sink for its result is configured (LambdaInvoker::with_sync_sink)".into(),
                false,
            ));
        };
        let payload = self.payload(inv).await?;
        if payload.len() > MAX_SYNC_PAYLOAD {
            return Err(error(
                inv,
                format!(
                    "payload of {} bytes is over Lambda's {MAX_SYNC_PAYLOAD}-byte limit for synchronous invokes",
                    payload.len()
                ),
                false,
            ));
        }
        let out = self
            .client
            .invoke()
            .function_name(target)
            .invocation_type(InvocationType::RequestResponse)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| {
                error(
                    inv,
                    format!(
                        "Lambda Invoke {target} (RequestResponse): {}",
                        DisplayErrorContext(&e)
                    ),
                    retryable(&e),
                )
            })?;
        let result = sync_result(
            out.function_error(),
            out.payload().map(|b| b.as_ref()).unwrap_or_default(),
        );
        let event = inv
            .completion(result)
            .map_err(|e| error(inv, format!("completion event: {e}"), false))?;
        sink.publish(std::slice::from_ref(&event))
            .await
            .map_err(|e| {
                error(
                    inv,
                    format!("publishing the result of {target}: {e}"),
                    e.retryable,
                )
            })
    }
}

#[async_trait]
impl Invoker for LambdaInvoker {
    async fn invoke(&self, inv: &Invocation) -> Result<(), InvokeError> {
        if let Some(target) = sync_target(&inv.function) {
            return self.invoke_sync(inv, target).await;
        }
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
        let payload = self.payload(inv).await?;
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
            Err(e) => Err(error(
                inv,
                format!("Lambda Invoke {target}: {}", DisplayErrorContext(&e)),
                retryable(&e),
            )),
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
