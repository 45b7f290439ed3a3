//! The adapters on documented AWS sample payloads (tests/fixtures, sources
//! in its README), each compared with the CloudEvents expected beside it.

use serde_json::Value;
use trigflow_aws::events::{AdapterError, Incoming, normalise, normalise_value};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn events_json(incoming: Incoming) -> Value {
    match incoming {
        Incoming::Events(events) => Value::Array(
            events
                .iter()
                .map(|e| serde_json::to_value(e).expect("event encodes"))
                .collect(),
        ),
        Incoming::Hop(h) => panic!("unexpected timer hop {h:?}"),
    }
}

fn assert_matches_expected(name: &str, got: Value) {
    let expected = fixture(&format!("{name}.expected.json"));
    assert_eq!(
        got, expected,
        "{name}: adapter output differs from the expected CloudEvents"
    );
}

#[test]
fn sqs_record_with_a_structured_cloudevent() {
    let batch = fixture("sqs-cloudevent.json");
    let mut all = Vec::new();
    for record in batch["Records"].as_array().expect("records") {
        let body = record["body"].as_str().expect("body");
        match events_json(normalise(body.as_bytes()).expect("normalises")) {
            Value::Array(events) => all.extend(events),
            other => panic!("{other}"),
        }
    }
    assert_matches_expected("sqs-cloudevent", Value::Array(all));
}

#[test]
fn lambda_destination_on_success() {
    let got = normalise_value(&fixture("destination-success.json")).expect("normalises");
    assert_matches_expected("destination-success", events_json(got));
}

#[test]
fn lambda_destination_on_failure() {
    let got = normalise_value(&fixture("destination-failure.json")).expect("normalises");
    assert_matches_expected("destination-failure", events_json(got));
}

#[test]
fn destination_completion_equals_the_embedded_invokers_completion() {
    // Same (source, id) as `Invocation::completion` for the invocation the
    // request payload describes: that is what makes a duplicate count once.
    let record = fixture("destination-success.json");
    let inv = trigflow_aws::events::invocation_from_payload(&record["requestPayload"], "")
        .expect("trigflow payload");
    let embedded = inv
        .completion(Ok(serde_json::json!(9)))
        .expect("completion");
    match normalise_value(&record).expect("normalises") {
        Incoming::Events(events) => assert_eq!(events, vec![embedded]),
        other => panic!("{other:?}"),
    }
    // And the payload the invoker sends round-trips.
    assert_eq!(
        trigflow_aws::events::invoke_payload(&inv),
        record["requestPayload"]
    );
}

#[test]
fn destination_through_eventbridge_is_unwrapped() {
    let record = fixture("destination-success.json");
    let wrapped = serde_json::json!({
        "version": "0",
        "id": "0b4b4b4b-1111-2222-3333-444455556666",
        "detail-type": "Lambda Function Invocation Result - Success",
        "source": "lambda",
        "account": "123456789012",
        "time": "2019-11-24T23:08:25Z",
        "region": "sa-east-1",
        "resources": [],
        "detail": record,
    });
    let got = normalise_value(&wrapped).expect("normalises");
    assert_matches_expected("destination-success", events_json(got));
}

#[test]
fn documented_destination_record_without_trigflow_fields_is_rejected() {
    match normalise_value(&fixture("destination-documented.json")) {
        Err(AdapterError::Field { path, .. }) => assert_eq!(path, "requestPayload.trigflow"),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn s3_object_created_is_data_ready() {
    let got = normalise_value(&fixture("s3-object-created.json")).expect("normalises");
    assert_matches_expected("s3-object-created", events_json(got));
}

#[test]
fn documented_s3_key_outside_trigflow_prefix_is_rejected() {
    match normalise_value(&fixture("s3-documented.json")) {
        Err(AdapterError::Field { path, .. }) => assert_eq!(path, "Records[0].s3.object.key"),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn s3_test_event_yields_no_event() {
    let test_event = serde_json::json!({
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": "2014-10-13T15:57:02.089Z",
        "Bucket": "example-bucket",
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"
    });
    assert_eq!(
        normalise_value(&test_event),
        Ok(Incoming::Events(Vec::new()))
    );
}

#[test]
fn eventbridge_user_event() {
    let got = normalise_value(&fixture("eventbridge-user.json")).expect("normalises");
    assert_matches_expected("eventbridge-user", events_json(got));
}

#[test]
fn documented_eventbridge_event_without_execution_is_rejected() {
    match normalise_value(&fixture("eventbridge-documented.json")) {
        Err(AdapterError::Field { path, .. }) => assert_eq!(path, "detail.trigflowexecution"),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn unknown_payloads_name_what_arrived() {
    match normalise(br#"{"hello": 1}"#) {
        Err(AdapterError::Unrecognised { keys }) => assert_eq!(keys, "hello"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        normalise(b"not json"),
        Err(AdapterError::NotJson(_))
    ));
}
