//! The embedded invoker on real database files: every function scheme, the
//! completion events it queues, idempotency by key, and invocations left
//! pending by a previous run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trigflow_core::cloudevents::{AttributesReader, Event};
use trigflow_core::event::{TYPE_FAILED, TYPE_SUCCEEDED, data_json};
use trigflow_core::seams::{EventSource, Invoker};
use trigflow_core::state::{FunctionError, Invocation};
use trigflow_embedded::{
    EmbeddedDb, EmbeddedInvoker, EmbeddedQueue, FunctionRegistry, InvokerConfig,
};

const SOON: Duration = Duration::from_secs(10);

fn invocation(key: &str, function: &str, input: Value) -> Invocation {
    Invocation {
        key: key.to_owned(),
        execution: "exec-1".parse().expect("id"),
        workflow: "wf".parse().expect("id"),
        trigger: "t".parse().expect("id"),
        step: "step".to_owned(),
        function: function.to_owned(),
        input,
        index: None,
        attempt: 1,
    }
}

/// Receives `n` completion events and acks them; returns them by id.
async fn completions(q: &EmbeddedQueue, n: usize) -> BTreeMap<String, Event> {
    let deadline = tokio::time::Instant::now() + SOON;
    let mut got = BTreeMap::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {n} completions arrived",
            got.len()
        );
        let batch = q.receive(n, left).await.expect("receive");
        for d in &batch {
            let ev: Event = serde_json::from_slice(&d.body).expect("event JSON");
            got.insert(ev.id().to_owned(), ev);
        }
        let ids: Vec<String> = batch.into_iter().map(|d| d.id).collect();
        q.ack(&ids).await.expect("ack");
    }
    got
}

fn succeeded(ev: &Event) -> Value {
    assert_eq!(
        ev.ty(),
        TYPE_SUCCEEDED,
        "expected success, got {}",
        data_json(ev)
    );
    data_json(ev)
}

fn failed(ev: &Event) -> (String, String) {
    assert_eq!(
        ev.ty(),
        TYPE_FAILED,
        "expected failure, got {}",
        data_json(ev)
    );
    let d = data_json(ev);
    (
        d["error"].as_str().expect("error").to_owned(),
        d["cause"].as_str().expect("cause").to_owned(),
    )
}

fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn setup(dir: &Path, registry: FunctionRegistry) -> (EmbeddedDb, EmbeddedInvoker) {
    let db = EmbeddedDb::open(dir.join("i.redb")).expect("open");
    let config = InvokerConfig {
        base_dir: Some(dir.to_path_buf()),
        command_timeout: Duration::from_secs(20),
        ..InvokerConfig::default()
    };
    let invoker = db.invoker(registry, config).expect("invoker");
    (db, invoker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_functions_complete_into_the_queue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = FunctionRegistry::new();
    registry.register_fn("double", |v| {
        v.as_i64().map(|n| json!(n * 2)).ok_or(FunctionError {
            error: "NotANumber".into(),
            cause: v.to_string(),
        })
    });
    registry.register_async("greet", |v| async move {
        Ok(json!(format!("hello {}", v.as_str().unwrap_or("?"))))
    });
    registry.register_fn("boom", |_| panic!("kaboom"));
    let (db, invoker) = setup(dir.path(), registry);
    let runner = invoker.spawn_runner();
    let q = db.queue();
    invoker
        .invoke(&invocation("exec-1/1", "inproc:double", json!(21)))
        .await
        .expect("invoke");
    invoker
        .invoke(&invocation("exec-1/2", "inproc:greet", json!("Ada")))
        .await
        .expect("invoke");
    invoker
        .invoke(&invocation("exec-1/3", "inproc:double", json!("x")))
        .await
        .expect("invoke");
    invoker
        .invoke(&invocation("exec-1/4", "inproc:missing", json!(null)))
        .await
        .expect("invoke");
    invoker
        .invoke(&invocation("exec-1/5", "inproc:boom", json!(null)))
        .await
        .expect("invoke");
    let got = completions(&q, 5).await;
    assert_eq!(succeeded(&got["exec-1/1"]), json!(42));
    assert_eq!(succeeded(&got["exec-1/2"]), json!("hello Ada"));
    assert_eq!(failed(&got["exec-1/3"]).0, "NotANumber");
    assert_eq!(failed(&got["exec-1/4"]).0, "UnknownFunction");
    let (error, cause) = failed(&got["exec-1/5"]);
    assert_eq!(error, "Panic");
    assert!(cause.contains("kaboom"), "{cause}");
    // The completion event is the engine's: subject = step, source from the
    // execution, id = key.
    let ev = &got["exec-1/1"];
    assert_eq!(ev.subject(), Some("step"));
    assert_eq!(ev.source().to_string(), "trigflow/exec-1/step");
    assert_eq!(db.pending_counts().expect("counts").invocations, 0);
    db.shutdown();
    runner.await.expect("runner stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmd_functions_get_stdin_and_give_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    script(
        dir.path(),
        "wrap.sh",
        r#"input=$(cat); printf '{"arg":"%s","in":%s}' "$1" "$input""#,
    );
    script(
        dir.path(),
        "fail.sh",
        "echo first line >&2; echo oops-on-stderr >&2; exit 3",
    );
    script(dir.path(), "text.sh", "cat > /dev/null; echo not json");
    let (db, invoker) = setup(dir.path(), FunctionRegistry::new());
    let runner = invoker.spawn_runner();
    let q = db.queue();
    let calls = [
        ("k/1", r#"cmd:./wrap.sh "two words""#),
        ("k/2", "cmd:./fail.sh"),
        ("k/3", "cmd:./text.sh"),
        ("k/4", "cmd:./no-such-program"),
        ("k/5", "cmd:'unterminated"),
    ];
    for (key, f) in calls {
        invoker
            .invoke(&invocation(key, f, json!({"n": 1})))
            .await
            .expect("invoke");
    }
    let got = completions(&q, calls.len()).await;
    assert_eq!(
        succeeded(&got["k/1"]),
        json!({"arg": "two words", "in": {"n": 1}})
    );
    let (error, cause) = failed(&got["k/2"]);
    assert_eq!(error, "ExitCode");
    assert!(
        cause.contains("oops-on-stderr") && cause.contains("./fail.sh"),
        "{cause}"
    );
    assert_eq!(failed(&got["k/3"]).0, "InvalidOutput");
    assert_eq!(failed(&got["k/4"]).0, "SpawnFailed");
    assert_eq!(failed(&got["k/5"]).0, "BadCommand");
    db.shutdown();
    runner.await.expect("runner stops");
}

#[tokio::test]
async fn bad_command_error_carries_stderr_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    script(dir.path(), "fail.sh", "echo something broke >&2; exit 1");
    let (_db, invoker) = setup(dir.path(), FunctionRegistry::new());
    let err = invoker
        .call("cmd:./fail.sh", json!({}))
        .await
        .expect_err("non-zero exit");
    assert_eq!(err.error, "ExitCode");
    assert!(err.cause.contains("something broke"), "{}", err.cause);
}

#[tokio::test]
async fn command_timeout_kills_the_program() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path().join("i.redb")).expect("open");
    let invoker = db
        .invoker(
            FunctionRegistry::new(),
            InvokerConfig {
                command_timeout: Duration::from_millis(200),
                ..InvokerConfig::default()
            },
        )
        .expect("invoker");
    let err = invoker
        .call("cmd:sleep 30", json!(null))
        .await
        .expect_err("timeout");
    assert_eq!(err.error, "Timeout");
}

/// Serves `responses.len()` HTTP requests on a loopback port, answering
/// each with the next (status, body). Each request body is sent back on the
/// returned channel.
async fn http_server(
    responses: Vec<(u16, String)>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for (status, body) in responses {
            let (mut sock, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then as many body bytes as Content-Length says.
            let (head_end, length) = loop {
                let n = sock.read(&mut chunk).await.expect("read");
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map(|v| v.trim().parse::<usize>().expect("length"))
                        .unwrap_or(0);
                    break (pos + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = sock.read(&mut chunk).await.expect("read");
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
            }
            let request: Value =
                serde_json::from_slice(&buf[head_end..head_end + length]).expect("JSON body");
            let _ = tx.send(request);
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(reply.as_bytes()).await.expect("write");
            sock.shutdown().await.expect("shutdown");
        }
    });
    (format!("http://{addr}/fn"), rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_functions_post_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (url, mut requests) = http_server(vec![
        (200, r#"{"ok":true}"#.to_owned()),
        (500, "internal trouble".to_owned()),
    ])
    .await;
    let registry = FunctionRegistry::new();
    let (db, invoker) = setup(dir.path(), registry);
    let runner = invoker.spawn_runner();
    let q = db.queue();
    invoker
        .invoke(&invocation("h/1", &url, json!({"x": 1})))
        .await
        .expect("invoke");
    let got = completions(&q, 1).await;
    assert_eq!(succeeded(&got["h/1"]), json!({"ok": true}));
    assert_eq!(requests.recv().await, Some(json!({"x": 1})));

    invoker
        .invoke(&invocation("h/2", &url, json!({"x": 2})))
        .await
        .expect("invoke");
    let got = completions(&q, 1).await;
    let (error, cause) = failed(&got["h/2"]);
    assert_eq!(error, "Http500");
    assert!(cause.contains("internal trouble"), "{cause}");
    db.shutdown();
    runner.await.expect("runner stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_functions_return_their_input_and_bad_references_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, invoker) = setup(dir.path(), FunctionRegistry::new());
    let runner = invoker.spawn_runner();
    let q = db.queue();
    for (key, f) in [
        ("s/1", "stub:20ms"),
        ("s/2", "stub:0s"),
        ("s/3", "stub:soon"),
        ("s/4", "ftp://example.invalid/fn"),
    ] {
        invoker
            .invoke(&invocation(key, f, json!({"keep": key})))
            .await
            .expect("invoke");
    }
    let got = completions(&q, 4).await;
    assert_eq!(succeeded(&got["s/1"]), json!({"keep": "s/1"}));
    assert_eq!(succeeded(&got["s/2"]), json!({"keep": "s/2"}));
    assert_eq!(failed(&got["s/3"]).0, "BadStub");
    assert_eq!(failed(&got["s/4"]).0, "UnknownScheme");
    db.shutdown();
    runner.await.expect("runner stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_invocation_runs_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = Arc::new(AtomicUsize::new(0));
    let registry = || {
        let counter = counter.clone();
        let r = FunctionRegistry::new();
        r.register_fn("count", move |v| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(v)
        });
        r
    };
    {
        // Accepted, then the process "dies" before any runner ran it.
        let (db, invoker) = setup(dir.path(), registry());
        invoker
            .invoke(&invocation("p/1", "inproc:count", json!(7)))
            .await
            .expect("invoke");
        assert_eq!(db.pending_counts().expect("counts").invocations, 1);
    }
    assert_eq!(counter.load(Ordering::SeqCst), 0);
    let (db, invoker) = setup(dir.path(), registry());
    let runner = invoker.spawn_runner();
    let got = completions(&db.queue(), 1).await;
    assert_eq!(succeeded(&got["p/1"]), json!(7));
    assert_eq!(counter.load(Ordering::SeqCst), 1);
    assert_eq!(db.pending_counts().expect("counts").invocations, 0);
    db.shutdown();
    runner.await.expect("runner stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_twice_runs_once_while_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let registry = FunctionRegistry::new();
    {
        let runs = runs.clone();
        let gate = gate.clone();
        registry.register_async("gated", move |v| {
            let runs = runs.clone();
            let gate = gate.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _permit = gate.acquire().await.map_err(|e| FunctionError {
                    error: "Closed".into(),
                    cause: e.to_string(),
                })?;
                Ok(v)
            }
        });
    }
    let (db, invoker) = setup(dir.path(), registry);
    let inv = invocation("d/1", "inproc:gated", json!("once"));
    // Twice before the runner starts...
    invoker.invoke(&inv).await.expect("invoke");
    invoker.invoke(&inv).await.expect("invoke again");
    assert_eq!(db.pending_counts().expect("counts").invocations, 1);
    let runner = invoker.spawn_runner();
    // ...and again while it runs.
    let deadline = tokio::time::Instant::now() + SOON;
    while runs.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never started");
        tokio::task::yield_now().await;
    }
    invoker.invoke(&inv).await.expect("invoke while running");
    assert_eq!(db.pending_counts().expect("counts").invocations, 1);
    gate.add_permits(10);
    let q = db.queue();
    let got = completions(&q, 1).await;
    assert_eq!(succeeded(&got["d/1"]), json!("once"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(
        q.receive(10, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty()
    );
    db.shutdown();
    runner.await.expect("runner stops");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_is_respected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let registry = FunctionRegistry::new();
    {
        let (current, peak) = (current.clone(), peak.clone());
        registry.register_async("busy", move |v| {
            let (current, peak) = (current.clone(), peak.clone());
            async move {
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                current.fetch_sub(1, Ordering::SeqCst);
                Ok(v)
            }
        });
    }
    let db = EmbeddedDb::open(dir.path().join("i.redb")).expect("open");
    let invoker = db
        .invoker(
            registry,
            InvokerConfig {
                concurrency: 2,
                ..InvokerConfig::default()
            },
        )
        .expect("invoker");
    let runner = invoker.spawn_runner();
    for i in 0..8 {
        invoker
            .invoke(&invocation(&format!("c/{i}"), "inproc:busy", json!(i)))
            .await
            .expect("invoke");
    }
    let got = completions(&db.queue(), 8).await;
    assert_eq!(got.len(), 8);
    let p = peak.load(Ordering::SeqCst);
    assert!((1..=2).contains(&p), "peak concurrency {p}");
    db.shutdown();
    runner.await.expect("runner stops");
}
