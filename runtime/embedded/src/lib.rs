//! # trigflow-embedded
//!
//! Embedded mode: one process, durable on local disk, no service to run.
//! One [`redb`] file holds every table, and [`EmbeddedDb`] hands out the
//! seams the worker drives:
//!
//! - [`EmbeddedStore`]: the state store (conditional writes in one write
//!   transaction, versions from a durable counter);
//! - [`EmbeddedQueue`]: event source and sink (queue, timers that survive a
//!   restart, dead letters); unacknowledged messages are delivered again
//!   after a restart;
//! - [`EmbeddedInvoker`]: function calls recorded durably and run with a
//!   concurrency limit; a call's completion event and the removal of its
//!   record commit together, so a crash re-runs a step at worst and never
//!   loses one. Function references: `inproc:NAME`, `cmd:PROGRAM ARG...`,
//!   `http(s)://...`, `stub:<N>ms` (see [`functions`]).
//!
//! [`EmbeddedRuntime`] puts them together with the worker: open a database,
//! run workflows with in-process functions and custom conditions.
//!
//! Every write commits with redb's default durability (fsync before the
//! commit returns).
//!
//! ```
//! use std::time::Duration;
//! use trigflow_core::seams::{EventSink, EventSource};
//! use trigflow_embedded::EmbeddedDb;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let db = EmbeddedDb::open(dir.path().join("trigflow.redb")).unwrap();
//! let queue = db.queue();
//! let event = trigflow_core::event::NewEvent {
//!     source: "example", id: "1", ty: "greeting", subject: Some("hello"),
//!     execution: None, index: None, attempt: None, data: None,
//! }.build().unwrap();
//! queue.publish(&[event]).await.unwrap();
//! let batch = queue.receive(10, Duration::from_millis(100)).await.unwrap();
//! assert_eq!(batch.len(), 1);
//! queue.ack(&[batch[0].id.clone()]).await.unwrap();
//! assert_eq!(db.pending_counts().unwrap().queued, 0);
//! # });
//! ```

pub mod db;
pub mod functions;
pub mod invoker;
pub mod queue;
pub mod runtime;
pub mod store;

pub use db::{EmbeddedDb, EmbeddedError, PendingCounts};
pub use functions::{FunctionCaller, FunctionFuture, FunctionRegistry, InprocFunction};
pub use invoker::{EmbeddedInvoker, InvokerConfig};
pub use queue::EmbeddedQueue;
pub use runtime::{EmbeddedRuntime, RuntimeError};
pub use store::EmbeddedStore;
