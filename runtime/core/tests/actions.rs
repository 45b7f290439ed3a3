//! Every action kind, driven through `Engine` directly and through
//! `sim::run` where a whole run reads better.

mod common;

use cloudevents::AttributesReader;
use common::*;
use serde_json::{Value, json};
use trigflow_core::event::{EXT_EXECUTION, data_json, event_json};
use trigflow_core::state::{Effect, ExecutionStatus};
use trigflow_core::{Engine, EventOutcome, sim};

fn tid(s: &str) -> trigflow_core::ids::TriggerId {
    s.parse().expect("trigger id")
}

/// Asserts the execution failed with `trigflow.ActionFailed` raised by
/// `trigger`, and returns the message.
fn action_failed(status: &ExecutionStatus, trigger: &str) -> String {
    match status {
        ExecutionStatus::Failed { error, cause } => {
            assert_eq!(error, "trigflow.ActionFailed");
            assert_eq!(cause["trigger"], json!(trigger));
            cause["message"].as_str().unwrap_or_default().to_owned()
        }
        other => panic!("expected ActionFailed, got {other:?}"),
    }
}

// ---------------------------------------------------------------- invoke

#[test]
fn invoke_evaluates_its_input_expression_and_fills_every_field() {
    let w = wf(json!({
        "id": "thumbs",
        "context": {"size": 128},
        "triggers": [{"id": "go", "on": {"types": ["trigflow.execution.started"]},
                      "actions": [{"kind": "invoke", "function": "arn:aws:lambda:eu-west-1:1:function:resize",
                                   "input": "{url: .event.data.url, size: .context.size}"}]}]
    }));
    let s = start(&w, json!({"url": "s3://b/k.png"}));
    let invs = invocations(&s);
    assert_eq!(invs.len(), 1);
    let inv = &invs[0];
    assert_eq!(inv.function, "arn:aws:lambda:eu-west-1:1:function:resize");
    assert_eq!(inv.input, json!({"url": "s3://b/k.png", "size": 128}));
    assert_eq!(inv.step, "go", "the step defaults to the trigger id");
    assert_eq!(inv.trigger, tid("go"));
    assert_eq!(inv.execution.as_str(), "e1");
    assert_eq!(inv.workflow.as_str(), "thumbs");
    assert_eq!(inv.index, None);
    assert_eq!(inv.attempt, 1);
    assert_eq!(inv.key, "e1/0");
    assert_eq!(
        s.outbox[0].key, inv.key,
        "the outbox entry carries the same key"
    );
}

#[test]
fn invoke_input_defaults_to_the_event_data() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "go", "on": {"types": ["trigflow.execution.started"]},
                      "actions": [{"kind": "invoke", "function": "inproc:f"}]}]
    }));
    let s = start(&w, json!({"a": [1, 2]}));
    assert_eq!(invocations(&s)[0].input, json!({"a": [1, 2]}));
}

#[test]
fn invoke_step_names_the_subject_of_its_result_events() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "go", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:f", "step": "resize"}]},
            {"id": "on-default", "on": {"subjects": ["go"]},
             "actions": [{"kind": "fail", "error": "WrongSubject"}]},
            {"id": "on-step", "on": {"subjects": ["resize"], "types": ["trigflow.function.succeeded"]},
             "actions": [{"kind": "complete", "output": "{subject: .event.subject, data: .event.data}"}]}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let inv = invocations(&s).remove(0);
    assert_eq!(inv.step, "resize");
    let done = succeeded(&inv, json!("ok"));
    assert_eq!(done.subject(), Some("resize"));
    assert_eq!(done.id(), inv.key);
    engine.apply(&mut s, &[done], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!({"subject": "resize", "data": "ok"})
        }
    );
}

#[test]
fn invoke_result_subject_defaults_to_the_trigger_id() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "go", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:f"}]},
            {"id": "after", "on": {"subjects": ["go"]},
             "actions": [{"kind": "complete"}]}
        ]
    }));
    let run = sim::run(
        &Engine::new(),
        &w,
        json!(3),
        |inv| Ok(json!(inv.input.as_i64().unwrap_or(0) + 1)),
        10,
    )
    .expect("runs");
    assert_eq!(
        run.state.status,
        ExecutionStatus::Succeeded { output: json!(4) }
    );
}

#[test]
fn foreach_invokes_once_per_item_with_item_and_index_bound() {
    let w = wf(json!({
        "id": "w",
        "context": {"prefix": "p"},
        "triggers": [{"id": "map", "on": {"types": ["trigflow.execution.started"]},
                      "actions": [
                        {"kind": "invoke", "function": "inproc:f", "step": "m",
                         "foreach": ".event.data", "input": "{i: .index, v: .item, p: .context.prefix}"},
                        {"kind": "invoke", "function": "inproc:g", "foreach": ".event.data | map(. * 2)"}
                      ]}]
    }));
    let s = start(&w, json!([10, 20, 30]));
    let invs = invocations(&s);
    let f: Vec<_> = invs.iter().filter(|i| i.function == "inproc:f").collect();
    assert_eq!(
        f.iter().map(|i| i.input.clone()).collect::<Vec<_>>(),
        vec![
            json!({"i": 0, "v": 10, "p": "p"}),
            json!({"i": 1, "v": 20, "p": "p"}),
            json!({"i": 2, "v": 30, "p": "p"}),
        ]
    );
    assert_eq!(
        f.iter().map(|i| i.index).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2)]
    );
    assert!(f.iter().all(|i| i.step == "m"));
    let g: Vec<_> = invs.iter().filter(|i| i.function == "inproc:g").collect();
    assert_eq!(
        g.iter().map(|i| i.input.clone()).collect::<Vec<_>>(),
        vec![json!(20), json!(40), json!(60)],
        "the input defaults to the item"
    );
    // Keys are distinct and sequential across both actions.
    let keys = outbox_keys(&s);
    assert_eq!(keys, (0..6).map(|n| format!("e1/{n}")).collect::<Vec<_>>());
}

#[test]
fn foreach_results_are_joined_in_index_order_whatever_the_arrival_order() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "map", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:upper", "step": "up",
                          "foreach": ".event.data", "count_into": "n"}]},
            {"id": "reduce", "on": {"subjects": ["up"]},
             "condition": {"kind": "join", "count": {"from": ".context.n"}},
             "actions": [{"kind": "complete", "output": "[.trigger.results[]] | join(\"\")"}]}
        ]
    }));
    let engine = Engine::new();
    // 12 items so that a plain (non-padded) string sort would put 10 before 2.
    let letters: Vec<String> = "abcdefghijkl".chars().map(String::from).collect();
    let mut s = start_with(&engine, &w, json!(letters));
    let invs = invocations(&s);
    let order = [7usize, 11, 0, 3, 10, 1, 9, 2, 5, 8, 4, 6];
    let events: Vec<_> = order
        .iter()
        .map(|&i| {
            succeeded(
                &invs[i],
                json!(invs[i].input.as_str().unwrap_or("").to_uppercase()),
            )
        })
        .collect();
    engine.apply(&mut s, &events, 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!("ABCDEFGHIJKL")
        }
    );
}

#[test]
fn foreach_over_a_non_array_fails_the_execution() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "map", "on": {"types": ["trigflow.execution.started"]},
                      "actions": [{"kind": "invoke", "function": "inproc:f", "foreach": ".event.data"}]}]
    }));
    let s = start(&w, json!({"not": "a list"}));
    let msg = action_failed(&s.status, "map");
    assert!(msg.contains("not an array"), "{msg}");
    assert!(invocations(&s).is_empty());
}

#[test]
fn a_failing_input_expression_fails_the_execution_with_action_failed() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "go", "on": {"types": ["trigflow.execution.started"]},
                      "actions": [{"kind": "invoke", "function": "inproc:f", "input": ".event.data + 1"}]}]
    }));
    let s = start(&w, json!("text"));
    action_failed(&s.status, "go");
    assert!(invocations(&s).is_empty());
}

// ---------------------------------------------------------------- emit

#[test]
fn emit_publishes_events_of_this_execution() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "tell", "on": {"subjects": ["x"]},
                      "actions": [{"kind": "emit", "events": [
                          {"type": "app.ready", "subject": "part/1", "data": "{v: .event.data}"},
                          {"type": "app.bare"}
                      ]}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(&mut s, &[ev("1", "x", json!(7))], 0);
    let evs = published(&s);
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0].ty(), "app.ready");
    assert_eq!(evs[0].subject(), Some("part/1"));
    assert_eq!(evs[0].source().to_string(), "trigflow/e1");
    assert_eq!(evs[0].id(), "e1/0");
    assert_eq!(data_json(&evs[0]), json!({"v": 7}));
    assert_eq!(event_json(&evs[0])[EXT_EXECUTION], json!("e1"));
    assert_eq!(evs[1].ty(), "app.bare");
    assert_eq!(evs[1].subject(), None);
    assert_eq!(data_json(&evs[1]), Value::Null);
    assert_eq!(outbox_keys(&s), vec!["e1/0", "e1/1"]);
}

#[test]
fn emitted_events_drive_other_triggers_in_a_run() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "a", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "emit", "events": [
                 {"type": "trigflow.data.ready", "subject": "chunk", "data": ".event.data * 2"}]}]},
            {"id": "b", "on": {"subjects": ["chunk"], "types": ["trigflow.data.ready"]},
             "actions": [{"kind": "complete", "output": ".event.data + 1"}]}
        ]
    }));
    let run = sim::run(&Engine::new(), &w, json!(20), |_| Ok(Value::Null), 10).expect("runs");
    assert_eq!(
        run.state.status,
        ExecutionStatus::Succeeded { output: json!(41) }
    );
    assert!(run.invocations.is_empty());
}

// ---------------------------------------------------------------- set_context

#[test]
fn set_context_creates_nested_objects_along_a_dotted_path() {
    let w = wf(json!({
        "id": "w",
        "context": {"a": {"keep": true}},
        "triggers": [{"id": "s", "on": {"subjects": ["x"]},
                      "actions": [
                        {"kind": "set_context", "key": "a.b.c", "value": ".event.data"},
                        {"kind": "set_context", "key": "top", "value": ".context.a.b.c * 10"}
                      ]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!({"in": 1}));
    engine.apply(&mut s, &[ev("1", "x", json!(4))], 0);
    assert_eq!(
        s.context,
        json!({"a": {"keep": true, "b": {"c": 4}}, "input": {"in": 1}, "top": 40}),
        "later actions see earlier context updates"
    );
    assert_eq!(s.status, ExecutionStatus::Running);
}

#[test]
fn set_context_inside_a_non_object_fails_the_execution() {
    for key in ["a.b", "input.x.y", "a..b"] {
        let w = wf(json!({
            "id": "w",
            "context": {"a": 1},
            "triggers": [{"id": "s", "on": {"subjects": ["x"]},
                          "actions": [{"kind": "set_context", "key": key, "value": "2"}]}]
        }));
        let engine = Engine::new();
        let mut s = start_with(&engine, &w, json!([1]));
        let out = engine.apply(&mut s, &[ev("1", "x", json!(null))], 0);
        assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }], "{key}");
        let msg = action_failed(&s.status, "s");
        assert!(msg.contains(key), "{key}: {msg}");
        assert_eq!(s.context["a"], json!(1), "{key}");
    }
}

// ---------------------------------------------------------------- add / remove triggers

#[test]
fn add_triggers_installs_a_trigger_that_fires_on_later_events() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "setup", "on": {"types": ["trigflow.execution.started"]},
                      "actions": [{"kind": "add_triggers", "triggers": [
                          {"id": "dyn", "on": {"subjects": ["late/*"]},
                           "condition": {"kind": "join", "count": 2},
                           "actions": [{"kind": "complete", "output": ".trigger.results"}]}]}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    assert!(s.triggers.contains_key(&tid("dyn")));
    assert!(!s.triggers.contains_key(&tid("setup")));
    engine.apply(
        &mut s,
        &[
            event("t", "1", "x", Some("late/a"), json!(1)),
            event("t", "2", "x", None, json!(2)),
        ],
        0,
    );
    assert_eq!(
        s.status,
        ExecutionStatus::Running,
        "the subject-less event does not match"
    );
    assert_eq!(s.triggers[&tid("dyn")].cond.count, 1);
    engine.apply(&mut s, &[event("u", "1", "x", Some("late/b"), json!(3))], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!({"late/a": 1, "late/b": 3})
        }
    );
}

#[test]
fn add_triggers_with_an_existing_id_fails_the_execution() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "setup", "on": {"subjects": ["x"]},
             "actions": [{"kind": "add_triggers", "triggers": [{"id": "keep", "on": {"subjects": ["y"]}}]}]},
            {"id": "keep", "on": {"subjects": ["z"]}}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(&mut s, &[ev("1", "x", json!(null))], 0);
    let msg = action_failed(&s.status, "setup");
    assert!(msg.contains("keep"), "{msg}");
    assert_eq!(
        s.triggers[&tid("keep")].spec.on.subjects,
        vec!["z".to_owned()],
        "the existing trigger is untouched"
    );
}

#[test]
fn a_transient_trigger_may_rearm_itself_under_its_own_id() {
    let again = json!({"id": "tick", "on": {"subjects": ["t"]},
                       "actions": [{"kind": "set_context", "key": "n", "value": ".context.n + 1"}]});
    let w = wf(json!({
        "id": "w",
        "context": {"n": 0},
        "triggers": [{"id": "tick", "on": {"subjects": ["t"]},
                      "actions": [{"kind": "set_context", "key": "n", "value": ".context.n + 1"},
                                  {"kind": "add_triggers", "triggers": [again]}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(
        &mut s,
        &[
            ev("1", "t", json!(null)),
            ev("2", "t", json!(null)),
            ev("3", "t", json!(null)),
        ],
        0,
    );
    // Fired by 1 (re-adds), by 2 (the re-added one, which does not re-add), not by 3.
    assert_eq!(s.context["n"], json!(2));
    assert_eq!(s.status, ExecutionStatus::Running);
}

#[test]
fn remove_triggers_uninstalls_and_ignores_unknown_ids() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "cancel", "on": {"subjects": ["cancel"]},
             "actions": [{"kind": "remove_triggers", "ids": ["work", "ghost"]}]},
            {"id": "work", "on": {"subjects": ["job"]}, "lifetime": "persistent",
             "actions": [{"kind": "invoke", "function": "inproc:work"}]}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(
        &mut s,
        &[
            ev("1", "job", json!(1)),
            ev("2", "cancel", json!(null)),
            ev("3", "job", json!(2)),
        ],
        0,
    );
    assert_eq!(s.status, ExecutionStatus::Running);
    assert!(s.triggers.is_empty());
    let inputs: Vec<_> = invocations(&s).into_iter().map(|i| i.input).collect();
    assert_eq!(inputs, vec![json!(1)]);
}

// ---------------------------------------------------------------- timer

#[test]
fn timer_schedules_its_event_at_now_plus_delay() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "wait", "on": {"subjects": ["x"]},
                      "actions": [
                        {"kind": "timer", "delay_ms": 250,
                         "event": {"type": "trigflow.timer.fired", "subject": "timeout", "data": "{after: .event.data}"}},
                        {"kind": "timer", "delay_ms": u64::MAX, "event": {"type": "app.never"}}
                      ]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(&mut s, &[ev("1", "x", json!("x"))], 1_000);
    let timers: Vec<_> = s
        .outbox
        .iter()
        .filter_map(|p| match &p.effect {
            Effect::Timer { fire_at_ms, event } => {
                Some((p.key.clone(), *fire_at_ms, event.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(timers.len(), 2);
    let (key, at, e) = &timers[0];
    assert_eq!(*at, 1_250);
    assert_eq!(key, e.id());
    assert_eq!(e.ty(), "trigflow.timer.fired");
    assert_eq!(e.subject(), Some("timeout"));
    assert_eq!(data_json(e), json!({"after": "x"}));
    assert_eq!(
        timers[1].1,
        i64::MAX,
        "a huge delay saturates instead of wrapping"
    );
}

#[test]
fn a_timer_races_a_slow_function_in_a_run() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "go", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:slow", "step": "work"},
                         {"kind": "timer", "delay_ms": 5000,
                          "event": {"type": "trigflow.timer.fired", "subject": "deadline"}}]},
            {"id": "got", "on": {"subjects": ["work"]},
             "actions": [{"kind": "set_context", "key": "result", "value": ".event.data"}]},
            {"id": "deadline", "on": {"subjects": ["deadline"]},
             "actions": [{"kind": "complete", "output": "{result: .context.result}"}]}
        ]
    }));
    let run = sim::run(&Engine::new(), &w, json!(null), |_| Ok(json!("late")), 10).expect("runs");
    assert_eq!(
        run.state.status,
        ExecutionStatus::Succeeded {
            output: json!({"result": "late"})
        }
    );
    let last = run.state.history.last().expect("fired");
    assert_eq!(last.trigger, tid("deadline"));
    assert_eq!(last.at_ms, 5000, "the simulated clock jumped to the timer");
}

// ---------------------------------------------------------------- choose

fn choose_output(data: Value) -> ExecutionStatus {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "route", "on": {"subjects": ["x"]},
                      "actions": [{"kind": "choose",
                                   "branches": [
                                       {"when": ".event.data > 100", "then": [{"kind": "complete", "output": "\"big\""}]},
                                       {"when": ".event.data > 10", "then": [{"kind": "complete", "output": "\"medium\""}]},
                                       {"when": ".event.data > 0", "then": [
                                           {"kind": "set_context", "key": "small", "value": "true"},
                                           {"kind": "complete", "output": "\"small\""}]}
                                   ],
                                   "otherwise": [{"kind": "fail", "error": "NotPositive", "cause": "{got: .event.data}"}]}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(&mut s, &[ev("1", "x", data)], 0);
    s.status
}

#[test]
fn choose_runs_the_first_true_branch_else_otherwise() {
    let done = |s: &str| ExecutionStatus::Succeeded { output: json!(s) };
    assert_eq!(
        choose_output(json!(500)),
        done("big"),
        "first of several true branches"
    );
    assert_eq!(choose_output(json!(50)), done("medium"));
    assert_eq!(choose_output(json!(5)), done("small"));
    assert_eq!(
        choose_output(json!(-5)),
        ExecutionStatus::Failed {
            error: "NotPositive".into(),
            cause: json!({"got": -5})
        }
    );
}

#[test]
fn choose_with_no_true_branch_and_no_otherwise_does_nothing() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "route", "on": {"subjects": ["x"]},
                      "actions": [{"kind": "choose", "branches": [{"when": "false", "then": [{"kind": "complete"}]}]},
                                  {"kind": "set_context", "key": "after", "value": "1"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(&mut s, &[ev("1", "x", json!(null))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    assert_eq!(s.status, ExecutionStatus::Running);
    assert_eq!(
        s.context["after"],
        json!(1),
        "actions after the choose still run"
    );
}

// ---------------------------------------------------------------- complete / fail

#[test]
fn complete_evaluates_its_output_expression_or_defaults_to_the_event_data() {
    let w = wf(json!({
        "id": "w",
        "context": {"k": "v"},
        "triggers": [{"id": "a", "on": {"subjects": ["a"]},
                      "actions": [{"kind": "complete", "output": "{k: .context.k, d: .event.data, t: .trigger.id}"}]},
                     {"id": "b", "on": {"subjects": ["b"]}, "actions": [{"kind": "complete"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(&mut s, &[ev("1", "a", json!([1]))], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!({"k": "v", "d": [1], "t": "a"})
        }
    );

    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(&mut s, &[ev("1", "b", json!({"x": 1}))], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!({"x": 1})
        }
    );
}

#[test]
fn fail_sets_the_error_and_cause() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "f", "on": {"subjects": ["step"], "types": ["trigflow.function.failed"]},
                      "actions": [{"kind": "fail", "error": "StepFailed", "cause": ".event.data.error"}]},
                     {"id": "g", "on": {"subjects": ["other"]}, "actions": [{"kind": "fail", "error": "Other"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let failure = event(
        "fn",
        "1",
        "trigflow.function.failed",
        Some("step"),
        json!({"error": "Timeout", "cause": "30s"}),
    );
    engine.apply(&mut s, &[failure], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Failed {
            error: "StepFailed".into(),
            cause: json!("Timeout")
        }
    );

    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(&mut s, &[ev("1", "other", json!({"why": 1}))], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Failed {
            error: "Other".into(),
            cause: json!({"why": 1})
        }
    );
}

#[test]
fn fail_takes_its_error_name_from_an_expression_with_a_literal_fallback() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "f", "on": {"subjects": ["step"]},
                      "actions": [{"kind": "fail", "error": "Fallback", "error_from": ".event.data.name",
                                   "cause": ".event.data.why"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(
        &mut s,
        &[ev(
            "1",
            "step",
            json!({"name": "States.TaskFailed", "why": "boom"}),
        )],
        0,
    );
    assert_eq!(
        s.status,
        ExecutionStatus::Failed {
            error: "States.TaskFailed".into(),
            cause: json!("boom")
        }
    );
    // Not a string (or empty): the literal name.
    for name in [json!(null), json!(""), json!(3)] {
        let mut s = start_with(&engine, &w, json!(null));
        engine.apply(
            &mut s,
            &[ev("1", "step", json!({"name": name, "why": 1}))],
            0,
        );
        assert_eq!(
            s.status,
            ExecutionStatus::Failed {
                error: "Fallback".into(),
                cause: json!(1)
            }
        );
    }
}

#[test]
fn a_bad_error_from_expression_is_a_definition_error() {
    let w: trigflow_core::model::Workflow = serde_json::from_value(json!({
        "id": "w",
        "triggers": [{"id": "f", "actions": [{"kind": "fail", "error": "E", "error_from": ".a | ]"}]}]
    }))
    .expect("parse");
    let errs = w.validate().expect_err("bad expression");
    assert_eq!(errs[0].path, "triggers[0].actions[0].error_from");
}
