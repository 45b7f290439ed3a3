//! DAG documents compiled to triggers and run to completion in the simulator.

use serde_json::{Value, json};
use trigflow_core::sim::{self, SimRun};
use trigflow_core::state::{ExecutionStatus, FunctionError, Invocation};
use trigflow_core::{Engine, EventOutcome};
use trigflow_dag::{DocKind, LoadOptions, Loaded, load_file, load_str};

fn load(doc: &str) -> Loaded {
    load_str(doc, "test.yaml", &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Inline functions: `inproc:NAME` picks a behaviour.
fn functions(inv: &Invocation) -> Result<Value, FunctionError> {
    let x = &inv.input;
    match inv.function.as_str() {
        "inproc:echo" => Ok(x.clone()),
        "inproc:inc" => Ok(json!(x.as_i64().unwrap_or(0) + 1)),
        "inproc:double" => Ok(json!(x.as_i64().unwrap_or(0) * 2)),
        "inproc:sum" => Ok(json!(
            x.as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).sum::<i64>())
                .or_else(|| x
                    .as_object()
                    .map(|o| o.values().filter_map(Value::as_i64).sum::<i64>()))
                .unwrap_or(0)
        )),
        "inproc:tag" => Ok(json!({"tagged": x})),
        "inproc:null" => Ok(Value::Null),
        "inproc:boom" => Err(FunctionError {
            error: "Boom".into(),
            cause: format!("input was {x}"),
        }),
        other => Err(FunctionError {
            error: "NoSuchFunction".into(),
            cause: other.into(),
        }),
    }
}

fn run_with(
    loaded: &Loaded,
    input: Value,
    f: impl FnMut(&Invocation) -> Result<Value, FunctionError>,
) -> SimRun {
    let run = sim::run(&Engine::new(), &loaded.workflow, input, f, 1_000_000).expect("starts");
    for o in &run.outcomes {
        assert!(
            !matches!(o, EventOutcome::Poison { .. }),
            "poison event: {o:?}"
        );
    }
    run
}

fn run(loaded: &Loaded, input: Value) -> SimRun {
    run_with(loaded, input, functions)
}

fn output(run: &SimRun) -> Value {
    match &run.state.status {
        ExecutionStatus::Succeeded { output } => output.clone(),
        other => panic!("execution did not succeed: {other:?}"),
    }
}

fn steps(run: &SimRun) -> Vec<String> {
    let mut s: Vec<String> = run.invocations.iter().map(|i| i.step.clone()).collect();
    s.sort();
    s.dedup();
    s
}

#[test]
fn diamond_joins_both_branches() {
    let l = load(
        "
dag: diamond
tasks:
  a: {function: 'inproc:inc'}
  b: {function: 'inproc:double', depends: [a]}
  c: {function: 'inproc:inc', depends: [a]}
  d: {function: 'inproc:sum', depends: [b, c]}
",
    );
    assert_eq!(l.kind, DocKind::Dag);
    let r = run(&l, json!(4));
    // a = 5, b = 10, c = 6, d = 16
    assert_eq!(output(&r), json!(16));
    assert_eq!(r.invocations.len(), 4);
    let d = r
        .invocations
        .iter()
        .find(|i| i.step == "fn/d")
        .expect("d ran");
    assert_eq!(d.input, json!({"b": 10, "c": 6}));
}

#[test]
fn explicit_input_and_output_expressions() {
    let l = load(
        r#"
dag: exprs
tasks:
  a: {function: 'inproc:echo', input: '{n: .input.n, k: "x"}'}
  b: {function: 'inproc:inc', depends: [a], input: '.results.a.n + 100'}
output: '{a: .results.a, b: .results.b, in: .input}'
"#,
    );
    let r = run(&l, json!({"n": 1}));
    assert_eq!(
        output(&r),
        json!({"a": {"n": 1, "k": "x"}, "b": 102, "in": {"n": 1}})
    );
}

const MAP: &str = "
dag: wordcount
tasks:
  split: {function: 'inproc:echo'}
  count:
    function: 'inproc:double'
    depends: [split]
    foreach: '.results.split'
  merge: {function: 'inproc:sum', depends: [count]}
output: '{counts: .results.count, total: .results.merge}'
";

#[test]
fn map_fans_out_and_joins_in_index_order() {
    let l = load(MAP);
    let r = run(&l, json!([1, 2, 3]));
    assert_eq!(output(&r), json!({"counts": [2, 4, 6], "total": 12}));
    let items: Vec<u64> = r
        .invocations
        .iter()
        .filter(|i| i.step == "fn/count")
        .filter_map(|i| i.index)
        .collect();
    assert_eq!(items, vec![0, 1, 2]);
}

#[test]
fn map_over_empty_list_gives_empty_array() {
    let l = load(MAP);
    let r = run(&l, json!([]));
    assert_eq!(output(&r), json!({"counts": [], "total": 0}));
    assert!(!steps(&r).contains(&"fn/count".to_owned()));
}

#[test]
fn map_over_a_thousand_items() {
    let l = load(MAP);
    let input: Vec<i64> = (0..1000).collect();
    let r = run(&l, json!(input));
    let out = output(&r);
    let counts = out["counts"].as_array().expect("array");
    assert_eq!(counts.len(), 1000);
    assert!(
        counts
            .iter()
            .enumerate()
            .all(|(i, v)| v.as_i64() == Some(2 * i as i64))
    );
    assert_eq!(out["total"], json!(999 * 1000));
}

#[test]
fn map_keeps_null_results_in_place() {
    let l = load(
        "
dag: nulls
tasks:
  m: {function: 'inproc:null', foreach: '.input'}
",
    );
    let r = run(&l, json!([1, 2]));
    assert_eq!(output(&r), json!([null, null]));
}

#[test]
fn map_input_sees_item_and_index() {
    let l = load(
        "
dag: items
tasks:
  m: {function: 'inproc:echo', foreach: '.input.xs', input: '{i: .index, x: .item, k: .input.k}'}
",
    );
    let r = run(&l, json!({"xs": ["a", "b"], "k": 7}));
    assert_eq!(
        output(&r),
        json!([{"i": 0, "x": "a", "k": 7}, {"i": 1, "x": "b", "k": 7}])
    );
}

const SWITCH: &str = "
dag: router
tasks:
  measure: {function: 'inproc:echo'}
  route:
    depends: [measure]
    switch:
      - when: '.value.total > 10'
        next: big
      - default: small
  big: {function: 'inproc:tag'}
  small: {function: 'inproc:inc', input: '.results.measure.total'}
  after_big: {function: 'inproc:echo', depends: [big]}
  report: {function: 'inproc:echo', depends: [after_big, small]}
";

#[test]
fn switch_takes_big_branch_and_skips_the_other() {
    let l = load(SWITCH);
    let r = run(&l, json!({"total": 50}));
    assert_eq!(
        steps(&r),
        vec!["fn/after_big", "fn/big", "fn/measure", "fn/report"]
    );
    // The switch passes its input through to the branch taken.
    assert_eq!(
        output(&r),
        json!({"after_big": {"tagged": {"total": 50}}, "small": null})
    );
}

#[test]
fn switch_default_skips_a_chain_and_the_join_still_runs() {
    let l = load(SWITCH);
    let r = run(&l, json!({"total": 3}));
    // big is skipped, and so is after_big downstream of it; report still
    // runs because its edge from small is taken.
    assert_eq!(steps(&r), vec!["fn/measure", "fn/report", "fn/small"]);
    assert_eq!(output(&r), json!({"after_big": null, "small": 4}));
}

#[test]
fn execution_completes_when_every_sink_is_skipped_or_done() {
    let l = load(
        "
dag: skipsink
tasks:
  s:
    switch:
      - when: '.input.go'
        next: a
  a: {function: 'inproc:echo'}
  b: {function: 'inproc:echo', depends: [a]}
",
    );
    let r = run(&l, json!({"go": false}));
    assert!(r.invocations.is_empty());
    assert_eq!(output(&r), Value::Null);
    let r = run(&l, json!({"go": true}));
    assert_eq!(output(&r), json!({"go": true}));
}

#[test]
fn function_failure_fails_the_execution_naming_the_task() {
    let l = load(
        "
dag: failing
tasks:
  a: {function: 'inproc:inc'}
  b: {function: 'inproc:boom', depends: [a]}
  c: {function: 'inproc:inc', depends: [b]}
",
    );
    let r = run(&l, json!(1));
    match &r.state.status {
        ExecutionStatus::Failed { error, cause } => {
            assert_eq!(error, "trigflow.TaskFailed");
            assert_eq!(cause["task"], "b");
            assert_eq!(cause["error"], "Boom");
        }
        other => panic!("expected failure, got {other:?}"),
    }
    assert!(!steps(&r).contains(&"fn/c".to_owned()));
}

#[test]
fn map_item_failure_fails_the_execution() {
    let l = load(
        "
dag: failmap
tasks:
  m: {function: 'inproc:boom', foreach: '.input'}
",
    );
    let r = run(&l, json!([1, 2]));
    assert!(
        matches!(&r.state.status, ExecutionStatus::Failed { cause, .. } if cause["task"] == "m")
    );
}

#[test]
fn retry_reinvokes_until_success_or_attempts_run_out() {
    let doc = "
dag: retrying
tasks:
  flaky: {function: 'inproc:flaky', retry: {max_attempts: 3, delay_ms: 100}}
";
    let l = load(doc);
    let mut calls = 0;
    let r = run_with(&l, json!(1), |inv| {
        calls += 1;
        if calls < 3 {
            Err(FunctionError {
                error: "Transient".into(),
                cause: String::new(),
            })
        } else {
            Ok(inv.input.clone())
        }
    });
    assert_eq!(output(&r), json!(1));
    assert_eq!(r.invocations.len(), 3);

    let r = run_with(&l, json!(1), |_| {
        Err(FunctionError {
            error: "Permanent".into(),
            cause: String::new(),
        })
    });
    assert_eq!(r.invocations.len(), 3);
    assert!(
        matches!(&r.state.status, ExecutionStatus::Failed { cause, .. } if cause["error"] == "Permanent")
    );
}

#[test]
fn mermaid_has_nodes_and_edges() {
    let l = load(SWITCH);
    let m = l.graph.mermaid();
    assert!(m.starts_with("flowchart TD\n"), "{m}");
    for name in ["measure", "route", "big", "small", "after_big", "report"] {
        assert!(
            l.graph.nodes.iter().any(|n| n.id == name),
            "missing node {name}"
        );
        assert!(m.contains(name), "{m}");
    }
    assert!(
        l.graph
            .edges
            .iter()
            .any(|e| e.from == "route" && e.to == "small" && e.label.as_deref() == Some("default"))
    );
    assert!(m.contains("-->|\"default\"|"), "{m}");
    assert_eq!(l.graph.edges.len(), 6);
    assert_eq!(m.matches("-->").count(), 6);
}

#[test]
fn trigger_set_documents_load_and_draw() {
    let doc = r#"{
      "id": "hello",
      "triggers": [
        {"id": "greet", "on": {"types": ["trigflow.execution.started"]},
         "actions": [{"kind": "invoke", "function": "inproc:tag"}]},
        {"id": "done", "on": {"subjects": ["greet"], "types": ["trigflow.function.succeeded"]},
         "actions": [{"kind": "complete"}]}
      ]
    }"#;
    let l = load_str(doc, "hello.json", &LoadOptions::default()).expect("loads");
    assert_eq!(l.kind, DocKind::TriggerSet);
    let r = run(&l, json!("x"));
    assert_eq!(output(&r), json!({"tagged": "x"}));
    let m = l.graph.mermaid();
    assert!(
        m.contains("greet") && m.contains("done") && m.contains("inproc:tag"),
        "{m}"
    );
    assert!(
        m.contains("-->|\"invoke\"|") && m.contains("-->|\"succeeded\"|"),
        "{m}"
    );
    assert!(m.contains("-->|\"complete\"|"), "{m}");
}

#[test]
fn example_fixtures_load_and_run() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let l = load_file(&dir.join("wordcount.dag.yaml"), &LoadOptions::default()).expect("loads");
    let r = run_with(&l, json!({"text": "a b a c"}), |inv| {
        Ok(match inv.function.as_str() {
            "cmd:./split.sh" => json!(["a b", "a c"]),
            "cmd:./count.sh" => {
                let words = inv.input.as_str().unwrap_or("").split_whitespace();
                let mut m = serde_json::Map::new();
                for w in words {
                    let n = m.get(w).and_then(Value::as_i64).unwrap_or(0);
                    m.insert(w.into(), json!(n + 1));
                }
                Value::Object(m)
            }
            "cmd:./merge.sh" => {
                let mut m = serde_json::Map::new();
                for part in inv.input.as_array().into_iter().flatten() {
                    for (w, n) in part.as_object().into_iter().flatten() {
                        let prev = m.get(w).and_then(Value::as_i64).unwrap_or(0);
                        m.insert(w.clone(), json!(prev + n.as_i64().unwrap_or(0)));
                    }
                }
                json!({"counts": m, "total": m.values().filter_map(Value::as_i64).sum::<i64>()})
            }
            _ => inv.input.clone(),
        })
    });
    assert_eq!(output(&r)["counts"], json!({"a": 2, "b": 1, "c": 1}));
    assert_eq!(output(&r)["route"], json!("small"));

    let l = load_file(&dir.join("orders.triggers.yaml"), &LoadOptions::default()).expect("loads");
    assert_eq!(l.kind, DocKind::TriggerSet);
    let r = run_with(&l, json!({"items": [2, 3]}), |inv| Ok(inv.input.clone()));
    assert_eq!(
        output(&r),
        json!({"priced": [2, 3], "checked": {"items": [2, 3]}})
    );
}
