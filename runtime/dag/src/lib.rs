//! # trigflow-dag
//!
//! Loads workflow documents, validates them with precise error locations,
//! compiles them to a [`Workflow`] (a trigger
//! set the engine runs) and draws them as Mermaid graphs.
//!
//! Three formats are accepted, in YAML or JSON, told apart by their content:
//!
//! * a **trigger set** (top-level `triggers`): exactly the serde shape of
//!   [`Workflow`]; its JSON Schema is in `schema/trigflow-triggers.schema.json`;
//! * a **DAG document** (top-level `dag`), see [`DagDocument`]; schema in
//!   `schema/trigflow-dag.schema.json`;
//! * a **FaaSFlow** `flat_workflow.yaml` (top-level `functions` list), whose
//!   functions become `stub:<ms>ms` references, see [`FaasflowInfo`].
//!
//! ```
//! use trigflow_dag::{load_str, LoadOptions};
//! let doc = r#"
//! dag: hello
//! tasks:
//!   greet: {function: "inproc:greet"}
//!   shout: {function: "inproc:shout", depends: [greet]}
//! "#;
//! let loaded = load_str(doc, "hello.yaml", &LoadOptions::default()).unwrap();
//! assert_eq!(loaded.workflow.id.as_str(), "hello");
//! assert!(loaded.graph.mermaid().contains("-->"));
//! ```
//!
//! Every definition problem is reported, not just the first, each with the
//! file and a location (`FILE:LINE:COL: message`, or `FILE: at PATH: message`
//! when no line is known).

mod compile;
mod dag;
mod faasflow;
mod graph;
mod locate;
pub mod schema;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;
use trigflow_core::model::Workflow;

pub use compile::{
    SUBJECT_EDGE_PREFIX, SUBJECT_FUNCTION_PREFIX, SUBJECT_TASK_PREFIX, TYPE_EDGE_DEAD,
    TYPE_EDGE_TAKEN, TYPE_TASK_DONE, TYPE_TASK_RETRY, TYPE_TASK_SKIPPED,
};
pub use dag::{CaseDocument, DagDocument, RetryDocument, TaskDocument};
pub use faasflow::FaasflowInfo;
pub use graph::{Edge, Graph, Node, NodeKind};

/// Parameters of the loaders that generate functions (FaaSFlow).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// FaaSFlow runtimes (seconds) are multiplied by `1000 * time_scale` to
    /// give the stub's sleep in milliseconds (rounded to whole ms).
    pub time_scale: f64,
    /// How many items a FaaSFlow `foreach` edge fans out to.
    pub foreach_width: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            foreach_width: 3,
        }
    }
}

/// Which format a document was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// A trigger set (the serde shape of [`Workflow`]).
    TriggerSet,
    /// A DAG document ([`DagDocument`]).
    Dag,
    /// A FaaSFlow `flat_workflow.yaml`.
    Faasflow,
}

/// A loaded, validated and compiled workflow.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The trigger set to run.
    pub workflow: Workflow,
    /// The format the document was in.
    pub kind: DocKind,
    /// A node/edge view of the document, for drawing.
    pub graph: Graph,
    /// For FaaSFlow documents: stub runtimes and critical-path computation.
    pub faasflow: Option<FaasflowInfo>,
}

/// Where in a document a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// JSON path of the offending value, e.g. `tasks.count.depends[0]`
    /// (empty for the document root).
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

/// What kind of definition problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Wrong type, unknown field or missing field (from deserialisation).
    Shape,
    /// A `depends`, `next` or `nodes` entry names no task.
    UnknownTask,
    /// The tasks form a cycle.
    Cycle,
    /// A task has neither a function nor a switch.
    MissingFunction,
    /// A jq expression does not compile.
    BadExpression,
    /// The document is none of the known formats.
    UnknownFormat,
    /// Any other rule (duplicate names, bad ids, misplaced fields).
    Invalid,
}

/// One definition problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (or name given for errors).
    pub file: String,
    /// Where in the file.
    pub location: Location,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What is wrong, for a human.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = &self.location.path;
        match (self.location.line, self.location.column) {
            (Some(l), Some(c)) if path.is_empty() => {
                write!(f, "{}:{l}:{c}: {}", self.file, self.message)
            }
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {path}: {}", self.file, self.message),
            (Some(l), None) => write!(f, "{}:{l}: {path}: {}", self.file, self.message),
            _ if path.is_empty() => write!(f, "{}: {}", self.file, self.message),
            _ => write!(f, "{}: at {path}: {}", self.file, self.message),
        }
    }
}

/// Loading a workflow document failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Io {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not well-formed YAML or JSON.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// 1-based line (0 when the parser gave none).
        line: usize,
        /// 1-based column (0 when the parser gave none).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The document is well-formed but its definition has problems; every
    /// one found is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Definition(Vec<Problem>),
}

impl LoadError {
    /// The definition problems, if this is a definition error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            LoadError::Definition(p) => p,
            _ => &[],
        }
    }
}

/// Reads and loads a workflow file. See [`load_str`].
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        file: path.to_owned(),
        source,
    })?;
    load_str(&text, &path.display().to_string(), opts)
}

/// Loads a workflow document from text: detects the format, validates it
/// (reporting every problem, located in `name_for_errors`), compiles it.
pub fn load_str(
    text: &str,
    name_for_errors: &str,
    opts: &LoadOptions,
) -> Result<Loaded, LoadError> {
    let src = Source {
        text,
        file: name_for_errors,
        json: text.trim_start().starts_with('{'),
    };
    let value: Value = src.parse()?;
    let kind = match &value {
        Value::Object(m) if m.contains_key("triggers") => DocKind::TriggerSet,
        Value::Object(m) if m.contains_key("dag") => DocKind::Dag,
        Value::Object(m) if m.get("functions").is_some_and(Value::is_array) => DocKind::Faasflow,
        _ => {
            return Err(LoadError::Definition(vec![
                src.problem(
                    "",
                    ProblemKind::UnknownFormat,
                    "not a trigflow document: expected a top-level `triggers` (trigger set), \
                 `dag` (DAG document) or `functions` list (FaaSFlow flat workflow)"
                        .into(),
                ),
            ]));
        }
    };
    match kind {
        DocKind::TriggerSet => load_trigger_set(&src),
        DocKind::Dag => {
            let doc: DagDocument = src.typed()?;
            let dag = doc.check().map_err(|ps| src.problems(ps))?;
            finish(&src, &dag, DocKind::Dag, None)
        }
        DocKind::Faasflow => {
            let doc: faasflow::FlatDocument = src.typed()?;
            let (dag, info) = faasflow::convert(&doc, &id_from_file(src.file), opts)
                .map_err(|ps| src.problems(ps))?;
            finish(&src, &dag, DocKind::Faasflow, Some(info))
        }
    }
}

fn load_trigger_set(src: &Source<'_>) -> Result<Loaded, LoadError> {
    let workflow: Workflow = src.typed()?;
    if let Err(errs) = workflow.validate() {
        let ps = errs
            .into_iter()
            .map(|e| {
                // Core's definition errors carry no kind; its expression
                // errors are the only ones that name jq.
                let kind = if e.message.contains("jq expression") {
                    ProblemKind::BadExpression
                } else {
                    ProblemKind::Invalid
                };
                (e.path, kind, e.message)
            })
            .collect();
        return Err(src.problems(ps));
    }
    let graph = Graph::of_triggers(&workflow);
    Ok(Loaded {
        workflow,
        kind: DocKind::TriggerSet,
        graph,
        faasflow: None,
    })
}

fn finish(
    src: &Source<'_>,
    dag: &dag::Dag,
    kind: DocKind,
    faasflow: Option<FaasflowInfo>,
) -> Result<Loaded, LoadError> {
    let workflow = compile::compile(dag)
        .map_err(|e| src.problems(vec![(String::new(), ProblemKind::Invalid, e.to_string())]))?;
    // The compiler only emits expressions it built around checked user
    // expressions; a failure here is a compiler bug, reported like any other
    // problem rather than panicking.
    if let Err(errs) = workflow.validate() {
        let ps = errs
            .into_iter()
            .map(|e| {
                (
                    String::new(),
                    ProblemKind::Invalid,
                    format!(
                        "internal: compiled trigger set is invalid at {}: {}",
                        e.path, e.message
                    ),
                )
            })
            .collect();
        return Err(src.problems(ps));
    }
    Ok(Loaded {
        workflow,
        kind,
        graph: Graph::of_dag(dag),
        faasflow,
    })
}

/// A problem found by a checker, before it is given a file and line.
pub(crate) type RawProblem = (String, ProblemKind, String);

struct Source<'a> {
    text: &'a str,
    file: &'a str,
    json: bool,
}

impl Source<'_> {
    fn syntax(&self, line: usize, column: usize, message: String) -> LoadError {
        LoadError::Syntax {
            file: self.file.to_owned(),
            line,
            column,
            message,
        }
    }

    /// Parses the text into a generic value, to tell the format apart.
    fn parse(&self) -> Result<Value, LoadError> {
        if self.json {
            serde_json::from_str(self.text)
                .map_err(|e| self.syntax(e.line(), e.column(), strip_at(&e.to_string())))
        } else {
            serde_norway::from_str(self.text).map_err(|e| {
                let (l, c) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
                self.syntax(l, c, strip_at(&e.to_string()))
            })
        }
    }

    /// Deserialises the typed document, locating a shape error by line and
    /// column and by JSON path.
    fn typed<T: DeserializeOwned>(&self) -> Result<T, LoadError> {
        if self.json {
            let mut de = serde_json::Deserializer::from_str(self.text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let path = path_string(e.path());
                let inner = e.into_inner();
                let (l, c) = (inner.line(), inner.column());
                self.shape(path, Some(l), Some(c), strip_at(&inner.to_string()))
            })
        } else {
            let de = serde_norway::Deserializer::from_str(self.text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let path = path_string(e.path());
                let inner = e.into_inner();
                let message = strip_path(&strip_at(&inner.to_string()), &path).to_owned();
                let mut at = inner.location().map(|l| (l.line(), l.column()));
                // Tagged enums (actions, conditions) are buffered before they
                // are checked, so serde points at the start of the mapping;
                // an unknown field can be found by its key from there.
                if let (Some((line, _)), Some(field)) = (at, unknown_field(&message)) {
                    at = locate::key_from(self.text, line, field).or(at);
                }
                self.shape(path, at.map(|a| a.0), at.map(|a| a.1), message)
            })
        }
    }

    fn shape(
        &self,
        path: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    ) -> LoadError {
        LoadError::Definition(vec![Problem {
            file: self.file.to_owned(),
            location: Location { path, line, column },
            kind: ProblemKind::Shape,
            message,
        }])
    }

    fn problem(&self, path: &str, kind: ProblemKind, message: String) -> Problem {
        let (line, column) = if self.json {
            (None, None)
        } else {
            match locate::find(self.text, path) {
                Some((l, c)) => (Some(l), Some(c)),
                None => (None, None),
            }
        };
        Problem {
            file: self.file.to_owned(),
            location: Location {
                path: path.to_owned(),
                line,
                column,
            },
            kind,
            message,
        }
    }

    fn problems(&self, raw: Vec<RawProblem>) -> LoadError {
        LoadError::Definition(
            raw.into_iter()
                .map(|(path, kind, message)| self.problem(&path, kind, message))
                .collect(),
        )
    }
}

fn path_string(p: &serde_path_to_error::Path) -> String {
    let s = p.to_string();
    if s == "." { String::new() } else { s }
}

/// serde_json and serde_norway put " at line L column C" in their
/// messages; the location is reported separately.
fn strip_at(msg: &str) -> String {
    let Some(i) = msg.find(" at line ") else {
        return msg.to_owned();
    };
    let rest = &msg[i + " at line ".len()..];
    let Some(col) = rest.find(" column ") else {
        return msg.to_owned();
    };
    let after = &rest[col + " column ".len()..];
    let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    format!("{}{}", &msg[..i], &after[digits..])
}

/// serde_norway starts nested errors with its own (shorter) path; the full
/// path is reported separately.
fn strip_path<'m>(msg: &'m str, path: &str) -> &'m str {
    match msg.split_once(": ") {
        Some((head, tail)) if !head.is_empty() && !head.contains(' ') && path.starts_with(head) => {
            tail
        }
        _ => msg,
    }
}

/// A workflow id from a file name: `dir/benchmark_video.flat.yaml` gives
/// `benchmark_video`.
fn id_from_file(file: &str) -> String {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    let stem = base.split('.').next().unwrap_or(base);
    let id: String = stem
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    if id.is_empty() { "faasflow".into() } else { id }
}

/// The field named by serde's "unknown field `x`" message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.split("unknown field `").nth(1)?;
    rest.split('`').next()
}
