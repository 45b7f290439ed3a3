//! Child executions: `spawn` starts executions of the same workflow, each
//! reports its end to the parent once.
mod common;
use common::*;

use cloudevents::AttributesReader;
use serde_json::json;
use trigflow_core::event::{EXT_PARENT, TYPE_CHILD_SUCCEEDED, TYPE_STARTED};
use trigflow_core::state::{Effect, ExecutionStatus};
use trigflow_core::{Engine, EventOutcome, sim};

/// The parent spawns one child per input element (entry subject `child`);
/// a child doubles its input or fails on a negative one; the parent joins
/// the completions in index order.
fn fan_out() -> trigflow_core::model::Workflow {
    wf(json!({"id": "kids", "triggers": [
        {"id": "go", "on": {"subjects": ["$start"], "types": ["trigflow.execution.started"]},
         "actions": [
            {"kind": "set_context", "key": "n", "value": ".event.data | length"},
            {"kind": "spawn", "foreach": ".event.data", "entry": "child", "step": "kids",
             "input": "{v: .item}"}
         ]},
        {"id": "child", "on": {"subjects": ["child"], "types": ["trigflow.execution.started"]},
         "lifetime": "persistent",
         "actions": [{"kind": "choose", "branches": [
            {"when": ".event.data.v < 0", "then": [{"kind": "fail", "error": "Negative", "cause": ".event.data.v"}]}
         ], "otherwise": [{"kind": "complete", "output": ".event.data.v * 2"}]}]},
        {"id": "join", "on": {"subjects": ["kids"]}, "condition": {"kind": "join", "count": {"from": ".context.n"}},
         "actions": [{"kind": "complete", "output": "[.trigger.results[]]"}]}
    ]}))
}

#[test]
fn children_run_as_executions_and_report_in_index_order() {
    let run = sim::run(
        &Engine::new(),
        &fan_out(),
        json!([3, 1, 2]),
        |_| panic!("no functions"),
        1000,
    )
    .expect("run");
    assert_eq!(
        run.state.status,
        ExecutionStatus::Succeeded {
            output: json!([6, 2, 4])
        }
    );
    assert_eq!(run.children.len(), 3);
    for (id, child) in &run.children {
        assert!(id.as_str().starts_with("sim."), "{id}");
        let link = child.parent.as_ref().expect("parent link");
        assert_eq!(link.execution.as_str(), "sim");
        assert_eq!(link.reply, "kids");
        let input = child.context["input"]["v"].as_i64().expect("input");
        assert_eq!(
            child.status,
            ExecutionStatus::Succeeded {
                output: json!(input * 2)
            }
        );
    }
}

#[test]
fn a_failed_child_reports_its_error() {
    let run = sim::run(
        &Engine::new(),
        &fan_out(),
        json!([1, -5]),
        |_| panic!("no functions"),
        1000,
    )
    .expect("run");
    // The join collects both completions: the failure's data is
    // {error, cause}.
    assert_eq!(
        run.state.status,
        ExecutionStatus::Succeeded {
            output: json!([2, {"error": "Negative", "cause": -5}])
        }
    );
}

#[test]
fn a_completion_counts_once() {
    let engine = Engine::new();
    let wf = fan_out();
    let mut parent = start(&wf, json!([7, 8]));
    let starts: Vec<_> = parent
        .outbox
        .drain(..)
        .filter_map(|p| match p.effect {
            Effect::Publish { event } if event.ty() == TYPE_STARTED => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(starts.len(), 2);
    assert_eq!(
        starts[0].extension(EXT_PARENT).map(ToString::to_string),
        Some("e1".to_owned())
    );
    let mut done = Vec::new();
    for s in &starts {
        let mut child = engine.start_child(&parent, s, 0).expect("child");
        for p in child.outbox.drain(..) {
            if let Effect::Publish { event } = p.effect {
                assert_eq!(event.ty(), TYPE_CHILD_SUCCEEDED);
                done.push(event);
            }
        }
    }
    assert_eq!(done.len(), 2);
    // Delivered twice (at-least-once queues): the second is a duplicate
    // and the join still waits for the other child.
    let outcomes = engine.apply(&mut parent, &[done[1].clone(), done[1].clone()], 0);
    assert_eq!(outcomes[1], EventOutcome::Duplicate);
    assert_eq!(parent.status, ExecutionStatus::Running);
    engine.apply(&mut parent, &[done[0].clone()], 0);
    assert_eq!(
        parent.status,
        ExecutionStatus::Succeeded {
            output: json!([14, 16])
        }
    );
    // A start event naming another parent is refused.
    let mut stranger = start(&wf, json!([]));
    stranger.execution = "e2".parse().expect("id");
    assert!(engine.start_child(&stranger, &starts[0], 0).is_err());
}
