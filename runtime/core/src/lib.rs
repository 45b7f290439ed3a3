//! # trigflow-core
//!
//! The model and the pure (sans-IO) engine of trigflow, and the four seams
//! the worker drives it through. No cloud SDK, broker or async runtime.
//!
//! A workflow is a set of Event-Condition-Action triggers over CloudEvents.
//! The [`Engine`] takes an [`ExecutionState`](state::ExecutionState) and a
//! batch of events and returns the new state, with the effects it decided
//! (invoke a function, publish an event, schedule a timer) in the state's
//! outbox, so that the decision and the pending action are stored together.
//!
//! ```
//! use trigflow_core::{Engine, model::Workflow, sim};
//! let wf: Workflow = serde_json::from_value(serde_json::json!({
//!     "id": "hello",
//!     "triggers": [
//!         {"id": "greet", "on": {"types": ["trigflow.execution.started"]},
//!          "actions": [{"kind": "invoke", "function": "inproc:greet", "input": ".event.data.name"}]},
//!         {"id": "done", "on": {"subjects": ["greet"]},
//!          "actions": [{"kind": "complete", "output": "{greeting: .event.data}"}]}
//!     ]
//! })).unwrap();
//! let run = sim::run(&Engine::new(), &wf, serde_json::json!({"name": "Ada"}),
//!     |inv| Ok(serde_json::json!(format!("hello {}", inv.input.as_str().unwrap_or("")))), 100).unwrap();
//! assert_eq!(run.state.status, trigflow_core::state::ExecutionStatus::Succeeded {
//!     output: serde_json::json!({"greeting": "hello Ada"}) });
//! ```
//!
//! Cargo feature `jsonata` (off by default): the jq function
//! `jsonata($expression)` (module `jsonata`), for front-ends whose source
//! language is JSONata (ASL's `QueryLanguage: JSONata`).

pub mod claim;
pub mod engine;
pub mod event;
pub mod expr;
pub mod ids;
#[cfg(feature = "jsonata")]
pub mod jsonata;
pub mod model;
pub mod seams;
pub mod sim;
pub mod state;

pub use cloudevents;
pub use engine::{Engine, EventOutcome};
