//! Runs `workflow.yaml` in embedded mode with two pieces of Rust: an
//! in-process function (`inproc:read_sensor`) and a custom condition
//! (`above_limit`). `cargo run -p trigflow-example-inproc`.

use std::path::Path;

use serde_json::{Value, json};
use trigflow_core::Engine;
use trigflow_core::state::{ExecutionStatus, FunctionError};
use trigflow_embedded::FunctionRegistry;
use trigflow_embedded::runtime::{EmbeddedRuntime, Options};

/// "Reads" a sensor: here the reading comes with the input, rounded to a
/// tenth of a degree; a real function would talk to hardware.
fn read_sensor(input: Value) -> Result<Value, FunctionError> {
    let celsius = input["celsius"].as_f64().ok_or_else(|| FunctionError {
        error: "BadInput".into(),
        cause: format!("no celsius in {input}"),
    })?;
    Ok(json!({"sensor": input["sensor"], "celsius": (celsius * 10.0).round() / 10.0}))
}

/// The condition: the reading is above `config.limit`.
fn above_limit(doc: &Value, config: &Value) -> Result<bool, String> {
    let celsius = doc["event"]["data"]["celsius"]
        .as_f64()
        .ok_or_else(|| format!("reading without celsius: {}", doc["event"]["data"]))?;
    Ok(celsius > config["limit"].as_f64().unwrap_or(30.0))
}

/// Runs the workflow against a database at `db` and returns its output.
async fn run(db: &Path, input: Value) -> anyhow::Result<Value> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let loaded = trigflow_dag::load_file(&here.join("workflow.yaml"), &Default::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let functions = FunctionRegistry::new();
    functions.register_fn("read_sensor", read_sensor);
    let engine = Engine::new().with_condition("above_limit", above_limit);
    let rt = EmbeddedRuntime::open(
        db,
        Options {
            engine,
            functions,
            ..Options::default()
        },
    )
    .await?;
    let execution = format!("sensors-{}", std::process::id()).parse()?;
    let state = rt.run(&loaded.workflow, &execution, input, true).await;
    rt.close().await;
    match state?.status {
        ExecutionStatus::Succeeded { output } => Ok(output),
        other => anyhow::bail!("execution ended {other:?}"),
    }
}

fn input() -> Value {
    json!({"sensors": [
        {"sensor": "boiler", "celsius": 41.52},
        {"sensor": "hall", "celsius": 21.04},
        {"sensor": "server-room", "celsius": 33.96},
        {"sensor": "garden", "celsius": 12.0}
    ]})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("trigflow-inproc-{}", std::process::id()));
    let output = run(&dir.join("db.redb"), input()).await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", serde_json::to_string_pretty(&output?)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flags_the_hot_sensors_and_returns_every_reading_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = run(&dir.path().join("db.redb"), input())
            .await
            .expect("runs");
        let given = input();
        let sensors: Vec<&str> = given["sensors"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|s| s["celsius"].as_f64().expect("celsius") > 30.0)
            .map(|s| s["sensor"].as_str().expect("name"))
            .collect();
        let mut hot = sensors.clone();
        hot.sort_unstable();
        assert_eq!(out["alerts"], json!(hot));
        let names: Vec<&str> = out["readings"]
            .as_array()
            .expect("readings")
            .iter()
            .map(|r| r["sensor"].as_str().expect("sensor"))
            .collect();
        assert_eq!(names, ["boiler", "hall", "server-room", "garden"]);
        assert_eq!(out["readings"][0]["celsius"], json!(41.5));
    }
}
