//! Agents against a real nats-server: a call for a function nobody serves
//! waits in the calls stream and runs when an agent serving it appears;
//! agents report heartbeats (node, CPUs, memory, functions) that the
//! directory reads back, and remove them when they stop cleanly; a
//! built-in serves a call; a failing function reports `function.failed`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trigflow_core::cloudevents::AttributesReader;
use trigflow_core::seams::{EventSource, Invoker};
use trigflow_core::state::Invocation;
use trigflow_local::names::CALLS_STREAM;
use trigflow_local::testing::NatsServer;
use trigflow_local::{Agent, Local, LocalConfig, builtins};
use trigflow_worker::{Clock, SystemClock};

const DEADLINE: Duration = Duration::from_secs(60);

fn invocation(function: &str, key: &str, input: Value) -> Invocation {
    Invocation {
        key: key.into(),
        execution: "exec-1".parse().expect("id"),
        workflow: "wf".parse().expect("id"),
        trigger: "t".parse().expect("id"),
        step: "step".into(),
        function: function.into(),
        input,
        index: None,
        attempt: 1,
    }
}

async fn waiting_calls(local: &Local) -> u64 {
    let mut stream = local
        .jetstream()
        .get_stream(CALLS_STREAM)
        .await
        .expect("calls stream");
    stream.info().await.expect("info").state.messages
}

/// The next completion event from the workers' stream (acked).
async fn next_event(local: &Local) -> trigflow_core::cloudevents::Event {
    let source = local.source();
    let end = Instant::now() + DEADLINE;
    loop {
        let batch = source
            .receive(1, Duration::from_millis(500))
            .await
            .expect("receive");
        if let Some(d) = batch.into_iter().next() {
            source.ack(std::slice::from_ref(&d.id)).await.expect("ack");
            return trigflow_core::event::decode(&d.body).expect("an event");
        }
        assert!(Instant::now() < end, "no completion event in time");
    }
}

fn data(event: &trigflow_core::cloudevents::Event) -> Value {
    match event.data() {
        Some(trigflow_core::cloudevents::Data::Json(v)) => v.clone(),
        other => panic!("unexpected data {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waits_for_an_agent_and_heartbeats_come_and_go() {
    let server = NatsServer::start().expect("start nats-server");
    let local = Local::connect(LocalConfig::with_url(server.url()))
        .await
        .expect("connect");

    // Nobody serves `double` yet: the call is stored and waits.
    local
        .invoker()
        .invoke(&invocation("nats:double", "exec-1/1", json!(21)))
        .await
        .expect("dispatch");
    assert_eq!(waiting_calls(&local).await, 1);
    let directory = local.agents();
    assert!(
        directory
            .serving("nats:double", SystemClock.now_ms())
            .await
            .expect("directory")
            .is_empty()
    );

    // An agent appears and runs it.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = Agent::new(&local)
        .with_node("edge-1")
        .with_heartbeat(Duration::from_millis(200))
        .serve("nats:double", |inv| async move {
            Ok(json!(inv.input.as_i64().unwrap_or(0) * 2))
        })
        .serve_handler("total", builtins::handler("sum").expect("builtin"))
        .serve("nats:broken", |_| async move {
            Err(trigflow_core::state::FunctionError {
                error: "Broken".into(),
                cause: "always".into(),
            })
        });
    let running = tokio::spawn(async move {
        agent
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    let done = next_event(&local).await;
    assert_eq!(done.ty(), "trigflow.function.succeeded");
    assert_eq!(done.id(), "exec-1/1");
    assert_eq!(data(&done), json!(42));
    // The agent stores the completion event first and acks the call after
    // it (so a crash in between re-runs the call rather than losing it):
    // the ack may land a moment after the event is visible.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while waiting_calls(&local).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call was never acked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A built-in and a failing function.
    local
        .invoker()
        .invoke(&invocation("nats:total", "exec-1/2", json!([1, 2, 3])))
        .await
        .expect("dispatch");
    let done = next_event(&local).await;
    assert_eq!(data(&done), json!(6));
    local
        .invoker()
        .invoke(&invocation("nats:broken", "exec-1/3", json!(null)))
        .await
        .expect("dispatch");
    let failed = next_event(&local).await;
    assert_eq!(failed.ty(), "trigflow.function.failed");
    assert_eq!(data(&failed)["error"], "Broken");

    // Its heartbeat names the node, its functions, CPUs and memory.
    let end = Instant::now() + DEADLINE;
    let report = loop {
        let serving = directory
            .serving("double", SystemClock.now_ms())
            .await
            .expect("directory");
        if let Some(r) = serving.into_iter().next() {
            break r;
        }
        assert!(Instant::now() < end, "no heartbeat");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(report.node, "edge-1");
    assert_eq!(report.functions, vec!["broken", "double", "total"]);
    assert!(report.stats.cpus >= 1);
    assert_eq!(report.interval_ms, 200);
    // Heartbeats keep coming.
    let first = report.at_ms;
    let end = Instant::now() + DEADLINE;
    loop {
        let all = directory.all().await.expect("directory");
        if all.iter().any(|r| r.at_ms > first) {
            break;
        }
        assert!(Instant::now() < end, "heartbeat not refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A report ages out of `alive` after three missed intervals.
    assert!(!report.is_alive(report.at_ms + 601));

    // A clean stop removes the report.
    stop.send(()).expect("stop");
    running.await.expect("joined").expect("agent ran");
    assert!(directory.all().await.expect("directory").is_empty());
}

/// With `unserved: fail`, the invoker reads the heartbeats: a call for a
/// function no live agent serves is not enqueued and its step fails at once
/// with `trigflow.NoAgent` naming the live nodes; a call for a served
/// function is enqueued and runs; once the agent stops, its function is
/// refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_unserved_fail_calls_route_only_to_live_agents() {
    use trigflow_local::routing::{NO_AGENT_ERROR, Unserved};
    let server = NatsServer::start().expect("start nats-server");
    let config = LocalConfig {
        unserved: Unserved::Fail,
        ..LocalConfig::with_url(server.url())
    };
    let local = Local::connect(config).await.expect("connect");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = Agent::new(&local)
        .with_node("edge-1")
        .with_heartbeat(Duration::from_millis(200))
        .serve("nats:double", |inv| async move {
            Ok(json!(inv.input.as_u64().unwrap_or(0) * 2))
        });
    let serving = tokio::spawn(async move {
        agent
            .run(async move {
                let _ = stopped.await;
            })
            .await
    });
    // Wait until the directory lists the agent.
    let end = Instant::now() + DEADLINE;
    while local
        .agents()
        .serving("double", SystemClock.now_ms())
        .await
        .expect("directory")
        .is_empty()
    {
        assert!(Instant::now() < end, "the agent never reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let invoker = local.invoker();
    let results = invoker
        .invoke_batch(&[
            invocation("nats:double", "exec-1/1", json!(21)),
            invocation("nats:resize", "exec-1/2", json!("img")),
        ])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut events = [next_event(&local).await, next_event(&local).await];
    events.sort_by_key(|e| e.id().to_owned());
    assert_eq!(events[0].id(), "exec-1/1");
    assert_eq!(events[0].ty(), "trigflow.function.succeeded");
    assert_eq!(data(&events[0]), json!(42));
    assert_eq!(events[1].id(), "exec-1/2");
    assert_eq!(events[1].ty(), "trigflow.function.failed");
    let failure = data(&events[1]);
    assert_eq!(failure["error"], NO_AGENT_ERROR);
    let cause = failure["cause"].as_str().expect("a cause");
    assert!(
        cause.contains("resize") && cause.contains("edge-1"),
        "the cause names the function and the live nodes: {cause}"
    );

    // The agent stops (its heartbeat is removed): `double` is refused now.
    stop.send(()).expect("stop the agent");
    serving.await.expect("agent task").expect("agent run");
    tokio::time::sleep(Duration::from_millis(1100)).await; // the invoker's cache
    let calls_before = waiting_calls(&local).await;
    let results = invoker
        .invoke_batch(&[invocation("nats:double", "exec-1/3", json!(1))])
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let refused = next_event(&local).await;
    assert_eq!(refused.ty(), "trigflow.function.failed");
    assert_eq!(data(&refused)["error"], NO_AGENT_ERROR);
    assert_eq!(
        waiting_calls(&local).await,
        calls_before,
        "a refused call is not enqueued"
    );
}

/// A call that runs long does not hold back the calls pulled with it or
/// after it: with two slots, `long` waits until `last` (the third call) has
/// run, which only happens if the agent pulls again as soon as `short`
/// frees its slot. (Serving a pull as one batch would wait for `long`
/// forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_call_does_not_hold_back_the_calls_behind_it() {
    let server = NatsServer::start().expect("start nats-server");
    let local = Local::connect(LocalConfig::with_url(server.url()))
        .await
        .expect("connect");
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let done_tx = std::sync::Arc::new(done_tx);
    let agent = Agent::new(&local)
        .with_concurrency(2)
        .serve("nats:step", move |inv| {
            let done_tx = done_tx.clone();
            let mut done_rx = done_rx.clone();
            async move {
                match inv.input.as_str() {
                    Some("long") => {
                        let _ = done_rx.wait_for(|done| *done).await;
                    }
                    Some("last") => {
                        let _ = done_tx.send(true);
                    }
                    _ => {}
                }
                Ok(inv.input)
            }
        });
    let serving = tokio::spawn(async move { agent.run(std::future::pending()).await });
    let calls: Vec<Invocation> = ["long", "short", "last"]
        .iter()
        .enumerate()
        .map(|(i, what)| invocation("nats:step", &format!("exec-1/{i}"), json!(what)))
        .collect();
    let results = local.invoker().invoke_batch(&calls).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let mut finished = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(Duration::from_secs(20), next_event(&local))
            .await
            .expect("every call finishes: `long` waits for `last`, which needs a free slot");
        finished.push(data(&event));
    }
    assert_eq!(finished.last(), Some(&json!("long")), "{finished:?}");
    serving.abort();
}
