//! The SQS event source and sink.
//!
//! In Lambda the event source mapping polls the queue and the orchestrator
//! answers with batch-item failures ([`crate::handler`]); [`SqsSource`] is
//! for running the orchestrator as a long-lived worker (`Worker::run`)
//! and for tests. [`SqsSink`] is used in both.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use trigflow_core::cloudevents::{AttributesReader, Event};
use trigflow_core::event::{EventKey, execution_of};
use trigflow_core::seams::{DeadLetter, Delivery, EventSink, EventSource, SinkError, SourceError};

use crate::events::{Incoming, TIMER_HOP, TimerHop, normalise};
use crate::scheduler::SchedulerTimers;
use trigflow_core::claim::ClaimCheck;

/// Most entries one SQS batch call takes.
pub const BATCH: usize = 10;
/// Longest delay SQS gives one message.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// Largest total payload of one `SendMessageBatch` (and of one message).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

type HttpResponse = aws_sdk_sqs::config::http::HttpResponse;

fn sdk_message<E>(e: &SdkError<E, HttpResponse>) -> (String, bool)
where
    E: std::error::Error + 'static,
{
    let retryable = matches!(
        e,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    ) || matches!(e, SdkError::ServiceError(s) if s.raw().status().is_server_error());
    (format!("{}", DisplayErrorContext(e)), retryable)
}

/// Reads batches from an SQS queue.
#[derive(Debug, Clone)]
pub struct SqsSource {
    client: Client,
    queue_url: String,
}

impl SqsSource {
    /// A source on `queue_url`.
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    fn source_error<E>(&self, op: &str, e: SdkError<E, HttpResponse>) -> SourceError
    where
        E: std::error::Error + 'static,
    {
        let (m, retryable) = sdk_message(&e);
        SourceError {
            message: format!("SQS {op} on {}: {m}", self.queue_url),
            retryable,
        }
    }
}

#[async_trait]
impl EventSource for SqsSource {
    /// Delivery ids are receipt handles. Bodies are normalised: a
    /// destination record, S3 notification or EventBridge event arrives as
    /// the CloudEvent it stands for. A body that is not one of those is
    /// passed on as it is, and the worker dead-letters it. S3 messages with
    /// several records and timer hops are handled only by the Lambda
    /// handler ([`crate::handler::Orchestrator`]); here they are passed on
    /// unchanged too.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, SourceError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max.clamp(1, BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| self.source_error("ReceiveMessage", e))?;
        let mut deliveries = Vec::new();
        for m in out.messages.unwrap_or_default() {
            let Some(receipt) = m.receipt_handle else {
                continue;
            };
            let raw = m.body.unwrap_or_default().into_bytes();
            let attempt = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let body = match normalise(&raw) {
                Ok(Incoming::Events(events)) if events.len() == 1 => {
                    serde_json::to_vec(&events[0]).unwrap_or(raw)
                }
                _ => raw,
            };
            deliveries.push(Delivery {
                id: receipt,
                body,
                attempt,
            });
        }
        Ok(deliveries)
    }

    async fn ack(&self, ids: &[String]) -> Result<(), SourceError> {
        let mut failed = Vec::new();
        for chunk in ids.chunks(BATCH) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, receipt) in chunk.iter().enumerate() {
                entries.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| SourceError {
                            message: e.to_string(),
                            retryable: false,
                        })?,
                );
            }
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.source_error("DeleteMessageBatch", e))?;
            failed.extend(
                out.failed
                    .iter()
                    .map(|f| format!("{}: {}", f.code, f.message.clone().unwrap_or_default())),
            );
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(SourceError {
                message: format!(
                    "SQS DeleteMessageBatch on {}: {}",
                    self.queue_url,
                    failed.join("; ")
                ),
                retryable: true,
            })
        }
    }

    async fn retry(&self, ids: &[String], delay: Duration) -> Result<(), SourceError> {
        let timeout = delay.as_secs().min(43_200) as i32;
        for chunk in ids.chunks(BATCH) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, receipt) in chunk.iter().enumerate() {
                entries.push(
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(receipt)
                        .visibility_timeout(timeout)
                        .build()
                        .map_err(|e| SourceError {
                            message: e.to_string(),
                            retryable: false,
                        })?,
                );
            }
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| self.source_error("ChangeMessageVisibilityBatch", e))?;
        }
        Ok(())
    }
}

/// Publishes events, timers and dead letters to SQS queues.
#[derive(Debug, Clone)]
pub struct SqsSink {
    client: Client,
    queue_url: String,
    dead_letter_url: Option<String>,
    clock: fn() -> i64,
    scheduler: Option<SchedulerTimers>,
    claims: Option<ClaimCheck>,
}

fn system_now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl SqsSink {
    /// A sink publishing to `queue_url` (the orchestrator's own queue). A
    /// URL ending in `.fifo` is a FIFO queue: each event goes to the message
    /// group of its execution, deduplicated on its (source, id).
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            dead_letter_url: None,
            clock: system_now_ms,
            scheduler: None,
            claims: None,
        }
    }

    /// Events and timers whose data is above the claim check's threshold
    /// are published with a reference to the data in S3 instead (see
    /// [`crate::claims`]).
    pub fn with_claim_check(mut self, claims: ClaimCheck) -> Self {
        self.claims = Some(claims);
        self
    }

    /// The event as published: with its data offloaded when it is large.
    async fn outgoing<'a>(
        &self,
        event: &'a Event,
        encoded: &str,
    ) -> Result<std::borrow::Cow<'a, Event>, SinkError> {
        let Some(claims) = &self.claims else {
            return Ok(std::borrow::Cow::Borrowed(event));
        };
        // The data cannot be above the threshold if the whole event is not.
        if encoded.len() <= claims.threshold() {
            return Ok(std::borrow::Cow::Borrowed(event));
        }
        match crate::claims::offload_event(claims, event).await {
            Ok(Some(e)) => Ok(std::borrow::Cow::Owned(e)),
            Ok(None) => Ok(std::borrow::Cow::Borrowed(event)),
            Err(e) => Err(SinkError {
                message: format!("claim check for event {}: {e}", event.id()),
                retryable: e.is_retryable(),
            }),
        }
    }

    /// Timers more than 15 minutes ahead become one-time EventBridge
    /// Scheduler schedules instead of 15-minute hops (see
    /// [`crate::scheduler`]).
    pub fn with_scheduler(mut self, scheduler: SchedulerTimers) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    /// Where dead letters go (a queue kept for inspection). Without one,
    /// `dead_letter` fails and the worker leaves the messages to the
    /// queue's redrive policy.
    pub fn with_dead_letter_queue(mut self, url: impl Into<String>) -> Self {
        self.dead_letter_url = Some(url.into());
        self
    }

    /// Replaces the clock timers are measured against (tests).
    pub fn with_clock(mut self, clock: fn() -> i64) -> Self {
        self.clock = clock;
        self
    }

    /// The queue URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    fn is_fifo(url: &str) -> bool {
        url.ends_with(".fifo")
    }

    fn sink_error<E>(&self, op: &str, e: SdkError<E, HttpResponse>) -> SinkError
    where
        E: std::error::Error + 'static,
    {
        let (m, retryable) = sdk_message(&e);
        SinkError {
            message: format!("SQS {op} on {}: {m}", self.queue_url),
            retryable,
        }
    }

    /// Sends bodies in batches of at most [`BATCH`] entries and
    /// [`MAX_BATCH_BYTES`]; `(body, delay seconds, event)` per message.
    async fn send(
        &self,
        url: &str,
        messages: Vec<(String, i32, Option<&Event>)>,
    ) -> Result<(), SinkError> {
        let fifo = Self::is_fifo(url);
        let mut batch: Vec<SendMessageBatchRequestEntry> = Vec::new();
        let mut bytes = 0;
        let mut failures = Vec::new();
        let total = messages.len();
        for (i, (body, delay, event)) in messages.into_iter().enumerate() {
            if body.len() > MAX_BATCH_BYTES {
                return Err(SinkError {
                    message: format!(
                        "message of {} bytes is over SQS's {MAX_BATCH_BYTES}-byte limit (event {:?})",
                        body.len(),
                        event.map(|e| e.id().to_owned())
                    ),
                    retryable: false,
                });
            }
            if !batch.is_empty() && (batch.len() == BATCH || bytes + body.len() > MAX_BATCH_BYTES) {
                failures.extend(self.send_batch(url, std::mem::take(&mut batch)).await?);
                bytes = 0;
            }
            bytes += body.len();
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body);
            if fifo {
                let group = event
                    .and_then(execution_of)
                    .and_then(Result::ok)
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "trigflow".into());
                let dedup = event
                    .map(|e| format!("{:032x}", EventKey::new(&e.source().to_string(), e.id()).0))
                    .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
                entry = entry
                    .message_group_id(group)
                    .message_deduplication_id(dedup);
            } else if delay > 0 {
                entry = entry.delay_seconds(delay);
            }
            batch.push(entry.build().map_err(|e| SinkError {
                message: e.to_string(),
                retryable: false,
            })?);
            if i + 1 == total {
                failures.extend(self.send_batch(url, std::mem::take(&mut batch)).await?);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(SinkError {
                message: format!("SQS SendMessageBatch on {url}: {}", failures.join("; ")),
                retryable: true,
            })
        }
    }

    async fn send_batch(
        &self,
        url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<Vec<String>, SinkError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| self.sink_error("SendMessageBatch", e))?;
        Ok(out
            .failed
            .iter()
            .map(|f| {
                format!(
                    "entry {}: {} {}",
                    f.id,
                    f.code,
                    f.message.clone().unwrap_or_default()
                )
            })
            .collect())
    }
}

fn encode(event: &Event) -> Result<String, SinkError> {
    serde_json::to_string(event).map_err(|e| SinkError {
        message: format!("event {} cannot be encoded: {e}", event.id()),
        retryable: false,
    })
}

#[async_trait]
impl EventSink for SqsSink {
    async fn publish(&self, events: &[Event]) -> Result<(), SinkError> {
        let mut outgoing = Vec::with_capacity(events.len());
        for e in events {
            let encoded = encode(e)?;
            outgoing.push(match self.outgoing(e, &encoded).await? {
                std::borrow::Cow::Borrowed(_) => (encoded, None),
                std::borrow::Cow::Owned(offloaded) => (encode(&offloaded)?, Some(offloaded)),
            });
        }
        let messages = outgoing
            .iter()
            .zip(events)
            .map(|((body, offloaded), e)| (body.clone(), 0, Some(offloaded.as_ref().unwrap_or(e))))
            .collect();
        self.send(&self.queue_url, messages).await
    }

    /// Up to 15 minutes ahead: one message with that `DelaySeconds`
    /// (rounded up, so a timer never fires early). Further ahead: a
    /// one-time EventBridge Scheduler schedule when
    /// [`SqsSink::with_scheduler`] is set, else a timer hop delayed 15
    /// minutes, which the handler re-schedules until it is due. FIFO queues
    /// cannot delay single messages, so timers need a standard queue.
    async fn schedule(&self, fire_at_ms: i64, event: &Event) -> Result<(), SinkError> {
        let encoded = encode(event)?;
        let event = self.outgoing(event, &encoded).await?;
        let event = event.as_ref();
        let wait_ms = (fire_at_ms - (self.clock)()).max(0);
        if Self::is_fifo(&self.queue_url) && wait_ms > 0 {
            return Err(SinkError {
                message: format!(
                    "timer for event {}: FIFO queue {} cannot delay single messages; use a standard queue for timers",
                    event.id(),
                    self.queue_url
                ),
                retryable: false,
            });
        }
        let max_ms = MAX_DELAY.as_millis() as i64;
        if wait_ms > max_ms
            && let Some(scheduler) = &self.scheduler
        {
            return scheduler.schedule(fire_at_ms, event).await;
        }
        let (body, delay) = if wait_ms <= max_ms {
            (encode(event)?, ((wait_ms + 999) / 1000) as i32)
        } else {
            let hop = TimerHop {
                fire_at_ms,
                event: event.clone(),
            };
            let body =
                serde_json::to_string(&serde_json::json!({ TIMER_HOP: hop })).map_err(|e| {
                    SinkError {
                        message: format!("timer hop for event {}: {e}", event.id()),
                        retryable: false,
                    }
                })?;
            (body, MAX_DELAY.as_secs() as i32)
        };
        self.send(&self.queue_url, vec![(body, delay, Some(event))])
            .await
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        let Some(url) = &self.dead_letter_url else {
            return Err(SinkError {
                message: format!(
                    "no dead-letter queue configured; {} message(s) left to the queue's redrive policy",
                    letters.len()
                ),
                retryable: false,
            });
        };
        let mut messages = Vec::with_capacity(letters.len());
        for l in letters {
            let body = serde_json::to_string(l).map_err(|e| SinkError {
                message: format!("dead letter for message {}: {e}", l.message_id),
                retryable: false,
            })?;
            messages.push((body, 0, None));
        }
        self.send(url, messages).await
    }
}
