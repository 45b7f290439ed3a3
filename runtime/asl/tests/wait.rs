//! Wait states on the simulator's clock (which starts at the epoch).
mod common;
use common::*;
use serde_json::{Value, json};

/// Runs `Wait` then a Task; returns the engine time the Task ran at and the
/// machine's output.
fn waited(wait: Value, input: Value) -> (i64, Value) {
    let mut w = wait;
    w["Type"] = json!("Wait");
    w["Next"] = json!("After");
    let doc = json!({"StartAt": "W", "States": {
        "W": w,
        "After": {"Type": "Task", "Resource": "f", "End": true}
    }});
    let r = run_with(&doc, input, |inv| Ok(inv.input.clone()));
    let t = result_times(&r);
    assert_eq!(t.len(), 1);
    (t[0], output(&r))
}

#[test]
fn seconds() {
    let (at, out) = waited(json!({"Seconds": 10}), json!({"k": 1}));
    assert_eq!(at, 10_000);
    assert_eq!(out, json!({"k": 1}));
}

#[test]
fn seconds_path_with_input_and_output_path() {
    let (at, out) = waited(
        json!({"SecondsPath": "$.delay", "InputPath": "$.cfg", "OutputPath": "$.keep"}),
        json!({"cfg": {"delay": 3, "keep": "x"}}),
    );
    assert_eq!(at, 3_000);
    assert_eq!(out, json!("x"));
}

#[test]
fn timestamp_and_timestamp_path() {
    let (at, _) = waited(json!({"Timestamp": "1970-01-01T00:01:40Z"}), json!({}));
    assert_eq!(at, 100_000);
    let (at, _) = waited(
        json!({"TimestampPath": "$.until"}),
        json!({"until": "1970-01-01T00:00:02.5Z"}),
    );
    assert_eq!(at, 2_500);
    // A long wait: over a day, split into power-of-two timers.
    let (at, _) = waited(json!({"Timestamp": "1970-01-02T03:04:05Z"}), json!({}));
    assert_eq!(at, ((24 + 3) * 3600 + 4 * 60 + 5) * 1000);
}

#[test]
fn bad_seconds_path_is_a_runtime_error() {
    let doc = json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "SecondsPath": "$.d", "End": true}}});
    assert_eq!(
        failure(&run(&doc, json!({"d": "soon"}))).0,
        "States.Runtime"
    );
}
