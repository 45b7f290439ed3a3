//! kill -9 during an embedded run, restart, same result.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn trigflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trigflow"))
}

/// A map over `n` items, each a command that takes a while and logs each
/// call, then a join that sums the results.
fn write_workflow(dir: &Path, n: usize) -> std::path::PathBuf {
    std::fs::write(
        dir.join("step.sh"),
        "read x\nsleep 0.2\necho \"$x\" >> calls.log\necho $((x * 2))\n",
    )
    .expect("script");
    let wf = dir.join("wf.yaml");
    std::fs::write(
        &wf,
        "dag: slow\ntasks:\n  double:\n    function: cmd:sh step.sh\n    foreach: .input.items\n  sum:\n    function: stub:1ms\n    depends: [double]\n    input: '{sum: (.results.double | add), n: (.results.double | length)}'\n",
    )
    .expect("workflow");
    let _ = n;
    wf
}

fn input(n: usize) -> String {
    let items: Vec<usize> = (1..=n).collect();
    serde_json::json!({ "items": items }).to_string()
}

fn run_cmd(wf: &Path, db: &Path, n: usize) -> Command {
    let mut c = trigflow();
    c.arg("run")
        .arg(wf)
        .args([
            "--input",
            &input(n),
            "--execution",
            "e1",
            "--concurrency",
            "4",
            "--db",
        ])
        .arg(db);
    c
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn kill_dash_nine_mid_run_then_restart_gives_the_fault_free_result() {
    let n = 24;
    // Fault-free run.
    let clean = tempfile::tempdir().expect("tempdir");
    let wf = write_workflow(clean.path(), n);
    let out = run_cmd(&wf, &clean.path().join("db.redb"), n)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(expected["n"], n);

    // Faulty run: kill -9 once some but not all calls have finished.
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write_workflow(dir.path(), n);
    let db = dir.path().join("db.redb");
    let mut child = run_cmd(&wf, &db, n)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let log = dir.path().join("calls.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(&log) < 6 {
        assert!(Instant::now() < deadline, "no progress before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let before = lines(&log);
    assert!(before < n, "the run finished before it could be killed");

    // Restart with the same execution id: it resumes and finishes.
    let out = run_cmd(&wf, &db, n).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got, expected);

    // Every call ran at least once; the join fired exactly once.
    let calls = std::fs::read_to_string(&log).expect("log");
    // A call whose input was still being written when trigflow was killed
    // reads an empty stdin and logs an empty line: that is the killed run's
    // orphan, not a call of the resumed run.
    let mut seen: Vec<usize> = calls
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad log line {l:?} in:\n{calls}"))
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (1..=n).collect::<Vec<_>>());
    let hist = trigflow()
        .args(["history", "e1", "--json", "--db"])
        .arg(&db)
        .output()
        .expect("history");
    let v: serde_json::Value = serde_json::from_slice(&hist.stdout).expect("json");
    let firings = v["firings"].as_array().expect("firings");
    let mut triggers: Vec<&str> = firings
        .iter()
        .filter_map(|f| f["trigger"].as_str())
        .collect();
    let total = triggers.len();
    triggers.sort_unstable();
    triggers.dedup();
    assert_eq!(triggers.len(), total, "a trigger fired twice: {firings:?}");
}
