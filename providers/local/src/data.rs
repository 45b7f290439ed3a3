//! Data-ready events: a piece of data (an object in the store) became
//! available to an execution, so that a downstream step can start on it
//! before the step producing it has finished.
//!
//! A data-ready event is a CloudEvent of type `trigflow.data.ready` for
//! the object `trigflow/{execution}/{name}`: subject `{name}` (the key under
//! the execution's prefix, as in AWS mode, so that a trigger can match the
//! parts of one step by prefix, e.g. `produce/part-*`), the execution in
//! `trigflowexecution`, and data `{bucket, key, size, etag?, sha256?}` with
//! the full object key. Two sources publish them:
//!
//! - [`Parts`]: a function served by an [`crate::Agent`] with
//!   [`crate::Agent::serve_with_parts`] writes parts while it runs; each
//!   [`Parts::put`] stores the object and then publishes the event (source
//!   and id derived from the call, so a call that runs again announces the
//!   same part once);
//! - [`MinioBridge`]: MinIO's bucket notifications (`notify_nats`, S3 event
//!   records on [`MINIO_SUBJECT`]) turned into the same events by
//!   [`from_s3_notification`]; any writer (a `cmd:` function, another
//!   system) announces data by writing under `trigflow/{execution}/`.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;
use trigflow_core::claim::{BlobError, ClaimCheck, reference, sha256_hex};
use trigflow_core::cloudevents::Event;
use trigflow_core::event::{
    NewEvent, TYPE_DATA_READY, data_ready_from_s3_record, s3_notification_key,
};
use trigflow_core::ids::ExecutionId;
use trigflow_core::seams::{DeadLetter, EventSink};
use trigflow_core::state::Invocation;

use crate::{JetStreamSink, Local, LocalError};

/// Object-key prefix of the objects that announce data to an execution:
/// `trigflow/{execution}/{name}` (the same layout as AWS mode's).
pub const PARTS_PREFIX: &str = "trigflow/";

/// Subject MinIO publishes bucket notifications on (set
/// `MINIO_NOTIFY_NATS_SUBJECT_<ID>` to it).
pub const MINIO_SUBJECT: &str = "trigflow.minio";
/// Stream holding MinIO's notifications until the bridge has turned them
/// into events (MinIO publishes into it with `MINIO_NOTIFY_NATS_JETSTREAM_<ID>=on`).
pub const MINIO_STREAM: &str = "TRIGFLOW_MINIO";
/// Durable consumer the bridges share.
pub const MINIO_CONSUMER: &str = "trigflow-minio-bridge";

/// The object key of part `name` of `execution`.
pub fn part_key(execution: &ExecutionId, name: &str) -> String {
    format!("{PARTS_PREFIX}{execution}/{name}")
}

/// The data of a data-ready event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataReady {
    /// The bucket.
    pub bucket: String,
    /// The full object key (`trigflow/{execution}/{name}`).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// The ETag, when the writer reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// SHA-256 of the bytes, when the writer computed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl DataReady {
    /// A claim-check reference to the object, if its digest is known: as a
    /// function's input it makes the agent hand the function the object's
    /// JSON content.
    pub fn reference(&self) -> Option<Value> {
        self.sha256.as_ref().map(|sha| {
            reference(
                trigflow_objstore::uri(&self.bucket, &self.key),
                self.size,
                sha.clone(),
            )
        })
    }
}

/// A part could not be written or announced.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    /// The agent has no object store (`s3_endpoint` is not set).
    #[error(
        "part {name:?} of execution {execution}: no object store configured (set TRIGFLOW_S3_ENDPOINT)"
    )]
    NoObjectStore {
        /// The execution.
        execution: String,
        /// The part's name.
        name: String,
    },
    /// The name is empty or starts with `/`.
    #[error("part name {name:?} of execution {execution}: expected a non-empty relative name")]
    BadName {
        /// The execution.
        execution: String,
        /// The name given.
        name: String,
    },
    /// The object store failed.
    #[error("part {key}: {source}")]
    Store {
        /// The object key.
        key: String,
        /// The store's error.
        source: BlobError,
    },
    /// The data-ready event could not be built or published.
    #[error("part {key}: announcing it failed: {message}")]
    Announce {
        /// The object key.
        key: String,
        /// What failed.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
    },
}

impl PartError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PartError::Store { source, .. } => source.is_retryable(),
            PartError::Announce { retryable, .. } => *retryable,
            PartError::NoObjectStore { .. } | PartError::BadName { .. } => false,
        }
    }
}

/// Writes parts of a call's output while the function runs (see the
/// module docs). Cheap to clone; handed to handlers served with
/// [`crate::Agent::serve_with_parts`].
#[derive(Clone)]
pub struct Parts {
    claims: Option<ClaimCheck>,
    sink: JetStreamSink,
    execution: ExecutionId,
    call_key: String,
    source: String,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("execution", &self.execution)
            .field("call_key", &self.call_key)
            .finish_non_exhaustive()
    }
}

impl Parts {
    /// Parts of `inv`, stored through `claims`' object store and announced
    /// on `sink`.
    pub fn new(claims: Option<ClaimCheck>, sink: JetStreamSink, inv: &Invocation) -> Self {
        Self {
            claims,
            sink,
            execution: inv.execution.clone(),
            call_key: inv.key.clone(),
            source: inv.result_source(),
        }
    }

    /// The object key part `name` is written under.
    pub fn key(&self, name: &str) -> String {
        part_key(&self.execution, name)
    }

    /// Stores `bytes` as part `name` (object `trigflow/{execution}/{name}`)
    /// and then publishes its data-ready event (subject `name`). Writing the
    /// same part again (a retried call) overwrites the object and announces
    /// it under the same event id, which the engine counts once.
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<DataReady, PartError> {
        if name.is_empty() || name.starts_with('/') {
            return Err(PartError::BadName {
                execution: self.execution.to_string(),
                name: name.to_owned(),
            });
        }
        let Some(claims) = &self.claims else {
            return Err(PartError::NoObjectStore {
                execution: self.execution.to_string(),
                name: name.to_owned(),
            });
        };
        let key = self.key(name);
        let size = bytes.len() as u64;
        let sha256 = sha256_hex(&bytes);
        let uri = claims
            .store()
            .put(&key, bytes)
            .await
            .map_err(|source| PartError::Store {
                key: key.clone(),
                source,
            })?;
        let bucket = trigflow_objstore::parse_uri(&uri)
            .map(|(b, _)| b.to_owned())
            .unwrap_or_default();
        let ready = DataReady {
            bucket,
            key: key.clone(),
            size,
            etag: None,
            sha256: Some(sha256),
        };
        let announce = |message: String, retryable: bool| PartError::Announce {
            key: key.clone(),
            message,
            retryable,
        };
        let data = serde_json::to_value(&ready).map_err(|e| announce(e.to_string(), false))?;
        let id = format!("{}/part/{name}", self.call_key);
        let event = NewEvent {
            source: &self.source,
            id: &id,
            ty: TYPE_DATA_READY,
            subject: Some(name),
            execution: Some(&self.execution),
            index: None,
            attempt: None,
            data: Some(data),
        }
        .build()
        .map_err(|e| announce(e.to_string(), false))?;
        self.sink
            .publish(std::slice::from_ref(&event))
            .await
            .map_err(|e| announce(e.message, e.retryable))?;
        Ok(ready)
    }
}

/// An S3 / MinIO notification that cannot be turned into events.
#[derive(Debug, thiserror::Error)]
#[error("S3 notification at {path}: {message}")]
pub struct NotificationError {
    /// JSON path of the field that failed.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The data-ready events of an S3 event notification as MinIO publishes it
/// (`{"EventName", "Key", "Records": [..]}`; a bare `{"Records": [..]}`
/// as S3 sends it is read too). Each `ObjectCreated` record whose key is
/// `trigflow/{execution}/{name}` becomes one event: source
/// `{eventSource}:{bucket}` (`minio:s3:BUCKET`), id `{key}@{sequencer}` (a
/// redelivered notification has the same id), subject `{name}`, data
/// `{bucket, key, size, etag, eventName, eventTime}`. Other records
/// (removals, objects outside `trigflow/`, e.g. claim-check blobs) yield
/// nothing.
pub fn from_s3_notification(body: &[u8]) -> Result<Vec<Event>, NotificationError> {
    let fail = |path: String, message: String| NotificationError { path, message };
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| fail("$".into(), format!("not JSON: {e}")))?;
    let records = doc
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("Records".into(), "missing or not an array".into()))?;
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let at = |field: &str| format!("Records[{i}].{field}");
        let str_at = |pointer: &str, field: &str| {
            r.pointer(pointer)
                .and_then(Value::as_str)
                .ok_or_else(|| fail(at(field), "missing or not a string".into()))
        };
        let name = str_at("/eventName", "eventName")?;
        // MinIO spells it `s3:ObjectCreated:Put`, S3 `ObjectCreated:Put`.
        if !name.trim_start_matches("s3:").starts_with("ObjectCreated:") {
            continue;
        }
        let bucket = str_at("/s3/bucket/name", "s3.bucket.name")?;
        let key = s3_notification_key(str_at("/s3/object/key", "s3.object.key")?);
        let Some((exec, subject)) = key
            .strip_prefix(PARTS_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .filter(|(e, s)| !e.is_empty() && !s.is_empty())
        else {
            continue;
        };
        let exec: ExecutionId = exec
            .parse()
            .map_err(|e: trigflow_core::ids::InvalidId| fail(at("s3.object.key"), e.to_string()))?;
        let event_source = r
            .pointer("/eventSource")
            .and_then(Value::as_str)
            .unwrap_or("minio:s3");
        let source = format!("{event_source}:{bucket}");
        let event = data_ready_from_s3_record(r, &source, bucket, &key, &exec, subject)
            .map_err(|p| fail(at(p.field), p.message))?;
        out.push(event);
    }
    Ok(out)
}

/// Turns MinIO's bucket notifications into data-ready events: consumes
/// [`MINIO_STREAM`] (created if missing) with a durable consumer shared by
/// every bridge, publishes the events of each notification through the
/// sink and only then acks it. A notification that is not an S3 event
/// record goes to the dead-letter stream with the reason.
#[derive(Clone)]
pub struct MinioBridge {
    local: Local,
    sink: JetStreamSink,
}

impl std::fmt::Debug for MinioBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinioBridge").finish_non_exhaustive()
    }
}

impl MinioBridge {
    /// A bridge publishing on `local`'s sink.
    pub fn new(local: &Local) -> Self {
        Self {
            local: local.clone(),
            sink: local.sink(),
        }
    }

    async fn consumer(&self) -> Result<consumer::PullConsumer, LocalError> {
        let url = self.local.config().nats_url.clone();
        let setup = |what: &str, e: &dyn std::fmt::Display| LocalError::Setup {
            what: what.to_owned(),
            url: url.clone(),
            message: e.to_string(),
        };
        let js = self.local.jetstream();
        let stream = js
            .get_or_create_stream(stream::Config {
                name: MINIO_STREAM.to_owned(),
                subjects: vec![MINIO_SUBJECT.to_owned()],
                retention: stream::RetentionPolicy::WorkQueue,
                storage: stream::StorageType::File,
                num_replicas: self.local.config().replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| setup(MINIO_STREAM, &e))?;
        stream
            .get_or_create_consumer(
                MINIO_CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(MINIO_CONSUMER.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.local.config().ack_wait,
                    max_deliver: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| setup(MINIO_CONSUMER, &e))
    }

    /// Creates the stream and consumer (so that notifications published
    /// from now on are kept) without consuming anything.
    pub async fn setup(&self) -> Result<(), LocalError> {
        self.consumer().await.map(drop)
    }

    /// Bridges until `shutdown` completes.
    pub async fn run(
        &self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), LocalError> {
        let consumer = self.consumer().await?;
        let work = async {
            loop {
                let batch = match consumer
                    .batch()
                    .max_messages(64)
                    .expires(Duration::from_millis(500))
                    .messages()
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, "pulling MinIO notifications failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let messages: Vec<_> = batch.collect().await;
                for m in messages {
                    match m {
                        Ok(m) => self.handle(m).await,
                        Err(e) => warn!(error = %e, "pulling MinIO notifications failed"),
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown => {}
            _ = work => {}
        }
        Ok(())
    }

    async fn handle(&self, m: jetstream::Message) {
        match from_s3_notification(&m.payload) {
            Ok(events) => {
                if events.is_empty() {
                    // Nothing announced (a removal, a claim-check blob).
                } else if let Err(e) = self.sink.publish(&events).await {
                    warn!(error = %e, "data-ready events not published; the notification comes back");
                    return;
                }
            }
            Err(e) => {
                let letter = DeadLetter {
                    message_id: m
                        .reply
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    event_id: None,
                    event_source: None,
                    execution: None,
                    reason: e.to_string(),
                    body: String::from_utf8_lossy(&m.payload).into_owned(),
                    at_ms: trigflow_worker::Clock::now_ms(&trigflow_worker::SystemClock),
                };
                if let Err(e) = self.sink.dead_letter(&[letter]).await {
                    warn!(error = %e, "dead letter not stored; the notification comes back");
                    return;
                }
            }
        }
        if let Err(e) = m.ack_with(AckKind::Ack).await {
            warn!(error = %e, "notification ack failed; it may be bridged again (same event ids)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode() {
        assert_eq!(s3_notification_key("a+b%2Fc%zz%4"), "a b/c%zz%4");
        assert_eq!(s3_notification_key("plain"), "plain");
    }
}
