//! # trigflow-asl
//!
//! Runs Amazon States Language (ASL) state machines on trigflow: parses and
//! validates a document (JSON, or YAML as SAM users write it), reporting
//! every problem with its JSON path, and compiles it onto triggers that the
//! engine runs with Step Functions' semantics.
//!
//! ```
//! use trigflow_asl::load_str;
//! use trigflow_core::{Engine, sim, state::ExecutionStatus};
//! let doc = r#"{
//!   "StartAt": "Hello",
//!   "States": {
//!     "Hello": {"Type": "Pass", "Result": "world", "ResultPath": "$.greeting", "End": true}
//!   }
//! }"#;
//! let loaded = load_str(doc, "hello.asl.json").unwrap();
//! let run = sim::run(&Engine::new(), &loaded.workflow, serde_json::json!({"x": 1}),
//!     |_| unreachable!(), 100).unwrap();
//! assert_eq!(run.state.status, ExecutionStatus::Succeeded {
//!     output: serde_json::json!({"x": 1, "greeting": "world"}) });
//! ```
//!
//! Task `Resource`s become function references through
//! [`AslOptions::resources`]; see the crate README for the supported
//! features.

mod compile;
mod doc;
mod graph;
mod intrinsic;
pub mod path;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use trigflow_core::model::Workflow;
pub use trigflow_dag::Graph;

pub use compile::{
    TYPE_DONE, TYPE_ENTER, TYPE_ERROR, TYPE_MACHINE_TIMEOUT, TYPE_TASK_FAILURE,
    TYPE_TASK_HEARTBEAT, TYPE_TASK_SUCCESS, TYPE_TICK, UNLISTED_ERROR,
};

/// The execution a `.waitForTaskToken` task token belongs to (tokens are
/// `STATE!tokATTEMPT@EXECUTION`), or `None` if `token` is not one.
pub fn token_execution(token: &str) -> Option<&str> {
    let (state, execution) = token.split_once(compile::TOKEN_EXECUTION_SEP)?;
    (state.contains("!tok") && !execution.is_empty()).then_some(execution)
}

/// How a document is compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct AslOptions {
    /// Task resource (or `lambda:invoke` FunctionName) to function
    /// reference. A Lambda ARN is also looked up by its function name.
    /// Resources not in the table are used as the function reference as
    /// they are.
    pub resources: BTreeMap<String, String>,
    /// How many Map iterations run at once when `MaxConcurrency` does not
    /// say less (each slot is a compiled copy of the item processor).
    pub map_slots: usize,
    /// Workflow id; default: from the file name.
    pub name: Option<String>,
}

impl Default for AslOptions {
    fn default() -> Self {
        Self {
            resources: BTreeMap::new(),
            map_slots: 4,
            name: None,
        }
    }
}

/// What kind of definition problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Wrong type, unknown field, missing field.
    Shape,
    /// `StartAt`, `Next`, `Default` or a catcher's `Next` names no state.
    UnknownState,
    /// A state cannot be reached from `StartAt`.
    Unreachable,
    /// A state lacks `Next` / `End`, or has both.
    MissingTransition,
    /// A malformed Choice rule.
    BadChoiceRule,
    /// A path that does not parse or is of the wrong kind.
    BadPath,
    /// An intrinsic function that does not parse or is misused.
    BadIntrinsic,
    /// A malformed Retry or Catch.
    BadRetryCatch,
    /// A valid ASL feature this front-end does not run yet.
    Unsupported,
    /// A field of the other query language: a JSONPath field (InputPath,
    /// Parameters, ResultPath, ...) in a JSONata state, or a JSONata field
    /// (Arguments, Output, Condition, ...) in a JSONPath state.
    WrongQueryLanguage,
    /// A JSONata expression (`{% ... %}`) that does not parse, or a string
    /// that opens `{%` without being one whole expression.
    BadJsonata,
    /// Any other rule.
    Invalid,
}

/// One definition problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or name given for errors).
    pub file: String,
    /// JSON path of the offending value, e.g. `States.Check.Choices[1].Next`
    /// (empty for the document root).
    pub path: String,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: at {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Loading an ASL document failed.
#[derive(Debug, thiserror::Error)]
pub enum AslError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not well-formed JSON or YAML.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The document has definition problems; every one found is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Definition(Vec<Problem>),
    /// The compiler produced an invalid trigger set (a bug in this crate).
    #[error("{file}: internal error compiling the state machine: {message}")]
    Internal {
        /// The file.
        file: String,
        /// What went wrong.
        message: String,
    },
}

impl AslError {
    /// The definition problems, if this is a definition error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            AslError::Definition(p) => p,
            _ => &[],
        }
    }
}

/// A loaded, validated and compiled state machine.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The trigger set to run.
    pub workflow: Workflow,
    /// The state machine as nodes and edges (`graph.mermaid()` draws it).
    pub graph: Graph,
}

/// Whether a parsed document is an ASL state machine (has `StartAt` and
/// `States`).
pub fn is_asl(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|m| m.contains_key("StartAt") && m.contains_key("States"))
}

/// Loads with default options. See [`load_str_with`].
pub fn load_str(text: &str, name_for_errors: &str) -> Result<Loaded, AslError> {
    load_str_with(text, name_for_errors, &AslOptions::default())
}

/// Reads and loads a file. See [`load_str_with`].
pub fn load_file(path: &Path, opts: &AslOptions) -> Result<Loaded, AslError> {
    let text = std::fs::read_to_string(path).map_err(|source| AslError::Io {
        file: path.to_owned(),
        source,
    })?;
    load_str_with(&text, &path.display().to_string(), opts)
}

/// Parses (JSON if the text starts with `{`, else YAML), validates
/// (reporting every problem, located in `name_for_errors`) and compiles.
pub fn load_str_with(
    text: &str,
    name_for_errors: &str,
    opts: &AslOptions,
) -> Result<Loaded, AslError> {
    let file = name_for_errors.to_owned();
    let value: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| AslError::Syntax {
            file: file.clone(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?
    } else {
        serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            AslError::Syntax {
                file: file.clone(),
                line,
                column,
                message: e.to_string(),
            }
        })?
    };
    load_value(&value, name_for_errors, opts)
}

/// Validates and compiles an already parsed document.
pub fn load_value(
    value: &Value,
    name_for_errors: &str,
    opts: &AslOptions,
) -> Result<Loaded, AslError> {
    let file = name_for_errors.to_owned();
    let mut reader = doc::Reader::default();
    let machine = reader.top(value);
    let problems = |raw: Vec<doc::Raw>| {
        AslError::Definition(
            raw.into_iter()
                .map(|(path, kind, message)| Problem {
                    file: file.clone(),
                    path,
                    kind,
                    message,
                })
                .collect(),
        )
    };
    let machine = match machine {
        Some(m) if reader.problems.is_empty() => m,
        _ => return Err(problems(reader.problems)),
    };
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| id_from_file(name_for_errors));
    let workflow =
        compile::compile(&machine, &name, opts).map_err(|message| AslError::Internal {
            file: file.clone(),
            message,
        })?;
    if let Err(errs) = workflow.validate() {
        let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
        return Err(AslError::Internal {
            file,
            message: list.join("; "),
        });
    }
    Ok(Loaded {
        workflow,
        graph: graph::of_machine(&machine),
    })
}

/// A workflow id from a file name: `dir/order.asl.json` gives `order`.
fn id_from_file(file: &str) -> String {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let stem = base.split('.').next().unwrap_or(base);
    let id: String = stem
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    if id.is_empty() { "asl".into() } else { id }
}
