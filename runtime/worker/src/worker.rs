//! The worker: turns batches of deliveries into engine calls and durable
//! state, in the order the guarantees need:
//!
//! 1. decode; undecodable or unaddressed messages become dead letters;
//! 2. per execution (groups run concurrently): read state + version, apply
//!    the events, write state *with its outbox* under `MatchesVersion`; on a
//!    conflict re-read and re-apply (the engine's dedup makes that safe);
//! 3. dispatch the outbox (invocations, events, timers) with the
//!    deterministic idempotency keys, then clear what was dispatched;
//! 4. report which deliveries may be acked (state written, or dead letter
//!    stored) and which must be redelivered.
//!
//! An event for an execution that does not exist yet is poison, except a
//! child execution's start event (a parent's `spawn`): the worker then
//! creates the child from its parent's triggers (precondition: absent, so
//! racing workers create it once) and applies the event as usual.
//!
//! A crash between any two steps loses nothing: unacked deliveries come
//! back, the engine drops the ones already applied, and an outbox that was
//! written but not dispatched is dispatched on the next touch of the
//! execution or by [`Worker::recover`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{debug, warn};
use trigflow_core::Engine;
use trigflow_core::cloudevents::{AttributesReader, Event};
use trigflow_core::engine::{EngineError, EventOutcome};
use trigflow_core::event::{EXT_PARENT, TYPE_STARTED, execution_of, extension_str};
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::seams::{
    DeadLetter, Delivery, EventSink, EventSource, Invoker, Precondition, StateStore, StoreError,
    Version,
};
use trigflow_core::state::{Effect, ExecutionState};

/// Milliseconds since the Unix epoch; injected so tests control time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Worker tuning.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Store key prefix of execution states.
    pub key_prefix: String,
    /// How many times a conflicting write is retried from a fresh read
    /// before the deliveries are handed back for redelivery.
    pub max_conflict_retries: u32,
    /// Redelivery delay asked of the source for retryable failures.
    pub retry_delay: Duration,
    /// Store key prefix of seen-set segments (`{prefix}{execution}/{id}`).
    pub seen_prefix: String,
    /// Once this many event keys are inline in a state, they are split off
    /// into a segment: state writes stay small however long an execution
    /// runs (4096 keys are 64 KiB in a segment, about 90 KB inline).
    pub seen_segment_keys: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            key_prefix: "exec/".into(),
            max_conflict_retries: 100,
            retry_delay: Duration::from_millis(200),
            seen_prefix: "seen/".into(),
            seen_segment_keys: 4096,
        }
    }
}

/// A worker-level failure of a direct call (start, load).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The workflow cannot start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An execution with this id exists already.
    #[error("execution {0} already exists")]
    AlreadyExists(ExecutionId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored state could not be decoded.
    #[error("state of execution {execution} cannot be decoded: {message}")]
    Corrupt {
        /// The execution.
        execution: String,
        /// The decode error.
        message: String,
    },
}

/// What to do with each delivery of a batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Deliveries fully handled (applied, duplicate, or dead-lettered): ack.
    pub acked: Vec<String>,
    /// Deliveries that failed retryably: redeliver (SQS batch-item failures).
    pub retry: Vec<String>,
    /// The subset of `acked` that went to the dead-letter place.
    pub dead_lettered: Vec<String>,
    /// Executions that reached a terminal status in this batch.
    pub finished: Vec<ExecutionId>,
}

struct Item {
    delivery: String,
    body: Vec<u8>,
}

/// The deliveries of one execution within a batch; the events are kept in a
/// vector of their own so the engine can take them without copying.
#[derive(Default)]
struct Group {
    items: Vec<Item>,
    events: Vec<Event>,
}

struct Poison {
    delivery: String,
    body: Vec<u8>,
    event: Option<Event>,
    execution: Option<String>,
    reason: String,
}

#[derive(Default)]
struct GroupResult {
    ok: Vec<String>,
    retry: Vec<String>,
    poison: Vec<Poison>,
    finished: bool,
}

/// Drives the engine through the four seams.
#[derive(Clone)]
pub struct Worker {
    engine: Engine,
    store: Arc<dyn StateStore>,
    sink: Arc<dyn EventSink>,
    invoker: Arc<dyn Invoker>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    cache: Arc<StateCache>,
}

/// Decoded states this worker wrote last, with their versions. A cached
/// state is used optimistically: the conditional write fails if anyone else
/// wrote since, and the worker then re-reads. This saves a read and a decode
/// per batch, which for a large execution is most of the cost of a batch.
#[derive(Default)]
struct StateCache {
    entries: std::sync::Mutex<HashMap<ExecutionId, (Version, ExecutionState)>>,
}

/// States kept decoded at most; beyond that the cache starts afresh (a
/// simple bound that keeps memory flat with many executions).
const CACHE_ENTRIES: usize = 256;

impl StateCache {
    fn take(&self, exec: &ExecutionId) -> Option<(Version, ExecutionState)> {
        self.entries.lock().ok()?.remove(exec)
    }

    fn put(&self, exec: ExecutionId, version: Version, state: ExecutionState) {
        if let Ok(mut m) = self.entries.lock() {
            if m.len() >= CACHE_ENTRIES {
                m.clear();
            }
            m.insert(exec, (version, state));
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker over the given seams, with the system clock.
    pub fn new(
        engine: Engine,
        store: Arc<dyn StateStore>,
        sink: Arc<dyn EventSink>,
        invoker: Arc<dyn Invoker>,
    ) -> Self {
        Self {
            engine,
            store,
            sink,
            invoker,
            clock: Arc::new(SystemClock),
            config: WorkerConfig::default(),
            cache: Arc::default(),
        }
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The state store key of an execution.
    pub fn key(&self, execution: &ExecutionId) -> String {
        format!("{}{}", self.config.key_prefix, execution)
    }

    /// Starts an execution: writes its initial state (precondition: absent)
    /// and dispatches its first effects.
    pub async fn start(
        &self,
        wf: &Workflow,
        execution: ExecutionId,
        input: Value,
    ) -> Result<ExecutionState, WorkerError> {
        let mut state = self
            .engine
            .start(wf, execution.clone(), input, self.clock.now_ms())?;
        let key = self.key(&execution);
        let bytes = encode(&state)?;
        let version = match self
            .store
            .put(&key, bytes, Precondition::DoesNotExist)
            .await
        {
            Ok(v) => v,
            Err(StoreError::PreconditionFailed { .. }) => {
                return Err(WorkerError::AlreadyExists(execution));
            }
            Err(e) => return Err(e.into()),
        };
        let (_, version) = self.dispatch(&key, &mut state, version).await;
        self.cache.put(execution, version, state.clone());
        Ok(state)
    }

    /// Reads an execution's state.
    pub async fn load(
        &self,
        execution: &ExecutionId,
    ) -> Result<Option<ExecutionState>, WorkerError> {
        match self.store.get(&self.key(execution)).await? {
            None => Ok(None),
            Some(s) => decode(execution.as_str(), &s.value).map(Some),
        }
    }

    /// Ids of every execution in the store.
    pub async fn executions(&self) -> Result<Vec<String>, WorkerError> {
        let keys = self.store.list(&self.config.key_prefix).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.config.key_prefix).map(str::to_owned))
            .collect())
    }

    /// Dispatches the outbox of every execution that has one: run at
    /// start-up so that effects decided before a crash are not stranded.
    /// Returns how many effects were dispatched.
    pub async fn recover(&self) -> Result<usize, WorkerError> {
        let mut n = 0;
        for key in self.store.list(&self.config.key_prefix).await? {
            let Some(stored) = self.store.get(&key).await? else {
                continue;
            };
            let mut state = decode(&key, &stored.value)?;
            if !state.outbox.is_empty() {
                n += self.dispatch(&key, &mut state, stored.version).await.0;
            }
        }
        Ok(n)
    }

    /// Handles one batch. Never fails as a whole: every delivery ends up in
    /// `acked` or `retry` of the report.
    pub async fn process_batch(&self, deliveries: Vec<Delivery>) -> BatchReport {
        let mut poison = Vec::new();
        let mut groups: HashMap<ExecutionId, Group> = HashMap::new();
        let mut order: Vec<ExecutionId> = Vec::new();
        for d in deliveries {
            match decode_delivery(&d) {
                Ok((exec, event)) => {
                    let group = groups.entry(exec.clone()).or_insert_with(|| {
                        order.push(exec);
                        Group::default()
                    });
                    group.items.push(Item {
                        delivery: d.id,
                        body: d.body,
                    });
                    group.events.push(event);
                }
                Err(failure) => {
                    let (reason, event, execution) = *failure;
                    poison.push(Poison {
                        delivery: d.id,
                        body: d.body,
                        event,
                        execution,
                        reason,
                    })
                }
            }
        }
        let results = futures::future::join_all(order.into_iter().map(|exec| {
            let items = groups.remove(&exec).unwrap_or_default();
            async move {
                let r = self.process_execution(&exec, items).await;
                (exec, r)
            }
        }))
        .await;
        let mut report = BatchReport::default();
        for (exec, r) in results {
            report.acked.extend(r.ok);
            report.retry.extend(r.retry);
            poison.extend(r.poison);
            if r.finished {
                report.finished.push(exec);
            }
        }
        if !poison.is_empty() {
            let now = self.clock.now_ms();
            let letters: Vec<DeadLetter> = poison
                .iter()
                .map(|p| DeadLetter {
                    message_id: p.delivery.clone(),
                    event_id: p.event.as_ref().map(|e| e.id().to_owned()),
                    event_source: p.event.as_ref().map(|e| e.source().to_string()),
                    execution: p.execution.clone(),
                    reason: p.reason.clone(),
                    body: String::from_utf8_lossy(&p.body).into_owned(),
                    at_ms: now,
                })
                .collect();
            for l in &letters {
                warn!(message = %l.message_id, execution = ?l.execution, reason = %l.reason, "dead letter");
            }
            match self.sink.dead_letter(&letters).await {
                Ok(()) => {
                    for p in poison {
                        report.dead_lettered.push(p.delivery.clone());
                        report.acked.push(p.delivery);
                    }
                }
                // Never ack what could not be stored anywhere.
                Err(e) => {
                    warn!(error = %e, "dead-letter write failed; messages will be redelivered");
                    report.retry.extend(poison.into_iter().map(|p| p.delivery));
                }
            }
        }
        report
    }

    async fn process_execution(&self, exec: &ExecutionId, group: Group) -> GroupResult {
        let Group { items, events } = group;
        let key = self.key(exec);
        let mut result = GroupResult::default();
        let mut backoff = Duration::from_millis(1);
        let mut cached = self.cache.take(exec);
        for attempt in 0..=self.config.max_conflict_retries {
            let from_cache = cached.is_some();
            let (base_version, mut state) = match cached.take() {
                Some(c) => c,
                None => match self.read(&key, exec).await {
                    Ok(Some(c)) => c,
                    Ok(None) => match self.start_child(exec, &events).await {
                        ChildStart::Started(v, s) => (v, *s),
                        // Another worker created it first: read theirs.
                        ChildStart::Raced => continue,
                        ChildStart::NotAChild => {
                            result.poison = into_poison(
                                items,
                                events,
                                exec,
                                &format!("unknown execution {exec}"),
                            );
                            return result;
                        }
                        ChildStart::Poison(reason) => {
                            result.poison = into_poison(items, events, exec, &reason);
                            return result;
                        }
                        ChildStart::Retry => {
                            result.retry = items.into_iter().map(|i| i.delivery).collect();
                            return result;
                        }
                    },
                    Err(ReadError::Corrupt(reason)) => {
                        result.poison = into_poison(items, events, exec, &reason);
                        return result;
                    }
                    Err(ReadError::Store(e)) => {
                        warn!(execution = %exec, error = %e, "state read failed");
                        result.retry = items.into_iter().map(|i| i.delivery).collect();
                        return result;
                    }
                },
            };
            let was_terminal = state.status.is_terminal();
            let outcomes = self.engine.apply(&mut state, &events, self.clock.now_ms());
            let changed = outcomes
                .iter()
                .any(|o| matches!(o, EventOutcome::Applied { .. }));
            // Without a write, no conditional write checks that a cached
            // state is still current; another worker may have moved the
            // execution on since. A poison verdict must not rest on such a
            // stale state (a join whose count a newer state has set): read
            // afresh and decide again.
            if from_cache
                && !changed
                && outcomes
                    .iter()
                    .any(|o| matches!(o, EventOutcome::Poison { .. }))
            {
                continue;
            }
            let version = if changed {
                if let Err(e) = self.split_seen_if_large(&mut state).await {
                    warn!(execution = %exec, error = %e, "seen-set segment write failed");
                    result.retry = items.into_iter().map(|i| i.delivery).collect();
                    return result;
                }
                let bytes = match state.to_bytes() {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(execution = %exec, error = %e, "state encode failed");
                        result.retry = items.into_iter().map(|i| i.delivery).collect();
                        return result;
                    }
                };
                match self
                    .store
                    .put(&key, bytes, Precondition::MatchesVersion(base_version))
                    .await
                {
                    Ok(v) => v,
                    Err(StoreError::PreconditionFailed { .. }) => {
                        debug!(execution = %exec, attempt, "write conflict, retrying from a fresh read");
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_millis(50));
                        continue;
                    }
                    Err(e) => {
                        warn!(execution = %exec, error = %e, "state write failed");
                        result.retry = items.into_iter().map(|i| i.delivery).collect();
                        return result;
                    }
                }
            } else {
                base_version
            };
            // The state (with its outbox) is durable: every delivery is now
            // handled, whatever happens to dispatch.
            result.finished = !was_terminal && state.status.is_terminal();
            for ((item, event), outcome) in items.into_iter().zip(events).zip(outcomes) {
                match outcome {
                    EventOutcome::Poison { reason } => result.poison.push(Poison {
                        delivery: item.delivery,
                        body: item.body,
                        event: Some(event),
                        execution: Some(exec.to_string()),
                        reason,
                    }),
                    _ => result.ok.push(item.delivery),
                }
            }
            let pending = state.outbox.len();
            let version = if pending == 0 {
                version
            } else {
                let (dispatched, version) = self.dispatch(&key, &mut state, version).await;
                // An effect that failed to dispatch stays in the outbox, but
                // nothing would touch the execution again if these were its
                // last events: hand them back so that the queue redelivers
                // them after the retry delay, and that touch (duplicates,
                // no state change) dispatches the outbox again.
                if dispatched < pending {
                    result.retry.append(&mut result.ok);
                }
                version
            };
            self.cache.put(exec.clone(), version, state);
            return result;
        }
        warn!(execution = %exec, "gave up after repeated write conflicts; redelivering");
        result.retry = items.into_iter().map(|i| i.delivery).collect();
        result
    }

    /// Creates a child execution from its start event (a `spawn` of its
    /// parent), if `events` hold one: reads the parent (the child runs its
    /// triggers) and writes the child's first state, precondition absent.
    async fn start_child(&self, exec: &ExecutionId, events: &[Event]) -> ChildStart {
        let Some((start, parent)) = events.iter().find_map(|e| {
            (e.ty() == TYPE_STARTED)
                .then(|| extension_str(e, EXT_PARENT))
                .flatten()
                .map(|p| (e, p))
        }) else {
            return ChildStart::NotAChild;
        };
        let parent: ExecutionId = match parent.parse() {
            Ok(p) => p,
            Err(e) => return ChildStart::Poison(format!("child {exec}: {e}")),
        };
        let parent_state = match self.read(&self.key(&parent), &parent).await {
            Ok(Some((_, s))) => s,
            Ok(None) => {
                return ChildStart::Poison(format!(
                    "child {exec} names an unknown parent execution {parent}"
                ));
            }
            Err(ReadError::Corrupt(reason)) => return ChildStart::Poison(reason),
            Err(ReadError::Store(e)) => {
                warn!(execution = %exec, parent = %parent, error = %e, "parent read failed");
                return ChildStart::Retry;
            }
        };
        let state = match self
            .engine
            .start_child(&parent_state, start, self.clock.now_ms())
        {
            Ok(s) => s,
            Err(e) => return ChildStart::Poison(e.to_string()),
        };
        let Ok(bytes) = state.to_bytes() else {
            return ChildStart::Retry;
        };
        match self
            .store
            .put(&self.key(exec), bytes, Precondition::DoesNotExist)
            .await
        {
            Ok(v) => ChildStart::Started(v, Box::new(state)),
            Err(StoreError::PreconditionFailed { .. }) => ChildStart::Raced,
            Err(e) => {
                warn!(execution = %exec, error = %e, "child state write failed");
                ChildStart::Retry
            }
        }
    }

    async fn read(
        &self,
        key: &str,
        exec: &ExecutionId,
    ) -> Result<Option<(Version, ExecutionState)>, ReadError> {
        let Some(stored) = self.store.get(key).await.map_err(ReadError::Store)? else {
            return Ok(None);
        };
        let mut state = ExecutionState::from_bytes(&stored.value).map_err(|e| {
            ReadError::Corrupt(format!("state of execution {exec} cannot be decoded: {e}"))
        })?;
        for id in state.seen_segments.clone() {
            let seg_key = self.segment_key(&state.execution, &id);
            let Some(seg) = self.store.get(&seg_key).await.map_err(ReadError::Store)? else {
                return Err(ReadError::Corrupt(format!(
                    "seen-set segment {seg_key} of execution {exec} is missing"
                )));
            };
            state
                .load_segment(&seg.value)
                .map_err(|e| ReadError::Corrupt(format!("{seg_key}: {e}")))?;
        }
        Ok(Some((stored.version, state)))
    }

    fn segment_key(&self, exec: &ExecutionId, id: &str) -> String {
        format!("{}{exec}/{id}", self.config.seen_prefix)
    }

    /// Splits the inline seen-set off into a new segment once it is large,
    /// storing the segment (precondition: absent) before the state that
    /// lists it is written. If that state write then loses a race, the
    /// segment is simply never listed.
    async fn split_seen_if_large(&self, state: &mut ExecutionState) -> Result<(), StoreError> {
        if state.seen.0.len() < self.config.seen_segment_keys.max(1) {
            return Ok(());
        }
        let id = segment_id();
        let key = self.segment_key(&state.execution, &id);
        // Split in place: if the segment write fails the caller drops this
        // state (it is neither written nor cached) and retries from a read.
        let bytes = state.split_seen(id);
        self.store
            .put(&key, bytes, Precondition::DoesNotExist)
            .await?;
        Ok(())
    }

    /// Dispatches the outbox, then removes what was dispatched. Returns how
    /// many effects were dispatched. Failures stay in the outbox and are
    /// retried on the next touch or by [`Worker::recover`].
    async fn dispatch(
        &self,
        key: &str,
        state: &mut ExecutionState,
        version: Version,
    ) -> (usize, Version) {
        let mut done = Vec::new();
        let mut invocations = Vec::new();
        let mut events = Vec::new();
        let mut event_keys = Vec::new();
        for p in &state.outbox {
            match &p.effect {
                Effect::Invoke(inv) => invocations.push(inv.clone()),
                Effect::Publish { event } => {
                    events.push(event.clone());
                    event_keys.push(p.key.clone());
                }
                Effect::Timer { fire_at_ms, event } => {
                    match self.sink.schedule(*fire_at_ms, event).await {
                        Ok(()) => done.push(p.key.clone()),
                        Err(e) => {
                            warn!(key = %p.key, error = %e, "timer schedule failed; will retry")
                        }
                    }
                }
            }
        }
        if !invocations.is_empty() {
            let results = self.invoker.invoke_batch(&invocations).await;
            for (inv, r) in invocations.into_iter().zip(results) {
                match r {
                    Ok(()) => done.push(inv.key),
                    Err(e) => warn!(key = %inv.key, error = %e, "dispatch failed; will retry"),
                }
            }
        }
        if !events.is_empty() {
            match self.sink.publish(&events).await {
                Ok(()) => done.extend(event_keys),
                Err(e) => warn!(error = %e, "publish failed; will retry"),
            }
        }
        let n = done.len();
        let version = if n > 0 {
            self.clear(key, state, version, &done).await
        } else {
            version
        };
        (n, version)
    }

    /// Removes dispatched entries from the stored outbox. Best effort: an
    /// entry left behind is dispatched again with the same key, which the
    /// receiving side recognises.
    async fn clear(
        &self,
        key: &str,
        state: &mut ExecutionState,
        mut version: Version,
        done: &[String],
    ) -> Version {
        for _ in 0..=self.config.max_conflict_retries {
            state.clear_dispatched(done);
            let Ok(bytes) = state.to_bytes() else {
                return version;
            };
            match self
                .store
                .put(key, bytes, Precondition::MatchesVersion(version.clone()))
                .await
            {
                Ok(v) => return v,
                // Re-read whole (segments included): this state goes back
                // into the cache and must still know every event it saw.
                Err(StoreError::PreconditionFailed { .. }) => {
                    let exec = state.execution.clone();
                    match self.read(key, &exec).await {
                        Ok(Some((v, fresh))) => {
                            *state = fresh;
                            version = v;
                        }
                        _ => return version,
                    }
                }
                Err(e) => {
                    debug!(error = %e, "outbox clear failed; entries will be re-dispatched");
                    return version;
                }
            }
        }
        version
    }

    /// Pulls batches from `source` until `shutdown` completes, acking and
    /// retrying as each batch's report says; `on_report` sees each report as
    /// soon as its state writes are durable (e.g. to notice finished
    /// executions), while its acks overlap the next batch.
    pub async fn run(
        &self,
        source: &dyn EventSource,
        batch_size: usize,
        shutdown: impl Future<Output = ()>,
        mut on_report: impl FnMut(&BatchReport),
    ) {
        tokio::pin!(shutdown);
        // The acks of one batch overlap the processing of the next: an ack
        // only needs the batch's state writes to be durable, which they are
        // once its report exists, and acking is a write of its own.
        let mut unacked: Option<BatchReport> = None;
        loop {
            let batch = tokio::select! {
                _ = &mut shutdown => {
                    if let Some(r) = unacked.take() {
                        self.settle(source, &r).await;
                    }
                    return;
                }
                b = source.receive(batch_size, Duration::from_millis(200)) => b,
            };
            let deliveries = match batch {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "receive failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let previous = unacked.take();
            let settle_previous = async {
                if let Some(r) = &previous {
                    self.settle(source, r).await;
                }
            };
            if deliveries.is_empty() {
                settle_previous.await;
            } else {
                let (report, ()) = tokio::join!(self.process_batch(deliveries), settle_previous);
                // Reported at once (the state writes are durable), not after
                // the acks: a caller waiting for an execution to finish must
                // not wait for the next receive to return.
                on_report(&report);
                unacked = Some(report);
            }
        }
    }

    /// Acks and retries a batch as its report says.
    async fn settle(&self, source: &dyn EventSource, report: &BatchReport) {
        if !report.acked.is_empty()
            && let Err(e) = source.ack(&report.acked).await
        {
            warn!(error = %e, "ack failed; messages will be redelivered and deduplicated");
        }
        if !report.retry.is_empty()
            && let Err(e) = source.retry(&report.retry, self.config.retry_delay).await
        {
            warn!(error = %e, "retry (nack) failed");
        }
    }
}

fn encode(state: &ExecutionState) -> Result<Vec<u8>, WorkerError> {
    state.to_bytes().map_err(|e| WorkerError::Corrupt {
        execution: state.execution.to_string(),
        message: e.to_string(),
    })
}

fn decode(what: &str, bytes: &[u8]) -> Result<ExecutionState, WorkerError> {
    ExecutionState::from_bytes(bytes).map_err(|e| WorkerError::Corrupt {
        execution: what.to_owned(),
        message: e.to_string(),
    })
}

/// A segment id unique across processes and racing writers: the process's
/// start time and id, and a per-process counter.
fn segment_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos ^ (u64::from(std::process::id()) << 32)
    });
    format!("{seed:016x}-{:08x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

enum ReadError {
    Store(StoreError),
    Corrupt(String),
}

/// What [`Worker::start_child`] did for an unknown execution.
enum ChildStart {
    /// Created: the child's first state, written at this version.
    Started(Version, Box<ExecutionState>),
    /// Someone else created it first.
    Raced,
    /// The events hold no child start event.
    NotAChild,
    /// The start event cannot start a child.
    Poison(String),
    /// The store failed; redeliver.
    Retry,
}

// Boxed: an Event is large and failures are rare.
type DecodeFailure = Box<(String, Option<Event>, Option<String>)>;

fn decode_delivery(d: &Delivery) -> Result<(ExecutionId, Event), DecodeFailure> {
    let event: Event = trigflow_core::event::decode(&d.body).map_err(|e| {
        Box::new((
            format!(
                "message {} is not a structured-mode CloudEvent (JSON): {e} (line {}, column {})",
                d.id,
                e.line(),
                e.column()
            ),
            None,
            None,
        ))
    })?;
    match execution_of(&event) {
        Some(Ok(exec)) => Ok((exec, event)),
        Some(Err(e)) => {
            let reason = format!("event {} from {}: {e}", event.id(), event.source());
            Err(Box::new((reason, Some(event), None)))
        }
        None => {
            let reason = format!(
                "event {} from {} has no `{}` extension attribute naming its execution",
                event.id(),
                event.source(),
                trigflow_core::event::EXT_EXECUTION
            );
            Err(Box::new((reason, Some(event), None)))
        }
    }
}

fn into_poison(
    items: Vec<Item>,
    events: Vec<Event>,
    exec: &ExecutionId,
    reason: &str,
) -> Vec<Poison> {
    items
        .into_iter()
        .zip(events)
        .map(|(i, event)| Poison {
            reason: reason.to_owned(),
            delivery: i.delivery,
            body: i.body,
            event: Some(event),
            execution: Some(exec.to_string()),
        })
        .collect()
}

/// Up to 50% random-ish jitter so racing workers spread out, without a
/// random number generator dependency: the sub-millisecond clock is noise
/// enough for this.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let frac = f64::from(nanos % 1000) / 2000.0;
    d + d.mul_f64(frac)
}
