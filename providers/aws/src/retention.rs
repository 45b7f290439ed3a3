//! How long a finished execution's items stay in DynamoDB.
//!
//! The table's TTL attribute ([`TTL_ATTRIBUTE`], declared in
//! `infra/aws/template.yaml`) holds epoch seconds; DynamoDB deletes an item
//! some time after that moment, at no cost. [`Retention`] decides, for each
//! value [`crate::DynamoStore`] writes, whether it carries one: an execution
//! state (key under the worker's execution prefix) whose status is terminal
//! (succeeded or failed) gets `now + retention`, and so do the items that
//! belong to it (its chunks and its seen-set segments). Running executions
//! carry none, so they never expire however long they wait.
//!
//! The first terminal write sets the attribute; later writes (an outbox
//! clear after the last step) keep it (`if_not_exists`), so the retention
//! runs from the moment the execution finished.

use std::time::Duration;

use serde::Deserialize;

/// The TTL attribute name (the table's `TimeToLiveSpecification`).
pub const TTL_ATTRIBUTE: &str = "ttl";
/// The environment variable that sets the retention, in days.
pub const RETENTION_DAYS_VAR: &str = "TRIGFLOW_RETENTION_DAYS";
/// Retention when none is configured.
pub const DEFAULT_RETENTION_DAYS: u64 = 30;

/// A retention setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    /// The value is not a whole number of days.
    #[error("{var}={value:?}: expected a whole number of days (1 or more)")]
    NotDays {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
}

/// Which written values expire, and when.
#[derive(Debug, Clone)]
pub struct Retention {
    /// How long a finished execution is kept.
    pub keep: Duration,
    /// Store key prefix of execution states (the worker's `key_prefix`).
    pub exec_prefix: String,
    /// Store key prefix of seen-set segments (the worker's `seen_prefix`).
    pub seen_prefix: String,
    clock_ms: fn() -> i64,
}

/// What one write must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Epoch seconds for [`TTL_ATTRIBUTE`].
    pub at_s: i64,
    /// Other items of the same execution that must carry it too (its
    /// seen-set segments).
    pub related: Vec<String>,
}

fn system_now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The part of a stored execution state this module reads; serde skips
/// the rest without building it.
#[derive(Deserialize)]
struct StateHead {
    execution: String,
    status: String,
    #[serde(default)]
    seen_segments: Vec<String>,
}

impl Default for Retention {
    fn default() -> Self {
        Self::days(DEFAULT_RETENTION_DAYS)
    }
}

impl Retention {
    /// Keep finished executions `days` days, with the worker's default key
    /// prefixes.
    pub fn days(days: u64) -> Self {
        let defaults = trigflow_worker::WorkerConfig::default();
        Self {
            keep: Duration::from_secs(days.saturating_mul(86_400)),
            exec_prefix: defaults.key_prefix,
            seen_prefix: defaults.seen_prefix,
            clock_ms: system_now_ms,
        }
    }

    /// From the value of [`RETENTION_DAYS_VAR`] (`None`: unset, the
    /// default of [`DEFAULT_RETENTION_DAYS`]).
    pub fn from_days_var(value: Option<&str>) -> Result<Self, RetentionError> {
        match value.map(str::trim) {
            None | Some("") => Ok(Self::default()),
            Some(v) => match v.parse::<u64>() {
                Ok(days) if days > 0 => Ok(Self::days(days)),
                _ => Err(RetentionError::NotDays {
                    var: RETENTION_DAYS_VAR,
                    value: v.to_owned(),
                }),
            },
        }
    }

    /// Uses the key prefixes of a worker configured with `config`.
    pub fn for_worker(mut self, config: &trigflow_worker::WorkerConfig) -> Self {
        self.exec_prefix = config.key_prefix.clone();
        self.seen_prefix = config.seen_prefix.clone();
        self
    }

    /// Replaces the clock (ms since the epoch; tests).
    pub fn with_clock(mut self, clock_ms: fn() -> i64) -> Self {
        self.clock_ms = clock_ms;
        self
    }

    /// The expiry a write of `value` under `key` must carry, if any.
    pub fn expiry(&self, key: &str, value: &[u8]) -> Option<Expiry> {
        key.strip_prefix(&self.exec_prefix)?;
        // Not an execution state (or not one this version can read): keep
        // it. Never expiring is the safe mistake.
        let head: StateHead = serde_json::from_slice(value).ok()?;
        if head.status == "running" {
            return None;
        }
        let at_s = (self.clock_ms)().div_euclid(1000)
            + i64::try_from(self.keep.as_secs()).unwrap_or(i64::MAX / 2);
        let related = head
            .seen_segments
            .iter()
            .map(|id| format!("{}{}/{id}", self.seen_prefix, head.execution))
            .collect();
        Some(Expiry { at_s, related })
    }
}
