//! Helpers shared by the engine test files.
//!
//! Each integration test file compiles this module separately and uses only
//! part of it, so unused-helper warnings are expected per file.
#![allow(dead_code)]

use cloudevents::{AttributesReader, Event};
use serde_json::Value;
use trigflow_core::Engine;
use trigflow_core::event::NewEvent;
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::state::{Effect, ExecutionState, FunctionError, Invocation};

/// Parses a workflow from JSON (panics with serde's message on a typo in a test).
pub fn wf(v: Value) -> Workflow {
    serde_json::from_value(v).expect("workflow JSON in test is well-formed")
}

/// The execution id every test uses.
pub fn exec_id() -> ExecutionId {
    "e1".parse().expect("valid execution id")
}

/// Starts `wf` with `input` at time 0 on `engine`.
pub fn start_with(engine: &Engine, wf: &Workflow, input: Value) -> ExecutionState {
    engine
        .start(wf, exec_id(), input, 0)
        .expect("workflow starts")
}

/// Starts `wf` with `input` on a plain engine.
pub fn start(wf: &Workflow, input: Value) -> ExecutionState {
    start_with(&Engine::new(), wf, input)
}

/// A user event addressed to execution `e1`.
pub fn event(source: &str, id: &str, ty: &str, subject: Option<&str>, data: Value) -> Event {
    let exec = exec_id();
    NewEvent {
        source,
        id,
        ty,
        subject,
        execution: Some(&exec),
        index: None,
        attempt: None,
        data: Some(data),
    }
    .build()
    .expect("valid event")
}

/// A user event of type `test.event` with source `test` and the given subject.
pub fn ev(id: &str, subject: &str, data: Value) -> Event {
    event("test", id, "test.event", Some(subject), data)
}

/// Invocations waiting in the outbox, in order.
pub fn invocations(state: &ExecutionState) -> Vec<Invocation> {
    state
        .outbox
        .iter()
        .filter_map(|p| match &p.effect {
            Effect::Invoke(inv) => Some(inv.clone()),
            _ => None,
        })
        .collect()
}

/// Events published (not timers) waiting in the outbox, in order.
pub fn published(state: &ExecutionState) -> Vec<Event> {
    state
        .outbox
        .iter()
        .filter_map(|p| match &p.effect {
            Effect::Publish { event } => Some(event.clone()),
            _ => None,
        })
        .collect()
}

/// Outbox keys, in order.
pub fn outbox_keys(state: &ExecutionState) -> Vec<String> {
    state.outbox.iter().map(|p| p.key.clone()).collect()
}

/// The success event of `inv` with `result`.
pub fn succeeded(inv: &Invocation, result: Value) -> Event {
    inv.completion(Ok(result)).expect("completion event")
}

/// The failure event of `inv`.
pub fn failed(inv: &Invocation, error: &str) -> Event {
    inv.completion(Err(FunctionError {
        error: error.to_owned(),
        cause: format!("{error} in test"),
    }))
    .expect("completion event")
}

/// The whole state as JSON, for before/after comparisons (the seen-set and
/// every map serialise deterministically).
pub fn snapshot(state: &ExecutionState) -> Value {
    let mut v = serde_json::to_value(state).expect("state serialises");
    // The seen-set encodes in hash-set order; compare it as a sorted list.
    let mut seen: Vec<u128> = state.seen.0.iter().map(|k| k.0).collect();
    seen.sort_unstable();
    v["seen"] = serde_json::json!(seen.iter().map(|k| format!("{k:032x}")).collect::<Vec<_>>());
    v
}

/// The event's id, for readable assertions.
pub fn id_of(e: &Event) -> String {
    e.id().to_owned()
}
