//! A synchronous, in-memory driver for the engine: runs an execution to the
//! end by feeding effects back as events, calling functions inline. Used by
//! front-end tests and by anyone who wants to see what a workflow does
//! without a worker. No I/O; time is simulated. Child executions
//! ([`Action::Spawn`](crate::model::Action::Spawn)) run here too: events are
//! routed by the execution they name.

use std::collections::{BTreeMap, VecDeque};

use cloudevents::{AttributesReader, Event};
use serde_json::Value;

use crate::engine::{Engine, EngineError, EventOutcome};
use crate::event::{EXT_PARENT, TYPE_STARTED, execution_of, extension_str};
use crate::ids::ExecutionId;
use crate::model::Workflow;
use crate::state::{Effect, ExecutionState, FunctionError, Invocation};

/// How a run ended.
#[derive(Debug)]
pub struct SimRun {
    /// Final state.
    pub state: ExecutionState,
    /// Every invocation dispatched, in order.
    pub invocations: Vec<Invocation>,
    /// Outcomes of every event applied, in order.
    pub outcomes: Vec<EventOutcome>,
    /// Final states of the child executions, by id.
    pub children: BTreeMap<ExecutionId, ExecutionState>,
}

/// Runs `wf` with `input`, answering each invocation with `functions`.
/// Timers fire in time order once no other event is pending. Stops when the
/// execution finishes or nothing is left to deliver (or after `max_events`).
pub fn run(
    engine: &Engine,
    wf: &Workflow,
    input: Value,
    mut functions: impl FnMut(&Invocation) -> Result<Value, FunctionError>,
    max_events: usize,
) -> Result<SimRun, EngineError> {
    let exec: ExecutionId = "sim"
        .parse()
        .map_err(|e: crate::ids::InvalidId| EngineError::Event(e.to_string()))?;
    let mut now = 0i64;
    let mut state = engine.start(wf, exec, input, now)?;
    let mut queue: VecDeque<Event> = VecDeque::new();
    let mut timers: Vec<(i64, Event)> = Vec::new();
    let mut invocations = Vec::new();
    let mut outcomes = Vec::new();
    let mut children: BTreeMap<ExecutionId, ExecutionState> = BTreeMap::new();
    let mut applied = 0;
    loop {
        let mut effects = std::mem::take(&mut state.outbox);
        for c in children.values_mut() {
            effects.append(&mut c.outbox);
        }
        for p in effects {
            match p.effect {
                Effect::Invoke(inv) => {
                    let result = functions(&inv);
                    if let Ok(ev) = inv.completion(result) {
                        queue.push_back(ev);
                    }
                    invocations.push(inv);
                }
                Effect::Publish { event } => queue.push_back(event),
                Effect::Timer { fire_at_ms, event } => timers.push((fire_at_ms, event)),
            }
        }
        if state.status.is_terminal() || applied >= max_events {
            break;
        }
        let next = match queue.pop_front() {
            Some(ev) => ev,
            None => {
                if timers.is_empty() {
                    break;
                }
                timers.sort_by_key(|(at, _)| *at);
                let (at, ev) = timers.remove(0);
                now = now.max(at);
                ev
            }
        };
        applied += 1;
        let target = match execution_of(&next) {
            Some(Ok(id)) if id != state.execution => id,
            _ => {
                outcomes.extend(engine.apply(&mut state, std::slice::from_ref(&next), now));
                continue;
            }
        };
        if let Some(child) = children.get_mut(&target) {
            outcomes.extend(engine.apply(child, std::slice::from_ref(&next), now));
        } else if next.ty() == TYPE_STARTED
            && let Some(parent) = extension_str(&next, EXT_PARENT)
        {
            let parent = if parent == state.execution.as_str() {
                Some(&state)
            } else {
                children.values().find(|c| c.execution.as_str() == parent)
            };
            if let Some(parent) = parent {
                let child = engine.start_child(parent, &next, now)?;
                children.insert(target, child);
            }
        }
    }
    Ok(SimRun {
        state,
        invocations,
        outcomes,
        children,
    })
}
