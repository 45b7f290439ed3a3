//! AWS mode from the command line: `trigflow start --aws` and
//! `trigflow status --aws`, against a deployed orchestrator
//! (infra/aws/template.yaml) through `trigflow_aws::client`.
//!
//! - `start --aws --queue-url URL` (or `TRIGFLOW_QUEUE_URL`) sends the start
//!   request to the orchestrator's queue and prints the execution id; the
//!   orchestrator starts it when the message arrives.
//! - `start --aws --function NAME` (or `TRIGFLOW_FUNCTION`) invokes the
//!   orchestrator function with it, as the Lambda console does, and prints
//!   the function's answer (the status).
//! - `status --aws --table NAME` (or `TRIGFLOW_TABLE`) reads the state from
//!   DynamoDB and prints it as the other modes do; `status --aws --function
//!   NAME EXECUTION` asks the function instead.
//!
//! Region, credentials and endpoint come from the AWS environment (profile,
//! `AWS_REGION`, `AWS_ENDPOINT_URL`), or `--endpoint-url`. Built without
//! the `aws` feature, `--aws` says so and fails.

#[cfg(not(feature = "aws"))]
use std::process::ExitCode;

/// Flags that select AWS mode.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AwsArgs {
    /// AWS mode: talk to a deployed orchestrator (queue, function, table).
    #[arg(long)]
    pub aws: bool,
    /// AWS mode: the orchestrator's SQS queue URL.
    #[arg(long, env = "TRIGFLOW_QUEUE_URL", value_name = "URL")]
    pub queue_url: Option<String>,
    /// AWS mode: the orchestrator's function (name or ARN), invoked
    /// directly.
    #[arg(long, env = "TRIGFLOW_FUNCTION", value_name = "NAME")]
    pub function: Option<String>,
    /// AWS mode: the orchestrator's DynamoDB table (status reads it).
    #[arg(long, env = "TRIGFLOW_TABLE", value_name = "NAME")]
    pub table: Option<String>,
    /// AWS mode: endpoint for every AWS service (e.g. a local emulator).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
}

/// A command of AWS mode.
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub enum Request {
    /// `trigflow start --aws`.
    Start {
        file: std::path::PathBuf,
        input: String,
        execution: Option<String>,
        load: crate::LoadArgs,
    },
    /// `trigflow status --aws`.
    Status { execution: Option<String> },
}

#[cfg(feature = "aws")]
pub use imp::run;

#[cfg(not(feature = "aws"))]
/// Without the `aws` feature: fails with the rebuild hint.
pub fn run(_args: &AwsArgs, _request: Request) -> anyhow::Result<ExitCode> {
    anyhow::bail!(
        "AWS mode (--aws) needs trigflow built with the `aws` feature (cargo build -p trigflow-cli --features aws)"
    )
}

#[cfg(feature = "aws")]
mod imp {
    use std::process::ExitCode;

    use anyhow::{Context as _, bail};
    use trigflow_aws::AwsSettings;
    use trigflow_aws::client::{invoke_orchestrator, read_states, start_request, start_via_queue};

    use super::{AwsArgs, Request};

    /// Runs one AWS-mode command.
    pub fn run(args: &AwsArgs, request: Request) -> anyhow::Result<ExitCode> {
        crate::runtime()?.block_on(async {
            let settings = AwsSettings {
                endpoint_url: args.endpoint_url.clone(),
                ..AwsSettings::default()
            };
            let sdk = settings.load().await;
            match request {
                Request::Start {
                    file,
                    input,
                    execution,
                    load,
                } => {
                    let doc = crate::load(&file, &load)?;
                    let input = crate::parse_input(&input)?;
                    let execution = crate::execution_id(execution)?;
                    if let Some(function) = &args.function {
                        let lambda = aws_sdk_lambda::Client::new(&sdk);
                        let answer = invoke_orchestrator(
                            &lambda,
                            function,
                            &start_request(&doc.workflow, &input, &execution),
                        )
                        .await?;
                        println!("{}", serde_json::to_string_pretty(&answer)?);
                    } else if let Some(queue) = &args.queue_url {
                        let sqs = aws_sdk_sqs::Client::new(&sdk);
                        start_via_queue(&sqs, queue, &doc.workflow, &input, &execution).await?;
                        println!("{execution}");
                    } else {
                        bail!(
                            "start --aws needs the orchestrator's queue (--queue-url or TRIGFLOW_QUEUE_URL) or function (--function or TRIGFLOW_FUNCTION)"
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Request::Status { execution } => {
                    if let Some(table) = &args.table {
                        let only = execution.as_deref().map(str::parse).transpose()?;
                        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
                        let states = read_states(&dynamo, table, only.as_ref()).await?;
                        if let (Some(e), true) = (&execution, states.is_empty()) {
                            bail!("no execution {e} in table {table}");
                        }
                        crate::report::status(&states, execution.is_some())
                    } else if let Some(function) = &args.function {
                        let execution = execution.context(
                            "status --aws --function needs the execution (listing needs --table)",
                        )?;
                        let lambda = aws_sdk_lambda::Client::new(&sdk);
                        let answer = invoke_orchestrator(
                            &lambda,
                            function,
                            &serde_json::json!({"action": "status", "execution": execution}),
                        )
                        .await?;
                        println!("{}", serde_json::to_string_pretty(&answer)?);
                        Ok(ExitCode::SUCCESS)
                    } else {
                        bail!(
                            "status --aws needs the orchestrator's table (--table or TRIGFLOW_TABLE) or function (--function or TRIGFLOW_FUNCTION)"
                        )
                    }
                }
            }
        })
    }
}
