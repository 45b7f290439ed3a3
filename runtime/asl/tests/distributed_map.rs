//! Distributed Map (`ProcessorConfig.Mode: DISTRIBUTED`): each item runs as
//! a child execution of the same workflow, and the Map's output equals the
//! same machine's with an inline Map — in the simulator and in embedded
//! mode, where the children are real executions in the store.
mod common;
use common::*;
use serde_json::{Value, json};
use trigflow_core::state::{ExecutionStatus, FunctionError, Invocation};

fn functions(inv: &Invocation) -> Result<Value, FunctionError> {
    match inv.function.as_str() {
        "price" => {
            let qty = inv.input["qty"].as_i64().unwrap_or(0);
            if qty < 0 {
                Err(ferr("BadQty", &format!("qty {qty}")))
            } else {
                Ok(json!(qty * 3))
            }
        }
        other => panic!("unknown function {other}"),
    }
}

/// A Map over `$.orders` whose processor calls a function, waits, and
/// shapes its output; `mode` is INLINE or DISTRIBUTED.
fn machine(mode: &str, extra: Value) -> Value {
    let mut map = json!({"Type": "Map", "ItemsPath": "$.orders", "ResultPath": "$.lines", "End": true,
    "ItemSelector": {"qty.$": "$$.Map.Item.Value.qty", "pos.$": "$$.Map.Item.Index", "tag.$": "$.tag"},
    "ItemProcessor": {
        "ProcessorConfig": {"Mode": mode, "ExecutionType": "STANDARD"},
        "StartAt": "Price",
        "States": {
            "Price": {"Type": "Task", "Resource": "price", "ResultPath": "$.price", "Next": "Pause"},
            "Pause": {"Type": "Wait", "Seconds": 1, "Next": "Shape"},
            "Shape": {"Type": "Pass", "Parameters": {"line.$": "States.Format('{}#{}', $.tag, $.pos)", "price.$": "$.price"}, "End": true}
        }
    }});
    if let (Some(m), Some(e)) = (map.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    json!({"StartAt": "M", "States": {"M": map}})
}

fn orders(qtys: &[i64]) -> Value {
    json!({"tag": "o", "orders": qtys.iter().map(|q| json!({"qty": q})).collect::<Vec<_>>()})
}

#[test]
fn distributed_output_equals_inline_output() {
    let input = orders(&[2, 5, 1, 4]);
    let inline = run_with(&machine("INLINE", json!({})), input.clone(), functions);
    let distributed = run_with(&machine("DISTRIBUTED", json!({})), input, functions);
    let want = json!({"tag": "o", "orders": [{"qty": 2}, {"qty": 5}, {"qty": 1}, {"qty": 4}], "lines": [
        {"line": "o#0", "price": 6}, {"line": "o#1", "price": 15},
        {"line": "o#2", "price": 3}, {"line": "o#3", "price": 12}
    ]});
    assert_eq!(output(&inline), want);
    assert_eq!(output(&distributed), want);
    // One child execution per item, each with its own output.
    assert!(inline.children.is_empty());
    assert_eq!(distributed.children.len(), 4);
    let mut outs: Vec<Value> = distributed
        .children
        .values()
        .map(|c| match &c.status {
            ExecutionStatus::Succeeded { output } => output.clone(),
            other => panic!("child not succeeded: {other:?}"),
        })
        .collect();
    outs.sort_by_key(|v| v["line"].as_str().map(str::to_owned));
    assert_eq!(outs, want["lines"].as_array().cloned().unwrap_or_default());
}

#[test]
fn max_concurrency_bounds_the_running_children() {
    // Each child waits 1 s: 5 items, 2 at a time, take 3 s; unbounded, 1 s.
    let input = orders(&[1, 1, 1, 1, 1]);
    let bounded = run_with(
        &machine("DISTRIBUTED", json!({"MaxConcurrency": 2})),
        input.clone(),
        functions,
    );
    let unbounded = run_with(&machine("DISTRIBUTED", json!({})), input, functions);
    let end = |r: &trigflow_core::sim::SimRun| r.state.history.last().map(|f| f.at_ms);
    assert_eq!(end(&bounded), Some(3_000));
    assert_eq!(end(&unbounded), Some(1_000));
    assert_eq!(output(&bounded), output(&unbounded));
}

#[test]
fn failures_tolerated_or_caught() {
    let input = orders(&[1, -1, 2]);
    let tolerant = run_with(
        &machine("DISTRIBUTED", json!({"ToleratedFailureCount": 1})),
        input.clone(),
        functions,
    );
    assert_eq!(
        output(&tolerant)["lines"],
        json!([
            {"line": "o#0", "price": 3},
            {"Error": "BadQty", "Cause": "qty -1"},
            {"line": "o#2", "price": 6}
        ])
    );
    let mut doc = machine(
        "DISTRIBUTED",
        json!({"Next": "Done", "Catch": [{"ErrorEquals": ["BadQty"], "ResultPath": "$.error", "Next": "Done"}]}),
    );
    doc["States"]["M"]
        .as_object_mut()
        .expect("map")
        .remove("End");
    doc["States"]["Done"] = json!({"Type": "Succeed"});
    let caught = run_with(&doc, input, functions);
    assert_eq!(
        output(&caught)["error"],
        json!({"Error": "BadQty", "Cause": "qty -1"})
    );
}

#[test]
fn jsonata_distributed_map() {
    let doc = json!({"QueryLanguage": "JSONata", "StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "Items": "{% $states.input.orders %}",
        "ItemSelector": {"qty": "{% $states.context.Map.Item.Value.qty %}", "pos": "{% $states.context.Map.Item.Index %}"},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED"}, "StartAt": "P", "States": {
            "P": {"Type": "Task", "Resource": "price", "Assign": {"p": "{% $states.result %}"},
                  "Output": "{% $states.input.pos %}", "Next": "S"},
            "S": {"Type": "Pass", "Output": "{% $string($states.input) & '=' & $string($p) %}", "End": true}
        }},
        "Output": "{% $join($states.result, ',') %}"}}});
    let r = run_with(&doc, orders(&[1, 2, 3]), functions);
    assert_eq!(output(&r), json!("0=3,1=6,2=9"));
    assert_eq!(r.children.len(), 3);
}

mod embedded {
    use super::*;
    use trigflow_asl::{AslOptions, load_str_with};
    use trigflow_embedded::FunctionRegistry;
    use trigflow_embedded::runtime::{EmbeddedRuntime, Options};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn children_are_executions_of_their_own() {
        let opts = AslOptions {
            resources: [("price".to_owned(), "inproc:price".to_owned())].into(),
            name: Some("orders".into()),
            ..AslOptions::default()
        };
        let load = |mode: &str| {
            load_str_with(
                &machine(mode, json!({"MaxConcurrency": 2})).to_string(),
                "m.asl.json",
                &opts,
            )
            .expect("load")
            .workflow
        };
        let fns = FunctionRegistry::new();
        fns.register_fn("price", |v| Ok(json!(v["qty"].as_i64().unwrap_or(0) * 3)));
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = EmbeddedRuntime::open(
            &dir.path().join("db.redb"),
            Options {
                functions: fns,
                ..Options::default()
            },
        )
        .await
        .expect("open");
        let input = orders(&[2, 5, 1]);
        let inline = rt
            .run(
                &load("INLINE"),
                &"inline".parse().expect("id"),
                input.clone(),
                false,
            )
            .await
            .expect("inline run");
        let parent = "dist".parse().expect("id");
        let dist = rt
            .run(&load("DISTRIBUTED"), &parent, input, false)
            .await
            .expect("distributed run");
        assert!(matches!(inline.status, ExecutionStatus::Succeeded { .. }));
        assert_eq!(dist.status, inline.status);
        // The children are in the store, finished, each linked to the parent.
        let ids = rt.worker.executions().await.expect("list");
        let children: Vec<&String> = ids.iter().filter(|i| i.starts_with("dist.")).collect();
        assert_eq!(children.len(), 3, "{ids:?}");
        for id in children {
            let state = rt
                .worker
                .load(&id.parse().expect("id"))
                .await
                .expect("load")
                .expect("child state");
            assert!(matches!(state.status, ExecutionStatus::Succeeded { .. }));
            assert_eq!(
                state.parent.as_ref().map(|p| p.execution.as_str()),
                Some("dist")
            );
        }
        rt.close().await;
    }
}

#[test]
fn item_batcher_groups_items_into_children() {
    // Developer guide, "ItemBatcher": each child gets {"Items": [...],
    // "BatchInput": ...}; the Map's output has one entry per batch.
    let doc = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
    "ItemSelector": {"v.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
    "ItemBatcher": {"MaxItemsPerBatchPath": "$.size", "BatchInput": {"label.$": "$.label"}},
    "ItemsPath": "$.values",
    "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED"}, "StartAt": "Count", "States": {
        "Count": {"Type": "Pass", "End": true, "Parameters": {
            "n.$": "States.ArrayLength($.Items)", "first.$": "$.Items[0]", "label.$": "$.BatchInput.label"}}
    }}}}});
    let r = run(
        &doc,
        json!({"size": 2, "label": "L", "values": ["a", "b", "c", "d", "e"]}),
    );
    assert_eq!(
        output(&r),
        json!([
            {"n": 2, "first": {"v": "a", "i": 0}, "label": "L"},
            {"n": 2, "first": {"v": "c", "i": 2}, "label": "L"},
            {"n": 1, "first": {"v": "e", "i": 4}, "label": "L"}
        ])
    );
    assert_eq!(r.children.len(), 3);
}

#[test]
fn item_batcher_is_validated() {
    use trigflow_asl::{AslError, ProblemKind, load_str};
    let doc = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "ItemBatcher": {"MaxInputBytesPerBatch": 1024, "MaxItemsPerBatch": 0},
        "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": true}}}}}});
    let Err(AslError::Definition(ps)) = load_str(&doc.to_string(), "b.asl.json") else {
        panic!("expected definition problems");
    };
    let has = |path: &str, kind: ProblemKind| ps.iter().any(|p| p.path == path && p.kind == kind);
    assert!(has("States.M.ItemBatcher", ProblemKind::Invalid), "{ps:?}");
    assert!(
        has(
            "States.M.ItemBatcher.MaxInputBytesPerBatch",
            ProblemKind::Unsupported
        ),
        "{ps:?}"
    );
    assert!(
        has("States.M.ItemBatcher.MaxItemsPerBatch", ProblemKind::Shape),
        "{ps:?}"
    );
}
