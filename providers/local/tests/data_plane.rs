//! The S3 data plane of local mode, against a real nats-server and a real
//! SeaweedFS (standing in for MinIO): a 5 MB payload flows through a
//! three-step workflow on a worker and an agent while every message on the
//! event and call streams stays below the claim-check threshold, and the
//! functions see the full data.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use trigflow_core::Engine;
use trigflow_core::claim::{ClaimCheck, DEFAULT_THRESHOLD, REF_KEY, is_ref, sha256_hex};
use trigflow_core::ids::ExecutionId;
use trigflow_core::model::Workflow;
use trigflow_core::seams::StateStore as _;
use trigflow_core::state::{ExecutionState, ExecutionStatus, FunctionError};
use trigflow_local::names::{CALLS_SUBJECT, EVENTS_SUBJECT};
use trigflow_local::testing::NatsServer;
use trigflow_local::{Agent, Local, LocalConfig, LocalSettings};
use trigflow_objstore::S3Blobs;
use trigflow_objstore::testing::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedServer};
use trigflow_worker::Worker;

/// 5 MB of text, deterministic, not compressible to nothing.
fn payload() -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..5 * 1024 * 1024)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            char::from(b'a' + ((x >> 33) % 26) as u8)
        })
        .collect()
}

/// transform (upper-cases the text) -> checksum (of the transformed and of
/// the original text, handed over as two references inside one object a
/// jq expression built) -> stats (of the transformed text). The output
/// carries the transformed text by reference.
fn workflow() -> Workflow {
    serde_json::from_value(json!({
        "id": "data-plane",
        "triggers": [
            {"id": "transform", "on": {"types": ["trigflow.execution.started"]},
             "actions": [{"kind": "invoke", "function": "nats:transform", "input": ".event.data"}]},
            {"id": "checksum", "on": {"subjects": ["transform"], "types": ["trigflow.function.succeeded"]},
             "actions": [
                {"kind": "set_context", "key": "transformed", "value": ".event.data"},
                {"kind": "invoke", "function": "nats:checksum",
                 "input": "{transformed: .event.data, original: .context.input}"}]},
            {"id": "stats", "on": {"subjects": ["checksum"], "types": ["trigflow.function.succeeded"]},
             "actions": [
                {"kind": "set_context", "key": "checksums", "value": ".event.data"},
                {"kind": "invoke", "function": "nats:stats", "input": ".context.transformed"}]},
            {"id": "done", "on": {"subjects": ["stats"], "types": ["trigflow.function.succeeded"]},
             "actions": [{"kind": "complete",
                          "output": "{checksums: .context.checksums, stats: .event.data, transformed: .context.transformed}"}]},
            {"id": "failed", "on": {"types": ["trigflow.function.failed"]},
             "actions": [{"kind": "fail", "error": "StepFailed", "cause": ".event.data.cause"}]}
        ]
    }))
    .expect("valid workflow")
}

fn text_of(v: &Value, field: &str) -> Result<String, FunctionError> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| FunctionError {
            error: "BadInput".into(),
            cause: format!(
                "expected .{field} as a string, got {}",
                v.to_string().chars().take(120).collect::<String>()
            ),
        })
}

fn agent(local: &Local) -> Agent {
    Agent::new(local)
        .serve("nats:transform", |inv| async move {
            let text = text_of(&inv.input, "text")?;
            Ok(json!({"text": text.to_uppercase()}))
        })
        .serve("nats:checksum", |inv| async move {
            let transformed = inv.input.get("transformed").cloned().unwrap_or_default();
            let original = inv.input.get("original").cloned().unwrap_or_default();
            let t = text_of(&transformed, "text")?;
            let o = text_of(&original, "text")?;
            Ok(json!({
                "transformed_sha256": sha256_hex(t.as_bytes()),
                "original_sha256": sha256_hex(o.as_bytes()),
                "original_len": o.len(),
            }))
        })
        .serve("nats:stats", |inv| async move {
            let t = text_of(&inv.input, "text")?;
            Ok(json!({"len": t.len(), "a": t.bytes().filter(|b| *b == b'A').count()}))
        })
}

/// A message seen on the wire: subject and body.
type Message = (String, Vec<u8>);

async fn wait_finished(observer: &Worker, exec: &ExecutionId) -> ExecutionState {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(state)) = observer.load(exec).await
            && state.status.is_terminal()
        {
            return state;
        }
        assert!(Instant::now() < end, "execution {exec} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mb_payload_flows_by_reference_through_worker_and_agent() {
    let nats = NatsServer::start().expect("start nats-server");
    let weed = SeaweedServer::start().expect("start weed");
    // The settings path the CLI takes: TRIGFLOW_* and AWS_* variables.
    let env: BTreeMap<String, String> = [
        ("TRIGFLOW_NATS_URL", nats.url()),
        ("TRIGFLOW_S3_ENDPOINT", weed.endpoint()),
        ("TRIGFLOW_S3_BUCKET", "data-plane".to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = LocalSettings::load(None, &env).expect("settings");
    assert_eq!(settings.claim_threshold, DEFAULT_THRESHOLD);
    let blobs = S3Blobs::new(settings.s3_settings(&env).expect("s3 configured")).expect("client");
    // The S3 port answers before the filer behind it is ready.
    let end = Instant::now() + Duration::from_secs(60);
    while let Err(e) = blobs.ensure_bucket().await {
        assert!(Instant::now() < end, "bucket: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let claims = ClaimCheck::new(Arc::new(blobs), settings.claim_threshold);
    let config = LocalConfig {
        ack_wait: Duration::from_secs(10),
        call_ack_wait: Duration::from_secs(10),
        ..settings.local_config()
    };

    // Every message published on the event and call subjects, as sent.
    let client = async_nats::connect(nats.url()).await.expect("spy connects");
    let seen: Arc<Mutex<Vec<Message>>> = Arc::default();
    for subject in [format!("{EVENTS_SUBJECT}.>"), format!("{CALLS_SUBJECT}.>")] {
        let mut sub = client.subscribe(subject).await.expect("subscribe");
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                seen.lock()
                    .expect("lock")
                    .push((m.subject.to_string(), m.payload.to_vec()));
            }
        });
    }
    client.flush().await.expect("flush");

    let worker_local = Local::connect(config.clone())
        .await
        .expect("worker connects")
        .with_claims(claims.clone());
    let worker = tokio::spawn(async move {
        let w = Worker::new(
            Engine::new(),
            Arc::new(worker_local.store()),
            Arc::new(worker_local.sink()),
            Arc::new(worker_local.invoker()),
        );
        w.run(&worker_local.source(), 64, std::future::pending(), |_| {})
            .await;
    });
    let agent_local = Local::connect(config.clone())
        .await
        .expect("agent connects")
        .with_claims(claims.clone());
    let agent = tokio::spawn(async move {
        agent(&agent_local)
            .run(std::future::pending())
            .await
            .expect("agent runs");
    });

    // `trigflow start --nats`: the input is offloaded before the state is
    // written.
    let client_local = Local::connect(config)
        .await
        .expect("client connects")
        .with_claims(claims.clone());
    let observer = Worker::new(
        Engine::new(),
        Arc::new(client_local.store()),
        Arc::new(client_local.sink()),
        Arc::new(client_local.invoker()),
    );
    let text = payload();
    let input = json!({"text": text});
    let input_ref = claims.offload(input.clone()).await.expect("offload input");
    assert!(is_ref(&input_ref));
    let exec: ExecutionId = "big-1".parse().expect("id");
    observer
        .start(&workflow(), exec.clone(), input_ref)
        .await
        .expect("start");

    let state = wait_finished(&observer, &exec).await;
    let output = match &state.status {
        ExecutionStatus::Succeeded { output } => output.clone(),
        other => panic!("execution did not succeed: {other:?}"),
    };
    let upper = text.to_uppercase();
    // The functions saw the full data: their digests match ours.
    assert_eq!(
        output["checksums"],
        json!({
            "transformed_sha256": sha256_hex(upper.as_bytes()),
            "original_sha256": sha256_hex(text.as_bytes()),
            "original_len": text.len(),
        })
    );
    assert_eq!(
        output["stats"],
        json!({"len": upper.len(), "a": upper.bytes().filter(|b| *b == b'A').count()})
    );
    // The engine only held the reference, which resolves to the data.
    assert!(is_ref(&output["transformed"]), "{}", output["transformed"]);
    assert_eq!(
        claims
            .resolve(output["transformed"].clone())
            .await
            .expect("resolve output"),
        json!({"text": upper})
    );
    // The state stays small as well.
    let stored = client_local
        .store()
        .get(&observer.key(&exec))
        .await
        .expect("read state")
        .expect("state exists");
    assert!(
        stored.value.len() < DEFAULT_THRESHOLD,
        "state is {} bytes",
        stored.value.len()
    );

    // Every event and call message was below the threshold, and the big
    // payloads crossed as references.
    let seen = seen.lock().expect("lock").clone();
    let events = seen
        .iter()
        .filter(|(s, _)| s.starts_with(EVENTS_SUBJECT))
        .count();
    let calls: Vec<_> = seen
        .iter()
        .filter(|(s, _)| s.starts_with(CALLS_SUBJECT))
        .collect();
    assert!(
        events >= 3,
        "expected the three completions, saw {events} events"
    );
    assert_eq!(calls.len(), 3, "one message per call");
    for (subject, body) in &seen {
        assert!(
            body.len() < DEFAULT_THRESHOLD,
            "{subject}: {} bytes",
            body.len()
        );
    }
    let with_refs = |prefix: &str| {
        seen.iter()
            .filter(|(s, b)| s.starts_with(prefix) && String::from_utf8_lossy(b).contains(REF_KEY))
            .count()
    };
    assert_eq!(with_refs(CALLS_SUBJECT), 3, "every call carried references");
    assert!(
        with_refs(EVENTS_SUBJECT) >= 1,
        "the transform's output crossed as a reference"
    );
    worker.abort();
    agent.abort();
}
