//! JSON Schemas of the document formats, published in the repository's
//! `schema/` directory (a test keeps the files up to date: run it with
//! `UPDATE_SCHEMA=1` to regenerate them).

use serde_json::Value;
use trigflow_core::model::Workflow;

use crate::DagDocument;

/// File name of the trigger-set schema in `schema/`.
pub const TRIGGERS_SCHEMA_FILE: &str = "trigflow-triggers.schema.json";
/// File name of the DAG document schema in `schema/`.
pub const DAG_SCHEMA_FILE: &str = "trigflow-dag.schema.json";

/// The JSON Schema of a trigger set (the serde shape of [`Workflow`]).
pub fn triggers_schema() -> Value {
    let mut s = schemars::schema_for!(Workflow).to_value();
    s["title"] = "trigflow trigger set".into();
    s
}

/// The JSON Schema of a DAG document ([`DagDocument`]).
pub fn dag_schema() -> Value {
    let mut s = schemars::schema_for!(DagDocument).to_value();
    s["title"] = "trigflow DAG document".into();
    s
}

/// A schema as the checked-in file holds it: pretty JSON plus a newline.
pub fn render(schema: &Value) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}
