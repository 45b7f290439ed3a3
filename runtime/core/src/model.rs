//! The trigger model as data: what a workflow definition is made of.
//!
//! Every expression is a jq program (run by jaq) whose input is the document
//! `{"event": .., "context": .., "trigger": .., "item": .., "index": ..}`:
//! `.event` is the activating event (id, source, type, subject, extensions,
//! data), `.context` the execution context, `.trigger` the trigger's own
//! context (a join's collected `results`, a threshold's `acc`), and `.item` /
//! `.index` the current element inside a `foreach`. Action expressions also
//! see `.now`, the engine clock in ms since the Unix epoch.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{TriggerId, WorkflowId};

/// A workflow: a named, versioned set of triggers plus an initial context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Name of the workflow.
    pub id: WorkflowId,
    /// Version of the definition; executions record the version they ran.
    #[serde(default = "default_version")]
    pub version: u32,
    /// Initial execution context (the input is added under `input`).
    #[serde(default)]
    pub context: serde_json::Map<String, Value>,
    /// The triggers installed when an execution starts.
    pub triggers: Vec<TriggerSpec>,
}

fn default_version() -> u32 {
    1
}

/// One Event-Condition-Action trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// Unique within the execution.
    pub id: TriggerId,
    /// Which events activate the trigger.
    #[serde(default)]
    pub on: Activation,
    /// Decides whether an activating event fires the actions.
    #[serde(default)]
    pub condition: Condition,
    /// What firing does, in order (a Trigger-Action List).
    #[serde(default)]
    pub actions: Vec<Action>,
    /// What a condition's failure decision does (an N-of-M quorum that can no
    /// longer be reached). Empty means: fail the execution.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Action>,
    /// Transient triggers are removed after firing; persistent ones stay and
    /// start counting afresh.
    #[serde(default)]
    pub lifetime: Lifetime,
    /// Among triggers activated by the same event, lower `order` runs first;
    /// ties are broken by trigger id. This fixes interception order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub order: i32,
    /// Initial trigger-local context, visible to expressions as `.trigger`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub context: serde_json::Map<String, Value>,
}

fn is_zero(v: &i32) -> bool {
    *v == 0
}

/// Event patterns that activate a trigger. An empty list matches anything; a
/// pattern ending in `*` matches by prefix; otherwise the match is exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Activation {
    /// Patterns over the CloudEvents `subject`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// Patterns over the CloudEvents `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
}

impl Activation {
    /// Whether an event with this subject and type activates the trigger.
    pub fn matches(&self, subject: Option<&str>, ty: &str) -> bool {
        pattern_matches(&self.subjects, subject) && pattern_matches(&self.types, Some(ty))
    }
}

/// Empty matches anything, a `*` suffix is a prefix match, else exact.
fn pattern_matches(patterns: &[String], value: Option<&str>) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let Some(v) = value else { return false };
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => v.starts_with(prefix),
        None => p == v,
    })
}

/// Trigger lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifetime {
    /// Removed after it fires once.
    #[default]
    Transient,
    /// Stays after firing; its condition state is reset.
    Persistent,
}

/// How many events a join waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum JoinCount {
    /// A fixed number.
    Fixed(u64),
    /// A jq expression evaluated when the first event arrives (dynamic
    /// fan-out: e.g. the length of a list a previous step produced). If it
    /// yields `null` the count is not known yet: the join keeps collecting
    /// and evaluates it again at each event until it yields a number (a
    /// streaming producer that announces its part count when it finishes).
    From {
        /// The expression.
        from: String,
    },
}

/// Comparison of a threshold condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `>=`
    Gte,
    /// `>`
    Gt,
    /// `<=`
    Lte,
    /// `<`
    Lt,
    /// `==`
    Eq,
}

impl CmpOp {
    /// Applies the comparison.
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Gte => a >= b,
            CmpOp::Gt => a > b,
            CmpOp::Lte => a <= b,
            CmpOp::Lt => a < b,
            CmpOp::Eq => a == b,
        }
    }
}

/// Decides whether an activating event fires the trigger's actions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Fire on every activating event.
    #[default]
    Always,
    /// Fire when `count` distinct events have arrived. Each event's data is
    /// collected under `.trigger.results`, keyed by foreach index (so results
    /// come out in index order) or else by subject.
    Join {
        /// How many events.
        count: JoinCount,
    },
    /// N-of-M: fire after `k` successes; fail (run `on_failure`) once more
    /// than `m - k` failures make `k` unreachable. Events of a type ending in
    /// `.failed` count as failures, all others as successes.
    Quorum {
        /// Successes needed.
        k: u64,
        /// Participants in all.
        m: u64,
    },
    /// Add `value` (a jq expression yielding a number) to `.trigger.acc` for
    /// every event and fire when `acc <op> threshold`.
    Threshold {
        /// The amount each event contributes.
        #[serde(default = "default_threshold_value")]
        value: String,
        /// The comparison.
        op: CmpOp,
        /// The bound.
        threshold: f64,
    },
    /// Fire when `count` events have arrived within `within_ms` of each other
    /// (a sliding window on the engine's clock).
    Window {
        /// Events needed inside the window.
        count: u64,
        /// Window length in milliseconds.
        within_ms: u64,
    },
    /// Fire when a jq expression is truthy.
    Expr {
        /// The expression.
        expr: String,
    },
    /// A condition written in Rust and registered with the engine by name.
    Custom {
        /// The registered name.
        name: String,
        /// Free configuration handed to the closure.
        #[serde(default, skip_serializing_if = "Value::is_null")]
        config: Value,
    },
}

fn default_threshold_value() -> String {
    ".event.data".to_owned()
}

/// An event an action emits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitSpec {
    /// CloudEvents `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// CloudEvents `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// A jq expression for the data; none means no data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// One branch of a `choose` action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    /// A jq expression; the first truthy branch runs.
    pub when: String,
    /// The actions of the branch.
    pub then: Vec<Action>,
}

/// What firing does, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Invoke a function. Its result comes back as a
    /// `trigflow.function.succeeded` (or `.failed`) event with subject
    /// `step`.
    Invoke {
        /// Function reference (e.g. `inproc:name`, `cmd:./script.sh`,
        /// `http://host/path`, `stub:50ms`, an AWS Lambda ARN).
        function: String,
        /// The subject of the result events; defaults to the trigger id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        /// jq expression for the input; default `.event.data`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// jq expression yielding an array: one invocation per element, with
        /// `.item` / `.index` bound for `input`; results carry the index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        foreach: Option<String>,
        /// Under `foreach`, the context key that receives the element count,
        /// so that a join can read it (`count: {from: ".context.KEY"}`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        count_into: Option<String>,
    },
    /// Start child executions of this workflow, one per element of
    /// `foreach`. A child is an execution of its own (id
    /// `{parent}.{sequence}`) with the parent's triggers and `{"input": ..}`
    /// as its context; its start event (type `trigflow.execution.started`)
    /// has subject `entry` instead of `$start`, so that the workflow's
    /// triggers can tell where a child begins. When a child finishes, the
    /// parent receives `trigflow.execution.succeeded` (data = its output) or
    /// `trigflow.execution.failed` (data = `{"error", "cause"}`) with
    /// subject `step` and the child's index as `trigflowindex`, like the
    /// results of a foreach invocation. Each completion is sent once per
    /// child (its id is the dedup identity), so a join counts it once.
    Spawn {
        /// jq expression yielding an array: one child per element, with
        /// `.item` / `.index` bound for `input` and `index`.
        foreach: String,
        /// Subject of each child's start event.
        entry: String,
        /// jq expression for each child's input; default `.item`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        /// jq expression for the index a child's completion carries;
        /// default `.index` (the element's position).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<String>,
        /// Subject of the completion events; defaults to the trigger id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
    /// Emit events to this execution's event stream.
    Emit {
        /// The events.
        events: Vec<EmitSpec>,
    },
    /// Set a context key (dotted path for nested objects) to an expression's
    /// value.
    SetContext {
        /// Dotted path, e.g. `results.split`.
        key: String,
        /// jq expression.
        value: String,
    },
    /// Install triggers in this execution.
    AddTriggers {
        /// The triggers.
        triggers: Vec<TriggerSpec>,
    },
    /// Remove triggers from this execution (unknown ids are ignored).
    RemoveTriggers {
        /// The ids.
        ids: Vec<TriggerId>,
    },
    /// Emit an event after a delay.
    Timer {
        /// Delay in milliseconds.
        delay_ms: u64,
        /// The event.
        event: EmitSpec,
    },
    /// Run the first branch whose `when` holds, else `otherwise`.
    Choose {
        /// The branches.
        branches: Vec<Branch>,
        /// Actions when no branch holds.
        #[serde(default)]
        otherwise: Vec<Action>,
    },
    /// Finish the execution successfully.
    Complete {
        /// jq expression for the output; default `.event.data`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<String>,
    },
    /// Finish the execution with an error.
    Fail {
        /// Error name (with `error_from`: the name used when that
        /// expression does not give a non-empty string).
        error: String,
        /// jq expression for the error name, for front-ends whose error
        /// names are only known at run time (an ASL task's error).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_from: Option<String>,
        /// jq expression for the cause; default the event data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
}

impl Action {
    /// Every jq expression in this action (recursively), with a JSON-path-like
    /// location relative to the action, for validation.
    pub fn expressions(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        self.collect_exprs("", &mut out);
        out
    }

    fn collect_exprs<'a>(&'a self, at: &str, out: &mut Vec<(String, &'a str)>) {
        match self {
            Action::Invoke { input, foreach, .. } => {
                if let Some(e) = input {
                    out.push((format!("{at}.input"), e));
                }
                if let Some(e) = foreach {
                    out.push((format!("{at}.foreach"), e));
                }
            }
            Action::Spawn {
                foreach,
                input,
                index,
                ..
            } => {
                out.push((format!("{at}.foreach"), foreach));
                if let Some(e) = input {
                    out.push((format!("{at}.input"), e));
                }
                if let Some(e) = index {
                    out.push((format!("{at}.index"), e));
                }
            }
            Action::Emit { events } => {
                for (i, e) in events.iter().enumerate() {
                    if let Some(d) = &e.data {
                        out.push((format!("{at}.events[{i}].data"), d));
                    }
                }
            }
            Action::SetContext { value, .. } => out.push((format!("{at}.value"), value)),
            Action::Timer { event, .. } => {
                if let Some(d) = &event.data {
                    out.push((format!("{at}.event.data"), d));
                }
            }
            Action::Choose {
                branches,
                otherwise,
            } => {
                for (i, b) in branches.iter().enumerate() {
                    out.push((format!("{at}.branches[{i}].when"), &b.when));
                    for (j, a) in b.then.iter().enumerate() {
                        a.collect_exprs(&format!("{at}.branches[{i}].then[{j}]"), out);
                    }
                }
                for (j, a) in otherwise.iter().enumerate() {
                    a.collect_exprs(&format!("{at}.otherwise[{j}]"), out);
                }
            }
            Action::Complete { output } => {
                if let Some(e) = output {
                    out.push((format!("{at}.output"), e));
                }
            }
            Action::Fail {
                cause, error_from, ..
            } => {
                if let Some(e) = error_from {
                    out.push((format!("{at}.error_from"), e));
                }
                if let Some(e) = cause {
                    out.push((format!("{at}.cause"), e));
                }
            }
            Action::AddTriggers { .. } | Action::RemoveTriggers { .. } => {}
        }
    }
}

impl Action {
    /// Every `add_triggers` list inside this action, including those nested
    /// in `choose` branches, with its path relative to the action.
    pub fn added_triggers(&self) -> Vec<(String, &[TriggerSpec])> {
        let mut out = Vec::new();
        self.collect_added("", &mut out);
        out
    }

    fn collect_added<'a>(&'a self, at: &str, out: &mut Vec<(String, &'a [TriggerSpec])>) {
        match self {
            Action::AddTriggers { triggers } => out.push((format!("{at}.triggers"), triggers)),
            Action::Choose {
                branches,
                otherwise,
            } => {
                for (i, b) in branches.iter().enumerate() {
                    for (j, a) in b.then.iter().enumerate() {
                        a.collect_added(&format!("{at}.branches[{i}].then[{j}]"), out);
                    }
                }
                for (j, a) in otherwise.iter().enumerate() {
                    a.collect_added(&format!("{at}.otherwise[{j}]"), out);
                }
            }
            _ => {}
        }
    }
}

impl Condition {
    /// The jq expressions of this condition, with their field names.
    pub fn expressions(&self) -> Vec<(&'static str, &str)> {
        match self {
            Condition::Join {
                count: JoinCount::From { from },
            } => vec![("count.from", from.as_str())],
            Condition::Threshold { value, .. } => vec![("value", value.as_str())],
            Condition::Expr { expr } => vec![("expr", expr.as_str())],
            _ => Vec::new(),
        }
    }
}

/// A workflow definition problem, located by a JSON path into the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DefinitionError {
    /// JSON path of the offending value, e.g. `triggers[2].condition.expr`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Workflow {
    /// Checks what serde cannot: unique trigger ids, well-formed expressions,
    /// sane condition parameters. Returns every problem found, not just the
    /// first, so a user fixes a definition in one pass.
    pub fn validate(&self) -> Result<(), Vec<DefinitionError>> {
        let mut errors = Vec::new();
        validate_triggers(&self.triggers, "triggers", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Validates a list of triggers located at `at` (used for the workflow's own
/// triggers and for triggers added by actions).
pub fn validate_triggers(triggers: &[TriggerSpec], at: &str, errors: &mut Vec<DefinitionError>) {
    let mut seen: BTreeMap<&TriggerId, usize> = BTreeMap::new();
    for (i, t) in triggers.iter().enumerate() {
        let here = format!("{at}[{i}]");
        if let Some(first) = seen.insert(&t.id, i) {
            errors.push(DefinitionError {
                path: format!("{here}.id"),
                message: format!(
                    "duplicate trigger id {:?} (first at {at}[{first}])",
                    t.id.as_str()
                ),
            });
        }
        for (field, e) in t.condition.expressions() {
            if let Err(err) = crate::expr::check(e) {
                errors.push(DefinitionError {
                    path: format!("{here}.condition.{field}"),
                    message: err.to_string(),
                });
            }
        }
        match &t.condition {
            Condition::Join {
                count: JoinCount::Fixed(0),
            } => errors.push(DefinitionError {
                path: format!("{here}.condition.count"),
                message: "a join must wait for at least one event".into(),
            }),
            Condition::Quorum { k, m } if *k == 0 || k > m => errors.push(DefinitionError {
                path: format!("{here}.condition"),
                message: format!("quorum needs 1 <= k <= m, got k={k}, m={m}"),
            }),
            Condition::Window { count: 0, .. } => errors.push(DefinitionError {
                path: format!("{here}.condition.count"),
                message: "a window must count at least one event".into(),
            }),
            _ => {}
        }
        for (list, actions) in [("actions", &t.actions), ("on_failure", &t.on_failure)] {
            for (j, a) in actions.iter().enumerate() {
                let apath = format!("{here}.{list}[{j}]");
                for (p, e) in a.expressions() {
                    if let Err(err) = crate::expr::check(e) {
                        errors.push(DefinitionError {
                            path: format!("{apath}{p}"),
                            message: err.to_string(),
                        });
                    }
                }
                for (p, triggers) in a.added_triggers() {
                    validate_triggers(triggers, &format!("{apath}{p}"), errors);
                }
            }
        }
    }
}
