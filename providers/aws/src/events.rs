//! Adapters: AWS payloads in, CloudEvents out.
//!
//! What the orchestrator receives, from its queue or invoked directly:
//! - a structured-mode CloudEvent (JSON) — published by trigflow itself or
//!   by a user;
//! - a Lambda destination record (the invocation record Lambda sends to an
//!   `OnSuccess` / `OnFailure` destination after an asynchronous invoke),
//!   also when it arrives wrapped in an EventBridge event (source `lambda`);
//!   normalised into the `function.succeeded` / `function.failed` event the
//!   embedded invoker would produce for the same invocation (same source
//!   and id, so a step that ran twice counts once);
//! - an S3 event notification: each `ObjectCreated:*` record whose key is
//!   `trigflow/{execution}/{name}` becomes `trigflow.data.ready` with
//!   subject `{name}`; the `s3:TestEvent` S3 sends when a notification is
//!   configured yields no event;
//! - an EventBridge event whose `detail.trigflowexecution` names the
//!   execution: a user event with the EventBridge id, source and
//!   `detail-type` as id, source and type, `detail.trigflowsubject` (else
//!   the `detail-type`) as subject, and `detail` as data;
//! - a timer hop written by the `schedule` method of [`crate::SqsSink`] (an `EventSink`) for delays beyond
//!   SQS's 15 minutes.
//!
//! Errors name the JSON path that failed, so a user reading one knows what
//! to fix.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trigflow_core::cloudevents::Event;
use trigflow_core::event::{NewEvent, data_ready_from_s3_record, s3_notification_key};
use trigflow_core::ids::ExecutionId;
use trigflow_core::state::{FunctionError, Invocation};

/// Key of the payload object that carries trigflow's invocation fields in
/// a Lambda invoke (and hence in its destination record).
pub const PAYLOAD_META: &str = "trigflow";
/// Key of the payload object that carries the step's input.
pub const PAYLOAD_INPUT: &str = "input";
/// Object-key prefix of S3 objects that announce data to an execution.
pub const S3_PREFIX: &str = "trigflow/";
/// Key of a timer hop envelope.
pub const TIMER_HOP: &str = "trigflowtimer";

/// A payload could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// The payload is not JSON.
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    /// The payload is JSON of no shape trigflow knows.
    #[error(
        "payload is not a CloudEvent, Lambda destination record, S3 notification, EventBridge event or timer hop (top-level keys: {keys})"
    )]
    Unrecognised {
        /// The top-level keys found, to tell the user what arrived.
        keys: String,
    },
    /// A field is missing or has the wrong type.
    #[error("{kind}: {path}: {message}")]
    Field {
        /// Which payload kind was recognised.
        kind: &'static str,
        /// JSON path of the field.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl AdapterError {
    fn field(kind: &'static str, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Field {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }
}

/// What a payload means to the orchestrator.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// Events to apply (possibly none, e.g. an S3 test event).
    Events(Vec<Event>),
    /// A timer hop: publish `event` at `fire_at_ms`, re-scheduling if that
    /// is still in the future. Boxed: an event is large and hops are rare.
    Hop(Box<TimerHop>),
}

/// A timer too far ahead for one SQS delay, travelling hop by hop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerHop {
    /// When the event is due, in ms since the Unix epoch.
    pub fire_at_ms: i64,
    /// The event.
    pub event: Event,
}

/// Normalises a message body.
pub fn normalise(body: &[u8]) -> Result<Incoming, AdapterError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| AdapterError::NotJson(e.to_string()))?;
    normalise_value(&v)
}

/// Normalises a parsed payload.
pub fn normalise_value(v: &Value) -> Result<Incoming, AdapterError> {
    let Some(obj) = v.as_object() else {
        return Err(AdapterError::Unrecognised {
            keys: format!("not an object but {}", type_name(v)),
        });
    };
    if obj.contains_key("specversion") {
        return cloudevent(v).map(|e| Incoming::Events(vec![e]));
    }
    if let Some(hop) = obj.get(TIMER_HOP) {
        let hop: TimerHop = serde_json::from_value(hop.clone())
            .map_err(|e| AdapterError::field("timer hop", TIMER_HOP, e.to_string()))?;
        return Ok(Incoming::Hop(Box::new(hop)));
    }
    if obj.contains_key("requestContext") && obj.contains_key("requestPayload") {
        return destination(v, "").map(|e| Incoming::Events(vec![e]));
    }
    if obj.contains_key("detail-type") && obj.contains_key("detail") {
        if obj.get("source").and_then(Value::as_str) == Some("lambda") {
            // A destination record delivered through an EventBridge bus.
            return destination(&v["detail"], "detail.").map(|e| Incoming::Events(vec![e]));
        }
        return eventbridge(v).map(|e| Incoming::Events(vec![e]));
    }
    if obj.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Incoming::Events(Vec::new()));
    }
    if let Some(records) = obj.get("Records").and_then(Value::as_array)
        && records
            .first()
            .and_then(|r| r.get("eventSource"))
            .and_then(Value::as_str)
            == Some("aws:s3")
    {
        return s3(records).map(Incoming::Events);
    }
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.truncate(8);
    Err(AdapterError::Unrecognised {
        keys: keys.join(", "),
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn cloudevent(v: &Value) -> Result<Event, AdapterError> {
    let bytes = serde_json::to_vec(v).map_err(|e| AdapterError::NotJson(e.to_string()))?;
    trigflow_core::event::decode(&bytes)
        .map_err(|e| AdapterError::field("CloudEvent", "$", e.to_string()))
}

/// trigflow's fields in an invoke payload: everything of the [`Invocation`]
/// but its input, which travels beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationMeta {
    /// Idempotency key.
    pub key: String,
    /// The execution.
    pub execution: String,
    /// The workflow.
    pub workflow: String,
    /// The deciding trigger.
    pub trigger: String,
    /// Subject of the result events.
    pub step: String,
    /// Function reference.
    pub function: String,
    /// Foreach index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Attempt number.
    pub attempt: u32,
}

/// The payload a function receives for an invocation:
/// `{"trigflow": {key, execution, workflow, trigger, step, function,
/// index?, attempt}, "input": ...}`.
pub fn invoke_payload(inv: &Invocation) -> Value {
    let meta = InvocationMeta {
        key: inv.key.clone(),
        execution: inv.execution.to_string(),
        workflow: inv.workflow.to_string(),
        trigger: inv.trigger.to_string(),
        step: inv.step.clone(),
        function: inv.function.clone(),
        index: inv.index,
        attempt: inv.attempt,
    };
    let mut m = serde_json::Map::new();
    m.insert(
        PAYLOAD_META.into(),
        serde_json::to_value(meta).unwrap_or(Value::Null),
    );
    m.insert(PAYLOAD_INPUT.into(), inv.input.clone());
    Value::Object(m)
}

/// The invocation an invoke payload describes.
pub fn invocation_from_payload(payload: &Value, path: &str) -> Result<Invocation, AdapterError> {
    const KIND: &str = "Lambda destination record";
    let meta_path = format!("{path}{PAYLOAD_META}");
    let meta = payload.get(PAYLOAD_META).ok_or_else(|| {
        AdapterError::field(
            KIND,
            &meta_path,
            "missing: the request payload was not sent by trigflow",
        )
    })?;
    let meta: InvocationMeta = serde_json::from_value(meta.clone())
        .map_err(|e| AdapterError::field(KIND, &meta_path, e.to_string()))?;
    let id = |field: &str| {
        let p = format!("{meta_path}.{field}");
        move |e: trigflow_core::ids::InvalidId| AdapterError::field(KIND, p, e.to_string())
    };
    Ok(Invocation {
        execution: meta.execution.parse().map_err(id("execution"))?,
        workflow: meta.workflow.parse().map_err(id("workflow"))?,
        trigger: meta.trigger.parse().map_err(id("trigger"))?,
        key: meta.key,
        step: meta.step,
        function: meta.function,
        input: payload.get(PAYLOAD_INPUT).cloned().unwrap_or(Value::Null),
        index: meta.index,
        attempt: meta.attempt,
    })
}

/// A Lambda destination record, at JSON path prefix `path`.
fn destination(v: &Value, path: &str) -> Result<Event, AdapterError> {
    const KIND: &str = "Lambda destination record";
    let condition = v
        .pointer("/requestContext/condition")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            AdapterError::field(
                KIND,
                format!("{path}requestContext.condition"),
                "missing or not a string",
            )
        })?;
    let payload = v
        .get("requestPayload")
        .ok_or_else(|| AdapterError::field(KIND, format!("{path}requestPayload"), "missing"))?;
    let inv = invocation_from_payload(payload, &format!("{path}requestPayload."))?;
    let response = v.get("responsePayload").cloned().unwrap_or(Value::Null);
    let function_error = v
        .pointer("/responseContext/functionError")
        .and_then(Value::as_str);
    let result = if condition == "Success" && function_error.is_none() {
        Ok(response)
    } else {
        // The runtimes report `{errorType, errorMessage}`; a record that
        // expired before running (`EventAgeExceeded`) has no response.
        let error = response
            .get("errorType")
            .and_then(Value::as_str)
            .or(function_error)
            .unwrap_or(condition)
            .to_owned();
        let cause = match response.get("errorMessage").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None => format!("Lambda reported condition {condition}"),
        };
        Err(FunctionError { error, cause })
    };
    inv.completion(result)
        .map_err(|e| AdapterError::field(KIND, path.to_owned() + "$", e.to_string()))
}

/// S3 `ObjectCreated` records into data-ready events.
fn s3(records: &[Value]) -> Result<Vec<Event>, AdapterError> {
    const KIND: &str = "S3 notification";
    let mut out = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let at = |field: &str| format!("Records[{i}].{field}");
        let str_at = |pointer: &str, field: &str| {
            r.pointer(pointer)
                .and_then(Value::as_str)
                .ok_or_else(|| AdapterError::field(KIND, at(field), "missing or not a string"))
        };
        let name = str_at("/eventName", "eventName")?;
        if !name.starts_with("ObjectCreated:") {
            return Err(AdapterError::field(
                KIND,
                at("eventName"),
                format!("{name} is not an ObjectCreated event; only those announce data"),
            ));
        }
        let bucket = str_at("/s3/bucket/name", "s3.bucket.name")?;
        let raw_key = str_at("/s3/object/key", "s3.object.key")?;
        let key = s3_notification_key(raw_key);
        let rest = key.strip_prefix(S3_PREFIX).ok_or_else(|| {
            AdapterError::field(
                KIND,
                at("s3.object.key"),
                format!("{key:?} is not under {S3_PREFIX}{{execution}}/{{name}}"),
            )
        })?;
        let (exec, subject) = rest.split_once('/').ok_or_else(|| {
            AdapterError::field(
                KIND,
                at("s3.object.key"),
                format!("{key:?} is not under {S3_PREFIX}{{execution}}/{{name}}"),
            )
        })?;
        let exec: ExecutionId = exec.parse().map_err(|e: trigflow_core::ids::InvalidId| {
            AdapterError::field(KIND, at("s3.object.key"), e.to_string())
        })?;
        let source = format!("aws:s3:{bucket}");
        let event = data_ready_from_s3_record(r, &source, bucket, &key, &exec, subject)
            .map_err(|p| AdapterError::field(KIND, at(p.field), p.message))?;
        out.push(event);
    }
    Ok(out)
}

/// An EventBridge event into a user event.
fn eventbridge(v: &Value) -> Result<Event, AdapterError> {
    const KIND: &str = "EventBridge event";
    let str_at = |field: &str| {
        v.get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| AdapterError::field(KIND, field, "missing or not a string"))
    };
    let id = str_at("id")?;
    let source = str_at("source")?;
    let detail_type = str_at("detail-type")?;
    let detail = &v["detail"];
    let exec = detail
        .get("trigflowexecution")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            AdapterError::field(
                KIND,
                "detail.trigflowexecution",
                "missing: the event does not name the execution it is for",
            )
        })?;
    let exec: ExecutionId = exec.parse().map_err(|e: trigflow_core::ids::InvalidId| {
        AdapterError::field(KIND, "detail.trigflowexecution", e.to_string())
    })?;
    let subject = detail
        .get("trigflowsubject")
        .and_then(Value::as_str)
        .unwrap_or(detail_type);
    let mut event = NewEvent {
        source,
        id,
        ty: detail_type,
        subject: Some(subject),
        execution: Some(&exec),
        index: None,
        attempt: None,
        data: Some(detail.clone()),
    }
    .build()
    .map_err(|e| AdapterError::field(KIND, "$", e.to_string()))?;
    if let Some(t) = v.get("time").and_then(Value::as_str) {
        let t = chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| AdapterError::field(KIND, "time", e.to_string()))?;
        use trigflow_core::cloudevents::AttributesWriter;
        event.set_time(Some(t.with_timezone(&chrono::Utc)));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_decoding_of_s3_keys() {
        assert_eq!(s3_notification_key("test%2Fkey"), "test/key");
        assert_eq!(s3_notification_key("a+b%20c"), "a b c");
        assert_eq!(s3_notification_key("100%"), "100%");
        assert_eq!(s3_notification_key("bad%zz"), "bad%zz");
    }
}
