//! Input and output processing: InputPath, Parameters, ResultSelector,
//! ResultPath, OutputPath and the context object, with the examples of the
//! Amazon States Language specification and the Step Functions developer
//! guide ("Processing input and output"). Expected outputs are the ones
//! those documents give.
mod common;
use common::*;
use serde_json::{Value, json};

fn task(fields: Value) -> Value {
    let mut t = json!({"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:F", "End": true});
    for (k, v) in fields.as_object().expect("object") {
        t[k] = v.clone();
    }
    json!({"StartAt": "T", "States": {"T": t}})
}

#[test]
fn spec_filters_example_input_path_and_result_path() {
    // ASL spec, "Input and Output Processing": the task sees only
    // `$.numbers`, and its result is placed at `$.sum` of the raw input.
    let doc = task(json!({"InputPath": "$.numbers", "ResultPath": "$.sum"}));
    let r = run_with(
        &doc,
        json!({"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}}),
        |inv| {
            assert_eq!(inv.input, json!({"val1": 3, "val2": 4}));
            Ok(json!(
                inv.input["val1"].as_i64().unwrap_or(0) + inv.input["val2"].as_i64().unwrap_or(0)
            ))
        },
    );
    assert_eq!(
        output(&r),
        json!({"title": "Numbers to add", "numbers": {"val1": 3, "val2": 4}, "sum": 7})
    );
}

#[test]
fn developer_guide_result_path_forms() {
    // Developer guide, "Specifying state output using ResultPath": the
    // HelloWorld task returns a greeting.
    let input = json!({"comment": "This is a test of the input and output of a Task state.", "details": "Default example", "who": "AWS Step Functions"});
    let hello = |inv: &trigflow_core::state::Invocation| {
        Ok(json!(format!(
            "Hello, {}!",
            inv.input["who"].as_str().unwrap_or("")
        )))
    };
    // ResultPath `$` (the default): the output is the result alone.
    let r = run_with(&task(json!({})), input.clone(), hello);
    assert_eq!(output(&r), json!("Hello, AWS Step Functions!"));
    // ResultPath `$.taskresult`: the result joins the input.
    let r = run_with(
        &task(json!({"ResultPath": "$.taskresult"})),
        input.clone(),
        hello,
    );
    let mut want = input.clone();
    want["taskresult"] = json!("Hello, AWS Step Functions!");
    assert_eq!(output(&r), want);
    // ResultPath null: the result is discarded, the input passes through.
    let r = run_with(&task(json!({"ResultPath": null})), input.clone(), hello);
    assert_eq!(output(&r), input);
    // ResultPath into an existing field replaces it.
    let r = run_with(&task(json!({"ResultPath": "$.who"})), input.clone(), hello);
    assert_eq!(output(&r)["who"], json!("Hello, AWS Step Functions!"));
}

#[test]
fn nested_result_path_creates_objects() {
    let doc = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": 1, "ResultPath": "$.a.b.c", "End": true}}});
    assert_eq!(
        output(&run(&doc, json!({"a": {"x": 0}}))),
        json!({"a": {"x": 0, "b": {"c": 1}}})
    );
}

#[test]
fn spec_parameters_example() {
    // ASL spec, "Parameters": literal fields, `.$` paths (including a
    // negative slice), nested objects.
    let doc = task(json!({"Parameters": {
        "flagged": true,
        "parts": {"first.$": "$.vals[0]", "last3.$": "$.vals[-3:]"}
    }}));
    let r = run_with(
        &doc,
        json!({"flagged": 7, "vals": [0, 10, 20, 30, 40, 50]}),
        |inv| Ok(inv.input.clone()),
    );
    assert_eq!(
        output(&r),
        json!({"flagged": true, "parts": {"first": 0, "last3": [30, 40, 50]}})
    );
}

#[test]
fn developer_guide_result_selector_example() {
    // Developer guide, "Filtering state output using ResultSelector".
    let result = json!({
        "resourceType": "elasticmapreduce",
        "resource": "createCluster.sync",
        "output": {
            "SdkHttpMetadata": {"HttpHeaders": {"Content-Length": "1112"}, "HttpStatusCode": 200},
            "SdkResponseMetadata": {"RequestId": "1234-5678-9012"},
            "ClusterId": "AKIAIOSFODNN7EXAMPLE"
        }
    });
    let doc = task(json!({
        "ResultSelector": {"ClusterId.$": "$.output.ClusterId", "ResourceType.$": "$.resourceType"},
        "ResultPath": "$.EMROutput"
    }));
    let r = run_with(&doc, json!({"cluster": "c1"}), |_| Ok(result.clone()));
    assert_eq!(
        output(&r),
        json!({"cluster": "c1", "EMROutput": {"ClusterId": "AKIAIOSFODNN7EXAMPLE", "ResourceType": "elasticmapreduce"}})
    );
}

#[test]
fn output_path_selects_and_null_paths_give_empty_objects() {
    let doc = task(json!({"ResultPath": "$.r", "OutputPath": "$.r.v"}));
    let r = run_with(&doc, json!({"a": 1}), |_| Ok(json!({"v": [1, 2]})));
    assert_eq!(output(&r), json!([1, 2]));
    // InputPath null: the task gets `{}`; OutputPath null: the output is `{}`.
    let doc = task(json!({"InputPath": null, "OutputPath": null}));
    let r = run_with(&doc, json!({"a": 1}), |inv| {
        assert_eq!(inv.input, json!({}));
        Ok(json!(5))
    });
    assert_eq!(output(&r), json!({}));
}

#[test]
fn indefinite_paths_collect_arrays() {
    let doc = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": {
        "ids.$": "$.items[*].id",
        "prices.$": "$..price",
        "two.$": "$.items[0,2].id",
        "quoted.$": "$['odd key']"
    }, "End": true}}});
    let input = json!({"items": [{"id": "a", "price": 1}, {"id": "b", "price": 2}, {"id": "c", "meta": {"price": 3}}], "odd key": true});
    assert_eq!(
        output(&run(&doc, input)),
        json!({"ids": ["a", "b", "c"], "prices": [1, 2, 3], "two": ["a", "c"], "quoted": true})
    );
}

#[test]
fn context_object_fields() {
    let doc = json!({"StartAt": "Look", "States": {"Look": {"Type": "Pass", "Parameters": {
        "input.$": "$$.Execution.Input",
        "name.$": "$$.Execution.Name",
        "state.$": "$$.State.Name",
        "retries.$": "$$.State.RetryCount",
        "machine.$": "$$.StateMachine.Name",
        "entered.$": "$$.State.EnteredTime",
        "started.$": "$$.Execution.StartTime"
    }, "End": true}}});
    let out = output(&run(&doc, json!({"k": "v"})));
    assert_eq!(out["input"], json!({"k": "v"}));
    assert_eq!(out["name"], json!("sim"));
    assert_eq!(out["state"], json!("Look"));
    assert_eq!(out["retries"], json!(0));
    assert_eq!(out["machine"], json!("test"));
    // The simulator's clock starts at the epoch.
    assert_eq!(out["entered"], json!("1970-01-01T00:00:00.000Z"));
    assert_eq!(out["started"], json!("1970-01-01T00:00:00.000Z"));
}

#[test]
fn missing_path_is_an_uncatchable_runtime_error() {
    let doc = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "f", "InputPath": "$.missing", "End": true,
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Caught": {"Type": "Succeed"}
    }});
    let r = run(&doc, json!({"a": 1}));
    let (error, cause) = failure(&r);
    assert_eq!(error, "States.Runtime");
    assert!(
        cause.as_str().is_some_and(|c| c.contains("missing")),
        "{cause}"
    );
}

#[test]
fn result_path_on_a_non_object_is_a_catchable_match_failure() {
    let doc = json!({"StartAt": "P", "States": {
        "P": {"Type": "Task", "Resource": "f", "ResultPath": "$.r", "End": true,
              "Catch": [{"ErrorEquals": ["States.ResultPathMatchFailure"], "ResultPath": "$", "Next": "Caught"}]},
        "Caught": {"Type": "Pass", "End": true}
    }});
    let r = run_with(&doc, json!("just a string"), |_| Ok(json!(1)));
    assert_eq!(output(&r)["Error"], json!("States.ResultPathMatchFailure"));
}

#[test]
fn lambda_invoke_wraps_the_payload() {
    let doc = json!({"StartAt": "Call", "States": {"Call": {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:double:$LATEST", "Payload": {"n.$": "$.n"}},
        "ResultSelector": {"value.$": "$.Payload.n", "code.$": "$.StatusCode"},
        "End": true
    }}});
    let wf = load(&doc, &[("double", "inproc:double")]);
    let r = trigflow_core::sim::run(
        &trigflow_core::Engine::new(),
        &wf,
        json!({"n": 21}),
        |inv| {
            assert_eq!(inv.function, "inproc:double");
            Ok(json!({"n": inv.input["n"].as_i64().unwrap_or(0) * 2}))
        },
        1000,
    )
    .expect("run");
    assert_eq!(output(&r), json!({"value": 42, "code": 200}));
}

#[test]
fn resources_map_to_function_references() {
    let doc = json!({"StartAt": "A", "States": {
        "A": {"Type": "Task", "Resource": "arn:aws:lambda:eu-west-1:1:function:first", "Next": "B"},
        "B": {"Type": "Task", "Resource": "arn:aws:lambda:eu-west-1:1:function:second", "End": true}
    }});
    let wf = load(&doc, &[("first", "cmd:python3 first.py")]);
    let r = trigflow_core::sim::run(
        &trigflow_core::Engine::new(),
        &wf,
        json!(1),
        |inv| Ok(json!(inv.function.clone())),
        1000,
    )
    .expect("run");
    let called: Vec<&str> = r.invocations.iter().map(|i| i.function.as_str()).collect();
    assert_eq!(
        called,
        vec![
            "cmd:python3 first.py",
            "arn:aws:lambda:eu-west-1:1:function:second"
        ]
    );
}
