//! Triggerflow's ingestion test as a workflow: `joins` join triggers, each
//! waiting for `per_join` events, and a final join over their firings that
//! completes the execution. Events are spread round-robin over the joins,
//! the way a stream of independent producers would interleave them.

use serde_json::json;
use trigflow_core::cloudevents::Event;
use trigflow_core::event::NewEvent;
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;

/// The workflow: `joins` triggers `t0..` on subjects `t0..`, each a join of
/// `per_join` events that emits a `joined` event; `all` joins those and
/// completes with the number of joins that fired.
pub fn workflow(joins: usize, per_join: u64) -> anyhow::Result<Workflow> {
    let mut triggers: Vec<serde_json::Value> = (0..joins)
        .map(|i| {
            json!({
                "id": format!("t{i}"),
                "on": {"subjects": [format!("t{i}")]},
                "condition": {"kind": "join", "count": per_join},
                "actions": [{"kind": "emit", "events": [{"type": "bench.joined", "subject": "joined"}]}]
            })
        })
        .collect();
    triggers.push(json!({
        "id": "all",
        "on": {"subjects": ["joined"]},
        "condition": {"kind": "join", "count": joins},
        "actions": [{"kind": "complete", "output": "{joins_fired: .trigger.count}"}]
    }));
    Ok(serde_json::from_value(
        json!({"id": "ingestion", "triggers": triggers}),
    )?)
}

/// Events `range` of the `joins * per_join`, round-robin over the joins.
/// A range at a time, so that a benchmark need not hold them all.
pub fn events(
    exec: &ExecutionId,
    joins: usize,
    range: std::ops::Range<u64>,
) -> anyhow::Result<Vec<Event>> {
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let subjects: Vec<String> = (0..joins).map(|i| format!("t{i}")).collect();
    for k in range {
        let id = k.to_string();
        out.push(
            NewEvent {
                source: "bench/producer",
                id: &id,
                ty: "bench.item",
                subject: Some(&subjects[(k % joins as u64) as usize]),
                execution: Some(exec),
                index: None,
                attempt: None,
                data: None,
            }
            .build()?,
        );
    }
    Ok(out)
}
