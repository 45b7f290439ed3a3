//! Parallel and Map: outputs in branch / item order, nested, failure
//! routing, failure tolerance and concurrency.
mod common;
use common::*;
use serde_json::json;

fn add(
    inv: &trigflow_core::state::Invocation,
) -> Result<serde_json::Value, trigflow_core::state::FunctionError> {
    match inv.function.as_str() {
        "double" => Ok(json!(inv.input.as_i64().unwrap_or(0) * 2)),
        "square" => Ok(json!(inv.input.as_i64().unwrap_or(0).pow(2))),
        "fail" => Err(ferr("Broken", "always")),
        "echo" => Ok(inv.input.clone()),
        other => panic!("unknown function {other}"),
    }
}

#[test]
fn parallel_outputs_are_in_branch_order() {
    let doc = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true,
    "InputPath": "$.n", "ResultPath": "$.both",
    "Branches": [
        {"StartAt": "D", "States": {"D": {"Type": "Task", "Resource": "double", "End": true}}},
        {"StartAt": "S", "States": {
            "S": {"Type": "Task", "Resource": "square", "Next": "W"},
            "W": {"Type": "Wait", "Seconds": 1, "End": true}
        }}
    ]}}});
    let r = run_with(&doc, json!({"n": 3}), add);
    assert_eq!(output(&r), json!({"n": 3, "both": [6, 9]}));
}

#[test]
fn parallel_branch_failure_is_caught_and_siblings_stop() {
    let doc = json!({"StartAt": "P", "States": {
        "P": {"Type": "Parallel", "Next": "Never", "Branches": [
            {"StartAt": "Slow", "States": {
                "Slow": {"Type": "Wait", "Seconds": 5, "Next": "After"},
                "After": {"Type": "Task", "Resource": "echo", "End": true}
            }},
            {"StartAt": "F", "States": {"F": {"Type": "Task", "Resource": "fail", "End": true}}}
        ], "Catch": [{"ErrorEquals": ["Broken"], "ResultPath": "$.err", "Next": "Handled"}]},
        "Never": {"Type": "Fail", "Error": "ShouldNotHappen"},
        "Handled": {"Type": "Pass", "End": true}
    }});
    let r = run_with(&doc, json!({"id": 1}), add);
    assert_eq!(
        output(&r),
        json!({"id": 1, "err": {"Error": "Broken", "Cause": "always"}})
    );
    // The slow branch never reached its task.
    assert!(r.invocations.iter().all(|i| i.function != "echo"));
}

#[test]
fn map_with_items_path_and_item_selector() {
    // Developer guide, "ItemSelector": each item with its index from the
    // context object.
    let doc = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "ItemsPath": "$.detail.shipped",
        "ItemSelector": {"parcel.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index", "courier.$": "$.detail.courier"},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Ship", "States": {
            "Ship": {"Type": "Task", "Resource": "echo", "End": true}
        }},
        "ResultPath": "$.detail.shipped"}}});
    let input = json!({"detail": {"courier": "UQS", "shipped": [{"prod": "R31", "dest-code": 9511}, {"prod": "S39", "dest-code": 9511}, {"prod": "R40", "dest-code": 9833}]}});
    let out = output(&run_with(&doc, input, add));
    assert_eq!(
        out["detail"]["shipped"],
        json!([
            {"parcel": {"prod": "R31", "dest-code": 9511}, "index": 0, "courier": "UQS"},
            {"parcel": {"prod": "S39", "dest-code": 9511}, "index": 1, "courier": "UQS"},
            {"parcel": {"prod": "R40", "dest-code": 9833}, "index": 2, "courier": "UQS"}
        ])
    );
}

#[test]
fn map_legacy_iterator_and_parameters_and_empty_input() {
    let doc = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "Parameters": {"v.$": "$$.Map.Item.Value"},
        "Iterator": {"StartAt": "D", "States": {"D": {"Type": "Task", "Resource": "double", "InputPath": "$.v", "End": true}}}}}});
    let items: Vec<i64> = (1..=10).collect();
    let out = output(&run_with(&doc, json!(items), add));
    assert_eq!(out, json!([2, 4, 6, 8, 10, 12, 14, 16, 18, 20]));
    assert_eq!(output(&run_with(&doc, json!([]), add)), json!([]));
}

#[test]
fn max_concurrency_one_runs_items_one_at_a_time() {
    let doc = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "MaxConcurrency": 1,
    "ItemProcessor": {"StartAt": "W", "States": {
        "W": {"Type": "Wait", "Seconds": 1, "Next": "E"},
        "E": {"Type": "Task", "Resource": "echo", "End": true}
    }}}}});
    let r = run_with(&doc, json!([1, 2, 3]), add);
    assert_eq!(output(&r), json!([1, 2, 3]));
    assert_eq!(result_times(&r), vec![1_000, 2_000, 3_000]);
    // Unbounded (up to the compiled slots): all wait together.
    let mut doc = doc;
    doc["States"]["M"]
        .as_object_mut()
        .expect("obj")
        .remove("MaxConcurrency");
    let r = run_with(&doc, json!([1, 2, 3]), add);
    assert_eq!(result_times(&r), vec![1_000, 1_000, 1_000]);
}

#[test]
fn map_item_failure_fails_the_map_unless_tolerated() {
    let processor = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$", "NumericGreaterThan": 2, "Next": "Bad"}], "Default": "Good"},
        "Bad": {"Type": "Task", "Resource": "fail", "End": true},
        "Good": {"Type": "Task", "Resource": "double", "End": true}
    }});
    let doc = json!({"StartAt": "M", "States": {
        "M": {"Type": "Map", "End": true, "ItemProcessor": processor.clone(),
              "Catch": [{"ErrorEquals": ["Broken"], "Next": "Caught"}]},
        "Caught": {"Type": "Pass", "Result": "caught", "End": true}
    }});
    assert_eq!(
        output(&run_with(&doc, json!([1, 2, 3]), add)),
        json!("caught")
    );
    // One failure of four tolerated: failed items carry their error.
    let doc = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "ToleratedFailureCount": 1, "ItemProcessor": processor.clone()}}});
    assert_eq!(
        output(&run_with(&doc, json!([1, 2, 3, 0]), add)),
        json!([2, 4, {"Error": "Broken", "Cause": "always"}, 0])
    );
    // Two of four exceed 25 %.
    let doc = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "ToleratedFailurePercentage": 25, "ItemProcessor": processor}}});
    assert_eq!(
        failure(&run_with(&doc, json!([1, 5, 3, 0]), add)).0,
        "States.ExceedToleratedFailureThreshold"
    );
}

#[test]
fn nested_map_in_parallel_in_map() {
    let doc = json!({"StartAt": "Outer", "States": {"Outer": {"Type": "Map", "End": true,
    "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
        {"StartAt": "Inner", "States": {"Inner": {"Type": "Map", "End": true,
            "ItemProcessor": {"StartAt": "D", "States": {"D": {"Type": "Task", "Resource": "double", "End": true}}}}}},
        {"StartAt": "Len", "States": {"Len": {"Type": "Pass", "Parameters": {"n.$": "States.ArrayLength($)"}, "End": true}}}
    ]}}}}}});
    let out = output(&run_with(&doc, json!([[1, 2], [3], []]), add));
    assert_eq!(
        out,
        json!([[[2, 4], {"n": 2}], [[6], {"n": 1}], [[], {"n": 0}]])
    );
}

#[test]
fn parallel_retry_reruns_every_branch() {
    let doc = json!({"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true,
    "Retry": [{"ErrorEquals": ["Broken"], "MaxAttempts": 1}],
    "Branches": [
        {"StartAt": "E", "States": {"E": {"Type": "Task", "Resource": "echo", "End": true}}},
        {"StartAt": "F", "States": {"F": {"Type": "Task", "Resource": "flaky", "End": true}}}
    ]}}});
    let mut flaky_calls = 0;
    let r = run_with(&doc, json!(1), |inv| {
        if inv.function == "flaky" {
            flaky_calls += 1;
            if flaky_calls == 1 {
                return Err(ferr("Broken", "once"));
            }
        }
        Ok(inv.input.clone())
    });
    assert_eq!(output(&r), json!([1, 1]));
    assert_eq!(r.invocations.len(), 4);
}
