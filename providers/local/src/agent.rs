//! Function calls over NATS: [`NatsInvoker`] (the worker side) and
//! [`Agent`] (the edge-node side).
//!
//! A call is the JSON [`Invocation`] published on
//! `trigflow.calls.<function>` in the `TRIGFLOW_CALLS` work-queue stream,
//! with `Nats-Msg-Id` derived from its idempotency key and attempt, so a
//! dispatch repeated after a crash is stored once. The agents serving a
//! function share one durable consumer per function — a queue group with
//! redelivery: a call whose agent dies before acking goes to another agent
//! after the consumer's ack wait. An agent publishes the completion event
//! (built with [`Invocation::completion`], so a call run twice reports the
//! same (source, id) and counts once) and only then acks the call.
//!
//! With a claim check ([`crate::Local::with_claims`]) the invoker offloads a
//! call input above the threshold before publishing it, the agent resolves
//! every reference in the input before the function runs (functions always
//! see full data) and publishes the completion through its sink, which
//! offloads an output above the threshold.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use tracing::warn;
use trigflow_core::claim::{ClaimCheck, is_ref};
use trigflow_core::seams::{EventSink, InvokeError, Invoker};
use trigflow_core::state::{FunctionError, Invocation};

use crate::data::Parts;
use crate::events::PUBLISH_WINDOW;
use crate::names::{CALLS_STREAM, HEADER_CALL_KEY, agent_consumer, call_subject, function_name};
use crate::node::{NodeReport, NodeStats};
use crate::routing::{NO_AGENT_ERROR, Routing};
use crate::{JetStreamSink, Local, LocalError};

/// Dispatches calls to agents through the `TRIGFLOW_CALLS` stream.
#[derive(Clone)]
pub struct NatsInvoker {
    js: jetstream::Context,
    claims: Option<ClaimCheck>,
    /// Heartbeat checks, and the sink a refused call's failure goes to.
    routing: Option<(Arc<Routing>, JetStreamSink)>,
}

impl std::fmt::Debug for NatsInvoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsInvoker").finish_non_exhaustive()
    }
}

fn call_msg_id(inv: &Invocation) -> String {
    let digest = xxhash_rust::xxh3::xxh3_128(inv.key.as_bytes());
    format!("call-{digest:032x}-{}", inv.attempt)
}

impl NatsInvoker {
    /// An invoker publishing on `js`.
    pub fn new(js: jetstream::Context) -> Self {
        Self {
            js,
            claims: None,
            routing: None,
        }
    }

    /// Checks the agents' heartbeats before each call: with
    /// [`Unserved::Fail`](crate::routing::Unserved::Fail), a call no live
    /// agent serves is not enqueued; its step fails at once with error
    /// [`NO_AGENT_ERROR`], published on `sink` as the call's completion.
    pub fn with_routing(mut self, routing: Routing, sink: JetStreamSink) -> Self {
        self.routing = Some((Arc::new(routing), sink));
        self
    }

    /// Fails `inv` because no live agent serves it: its completion (the
    /// call's own event id, so it counts once) says why.
    async fn refuse(
        sink: &JetStreamSink,
        inv: &Invocation,
        why: String,
    ) -> Result<(), InvokeError> {
        let event = inv
            .completion(Err(FunctionError {
                error: NO_AGENT_ERROR.into(),
                cause: why,
            }))
            .map_err(|e| invoke_error(inv, format!("failure event: {e}"), false))?;
        sink.publish(std::slice::from_ref(&event))
            .await
            .map_err(|e| invoke_error(inv, format!("publishing the failure: {e}"), true))
    }

    /// Offloads call inputs whose JSON is larger than the claim check's
    /// threshold, so that every call message stays small.
    pub fn with_claims(mut self, claims: ClaimCheck) -> Self {
        self.claims = Some(claims);
        self
    }
}

fn invoke_error(inv: &Invocation, message: String, retryable: bool) -> InvokeError {
    InvokeError {
        function: inv.function.clone(),
        key: inv.key.clone(),
        message,
        retryable,
    }
}

#[async_trait]
impl Invoker for NatsInvoker {
    async fn invoke(&self, invocation: &Invocation) -> Result<(), InvokeError> {
        self.invoke_batch(std::slice::from_ref(invocation))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Publishes every call before waiting for any acknowledgement: a
    /// fan-out of thousands costs one round trip, not thousands.
    async fn invoke_batch(&self, invocations: &[Invocation]) -> Vec<Result<(), InvokeError>> {
        // async-nats makes a publish wait once a few thousand acks are
        // pending; a window keeps a 10,000-way fan-out from waiting on
        // acks it has not started awaiting yet.
        if invocations.len() > PUBLISH_WINDOW {
            let mut out = Vec::with_capacity(invocations.len());
            for window in invocations.chunks(PUBLISH_WINDOW) {
                out.extend(self.invoke_batch(window).await);
            }
            return out;
        }
        if let Some((routing, sink)) = &self.routing {
            let mut refused = Vec::with_capacity(invocations.len());
            for inv in invocations {
                refused.push(routing.refuse(&inv.function).await);
            }
            if refused.iter().any(Option::is_some) {
                let unrouted = Self {
                    routing: None,
                    ..self.clone()
                };
                let served: Vec<Invocation> = invocations
                    .iter()
                    .zip(&refused)
                    .filter(|(_, r)| r.is_none())
                    .map(|(inv, _)| inv.clone())
                    .collect();
                let mut served = unrouted.invoke_batch(&served).await.into_iter();
                let mut out = Vec::with_capacity(invocations.len());
                for (inv, why) in invocations.iter().zip(refused) {
                    out.push(match why {
                        Some(why) => Self::refuse(sink, inv, why).await,
                        None => served.next().unwrap_or(Ok(())),
                    });
                }
                return out;
            }
        }
        let mut pending = Vec::with_capacity(invocations.len());
        for inv in invocations {
            let offloaded;
            let inv = match &self.claims {
                Some(claims) => match claims.offload(inv.input.clone()).await {
                    Ok(input) if is_ref(&input) => {
                        offloaded = Invocation {
                            input,
                            ..inv.clone()
                        };
                        &offloaded
                    }
                    Ok(_) => inv,
                    Err(e) => {
                        let retryable = e.is_retryable();
                        pending.push(Err(invoke_error(
                            inv,
                            format!("offloading the input: {e}"),
                            retryable,
                        )));
                        continue;
                    }
                },
                None => inv,
            };
            let body = match serde_json::to_vec(inv) {
                Ok(b) => b,
                Err(e) => {
                    pending.push(Err(invoke_error(inv, format!("encode: {e}"), false)));
                    continue;
                }
            };
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                call_msg_id(inv).as_str(),
            );
            headers.insert(HEADER_CALL_KEY, inv.key.as_str());
            let subject = call_subject(&inv.function);
            pending.push(
                self.js
                    .publish_with_headers(subject.clone(), headers, body.into())
                    .await
                    .map_err(|e| invoke_error(inv, format!("publish on {subject}: {e}"), true)),
            );
        }
        let acks = pending
            .into_iter()
            .zip(invocations)
            .map(|(p, inv)| async move {
                match p {
                    Ok(ack) => ack
                        .await
                        .map(drop)
                        .map_err(|e| invoke_error(inv, format!("call not stored: {e}"), true)),
                    Err(e) => Err(e),
                }
            });
        futures::future::join_all(acks).await
    }
}

/// What a served function returns.
pub type FunctionFuture = Pin<Box<dyn Future<Output = Result<Value, FunctionError>> + Send>>;

/// A function an agent serves: takes the call (input, index, attempt...).
pub type Handler = Arc<dyn Fn(Invocation) -> FunctionFuture + Send + Sync>;

/// A function that may also write parts of its output while it runs (see
/// [`Parts`]).
pub type PartsHandler = Arc<dyn Fn(Invocation, Parts) -> FunctionFuture + Send + Sync>;

/// Error name of the `function.failed` event an agent reports when a call's
/// input names an object that is missing or does not match its reference.
pub const CLAIM_CHECK_ERROR: &str = "trigflow.ClaimCheckFailed";

/// Serves functions on the `TRIGFLOW_CALLS` stream: the seed of
/// `trigflow agent`. Run the same agent on several nodes and they share the
/// calls of each function they serve.
#[derive(Clone)]
pub struct Agent {
    local: Local,
    sink: JetStreamSink,
    functions: BTreeMap<String, PartsHandler>,
    concurrency: usize,
    node: String,
    instance: String,
    heartbeat: Duration,
}

/// Agents started by this process, so that two in one process (tests) get
/// distinct instance names.
static AGENTS_STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn now_ms() -> i64 {
    use trigflow_worker::Clock as _;
    trigflow_worker::SystemClock.now_ms()
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("functions", &self.functions.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("node", &self.node)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent on `local` serving nothing yet, running up to 64 calls of
    /// each function at once, on node `node` with a heartbeat every 5 s.
    pub fn new(local: &Local) -> Self {
        let n = AGENTS_STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            sink: local.sink(),
            local: local.clone(),
            functions: BTreeMap::new(),
            concurrency: 64,
            node: "node".into(),
            instance: format!("{}-{}-{n}", std::process::id(), now_ms()),
            heartbeat: Duration::from_secs(5),
        }
    }

    /// Names the node in heartbeats.
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = node.into();
        self
    }

    /// Sets the heartbeat interval.
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(Duration::from_millis(100));
        self
    }

    /// Serves `function` with a ready-made [`Handler`].
    pub fn serve_handler(mut self, function: &str, handler: Handler) -> Self {
        let handler: PartsHandler = Arc::new(move |inv, _parts| handler(inv));
        self.functions
            .insert(function_name(function).to_owned(), handler);
        self
    }

    /// Serves `function` with a handler that also gets the call's
    /// [`Parts`]: it can write parts of its output while it runs, each
    /// announced to the execution as a `trigflow.data.ready` event, so that
    /// downstream steps start before it returns.
    pub fn serve_with_parts<F, Fut>(mut self, function: &str, handler: F) -> Self
    where
        F: Fn(Invocation, Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, FunctionError>> + Send + 'static,
    {
        let handler: PartsHandler = Arc::new(move |inv, parts| Box::pin(handler(inv, parts)));
        self.functions
            .insert(function_name(function).to_owned(), handler);
        self
    }

    /// The function names served.
    pub fn functions(&self) -> Vec<String> {
        self.functions.keys().cloned().collect()
    }

    /// This agent's heartbeat now.
    pub fn report(&self) -> NodeReport {
        NodeReport {
            node: self.node.clone(),
            instance: self.instance.clone(),
            functions: self.functions(),
            stats: NodeStats::read(),
            at_ms: now_ms(),
            interval_ms: u64::try_from(self.heartbeat.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Writes a heartbeat every interval, forever.
    async fn heartbeats(&self) {
        let directory = self.local.agents();
        loop {
            if let Err(e) = directory.put(&self.report()).await {
                warn!(node = %self.node, error = %e, "heartbeat failed");
            }
            tokio::time::sleep(self.heartbeat).await;
        }
    }

    /// Serves `function` (a `nats:NAME` reference or `NAME`) with `handler`.
    pub fn serve<F, Fut>(mut self, function: &str, handler: F) -> Self
    where
        F: Fn(Invocation) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, FunctionError>> + Send + 'static,
    {
        let handler: PartsHandler = Arc::new(move |inv, _parts| Box::pin(handler(inv)));
        self.functions
            .insert(function_name(function).to_owned(), handler);
        self
    }

    /// How many calls of one function run at once.
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Creates the consumers and serves until `shutdown` completes. Calls
    /// in progress at shutdown are not acked, so they run again elsewhere.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), LocalError> {
        let url = self.local.config().nats_url.clone();
        let stream = self
            .local
            .jetstream()
            .get_stream(CALLS_STREAM)
            .await
            .map_err(|e| LocalError::Setup {
                what: CALLS_STREAM.into(),
                url: url.clone(),
                message: e.to_string(),
            })?;
        let mut loops = Vec::new();
        for (name, handler) in &self.functions {
            let durable = agent_consumer(name);
            let consumer: consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &durable,
                    consumer::pull::Config {
                        durable_name: Some(durable.clone()),
                        filter_subject: call_subject(name),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: self.local.config().call_ack_wait,
                        max_deliver: -1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| LocalError::Setup {
                    what: format!("consumer {durable}"),
                    url: url.clone(),
                    message: e.to_string(),
                })?;
            loops.push(self.serve_one(name, consumer, handler.clone()));
        }
        // The first heartbeat goes out once every consumer exists, so an
        // agent listed as alive is ready to take calls.
        tokio::select! {
            _ = shutdown => {}
            _ = futures::future::join_all(loops) => {}
            _ = self.heartbeats() => {}
        }
        if let Err(e) = self.local.agents().remove(&self.node, &self.instance).await {
            warn!(node = %self.node, error = %e, "removing the heartbeat failed; it expires");
        }
        Ok(())
    }

    /// Serves one function: each call runs as its own task, at most
    /// `concurrency` at once, and a new pull goes out as soon as any call
    /// finishes, so a long call never holds back the calls behind it.
    /// Dropping this future (shutdown) aborts the calls in progress: they
    /// are not acked and run again elsewhere.
    async fn serve_one(&self, name: &str, consumer: consumer::PullConsumer, handler: PartsHandler) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
        let mut calls = tokio::task::JoinSet::new();
        loop {
            while calls.try_join_next().is_some() {}
            // Pull only as many calls as there are free slots: a pulled call
            // waiting for a slot would spend its ack wait queued here.
            let Ok(first) = slots.clone().acquire_owned().await else {
                return;
            };
            let mut free = vec![first];
            while let Ok(slot) = slots.clone().try_acquire_owned() {
                free.push(slot);
            }
            let messages = match self.pull(&consumer, free.len()).await {
                Ok(m) => m,
                Err(e) => {
                    warn!(function = name, error = %e, "pull failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for m in messages {
                match m {
                    Ok(m) => {
                        let slot = free.pop();
                        let agent = self.clone();
                        let handler = handler.clone();
                        calls.spawn(async move {
                            agent.handle(m, handler).await;
                            drop(slot);
                        });
                    }
                    Err(e) => warn!(function = name, error = %e, "pull failed"),
                }
            }
            // Slots not used by this pull are released here.
        }
    }

    /// The next calls, up to `max`: whatever is waiting now, else the first
    /// to arrive within 200 ms plus whatever came with it. A pull for `max`
    /// messages with an expiry would hold a single call until the expiry
    /// (200 ms a step); this answers as soon as one exists.
    async fn pull(
        &self,
        consumer: &consumer::PullConsumer,
        max: usize,
    ) -> Result<Vec<Result<jetstream::Message, async_nats::Error>>, async_nats::Error> {
        let now: Vec<_> = consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await?
            .collect()
            .await;
        if !now.is_empty() {
            return Ok(now);
        }
        let mut first: Vec<_> = consumer
            .batch()
            .max_messages(1)
            .expires(Duration::from_millis(200))
            .messages()
            .await?
            .collect()
            .await;
        if !first.is_empty() && max > 1 {
            first.extend(
                consumer
                    .fetch()
                    .max_messages(max - 1)
                    .messages()
                    .await?
                    .collect::<Vec<_>>()
                    .await,
            );
        }
        Ok(first)
    }

    async fn handle(&self, m: jetstream::Message, handler: PartsHandler) {
        let inv: Invocation = match serde_json::from_slice(&m.payload) {
            Ok(inv) => inv,
            Err(e) => {
                // No completion can be reported for a call that cannot be
                // read; terminate it so it does not loop forever.
                warn!(subject = %m.subject, error = %e, "undecodable call; terminating it");
                if let Err(e) = m.ack_with(AckKind::Term).await {
                    warn!(error = %e, "term failed");
                }
                return;
            }
        };
        // Functions always see the full data: references in the input are
        // replaced by what they name (the output goes back through the
        // sink, which offloads it if it is big).
        let mut inv = inv;
        let resolved = match self.local.claims() {
            Some(claims) => claims
                .resolve(std::mem::take(&mut inv.input))
                .await
                .map(|input| inv.input = input),
            None => Ok(()),
        };
        let result = match resolved {
            Err(e) if e.is_retryable() => {
                warn!(key = %inv.key, error = %e, "input not readable yet; the call comes back");
                if let Err(e) = m.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await {
                    warn!(key = %inv.key, error = %e, "nak failed");
                }
                return;
            }
            // Running again cannot help: the workflow sees the failure.
            Err(e) => Err(FunctionError {
                error: CLAIM_CHECK_ERROR.into(),
                cause: e.to_string(),
            }),
            Ok(()) => {
                let parts = Parts::new(self.local.claims().cloned(), self.sink.clone(), &inv);
                let run = handler(inv.clone(), parts);
                tokio::pin!(run);
                // Tell JetStream the call is alive, so a long function is not
                // handed to another agent while this one works on it.
                let every = self.local.config().call_ack_wait / 3;
                loop {
                    tokio::select! {
                        r = &mut run => break r,
                        _ = tokio::time::sleep(every) => {
                            if let Err(e) = m.ack_with(AckKind::Progress).await {
                                warn!(key = %inv.key, error = %e, "progress ack failed");
                            }
                        }
                    }
                }
            }
        };
        let event = match inv.completion(result) {
            Ok(ev) => ev,
            Err(e) => {
                warn!(key = %inv.key, error = %e, "completion event cannot be built");
                return;
            }
        };
        if let Err(e) = self.sink.publish(std::slice::from_ref(&event)).await {
            // Not acked: the call runs again after the ack wait.
            warn!(key = %inv.key, error = %e, "completion not published");
            return;
        }
        if let Err(e) = m.double_ack().await {
            warn!(key = %inv.key, error = %e, "call ack failed; it may run again");
        }
    }
}
