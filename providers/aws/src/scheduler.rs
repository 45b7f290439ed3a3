//! Timers through EventBridge Scheduler, an option of [`crate::SqsSink`].
//!
//! SQS delays a message at most 15 minutes; beyond that the sink sends
//! timer hops that come back every 15 minutes until the timer is due
//! (a message and an orchestrator run per hop: 96 a day per timer). With
//! [`SchedulerTimers`] configured, a timer further ahead than that is one
//! one-time schedule instead:
//!
//! - expression `at(yyyy-mm-ddThh:mm:ss)` in UTC, the fire time rounded up
//!   to the second, flexible time window off;
//! - target: the orchestrator's queue, with the role Scheduler sends as;
//!   input: the timer hop `{"trigflowtimer": {fire_at_ms, event}}`, so that
//!   a delivery before the due time (clock skew) is re-scheduled by the
//!   handler rather than applied early;
//! - `ActionAfterCompletion: DELETE`: the schedule removes itself after it
//!   fired, so nothing accumulates;
//! - name `trigflow-{hash of (source, id)}`: the same timer scheduled twice
//!   (a re-dispatched outbox entry) hits `ConflictException`, which counts
//!   as done. Timers up to 15 minutes ahead keep using the SQS delay.

use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use trigflow_core::cloudevents::{AttributesReader, Event};
use trigflow_core::event::EventKey;
use trigflow_core::seams::SinkError;

use crate::events::{TIMER_HOP, TimerHop};

/// Environment variable naming the role Scheduler assumes to send to the
/// queue; setting it turns scheduler timers on (in the orchestrator binary).
pub const ROLE_VAR: &str = "TRIGFLOW_SCHEDULER_ROLE_ARN";
/// Environment variable with the orchestrator queue's ARN (the target).
pub const QUEUE_ARN_VAR: &str = "TRIGFLOW_QUEUE_ARN";
/// Prefix of the schedules trigflow creates (the orchestrator's IAM policy
/// allows `scheduler:CreateSchedule` on these names only).
pub const NAME_PREFIX: &str = "trigflow-";

/// Creates one-time schedules that deliver timer events to the queue.
#[derive(Debug, Clone)]
pub struct SchedulerTimers {
    client: Client,
    queue_arn: String,
    role_arn: String,
    group: Option<String>,
}

/// The schedule name of a timer event: deterministic, so creating it twice
/// is detected, and within Scheduler's 64 characters of `[0-9a-zA-Z-_.]`.
pub fn schedule_name(event: &Event) -> String {
    format!(
        "{NAME_PREFIX}{:032x}",
        EventKey::new(&event.source().to_string(), event.id()).0
    )
}

/// The `at(...)` expression for a fire time (ms since the epoch, UTC),
/// rounded up to the whole second so that it never fires early.
pub fn at_expression(fire_at_ms: i64) -> Option<String> {
    let secs = fire_at_ms.div_euclid(1000) + i64::from(fire_at_ms.rem_euclid(1000) > 0);
    let t = chrono::DateTime::from_timestamp(secs, 0)?;
    Some(format!("at({})", t.format("%Y-%m-%dT%H:%M:%S")))
}

impl SchedulerTimers {
    /// Schedules sending to the queue `queue_arn` as `role_arn`, in the
    /// default schedule group.
    pub fn new(client: Client, queue_arn: impl Into<String>, role_arn: impl Into<String>) -> Self {
        Self {
            client,
            queue_arn: queue_arn.into(),
            role_arn: role_arn.into(),
            group: None,
        }
    }

    /// Uses schedule group `group` instead of `default`.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// The target queue's ARN.
    pub fn queue_arn(&self) -> &str {
        &self.queue_arn
    }

    /// Creates the schedule for `event` at `fire_at_ms`; an existing
    /// schedule of the same name is this timer already scheduled.
    pub async fn schedule(&self, fire_at_ms: i64, event: &Event) -> Result<(), SinkError> {
        let fail = |message: String, retryable: bool| SinkError {
            message: format!("timer for event {}: {message}", event.id()),
            retryable,
        };
        let expression = at_expression(fire_at_ms)
            .ok_or_else(|| fail(format!("fire time {fire_at_ms} ms is out of range"), false))?;
        let hop = TimerHop {
            fire_at_ms,
            event: event.clone(),
        };
        let input = serde_json::to_string(&serde_json::json!({ TIMER_HOP: hop }))
            .map_err(|e| fail(e.to_string(), false))?;
        let target = Target::builder()
            .arn(&self.queue_arn)
            .role_arn(&self.role_arn)
            .input(input)
            .build()
            .map_err(|e| fail(e.to_string(), false))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| fail(e.to_string(), false))?;
        let name = schedule_name(event);
        let result = self
            .client
            .create_schedule()
            .name(&name)
            .set_group_name(self.group.clone())
            .schedule_expression(expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .target(target)
            .action_after_completion(ActionAfterCompletion::Delete)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conflict_exception()) =>
            {
                Ok(())
            }
            Err(e) => {
                let retryable = match &e {
                    SdkError::TimeoutError(_)
                    | SdkError::DispatchFailure(_)
                    | SdkError::ResponseError(_) => true,
                    SdkError::ServiceError(s) => {
                        s.raw().status().is_server_error()
                            || matches!(
                                s.err().code(),
                                Some("ThrottlingException" | "InternalServerException")
                            )
                    }
                    _ => false,
                };
                Err(fail(
                    format!(
                        "Scheduler CreateSchedule {name}: {}",
                        DisplayErrorContext(&e)
                    ),
                    retryable,
                ))
            }
        }
    }
}
