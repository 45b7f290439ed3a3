//! The embedded runtime: the worker over the embedded store, queue and
//! invoker, in one process. `trigflow run` is a thin wrapper around it;
//! library users embed it to run workflows with in-process Rust functions
//! and custom conditions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;
use trigflow_core::Engine;
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::state::{ExecutionState, ExecutionStatus};
use trigflow_worker::{SystemClock, Worker, WorkerError};

use crate::{EmbeddedDb, EmbeddedError, EmbeddedQueue, FunctionRegistry, InvokerConfig};

/// How many events the worker takes per batch. Large batches amortise the
/// state write (one per execution per batch) and the queue transactions.
pub const BATCH: usize = 8192;

/// A failure of the embedded runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The database could not be opened or used.
    #[error(transparent)]
    Db(#[from] EmbeddedError),
    /// The folder of the database could not be created.
    #[error("cannot create {}: {source}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Starting or loading an execution failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The execution's state disappeared while it was being processed.
    #[error("execution {0} vanished from the store")]
    Vanished(ExecutionId),
}

/// How to build an [`EmbeddedRuntime`].
#[derive(Clone, Default)]
pub struct Options {
    /// The engine (register custom conditions on it).
    pub engine: Engine,
    /// In-process functions (`inproc:NAME`).
    pub functions: FunctionRegistry,
    /// Directory that relative `cmd:` functions run in.
    pub base_dir: Option<PathBuf>,
    /// Function calls at once (0: the invoker's default).
    pub concurrency: usize,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("base_dir", &self.base_dir)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Opens (creating the file and its folder if needed) the database.
pub fn open_db(path: &Path) -> Result<EmbeddedDb, RuntimeError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| RuntimeError::Folder {
            path: dir.to_owned(),
            source,
        })?;
    }
    Ok(EmbeddedDb::open(path)?)
}

/// An open embedded runtime: the database, the worker, and the background
/// tasks (invocation runner, timer loop).
///
/// ```
/// use trigflow_embedded::runtime::{EmbeddedRuntime, Options};
/// use trigflow_embedded::FunctionRegistry;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let functions = FunctionRegistry::new();
/// functions.register_fn("double", |v| Ok(serde_json::json!(v.as_i64().unwrap_or(0) * 2)));
/// let wf = serde_json::from_value(serde_json::json!({"id": "double", "triggers": [
///     {"id": "go", "on": {"types": ["trigflow.execution.started"]},
///      "actions": [{"kind": "invoke", "function": "inproc:double"}]},
///     {"id": "done", "on": {"subjects": ["go"]}, "actions": [{"kind": "complete"}]}
/// ]})).unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let rt = EmbeddedRuntime::open(&dir.path().join("db.redb"), Options { functions, ..Options::default() })
///     .await.unwrap();
/// let state = rt.run(&wf, &"e1".parse().unwrap(), serde_json::json!(21), false).await.unwrap();
/// assert_eq!(state.status, trigflow_core::state::ExecutionStatus::Succeeded { output: serde_json::json!(42) });
/// rt.close().await;
/// # });
/// ```
pub struct EmbeddedRuntime {
    /// The database.
    pub db: EmbeddedDb,
    /// The worker.
    pub worker: Worker,
    /// The queue (event source and sink).
    pub queue: EmbeddedQueue,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRuntime")
            .field("db", &self.db.path())
            .finish_non_exhaustive()
    }
}

impl EmbeddedRuntime {
    /// Opens the database at `path`, starts the invocation runner and the
    /// timer loop, and dispatches outboxes left by a previous (crashed) run.
    /// Must be called inside a tokio runtime.
    pub async fn open(path: &Path, opts: Options) -> Result<Self, RuntimeError> {
        let db = open_db(path)?;
        let queue = db.queue();
        let mut config = InvokerConfig {
            base_dir: opts.base_dir,
            ..InvokerConfig::default()
        };
        if opts.concurrency > 0 {
            config.concurrency = opts.concurrency;
        }
        let invoker = db.invoker(opts.functions, config)?;
        let worker = Worker::new(
            opts.engine,
            Arc::new(db.store()),
            Arc::new(queue.clone()),
            Arc::new(invoker.clone()),
        );
        let tasks = vec![
            invoker.spawn_runner(),
            queue.spawn_timer_loop(Arc::new(SystemClock)),
        ];
        let recovered = worker.recover().await?;
        if recovered > 0 {
            tracing::info!(recovered, "dispatched effects left by a previous run");
        }
        Ok(Self {
            db,
            worker,
            queue,
            tasks,
        })
    }

    /// Starts `execution` (or resumes it if it exists) and processes events
    /// until it finishes. Progress goes to stderr when `progress` is set.
    pub async fn run(
        &self,
        wf: &Workflow,
        execution: &ExecutionId,
        input: Value,
        progress: bool,
    ) -> Result<ExecutionState, RuntimeError> {
        let started = Instant::now();
        match self.worker.start(wf, execution.clone(), input).await {
            Ok(_) => {
                if progress {
                    eprintln!("trigflow: execution {execution} started");
                }
            }
            Err(WorkerError::AlreadyExists(_)) => {
                if progress {
                    eprintln!("trigflow: resuming execution {execution}");
                }
            }
            Err(e) => return Err(e.into()),
        }
        self.wait(execution, progress).await?;
        let state = self
            .worker
            .load(execution)
            .await?
            .ok_or_else(|| RuntimeError::Vanished(execution.clone()))?;
        if progress {
            eprintln!(
                "trigflow: execution {execution} {} after {:.3}s ({} events, {} firings)",
                status_word(&state),
                started.elapsed().as_secs_f64(),
                state.events_applied,
                state.history.len()
            );
        }
        Ok(state)
    }

    /// Processes events (of every execution) until `execution` is finished.
    pub async fn wait(&self, execution: &ExecutionId, progress: bool) -> Result<(), RuntimeError> {
        if self.is_finished(execution).await? {
            return Ok(());
        }
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let mut processed = 0usize;
        let mut last = Instant::now();
        self.worker
            .run(
                &self.queue,
                BATCH,
                async move {
                    let _ = rx.wait_for(|done| *done).await;
                },
                |report| {
                    processed += report.acked.len();
                    if report.finished.contains(execution) {
                        let _ = tx.send(true);
                    }
                    if progress && last.elapsed() > Duration::from_secs(1) {
                        last = Instant::now();
                        eprintln!("trigflow: {processed} events processed");
                    }
                },
            )
            .await;
        Ok(())
    }

    /// Processes events of every execution; with `until_idle`, returns once
    /// nothing is queued, running or scheduled, else on Ctrl-C.
    pub async fn work(&self, until_idle: bool) -> Result<(), RuntimeError> {
        let db = self.db.clone();
        let idle = async move {
            if !until_idle {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match db.pending_counts() {
                    Ok(p) if p.queued == 0 && p.invocations == 0 && p.timers == 0 => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read pending counts; stopping");
                        return;
                    }
                }
            }
        };
        self.worker.run(&self.queue, BATCH, idle, |_| {}).await;
        Ok(())
    }

    async fn is_finished(&self, execution: &ExecutionId) -> Result<bool, RuntimeError> {
        Ok(self
            .worker
            .load(execution)
            .await?
            .is_some_and(|s| s.status.is_terminal()))
    }

    /// Stops the background tasks and waits for them, releasing the file.
    pub async fn close(self) {
        self.db.shutdown();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One word for an execution's status.
pub fn status_word(state: &ExecutionState) -> &'static str {
    match state.status {
        ExecutionStatus::Running => "running",
        ExecutionStatus::Succeeded { .. } => "succeeded",
        ExecutionStatus::Failed { .. } => "failed",
    }
}
