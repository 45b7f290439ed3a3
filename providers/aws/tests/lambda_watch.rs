//! The real `trigflow-orchestrator` binary as Lambda runs it: under
//! cargo-lambda's emulator of the Lambda Runtime API (`cargo lambda
//! watch`), with its AWS clients on a moto server. Invokes go through the
//! emulator's Invoke HTTP path, as the console or an SDK send them:
//! a direct `start` (through `trigflow_aws::client`, the CLI's
//! `--function` path), an SQS-shaped batch with the step's result and a
//! malformed record (the answer lists exactly that record in
//! `batchItemFailures` because its dead-letter queue does not exist), a
//! malformed direct call (HTTP 500 from the emulator, with our error
//! type), and `status`. The execution's state is then read from DynamoDB.
//!
//! `cargo lambda watch --only-lambda-apis` serves the Runtime API and the
//! Invoke path, and the test starts the binary cargo built for it (set
//! `TRIGFLOW_ORCHESTRATOR_BIN` to run another build, e.g. the release
//! one), rather than letting cargo-lambda run `cargo build` itself: a
//! nested build inside `cargo test` would wait on the target directory's
//! lock. The function reaches the Runtime API through a small proxy that
//! notes when the first `next` request arrives: the cold-start init time.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_lambda::primitives::Blob;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trigflow_aws::DynamoStore;
use trigflow_aws::client::{ClientError, invoke_orchestrator, read_states, start_request};
use trigflow_aws::testing::MotoServer;
use trigflow_core::state::ExecutionStatus;

const DAG: &str = r#"
dag: greet
tasks:
  hello:
    function: lambda+sync:echo
    input: .input
output: '{greeting: ("Hello, " + .results.hello.input.name + "!")}'
"#;

/// The function name `cargo lambda watch --only-lambda-apis` serves.
const FUNCTION: &str = "_";

const EMPTY_ZIP: [u8; 22] = [
    0x50, 0x4b, 0x05, 0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process killed and reaped on drop; its output goes to a log.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Self {
        let log = std::env::temp_dir().join(format!("trigflow-{name}-{}.log", std::process::id()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cargo_lambda_installed() -> bool {
    Command::new("cargo")
        .args(["lambda", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_for_port(port: u16, what: &Proc, deadline: Duration) {
    let end = Instant::now() + deadline;
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            Instant::now() < end,
            "not listening on {port} after {deadline:?}:\n{}",
            what.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP/1.1 request (`Connection: close`); returns status and body.
fn http_post(port: u16, path: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    let (head, mut payload) = text.split_once("\r\n\r\n").expect("HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let dechunked;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = payload;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        dechunked = out;
        payload = &dechunked;
    }
    (
        status,
        serde_json::from_str(payload).unwrap_or_else(|e| panic!("{e}: {payload}")),
    )
}

/// Forwards TCP connections to `upstream`, noting when the first Runtime
/// API `next` request passes.
async fn proxy(
    listener: tokio::net::TcpListener,
    upstream: u16,
    first_next: Arc<OnceLock<Instant>>,
) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let first_next = first_next.clone();
        tokio::spawn(async move {
            let Ok(mut server) =
                tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)).await
            else {
                return;
            };
            let mut buf = vec![0u8; 16 * 1024];
            let Ok(n) = client.read(&mut buf).await else {
                return;
            };
            if String::from_utf8_lossy(&buf[..n]).contains("/runtime/invocation/next") {
                let _ = first_next.set(Instant::now());
            }
            if server.write_all(&buf[..n]).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}

fn sqs_record(id: &str, body: &str) -> Value {
    json!({
        "messageId": id,
        "receiptHandle": format!("receipt-{id}"),
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1700000000000"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:trigflow",
        "awsRegion": "us-east-1"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_binary_answers_the_lambda_invoke_path() {
    assert!(
        cargo_lambda_installed(),
        "cargo-lambda not found: pip install cargo-lambda"
    );
    let moto = MotoServer::start().expect("moto server");
    moto.lambda_without_docker().expect("moto lambda config");
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let queue = sqs
        .create_queue()
        .queue_name("trigflow")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    DynamoStore::new(dynamo.clone(), "trigflow")
        .create_table()
        .await
        .expect("table");
    let role = moto.create_lambda_role("step").expect("role");
    aws_sdk_lambda::Client::new(&sdk)
        .create_function()
        .function_name("echo")
        .runtime(aws_sdk_lambda::types::Runtime::Python312)
        .handler("index.handler")
        .role(role)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(Blob::new(EMPTY_ZIP.to_vec()))
                .build(),
        )
        .send()
        .await
        .expect("step function");

    // The emulator: Runtime API + Invoke path.
    let port = free_port();
    let mut watch = Command::new("cargo");
    watch
        .current_dir(workspace())
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string());
    let watch = Proc::spawn("cargo-lambda-watch", watch);
    wait_for_port(port, &watch, Duration::from_secs(60));

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("proxy port");
    let proxy_port = listener.local_addr().expect("addr").port();
    let first_next = Arc::new(OnceLock::new());
    tokio::spawn(proxy(listener, port, first_next.clone()));

    // The function, with the environment the SAM template gives it, its
    // dead-letter queue a queue that does not exist.
    let bin = std::env::var("TRIGFLOW_ORCHESTRATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_trigflow-orchestrator").to_owned());
    let mut function = Command::new(&bin);
    function
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{proxy_port}/.rt"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("TRIGFLOW_TABLE", "trigflow")
        .env("TRIGFLOW_QUEUE_URL", &queue)
        .env(
            "TRIGFLOW_DLQ_URL",
            format!("{}/123456789012/no-such-queue", moto.endpoint()),
        );
    let spawned = Instant::now();
    let function = Proc::spawn("orchestrator", function);
    let init = loop {
        if let Some(at) = first_next.get() {
            break at.duration_since(spawned);
        }
        assert!(
            spawned.elapsed() < Duration::from_secs(30),
            "the function never asked for an invocation:\n{}",
            function.log()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    eprintln!(
        "cold start of {bin}: {:.1} ms from process start to the first Runtime API `next`",
        init.as_secs_f64() * 1000.0
    );

    // Direct start through the Invoke path, as `trigflow start --aws
    // --function` sends it (an SDK client on the emulator's endpoint).
    let wf = trigflow_dag::load_str(DAG, "greet.yaml", &trigflow_dag::LoadOptions::default())
        .expect("valid DAG")
        .workflow;
    let mut settings = moto.settings();
    settings.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
    let lambda = aws_sdk_lambda::Client::new(&settings.load().await);
    let execution = "watch-1".parse().expect("id");
    let started = invoke_orchestrator(
        &lambda,
        FUNCTION,
        &start_request(&wf, &json!({"name": "Ada"}), &execution),
    )
    .await
    .unwrap_or_else(|e| panic!("start: {e}\n{}", function.log()));
    assert_eq!(started["execution"], "watch-1");
    assert_eq!(started["status"], "running", "{started}");

    // The synchronous step's result is on the queue: deliver the queue's
    // messages in SQS-shaped batches, the first with a malformed record,
    // until the execution has finished.
    let invoke_path = format!("/2015-03-31/functions/{FUNCTION}/invocations");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first = true;
    let mut delivered = 0;
    loop {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            let done = read_states(&dynamo, "trigflow", Some(&execution))
                .await
                .expect("read the table")
                .first()
                .is_some_and(|s| s.status.is_terminal());
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not finished:\n{}",
                function.log()
            );
            continue;
        }
        let mut records: Vec<Value> = messages
            .iter()
            .map(|m| {
                sqs_record(
                    m.message_id.as_deref().expect("id"),
                    m.body.as_deref().expect("body"),
                )
            })
            .collect();
        if first {
            records.push(sqs_record("m-bad", "not a trigflow message"));
        }
        let (status, answer) =
            http_post(port, &invoke_path, &json!({"Records": records}).to_string());
        assert_eq!(status, 200, "{answer}\n{}", function.log());
        // The malformed record could not be dead-lettered (no such queue),
        // so it is handed back to SQS; the others are applied.
        let expected = if first {
            json!({"batchItemFailures": [{"itemIdentifier": "m-bad"}]})
        } else {
            json!({"batchItemFailures": []})
        };
        assert_eq!(answer, expected);
        first = false;
        delivered += messages.len();
        for m in &messages {
            sqs.delete_message()
                .queue_url(&queue)
                .receipt_handle(m.receipt_handle.clone().expect("receipt"))
                .send()
                .await
                .expect("delete");
        }
    }
    assert!(
        delivered >= 2,
        "the step's result and the task's done event"
    );

    // The effect, read from DynamoDB.
    let states = read_states(&dynamo, "trigflow", Some(&execution))
        .await
        .expect("read the table");
    assert_eq!(states.len(), 1);
    assert_eq!(
        states[0].status,
        ExecutionStatus::Succeeded {
            output: json!({"greeting": "Hello, Ada!"})
        }
    );
    // Start, the step's result, the task's done event.
    assert_eq!(states[0].events_applied, 3);

    // `status` through the SDK, and a handler error: cargo-lambda answers
    // it with HTTP 500 (AWS: 200 + X-Amz-Function-Error) and our error type.
    let status = invoke_orchestrator(
        &lambda,
        FUNCTION,
        &json!({"action": "status", "execution": "watch-1"}),
    )
    .await
    .expect("status");
    assert_eq!(status["status"], "succeeded");
    assert_eq!(status["output"], json!({"greeting": "Hello, Ada!"}));
    let (code, error) = http_post(
        port,
        &format!("/2015-03-31/functions/{FUNCTION}/invocations"),
        r#"{"action": "status"}"#,
    );
    assert_eq!(code, 500);
    assert_eq!(error["errorType"], "trigflow.Malformed", "{error}");
    let unknown = invoke_orchestrator(
        &lambda,
        FUNCTION,
        &json!({"action": "status", "execution": "nope"}),
    )
    .await;
    assert!(
        matches!(
            unknown,
            Err(ClientError::Invoke { .. } | ClientError::Function { .. })
        ),
        "{unknown:?}"
    );
    drop(function);
    drop(watch);
}
