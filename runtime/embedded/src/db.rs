//! The database file and what the three seams share: the tables, the
//! sequence counters, the wake-ups and the shutdown signal.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::Notify;
use tokio::time::Instant;
use trigflow_core::seams::DeadLetter;

use crate::functions::FunctionRegistry;
use crate::invoker::{EmbeddedInvoker, InvokerConfig};
use crate::queue::EmbeddedQueue;
use crate::store::EmbeddedStore;

/// State store: key -> (version, bytes).
pub(crate) const STATE: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("state");
/// Small counters that must survive a restart (the last state version).
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Event queue: sequence number -> structured CloudEvent JSON.
pub(crate) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// Timers: (fire at ms, sequence number) -> structured CloudEvent JSON. The
/// due time leads the key so the due timers are a prefix of the table.
pub(crate) const TIMERS: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("timers");
/// Dead letters: sequence number -> `DeadLetter` JSON.
pub(crate) const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
/// Invocations accepted and not yet completed: key -> `Invocation` JSON.
pub(crate) const INVOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("invocations");

/// Key in [`META`] of the last state version handed out.
pub(crate) const META_STATE_VERSION: &str = "state_version";

/// Page cache size of the embedded database.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// An embedded-mode failure: the database file could not be opened, read or
/// written, or holds a row that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The database file could not be opened or created.
    #[error("cannot open embedded database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A read or write failed.
    #[error("embedded database {path}: {op} failed: {source}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Why.
        // Boxed: redb's error is large and this travels on every Result.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored row does not decode (written by an incompatible version, or
    /// damaged).
    #[error("embedded database {path}: row {row} of table {table} does not decode: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// The row's key.
        row: String,
        /// The decoding error.
        message: String,
    },
    /// A background task running a database operation panicked or was
    /// cancelled.
    #[error("embedded database {path}: {op}: background task failed: {message}")]
    Task {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Why.
        message: String,
    },
    /// The HTTP client for `http(s)://` functions could not be built.
    #[error("cannot build the HTTP client for functions: {0}")]
    HttpClient(String),
}

impl EmbeddedError {
    /// Whether trying again may succeed: I/O errors may be transient (disk
    /// full, interrupted); corruption and format errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            EmbeddedError::Storage { source, .. } => {
                matches!(**source, redb::Error::Io(_))
            }
            EmbeddedError::Task { .. } => true,
            EmbeddedError::Open { .. }
            | EmbeddedError::Corrupt { .. }
            | EmbeddedError::HttpClient(_) => false,
        }
    }
}

/// A one-way shutdown signal for the background loops.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    flag: AtomicBool,
    notify: Notify,
}

impl Shutdown {
    pub(crate) fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Returns once [`Shutdown::trigger`] has been called.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a trigger in between
            // still wakes us.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

/// In-memory delivery bookkeeping of the queue. Nothing here is durable on
/// purpose: after a restart every row still in the queue table is delivered
/// again, which is the at-least-once redelivery of unacknowledged messages.
#[derive(Debug, Default)]
pub(crate) struct DeliveryState {
    /// Lowest sequence number not yet handed out by a range scan. Everything
    /// below it is in flight, acknowledged (deleted) or waiting for a retry,
    /// so a receive never has to look at it again: one range scan from here.
    pub(crate) next_unseen: u64,
    /// Retried messages by the time they become visible again.
    pub(crate) retry_ready: BTreeSet<(Instant, u64)>,
    /// Sequence numbers in `retry_ready`, so a retry is not queued twice.
    pub(crate) retrying: HashSet<u64>,
    /// Attempt number of the next delivery, for messages retried at least
    /// once (the rest are on attempt 1).
    pub(crate) attempts: HashMap<u64, u32>,
}

/// What every handle on one database shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    /// Next queue sequence number. Taken only inside a write transaction:
    /// redb runs one write transaction at a time, so rows become visible in
    /// sequence order and a reader's cursor never skips a row committed late.
    pub(crate) queue_seq: AtomicU64,
    /// Next timer sequence number (uniqueness among timers due at the same
    /// millisecond).
    pub(crate) timer_seq: AtomicU64,
    /// Next dead-letter sequence number.
    pub(crate) dead_seq: AtomicU64,
    /// Woken when messages are published or become visible again.
    pub(crate) queue_notify: Notify,
    /// Woken when a timer is scheduled.
    pub(crate) timer_notify: Notify,
    pub(crate) delivery: Mutex<DeliveryState>,
    pub(crate) shutdown: Shutdown,
}

impl Shared {
    pub(crate) fn storage(&self, op: &'static str, e: impl Into<redb::Error>) -> EmbeddedError {
        EmbeddedError::Storage {
            path: self.path.clone(),
            op,
            source: Box::new(e.into()),
        }
    }

    pub(crate) fn corrupt(
        &self,
        table: &'static str,
        row: impl ToString,
        e: impl ToString,
    ) -> EmbeddedError {
        EmbeddedError::Corrupt {
            path: self.path.clone(),
            table,
            row: row.to_string(),
            message: e.to_string(),
        }
    }

    pub(crate) fn delivery(&self) -> MutexGuard<'_, DeliveryState> {
        // Every critical section leaves the bookkeeping consistent between
        // statements that can panic, so a poisoned lock is still usable.
        self.delivery.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a (blocking) database operation off the async threads: a commit
    /// waits for fsync, which must not stall the tasks sharing the runtime.
    pub(crate) async fn blocking<T, F>(
        self: &Arc<Self>,
        op: &'static str,
        f: F,
    ) -> Result<T, EmbeddedError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, EmbeddedError> + Send + 'static,
    {
        let shared = self.clone();
        match tokio::task::spawn_blocking(move || f(&shared)).await {
            Ok(r) => r,
            Err(e) => Err(EmbeddedError::Task {
                path: self.path.clone(),
                op,
                message: e.to_string(),
            }),
        }
    }
}

/// Numbers of rows waiting in each table, for `trigflow status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingCounts {
    /// Messages in the queue (published and not acknowledged).
    pub queued: u64,
    /// Timers not yet fired.
    pub timers: u64,
    /// Invocations accepted and not yet completed.
    pub invocations: u64,
    /// Dead letters stored.
    pub dead_letters: u64,
    /// Keys in the state store.
    pub state_keys: u64,
}

/// One embedded-mode database: a single redb file holding the state store,
/// the event queue, timers, dead letters and pending invocations.
///
/// redb was chosen because it is pure Rust (no C toolchain, builds anywhere
/// the CLI does), ACID with copy-on-write B-trees, crash-safe (a commit with
/// the default durability is fsynced before it returns, and a torn write
/// leaves the previous commit intact), keeps everything in one file, and is
/// actively maintained with a stable file format. One file with several
/// tables lets one transaction span them: a function's completion event is
/// queued and its invocation row deleted atomically.
///
/// Cloning is cheap; every clone and every piece handed out shares one
/// `redb::Database`. The file stays open (and locked) until the last handle
/// and background task is gone; call [`EmbeddedDb::shutdown`] and await the
/// background tasks to release it.
#[derive(Debug, Clone)]
pub struct EmbeddedDb {
    shared: Arc<Shared>,
}

impl EmbeddedDb {
    /// Opens the database at `path`, creating the file and its tables if
    /// needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, EmbeddedError> {
        let path = path.as_ref().to_path_buf();
        // redb's default page cache is 1 GiB; the working set here (the
        // states being written and the queue's tail) is small, and a large
        // cache only shows up as resident memory on small edge machines.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| EmbeddedError::Open {
                path: path.clone(),
                source: Box::new(source),
            })?;
        let mut shared = Shared {
            db,
            path,
            queue_seq: AtomicU64::new(0),
            timer_seq: AtomicU64::new(0),
            dead_seq: AtomicU64::new(0),
            queue_notify: Notify::new(),
            timer_notify: Notify::new(),
            delivery: Mutex::new(DeliveryState::default()),
            shutdown: Shutdown::default(),
        };
        init_tables(&mut shared)?;
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The state store.
    pub fn store(&self) -> EmbeddedStore {
        EmbeddedStore::new(self.shared.clone())
    }

    /// The event queue (source and sink). All handles share one delivery
    /// cursor, so two receivers never get the same message.
    pub fn queue(&self) -> EmbeddedQueue {
        EmbeddedQueue::new(self.shared.clone())
    }

    /// An invoker for this database. Create one per database: each runs the
    /// leftover invocations when its runner starts.
    pub fn invoker(
        &self,
        registry: FunctionRegistry,
        config: InvokerConfig,
    ) -> Result<EmbeddedInvoker, EmbeddedError> {
        EmbeddedInvoker::new(self.shared.clone(), registry, config)
    }

    /// Every dead letter stored, oldest first.
    pub fn list_dead_letters(&self) -> Result<Vec<DeadLetter>, EmbeddedError> {
        list_dead_letters(&self.shared)
    }

    /// How many rows wait in each table.
    pub fn pending_counts(&self) -> Result<PendingCounts, EmbeddedError> {
        let s = &self.shared;
        let op = "count pending rows";
        let txn = s.db.begin_read().map_err(|e| s.storage(op, e))?;
        let len = |r: Result<u64, redb::StorageError>| r.map_err(|e| s.storage(op, e));
        Ok(PendingCounts {
            queued: len(txn.open_table(QUEUE).map_err(|e| s.storage(op, e))?.len())?,
            timers: len(txn.open_table(TIMERS).map_err(|e| s.storage(op, e))?.len())?,
            invocations: len(txn
                .open_table(INVOCATIONS)
                .map_err(|e| s.storage(op, e))?
                .len())?,
            dead_letters: len(txn.open_table(DEAD).map_err(|e| s.storage(op, e))?.len())?,
            state_keys: len(txn.open_table(STATE).map_err(|e| s.storage(op, e))?.len())?,
        })
    }

    /// Asks the background loops (timer loop, invocation runner) to stop.
    /// Running function calls are abandoned; their rows stay and run again
    /// on the next start.
    pub fn shutdown(&self) {
        self.shared.shutdown.trigger();
    }
}

/// Creates every table (so readers never meet a missing one) and restores
/// the sequence counters from the last rows.
fn init_tables(s: &mut Shared) -> Result<(), EmbeddedError> {
    let op = "initialise tables";
    let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
    let (queue_next, timer_next, dead_next) = {
        txn.open_table(STATE).map_err(|e| s.storage(op, e))?;
        txn.open_table(META).map_err(|e| s.storage(op, e))?;
        txn.open_table(INVOCATIONS).map_err(|e| s.storage(op, e))?;
        let queue = txn.open_table(QUEUE).map_err(|e| s.storage(op, e))?;
        let timers = txn.open_table(TIMERS).map_err(|e| s.storage(op, e))?;
        let dead = txn.open_table(DEAD).map_err(|e| s.storage(op, e))?;
        let queue_next = queue
            .last()
            .map_err(|e| s.storage(op, e))?
            .map_or(0, |(k, _)| k.value() + 1);
        let dead_next = dead
            .last()
            .map_err(|e| s.storage(op, e))?
            .map_or(0, |(k, _)| k.value() + 1);
        // Timers are keyed by due time first, so the largest sequence number
        // can be anywhere; one scan at startup is cheap next to a restart.
        let mut timer_next = 0;
        for row in timers.iter().map_err(|e| s.storage(op, e))? {
            let (k, _) = row.map_err(|e| s.storage(op, e))?;
            timer_next = timer_next.max(k.value().1 + 1);
        }
        (queue_next, timer_next, dead_next)
    };
    txn.commit().map_err(|e| s.storage(op, e))?;
    s.queue_seq = AtomicU64::new(queue_next);
    s.timer_seq = AtomicU64::new(timer_next);
    s.dead_seq = AtomicU64::new(dead_next);
    Ok(())
}

/// Every dead letter stored, oldest first.
pub(crate) fn list_dead_letters(s: &Shared) -> Result<Vec<DeadLetter>, EmbeddedError> {
    let op = "read dead letters";
    let txn = s.db.begin_read().map_err(|e| s.storage(op, e))?;
    let table = txn.open_table(DEAD).map_err(|e| s.storage(op, e))?;
    let mut out = Vec::new();
    for row in table.iter().map_err(|e| s.storage(op, e))? {
        let (k, v) = row.map_err(|e| s.storage(op, e))?;
        let letter = serde_json::from_slice(v.value())
            .map_err(|e| s.corrupt("dead_letters", k.value(), e))?;
        out.push(letter);
    }
    Ok(out)
}
