//! `trigflow bench`: the performance targets of DESIGN.md, measured.
//!
//! Each scenario runs in its own child process (`trigflow bench --only X`)
//! so that the peak memory reported (the kernel's VmHWM) is that scenario's
//! alone. The parent prints one table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use trigflow_core::Engine;
use trigflow_core::ids::ExecutionId;
use trigflow_core::seams::EventSink as _;
use trigflow_core::state::ExecutionStatus;

use crate::ingest;
use trigflow_embedded::runtime::{EmbeddedRuntime as Embedded, Options};

/// Arguments of `trigflow bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Run one scenario in this process and print its row as JSON (used by
    /// the parent to measure each scenario's memory separately).
    #[arg(long)]
    only: Option<String>,
    /// Smaller sizes, for a quick check that everything runs.
    #[arg(long)]
    quick: bool,
    /// FaaSFlow stub runtimes are the published runtimes times this.
    #[arg(long, default_value_t = 0.1)]
    time_scale: f64,
    /// Folder with FaaSFlow's `*.flat.yaml` files.
    #[arg(long, default_value = "../shared/bench/faasflow")]
    faasflow_dir: PathBuf,
    /// Database of the `ingest-load` helper scenario (internal).
    #[arg(long, hide = true)]
    path: Option<PathBuf>,
    /// Server of the `local-ingest-load` helper scenario (internal).
    #[arg(long, hide = true)]
    nats: Option<String>,
    /// Leave out the local-mode rows (they start a private nats-server).
    #[arg(long)]
    no_local: bool,
}

/// One row of the table.
#[derive(Debug, Serialize, Deserialize)]
struct Row {
    scenario: String,
    result: String,
    detail: String,
    peak_mb: f64,
}

fn peak_mb() -> f64 {
    // VmHWM is the resident-set high-water mark of this process.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn scenarios(args: &BenchArgs) -> Vec<String> {
    let mut out = vec!["engine-ingest".to_owned(), "embedded-ingest".to_owned()];
    let mut files: Vec<String> = std::fs::read_dir(&args.faasflow_dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".flat.yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    out.extend(files.iter().map(|f| format!("faasflow:{f}")));
    out.push("fanout-10k".to_owned());
    if cfg!(feature = "local") && !args.no_local {
        out.push("local-ingest".to_owned());
        out.extend(files.iter().map(|f| format!("local-faasflow:{f}")));
    }
    out
}

/// Runs the benchmarks.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(only) = &args.only {
        let row = crate::runtime()?.block_on(scenario(only, &args))?;
        println!("{}", serde_json::to_string(&row)?);
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe()?;
    let list = scenarios(&args);
    if !list.iter().any(|s| s.starts_with("faasflow:")) {
        eprintln!(
            "trigflow bench: no FaaSFlow files in {} (pass --faasflow-dir); skipping those rows",
            args.faasflow_dir.display()
        );
    }
    println!("| scenario | result | detail | peak RSS (MB) |");
    println!("|---|---|---|---|");
    let mut failed = false;
    for name in list {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "bench",
            "--only",
            &name,
            "--time-scale",
            &args.time_scale.to_string(),
        ])
        .arg("--faasflow-dir")
        .arg(&args.faasflow_dir);
        if args.quick {
            cmd.arg("--quick");
        }
        let out = cmd
            .output()
            .with_context(|| format!("cannot run scenario {name}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<Row>(text.trim()) {
            Ok(row) if out.status.success() => {
                println!(
                    "| {} | {} | {} | {:.1} |",
                    row.scenario, row.result, row.detail, row.peak_mb
                );
            }
            _ => {
                failed = true;
                println!(
                    "| {name} | FAILED | {} | |",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("no output")
                );
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn scenario(name: &str, args: &BenchArgs) -> anyhow::Result<Row> {
    let (joins, per_join) = if args.quick { (20, 100) } else { (200, 1000) };
    let (result, detail) = match name {
        "engine-ingest" => engine_ingest(joins, per_join)?,
        "embedded-ingest" => embedded_ingest(joins, per_join, args.quick).await?,
        "ingest-load" => {
            let path = args.path.as_deref().context("ingest-load needs --path")?;
            ingest_load(path, joins, per_join).await?
        }
        "fanout-10k" => fanout(if args.quick { 1000 } else { 10_000 }).await?,
        #[cfg(feature = "local")]
        "local-ingest" => crate::bench_local::ingest(joins, per_join, args.quick).await?,
        #[cfg(feature = "local")]
        "local-ingest-load" => {
            let url = args
                .nats
                .as_deref()
                .context("local-ingest-load needs --nats")?;
            let done = crate::bench_local::ingest_load(url, joins, per_join).await?;
            (done, String::new())
        }
        other => {
            if let Some(file) = other.strip_prefix("faasflow:") {
                faasflow(&args.faasflow_dir.join(file), args.time_scale).await?
            } else if let Some(file) = other.strip_prefix("local-faasflow:") {
                local_faasflow(&args.faasflow_dir.join(file), args.time_scale).await?
            } else {
                bail!("unknown scenario {other:?}")
            }
        }
    };
    Ok(Row {
        scenario: name.to_owned(),
        result,
        detail,
        peak_mb: peak_mb(),
    })
}

fn exec(name: &str) -> anyhow::Result<ExecutionId> {
    Ok(name.parse()?)
}

/// Triggerflow's ingestion test through the engine alone.
fn engine_ingest(joins: usize, per_join: u64) -> anyhow::Result<(String, String)> {
    let wf = ingest::workflow(joins, per_join)?;
    let e = exec("bench-engine")?;
    let events = ingest::events(&e, joins, 0..joins as u64 * per_join)?;
    let engine = Engine::new();
    let mut state = engine.start(&wf, e, Value::Null, 0)?;
    let t = Instant::now();
    for chunk in events.chunks(trigflow_embedded::runtime::BATCH) {
        engine.apply(&mut state, chunk, 0);
    }
    let secs = t.elapsed().as_secs_f64();
    let fired = state
        .history
        .iter()
        .filter(|f| f.trigger.as_str() != "all")
        .count();
    if fired != joins {
        bail!("expected {joins} join firings, got {fired}");
    }
    Ok((
        format!("{:.0} events/s", events.len() as f64 / secs),
        format!(
            "{} events, {joins} joins fired once each, {:.3} s",
            events.len(),
            secs
        ),
    ))
}

/// Writes the ingestion test's execution and its events into the embedded
/// database at `path`, as producers would have (run in its own process, so
/// that generating the events does not count towards the worker's memory).
async fn ingest_load(
    path: &std::path::Path,
    joins: usize,
    per_join: u64,
) -> anyhow::Result<(String, String)> {
    let rt = Embedded::open(path, Options::default()).await?;
    let wf = ingest::workflow(joins, per_join)?;
    let e = exec("bench-embedded")?;
    rt.worker.start(&wf, e.clone(), Value::Null).await?;
    let total = joins as u64 * per_join;
    let mut start = 0;
    while start < total {
        let end = (start + 10_000).min(total);
        rt.queue
            .publish(&ingest::events(&e, joins, start..end)?)
            .await?;
        start = end;
    }
    rt.close().await;
    Ok((format!("{total} events queued"), String::new()))
}

/// Triggerflow's ingestion test through the embedded worker: events
/// pre-loaded in the durable queue by another process, then timed until the
/// execution completes (every state write fsynced).
async fn embedded_ingest(
    joins: usize,
    per_join: u64,
    quick: bool,
) -> anyhow::Result<(String, String)> {
    let dir = tempdir()?;
    let path = dir.join("bench.redb");
    let mut load = std::process::Command::new(std::env::current_exe()?);
    load.args(["bench", "--only", "ingest-load", "--path"])
        .arg(&path);
    if quick {
        load.arg("--quick");
    }
    let out = load.output()?;
    if !out.status.success() {
        bail!(
            "loading the events failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rt = Embedded::open(&path, Options::default()).await?;
    let e = exec("bench-embedded")?;
    let total = joins as u64 * per_join;
    let t = Instant::now();
    rt.wait(&e, false).await?;
    let secs = t.elapsed().as_secs_f64();
    let state = rt.worker.load(&e).await?.context("execution vanished")?;
    rt.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    match &state.status {
        ExecutionStatus::Succeeded { output } if output == &json!({"joins_fired": joins}) => {}
        other => bail!("ingestion run ended {other:?}"),
    }
    Ok((
        format!("{:.0} events/s", total as f64 / secs),
        format!("{total} events, {joins} joins fired once each, {secs:.3} s, durable"),
    ))
}

/// One FaaSFlow workflow with stub functions: overhead = end-to-end minus
/// the critical path of the stubs' sleeps.
async fn faasflow(file: &std::path::Path, time_scale: f64) -> anyhow::Result<(String, String)> {
    let opts = trigflow_dag::LoadOptions {
        time_scale,
        ..trigflow_dag::LoadOptions::default()
    };
    let loaded = trigflow_dag::load_file(file, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = loaded.faasflow.context("not a FaaSFlow document")?;
    let input = json!({});
    let critical = info.critical_path_ms(&input);
    let (state, secs) = run_fresh(&loaded.workflow, "bench-faasflow", input).await?;
    let ms = secs * 1000.0;
    if !matches!(state.status, ExecutionStatus::Succeeded { .. }) {
        bail!("{} ended {:?}", file.display(), state.status);
    }
    Ok((
        format!("{:.1} ms overhead", ms - critical as f64),
        format!(
            "end-to-end {ms:.1} ms, critical path {critical} ms (time scale {time_scale}), {} invocations",
            state.next_seq
        ),
    ))
}

#[cfg(feature = "local")]
async fn local_faasflow(
    file: &std::path::Path,
    time_scale: f64,
) -> anyhow::Result<(String, String)> {
    crate::bench_local::faasflow(file, time_scale).await
}

#[cfg(not(feature = "local"))]
async fn local_faasflow(
    _file: &std::path::Path,
    _time_scale: f64,
) -> anyhow::Result<(String, String)> {
    bail!("this trigflow was built without the `local` feature")
}

/// Fan-out / fan-in of `n` function calls in one execution.
async fn fanout(n: usize) -> anyhow::Result<(String, String)> {
    let doc = "dag: fanout\ntasks:\n  work:\n    function: stub:0ms\n    foreach: .input.items\n  total:\n    function: stub:0ms\n    depends: [work]\n    input: .results.work | length\noutput: .results.total\n";
    let loaded = trigflow_dag::load_str(doc, "fanout.yaml", &trigflow_dag::LoadOptions::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let items: Vec<usize> = (0..n).collect();
    let (state, secs) =
        run_fresh(&loaded.workflow, "bench-fanout", json!({"items": items})).await?;
    match &state.status {
        ExecutionStatus::Succeeded { output } if output == &json!(n) => {}
        other => bail!("fan-out ended {other:?}"),
    }
    // Every trigger fires at most once in this workflow: a join that fired
    // twice would show up as a repeated trigger id.
    let mut ids: Vec<&str> = state.history.iter().map(|f| f.trigger.as_str()).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != total {
        bail!(
            "a trigger fired more than once: {total} firings of {} triggers",
            ids.len()
        );
    }
    Ok((
        format!("{secs:.3} s"),
        format!(
            "{n} calls + join fired once, {:.0} calls/s",
            n as f64 / secs
        ),
    ))
}

/// Runs one execution in a fresh embedded database; returns the final state
/// and the seconds it took.
async fn run_fresh(
    wf: &trigflow_core::model::Workflow,
    execution: &str,
    input: Value,
) -> anyhow::Result<(trigflow_core::state::ExecutionState, f64)> {
    let dir = tempdir()?;
    let rt = Embedded::open(&dir.join("bench.redb"), Options::default()).await?;
    let e = exec(execution)?;
    let t = Instant::now();
    let state = rt.run(wf, &e, input, false).await;
    let secs = t.elapsed().as_secs_f64();
    rt.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((state?, secs))
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("trigflow-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
