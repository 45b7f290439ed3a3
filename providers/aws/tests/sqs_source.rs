//! `SqsSource` against a real moto SQS: receive in batches of at most 10,
//! ack deletes, retry makes a message visible again after the delay (and
//! counts the attempt), adapters normalise destination records, and a
//! malformed body passes through unchanged so that the worker dead-letters
//! it (to a real dead-letter queue, with the reason).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use trigflow_aws::testing::MotoServer;
use trigflow_aws::{SqsSink, SqsSource};
use trigflow_core::Engine;
use trigflow_core::seams::{DeadLetter, Delivery, EventSource, Invoker};
use trigflow_worker::Worker;
use trigflow_worker::memory::MemoryStore;

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

async fn send(sqs: &aws_sdk_sqs::Client, url: &str, body: &str) {
    sqs.send_message()
        .queue_url(url)
        .message_body(body)
        .send()
        .await
        .expect("send");
}

/// Receives until `n` deliveries arrived or the deadline passes.
async fn receive_n(source: &SqsSource, n: usize, deadline: Duration) -> Vec<Delivery> {
    let end = Instant::now() + deadline;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < end {
        got.extend(
            source
                .receive(10, Duration::from_secs(1))
                .await
                .expect("receive"),
        );
    }
    got
}

async fn visible_and_in_flight(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("attributes");
    let attrs = out.attributes.expect("attributes");
    let n = |a: &A| attrs.get(a).and_then(|v| v.parse().ok()).expect("a count");
    (
        n(&A::ApproximateNumberOfMessages),
        n(&A::ApproximateNumberOfMessagesNotVisible),
    )
}

fn event(i: usize) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("ev-{i}"),
        "source": "test",
        "type": "user.event",
        "subject": "s",
        "trigflowexecution": "e1",
        "data": {"i": i}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_in_batches_ack_deletes_and_retry_redelivers() {
    let moto = MotoServer::start().expect("moto server");
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let url = queue(&sqs, "source").await;
    let source = SqsSource::new(sqs.clone(), &url);

    const N: usize = 23;
    for i in 0..N {
        send(&sqs, &url, &event(i).to_string()).await;
    }
    // A batch never holds more than SQS allows, whatever is asked.
    let first = source
        .receive(50, Duration::from_secs(1))
        .await
        .expect("receive");
    assert!(
        !first.is_empty() && first.len() <= trigflow_aws::sqs::BATCH,
        "{}",
        first.len()
    );
    let mut all = first;
    all.extend(receive_n(&source, N - all.len(), Duration::from_secs(20)).await);
    assert_eq!(all.len(), N);
    let ids: HashSet<String> = all
        .iter()
        .map(|d| {
            assert_eq!(d.attempt, 1);
            let body: Value = serde_json::from_slice(&d.body).expect("a CloudEvent");
            body["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), N, "each message once");
    assert_eq!(visible_and_in_flight(&sqs, &url).await, (0, N as u64));

    // Retry 3 of them after 1 s, ack the other 20 in one call (two
    // DeleteMessageBatch calls under the hood).
    let (again, done) = all.split_at(3);
    let retry_ids: Vec<String> = again.iter().map(|d| d.id.clone()).collect();
    let retry_bodies: HashSet<Vec<u8>> = again.iter().map(|d| d.body.clone()).collect();
    source
        .retry(&retry_ids, Duration::from_secs(1))
        .await
        .expect("retry");
    source
        .ack(&done.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
        .await
        .expect("ack");
    assert_eq!(visible_and_in_flight(&sqs, &url).await, (0, 3));

    let back = receive_n(&source, 3, Duration::from_secs(20)).await;
    assert_eq!(back.len(), 3, "the retried messages come back");
    for d in &back {
        assert!(retry_bodies.contains(&d.body));
        assert_eq!(d.attempt, 2, "second delivery");
    }
    source
        .ack(&back.iter().map(|d| d.id.clone()).collect::<Vec<_>>())
        .await
        .expect("ack");
    assert_eq!(visible_and_in_flight(&sqs, &url).await, (0, 0));
    assert!(
        source
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive")
            .is_empty(),
        "acked messages never come back"
    );

    // An ack with a receipt handle SQS does not know fails, and says so.
    let err = source
        .ack(&["not-a-receipt-handle".to_owned()])
        .await
        .expect_err("unknown receipt handle");
    assert!(err.message.contains(&url), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_records_are_normalised_and_malformed_bodies_dead_lettered() {
    let moto = MotoServer::start().expect("moto server");
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let url = queue(&sqs, "source").await;
    let dlq = queue(&sqs, "dead").await;
    let source = SqsSource::new(sqs.clone(), &url);

    let record = std::fs::read_to_string(format!(
        "{}/tests/fixtures/destination-success.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    send(&sqs, &url, &record).await;
    send(&sqs, &url, "{not json").await;
    let got = receive_n(&source, 2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2);
    let (good, bad): (Vec<&Delivery>, Vec<&Delivery>) =
        got.iter().partition(|d| d.body.as_slice() != b"{not json");
    assert_eq!(bad.len(), 1, "the malformed body is passed on unchanged");
    let normalised: Value = serde_json::from_slice(&good[0].body).expect("a CloudEvent");
    assert_eq!(normalised["type"], "trigflow.function.succeeded");
    assert_eq!(normalised["id"], "exec-42/7");
    assert_eq!(normalised["data"], 9);

    // The worker: the malformed message goes to the dead-letter queue with
    // its reason and is acked; the completion, for an execution this
    // store does not know, too (unknown execution).
    let sink = Arc::new(SqsSink::new(sqs.clone(), &url).with_dead_letter_queue(&dlq));
    let invoker: Arc<dyn Invoker> = Arc::new(trigflow_aws::LambdaInvoker::new(
        aws_sdk_lambda::Client::new(&moto.sdk_config().await),
    ));
    let worker = Worker::new(Engine::new(), Arc::new(MemoryStore::new()), sink, invoker);
    let report = worker.process_batch(got.clone()).await;
    assert!(report.retry.is_empty(), "{report:?}");
    assert_eq!(report.dead_lettered.len(), 2, "{report:?}");
    source.ack(&report.acked).await.expect("ack");
    assert_eq!(visible_and_in_flight(&sqs, &url).await, (0, 0));

    let dead = SqsSource::new(sqs.clone(), &dlq);
    let letters: Vec<DeadLetter> = receive_n(&dead, 2, Duration::from_secs(20))
        .await
        .iter()
        .map(|d| serde_json::from_slice(&d.body).expect("a dead letter"))
        .collect();
    assert_eq!(letters.len(), 2);
    let malformed = letters
        .iter()
        .find(|l| l.body == "{not json")
        .expect("the malformed body is kept");
    assert!(!malformed.reason.is_empty());
    let unknown = letters
        .iter()
        .find(|l| l.event_id.as_deref() == Some("exec-42/7"))
        .expect("the completion for an unknown execution");
    assert_eq!(unknown.execution.as_deref(), Some("exec-42"));
    assert!(unknown.reason.contains("exec-42"), "{}", unknown.reason);
}
