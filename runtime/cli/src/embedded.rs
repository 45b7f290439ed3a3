//! Embedded mode: the worker, the redb-backed store, queue and invoker in
//! one process. `trigflow run` and the benchmarks use it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::Value;
use tokio::task::JoinHandle;
use trigflow_core::Engine;
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::state::ExecutionState;
use trigflow_embedded::{EmbeddedDb, EmbeddedQueue, FunctionRegistry, InvokerConfig};
use trigflow_worker::{SystemClock, Worker, WorkerError};

/// How many events the worker takes per batch. Large batches amortise the
/// state write (one per execution per batch) and the queue transactions.
pub const BATCH: usize = 8192;

/// An open embedded runtime.
pub struct Embedded {
    /// The database.
    pub db: EmbeddedDb,
    /// The worker.
    pub worker: Worker,
    /// The queue (event source and sink).
    pub queue: EmbeddedQueue,
    tasks: Vec<JoinHandle<()>>,
}

/// Options of the embedded runtime.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Directory for relative `cmd:` functions (the workflow's folder).
    pub base_dir: Option<PathBuf>,
    /// Function calls at once (0: default).
    pub concurrency: usize,
}

/// Opens (creating if needed) the database and the pieces over it. Does not
/// start background tasks; see [`Embedded::start`].
pub fn open(path: &Path) -> anyhow::Result<EmbeddedDb> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    EmbeddedDb::open(path).with_context(|| {
        format!(
            "cannot open the embedded database {} (is another trigflow process using it?)",
            path.display()
        )
    })
}

impl Embedded {
    /// Opens the database at `path` and starts the invocation runner and the
    /// timer loop; dispatches outboxes left by a previous (crashed) run.
    pub async fn start(
        path: &Path,
        registry: FunctionRegistry,
        opts: Options,
    ) -> anyhow::Result<Self> {
        let db = open(path)?;
        let queue = db.queue();
        let mut config = InvokerConfig {
            base_dir: opts.base_dir,
            ..InvokerConfig::default()
        };
        if opts.concurrency > 0 {
            config.concurrency = opts.concurrency;
        }
        let invoker = db.invoker(registry, config)?;
        let worker = Worker::new(
            Engine::new(),
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
    ) -> anyhow::Result<ExecutionState> {
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
            .with_context(|| format!("execution {execution} vanished from the store"))?;
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

    /// Processes events until `execution` is finished.
    pub async fn wait(&self, execution: &ExecutionId, progress: bool) -> anyhow::Result<()> {
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
    /// nothing is queued, running or scheduled.
    pub async fn work(&self, until_idle: bool) -> anyhow::Result<()> {
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

    async fn is_finished(&self, execution: &ExecutionId) -> anyhow::Result<bool> {
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

/// One word for a status.
pub fn status_word(state: &ExecutionState) -> &'static str {
    use trigflow_core::state::ExecutionStatus;
    match state.status {
        ExecutionStatus::Running => "running",
        ExecutionStatus::Succeeded { .. } => "succeeded",
        ExecutionStatus::Failed { .. } => "failed",
    }
}
