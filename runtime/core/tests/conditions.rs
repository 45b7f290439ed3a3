//! Every condition kind, driven through `Engine` directly: events in,
//! assertions on the state and outbox out.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::*;
use serde_json::{Value, json};
use trigflow_core::engine::EngineError;
use trigflow_core::state::ExecutionStatus;
use trigflow_core::{Engine, EventOutcome, sim};

fn succeeded_with(v: Value) -> ExecutionStatus {
    ExecutionStatus::Succeeded { output: v }
}

// ---------------------------------------------------------------- always

#[test]
fn always_fires_on_every_matching_event_and_ignores_others() {
    let w = wf(json!({
        "id": "w",
        "context": {"n": 0},
        "triggers": [{
            "id": "count", "on": {"subjects": ["ping"]}, "lifetime": "persistent",
            "actions": [{"kind": "set_context", "key": "n", "value": ".context.n + .event.data"}]
        }]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(
        &mut s,
        &[
            ev("1", "ping", json!(1)),
            ev("2", "pong", json!(100)),
            ev("3", "ping", json!(10)),
            ev("4", "ping", json!(5)),
        ],
        0,
    );
    assert_eq!(
        out,
        vec![
            EventOutcome::Applied { fired: 1 },
            EventOutcome::Applied { fired: 0 },
            EventOutcome::Applied { fired: 1 },
            EventOutcome::Applied { fired: 1 },
        ]
    );
    assert_eq!(s.context["n"], json!(16));
    assert_eq!(s.triggers[&"count".parse().expect("id")].fired, 3);
}

#[test]
fn activation_matches_type_patterns_and_subject_prefixes() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{
            "id": "t", "lifetime": "persistent",
            "on": {"subjects": ["img/*"], "types": ["app.uploaded"]},
            "actions": [{"kind": "set_context", "key": "last", "value": ".event.subject"}]
        }]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(
        &mut s,
        &[
            event("u", "1", "app.uploaded", Some("img/a.png"), json!(1)),
            event("u", "2", "app.deleted", Some("img/b.png"), json!(1)),
            event("u", "3", "app.uploaded", Some("doc/c.txt"), json!(1)),
            event("u", "4", "app.uploaded", None, json!(1)),
        ],
        0,
    );
    let fired: Vec<_> = out
        .iter()
        .map(|o| matches!(o, EventOutcome::Applied { fired: 1 }))
        .collect();
    assert_eq!(fired, vec![true, false, false, false]);
    assert_eq!(s.context["last"], json!("img/a.png"));
}

// ---------------------------------------------------------------- join

#[test]
fn fixed_join_fires_once_after_n_distinct_events_collecting_by_subject() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{
            "id": "j", "on": {"subjects": ["part/*"]},
            "condition": {"kind": "join", "count": 3},
            "actions": [{"kind": "complete", "output": "{n: .trigger.count, r: .trigger.results}"}]
        }]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(
        &mut s,
        &[ev("1", "part/b", json!("B")), ev("2", "part/a", json!("A"))],
        0,
    );
    assert_eq!(out, vec![EventOutcome::Applied { fired: 0 }; 2]);
    assert_eq!(s.status, ExecutionStatus::Running);
    let j = &s.triggers[&"j".parse().expect("id")];
    assert_eq!(j.cond.count, 2);
    assert_eq!(j.cond.target, Some(3));

    let out = engine.apply(&mut s, &[ev("3", "part/c", json!("C"))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    assert_eq!(
        s.status,
        succeeded_with(json!({"n": 3, "r": {"part/a": "A", "part/b": "B", "part/c": "C"}}))
    );
    assert!(
        s.triggers.is_empty(),
        "a transient join is removed once it fires"
    );
}

fn fanout_workflow() -> trigflow_core::model::Workflow {
    wf(json!({
        "id": "fan",
        "triggers": [
            {"id": "split", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:square", "step": "square",
                          "foreach": ".event.data.items", "count_into": "fan.n"}]},
            {"id": "gather", "on": {"subjects": ["square"]},
             "condition": {"kind": "join", "count": {"from": ".context.fan.n"}},
             "actions": [{"kind": "complete", "output": "[.trigger.results[]]"}]}
        ]
    }))
}

#[test]
fn dynamic_join_reads_its_count_from_context_for_foreach_fanout() {
    let engine = Engine::new();
    let mut s = start_with(&engine, &fanout_workflow(), json!({"items": [1, 2, 3, 4]}));
    assert_eq!(s.context["fan"]["n"], json!(4), "count_into wrote the size");
    let invs = invocations(&s);
    assert_eq!(invs.len(), 4);
    assert_eq!(
        invs.iter().map(|i| i.index).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2), Some(3)]
    );
    let gather = "gather".parse().expect("id");
    assert_eq!(
        s.triggers[&gather].cond.target, None,
        "not read before an event"
    );

    // Results arrive out of order; the join must still list them by index.
    for (n, inv) in invs.iter().rev().enumerate() {
        let x = inv.input.as_i64().expect("item is a number");
        let out = engine.apply(&mut s, &[succeeded(inv, json!(x * x))], 0);
        if n < 3 {
            assert_eq!(out, vec![EventOutcome::Applied { fired: 0 }]);
            assert_eq!(s.triggers[&gather].cond.target, Some(4));
        } else {
            assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
        }
    }
    assert_eq!(s.status, succeeded_with(json!([1, 4, 9, 16])));
}

#[test]
fn a_dynamic_join_whose_count_is_not_known_yet_keeps_collecting() {
    // Streaming: parts are processed as they arrive; the producer says how
    // many there were only when it finishes, possibly after all of them.
    let w = wf(json!({
        "id": "stream",
        "triggers": [{
            "id": "gather", "on": {"subjects": ["part", "producer"]},
            "condition": {"kind": "join", "count": {"from":
                "if .event.subject == \"producer\" then .event.data.parts + 1 else null end"}},
            "actions": [{"kind": "complete", "output": "[.trigger.results | to_entries[] | select(.key != \"producer\") | .value] | sort"}]
        }]
    }));
    let engine = Engine::new();
    let gather = "gather".parse().expect("id");
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(
        &mut s,
        &[ev("1", "part", json!(10)), ev("2", "part", json!(20))],
        0,
    );
    assert_eq!(out, vec![EventOutcome::Applied { fired: 0 }; 2]);
    assert_eq!(s.triggers[&gather].cond.target, None, "still unknown");
    let out = engine.apply(&mut s, &[ev("3", "producer", json!({"parts": 2}))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    assert_eq!(s.status, succeeded_with(json!([10, 20])));

    // The count known before the last part: the join waits for it.
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(
        &mut s,
        &[
            ev("1", "part", json!(1)),
            ev("2", "producer", json!({"parts": 2})),
        ],
        0,
    );
    assert_eq!(s.triggers[&gather].cond.target, Some(3));
    assert!(!s.status.is_terminal());
    engine.apply(&mut s, &[ev("3", "part", json!(2))], 0);
    assert_eq!(s.status, succeeded_with(json!([1, 2])));
}

#[test]
fn dynamic_join_sizes_follow_the_input_in_a_whole_run() {
    for n in [1usize, 2, 7, 12] {
        let items: Vec<i64> = (0..n as i64).collect();
        let run = sim::run(
            &Engine::new(),
            &fanout_workflow(),
            json!({"items": items}),
            |inv| Ok(json!(inv.input.as_i64().unwrap_or(0) * 10)),
            1000,
        )
        .expect("runs");
        let want: Vec<i64> = items.iter().map(|x| x * 10).collect();
        assert_eq!(run.state.status, succeeded_with(json!(want)), "n = {n}");
        assert_eq!(run.invocations.len(), n);
    }
}

#[test]
fn dynamic_join_count_is_read_once_when_the_first_event_arrives() {
    let w = wf(json!({
        "id": "w",
        "context": {"n": 2},
        "triggers": [
            {"id": "grow", "on": {"subjects": ["grow"]},
             "actions": [{"kind": "set_context", "key": "n", "value": "5"}]},
            {"id": "j", "on": {"subjects": ["part*"]},
             "condition": {"kind": "join", "count": {"from": ".context.n"}},
             "actions": [{"kind": "complete", "output": ".trigger.count"}]}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(&mut s, &[ev("1", "part1", json!(1))], 0);
    engine.apply(&mut s, &[ev("2", "grow", json!(null))], 0);
    assert_eq!(s.context["n"], json!(5));
    let out = engine.apply(&mut s, &[ev("3", "part2", json!(2))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    assert_eq!(s.status, succeeded_with(json!(2)));
}

#[test]
fn dynamic_join_with_a_non_integer_count_is_poison_and_changes_nothing() {
    let w = wf(json!({
        "id": "w",
        "context": {"n": "three"},
        "triggers": [{"id": "j", "on": {"subjects": ["p"]},
                      "condition": {"kind": "join", "count": {"from": ".context.n"}}}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let before = snapshot(&s);
    let out = engine.apply(&mut s, &[ev("1", "p", json!(1))], 0);
    assert!(
        matches!(&out[0], EventOutcome::Poison { reason } if reason.contains("trigger j")),
        "{out:?}"
    );
    assert_eq!(snapshot(&s), before);
}

// ---------------------------------------------------------------- quorum

/// Starts a 2-of-3 quorum over three votes and returns the engine, state and
/// the three invocations whose results feed the quorum.
fn quorum_run(
    on_failure: Value,
) -> (
    Engine,
    trigflow_core::state::ExecutionState,
    Vec<trigflow_core::state::Invocation>,
) {
    let w = wf(json!({
        "id": "q",
        "triggers": [
            {"id": "ask", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:vote", "step": "vote",
                          "foreach": "[1,2,3]"}]},
            {"id": "q", "on": {"subjects": ["vote"]},
             "condition": {"kind": "quorum", "k": 2, "m": 3},
             "on_failure": on_failure,
             "actions": [
                {"kind": "set_context", "key": "agreed", "value": "[.trigger.results[]]"},
                {"kind": "invoke", "function": "inproc:commit", "input": ".context.agreed"}
             ]}
        ]
    }));
    let engine = Engine::new();
    let s = start_with(&engine, &w, json!(null));
    let invs = invocations(&s);
    assert_eq!(invs.len(), 3);
    (engine, s, invs)
}

#[test]
fn quorum_fires_once_after_k_successes() {
    let (engine, mut s, invs) = quorum_run(json!([]));
    let out = engine.apply(&mut s, &[succeeded(&invs[2], json!("c"))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 0 }]);
    let out = engine.apply(&mut s, &[succeeded(&invs[0], json!("a"))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    assert_eq!(s.context["agreed"], json!(["a", "c"]));
    let commits: Vec<_> = invocations(&s)
        .into_iter()
        .filter(|i| i.function == "inproc:commit")
        .collect();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].input, json!(["a", "c"]));

    // The late third vote finds no quorum trigger any more.
    let out = engine.apply(&mut s, &[succeeded(&invs[1], json!("b"))], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 0 }]);
    let fires = s
        .history
        .iter()
        .filter(|f| f.trigger.as_str() == "q")
        .count();
    assert_eq!(fires, 1);
    assert_eq!(s.status, ExecutionStatus::Running);
}

#[test]
fn quorum_tolerates_up_to_m_minus_k_failures() {
    let (engine, mut s, invs) = quorum_run(json!([]));
    let out = engine.apply(
        &mut s,
        &[
            failed(&invs[0], "Boom"),
            succeeded(&invs[1], json!("b")),
            succeeded(&invs[2], json!("c")),
        ],
        0,
    );
    assert_eq!(
        out,
        vec![
            EventOutcome::Applied { fired: 0 },
            EventOutcome::Applied { fired: 0 },
            EventOutcome::Applied { fired: 1 },
        ]
    );
    assert_eq!(
        s.context["agreed"],
        json!(["b", "c"]),
        "failures are not collected"
    );
    assert_eq!(s.status, ExecutionStatus::Running);
}

#[test]
fn quorum_without_on_failure_fails_the_execution_with_quorum_failed() {
    let (engine, mut s, invs) = quorum_run(json!([]));
    engine.apply(&mut s, &[failed(&invs[1], "Boom")], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Running,
        "one failure of m-k=1 is fine"
    );
    let out = engine.apply(&mut s, &[failed(&invs[2], "Boom")], 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    match &s.status {
        ExecutionStatus::Failed { error, cause } => {
            assert_eq!(error, "trigflow.QuorumFailed");
            assert_eq!(cause["trigger"], json!("q"));
            assert_eq!(cause["state"]["failed"], json!(2));
        }
        other => panic!("expected failure, got {other:?}"),
    }
    assert_eq!(s.history.last().map(|f| f.outcome.as_str()), Some("fail"));
    // Nothing committed.
    assert!(
        invocations(&s)
            .iter()
            .all(|i| i.function != "inproc:commit")
    );
    let out = engine.apply(&mut s, &[succeeded(&invs[0], json!("a"))], 0);
    assert_eq!(out, vec![EventOutcome::Finished]);
}

#[test]
fn quorum_failure_runs_on_failure_actions_when_given() {
    let (engine, mut s, invs) = quorum_run(json!([
        {"kind": "complete", "output": "{degraded: true, failed: .trigger.failed}"}
    ]));
    engine.apply(&mut s, &[failed(&invs[0], "A"), failed(&invs[1], "B")], 0);
    assert_eq!(
        s.status,
        succeeded_with(json!({"degraded": true, "failed": 2}))
    );
    assert_eq!(s.history.last().map(|f| f.outcome.as_str()), Some("fail"));
}

// ---------------------------------------------------------------- threshold

/// Feeds `values` one by one to a threshold trigger and returns the
/// (1-based) event that fired it, and the accumulator it saw.
fn threshold_fires_at(op: &str, threshold: f64, values: &[f64]) -> Option<(usize, Value)> {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "t", "on": {"subjects": ["m"]},
                      "condition": {"kind": "threshold", "op": op, "threshold": threshold},
                      "actions": [{"kind": "complete", "output": ".trigger.acc"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    for (i, v) in values.iter().enumerate() {
        let out = engine.apply(&mut s, &[ev(&i.to_string(), "m", json!(v))], 0);
        if out == vec![EventOutcome::Applied { fired: 1 }] {
            let ExecutionStatus::Succeeded { output } = &s.status else {
                panic!("fired but did not complete: {:?}", s.status);
            };
            return Some((i + 1, output.clone()));
        }
        let acc = s.triggers[&"t".parse().expect("id")].cond.acc;
        let sum: f64 = values[..=i].iter().sum();
        assert_eq!(acc, Some(sum), "accumulates every event");
    }
    None
}

#[test]
fn threshold_accumulates_and_fires_for_each_comparison() {
    assert_eq!(
        threshold_fires_at("gte", 10.0, &[4.0, 4.0, 4.0]),
        Some((3, json!(12.0)))
    );
    assert_eq!(
        threshold_fires_at("gte", 8.0, &[4.0, 4.0, 4.0]),
        Some((2, json!(8.0)))
    );
    assert_eq!(
        threshold_fires_at("gt", 8.0, &[4.0, 4.0, 4.0]),
        Some((3, json!(12.0)))
    );
    assert_eq!(
        threshold_fires_at("eq", 8.0, &[4.0, 4.0, 4.0]),
        Some((2, json!(8.0)))
    );
    assert_eq!(threshold_fires_at("eq", 5.0, &[4.0, 4.0, 4.0]), None);
    assert_eq!(
        threshold_fires_at("lt", 0.0, &[2.0, -1.0, -2.0]),
        Some((3, json!(-1.0)))
    );
    assert_eq!(
        threshold_fires_at("lte", 1.0, &[2.0, -1.0, -2.0]),
        Some((2, json!(1.0)))
    );
    assert_eq!(threshold_fires_at("lt", 1.0, &[2.0, -1.0]), None);
}

#[test]
fn threshold_value_expression_picks_the_amount() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "t", "on": {"subjects": ["upload"]},
                      "condition": {"kind": "threshold", "value": ".event.data.bytes",
                                    "op": "gte", "threshold": 1000},
                      "actions": [{"kind": "invoke", "function": "inproc:compact",
                                   "input": "{total: .trigger.acc}"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    engine.apply(
        &mut s,
        &[
            ev("1", "upload", json!({"bytes": 600, "name": "a"})),
            ev("2", "upload", json!({"bytes": 500, "name": "b"})),
        ],
        0,
    );
    let invs = invocations(&s);
    assert_eq!(invs.len(), 1);
    assert_eq!(invs[0].input, json!({"total": 1100.0}));
}

#[test]
fn threshold_value_that_is_not_a_number_is_poison() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "t", "on": {"subjects": ["m"]},
                      "condition": {"kind": "threshold", "op": "gte", "threshold": 1}}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let before = snapshot(&s);
    let out = engine.apply(&mut s, &[ev("1", "m", json!("lots"))], 0);
    assert!(matches!(out[0], EventOutcome::Poison { .. }), "{out:?}");
    assert_eq!(snapshot(&s), before);
}

// ---------------------------------------------------------------- window

fn window_state(count: u64, within_ms: u64) -> (Engine, trigflow_core::state::ExecutionState) {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "burst", "on": {"subjects": ["login-failed"]},
                      "condition": {"kind": "window", "count": count, "within_ms": within_ms},
                      "actions": [{"kind": "complete", "output": ".trigger.count"}]}]
    }));
    let engine = Engine::new();
    let s = start_with(&engine, &w, json!(null));
    (engine, s)
}

#[test]
fn window_fires_when_enough_events_fall_inside_the_sliding_window() {
    let (engine, mut s) = window_state(3, 1000);
    let burst = "burst".parse().expect("id");
    let mut fired_at = None;
    // (time, events inside the window after this one)
    for (i, (now, inside)) in [(0, 1), (500, 2), (1600, 1), (1700, 2), (2000, 3)]
        .into_iter()
        .enumerate()
    {
        let out = engine.apply(
            &mut s,
            &[ev(&i.to_string(), "login-failed", json!(null))],
            now,
        );
        if let [EventOutcome::Applied { fired: 1 }] = out.as_slice() {
            fired_at = Some(now);
            assert_eq!(s.status, succeeded_with(json!(inside)));
        } else {
            assert_eq!(s.triggers[&burst].cond.count, inside, "at {now}");
            assert_eq!(s.status, ExecutionStatus::Running);
        }
    }
    // The events at 0 and 500 slid out before 1600, so only the third
    // event inside [1000, 2000] fires it.
    assert_eq!(fired_at, Some(2000));
}

#[test]
fn window_includes_an_event_exactly_within_ms_old() {
    let (engine, mut s) = window_state(2, 1000);
    engine.apply(&mut s, &[ev("1", "login-failed", json!(null))], 5_000);
    let out = engine.apply(&mut s, &[ev("2", "login-failed", json!(null))], 6_000);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);

    let (engine, mut s) = window_state(2, 1000);
    engine.apply(&mut s, &[ev("1", "login-failed", json!(null))], 5_000);
    let out = engine.apply(&mut s, &[ev("2", "login-failed", json!(null))], 6_001);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 0 }]);
}

// ---------------------------------------------------------------- expr

fn expr_outcome(expr: &str, data: Value) -> EventOutcome {
    let w = wf(json!({
        "id": "w",
        "context": {"limit": 3},
        "triggers": [{"id": "t", "on": {"subjects": ["x"]},
                      "condition": {"kind": "expr", "expr": expr},
                      "actions": [{"kind": "complete"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let out = engine.apply(&mut s, &[ev("1", "x", data.clone())], 0);
    match &out[0] {
        EventOutcome::Applied { fired: 1 } => assert_eq!(s.status, succeeded_with(data)),
        EventOutcome::Applied { fired: 0 } => assert_eq!(s.status, ExecutionStatus::Running),
        _ => {}
    }
    out.into_iter().next().expect("one outcome")
}

#[test]
fn expr_fires_on_jq_truthy_values_only() {
    let fire = EventOutcome::Applied { fired: 1 };
    let wait = EventOutcome::Applied { fired: 0 };
    assert_eq!(expr_outcome(".event.data > .context.limit", json!(5)), fire);
    assert_eq!(expr_outcome(".event.data > .context.limit", json!(2)), wait);
    // jq truthiness: only false and null are false; 0, "" and [] are true.
    assert_eq!(expr_outcome(".event.data", json!(0)), fire);
    assert_eq!(expr_outcome(".event.data", json!("")), fire);
    assert_eq!(expr_outcome(".event.data", json!([])), fire);
    assert_eq!(expr_outcome(".event.data", json!(false)), wait);
    assert_eq!(expr_outcome(".event.data.missing", json!({})), wait);
    assert_eq!(expr_outcome("empty", json!(1)), wait);
    assert_eq!(expr_outcome(".trigger.id == \"t\"", json!(1)), fire);
    assert_eq!(expr_outcome(".event.subject == \"x\"", json!(1)), fire);
}

#[test]
fn expr_that_raises_is_poison() {
    let out = expr_outcome(".event.data + 1", json!("text"));
    assert!(
        matches!(&out, EventOutcome::Poison { reason } if reason.contains("trigger t")),
        "{out:?}"
    );
}

// ---------------------------------------------------------------- custom

fn custom_workflow(name: &str) -> trigflow_core::model::Workflow {
    wf(json!({
        "id": "w",
        "triggers": [{"id": "c", "on": {"subjects": ["reading"]}, "lifetime": "persistent",
                      "condition": {"kind": "custom", "name": name, "config": {"max": 40}},
                      "actions": [{"kind": "emit",
                                   "events": [{"type": "app.alarm", "data": ".event.data"}]}]}]
    }))
}

#[test]
fn custom_condition_sees_the_document_and_its_config() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let engine = Engine::new().with_condition("over_max", move |doc, config| {
        seen.fetch_add(1, Ordering::SeqCst);
        assert_eq!(doc["trigger"]["id"], json!("c"));
        assert_eq!(doc["event"]["subject"], json!("reading"));
        let max = config["max"].as_f64().ok_or("config.max is not a number")?;
        let v = doc["event"]["data"]
            .as_f64()
            .ok_or("reading is not a number")?;
        Ok(v > max)
    });
    let mut s = start_with(&engine, &custom_workflow("over_max"), json!(null));
    let out = engine.apply(
        &mut s,
        &[
            ev("1", "reading", json!(20)),
            ev("2", "reading", json!(41)),
            ev("3", "reading", json!(39)),
            ev("4", "reading", json!(50)),
        ],
        0,
    );
    let fired: Vec<_> = out
        .iter()
        .map(|o| match o {
            EventOutcome::Applied { fired } => *fired,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(fired, vec![0, 1, 0, 1]);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    let alarms: Vec<Value> = published(&s)
        .iter()
        .map(trigflow_core::event::data_json)
        .collect();
    assert_eq!(alarms, vec![json!(41), json!(50)]);
}

#[test]
fn custom_condition_error_is_poison_and_leaves_the_event_unseen() {
    // Fails on the first call only, as a flaky dependency would.
    let fail_next = Arc::new(AtomicBool::new(true));
    let flag = fail_next.clone();
    let engine = Engine::new().with_condition("flaky", move |_doc, _config| {
        if flag.swap(false, Ordering::SeqCst) {
            Err("backend unavailable".to_owned())
        } else {
            Ok(true)
        }
    });
    let mut s = start_with(&engine, &custom_workflow("flaky"), json!(null));
    let before = snapshot(&s);
    let reading = ev("1", "reading", json!(99));
    let out = engine.apply(&mut s, std::slice::from_ref(&reading), 0);
    match &out[..] {
        [EventOutcome::Poison { reason }] => {
            assert!(reason.contains("flaky") && reason.contains("backend unavailable"));
        }
        other => panic!("expected poison, got {other:?}"),
    }
    assert_eq!(snapshot(&s), before, "a poison event changes nothing");
    assert_eq!(s.events_applied, 1, "only the start event");
    assert!(s.outbox.is_empty());

    // Not marked seen: delivering it again applies it rather than
    // reporting a duplicate.
    let out = engine.apply(&mut s, std::slice::from_ref(&reading), 0);
    assert_eq!(out, vec![EventOutcome::Applied { fired: 1 }]);
    assert_eq!(published(&s).len(), 1);
}

#[test]
fn poison_from_one_trigger_stops_every_trigger_on_that_event() {
    let engine = Engine::new().with_condition("broken", |_, _| Err("nope".to_owned()));
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "a", "order": -1, "on": {"subjects": ["x"]},
             "actions": [{"kind": "set_context", "key": "a", "value": "1"}]},
            {"id": "b", "on": {"subjects": ["x"]},
             "condition": {"kind": "custom", "name": "broken"}}
        ]
    }));
    let mut s = start_with(&engine, &w, json!(null));
    let before = snapshot(&s);
    let out = engine.apply(
        &mut s,
        &[ev("1", "x", json!(null)), ev("2", "y", json!(null))],
        0,
    );
    assert!(matches!(out[0], EventOutcome::Poison { .. }));
    assert_eq!(
        out[1],
        EventOutcome::Applied { fired: 0 },
        "the batch goes on"
    );
    assert!(
        s.context.get("a").is_none(),
        "the earlier trigger did not fire"
    );
    assert_eq!(
        s.triggers,
        serde_json::from_value(before["triggers"].clone()).expect("triggers")
    );
}

#[test]
fn unregistered_custom_condition_is_a_definition_error_at_start() {
    let err = Engine::new()
        .start(&custom_workflow("nobody"), exec_id(), json!(null), 0)
        .expect_err("unknown custom condition");
    match err {
        EngineError::Definition(errors) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].path, "triggers[0].condition.name");
        }
        other => panic!("expected a definition error, got {other:?}"),
    }
    // Registering another name does not help.
    let engine = Engine::new().with_condition("somebody", |_, _| Ok(true));
    assert!(matches!(
        engine.start(&custom_workflow("nobody"), exec_id(), json!(null), 0),
        Err(EngineError::Definition(_))
    ));
}
