//! # trigflow-worker
//!
//! The worker loop that drives the pure engine through the four seams (event
//! source, state store, invoker, event sink) and gives DESIGN.md's
//! guarantees: ack only after the state write, dedup, outbox + idempotency
//! keys, conditional writes retried from a fresh read, dead letters.
//!
//! Features: `conformance` exposes the state-store conformance suite that
//! every backend runs.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod memory;
pub mod worker;

pub use worker::{BatchReport, Clock, SystemClock, Worker, WorkerConfig, WorkerError};
