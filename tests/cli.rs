//! End-to-end tests of the `trigflow` binary in embedded mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn trigflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trigflow"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("trigflow runs");
    assert!(
        out.status.success(),
        "trigflow failed: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_stdout(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn wordcount_example_counts_every_word_of_the_data_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = repo().join("examples/wordcount");
    let out = run_ok(
        trigflow()
            .arg("run")
            .arg(example.join("workflow.yaml"))
            .arg("--db")
            .arg(dir.path().join("db.redb")),
    );
    // The expected totals are computed here from the same files.
    let mut words = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(example.join("data")).expect("data dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        files += 1;
        words += text
            .to_lowercase()
            .split(|c: char| !(c.is_ascii_lowercase() || c == '\''))
            .filter(|w| !w.is_empty())
            .count();
    }
    let output = json_stdout(&out);
    assert_eq!(output["files"], files);
    assert_eq!(output["words"], words);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("started") && stderr.contains("succeeded"),
        "{stderr}"
    );
}

#[test]
fn quorum_example_accepts_three_of_five_and_runs_the_dynamic_trigger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = repo().join("examples/quorum");
    let input = std::fs::read_to_string(example.join("input.json")).expect("input");
    let out = run_ok(
        trigflow()
            .arg("run")
            .arg(example.join("workflow.yaml"))
            .arg("--input")
            .arg(&input)
            .arg("--execution")
            .arg("q1")
            .arg("--db")
            .arg(dir.path().join("db.redb")),
    );
    let req: serde_json::Value = serde_json::from_str(&input).expect("input JSON");
    let ok: Vec<f64> = req["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .filter(|r| r["fail"] != true)
        .map(|r| 20.0 + r["id"].as_f64().expect("id"))
        .collect();
    let output = json_stdout(&out);
    let reading = output["reading"].as_f64().expect("reading");
    assert!(
        (reading - ok.iter().sum::<f64>() / ok.len() as f64).abs() < 1e-9,
        "{output}"
    );
    assert_eq!(output["confirmation"]["accepted"], true);
    // The dynamic trigger `finish` fired, once.
    let hist = run_ok(
        trigflow()
            .args(["history", "q1", "--json", "--db"])
            .arg(dir.path().join("db.redb")),
    );
    let firings = json_stdout(&hist)["firings"]
        .as_array()
        .cloned()
        .expect("firings");
    let finish = firings.iter().filter(|f| f["trigger"] == "finish").count();
    assert_eq!(finish, 1, "{firings:?}");
}

#[test]
fn failing_quorum_exits_non_zero_with_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = repo().join("examples/quorum");
    let input = r#"{"replicas": [{"id": 1, "fail": true}, {"id": 2, "fail": true}, {"id": 3, "fail": true}, {"id": 4}, {"id": 5}]}"#;
    let out = trigflow()
        .arg("run")
        .arg(example.join("workflow.yaml"))
        .args(["--input", input, "--db"])
        .arg(dir.path().join("db.redb"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("QuorumLost"));
}

#[test]
fn validate_accepts_the_examples_and_rejects_bad_definitions_with_locations() {
    for ex in [
        "examples/wordcount/workflow.yaml",
        "examples/quorum/workflow.yaml",
    ] {
        run_ok(trigflow().arg("validate").arg(repo().join(ex)));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "dag: bad\ntasks:\n  a:\n    function: stub:1ms\n    depends: [b]\n  b:\n    function: stub:1ms\n    depends: [a]\n  c:\n    function: stub:1ms\n    depends: [nope]\n    input: '.x | ]'\n",
    )
    .expect("write");
    let out = trigflow().arg("validate").arg(&bad).output().expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("nope"), "unknown task not named: {err}");
    assert!(err.contains("cycle"), "cycle not reported: {err}");
    assert!(
        err.contains("tasks.c.input"),
        "bad expression not located: {err}"
    );
    // A bad definition is rejected by `run` too, before anything runs.
    let out = trigflow()
        .arg("run")
        .arg(&bad)
        .arg("--db")
        .arg(dir.path().join("db.redb"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        !dir.path().join("db.redb").exists(),
        "nothing may run for a bad definition"
    );
}

#[test]
fn bad_input_json_is_named() {
    let out = trigflow()
        .arg("run")
        .arg(repo().join("examples/wordcount/workflow.yaml"))
        .args(["--input", "{not json"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input is not valid JSON"));
}

#[test]
fn graph_prints_a_mermaid_flowchart_with_every_task() {
    let out = run_ok(
        trigflow()
            .arg("graph")
            .arg(repo().join("examples/wordcount/workflow.yaml")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("flowchart"), "{text}");
    for task in ["list", "count", "merge"] {
        assert!(text.contains(task), "{task} missing: {text}");
    }
}

#[test]
fn status_lists_executions_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db.redb");
    let wf = dir.path().join("hello.yaml");
    std::fs::write(
        &wf,
        "dag: hello\ntasks:\n  greet:\n    function: stub:1ms\n    input: '{name: .input.name}'\n",
    )
    .expect("write");
    let out = run_ok(
        trigflow()
            .arg("run")
            .arg(&wf)
            .args(["--input", r#"{"name":"Ada"}"#, "--execution", "h1", "--db"])
            .arg(&db),
    );
    assert_eq!(json_stdout(&out), serde_json::json!({"name": "Ada"}));
    let out = run_ok(trigflow().arg("status").arg("--db").arg(&db));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("h1") && text.contains("hello") && text.contains("succeeded"),
        "{text}"
    );
    let out = run_ok(trigflow().args(["status", "h1", "--db"]).arg(&db));
    assert_eq!(json_stdout(&out)["status"]["status"], "succeeded");
    // Running the same execution id again resumes it: already finished, the
    // same output, nothing re-run.
    let again = run_ok(
        trigflow()
            .arg("run")
            .arg(&wf)
            .args(["--input", r#"{"name":"Ada"}"#, "--execution", "h1", "--db"])
            .arg(&db),
    );
    assert_eq!(json_stdout(&again), serde_json::json!({"name": "Ada"}));
    let missing = trigflow()
        .args(["history", "nope", "--db"])
        .arg(&db)
        .output()
        .expect("runs");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no execution nope"));
}

#[test]
fn start_send_and_worker_drive_an_execution_waiting_for_an_external_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db.redb");
    let wf = dir.path().join("approval.yaml");
    std::fs::write(
        &wf,
        r#"id: approval
triggers:
  - id: prepare
    on: {types: [trigflow.execution.started]}
    actions: [{kind: invoke, function: "stub:1ms", step: prepared, input: "{order: .event.data.order}"}]
  - id: approved
    on: {subjects: [approval], types: [trigflow.user.event]}
    condition: {kind: expr, expr: ".event.data.ok == true"}
    actions: [{kind: complete, output: "{order: .context.input.order, by: .event.data.by}"}]
"#,
    )
    .expect("write");
    let out = run_ok(
        trigflow()
            .arg("start")
            .arg(&wf)
            .args(["--input", r#"{"order": 7}"#, "--execution", "a1", "--db"])
            .arg(&db),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "a1");
    // A message that is not a CloudEvent, and an event for an execution
    // that does not exist: both must end up as dead letters, and must not
    // hold up the approval.
    run_ok(
        trigflow()
            .args(["send", "--raw", "{not a cloudevent", "--db"])
            .arg(&db),
    );
    run_ok(
        trigflow()
            .args([
                "send",
                "--execution",
                "nope",
                "--subject",
                "approval",
                "--db",
            ])
            .arg(&db),
    );
    // The same approval sent twice (same id) counts once.
    for _ in 0..2 {
        run_ok(
            trigflow()
                .args([
                    "send",
                    "--execution",
                    "a1",
                    "--subject",
                    "approval",
                    "--id",
                    "k1",
                    "--data",
                    r#"{"ok": true, "by": "ada"}"#,
                    "--db",
                ])
                .arg(&db),
        );
    }
    run_ok(trigflow().args(["worker", "--until-idle", "--db"]).arg(&db));
    let status = run_ok(trigflow().args(["status", "a1", "--db"]).arg(&db));
    let status = json_stdout(&status);
    assert_eq!(status["status"]["status"], "succeeded", "{status}");
    assert_eq!(
        status["status"]["output"],
        serde_json::json!({"order": 7, "by": "ada"})
    );
    let dead = run_ok(trigflow().args(["dead-letters", "--db"]).arg(&db));
    let letters: Vec<serde_json::Value> = String::from_utf8_lossy(&dead.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("dead letter JSON"))
        .collect();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(
        letters.iter().any(|l| l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a structured-mode CloudEvent"))),
        "{letters:?}"
    );
    assert!(
        letters.iter().any(|l| l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown execution nope"))),
        "{letters:?}"
    );
}

#[test]
fn bench_quick_runs_every_scenario_and_prints_a_table() {
    let faasflow = repo().join("../shared/bench/faasflow");
    assert!(
        faasflow.is_dir(),
        "the FaaSFlow workflows are expected in {} (the shared/ folder beside the repository)",
        faasflow.display()
    );
    let out = run_ok(
        trigflow()
            .args(["bench", "--quick", "--faasflow-dir"])
            .arg(&faasflow),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("| scenario | result |"), "{table}");
    assert!(!table.contains("FAILED"), "{table}");
    for row in [
        "engine-ingest",
        "embedded-ingest",
        "fanout-10k",
        "benchmark_video",
        "local-ingest",
        "local-faasflow:benchmark_video",
    ] {
        assert!(table.contains(row), "{row} missing:\n{table}");
    }
    // One row per FaaSFlow file in each of embedded and local mode, plus
    // the three embedded rows and local-ingest.
    let files = std::fs::read_dir(&faasflow)
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".flat.yaml"))
        })
        .count();
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario"))
            .count(),
        2 * files + 4
    );
}

#[test]
fn asl_state_machines_run_validate_and_draw() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = dir.path().join("machine.asl.json");
    std::fs::write(
        &sm,
        r#"{
  "Comment": "Task (mapped to a stub), Choice and Pass with ResultPath",
  "StartAt": "Echo",
  "States": {
    "Echo": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:echo",
             "ResultPath": "$.echoed", "Next": "Big?"},
    "Big?": {"Type": "Choice",
             "Choices": [{"Variable": "$.n", "NumericGreaterThan": 10, "Next": "Big"}],
             "Default": "Small"},
    "Big": {"Type": "Pass", "Result": "big", "ResultPath": "$.size", "End": true},
    "Small": {"Type": "Pass", "Result": "small", "ResultPath": "$.size", "End": true}
  }
}"#,
    )
    .expect("write");
    let resources = dir.path().join("resources.json");
    std::fs::write(&resources, r#"{"echo": "stub:1ms"}"#).expect("write");
    for (n, size) in [(42, "big"), (3, "small")] {
        let out = run_ok(
            trigflow()
                .arg("run")
                .arg(&sm)
                .args(["--input", &format!(r#"{{"n": {n}}}"#), "--resources"])
                .arg(&resources)
                .arg("--db")
                .arg(dir.path().join("db.redb")),
        );
        assert_eq!(
            json_stdout(&out),
            serde_json::json!({"n": n, "echoed": {"n": n}, "size": size})
        );
    }
    let graph = run_ok(trigflow().arg("graph").arg(&sm));
    let text = String::from_utf8_lossy(&graph.stdout);
    assert!(text.contains("Echo") && text.contains("Big?"), "{text}");

    let bad = dir.path().join("bad.asl.json");
    std::fs::write(
        &bad,
        r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Nowhere"}}}"#,
    )
    .expect("write");
    let out = trigflow().arg("validate").arg(&bad).output().expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.asl.json") && err.contains("States.A.Next"),
        "{err}"
    );
}

#[test]
fn task_success_failure_and_heartbeat_answer_an_asl_callback_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db.redb");
    let sm = dir.path().join("callback.asl.json");
    std::fs::write(
        &sm,
        r#"{"StartAt": "Ask", "States": {
  "Ask": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:123456789012:function:ask.waitForTaskToken",
          "Parameters": {"token.$": "$$.Task.Token", "order.$": "$.order"},
          "ResultPath": "$.answer",
          "Catch": [{"ErrorEquals": ["Rejected"], "ResultPath": "$.answer", "Next": "No"}],
          "End": true},
  "No": {"Type": "Pass", "End": true}}}"#,
    )
    .expect("write");
    // The function only hands the token on: it writes its input to a file
    // named after the order.
    let resources = dir.path().join("resources.json");
    std::fs::write(
        &resources,
        r#"{"ask": "cmd:sh -c 'cat > \"ask-$$.json\"; echo {}'"}"#,
    )
    .expect("write");
    let token_of = |order: u64| -> String {
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ask-"))
            {
                let v: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
                        .expect("function input is JSON");
                if v["order"] == order {
                    return v["token"].as_str().expect("token").to_owned();
                }
            }
        }
        panic!("no function call for order {order}");
    };
    let worker = || {
        run_ok(
            trigflow()
                .args(["worker", "--until-idle", "--functions-dir"])
                .arg(dir.path())
                .arg("--db")
                .arg(&db),
        )
    };
    let status = |e: &str| json_stdout(&run_ok(trigflow().args(["status", e, "--db"]).arg(&db)));
    for (exec, order) in [("yes", 1u64), ("no", 2)] {
        run_ok(
            trigflow()
                .arg("start")
                .arg(&sm)
                .arg("--resources")
                .arg(&resources)
                .args(["--input", &format!(r#"{{"order": {order}}}"#)])
                .args(["--execution", exec, "--db"])
                .arg(&db),
        );
    }
    // Idle once both executions wait for their answers. (No
    // HeartbeatSeconds here: its timer would keep `--until-idle` waiting;
    // the heartbeat event is accepted and ignored.)
    worker();
    assert_eq!(status("yes")["status"]["status"], "running");
    let (yes, no) = (token_of(1), token_of(2));
    run_ok(
        trigflow()
            .args(["task-heartbeat", "--token", &yes, "--db"])
            .arg(&db),
    );
    run_ok(
        trigflow()
            .args(["task-success", "--execution", "yes", "--token", &yes])
            .args(["--output", r#"{"approved": true}"#, "--db"])
            .arg(&db),
    );
    // No --execution: the token names it.
    run_ok(
        trigflow()
            .args(["task-failure", "--token", &no, "--error", "Rejected"])
            .args(["--cause", "over budget", "--db"])
            .arg(&db),
    );
    worker();
    let s = status("yes");
    assert_eq!(s["status"]["status"], "succeeded", "{s}");
    assert_eq!(
        s["status"]["output"],
        serde_json::json!({"order": 1, "answer": {"approved": true}})
    );
    let s = status("no");
    assert_eq!(
        s["status"]["output"],
        serde_json::json!({"order": 2, "answer": {"Error": "Rejected", "Cause": "over budget"}}),
        "{s}"
    );
}
