//! The checked-in JSON Schemas in `schema/` match the types. Regenerate with
//! `UPDATE_SCHEMA=1 cargo test -p trigflow-dag --test schema`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use trigflow_dag::schema::{self, DAG_SCHEMA_FILE, TRIGGERS_SCHEMA_FILE};
use trigflow_dag::{LoadOptions, load_file};

fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema")
}

fn check(file: &str, schema: &Value) {
    let path = schema_dir().join(file);
    let want = schema::render(schema);
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::create_dir_all(schema_dir()).expect("create schema/");
        std::fs::write(&path, &want).expect("write schema");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is out of date; regenerate with UPDATE_SCHEMA=1 cargo test -p trigflow-dag --test schema",
        path.display()
    );
}

#[test]
fn triggers_schema_is_up_to_date() {
    let s = schema::triggers_schema();
    assert!(s["properties"]["triggers"].is_object());
    check(TRIGGERS_SCHEMA_FILE, &s);
}

#[test]
fn dag_schema_is_up_to_date() {
    let s = schema::dag_schema();
    assert!(s["properties"]["tasks"].is_object());
    assert!(
        s["required"]
            .as_array()
            .is_some_and(|r| r.contains(&"dag".into()))
    );
    check(DAG_SCHEMA_FILE, &s);
}

#[test]
fn fixtures_load_as_their_kind() {
    // The example documents use only fields the schemas describe: they load.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for f in ["wordcount.dag.yaml", "orders.triggers.yaml"] {
        load_file(&dir.join(f), &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    }
}
