//! Agent heartbeats: what each running agent reports about itself and its
//! node, and the directory that reads the reports back.
//!
//! Every agent puts a [`NodeReport`] into the KV bucket `trigflow-agents`
//! every heartbeat interval, under the key `<node>.<instance>` (both
//! escaped), and deletes it when it stops cleanly. A report is *alive*
//! while it is younger than three intervals, so an agent killed with
//! `kill -9` drops out of [`AgentDirectory::alive`] after three missed
//! heartbeats; the bucket also expires entries ten minutes after their last
//! write so that dead agents do not pile up.
//!
//! CPU and memory come from `/proc/loadavg` and `/proc/meminfo` (Linux);
//! elsewhere those fields are `None`.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::names::{AGENTS_BUCKET, escape, function_name};

/// How long the bucket keeps an entry after its last write.
pub const REPORT_MAX_AGE: Duration = Duration::from_secs(600);

/// How many missed heartbeats make an agent dead.
pub const MISSED_HEARTBEATS: u64 = 3;

/// The CPU and memory of this machine, as far as `/proc` tells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// Logical CPUs this process may use.
    pub cpus: usize,
    /// 1-, 5- and 15-minute load averages.
    pub load: Option<[f64; 3]>,
    /// Total memory in bytes.
    pub mem_total_bytes: Option<u64>,
    /// Memory available to new work in bytes (`MemAvailable`).
    pub mem_available_bytes: Option<u64>,
}

impl NodeStats {
    /// Reads them now.
    pub fn read() -> Self {
        let (total, available) = std::fs::read_to_string("/proc/meminfo")
            .map(|t| parse_meminfo(&t))
            .unwrap_or((None, None));
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            load: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|t| parse_loadavg(&t)),
            mem_total_bytes: total,
            mem_available_bytes: available,
        }
    }
}

/// The three load averages of a `/proc/loadavg` line.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let mut words = rest.split_whitespace();
            let n: u64 = words.next()?.parse().ok()?;
            // The kernel writes `kB` (meaning KiB) for every sized field.
            match words.next() {
                Some("kB") => n.checked_mul(1024),
                None => Some(n),
                Some(_) => None,
            }
        })
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// One agent's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's name (`TRIGFLOW_NODE`).
    pub node: String,
    /// This agent process among the node's agents (`<pid>-<start ms>`).
    pub instance: String,
    /// Function names it serves (as in `nats:NAME`).
    pub functions: Vec<String>,
    /// CPU and memory at `at_ms`.
    #[serde(flatten)]
    pub stats: NodeStats,
    /// When it was written (ms since the Unix epoch).
    pub at_ms: i64,
    /// The agent's heartbeat interval in ms.
    pub interval_ms: u64,
}

impl NodeReport {
    /// The KV key of this report.
    pub fn key(&self) -> String {
        report_key(&self.node, &self.instance)
    }

    /// Alive at `now_ms`: written less than [`MISSED_HEARTBEATS`] intervals ago.
    pub fn is_alive(&self, now_ms: i64) -> bool {
        let window = self.interval_ms.saturating_mul(MISSED_HEARTBEATS);
        let age = now_ms.saturating_sub(self.at_ms);
        u64::try_from(age).map_or(true, |age| age <= window)
    }

    /// Serves `function` (a `nats:NAME` reference or `NAME`).
    pub fn serves(&self, function: &str) -> bool {
        let name = function_name(function);
        self.functions.iter().any(|f| f == name)
    }
}

/// The KV key of an agent's report.
pub fn report_key(node: &str, instance: &str) -> String {
    format!("{}.{}", escape(node), escape(instance))
}

/// A failure to read or write heartbeats.
#[derive(Debug, thiserror::Error)]
#[error("agent directory ({AGENTS_BUCKET}): {message}")]
pub struct DirectoryError {
    /// What failed.
    pub message: String,
}

fn dir_error(what: &str, e: &dyn std::fmt::Display) -> DirectoryError {
    DirectoryError {
        message: format!("{what}: {e}"),
    }
}

/// Reads and writes agent reports in the `trigflow-agents` bucket.
#[derive(Clone)]
pub struct AgentDirectory {
    kv: kv::Store,
}

impl std::fmt::Debug for AgentDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentDirectory").finish_non_exhaustive()
    }
}

impl AgentDirectory {
    /// A directory over the bucket (see [`crate::Local::agents`]).
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// Writes (or refreshes) a report.
    pub async fn put(&self, report: &NodeReport) -> Result<(), DirectoryError> {
        let body = serde_json::to_vec(report).map_err(|e| dir_error("encode", &e))?;
        self.kv
            .put(report.key(), body.into())
            .await
            .map_err(|e| dir_error(&format!("put {}", report.key()), &e))?;
        Ok(())
    }

    /// Removes a report (an agent stopping cleanly).
    pub async fn remove(&self, node: &str, instance: &str) -> Result<(), DirectoryError> {
        let key = report_key(node, instance);
        self.kv
            .delete(&key)
            .await
            .map_err(|e| dir_error(&format!("delete {key}"), &e))
    }

    /// Every report in the bucket, alive or not, sorted by node and instance.
    pub async fn all(&self) -> Result<Vec<NodeReport>, DirectoryError> {
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(k) => k.try_collect().await.map_err(|e| dir_error("keys", &e))?,
            Err(e) => return Err(dir_error("keys", &e)),
        };
        let mut out = Vec::new();
        for key in keys {
            let Some(value) = self
                .kv
                .get(&key)
                .await
                .map_err(|e| dir_error(&format!("get {key}"), &e))?
            else {
                continue;
            };
            match serde_json::from_slice::<NodeReport>(&value) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(key, error = %e, "undecodable agent report"),
            }
        }
        out.sort_by(|a, b| (&a.node, &a.instance).cmp(&(&b.node, &b.instance)));
        Ok(out)
    }

    /// The reports alive at `now_ms`.
    pub async fn alive(&self, now_ms: i64) -> Result<Vec<NodeReport>, DirectoryError> {
        Ok(self
            .all()
            .await?
            .into_iter()
            .filter(|r| r.is_alive(now_ms))
            .collect())
    }

    /// The live agents serving `function`.
    pub async fn serving(
        &self,
        function: &str,
        now_ms: i64,
    ) -> Result<Vec<NodeReport>, DirectoryError> {
        Ok(self
            .alive(now_ms)
            .await?
            .into_iter()
            .filter(|r| r.serves(function))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_parses() {
        assert_eq!(
            parse_loadavg("0.52 1.03 2.00 3/812 12345\n"),
            Some([0.52, 1.03, 2.0])
        );
        assert_eq!(parse_loadavg("garbage"), None);
    }

    #[test]
    fn meminfo_parses_in_bytes() {
        let text = "MemTotal:        8041216 kB\nMemFree:          512000 kB\nMemAvailable:    4020608 kB\n";
        assert_eq!(
            parse_meminfo(text),
            (Some(8_041_216 * 1024), Some(4_020_608 * 1024))
        );
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), (None, None));
    }

    #[test]
    fn this_machine_reports_cpus() {
        let s = NodeStats::read();
        assert!(s.cpus >= 1);
        if cfg!(target_os = "linux") {
            assert!(s.load.is_some());
            assert!(s.mem_total_bytes.unwrap_or(0) >= s.mem_available_bytes.unwrap_or(0));
        }
    }

    #[test]
    fn liveness_is_three_intervals() {
        let r = NodeReport {
            node: "n".into(),
            instance: "1".into(),
            functions: vec!["square".into()],
            stats: NodeStats::read(),
            at_ms: 10_000,
            interval_ms: 1_000,
        };
        assert!(r.is_alive(10_000));
        assert!(r.is_alive(13_000));
        assert!(!r.is_alive(13_001));
        // A clock behind the writer's is not a reason to call it dead.
        assert!(r.is_alive(9_000));
        assert!(r.serves("nats:square"));
        assert!(!r.serves("sum"));
        assert_ne!(report_key("a.b", "c"), report_key("a", "b.c"));
    }
}
