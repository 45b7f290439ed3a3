//! Routing calls by the agents' heartbeats.
//!
//! Calls reach nodes by pull: the agents serving a function share one
//! durable consumer, so only a node that has the function and is alive
//! (pulling) ever takes a call, a busy node takes fewer, and a call held by
//! a node that died goes to another after the call ack wait. What pull
//! alone cannot do is notice that *no* live node serves a function: the
//! call waits in the stream. That is right when agents come and go (a node
//! rebooting, a function rolled out later) and wrong when the step should
//! fail so that the workflow's retry or catch can act. [`Unserved`] picks
//! one per worker; [`Routing`] reads the heartbeats to decide.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::node::{AgentDirectory, NodeReport};

/// What the invoker does with a call no live agent serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Unserved {
    /// Enqueue it; it runs when an agent serving it is alive (default).
    #[default]
    Wait,
    /// Fail the step at once with error [`NO_AGENT_ERROR`].
    Fail,
}

impl std::str::FromStr for Unserved {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wait" => Ok(Self::Wait),
            "fail" => Ok(Self::Fail),
            other => Err(format!("expected `wait` or `fail`, got {other:?}")),
        }
    }
}

/// The error name of a step failed because no live agent serves its
/// function.
pub const NO_AGENT_ERROR: &str = "trigflow.NoAgent";

/// How long a read of the heartbeats is reused: a fan-out of thousands of
/// calls reads the bucket once, not once per call.
const CACHE_FOR: Duration = Duration::from_secs(1);

/// Heartbeat-based checks for the invoker.
#[derive(Debug)]
pub struct Routing {
    directory: AgentDirectory,
    policy: Unserved,
    cache: Mutex<Option<(Instant, Vec<NodeReport>)>>,
}

impl Routing {
    /// Routing over the heartbeats in `directory` with `policy`.
    pub fn new(directory: AgentDirectory, policy: Unserved) -> Self {
        Self {
            directory,
            policy,
            cache: Mutex::new(None),
        }
    }

    /// The policy for unserved functions.
    pub fn policy(&self) -> Unserved {
        self.policy
    }

    /// The live agents' reports, at most [`CACHE_FOR`] old; `None` when the
    /// directory cannot be read.
    async fn alive(&self) -> Option<Vec<NodeReport>> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, reports)) = cache.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Some(reports.clone());
        }
        let now_ms = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(i64::MAX);
        match self.directory.alive(now_ms).await {
            Ok(reports) => {
                if let Ok(mut cache) = self.cache.lock() {
                    *cache = Some((Instant::now(), reports.clone()));
                }
                Some(reports)
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent directory unreadable; enqueueing calls");
                None
            }
        }
    }

    /// Why `function` cannot be called now, if no live agent serves it and
    /// the policy says to fail; `None` to enqueue the call. An unreadable
    /// directory never fails a step: the call is enqueued.
    pub async fn refuse(&self, function: &str) -> Option<String> {
        if self.policy == Unserved::Wait {
            return None;
        }
        let alive = self.alive().await?;
        if alive.iter().any(|r| r.serves(function)) {
            return None;
        }
        let nodes: Vec<&str> = alive.iter().map(|r| r.node.as_str()).collect();
        Some(if nodes.is_empty() {
            format!("no live agent serves {function}: no agent is alive")
        } else {
            format!(
                "no live agent serves {function} (live nodes: {})",
                nodes.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses() {
        assert_eq!("wait".parse::<Unserved>(), Ok(Unserved::Wait));
        assert_eq!("fail".parse::<Unserved>(), Ok(Unserved::Fail));
        assert!("drop".parse::<Unserved>().is_err());
    }
}
