//! EventBridge Scheduler timers on moto: a timer further ahead than SQS can
//! delay becomes one one-time schedule (at(), UTC, target the queue with
//! the timer hop as input, deleted after completion), scheduling it again
//! is a no-op, and near timers still use the SQS delay. moto stores
//! schedules but never fires them, so the firing is played by handing the
//! schedule's input to the adapters, as the queue would deliver it.

use aws_sdk_scheduler::types::{ActionAfterCompletion, FlexibleTimeWindowMode};
use serde_json::json;
use trigflow_aws::SqsSink;
use trigflow_aws::events::{Incoming, normalise};
use trigflow_aws::scheduler::{SchedulerTimers, at_expression, schedule_name};
use trigflow_aws::testing::MotoServer;
use trigflow_core::cloudevents::Event;
use trigflow_core::seams::EventSink;

/// 2027-01-15T08:00:00.000Z
const NOW_MS: i64 = 1_800_000_000_000;

fn clock() -> i64 {
    NOW_MS
}

fn timer_event(id: &str) -> Event {
    serde_json::from_value(json!({
        "specversion": "1.0",
        "id": id,
        "source": "trigflow/e1/timer",
        "type": "trigflow.timer.fired",
        "subject": "wait",
        "trigflowexecution": "e1",
        "data": {"n": 1}
    }))
    .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_timers_become_one_time_schedules_on_the_queue() {
    let moto = MotoServer::start().expect("moto server");
    let sdk = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let url = sqs
        .create_queue()
        .queue_name("trigflow")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let queue_arn = "arn:aws:sqs:us-east-1:123456789012:trigflow";
    let role = "arn:aws:iam::123456789012:role/trigflow-scheduler";
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let sink = SqsSink::new(sqs.clone(), &url)
        .with_clock(clock)
        .with_scheduler(SchedulerTimers::new(scheduler.clone(), queue_arn, role));

    // Two hours and a half second ahead: a schedule, rounded up.
    let event = timer_event("e1/timer/1");
    let fire_at = NOW_MS + 2 * 3_600_000 + 500;
    sink.schedule(fire_at, &event).await.expect("schedule");
    // The same timer again (a re-dispatched outbox entry): no second one.
    sink.schedule(fire_at, &event).await.expect("idempotent");

    let name = schedule_name(&event);
    assert!(name.len() <= 64 && name.starts_with("trigflow-"), "{name}");
    let s = scheduler
        .get_schedule()
        .name(&name)
        .send()
        .await
        .expect("the schedule exists");
    assert_eq!(s.schedule_expression(), Some("at(2027-01-15T10:00:01)"));
    assert_eq!(s.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        s.action_after_completion(),
        Some(&ActionAfterCompletion::Delete)
    );
    assert_eq!(
        s.flexible_time_window().map(|w| w.mode()),
        Some(&FlexibleTimeWindowMode::Off)
    );
    let target = s.target().expect("target");
    assert_eq!(target.arn(), queue_arn);
    assert_eq!(target.role_arn(), role);
    let listed = scheduler.list_schedules().send().await.expect("list");
    assert_eq!(listed.schedules().len(), 1, "scheduled once");

    // What the queue receives when it fires: the timer hop, which the
    // handler applies once due (or re-schedules if early).
    let input = target.input().expect("input");
    match normalise(input.as_bytes()).expect("the input is a trigflow message") {
        Incoming::Hop(hop) => {
            assert_eq!(hop.fire_at_ms, fire_at);
            assert_eq!(hop.event, event);
        }
        other => panic!("expected a timer hop, got {other:?}"),
    }

    // Ten minutes ahead: SQS delays it, no schedule.
    let near = timer_event("e1/timer/2");
    sink.schedule(NOW_MS + 600_000, &near)
        .await
        .expect("near timer");
    let listed = scheduler.list_schedules().send().await.expect("list");
    assert_eq!(listed.schedules().len(), 1);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .expect("attributes");
    assert_eq!(
        attrs
            .attributes()
            .and_then(|a| a
                .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed))
            .map(String::as_str),
        Some("1")
    );

    // A scheduler that cannot be reached is an error to retry, never a
    // silently lost timer.
    let mut settings = moto.settings();
    settings.endpoint_url = Some("http://127.0.0.1:9".into());
    let unreachable = aws_sdk_scheduler::Client::new(&settings.load().await);
    let down = SqsSink::new(sqs, &url)
        .with_clock(clock)
        .with_scheduler(SchedulerTimers::new(unreachable, queue_arn, role));
    let err = down
        .schedule(fire_at, &timer_event("e1/timer/3"))
        .await
        .expect_err("unreachable scheduler");
    assert!(err.retryable, "{err}");
}

#[test]
fn at_expressions_never_fire_early() {
    assert_eq!(at_expression(0).as_deref(), Some("at(1970-01-01T00:00:00)"));
    assert_eq!(at_expression(1).as_deref(), Some("at(1970-01-01T00:00:01)"));
    assert_eq!(
        at_expression(NOW_MS + 999).as_deref(),
        Some("at(2027-01-15T08:00:01)")
    );
}
