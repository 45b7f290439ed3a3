//! QueryLanguage JSONata: Arguments, Output, Assign and variables,
//! `$states`, `{% %}` expressions in every field that takes them, and the
//! "wrong field for the query language" validation.
mod common;
use common::*;
use serde_json::{Value, json};
use trigflow_asl::{AslError, ProblemKind, load_str};
use trigflow_core::state::{FunctionError, Invocation};

fn echo(inv: &Invocation) -> Result<Value, FunctionError> {
    match inv.function.as_str() {
        "echo" => Ok(inv.input.clone()),
        "price" => Ok(json!({"total": inv.input["qty"].as_i64().unwrap_or(0) * 5})),
        "fail" => Err(ferr("Broken", "always")),
        other => panic!("unknown function {other}"),
    }
}

fn problems(doc: Value) -> Vec<(String, ProblemKind)> {
    match load_str(&doc.to_string(), "jn.asl.json") {
        Err(AslError::Definition(ps)) => ps.into_iter().map(|p| (p.path, p.kind)).collect(),
        Err(other) => panic!("expected definition problems, got {other}"),
        Ok(_) => panic!("expected definition problems, the document loaded"),
    }
}

fn has(ps: &[(String, ProblemKind)], path: &str, kind: ProblemKind) {
    assert!(
        ps.iter().any(|(p, k)| p == path && *k == kind),
        "no {kind:?} at {path}; got {ps:?}"
    );
}

#[test]
fn arguments_from_the_developer_guide() {
    // Developer guide, "Transforming data with JSONata": with the input
    // {"title": "Doctor"} and the variable customerName = "María", the
    // Arguments give {"static": "Hello", "title": "Doctor", "name": "María",
    // "not-evaluated": "$customerName"}.
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "Init", "States": {
        "Init": {"Type": "Pass", "Assign": {"customerName": "María"}, "Next": "Call"},
        "Call": {"Type": "Task", "Resource": "echo", "End": true, "Arguments": {
            "static": "Hello",
            "title": "{% $states.input.title %}",
            "name": "{% $customerName %}",
            "not-evaluated": "$customerName"
        }}
    }});
    let r = run_with(&doc, json!({"title": "Doctor"}), echo);
    let want = json!({"static": "Hello", "title": "Doctor", "name": "María", "not-evaluated": "$customerName"});
    assert_eq!(r.invocations[0].input, want);
    // Output defaults to $states.result.
    assert_eq!(output(&r), want);
}

#[test]
fn output_and_assign_see_the_values_from_state_entry() {
    // Assign is evaluated with the variables as they were when the state
    // started (so a swap works), and Output does not see the new values.
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "A", "States": {
        "A": {"Type": "Pass", "Assign": {"x": 1, "y": 2}, "Next": "B"},
        "B": {"Type": "Pass", "Assign": {"x": "{% $y %}", "y": "{% $x %}"},
              "Output": {"xBefore": "{% $x %}"}, "Next": "C"},
        "C": {"Type": "Pass", "Output": {"x": "{% $x %}", "y": "{% $y %}", "prev": "{% $states.input %}"}, "End": true}
    }});
    let r = run(&doc, json!({}));
    assert_eq!(output(&r), json!({"x": 2, "y": 1, "prev": {"xBefore": 1}}));
}

#[test]
fn task_result_output_and_context() {
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "Price", "States": {
        "Price": {"Type": "Task", "Resource": "price",
            "Arguments": {"qty": "{% $sum($states.input.items.qty) %}"},
            "Assign": {"total": "{% $states.result.total %}"},
            "Output": {"order": "{% $states.input.id %}", "state": "{% $states.context.State.Name %}",
                       "execution": "{% $states.context.Execution.Name %}"},
            "Next": "Done"},
        "Done": {"Type": "Succeed", "Output": "{% $merge([$states.input, {'total': $total}]) %}"}
    }});
    let r = run_with(
        &doc,
        json!({"id": "o-1", "items": [{"qty": 2}, {"qty": 3}]}),
        echo,
    );
    assert_eq!(r.invocations[0].input, json!({"qty": 5}));
    assert_eq!(
        output(&r),
        json!({"order": "o-1", "state": "Price", "execution": "sim", "total": 25})
    );
}

#[test]
fn choice_conditions_with_rule_output_and_assign() {
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "Check", "States": {
        "Check": {"Type": "Choice", "Choices": [
            {"Condition": "{% $states.input.n > 10 %}", "Next": "Big",
             "Assign": {"size": "big"}, "Output": {"n": "{% $states.input.n %}"}},
            {"Condition": "{% $states.input.n > 0 %}", "Next": "Small"}
        ], "Default": "Zero", "Assign": {"size": "other"}},
        "Big": {"Type": "Pass", "Output": "{% $size & ':' & $string($states.input.n) %}", "End": true},
        "Small": {"Type": "Pass", "Output": "{% $size & ':' & $string($states.input.n) %}", "End": true},
        "Zero": {"Type": "Fail", "Error": "Zero", "Cause": "{% 'n was ' & $string($states.input.n) %}"}
    }});
    assert_eq!(
        output(&run(&doc, json!({"n": 42, "extra": 1}))),
        json!("big:42")
    );
    assert_eq!(output(&run(&doc, json!({"n": 3}))), json!("other:3"));
    let (error, cause) = failure(&run(&doc, json!({"n": 0})));
    assert_eq!((error.as_str(), cause), ("Zero", json!("n was 0")));
}

#[test]
fn map_items_item_selector_and_scoped_variables() {
    // Items and ItemSelector are expressions; each iteration reads the outer
    // variables, and what it assigns stays inside the iteration.
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "Init", "States": {
        "Init": {"Type": "Pass", "Assign": {"rate": 10}, "Next": "M"},
        "M": {"Type": "Map", "Next": "After",
            "Items": "{% $states.input.orders[qty > 0] %}",
            "MaxConcurrency": "{% 2 %}",
            "ItemSelector": {"sku": "{% $states.context.Map.Item.Value.sku %}",
                             "pos": "{% $states.context.Map.Item.Index %}",
                             "qty": "{% $states.context.Map.Item.Value.qty %}"},
            "ItemProcessor": {"StartAt": "Cost", "States": {
                "Cost": {"Type": "Pass", "Assign": {"cost": "{% $states.input.qty * $rate %}"}, "Next": "Report"},
                "Report": {"Type": "Pass", "Output": {"sku": "{% $states.input.sku %}", "pos": "{% $states.input.pos %}", "cost": "{% $cost %}"}, "End": true}
            }},
            "Assign": {"lines": "{% $count($states.result) %}"},
            "Output": "{% $states.result %}"},
        "After": {"Type": "Pass", "Output": {"lines": "{% $states.input %}", "count": "{% $lines %}", "leaked": "{% $exists($cost) %}"}, "End": true}
    }});
    let r = run(
        &doc,
        json!({"orders": [{"sku": "a", "qty": 1}, {"sku": "x", "qty": 0}, {"sku": "b", "qty": 2}, {"sku": "c", "qty": 3}]}),
    );
    assert_eq!(
        output(&r),
        json!({"lines": [
            {"sku": "a", "pos": 0, "cost": 10},
            {"sku": "b", "pos": 1, "cost": 20},
            {"sku": "c", "pos": 2, "cost": 30}
        ], "count": 3, "leaked": false})
    );
}

#[test]
fn parallel_arguments_and_result() {
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "P", "States": {
        "P": {"Type": "Parallel", "End": true,
            "Arguments": {"v": "{% $states.input.v %}"},
            "Output": {"sum": "{% $sum($states.result) %}", "parts": "{% $states.result %}"},
            "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Pass", "Output": "{% $states.input.v + 1 %}", "End": true}}},
                {"StartAt": "B", "States": {"B": {"Type": "Task", "Resource": "echo", "Arguments": "{% $states.input.v * 10 %}", "End": true}}}
            ]}
    }});
    let r = run_with(&doc, json!({"v": 4}), echo);
    assert_eq!(output(&r), json!({"sum": 45, "parts": [5, 40]}));
}

#[test]
fn catch_output_and_assign_with_error_output() {
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "fail", "Next": "Never", "Catch": [
            {"ErrorEquals": ["Broken"], "Next": "Handled",
             "Assign": {"why": "{% $states.errorOutput.Cause %}"},
             "Output": {"input": "{% $states.input %}", "error": "{% $states.errorOutput.Error %}"}}
        ]},
        "Never": {"Type": "Succeed"},
        "Handled": {"Type": "Pass", "Output": "{% $merge([$states.input, {'why': $why}]) %}", "End": true}
    }});
    let r = run_with(&doc, json!({"k": 1}), echo);
    assert_eq!(
        output(&r),
        json!({"input": {"k": 1}, "error": "Broken", "why": "always"})
    );
    // Without Output, a catcher passes the error output on.
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "fail", "End": true, "Catch": [
            {"ErrorEquals": ["States.ALL"], "Next": "Handled"}
        ]},
        "Handled": {"Type": "Succeed"}
    }});
    let r = run_with(&doc, json!({}), echo);
    assert_eq!(output(&r), json!({"Error": "Broken", "Cause": "always"}));
}

#[test]
fn evaluation_errors_are_query_evaluation_errors() {
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "A", "States": {
        "A": {"Type": "Pass", "Output": "{% $states.input.n + 'x' %}", "End": true}
    }});
    let (error, _) = failure(&run(&doc, json!({"n": 1})));
    assert_eq!(error, "States.QueryEvaluationError");
    // Caught like any other error.
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "echo", "Arguments": "{% $error('nope') %}", "End": true,
              "Catch": [{"ErrorEquals": ["States.QueryEvaluationError"], "Next": "H",
                         "Output": "{% $states.errorOutput.Error %}"}]},
        "H": {"Type": "Succeed"}
    }});
    let r = run_with(&doc, json!({}), echo);
    assert_eq!(output(&r), json!("States.QueryEvaluationError"));
    assert!(r.invocations.is_empty());
}

#[test]
fn wait_seconds_and_task_timeout_as_expressions() {
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "W", "States": {
        "W": {"Type": "Wait", "Seconds": "{% $states.input.delay %}", "Assign": {"waited": true}, "Next": "T"},
        "T": {"Type": "Task", "Resource": "slow", "TimeoutSeconds": "{% $states.input.delay * 2 %}", "End": true,
              "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Late",
                         "Output": {"waited": "{% $waited %}", "error": "{% $states.errorOutput.Error %}"}}]},
        "Late": {"Type": "Succeed"}
    }});
    // The function never answers: the task times out after 2 * delay s.
    let r = run_lossy(&doc, json!({"delay": 3}), |_| None);
    assert_eq!(
        output(&r),
        json!({"waited": true, "error": "States.Timeout"})
    );
    // Wait 3 s, then time out 6 s after the task started.
    let end = r.state.history.last().expect("firings").at_ms;
    assert_eq!(end, 9_000);
}

#[test]
fn a_jsonata_state_in_a_jsonpath_machine() {
    let doc = json!({"StartAt": "P", "States": {
        "P": {"Type": "Pass", "Parameters": {"v.$": "$.v"}, "Next": "J"},
        "J": {"Type": "Pass", "QueryLanguage": "JSONata", "Output": {"double": "{% $states.input.v * 2 %}"}, "End": true}
    }});
    assert_eq!(output(&run(&doc, json!({"v": 21}))), json!({"double": 42}));
}

#[test]
fn wrong_field_for_the_query_language() {
    let ps = problems(
        json!({"QueryLanguage": "JSONata", "StartAt": "A", "States": {
            "A": {"Type": "Pass", "InputPath": "$.x", "Result": 1, "Next": "B"},
            "B": {"Type": "Task", "Resource": "f", "Parameters": {"a.$": "$.a"}, "ResultPath": "$.r", "Next": "C",
                  "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.e", "Next": "C"}]},
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 1, "Next": "D"}], "Default": "D"},
            "D": {"Type": "Pass", "QueryLanguage": "JSONPath", "Next": "E"},
            "E": {"Type": "Map", "ItemsPath": "$.items", "End": true,
                  "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Pass", "OutputPath": "$.x", "End": true}}}}
        }}),
    );
    for path in [
        "States.A.InputPath",
        "States.A.Result",
        "States.B.Parameters",
        "States.B.ResultPath",
        "States.B.Catch[0].ResultPath",
        "States.C.Choices[0].Variable",
        "States.D.QueryLanguage",
        "States.E.ItemsPath",
        "States.E.ItemProcessor.States.I.OutputPath",
    ] {
        has(&ps, path, ProblemKind::WrongQueryLanguage);
    }
    let ps = problems(json!({"StartAt": "A", "States": {
        "A": {"Type": "Task", "Resource": "f", "Arguments": {"x": 1}, "Output": "{% 1 %}", "Next": "C"},
        "C": {"Type": "Choice", "Choices": [{"Condition": "{% true %}", "Next": "M"}]},
        "M": {"Type": "Map", "Items": [1], "End": true,
              "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}}
    }}));
    has(&ps, "States.A.Arguments", ProblemKind::WrongQueryLanguage);
    has(&ps, "States.A.Output", ProblemKind::WrongQueryLanguage);
    has(
        &ps,
        "States.C.Choices[0].Condition",
        ProblemKind::WrongQueryLanguage,
    );
    has(&ps, "States.M.Items", ProblemKind::WrongQueryLanguage);
}

#[test]
fn malformed_expressions_are_located() {
    let ps = problems(
        json!({"QueryLanguage": "JSONata", "StartAt": "A", "States": {
            "A": {"Type": "Pass", "Output": {"x": ["{% $states.input.( %}"]}, "Next": "B"},
            "B": {"Type": "Pass", "Assign": {"states": 1, "ok": "{% 1 + %}"}, "Next": "C"},
            "C": {"Type": "Choice", "Choices": [{"Condition": "$states.input.ok", "Next": "D"}], "Default": "D"},
            "D": {"Type": "Wait", "Seconds": "{% 1", "End": true}
        }}),
    );
    has(&ps, "States.A.Output.x[0]", ProblemKind::BadJsonata);
    has(&ps, "States.B.Assign.states", ProblemKind::Invalid);
    has(&ps, "States.B.Assign.ok", ProblemKind::BadJsonata);
    has(
        &ps,
        "States.C.Choices[0].Condition",
        ProblemKind::BadChoiceRule,
    );
    has(&ps, "States.D.Seconds", ProblemKind::BadJsonata);
}

#[test]
fn wait_timestamp_and_fail_error_as_expressions() {
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "W", "States": {
        "W": {"Type": "Wait", "Timestamp": "{% $states.input.until %}", "Next": "F"},
        "F": {"Type": "Fail", "Error": "{% 'Order.' & $states.input.code %}", "Cause": "{% $states.input %}"}
    }});
    let r = run(
        &doc,
        json!({"until": "1970-01-01T00:00:05Z", "code": "Late"}),
    );
    let (error, cause) = failure(&r);
    assert_eq!(error, "Order.Late");
    // A non-string Cause is given as its JSON text.
    let cause: Value = serde_json::from_str(cause.as_str().expect("string cause")).expect("json");
    assert_eq!(cause["code"], json!("Late"));
    assert_eq!(r.state.history.last().expect("firings").at_ms, 5_000);
    // A Timestamp expression that gives no timestamp is an evaluation error.
    let r = run(&doc, json!({"until": 5, "code": "X"}));
    assert_eq!(failure(&r).0, "States.QueryEvaluationError");
}
