//! Names on the wire: streams, subjects, the KV bucket, and the escaping
//! that makes any execution id, function reference or store key a valid
//! NATS subject token / KV key.
//!
//! | what | stream / bucket | subject |
//! |---|---|---|
//! | events for the workers | `TRIGFLOW_EVENTS` (work queue) | `trigflow.events.<execution>` |
//! | timers not yet due | `TRIGFLOW_TIMERS` (work queue) | `trigflow.timers.<execution>` |
//! | dead letters | `TRIGFLOW_DEAD` (limits) | `trigflow.dead.<execution>` |
//! | function calls for agents | `TRIGFLOW_CALLS` (work queue) | `trigflow.calls.<function>` |
//! | execution state | KV bucket `trigflow-state` | `$KV.trigflow-state.<key>` |
//!
//! `<execution>`, `<function>` and `<key>` are escaped with [`escape`]; an
//! event without an execution goes to `trigflow.events._` (and is
//! dead-lettered by the worker, which cannot route it).

/// Stream of the events the workers consume.
pub const EVENTS_STREAM: &str = "TRIGFLOW_EVENTS";
/// Subject prefix of [`EVENTS_STREAM`].
pub const EVENTS_SUBJECT: &str = "trigflow.events";
/// Durable consumer the workers share.
pub const WORKER_CONSUMER: &str = "trigflow-worker";

/// Stream of scheduled timers.
pub const TIMERS_STREAM: &str = "TRIGFLOW_TIMERS";
/// Subject prefix of [`TIMERS_STREAM`].
pub const TIMERS_SUBJECT: &str = "trigflow.timers";
/// Durable consumer the timer loops share.
pub const TIMER_CONSUMER: &str = "trigflow-timers";

/// Stream of dead letters.
pub const DEAD_STREAM: &str = "TRIGFLOW_DEAD";
/// Subject prefix of [`DEAD_STREAM`].
pub const DEAD_SUBJECT: &str = "trigflow.dead";

/// Stream of function calls served by agents.
pub const CALLS_STREAM: &str = "TRIGFLOW_CALLS";
/// Subject prefix of [`CALLS_STREAM`].
pub const CALLS_SUBJECT: &str = "trigflow.calls";

/// KV bucket of execution states.
pub const STATE_BUCKET: &str = "trigflow-state";

/// KV bucket of agent heartbeats (one key per running agent).
pub const AGENTS_BUCKET: &str = "trigflow-agents";

/// Environment variables of [`crate::LocalSettings`], one per setting; they
/// override the settings file and are overridden by command-line flags.
pub mod env {
    /// NATS server URL(s), comma-separated.
    pub const NATS_URL: &str = "TRIGFLOW_NATS_URL";
    /// This node's name in agent heartbeats.
    pub const NODE: &str = "TRIGFLOW_NODE";
    /// Directory `cmd:` functions run in and relative programs resolve against.
    pub const FUNCTIONS_DIR: &str = "TRIGFLOW_FUNCTIONS_DIR";
    /// Functions an agent serves: `NAME=REF` entries separated by `;` or newlines.
    pub const FUNCTIONS: &str = "TRIGFLOW_FUNCTIONS";
    /// Calls of one function an agent runs at once.
    pub const CONCURRENCY: &str = "TRIGFLOW_CONCURRENCY";
    /// Events a worker takes per batch.
    pub const BATCH_SIZE: &str = "TRIGFLOW_BATCH_SIZE";
    /// How long an event may stay unacknowledged before redelivery.
    pub const ACK_WAIT: &str = "TRIGFLOW_ACK_WAIT";
    /// How long a call may stay unacknowledged before another agent gets it.
    pub const CALL_ACK_WAIT: &str = "TRIGFLOW_CALL_ACK_WAIT";
    /// Interval of agent heartbeats.
    pub const HEARTBEAT: &str = "TRIGFLOW_HEARTBEAT";
    /// How long a `cmd:` or `http(s)://` function may run.
    pub const COMMAND_TIMEOUT: &str = "TRIGFLOW_COMMAND_TIMEOUT";
    /// Stream and bucket replicas (1 on one server, 3 in a cluster).
    pub const REPLICAS: &str = "TRIGFLOW_REPLICAS";
    /// S3 API of the object store (MinIO): turns the claim check on.
    pub const S3_ENDPOINT: &str = "TRIGFLOW_S3_ENDPOINT";
    /// Bucket of the claim check and of data-ready parts.
    pub const S3_BUCKET: &str = "TRIGFLOW_S3_BUCKET";
    /// Payloads above this many bytes travel by reference.
    pub const CLAIM_THRESHOLD: &str = "TRIGFLOW_CLAIM_THRESHOLD";
    /// `wait` or `fail`: a call no live agent serves.
    pub const UNSERVED: &str = "TRIGFLOW_UNSERVED";
    /// Every variable above.
    pub const ALL: &[&str] = &[
        NATS_URL,
        NODE,
        FUNCTIONS_DIR,
        FUNCTIONS,
        CONCURRENCY,
        BATCH_SIZE,
        ACK_WAIT,
        CALL_ACK_WAIT,
        HEARTBEAT,
        COMMAND_TIMEOUT,
        REPLICAS,
        S3_ENDPOINT,
        S3_BUCKET,
        CLAIM_THRESHOLD,
        UNSERVED,
    ];
}

/// Command-line flags of the local-mode commands that deployment files use
/// (`trigflow worker --nats URL`, `trigflow agent --function NAME=REF`...).
pub mod flags {
    /// Selects local mode and sets the NATS URL.
    pub const NATS: &str = "--nats";
    /// A settings file (YAML or JSON).
    pub const CONFIG: &str = "--config";
    /// A function an agent serves, `NAME=REF` (repeatable).
    pub const FUNCTION: &str = "--function";
    /// This node's name.
    pub const NODE: &str = "--node";
    /// Every flag above.
    pub const ALL: &[&str] = &[NATS, CONFIG, FUNCTION, NODE];
}

/// Header carrying a timer's due time (ms since the Unix epoch).
pub const HEADER_FIRE_AT: &str = "Trigflow-Fire-At";
/// Header carrying a dead letter's reason.
pub const HEADER_REASON: &str = "Trigflow-Reason";
/// Header carrying the delivery id a dead letter came in.
pub const HEADER_MESSAGE_ID: &str = "Trigflow-Message-Id";
/// Header carrying an invocation's idempotency key on a call message.
pub const HEADER_CALL_KEY: &str = "Trigflow-Call-Key";

/// Escapes `text` into characters valid in both a NATS subject token and a
/// JetStream KV key: ASCII letters, digits, `-`, `_` and `/` stay; every
/// other byte (including `.`, `*`, `>`, `=` and whitespace) becomes `=XX`
/// (upper-case hex). The mapping is injective, so [`unescape`] inverts it,
/// and the empty string becomes `=` so that no token is empty.
pub fn escape(text: &str) -> String {
    if text.is_empty() {
        return "=".to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'/') {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Inverts [`escape`]; `None` for text that `escape` cannot have produced.
pub fn unescape(token: &str) -> Option<String> {
    if token == "=" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The subject an event for `execution` is published on.
pub fn event_subject(execution: Option<&str>) -> String {
    match execution {
        Some(e) => format!("{EVENTS_SUBJECT}.{}", escape(e)),
        None => format!("{EVENTS_SUBJECT}._"),
    }
}

/// The subject a function's calls are published on. A `nats:NAME`
/// reference is served as `NAME`; any other reference by its full text, so
/// an agent can serve e.g. `stub:10ms` under that name.
pub fn call_subject(function: &str) -> String {
    format!("{CALLS_SUBJECT}.{}", escape(function_name(function)))
}

/// The name an agent serves a function reference under.
pub fn function_name(function: &str) -> &str {
    function.strip_prefix("nats:").unwrap_or(function)
}

/// Durable consumer name of the agents serving `function` (consumer names
/// may not contain `.`, `*`, `>` or whitespace; [`escape`] removes those,
/// and `/` and `=` are turned into `_` and `-` spellings that stay unique).
pub fn agent_consumer(function: &str) -> String {
    let token = escape(function_name(function))
        .replace('_', "__")
        .replace('/', "_s")
        .replace('=', "_e");
    format!("trigflow-agent-{token}")
}

/// `Nats-Msg-Id` of an event: hex of the 128-bit digest of (source, id),
/// so that the server drops a second publish of the same event.
pub fn event_msg_id(source: &str, id: &str) -> String {
    format!("{:032x}", trigflow_core::event::EventKey::new(source, id).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips_and_is_subject_safe() {
        for text in [
            "", "plain", "a.b", "a*b>c d", "exec/1", "=", "=3D", "ünï", ".lead", "trail.",
        ] {
            let token = escape(text);
            assert!(!token.is_empty());
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_/=".contains(&b)),
                "{token:?}"
            );
            assert_eq!(unescape(&token).as_deref(), Some(text), "{text:?}");
        }
        assert_ne!(escape("a.b"), escape("a=2Eb"));
        assert_eq!(unescape("=zz"), None);
    }

    #[test]
    fn consumer_names_are_distinct_and_valid() {
        let a = agent_consumer("nats:a/b");
        let b = agent_consumer("a_sb");
        assert_ne!(a, b);
        assert!(!a.contains(['.', '*', '>', ' ', '/', '=']), "{a}");
        assert_eq!(agent_consumer("nats:x"), agent_consumer("x"));
    }

    #[test]
    fn msg_id_depends_on_source_and_id() {
        assert_eq!(event_msg_id("s", "1"), event_msg_id("s", "1"));
        assert_ne!(event_msg_id("s", "1"), event_msg_id("s1", ""));
        assert_eq!(event_msg_id("s", "1").len(), 32);
    }
}
