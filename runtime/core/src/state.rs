//! Execution state: what the state store holds for one execution.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use cloudevents::Event;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{EventKey, NewEvent, TYPE_FAILED, TYPE_SUCCEEDED};
use crate::ids::{ExecutionId, TriggerId, WorkflowId};
use crate::model::TriggerSpec;

/// Where an execution stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Still waiting for events.
    Running,
    /// Finished with an output.
    Succeeded {
        /// The output.
        output: Value,
    },
    /// Finished with an error.
    Failed {
        /// Error name.
        error: String,
        /// Details.
        cause: Value,
    },
}

impl ExecutionStatus {
    /// Whether the execution has finished.
    pub fn is_terminal(&self) -> bool {
        !matches!(self, ExecutionStatus::Running)
    }
}

/// Per-trigger condition state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CondState {
    /// Events counted so far (join, quorum successes, window).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: u64,
    /// Failures counted (quorum).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u64,
    /// The join size once resolved (for dynamic joins it is read once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// Accumulator of a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acc: Option<f64>,
    /// Arrival times (ms) inside a window.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub times: VecDeque<i64>,
    /// Collected event data, keyed by zero-padded index, else by subject
    /// (or `subject/id` once two events share a subject).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub results: BTreeMap<String, Value>,
    /// Event id of each subject-keyed result, so that a second event with the
    /// same subject can re-key the first one as `subject/id`. Keeping the
    /// rule "plain subject iff exactly one event has it" makes the collected
    /// results independent of arrival order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subject_ids: BTreeMap<String, String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A trigger installed in an execution, with its runtime state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    /// The definition.
    pub spec: TriggerSpec,
    /// Condition state.
    #[serde(default)]
    pub cond: CondState,
    /// How many times it fired.
    #[serde(default)]
    pub fired: u64,
}

/// A function call decided by the engine, to be dispatched by an invoker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// Deterministic idempotency key: `{execution}/{sequence}`. The same
    /// decision always carries the same key, so a dispatch retried after a
    /// crash is recognisable as the same call.
    pub key: String,
    /// The execution.
    pub execution: ExecutionId,
    /// The workflow.
    pub workflow: WorkflowId,
    /// The trigger that decided the call.
    pub trigger: TriggerId,
    /// Subject of the result events.
    pub step: String,
    /// Function reference.
    pub function: String,
    /// Input document.
    pub input: Value,
    /// Foreach index, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// Attempt number, from 1.
    pub attempt: u32,
}

/// Why a function call failed, as carried by a `function.failed` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionError {
    /// Error name (e.g. `ExitCode`, `Timeout`, `Http500`).
    pub error: String,
    /// Details.
    pub cause: String,
}

impl Invocation {
    /// The source of this invocation's result events.
    pub fn result_source(&self) -> String {
        format!("trigflow/{}/{}", self.execution, self.step)
    }

    /// The event reporting this invocation's result. Its id is the
    /// idempotency key, so if the call ran twice both results have the same
    /// (source, id) and the engine counts only one.
    pub fn completion(
        &self,
        result: Result<Value, FunctionError>,
    ) -> Result<Event, cloudevents::event::EventBuilderError> {
        let source = self.result_source();
        let (ty, data) = match result {
            Ok(v) => (TYPE_SUCCEEDED, v),
            Err(e) => (
                TYPE_FAILED,
                serde_json::json!({"error": e.error, "cause": e.cause}),
            ),
        };
        NewEvent {
            source: &source,
            id: &self.key,
            ty,
            subject: Some(&self.step),
            execution: Some(&self.execution),
            index: self.index,
            attempt: Some(self.attempt),
            data: Some(data),
        }
        .build()
    }
}

/// An effect decided by the engine and not yet dispatched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Call a function.
    Invoke(Invocation),
    /// Publish an event to the execution's stream.
    Publish {
        /// The event.
        event: Event,
    },
    /// Publish an event at a time.
    Timer {
        /// When, in ms since the Unix epoch.
        fire_at_ms: i64,
        /// The event.
        event: Event,
    },
}

/// An outbox entry: an effect and its idempotency key, written in the same
/// state write as the firing decision that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Deterministic key (`{execution}/{sequence}`).
    pub key: String,
    /// The effect. Nested rather than flattened: an invocation has its own
    /// `key` field, and a flattened one would write `key` twice, which
    /// cannot be read back.
    pub effect: Effect,
}

/// A firing, kept for `trigflow history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    /// Sequence number of the firing within the execution.
    pub seq: u64,
    /// The trigger.
    pub trigger: TriggerId,
    /// Id of the event that fired it.
    pub event_id: String,
    /// Type of that event.
    pub event_type: String,
    /// Engine clock at the firing (ms since the Unix epoch).
    pub at_ms: i64,
    /// `fire` or `fail` (quorum failure).
    pub outcome: String,
}

/// Hasher for [`EventKey`]s: they are already uniformly distributed 128-bit
/// hashes, so hashing them again (SipHash) is wasted work on the hottest
/// path of the engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for EventKey (which writes one u128); a simple mix
        // keeps other uses correct.
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64 ^ (v >> 64) as u64;
    }
}

/// The set type of [`SeenSet`].
pub type KeySet = HashSet<EventKey, std::hash::BuildHasherDefault<KeyHasher>>;

/// The seen-set of an execution, stored compactly as base64 of 16-byte keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeenSet(pub KeySet);

impl Serialize for SeenSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Streamed: the keys are base64-encoded three at a time (48 bytes,
        // 64 characters, no padding in between) straight into the output,
        // instead of building the raw bytes and the text first. For an
        // execution with a large seen-set that is most of the memory a state
        // write needs. Iteration order, not sorted: the encoding need not be
        // canonical, and sorting on every write costs more than the write.
        s.collect_str(&SeenBase64(&self.0))
    }
}

struct SeenBase64<'a>(&'a KeySet);

impl std::fmt::Display for SeenBase64<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use base64::Engine as _;
        let engine = &base64::engine::general_purpose::STANDARD;
        let mut chunk = [0u8; 48];
        let mut filled = 0;
        let mut text = [0u8; 64];
        let mut flush = |bytes: &[u8], f: &mut std::fmt::Formatter<'_>| -> std::fmt::Result {
            let n = engine
                .encode_slice(bytes, &mut text)
                .map_err(|_| std::fmt::Error)?;
            // base64 output is ASCII.
            f.write_str(std::str::from_utf8(&text[..n]).map_err(|_| std::fmt::Error)?)
        };
        for k in self.0 {
            chunk[filled..filled + 16].copy_from_slice(&k.0.to_le_bytes());
            filled += 16;
            if filled == chunk.len() {
                flush(&chunk, f)?;
                filled = 0;
            }
        }
        if filled > 0 {
            flush(&chunk[..filled], f)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for SeenSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)?;
        if !bytes.len().is_multiple_of(16) {
            return Err(serde::de::Error::custom(
                "seen-set length is not a multiple of 16",
            ));
        }
        let mut set = KeySet::with_capacity_and_hasher(bytes.len() / 16, Default::default());
        for chunk in bytes.chunks_exact(16) {
            let mut b = [0u8; 16];
            b.copy_from_slice(chunk);
            set.insert(EventKey(u128::from_le_bytes(b)));
        }
        Ok(SeenSet(set))
    }
}

/// Where a child execution reports its end (see
/// [`Action::Spawn`](crate::model::Action::Spawn)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    /// The parent execution.
    pub execution: ExecutionId,
    /// Subject of the completion event the parent receives.
    pub reply: String,
    /// The child's index, carried by the completion as `trigflowindex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
}

/// Everything the engine knows about one execution. The worker stores it
/// whole, with the outbox, in one conditional write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionState {
    /// The execution.
    pub execution: ExecutionId,
    /// The workflow it runs.
    pub workflow: WorkflowId,
    /// The workflow version.
    pub version: u32,
    /// Status.
    #[serde(flatten)]
    pub status: ExecutionStatus,
    /// Execution context (an object; the input is under `input`).
    pub context: Value,
    /// For a child execution: the parent it reports its end to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// Installed triggers by id.
    pub triggers: BTreeMap<TriggerId, TriggerState>,
    /// Effects decided and not yet acknowledged as dispatched.
    pub outbox: Vec<Pending>,
    /// Next sequence number for idempotency keys.
    pub next_seq: u64,
    /// Events applied (not counting duplicates).
    pub events_applied: u64,
    /// Firings, oldest first.
    pub history: Vec<Firing>,
    /// Start time (ms since the Unix epoch, engine clock).
    pub started_ms: i64,
    /// Dedup: keys of events applied since the last segment was split off
    /// (see [`ExecutionState::split_seen`]); kept inline in the state.
    pub seen: SeenSet,
    /// Ids of the seen-set segments stored beside the state, oldest first.
    /// A long execution's seen-set grows with every event; keeping all of it
    /// inline would make every state write rewrite it, and would outgrow
    /// the item limits of DynamoDB (400 KB) and NATS KV (1 MiB).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen_segments: Vec<String>,
    /// Keys of the stored segments, loaded by the worker; not serialized.
    #[serde(skip)]
    pub archived: KeySet,
    /// Index from exact subject to trigger ids; rebuilt after loading.
    #[serde(skip)]
    pub(crate) index: Option<SubjectIndex>,
}

/// Trigger lookup by subject, so that matching an event costs one hash
/// lookup instead of a scan of every trigger.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubjectIndex {
    pub(crate) exact: HashMap<String, Vec<TriggerId>>,
    pub(crate) other: Vec<TriggerId>,
}

impl ExecutionState {
    /// Encodes for the state store.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        // Sized up front for the seen-set (22 base64 characters a key), the
        // bulk of a large state, so the buffer is not regrown by doubling.
        let mut out = Vec::with_capacity(self.seen.0.len() * 22 + 4096);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }

    /// Decodes from the state store.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether an event with this key was applied (inline or archived).
    pub fn has_seen(&self, key: &EventKey) -> bool {
        self.seen.0.contains(key) || self.archived.contains(key)
    }

    /// Splits the inline seen-set off as a segment named `id`: returns its
    /// encoding (16 bytes a key) for the caller to store *before* the state,
    /// moves the keys to `archived` and records the segment. Storing the
    /// segment first means a crash leaves at worst a segment nobody lists.
    pub fn split_seen(&mut self, id: String) -> Vec<u8> {
        let keys = std::mem::take(&mut self.seen.0);
        let mut bytes = Vec::with_capacity(keys.len() * 16);
        for k in &keys {
            bytes.extend_from_slice(&k.0.to_le_bytes());
        }
        self.archived.extend(keys);
        self.seen_segments.push(id);
        bytes
    }

    /// Adds a stored segment's keys (as written by [`Self::split_seen`]) to
    /// `archived`.
    pub fn load_segment(&mut self, bytes: &[u8]) -> Result<(), String> {
        if !bytes.len().is_multiple_of(16) {
            return Err(format!(
                "seen-set segment of {} bytes is not a multiple of 16",
                bytes.len()
            ));
        }
        self.archived.reserve(bytes.len() / 16);
        for chunk in bytes.chunks_exact(16) {
            let mut b = [0u8; 16];
            b.copy_from_slice(chunk);
            self.archived.insert(EventKey(u128::from_le_bytes(b)));
        }
        Ok(())
    }

    /// Removes outbox entries whose keys are in `done` (after dispatch was
    /// acknowledged). Unknown keys are ignored, so this is idempotent.
    pub fn clear_dispatched(&mut self, done: &[String]) {
        if done.is_empty() {
            return;
        }
        let done: HashSet<&str> = done.iter().map(String::as_str).collect();
        self.outbox.retain(|p| !done.contains(p.key.as_str()));
    }
}
