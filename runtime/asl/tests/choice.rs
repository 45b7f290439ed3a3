//! Choice rules: every comparison operator and its Path form, StringMatches,
//! the Is* tests, And / Or / Not, Default, and the spec's Choice example.
mod common;
use common::*;
use serde_json::{Value, json};

/// Runs a Choice with one rule; returns whether it matched.
fn holds(rule: Value, input: Value) -> bool {
    let mut rule = rule;
    rule["Next"] = json!("Yes");
    let doc = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [rule], "Default": "No"},
        "Yes": {"Type": "Pass", "Result": true, "End": true},
        "No": {"Type": "Pass", "Result": false, "End": true}
    }});
    output(&run(&doc, input)) == json!(true)
}

#[test]
fn string_comparisons() {
    let i = json!({"s": "b", "t": "b", "u": "c", "n": 1});
    assert!(holds(
        json!({"Variable": "$.s", "StringEquals": "b"}),
        i.clone()
    ));
    assert!(!holds(
        json!({"Variable": "$.s", "StringEquals": "a"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.s", "StringLessThan": "c"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.s", "StringGreaterThan": "a"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.s", "StringLessThanEquals": "b"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.s", "StringGreaterThanEquals": "b"}),
        i.clone()
    ));
    assert!(!holds(
        json!({"Variable": "$.s", "StringGreaterThanEquals": "c"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.s", "StringEqualsPath": "$.t"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.s", "StringLessThanPath": "$.u"}),
        i.clone()
    ));
    assert!(!holds(
        json!({"Variable": "$.s", "StringGreaterThanPath": "$.u"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.u", "StringGreaterThanEqualsPath": "$.t"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.s", "StringLessThanEqualsPath": "$.t"}),
        i.clone()
    ));
    // A type mismatch is false, not an error.
    assert!(!holds(json!({"Variable": "$.n", "StringEquals": "1"}), i));
}

#[test]
fn string_matches_wildcards() {
    // Developer guide: "log-*.txt" matches "log-2024.txt"; `\*` is a
    // literal star.
    let m = |pat: &str, s: &str| {
        holds(
            json!({"Variable": "$.f", "StringMatches": pat}),
            json!({"f": s}),
        )
    };
    assert!(m("log-*.txt", "log-2024.txt"));
    assert!(!m("log-*.txt", "log-2024.txt.gz"));
    assert!(m("*", ""));
    assert!(m("a\\*b", "a*b"));
    assert!(!m("a\\*b", "axb"));
    assert!(m("(x)*", "(x)[y]"));
}

#[test]
fn numeric_comparisons() {
    let i = json!({"x": 5, "y": 5.0, "z": 7});
    assert!(holds(
        json!({"Variable": "$.x", "NumericEquals": 5}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.x", "NumericEquals": 5.0}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.x", "NumericLessThan": 6}),
        i.clone()
    ));
    assert!(!holds(
        json!({"Variable": "$.x", "NumericLessThan": 5}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.x", "NumericGreaterThan": 4.5}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.x", "NumericLessThanEquals": 5}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.x", "NumericGreaterThanEquals": 5}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.x", "NumericEqualsPath": "$.y"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.x", "NumericLessThanPath": "$.z"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.z", "NumericGreaterThanPath": "$.x"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.x", "NumericLessThanEqualsPath": "$.y"}),
        i.clone()
    ));
    assert!(!holds(
        json!({"Variable": "$.x", "NumericGreaterThanEqualsPath": "$.z"}),
        i
    ));
    assert!(!holds(
        json!({"Variable": "$.s", "NumericEquals": 1}),
        json!({"s": "1"})
    ));
}

#[test]
fn boolean_comparisons() {
    let i = json!({"b": true, "c": true, "d": false});
    assert!(holds(
        json!({"Variable": "$.b", "BooleanEquals": true}),
        i.clone()
    ));
    assert!(!holds(
        json!({"Variable": "$.d", "BooleanEquals": true}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.b", "BooleanEqualsPath": "$.c"}),
        i.clone()
    ));
    assert!(!holds(
        json!({"Variable": "$.b", "BooleanEqualsPath": "$.d"}),
        i
    ));
}

#[test]
fn timestamp_comparisons_respect_offsets_and_fractions() {
    let i = json!({"t": "2016-03-14T01:59:00Z", "same": "2016-03-14T02:59:00+01:00", "later": "2016-03-14T01:59:00.5Z"});
    assert!(holds(
        json!({"Variable": "$.t", "TimestampEquals": "2016-03-14T01:59:00Z"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.t", "TimestampEqualsPath": "$.same"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.t", "TimestampLessThanPath": "$.later"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.t", "TimestampLessThan": "2016-03-14T02:00:00Z"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.t", "TimestampGreaterThan": "2016-03-14T01:58:59Z"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.t", "TimestampLessThanEquals": "2016-03-14T01:59:00Z"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.t", "TimestampGreaterThanEquals": "2016-03-14T01:59:00Z"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.later", "TimestampGreaterThanPath": "$.t"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.t", "TimestampLessThanEqualsPath": "$.same"}),
        i.clone()
    ));
    assert!(holds(
        json!({"Variable": "$.t", "TimestampGreaterThanEqualsPath": "$.same"}),
        i
    ));
    // Not a timestamp: false.
    assert!(!holds(
        json!({"Variable": "$.x", "TimestampEquals": "2016-03-14T01:59:00Z"}),
        json!({"x": "yesterday"})
    ));
}

#[test]
fn type_tests() {
    let i = json!({"n": null, "num": 1.5, "s": "x", "b": false, "ts": "2024-01-01T00:00:00Z"});
    for (op, var, want) in [
        ("IsNull", "$.n", true),
        ("IsNull", "$.s", false),
        ("IsNumeric", "$.num", true),
        ("IsNumeric", "$.s", false),
        ("IsString", "$.s", true),
        ("IsString", "$.ts", true),
        ("IsBoolean", "$.b", true),
        ("IsBoolean", "$.n", false),
        ("IsTimestamp", "$.ts", true),
        ("IsTimestamp", "$.s", false),
        ("IsPresent", "$.n", true),
        ("IsPresent", "$.nope", false),
    ] {
        assert_eq!(
            holds(json!({"Variable": var, op: true}), i.clone()),
            want,
            "{op} {var}"
        );
        assert_eq!(
            holds(json!({"Variable": var, op: false}), i.clone()),
            !want,
            "{op}=false {var}"
        );
    }
}

#[test]
fn spec_choice_example_with_and_not_and_default() {
    // ASL spec, "Choice State" example.
    let doc = json!({"StartAt": "ChoiceStateX", "States": {
        "ChoiceStateX": {"Type": "Choice", "Choices": [
            {"Not": {"Variable": "$.type", "StringEquals": "Private"}, "Next": "Public"},
            {"And": [
                {"Variable": "$.value", "IsPresent": true},
                {"Variable": "$.value", "IsNumeric": true},
                {"Variable": "$.value", "NumericGreaterThanEquals": 20},
                {"Variable": "$.value", "NumericLessThan": 30}
            ], "Next": "ValueInTwenties"},
            {"Or": [
                {"Variable": "$.value", "NumericEquals": 1},
                {"Variable": "$.value", "NumericEquals": 2}
            ], "Next": "Small"}
        ], "Default": "DefaultState"},
        "Public": {"Type": "Pass", "Result": "Public", "End": true},
        "ValueInTwenties": {"Type": "Pass", "Result": "ValueInTwenties", "End": true},
        "Small": {"Type": "Pass", "Result": "Small", "End": true},
        "DefaultState": {"Type": "Fail", "Error": "DefaultStateError", "Cause": "No Matches!"}
    }});
    assert_eq!(
        output(&run(&doc, json!({"type": "Public", "value": 3}))),
        json!("Public")
    );
    assert_eq!(
        output(&run(&doc, json!({"type": "Private", "value": 22}))),
        json!("ValueInTwenties")
    );
    assert_eq!(
        output(&run(&doc, json!({"type": "Private", "value": 2}))),
        json!("Small")
    );
    let (error, cause) = failure(&run(&doc, json!({"type": "Private", "value": 40})));
    assert_eq!(error, "DefaultStateError");
    assert_eq!(cause, json!("No Matches!"));
}

#[test]
fn choice_applies_input_and_output_path_and_loops() {
    // A counting loop: Choice -> Pass (increment) -> Choice.
    let doc = json!({"StartAt": "Check", "States": {
        "Check": {"Type": "Choice", "Choices": [{"Variable": "$.i", "NumericLessThan": 3, "Next": "Inc"}], "Default": "Done"},
        "Inc": {"Type": "Pass", "Parameters": {"i.$": "States.MathAdd($.i, 1)"}, "Next": "Check"},
        "Done": {"Type": "Pass", "InputPath": "$.i", "End": true}
    }});
    assert_eq!(output(&run(&doc, json!({"i": 0}))), json!(3));
    let doc = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "InputPath": "$.inner", "OutputPath": "$.keep",
              "Choices": [{"Variable": "$.flag", "BooleanEquals": true, "Next": "E"}]},
        "E": {"Type": "Succeed"}
    }});
    assert_eq!(
        output(&run(&doc, json!({"inner": {"flag": true, "keep": [1]}}))),
        json!([1])
    );
}

#[test]
fn no_match_without_default_fails_with_no_choice_matched() {
    let doc = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "E"}]},
        "E": {"Type": "Succeed"}
    }});
    assert_eq!(
        failure(&run(&doc, json!({"x": 2}))).0,
        "States.NoChoiceMatched"
    );
}

#[test]
fn comparing_a_missing_variable_is_a_runtime_error() {
    let doc = json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": 1, "Next": "E"}], "Default": "E"},
        "E": {"Type": "Succeed"}
    }});
    assert_eq!(failure(&run(&doc, json!({}))).0, "States.Runtime");
}
