//! Load-time validation: every problem reported at once, each with its
//! JSON path and kind.
use serde_json::{Value, json};
use trigflow_asl::{AslError, ProblemKind, is_asl, load_str};

fn problems(doc: Value) -> Vec<(String, ProblemKind)> {
    match load_str(&doc.to_string(), "bad.asl.json") {
        Err(AslError::Definition(ps)) => {
            assert!(ps.iter().all(|p| p.file == "bad.asl.json"));
            ps.into_iter().map(|p| (p.path, p.kind)).collect()
        }
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
fn transitions() {
    let ps = problems(json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "Nope"},
        "B": {"Type": "Pass"},
        "C": {"Type": "Task", "Resource": "f", "Next": "A", "End": true},
        "Check": {"Type": "Choice", "Choices": [
            {"Variable": "$.x", "NumericEquals": 1, "Next": "A"},
            {"Variable": "$.x", "NumericEquals": 2, "Next": "Missing"}
        ], "Default": "Gone"}
    }}));
    has(&ps, "States.A.Next", ProblemKind::UnknownState);
    has(&ps, "States.B", ProblemKind::MissingTransition);
    has(&ps, "States.B", ProblemKind::Unreachable);
    has(&ps, "States.C", ProblemKind::MissingTransition);
    has(
        &ps,
        "States.Check.Choices[1].Next",
        ProblemKind::UnknownState,
    );
    has(&ps, "States.Check.Default", ProblemKind::UnknownState);
    let ps = problems(json!({"StartAt": "Z", "States": {"A": {"Type": "Succeed"}}}));
    has(&ps, "StartAt", ProblemKind::UnknownState);
}

#[test]
fn branches_cannot_jump_out() {
    let ps = problems(json!({"StartAt": "P", "States": {
        "P": {"Type": "Parallel", "End": true, "Branches": [
            {"StartAt": "In", "States": {"In": {"Type": "Pass", "Next": "Out"}}}
        ]},
        "Out": {"Type": "Succeed"}
    }}));
    has(
        &ps,
        "States.P.Branches[0].States.In.Next",
        ProblemKind::UnknownState,
    );
    has(&ps, "States.Out", ProblemKind::Unreachable);
}

#[test]
fn choice_rules() {
    let ps = problems(json!({"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Choices": [
            {"Variable": "$.x", "NumericEquals": "one", "Next": "E"},
            {"Variable": "$.x", "StringEquals": "a", "NumericEquals": 1, "Next": "E"},
            {"Variable": "$.x", "Bogus": 1, "Next": "E"},
            {"And": [], "Next": "E"},
            {"Not": {"Variable": "$.x", "IsNull": true, "Next": "E"}, "Next": "E"},
            {"Variable": "$.x", "StringEquals": "a"},
            {"Variable": "$.t", "TimestampEquals": "yesterday", "Next": "E"},
            {"StringEquals": "a", "Next": "E"}
        ]},
        "E": {"Type": "Succeed"}
    }}));
    has(
        &ps,
        "States.C.Choices[0].NumericEquals",
        ProblemKind::BadChoiceRule,
    );
    has(&ps, "States.C.Choices[1]", ProblemKind::BadChoiceRule);
    has(&ps, "States.C.Choices[2].Bogus", ProblemKind::BadChoiceRule);
    has(&ps, "States.C.Choices[3].And", ProblemKind::BadChoiceRule);
    has(
        &ps,
        "States.C.Choices[4].Not.Next",
        ProblemKind::BadChoiceRule,
    );
    has(&ps, "States.C.Choices[5]", ProblemKind::BadChoiceRule);
    has(
        &ps,
        "States.C.Choices[6].TimestampEquals",
        ProblemKind::BadChoiceRule,
    );
    has(&ps, "States.C.Choices[7]", ProblemKind::BadChoiceRule);
}

#[test]
fn paths_and_intrinsics() {
    let ps = problems(
        json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "End": true,
            "InputPath": "a.b",
            "OutputPath": "$.x[?(@.y)]",
            "ResultPath": "$.items[*]",
            "Parameters": {
                "ok.$": "$.fine",
                "bad.$": "States.Nope(1)",
                "count.$": "States.Format('{} {}', $.a)",
                "n.$": 5
            }
        }}}),
    );
    has(&ps, "States.A.InputPath", ProblemKind::BadPath);
    has(&ps, "States.A.OutputPath", ProblemKind::BadPath);
    has(&ps, "States.A.ResultPath", ProblemKind::BadPath);
    has(
        &ps,
        "States.A.Parameters[\"bad.$\"]",
        ProblemKind::BadIntrinsic,
    );
    has(
        &ps,
        "States.A.Parameters[\"count.$\"]",
        ProblemKind::BadIntrinsic,
    );
    has(&ps, "States.A.Parameters[\"n.$\"]", ProblemKind::BadPath);
    assert_eq!(ps.len(), 6, "{ps:?}");
}

#[test]
fn retry_and_catch_shapes() {
    let ps = problems(json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "f", "End": true,
              "Retry": [
                {"ErrorEquals": ["States.ALL"]},
                {"ErrorEquals": [], "BackoffRate": 0.5, "MaxAttempts": -1, "Typo": 1}
              ],
              "Catch": [{"ErrorEquals": ["X"]}, {"ErrorEquals": ["States.ALL", "Y"], "Next": "E"}]},
        "E": {"Type": "Succeed"}
    }}));
    has(
        &ps,
        "States.T.Retry[0].ErrorEquals",
        ProblemKind::BadRetryCatch,
    );
    has(
        &ps,
        "States.T.Retry[1].ErrorEquals",
        ProblemKind::BadRetryCatch,
    );
    has(
        &ps,
        "States.T.Retry[1].BackoffRate",
        ProblemKind::BadRetryCatch,
    );
    has(
        &ps,
        "States.T.Retry[1].MaxAttempts",
        ProblemKind::BadRetryCatch,
    );
    has(&ps, "States.T.Retry[1].Typo", ProblemKind::BadRetryCatch);
    has(&ps, "States.T.Catch[0]", ProblemKind::BadRetryCatch);
    has(
        &ps,
        "States.T.Catch[1].ErrorEquals",
        ProblemKind::BadRetryCatch,
    );
}

#[test]
fn fields_per_state_type_and_query_language() {
    let ps = problems(json!({"StartAt": "A", "States": {
        "A": {"Type": "Pass", "Next": "B", "Resource": "f"},
        "B": {"Type": "Wait", "Next": "C"},
        "C": {"Type": "Task", "Resource": "f", "Arguments": {}, "Next": "D"},
        "D": {"Type": "Task", "Resource": "f", "Assign": {"x": 1}, "Next": "E"},
        "E": {"Type": "Teleport"}
    }}));
    has(&ps, "States.A.Resource", ProblemKind::Shape);
    has(&ps, "States.B", ProblemKind::Shape);
    has(&ps, "States.C.Arguments", ProblemKind::WrongQueryLanguage);
    has(&ps, "States.D.Assign", ProblemKind::Unsupported);
    has(&ps, "States.E.Type", ProblemKind::Shape);
    let ps = problems(
        json!({"QueryLanguage": "JSONPointer", "StartAt": "A", "States": {"A": {"Type": "Succeed"}}}),
    );
    has(&ps, "QueryLanguage", ProblemKind::Shape);
    let ps = problems(
        json!({"StartAt": "A", "States": {"My State": {"Type": "Pass", "Next": "x"}, "A": {"Type": "Succeed"}}}),
    );
    has(&ps, "States[\"My State\"].Next", ProblemKind::UnknownState);
}

#[test]
fn yaml_documents_load_like_json() {
    let yaml = r#"
Comment: as SAM users write it
StartAt: Check
States:
  Check:
    Type: Choice
    Choices:
      - Variable: $.n
        NumericGreaterThan: 1
        Next: Big
    Default: Small
  Big: {Type: Pass, Result: big, End: true}
  Small: {Type: Pass, Result: small, End: true}
"#;
    let loaded = load_str(yaml, "machine.asl.yaml").expect("load");
    assert_eq!(loaded.workflow.id.as_str(), "machine");
    assert!(loaded.graph.mermaid().contains("rule 0"));
    let err = load_str("StartAt: [", "broken.yaml").expect_err("syntax");
    assert!(matches!(err, AslError::Syntax { .. }), "{err}");
    let err = load_str("{\"StartAt\": ", "broken.json").expect_err("syntax");
    assert!(matches!(err, AslError::Syntax { line: 1, .. }), "{err}");
}

#[test]
fn is_asl_tells_documents_apart() {
    assert!(is_asl(&json!({"StartAt": "A", "States": {}})));
    assert!(!is_asl(&json!({"dag": "x", "tasks": {}})));
    assert!(!is_asl(&json!({"triggers": []})));
    assert!(!is_asl(&json!([1])));
}

#[test]
fn problems_display_file_and_path() {
    let err = load_str(
        &json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}).to_string(),
        "m.json",
    )
    .expect_err("bad");
    assert_eq!(
        err.to_string(),
        "m.json: at States.A.Next: names no state in this machine: \"B\""
    );
}
