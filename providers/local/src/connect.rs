//! Connecting to NATS and creating (or finding) the streams, consumers and
//! KV bucket of local mode.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use trigflow_core::claim::ClaimCheck;

use crate::names::{
    AGENTS_BUCKET, CALLS_STREAM, CALLS_SUBJECT, DEAD_STREAM, DEAD_SUBJECT, EVENTS_STREAM,
    EVENTS_SUBJECT, STATE_BUCKET, TIMER_CONSUMER, TIMERS_STREAM, TIMERS_SUBJECT, WORKER_CONSUMER,
};
use crate::node::{AgentDirectory, REPORT_MAX_AGE};
use crate::routing::{Routing, Unserved};
use crate::{JetStreamSink, JetStreamSource, KvStore, NatsInvoker};

/// Settings of local mode.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// NATS server URL(s), comma-separated (`nats://127.0.0.1:4222`).
    pub nats_url: String,
    /// How long a delivered event may stay unacknowledged before JetStream
    /// delivers it again (to any worker). Must exceed the time a worker
    /// needs for one batch.
    pub ack_wait: Duration,
    /// How long a call may run on an agent before JetStream hands it to
    /// another agent (agents extend it with progress acks while a function
    /// runs).
    pub call_ack_wait: Duration,
    /// Number of stream replicas (1 on a single server; 3 in a cluster).
    pub replicas: usize,
    /// What the invoker does with a call no live agent serves (see
    /// [`crate::routing`]).
    pub unserved: Unserved,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            ack_wait: Duration::from_secs(30),
            call_ack_wait: Duration::from_secs(30),
            replicas: 1,
            unserved: Unserved::Wait,
        }
    }
}

impl LocalConfig {
    /// The default settings with this NATS URL.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            nats_url: url.into(),
            ..Self::default()
        }
    }
}

/// A failure to connect to or set up local mode.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The NATS server could not be reached.
    #[error("cannot connect to NATS at {url} (setting nats_url / TRIGFLOW_NATS_URL): {message}")]
    Connect {
        /// The URL tried.
        url: String,
        /// What failed.
        message: String,
    },
    /// A stream, consumer or bucket could not be created or read (JetStream
    /// not enabled, or an existing one with an incompatible configuration).
    #[error("cannot set up {what} on NATS at {url}: {message}")]
    Setup {
        /// The stream, consumer or bucket.
        what: String,
        /// The server's URL.
        url: String,
        /// What failed.
        message: String,
    },
}

/// A connection to local mode, handing out the four seams.
#[derive(Clone)]
pub struct Local {
    client: async_nats::Client,
    js: jetstream::Context,
    config: LocalConfig,
    kv: kv::Store,
    agents: kv::Store,
    events: consumer::PullConsumer,
    timers: consumer::PullConsumer,
    claims: Option<ClaimCheck>,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("config", &self.config)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl Local {
    /// Connects and creates whatever is missing: the streams, the shared
    /// worker and timer consumers and the state bucket. Safe to call from
    /// every worker and agent at once: creation is idempotent.
    pub async fn connect(config: LocalConfig) -> Result<Self, LocalError> {
        let url = config.nats_url.clone();
        let client = async_nats::ConnectOptions::new()
            .name("trigflow")
            // Reconnect forever: a restarted nats-server must not end the
            // worker; operations fail retryably meanwhile.
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .connect(url.as_str())
            .await
            .map_err(|e| LocalError::Connect {
                url: url.clone(),
                message: e.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let setup = |what: &str, e: &dyn std::fmt::Display| LocalError::Setup {
            what: what.to_owned(),
            url: url.clone(),
            message: e.to_string(),
        };
        let replicas = config.replicas;
        let work_queue = |name: &str, subject: &str| stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{subject}.>")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let events = js
            .get_or_create_stream(work_queue(EVENTS_STREAM, EVENTS_SUBJECT))
            .await
            .map_err(|e| setup(EVENTS_STREAM, &e))?;
        let timers = js
            .get_or_create_stream(work_queue(TIMERS_STREAM, TIMERS_SUBJECT))
            .await
            .map_err(|e| setup(TIMERS_STREAM, &e))?;
        js.get_or_create_stream(work_queue(CALLS_STREAM, CALLS_SUBJECT))
            .await
            .map_err(|e| setup(CALLS_STREAM, &e))?;
        js.get_or_create_stream(stream::Config {
            name: DEAD_STREAM.to_owned(),
            subjects: vec![format!("{DEAD_SUBJECT}.>")],
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| setup(DEAD_STREAM, &e))?;
        let events = events
            .get_or_create_consumer(
                WORKER_CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(WORKER_CONSUMER.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    // Retryable failures are redelivered until they succeed;
                    // poison goes to the dead-letter stream from the worker.
                    max_deliver: -1,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| setup(WORKER_CONSUMER, &e))?;
        let timers = timers
            .get_or_create_consumer(
                TIMER_CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(TIMER_CONSUMER.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: 100_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| setup(TIMER_CONSUMER, &e))?;
        let kv = match js.get_key_value(STATE_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: STATE_BUCKET.to_owned(),
                    // One value per key: a revision is the stream sequence
                    // of the write, never reused, so old values are noise.
                    history: 1,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| setup(STATE_BUCKET, &e))?,
        };
        let agents = match js.get_key_value(AGENTS_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: AGENTS_BUCKET.to_owned(),
                    history: 1,
                    // Heartbeats are rewritten every few seconds; an entry
                    // not refreshed for this long belongs to a dead agent.
                    max_age: REPORT_MAX_AGE,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| setup(AGENTS_BUCKET, &e))?,
        };
        Ok(Self {
            client,
            js,
            config,
            kv,
            agents,
            events,
            timers,
            claims: None,
        })
    }

    /// Turns the claim check on: the sink offloads event data above its
    /// threshold, the invoker call inputs, and agents resolve references
    /// before calling a function (and publish outputs through the sink).
    /// Every process of a deployment must use the same object store.
    pub fn with_claims(mut self, claims: ClaimCheck) -> Self {
        self.claims = Some(claims);
        self
    }

    /// The claim check, if on.
    pub fn claims(&self) -> Option<&ClaimCheck> {
        self.claims.as_ref()
    }

    /// The underlying NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The settings.
    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// The state store (JetStream KV).
    pub fn store(&self) -> KvStore {
        KvStore::new(self.kv.clone(), self.client.clone())
    }

    /// The event source: the durable consumer every worker shares.
    pub fn source(&self) -> JetStreamSource {
        JetStreamSource::new(self.client.clone(), self.events.clone())
    }

    /// The event sink (events, timers, dead letters).
    pub fn sink(&self) -> JetStreamSink {
        let sink = JetStreamSink::new(self.js.clone(), self.timers.clone());
        match &self.claims {
            Some(c) => sink.with_claims(c.clone()),
            None => sink,
        }
    }

    /// The directory of agent heartbeats (KV bucket `trigflow-agents`).
    pub fn agents(&self) -> AgentDirectory {
        AgentDirectory::new(self.agents.clone())
    }

    /// The invoker: function calls for agents, on [`CALLS_STREAM`].
    pub fn invoker(&self) -> NatsInvoker {
        let mut invoker = NatsInvoker::new(self.js.clone());
        if let Some(c) = &self.claims {
            invoker = invoker.with_claims(c.clone());
        }
        if self.config.unserved == Unserved::Fail {
            invoker = invoker.with_routing(
                Routing::new(self.agents(), self.config.unserved),
                self.sink(),
            );
        }
        invoker
    }
}
