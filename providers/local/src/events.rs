//! [`JetStreamSource`] and [`JetStreamSink`]: events on JetStream, timers
//! that survive a restart, and the dead-letter stream.
//!
//! - Events are structured-mode CloudEvents (JSON) on
//!   `trigflow.events.<execution>`, published with `Nats-Msg-Id` = a digest
//!   of (source, id) so that the server drops a repeat within its
//!   duplicate window (2 minutes); the engine drops later ones.
//! - Workers share one durable pull consumer (explicit ack, unlimited
//!   redeliveries). A delivery's id is its ack subject, so any worker can
//!   ack or nak it; `attempt` is JetStream's delivery count.
//! - A timer is the event on `trigflow.timers.<execution>` with its due time
//!   in `Trigflow-Fire-At`. [`TimerLoop`] consumes that stream with another
//!   shared durable consumer: a due timer is published as an event and then
//!   acked; one not yet due is nak'ed with a delay of the time left, so the
//!   server holds it (durably, across restarts of the worker and of the
//!   server) and hands it back when it is due.
//! - Dead letters are JSON [`DeadLetter`]s on `trigflow.dead.<execution>`
//!   with the reason also in the `Trigflow-Reason` header.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::PullConsumer};
use async_trait::async_trait;
use futures::StreamExt;
use tracing::warn;
use trigflow_core::claim::ClaimCheck;
use trigflow_core::cloudevents::{AttributesReader, Event};
use trigflow_core::event::execution_of;
use trigflow_core::seams::{DeadLetter, Delivery, EventSink, EventSource, SinkError, SourceError};
use trigflow_worker::{Clock, SystemClock};

use crate::names::{
    DEAD_STREAM, DEAD_SUBJECT, HEADER_FIRE_AT, HEADER_MESSAGE_ID, HEADER_REASON, TIMERS_SUBJECT,
    escape, event_msg_id, event_subject,
};

/// The event source: a batch from the durable consumer the workers share.
#[derive(Clone)]
pub struct JetStreamSource {
    client: async_nats::Client,
    consumer: PullConsumer,
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource").finish_non_exhaustive()
    }
}

fn source_error(what: &str, e: &dyn std::fmt::Display) -> SourceError {
    SourceError {
        message: format!("{what}: {e}"),
        retryable: true,
    }
}

/// Reads a pulled batch into deliveries; messages without an ack subject
/// (not from a JetStream consumer) cannot be acked and are skipped.
async fn collect(
    mut batch: async_nats::jetstream::consumer::pull::Batch,
    out: &mut Vec<Delivery>,
) -> Result<(), SourceError> {
    while let Some(m) = batch.next().await {
        let m = m.map_err(|e| source_error("pulling from the worker consumer", &e))?;
        let attempt = m
            .info()
            .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1);
        let Some(reply) = m.reply.as_ref() else {
            continue;
        };
        out.push(Delivery {
            id: reply.to_string(),
            body: m.payload.to_vec(),
            attempt,
        });
    }
    Ok(())
}

impl JetStreamSource {
    /// A source over `consumer` (see [`crate::Local::source`]).
    pub fn new(client: async_nats::Client, consumer: PullConsumer) -> Self {
        Self { client, consumer }
    }

    async fn reply_all(&self, ids: &[String], body: &[u8]) -> Result<(), SourceError> {
        for id in ids {
            self.client
                .publish(id.clone(), body.to_vec().into())
                .await
                .map_err(|e| source_error(&format!("replying to {id}"), &e))?;
        }
        self.client
            .flush()
            .await
            .map_err(|e| source_error("flushing acks", &e))
    }
}

#[async_trait]
impl EventSource for JetStreamSource {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, SourceError> {
        let max = max.max(1);
        let mut out = Vec::new();
        // What is there now, without waiting...
        let batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(|e| source_error("pull request", &e))?;
        collect(batch, &mut out).await?;
        if !out.is_empty() || wait.is_zero() {
            return Ok(out);
        }
        // ...else wait for the first message only (a request for `max` would
        // wait for all of them), then take whatever else has arrived.
        let first = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| source_error("pull request", &e))?;
        collect(first, &mut out).await?;
        if !out.is_empty() && max > 1 {
            let rest = self
                .consumer
                .fetch()
                .max_messages(max - 1)
                .messages()
                .await
                .map_err(|e| source_error("pull request", &e))?;
            collect(rest, &mut out).await?;
        }
        Ok(out)
    }

    async fn ack(&self, ids: &[String]) -> Result<(), SourceError> {
        self.reply_all(ids, b"+ACK").await
    }

    async fn retry(&self, ids: &[String], delay: Duration) -> Result<(), SourceError> {
        let body = format!("-NAK {{\"delay\":{}}}", delay.as_nanos());
        self.reply_all(ids, body.as_bytes()).await
    }
}

/// The event sink: events, timers and dead letters on JetStream.
#[derive(Clone)]
pub struct JetStreamSink {
    js: jetstream::Context,
    timers: PullConsumer,
    claims: Option<ClaimCheck>,
}

impl std::fmt::Debug for JetStreamSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSink").finish_non_exhaustive()
    }
}

fn sink_error(what: &str, e: &dyn std::fmt::Display) -> SinkError {
    SinkError {
        message: format!("{what}: {e}"),
        retryable: true,
    }
}

fn execution_text(event: &Event) -> Option<String> {
    execution_of(event).and_then(Result::ok).map(String::from)
}

impl JetStreamSink {
    /// A sink on `js`; `timers` is the shared timer consumer, which
    /// [`JetStreamSink::timer_loop`] consumes.
    pub fn new(js: jetstream::Context, timers: PullConsumer) -> Self {
        Self {
            js,
            timers,
            claims: None,
        }
    }

    /// Offloads the data of events (and timers) whose JSON is larger than
    /// the claim check's threshold, so that every message on the streams
    /// stays small.
    pub fn with_claims(mut self, claims: ClaimCheck) -> Self {
        self.claims = Some(claims);
        self
    }

    /// `event` with its data replaced by a reference if the claim check is
    /// on and the data is above its threshold; otherwise `event` as is.
    async fn small(&self, event: &Event) -> Result<Event, SinkError> {
        let Some(claims) = &self.claims else {
            return Ok(event.clone());
        };
        let data = trigflow_core::event::data_json(event);
        if data.is_null() || trigflow_core::claim::is_ref(&data) {
            return Ok(event.clone());
        }
        let offloaded = claims.offload(data).await.map_err(|e| SinkError {
            message: format!(
                "offloading the data of event {} from {}: {e}",
                event.id(),
                event.source()
            ),
            retryable: e.is_retryable(),
        })?;
        if !trigflow_core::claim::is_ref(&offloaded) {
            return Ok(event.clone());
        }
        let mut event = event.clone();
        event.set_data("application/json", offloaded);
        Ok(event)
    }

    /// Publishes `messages` (subject, headers, body) concurrently and waits
    /// for every acknowledgement, so that a success means all are stored.
    async fn publish_all(
        &self,
        what: &str,
        messages: Vec<(String, HeaderMap, Vec<u8>)>,
    ) -> Result<(), SinkError> {
        // async-nats holds at most a few thousand publish acks in flight
        // and then makes the next publish wait for one; publishing a whole
        // large batch before awaiting any ack would wait forever. A window
        // of PUBLISH_WINDOW keeps the pipelining and stays under that bound.
        let mut messages = messages.into_iter().peekable();
        while messages.peek().is_some() {
            let mut acks = Vec::with_capacity(PUBLISH_WINDOW);
            for (subject, headers, body) in messages.by_ref().take(PUBLISH_WINDOW) {
                let ack = self
                    .js
                    .publish_with_headers(subject.clone(), headers, body.into())
                    .await
                    .map_err(|e| sink_error(&format!("publishing {what} on {subject}"), &e))?;
                acks.push((subject, ack));
            }
            let results =
                futures::future::join_all(acks.into_iter().map(|(subject, ack)| async move {
                    ack.await
                        .map_err(|e| sink_error(&format!("publishing {what} on {subject}"), &e))
                }))
                .await;
            results.into_iter().try_for_each(|r| r.map(drop))?;
        }
        Ok(())
    }

    /// The timer loop for this sink's timer stream (see [`TimerLoop`]).
    pub fn timer_loop(&self) -> TimerLoop {
        TimerLoop {
            sink: self.clone(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Every dead letter stored so far, oldest first (for `trigflow status`
    /// and tests; it reads the whole stream).
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, SinkError> {
        let stream = self
            .js
            .get_stream(DEAD_STREAM)
            .await
            .map_err(|e| sink_error("opening the dead-letter stream", &e))?;
        let info = stream.cached_info().state.clone();
        let mut out = Vec::new();
        if info.messages == 0 {
            return Ok(out);
        }
        for seq in info.first_sequence..=info.last_sequence {
            match stream.get_raw_message(seq).await {
                Ok(m) => match serde_json::from_slice::<DeadLetter>(&m.payload) {
                    Ok(l) => out.push(l),
                    Err(e) => warn!(seq, error = %e, "undecodable dead letter"),
                },
                // Gaps: deleted messages.
                Err(_) => continue,
            }
        }
        Ok(out)
    }
}

/// Publishes in flight before their acks are awaited (below async-nats's
/// default bound of 5,000 pending acks).
pub(crate) const PUBLISH_WINDOW: usize = 1024;

/// Event encoding for the wire: structured-mode JSON.
fn encode(event: &Event) -> Result<Vec<u8>, SinkError> {
    serde_json::to_vec(event).map_err(|e| SinkError {
        message: format!(
            "event {} from {} cannot be encoded: {e}",
            event.id(),
            event.source()
        ),
        retryable: false,
    })
}

fn dedup_headers(event: &Event) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        event_msg_id(&event.source().to_string(), event.id()).as_str(),
    );
    headers
}

#[async_trait]
impl EventSink for JetStreamSink {
    async fn publish(&self, events: &[Event]) -> Result<(), SinkError> {
        let mut messages = Vec::with_capacity(events.len());
        for event in events {
            let event = &self.small(event).await?;
            let subject = event_subject(execution_text(event).as_deref());
            messages.push((subject, dedup_headers(event), encode(event)?));
        }
        self.publish_all("event", messages).await
    }

    async fn schedule(&self, fire_at_ms: i64, event: &Event) -> Result<(), SinkError> {
        let event = &self.small(event).await?;
        let subject = match execution_text(event) {
            Some(e) => format!("{TIMERS_SUBJECT}.{}", escape(&e)),
            None => format!("{TIMERS_SUBJECT}._"),
        };
        let mut headers = dedup_headers(event);
        headers.insert(HEADER_FIRE_AT, fire_at_ms.to_string().as_str());
        self.publish_all("timer", vec![(subject, headers, encode(event)?)])
            .await
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        let mut messages = Vec::with_capacity(letters.len());
        for l in letters {
            let subject = format!(
                "{DEAD_SUBJECT}.{}",
                l.execution
                    .as_deref()
                    .map_or_else(|| "_".to_owned(), escape)
            );
            let mut headers = HeaderMap::new();
            // Header values are one line.
            let reason: String = l
                .reason
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            headers.insert(HEADER_REASON, reason.as_str());
            headers.insert(HEADER_MESSAGE_ID, l.message_id.as_str());
            let body = serde_json::to_vec(l).map_err(|e| SinkError {
                message: format!("dead letter for {} cannot be encoded: {e}", l.message_id),
                retryable: false,
            })?;
            messages.push((subject, headers, body));
        }
        self.publish_all("dead letter", messages).await
    }
}

/// Longest a not-yet-due timer is held back in one nak: long timers come
/// round a few times, which bounds the damage of a clock that jumped.
const MAX_HOLD: Duration = Duration::from_secs(300);

/// Moves due timers from the timer stream to the event stream. Run one (or
/// more: they share a durable consumer) per deployment, e.g. in every
/// worker process.
#[derive(Clone)]
pub struct TimerLoop {
    sink: JetStreamSink,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for TimerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerLoop").finish_non_exhaustive()
    }
}

impl TimerLoop {
    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// One pass: takes up to `max` timers (waiting up to `wait` for the
    /// first), publishes the due ones and holds back the rest. Returns how
    /// many fired.
    pub async fn tick(&self, max: usize, wait: Duration) -> Result<usize, SinkError> {
        let batch = self
            .sink
            .timers
            .batch()
            .max_messages(max.max(1))
            .expires(wait)
            .messages()
            .await
            .map_err(|e| sink_error("pulling timers", &e))?;
        let mut batch = batch;
        let mut fired = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| sink_error("pulling timers", &e))?;
            let fire_at = m
                .headers
                .as_ref()
                .and_then(|h| h.get(HEADER_FIRE_AT))
                .and_then(|v| v.as_str().parse::<i64>().ok());
            let now = self.clock.now_ms();
            match fire_at {
                Some(at) if at > now => {
                    let left = Duration::from_millis(u64::try_from(at - now).unwrap_or(0));
                    if let Err(e) = m
                        .ack_with(jetstream::AckKind::Nak(Some(left.min(MAX_HOLD))))
                        .await
                    {
                        warn!(error = %e, "timer nak failed; it comes back after the ack wait");
                    }
                }
                _ => {
                    // Due (or without a time: fire it rather than lose it).
                    let event: Result<Event, _> = trigflow_core::event::decode(&m.payload);
                    match event {
                        Ok(event) => {
                            self.sink.publish(std::slice::from_ref(&event)).await?;
                            fired += 1;
                        }
                        Err(e) => {
                            warn!(error = %e, "undecodable timer; dead-lettering");
                            let letter = DeadLetter {
                                message_id: m
                                    .reply
                                    .as_ref()
                                    .map(ToString::to_string)
                                    .unwrap_or_default(),
                                event_id: None,
                                event_source: None,
                                execution: None,
                                reason: format!("timer is not a structured-mode CloudEvent: {e}"),
                                body: String::from_utf8_lossy(&m.payload).into_owned(),
                                at_ms: now,
                            };
                            self.sink.dead_letter(&[letter]).await?;
                        }
                    }
                    // Acked only once the event is stored: a crash here
                    // fires the timer again, and the event's dedup id
                    // absorbs it.
                    m.double_ack()
                        .await
                        .map_err(|e| sink_error("acking a fired timer", &e))?;
                }
            }
        }
        Ok(fired)
    }

    /// Runs [`TimerLoop::tick`] until `shutdown` completes.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                r = self.tick(256, Duration::from_millis(500)) => {
                    if let Err(e) = r {
                        warn!(error = %e, "timer loop pass failed");
                        tokio::select! {
                            _ = &mut shutdown => return,
                            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        }
                    }
                }
            }
        }
    }
}
