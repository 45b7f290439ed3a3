//! The orchestrator Lambda's handler: one entry point for everything the
//! function receives.
//!
//! - An SQS batch (`{"Records": [{"eventSource": "aws:sqs", ...}]}`): each
//!   body is normalised ([`crate::events`]) and the batch goes through
//!   [`Worker::process_batch`]; the answer is a partial batch response
//!   `{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}` (the
//!   event source mapping needs `ReportBatchItemFailures`), so one bad or
//!   conflicting message never fails the others. Bodies no adapter
//!   understands are dead-lettered with the adapter's reason. A body that
//!   is a start request (the direct `start` JSON below, as
//!   [`crate::client::start_via_queue`] sends it) starts the execution
//!   before the batch's events are applied; a redelivered one finds the
//!   execution existing and is acked, an invalid one is dead-lettered.
//! - A direct invocation (Lambda console, CLI):
//!   `{"action": "start", "workflow": {...}, "input": ..., "execution": "optional-id"}`
//!   or `{"action": "status", "execution": "..."}`.
//! - A destination record, S3 notification or EventBridge event delivered
//!   to the function directly (not through the queue): applied as a batch
//!   of one; a retryable failure fails the invocation so Lambda retries it.

use std::sync::Arc;

use serde_json::{Value, json};
use trigflow_core::claim::ClaimCheck;
use trigflow_core::cloudevents::{AttributesReader, Event};
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::seams::{DeadLetter, Delivery, EventSink};
use trigflow_worker::{Worker, WorkerError};

use crate::events::{AdapterError, Incoming, normalise, normalise_value};

/// Separates a message id from an event's position when one message
/// carries several events (an S3 notification with several records).
const PART: char = '\u{1f}';

/// A handler failure (direct invocations only; an SQS batch never fails as
/// a whole).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The input is not what the handler accepts.
    #[error("malformed input at {path}: {message}")]
    Malformed {
        /// JSON path of the problem.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A payload adapter rejected the input.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// The workflow definition is invalid.
    #[error("workflow {workflow} is invalid: {errors}")]
    InvalidWorkflow {
        /// The workflow id.
        workflow: String,
        /// The definition errors, one per line.
        errors: String,
    },
    /// No execution with this id exists.
    #[error("no execution {0}")]
    UnknownExecution(String),
    /// The worker failed (store, engine, existing execution).
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// An event could not be applied now; Lambda should retry the call.
    #[error("could not apply event(s) now ({reason}); retry")]
    Retry {
        /// Why.
        reason: String,
    },
}

impl HandlerError {
    /// A stable name for the kind of failure: the `errorType` Lambda
    /// reports to the caller (the CLI, the console) instead of a Rust type
    /// name.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Malformed { .. } => "trigflow.Malformed",
            HandlerError::Adapter(_) => "trigflow.UnrecognisedInput",
            HandlerError::InvalidWorkflow { .. } => "trigflow.InvalidWorkflow",
            HandlerError::UnknownExecution(_) => "trigflow.UnknownExecution",
            HandlerError::Worker(WorkerError::AlreadyExists(_)) => "trigflow.ExecutionExists",
            HandlerError::Worker(_) => "trigflow.WorkerError",
            HandlerError::Retry { .. } => "trigflow.Retry",
        }
    }
}

impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(e: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: e.kind().to_owned(),
            error_message: e.to_string(),
        }
    }
}

fn malformed(path: &str, message: impl Into<String>) -> HandlerError {
    HandlerError::Malformed {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// The orchestrator: a worker plus the sink it dead-letters and re-schedules
/// timer hops through.
#[derive(Clone)]
pub struct Orchestrator {
    worker: Worker,
    sink: Arc<dyn EventSink>,
    now_ms: fn() -> i64,
    claims: Option<ClaimCheck>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

fn system_now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Orchestrator {
    /// An orchestrator over `worker`; `sink` should be the worker's sink.
    pub fn new(worker: Worker, sink: Arc<dyn EventSink>) -> Self {
        Self {
            worker,
            sink,
            now_ms: system_now_ms,
            claims: None,
        }
    }

    /// Resolves claim-check references in the data of incoming events
    /// before the engine sees them (see [`crate::claims`]).
    pub fn with_claim_check(mut self, claims: ClaimCheck) -> Self {
        self.claims = Some(claims);
        self
    }

    /// The event's encoding for the worker, its data's references
    /// resolved. `Err((reason, retryable))` when a referenced object cannot
    /// be read.
    async fn encode_incoming(&self, e: &Event) -> Result<Vec<u8>, (String, bool)> {
        let resolved = match &self.claims {
            Some(claims) => crate::claims::resolve_event(claims, e)
                .await
                .map_err(|err| {
                    (
                        format!("event {} from {}: claim check: {err}", e.id(), e.source()),
                        err.is_retryable(),
                    )
                })?,
            None => None,
        };
        serde_json::to_vec(resolved.as_ref().unwrap_or(e))
            .map_err(|err| (format!("event {}: {err}", e.id()), false))
    }

    /// Replaces the clock timer hops are checked against (tests).
    pub fn with_clock(mut self, now_ms: fn() -> i64) -> Self {
        self.now_ms = now_ms;
        self
    }

    /// The worker.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Handles one Lambda event.
    pub async fn handle(&self, event: Value) -> Result<Value, HandlerError> {
        let Some(obj) = event.as_object() else {
            return Err(malformed("$", "expected a JSON object"));
        };
        if obj.contains_key("action") {
            return self.direct(&event).await;
        }
        if let Some(records) = obj.get("Records").and_then(Value::as_array)
            && records
                .first()
                .and_then(|r| r.get("eventSource"))
                .and_then(Value::as_str)
                == Some("aws:sqs")
        {
            return self.sqs_batch(event).await;
        }
        match normalise_value(&event)? {
            Incoming::Events(events) => {
                let mut encoded = Vec::with_capacity(events.len());
                for (i, e) in events.iter().enumerate() {
                    let body = self.encode_incoming(e).await.map_err(unreadable)?;
                    encoded.push(Delivery {
                        id: format!("direct{PART}{i}"),
                        body,
                        attempt: 1,
                    });
                }
                let deliveries = encoded;
                let n = deliveries.len();
                let report = self.worker.process_batch(deliveries).await;
                if !report.retry.is_empty() {
                    return Err(HandlerError::Retry {
                        reason: format!(
                            "{} of {n} event(s) conflicted or failed",
                            report.retry.len()
                        ),
                    });
                }
                Ok(
                    json!({"applied": n - report.dead_lettered.len(), "deadLettered": report.dead_lettered.len()}),
                )
            }
            Incoming::Hop(hop) => {
                if self.hop(&hop).await? {
                    Ok(json!({"applied": 0, "rescheduled": true}))
                } else {
                    let body = self.encode_incoming(&hop.event).await.map_err(unreadable)?;
                    let report = self
                        .worker
                        .process_batch(vec![Delivery {
                            id: "direct".into(),
                            body,
                            attempt: 1,
                        }])
                        .await;
                    if report.retry.is_empty() {
                        Ok(json!({"applied": 1}))
                    } else {
                        Err(HandlerError::Retry {
                            reason: "timer event conflicted or failed".into(),
                        })
                    }
                }
            }
        }
    }

    /// Re-schedules a hop that is not yet due; `Ok(false)` if it is due.
    async fn hop(&self, hop: &crate::events::TimerHop) -> Result<bool, HandlerError> {
        if hop.fire_at_ms <= (self.now_ms)() {
            return Ok(false);
        }
        self.sink
            .schedule(hop.fire_at_ms, &hop.event)
            .await
            .map_err(|e| HandlerError::Retry {
                reason: e.to_string(),
            })?;
        Ok(true)
    }

    async fn sqs_batch(&self, event: Value) -> Result<Value, HandlerError> {
        let batch: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(event).map_err(|e| malformed("Records", e.to_string()))?;
        let mut failures: Vec<String> = Vec::new();
        let mut deliveries = Vec::new();
        let mut letters = Vec::new();
        for (i, record) in batch.records.into_iter().enumerate() {
            let Some(message_id) = record.message_id else {
                return Err(malformed(&format!("Records[{i}].messageId"), "missing"));
            };
            let body = record.body.unwrap_or_default();
            let attempt = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            if let Some(request) = start_request(&body) {
                match self.direct(&request).await {
                    Ok(_) | Err(HandlerError::Worker(WorkerError::AlreadyExists(_))) => {}
                    Err(HandlerError::Worker(WorkerError::Store(e))) if e.is_retryable() => {
                        tracing::warn!(message = %message_id, error = %e, "start failed; will retry");
                        failures.push(message_id);
                    }
                    Err(e) => letters.push(DeadLetter {
                        message_id,
                        event_id: None,
                        event_source: None,
                        execution: request
                            .get("execution")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        reason: format!("start request: {e}"),
                        body,
                        at_ms: (self.now_ms)(),
                    }),
                }
                continue;
            }
            match normalise(body.as_bytes()) {
                Ok(Incoming::Events(events)) => {
                    let single = events.len() == 1;
                    for (j, e) in events.iter().enumerate() {
                        let bytes = match self.encode_incoming(e).await {
                            Ok(bytes) => bytes,
                            Err((reason, true)) => {
                                tracing::warn!(message = %message_id, %reason, "will retry");
                                failures.push(message_id.clone());
                                continue;
                            }
                            Err((reason, false)) => {
                                letters.push(DeadLetter {
                                    message_id: message_id.clone(),
                                    event_id: Some(e.id().to_owned()),
                                    event_source: Some(e.source().to_string()),
                                    execution: None,
                                    reason,
                                    body: body.clone(),
                                    at_ms: (self.now_ms)(),
                                });
                                continue;
                            }
                        };
                        deliveries.push(Delivery {
                            id: if single {
                                message_id.clone()
                            } else {
                                format!("{message_id}{PART}{j}")
                            },
                            body: bytes,
                            attempt,
                        });
                    }
                }
                Ok(Incoming::Hop(hop)) => match self.hop(&hop).await {
                    Ok(true) => {}
                    Ok(false) => match self.encode_incoming(&hop.event).await {
                        Ok(bytes) => deliveries.push(Delivery {
                            id: message_id,
                            body: bytes,
                            attempt,
                        }),
                        Err(_) => failures.push(message_id),
                    },
                    Err(_) => failures.push(message_id),
                },
                Err(e) => letters.push(DeadLetter {
                    message_id,
                    event_id: None,
                    event_source: None,
                    execution: None,
                    reason: e.to_string(),
                    body,
                    at_ms: (self.now_ms)(),
                }),
            }
        }
        if !letters.is_empty() {
            for l in &letters {
                tracing::warn!(message = %l.message_id, reason = %l.reason, "dead letter");
            }
            if let Err(e) = self.sink.dead_letter(&letters).await {
                tracing::warn!(error = %e, "dead-letter write failed; messages will be redelivered");
                failures.extend(letters.into_iter().map(|l| l.message_id));
            }
        }
        let report = self.worker.process_batch(deliveries).await;
        for id in report.retry {
            let message = match id.split_once(PART) {
                Some((m, _)) => m.to_owned(),
                None => id,
            };
            failures.push(message);
        }
        failures.sort();
        failures.dedup();
        Ok(json!({
            "batchItemFailures": failures
                .into_iter()
                .map(|id| json!({"itemIdentifier": id}))
                .collect::<Vec<_>>()
        }))
    }

    async fn direct(&self, event: &Value) -> Result<Value, HandlerError> {
        let action = event["action"]
            .as_str()
            .ok_or_else(|| malformed("action", "expected a string: \"start\" or \"status\""))?;
        match action {
            "start" => {
                let wf = event.get("workflow").ok_or_else(|| {
                    malformed(
                        "workflow",
                        "missing: the workflow definition (a trigger set)",
                    )
                })?;
                let wf: Workflow = serde_json::from_value(wf.clone())
                    .map_err(|e| malformed("workflow", e.to_string()))?;
                if let Err(errors) = self.worker.engine().validate(&wf) {
                    return Err(HandlerError::InvalidWorkflow {
                        workflow: wf.id.to_string(),
                        errors: errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n"),
                    });
                }
                let execution: ExecutionId = match event.get("execution") {
                    None | Some(Value::Null) => uuid::Uuid::new_v4().to_string().parse().map_err(
                        |e: trigflow_core::ids::InvalidId| malformed("execution", e.to_string()),
                    )?,
                    Some(Value::String(s)) => {
                        s.parse().map_err(|e: trigflow_core::ids::InvalidId| {
                            malformed("execution", e.to_string())
                        })?
                    }
                    Some(_) => return Err(malformed("execution", "expected a string")),
                };
                let input = event.get("input").cloned().unwrap_or(Value::Null);
                let state = self.worker.start(&wf, execution, input).await?;
                Ok(status_json(&state))
            }
            "status" => {
                let execution: ExecutionId = event
                    .get("execution")
                    .and_then(Value::as_str)
                    .ok_or_else(|| malformed("execution", "missing or not a string"))?
                    .parse()
                    .map_err(|e: trigflow_core::ids::InvalidId| {
                        malformed("execution", e.to_string())
                    })?;
                match self.worker.load(&execution).await? {
                    Some(state) => Ok(status_json(&state)),
                    None => Err(HandlerError::UnknownExecution(execution.to_string())),
                }
            }
            other => Err(malformed(
                "action",
                format!("unknown action {other:?}: expected \"start\" or \"status\""),
            )),
        }
    }
}

/// A direct event whose claim-check data cannot be read: retry the call if
/// that may help, else reject it.
fn unreadable((reason, retryable): (String, bool)) -> HandlerError {
    if retryable {
        HandlerError::Retry { reason }
    } else {
        malformed("$", reason)
    }
}

/// The body as a start request (`{"action": "start", ...}`), if it is one.
fn start_request(body: &str) -> Option<Value> {
    // Cheap test first: most bodies are CloudEvents.
    if !body.contains("\"action\"") {
        return None;
    }
    let v: Value = serde_json::from_str(body).ok()?;
    (v.get("action")? == "start").then_some(v)
}

fn status_json(state: &trigflow_core::state::ExecutionState) -> Value {
    let mut out = json!({
        "execution": state.execution.to_string(),
        "workflow": state.workflow.to_string(),
        "eventsApplied": state.events_applied,
        "pendingEffects": state.outbox.len(),
    });
    if let (Some(o), Ok(Value::Object(status))) =
        (out.as_object_mut(), serde_json::to_value(&state.status))
    {
        o.extend(status);
    }
    out
}

/// [`Orchestrator::handle`] for a worker whose sink is `sink`.
pub async fn handle(
    event: Value,
    worker: &Worker,
    sink: Arc<dyn EventSink>,
) -> Result<Value, HandlerError> {
    Orchestrator::new(worker.clone(), sink).handle(event).await
}
