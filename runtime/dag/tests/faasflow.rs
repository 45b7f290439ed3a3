//! The eight FaaSFlow benchmark workflows load, compile and run to
//! completion in the simulator with stub functions.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use trigflow_core::state::ExecutionStatus;
use trigflow_core::{Engine, EventOutcome, sim};
use trigflow_dag::{DocKind, LoadOptions, Loaded, load_file};

fn bench_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench/faasflow")
}

fn load(name: &str, opts: &LoadOptions) -> Loaded {
    let path = bench_dir().join(format!("{name}.flat.yaml"));
    load_file(&path, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// The stub: echoes its input (the embedded invoker also sleeps).
fn run(l: &Loaded, input: Value) -> (BTreeSet<String>, Vec<trigflow_core::state::Invocation>) {
    let r = sim::run(
        &Engine::new(),
        &l.workflow,
        input,
        |inv| Ok(inv.input.clone()),
        1_000_000,
    )
    .expect("starts");
    assert!(
        matches!(r.state.status, ExecutionStatus::Succeeded { .. }),
        "{}: {:?}",
        l.workflow.id,
        r.state.status
    );
    assert!(
        r.outcomes
            .iter()
            .all(|o| !matches!(o, EventOutcome::Poison { .. })),
        "poison events"
    );
    let tasks = r
        .invocations
        .iter()
        .map(|i| i.step.trim_start_matches("fn/").to_owned())
        .collect();
    (tasks, r.invocations)
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

const ALL: [&str; 8] = [
    "benchmark_fileprocessing",
    "benchmark_generator_cycles",
    "benchmark_generator_epigenomics",
    "benchmark_generator_genome",
    "benchmark_generator_soykb",
    "benchmark_illgal_recognizer",
    "benchmark_video",
    "benchmark_wordcount",
];

#[test]
fn all_eight_run_every_function_they_should() {
    for name in ALL {
        let l = load(name, &LoadOptions::default());
        assert_eq!(l.kind, DocKind::Faasflow);
        assert_eq!(l.workflow.id.as_str(), name);
        let info = l.faasflow.as_ref().expect("faasflow info");
        let (ran, _) = run(&l, json!({}));
        assert_eq!(ran, info.tasks_run(&json!({})), "{name}");
        // Every function reference is a stub with the scaled runtime.
        for inv_name in &ran {
            assert!(info.functions.contains(inv_name), "{name}: {inv_name}");
        }
    }
}

#[test]
fn pure_dags_run_every_node() {
    // Without switches every function runs; node counts from SOURCE.md.
    for (name, nodes) in [
        ("benchmark_generator_cycles", 46),
        ("benchmark_generator_epigenomics", 45),
        ("benchmark_generator_genome", 50),
        ("benchmark_generator_soykb", 45),
        ("benchmark_fileprocessing", 4),
    ] {
        let l = load(name, &LoadOptions::default());
        let (ran, invs) = run(&l, json!({}));
        assert_eq!(ran.len(), nodes, "{name}");
        assert_eq!(invs.len(), nodes, "{name}: each function once");
    }
}

#[test]
fn fileprocessing_is_a_diamond_with_the_expected_critical_path() {
    let l = load("benchmark_fileprocessing", &LoadOptions::default());
    let info = l.faasflow.as_ref().expect("info");
    assert_eq!(info.stub_ms["start"], 90);
    assert_eq!(info.stub_ms["sentiment"], 19050);
    // start -> sentiment (the slower branch) -> upload
    assert_eq!(info.critical_path_ms(&json!({})), 90 + 19050 + 1000);
    let f: Vec<&str> = l
        .workflow
        .triggers
        .iter()
        .flat_map(|t| &t.actions)
        .filter_map(|a| match a {
            trigflow_core::model::Action::Invoke { function, .. } => Some(function.as_str()),
            _ => None,
        })
        .collect();
    assert!(f.contains(&"stub:90ms"), "{f:?}");
}

#[test]
fn time_scale_scales_stubs_and_critical_path() {
    let opts = LoadOptions {
        time_scale: 0.01,
        foreach_width: 3,
    };
    let l = load("benchmark_fileprocessing", &opts);
    let info = l.faasflow.as_ref().expect("info");
    assert_eq!(info.stub_ms["sentiment"], 191); // 19.05 s * 10 ms/s, rounded
    assert_eq!(info.critical_path_ms(&json!({})), 1 + 191 + 10);
}

#[test]
fn wordcount_fans_out_foreach_width_items() {
    let opts = LoadOptions {
        time_scale: 1.0,
        foreach_width: 5,
    };
    let l = load("benchmark_wordcount", &opts);
    let (ran, invs) = run(&l, json!({}));
    assert_eq!(ran, set(&["start", "count", "merge"]));
    let counts: Vec<&trigflow_core::state::Invocation> =
        invs.iter().filter(|i| i.step == "fn/count").collect();
    assert_eq!(counts.len(), 5);
    assert_eq!(counts[3].input["foreach_key"], 3);
    let info = l.faasflow.as_ref().expect("info");
    assert_eq!(info.critical_path_ms(&json!({})), 20 + 120 + 50);
}

#[test]
fn video_switch_is_driven_by_the_input_flag() {
    let l = load("benchmark_video", &LoadOptions::default());
    let info = l.faasflow.as_ref().expect("info");
    // Default branch: no `split` flag in the input.
    let (ran, _) = run(&l, json!({}));
    assert_eq!(ran, set(&["upload", "simple_process"]));
    assert_eq!(info.critical_path_ms(&json!({})), 3800 + 3000);
    // Flag set: split, a foreach of transcodes, merge.
    let (ran, invs) = run(&l, json!({"split": true}));
    assert_eq!(ran, set(&["upload", "split", "transcode", "merge"]));
    assert_eq!(invs.iter().filter(|i| i.step == "fn/transcode").count(), 3);
    assert_eq!(ran, info.tasks_run(&json!({"split": true})));
    assert_eq!(
        info.critical_path_ms(&json!({"split": true})),
        3800 + 630 + 1740 + 280
    );
}

#[test]
fn illegal_recognizer_routes_both_ways() {
    let l = load("benchmark_illgal_recognizer", &LoadOptions::default());
    let info = l.faasflow.as_ref().expect("info");
    let (ran, _) = run(&l, json!({}));
    assert_eq!(
        ran,
        set(&[
            "upload",
            "adult",
            "violence",
            "extract",
            "translate",
            "word_censor"
        ])
    );
    // upload -> adult (slower than violence) -> virtual1 -> extract ->
    // translate -> word_censor -> virtual2 -> END
    assert_eq!(
        info.critical_path_ms(&json!({})),
        20 + 1480 + 3860 + 1020 + 20
    );
    // Flagged: mosaic straight after virtual1; the text branch is skipped,
    // and mosaic still runs although its edge from virtual2 is dead.
    let (ran, invs) = run(&l, json!({"illegal_flag": true}));
    assert_eq!(ran, set(&["upload", "adult", "violence", "mosaic"]));
    assert_eq!(invs.iter().filter(|i| i.step == "fn/mosaic").count(), 1);
    assert_eq!(
        info.critical_path_ms(&json!({"illegal_flag": true})),
        20 + 1480 + 20430
    );
}

#[test]
fn faasflow_graphs_draw() {
    let l = load("benchmark_video", &LoadOptions::default());
    let m = l.graph.mermaid();
    for n in [
        "upload",
        "virtual1",
        "split",
        "transcode",
        "merge",
        "simple_process",
    ] {
        assert!(m.contains(n), "{m}");
    }
    assert!(l.graph.edges.iter().any(|e| e.from == "virtual1"
        && e.to == "simple_process"
        && e.label.as_deref() == Some("default")));
    assert_eq!(m.matches("-->").count(), 5, "{m}");
}
