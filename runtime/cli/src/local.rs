//! Local mode from the command line: `trigflow worker | agent | agents`
//! and the `--nats` variants of `start`, `send`, `status`, `history` and
//! `dead-letters`, on NATS JetStream through `trigflow-local`.
//!
//! Local mode is selected by `--nats URL`, by `--config FILE`, or by the
//! environment variable `TRIGFLOW_NATS_URL`; otherwise the commands use the
//! embedded database. Settings come from defaults, the settings file, the
//! `TRIGFLOW_*` variables and the flags, each overriding the one before (see
//! `trigflow_local::settings`). Built without the `local` feature, these
//! commands say so and fail.

use std::path::PathBuf;
#[cfg(not(feature = "local"))]
use std::process::ExitCode;

/// Flags that select local mode (shared by every command that has both modes).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct LocalArgs {
    /// Local mode: NATS server URL(s), comma-separated (overrides
    /// TRIGFLOW_NATS_URL and the settings file).
    #[arg(long = "nats", value_name = "URL")]
    pub nats: Option<String>,
    /// Local mode: a settings file (YAML or JSON; see `trigflow-local`'s
    /// README for the keys).
    #[arg(long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The variable that selects local mode when no flag does.
const NATS_URL_VAR: &str = "TRIGFLOW_NATS_URL";

impl LocalArgs {
    /// Whether the command runs against local mode.
    pub fn selected(&self) -> bool {
        self.nats.is_some()
            || self.config.is_some()
            || std::env::var_os(NATS_URL_VAR).is_some_and(|v| !v.is_empty())
    }
}

/// `trigflow agent`: serve functions on NATS.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    /// A function to serve, `NAME=REF` (calls to `nats:NAME` run REF: a
    /// `cmd:` command, an `http(s)://` endpoint, `stub:<N>ms` or
    /// `builtin:echo|sum|count|fail`), or a bare REF served under its own
    /// text. Repeatable; adds to TRIGFLOW_FUNCTIONS and the settings file.
    #[arg(long = "function", value_name = "NAME=REF")]
    pub functions: Vec<String>,
    /// This node's name in heartbeats (overrides TRIGFLOW_NODE).
    #[arg(long)]
    pub node: Option<String>,
    /// Directory `cmd:` functions run in (overrides TRIGFLOW_FUNCTIONS_DIR).
    #[arg(long)]
    pub functions_dir: Option<PathBuf>,
    /// Calls of one function at once (overrides TRIGFLOW_CONCURRENCY).
    #[arg(long)]
    pub concurrency: Option<usize>,
}

/// `trigflow agents`: list agents and their nodes from their heartbeats.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentsArgs {
    #[command(flatten)]
    pub local: LocalArgs,
    /// Print JSON (one array, each report with an `alive` flag).
    #[arg(long)]
    pub json: bool,
    /// Include agents that missed three heartbeats.
    #[arg(long)]
    pub all: bool,
}

/// A command of both modes, with the arguments local mode uses.
// Built without `local`, only the refusal in `run` sees a request.
#[cfg_attr(not(feature = "local"), allow(dead_code))]
pub enum Request {
    /// `trigflow start`.
    Start {
        file: PathBuf,
        input: String,
        execution: Option<String>,
        load: crate::LoadArgs,
    },
    /// `trigflow send`.
    Send {
        execution: Option<String>,
        ty: String,
        subject: Option<String>,
        data: Option<String>,
        id: Option<String>,
        source: String,
        raw: Option<String>,
    },
    /// `trigflow worker`.
    Worker { until_idle: bool },
    /// `trigflow status`.
    Status { execution: Option<String> },
    /// `trigflow history`.
    History { execution: String, json: bool },
    /// `trigflow dead-letters`.
    DeadLetters,
}

#[cfg(feature = "local")]
pub use imp::{agent, agents, run};

#[cfg(not(feature = "local"))]
/// Without the `local` feature: fails with the rebuild hint.
pub fn run(_args: &LocalArgs, _request: Request) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "local mode (--nats, --config, TRIGFLOW_NATS_URL) needs trigflow built with the `local` feature"
    )
}

#[cfg(feature = "local")]
mod imp {
    use std::path::Path;
    use std::process::ExitCode;
    use std::sync::Arc;

    use anyhow::{Context as _, bail};
    use serde_json::Value;
    use tracing::info;
    use trigflow_core::Engine;
    use trigflow_core::seams::EventSink as _;
    use trigflow_core::state::ExecutionState;
    use trigflow_embedded::{FunctionCaller, FunctionRegistry, InvokerConfig};
    use trigflow_local::names::{self, flags};
    use trigflow_local::settings::split_function;
    use trigflow_local::{Agent, Local, LocalError, LocalSettings, MinioBridge, Origin, builtins};
    use trigflow_worker::{Clock as _, SystemClock, Worker};

    use super::{AgentArgs, AgentsArgs, LocalArgs, Request};

    fn settings(args: &LocalArgs) -> anyhow::Result<LocalSettings> {
        let mut s = LocalSettings::from_process(args.config.as_deref())?;
        if let Some(url) = &args.nats {
            s.apply("nats_url", url, Origin::Flag(flags::NATS.into()))?;
        }
        Ok(s)
    }

    async fn connect(s: &LocalSettings) -> anyhow::Result<Local> {
        let local = Local::connect(s.local_config())
            .await
            .map_err(|e| match e {
                LocalError::Connect { .. } => {
                    anyhow::anyhow!("{e} [nats_url from {}]", s.origin("nats_url"))
                }
                other => other.into(),
            })?;
        // With an object store, big payloads travel by reference.
        match s
            .claim_check()
            .await
            .map_err(|e| anyhow::anyhow!("{e} [s3_endpoint from {}]", s.origin("s3_endpoint")))?
        {
            Some(claims) => Ok(local.with_claims(claims)),
            None => Ok(local),
        }
    }

    fn worker_on(local: &Local) -> Worker {
        Worker::new(
            Engine::new(),
            Arc::new(local.store()),
            Arc::new(local.sink()),
            Arc::new(local.invoker()),
        )
    }

    /// Completes on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
    async fn shutdown_signal() {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }

    /// Runs a command of both modes against local mode.
    pub fn run(args: &LocalArgs, request: Request) -> anyhow::Result<ExitCode> {
        let s = settings(args)?;
        crate::runtime()?.block_on(async move {
            match request {
                Request::Start {
                    file,
                    input,
                    execution,
                    load,
                } => start(&s, &file, &input, execution, &load).await,
                Request::Send {
                    execution,
                    ty,
                    subject,
                    data,
                    id,
                    source,
                    raw,
                } => {
                    let local = connect(&s).await?;
                    let sink = local.sink();
                    if let Some(raw) = raw {
                        let body = crate::read_arg(&raw)?.into_bytes();
                        match trigflow_core::event::decode(&body) {
                            Ok(event) => sink.publish(std::slice::from_ref(&event)).await?,
                            // Not an event: the worker dead-letters it with
                            // the reason, as in embedded mode.
                            Err(_) => {
                                let subject = names::event_subject(None);
                                local
                                    .jetstream()
                                    .publish(subject.clone(), body.into())
                                    .await
                                    .with_context(|| format!("publishing on {subject}"))?
                                    .await
                                    .with_context(|| format!("publishing on {subject}"))?;
                            }
                        }
                        return Ok(ExitCode::SUCCESS);
                    }
                    let event = crate::user_event(
                        execution,
                        &ty,
                        subject.as_deref(),
                        data.as_deref(),
                        id,
                        &source,
                    )?;
                    sink.publish(std::slice::from_ref(&event)).await?;
                    Ok(ExitCode::SUCCESS)
                }
                Request::Worker { until_idle } => {
                    if until_idle {
                        bail!("--until-idle is not supported in local mode (workers run until stopped)");
                    }
                    worker(&s).await
                }
                Request::Status { execution } => status(&s, execution.as_deref()).await,
                Request::History { execution, json } => history(&s, &execution, json).await,
                Request::DeadLetters => {
                    let local = connect(&s).await?;
                    for l in local.sink().dead_letters().await? {
                        println!("{}", serde_json::to_string(&l)?);
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        })
    }

    async fn start(
        s: &LocalSettings,
        file: &Path,
        input: &str,
        execution: Option<String>,
        load: &crate::LoadArgs,
    ) -> anyhow::Result<ExitCode> {
        let doc = crate::load(file, load)?;
        let input = crate::parse_input(input)?;
        let execution = crate::execution_id(execution)?;
        let local = connect(s).await?;
        // A big input is stored once and the state holds its reference.
        let input = match local.claims() {
            Some(claims) => claims
                .offload(input)
                .await
                .context("offloading the input to the object store")?,
            None => input,
        };
        // Writing the initial state and dispatching the first effects is
        // all a start needs; a running `trigflow worker` carries it on.
        worker_on(&local)
            .start(&doc.workflow, execution.clone(), input)
            .await?;
        println!("{execution}");
        Ok(ExitCode::SUCCESS)
    }

    async fn worker(s: &LocalSettings) -> anyhow::Result<ExitCode> {
        let local = connect(s).await?;
        let worker = worker_on(&local);
        let recovered = worker.recover().await?;
        info!(
            url = %s.nats_url,
            recovered, "worker started; consuming {}", names::WORKER_CONSUMER
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let source = local.source();
        let timers = local.sink().timer_loop();
        // With an object store, MinIO's bucket notifications (on
        // `trigflow.minio`) become data-ready events.
        let bridge = async {
            if local.claims().is_some() {
                let bridge = MinioBridge::new(&local);
                if let Err(e) = bridge.run(stopped(stop_rx.clone())).await {
                    tracing::warn!(error = %e, "MinIO notification bridge stopped");
                }
            }
        };
        tokio::join!(
            worker.run(&source, s.batch_size, stopped(stop_rx.clone()), |r| {
                for e in &r.finished {
                    info!(execution = %e, "execution finished");
                }
            }),
            timers.run(stopped(stop_rx.clone())),
            bridge,
        );
        info!("worker stopped");
        Ok(ExitCode::SUCCESS)
    }

    /// The handler of a function reference, checked before serving so that
    /// a typo fails at start-up, not at the first call.
    fn handler_for(
        name: &str,
        reference: &str,
        caller: &FunctionCaller,
    ) -> anyhow::Result<trigflow_local::Handler> {
        if let Some(b) = reference.strip_prefix("builtin:") {
            return builtins::handler(b).with_context(|| {
                format!(
                    "function {name}: no built-in {reference:?} (known: builtin:{})",
                    builtins::NAMES.join(", builtin:")
                )
            });
        }
        let known = ["cmd:", "http://", "https://", "stub:"];
        if !known.iter().any(|p| reference.starts_with(p)) {
            bail!(
                "function {name}: an agent cannot run {reference:?}; expected one of \
                 cmd:, http://, https://, stub:, builtin:"
            );
        }
        let caller = caller.clone();
        let reference = reference.to_owned();
        Ok(Arc::new(move |inv| {
            let caller = caller.clone();
            let reference = reference.clone();
            Box::pin(async move { caller.call(&reference, inv.input).await })
        }))
    }

    /// `trigflow agent`.
    pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
        let mut s = settings(&args.local)?;
        if let Some(node) = &args.node {
            s.apply("node", node, Origin::Flag(flags::NODE.into()))?;
        }
        if let Some(dir) = &args.functions_dir {
            s.functions_dir = Some(dir.clone());
        }
        if let Some(n) = args.concurrency {
            s.apply(
                "concurrency",
                &n.to_string(),
                Origin::Flag("--concurrency".into()),
            )?;
        }
        for entry in &args.functions {
            let (name, reference) = split_function(entry)
                .map_err(|m| anyhow::anyhow!("{} {entry:?}: {m}", flags::FUNCTION))?;
            s.functions.insert(name, reference);
        }
        if s.functions.is_empty() {
            bail!(
                "no functions to serve: give {} NAME=REF, set {} or `functions` in the settings file",
                flags::FUNCTION,
                names::env::FUNCTIONS
            );
        }
        let base_dir = match &s.functions_dir {
            Some(d) => Some(std::fs::canonicalize(d).with_context(|| {
                format!(
                    "setting `functions_dir` from {}: {} is not a directory",
                    s.origin("functions_dir"),
                    d.display()
                )
            })?),
            None => None,
        };
        let caller = FunctionCaller::new(
            FunctionRegistry::new(),
            &InvokerConfig {
                concurrency: s.concurrency,
                base_dir,
                command_timeout: s.command_timeout,
                http_timeout: s.command_timeout,
            },
        )?;
        let handlers = s
            .functions
            .iter()
            .map(|(name, reference)| Ok((name.clone(), handler_for(name, reference, &caller)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        crate::runtime()?.block_on(async move {
            let local = connect(&s).await?;
            let mut agent = Agent::new(&local)
                .with_node(s.node.clone())
                .with_heartbeat(s.heartbeat)
                .with_concurrency(s.concurrency);
            for (name, handler) in handlers {
                agent = agent.serve_handler(&name, handler);
            }
            info!(node = %s.node, functions = ?agent.functions(), "agent started");
            agent.run(shutdown_signal()).await?;
            info!("agent stopped");
            Ok(ExitCode::SUCCESS)
        })
    }

    /// `trigflow agents`.
    pub fn agents(args: AgentsArgs) -> anyhow::Result<ExitCode> {
        let s = settings(&args.local)?;
        crate::runtime()?.block_on(async move {
            let local = connect(&s).await?;
            let now = SystemClock.now_ms();
            let reports: Vec<_> = local
                .agents()
                .all()
                .await?
                .into_iter()
                .filter(|r| args.all || r.is_alive(now))
                .collect();
            if args.json {
                let list: Vec<Value> = reports
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                        if let Value::Object(m) = &mut v {
                            m.insert("alive".into(), Value::Bool(r.is_alive(now)));
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<24} {:<6} {:>7} {:>5} {:>6} {:>10}  FUNCTIONS",
                "NODE", "INSTANCE", "ALIVE", "AGE(s)", "CPUS", "LOAD1", "MEM FREE"
            );
            for r in reports {
                println!(
                    "{:<20} {:<24} {:<6} {:>7.1} {:>5} {:>6} {:>10}  {}",
                    r.node,
                    r.instance,
                    if r.is_alive(now) { "yes" } else { "no" },
                    (now - r.at_ms) as f64 / 1000.0,
                    r.stats.cpus,
                    r.stats
                        .load
                        .map_or_else(|| "-".into(), |l| format!("{:.2}", l[0])),
                    r.stats
                        .mem_available_bytes
                        .map_or_else(|| "-".into(), |b| format!("{}M", b >> 20)),
                    r.functions.join(",")
                );
            }
            Ok(ExitCode::SUCCESS)
        })
    }

    async fn read_states(
        s: &LocalSettings,
        only: Option<&str>,
    ) -> anyhow::Result<Vec<ExecutionState>> {
        let local = connect(s).await?;
        let observer = worker_on(&local);
        let ids = match only {
            Some(e) => vec![e.to_owned()],
            None => observer.executions().await?,
        };
        let mut out = Vec::new();
        for id in ids {
            let exec = id.parse()?;
            match observer.load(&exec).await? {
                Some(state) => out.push(state),
                None => bail!("no execution {id} on NATS at {}", s.nats_url),
            }
        }
        Ok(out)
    }

    async fn status(s: &LocalSettings, execution: Option<&str>) -> anyhow::Result<ExitCode> {
        crate::report::status(&read_states(s, execution).await?, execution.is_some())
    }

    async fn history(s: &LocalSettings, execution: &str, json: bool) -> anyhow::Result<ExitCode> {
        crate::report::history(&read_states(s, Some(execution)).await?, execution, json)
    }
}
