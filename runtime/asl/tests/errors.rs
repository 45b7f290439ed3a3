//! Retry (with back-off timing on the simulated clock) and Catch routing,
//! Fail states, and the predefined error names.
mod common;
use common::*;
use serde_json::{Value, json};
use trigflow_asl::UNLISTED_ERROR;

fn flaky_task(retry: Value, catch: Value) -> Value {
    let mut doc = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "f", "Retry": retry, "Catch": catch.clone(), "End": true}
    }});
    if catch.as_array().is_some_and(|c| !c.is_empty()) {
        doc["States"]["Recovered"] = json!({"Type": "Pass", "End": true});
    }
    doc
}

/// A function that fails `n` times with `error`, then returns "ok".
fn fails(
    n: usize,
    error: &'static str,
) -> impl FnMut(&trigflow_core::state::Invocation) -> Result<Value, trigflow_core::state::FunctionError>
{
    let mut calls = 0;
    move |_| {
        calls += 1;
        if calls <= n {
            Err(ferr(error, "boom"))
        } else {
            Ok(json!("ok"))
        }
    }
}

#[test]
fn retry_backs_off_exponentially() {
    let doc = flaky_task(
        json!([{"ErrorEquals": ["Flaky"], "IntervalSeconds": 1, "BackoffRate": 2.0, "MaxAttempts": 3}]),
        json!([]),
    );
    let r = run_with(&doc, json!({}), fails(3, "Flaky"));
    assert_eq!(output(&r), json!("ok"));
    // Attempts at 0, then after 1 s, 2 s and 4 s.
    assert_eq!(result_times(&r), vec![0, 1_000, 3_000, 7_000]);
}

#[test]
fn retry_defaults_and_max_delay() {
    // Defaults: IntervalSeconds 1, BackoffRate 2, MaxAttempts 3.
    let doc = flaky_task(json!([{"ErrorEquals": ["States.ALL"]}]), json!([]));
    let r = run_with(&doc, json!({}), fails(3, "X"));
    assert_eq!(result_times(&r), vec![0, 1_000, 3_000, 7_000]);
    // MaxDelaySeconds caps each interval.
    let doc = flaky_task(
        json!([{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "BackoffRate": 3, "MaxAttempts": 4, "MaxDelaySeconds": 5}]),
        json!([]),
    );
    let r = run_with(&doc, json!({}), fails(4, "X"));
    assert_eq!(result_times(&r), vec![0, 2_000, 7_000, 12_000, 17_000]);
}

#[test]
fn full_jitter_waits_at_most_the_interval() {
    let doc = flaky_task(
        json!([{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 10, "MaxAttempts": 1, "JitterStrategy": "FULL"}]),
        json!([]),
    );
    let r = run_with(&doc, json!({}), fails(1, "X"));
    let t = result_times(&r);
    assert_eq!(t.len(), 2);
    assert!(t[1] <= 10_000, "{t:?}");
}

#[test]
fn exhausted_retries_go_to_catch_with_result_path() {
    let doc = flaky_task(
        json!([{"ErrorEquals": ["Flaky"], "MaxAttempts": 2, "IntervalSeconds": 1}]),
        json!([{"ErrorEquals": ["Flaky"], "ResultPath": "$.error", "Next": "Recovered"}]),
    );
    let r = run_with(&doc, json!({"order": 7}), fails(10, "Flaky"));
    assert_eq!(r.invocations.len(), 3);
    assert_eq!(
        output(&r),
        json!({"order": 7, "error": {"Error": "Flaky", "Cause": "boom"}})
    );
}

#[test]
fn only_the_first_matching_retrier_applies() {
    // The first retrier matches and allows no attempt; the second (which
    // would allow some) is not consulted.
    let doc = flaky_task(
        json!([
            {"ErrorEquals": ["Flaky"], "MaxAttempts": 0},
            {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5}
        ]),
        json!([{"ErrorEquals": ["States.ALL"], "Next": "Recovered"}]),
    );
    let r = run_with(&doc, json!({}), fails(10, "Flaky"));
    assert_eq!(r.invocations.len(), 1);
    assert_eq!(output(&r), json!({"Error": "Flaky", "Cause": "boom"}));
}

#[test]
fn catchers_are_tried_in_order() {
    let doc = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "f", "End": true, "Catch": [
            {"ErrorEquals": ["Other"], "Next": "A"},
            {"ErrorEquals": ["States.TaskFailed"], "Next": "B"},
            {"ErrorEquals": ["States.ALL"], "Next": "A"}
        ]},
        "A": {"Type": "Pass", "Result": "A", "End": true},
        "B": {"Type": "Pass", "Result": "B", "End": true}
    }});
    let r = run_with(&doc, json!({}), fails(1, "Whatever"));
    assert_eq!(output(&r), json!("B"));
}

#[test]
fn uncaught_errors_fail_the_execution_with_their_own_name() {
    // A name the document mentions.
    let doc = flaky_task(
        json!([{"ErrorEquals": ["Known"], "MaxAttempts": 0}]),
        json!([]),
    );
    let (error, cause) = failure(&run_with(&doc, json!({}), fails(1, "Known")));
    assert_eq!(error, "Known");
    assert_eq!(cause, json!("boom"));
    // A name it does not mention, as a function raised it.
    let (error, cause) = failure(&run_with(&doc, json!({}), fails(1, "Surprise")));
    assert_eq!(error, "Surprise");
    assert_eq!(cause, json!("boom"));
    // A function failure without a name is States.TaskFailed.
    let (error, _) = failure(&run_with(&doc, json!({}), fails(1, "")));
    assert_eq!(error, "States.TaskFailed");
}

#[test]
fn fail_state_with_error_path_and_cause_path() {
    // The error name comes from the input at run time.
    let doc = json!({"StartAt": "F", "States": {"F": {"Type": "Fail", "ErrorPath": "$.e", "CausePath": "States.Format('order {} rejected', $.id)"}}});
    let r = run(&doc, json!({"e": "OrderRejected", "id": 9}));
    assert_eq!(
        failure(&r),
        ("OrderRejected".to_owned(), json!("order 9 rejected"))
    );
}

#[test]
fn a_fail_state_without_error_ends_with_the_fallback_name() {
    // ASL makes Error optional; an execution still needs a name.
    let doc = json!({"StartAt": "F", "States": {"F": {"Type": "Fail", "Cause": "why"}}});
    let (error, cause) = failure(&run(&doc, json!({})));
    assert_eq!(error, UNLISTED_ERROR);
    assert_eq!(cause, json!({"Error": null, "Cause": "why"}));
}

#[test]
fn task_timeout_is_states_timeout_and_retryable() {
    let doc = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "slow", "TimeoutSeconds": 5, "End": true,
              "Retry": [{"ErrorEquals": ["States.Timeout"], "MaxAttempts": 1, "IntervalSeconds": 1}],
              "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "TimedOut"}]},
        "TimedOut": {"Type": "Pass", "End": true}
    }});
    // The function never answers.
    let r = run_lossy(&doc, json!({}), |_| None);
    assert_eq!(r.invocations.len(), 2);
    assert_eq!(output(&r)["Error"], json!("States.Timeout"));
    // States.TaskFailed does not match a timeout.
    let doc = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "slow", "TimeoutSeconds": 5, "End": true,
              "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "X"}]},
        "X": {"Type": "Succeed"}
    }});
    assert_eq!(
        failure(&run_lossy(&doc, json!({}), |_| None)).0,
        "States.Timeout"
    );
}

#[test]
fn late_result_after_a_timeout_is_ignored() {
    // The first attempt (at 0 s) times out at 5 s, the retry starts at 6 s
    // and answers at 8 s; the first attempt's answer arrives at 6.5 s,
    // while the retry is running, and must not be taken for the retry's.
    let doc = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "f", "TimeoutSeconds": 5, "End": true,
              "Retry": [{"ErrorEquals": ["States.Timeout"], "MaxAttempts": 1}]}
    }});
    let mut n = 0;
    let r = run_lossy(&doc, json!({}), |_| {
        n += 1;
        if n == 1 {
            Some((6_500, Ok(json!("first, too late"))))
        } else {
            Some((2_000, Ok(json!("second"))))
        }
    });
    assert_eq!(output(&r), json!("second"));
    assert_eq!(result_times(&r), vec![8_000]);
}

#[test]
fn machine_timeout() {
    let doc = json!({"TimeoutSeconds": 3, "StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 60, "End": true}}});
    assert_eq!(failure(&run(&doc, json!({}))).0, "States.Timeout");
}
