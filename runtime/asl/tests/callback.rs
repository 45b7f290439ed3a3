//! `.waitForTaskToken` (the developer guide's "Wait for a Callback with the
//! Task Token"): the task hands `$$.Task.Token` to a function and ends when
//! a client sends the token back with success or failure; HeartbeatSeconds
//! bounds the time between heartbeats.
mod common;
use common::*;
use serde_json::{Value, json};
use trigflow_asl::{TYPE_TASK_FAILURE, TYPE_TASK_HEARTBEAT, TYPE_TASK_SUCCESS, token_execution};
use trigflow_core::state::Invocation;

/// The guide's Lambda callback pattern: the token goes in the payload.
fn approval(extra: Value) -> Value {
    let mut task = json!({
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
        "Parameters": {"FunctionName": "ask-approval",
                       "Payload": {"token.$": "$$.Task.Token", "order.$": "$.order"}},
        "ResultPath": "$.approval",
        "Next": "Done"
    });
    if let (Some(t), Some(e)) = (task.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    json!({"StartAt": "Ask", "States": {"Ask": task, "Done": {"Type": "Pass", "End": true}}})
}

/// The function answers at once (it only passes the token on).
fn hand_on(_: &Invocation) -> Answer {
    Some(Ok(json!({"sent": true})))
}

/// The token the last invocation received.
fn token(d: &Driver) -> String {
    let inv = d.invocations.last().expect("an invocation");
    inv.input["token"].as_str().expect("token").to_owned()
}

#[test]
fn the_task_waits_for_its_token_and_takes_the_sent_output() {
    let mut d = Driver::start(&approval(json!({})), json!({"order": 7}), hand_on);
    assert_eq!(d.invocations.len(), 1);
    assert_eq!(d.invocations[0].function, "ask-approval");
    assert_eq!(d.invocations[0].input["order"], json!(7));
    // The function's own answer does not end the task.
    assert!(d.running());
    let tok = token(&d);
    assert_eq!(token_execution(&tok), Some("exec-1"));
    d.send(TYPE_TASK_SUCCESS, &tok, Some(json!({"approved": true})));
    // The sent output is the task result (not wrapped in a Lambda Payload).
    assert_eq!(
        d.output(),
        json!({"order": 7, "approval": {"approved": true}})
    );
}

#[test]
fn a_wrong_or_repeated_token_is_ignored() {
    let mut d = Driver::start(&approval(json!({})), json!({"order": 1}), hand_on);
    let tok = token(&d);
    d.send(TYPE_TASK_SUCCESS, "q0!tok99@exec-1", Some(json!("forged")));
    d.send(TYPE_TASK_SUCCESS, "nothing", Some(json!("forged")));
    assert!(d.running());
    d.send(TYPE_TASK_SUCCESS, &tok, Some(json!("yes")));
    assert_eq!(d.output()["approval"], json!("yes"));
}

#[test]
fn task_failure_raises_the_sent_error_for_catch_and_for_the_execution() {
    // Caught: the guide's Catch on a custom error.
    let doc = approval(
        json!({"Catch": [{"ErrorEquals": ["Rejected"], "ResultPath": "$.why", "Next": "Done"}]}),
    );
    let mut d = Driver::start(&doc, json!({"order": 2}), hand_on);
    let tok = token(&d);
    d.send(
        TYPE_TASK_FAILURE,
        &tok,
        Some(json!({"error": "Rejected", "cause": "too expensive"})),
    );
    assert_eq!(
        d.output(),
        json!({"order": 2, "why": {"Error": "Rejected", "Cause": "too expensive"}})
    );
    // Uncaught: the execution fails with the sent name.
    let mut d = Driver::start(&approval(json!({})), json!({"order": 2}), hand_on);
    let tok = token(&d);
    d.send(
        TYPE_TASK_FAILURE,
        &tok,
        Some(json!({"error": "Rejected", "cause": "no"})),
    );
    assert_eq!(d.failure(), ("Rejected".to_owned(), json!("no")));
    // No name: States.TaskFailed.
    let mut d = Driver::start(&approval(json!({})), json!({"order": 2}), hand_on);
    let tok = token(&d);
    d.send(TYPE_TASK_FAILURE, &tok, Some(json!({"cause": "no"})));
    assert_eq!(d.failure().0, "States.TaskFailed");
}

#[test]
fn a_retry_issues_a_new_token_and_the_old_one_is_dead() {
    let doc = approval(
        json!({"Retry": [{"ErrorEquals": ["Busy"], "IntervalSeconds": 1, "MaxAttempts": 1}]}),
    );
    let mut d = Driver::start(&doc, json!({"order": 3}), hand_on);
    let first = token(&d);
    d.send(
        TYPE_TASK_FAILURE,
        &first,
        Some(json!({"error": "Busy", "cause": ""})),
    );
    d.advance(1000, hand_on);
    assert_eq!(d.invocations.len(), 2);
    let second = token(&d);
    assert_ne!(first, second);
    d.send(TYPE_TASK_SUCCESS, &first, Some(json!("stale")));
    assert!(d.running());
    d.send(TYPE_TASK_SUCCESS, &second, Some(json!("fresh")));
    assert_eq!(d.output()["approval"], json!("fresh"));
}

#[test]
fn a_failing_function_fails_the_callback_task() {
    let doc = approval(json!({}));
    let d = Driver::start(&doc, json!({"order": 4}), |_| {
        Some(Err(ferr("Lambda.ServiceException", "down")))
    });
    assert_eq!(
        d.failure(),
        ("Lambda.ServiceException".to_owned(), json!("down"))
    );
}

#[test]
fn heartbeats_keep_the_task_alive_and_their_absence_times_it_out() {
    let doc = approval(json!({"HeartbeatSeconds": 10}));
    let mut d = Driver::start(&doc, json!({"order": 5}), hand_on);
    let tok = token(&d);
    d.advance(8_000, hand_on);
    d.send(TYPE_TASK_HEARTBEAT, &tok, None);
    d.advance(8_000, hand_on);
    d.send(TYPE_TASK_HEARTBEAT, &tok, None);
    d.advance(9_999, hand_on);
    assert!(d.running(), "{:?}", d.state.status);
    d.advance(1, hand_on);
    assert_eq!(d.failure().0, "States.HeartbeatTimeout");
}

#[test]
fn heartbeat_timeout_is_catchable_and_a_late_answer_is_ignored() {
    let doc = approval(json!({"HeartbeatSecondsPath": "$.hb", "Catch": [
        {"ErrorEquals": ["States.HeartbeatTimeout"], "ResultPath": "$.err", "Next": "Done"}]}));
    let mut d = Driver::start(&doc, json!({"order": 6, "hb": 5}), hand_on);
    let tok = token(&d);
    d.advance(5_000, hand_on);
    assert_eq!(d.output()["err"]["Error"], json!("States.HeartbeatTimeout"));
    let before = d.state.status.clone();
    d.send(TYPE_TASK_SUCCESS, &tok, Some(json!("late")));
    assert_eq!(d.state.status, before);
}

#[test]
fn timeout_seconds_bounds_a_callback_task() {
    let doc = approval(json!({"TimeoutSeconds": 30, "HeartbeatSeconds": 20}));
    let mut d = Driver::start(&doc, json!({"order": 8}), hand_on);
    let tok = token(&d);
    for _ in 0..3 {
        d.advance(10_000, hand_on);
        if d.running() {
            d.send(TYPE_TASK_HEARTBEAT, &tok, None);
        }
    }
    assert_eq!(d.failure().0, "States.Timeout");
}

#[test]
fn the_token_reaches_any_service_integration_parameters() {
    // The guide's SQS example: the token inside MessageBody; the resource
    // is mapped to a function like any other.
    let doc = json!({"StartAt": "Send", "States": {"Send": {
        "Type": "Task",
        "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
        "Parameters": {"QueueUrl": "https://sqs.example/q",
                       "MessageBody": {"Message": "Hello from Step Functions!", "TaskToken.$": "$$.Task.Token"}},
        "End": true}}});
    let mut d = Driver::start(&doc, json!({}), hand_on);
    let inv = d.invocations[0].clone();
    assert_eq!(inv.function, "arn:aws:states:::sqs:sendMessage");
    let tok = inv.input["MessageBody"]["TaskToken"]
        .as_str()
        .expect("token")
        .to_owned();
    d.send(TYPE_TASK_SUCCESS, &tok, Some(json!({"done": 1})));
    assert_eq!(d.output(), json!({"done": 1}));
}

#[test]
fn callback_tasks_run_in_map_iterations_with_one_token_each() {
    let doc = json!({"StartAt": "M", "States": {"M": {"Type": "Map", "End": true,
        "ItemProcessor": {"StartAt": "Ask", "States": {"Ask": {
            "Type": "Task", "Resource": "ask.waitForTaskToken",
            "Parameters": {"token.$": "$$.Task.Token", "item.$": "$"}, "End": true}}}}}});
    let mut d = Driver::start(&doc, json!([10, 20, 30]), hand_on);
    let asks: Vec<(String, Value)> = d
        .invocations
        .iter()
        .map(|i| {
            (
                i.input["token"].as_str().expect("token").to_owned(),
                i.input["item"].clone(),
            )
        })
        .collect();
    assert_eq!(asks.len(), 3);
    // Answer in reverse order; results stay in item order.
    for (tok, item) in asks.iter().rev() {
        d.send(TYPE_TASK_SUCCESS, tok, Some(json!({"seen": item})));
    }
    assert_eq!(
        d.output(),
        json!([{"seen": 10}, {"seen": 20}, {"seen": 30}])
    );
}

#[test]
fn heartbeat_must_be_below_timeout() {
    let doc = approval(json!({"TimeoutSeconds": 10, "HeartbeatSeconds": 10}));
    let err = trigflow_asl::load_str(&doc.to_string(), "t.json").expect_err("invalid");
    assert_eq!(err.problems()[0].path, "States.Ask.HeartbeatSeconds");
    assert_eq!(err.problems()[0].kind, trigflow_asl::ProblemKind::Invalid);
}

#[test]
fn token_execution_reads_only_task_tokens() {
    assert_eq!(token_execution("q3!tok2@run-9"), Some("run-9"));
    assert_eq!(token_execution("q3!tok2@a@b"), Some("a@b"));
    assert_eq!(token_execution("whatever"), None);
    assert_eq!(token_execution("q3!tok2@"), None);
}
