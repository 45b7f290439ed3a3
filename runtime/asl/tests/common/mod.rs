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
        children: Default::default(),
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

/// Answers an invocation: `None` leaves it unanswered.
pub type Answer = Option<Result<Value, FunctionError>>;

/// Drives one execution step by step, so that a test can send events
/// (task tokens, heartbeats) between steps and move the clock by hand.
pub struct Driver {
    pub engine: Engine,
    pub state: trigflow_core::state::ExecutionState,
    pub now: i64,
    pub invocations: Vec<Invocation>,
    queue: std::collections::VecDeque<trigflow_core::cloudevents::Event>,
    timers: Vec<(i64, trigflow_core::cloudevents::Event)>,
    sent: u64,
}

impl Driver {
    /// Starts `doc` on `input` (with the execution id `exec-1`) and settles.
    pub fn start(doc: &Value, input: Value, f: impl FnMut(&Invocation) -> Answer) -> Self {
        let wf = load(doc, &[]);
        let engine = Engine::new();
        let state = engine
            .start(&wf, "exec-1".parse().expect("id"), input, 0)
            .expect("start");
        let mut d = Driver {
            engine,
            state,
            now: 0,
            invocations: Vec::new(),
            queue: Default::default(),
            timers: Vec::new(),
            sent: 0,
        };
        d.settle(f);
        d
    }

    /// Applies every queued event (not timers), answering invocations
    /// with `f` at once.
    pub fn settle(&mut self, mut f: impl FnMut(&Invocation) -> Answer) {
        use trigflow_core::state::Effect;
        loop {
            for p in std::mem::take(&mut self.state.outbox) {
                match p.effect {
                    Effect::Invoke(inv) => {
                        if let Some(res) = f(&inv) {
                            self.queue
                                .push_back(inv.completion(res).expect("completion event"));
                        }
                        self.invocations.push(inv);
                    }
                    Effect::Publish { event } => self.queue.push_back(event),
                    Effect::Timer { fire_at_ms, event } => self.timers.push((fire_at_ms, event)),
                }
            }
            if self.state.status.is_terminal() {
                return;
            }
            let Some(ev) = self.queue.pop_front() else {
                return;
            };
            self.engine
                .apply(&mut self.state, std::slice::from_ref(&ev), self.now);
        }
    }

    /// Moves the clock forward by `ms`, firing due timers in time order.
    pub fn advance(&mut self, ms: i64, mut f: impl FnMut(&Invocation) -> Answer) {
        let until = self.now + ms;
        loop {
            self.timers.sort_by_key(|(at, _)| *at);
            if self.state.status.is_terminal()
                || self.timers.first().is_none_or(|(at, _)| *at > until)
            {
                break;
            }
            let (at, ev) = self.timers.remove(0);
            self.now = self.now.max(at);
            self.queue.push_back(ev);
            self.settle(&mut f);
        }
        self.now = until;
    }

    /// Sends an event as a client outside the execution would, and settles.
    pub fn send(&mut self, ty: &str, subject: &str, data: Option<Value>) {
        self.sent += 1;
        let id = format!("client-{}", self.sent);
        let ev = trigflow_core::event::NewEvent {
            source: "test/client",
            id: &id,
            ty,
            subject: Some(subject),
            execution: Some(&self.state.execution),
            index: None,
            attempt: None,
            data,
        }
        .build()
        .expect("event");
        self.queue.push_back(ev);
        self.settle(|inv| panic!("unexpected invocation of {}", inv.function));
    }

    pub fn running(&self) -> bool {
        !self.state.status.is_terminal()
    }

    pub fn output(&self) -> Value {
        match &self.state.status {
            ExecutionStatus::Succeeded { output } => output.clone(),
            other => panic!("expected success, got {other:?}"),
        }
    }

    pub fn failure(&self) -> (String, Value) {
        match &self.state.status {
            ExecutionStatus::Failed { error, cause } => (error.clone(), cause.clone()),
            other => panic!("expected failure, got {other:?}"),
        }
    }
}
