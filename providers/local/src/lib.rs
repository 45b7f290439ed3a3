//! # trigflow-local
//!
//! Local / edge mode: trigflow on your own machines with NATS JetStream
//! carrying the events and holding the state. [`Local::connect`] connects,
//! creates whatever streams, consumers and bucket are missing, and hands
//! out the four seams the worker drives:
//!
//! - [`KvStore`]: the state store on JetStream KV, compare-and-set on the
//!   revision;
//! - [`JetStreamSource`]: a durable pull consumer shared by every worker
//!   (explicit ack, nak with delay for retries, attempt = delivery count);
//! - [`JetStreamSink`]: events published with `Nats-Msg-Id` from (source,
//!   id), timers that survive restarts (run a [`TimerLoop`]), dead letters
//!   with their reason;
//! - [`NatsInvoker`]: function calls for edge [`Agent`]s, which serve
//!   functions from a durable consumer per function and publish completion
//!   events.
//!
//! Subjects, streams and headers are listed in [`names`]. Around them:
//! [`LocalSettings`] loads the settings of the `trigflow worker` and
//! `trigflow agent` commands from a file, the environment and flags;
//! [`node`] holds the agents' heartbeats (node, CPU, memory, functions) and
//! the [`AgentDirectory`] that reads them; [`builtins`] are the functions an
//! agent serves without a program (`builtin:sum`...).
//!
//! ```no_run
//! use std::sync::Arc;
//! use trigflow_local::{Local, LocalConfig};
//! use trigflow_worker::Worker;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let local = Local::connect(LocalConfig::with_url("nats://127.0.0.1:4222")).await?;
//! let worker = Worker::new(
//!     trigflow_core::Engine::new(),
//!     Arc::new(local.store()),
//!     Arc::new(local.sink()),
//!     Arc::new(local.invoker()),
//! );
//! let source = local.source();
//! worker.run(&source, 256, std::future::pending(), |_| {}).await;
//! # Ok(()) }
//! ```
//!
//! With an object store ([`Local::with_claims`], settings `s3_endpoint`...),
//! payloads above the claim-check threshold travel by reference and
//! [`data`] announces objects to executions (data-ready events: [`Parts`]
//! written by running functions, MinIO bucket notifications through the
//! [`MinioBridge`]).
//!
//! Features: `testing` adds `testing::NatsServer`, a real `nats-server`
//! on a free loopback port for tests.

pub mod agent;
pub mod builtins;
pub mod connect;
pub mod data;
pub mod events;
pub mod kv;
pub mod names;
pub mod node;
pub mod routing;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;

pub use agent::{Agent, FunctionFuture, Handler, NatsInvoker, PartsHandler};
pub use connect::{Local, LocalConfig, LocalError};
pub use data::{DataReady, MinioBridge, PartError, Parts};
pub use events::{JetStreamSink, JetStreamSource, TimerLoop};
pub use kv::KvStore;
pub use node::{AgentDirectory, NodeReport, NodeStats};
pub use settings::{LocalSettings, Origin, SettingsError};
/// The S3 object store crate (settings, client) the claim check uses.
pub use trigflow_objstore as objstore;
