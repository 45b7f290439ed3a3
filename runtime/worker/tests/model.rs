//! The model test of DESIGN.md's guarantees for the worker.
//!
//! Thousands of seeded schedules run small workflows through the worker
//! over an in-memory cluster that duplicates, reorders and batches
//! deliveries at random, runs functions in random order and sometimes twice,
//! kills the worker at random I/O points (before a call, or after it took
//! effect but before the worker saw the result), and fails single calls
//! retryably (before or after they took effect). After a crash a fresh
//! worker runs `recover` and the in-flight batch is redelivered. Each
//! schedule must end exactly like the fault-free, exactly-once, in-order run
//! of the same workflow: same status and output, same context and trigger
//! states, same firings per trigger, the same logical calls under one
//! idempotency key each, nothing decided but never dispatched, and only the
//! poison in the dead letters.
//!
//! A failing schedule prints its seed; replay it alone with
//! `TRIGFLOW_MODEL_SEED=<seed> cargo test -p trigflow-worker --test model random_schedules`.
//! `TRIGFLOW_MODEL_SCHEDULES=<n>` changes how many schedules run.

mod harness;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use harness::{
    Case, EXECUTION, Fault, Faults, Msg, Node, Op, Outcome, Perturbation, check_report, children,
    compare, diamond, fanout, fanout_input, firings, lock, quorum, run, run_function,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use trigflow_core::Engine;
use trigflow_core::event::{EXT_EXECUTION, NewEvent};
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::sim;
use trigflow_core::state::ExecutionStatus;
use trigflow_worker::Worker;

const DEFAULT_SCHEDULES: u64 = 10_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}"))
    })
}

/// What the schedules exercised, so that the test can prove it was not
/// vacuous.
#[derive(Debug, Default)]
struct Coverage {
    schedules: u64,
    per_case: BTreeMap<&'static str, u64>,
    faults: BTreeMap<(Op, Fault), u64>,
    /// Dispatches of a call that had been dispatched before (after a crash
    /// between dispatch and clearing the outbox, or by `recover`).
    redispatches: u64,
    batches: u64,
    conflicts: u64,
    schedules_with_crashes: u64,
    schedules_with_several_crashes: u64,
    /// Schedules whose final state lists seen-set segments.
    schedules_with_segments: u64,
}

/// The fault-free reference of a workflow and input, cross-checked with the
/// core's simulator.
fn reference(engine: &Engine, case: &Case, input: &Value) -> Outcome {
    let r = run(engine, &case.workflow, input, Faults::none(), None)
        .unwrap_or_else(|e| panic!("fault-free run of {} failed: {e}", case.name));
    assert!(
        r.state.status.is_terminal(),
        "fault-free run of {} did not finish: {:?}",
        case.name,
        r.state
    );
    let simulated = sim::run(engine, &case.workflow, input.clone(), run_function, 10_000)
        .expect("simulator runs the workflow");
    assert_eq!(
        simulated.state.status, r.state.status,
        "the fault-free worker run of {} disagrees with the core simulator",
        case.name
    );
    assert_eq!(firings(&simulated.state), firings(&r.state));
    r
}

fn one_schedule(
    seed: u64,
    engine: &Engine,
    cases: &[Case],
    refs: &mut HashMap<(usize, String), Outcome>,
    cov: &mut Coverage,
) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let ci = rng.random_range(0..cases.len());
    let case = &cases[ci];
    let input = match case.name {
        "fanout" => fanout_input(rng.random_range(5..=20)),
        "children" => fanout_input(rng.random_range(2..=6)),
        _ => json!(rng.random_range(0..8)),
    };
    let reference = refs
        .entry((ci, input.to_string()))
        .or_insert_with(|| reference(engine, case, &input));
    let p = Perturbation {
        max_batch: rng.random_range(1..=6),
        duplicate: [0.0, 0.1, 0.3][rng.random_range(0..3)],
        run_twice: [0.0, 0.1, 0.3][rng.random_range(0..3)],
        poison: if rng.random_bool(0.1) {
            rng.random_range(1..=2)
        } else {
            0
        },
        // Half the schedules split the seen-set into segments after a few
        // events, so crashes also hit the segment writes.
        seen_segment_keys: rng.random_bool(0.5).then(|| rng.random_range(1..=4)),
    };
    let crashes = match rng.random_range(0..10) {
        0 => 0,
        1..=5 => 1,
        6..=7 => 2,
        _ => rng.random_range(3..=5),
    };
    // Perturbed runs make more I/O calls than the reference (duplicates,
    // redelivered batches, recovery), so aim past its end too.
    let horizon = reference.io_calls * 3 / 2 + 2;
    let mut plan = BTreeMap::new();
    for _ in 0..crashes {
        let kind = if rng.random_bool(0.5) {
            Fault::CrashBefore
        } else {
            Fault::CrashAfter
        };
        plan.insert(rng.random_range(0..horizon), kind);
    }
    // Retryable failures of single calls, in about a third of the schedules.
    let errors = if rng.random_bool(0.35) {
        rng.random_range(1..=3)
    } else {
        0
    };
    for _ in 0..errors {
        let kind = if rng.random_bool(0.5) {
            Fault::Fail
        } else {
            Fault::FailAfter
        };
        plan.insert(rng.random_range(0..horizon), kind);
    }
    let faults = Faults::plan(plan);
    let out = run(
        engine,
        &case.workflow,
        &input,
        faults.clone(),
        Some((&mut rng, &p)),
    )
    .map_err(|e| format!("{} run failed: {e}", case.name))?;
    compare(reference, &out).map_err(|e| format!("{} (perturbation {p:?}): {e}", case.name))?;
    // A lone worker conflicts with itself only after a write whose outcome
    // it could not see (an injected failure after the write took place):
    // its cached state is then stale and must be re-read.
    let conflicts = faults.conflicts.load(Ordering::SeqCst);
    if out.errors == 0 && conflicts > 0 {
        return Err(format!(
            "{conflicts} write conflicts with a single worker and no failures"
        ));
    }

    cov.schedules += 1;
    *cov.per_case.entry(case.name).or_default() += 1;
    let injected = lock(&faults.injected).clone();
    let n: u64 = injected
        .iter()
        .filter(|((_, f), _)| f.is_crash())
        .map(|(_, n)| n)
        .sum();
    cov.schedules_with_crashes += u64::from(n > 0);
    cov.schedules_with_several_crashes += u64::from(n > 1);
    for (k, v) in injected {
        *cov.faults.entry(k).or_default() += v;
    }
    cov.redispatches += (out.dispatches - out.calls.len()) as u64;
    cov.schedules_with_segments += u64::from(!out.state.seen_segments.is_empty());
    cov.batches += out.batches as u64;
    cov.conflicts += faults.conflicts.load(Ordering::SeqCst);
    Ok(())
}

#[test]
fn random_schedules_match_the_fault_free_run() {
    let began = Instant::now();
    let engine = Engine::new();
    let cases = [fanout(), quorum(), diamond(), children()];
    let only = env_u64("TRIGFLOW_MODEL_SEED");
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => (0..env_u64("TRIGFLOW_MODEL_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES)).collect(),
    };
    let mut refs = HashMap::new();
    let mut cov = Coverage::default();
    for &seed in &seeds {
        let replay = format!(
            "replay with: TRIGFLOW_MODEL_SEED={seed} cargo test -p trigflow-worker --test model random_schedules"
        );
        match catch_unwind(AssertUnwindSafe(|| {
            one_schedule(seed, &engine, &cases, &mut refs, &mut cov)
        })) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("schedule seed {seed} failed: {e}\n{replay}"),
            Err(panic) => {
                eprintln!("schedule seed {seed} panicked; {replay}");
                resume_unwind(panic)
            }
        }
    }
    eprintln!(
        "{} schedules in {:.1?}: {:?}",
        cov.schedules,
        began.elapsed(),
        cov
    );
    assert_eq!(cov.schedules, seeds.len() as u64);
    if seeds.len() < 2_000 {
        // Too few schedules to expect every fault at every I/O point.
        return;
    }
    // The schedules must have exercised what they claim to.
    for name in ["fanout", "quorum", "diamond"] {
        assert!(
            cov.per_case.get(name).copied().unwrap_or(0) > 0,
            "no schedule ran {name}"
        );
    }
    for op in [
        Op::Get,
        Op::Put,
        Op::List,
        Op::Publish,
        Op::Schedule,
        Op::Invoke,
        Op::DeadLetter,
    ] {
        // `list` only runs in `recover`, where errors are not injected.
        let kinds: &[Fault] = if op == Op::List {
            &[Fault::CrashBefore, Fault::CrashAfter]
        } else {
            &[
                Fault::CrashBefore,
                Fault::CrashAfter,
                Fault::Fail,
                Fault::FailAfter,
            ]
        };
        for &kind in kinds {
            assert!(
                cov.faults.get(&(op, kind)).copied().unwrap_or(0) > 0,
                "no {kind:?} was injected at {op:?}: {:?}",
                cov.faults
            );
        }
    }
    assert!(
        cov.schedules_with_several_crashes > 0,
        "no schedule crashed twice"
    );
    assert!(
        cov.redispatches > 0,
        "no call was ever re-dispatched after a crash"
    );
    assert!(
        cov.schedules_with_segments > 0,
        "no schedule split its seen-set into segments"
    );
}

// ---------------------------------------------------------------------------
// Poison

fn gauge() -> Workflow {
    serde_json::from_value(json!({
        "id": "gauge",
        "triggers": [
            {"id": "level", "on": {"subjects": ["sample"]},
             "condition": {"kind": "threshold", "value": ".event.data", "op": "gte", "threshold": 10},
             "actions": [{"kind": "complete", "output": "{level: .trigger.acc}"}]}
        ]
    }))
    .expect("workflow parses")
}

fn event_body(id: &str, subject: &str, execution: Option<&str>, data: Value) -> Vec<u8> {
    let exec: Option<ExecutionId> = execution.map(|e| e.parse().expect("valid id"));
    let event = NewEvent {
        source: "test",
        id,
        ty: "test.sample",
        subject: Some(subject),
        execution: exec.as_ref(),
        index: None,
        attempt: None,
        data: Some(data),
    }
    .build()
    .expect("event builds");
    harness::body(&event)
}

fn msg(id: &str, body: Vec<u8>) -> Msg {
    Msg {
        id: id.into(),
        body,
        attempt: 0,
    }
}

#[test]
fn poison_messages_are_dead_lettered_and_the_rest_of_the_batch_applies() {
    let engine = Engine::new();
    let case = fanout();
    let input = fanout_input(5);
    let reference = run(&engine, &case.workflow, &input, Faults::none(), None).expect("reference");
    let node = Node::new(engine, Faults::none());
    let mut worker = node.worker();
    node.start(&mut worker, &case.workflow, &input);
    let good: Vec<Msg> = {
        let mut c = lock(&node.cluster);
        while !c.dispatched.is_empty() {
            c.run_call(0, false);
        }
        std::mem::take(&mut c.queue)
    };
    assert_eq!(good.len(), 5, "one completion per item");
    let mut batch = good.clone();
    batch.insert(
        1,
        msg("bad-json", b"{\"specversion\": \"1.0\", oops".to_vec()),
    );
    batch.insert(
        3,
        msg("no-exec", event_body("orphan-1", "work", None, json!(1))),
    );
    batch.insert(
        5,
        msg(
            "unknown-exec",
            event_body("stray-1", "work", Some("exec-missing"), json!(2)),
        ),
    );

    let report = node
        .step(worker.process_batch(batch.iter().map(Msg::delivery).collect()))
        .expect("no crash planned");
    check_report(&batch, &report).expect("every delivery accounted for");
    assert!(
        report.retry.is_empty(),
        "nothing should be redelivered: {report:?}"
    );
    let lettered: BTreeSet<&str> = report.dead_lettered.iter().map(String::as_str).collect();
    assert_eq!(
        lettered,
        BTreeSet::from(["bad-json", "no-exec", "unknown-exec"])
    );

    let letters = lock(&node.cluster).dead_letters.clone();
    assert_eq!(letters.len(), 3, "{letters:?}");
    let by_id: HashMap<&str, _> = letters.iter().map(|l| (l.message_id.as_str(), l)).collect();
    let bad = by_id["bad-json"];
    assert_eq!(bad.event_id, None);
    assert!(
        bad.reason.contains("bad-json"),
        "reason names the message: {}",
        bad.reason
    );
    assert!(bad.body.contains("oops"), "the body is kept");
    let orphan = by_id["no-exec"];
    assert_eq!(orphan.event_id.as_deref(), Some("orphan-1"));
    assert_eq!(orphan.event_source.as_deref(), Some("test"));
    assert!(
        orphan.reason.contains("orphan-1") && orphan.reason.contains(EXT_EXECUTION),
        "{}",
        orphan.reason
    );
    let stray = by_id["unknown-exec"];
    assert_eq!(stray.event_id.as_deref(), Some("stray-1"));
    assert_eq!(stray.execution.as_deref(), Some("exec-missing"));
    assert!(stray.reason.contains("exec-missing"), "{}", stray.reason);

    // The five good results were applied in the same batch: the join fired
    // once and the next call is out.
    let state = node.state();
    assert_eq!(firings(&state).get("join"), Some(&1));
    assert_eq!(state.events_applied, 6, "start + five results");
    assert!(
        lock(&node.cluster)
            .dispatched
            .iter()
            .any(|i| i.step == "total")
    );

    // And the execution finishes as the fault-free one does.
    loop {
        let next = {
            let mut c = lock(&node.cluster);
            if !c.dispatched.is_empty() {
                c.run_call(0, false);
            }
            c.queue.pop()
        };
        let Some(m) = next else { break };
        let report = node
            .step(worker.process_batch(vec![m.delivery()]))
            .expect("no crash planned");
        assert_eq!(report.acked, vec![m.id.clone()]);
    }
    assert_eq!(node.state().status, reference.state.status);
}

#[test]
fn a_failing_condition_is_poison_and_leaves_the_execution_untouched() {
    let engine = Engine::new();
    let node = Node::new(engine, Faults::none());
    let mut worker = node.worker();
    node.start(&mut worker, &gauge(), &json!(null));
    let batch = vec![
        msg("s1", event_body("e1", "sample", Some(EXECUTION), json!(3))),
        msg(
            "s2",
            event_body("e2", "sample", Some(EXECUTION), json!("not a number")),
        ),
        msg("s3", event_body("e3", "sample", Some(EXECUTION), json!(4))),
        msg("s4", event_body("e4", "sample", Some(EXECUTION), json!(5))),
    ];
    let report = node
        .step(worker.process_batch(batch.iter().map(Msg::delivery).collect()))
        .expect("no crash planned");
    check_report(&batch, &report).expect("every delivery accounted for");
    assert!(report.retry.is_empty());
    assert_eq!(report.dead_lettered, vec!["s2".to_owned()]);
    let letters = lock(&node.cluster).dead_letters.clone();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event_id.as_deref(), Some("e2"));
    assert_eq!(letters[0].execution.as_deref(), Some(EXECUTION));
    assert!(
        letters[0].reason.contains("level"),
        "reason names the trigger: {}",
        letters[0].reason
    );
    // 3 + 4 + 5 = 12 >= 10: the poison added nothing.
    assert_eq!(
        node.state().status,
        ExecutionStatus::Succeeded {
            output: json!({"level": 12.0})
        }
    );
    assert_eq!(report.finished.len(), 1);
}

// ---------------------------------------------------------------------------
// Concurrent workers

#[test]
fn concurrent_workers_on_one_execution_never_lose_an_update() {
    let engine = Engine::new();
    let case = fanout();
    let input = fanout_input(20);
    // The reference runs on its own runtime, so it is made before entering
    // the multi-thread one.
    let reference = run(&engine, &case.workflow, &input, Faults::none(), None).expect("reference");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let conflicts = rt.block_on(concurrent_rounds(engine, case, input, reference));
    assert!(
        conflicts > 0,
        "no write conflict happened, so the retry from a fresh read was not exercised"
    );
    eprintln!("concurrent workers: {conflicts} write conflicts retried");
}

/// Runs the fan-out on four workers at once, every message delivered twice
/// and shuffled; returns the write conflicts seen.
async fn concurrent_rounds(engine: Engine, case: Case, input: Value, reference: Outcome) -> u64 {
    const WORKERS: usize = 4;
    let mut conflicts = 0;
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut node = Node::new(engine.clone(), Faults::none());
        // Every store call yields, so batches on one thread interleave too.
        node.yield_first = true;
        let node = Arc::new(node);
        let workers: Vec<Worker> = (0..WORKERS).map(|_| node.worker()).collect();
        let exec: ExecutionId = EXECUTION.parse().expect("valid id");
        workers[0]
            .start(&case.workflow, exec, input.clone())
            .await
            .expect("start");
        let mut rounds = 0;
        loop {
            let msgs = {
                let mut c = lock(&node.cluster);
                while !c.dispatched.is_empty() {
                    c.run_call(0, false);
                }
                let timers = std::mem::take(&mut c.timers);
                for (_, body) in timers {
                    c.enqueue(body);
                }
                std::mem::take(&mut c.queue)
            };
            if msgs.is_empty() {
                break;
            }
            rounds += 1;
            assert!(rounds < 1_000, "seed {seed}: no progress");
            // Every message twice, shuffled, dealt to the workers in random
            // batches that all run at once.
            let mut deliveries: Vec<Msg> = msgs
                .iter()
                .flat_map(|m| {
                    [
                        m.clone(),
                        Msg {
                            id: format!("{}+dup", m.id),
                            ..m.clone()
                        },
                    ]
                })
                .collect();
            deliveries.shuffle(&mut rng);
            let mut plans: Vec<Vec<Vec<Msg>>> = vec![Vec::new(); WORKERS];
            let mut rest = deliveries.as_slice();
            while !rest.is_empty() {
                let n = rng.random_range(1..=4).min(rest.len());
                plans[rng.random_range(0..WORKERS)].push(rest[..n].to_vec());
                rest = &rest[n..];
            }
            let tasks = plans.into_iter().zip(&workers).map(|(batches, w)| {
                let w = w.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for b in batches {
                        let report = w.process_batch(b.iter().map(Msg::delivery).collect()).await;
                        out.push((b, report));
                    }
                    out
                })
            });
            for done in futures::future::join_all(tasks).await {
                for (batch, report) in done.expect("worker task") {
                    check_report(&batch, &report).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    let retry: BTreeSet<&String> = report.retry.iter().collect();
                    let mut c = lock(&node.cluster);
                    for m in batch.into_iter().filter(|m| retry.contains(&m.id)) {
                        c.queue.push(m);
                    }
                }
            }
        }
        let state = node.state();
        let c = lock(&node.cluster);
        let out = Outcome {
            calls: c.calls.clone(),
            key_clashes: c.key_clashes.clone(),
            dispatches: c.dispatch_log.len(),
            dead_letters: c.dead_letters.clone(),
            io_calls: node.faults.io_calls(),
            batches: 0,
            poison: BTreeSet::new(),
            effects: c.effects.clone(),
            errors: 0,
            state,
        };
        drop(c);
        compare(&reference, &out).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(firings(&out.state).get("join"), Some(&1), "seed {seed}");
        conflicts += node.faults.conflicts.load(Ordering::SeqCst);
    }
    conflicts
}

// ---------------------------------------------------------------------------
// Dispatch failures

/// A failed dispatch after the last event of an execution must still be
/// retried: the deliveries are handed back, and their redelivery (a
/// duplicate, no state change) dispatches the outbox again under the same
/// key. Before the fix the deliveries were acked and the call was stranded
/// in the outbox until some worker restarted and ran `recover`.
#[test]
fn a_failed_dispatch_is_retried_through_redelivery() {
    let wf: Workflow = serde_json::from_value(json!({
        "id": "one-call",
        "triggers": [
            {"id": "go", "on": {"subjects": ["go"]},
             "actions": [{"kind": "invoke", "function": "b", "step": "B"}]},
            {"id": "done", "on": {"subjects": ["B"]},
             "actions": [{"kind": "complete"}]}
        ]
    }))
    .expect("workflow parses");
    let node = Node::new(Engine::new(), Faults::none());
    let mut worker = node.worker();
    node.start(&mut worker, &wf, &json!(null));
    let go = msg("go-1", event_body("go", "go", Some(EXECUTION), json!(41)));

    node.faults.allow_errors(true);
    node.faults.at_next(Op::Invoke, Fault::Fail);
    let report = node
        .step(worker.process_batch(vec![go.delivery()]))
        .expect("no crash planned");
    assert_eq!(report.retry, vec!["go-1".to_owned()], "{report:?}");
    assert!(report.acked.is_empty());
    let state = node.state();
    assert_eq!(state.outbox.len(), 1, "the decided call is kept");
    assert!(lock(&node.cluster).dispatched.is_empty());

    // The queue redelivers; the event is a duplicate and the call goes out
    // under the key decided the first time.
    let report = node
        .step(worker.process_batch(vec![go.delivery()]))
        .expect("no crash planned");
    assert_eq!(report.acked, vec!["go-1".to_owned()], "{report:?}");
    let call = lock(&node.cluster).dispatched[0].clone();
    assert_eq!(call.key, state.outbox[0].key);
    assert!(node.state().outbox.is_empty());

    lock(&node.cluster).run_call(0, false);
    let result = lock(&node.cluster).queue.remove(0);
    let report = node
        .step(worker.process_batch(vec![result.delivery()]))
        .expect("no crash planned");
    assert_eq!(report.finished.len(), 1);
    assert_eq!(
        node.state().status,
        ExecutionStatus::Succeeded { output: json!(42) }
    );
}

/// A long execution's state stays small: its seen-set is split into
/// segments, and a fresh worker (no cache) still recognises every event
/// already applied, including those only recorded in segments.
#[test]
fn seen_segments_keep_state_small_and_still_dedup_after_a_restart() {
    let engine = Engine::new();
    let wf: Workflow = serde_json::from_value(json!({
        "id": "many",
        "triggers": [{"id": "j", "on": {"subjects": ["item"]},
            "condition": {"kind": "join", "count": 40},
            "actions": [{"kind": "complete", "output": "{n: .trigger.count}"}]}]
    }))
    .expect("workflow");
    let mut node = Node::new(engine, Faults::none());
    node.seen_segment_keys = 8;
    let mut worker = node.worker();
    node.start(&mut worker, &wf, &json!(null));
    let exec: ExecutionId = harness::EXECUTION.parse().expect("id");
    let events: Vec<trigflow_core::cloudevents::Event> = (0..40)
        .map(|i| {
            NewEvent {
                source: "test",
                id: &i.to_string(),
                ty: "t",
                subject: Some("item"),
                execution: Some(&exec),
                index: None,
                attempt: None,
                data: None,
            }
            .build()
            .expect("event")
        })
        .collect();
    let deliveries =
        |evs: &[trigflow_core::cloudevents::Event]| -> Vec<trigflow_core::seams::Delivery> {
            evs.iter()
                .enumerate()
                .map(|(i, e)| trigflow_core::seams::Delivery {
                    id: format!("d{i}"),
                    body: serde_json::to_vec(e).expect("json"),
                    attempt: 1,
                })
                .collect()
        };
    // The first 30, in batches of 5.
    for chunk in events[..30].chunks(5) {
        let report = node
            .step(worker.process_batch(deliveries(chunk)))
            .expect("no crash");
        assert_eq!(report.acked.len(), chunk.len());
    }
    let state = node.state();
    assert!(state.seen_segments.len() >= 3, "{:?}", state.seen_segments);
    assert!(
        state.seen.0.len() < 8,
        "inline seen-set stays under the split size"
    );
    // A fresh worker: every event of the first 30 is a duplicate.
    let worker = node.restart();
    node.step(worker.process_batch(deliveries(&events[..30])))
        .expect("no crash");
    assert_eq!(
        node.state().events_applied,
        31,
        "start + 30 events, none twice"
    );
    for chunk in events[30..].chunks(4) {
        node.step(worker.process_batch(deliveries(chunk)))
            .expect("no crash");
    }
    let state = node.state();
    assert_eq!(
        state.status,
        ExecutionStatus::Succeeded {
            output: json!({"n": 40})
        }
    );
}
