//! The same ASL state machine, compiled once, runs in embedded mode (redb
//! on a temporary directory, in-process functions) and in local mode (a
//! real nats-server, one worker, one agent) with the same output.
//!
//! The functions are written once, as plain Rust closures, and registered
//! under the same function references in both modes: as `inproc:` functions
//! of the embedded runtime and as handlers of the local-mode agent (which
//! serves any reference by its full text). The machine uses Task (Lambda
//! ARNs mapped by `resources`), Choice, Map with a Retry (the pricing
//! function fails its first call for each order, deterministically) and
//! Parallel. A second test runs the same machine with its Map distributed
//! (each order a child execution), which must give the same output in both
//! modes. The same fixture runs in AWS mode (handler, SQS, DynamoDB on
//! moto) in providers/aws/tests/asl.rs.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trigflow_asl::{AslOptions, load_str_with};
use trigflow_core::Engine;
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::state::{ExecutionState, ExecutionStatus, FunctionError};
use trigflow_embedded::FunctionRegistry;
use trigflow_embedded::runtime::{EmbeddedRuntime, Options};
use trigflow_local::testing::NatsServer;
use trigflow_local::{Agent, Local, LocalConfig};
use trigflow_worker::Worker;

const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:";

/// The state machine, as a Step Functions user would write it (one
/// fixture shared by the embedded, NATS and AWS-mode tests).
fn document() -> Value {
    serde_json::from_str(include_str!("fixtures/cross_mode/machine.asl.json")).expect("fixture")
}

fn input() -> Value {
    serde_json::from_str(include_str!("fixtures/cross_mode/input.json")).expect("fixture")
}

/// What the specification prescribes for [`input`], worked out by hand:
/// each order gets its total (qty x price) and an action (ship when in
/// stock, else backorder), the summary is `[sum of totals, label]`, all
/// added to the input.
fn expected_output() -> Value {
    serde_json::from_str(include_str!("fixtures/cross_mode/expected.json")).expect("fixture")
}

const FUNCTIONS: [&str; 4] = ["validate", "price", "total", "label"];

/// The function reference every Task resolves to, in both modes.
fn reference(name: &str) -> String {
    format!("inproc:{name}")
}

fn workflow() -> Workflow {
    load(document())
}

/// The same machine with its Map distributed: each order runs as a child
/// execution (routed between executions by each mode's queue).
fn distributed_workflow() -> Workflow {
    let mut doc = document();
    doc["States"]["PerOrder"]["ItemProcessor"]["ProcessorConfig"] = json!({"Mode": "DISTRIBUTED"});
    load(doc)
}

fn load(doc: Value) -> Workflow {
    let opts = AslOptions {
        resources: FUNCTIONS
            .iter()
            .map(|f| (format!("{ARN}{f}"), reference(f)))
            .collect::<BTreeMap<_, _>>(),
        name: Some("cross-mode".into()),
        ..AslOptions::default()
    };
    match load_str_with(&doc.to_string(), "cross_mode.asl.json", &opts) {
        Ok(l) => l.workflow,
        Err(e) => panic!("load failed:\n{e}"),
    }
}

type Function = Arc<dyn Fn(Value) -> Result<Value, FunctionError> + Send + Sync>;

fn bad(cause: String) -> FunctionError {
    FunctionError {
        error: "BadInput".into(),
        cause,
    }
}

/// One mode's functions; `calls` counts every call, `flaked` the orders
/// whose first pricing call failed (fresh per mode, so each mode sees the
/// same failures).
struct Functions {
    calls: Arc<AtomicU64>,
    flaked: Arc<Mutex<HashSet<String>>>,
}

impl Functions {
    fn new() -> Self {
        Self {
            calls: Arc::new(AtomicU64::new(0)),
            flaked: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    fn get(&self, name: &str) -> Function {
        let calls = self.calls.clone();
        let f: Function = match name {
            "validate" => Arc::new(|input: Value| {
                let orders = input["orders"]
                    .as_array()
                    .ok_or_else(|| bad(format!("validate wants orders, got {input}")))?;
                Ok(json!({"count": orders.len()}))
            }),
            "price" => {
                let flaked = self.flaked.clone();
                Arc::new(move |mut order: Value| {
                    let id = order["id"].as_str().unwrap_or_default().to_owned();
                    // The first call for each order fails: the Retry must
                    // absorb it in both modes.
                    if flaked.lock().expect("flaked set").insert(id.clone()) {
                        return Err(FunctionError {
                            error: "Flaky".into(),
                            cause: format!("first attempt for {id}"),
                        });
                    }
                    let qty = order["qty"].as_i64();
                    let price = order["price"].as_i64();
                    let (Some(q), Some(p)) = (qty, price) else {
                        return Err(bad(format!("price wants qty and price, got {order}")));
                    };
                    order["total"] = json!(q * p);
                    Ok(order)
                })
            }
            "total" => Arc::new(|priced: Value| {
                let items = priced
                    .as_array()
                    .ok_or_else(|| bad(format!("total wants an array, got {priced}")))?;
                Ok(json!(
                    items
                        .iter()
                        .filter_map(|o| o["total"].as_i64())
                        .sum::<i64>()
                ))
            }),
            "label" => Arc::new(|input: Value| {
                let n = input["n"]
                    .as_i64()
                    .ok_or_else(|| bad(format!("label wants n, got {input}")))?;
                Ok(json!(format!("{n} orders")))
            }),
            other => panic!("no function {other}"),
        };
        Arc::new(move |v| {
            calls.fetch_add(1, Ordering::Relaxed);
            f(v)
        })
    }

    /// 1 validate + 3 orders × 2 pricing attempts + total + label.
    fn assert_called_as_expected(&self, mode: &str) {
        assert_eq!(self.calls.load(Ordering::Relaxed), 9, "{mode}: calls");
        let mut flaked: Vec<String> = self
            .flaked
            .lock()
            .expect("flaked set")
            .iter()
            .cloned()
            .collect();
        flaked.sort();
        assert_eq!(flaked, ["a", "b", "c"], "{mode}: every order retried");
    }
}

fn output_of(state: &ExecutionState, mode: &str) -> Value {
    match &state.status {
        ExecutionStatus::Succeeded { output } => output.clone(),
        other => panic!("{mode}: expected success, got {other:?}"),
    }
}

async fn run_embedded(wf: &Workflow) -> (Value, Functions) {
    let functions = Functions::new();
    let registry = FunctionRegistry::new();
    for name in FUNCTIONS {
        let f = functions.get(name);
        registry.register_fn(name, move |v| f(v));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = EmbeddedRuntime::open(
        &dir.path().join("db.redb"),
        Options {
            functions: registry,
            ..Options::default()
        },
    )
    .await
    .expect("open embedded runtime");
    let exec: ExecutionId = "cross-embedded".parse().expect("execution id");
    let state = tokio::time::timeout(Duration::from_secs(60), rt.run(wf, &exec, input(), false))
        .await
        .expect("embedded run finishes in time")
        .expect("embedded run");
    rt.close().await;
    (output_of(&state, "embedded"), functions)
}

/// Aborts the local-mode tasks however the test ends.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn run_local(wf: &Workflow) -> (Value, Functions) {
    let server = NatsServer::start().expect("start nats-server");
    let config = LocalConfig::with_url(server.url());
    let functions = Functions::new();

    let worker_config = config.clone();
    let worker_task = tokio::spawn(async move {
        let local = Local::connect(worker_config)
            .await
            .expect("worker connects");
        let worker = Worker::new(
            Engine::new(),
            Arc::new(local.store()),
            Arc::new(local.sink()),
            Arc::new(local.invoker()),
        );
        worker.recover().await.expect("recover");
        let timers = local.sink().timer_loop();
        let source = local.source();
        tokio::join!(
            worker.run(&source, 256, std::future::pending(), |_| {}),
            timers.run(std::future::pending()),
        );
    });

    let mut agent_fns = Vec::new();
    for name in FUNCTIONS {
        agent_fns.push((reference(name), functions.get(name)));
    }
    let agent_config = config.clone();
    let agent_task = tokio::spawn(async move {
        let local = Local::connect(agent_config).await.expect("agent connects");
        let mut agent = Agent::new(&local);
        for (reference, f) in agent_fns {
            agent = agent.serve(&reference, move |inv| {
                let result = f(inv.input);
                async move { result }
            });
        }
        agent.run(std::future::pending()).await.expect("agent runs");
    });
    let _tasks = Tasks(vec![worker_task, agent_task]);

    // The client side: write the initial state and dispatch the first call.
    let local = Local::connect(config).await.expect("connect");
    let observer = Worker::new(
        Engine::new(),
        Arc::new(local.store()),
        Arc::new(local.sink()),
        Arc::new(local.invoker()),
    );
    let exec: ExecutionId = "cross-local".parse().expect("execution id");
    observer
        .start(wf, exec.clone(), input())
        .await
        .expect("start the execution");

    let deadline = Instant::now() + Duration::from_secs(60);
    let state = loop {
        if let Some(state) = observer.load(&exec).await.expect("load state")
            && state.status.is_terminal()
        {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "local run did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (output_of(&state, "local"), functions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_state_machine_gives_the_same_output_embedded_and_on_nats() {
    let wf = workflow();
    let (embedded, embedded_fns) = run_embedded(&wf).await;
    let (local, local_fns) = run_local(&wf).await;
    embedded_fns.assert_called_as_expected("embedded");
    local_fns.assert_called_as_expected("local");
    assert_eq!(embedded, local, "embedded and local outputs differ");
    assert_eq!(embedded, expected_output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_map_gives_the_same_output_embedded_and_on_nats() {
    let wf = distributed_workflow();
    let (embedded, embedded_fns) = run_embedded(&wf).await;
    let (local, local_fns) = run_local(&wf).await;
    embedded_fns.assert_called_as_expected("embedded");
    local_fns.assert_called_as_expected("local");
    assert_eq!(embedded, local, "embedded and local outputs differ");
    assert_eq!(embedded, expected_output());
}
