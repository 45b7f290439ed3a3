//! The pure trigger engine: execution state + a batch of events in, new
//! state + effects (in the state's outbox) out. No I/O, no clock of its own.

use std::collections::HashMap;
use std::sync::Arc;

use cloudevents::{AttributesReader, Event};
use serde_json::{Map, Value, json};

use crate::event::{
    EXT_PARENT, EXT_REPLY, EventKey, NewEvent, RUNTIME_SOURCE, TYPE_CHILD_FAILED,
    TYPE_CHILD_SUCCEEDED, TYPE_STARTED, data_json, event_json, execution_of, extension_str,
    index_of,
};
use crate::expr;
use crate::ids::{ExecutionId, TriggerId};
use crate::model::{
    Action, Condition, DefinitionError, EmitSpec, JoinCount, Lifetime, TriggerSpec, Workflow,
};
use crate::state::{
    CondState, Effect, ExecutionState, ExecutionStatus, Firing, Invocation, ParentLink, Pending,
    SeenSet, SubjectIndex, TriggerState,
};

/// A condition written in Rust. It receives the expression document
/// (`{"event", "context", "trigger"}`) and the trigger's `config`, and
/// returns whether to fire; an `Err` makes the event poison (dead-lettered
/// with the message) without changing the execution.
pub type CustomCondition = dyn Fn(&Value, &Value) -> Result<bool, String> + Send + Sync;

/// What happened to one event of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    /// Applied; `fired` triggers fired.
    Applied {
        /// How many triggers fired.
        fired: u32,
    },
    /// Seen before (same source and id): ignored.
    Duplicate,
    /// The execution had already finished: ignored.
    Finished,
    /// The event cannot be applied and must go to the dead-letter place;
    /// the execution is unchanged by it.
    Poison {
        /// Why, naming the trigger and expression.
        reason: String,
    },
}

/// Starting an execution failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The workflow definition is invalid.
    #[error("invalid workflow: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Definition(Vec<DefinitionError>),
    /// The start event could not be built.
    #[error("cannot build start event: {0}")]
    Event(String),
}

/// The engine: stateless apart from registered custom conditions, cheap to
/// clone and share between threads.
#[derive(Clone, Default)]
pub struct Engine {
    custom: Arc<HashMap<String, Arc<CustomCondition>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("custom", &self.custom.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Result of evaluating the fallible, pure part of a condition before any
/// state changes (so a failing condition leaves the execution untouched).
enum Pre {
    None,
    Bool(bool),
    Number(f64),
    Target(u64),
}

enum Decision {
    Wait,
    Fire,
    FailQuorum,
}

/// An action could not be carried out; the execution fails with this.
struct ActionError(String);

impl Engine {
    /// An engine with no custom conditions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a custom condition under `name`.
    pub fn with_condition(
        mut self,
        name: impl Into<String>,
        f: impl Fn(&Value, &Value) -> Result<bool, String> + Send + Sync + 'static,
    ) -> Self {
        Arc::make_mut(&mut self.custom).insert(name.into(), Arc::new(f));
        self
    }

    /// Validates a workflow for this engine: the definition itself plus the
    /// custom condition names it uses.
    pub fn validate(&self, wf: &Workflow) -> Result<(), Vec<DefinitionError>> {
        let mut errors = wf.validate().err().unwrap_or_default();
        self.check_custom(&wf.triggers, "triggers", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn check_custom(&self, triggers: &[TriggerSpec], at: &str, errors: &mut Vec<DefinitionError>) {
        for (i, t) in triggers.iter().enumerate() {
            if let Condition::Custom { name, .. } = &t.condition
                && !self.custom.contains_key(name)
            {
                errors.push(DefinitionError {
                    path: format!("{at}[{i}].condition.name"),
                    message: format!("no custom condition named {name:?} is registered"),
                });
            }
            for (list, actions) in [("actions", &t.actions), ("on_failure", &t.on_failure)] {
                for (j, a) in actions.iter().enumerate() {
                    for (p, triggers) in a.added_triggers() {
                        self.check_custom(triggers, &format!("{at}[{i}].{list}[{j}]{p}"), errors);
                    }
                }
            }
        }
    }

    /// Starts an execution: installs the workflow's triggers, sets the
    /// context (the input under `input`) and applies the start event
    /// (`trigflow.execution.started`, id = execution id, data = input).
    pub fn start(
        &self,
        wf: &Workflow,
        execution: ExecutionId,
        input: Value,
        now_ms: i64,
    ) -> Result<ExecutionState, EngineError> {
        self.validate(wf).map_err(EngineError::Definition)?;
        let mut state = new_state(wf, execution.clone(), &input, now_ms);
        let start = start_event(&execution, input).map_err(EngineError::Event)?;
        self.apply(&mut state, std::slice::from_ref(&start), now_ms);
        Ok(state)
    }

    /// Starts a child execution from the start event a
    /// [`Action::Spawn`] of `parent` published: the child runs the
    /// parent's triggers (as installed now) with `{"input": data}` as its
    /// context, and reports its end to the parent. The start event is then
    /// applied, so the triggers on its subject fire.
    pub fn start_child(
        &self,
        parent: &ExecutionState,
        start: &Event,
        now_ms: i64,
    ) -> Result<ExecutionState, EngineError> {
        let bad =
            |what: &str| EngineError::Event(format!("child start event {}: {what}", start.id()));
        if start.ty() != TYPE_STARTED {
            return Err(bad("is not of type trigflow.execution.started"));
        }
        let execution = match execution_of(start) {
            Some(Ok(e)) => e,
            _ => return Err(bad("names no valid execution")),
        };
        if extension_str(start, EXT_PARENT).as_deref() != Some(parent.execution.as_str()) {
            return Err(bad(&format!(
                "does not name {} as its parent",
                parent.execution
            )));
        }
        let reply = extension_str(start, EXT_REPLY).ok_or_else(|| bad("has no reply subject"))?;
        let wf = Workflow {
            id: parent.workflow.clone(),
            version: parent.version,
            context: Map::new(),
            triggers: parent.triggers.values().map(|t| t.spec.clone()).collect(),
        };
        let mut state = new_state(&wf, execution, &data_json(start), now_ms);
        state.parent = Some(ParentLink {
            execution: parent.execution.clone(),
            reply,
            index: index_of(start),
        });
        self.apply(&mut state, std::slice::from_ref(start), now_ms);
        Ok(state)
    }

    /// Applies a batch of events in order. New effects are appended to
    /// `state.outbox`; the returned outcomes are one per event.
    pub fn apply(
        &self,
        state: &mut ExecutionState,
        events: &[Event],
        now_ms: i64,
    ) -> Vec<EventOutcome> {
        events
            .iter()
            .map(|ev| {
                let was_terminal = state.status.is_terminal();
                let outcome = self.apply_one(state, ev, now_ms);
                if !was_terminal && state.status.is_terminal() {
                    notify_parent(state);
                }
                outcome
            })
            .collect()
    }
}

/// A fresh execution state with the workflow's triggers and context.
fn new_state(wf: &Workflow, execution: ExecutionId, input: &Value, now_ms: i64) -> ExecutionState {
    let mut context = wf.context.clone();
    context.insert("input".into(), input.clone());
    ExecutionState {
        execution,
        workflow: wf.id.clone(),
        version: wf.version,
        status: ExecutionStatus::Running,
        context: Value::Object(context),
        parent: None,
        triggers: wf
            .triggers
            .iter()
            .map(|t| (t.id.clone(), new_trigger_state(t.clone())))
            .collect(),
        outbox: Vec::new(),
        next_seq: 0,
        events_applied: 0,
        history: Vec::new(),
        started_ms: now_ms,
        seen: SeenSet::default(),
        seen_segments: Vec::new(),
        archived: Default::default(),
        index: None,
    }
}

/// Tells a finished child's parent: a completion event addressed to the
/// parent execution, with the child's id as its dedup identity.
fn notify_parent(state: &mut ExecutionState) {
    let Some(link) = state.parent.clone() else {
        return;
    };
    let (ty, data) = match &state.status {
        ExecutionStatus::Succeeded { output } => (TYPE_CHILD_SUCCEEDED, output.clone()),
        ExecutionStatus::Failed { error, cause } => {
            (TYPE_CHILD_FAILED, json!({"error": error, "cause": cause}))
        }
        ExecutionStatus::Running => return,
    };
    let source = format!("trigflow/{}", state.execution);
    let id = format!("{}/end", state.execution);
    let built = NewEvent {
        source: &source,
        id: &id,
        ty,
        subject: Some(&link.reply),
        execution: Some(&link.execution),
        index: link.index,
        attempt: None,
        data: Some(data),
    }
    .build();
    // Every field is one the engine itself produced and validated; a build
    // failure would be a bug, and the child's state still records its end.
    if let Ok(event) = built {
        push(state, Effect::Publish { event });
    }
}

impl Engine {
    fn apply_one(&self, state: &mut ExecutionState, ev: &Event, now_ms: i64) -> EventOutcome {
        if state.status.is_terminal() {
            return EventOutcome::Finished;
        }
        let key = EventKey::of(ev);
        if state.has_seen(&key) {
            return EventOutcome::Duplicate;
        }
        let candidates = matching(state, ev);
        // Phase 1: the fallible, pure parts of every matched condition,
        // against the state as the event found it.
        let mut doc: Option<Value> = None;
        let mut pres = Vec::with_capacity(candidates.len());
        for id in &candidates {
            let Some(t) = state.triggers.get(id) else {
                continue;
            };
            match self.precheck(t, ev, state, &mut doc) {
                Ok(p) => pres.push((id.clone(), p)),
                Err(reason) => {
                    return EventOutcome::Poison {
                        reason: format!("trigger {id}: {reason}"),
                    };
                }
            }
        }
        state.seen.0.insert(key);
        state.events_applied += 1;
        // Phase 2: update condition state and fire, in trigger order.
        let mut fired = 0;
        for (id, pre) in pres {
            if state.status.is_terminal() {
                break;
            }
            // An earlier trigger's action may have removed this one.
            let Some(t) = state.triggers.get_mut(&id) else {
                continue;
            };
            let decision = decide(t, ev, pre, now_ms);
            let (actions, outcome) = match decision {
                Decision::Wait => continue,
                Decision::Fire => (t.spec.actions.clone(), "fire"),
                Decision::FailQuorum => (t.spec.on_failure.clone(), "fail"),
            };
            t.fired += 1;
            fired += 1;
            let seq = state.history.len() as u64;
            state.history.push(Firing {
                seq,
                trigger: id.clone(),
                event_id: ev.id().to_owned(),
                event_type: ev.ty().to_owned(),
                at_ms: now_ms,
                outcome: outcome.into(),
            });
            let trigger_doc = trigger_json(t);
            match t.spec.lifetime {
                Lifetime::Transient => {
                    state.triggers.remove(&id);
                    state.index = None;
                }
                // A fixed join keeps its size across firings; a default
                // `CondState` would leave it waiting for u64::MAX events.
                Lifetime::Persistent => t.cond = initial_cond(&t.spec),
            }
            let result = if matches!(decision, Decision::FailQuorum) && actions.is_empty() {
                let cause = json!({"trigger": id.as_str(), "message": "quorum can no longer be reached", "state": trigger_doc});
                fail(state, "trigflow.QuorumFailed", cause);
                Ok(())
            } else {
                let mut ctx = ActionCtx {
                    ev,
                    trigger: &id,
                    trigger_doc: &trigger_doc,
                    now_ms,
                };
                self.run_actions(state, &actions, &mut ctx)
            };
            if let Err(ActionError(message)) = result {
                fail(
                    state,
                    "trigflow.ActionFailed",
                    json!({"trigger": id.as_str(), "event": ev.id(), "message": message}),
                );
            }
        }
        EventOutcome::Applied { fired }
    }

    fn precheck(
        &self,
        t: &TriggerState,
        ev: &Event,
        state: &ExecutionState,
        doc: &mut Option<Value>,
    ) -> Result<Pre, String> {
        let mut document = || -> Value {
            let d = doc
                .get_or_insert_with(|| json!({"event": event_json(ev), "context": state.context}));
            let mut d = d.clone();
            d["trigger"] = trigger_json(t);
            d
        };
        Ok(match &t.spec.condition {
            Condition::Expr { expr } => {
                Pre::Bool(expr::truthy(expr, &document()).map_err(|e| e.to_string())?)
            }
            Condition::Custom { name, config } => {
                let f = self
                    .custom
                    .get(name)
                    .ok_or_else(|| format!("no custom condition named {name:?} is registered"))?;
                Pre::Bool(
                    f(&document(), config)
                        .map_err(|e| format!("custom condition {name:?} failed: {e}"))?,
                )
            }
            Condition::Threshold { value, .. } => {
                let v = expr::eval(value, &document()).map_err(|e| e.to_string())?;
                Pre::Number(v.as_f64().ok_or_else(|| {
                    format!("threshold value {value:?} gave {v}, which is not a number")
                })?)
            }
            Condition::Join {
                count: JoinCount::From { from },
            } if t.cond.target.is_none() => {
                let v = expr::eval(from, &document()).map_err(|e| e.to_string())?;
                // `null`: the count is not known yet (a producer still
                // running); keep collecting and ask again at the next event.
                if v.is_null() {
                    return Ok(Pre::None);
                }
                Pre::Target(v.as_u64().ok_or_else(|| {
                    format!("join count {from:?} gave {v}, which is not a non-negative integer")
                })?)
            }
            _ => Pre::None,
        })
    }

    fn run_actions(
        &self,
        state: &mut ExecutionState,
        actions: &[Action],
        cx: &mut ActionCtx<'_>,
    ) -> Result<(), ActionError> {
        for a in actions {
            if state.status.is_terminal() {
                break;
            }
            self.run_action(state, a, cx)?;
        }
        Ok(())
    }

    fn run_action(
        &self,
        state: &mut ExecutionState,
        action: &Action,
        cx: &mut ActionCtx<'_>,
    ) -> Result<(), ActionError> {
        // `now` is the engine clock (ms since the Unix epoch), so that
        // front-ends can compute deadlines (ASL `Timestamp` waits) without a
        // clock of their own.
        let doc = || json!({"event": event_json(cx.ev), "context": state.context, "trigger": cx.trigger_doc, "now": cx.now_ms});
        match action {
            Action::Invoke {
                function,
                step,
                input,
                foreach,
                count_into,
            } => {
                let step = step.clone().unwrap_or_else(|| cx.trigger.to_string());
                let base = doc();
                match foreach {
                    None => {
                        let input = eval(input.as_deref().unwrap_or(".event.data"), &base)?;
                        let inv = invocation(state, cx.trigger, &step, function, input, None);
                        push(state, Effect::Invoke(inv));
                    }
                    Some(list) => {
                        let items = match eval(list, &base)? {
                            Value::Array(items) => items,
                            other => {
                                return Err(ActionError(format!(
                                    "foreach {list:?} gave {}, not an array",
                                    short(&other)
                                )));
                            }
                        };
                        if let Some(k) = count_into {
                            set_path(&mut state.context, k, Value::from(items.len()))?;
                        }
                        let code = input.as_deref().unwrap_or(".item");
                        let inputs = expr::eval_each(code, &base, items)
                            .map_err(|e| ActionError(e.to_string()))?;
                        for (i, input) in inputs.into_iter().enumerate() {
                            let inv = invocation(
                                state,
                                cx.trigger,
                                &step,
                                function,
                                input,
                                Some(i as u64),
                            );
                            push(state, Effect::Invoke(inv));
                        }
                    }
                }
            }
            Action::Spawn {
                foreach,
                entry,
                input,
                index,
                step,
            } => {
                let step = step.clone().unwrap_or_else(|| cx.trigger.to_string());
                let base = doc();
                let items = match eval(foreach, &base)? {
                    Value::Array(items) => items,
                    other => {
                        return Err(ActionError(format!(
                            "spawn foreach {foreach:?} gave {}, not an array",
                            short(&other)
                        )));
                    }
                };
                let inputs =
                    expr::eval_each(input.as_deref().unwrap_or(".item"), &base, items.clone())
                        .map_err(|e| ActionError(e.to_string()))?;
                let indexes = expr::eval_each(index.as_deref().unwrap_or(".index"), &base, items)
                    .map_err(|e| ActionError(e.to_string()))?;
                for (input, ix) in inputs.into_iter().zip(indexes) {
                    let ix = ix.as_u64().ok_or_else(|| {
                        ActionError(format!(
                            "spawn index gave {}, not a non-negative integer",
                            short(&ix)
                        ))
                    })?;
                    let child: ExecutionId = format!("{}.{}", state.execution, state.next_seq)
                        .parse()
                        .map_err(|e: crate::ids::InvalidId| ActionError(e.to_string()))?;
                    state.next_seq += 1;
                    let mut event = NewEvent {
                        source: RUNTIME_SOURCE,
                        id: child.as_str(),
                        ty: TYPE_STARTED,
                        subject: Some(entry),
                        execution: Some(&child),
                        index: Some(ix),
                        attempt: None,
                        data: Some(input),
                    }
                    .build()
                    .map_err(|e| ActionError(format!("cannot build a child start event: {e}")))?;
                    event.set_extension(EXT_PARENT, state.execution.as_str());
                    event.set_extension(EXT_REPLY, step.as_str());
                    push(state, Effect::Publish { event });
                }
            }
            Action::Emit { events } => {
                let base = doc();
                for spec in events {
                    let event = self.make_event(state, spec, &base)?;
                    push(state, Effect::Publish { event });
                }
            }
            Action::SetContext { key, value } => {
                let v = eval(value, &doc())?;
                set_path(&mut state.context, key, v)?;
            }
            Action::AddTriggers { triggers } => {
                // Triggers nested in a `choose` escape definition-time
                // validation; an invalid one (a quorum with k > m would
                // underflow `m - k`) must not be installed.
                let mut errors = Vec::new();
                crate::model::validate_triggers(triggers, "add_triggers", &mut errors);
                self.check_custom(triggers, "add_triggers", &mut errors);
                if !errors.is_empty() {
                    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                    return Err(ActionError(format!(
                        "invalid triggers: {}",
                        list.join("; ")
                    )));
                }
                for spec in triggers {
                    if state.triggers.contains_key(&spec.id) {
                        return Err(ActionError(format!("trigger {} already exists", spec.id)));
                    }
                    state
                        .triggers
                        .insert(spec.id.clone(), new_trigger_state(spec.clone()));
                }
                state.index = None;
            }
            Action::RemoveTriggers { ids } => {
                for id in ids {
                    state.triggers.remove(id);
                }
                state.index = None;
            }
            Action::Timer { delay_ms, event } => {
                let ev = self.make_event(state, event, &doc())?;
                let fire_at_ms = cx
                    .now_ms
                    .saturating_add(i64::try_from(*delay_ms).unwrap_or(i64::MAX));
                push(
                    state,
                    Effect::Timer {
                        fire_at_ms,
                        event: ev,
                    },
                );
            }
            Action::Choose {
                branches,
                otherwise,
            } => {
                let base = doc();
                for b in branches {
                    if expr::truthy(&b.when, &base).map_err(|e| ActionError(e.to_string()))? {
                        return self.run_actions(state, &b.then, cx);
                    }
                }
                return self.run_actions(state, otherwise, cx);
            }
            Action::Complete { output } => {
                let output = eval(output.as_deref().unwrap_or(".event.data"), &doc())?;
                state.status = ExecutionStatus::Succeeded { output };
            }
            Action::Fail {
                error,
                error_from,
                cause,
            } => {
                let base = doc();
                let cause = eval(cause.as_deref().unwrap_or(".event.data"), &base)?;
                let name = match error_from {
                    Some(code) => match eval(code, &base)? {
                        Value::String(s) if !s.is_empty() => s,
                        _ => error.clone(),
                    },
                    None => error.clone(),
                };
                fail(state, &name, cause);
            }
        }
        Ok(())
    }

    fn make_event(
        &self,
        state: &mut ExecutionState,
        spec: &EmitSpec,
        doc: &Value,
    ) -> Result<Event, ActionError> {
        let data = spec.data.as_deref().map(|d| eval(d, doc)).transpose()?;
        let key = next_key(state);
        let source = format!("trigflow/{}", state.execution);
        NewEvent {
            source: &source,
            id: &key,
            ty: &spec.ty,
            subject: spec.subject.as_deref(),
            execution: Some(&state.execution),
            index: None,
            attempt: None,
            data,
        }
        .build()
        .map_err(|e| ActionError(format!("cannot build event of type {:?}: {e}", spec.ty)))
    }
}

struct ActionCtx<'a> {
    ev: &'a Event,
    trigger: &'a TriggerId,
    trigger_doc: &'a Value,
    now_ms: i64,
}

/// The start event of an execution.
pub fn start_event(execution: &ExecutionId, input: Value) -> Result<Event, String> {
    NewEvent {
        source: RUNTIME_SOURCE,
        id: execution.as_str(),
        ty: TYPE_STARTED,
        subject: Some("$start"),
        execution: Some(execution),
        index: None,
        attempt: None,
        data: Some(input),
    }
    .build()
    .map_err(|e| e.to_string())
}

fn new_trigger_state(spec: TriggerSpec) -> TriggerState {
    TriggerState {
        cond: initial_cond(&spec),
        spec,
        fired: 0,
    }
}

/// Condition state of a trigger that has seen no event yet (when installed,
/// and again after a persistent trigger fires).
fn initial_cond(spec: &TriggerSpec) -> CondState {
    let target = match &spec.condition {
        Condition::Join {
            count: JoinCount::Fixed(n),
        } => Some(*n),
        _ => None,
    };
    CondState {
        target,
        ..CondState::default()
    }
}

fn next_key(state: &mut ExecutionState) -> String {
    let key = format!("{}/{}", state.execution, state.next_seq);
    state.next_seq += 1;
    key
}

fn push(state: &mut ExecutionState, effect: Effect) {
    let key = match &effect {
        Effect::Invoke(inv) => inv.key.clone(),
        Effect::Publish { event } | Effect::Timer { event, .. } => event.id().to_owned(),
    };
    state.outbox.push(Pending { key, effect });
}

fn invocation(
    state: &mut ExecutionState,
    trigger: &TriggerId,
    step: &str,
    function: &str,
    input: Value,
    index: Option<u64>,
) -> Invocation {
    Invocation {
        key: next_key(state),
        execution: state.execution.clone(),
        workflow: state.workflow.clone(),
        trigger: trigger.clone(),
        step: step.to_owned(),
        function: function.to_owned(),
        input,
        index,
        attempt: 1,
    }
}

fn fail(state: &mut ExecutionState, error: &str, cause: Value) {
    state.status = ExecutionStatus::Failed {
        error: error.to_owned(),
        cause,
    };
}

fn eval(code: &str, doc: &Value) -> Result<Value, ActionError> {
    expr::eval(code, doc).map_err(|e| ActionError(e.to_string()))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}…", &s[..s.floor_char_boundary(80)])
    } else {
        s
    }
}

/// Sets a dotted path in an object, creating intermediate objects.
fn set_path(root: &mut Value, path: &str, v: Value) -> Result<(), ActionError> {
    let mut cur = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if part.is_empty() {
            return Err(ActionError(format!(
                "context key {path:?} has an empty segment"
            )));
        }
        let obj = match cur {
            Value::Object(m) => m,
            other => {
                return Err(ActionError(format!(
                    "context key {path:?}: {part:?} is inside {}, not an object",
                    short(other)
                )));
            }
        };
        if parts.peek().is_none() {
            obj.insert(part.to_owned(), v);
            return Ok(());
        }
        cur = obj
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(())
}

/// The `.trigger` document: its own context plus condition state.
fn trigger_json(t: &TriggerState) -> Value {
    let mut m = t.spec.context.clone();
    m.insert("id".into(), t.spec.id.as_str().into());
    m.insert("count".into(), t.cond.count.into());
    if t.cond.failed > 0 {
        m.insert("failed".into(), t.cond.failed.into());
    }
    if let Some(acc) = t.cond.acc {
        m.insert("acc".into(), acc.into());
    }
    if !t.cond.results.is_empty() {
        let results: Map<String, Value> = t
            .cond
            .results
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        m.insert("results".into(), Value::Object(results));
    }
    Value::Object(m)
}

/// Collects an event's data into a join's results: by zero-padded foreach
/// index (so lexical order is numeric order), else by subject, else by id.
/// When several events share a subject, each is keyed `subject/id`, whatever
/// order they arrive in.
fn collect(t: &mut TriggerState, ev: &Event) {
    let data = data_json(ev);
    if data.is_null() {
        return;
    }
    let results = &mut t.cond.results;
    match (index_of(ev), ev.subject()) {
        (Some(i), _) => {
            results.insert(format!("{i:010}"), data);
        }
        (None, Some(subject)) => {
            let id = ev.id();
            match t.cond.subject_ids.get(subject) {
                None if !results.contains_key(&format!("{subject}/{id}"))
                    && !is_shared(results, subject) =>
                {
                    t.cond.subject_ids.insert(subject.to_owned(), id.to_owned());
                    results.insert(subject.to_owned(), data);
                }
                Some(first_id) => {
                    let first_id = first_id.clone();
                    t.cond.subject_ids.remove(subject);
                    if let Some(first) = results.remove(subject) {
                        results.insert(format!("{subject}/{first_id}"), first);
                    }
                    results.insert(format!("{subject}/{id}"), data);
                }
                None => {
                    results.insert(format!("{subject}/{id}"), data);
                }
            }
        }
        (None, None) => {
            results.insert(ev.id().to_owned(), data);
        }
    }
}

/// Whether results already hold `subject/...` entries (the subject is shared).
fn is_shared(results: &std::collections::BTreeMap<String, Value>, subject: &str) -> bool {
    let prefix = format!("{subject}/");
    results
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

fn decide(t: &mut TriggerState, ev: &Event, pre: Pre, now_ms: i64) -> Decision {
    let fire_if = |b: bool| if b { Decision::Fire } else { Decision::Wait };
    match &t.spec.condition {
        Condition::Always => Decision::Fire,
        Condition::Expr { .. } | Condition::Custom { .. } => {
            fire_if(matches!(pre, Pre::Bool(true)))
        }
        Condition::Join { .. } => {
            if let Pre::Target(n) = pre {
                t.cond.target = Some(n);
            }
            t.cond.count += 1;
            collect(t, ev);
            fire_if(t.cond.count >= t.cond.target.unwrap_or(u64::MAX))
        }
        &Condition::Quorum { k, m } => {
            if ev.ty().ends_with(".failed") {
                t.cond.failed += 1;
                if t.cond.failed > m - k {
                    Decision::FailQuorum
                } else {
                    Decision::Wait
                }
            } else {
                t.cond.count += 1;
                collect(t, ev);
                fire_if(t.cond.count >= k)
            }
        }
        Condition::Threshold { op, threshold, .. } => {
            let add = if let Pre::Number(x) = pre { x } else { 0.0 };
            let acc = t.cond.acc.unwrap_or(0.0) + add;
            t.cond.acc = Some(acc);
            fire_if(op.holds(acc, *threshold))
        }
        Condition::Window { count, within_ms } => {
            let horizon = now_ms.saturating_sub(i64::try_from(*within_ms).unwrap_or(i64::MAX));
            t.cond.times.push_back(now_ms);
            while t.cond.times.front().is_some_and(|&at| at < horizon) {
                t.cond.times.pop_front();
            }
            t.cond.count = t.cond.times.len() as u64;
            fire_if(t.cond.count >= *count)
        }
    }
}

fn build_index(state: &ExecutionState) -> SubjectIndex {
    let mut idx = SubjectIndex::default();
    for (id, t) in &state.triggers {
        let subjects = &t.spec.on.subjects;
        if !subjects.is_empty() && subjects.iter().all(|s| !s.ends_with('*')) {
            for s in subjects {
                idx.exact.entry(s.clone()).or_default().push(id.clone());
            }
        } else {
            idx.other.push(id.clone());
        }
    }
    idx
}

/// Triggers activated by `ev`, in firing order: `order`, then id.
fn matching(state: &mut ExecutionState, ev: &Event) -> Vec<TriggerId> {
    if state.index.is_none() {
        state.index = Some(build_index(state));
    }
    let Some(idx) = state.index.as_ref() else {
        return Vec::new();
    };
    let subject = ev.subject();
    let mut out: Vec<&TriggerId> = Vec::new();
    if let Some(ids) = subject.and_then(|s| idx.exact.get(s)) {
        out.extend(ids);
    }
    out.extend(&idx.other);
    let mut out: Vec<(i32, TriggerId)> = out
        .into_iter()
        .filter_map(|id| state.triggers.get(id).map(|t| (id, t)))
        .filter(|(_, t)| t.spec.on.matches(subject, ev.ty()))
        .map(|(id, t)| (t.spec.order, id.clone()))
        .collect();
    if out.len() > 1 {
        out.sort();
        out.dedup();
    }
    out.into_iter().map(|(_, id)| id).collect()
}
