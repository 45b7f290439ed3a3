//! `trigflow`: run, check and inspect trigger-based workflows.
//!
//! Embedded mode is the default: one process, a durable file-backed store
//! (`.trigflow/trigflow.redb`, or `--db` / `TRIGFLOW_DB`), functions that are
//! in-process handlers, local commands or HTTP endpoints.

mod aws;
mod bench;
#[cfg(feature = "local")]
mod bench_local;
mod ingest;
mod local;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use serde_json::Value;
use trigflow_core::ids::ExecutionId;
use trigflow_core::state::ExecutionStatus;
use trigflow_dag::{LoadOptions, Loaded};
use trigflow_embedded::runtime::{EmbeddedRuntime, Options, open_db};

#[derive(Parser)]
#[command(
    name = "trigflow",
    version,
    about = "Trigger-based orchestration of serverless functions"
)]
struct Cli {
    /// Log detail on stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct DbArg {
    /// The embedded database file.
    #[arg(long, env = "TRIGFLOW_DB", default_value = ".trigflow/trigflow.redb")]
    db: PathBuf,
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    /// FaaSFlow documents: multiply each function's runtime by this.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// FaaSFlow documents: items per `foreach` edge.
    #[arg(long, default_value_t = 3)]
    foreach_width: usize,
    /// ASL documents: a JSON object mapping Task resources (Lambda ARNs or
    /// function names) to function references, e.g.
    /// `{"order-charge": "cmd:python3 charge.py"}`.
    #[arg(long)]
    resources: Option<PathBuf>,
}

/// Which waiting ASL task a `task-*` command answers.
#[derive(clap::Args, Clone)]
struct TaskArgs {
    /// The execution (default: the one the token names).
    #[arg(long)]
    execution: Option<String>,
    /// The task token the task handed out (`$$.Task.Token`).
    #[arg(long)]
    token: String,
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    local: local::LocalArgs,
}

/// A `task-*` command is an event to the execution with the token as its
/// subject; as a `send` it goes to whichever mode `send` would use.
fn task_command_as_send(command: Command) -> anyhow::Result<Command> {
    let (task, ty, data) = match command {
        Command::TaskSuccess { task, output } => {
            (task, trigflow_asl::TYPE_TASK_SUCCESS, Some(output))
        }
        Command::TaskFailure { task, error, cause } => {
            let data = serde_json::json!({"error": error, "cause": cause.unwrap_or_default()});
            (
                task,
                trigflow_asl::TYPE_TASK_FAILURE,
                Some(data.to_string()),
            )
        }
        Command::TaskHeartbeat { task } => (task, trigflow_asl::TYPE_TASK_HEARTBEAT, None),
        other => return Ok(other),
    };
    let execution = match task.execution {
        Some(e) => e,
        None => trigflow_asl::token_execution(&task.token)
            .with_context(|| {
                format!(
                    "{:?} is not a trigflow task token; give the execution with --execution",
                    task.token
                )
            })?
            .to_owned(),
    };
    Ok(Command::Send {
        execution: Some(execution),
        ty: ty.to_owned(),
        subject: Some(task.token),
        data,
        id: None,
        source: "trigflow/cli".to_owned(),
        raw: None,
        db: task.db,
        local: task.local,
    })
}

/// A loaded document, whatever its format.
struct Doc {
    workflow: trigflow_core::model::Workflow,
    graph: trigflow_dag::Graph,
    kind: &'static str,
}

impl LoadArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            time_scale: self.time_scale,
            foreach_width: self.foreach_width,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow in embedded mode and print its output as JSON.
    Run {
        /// Workflow file (trigger set, DAG or FaaSFlow YAML/JSON).
        file: PathBuf,
        /// Input: inline JSON, or @FILE to read it from a file.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Execution id; if it exists in the database, the run resumes it.
        #[arg(long)]
        execution: Option<String>,
        /// Function calls at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Start an execution in the embedded database and return at once; a
    /// `trigflow worker` (or `trigflow run --execution ID`) carries it on.
    Start {
        /// Workflow file.
        file: PathBuf,
        /// Input: inline JSON, or @FILE.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Execution id (default: a new UUID).
        #[arg(long)]
        execution: Option<String>,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        local: local::LocalArgs,
        #[command(flatten)]
        aws: aws::AwsArgs,
    },
    /// Send an event to an execution (e.g. an approval a trigger waits for).
    Send {
        /// The execution.
        #[arg(long, required_unless_present = "raw")]
        execution: Option<String>,
        /// CloudEvents `type`.
        #[arg(long = "type", default_value = "trigflow.user.event")]
        ty: String,
        /// CloudEvents `subject`.
        #[arg(long)]
        subject: Option<String>,
        /// Data: inline JSON, or @FILE.
        #[arg(long)]
        data: Option<String>,
        /// CloudEvents `id` (default: a new UUID). Sending the same source
        /// and id twice delivers the event once.
        #[arg(long)]
        id: Option<String>,
        /// CloudEvents `source`.
        #[arg(long, default_value = "trigflow/cli")]
        source: String,
        /// Send this message body as it is (a structured CloudEvent in JSON,
        /// or anything: undecodable messages end up in `dead-letters`).
        #[arg(long, conflicts_with_all = ["execution", "subject", "data", "id"])]
        raw: Option<String>,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        local: local::LocalArgs,
    },
    /// ASL `.waitForTaskToken`: end the task waiting on TOKEN with OUTPUT
    /// as its result (Step Functions' SendTaskSuccess).
    TaskSuccess {
        #[command(flatten)]
        task: TaskArgs,
        /// The task's result: inline JSON, or @FILE.
        #[arg(long, default_value = "{}")]
        output: String,
    },
    /// ASL `.waitForTaskToken`: fail the task waiting on TOKEN (Step
    /// Functions' SendTaskFailure); Retry and Catch see ERROR.
    TaskFailure {
        #[command(flatten)]
        task: TaskArgs,
        /// The error name (default: States.TaskFailed).
        #[arg(long)]
        error: Option<String>,
        /// The cause.
        #[arg(long)]
        cause: Option<String>,
    },
    /// ASL `.waitForTaskToken`: tell the task waiting on TOKEN that its
    /// worker is alive, restarting its HeartbeatSeconds timer.
    TaskHeartbeat {
        #[command(flatten)]
        task: TaskArgs,
    },
    /// Process events of every execution in the embedded database.
    Worker {
        /// Stop once nothing is queued, running or scheduled.
        #[arg(long)]
        until_idle: bool,
        /// Directory that relative `cmd:` functions run in.
        #[arg(long)]
        functions_dir: Option<PathBuf>,
        /// Function calls at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        local: local::LocalArgs,
    },
    /// Check a workflow file; exit non-zero with located errors if it is bad.
    Validate {
        /// Workflow file.
        file: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Print a workflow as a Mermaid flowchart.
    Graph {
        /// Workflow file.
        file: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// List executions in the embedded database, or show one.
    Status {
        /// One execution to show in full.
        execution: Option<String>,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        local: local::LocalArgs,
        #[command(flatten)]
        aws: aws::AwsArgs,
    },
    /// Show an execution's trigger firings, outbox and result.
    History {
        /// The execution.
        execution: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        local: local::LocalArgs,
    },
    /// List dead letters (events that could not be applied, with reasons).
    DeadLetters {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        local: local::LocalArgs,
    },
    /// Local mode: serve functions on NATS for workflows' `nats:NAME`
    /// references, reporting this node's heartbeat, CPU and memory.
    #[cfg(feature = "local")]
    Agent(local::AgentArgs),
    /// Local mode: list agents and their nodes from their heartbeats.
    #[cfg(feature = "local")]
    Agents(local::AgentsArgs),
    /// Print the JSON Schema of the trigger-set or DAG format.
    Schema {
        /// `triggers` or `dag`.
        #[arg(default_value = "triggers")]
        format: String,
    },
    /// Run the benchmarks and print a table.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trigflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Loads any supported document: ASL state machines (`StartAt` + `States`)
/// go to the ASL front-end, everything else to the DAG loader, which tells
/// trigger sets, DAGs and FaaSFlow files apart. Errors name the file and
/// each location; they are returned as text to print as they are.
fn try_load(file: &Path, args: &LoadArgs) -> anyhow::Result<Result<Doc, String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    // YAML is a superset of JSON; a document that does not parse is left to
    // the loaders, whose syntax errors carry line and column.
    let asl = serde_norway::from_str::<Value>(&text)
        .ok()
        .is_some_and(|v| trigflow_asl::is_asl(&v));
    if asl {
        let mut opts = trigflow_asl::AslOptions::default();
        if let Some(path) = &args.resources {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read resources file {}", path.display()))?;
            opts.resources = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: expected a JSON object of resource -> function reference",
                    path.display()
                )
            })?;
        }
        return Ok(
            trigflow_asl::load_str_with(&text, &file.display().to_string(), &opts)
                .map(|l| Doc {
                    workflow: l.workflow,
                    graph: l.graph,
                    kind: "ASL state machine",
                })
                .map_err(|e| e.to_string()),
        );
    }
    Ok(
        trigflow_dag::load_str(&text, &file.display().to_string(), &args.options())
            .map(|l: Loaded| Doc {
                workflow: l.workflow,
                graph: l.graph,
                kind: match l.kind {
                    trigflow_dag::DocKind::TriggerSet => "trigger set",
                    trigflow_dag::DocKind::Dag => "DAG",
                    trigflow_dag::DocKind::Faasflow => "FaaSFlow workflow",
                },
            })
            .map_err(|e| e.to_string()),
    )
}

fn load(file: &Path, args: &LoadArgs) -> anyhow::Result<Doc> {
    try_load(file, args)?.map_err(|e| anyhow::anyhow!("{e}"))
}

fn execution_id(given: Option<String>) -> anyhow::Result<ExecutionId> {
    Ok(match given {
        Some(e) => e.parse()?,
        None => uuid::Uuid::new_v4().to_string().parse()?,
    })
}

/// The event `trigflow send` publishes, in any mode: a new UUID unless an id
/// is given, data parsed as inline JSON or @FILE.
fn user_event(
    execution: Option<String>,
    ty: &str,
    subject: Option<&str>,
    data: Option<&str>,
    id: Option<String>,
    source: &str,
) -> anyhow::Result<trigflow_core::cloudevents::Event> {
    let execution = execution_id(execution)?;
    let data = data.map(parse_input).transpose()?;
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    Ok(trigflow_core::event::NewEvent {
        source,
        id: &id,
        ty,
        subject,
        execution: Some(&execution),
        index: None,
        attempt: None,
        data,
    }
    .build()?)
}

/// An argument given inline or as @FILE.
fn read_arg(text: &str) -> anyhow::Result<String> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}")),
        None => Ok(text.to_owned()),
    }
}

fn parse_input(text: &str) -> anyhow::Result<Value> {
    let (text, from) = match text.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read input file {path}"))?,
            path.to_owned(),
        ),
        None => (text.to_owned(), "--input".to_owned()),
    };
    serde_json::from_str(&text).with_context(|| format!("{from} is not valid JSON"))
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match task_command_as_send(command)? {
        Command::Run {
            file,
            input,
            execution,
            concurrency,
            db,
            load: load_args,
        } => {
            let loaded = load(&file, &load_args)?;
            let input = parse_input(&input)?;
            let execution = execution_id(execution)?;
            // Relative `cmd:` functions run in the workflow's own folder.
            let base_dir = std::fs::canonicalize(&file)?
                .parent()
                .map(Path::to_path_buf);
            runtime()?.block_on(async {
                let rt = EmbeddedRuntime::open(
                    &db.db,
                    Options {
                        base_dir,
                        concurrency,
                        ..Options::default()
                    },
                )
                .await?;
                let state = rt.run(&loaded.workflow, &execution, input, true).await;
                rt.close().await;
                let state = state?;
                match state.status {
                    ExecutionStatus::Succeeded { output } => {
                        println!("{}", serde_json::to_string_pretty(&output)?);
                        Ok(ExitCode::SUCCESS)
                    }
                    ExecutionStatus::Failed { error, cause } => {
                        eprintln!("trigflow: execution {execution} failed: {error}: {cause}");
                        Ok(ExitCode::from(2))
                    }
                    ExecutionStatus::Running => {
                        bail!("execution {execution} stopped while running")
                    }
                }
            })
        }
        Command::Validate { file, load: args } => match try_load(&file, &args)? {
            Ok(loaded) => {
                println!(
                    "{}: ok ({}, {} triggers)",
                    file.display(),
                    loaded.kind,
                    loaded.workflow.triggers.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Graph { file, load: args } => {
            print!("{}", load(&file, &args)?.graph.mermaid());
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            execution, aws: a, ..
        } if a.aws => aws::run(&a, aws::Request::Status { execution }),
        Command::Status {
            execution,
            local: l,
            ..
        } if l.selected() => local::run(&l, local::Request::Status { execution }),
        Command::Status { execution, db, .. } => status(&db.db, execution.as_deref()),
        Command::History {
            execution,
            json,
            local: l,
            ..
        } if l.selected() => local::run(&l, local::Request::History { execution, json }),
        Command::History {
            execution,
            json,
            db,
            ..
        } => history(&db.db, &execution, json),
        Command::Start {
            file,
            input,
            execution,
            load,
            aws: a,
            ..
        } if a.aws => aws::run(
            &a,
            aws::Request::Start {
                file,
                input,
                execution,
                load,
            },
        ),
        Command::Start {
            file,
            input,
            execution,
            load,
            local: l,
            ..
        } if l.selected() => local::run(
            &l,
            local::Request::Start {
                file,
                input,
                execution,
                load,
            },
        ),
        Command::Start {
            file,
            input,
            execution,
            db,
            load: load_args,
            ..
        } => {
            let loaded = load(&file, &load_args)?;
            let input = parse_input(&input)?;
            let execution = execution_id(execution)?;
            runtime()?.block_on(async {
                let base_dir = std::fs::canonicalize(&file)?
                    .parent()
                    .map(Path::to_path_buf);
                let rt = EmbeddedRuntime::open(
                    &db.db,
                    Options {
                        base_dir,
                        concurrency: 0,
                        ..Options::default()
                    },
                )
                .await?;
                let started = rt
                    .worker
                    .start(&loaded.workflow, execution.clone(), input)
                    .await;
                rt.close().await;
                started?;
                println!("{execution}");
                Ok(ExitCode::SUCCESS)
            })
        }
        Command::Send {
            execution,
            ty,
            subject,
            data,
            id,
            source,
            raw,
            local: l,
            ..
        } if l.selected() => local::run(
            &l,
            local::Request::Send {
                execution,
                ty,
                subject,
                data,
                id,
                source,
                raw,
            },
        ),
        Command::Send {
            execution,
            ty,
            subject,
            data,
            id,
            source,
            raw,
            db,
            ..
        } => {
            let body = match raw {
                Some(raw) => read_arg(&raw)?.into_bytes(),
                None => serde_json::to_vec(&user_event(
                    execution,
                    &ty,
                    subject.as_deref(),
                    data.as_deref(),
                    id,
                    &source,
                )?)?,
            };
            let db = open_db(&db.db)?;
            db.queue().publish_raw(vec![body])?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            until_idle,
            local: l,
            ..
        } if l.selected() => local::run(&l, local::Request::Worker { until_idle }),
        Command::Worker {
            until_idle,
            functions_dir,
            concurrency,
            db,
            ..
        } => runtime()?.block_on(async {
            let rt = EmbeddedRuntime::open(
                &db.db,
                Options {
                    base_dir: functions_dir,
                    concurrency,
                    ..Options::default()
                },
            )
            .await?;
            rt.work(until_idle).await?;
            rt.close().await;
            Ok(ExitCode::SUCCESS)
        }),
        Command::DeadLetters { local: l, .. } if l.selected() => {
            local::run(&l, local::Request::DeadLetters)
        }
        #[cfg(feature = "local")]
        Command::Agent(args) => local::agent(args),
        #[cfg(feature = "local")]
        Command::Agents(args) => local::agents(args),
        Command::DeadLetters { db, .. } => {
            let db = open_db(&db.db)?;
            for l in db.list_dead_letters()? {
                println!("{}", serde_json::to_string(&l)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Schema { format } => {
            let schema = match format.as_str() {
                "triggers" => trigflow_dag::schema::triggers_schema(),
                "dag" => trigflow_dag::schema::dag_schema(),
                other => bail!("unknown schema {other:?}: expected `triggers` or `dag`"),
            };
            println!("{}", trigflow_dag::schema::render(&schema));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => bench::run(args),
        // Turned into `Send` by `task_command_as_send` above.
        Command::TaskSuccess { .. }
        | Command::TaskFailure { .. }
        | Command::TaskHeartbeat { .. } => {
            bail!("internal: a task command was not turned into an event")
        }
    }
}

/// Reads states straight from the store, without starting a worker.
fn read_states(
    path: &Path,
    only: Option<&str>,
) -> anyhow::Result<Vec<trigflow_core::state::ExecutionState>> {
    if !path.exists() {
        bail!(
            "no embedded database at {} (run a workflow first, or pass --db)",
            path.display()
        );
    }
    let db = open_db(path)?;
    runtime()?.block_on(async {
        use trigflow_core::seams::StateStore as _;
        let store = db.store();
        let keys = match only {
            Some(e) => vec![format!("exec/{e}")],
            None => store.list("exec/").await?,
        };
        let mut out = Vec::new();
        for key in keys {
            let Some(stored) = store.get(&key).await? else {
                bail!(
                    "no execution {} in {}",
                    key.trim_start_matches("exec/"),
                    path.display()
                );
            };
            out.push(
                trigflow_core::state::ExecutionState::from_bytes(&stored.value)
                    .with_context(|| format!("state of {key} does not decode"))?,
            );
        }
        Ok(out)
    })
}

fn status(path: &Path, execution: Option<&str>) -> anyhow::Result<ExitCode> {
    report::status(&read_states(path, execution)?, execution.is_some())
}

fn history(path: &Path, execution: &str, json: bool) -> anyhow::Result<ExitCode> {
    report::history(&read_states(path, Some(execution))?, execution, json)
}
