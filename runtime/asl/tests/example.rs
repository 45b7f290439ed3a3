//! Runs examples/asl-order end to end in the simulator, with its Python
//! functions run as real commands (as the embedded mode's `cmd:` functions
//! are): the same document, mapped to local commands by resources.json.
mod common;
use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trigflow_asl::{AslOptions, load_file};
use trigflow_core::state::{FunctionError, Invocation};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/asl-order")
}

fn read(name: &str) -> Value {
    let text = std::fs::read_to_string(dir().join(name)).expect("read example file");
    serde_json::from_str(&text).expect("example file is JSON")
}

/// Runs a `cmd:` function reference like the embedded invoker: JSON on
/// stdin, JSON on stdout, a failing exit status as `ExitCode`.
fn command(inv: &Invocation, state_dir: &Path) -> Result<Value, FunctionError> {
    use std::io::Write;
    let cmd = inv
        .function
        .strip_prefix("cmd:")
        .unwrap_or_else(|| panic!("unmapped function {}", inv.function));
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let mut child = std::process::Command::new(words[0])
        .args(&words[1..])
        .current_dir(dir())
        .env("ORDER_STATE_DIR", state_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test (apt-get install python3)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(inv.input.to_string().as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    if !out.status.success() {
        return Err(ferr("ExitCode", &String::from_utf8_lossy(&out.stderr)));
    }
    Ok(serde_json::from_slice(&out.stdout).expect("function printed JSON"))
}

fn run_example(input: Value) -> trigflow_core::sim::SimRun {
    let resources: BTreeMap<String, String> =
        serde_json::from_value(read("resources.json")).expect("mapping");
    let opts = AslOptions {
        resources,
        ..AslOptions::default()
    };
    let loaded = load_file(&dir().join("order.asl.json"), &opts).expect("load");
    let state = tempfile::tempdir().expect("tempdir");
    trigflow_core::sim::run(
        &trigflow_core::Engine::new(),
        &loaded.workflow,
        input,
        |inv| command(inv, state.path()),
        100_000,
    )
    .expect("run")
}

#[test]
fn order_is_priced_charged_after_a_retry_and_reserved() {
    let input = read("input.json");
    let r = run_example(input.clone());
    // The expected amount from the example's rules: net price plus 21 %
    // Dutch VAT (rounded down) per line, in cents.
    let cents: i64 = input["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            let net =
                (i["qty"].as_f64().unwrap_or(0.0) * i["price"].as_f64().unwrap_or(0.0) * 100.0)
                    .round() as i64;
            net + net * 21 / 100
        })
        .sum();
    let out = output(&r);
    assert_eq!(out["status"], json!("confirmed"));
    assert_eq!(out["lines"], json!(3));
    assert_eq!(out["charged"].as_f64(), Some(cents as f64 / 100.0));
    assert_eq!(out["reservation"], json!("rs-A-1001"));
    assert_eq!(
        out["message"],
        json!(format!(
            "Order A-1001 charged {} EUR, reservation rs-A-1001",
            out["charged"]
        ))
    );
    // The charge failed once and was retried 2 s later.
    let charges: Vec<&Invocation> = r
        .invocations
        .iter()
        .filter(|i| i.function.contains("charge"))
        .collect();
    assert_eq!(charges.len(), 2);
}

#[test]
fn invalid_order_is_rejected_with_the_reason() {
    let mut input = read("input.json");
    input["items"][1]["qty"] = json!(0);
    let (error, cause) = failure(&run_example(input));
    assert_eq!(error, "OrderRejected");
    assert_eq!(cause, json!("every quantity must be positive"));
}

#[test]
fn out_of_stock_is_caught() {
    let mut input = read("input.json");
    input["items"][2]["sku"] = json!("gone-lamp");
    let out = output(&run_example(input));
    assert_eq!(
        out,
        json!({"orderId": "A-1001", "status": "fulfilment_failed", "error": "ExitCode"})
    );
}
