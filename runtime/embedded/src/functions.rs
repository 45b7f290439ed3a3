//! Function references the embedded invoker can call, and how it calls them.
//!
//! | Reference | Runs |
//! |---|---|
//! | `inproc:NAME` | a closure registered in a [`FunctionRegistry`] |
//! | `cmd:PROGRAM ARG...` | a program: input JSON on stdin, output JSON on stdout |
//! | `http://...`, `https://...` | a POST of the input JSON; the 2xx JSON body is the output |
//! | `stub:250ms`, `stub:2s` | sleeps, then returns the input (benchmark stubs) |
//!
//! Every failure is a [`FunctionError`] (so the execution sees a
//! `function.failed` event with a clear cause), never a panic.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use trigflow_core::state::FunctionError;

/// What an in-process function returns.
pub type FunctionFuture = BoxFuture<'static, Result<Value, FunctionError>>;

/// An in-process function: input JSON in, output JSON (or an error) out.
pub type InprocFunction = Arc<dyn Fn(Value) -> FunctionFuture + Send + Sync>;

/// The in-process functions that `inproc:NAME` references resolve to.
/// Cloning shares the registry, so functions can be registered after the
/// invoker is built.
#[derive(Clone, Default)]
pub struct FunctionRegistry {
    functions: Arc<RwLock<HashMap<String, InprocFunction>>>,
}

impl fmt::Debug for FunctionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionRegistry")
            .field("names", &self.names())
            .finish()
    }
}

impl FunctionRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or replaces) `name` with a function returning a boxed
    /// future.
    pub fn register(
        &self,
        name: impl Into<String>,
        f: impl Fn(Value) -> FunctionFuture + Send + Sync + 'static,
    ) -> &Self {
        self.write().insert(name.into(), Arc::new(f));
        self
    }

    /// Registers an `async` function.
    pub fn register_async<F, Fut>(&self, name: impl Into<String>, f: F) -> &Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, FunctionError>> + Send + 'static,
    {
        self.register(name, move |input| f(input).boxed())
    }

    /// Registers a synchronous function (it should be quick: it runs on the
    /// async threads).
    pub fn register_fn<F>(&self, name: impl Into<String>, f: F) -> &Self
    where
        F: Fn(Value) -> Result<Value, FunctionError> + Send + Sync + 'static,
    {
        self.register(name, move |input| futures::future::ready(f(input)).boxed())
    }

    /// The function registered as `name`.
    pub fn get(&self, name: &str) -> Option<InprocFunction> {
        self.read().get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, InprocFunction>> {
        // Inserts cannot leave the map half-changed, so a poisoned lock is
        // still usable.
        self.functions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, InprocFunction>> {
        self.functions.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// How much of stderr a command failure quotes.
const STDERR_TAIL: usize = 2000;
/// How much of an HTTP error body a failure quotes.
const BODY_START: usize = 500;

fn ferr(error: &str, cause: impl Into<String>) -> FunctionError {
    FunctionError {
        error: error.to_owned(),
        cause: cause.into(),
    }
}

/// Everything needed to call any function reference.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) registry: FunctionRegistry,
    pub(crate) base_dir: Option<PathBuf>,
    pub(crate) command_timeout: Duration,
    pub(crate) http: reqwest::Client,
}

impl Caller {
    /// Calls `function` with `input`. A panic in an in-process function
    /// becomes a `Panic` error instead of taking the runner down.
    pub(crate) async fn call(&self, function: &str, input: Value) -> Result<Value, FunctionError> {
        let fut = std::panic::AssertUnwindSafe(self.dispatch(function, input));
        match fut.catch_unwind().await {
            Ok(r) => r,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                Err(ferr(
                    "Panic",
                    format!("function {function:?} panicked: {msg}"),
                ))
            }
        }
    }

    async fn dispatch(&self, function: &str, input: Value) -> Result<Value, FunctionError> {
        if let Some(name) = function.strip_prefix("inproc:") {
            let f = self.registry.get(name).ok_or_else(|| {
                ferr(
                    "UnknownFunction",
                    format!(
                        "no in-process function {name:?} is registered (registered: {:?})",
                        self.registry.names()
                    ),
                )
            })?;
            f(input).await
        } else if let Some(command) = function.strip_prefix("cmd:") {
            self.run_command(command, input).await
        } else if function.starts_with("http://") || function.starts_with("https://") {
            self.post(function, input).await
        } else if let Some(spec) = function.strip_prefix("stub:") {
            let delay = parse_stub(spec).ok_or_else(|| {
                ferr(
                    "BadStub",
                    format!("{function:?}: expected stub:<N>ms or stub:<N>s"),
                )
            })?;
            tokio::time::sleep(delay).await;
            Ok(input)
        } else {
            Err(ferr(
                "UnknownScheme",
                format!(
                    "function reference {function:?} has no scheme the embedded invoker knows \
                     (inproc:, cmd:, http://, https://, stub:)"
                ),
            ))
        }
    }

    async fn run_command(&self, command: &str, input: Value) -> Result<Value, FunctionError> {
        let words = shlex::split(command)
            .filter(|w| !w.is_empty())
            .ok_or_else(|| ferr("BadCommand", format!("cannot split command {command:?}")))?;
        let (program, args) = match words.split_first() {
            Some(p) => p,
            None => return Err(ferr("BadCommand", "empty command")),
        };
        let mut path = PathBuf::from(program);
        // A bare name is looked up on PATH; a relative path is relative to
        // the workflow's directory, not to wherever trigflow was started.
        if let Some(base) = &self.base_dir
            && path.is_relative()
            && program.contains('/')
        {
            path = base.join(path);
        }
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out or abandoned call must not leave the process behind.
            .kill_on_drop(true);
        if let Some(base) = &self.base_dir {
            cmd.current_dir(base);
        }
        let mut child = cmd.spawn().map_err(|e| {
            ferr(
                "SpawnFailed",
                format!("cannot start command {command:?} ({}): {e}", path.display()),
            )
        })?;
        let stdin_bytes = serde_json::to_vec(&input)
            .map_err(|e| ferr("BadInput", format!("cannot encode input: {e}")))?;
        let stdin = child.stdin.take();
        let feed = async move {
            if let Some(mut stdin) = stdin {
                // A program that ignores its input may close stdin early; that
                // is not an error of the call.
                let _ = stdin.write_all(&stdin_bytes).await;
                let _ = stdin.shutdown().await;
            }
        };
        let run = async {
            let ((), output) = tokio::join!(feed, child.wait_with_output());
            output
        };
        let output = match tokio::time::timeout(self.command_timeout, run).await {
            Err(_) => {
                return Err(ferr(
                    "Timeout",
                    format!(
                        "command {command:?} did not finish within {:?}",
                        self.command_timeout
                    ),
                ));
            }
            Ok(Err(e)) => {
                return Err(ferr(
                    "CommandFailed",
                    format!("waiting for command {command:?} failed: {e}"),
                ));
            }
            Ok(Ok(o)) => o,
        };
        let stderr = tail(&output.stderr, STDERR_TAIL);
        if !output.status.success() {
            return Err(ferr(
                "ExitCode",
                format!("command {command:?} failed ({}): {stderr}", output.status),
            ));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| {
            ferr(
                "InvalidOutput",
                format!(
                    "command {command:?} did not print JSON on stdout ({e}); stdout starts {:?}; stderr: {stderr}",
                    head(&output.stdout, BODY_START)
                ),
            )
        })
    }

    async fn post(&self, url: &str, input: Value) -> Result<Value, FunctionError> {
        let response = self
            .http
            .post(url)
            .json(&input)
            .send()
            .await
            .map_err(|e| ferr("HttpError", format!("POST {url} failed: {e}")))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            ferr(
                "HttpError",
                format!("reading the response of {url} failed: {e}"),
            )
        })?;
        if !status.is_success() {
            return Err(ferr(
                &format!("Http{}", status.as_u16()),
                format!("POST {url} returned {status}: {}", head(&body, BODY_START)),
            ));
        }
        serde_json::from_slice(&body).map_err(|e| {
            ferr(
                "InvalidOutput",
                format!(
                    "POST {url} returned {status} with a body that is not JSON ({e}): {}",
                    head(&body, BODY_START)
                ),
            )
        })
    }
}

/// Calls any function reference the embedded invoker knows, directly and
/// without the durable path: the edge agent of local mode reuses it so that
/// `cmd:`, `http(s)://`, `stub:` and `inproc:` behave the same in both modes.
#[derive(Debug, Clone)]
pub struct FunctionCaller {
    inner: Caller,
}

impl FunctionCaller {
    /// A caller with `registry` for `inproc:` references and the directory
    /// and timeouts of `config` (its `concurrency` is not used here).
    pub fn new(
        registry: FunctionRegistry,
        config: &crate::InvokerConfig,
    ) -> Result<Self, crate::EmbeddedError> {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .build()
            .map_err(|e| crate::EmbeddedError::HttpClient(e.to_string()))?;
        Ok(Self {
            inner: Caller {
                registry,
                base_dir: config.base_dir.clone(),
                command_timeout: config.command_timeout,
                http,
            },
        })
    }

    /// Calls `function` with `input`; every failure is a [`FunctionError`].
    pub async fn call(&self, function: &str, input: Value) -> Result<Value, FunctionError> {
        self.inner.call(function, input).await
    }
}

/// `250ms` or `2s`.
fn parse_stub(spec: &str) -> Option<Duration> {
    if let Some(ms) = spec.strip_suffix("ms") {
        ms.trim().parse().ok().map(Duration::from_millis)
    } else if let Some(s) = spec.strip_suffix('s') {
        s.trim().parse().ok().map(Duration::from_secs)
    } else {
        None
    }
}

/// The last `max` bytes as text, trimmed.
fn tail(bytes: &[u8], max: usize) -> String {
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
}

/// The first `max` bytes as text.
fn head(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_durations_parse() {
        assert_eq!(parse_stub("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_stub("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_stub("0ms"), Some(Duration::ZERO));
        assert_eq!(parse_stub("fast"), None);
        assert_eq!(parse_stub("5m"), None);
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail(b"abcdef\n", 4), "def");
        assert_eq!(tail(b"ab", 10), "ab");
    }
}
