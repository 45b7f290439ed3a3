//! How `status` and `history` print executions, the same in every mode.

use std::process::ExitCode;

use anyhow::bail;
use trigflow_core::state::ExecutionState;
use trigflow_embedded::runtime::status_word;

/// Prints one execution in full (when `single`) or a table of them.
pub fn status(states: &[ExecutionState], single: bool) -> anyhow::Result<ExitCode> {
    if let (true, Some(s)) = (single, states.first()) {
        let v = serde_json::json!({
            "execution": s.execution, "workflow": s.workflow, "version": s.version,
            "status": s.status, "events_applied": s.events_applied,
            "firings": s.history.len(), "pending_effects": s.outbox.len(),
            "triggers": s.triggers.keys().collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<38} {:<20} {:<10} {:>8} {:>8} {:>8}",
        "EXECUTION", "WORKFLOW", "STATUS", "EVENTS", "FIRINGS", "PENDING"
    );
    for s in states {
        println!(
            "{:<38} {:<20} {:<10} {:>8} {:>8} {:>8}",
            s.execution.as_str(),
            s.workflow.as_str(),
            status_word(s),
            s.events_applied,
            s.history.len(),
            s.outbox.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints an execution's firings, pending effects and status.
pub fn history(states: &[ExecutionState], execution: &str, json: bool) -> anyhow::Result<ExitCode> {
    let Some(s) = states.first() else {
        bail!("no execution {execution}")
    };
    if json {
        let v = serde_json::json!({"execution": s.execution, "status": s.status, "firings": s.history, "outbox": s.outbox});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5} {:>14} {:<24} {:<6} {:<30} EVENT",
        "SEQ", "AT(ms)", "TRIGGER", "OUTCOME", "EVENT TYPE"
    );
    for f in &s.history {
        println!(
            "{:>5} {:>14} {:<24} {:<6} {:<30} {}",
            f.seq,
            f.at_ms - s.started_ms,
            f.trigger.as_str(),
            f.outcome,
            f.event_type,
            f.event_id
        );
    }
    println!("status: {}", serde_json::to_string(&s.status)?);
    if !s.outbox.is_empty() {
        println!("pending effects: {}", s.outbox.len());
    }
    Ok(ExitCode::SUCCESS)
}
