//! CloudEvents conventions used by trigflow: extension attribute names, the
//! event types the runtime emits, dedup keys and small helpers.

use cloudevents::event::{Data, ExtensionValue};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV10};
use serde_json::Value;

use crate::ids::ExecutionId;

/// Extension attribute carrying the execution an event belongs to.
/// CloudEvents extension names are lowercase alphanumerics, at most 20 chars.
pub const EXT_EXECUTION: &str = "trigflowexecution";
/// Extension attribute carrying the item index of a foreach invocation.
pub const EXT_INDEX: &str = "trigflowindex";
/// Extension attribute carrying the attempt number of an invocation.
pub const EXT_ATTEMPT: &str = "trigflowattempt";

/// Extension attribute of a child execution's start event naming its parent.
pub const EXT_PARENT: &str = "trigflowparent";
/// Extension attribute of a child execution's start event: the subject of
/// the completion event its parent receives.
pub const EXT_REPLY: &str = "trigflowreply";

/// Emitted once when an execution starts; its data is the execution input.
pub const TYPE_STARTED: &str = "trigflow.execution.started";
/// A function invocation returned a result (data = the result).
pub const TYPE_SUCCEEDED: &str = "trigflow.function.succeeded";
/// A function invocation failed (data = `{"error": .., "cause": ..}`).
pub const TYPE_FAILED: &str = "trigflow.function.failed";
/// A timer scheduled by a `timer` action fired.
pub const TYPE_TIMER: &str = "trigflow.timer.fired";
/// A piece of data became available (object written, partial output).
pub const TYPE_DATA_READY: &str = "trigflow.data.ready";
/// A child execution succeeded (sent to its parent; data = the output).
pub const TYPE_CHILD_SUCCEEDED: &str = "trigflow.execution.succeeded";
/// A child execution failed (sent to its parent; data = `{"error", "cause"}`).
pub const TYPE_CHILD_FAILED: &str = "trigflow.execution.failed";
/// Source of the events the runtime itself produces.
pub const RUNTIME_SOURCE: &str = "trigflow";

/// Dedup identity of an event: a 128-bit hash of (`source`, `id`), as the
/// CloudEvents spec defines identity. A hash, not the strings, keeps the
/// per-execution seen-set at 16 bytes an event; at 128 bits a collision among
/// even billions of events is far less likely than a disk error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey(pub u128);

impl EventKey {
    /// The key of the event with this source and id.
    pub fn new(source: &str, id: &str) -> Self {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(source.as_bytes());
        // A separator that cannot occur in a length prefix keeps ("ab","c")
        // and ("a","bc") apart.
        h.update(&(source.len() as u64).to_le_bytes());
        h.update(id.as_bytes());
        Self(h.digest128())
    }

    /// The key of a CloudEvent.
    pub fn of(event: &Event) -> Self {
        Self::new(&event.source().to_string(), event.id())
    }
}

/// The execution id carried by an event, if any and if well-formed.
pub fn execution_of(event: &Event) -> Option<Result<ExecutionId, crate::ids::InvalidId>> {
    match event.extension(EXT_EXECUTION)? {
        ExtensionValue::String(s) => Some(s.parse()),
        other => Some(other.to_string().parse()),
    }
}

/// A string extension attribute of an event.
pub fn extension_str(event: &Event, name: &str) -> Option<String> {
    match event.extension(name)? {
        ExtensionValue::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The foreach index carried by an event, if any.
pub fn index_of(event: &Event) -> Option<u64> {
    match event.extension(EXT_INDEX)? {
        ExtensionValue::Integer(i) => u64::try_from(*i).ok(),
        ExtensionValue::String(s) => s.parse().ok(),
        ExtensionValue::Boolean(_) => None,
    }
}

/// The event's data as JSON. Text that parses as JSON is returned parsed,
/// other text as a JSON string; binary data as a string of base64.
pub fn data_json(event: &Event) -> Value {
    match event.data() {
        None => Value::Null,
        Some(Data::Json(v)) => v.clone(),
        Some(Data::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(Data::Binary(b)) => match serde_json::from_slice(b) {
            Ok(v) => v,
            Err(_) => {
                use base64::Engine as _;
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
        },
    }
}

/// The event as the JSON document that expressions see under `.event`.
pub fn event_json(event: &Event) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), event.id().into());
    m.insert("source".into(), event.source().to_string().into());
    m.insert("type".into(), event.ty().into());
    if let Some(s) = event.subject() {
        m.insert("subject".into(), s.into());
    }
    if let Some(t) = event.time() {
        m.insert("time".into(), t.to_rfc3339().into());
    }
    for (name, value) in event.iter_extensions() {
        let v = match value {
            ExtensionValue::String(s) => Value::from(s.as_str()),
            ExtensionValue::Boolean(b) => Value::from(*b),
            ExtensionValue::Integer(i) => Value::from(*i),
        };
        m.insert(name.to_owned(), v);
    }
    m.insert("data".into(), data_json(event));
    Value::Object(m)
}

/// Fields of an event the runtime builds. Kept as one struct so every place
/// that makes events fills the same attributes.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// CloudEvents `source`.
    pub source: &'a str,
    /// CloudEvents `id`; with `source` the dedup identity.
    pub id: &'a str,
    /// CloudEvents `type`.
    pub ty: &'a str,
    /// CloudEvents `subject`, used to route the event to triggers.
    pub subject: Option<&'a str>,
    /// The execution the event is addressed to.
    pub execution: Option<&'a ExecutionId>,
    /// The foreach index, for results of a foreach invocation.
    pub index: Option<u64>,
    /// The attempt number, for results of an invocation.
    pub attempt: Option<u32>,
    /// JSON data, if any.
    pub data: Option<Value>,
}

impl NewEvent<'_> {
    /// Builds the CloudEvent.
    pub fn build(self) -> Result<Event, cloudevents::event::EventBuilderError> {
        let mut b = EventBuilderV10::new()
            .id(self.id)
            .source(self.source)
            .ty(self.ty);
        if let Some(s) = self.subject {
            b = b.subject(s);
        }
        if let Some(e) = self.execution {
            b = b.extension(EXT_EXECUTION, e.as_str());
        }
        if let Some(i) = self.index {
            // Indexes beyond i64 cannot occur: a foreach list that long would
            // not fit in memory.
            b = b.extension(EXT_INDEX, i64::try_from(i).unwrap_or(i64::MAX));
        }
        if let Some(a) = self.attempt {
            b = b.extension(EXT_ATTEMPT, i64::from(a));
        }
        if let Some(d) = self.data {
            b = b.data("application/json", d);
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_separates_source_and_id() {
        assert_ne!(EventKey::new("ab", "c"), EventKey::new("a", "bc"));
        assert_eq!(EventKey::new("s", "1"), EventKey::new("s", "1"));
    }

    #[test]
    fn built_event_round_trips_execution_and_index() {
        let exec: ExecutionId = "e1".parse().expect("id");
        let ev = NewEvent {
            source: "src",
            id: "1",
            ty: TYPE_SUCCEEDED,
            subject: Some("step"),
            execution: Some(&exec),
            index: Some(7),
            attempt: None,
            data: Some(serde_json::json!({"a": 1})),
        }
        .build()
        .expect("valid event");
        assert_eq!(execution_of(&ev).and_then(Result::ok), Some(exec));
        assert_eq!(index_of(&ev), Some(7));
        assert_eq!(data_json(&ev), serde_json::json!({"a": 1}));
        let doc = event_json(&ev);
        assert_eq!(doc["subject"], "step");
        assert_eq!(doc[EXT_EXECUTION], "e1");
    }
}

/// Decodes a structured-mode CloudEvent in JSON.
///
/// Hand-written because the SDK's deserializer builds a `serde_json::Value`
/// of the whole event first; measured on the embedded worker that was a
/// quarter of all worker time. This visitor reads the attributes straight
/// into the builder. Anything it does not handle itself (`data_base64`,
/// `dataschema`, another spec version) goes to the SDK's deserializer, so
/// the result is always what the SDK would produce.
pub fn decode(bytes: &[u8]) -> Result<Event, serde_json::Error> {
    match serde_json::from_slice::<Fast>(bytes)? {
        Fast::Built(ev) => Ok(*ev),
        Fast::Fallback => serde_json::from_slice(bytes),
    }
}

enum Fast {
    Built(Box<Event>),
    Fallback,
}

impl<'de> serde::Deserialize<'de> for Fast {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FastVisitor)
    }
}

struct FastVisitor;

impl<'de> serde::de::Visitor<'de> for FastVisitor {
    type Value = Fast;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a structured-mode CloudEvent (a JSON object)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fast, A::Error> {
        use serde::de::Error as _;
        use std::borrow::Cow;
        let mut b = EventBuilderV10::new();
        let mut fallback = false;
        let mut data: Option<Value> = None;
        let mut content_type: Option<String> = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "specversion" => {
                    let v = map.next_value::<Cow<'de, str>>()?;
                    fallback |= v != "1.0";
                }
                "id" => b = b.id(map.next_value::<String>()?),
                "source" => b = b.source(map.next_value::<String>()?),
                "type" => b = b.ty(map.next_value::<String>()?),
                "subject" => b = b.subject(map.next_value::<String>()?),
                "time" => {
                    let t = map.next_value::<Cow<'de, str>>()?;
                    let t = chrono::DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| A::Error::custom(format!("time {t:?}: {e}")))?;
                    b = b.time(t.with_timezone(&chrono::Utc));
                }
                "datacontenttype" => content_type = Some(map.next_value::<String>()?),
                "data" => data = Some(map.next_value::<Value>()?),
                "data_base64" | "dataschema" => {
                    fallback = true;
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                _ => match map.next_value::<Value>()? {
                    Value::String(s) => b = b.extension(&key, s),
                    Value::Bool(v) => b = b.extension(&key, v),
                    Value::Number(n) if n.is_i64() => {
                        b = b.extension(&key, n.as_i64().unwrap_or(0))
                    }
                    Value::Null => {}
                    _ => fallback = true,
                },
            }
        }
        if fallback {
            return Ok(Fast::Fallback);
        }
        if let Some(d) = data {
            let ct = content_type.unwrap_or_else(|| "application/json".to_owned());
            // Non-JSON content types carry their data as a JSON string.
            b = match d {
                Value::String(s) if !ct.contains("json") => b.data(ct, s),
                other => b.data(ct, other),
            };
        }
        b.build()
            .map(|e| Fast::Built(Box::new(e)))
            .map_err(A::Error::custom)
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    #[test]
    fn fast_decode_matches_the_sdk() {
        let exec: ExecutionId = "e1".parse().expect("id");
        let samples = vec![
            NewEvent {
                source: "s",
                id: "1",
                ty: TYPE_SUCCEEDED,
                subject: Some("step"),
                execution: Some(&exec),
                index: Some(3),
                attempt: Some(2),
                data: Some(serde_json::json!({"a": [1, 2, {"b": null}]})),
            }
            .build()
            .expect("event"),
            NewEvent {
                source: "s",
                id: "2",
                ty: "x",
                subject: None,
                execution: None,
                index: None,
                attempt: None,
                data: None,
            }
            .build()
            .expect("event"),
        ];
        for ev in samples {
            let bytes = serde_json::to_vec(&ev).expect("encode");
            let fast = decode(&bytes).expect("fast decode");
            let sdk: Event = serde_json::from_slice(&bytes).expect("sdk decode");
            assert_eq!(fast, sdk);
            assert_eq!(fast, ev);
        }
        let with_time = br#"{"specversion":"1.0","id":"t","source":"/s","type":"x","time":"2024-01-02T03:04:05Z","datacontenttype":"text/plain","data":"hi","flag":true}"#;
        let fast = decode(with_time).expect("fast");
        let sdk: Event = serde_json::from_slice(with_time).expect("sdk");
        assert_eq!(fast, sdk);
        let b64 =
            br#"{"specversion":"1.0","id":"t","source":"/s","type":"x","data_base64":"aGk="}"#;
        assert_eq!(
            decode(b64).expect("fallback"),
            serde_json::from_slice::<Event>(b64).expect("sdk")
        );
        assert!(
            decode(br#"{"specversion":"1.0","source":"/s","type":"x"}"#).is_err(),
            "missing id"
        );
        assert!(decode(b"[1]").is_err());
    }
}

/// An object key as S3 and MinIO put it in event notifications:
/// URL-encoded, with `+` for a space.
pub fn s3_notification_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// What is wrong with an S3 event record: the field (relative to the
/// record) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3RecordProblem {
    /// The field, e.g. `s3.object.sequencer`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// The data-ready event of one S3 `ObjectCreated` record (the shape S3 and
/// MinIO share) for object `key` of `bucket`, announcing part `subject` to
/// `execution`: id `{key}@{sequencer}` (the eTag when there is no
/// sequencer), so a redelivered notification has the same id; data
/// `{bucket, key, size, etag, eventName, eventTime}`. AWS mode and local
/// mode's MinIO bridge both build their events here, so a workflow sees
/// the same event from either store.
pub fn data_ready_from_s3_record(
    record: &Value,
    source: &str,
    bucket: &str,
    key: &str,
    execution: &ExecutionId,
    subject: &str,
) -> Result<Event, S3RecordProblem> {
    // The sequencer orders events on one key; with the key it names this
    // write.
    let sequencer = record
        .pointer("/s3/object/sequencer")
        .and_then(Value::as_str)
        .or_else(|| record.pointer("/s3/object/eTag").and_then(Value::as_str))
        .ok_or_else(|| S3RecordProblem {
            field: "s3.object.sequencer",
            message: "missing or not a string".into(),
        })?;
    let id = format!("{key}@{sequencer}");
    let mut data = serde_json::Map::new();
    data.insert("bucket".into(), bucket.into());
    data.insert("key".into(), key.into());
    for (field, pointer) in [
        ("size", "/s3/object/size"),
        ("etag", "/s3/object/eTag"),
        ("eventName", "/eventName"),
        ("eventTime", "/eventTime"),
    ] {
        if let Some(v) = record.pointer(pointer) {
            data.insert(field.into(), v.clone());
        }
    }
    NewEvent {
        source,
        id: &id,
        ty: TYPE_DATA_READY,
        subject: Some(subject),
        execution: Some(execution),
        index: None,
        attempt: None,
        data: Some(Value::Object(data)),
    }
    .build()
    .map_err(|e| S3RecordProblem {
        field: "$",
        message: e.to_string(),
    })
}

#[cfg(test)]
mod s3_record_tests {
    use super::*;

    #[test]
    fn notification_keys_are_url_decoded_with_plus_for_space() {
        assert_eq!(
            s3_notification_key("trigflow/e1/my+part%2B1%C3%A9.json"),
            "trigflow/e1/my part+1é.json"
        );
    }

    #[test]
    fn a_record_without_sequencer_or_etag_names_the_field() {
        let exec: ExecutionId = "e1".parse().expect("id");
        let problem = data_ready_from_s3_record(
            &serde_json::json!({"s3": {"object": {"key": "k"}}}),
            "minio:s3:b",
            "b",
            "trigflow/e1/p",
            &exec,
            "p",
        )
        .expect_err("no sequencer");
        assert_eq!(problem.field, "s3.object.sequencer");
    }
}
