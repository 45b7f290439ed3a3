//! A real moto server for tests (feature `testing`): moto's server bound to
//! 127.0.0.1 on a free port, killed (exactly that process) on drop. It
//! emulates SQS, DynamoDB, S3 and the Lambda API in one process.
//!
//! One difference from `moto_server -H 127.0.0.1 -p PORT`: DynamoDB
//! requests are served one at a time. moto's DynamoDB evaluates a
//! condition expression and then writes without a lock, and its server is
//! threaded, so two conditional writes on one item can both pass (the
//! 64-writer compare-and-swap race lost updates that way). DynamoDB itself
//! applies each conditional write atomically per item; serialising the
//! emulator's DynamoDB requests restores that guarantee and nothing more.
//! Other services stay concurrent (an SQS long poll must not block the
//! store). The wrapper is moto's own WSGI application under werkzeug, run
//! by the Python interpreter that `moto_server` uses.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let moto = trigflow_aws::testing::MotoServer::start()?;
//! let sdk = moto.sdk_config().await;
//! let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::AwsSettings;

/// The binary the helper runs.
pub const MOTO_SERVER: &str = "moto_server";

/// How long the server may take to answer `GET /moto-api/`.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// Starting the test server failed.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    /// `moto_server` is not on `PATH`.
    #[error("moto_server not found: pip install 'moto[server]'")]
    NotFound,
    /// It could not be started, or did not answer in time.
    #[error("moto_server on port {port} (log {log}): {message}")]
    Start {
        /// The port it was given.
        port: u16,
        /// Its log file.
        log: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A request to the server's own API failed.
    #[error("moto_server on port {port}: {path}: {message}")]
    Api {
        /// The port.
        port: u16,
        /// The API path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The log file could not be made.
    #[error("test server setup: {0}")]
    Io(#[from] std::io::Error),
}

/// A running `moto_server`, owned by a test.
#[derive(Debug)]
pub struct MotoServer {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

impl MotoServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Result<Self, MotoError> {
        Self::start_program(MOTO_SERVER)
    }

    /// [`MotoServer::start`] with another binary name (looked up on `PATH`).
    pub fn start_program(program: &str) -> Result<Self, MotoError> {
        if !on_path(program) {
            return Err(MotoError::NotFound);
        }
        // A free port can be taken between the probe and the server's bind;
        // try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let log = std::env::temp_dir()
                .join(format!("trigflow-moto-{}-{port}.log", std::process::id()));
            match launch(program, port, &log) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        port,
                        log,
                    });
                }
                Err(e @ MotoError::NotFound) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(MotoError::NotFound))
    }

    /// The endpoint URL every AWS client of the test uses.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file.
    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }

    /// Settings for this server: its endpoint, region us-east-1 and dummy
    /// static credentials (moto accepts any).
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            endpoint_url: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            static_credentials: Some(("testing".into(), "testing".into())),
        }
    }

    /// An SDK configuration pointing at this server.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        self.settings().load().await
    }

    /// Makes moto's Lambda echo payloads instead of running them in
    /// Docker (there is no Docker engine here).
    pub fn lambda_without_docker(&self) -> Result<(), MotoError> {
        self.api_post("/moto-api/config", r#"{"lambda":{"use_docker":false}}"#)
    }

    /// Queues the responses moto's Docker-less Lambda gives to the next
    /// invokes (in order; after them it echoes the payload again).
    pub fn lambda_results(&self, results: &[&str]) -> Result<(), MotoError> {
        let body = serde_json::json!({"results": results, "region": "us-east-1"}).to_string();
        self.api_post("/moto-api/static/lambda-simple/response", &body)
    }

    /// Creates an IAM role Lambda may assume (moto's CreateFunction wants
    /// an existing role) and returns its ARN. Sent as IAM's query protocol;
    /// moto routes on the credential scope and checks no signature.
    pub fn create_lambda_role(&self, name: &str) -> Result<String, MotoError> {
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
        let form = format!(
            "Action=CreateRole&Version=2010-05-08&RoleName={}&AssumeRolePolicyDocument={}",
            url_encode(name),
            url_encode(trust)
        );
        let request = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\r\n{form}",
            self.port,
            form.len()
        );
        let status = http_status(self.port, &request).map_err(|e| MotoError::Api {
            port: self.port,
            path: "iam CreateRole".into(),
            message: e.to_string(),
        })?;
        if !(200..300).contains(&status) {
            return Err(MotoError::Api {
                port: self.port,
                path: "iam CreateRole".into(),
                message: format!("HTTP {status}"),
            });
        }
        Ok(format!("arn:aws:iam::123456789012:role/{name}"))
    }

    /// Posts JSON to moto's own API and checks for a 2xx answer.
    fn api_post(&self, path: &str, body: &str) -> Result<(), MotoError> {
        let fail = |message: String| MotoError::Api {
            port: self.port,
            path: path.to_owned(),
            message,
        };
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        let status = http_status(self.port, &request).map_err(|e| fail(e.to_string()))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(fail(format!("HTTP {status}")))
        }
    }

    /// Kills the server and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawns the server and polls `GET /moto-api/` until it answers 200;
/// fails at the deadline or as soon as the process exits (port taken),
/// killing what it started.
fn launch(program: &str, port: u16, log: &PathBuf) -> Result<Child, MotoError> {
    let fail = |message: String| MotoError::Start {
        port,
        log: log.clone(),
        message,
    };
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    let python = interpreter_of(program).unwrap_or_else(|| "python3".into());
    let mut child = Command::new(python)
        .args(["-c", SERVE, &port.to_string()])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MotoError::NotFound,
            _ => fail(e.to_string()),
        })?;
    let deadline = Instant::now() + READY_DEADLINE;
    let probe = format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!("exited early with {status}")));
        }
        if matches!(http_status(port, &probe), Ok(200)) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("not answering after {READY_DEADLINE:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// moto's server application with DynamoDB requests serialised (see the
/// module docs). `argv[1]` is the port.
const SERVE: &str = r#"
import sys, threading
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
def serve(environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
        with lock:
            return list(app(environ, start_response))
    return app(environ, start_response)
run_simple("127.0.0.1", int(sys.argv[1]), serve, threaded=True)
"#;

/// The Python interpreter a console script such as `moto_server` runs
/// under: its `#!` line, unless that is a shell wrapper (pyenv shims).
fn interpreter_of(program: &str) -> Option<String> {
    let paths = std::env::var_os("PATH")?;
    let script = std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())?;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(&script).ok()?.read(&mut head).ok()?;
    let first = String::from_utf8_lossy(&head[..n]);
    let line = first.lines().next()?.strip_prefix("#!")?.trim();
    let interpreter = line.split_whitespace().next()?;
    interpreter
        .contains("python")
        .then(|| interpreter.to_owned())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends one HTTP/1.0 request and returns the response's status code.
fn http_status(port: u16, request: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:.80}")))
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.kill();
    }
}
