//! The four seams between the worker and the world. Each is an object-safe
//! async trait with one implementation per mode (embedded, local, AWS, ...),
//! held as `Arc<dyn ...>` and chosen from configuration.
//!
//! Every error says whether retrying can help: the worker turns a retryable
//! error into a redelivery (nack / batch-item failure) and a terminal one
//! into a dead letter with the reason.

use std::time::Duration;

use async_trait::async_trait;
use cloudevents::Event;
use serde::{Deserialize, Serialize};

use crate::state::Invocation;

/// Opaque version of a stored value (a counter, a JetStream revision, a
/// DynamoDB version attribute, an ETag). Only equality is meaningful.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version(pub String);

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Condition a write must meet, checked atomically with the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally.
    None,
    /// The key must not exist.
    DoesNotExist,
    /// The key must exist with exactly this version.
    MatchesVersion(Version),
}

/// A stored value with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The bytes.
    pub value: Vec<u8>,
    /// Their version.
    pub version: Version,
}

/// A state store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The precondition did not hold: someone else wrote first. Retry from a
    /// fresh read.
    #[error("precondition failed for key {key:?}")]
    PreconditionFailed {
        /// The key.
        key: String,
    },
    /// The backend failed (network, throttling, disk); `retryable` tells
    /// whether trying again may succeed.
    #[error("state store backend error on key {key:?}: {message}")]
    Backend {
        /// The key.
        key: String,
        /// What failed.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
    },
    /// The value is larger than the backend accepts.
    #[error("value for key {key:?} is {size} bytes, over the store's limit of {limit}")]
    TooLarge {
        /// The key.
        key: String,
        /// Size of the value.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl StoreError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::PreconditionFailed { .. } => true,
            StoreError::Backend { retryable, .. } => *retryable,
            StoreError::TooLarge { .. } => false,
        }
    }
}

/// Versioned key-value storage with conditional writes.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Reads a key with its version.
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError>;
    /// Writes a key if `pre` holds, returning the new version. A failed
    /// precondition is [`StoreError::PreconditionFailed`].
    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<Version, StoreError>;
    /// Deletes a key if `pre` holds. Deleting a missing key with
    /// `Precondition::None` succeeds.
    async fn delete(&self, key: &str, pre: Precondition) -> Result<(), StoreError>;
    /// Keys starting with `prefix`, in lexical order.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// One message from an event source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Id for ack / retry (queue message id or receipt handle).
    pub id: String,
    /// The raw message body (a structured-mode CloudEvent in JSON, or a
    /// provider payload that an adapter normalises).
    pub body: Vec<u8>,
    /// How many times this message has been delivered, from 1.
    pub attempt: u32,
}

/// An event source failure.
#[derive(Debug, thiserror::Error)]
#[error("event source error: {message}")]
pub struct SourceError {
    /// What failed.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
}

/// Where batches of events come from.
#[async_trait]
pub trait EventSource: Send + Sync {
    /// Up to `max` deliveries, waiting at most `wait` for the first one.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, SourceError>;
    /// The deliveries were fully processed: never deliver them again.
    async fn ack(&self, ids: &[String]) -> Result<(), SourceError>;
    /// The deliveries failed retryably: deliver them again after `delay`.
    async fn retry(&self, ids: &[String], delay: Duration) -> Result<(), SourceError>;
}

/// A message that could not be processed, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id of the delivery it came in.
    pub message_id: String,
    /// Event id, if the message decoded as an event.
    pub event_id: Option<String>,
    /// Event source, if the message decoded as an event.
    pub event_source: Option<String>,
    /// Execution, if known.
    pub execution: Option<String>,
    /// Why it was rejected.
    pub reason: String,
    /// The message body, as text (lossy for binary bodies).
    pub body: String,
    /// When (ms since the Unix epoch).
    pub at_ms: i64,
}

/// An event sink failure.
#[derive(Debug, thiserror::Error)]
#[error("event sink error: {message}")]
pub struct SinkError {
    /// What failed.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
}

/// Where events, timers and dead letters go.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes events for delivery through the event source. Publishing the
    /// same (source, id) twice is allowed: the engine drops duplicates.
    async fn publish(&self, events: &[Event]) -> Result<(), SinkError>;
    /// Publishes `event` at `fire_at_ms` (ms since the Unix epoch). Scheduled
    /// events must survive a restart of the process.
    async fn schedule(&self, fire_at_ms: i64, event: &Event) -> Result<(), SinkError>;
    /// Stores dead letters durably.
    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), SinkError>;
}

/// An invoker failure.
#[derive(Debug, thiserror::Error)]
#[error("cannot invoke {function:?} ({key}): {message}")]
pub struct InvokeError {
    /// The function reference.
    pub function: String,
    /// The idempotency key.
    pub key: String,
    /// What failed.
    pub message: String,
    /// Whether trying again may succeed.
    pub retryable: bool,
}

/// Dispatches function calls. `invoke` returns once the call is durably
/// accepted (queued, started, or done); the result comes back later as a
/// `function.succeeded` / `function.failed` event, built with
/// [`Invocation::completion`]. The same invocation may be dispatched more than
/// once after a crash; its key is the same each time.
#[async_trait]
pub trait Invoker: Send + Sync {
    /// Dispatches one call.
    async fn invoke(&self, invocation: &Invocation) -> Result<(), InvokeError>;

    /// Dispatches several calls, returning one result per call in order. The
    /// default dispatches them one at a time; backends that can record many
    /// calls in one write (a transaction, a batch API) override it, which is
    /// what makes a fan-out of thousands cheap.
    async fn invoke_batch(&self, invocations: &[Invocation]) -> Vec<Result<(), InvokeError>> {
        let mut out = Vec::with_capacity(invocations.len());
        for inv in invocations {
            out.push(self.invoke(inv).await);
        }
        out
    }
}
