//! The ASL document as typed data, read from JSON with every problem located
//! by its JSON path (`States.Check.Choices[1].Next`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::ProblemKind;
use crate::intrinsic::{self, Call};
use crate::path::{self, JsonPath};

/// A problem before it is given a file: (path, kind, message).
pub(crate) type Raw = (String, ProblemKind, String);

/// A state machine or a Parallel branch / Map processor.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub start_at: String,
    /// States in document order.
    pub states: Vec<State>,
    /// Whole-machine TimeoutSeconds (top level only).
    pub timeout: Option<f64>,
}

/// A path field: absent (`$`), `null`, or a path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PathSpec {
    Default,
    Null,
    Path(JsonPath),
}

/// A payload template (Parameters, ResultSelector, ItemSelector).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tmpl {
    Lit(Value),
    Obj(Vec<(String, Tmpl)>),
    Arr(Vec<Tmpl>),
    Path(JsonPath),
    Call(Call),
}

/// Input/output processing fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Io {
    pub input_path: Option<PathSpec>,
    pub output_path: Option<PathSpec>,
    pub result_path: Option<PathSpec>,
    pub parameters: Option<Tmpl>,
    pub result_selector: Option<Tmpl>,
}

/// A distributed Map's ItemBatcher: children get `{Items, BatchInput}`.
#[derive(Debug, Clone)]
pub(crate) struct Batcher {
    pub max_items: NumSrc,
    pub input: Option<BatchInput>,
}

/// An ItemBatcher's `BatchInput`, as a JSONPath template or a JSONata value.
#[derive(Debug, Clone)]
pub(crate) enum BatchInput {
    Tmpl(Tmpl),
    Jn(Value),
}

#[derive(Debug, Clone)]
pub(crate) struct Retrier {
    pub errors: Vec<String>,
    pub interval: f64,
    pub max_attempts: u64,
    pub backoff: f64,
    pub max_delay: Option<f64>,
    pub jitter: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Catcher {
    pub errors: Vec<String>,
    pub next: String,
    pub result_path: PathSpec,
    /// JSONata `Output` (default: the error output).
    pub output: Option<Value>,
    /// JSONata `Assign`.
    pub assign: Option<Value>,
}

/// The JSONata fields of a state: values in which `{% ... %}` strings are
/// expressions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Jn {
    pub arguments: Option<Value>,
    pub output: Option<Value>,
    pub assign: Option<Value>,
    pub items: Option<Value>,
    pub item_selector: Option<Value>,
}

/// The expression inside a `{% ... %}` string, if it is one.
pub(crate) fn jn_expr(s: &str) -> Option<&str> {
    s.strip_prefix("{%")?.strip_suffix("%}")
}

/// A number given literally or by a path into the effective input.
#[derive(Debug, Clone)]
pub(crate) enum NumSrc {
    Lit(f64),
    Path(JsonPath),
    /// A JSONata expression (the text inside `{% %}`).
    Expr(String),
}

/// A string given literally, by a path or by an intrinsic.
#[derive(Debug, Clone)]
pub(crate) enum StrSrc {
    Lit(String),
    Path(JsonPath),
    Call(Call),
    /// A JSONata expression (the text inside `{% %}`).
    Expr(String),
}

#[derive(Debug, Clone)]
pub(crate) enum WaitFor {
    Seconds(f64),
    SecondsPath(JsonPath),
    Timestamp(String),
    TimestampPath(JsonPath),
    /// JSONata `Seconds` expression.
    SecondsExpr(String),
    /// JSONata `Timestamp` expression.
    TimestampExpr(String),
}

/// The second operand of a comparison.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Lit(Value),
    Path(JsonPath),
}

#[derive(Debug, Clone)]
pub(crate) enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Cmp {
        var: JsonPath,
        /// The operator without a `Path` suffix, e.g. `StringEquals`.
        op: String,
        operand: Operand,
    },
    /// A JSONata `Condition`: a `{% %}` string or a boolean.
    Cond(Value),
}

#[derive(Debug, Clone)]
pub(crate) struct ChoiceBranch {
    pub rule: Rule,
    pub next: String,
    /// JSONata `Output` of the rule.
    pub output: Option<Value>,
    /// JSONata `Assign` of the rule.
    pub assign: Option<Value>,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Pass {
        result: Option<Value>,
    },
    Task {
        /// The resource without a `.waitForTaskToken` suffix.
        resource: String,
        /// `.waitForTaskToken`: the task ends when its token is sent back.
        callback: bool,
        timeout: Option<NumSrc>,
        heartbeat: Option<NumSrc>,
        retry: Vec<Retrier>,
        catch: Vec<Catcher>,
    },
    Choice {
        choices: Vec<ChoiceBranch>,
        default: Option<String>,
    },
    Wait(WaitFor),
    Succeed,
    Fail {
        error: Option<StrSrc>,
        cause: Option<StrSrc>,
    },
    Parallel {
        branches: Vec<Machine>,
        retry: Vec<Retrier>,
        catch: Vec<Catcher>,
    },
    Map {
        processor: Box<Machine>,
        /// `ProcessorConfig.Mode: DISTRIBUTED`.
        distributed: bool,
        items_path: PathSpec,
        selector: Option<Tmpl>,
        /// ItemBatcher (distributed Maps only).
        batcher: Option<Box<Batcher>>,
        max_concurrency: Option<NumSrc>,
        tolerated_count: Option<NumSrc>,
        tolerated_pct: Option<NumSrc>,
        retry: Vec<Retrier>,
        catch: Vec<Catcher>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct State {
    pub name: String,
    pub kind: Kind,
    pub io: Io,
    /// The state uses QueryLanguage JSONata.
    pub jsonata: bool,
    /// Its JSONata fields.
    pub jn: Jn,
    /// `Next`, when the state has one.
    pub next: Option<String>,
}

impl State {
    pub fn retry_catch(&self) -> (&[Retrier], &[Catcher]) {
        match &self.kind {
            Kind::Task { retry, catch, .. }
            | Kind::Parallel { retry, catch, .. }
            | Kind::Map { retry, catch, .. } => (retry, catch),
            _ => (&[], &[]),
        }
    }

    /// Every state name this state can go to.
    pub fn targets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.next.iter().map(String::as_str).collect();
        if let Kind::Choice { choices, default } = &self.kind {
            out.extend(choices.iter().map(|c| c.next.as_str()));
            out.extend(default.as_deref());
        }
        out.extend(self.retry_catch().1.iter().map(|c| c.next.as_str()));
        out
    }
}

/// The JSON path of a key below `at`.
pub(crate) fn key(at: &str, k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (at.is_empty(), plain) {
        (true, true) => k.to_owned(),
        (false, true) => format!("{at}.{k}"),
        (_, false) => format!("{at}[{}]", Value::String(k.to_owned())),
    }
}

fn idx(at: &str, i: usize) -> String {
    format!("{at}[{i}]")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const COMMON: &[&str] = &["Type", "Comment", "QueryLanguage"];
const FIELDS_PASS: &[&str] = &[
    "Next",
    "End",
    "InputPath",
    "OutputPath",
    "ResultPath",
    "Parameters",
    "Result",
];
const FIELDS_TASK: &[&str] = &[
    "Next",
    "End",
    "InputPath",
    "OutputPath",
    "ResultPath",
    "Parameters",
    "ResultSelector",
    "Resource",
    "TimeoutSeconds",
    "TimeoutSecondsPath",
    "HeartbeatSeconds",
    "HeartbeatSecondsPath",
    "Retry",
    "Catch",
    "Credentials",
];
const FIELDS_CHOICE: &[&str] = &["Choices", "Default", "InputPath", "OutputPath"];
const FIELDS_WAIT: &[&str] = &[
    "Next",
    "End",
    "InputPath",
    "OutputPath",
    "Seconds",
    "Timestamp",
    "SecondsPath",
    "TimestampPath",
];
const FIELDS_SUCCEED: &[&str] = &["InputPath", "OutputPath"];
const FIELDS_FAIL: &[&str] = &["Error", "Cause", "ErrorPath", "CausePath"];
const FIELDS_PARALLEL: &[&str] = &[
    "Next",
    "End",
    "InputPath",
    "OutputPath",
    "ResultPath",
    "Parameters",
    "ResultSelector",
    "Branches",
    "Retry",
    "Catch",
];
const FIELDS_MAP: &[&str] = &[
    "Next",
    "End",
    "InputPath",
    "OutputPath",
    "ResultPath",
    "Parameters",
    "ResultSelector",
    "ItemsPath",
    "ItemSelector",
    "ItemProcessor",
    "Iterator",
    "ItemBatcher",
    "MaxConcurrency",
    "MaxConcurrencyPath",
    "ToleratedFailureCount",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentage",
    "ToleratedFailurePercentagePath",
    "Label",
    "Retry",
    "Catch",
];
/// Fields of the JSONata query language, rejected with a clear message.
const JSONATA_FIELDS: &[&str] = &["Arguments", "Output", "Items", "Condition"];
/// Fields of the JSONPath query language, rejected in JSONata states.
const JSONPATH_FIELDS: &[&str] = &[
    "InputPath",
    "OutputPath",
    "ResultPath",
    "Parameters",
    "ResultSelector",
    "Result",
    "ItemsPath",
    "TimeoutSecondsPath",
    "HeartbeatSecondsPath",
    "SecondsPath",
    "TimestampPath",
    "ErrorPath",
    "CausePath",
    "MaxConcurrencyPath",
    "ToleratedFailureCountPath",
    "ToleratedFailurePercentagePath",
];
/// Fields Step Functions has that this front-end does not run yet.
const UNSUPPORTED_FIELDS: &[&str] = &["Assign", "ItemReader", "ResultWriter"];

const JN_PASS: &[&str] = &["Next", "End", "Output", "Assign"];
const JN_TASK: &[&str] = &[
    "Next",
    "End",
    "Arguments",
    "Output",
    "Assign",
    "Resource",
    "TimeoutSeconds",
    "HeartbeatSeconds",
    "Retry",
    "Catch",
    "Credentials",
];
const JN_CHOICE: &[&str] = &["Choices", "Default", "Output", "Assign"];
const JN_WAIT: &[&str] = &["Next", "End", "Output", "Assign", "Seconds", "Timestamp"];
const JN_SUCCEED: &[&str] = &["Output"];
const JN_FAIL: &[&str] = &["Error", "Cause"];
const JN_PARALLEL: &[&str] = &[
    "Next",
    "End",
    "Arguments",
    "Output",
    "Assign",
    "Branches",
    "Retry",
    "Catch",
];
const JN_MAP: &[&str] = &[
    "Next",
    "End",
    "Output",
    "Assign",
    "Items",
    "ItemSelector",
    "ItemProcessor",
    "Iterator",
    "ItemBatcher",
    "MaxConcurrency",
    "ToleratedFailureCount",
    "ToleratedFailurePercentage",
    "Label",
    "Retry",
    "Catch",
];

/// Every comparison operator (without `Path` variants, which all except
/// StringMatches and the Is* tests have).
const OPERATORS: &[&str] = &[
    "StringEquals",
    "StringLessThan",
    "StringGreaterThan",
    "StringLessThanEquals",
    "StringGreaterThanEquals",
    "StringMatches",
    "NumericEquals",
    "NumericLessThan",
    "NumericGreaterThan",
    "NumericLessThanEquals",
    "NumericGreaterThanEquals",
    "BooleanEquals",
    "TimestampEquals",
    "TimestampLessThan",
    "TimestampGreaterThan",
    "TimestampLessThanEquals",
    "TimestampGreaterThanEquals",
    "IsNull",
    "IsPresent",
    "IsNumeric",
    "IsString",
    "IsBoolean",
    "IsTimestamp",
];

/// Reads documents, collecting problems.
#[derive(Default)]
pub(crate) struct Reader {
    pub problems: Vec<Raw>,
    /// The machine's QueryLanguage is JSONata (states default to it).
    jsonata: bool,
    /// The query language of the state being read is JSONata.
    jsonata_state: bool,
}

impl Reader {
    fn err(&mut self, at: &str, kind: ProblemKind, msg: impl Into<String>) {
        self.problems.push((at.to_owned(), kind, msg.into()));
    }

    /// Reads the top-level document.
    pub fn top(&mut self, v: &Value) -> Option<Machine> {
        let Some(m) = v.as_object() else {
            self.err(
                "",
                ProblemKind::Shape,
                format!("a state machine is an object, not {}", type_name(v)),
            );
            return None;
        };
        match m.get("QueryLanguage") {
            None => {}
            Some(q) if q == "JSONPath" => {}
            Some(q) if q == "JSONata" => self.jsonata = true,
            Some(q) => self.err(
                "QueryLanguage",
                ProblemKind::Shape,
                format!("QueryLanguage is JSONPath or JSONata, not {q}"),
            ),
        }
        self.unknown(
            m,
            "",
            &[
                "StartAt",
                "States",
                "Comment",
                "Version",
                "TimeoutSeconds",
                "QueryLanguage",
            ],
        );
        let timeout = self.num(m, "", "TimeoutSeconds", Some(1.0));
        self.machine(m, "", timeout)
    }

    fn unknown(&mut self, m: &Map<String, Value>, at: &str, allowed: &[&str]) {
        self.unknown_q(m, at, allowed, false);
    }

    /// Reports fields not in `allowed`; `jsonata` tells the state's query
    /// language, so that a field of the other one gets a precise message.
    fn unknown_q(&mut self, m: &Map<String, Value>, at: &str, allowed: &[&str], jsonata: bool) {
        for k in m.keys() {
            if allowed.contains(&k.as_str()) {
                continue;
            }
            let here = key(at, k);
            if !jsonata && JSONATA_FIELDS.contains(&k.as_str()) {
                self.err(
                    &here,
                    ProblemKind::WrongQueryLanguage,
                    format!("`{k}` is a JSONata field; this state uses JSONPath"),
                );
            } else if jsonata && JSONPATH_FIELDS.contains(&k.as_str()) {
                self.err(
                    &here,
                    ProblemKind::WrongQueryLanguage,
                    format!(
                        "`{k}` is a JSONPath field; this state uses JSONata (Arguments, Output, Assign)"
                    ),
                );
            } else if UNSUPPORTED_FIELDS.contains(&k.as_str()) {
                self.err(
                    &here,
                    ProblemKind::Unsupported,
                    format!("`{k}` is not supported yet"),
                );
            } else {
                self.err(&here, ProblemKind::Shape, format!("unknown field `{k}`"));
            }
        }
    }

    fn machine(
        &mut self,
        m: &Map<String, Value>,
        at: &str,
        timeout: Option<f64>,
    ) -> Option<Machine> {
        let start_at = self.string(m, at, "StartAt", true);
        let states_at = key(at, "States");
        let states_v = match m.get("States") {
            Some(Value::Object(s)) if !s.is_empty() => s,
            Some(Value::Object(_)) => {
                self.err(&states_at, ProblemKind::Shape, "`States` is empty");
                return None;
            }
            Some(v) => {
                self.err(
                    &states_at,
                    ProblemKind::Shape,
                    format!("`States` must be an object, not {}", type_name(v)),
                );
                return None;
            }
            None => {
                self.err(at, ProblemKind::Shape, "missing field `States`");
                return None;
            }
        };
        let mut states = Vec::new();
        for (name, sv) in states_v {
            let here = key(&states_at, name);
            if name.chars().count() > 80 {
                self.err(
                    &here,
                    ProblemKind::Invalid,
                    "a state name is at most 80 characters",
                );
            }
            if let Some(s) = self.state(name, sv, &here) {
                states.push(s);
            }
        }
        let start_at = start_at?;
        let names: BTreeSet<&str> = states_v.keys().map(String::as_str).collect();
        if !names.contains(start_at.as_str()) {
            self.err(
                &key(at, "StartAt"),
                ProblemKind::UnknownState,
                format!("StartAt names no state: {start_at:?}"),
            );
        }
        // Transitions stay inside their machine: a branch cannot jump out.
        for s in &states {
            let here = key(&states_at, &s.name);
            self.check_targets(s, &here, &names);
        }
        // Reachability from StartAt.
        let by_name: BTreeMap<&str, &State> = states.iter().map(|s| (s.name.as_str(), s)).collect();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let mut todo = vec![start_at.as_str()];
        while let Some(n) = todo.pop() {
            if !seen.insert(n) {
                continue;
            }
            if let Some(s) = by_name.get(n) {
                todo.extend(s.targets());
            }
        }
        if names.contains(start_at.as_str()) {
            for s in &states {
                if !seen.contains(s.name.as_str()) {
                    self.err(
                        &key(&states_at, &s.name),
                        ProblemKind::Unreachable,
                        format!("state {:?} cannot be reached from StartAt", s.name),
                    );
                }
            }
        }
        Some(Machine {
            start_at,
            states,
            timeout,
        })
    }

    fn check_targets(&mut self, s: &State, here: &str, names: &BTreeSet<&str>) {
        let check = |at: String, target: &str, this: &mut Self| {
            if !names.contains(target) {
                this.err(
                    &at,
                    ProblemKind::UnknownState,
                    format!("names no state in this machine: {target:?}"),
                );
            }
        };
        if let Some(n) = &s.next {
            check(key(here, "Next"), n, self);
        }
        if let Kind::Choice { choices, default } = &s.kind {
            for (i, c) in choices.iter().enumerate() {
                check(key(&idx(&key(here, "Choices"), i), "Next"), &c.next, self);
            }
            if let Some(d) = default {
                check(key(here, "Default"), d, self);
            }
        }
        for (i, c) in s.retry_catch().1.iter().enumerate() {
            check(key(&idx(&key(here, "Catch"), i), "Next"), &c.next, self);
        }
    }

    fn state(&mut self, name: &str, v: &Value, at: &str) -> Option<State> {
        // Nested states (branches, processors) set their own language;
        // the enclosing state's fields read after them need its own back.
        let outer = self.jsonata_state;
        let out = self.state_fields(name, v, at);
        self.jsonata_state = outer;
        out
    }

    fn state_fields(&mut self, name: &str, v: &Value, at: &str) -> Option<State> {
        let Some(m) = v.as_object() else {
            self.err(
                at,
                ProblemKind::Shape,
                format!("a state is an object, not {}", type_name(v)),
            );
            return None;
        };
        let ty = self.string(m, at, "Type", true)?;
        let jsonata = match m.get("QueryLanguage") {
            None => self.jsonata,
            Some(q) if q == "JSONata" => true,
            Some(q) if q == "JSONPath" => {
                if self.jsonata {
                    self.err(
                        &key(at, "QueryLanguage"),
                        ProblemKind::WrongQueryLanguage,
                        "a state cannot use JSONPath in a state machine whose QueryLanguage is JSONata",
                    );
                }
                false
            }
            Some(q) => {
                self.err(
                    &key(at, "QueryLanguage"),
                    ProblemKind::Shape,
                    format!("QueryLanguage is JSONPath or JSONata, not {q}"),
                );
                false
            }
        };
        let allowed = match (ty.as_str(), jsonata) {
            ("Pass", false) => FIELDS_PASS,
            ("Task", false) => FIELDS_TASK,
            ("Choice", false) => FIELDS_CHOICE,
            ("Wait", false) => FIELDS_WAIT,
            ("Succeed", false) => FIELDS_SUCCEED,
            ("Fail", false) => FIELDS_FAIL,
            ("Parallel", false) => FIELDS_PARALLEL,
            ("Map", false) => FIELDS_MAP,
            ("Pass", true) => JN_PASS,
            ("Task", true) => JN_TASK,
            ("Choice", true) => JN_CHOICE,
            ("Wait", true) => JN_WAIT,
            ("Succeed", true) => JN_SUCCEED,
            ("Fail", true) => JN_FAIL,
            ("Parallel", true) => JN_PARALLEL,
            ("Map", true) => JN_MAP,
            other => {
                self.err(
                    &key(at, "Type"),
                    ProblemKind::Shape,
                    format!(
                        "unknown state type {other:?}; expected Pass, Task, Choice, Wait, Succeed, Fail, Parallel or Map"
                    ),
                );
                return None;
            }
        };
        let all: Vec<&str> = allowed.iter().chain(COMMON).copied().collect();
        self.unknown_q(m, at, &all, jsonata);
        let (io, jn) = if jsonata {
            let jn = Jn {
                arguments: self.jvalue(m, at, "Arguments"),
                output: self.jvalue(m, at, "Output"),
                assign: self.jassign(m, at),
                items: self.jvalue(m, at, "Items"),
                item_selector: self.jvalue(m, at, "ItemSelector"),
            };
            (Io::default(), jn)
        } else {
            let io = Io {
                input_path: self.path_field(m, at, "InputPath", false),
                output_path: self.path_field(m, at, "OutputPath", false),
                result_path: self.path_field(m, at, "ResultPath", true),
                parameters: self.template(m, at, "Parameters"),
                result_selector: self.template(m, at, "ResultSelector"),
            };
            (io, Jn::default())
        };
        self.jsonata_state = jsonata;
        // Next / End.
        let next = self.string(m, at, "Next", false);
        let end = match m.get("End") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                self.err(
                    &key(at, "End"),
                    ProblemKind::Shape,
                    format!("`End` must be a boolean, not {}", type_name(v)),
                );
                false
            }
        };
        let needs_transition = !matches!(ty.as_str(), "Choice" | "Succeed" | "Fail");
        if needs_transition {
            match (&next, end) {
                (Some(_), true) => self.err(
                    at,
                    ProblemKind::MissingTransition,
                    "a state has either `Next` or `End: true`, not both",
                ),
                (None, false) => self.err(
                    at,
                    ProblemKind::MissingTransition,
                    "a non-terminal state needs `Next` or `End: true`",
                ),
                _ => {}
            }
        }
        let kind = match ty.as_str() {
            "Pass" => Kind::Pass {
                result: m.get("Result").cloned(),
            },
            "Task" => {
                let resource = self.string(m, at, "Resource", true).unwrap_or_default();
                let timeout = self.num_or_path(m, at, "TimeoutSeconds", "TimeoutSecondsPath");
                let heartbeat = self.num_or_path(m, at, "HeartbeatSeconds", "HeartbeatSecondsPath");
                if jsonata && m.contains_key("Credentials") {
                    self.jvalue(m, at, "Credentials");
                }
                if let (Some(NumSrc::Lit(t)), Some(NumSrc::Lit(hb))) = (&timeout, &heartbeat)
                    && hb >= t
                {
                    self.err(
                        &key(at, "HeartbeatSeconds"),
                        ProblemKind::Invalid,
                        "HeartbeatSeconds must be smaller than TimeoutSeconds",
                    );
                }
                let (resource, callback) = match resource.strip_suffix(".waitForTaskToken") {
                    Some(base) => (base.to_owned(), true),
                    None => (resource, false),
                };
                Kind::Task {
                    resource,
                    callback,
                    timeout,
                    heartbeat,
                    retry: self.retry(m, at),
                    catch: self.catch(m, at),
                }
            }
            "Choice" => self.choice(m, at),
            "Wait" => self.wait(m, at)?,
            "Succeed" => Kind::Succeed,
            "Fail" => Kind::Fail {
                error: self.str_or_path(m, at, "Error", "ErrorPath"),
                cause: self.str_or_path(m, at, "Cause", "CausePath"),
            },
            "Parallel" => {
                let bat = key(at, "Branches");
                let mut branches = Vec::new();
                match m.get("Branches") {
                    Some(Value::Array(list)) if !list.is_empty() => {
                        for (i, b) in list.iter().enumerate() {
                            let here = idx(&bat, i);
                            match b.as_object() {
                                Some(bm) => {
                                    self.unknown(bm, &here, &["StartAt", "States", "Comment"]);
                                    if let Some(mach) = self.machine(bm, &here, None) {
                                        branches.push(mach);
                                    }
                                }
                                None => self.err(
                                    &here,
                                    ProblemKind::Shape,
                                    "a branch is an object with StartAt and States",
                                ),
                            }
                        }
                    }
                    _ => self.err(
                        &bat,
                        ProblemKind::Shape,
                        "`Branches` must be a non-empty array",
                    ),
                }
                self.jsonata_state = jsonata;
                Kind::Parallel {
                    branches,
                    retry: self.retry(m, at),
                    catch: self.catch(m, at),
                }
            }
            "Map" => {
                let k = self.map(m, at);
                self.jsonata_state = jsonata;
                k?
            }
            _ => return None,
        };
        if matches!(kind, Kind::Pass { .. }) && io.result_selector.is_some() {
            self.err(
                &key(at, "ResultSelector"),
                ProblemKind::Shape,
                "a Pass state has no ResultSelector",
            );
        }
        Some(State {
            name: name.to_owned(),
            kind,
            io,
            jsonata,
            jn,
            next,
        })
    }

    fn map(&mut self, m: &Map<String, Value>, at: &str) -> Option<Kind> {
        let (pkey, pv) = match (m.get("ItemProcessor"), m.get("Iterator")) {
            (Some(p), None) => ("ItemProcessor", p),
            (None, Some(p)) => ("Iterator", p),
            (Some(_), Some(_)) => {
                self.err(
                    at,
                    ProblemKind::Shape,
                    "a Map has `ItemProcessor` or the legacy `Iterator`, not both",
                );
                return None;
            }
            (None, None) => {
                self.err(at, ProblemKind::Shape, "a Map needs `ItemProcessor`");
                return None;
            }
        };
        let pat = key(at, pkey);
        let Some(pm) = pv.as_object() else {
            self.err(
                &pat,
                ProblemKind::Shape,
                "must be an object with StartAt and States",
            );
            return None;
        };
        self.unknown(
            pm,
            &pat,
            &["StartAt", "States", "Comment", "ProcessorConfig"],
        );
        let mut distributed = false;
        if let Some(cfg) = pm.get("ProcessorConfig") {
            let cat = key(&pat, "ProcessorConfig");
            match cfg.as_object() {
                Some(c) => {
                    self.unknown(c, &cat, &["Mode", "ExecutionType"]);
                    distributed = c.get("Mode").is_some_and(|m| m == "DISTRIBUTED");
                    if let Some(mode) = c.get("Mode")
                        && mode != "INLINE"
                        && mode != "DISTRIBUTED"
                    {
                        self.err(
                            &key(&cat, "Mode"),
                            ProblemKind::Shape,
                            "Mode is INLINE or DISTRIBUTED",
                        );
                    }
                }
                None => self.err(&cat, ProblemKind::Shape, "must be an object"),
            }
        }
        let jsonata = self.jsonata_state;
        let processor = self.machine(pm, &pat, None)?;
        self.jsonata_state = jsonata;
        let items_path = if jsonata {
            PathSpec::Default
        } else {
            self.path_field(m, at, "ItemsPath", true)
                .unwrap_or(PathSpec::Default)
        };
        if items_path == PathSpec::Null {
            self.err(
                &key(at, "ItemsPath"),
                ProblemKind::BadPath,
                "ItemsPath cannot be null",
            );
        }
        let selector = match if jsonata {
            (None, None)
        } else {
            (
                self.template(m, at, "ItemSelector"),
                self.template(m, at, "Parameters"),
            )
        } {
            (Some(_), Some(_)) => {
                self.err(
                    at,
                    ProblemKind::Shape,
                    "a Map has `ItemSelector` or the legacy `Parameters`, not both",
                );
                None
            }
            (a, b) => a.or(b),
        };
        if let Some(Value::String(_)) | None = m.get("Label") {
        } else {
            self.err(
                &key(at, "Label"),
                ProblemKind::Shape,
                "`Label` must be a string",
            );
        }
        Some(Kind::Map {
            processor: Box::new(processor),
            distributed,
            items_path,
            selector,
            batcher: self.batcher(m, at, distributed).map(Box::new),
            max_concurrency: self.num_or_path(m, at, "MaxConcurrency", "MaxConcurrencyPath"),
            tolerated_count: self.num_or_path(
                m,
                at,
                "ToleratedFailureCount",
                "ToleratedFailureCountPath",
            ),
            tolerated_pct: self.num_or_path(
                m,
                at,
                "ToleratedFailurePercentage",
                "ToleratedFailurePercentagePath",
            ),
            retry: self.retry(m, at),
            catch: self.catch(m, at),
        })
    }

    /// `ItemBatcher`: MaxItemsPerBatch (literal, path or JSONata) and
    /// BatchInput; byte limits are not supported.
    fn batcher(&mut self, m: &Map<String, Value>, at: &str, distributed: bool) -> Option<Batcher> {
        let v = m.get("ItemBatcher")?;
        let here = key(at, "ItemBatcher");
        let Some(b) = v.as_object() else {
            self.err(&here, ProblemKind::Shape, "`ItemBatcher` must be an object");
            return None;
        };
        if !distributed {
            self.err(
                &here,
                ProblemKind::Invalid,
                "ItemBatcher needs ItemProcessor.ProcessorConfig.Mode DISTRIBUTED",
            );
        }
        let jsonata = self.jsonata_state;
        let mut fields = vec!["MaxItemsPerBatch", "MaxInputBytesPerBatch", "BatchInput"];
        if !jsonata {
            fields.extend(["MaxItemsPerBatchPath", "MaxInputBytesPerBatchPath"]);
        }
        for k in b.keys() {
            if k.starts_with("MaxInputBytesPerBatch") {
                self.err(
                    &key(&here, k),
                    ProblemKind::Unsupported,
                    "batching by size is not supported yet; use MaxItemsPerBatch",
                );
            } else if !fields.contains(&k.as_str()) {
                self.err(
                    &key(&here, k),
                    ProblemKind::Shape,
                    format!("unknown field `{k}`"),
                );
            }
        }
        let Some(max_items) =
            self.num_or_path(b, &here, "MaxItemsPerBatch", "MaxItemsPerBatchPath")
        else {
            self.err(
                &here,
                ProblemKind::Shape,
                "ItemBatcher needs MaxItemsPerBatch",
            );
            return None;
        };
        if let NumSrc::Lit(x) = max_items
            && (x < 1.0 || x.fract() != 0.0)
        {
            self.err(
                &key(&here, "MaxItemsPerBatch"),
                ProblemKind::Shape,
                "MaxItemsPerBatch is a positive integer",
            );
        }
        let input = if jsonata {
            self.jvalue(b, &here, "BatchInput").map(BatchInput::Jn)
        } else {
            self.template(b, &here, "BatchInput").map(BatchInput::Tmpl)
        };
        Some(Batcher { max_items, input })
    }

    fn wait(&mut self, m: &Map<String, Value>, at: &str) -> Option<Kind> {
        let present: Vec<&str> = ["Seconds", "Timestamp", "SecondsPath", "TimestampPath"]
            .into_iter()
            .filter(|k| m.contains_key(*k))
            .collect();
        if present.len() != 1 {
            self.err(
                at,
                ProblemKind::Shape,
                format!(
                    "a Wait needs exactly one of Seconds, Timestamp, SecondsPath, TimestampPath (has {})",
                    if present.is_empty() { "none".to_owned() } else { present.join(", ") }
                ),
            );
            return None;
        }
        let k = present[0];
        let here = key(at, k);
        if self.jsonata_state
            && let Some(s) = m.get(k).and_then(Value::as_str)
        {
            match jn_expr(s) {
                Some(e) => {
                    self.check_expr(e, &here);
                    return Some(Kind::Wait(if k == "Seconds" {
                        WaitFor::SecondsExpr(e.to_owned())
                    } else {
                        WaitFor::TimestampExpr(e.to_owned())
                    }));
                }
                None if k == "Seconds" || s.starts_with("{%") => {
                    self.err(
                        &here,
                        ProblemKind::BadJsonata,
                        format!("`{k}` is a literal or one whole {{% ... %}} expression"),
                    );
                    return None;
                }
                None => {}
            }
        }
        Some(Kind::Wait(match k {
            "Seconds" => WaitFor::Seconds(self.num(m, at, "Seconds", Some(0.0))?),
            "Timestamp" => {
                let t = self.string(m, at, "Timestamp", true)?;
                if !is_timestamp(&t) {
                    self.err(
                        &here,
                        ProblemKind::Shape,
                        format!("{t:?} is not an RFC 3339 timestamp"),
                    );
                }
                WaitFor::Timestamp(t)
            }
            "SecondsPath" => WaitFor::SecondsPath(self.ref_path(m, at, k)?),
            _ => WaitFor::TimestampPath(self.ref_path(m, at, k)?),
        }))
    }

    fn choice(&mut self, m: &Map<String, Value>, at: &str) -> Kind {
        let cat = key(at, "Choices");
        let mut choices = Vec::new();
        match m.get("Choices") {
            Some(Value::Array(list)) if !list.is_empty() => {
                for (i, r) in list.iter().enumerate() {
                    let here = idx(&cat, i);
                    let next = r
                        .as_object()
                        .and_then(|o| o.get("Next"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    if next.is_none() {
                        self.err(
                            &here,
                            ProblemKind::BadChoiceRule,
                            "a top-level choice rule needs a `Next` string",
                        );
                    }
                    if self.jsonata_state {
                        if let (Some(b), Some(next)) = (self.jn_rule(r, &here), next) {
                            choices.push(ChoiceBranch { next, ..b });
                        }
                    } else if let (Some(rule), Some(next)) = (self.rule(r, &here, true), next) {
                        choices.push(ChoiceBranch {
                            rule,
                            next,
                            output: None,
                            assign: None,
                        });
                    }
                }
            }
            _ => self.err(
                &cat,
                ProblemKind::BadChoiceRule,
                "`Choices` must be a non-empty array",
            ),
        }
        Kind::Choice {
            choices,
            default: self.string(m, at, "Default", false),
        }
    }

    fn rule(&mut self, v: &Value, at: &str, top: bool) -> Option<Rule> {
        let Some(m) = v.as_object() else {
            self.err(at, ProblemKind::BadChoiceRule, "a choice rule is an object");
            return None;
        };
        if m.contains_key("Condition") {
            self.err(
                &key(at, "Condition"),
                ProblemKind::WrongQueryLanguage,
                "`Condition` is a JSONata field; this state uses JSONPath (Variable and a comparison)",
            );
            return None;
        }
        let mut allowed: Vec<&str> = vec!["Variable", "Comment", "And", "Or", "Not"];
        if top {
            allowed.push("Next");
        } else if m.contains_key("Next") {
            self.err(
                &key(at, "Next"),
                ProblemKind::BadChoiceRule,
                "only top-level choice rules have `Next`",
            );
        }
        let ops: Vec<&String> = m
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()) && *k != "Next")
            .collect();
        let bools: Vec<&str> = ["And", "Or", "Not"]
            .into_iter()
            .filter(|k| m.contains_key(*k))
            .collect();
        if ops.len() + bools.len() != 1 {
            self.err(
                at,
                ProblemKind::BadChoiceRule,
                format!(
                    "a choice rule has exactly one operator (And, Or, Not or a comparison), found {}",
                    if ops.len() + bools.len() == 0 {
                        "none".to_owned()
                    } else {
                        ops.iter()
                            .map(|s| s.as_str())
                            .chain(bools.iter().copied())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            );
            return None;
        }
        if let Some(&b) = bools.first() {
            if m.contains_key("Variable") {
                self.err(
                    &key(at, "Variable"),
                    ProblemKind::BadChoiceRule,
                    format!("`{b}` takes no Variable"),
                );
            }
            let here = key(at, b);
            let v = &m[b];
            return match b {
                "Not" => self.rule(v, &here, false).map(|r| Rule::Not(Box::new(r))),
                _ => {
                    let Some(list) = v.as_array().filter(|l| !l.is_empty()) else {
                        self.err(
                            &here,
                            ProblemKind::BadChoiceRule,
                            format!("`{b}` takes a non-empty array of rules"),
                        );
                        return None;
                    };
                    let mut rules = Vec::new();
                    for (i, r) in list.iter().enumerate() {
                        rules.push(self.rule(r, &idx(&here, i), false));
                    }
                    let rules: Option<Vec<Rule>> = rules.into_iter().collect();
                    let rules = rules?;
                    Some(if b == "And" {
                        Rule::And(rules)
                    } else {
                        Rule::Or(rules)
                    })
                }
            };
        }
        let op_full = ops[0].as_str();
        let here = key(at, op_full);
        let (op, is_path) = match op_full.strip_suffix("Path") {
            Some(base) if OPERATORS.contains(&base) => (base, true),
            _ => (op_full, false),
        };
        if !OPERATORS.contains(&op) || is_path && (op == "StringMatches" || op.starts_with("Is")) {
            self.err(
                &here,
                ProblemKind::BadChoiceRule,
                format!("unknown comparison operator `{op_full}`"),
            );
            return None;
        }
        let var = match m.get("Variable") {
            Some(Value::String(s)) => match path::parse(s) {
                Ok(p) => p,
                Err(e) => {
                    self.err(&key(at, "Variable"), ProblemKind::BadPath, e);
                    return None;
                }
            },
            _ => {
                self.err(
                    at,
                    ProblemKind::BadChoiceRule,
                    "a comparison needs a `Variable` path string",
                );
                return None;
            }
        };
        let val = &m[op_full];
        let operand = if is_path {
            match val.as_str().map(path::parse) {
                Some(Ok(p)) => Operand::Path(p),
                Some(Err(e)) => {
                    self.err(&here, ProblemKind::BadPath, e);
                    return None;
                }
                None => {
                    self.err(&here, ProblemKind::BadChoiceRule, "takes a path string");
                    return None;
                }
            }
        } else {
            let ok = if op.starts_with("String") {
                val.is_string()
            } else if op.starts_with("Numeric") {
                val.is_number()
            } else if op.starts_with("Timestamp") {
                val.as_str().is_some_and(is_timestamp)
            } else {
                val.is_boolean()
            };
            if !ok {
                let want = if op.starts_with("String") {
                    "a string"
                } else if op.starts_with("Numeric") {
                    "a number"
                } else if op.starts_with("Timestamp") {
                    "an RFC 3339 timestamp string"
                } else {
                    "a boolean"
                };
                self.err(
                    &here,
                    ProblemKind::BadChoiceRule,
                    format!("`{op_full}` takes {want}, not {val}"),
                );
                return None;
            }
            Operand::Lit(val.clone())
        };
        Some(Rule::Cmp {
            var,
            op: op.to_owned(),
            operand,
        })
    }

    /// A JSONata Choice rule: `Condition` (a `{% %}` string or a boolean)
    /// with optional `Output` and `Assign`. `next` is filled by the caller.
    fn jn_rule(&mut self, v: &Value, at: &str) -> Option<ChoiceBranch> {
        let Some(m) = v.as_object() else {
            self.err(at, ProblemKind::BadChoiceRule, "a choice rule is an object");
            return None;
        };
        for k in m.keys() {
            if ["Condition", "Next", "Comment", "Output", "Assign"].contains(&k.as_str()) {
                continue;
            }
            let (kind, msg) = if k == "Variable"
                || k == "And"
                || k == "Or"
                || k == "Not"
                || OPERATORS.iter().any(|o| k.starts_with(o))
            {
                (
                    ProblemKind::WrongQueryLanguage,
                    format!(
                        "`{k}` belongs to JSONPath choice rules; a JSONata rule has a `Condition`"
                    ),
                )
            } else {
                (
                    ProblemKind::BadChoiceRule,
                    format!("unknown choice rule field `{k}`"),
                )
            };
            self.err(&key(at, k), kind, msg);
        }
        let here = key(at, "Condition");
        let cond = match m.get("Condition") {
            Some(Value::Bool(b)) => Value::Bool(*b),
            Some(Value::String(s)) if jn_expr(s).is_some() => {
                self.check_value(&Value::String(s.clone()), &here);
                Value::String(s.clone())
            }
            Some(_) => {
                self.err(
                    &here,
                    ProblemKind::BadChoiceRule,
                    "`Condition` is a {% ... %} expression or a boolean",
                );
                return None;
            }
            None => {
                self.err(
                    at,
                    ProblemKind::BadChoiceRule,
                    "a JSONata choice rule needs a `Condition`",
                );
                return None;
            }
        };
        Some(ChoiceBranch {
            rule: Rule::Cond(cond),
            next: String::new(),
            output: self.jvalue(m, at, "Output"),
            assign: self.jassign(m, at),
        })
    }

    /// A JSONata value field, its expressions checked.
    fn jvalue(&mut self, m: &Map<String, Value>, at: &str, k: &str) -> Option<Value> {
        let v = m.get(k)?;
        self.check_value(v, &key(at, k));
        Some(v.clone())
    }

    /// `Assign`: an object of variable names to JSONata values.
    fn jassign(&mut self, m: &Map<String, Value>, at: &str) -> Option<Value> {
        let v = m.get("Assign")?;
        let here = key(at, "Assign");
        let Some(o) = v.as_object() else {
            self.err(&here, ProblemKind::Shape, "`Assign` must be an object");
            return None;
        };
        for k in o.keys() {
            let ok = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok || k == "states" {
                self.err(
                    &key(&here, k),
                    ProblemKind::Invalid,
                    format!(
                        "{k:?} is not a valid variable name (letters, digits and `_`, not `states`)"
                    ),
                );
            }
        }
        self.check_value(v, &here);
        Some(v.clone())
    }

    /// Checks every `{% ... %}` string inside a value.
    fn check_value(&mut self, v: &Value, at: &str) {
        match v {
            Value::String(s) if s.starts_with("{%") => match jn_expr(s) {
                Some(e) => self.check_expr(e, at),
                None => self.err(
                    at,
                    ProblemKind::BadJsonata,
                    "a string that opens `{%` must be one whole `{% ... %}` expression",
                ),
            },
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.check_value(item, &idx(at, i));
                }
            }
            Value::Object(m) => {
                for (k, item) in m {
                    self.check_value(item, &key(at, k));
                }
            }
            _ => {}
        }
    }

    fn check_expr(&mut self, e: &str, at: &str) {
        if let Err(msg) = trigflow_core::jsonata::check(e) {
            self.err(
                at,
                ProblemKind::BadJsonata,
                format!("bad JSONata expression: {msg}"),
            );
        }
    }

    fn retry(&mut self, m: &Map<String, Value>, at: &str) -> Vec<Retrier> {
        let rat = key(at, "Retry");
        let Some(v) = m.get("Retry") else {
            return Vec::new();
        };
        let Some(list) = v.as_array() else {
            self.err(&rat, ProblemKind::BadRetryCatch, "`Retry` must be an array");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let here = idx(&rat, i);
            let Some(o) = r.as_object() else {
                self.err(&here, ProblemKind::BadRetryCatch, "a retrier is an object");
                continue;
            };
            for k in o.keys() {
                if ![
                    "ErrorEquals",
                    "IntervalSeconds",
                    "MaxAttempts",
                    "BackoffRate",
                    "MaxDelaySeconds",
                    "JitterStrategy",
                    "Comment",
                ]
                .contains(&k.as_str())
                {
                    self.err(
                        &key(&here, k),
                        ProblemKind::BadRetryCatch,
                        format!("unknown retrier field `{k}`"),
                    );
                }
            }
            let errors = self.error_equals(o, &here, i + 1 == list.len());
            let int_field = |this: &mut Self, k: &str, min: f64, default: f64| -> f64 {
                match o.get(k) {
                    None => default,
                    Some(Value::Number(n))
                        if n.as_f64().is_some_and(|x| x >= min && x.fract() == 0.0) =>
                    {
                        n.as_f64().unwrap_or(default)
                    }
                    Some(v) => {
                        this.err(
                            &key(&here, k),
                            ProblemKind::BadRetryCatch,
                            format!("`{k}` must be an integer >= {min}, not {v}"),
                        );
                        default
                    }
                }
            };
            let interval = int_field(self, "IntervalSeconds", 1.0, 1.0);
            let max_attempts = int_field(self, "MaxAttempts", 0.0, 3.0) as u64;
            let max_delay = o
                .contains_key("MaxDelaySeconds")
                .then(|| int_field(self, "MaxDelaySeconds", 1.0, 1.0));
            let backoff = match o.get("BackoffRate") {
                None => 2.0,
                Some(Value::Number(n)) if n.as_f64().is_some_and(|x| x >= 1.0) => {
                    n.as_f64().unwrap_or(2.0)
                }
                Some(v) => {
                    self.err(
                        &key(&here, "BackoffRate"),
                        ProblemKind::BadRetryCatch,
                        format!("`BackoffRate` must be a number >= 1.0, not {v}"),
                    );
                    2.0
                }
            };
            let jitter = match o.get("JitterStrategy") {
                None => false,
                Some(v) if v == "FULL" => true,
                Some(v) if v == "NONE" => false,
                Some(v) => {
                    self.err(
                        &key(&here, "JitterStrategy"),
                        ProblemKind::BadRetryCatch,
                        format!("`JitterStrategy` is FULL or NONE, not {v}"),
                    );
                    false
                }
            };
            out.push(Retrier {
                errors,
                interval,
                max_attempts,
                backoff,
                max_delay,
                jitter,
            });
        }
        out
    }

    fn catch(&mut self, m: &Map<String, Value>, at: &str) -> Vec<Catcher> {
        let cat = key(at, "Catch");
        let Some(v) = m.get("Catch") else {
            return Vec::new();
        };
        let Some(list) = v.as_array() else {
            self.err(&cat, ProblemKind::BadRetryCatch, "`Catch` must be an array");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let here = idx(&cat, i);
            let Some(o) = c.as_object() else {
                self.err(&here, ProblemKind::BadRetryCatch, "a catcher is an object");
                continue;
            };
            let jsonata = self.jsonata_state;
            for k in o.keys() {
                let fields: &[&str] = if jsonata {
                    &["ErrorEquals", "Next", "Output", "Assign", "Comment"]
                } else {
                    &["ErrorEquals", "Next", "ResultPath", "Comment"]
                };
                if fields.contains(&k.as_str()) {
                    continue;
                }
                let (kind, msg) = match (jsonata, k.as_str()) {
                    (true, "ResultPath") => (
                        ProblemKind::WrongQueryLanguage,
                        "`ResultPath` is a JSONPath field; this state uses JSONata (Output, Assign)"
                            .to_owned(),
                    ),
                    (false, "Output") => (
                        ProblemKind::WrongQueryLanguage,
                        "`Output` is a JSONata field; this state uses JSONPath".to_owned(),
                    ),
                    (false, "Assign") => (
                        ProblemKind::Unsupported,
                        "`Assign` is not supported yet in JSONPath states".to_owned(),
                    ),
                    _ => (
                        ProblemKind::BadRetryCatch,
                        format!("unknown catcher field `{k}`"),
                    ),
                };
                self.err(&key(&here, k), kind, msg);
            }
            let errors = self.error_equals(o, &here, i + 1 == list.len());
            let next = match o.get("Next") {
                Some(Value::String(s)) => s.clone(),
                _ => {
                    self.err(
                        &here,
                        ProblemKind::BadRetryCatch,
                        "a catcher needs a `Next` string",
                    );
                    continue;
                }
            };
            let (result_path, output, assign) = if jsonata {
                (
                    PathSpec::Default,
                    self.jvalue(o, &here, "Output"),
                    self.jassign(o, &here),
                )
            } else {
                (
                    self.path_field(o, &here, "ResultPath", true)
                        .unwrap_or(PathSpec::Default),
                    None,
                    None,
                )
            };
            out.push(Catcher {
                errors,
                next,
                result_path,
                output,
                assign,
            });
        }
        out
    }

    fn error_equals(&mut self, o: &Map<String, Value>, at: &str, last: bool) -> Vec<String> {
        let here = key(at, "ErrorEquals");
        let list: Option<Vec<String>> =
            o.get("ErrorEquals")
                .and_then(Value::as_array)
                .and_then(|l| {
                    l.iter()
                        .map(|e| e.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                });
        match list {
            Some(l) if !l.is_empty() => {
                if l.iter().any(|e| e == "States.ALL") && (l.len() > 1 || !last) {
                    self.err(
                        &here,
                        ProblemKind::BadRetryCatch,
                        "States.ALL must appear alone, in the last retrier or catcher",
                    );
                }
                l
            }
            _ => {
                self.err(
                    &here,
                    ProblemKind::BadRetryCatch,
                    "`ErrorEquals` must be a non-empty array of error names",
                );
                Vec::new()
            }
        }
    }

    fn string(
        &mut self,
        m: &Map<String, Value>,
        at: &str,
        k: &str,
        required: bool,
    ) -> Option<String> {
        match m.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                self.err(
                    &key(at, k),
                    ProblemKind::Shape,
                    format!("`{k}` must be a string, not {}", type_name(v)),
                );
                None
            }
            None => {
                if required {
                    self.err(at, ProblemKind::Shape, format!("missing field `{k}`"));
                }
                None
            }
        }
    }

    fn num(&mut self, m: &Map<String, Value>, at: &str, k: &str, min: Option<f64>) -> Option<f64> {
        let v = m.get(k)?;
        match v.as_f64() {
            Some(x) if min.is_none_or(|lo| x >= lo) => Some(x),
            _ => {
                self.err(
                    &key(at, k),
                    ProblemKind::Shape,
                    format!(
                        "`{k}` must be a number{}, not {v}",
                        min.map(|m| format!(" >= {m}")).unwrap_or_default()
                    ),
                );
                None
            }
        }
    }

    fn num_or_path(
        &mut self,
        m: &Map<String, Value>,
        at: &str,
        k: &str,
        kp: &str,
    ) -> Option<NumSrc> {
        if self.jsonata_state {
            let here = key(at, k);
            return match m.get(k)? {
                Value::String(s) => match jn_expr(s) {
                    Some(e) => {
                        self.check_expr(e, &here);
                        Some(NumSrc::Expr(e.to_owned()))
                    }
                    None => {
                        self.err(
                            &here,
                            ProblemKind::BadJsonata,
                            format!("`{k}` is a number or a {{% ... %}} expression"),
                        );
                        None
                    }
                },
                _ => self.num(m, at, k, Some(0.0)).map(NumSrc::Lit),
            };
        }
        match (m.contains_key(k), m.contains_key(kp)) {
            (true, true) => {
                self.err(
                    at,
                    ProblemKind::Shape,
                    format!("`{k}` and `{kp}` cannot both be given"),
                );
                None
            }
            (true, false) => self.num(m, at, k, Some(0.0)).map(NumSrc::Lit),
            (false, true) => self.ref_path(m, at, kp).map(NumSrc::Path),
            (false, false) => None,
        }
    }

    fn str_or_path(
        &mut self,
        m: &Map<String, Value>,
        at: &str,
        k: &str,
        kp: &str,
    ) -> Option<StrSrc> {
        if self.jsonata_state {
            let s = self.string(m, at, k, false)?;
            return Some(match jn_expr(&s) {
                Some(e) => {
                    self.check_expr(e, &key(at, k));
                    StrSrc::Expr(e.to_owned())
                }
                None => StrSrc::Lit(s),
            });
        }
        match (m.contains_key(k), m.contains_key(kp)) {
            (true, true) => {
                self.err(
                    at,
                    ProblemKind::Shape,
                    format!("`{k}` and `{kp}` cannot both be given"),
                );
                None
            }
            (true, false) => self.string(m, at, k, true).map(StrSrc::Lit),
            (false, true) => {
                let s = self.string(m, at, kp, true)?;
                let here = key(at, kp);
                if intrinsic::looks_like_call(&s) {
                    match intrinsic::parse(&s) {
                        Ok(c) => Some(StrSrc::Call(c)),
                        Err(e) => {
                            self.err(&here, ProblemKind::BadIntrinsic, e);
                            None
                        }
                    }
                } else {
                    match path::parse(&s) {
                        Ok(p) => Some(StrSrc::Path(p)),
                        Err(e) => {
                            self.err(&here, ProblemKind::BadPath, e);
                            None
                        }
                    }
                }
            }
            (false, false) => None,
        }
    }

    /// A definite path on `$` or `$$`.
    fn ref_path(&mut self, m: &Map<String, Value>, at: &str, k: &str) -> Option<JsonPath> {
        let s = self.string(m, at, k, true)?;
        match path::parse(&s) {
            Ok(p) if p.is_definite() => Some(p),
            Ok(_) => {
                self.err(
                    &key(at, k),
                    ProblemKind::BadPath,
                    format!(
                        "`{k}` must be a reference path (no wildcards, slices or deep scans): {s:?}"
                    ),
                );
                None
            }
            Err(e) => {
                self.err(&key(at, k), ProblemKind::BadPath, e);
                None
            }
        }
    }

    /// InputPath / OutputPath / ResultPath / ItemsPath.
    fn path_field(
        &mut self,
        m: &Map<String, Value>,
        at: &str,
        k: &str,
        reference: bool,
    ) -> Option<PathSpec> {
        let here = key(at, k);
        match m.get(k)? {
            Value::Null => Some(PathSpec::Null),
            Value::String(s) => {
                match path::parse(s) {
                    Ok(p) if reference && !p.is_reference() => {
                        self.err(
                        &here,
                        ProblemKind::BadPath,
                        format!("`{k}` must be a reference path on `$` (fields and indexes only): {s:?}"),
                    );
                        None
                    }
                    Ok(p) if k == "ResultPath" && p.field_names().is_none() => {
                        self.err(
                            &here,
                            ProblemKind::BadPath,
                            format!("`ResultPath` with array indexes is not supported: {s:?}"),
                        );
                        None
                    }
                    Ok(p) => Some(PathSpec::Path(p)),
                    Err(e) => {
                        self.err(&here, ProblemKind::BadPath, e);
                        None
                    }
                }
            }
            v => {
                self.err(
                    &here,
                    ProblemKind::BadPath,
                    format!("`{k}` must be a path string or null, not {}", type_name(v)),
                );
                None
            }
        }
    }

    fn template(&mut self, m: &Map<String, Value>, at: &str, k: &str) -> Option<Tmpl> {
        let v = m.get(k)?;
        Some(self.tmpl(v, &key(at, k)))
    }

    fn tmpl(&mut self, v: &Value, at: &str) -> Tmpl {
        match v {
            Value::Object(o) => {
                let mut fields = Vec::new();
                for (k, fv) in o {
                    let here = key(at, k);
                    if let Some(name) = k.strip_suffix(".$") {
                        let Some(s) = fv.as_str() else {
                            self.err(
                                &here,
                                ProblemKind::BadPath,
                                format!(
                                    "a `.$` field takes a path or intrinsic string, not {}",
                                    type_name(fv)
                                ),
                            );
                            continue;
                        };
                        let t = if intrinsic::looks_like_call(s) {
                            match intrinsic::parse(s) {
                                Ok(c) => Tmpl::Call(c),
                                Err(e) => {
                                    self.err(&here, ProblemKind::BadIntrinsic, e);
                                    continue;
                                }
                            }
                        } else {
                            match path::parse(s) {
                                Ok(p) => Tmpl::Path(p),
                                Err(e) => {
                                    self.err(&here, ProblemKind::BadPath, e);
                                    continue;
                                }
                            }
                        };
                        fields.push((name.to_owned(), t));
                    } else {
                        fields.push((k.clone(), self.tmpl(fv, &here)));
                    }
                }
                Tmpl::Obj(fields)
            }
            Value::Array(a) => Tmpl::Arr(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| self.tmpl(x, &idx(at, i)))
                    .collect(),
            ),
            other => Tmpl::Lit(other.clone()),
        }
    }
}

/// Whether `s` is an RFC 3339 timestamp as ASL requires (uppercase `T`,
/// `Z` or a numeric offset).
pub(crate) fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    if b.len() < 20
        || !digits(0..4)
        || b[4] != b'-'
        || !digits(5..7)
        || b[7] != b'-'
        || !digits(8..10)
        || b[10] != b'T'
        || !digits(11..13)
        || b[13] != b':'
        || !digits(14..16)
        || b[16] != b':'
        || !digits(17..19)
    {
        return false;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len() && digits(i + 1..i + 3) && b[i + 3] == b':' && digits(i + 4..i + 6)
        }
        _ => false,
    }
}
