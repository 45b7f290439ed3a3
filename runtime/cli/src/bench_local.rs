//! Local-mode rows of `trigflow bench`: the same workloads as the embedded
//! rows, through a worker on NATS JetStream (events) and JetStream KV
//! (state), against a private `nats-server` each scenario starts on a free
//! loopback port (so no run sees another's streams).
//!
//! The numbers include the network hops to nats-server and its disk
//! writes; the peak RSS is the trigflow process's alone (nats-server is a
//! separate process and is not counted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use trigflow_core::Engine;
use trigflow_core::ids::ExecutionId;
use trigflow_core::seams::EventSink as _;
use trigflow_core::state::{ExecutionState, ExecutionStatus};
use trigflow_embedded::{FunctionCaller, FunctionRegistry, InvokerConfig};
use trigflow_local::testing::NatsServer;
use trigflow_local::{Agent, Local, LocalConfig};
use trigflow_worker::Worker;

use crate::ingest;

/// Worker batch size for the local rows unless `TRIGFLOW_BATCH_SIZE` says
/// otherwise: large batches amortise the KV round trip per execution.
const BATCH: usize = 4096;

fn batch_size() -> usize {
    std::env::var(trigflow_local::names::env::BATCH_SIZE)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BATCH)
}

/// Upper bound on a scenario, so a wedged run fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(600);

fn server() -> anyhow::Result<NatsServer> {
    NatsServer::start().context("local-mode rows need nats-server >= 2.10 on PATH")
}

fn config(url: String) -> LocalConfig {
    LocalConfig::with_url(url)
}

fn worker_on(local: &Local) -> Worker {
    Worker::new(
        Engine::new(),
        Arc::new(local.store()),
        Arc::new(local.sink()),
        Arc::new(local.invoker()),
    )
}

/// Runs a worker on `local` until `execution` finishes; returns the
/// seconds from the call to its end.
async fn run_until_finished(local: &Local, execution: &ExecutionId) -> anyhow::Result<f64> {
    let worker = worker_on(local);
    let source = local.source();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let target = execution.clone();
    let t = Instant::now();
    let stopped = async move {
        let mut rx = rx;
        let _ = rx.wait_for(|done| *done).await;
    };
    let run = worker.run(&source, batch_size(), stopped, |r| {
        if r.finished.contains(&target) {
            let _ = tx.send(true);
        }
    });
    tokio::time::timeout(DEADLINE, run)
        .await
        .with_context(|| format!("{execution} did not finish within {DEADLINE:?}"))?;
    Ok(t.elapsed().as_secs_f64())
}

async fn load_state(local: &Local, execution: &ExecutionId) -> anyhow::Result<ExecutionState> {
    worker_on(local)
        .load(execution)
        .await?
        .with_context(|| format!("execution {execution} vanished"))
}

/// Writes the ingestion test's execution and events into the server at
/// `url`, as producers would (its own process, so generating the events
/// does not count towards the worker's memory).
pub async fn ingest_load(url: &str, joins: usize, per_join: u64) -> anyhow::Result<String> {
    let local = Local::connect(config(url.to_owned())).await?;
    let wf = ingest::workflow(joins, per_join)?;
    let e: ExecutionId = "bench-local".parse()?;
    worker_on(&local).start(&wf, e.clone(), Value::Null).await?;
    let sink = local.sink();
    let total = joins as u64 * per_join;
    let mut start = 0;
    while start < total {
        let end = (start + 10_000).min(total);
        sink.publish(&ingest::events(&e, joins, start..end)?)
            .await?;
        start = end;
    }
    Ok(format!("{total} events queued"))
}

/// Triggerflow's ingestion test through one local-mode worker: events
/// pre-loaded in the JetStream stream by another process, then timed until
/// the execution completes (every state write a KV compare-and-set).
pub async fn ingest(joins: usize, per_join: u64, quick: bool) -> anyhow::Result<(String, String)> {
    let server = server()?;
    let mut load = std::process::Command::new(std::env::current_exe()?);
    load.args([
        "bench",
        "--only",
        "local-ingest-load",
        "--nats",
        &server.url(),
    ]);
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
    let local = Local::connect(config(server.url())).await?;
    let e: ExecutionId = "bench-local".parse()?;
    let secs = run_until_finished(&local, &e).await?;
    let state = load_state(&local, &e).await?;
    match &state.status {
        ExecutionStatus::Succeeded { output } if output == &json!({"joins_fired": joins}) => {}
        other => bail!("local ingestion run ended {other:?}"),
    }
    let total = joins as u64 * per_join;
    Ok((
        format!("{:.0} events/s", total as f64 / secs),
        format!("{total} events, {joins} joins fired once each, {secs:.3} s, JetStream + KV"),
    ))
}

/// Every `stub:` function a workflow calls (the FaaSFlow loader turns each
/// published runtime into one).
fn stub_functions(wf: &trigflow_core::model::Workflow) -> anyhow::Result<Vec<String>> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) if k == "function" && s.starts_with("stub:") => {
                            out.push(s.clone());
                        }
                        other => walk(other, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&serde_json::to_value(wf)?, &mut out);
    out.sort();
    out.dedup();
    Ok(out)
}

/// One FaaSFlow workflow in local mode: a worker and an agent (serving the
/// stubs) in this process, talking through nats-server. Overhead =
/// end-to-end minus the critical path of the stubs' sleeps.
pub async fn faasflow(file: &std::path::Path, time_scale: f64) -> anyhow::Result<(String, String)> {
    let opts = trigflow_dag::LoadOptions {
        time_scale,
        ..trigflow_dag::LoadOptions::default()
    };
    let loaded = trigflow_dag::load_file(file, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = loaded.faasflow.context("not a FaaSFlow document")?;
    let input = json!({});
    let critical = info.critical_path_ms(&input);

    let server = server()?;
    let local = Local::connect(config(server.url())).await?;
    let caller = FunctionCaller::new(FunctionRegistry::new(), &InvokerConfig::default())?;
    let mut agent = Agent::new(&local).with_node("bench");
    for function in stub_functions(&loaded.workflow)? {
        let caller = caller.clone();
        let reference = function.clone();
        agent = agent.serve_handler(
            &function,
            Arc::new(move |inv| {
                let caller = caller.clone();
                let reference = reference.clone();
                Box::pin(async move { caller.call(&reference, inv.input).await })
            }),
        );
    }
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent_task = tokio::spawn(async move {
        agent
            .run(async move {
                let _ = agent_stopped.await;
            })
            .await
    });
    // Connected and consuming before the clock starts, as a deployed
    // worker and agent would be.
    let e: ExecutionId = "bench-faasflow".parse()?;
    let worker = worker_on(&local);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    worker.start(&loaded.workflow, e.clone(), input).await?;
    run_until_finished(&local, &e).await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let _ = stop_agent.send(());
    agent_task.await??;
    let state = load_state(&local, &e).await?;
    if !matches!(state.status, ExecutionStatus::Succeeded { .. }) {
        bail!("{} ended {:?}", file.display(), state.status);
    }
    Ok((
        format!("{:.1} ms overhead", ms - critical as f64),
        format!(
            "end-to-end {ms:.1} ms, critical path {critical} ms (time scale {time_scale}), {} invocations, JetStream + KV",
            state.next_seq
        ),
    ))
}
