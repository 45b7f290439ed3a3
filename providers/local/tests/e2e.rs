//! End to end in local mode: a DAG with a 1,000-way map and a join runs on
//! two workers sharing the JetStream consumer and two agents serving the
//! functions, against a real nats-server. Then the same run with faults: a
//! worker aborted mid-run (and a replacement started), and nats-server
//! killed and restarted on its store directory mid-run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use trigflow_core::Engine;
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::state::{ExecutionState, ExecutionStatus, FunctionError};
use trigflow_local::testing::NatsServer;
use trigflow_local::{Agent, Local, LocalConfig};
use trigflow_worker::Worker;

const WIDTH: u64 = 1_000;

const DAG: &str = r#"
dag: squares
tasks:
  split:
    function: nats:split
    input: .input.n
  square:
    function: nats:square
    depends: [split]
    foreach: .results.split
  sum:
    function: nats:sum
    depends: [square]
output: '{sum: .results.sum, count: (.results.square | length)}'
"#;

fn workflow() -> Workflow {
    trigflow_dag::load_str(DAG, "squares.yaml", &trigflow_dag::LoadOptions::default())
        .expect("valid DAG")
        .workflow
}

/// What a fault-free run must produce: computed independently of trigflow.
fn expected_output() -> Value {
    let sum: u64 = (0..WIDTH).map(|i| i * i).sum();
    json!({"sum": sum, "count": WIDTH})
}

fn config(server: &NatsServer) -> LocalConfig {
    LocalConfig {
        // Short, so deliveries held by an aborted worker or agent come back
        // quickly; still far above the time one batch takes.
        ack_wait: Duration::from_secs(5),
        call_ack_wait: Duration::from_secs(5),
        ..LocalConfig::with_url(server.url())
    }
}

fn worker_on(local: &Local) -> Worker {
    Worker::new(
        Engine::new(),
        Arc::new(local.store()),
        Arc::new(local.sink()),
        Arc::new(local.invoker()),
    )
}

/// A worker process: its own connection, outbox recovery, the batch loop
/// and a timer loop; counts the deliveries it acked.
fn spawn_worker(config: LocalConfig, acked: Arc<AtomicU64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let local = Local::connect(config).await.expect("worker connects");
        let worker = worker_on(&local);
        worker.recover().await.expect("recover");
        let timers = local.sink().timer_loop();
        let source = local.source();
        tokio::join!(
            worker.run(&source, 256, std::future::pending(), |r| {
                acked.fetch_add(r.acked.len() as u64, Ordering::Relaxed);
            }),
            timers.run(std::future::pending()),
        );
    })
}

/// An agent process serving the three functions; counts the calls it
/// started. With `hang`, its `square` never returns (counting the calls
/// stuck in it): only another agent can finish those calls, once this one
/// is gone.
fn spawn_agent(
    config: LocalConfig,
    calls: Arc<AtomicU64>,
    hang: Option<Arc<AtomicU64>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let local = Local::connect(config).await.expect("agent connects");
        let c = calls.clone();
        let agent = Agent::new(&local)
            .serve("nats:split", move |inv| {
                c.fetch_add(1, Ordering::Relaxed);
                async move {
                    let n = inv.input.as_u64().ok_or_else(|| FunctionError {
                        error: "BadInput".into(),
                        cause: format!("split wants a count, got {}", inv.input),
                    })?;
                    Ok(Value::from((0..n).collect::<Vec<u64>>()))
                }
            })
            .serve("nats:square", {
                let c = calls.clone();
                move |inv| {
                    c.fetch_add(1, Ordering::Relaxed);
                    let hang = hang.clone();
                    async move {
                        if let Some(stuck) = hang {
                            stuck.fetch_add(1, Ordering::Relaxed);
                            std::future::pending::<()>().await;
                        }
                        let x = inv.input.as_u64().ok_or_else(|| FunctionError {
                            error: "BadInput".into(),
                            cause: format!("square wants a number, got {}", inv.input),
                        })?;
                        Ok(Value::from(x * x))
                    }
                }
            })
            .serve("nats:sum", {
                let c = calls.clone();
                move |inv| {
                    c.fetch_add(1, Ordering::Relaxed);
                    async move {
                        let items = inv.input.as_array().ok_or_else(|| FunctionError {
                            error: "BadInput".into(),
                            cause: "sum wants an array".into(),
                        })?;
                        Ok(Value::from(
                            items.iter().filter_map(Value::as_u64).sum::<u64>(),
                        ))
                    }
                }
            });
        agent.run(std::future::pending()).await.expect("agent runs");
    })
}

/// Polls the execution's state until `done` holds or the deadline passes.
async fn wait_for(
    observer: &Worker,
    exec: &ExecutionId,
    deadline: Duration,
    done: impl Fn(&ExecutionState) -> bool,
) -> ExecutionState {
    let end = Instant::now() + deadline;
    loop {
        // Reads fail while nats-server restarts; keep polling.
        if let Ok(Some(state)) = observer.load(exec).await
            && (done(&state) || Instant::now() > end)
        {
            if !done(&state) {
                eprintln!(
                    "timed out: applied {} outbox {} history {:?}",
                    state.events_applied,
                    state.outbox.len(),
                    state
                        .history
                        .iter()
                        .map(|f| f.trigger.as_str())
                        .collect::<Vec<_>>()
                );
            }
            return state;
        }
        assert!(
            Instant::now() < end,
            "execution {exec} not readable in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_finished_once(state: &ExecutionState) {
    assert_eq!(
        state.status,
        ExecutionStatus::Succeeded {
            output: expected_output()
        },
        "output"
    );
    let fired = |t: &str| {
        state
            .history
            .iter()
            .filter(|f| f.trigger.as_str() == t)
            .count()
    };
    assert_eq!(fired("collect/square"), 1, "the map's join fired once");
    assert_eq!(fired("start/sum"), 1, "the join before `sum` fired once");
    let mut triggers: Vec<&str> = state.history.iter().map(|f| f.trigger.as_str()).collect();
    triggers.sort();
    let before = triggers.len();
    triggers.dedup();
    assert_eq!(
        before,
        triggers.len(),
        "no trigger fired twice: {triggers:?}"
    );
    assert!(
        state.outbox.is_empty(),
        "outbox left: {}",
        state.outbox.len()
    );
}

struct Run {
    server: NatsServer,
    local: Local,
    observer: Worker,
    exec: ExecutionId,
    workers: Vec<JoinHandle<()>>,
    /// Deliveries acked by each worker in `workers`.
    acked: Vec<Arc<AtomicU64>>,
    agents: Vec<JoinHandle<()>>,
    calls: Arc<AtomicU64>,
}

/// Starts nats-server, two workers and two agents (the first with `hang`),
/// and an execution of the DAG.
async fn start_run(name: &str, hang: Option<Arc<AtomicU64>>) -> Run {
    let server = NatsServer::start().expect("start nats-server");
    let cfg = config(&server);
    // The client side (`trigflow start`): connect, write the initial state,
    // dispatch the first call.
    let local = Local::connect(cfg.clone()).await.expect("connect");
    let observer = worker_on(&local);
    let calls = Arc::new(AtomicU64::new(0));
    let acked = vec![Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let workers = acked
        .iter()
        .map(|a| spawn_worker(cfg.clone(), a.clone()))
        .collect();
    let agents = vec![
        spawn_agent(cfg.clone(), calls.clone(), hang),
        spawn_agent(cfg, calls.clone(), None),
    ];
    let exec: ExecutionId = name.parse().expect("execution id");
    observer
        .start(&workflow(), exec.clone(), json!({"n": WIDTH}))
        .await
        .expect("start the execution");
    Run {
        server,
        local,
        observer,
        exec,
        workers,
        acked,
        agents,
        calls,
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for t in self.workers.iter().chain(&self.agents) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_way_map_and_join_run_on_two_workers_and_two_agents() {
    let run = start_run("squares-1", None).await;
    let state = wait_for(&run.observer, &run.exec, Duration::from_secs(120), |s| {
        s.status.is_terminal()
    })
    .await;
    assert_finished_once(&state);
    // split + 1,000 squares + sum, each at least once.
    assert!(run.calls.load(Ordering::Relaxed) >= WIDTH + 2);
    assert_eq!(
        run.local.sink().dead_letters().await.expect("dead letters"),
        Vec::new(),
        "nothing was dead-lettered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_a_worker_mid_run_changes_nothing_in_the_result() {
    let mut run = start_run("squares-abort", None).await;
    // Mid-run, with the worker to kill busy: part of the map's results are
    // in and it has acked some of them.
    let first = run.acked[0].clone();
    let mid = wait_for(&run.observer, &run.exec, Duration::from_secs(60), |s| {
        (s.events_applied >= 200 && first.load(Ordering::Relaxed) > 0) || s.status.is_terminal()
    })
    .await;
    assert!(!mid.status.is_terminal(), "finished before the fault");
    let killed = run.workers.remove(0);
    killed.abort();
    assert!(killed.await.expect_err("aborted").is_cancelled());
    // A replacement comes up (a restarted process).
    let acked = Arc::new(AtomicU64::new(0));
    run.workers
        .push(spawn_worker(config(&run.server), acked.clone()));
    let state = wait_for(&run.observer, &run.exec, Duration::from_secs(120), |s| {
        s.status.is_terminal()
    })
    .await;
    assert_finished_once(&state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_agent_mid_function_changes_nothing_in_the_result() {
    let stuck = Arc::new(AtomicU64::new(0));
    let mut run = start_run("squares-agent", Some(stuck.clone())).await;
    // The first agent has taken calls and is inside the function.
    let mid = wait_for(&run.observer, &run.exec, Duration::from_secs(60), |s| {
        stuck.load(Ordering::Relaxed) > 0 || s.status.is_terminal()
    })
    .await;
    assert!(!mid.status.is_terminal(), "finished before the fault");
    let killed = run.agents.remove(0);
    killed.abort();
    assert!(killed.await.expect_err("aborted").is_cancelled());
    let lost = stuck.load(Ordering::Relaxed);
    let state = wait_for(&run.observer, &run.exec, Duration::from_secs(120), |s| {
        s.status.is_terminal()
    })
    .await;
    assert_finished_once(&state);
    // The calls the dead agent held ran again on the other one.
    assert!(
        run.calls.load(Ordering::Relaxed) >= WIDTH + 2 + lost,
        "calls {} lost {lost}",
        run.calls.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_nats_server_mid_run_changes_nothing_in_the_result() {
    let mut run = start_run("squares-restart", None).await;
    let mid = wait_for(&run.observer, &run.exec, Duration::from_secs(60), |s| {
        s.events_applied >= 200 || s.status.is_terminal()
    })
    .await;
    assert!(!mid.status.is_terminal(), "finished before the fault");
    run.server.restart().expect("restart nats-server");
    let state = wait_for(&run.observer, &run.exec, Duration::from_secs(180), |s| {
        s.status.is_terminal()
    })
    .await;
    assert_finished_once(&state);
}
