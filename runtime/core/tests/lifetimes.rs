//! Trigger lifetimes, interception order, and what happens after an
//! execution finishes.

mod common;

use common::*;
use serde_json::json;
use trigflow_core::state::ExecutionStatus;
use trigflow_core::{Engine, EventOutcome};

fn tid(s: &str) -> trigflow_core::ids::TriggerId {
    s.parse().expect("trigger id")
}

#[test]
fn transient_trigger_is_removed_after_firing_once() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "once", "on": {"subjects": ["x"]},
                      "actions": [{"kind": "emit", "events": [{"type": "app.seen"}]}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(&mut s, &[ev("1", "x", json!(1)), ev("2", "x", json!(2))], 0);
    assert_eq!(
        out,
        vec![
            EventOutcome::Applied { fired: 1 },
            EventOutcome::Applied { fired: 0 }
        ]
    );
    assert!(!s.triggers.contains_key(&tid("once")));
    assert_eq!(published(&s).len(), 1);
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].event_id, "1");
}

#[test]
fn persistent_fixed_join_fires_repeatedly_and_resets_between_firings() {
    let w = wf(json!({
        "id": "w",
        "context": {"batches": []},
        "triggers": [{"id": "pair", "on": {"subjects": ["tick/*"]}, "lifetime": "persistent",
                      "condition": {"kind": "join", "count": 2},
                      "actions": [{"kind": "set_context", "key": "batches",
                                   "value": ".context.batches + [[.trigger.results[]]]"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let events: Vec<_> = (1..=5)
        .map(|i| ev(&i.to_string(), &format!("tick/{i}"), json!(i)))
        .collect();
    let out = engine.apply(&mut s, &events, 0);
    let fired: Vec<u32> = out
        .iter()
        .map(|o| match o {
            EventOutcome::Applied { fired } => *fired,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(fired, vec![0, 1, 0, 1, 0]);
    assert_eq!(s.context["batches"], json!([[1, 2], [3, 4]]));
    let pair = &s.triggers[&tid("pair")];
    assert_eq!(pair.fired, 2);
    assert_eq!(pair.cond.count, 1, "counting afresh after each firing");
    assert_eq!(pair.cond.results.len(), 1, "old results were dropped");
}

#[test]
fn persistent_dynamic_join_rereads_its_count_after_each_firing() {
    let w = wf(json!({
        "id": "w",
        "context": {"n": 1, "sizes": []},
        "triggers": [{"id": "j", "on": {"subjects": ["p*"]}, "lifetime": "persistent",
                      "condition": {"kind": "join", "count": {"from": ".context.n"}},
                      "actions": [
                        {"kind": "set_context", "key": "sizes", "value": ".context.sizes + [.trigger.count]"},
                        {"kind": "set_context", "key": "n", "value": ".context.n + 1"}
                      ]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let events: Vec<_> = (0..6)
        .map(|i| ev(&i.to_string(), &format!("p{i}"), json!(i)))
        .collect();
    engine.apply(&mut s, &events, 0);
    // Batches of 1, 2 and 3 events.
    assert_eq!(s.context["sizes"], json!([1, 2, 3]));
}

#[test]
fn persistent_threshold_and_window_reset_after_firing() {
    let w = wf(json!({
        "id": "w",
        "context": {"hits": 0, "bursts": 0},
        "triggers": [
            {"id": "t", "on": {"subjects": ["m"]}, "lifetime": "persistent",
             "condition": {"kind": "threshold", "op": "gte", "threshold": 10},
             "actions": [{"kind": "set_context", "key": "hits", "value": ".context.hits + 1"}]},
            {"id": "w", "on": {"subjects": ["m"]}, "lifetime": "persistent",
             "condition": {"kind": "window", "count": 2, "within_ms": 100},
             "actions": [{"kind": "set_context", "key": "bursts", "value": ".context.bursts + 1"}]}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    for (i, now) in [0, 10, 20, 30].into_iter().enumerate() {
        engine.apply(&mut s, &[ev(&i.to_string(), "m", json!(5))], now);
    }
    // acc 5,10 (fire, reset) 5,10 (fire); window 2 events (fire, reset) 2 (fire).
    assert_eq!(s.context["hits"], json!(2));
    assert_eq!(s.context["bursts"], json!(2));
    assert_eq!(s.triggers[&tid("t")].cond.acc, None);
}

#[test]
fn triggers_on_one_event_fire_by_order_then_id() {
    let log = |id: &str| {
        json!([{"kind": "set_context", "key": "log",
                "value": format!(".context.log + [\"{id}\"]")}])
    };
    let w = wf(json!({
        "id": "w",
        "context": {"log": []},
        "triggers": [
            {"id": "b", "on": {"subjects": ["x"]}, "actions": log("b")},
            {"id": "c", "order": 5, "on": {"subjects": ["x"]}, "actions": log("c")},
            {"id": "a", "on": {"subjects": ["x"]}, "actions": log("a")},
            {"id": "z", "order": -1, "on": {"types": ["test.*"]}, "actions": log("z")},
            {"id": "y", "order": 5, "on": {"subjects": ["x*"]}, "actions": log("y")}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(&mut s, &[ev("1", "x", json!(null))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 5 }]);
    assert_eq!(s.context["log"], json!(["z", "a", "b", "c", "y"]));
    let order: Vec<_> = s.history.iter().map(|f| f.trigger.to_string()).collect();
    assert_eq!(order, vec!["z", "a", "b", "c", "y"]);
    assert_eq!(
        s.history.iter().map(|f| f.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
}

#[test]
fn an_earlier_trigger_that_removes_a_later_one_intercepts_the_event() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "guard", "order": -10, "on": {"subjects": ["order"]},
             "condition": {"kind": "expr", "expr": ".event.data.fraud"},
             "actions": [{"kind": "remove_triggers", "ids": ["ship", "unknown"]},
                         {"kind": "set_context", "key": "blocked", "value": ".event.data.id"}]},
            {"id": "ship", "on": {"subjects": ["order"]}, "lifetime": "persistent",
             "actions": [{"kind": "invoke", "function": "inproc:ship"}]}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(
        &mut s,
        &[ev("1", "order", json!({"id": 1, "fraud": false}))],
        0,
    );
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    assert_eq!(invocations(&s).len(), 1);

    let out = engine.apply(
        &mut s,
        &[
            ev("2", "order", json!({"id": 2, "fraud": true})),
            ev("3", "order", json!({"id": 3, "fraud": false})),
        ],
        0,
    );
    assert_eq!(
        out,
        vec![
            EventOutcome::Applied { fired: 1 },
            EventOutcome::Applied { fired: 0 }
        ]
    );
    assert_eq!(
        invocations(&s).len(),
        1,
        "order 2 and later were not shipped"
    );
    assert_eq!(s.context["blocked"], json!(2));
    assert!(!s.triggers.contains_key(&tid("ship")));
}

#[test]
fn a_trigger_added_while_handling_an_event_does_not_see_that_event() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "arm", "on": {"subjects": ["x"]},
                      "actions": [{"kind": "add_triggers", "triggers": [
                          {"id": "armed", "on": {"subjects": ["x"]},
                           "actions": [{"kind": "complete", "output": ".event.data"}]}]}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(&mut s, &[ev("1", "x", json!("first"))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    assert_eq!(s.status, ExecutionStatus::Running);
    engine.apply(&mut s, &[ev("2", "x", json!("second"))], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!("second")
        }
    );
}

#[test]
fn completion_stops_later_triggers_and_later_actions_on_the_same_event() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "a", "on": {"subjects": ["x"]},
             "actions": [{"kind": "invoke", "function": "inproc:before"},
                         {"kind": "complete", "output": "\"done\""},
                         {"kind": "invoke", "function": "inproc:after"}]},
            {"id": "b", "on": {"subjects": ["x"]},
             "actions": [{"kind": "invoke", "function": "inproc:other"}]}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(&mut s, &[ev("1", "x", json!(null))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    let fns: Vec<_> = invocations(&s).into_iter().map(|i| i.function).collect();
    assert_eq!(fns, vec!["inproc:before"]);
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!("done")
        }
    );
}

#[test]
fn events_after_completion_are_finished_even_duplicates() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "end", "on": {"subjects": ["stop"]},
                      "actions": [{"kind": "fail", "error": "Stopped"}]},
                     {"id": "other", "on": {"subjects": ["x"]}, "lifetime": "persistent",
                      "actions": [{"kind": "invoke", "function": "inproc:f"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let stop = ev("1", "stop", json!({"why": "user"}));
    engine.apply(&mut s, std::slice::from_ref(&stop), 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Failed {
            error: "Stopped".into(),
            cause: json!({"why": "user"})
        }
    );
    let before = snapshot(&s);
    let out = engine.apply(&mut s, &[ev("2", "x", json!(null)), stop], 10);
    assert_eq!(out, vec![EventOutcome::Finished, EventOutcome::Finished]);
    assert_eq!(snapshot(&s), before);
}
