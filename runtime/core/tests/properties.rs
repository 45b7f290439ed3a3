//! Delivery guarantees at the engine level: duplicates, reordering,
//! deterministic idempotency keys, and state round-trips (a worker that
//! crashes and reloads its state must carry on exactly as before).

mod common;

use cloudevents::Event;
use common::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use trigflow_core::engine::start_event;
use trigflow_core::model::Workflow;
use trigflow_core::state::{ExecutionState, ExecutionStatus};
use trigflow_core::{Engine, EventOutcome};

fn tid(s: &str) -> trigflow_core::ids::TriggerId {
    s.parse().expect("trigger id")
}

// ---------------------------------------------------------------- duplicates

fn join_workflow(count: u64) -> Workflow {
    wf(json!({
        "id": "w",
        "triggers": [{"id": "j", "on": {"subjects": ["part/*"]},
                      "condition": {"kind": "join", "count": count},
                      "actions": [{"kind": "complete", "output": ".trigger.results"}]}]
    }))
}

#[test]
fn the_same_source_and_id_twice_is_a_duplicate_and_counts_once() {
    let engine = Engine::new();
    let mut s = start_with(&engine, &join_workflow(2), json!(null));
    let a = ev("1", "part/a", json!("A"));
    let out = engine.apply(&mut s, &[a.clone(), a.clone()], 0);
    assert_eq!(
        out,
        vec![EventOutcome::Applied { fired: 0 }, EventOutcome::Duplicate]
    );
    let out = engine.apply(&mut s, &[a], 0);
    assert_eq!(out, vec![EventOutcome::Duplicate], "also across batches");
    let j = &s.triggers[&tid("j")];
    assert_eq!(j.cond.count, 1);
    assert_eq!(s.events_applied, 2, "start + one part");
    assert_eq!(s.status, ExecutionStatus::Running);
}

#[test]
fn identity_is_source_and_id_together() {
    let engine = Engine::new();
    let mut s = start_with(&engine, &join_workflow(3), json!(null));
    let out = engine.apply(
        &mut s,
        &[
            event("src-a", "1", "t", Some("part/a"), json!(1)),
            event("src-b", "1", "t", Some("part/b"), json!(2)),
            event("src-a", "2", "t", Some("part/c"), json!(3)),
        ],
        0,
    );
    assert_eq!(
        out,
        vec![
            EventOutcome::Applied { fired: 0 },
            EventOutcome::Applied { fired: 0 },
            EventOutcome::Applied { fired: 1 }
        ]
    );
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!({"part/a": 1, "part/b": 2, "part/c": 3})
        }
    );
}

#[test]
fn a_function_that_ran_twice_is_counted_once_and_its_first_result_kept() {
    let w = wf(json!({
        "id": "w",
        "triggers": [
            {"id": "go", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:f", "step": "s", "foreach": "[1,2]"}]},
            {"id": "j", "on": {"subjects": ["s"]}, "condition": {"kind": "join", "count": 2},
             "actions": [{"kind": "complete", "output": "[.trigger.results[]]"}]}
        ]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!(null));
    let invs = invocations(&s);
    let mut retry = invs[0].clone();
    retry.attempt = 2;
    let out = engine.apply(
        &mut s,
        &[
            succeeded(&invs[0], json!("first")),
            succeeded(&retry, json!("second run")),
            failed(&invs[0], "Late"),
        ],
        0,
    );
    assert_eq!(
        out,
        vec![
            EventOutcome::Applied { fired: 0 },
            EventOutcome::Duplicate,
            EventOutcome::Duplicate
        ]
    );
    engine.apply(&mut s, &[succeeded(&invs[1], json!("other"))], 0);
    assert_eq!(
        s.status,
        ExecutionStatus::Succeeded {
            output: json!(["first", "other"])
        }
    );
}

#[test]
fn a_redelivered_start_event_is_a_duplicate() {
    let w = wf(json!({
        "id": "w",
        "triggers": [{"id": "go", "on": {"types": ["trigflow.execution.started"]}, "lifetime": "persistent",
                      "actions": [{"kind": "invoke", "function": "inproc:f"}]}]
    }));
    let engine = Engine::new();
    let mut s = start_with(&engine, &w, json!({"x": 1}));
    let start = start_event(&exec_id(), json!({"x": 1})).expect("start event");
    assert_eq!(
        engine.apply(&mut s, &[start], 0),
        vec![EventOutcome::Duplicate]
    );
    assert_eq!(invocations(&s).len(), 1);
}

// ---------------------------------------------------------------- reordering

/// A fan-out of `n` function calls whose results a dynamic join gathers,
/// plus a fixed join of `m` user events with distinct subjects. Only the
/// first join decides effects, so the outbox keys must not depend on which
/// join fires first.
fn two_joins(m: u64) -> Workflow {
    wf(json!({
        "id": "w",
        "triggers": [
            {"id": "split", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:work", "step": "work",
                          "foreach": ".event.data", "count_into": "n"}]},
            {"id": "gather", "on": {"subjects": ["work"]},
             "condition": {"kind": "join", "count": {"from": ".context.n"}},
             "actions": [{"kind": "set_context", "key": "sum", "value": "[.trigger.results[]] | add"},
                         {"kind": "invoke", "function": "inproc:report", "input": "[.trigger.results[]]"}]},
            {"id": "parts", "on": {"subjects": ["part/*"]},
             "condition": {"kind": "join", "count": m},
             "actions": [{"kind": "set_context", "key": "parts", "value": ".trigger.results"}]}
        ]
    }))
}

/// The events of a `two_joins` run: one result per invocation, `m` parts.
fn two_joins_events(s: &ExecutionState, m: u64) -> Vec<Event> {
    let mut evs: Vec<Event> = invocations(s)
        .iter()
        .map(|inv| succeeded(inv, json!(inv.input.as_i64().unwrap_or(0) * 3)))
        .collect();
    evs.extend((0..m).map(|i| ev(&format!("p{i}"), &format!("part/{i}"), json!(i))));
    evs
}

/// What must not depend on delivery order or duplication.
fn observable(s: &ExecutionState) -> (ExecutionStatus, Value, Vec<(String, Value)>, Value, u64) {
    let invs = invocations(s)
        .into_iter()
        .map(|i| (i.key, i.input))
        .collect();
    (
        s.status.clone(),
        s.context.clone(),
        invs,
        serde_json::to_value(&s.triggers).expect("triggers serialise"),
        s.events_applied,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_permutation_with_duplicates_reaches_the_in_order_state(
        (n, m, order, dups, batch) in (1usize..8, 1u64..5)
            .prop_flat_map(|(n, m)| {
                let total = n + m as usize;
                (
                    Just(n),
                    Just(m),
                    Just((0..total).collect::<Vec<_>>()).prop_shuffle(),
                    prop::collection::vec((0..total, 0..=total), 0..6),
                    1usize..5,
                )
            })
    ) {
        let engine = Engine::new();
        let wf = two_joins(m);
        let items: Vec<i64> = (1..=n as i64).collect();

        let mut reference = start_with(&engine, &wf, json!(items));
        let in_order = two_joins_events(&reference, m);
        let out = engine.apply(&mut reference, &in_order, 0);
        let all_applied = out.iter().all(|o| matches!(o, EventOutcome::Applied { .. }));
        prop_assert!(all_applied, "{:?}", out);
        prop_assert_eq!(&reference.context["sum"], &json!(items.iter().sum::<i64>() * 3));
        prop_assert_eq!(reference.context["parts"].as_object().map(|o| o.len()), Some(m as usize));

        let mut s = start_with(&engine, &wf, json!(items));
        let events = two_joins_events(&s, m);
        let mut delivery: Vec<Event> = order.iter().map(|&i| events[i].clone()).collect();
        for &(which, at) in &dups {
            delivery.insert(at.min(delivery.len()), events[which].clone());
        }
        // The start event may come round again too.
        delivery.insert(delivery.len() / 2, start_event(&exec_id(), json!(items)).expect("start"));
        let mut outcomes = Vec::new();
        for chunk in delivery.chunks(batch) {
            outcomes.extend(engine.apply(&mut s, chunk, 0));
        }
        let duplicates = outcomes.iter().filter(|o| **o == EventOutcome::Duplicate).count();
        prop_assert_eq!(duplicates, dups.len() + 1);
        prop_assert_eq!(observable(&s), observable(&reference));
        prop_assert_eq!(&s.seen, &reference.seen);
    }

    #[test]
    fn quorum_decision_does_not_depend_on_arrival_order(
        (k, votes) in (1usize..7).prop_flat_map(|m| {
            (1..=m, prop::collection::vec(any::<bool>(), m).prop_shuffle())
        })
    ) {
        let m = votes.len();
        let wf = wf(json!({
            "id": "w",
            "triggers": [
                {"id": "ask", "on": {"types": ["trigflow.execution.started"]},
                 "actions": [{"kind": "invoke", "function": "inproc:vote", "step": "v", "foreach": ".event.data"}]},
                {"id": "q", "on": {"subjects": ["v"]}, "condition": {"kind": "quorum", "k": k, "m": m},
                 "actions": [{"kind": "complete", "output": ".trigger.count"}]}
            ]
        }));
        let engine = Engine::new();
        let mut s = start_with(&engine, &wf, json!(votes));
        let events: Vec<Event> = invocations(&s)
            .iter()
            .map(|inv| if inv.input == json!(true) { succeeded(inv, json!(1)) } else { failed(inv, "No") })
            .collect();
        engine.apply(&mut s, &events, 0);
        let yes = votes.iter().filter(|v| **v).count();
        if yes >= k {
            prop_assert_eq!(&s.status, &ExecutionStatus::Succeeded { output: json!(k) });
        } else {
            let failed_with_quorum = matches!(&s.status, ExecutionStatus::Failed { error, .. } if error == "trigflow.QuorumFailed");
            prop_assert!(failed_with_quorum, "{:?}", s.status);
        }
    }

    #[test]
    fn threshold_over_non_negative_amounts_decides_the_same_in_any_order(
        amounts in prop::collection::vec(0u32..50, 1..10).prop_shuffle(),
        bound in 0u32..200,
    ) {
        let wf = wf(json!({
            "id": "w",
            "triggers": [{"id": "t", "on": {"subjects": ["m"]},
                          "condition": {"kind": "threshold", "op": "gte", "threshold": bound},
                          "actions": [{"kind": "complete", "output": "true"}]}]
        }));
        let engine = Engine::new();
        let mut s = start_with(&engine, &wf, json!(null));
        let events: Vec<Event> = amounts.iter().enumerate().map(|(i, a)| ev(&i.to_string(), "m", json!(a))).collect();
        engine.apply(&mut s, &events, 0);
        let total: u32 = amounts.iter().sum();
        prop_assert_eq!(s.status.is_terminal(), total >= bound);
    }

    /// A worker may crash after writing the state but before acknowledging
    /// the batch: the batch is then delivered again to the reloaded state.
    #[test]
    fn reload_and_redelivery_at_any_point_changes_nothing(
        (n, crash_after, batch) in (1usize..8).prop_flat_map(|n| (Just(n), 0..n + 3, 1usize..4))
    ) {
        let engine = Engine::new();
        let wf = two_joins(2);
        let items: Vec<i64> = (0..n as i64).collect();
        let mut reference = start_with(&engine, &wf, json!(items));
        let events = two_joins_events(&reference, 2);
        engine.apply(&mut reference, &events, 0);

        let mut s = start_with(&engine, &wf, json!(items));
        let chunks: Vec<&[Event]> = events.chunks(batch).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            engine.apply(&mut s, chunk, 0);
            if i == crash_after.min(chunks.len() - 1) {
                let bytes = s.to_bytes().expect("encodes");
                s = ExecutionState::from_bytes(&bytes).expect("decodes");
                let again = engine.apply(&mut s, chunk, 0);
                prop_assert!(again.iter().all(|o| *o == EventOutcome::Duplicate), "{:?}", again);
            }
        }
        prop_assert_eq!(snapshot(&s), snapshot(&reference));
    }
}

// ---------------------------------------------------------------- idempotency keys

#[test]
fn the_same_state_and_batch_give_identical_outbox_keys() {
    let engine = Engine::new();
    let wf = two_joins(1);
    let a = start_with(&engine, &wf, json!([5, 6, 7]));
    let b = start_with(&engine, &wf, json!([5, 6, 7]));
    assert_eq!(snapshot(&a), snapshot(&b));
    assert_eq!(outbox_keys(&a), vec!["e1/0", "e1/1", "e1/2"]);

    let batch = two_joins_events(&a, 1);
    let (mut x, mut y) = (
        a.clone(),
        ExecutionState::from_bytes(&a.to_bytes().expect("encodes")).expect("decodes"),
    );
    x.clear_dispatched(&outbox_keys(&a));
    y.clear_dispatched(&outbox_keys(&a));
    assert!(x.outbox.is_empty());
    engine.apply(&mut x, &batch, 100);
    engine.apply(&mut y, &batch, 100);
    assert_eq!(
        outbox_keys(&x),
        vec!["e1/3"],
        "the report call continues the sequence"
    );
    assert_eq!(outbox_keys(&x), outbox_keys(&y));
    assert_eq!(invocations(&x), invocations(&y));
    assert_eq!(snapshot(&x), snapshot(&y));
}

#[test]
fn clear_dispatched_is_idempotent_and_ignores_unknown_keys() {
    let engine = Engine::new();
    let mut s = start_with(&engine, &two_joins(1), json!([1, 2, 3]));
    let done = vec!["e1/1".to_owned(), "nope".to_owned()];
    s.clear_dispatched(&done);
    s.clear_dispatched(&done);
    assert_eq!(outbox_keys(&s), vec!["e1/0", "e1/2"]);
}

// ---------------------------------------------------------------- round trip

/// A state with something in every field: partial join, a threshold
/// accumulator that is not exactly representable in decimal, window times,
/// a quorum failure, published events and timers in the outbox, history,
/// a dynamic trigger and a seen-set.
fn rich_state() -> (Engine, ExecutionState) {
    let w = wf(json!({
        "id": "rich",
        "version": 7,
        "context": {"nested": {"list": [1, "two", null]}},
        "triggers": [
            {"id": "go", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "inproc:f", "step": "s", "foreach": "[1,2,3]"},
                         {"kind": "emit", "events": [{"type": "app.hello", "subject": "hi", "data": "{a: 1}"}]},
                         {"kind": "timer", "delay_ms": 60000, "event": {"type": "trigflow.timer.fired", "subject": "late"}},
                         {"kind": "add_triggers", "triggers": [{"id": "dyn", "on": {"subjects": ["never"]},
                                                                "context": {"note": "added"}}]}]},
            {"id": "j", "on": {"subjects": ["s"]}, "condition": {"kind": "join", "count": 3},
             "actions": [{"kind": "complete", "output": "[.trigger.results[]]"}]},
            {"id": "q", "on": {"subjects": ["s"]}, "condition": {"kind": "quorum", "k": 2, "m": 3},
             "lifetime": "persistent", "order": 1,
             "actions": [{"kind": "set_context", "key": "quorum", "value": ".trigger.count"}]},
            {"id": "t", "on": {"subjects": ["m"]}, "condition": {"kind": "threshold", "op": "gte", "threshold": 1}},
            {"id": "w", "on": {"subjects": ["m"]}, "condition": {"kind": "window", "count": 9, "within_ms": 1000}}
        ]
    }));
    let engine = Engine::new();
    let mut s = engine
        .start(&w, exec_id(), json!({"in": "put"}), 1_700_000_000_000)
        .expect("starts");
    let invs = invocations(&s);
    engine.apply(
        &mut s,
        &[
            failed(&invs[0], "Boom"),
            ev("1", "m", json!(0.1)),
            ev("2", "m", json!(0.2)),
        ],
        1_700_000_000_500,
    );
    (engine, s)
}

#[test]
fn state_round_trips_through_bytes_with_everything_in_it() {
    let (_, s) = rich_state();
    assert_eq!(s.triggers[&tid("t")].cond.acc, Some(0.1 + 0.2));
    assert_eq!(s.triggers[&tid("w")].cond.times.len(), 2);
    assert_eq!(s.triggers[&tid("q")].cond.failed, 1);
    assert_eq!(
        s.triggers[&tid("j")].cond.results.len(),
        1,
        "the failure data was joined"
    );
    assert_eq!(s.outbox.len(), 5);

    let bytes = s.to_bytes().expect("encodes");
    let r = ExecutionState::from_bytes(&bytes).expect("decodes");
    assert_eq!(r.execution, s.execution);
    assert_eq!(r.workflow, s.workflow);
    assert_eq!(r.version, 7);
    assert_eq!(r.status, s.status);
    assert_eq!(r.context, s.context);
    assert_eq!(r.triggers, s.triggers);
    assert_eq!(r.outbox, s.outbox);
    assert_eq!(r.next_seq, s.next_seq);
    assert_eq!(r.events_applied, s.events_applied);
    assert_eq!(r.history, s.history);
    assert_eq!(r.started_ms, s.started_ms);
    assert_eq!(r.seen, s.seen);
    assert_eq!(r.seen.0.len(), 4);
    assert_eq!(
        snapshot(&r),
        snapshot(&s),
        "a decoded state encodes the same state"
    );
}

#[test]
fn a_finished_state_round_trips_too() {
    let (engine, mut s) = rich_state();
    let invs = invocations(&s);
    engine.apply(
        &mut s,
        &[succeeded(&invs[1], json!(2)), succeeded(&invs[2], json!(3))],
        0,
    );
    assert!(s.status.is_terminal());
    let r = ExecutionState::from_bytes(&s.to_bytes().expect("encodes")).expect("decodes");
    assert_eq!(r.status, s.status);
    let ExecutionStatus::Succeeded { output } = &r.status else {
        panic!("{:?}", r.status)
    };
    assert_eq!(
        output,
        &json!([{"error": "Boom", "cause": "Boom in test"}, 2, 3])
    );
}

#[test]
fn a_restored_state_still_dedups_and_carries_on_like_the_original() {
    let (engine, mut original) = rich_state();
    let mut restored =
        ExecutionState::from_bytes(&original.to_bytes().expect("encodes")).expect("decodes");
    let invs = invocations(&original);

    let seen_before = vec![
        failed(&invs[0], "Boom"),
        ev("1", "m", json!(0.1)),
        start_event(&exec_id(), json!({"in": "put"})).expect("start"),
    ];
    assert_eq!(
        engine.apply(&mut restored, &seen_before, 5),
        vec![EventOutcome::Duplicate; 3]
    );

    let rest = vec![
        succeeded(&invs[1], json!("b")),
        ev("3", "m", json!(0.7)),
        succeeded(&invs[2], json!("c")),
    ];
    let a = engine.apply(&mut original, &rest, 1_700_000_000_900);
    let b = engine.apply(&mut restored, &rest, 1_700_000_000_900);
    assert_eq!(a, b);
    assert_eq!(
        a[1],
        EventOutcome::Applied { fired: 1 },
        "the threshold reached 1.0"
    );
    assert_eq!(snapshot(&original), snapshot(&restored));
    assert!(restored.status.is_terminal());
}

#[test]
fn corrupt_seen_sets_are_rejected_on_load() {
    let (_, s) = rich_state();
    let mut doc: Value = serde_json::from_slice(&s.to_bytes().expect("encodes")).expect("json");
    doc["seen"] = json!("AAAA");
    let bytes = serde_json::to_vec(&doc).expect("json");
    assert!(
        ExecutionState::from_bytes(&bytes).is_err(),
        "3 bytes is not a whole key"
    );
    doc["seen"] = json!("not base64!");
    let bytes = serde_json::to_vec(&doc).expect("json");
    assert!(ExecutionState::from_bytes(&bytes).is_err());
}

#[test]
fn join_results_of_events_sharing_a_subject_do_not_depend_on_arrival_order() {
    let w = wf(json!({"id": "w", "triggers": [
        {"id": "j", "on": {"subjects": ["reading", "other"]}, "condition": {"kind": "join", "count": 4},
         "actions": [{"kind": "complete", "output": ".trigger.results"}]}
    ]}));
    let events = [
        ev("a", "reading", json!(1)),
        ev("b", "reading", json!(2)),
        ev("c", "reading", json!(3)),
        ev("d", "other", json!(4)),
    ];
    let orders: [[usize; 4]; 4] = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]];
    let mut outputs = Vec::new();
    for order in orders {
        let engine = Engine::new();
        let mut s = start_with(&engine, &w, json!(null));
        for i in order {
            engine.apply(&mut s, std::slice::from_ref(&events[i]), 0);
        }
        match s.status {
            ExecutionStatus::Succeeded { output } => outputs.push(output),
            other => panic!("expected success, got {other:?}"),
        }
    }
    // Shared subjects are keyed subject/id, a unique subject stays plain.
    assert_eq!(
        outputs[0],
        json!({"other": 4, "reading/a": 1, "reading/b": 2, "reading/c": 3})
    );
    assert!(outputs.iter().all(|o| o == &outputs[0]), "{outputs:?}");
}
