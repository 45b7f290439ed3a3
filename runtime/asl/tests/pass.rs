//! Pass states and the data-flow paths.
mod common;
use common::*;
use serde_json::json;

#[test]
fn pass_result_into_result_path() {
    let doc = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.r", "End": true}}});
    let r = run(&doc, json!({"a": 1}));
    assert_eq!(output(&r), json!({"a": 1, "r": {"x": 1}}));
}
