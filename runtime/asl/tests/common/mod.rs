//! Helpers shared by the scenario tests: load a document, run it in the
//! simulator with inline functions, read the outcome.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde_json::Value;
use trigflow_asl::{AslOptions, load_str_with};
use trigflow_core::Engine;
use trigflow_core::sim::{self, SimRun};
use trigflow_core::state::{ExecutionStatus, FunctionError, Invocation};

/// Loads `doc` (JSON value) with `resources`, failing the test on problems.
pub fn load(doc: &Value, resources: &[(&str, &str)]) -> trigflow_core::model::Workflow {
    let opts = AslOptions {
        resources: resources
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        name: Some("test".into()),
        ..AslOptions::default()
    };
    match load_str_with(&doc.to_string(), "test.asl.json", &opts) {
        Ok(l) => l.workflow,
        Err(e) => panic!("load failed:\n{e}"),
    }
}

/// Runs `doc` on `input`; functions are answered by `f`.
pub fn run_with(
    doc: &Value,
    input: Value,
    f: impl FnMut(&Invocation) -> Result<Value, FunctionError>,
) -> SimRun {
    let wf = load(doc, &[]);
    sim::run(&Engine::new(), &wf, input, f, 100_000).expect("run")
}

/// Runs a document that calls no function.
pub fn run(doc: &Value, input: Value) -> SimRun {
    run_with(doc, input, |inv| {
        panic!("unexpected invocation of {}", inv.function)
    })
}

/// The output of a succeeded run (panics with the status otherwise).
pub fn output(r: &SimRun) -> Value {
    match &r.state.status {
        ExecutionStatus::Succeeded { output } => output.clone(),
        other => panic!("expected success, got {other:?}"),
    }
}

/// The error and cause of a failed run.
pub fn failure(r: &SimRun) -> (String, Value) {
    match &r.state.status {
        ExecutionStatus::Failed { error, cause } => (error.clone(), cause.clone()),
        other => panic!("expected failure, got {other:?}"),
    }
}

/// A function error.
pub fn ferr(error: &str, cause: &str) -> FunctionError {
    FunctionError {
        error: error.into(),
        cause: cause.into(),
    }
}

/// Runs with functions that answer late or never: `f` gives the delay (ms)
/// of the answer, or `None` for no answer. Like the simulator, timers fire
/// in time order once no event is pending.
pub fn run_lossy(
    doc: &Value,
    input: Value,
    mut f: impl FnMut(&Invocation) -> Option<(i64, Result<Value, FunctionError>)>,
) -> SimRun {
    use trigflow_core::state::Effect;
    let wf = load(doc, &[]);
    let engine = Engine::new();
    let exec = "sim".parse().expect("id");
    let mut now = 0i64;
    let mut state = engine.start(&wf, exec, input, now).expect("start");
    let mut queue = std::collections::VecDeque::new();
    let mut timers: Vec<(i64, trigflow_core::cloudevents::Event)> = Vec::new();
    let mut invocations = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..100_000 {
        for p in std::mem::take(&mut state.outbox) {
            match p.effect {
                Effect::Invoke(inv) => {
                    match f(&inv) {
                        Some((0, res)) => queue.push_back(inv.completion(res).expect("event")),
                        Some((delay, res)) => {
                            timers.push((now + delay, inv.completion(res).expect("event")))
                        }
                        None => {}
                    }
                    invocations.push(inv);
                }
                Effect::Publish { event } => queue.push_back(event),
                Effect::Timer { fire_at_ms, event } => timers.push((fire_at_ms, event)),
            }
        }
        if state.status.is_terminal() {
            break;
        }
        let next = match queue.pop_front() {
            Some(ev) => ev,
            None if timers.is_empty() => break,
            None => {
                timers.sort_by_key(|(at, _)| *at);
                let (at, ev) = timers.remove(0);
                now = now.max(at);
                ev
            }
        };
        outcomes.extend(engine.apply(&mut state, std::slice::from_ref(&next), now));
    }
    SimRun {
        state,
        invocations,
        outcomes,
    }
}

/// Engine-clock times (ms) at which function results were applied: in the
/// simulator a function answers at once, so these are the call times.
pub fn result_times(r: &SimRun) -> Vec<i64> {
    r.state
        .history
        .iter()
        .filter(|f| f.trigger.as_str().ends_with("!res"))
        .map(|f| f.at_ms)
        .collect()
}
