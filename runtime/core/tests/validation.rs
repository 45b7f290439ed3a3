//! Definition validation: each problem is a `DefinitionError` whose `path`
//! points at the offending value.

mod common;

use common::*;
use serde_json::{Value, json};
use trigflow_core::Engine;
use trigflow_core::engine::EngineError;
use trigflow_core::model::DefinitionError;

fn errors_of(triggers: Value) -> Vec<DefinitionError> {
    wf(json!({"id": "w", "triggers": triggers}))
        .validate()
        .expect_err("the definition is invalid")
}

fn paths(errors: &[DefinitionError]) -> Vec<&str> {
    errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn a_valid_definition_passes() {
    let w = wf(json!({"id": "w", "triggers": [
        {"id": "a", "condition": {"kind": "join", "count": {"from": ".context.n"}},
         "actions": [{"kind": "invoke", "function": "inproc:f", "foreach": ".x", "input": ".item"}]},
        {"id": "b", "condition": {"kind": "quorum", "k": 3, "m": 3}},
        {"id": "c", "condition": {"kind": "expr", "expr": ".event.data | length > 2"}}
    ]}));
    assert_eq!(w.validate(), Ok(()));
    assert_eq!(Engine::new().validate(&w), Ok(()));
}

#[test]
fn duplicate_trigger_ids_point_at_the_second_one() {
    let errs = errors_of(json!([{"id": "a"}, {"id": "b"}, {"id": "a"}]));
    assert_eq!(paths(&errs), vec!["triggers[2].id"]);
    assert!(
        errs[0].message.contains("triggers[0]"),
        "{}",
        errs[0].message
    );
}

#[test]
fn bad_jq_is_located_in_conditions_and_actions() {
    let errs = errors_of(json!([
        {"id": "a", "condition": {"kind": "expr", "expr": ".a | ]"}},
        {"id": "b", "condition": {"kind": "join", "count": {"from": "nosuchfn(1)"}}},
        {"id": "c", "condition": {"kind": "threshold", "value": ".x +", "op": "gt", "threshold": 1}},
        {"id": "d", "actions": [
            {"kind": "set_context", "key": "k", "value": "1"},
            {"kind": "invoke", "function": "f", "input": "{", "foreach": ".[] |"}
        ]},
        {"id": "e", "on_failure": [{"kind": "choose",
            "branches": [{"when": "(", "then": [{"kind": "complete", "output": "]"}]}],
            "otherwise": [{"kind": "emit", "events": [{"type": "t", "data": ".."}, {"type": "u", "data": "..."}]}]}]},
        {"id": "f", "actions": [{"kind": "timer", "delay_ms": 1, "event": {"type": "t", "data": "$undefined"}},
                                {"kind": "fail", "error": "E", "cause": "}"}]}
    ]));
    assert_eq!(
        paths(&errs),
        vec![
            "triggers[0].condition.expr",
            "triggers[1].condition.count.from",
            "triggers[2].condition.value",
            "triggers[3].actions[1].input",
            "triggers[3].actions[1].foreach",
            "triggers[4].on_failure[0].branches[0].when",
            "triggers[4].on_failure[0].branches[0].then[0].output",
            "triggers[4].on_failure[0].otherwise[0].events[1].data",
            "triggers[5].actions[0].event.data",
            "triggers[5].actions[1].cause",
        ]
    );
}

#[test]
fn join_of_zero_events_is_rejected() {
    let errs = errors_of(json!([{"id": "j", "condition": {"kind": "join", "count": 0}}]));
    assert_eq!(paths(&errs), vec!["triggers[0].condition.count"]);
}

#[test]
fn quorum_needs_one_to_m_successes() {
    let errs = errors_of(json!([
        {"id": "ok", "condition": {"kind": "quorum", "k": 1, "m": 1}},
        {"id": "over", "condition": {"kind": "quorum", "k": 4, "m": 3}},
        {"id": "zero", "condition": {"kind": "quorum", "k": 0, "m": 3}}
    ]));
    assert_eq!(
        paths(&errs),
        vec!["triggers[1].condition", "triggers[2].condition"]
    );
    assert!(errs[0].message.contains("k=4"), "{}", errs[0].message);
}

#[test]
fn window_of_zero_events_is_rejected() {
    let errs = errors_of(
        json!([{"id": "w", "condition": {"kind": "window", "count": 0, "within_ms": 10}}]),
    );
    assert_eq!(paths(&errs), vec!["triggers[0].condition.count"]);
}

#[test]
fn triggers_inside_add_triggers_are_validated_with_their_own_path() {
    let errs = errors_of(json!([
        {"id": "outer", "actions": [
            {"kind": "emit", "events": []},
            {"kind": "add_triggers", "triggers": [
                {"id": "x", "condition": {"kind": "quorum", "k": 5, "m": 2}},
                {"id": "x", "actions": [{"kind": "complete", "output": "{"}]}
            ]}
        ]}
    ]));
    assert_eq!(
        paths(&errs),
        vec![
            "triggers[0].actions[1].triggers[0].condition",
            "triggers[0].actions[1].triggers[1].id",
            "triggers[0].actions[1].triggers[1].actions[0].output",
        ]
    );
}

#[test]
fn every_problem_is_reported_at_once_and_start_refuses_the_workflow() {
    let w = wf(json!({"id": "w", "triggers": [
        {"id": "a", "condition": {"kind": "join", "count": 0}},
        {"id": "a", "condition": {"kind": "custom", "name": "missing"}}
    ]}));
    match Engine::new().start(&w, exec_id(), json!(null), 0) {
        Err(EngineError::Definition(errs)) => assert_eq!(
            paths(&errs),
            vec![
                "triggers[0].condition.count",
                "triggers[1].id",
                "triggers[1].condition.name"
            ]
        ),
        other => panic!("expected a definition error, got {other:?}"),
    }
}

#[test]
fn unregistered_custom_conditions_in_added_triggers_are_found_at_start() {
    let w = wf(json!({"id": "w", "triggers": [
        {"id": "a", "on_failure": [{"kind": "add_triggers", "triggers": [
            {"id": "b", "condition": {"kind": "custom", "name": "later"}}]}]}
    ]}));
    let errs = Engine::new().validate(&w).expect_err("unregistered");
    assert_eq!(
        paths(&errs),
        vec!["triggers[0].on_failure[0].triggers[0].condition.name"]
    );
    let engine = Engine::new().with_condition("later", |_, _| Ok(true));
    assert_eq!(engine.validate(&w), Ok(()));
}

/// Triggers added from inside a `choose` are not reached by definition
/// validation, so the engine checks added triggers when it installs them:
/// an invalid one fails the execution instead of corrupting it (a quorum
/// with k > m used to underflow `m - k` and panic on its first failure).
#[test]
fn invalid_triggers_nested_in_choose_are_rejected_before_start() {
    for (bad, field) in [
        (
            json!({"id": "q", "on": {"subjects": ["v"]}, "condition": {"kind": "quorum", "k": 3, "m": 1}}),
            "condition",
        ),
        (
            json!({"id": "q", "on": {"subjects": ["v"]}, "condition": {"kind": "expr", "expr": ".a | ]"}}),
            "condition.expr",
        ),
        (
            json!({"id": "q", "on": {"subjects": ["v"]}, "condition": {"kind": "custom", "name": "nobody"}}),
            "condition.name",
        ),
    ] {
        let w = wf(json!({"id": "w", "triggers": [
            {"id": "arm", "on": {"subjects": ["arm"]},
             "actions": [{"kind": "choose", "branches": [{"when": "true",
                 "then": [{"kind": "add_triggers", "triggers": [bad.clone()]}]}]}]}
        ]}));
        let errors = Engine::new()
            .validate(&w)
            .expect_err("nested bad trigger must be found");
        let want = format!("triggers[0].actions[0].branches[0].then[0].triggers[0].{field}");
        assert!(errors.iter().any(|e| e.path == want), "{bad}: {errors:?}");
    }
}
