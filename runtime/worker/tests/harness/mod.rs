//! An in-memory "cluster" for the worker's model tests: a queue of
//! deliveries, an event sink and an invoker that record into it, functions
//! the harness runs itself (pure, at least once), and fault injection at
//! every I/O point the worker has.
//!
//! A crash is modelled the way a durable store sees `kill -9`: the N-th I/O
//! call (store, sink or invoker) never completes, every later call of the
//! same incarnation never starts, and the harness drops the whole in-flight
//! future. Each store call is atomic, so a crash lands either before a write
//! (nothing happened) or after it (it happened, but the worker never saw the
//! result).

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use trigflow_core::Engine;
use trigflow_core::cloudevents::{AttributesReader, Event};
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::seams::{
    DeadLetter, Delivery, EventSink, InvokeError, Invoker, Precondition, SinkError, StateStore,
    StoreError, Stored, Version,
};
use trigflow_core::state::{ExecutionState, ExecutionStatus, FunctionError, Invocation};
use trigflow_worker::memory::MemoryStore;
use trigflow_worker::{BatchReport, Clock, Worker, WorkerError};

/// The execution every schedule runs.
pub const EXECUTION: &str = "exec-1";

/// A logical function call: its step and foreach index. The same logical
/// call must always carry the same idempotency key.
pub type CallId = (String, Option<u64>);

/// Locks a mutex, ignoring poisoning: a panicking schedule is reported with
/// its seed anyway, and the data is only read for diagnostics after that.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------
// Fault injection

/// What happens at a planned I/O call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 before the call: it never happens.
    CrashBefore,
    /// kill -9 after the call took effect, before the worker saw the result.
    CrashAfter,
    /// The call fails retryably and has no effect.
    Fail,
    /// The call takes effect but reports a retryable failure (a timeout
    /// after the write went through).
    FailAfter,
}

impl Fault {
    /// Whether this fault kills the worker.
    pub fn is_crash(self) -> bool {
        matches!(self, Fault::CrashBefore | Fault::CrashAfter)
    }
}

/// The I/O points of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `StateStore::get`.
    Get,
    /// `StateStore::put`.
    Put,
    /// `StateStore::delete`.
    Delete,
    /// `StateStore::list`.
    List,
    /// `EventSink::publish`.
    Publish,
    /// `EventSink::schedule`.
    Schedule,
    /// `EventSink::dead_letter`.
    DeadLetter,
    /// `Invoker::invoke`.
    Invoke,
}

/// The fault plan of one schedule, shared by every worker incarnation.
#[derive(Debug, Default)]
pub struct Faults {
    /// I/O calls so far, across incarnations.
    calls: AtomicU64,
    /// Call number -> fault to inject there.
    plan: Mutex<BTreeMap<u64, Fault>>,
    /// The current incarnation has crashed: nothing it does happens any more.
    dead: AtomicBool,
    /// Whether planned errors (not crashes) may fire now. Errors are only
    /// injected while a batch is processed: `start` and `recover` report
    /// them to their caller, which is not what the model checks.
    errors_allowed: AtomicBool,
    /// Faults injected, by I/O point and kind.
    pub injected: Mutex<BTreeMap<(Op, Fault), u64>>,
    /// Failed `MatchesVersion` preconditions seen by store puts.
    pub conflicts: AtomicU64,
    /// Told when a crash is injected, so the harness drops the future.
    crashed: tokio::sync::Notify,
    /// A fault for the next call of one kind, whatever its number.
    next: Mutex<Option<(Op, Fault)>>,
}

impl Faults {
    /// No faults.
    pub fn none() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Faults at the given call numbers.
    pub fn plan(plan: BTreeMap<u64, Fault>) -> Arc<Self> {
        Arc::new(Self {
            plan: Mutex::new(plan),
            ..Self::default()
        })
    }

    /// Decides the fate of the next I/O call.
    fn enter(&self, op: Op) -> Option<Fault> {
        if self.dead.load(Ordering::SeqCst) {
            return Some(Fault::CrashBefore);
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let next = {
            let mut next = lock(&self.next);
            match *next {
                Some((o, f)) if o == op => {
                    *next = None;
                    Some(f)
                }
                _ => None,
            }
        };
        let fault = next.or_else(|| lock(&self.plan).remove(&n))?;
        if fault.is_crash() {
            self.dead.store(true, Ordering::SeqCst);
            self.crashed.notify_one();
        } else if !self.errors_allowed.load(Ordering::SeqCst) {
            return None;
        }
        *lock(&self.injected).entry((op, fault)).or_default() += 1;
        Some(fault)
    }

    /// Injects `fault` at the next call of `op`.
    pub fn at_next(&self, op: Op, fault: Fault) {
        *lock(&self.next) = Some((op, fault));
    }

    /// Whether the current incarnation has crashed.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// A new incarnation starts.
    pub fn revive(&self) {
        self.dead.store(false, Ordering::SeqCst);
    }

    /// Allows or stops planned errors.
    pub fn allow_errors(&self, on: bool) {
        self.errors_allowed.store(on, Ordering::SeqCst);
    }

    /// I/O calls made so far.
    pub fn io_calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Errors (not crashes) injected so far.
    pub fn errors(&self) -> u64 {
        lock(&self.injected)
            .iter()
            .filter(|((_, f), _)| !f.is_crash())
            .map(|(_, n)| n)
            .sum()
    }
}

/// Runs `op` unless the plan says otherwise: crash before it (never run it)
/// or after it (run it, never return), or fail before or after it.
async fn guarded<T, E>(
    faults: &Faults,
    what: Op,
    fail: impl FnOnce() -> E,
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match faults.enter(what) {
        None => op.await,
        Some(Fault::CrashBefore) => std::future::pending().await,
        Some(Fault::CrashAfter) => {
            let _ = op.await;
            std::future::pending().await
        }
        Some(Fault::Fail) => Err(fail()),
        Some(Fault::FailAfter) => {
            let _ = op.await;
            Err(fail())
        }
    }
}

fn store_error(key: &str) -> StoreError {
    StoreError::Backend {
        key: key.to_owned(),
        message: "injected failure".into(),
        retryable: true,
    }
}

fn sink_error() -> SinkError {
    SinkError {
        message: "injected failure".into(),
        retryable: true,
    }
}

/// A state store that crashes on plan, counts write conflicts, and (for the
/// concurrency test) yields before every call so that tasks interleave.
pub struct FaultyStore {
    /// The durable store, shared by every incarnation.
    pub inner: Arc<MemoryStore>,
    /// The crash plan.
    pub faults: Arc<Faults>,
    /// Yield to the scheduler before each call.
    pub yield_first: bool,
}

impl FaultyStore {
    async fn pause(&self) {
        if self.yield_first {
            tokio::task::yield_now().await;
        }
    }
}

#[async_trait]
impl StateStore for FaultyStore {
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        self.pause().await;
        guarded(
            &self.faults,
            Op::Get,
            || store_error(key),
            self.inner.get(key),
        )
        .await
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        self.pause().await;
        // A failed `DoesNotExist` is a repeated start, not a write conflict.
        let versioned = matches!(pre, Precondition::MatchesVersion(_));
        let r = guarded(
            &self.faults,
            Op::Put,
            || store_error(key),
            self.inner.put(key, value, pre),
        )
        .await;
        if versioned && matches!(r, Err(StoreError::PreconditionFailed { .. })) {
            self.faults.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        r
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<(), StoreError> {
        self.pause().await;
        guarded(
            &self.faults,
            Op::Delete,
            || store_error(key),
            self.inner.delete(key, pre),
        )
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.pause().await;
        guarded(
            &self.faults,
            Op::List,
            || store_error(prefix),
            self.inner.list(prefix),
        )
        .await
    }
}

// ---------------------------------------------------------------------------
// The cluster: queue, timers, dispatched calls, dead letters

/// One message in the queue.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Delivery id (receipt handle).
    pub id: String,
    /// Structured-mode CloudEvent JSON.
    pub body: Vec<u8>,
    /// Deliveries so far.
    pub attempt: u32,
}

impl Msg {
    /// As a delivery.
    pub fn delivery(&self) -> Delivery {
        Delivery {
            id: self.id.clone(),
            body: self.body.clone(),
            attempt: self.attempt + 1,
        }
    }
}

/// What the world outside the worker holds.
#[derive(Debug, Default)]
pub struct Cluster {
    /// Messages waiting for delivery (not in flight).
    pub queue: Vec<Msg>,
    next_id: u64,
    /// Scheduled timers: (fire at, event body).
    pub timers: Vec<(i64, Vec<u8>)>,
    /// Dispatched calls the harness has not run yet.
    pub dispatched: Vec<Invocation>,
    /// Every dispatch, in order (a call may be dispatched more than once).
    pub dispatch_log: Vec<Invocation>,
    /// Logical call -> the idempotency key it was first dispatched with.
    pub calls: BTreeMap<CallId, String>,
    /// Logical calls dispatched under a second, different key.
    pub key_clashes: Vec<String>,
    /// Dead letters stored.
    pub dead_letters: Vec<DeadLetter>,
    /// Outbox keys of every effect that took place (invocation keys, ids of
    /// published and scheduled events).
    pub effects: BTreeSet<String>,
}

impl Cluster {
    /// Enqueues a message with a fresh delivery id.
    pub fn enqueue(&mut self, body: Vec<u8>) -> String {
        self.next_id += 1;
        let id = format!("m{}", self.next_id);
        self.queue.push(Msg {
            id: id.clone(),
            body,
            attempt: 0,
        });
        id
    }

    /// Enqueues an event.
    pub fn enqueue_event(&mut self, event: &Event) -> String {
        self.enqueue(serde_json::to_vec(event).expect("events encode"))
    }

    /// A second copy of a message under a new delivery id (the queue
    /// delivering it twice).
    pub fn duplicate(&mut self, m: &Msg) {
        self.next_id += 1;
        self.queue.push(Msg {
            id: format!("m{}", self.next_id),
            body: m.body.clone(),
            attempt: 0,
        });
    }

    /// Whether nothing is left to happen.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.dispatched.is_empty() && self.timers.is_empty()
    }

    /// Runs dispatched call `i` (a pure function of its input) and enqueues
    /// its completion. With `again`, the call stays dispatched and will run
    /// a second time.
    pub fn run_call(&mut self, i: usize, again: bool) {
        let inv = if again {
            self.dispatched[i].clone()
        } else {
            self.dispatched.remove(i)
        };
        let event = inv
            .completion(run_function(&inv))
            .expect("completion event builds");
        self.enqueue_event(&event);
    }
}

/// The event sink of the cluster.
pub struct ClusterSink {
    /// The cluster.
    pub cluster: Arc<Mutex<Cluster>>,
    /// The crash plan.
    pub faults: Arc<Faults>,
}

#[async_trait]
impl EventSink for ClusterSink {
    async fn publish(&self, events: &[Event]) -> Result<(), SinkError> {
        guarded(&self.faults, Op::Publish, sink_error, async {
            let mut c = lock(&self.cluster);
            for e in events {
                c.effects.insert(e.id().to_owned());
                c.enqueue_event(e);
            }
            Ok(())
        })
        .await
    }

    async fn schedule(&self, fire_at_ms: i64, event: &Event) -> Result<(), SinkError> {
        guarded(&self.faults, Op::Schedule, sink_error, async {
            let body = serde_json::to_vec(event).expect("events encode");
            let mut c = lock(&self.cluster);
            c.effects.insert(event.id().to_owned());
            c.timers.push((fire_at_ms, body));
            Ok(())
        })
        .await
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        guarded(&self.faults, Op::DeadLetter, sink_error, async {
            lock(&self.cluster).dead_letters.extend_from_slice(letters);
            Ok(())
        })
        .await
    }
}

/// The invoker of the cluster: records each dispatch for the harness to run.
pub struct ClusterInvoker {
    /// The cluster.
    pub cluster: Arc<Mutex<Cluster>>,
    /// The crash plan.
    pub faults: Arc<Faults>,
}

#[async_trait]
impl Invoker for ClusterInvoker {
    async fn invoke(&self, inv: &Invocation) -> Result<(), InvokeError> {
        guarded(
            &self.faults,
            Op::Invoke,
            || InvokeError {
                function: inv.function.clone(),
                key: inv.key.clone(),
                message: "injected failure".into(),
                retryable: true,
            },
            async {
                let mut c = lock(&self.cluster);
                let call = (inv.step.clone(), inv.index);
                match c.calls.get(&call) {
                    Some(key) if *key != inv.key => {
                        let clash = format!(
                            "call {call:?} dispatched with key {} and earlier with {key}",
                            inv.key
                        );
                        c.key_clashes.push(clash);
                    }
                    Some(_) => {}
                    None => {
                        c.calls.insert(call, inv.key.clone());
                    }
                }
                c.effects.insert(inv.key.clone());
                c.dispatch_log.push(inv.clone());
                c.dispatched.push(inv.clone());
                Ok(())
            },
        )
        .await
    }
}

/// A clock that never moves: outputs must not depend on time.
pub struct FixedClock(pub i64);

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0
    }
}

/// The durable parts (store, cluster) and the crash plan; workers come and
/// go over them.
pub struct Node {
    /// The durable store.
    pub store: Arc<MemoryStore>,
    /// The world outside.
    pub cluster: Arc<Mutex<Cluster>>,
    /// The crash plan.
    pub faults: Arc<Faults>,
    /// The engine.
    pub engine: Engine,
    /// Whether stores yield before each call.
    pub yield_first: bool,
    /// The workers' seen-set segment size.
    pub seen_segment_keys: usize,
    /// Drives the synchronous steps; made on first use so that a node used
    /// only from async tests never owns (and drops) a runtime there.
    rt: OnceLock<tokio::runtime::Runtime>,
}

impl Node {
    /// A node with an empty store and queue.
    pub fn new(engine: Engine, faults: Arc<Faults>) -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            cluster: Arc::new(Mutex::new(Cluster::default())),
            faults,
            engine,
            yield_first: false,
            seen_segment_keys: trigflow_worker::WorkerConfig::default().seen_segment_keys,
            rt: OnceLock::new(),
        }
    }

    /// A fresh worker (no in-memory state) over the shared store and
    /// cluster.
    pub fn worker(&self) -> Worker {
        Worker::new(
            self.engine.clone(),
            Arc::new(FaultyStore {
                inner: self.store.clone(),
                faults: self.faults.clone(),
                yield_first: self.yield_first,
            }),
            Arc::new(ClusterSink {
                cluster: self.cluster.clone(),
                faults: self.faults.clone(),
            }),
            Arc::new(ClusterInvoker {
                cluster: self.cluster.clone(),
                faults: self.faults.clone(),
            }),
        )
        .with_clock(Arc::new(FixedClock(1_000)))
        .with_config(trigflow_worker::WorkerConfig {
            seen_segment_keys: self.seen_segment_keys,
            ..trigflow_worker::WorkerConfig::default()
        })
    }

    /// Runs `f` until it completes or crashes; a crashed future is dropped
    /// (kill -9) and `None` returned. Time is paused, so the worker's
    /// back-off sleeps take no real time.
    pub fn step<F: Future>(&self, f: F) -> Option<F::Output> {
        let rt = self.rt.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("test runtime")
        });
        let faults = &self.faults;
        let out = rt.block_on(async {
            tokio::select! {
                biased;
                out = f => Some(out),
                () = faults.crashed.notified() => None,
                // Virtual time: only reached if the future waits for nothing.
                () = tokio::time::sleep(Duration::from_secs(3_600)) => {
                    panic!("a worker future stalled without an injected crash")
                }
            }
        });
        assert_eq!(
            out.is_none(),
            faults.is_dead(),
            "a future must end exactly when its worker crashes"
        );
        out
    }

    /// After a crash: a fresh worker that has run `recover` to completion
    /// (crashing and restarting as often as the plan says).
    pub fn restart(&self) -> Worker {
        loop {
            self.faults.revive();
            let w = self.worker();
            if let Some(Ok(_)) = self.step(w.recover()) {
                return w;
            }
        }
    }

    /// Starts the execution, retrying as a client would after a crash until
    /// the start is known to have happened.
    pub fn start(&self, worker: &mut Worker, wf: &Workflow, input: &Value) {
        let exec: ExecutionId = EXECUTION.parse().expect("valid id");
        loop {
            match self.step(worker.start(wf, exec.clone(), input.clone())) {
                Some(Ok(_)) | Some(Err(WorkerError::AlreadyExists(_))) => return,
                Some(Err(e)) => panic!("start failed: {e}"),
                None => *worker = self.restart(),
            }
        }
    }

    /// The stored state of the execution, read past any crash plan.
    pub fn state(&self) -> ExecutionState {
        let bytes = self
            .store
            .get(&format!("exec/{EXECUTION}"))
            .now_or_never()
            .expect("memory store is immediate")
            .expect("store read")
            .expect("execution exists")
            .value;
        ExecutionState::from_bytes(&bytes).expect("state decodes")
    }
}

/// Checks that a batch report accounts for every delivery exactly once.
pub fn check_report(batch: &[Msg], report: &BatchReport) -> Result<(), String> {
    let sent: BTreeSet<&str> = batch.iter().map(|m| m.id.as_str()).collect();
    let mut seen = BTreeSet::new();
    for id in report.acked.iter().chain(&report.retry) {
        if !seen.insert(id.as_str()) {
            return Err(format!("delivery {id} reported twice in {report:?}"));
        }
    }
    if seen != sent {
        return Err(format!(
            "report {report:?} does not cover the batch {sent:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Functions: deterministic and pure, so running one twice gives the same result

/// Runs a function of the test workflows.
pub fn run_function(inv: &Invocation) -> Result<Value, FunctionError> {
    let num = |v: &Value| v.as_i64().unwrap_or(0);
    Ok(match inv.function.as_str() {
        "square" => json!(num(&inv.input) * num(&inv.input) + 1),
        "sum" => {
            let xs = inv.input["xs"].as_array().cloned().unwrap_or_default();
            json!({"sum": xs.iter().map(num).sum::<i64>(), "xs": xs})
        }
        // Replicas compute the same digest; r3 always fails, so the quorum
        // needs both others.
        "replica" if inv.step == "r3" => {
            return Err(FunctionError {
                error: "ReplicaDown".into(),
                cause: format!("replica {} is down", inv.step),
            });
        }
        "replica" => json!({"digest": num(&inv.input).wrapping_mul(2_654_435_761) % 1_000_003}),
        "a" => json!(num(&inv.input) * 2),
        "b" => json!(num(&inv.input) + 1),
        "c" => json!(num(&inv.input) * 3),
        "d" => json!({"product": num(&inv.input["B"]) * num(&inv.input["C"]), "parts": inv.input}),
        other => panic!("unknown function {other}"),
    })
}

// ---------------------------------------------------------------------------
// Workflows

/// A test workflow and how to make inputs for it.
pub struct Case {
    /// Name, for messages.
    pub name: &'static str,
    /// The definition.
    pub workflow: Workflow,
}

fn workflow(v: Value) -> Workflow {
    serde_json::from_value(v).expect("test workflow parses")
}

/// Fan-out over `foreach` with a dynamic join (`count: {from: ...}`), then
/// one more call over the joined results.
pub fn fanout() -> Case {
    Case {
        name: "fanout",
        workflow: workflow(json!({
            "id": "fanout",
            "triggers": [
                {"id": "split", "on": {"types": ["trigflow.execution.started"]},
                 "actions": [{"kind": "invoke", "function": "square", "step": "work",
                              "foreach": ".event.data.items", "count_into": "n"}]},
                {"id": "join", "on": {"subjects": ["work"]},
                 "condition": {"kind": "join", "count": {"from": ".context.n"}},
                 "actions": [{"kind": "invoke", "function": "sum", "step": "total",
                              "input": "{xs: [.trigger.results[]]}"}]},
                {"id": "done", "on": {"subjects": ["total"]},
                 "actions": [{"kind": "complete", "output": "{total: .event.data, n: .context.n}"}]}
            ]
        })),
    }
}

/// A 2-of-3 quorum over replicas, one of which always fails.
pub fn quorum() -> Case {
    Case {
        name: "quorum",
        workflow: workflow(json!({
            "id": "quorum",
            "triggers": [
                {"id": "fan", "on": {"types": ["trigflow.execution.started"]},
                 "actions": [
                     {"kind": "invoke", "function": "replica", "step": "r1"},
                     {"kind": "invoke", "function": "replica", "step": "r2"},
                     {"kind": "invoke", "function": "replica", "step": "r3"}
                 ]},
                {"id": "vote", "on": {"subjects": ["r1", "r2", "r3"]},
                 "condition": {"kind": "quorum", "k": 2, "m": 3},
                 "actions": [{"kind": "complete",
                              "output": "{agreed: ([.trigger.results[]] | unique), votes: .trigger.count}"}]}
            ]
        })),
    }
}

/// A diamond DAG written as raw triggers (A -> B, C -> join -> D), then an
/// emitted event and a timer before completing, so every sink call is used.
pub fn diamond() -> Case {
    Case {
        name: "diamond",
        workflow: workflow(json!({
            "id": "diamond",
            "triggers": [
                {"id": "to-a", "on": {"types": ["trigflow.execution.started"]},
                 "actions": [{"kind": "invoke", "function": "a", "step": "A"}]},
                {"id": "a-done", "on": {"subjects": ["A"], "types": ["trigflow.function.succeeded"]},
                 "actions": [{"kind": "invoke", "function": "b", "step": "B"},
                             {"kind": "invoke", "function": "c", "step": "C"}]},
                {"id": "bc-join", "on": {"subjects": ["B", "C"]},
                 "condition": {"kind": "join", "count": 2},
                 "actions": [{"kind": "invoke", "function": "d", "step": "D", "input": ".trigger.results"}]},
                {"id": "d-done", "on": {"subjects": ["D"]},
                 "actions": [{"kind": "emit", "events": [{"type": "test.ready", "subject": "notify", "data": ".event.data"}]}]},
                {"id": "notify", "on": {"subjects": ["notify"]},
                 "actions": [{"kind": "timer", "delay_ms": 50,
                              "event": {"type": "trigflow.timer.fired", "subject": "tick", "data": ".event.data"}}]},
                {"id": "tick", "on": {"subjects": ["tick"]},
                 "actions": [{"kind": "complete", "output": "{result: .event.data, input: .context.input}"}]}
            ]
        })),
    }
}

/// Child executions: one per item (`spawn`), each going through an emitted
/// event and a timer before it completes; the parent joins their
/// completions (each must count once, whatever is duplicated, reordered or
/// crashed) and makes one more call.
pub fn children() -> Case {
    Case {
        name: "children",
        workflow: workflow(json!({
            "id": "children",
            "triggers": [
                {"id": "spawn", "on": {"subjects": ["$start"], "types": ["trigflow.execution.started"]},
                 "actions": [
                     {"kind": "set_context", "key": "n", "value": ".event.data.items | length"},
                     {"kind": "spawn", "foreach": ".event.data.items", "entry": "child", "step": "kids",
                      "input": "{v: .item}"}
                 ]},
                {"id": "child-start", "on": {"subjects": ["child"], "types": ["trigflow.execution.started"]},
                 "lifetime": "persistent",
                 "actions": [{"kind": "emit", "events": [{"type": "test.child", "subject": "c-next", "data": ".event.data.v"}]}]},
                {"id": "child-next", "on": {"subjects": ["c-next"]}, "lifetime": "persistent",
                 "actions": [{"kind": "timer", "delay_ms": 20,
                              "event": {"type": "trigflow.timer.fired", "subject": "c-tick", "data": ".event.data * .event.data + 1"}}]},
                {"id": "child-tick", "on": {"subjects": ["c-tick"]}, "lifetime": "persistent",
                 "actions": [{"kind": "complete", "output": ".event.data"}]},
                {"id": "join", "on": {"subjects": ["kids"]},
                 "condition": {"kind": "join", "count": {"from": ".context.n"}},
                 "actions": [{"kind": "invoke", "function": "sum", "step": "total",
                              "input": "{xs: [.trigger.results[]]}"}]},
                {"id": "done", "on": {"subjects": ["total"]},
                 "actions": [{"kind": "complete", "output": "{total: .event.data, n: .context.n}"}]}
            ]
        })),
    }
}

/// Input of the fan-out workflow with `n` items.
pub fn fanout_input(n: usize) -> Value {
    json!({"items": (0..n).map(|i| (i * 7 % 11 + i) as i64 - 5).collect::<Vec<_>>()})
}

/// Firings per trigger, from the history.
pub fn firings(state: &ExecutionState) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for f in &state.history {
        *m.entry(f.trigger.to_string()).or_default() += 1;
    }
    m
}

// ---------------------------------------------------------------------------
// Running a schedule

/// How one schedule perturbs the run.
#[derive(Debug, Clone)]
pub struct Perturbation {
    /// Largest batch.
    pub max_batch: usize,
    /// Chance that a delivered message is also left in the queue (delivered
    /// again later).
    pub duplicate: f64,
    /// Chance that a function runs a second time.
    pub run_twice: f64,
    /// Undecodable messages put in the queue at the start.
    pub poison: usize,
    /// Split the seen-set into segments after this many keys.
    pub seen_segment_keys: Option<usize>,
}

/// The end of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Final stored state.
    pub state: ExecutionState,
    /// Logical calls and their keys.
    pub calls: BTreeMap<CallId, String>,
    /// Calls dispatched under two keys.
    pub key_clashes: Vec<String>,
    /// Dispatches in all (with repeats).
    pub dispatches: usize,
    /// Dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// I/O calls made.
    pub io_calls: u64,
    /// Batches processed (including crashed ones).
    pub batches: usize,
    /// Bodies of the poison messages the run put in the queue.
    pub poison: BTreeSet<String>,
    /// Outbox keys of the effects that took place.
    pub effects: BTreeSet<String>,
    /// Errors (not crashes) injected.
    pub errors: u64,
}

/// Runs `wf` on `input` to the end.
///
/// Without `rng` the run is fault-free, exactly-once and in order: FIFO
/// batches of one, each call run once in dispatch order, timers when
/// nothing else is left. With `rng` (and the crash plan in `faults`)
/// batches are random subsets of the queue (reordering), delivered messages
/// may stay queued (duplicates), calls run in random order and sometimes
/// twice, timers fire at random points, and every crash is followed by a
/// fresh worker, `recover`, and redelivery of the in-flight batch.
pub fn run(
    engine: &Engine,
    wf: &Workflow,
    input: &Value,
    faults: Arc<Faults>,
    mut rng: Option<(&mut StdRng, &Perturbation)>,
) -> Result<Outcome, String> {
    let mut node = Node::new(engine.clone(), faults);
    if let Some(k) = rng.as_ref().and_then(|(_, p)| p.seen_segment_keys) {
        node.seen_segment_keys = k;
    }
    let mut worker = node.worker();
    node.start(&mut worker, wf, input);
    let mut poison = BTreeSet::new();
    if let Some((_, p)) = &rng {
        let mut c = lock(&node.cluster);
        for i in 0..p.poison {
            let text = format!("poison {i}: not a CloudEvent");
            c.enqueue(text.clone().into_bytes());
            poison.insert(text);
        }
    }
    let mut batches = 0;
    let mut steps = 0usize;
    loop {
        steps += 1;
        if steps > 50_000 {
            return Err("the run did not settle within 50,000 steps".into());
        }
        let mut c = lock(&node.cluster);
        if c.is_idle() {
            break;
        }
        let batch: Vec<Msg> = match rng.as_mut() {
            None => {
                if !c.queue.is_empty() {
                    vec![c.queue.remove(0)]
                } else if !c.dispatched.is_empty() {
                    c.run_call(0, false);
                    continue;
                } else {
                    let (_, body) = c.timers.remove(0);
                    c.enqueue(body);
                    continue;
                }
            }
            Some((rng, p)) => {
                let roll = rng.random_range(0..100);
                if !c.queue.is_empty() && (roll < 60 || (c.dispatched.is_empty() && roll < 95)) {
                    let n = rng.random_range(1..=p.max_batch.min(c.queue.len()));
                    let mut batch = Vec::with_capacity(n);
                    for _ in 0..n {
                        let i = rng.random_range(0..c.queue.len());
                        let m = c.queue.swap_remove(i);
                        if rng.random_bool(p.duplicate) {
                            c.duplicate(&m);
                        }
                        batch.push(m);
                    }
                    batch
                } else if !c.dispatched.is_empty() && roll < 95 {
                    let i = rng.random_range(0..c.dispatched.len());
                    let again = rng.random_bool(p.run_twice);
                    c.run_call(i, again);
                    continue;
                } else if !c.timers.is_empty() {
                    let i = rng.random_range(0..c.timers.len());
                    let (_, body) = c.timers.swap_remove(i);
                    c.enqueue(body);
                    continue;
                } else {
                    continue;
                }
            }
        };
        drop(c);
        batches += 1;
        let deliveries = batch.iter().map(Msg::delivery).collect();
        node.faults.allow_errors(true);
        let report = node.step(worker.process_batch(deliveries));
        node.faults.allow_errors(false);
        match report {
            None => {
                // Nothing was acked: the queue redelivers the whole batch.
                let mut c = lock(&node.cluster);
                c.queue.extend(batch.into_iter().map(|m| Msg {
                    attempt: m.attempt + 1,
                    ..m
                }));
                drop(c);
                worker = node.restart();
            }
            Some(report) => {
                check_report(&batch, &report)?;
                let retry: BTreeSet<&String> = report.retry.iter().collect();
                let mut c = lock(&node.cluster);
                for m in batch {
                    if retry.contains(&m.id) {
                        c.queue.push(Msg {
                            attempt: m.attempt + 1,
                            ..m
                        });
                    }
                }
            }
        }
    }
    let state = node.state();
    let c = lock(&node.cluster);
    Ok(Outcome {
        state,
        calls: c.calls.clone(),
        key_clashes: c.key_clashes.clone(),
        dispatches: c.dispatch_log.len(),
        dead_letters: c.dead_letters.clone(),
        io_calls: node.faults.io_calls(),
        batches,
        poison,
        effects: c.effects.clone(),
        errors: node.faults.errors(),
    })
}

/// Compares a perturbed run with the fault-free one; `Err` says how they
/// differ.
pub fn compare(reference: &Outcome, run: &Outcome) -> Result<(), String> {
    let s = &run.state;
    if matches!(s.status, ExecutionStatus::Running) {
        return Err(format!(
            "execution did not finish (lost an event or an effect): {s:#?}"
        ));
    }
    if s.status != reference.state.status {
        return Err(format!(
            "final status differs:\n  fault-free: {:?}\n  this run:   {:?}",
            reference.state.status, s.status
        ));
    }
    let (want, got) = (firings(&reference.state), firings(s));
    if want != got {
        return Err(format!(
            "firings per trigger differ:\n  fault-free: {want:?}\n  this run:   {got:?}"
        ));
    }
    if s.context != reference.state.context {
        return Err(format!(
            "final context differs:\n  fault-free: {}\n  this run:   {}",
            reference.state.context, s.context
        ));
    }
    if s.triggers != reference.state.triggers {
        return Err(format!(
            "final trigger states differ:\n  fault-free: {:?}\n  this run:   {:?}",
            reference.state.triggers, s.triggers
        ));
    }
    if !run.key_clashes.is_empty() {
        return Err(format!(
            "a logical call got two idempotency keys: {:?}",
            run.key_clashes
        ));
    }
    let want: BTreeSet<&CallId> = reference.calls.keys().collect();
    let got: BTreeSet<&CallId> = run.calls.keys().collect();
    if want != got {
        return Err(format!(
            "calls dispatched differ:\n  fault-free: {want:?}\n  this run:   {got:?}"
        ));
    }
    let keys: BTreeSet<&String> = run.calls.values().collect();
    if keys.len() != run.calls.len() {
        return Err(format!("two logical calls share a key: {:?}", run.calls));
    }
    // Nothing decided was left undispatched. An injected failure of the
    // write that clears the outbox may leave entries that were dispatched
    // (they are dispatched again, under the same key, on the next touch);
    // without such failures the outbox must be empty.
    if let Some(p) = s.outbox.iter().find(|p| !run.effects.contains(&p.key)) {
        return Err(format!(
            "effect {} was decided but never dispatched: {p:?}",
            p.key
        ));
    }
    if run.errors == 0 && !s.outbox.is_empty() {
        return Err(format!("outbox not drained at the end: {:?}", s.outbox));
    }
    // Poison is dead-lettered (a crash may store a letter twice); nothing
    // else is.
    let lettered: BTreeSet<String> = run.dead_letters.iter().map(|l| l.body.clone()).collect();
    if lettered != run.poison {
        return Err(format!(
            "dead letters {:?} are not exactly the poison messages {:?}",
            run.dead_letters, run.poison
        ));
    }
    Ok(())
}

/// Deliveries of `events` as message bodies.
pub fn body(event: &Event) -> Vec<u8> {
    serde_json::to_vec(event).expect("events encode")
}
