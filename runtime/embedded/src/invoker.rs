//! [`EmbeddedInvoker`]: durable, idempotent function calls in-process.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use trigflow_core::seams::{InvokeError, Invoker};
use trigflow_core::state::{FunctionError, Invocation};

use crate::db::{EmbeddedError, INVOCATIONS, Shared};
use crate::functions::{Caller, FunctionRegistry};
use crate::queue::append_to_queue;

/// Completions committed per transaction at most.
const COMMIT_BATCH: usize = 1024;
/// Longest pause between attempts to commit completions after a failure.
const COMMIT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How the embedded invoker runs functions.
#[derive(Debug, Clone)]
pub struct InvokerConfig {
    /// Function calls running at once, at most.
    pub concurrency: usize,
    /// Directory that relative `cmd:` program paths are resolved against and
    /// that commands run in (typically the workflow file's directory). `None`
    /// keeps the process's working directory.
    pub base_dir: Option<PathBuf>,
    /// How long a `cmd:` function may run before it is killed.
    pub command_timeout: Duration,
    /// How long an `http(s)://` call may take, response included.
    pub http_timeout: Duration,
}

impl Default for InvokerConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            base_dir: None,
            command_timeout: Duration::from_secs(300),
            http_timeout: Duration::from_secs(300),
        }
    }
}

/// An [`Invoker`] that runs functions in this process, durably.
///
/// `invoke` records the invocation in the `invocations` table (unless a row
/// with its key is already there, which makes a re-dispatch of a pending
/// call a no-op) and wakes the runner. The runner ([`Self::spawn_runner`])
/// calls the function with a concurrency limit and, when it finishes, queues
/// the completion event and deletes the row in one transaction: a crash
/// before that commit leaves the row, and the call runs again at the next
/// start; a crash after it leaves the event. The completion event's id is
/// the idempotency key, so the engine drops the result of a second run.
#[derive(Debug, Clone)]
pub struct EmbeddedInvoker {
    shared: Arc<Shared>,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    caller: Caller,
    concurrency: usize,
    /// Invocations newly recorded, for the runner.
    tx: mpsc::UnboundedSender<Invocation>,
    /// Taken by the runner when it starts; until then recorded invocations
    /// wait here (and in the table).
    rx: Mutex<Option<mpsc::UnboundedReceiver<Invocation>>>,
    /// Keys scheduled or running in this process, so a key reached twice
    /// (startup scan and channel) runs once.
    running: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a single insert / remove / take.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EmbeddedInvoker {
    pub(crate) fn new(
        shared: Arc<Shared>,
        registry: FunctionRegistry,
        config: InvokerConfig,
    ) -> Result<Self, EmbeddedError> {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .build()
            .map_err(|e| EmbeddedError::HttpClient(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        Ok(Self {
            shared,
            inner: Arc::new(Inner {
                caller: Caller {
                    registry,
                    base_dir: config.base_dir,
                    command_timeout: config.command_timeout,
                    http,
                },
                concurrency: config.concurrency.max(1),
                tx,
                rx: Mutex::new(Some(rx)),
                running: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Calls `function` with `input` right away, outside the durable path
    /// (for tools and tests that want one function's answer).
    pub async fn call(&self, function: &str, input: Value) -> Result<Value, FunctionError> {
        self.inner.caller.call(function, input).await
    }

    /// Starts the runner: it first re-runs every invocation left in the
    /// table by a previous run of the process, then runs new ones as they
    /// are recorded. It stops after [`crate::EmbeddedDb::shutdown`],
    /// abandoning running calls (their rows stay for the next start). Only
    /// the first call starts a runner; later calls return a finished task.
    pub fn spawn_runner(&self) -> JoinHandle<()> {
        let rx = lock(&self.inner.rx).take();
        let this = self.clone();
        tokio::spawn(async move {
            let Some(rx) = rx else {
                tracing::warn!("the embedded invoker's runner is already started");
                return;
            };
            this.run(rx).await;
        })
    }

    async fn run(self, mut rx: mpsc::UnboundedReceiver<Invocation>) {
        let semaphore = Arc::new(Semaphore::new(self.inner.concurrency));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let committer = tokio::spawn(self.clone().commit_loop(done_rx));
        let mut tasks = JoinSet::new();
        match self.load_pending().await {
            Ok(left) => {
                if !left.is_empty() {
                    tracing::info!(count = left.len(), "re-running invocations left pending");
                }
                for inv in left {
                    self.dispatch(&mut tasks, inv, &semaphore, &done_tx);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read pending invocations"),
        }
        loop {
            tokio::select! {
                inv = rx.recv() => match inv {
                    Some(inv) => self.dispatch(&mut tasks, inv, &semaphore, &done_tx),
                    None => break,
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!(error = %e, "an invocation task panicked");
                    }
                }
                _ = self.shared.shutdown.wait() => break,
            }
        }
        tasks.shutdown().await;
        drop(done_tx);
        if let Err(e) = committer.await {
            tracing::error!(error = %e, "the completion committer failed");
        }
    }

    fn dispatch(
        &self,
        tasks: &mut JoinSet<()>,
        inv: Invocation,
        semaphore: &Arc<Semaphore>,
        done: &mpsc::UnboundedSender<(Invocation, Result<Value, FunctionError>)>,
    ) {
        if !lock(&self.inner.running).insert(inv.key.clone()) {
            return;
        }
        let this = self.clone();
        let semaphore = semaphore.clone();
        let done = done.clone();
        tasks.spawn(async move {
            let Ok(_permit) = semaphore.acquire_owned().await else {
                return;
            };
            // The key may have reached the runner twice (startup scan and
            // channel) and already completed: its row is gone then.
            match this.is_pending(&inv.key) {
                Ok(true) => {}
                Ok(false) => {
                    lock(&this.inner.running).remove(&inv.key);
                    return;
                }
                Err(e) => tracing::warn!(key = %inv.key, error = %e,
                    "cannot check the invocation row; running it anyway"),
            }
            let result = this
                .inner
                .caller
                .call(&inv.function, inv.input.clone())
                .await;
            // The committer only goes away at shutdown, when this call is
            // abandoned anyway.
            let _ = done.send((inv, result));
        });
    }

    fn is_pending(&self, key: &str) -> Result<bool, EmbeddedError> {
        let s = &self.shared;
        let op = "check invocation";
        let txn = s.db.begin_read().map_err(|e| s.storage(op, e))?;
        let table = txn.open_table(INVOCATIONS).map_err(|e| s.storage(op, e))?;
        Ok(table.get(key).map_err(|e| s.storage(op, e))?.is_some())
    }

    async fn load_pending(&self) -> Result<Vec<Invocation>, EmbeddedError> {
        let op = "read pending invocations";
        self.shared
            .blocking(op, move |s| {
                let txn = s.db.begin_read().map_err(|e| s.storage(op, e))?;
                let table = txn.open_table(INVOCATIONS).map_err(|e| s.storage(op, e))?;
                let mut out = Vec::new();
                for row in table.iter().map_err(|e| s.storage(op, e))? {
                    let (k, v) = row.map_err(|e| s.storage(op, e))?;
                    match serde_json::from_slice::<Invocation>(v.value()) {
                        Ok(inv) => out.push(inv),
                        // One undecodable row must not stop the others.
                        Err(e) => tracing::error!(
                            error = %s.corrupt("invocations", k.value(), e),
                            "skipping an invocation row"
                        ),
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Commits finished calls in batches: each batch queues the completion
    /// events and deletes their invocation rows in one transaction.
    async fn commit_loop(
        self,
        mut rx: mpsc::UnboundedReceiver<(Invocation, Result<Value, FunctionError>)>,
    ) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < COMMIT_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let mut rows: Vec<(String, Vec<u8>)> = Vec::with_capacity(batch.len());
            for (inv, result) in batch {
                match completion_body(&inv, result) {
                    Ok(body) => rows.push((inv.key, body)),
                    Err(message) => {
                        // Cannot happen with keys and steps the engine makes;
                        // the row stays, so the call is retried at restart.
                        tracing::error!(key = %inv.key, %message, "cannot build the completion event");
                        lock(&self.inner.running).remove(&inv.key);
                    }
                }
            }
            let rows = Arc::new(rows);
            let mut backoff = Duration::from_millis(50);
            loop {
                let r = rows.clone();
                let op = "commit completions";
                let outcome = self
                    .shared
                    .blocking(op, move |s| {
                        let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
                        let bodies: Vec<Vec<u8>> = r.iter().map(|(_, b)| b.clone()).collect();
                        append_to_queue(s, &txn, &bodies, op)?;
                        {
                            let mut table =
                                txn.open_table(INVOCATIONS).map_err(|e| s.storage(op, e))?;
                            for (key, _) in r.iter() {
                                table.remove(key.as_str()).map_err(|e| s.storage(op, e))?;
                            }
                        }
                        txn.commit().map_err(|e| s.storage(op, e))
                    })
                    .await;
                match outcome {
                    Ok(()) => {
                        self.shared.queue_notify.notify_waiters();
                        break;
                    }
                    Err(e) => {
                        // The rows stay in the table, so giving up at
                        // shutdown loses nothing: they run again next start.
                        tracing::warn!(error = %e, "committing completions failed; retrying");
                        if self.shared.shutdown.is_set() {
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(COMMIT_MAX_BACKOFF);
                    }
                }
            }
            let mut running = lock(&self.inner.running);
            for (key, _) in rows.iter() {
                running.remove(key);
            }
        }
    }
}

/// The completion event of `inv`, encoded. If a result cannot be turned
/// into an event, the call is reported as failed instead.
fn completion_body(
    inv: &Invocation,
    result: Result<Value, FunctionError>,
) -> Result<Vec<u8>, String> {
    let event = match inv.completion(result) {
        Ok(e) => e,
        Err(first) => inv
            .completion(Err(FunctionError {
                error: "InvalidCompletion".into(),
                cause: first.to_string(),
            }))
            .map_err(|e| e.to_string())?,
    };
    serde_json::to_vec(&event).map_err(|e| e.to_string())
}

#[async_trait]
impl Invoker for EmbeddedInvoker {
    async fn invoke(&self, invocation: &Invocation) -> Result<(), InvokeError> {
        self.invoke_batch(std::slice::from_ref(invocation))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Records every call in one write transaction (one fsync for a whole
    /// fan-out), skipping keys already recorded.
    async fn invoke_batch(&self, invocations: &[Invocation]) -> Vec<Result<(), InvokeError>> {
        let err = |inv: &Invocation, message: String, retryable: bool| InvokeError {
            function: inv.function.clone(),
            key: inv.key.clone(),
            message,
            retryable,
        };
        let mut rows = Vec::with_capacity(invocations.len());
        let mut results: Vec<Result<(), InvokeError>> = Vec::with_capacity(invocations.len());
        for inv in invocations {
            match serde_json::to_vec(inv) {
                Ok(body) => {
                    rows.push((results.len(), inv.key.clone(), body));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(err(
                    inv,
                    format!("cannot encode the invocation: {e}"),
                    false,
                ))),
            }
        }
        if rows.is_empty() {
            return results;
        }
        let op = "record invocations";
        let recorded = self
            .shared
            .blocking(op, move |s| {
                let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
                let mut inserted = Vec::new();
                {
                    let mut table = txn.open_table(INVOCATIONS).map_err(|e| s.storage(op, e))?;
                    for (slot, key, body) in &rows {
                        if table
                            .get(key.as_str())
                            .map_err(|e| s.storage(op, e))?
                            .is_none()
                        {
                            table
                                .insert(key.as_str(), body.as_slice())
                                .map_err(|e| s.storage(op, e))?;
                            inserted.push(*slot);
                        }
                    }
                }
                if inserted.is_empty() {
                    txn.abort().map_err(|e| s.storage(op, e))?;
                } else {
                    txn.commit().map_err(|e| s.storage(op, e))?;
                }
                Ok(inserted)
            })
            .await;
        match recorded {
            Ok(inserted) => {
                for slot in inserted {
                    // No receiver only after the runner stopped; the row runs
                    // at the next start.
                    let _ = self.inner.tx.send(invocations[slot].clone());
                }
            }
            Err(e) => {
                let retryable = e.is_retryable();
                for (inv, r) in invocations.iter().zip(results.iter_mut()) {
                    if r.is_ok() {
                        *r = Err(err(inv, e.to_string(), retryable));
                    }
                }
            }
        }
        results
    }
}
