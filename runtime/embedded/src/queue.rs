//! [`EmbeddedQueue`]: the in-process event queue, timers and dead letters,
//! durable in the database file.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use cloudevents::{AttributesReader, Event};
use redb::{ReadableDatabase, ReadableTable};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use trigflow_core::cloudevents;
use trigflow_core::seams::{DeadLetter, Delivery, EventSink, EventSource, SinkError, SourceError};
use trigflow_worker::Clock;

use crate::db::{DEAD, EmbeddedError, QUEUE, Shared, TIMERS};

/// Timers moved into the queue per transaction; more due timers are moved
/// by the next round right away.
const TIMER_BATCH: usize = 4096;
/// Longest the timer loop sleeps without looking at the clock again, so a
/// clock that jumps (an adjusted system clock, a test clock) is noticed.
const TIMER_MAX_SLEEP: Duration = Duration::from_secs(1);
/// Pause after a failed timer round before trying again.
const TIMER_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The embedded event queue: an [`EventSource`] and an [`EventSink`] over the
/// `queue`, `timers` and `dead_letters` tables.
///
/// Messages are structured-mode CloudEvents JSON keyed by an increasing
/// sequence number; the delivery id is that number in decimal. A receive is
/// one range scan from a cursor (the lowest number not yet handed out) plus
/// the retried messages that are visible again; nothing is written until the
/// ack, which deletes the rows in one transaction. In-flight tracking lives
/// in memory only: after a restart every row still in the table is delivered
/// again (at-least-once), and the engine drops the duplicates.
#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    shared: Arc<Shared>,
}

fn source_err(e: EmbeddedError) -> SourceError {
    SourceError {
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

fn sink_err(e: EmbeddedError) -> SinkError {
    SinkError {
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

fn parse_ids(ids: &[String]) -> Result<Vec<u64>, SourceError> {
    ids.iter()
        .map(|id| {
            id.parse::<u64>().map_err(|_| SourceError {
                message: format!("{id:?} is not a delivery id of the embedded queue"),
                retryable: false,
            })
        })
        .collect()
}

fn encode(event: &Event) -> Result<Vec<u8>, SinkError> {
    serde_json::to_vec(event).map_err(|e| SinkError {
        message: format!(
            "cannot encode event {} from {}: {e}",
            event.id(),
            event.source()
        ),
        retryable: false,
    })
}

/// Appends `bodies` to the queue table inside `txn`, taking sequence numbers
/// from the shared counter. Must run inside a write transaction so that
/// numbers are taken in commit order (see [`Shared::queue_seq`]).
pub(crate) fn append_to_queue(
    s: &Shared,
    txn: &redb::WriteTransaction,
    bodies: &[Vec<u8>],
    op: &'static str,
) -> Result<(), EmbeddedError> {
    let mut table = txn.open_table(QUEUE).map_err(|e| s.storage(op, e))?;
    for body in bodies {
        let seq = s.queue_seq.fetch_add(1, Ordering::SeqCst);
        table
            .insert(seq, body.as_slice())
            .map_err(|e| s.storage(op, e))?;
    }
    Ok(())
}

impl EmbeddedQueue {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Appends message bodies to the queue as they are, whatever they hold:
    /// for tools that forward messages from elsewhere (`trigflow send
    /// --raw`). Bodies that are not CloudEvents are dead-lettered by the
    /// worker with the reason.
    pub fn publish_raw(&self, bodies: Vec<Vec<u8>>) -> Result<(), EmbeddedError> {
        let s = &self.shared;
        let op = "publish raw";
        let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
        append_to_queue(s, &txn, &bodies, op)?;
        txn.commit().map_err(|e| s.storage(op, e))?;
        s.queue_notify.notify_waiters();
        Ok(())
    }

    /// Every dead letter stored, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, EmbeddedError> {
        crate::db::list_dead_letters(&self.shared)
    }

    /// Hands out up to `max` visible messages, and says when the next
    /// retried message becomes visible.
    fn take(&self, max: usize) -> Result<(Vec<Delivery>, Option<Instant>), EmbeddedError> {
        let s = &self.shared;
        let op = "receive";
        // The lock is held across the read so two receivers cannot hand out
        // the same message; the read is a short in-memory-cached scan.
        let mut st = s.delivery();
        let txn = s.db.begin_read().map_err(|e| s.storage(op, e))?;
        let table = txn.open_table(QUEUE).map_err(|e| s.storage(op, e))?;
        let mut out = Vec::new();
        let now = Instant::now();
        while out.len() < max {
            let Some(&(at, seq)) = st.retry_ready.first() else {
                break;
            };
            if at > now {
                break;
            }
            st.retry_ready.pop_first();
            st.retrying.remove(&seq);
            // Acknowledged meanwhile (the row is gone): nothing to redeliver.
            if let Some(row) = table.get(seq).map_err(|e| s.storage(op, e))? {
                out.push(Delivery {
                    id: seq.to_string(),
                    body: row.value().to_vec(),
                    attempt: st.attempts.get(&seq).copied().unwrap_or(1),
                });
            }
        }
        if out.len() < max {
            for row in table
                .range(st.next_unseen..)
                .map_err(|e| s.storage(op, e))?
            {
                let (k, v) = row.map_err(|e| s.storage(op, e))?;
                let seq = k.value();
                st.next_unseen = seq + 1;
                out.push(Delivery {
                    id: seq.to_string(),
                    body: v.value().to_vec(),
                    attempt: 1,
                });
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok((out, st.retry_ready.first().map(|(at, _)| *at)))
    }

    /// Starts the task that moves due timers into the queue. It reads the
    /// time from `clock`, fires every timer due (including those left from a
    /// previous run of the process), then sleeps until the next one is due or
    /// a new timer is scheduled. It stops after [`crate::EmbeddedDb::shutdown`].
    pub fn spawn_timer_loop(&self, clock: Arc<dyn Clock>) -> JoinHandle<()> {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                if shared.shutdown.is_set() {
                    return;
                }
                // Registered before looking at the table, so a timer
                // scheduled during the round still wakes the loop.
                let notified = shared.timer_notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let now = clock.now_ms();
                let pause = match fire_due(&shared, now).await {
                    Ok(Round { moved, next_due }) => {
                        if moved >= TIMER_BATCH {
                            continue;
                        }
                        next_due.map(|due| {
                            let ms = u64::try_from(due.saturating_sub(now)).unwrap_or(0);
                            Duration::from_millis(ms).min(TIMER_MAX_SLEEP)
                        })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "firing due timers failed; will retry");
                        Some(TIMER_ERROR_PAUSE)
                    }
                };
                match pause {
                    Some(p) => tokio::select! {
                        _ = tokio::time::sleep(p) => {}
                        _ = &mut notified => {}
                        _ = shared.shutdown.wait() => return,
                    },
                    None => tokio::select! {
                        _ = &mut notified => {}
                        _ = shared.shutdown.wait() => return,
                    },
                }
            }
        })
    }
}

struct Round {
    moved: usize,
    next_due: Option<i64>,
}

/// Moves up to [`TIMER_BATCH`] timers due at `now_ms` into the queue, in one
/// transaction, and reports the next due time.
async fn fire_due(shared: &Arc<Shared>, now_ms: i64) -> Result<Round, EmbeddedError> {
    let op = "fire timers";
    let round = shared
        .blocking(op, move |s| {
            let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
            let (due, next_due) = {
                let mut timers = txn.open_table(TIMERS).map_err(|e| s.storage(op, e))?;
                let mut due: Vec<((i64, u64), Vec<u8>)> = Vec::new();
                for row in timers
                    .range(..=(now_ms, u64::MAX))
                    .map_err(|e| s.storage(op, e))?
                {
                    let (k, v) = row.map_err(|e| s.storage(op, e))?;
                    due.push((k.value(), v.value().to_vec()));
                    if due.len() >= TIMER_BATCH {
                        break;
                    }
                }
                for (k, _) in &due {
                    timers.remove(*k).map_err(|e| s.storage(op, e))?;
                }
                let next_due = timers
                    .first()
                    .map_err(|e| s.storage(op, e))?
                    .map(|(k, _)| k.value().0);
                (due, next_due)
            };
            if due.is_empty() {
                txn.abort().map_err(|e| s.storage(op, e))?;
            } else {
                let bodies: Vec<Vec<u8>> = due.into_iter().map(|(_, b)| b).collect();
                append_to_queue(s, &txn, &bodies, op)?;
                txn.commit().map_err(|e| s.storage(op, e))?;
                return Ok(Round {
                    moved: bodies.len(),
                    next_due,
                });
            }
            Ok(Round { moved: 0, next_due })
        })
        .await?;
    if round.moved > 0 {
        shared.queue_notify.notify_waiters();
    }
    Ok(round)
}

#[async_trait]
impl EventSource for EmbeddedQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, SourceError> {
        let deadline = Instant::now() + wait;
        loop {
            // Registered before the scan so a publish in between is not
            // missed.
            let notified = self.shared.queue_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (batch, next_retry) = self.take(max).map_err(source_err)?;
            if !batch.is_empty() || max == 0 {
                return Ok(batch);
            }
            if Instant::now() >= deadline {
                return Ok(batch);
            }
            let until = next_retry.map_or(deadline, |r| r.min(deadline));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn ack(&self, ids: &[String]) -> Result<(), SourceError> {
        let seqs = parse_ids(ids)?;
        if seqs.is_empty() {
            return Ok(());
        }
        let op = "ack";
        let to_delete = seqs.clone();
        self.shared
            .blocking(op, move |s| {
                let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
                {
                    let mut table = txn.open_table(QUEUE).map_err(|e| s.storage(op, e))?;
                    for seq in to_delete {
                        table.remove(seq).map_err(|e| s.storage(op, e))?;
                    }
                }
                txn.commit().map_err(|e| s.storage(op, e))
            })
            .await
            .map_err(source_err)?;
        let mut st = self.shared.delivery();
        for seq in seqs {
            st.attempts.remove(&seq);
            // A pending retry entry for it is skipped when it comes up,
            // since its row is gone.
            st.retrying.remove(&seq);
        }
        Ok(())
    }

    async fn retry(&self, ids: &[String], delay: Duration) -> Result<(), SourceError> {
        let seqs = parse_ids(ids)?;
        let at = Instant::now() + delay;
        {
            let mut st = self.shared.delivery();
            for seq in seqs {
                // Not handed out yet: the scan will deliver it anyway. Already
                // waiting: one redelivery is enough.
                if seq >= st.next_unseen || !st.retrying.insert(seq) {
                    continue;
                }
                st.retry_ready.insert((at, seq));
                *st.attempts.entry(seq).or_insert(1) += 1;
            }
        }
        // Waiting receivers recompute how long to sleep.
        self.shared.queue_notify.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl EventSink for EmbeddedQueue {
    async fn publish(&self, events: &[Event]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let bodies = events.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
        let op = "publish";
        self.shared
            .blocking(op, move |s| {
                let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
                append_to_queue(s, &txn, &bodies, op)?;
                txn.commit().map_err(|e| s.storage(op, e))
            })
            .await
            .map_err(sink_err)?;
        self.shared.queue_notify.notify_waiters();
        Ok(())
    }

    async fn schedule(&self, fire_at_ms: i64, event: &Event) -> Result<(), SinkError> {
        let body = encode(event)?;
        let op = "schedule timer";
        self.shared
            .blocking(op, move |s| {
                let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
                {
                    let mut table = txn.open_table(TIMERS).map_err(|e| s.storage(op, e))?;
                    let seq = s.timer_seq.fetch_add(1, Ordering::SeqCst);
                    table
                        .insert((fire_at_ms, seq), body.as_slice())
                        .map_err(|e| s.storage(op, e))?;
                }
                txn.commit().map_err(|e| s.storage(op, e))
            })
            .await
            .map_err(sink_err)?;
        // notify_one keeps a permit if the loop is busy, so it looks again.
        self.shared.timer_notify.notify_one();
        Ok(())
    }

    async fn dead_letter(&self, letters: &[DeadLetter]) -> Result<(), SinkError> {
        if letters.is_empty() {
            return Ok(());
        }
        let bodies = letters
            .iter()
            .map(|l| {
                serde_json::to_vec(l).map_err(|e| SinkError {
                    message: format!("cannot encode dead letter of message {}: {e}", l.message_id),
                    retryable: false,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let op = "store dead letters";
        self.shared
            .blocking(op, move |s| {
                let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
                {
                    let mut table = txn.open_table(DEAD).map_err(|e| s.storage(op, e))?;
                    for body in &bodies {
                        let seq = s.dead_seq.fetch_add(1, Ordering::SeqCst);
                        table
                            .insert(seq, body.as_slice())
                            .map_err(|e| s.storage(op, e))?;
                    }
                }
                txn.commit().map_err(|e| s.storage(op, e))
            })
            .await
            .map_err(sink_err)
    }
}
