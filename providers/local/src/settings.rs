//! [`LocalSettings`]: the settings of `trigflow worker`, `trigflow agent`
//! and the `--nats` variants of the other commands, from defaults, an
//! optional YAML / JSON file, environment variables and flags, each layer
//! overriding the one before.
//!
//! | file key | environment variable | default |
//! |---|---|---|
//! | `nats_url` | `TRIGFLOW_NATS_URL` | `nats://127.0.0.1:4222` |
//! | `node` | `TRIGFLOW_NODE` | `HOSTNAME`, else `/etc/hostname`, else `node` |
//! | `functions_dir` | `TRIGFLOW_FUNCTIONS_DIR` | the working directory |
//! | `functions` | `TRIGFLOW_FUNCTIONS` | none (`NAME=REF;NAME=REF`, or a map in the file) |
//! | `concurrency` | `TRIGFLOW_CONCURRENCY` | `64` |
//! | `batch_size` | `TRIGFLOW_BATCH_SIZE` | `256` |
//! | `ack_wait` | `TRIGFLOW_ACK_WAIT` | `30s` |
//! | `call_ack_wait` | `TRIGFLOW_CALL_ACK_WAIT` | `30s` |
//! | `heartbeat` | `TRIGFLOW_HEARTBEAT` | `5s` |
//! | `command_timeout` | `TRIGFLOW_COMMAND_TIMEOUT` | `300s` |
//! | `replicas` | `TRIGFLOW_REPLICAS` | `1` |
//! | `s3_endpoint` | `TRIGFLOW_S3_ENDPOINT` | none: no claim check |
//! | `s3_bucket` | `TRIGFLOW_S3_BUCKET` | `trigflow` |
//! | `claim_threshold` | `TRIGFLOW_CLAIM_THRESHOLD` | `200KiB` |
//! | `unserved` | `TRIGFLOW_UNSERVED` | `wait` (or `fail`: see [`crate::routing`]) |
//!
//! Durations are `250ms`, `30s`, `5m`, `1h`, or a bare number of seconds.
//! Sizes are bytes, or a number with `KiB`, `MiB` (also `KB`, `MB`, read
//! as powers of 1024).
//!
//! With `s3_endpoint` set (MinIO, or any S3 API), payloads whose JSON is
//! larger than `claim_threshold` travel by reference (the claim check of
//! `trigflow_core::claim`); the credentials come from the standard
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables.
//! Every error names the setting and where its value came from (file,
//! variable or flag), so the user knows what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::LocalConfig;
use crate::names::env;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The settings file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "the default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A setting that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The settings file could not be read.
    #[error("cannot read settings file {file}: {message}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        message: String,
    },
    /// The settings file is not a YAML / JSON mapping.
    #[error("settings file {file} is not a YAML or JSON mapping of settings: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The settings file has a key that is not a setting.
    #[error("settings file {file}: unknown setting `{key}` (known: {known})")]
    UnknownKey {
        /// The file.
        file: PathBuf,
        /// The key.
        key: String,
        /// The known keys, comma-separated.
        known: String,
    },
    /// A value is malformed.
    #[error("setting `{setting}` from {origin}: {message} (got {value:?})")]
    Invalid {
        /// The setting's file key (e.g. `ack_wait`).
        setting: &'static str,
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        message: String,
    },
}

/// One setting: its file key and environment variable.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// Key in the settings file.
    pub file: &'static str,
    /// Environment variable.
    pub env: &'static str,
}

/// Every setting, in the order of the table above.
pub const KEYS: &[Key] = &[
    Key {
        file: "nats_url",
        env: env::NATS_URL,
    },
    Key {
        file: "node",
        env: env::NODE,
    },
    Key {
        file: "functions_dir",
        env: env::FUNCTIONS_DIR,
    },
    Key {
        file: "functions",
        env: env::FUNCTIONS,
    },
    Key {
        file: "concurrency",
        env: env::CONCURRENCY,
    },
    Key {
        file: "batch_size",
        env: env::BATCH_SIZE,
    },
    Key {
        file: "ack_wait",
        env: env::ACK_WAIT,
    },
    Key {
        file: "call_ack_wait",
        env: env::CALL_ACK_WAIT,
    },
    Key {
        file: "heartbeat",
        env: env::HEARTBEAT,
    },
    Key {
        file: "command_timeout",
        env: env::COMMAND_TIMEOUT,
    },
    Key {
        file: "replicas",
        env: env::REPLICAS,
    },
    Key {
        file: "s3_endpoint",
        env: env::S3_ENDPOINT,
    },
    Key {
        file: "s3_bucket",
        env: env::S3_BUCKET,
    },
    Key {
        file: "claim_threshold",
        env: env::CLAIM_THRESHOLD,
    },
    Key {
        file: "unserved",
        env: env::UNSERVED,
    },
];

/// The settings of a local-mode process.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSettings {
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    /// This node's name (agent heartbeats).
    pub node: String,
    /// Directory `cmd:` functions run in; `None` = the working directory.
    pub functions_dir: Option<PathBuf>,
    /// Functions an agent serves: name -> function reference.
    pub functions: BTreeMap<String, String>,
    /// Calls of one function an agent runs at once.
    pub concurrency: usize,
    /// Events a worker takes per batch.
    pub batch_size: usize,
    /// Redelivery delay of an unacknowledged event.
    pub ack_wait: Duration,
    /// Redelivery delay of an unacknowledged call.
    pub call_ack_wait: Duration,
    /// Agent heartbeat interval.
    pub heartbeat: Duration,
    /// Longest run of a `cmd:` / `http(s)://` function.
    pub command_timeout: Duration,
    /// Stream and bucket replicas.
    pub replicas: usize,
    /// S3 API of the object store; `None` turns the claim check off.
    pub s3_endpoint: Option<String>,
    /// Bucket of the claim check and of data-ready parts.
    pub s3_bucket: String,
    /// Payloads whose JSON is larger than this many bytes travel by
    /// reference.
    pub claim_threshold: usize,
    /// What a worker does with a call no live agent serves.
    pub unserved: crate::routing::Unserved,
    /// Where each non-default setting came from, by file key.
    origins: BTreeMap<&'static str, Origin>,
}

impl Default for LocalSettings {
    fn default() -> Self {
        let config = LocalConfig::default();
        Self {
            nats_url: config.nats_url,
            node: "node".into(),
            functions_dir: None,
            functions: BTreeMap::new(),
            concurrency: 64,
            batch_size: 256,
            ack_wait: config.ack_wait,
            call_ack_wait: config.call_ack_wait,
            heartbeat: Duration::from_secs(5),
            command_timeout: Duration::from_secs(300),
            replicas: config.replicas,
            s3_endpoint: None,
            s3_bucket: DEFAULT_BUCKET.into(),
            claim_threshold: trigflow_core::claim::DEFAULT_THRESHOLD,
            unserved: crate::routing::Unserved::Wait,
            origins: BTreeMap::new(),
        }
    }
}

/// The bucket used when `s3_bucket` is not set.
pub const DEFAULT_BUCKET: &str = "trigflow";

/// Parses a size: bytes, or a number with `KiB` / `KB` / `K` or `MiB` /
/// `MB` / `M` (powers of 1024).
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: usize = num.parse().ok()?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Parses `250ms`, `30s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Parses `NAME=REF` entries separated by `;` or newlines. A bare `REF`
/// (no `=` before the first `:`) is served under its own text.
pub fn parse_functions(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in text
        .split([';', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (name, reference) = split_function(entry)?;
        out.insert(name, reference);
    }
    Ok(out)
}

/// Splits one `NAME=REF` (or bare `REF`) entry.
pub fn split_function(entry: &str) -> Result<(String, String), String> {
    let entry = entry.trim();
    // A name may be spelled `nats:NAME`, as workflows reference it.
    let body = entry.strip_prefix("nats:").unwrap_or(entry);
    // `cmd:env A=1 prog` has an `=` after the scheme's colon: only an `=`
    // before any `:` separates a name.
    let eq = body.find('=');
    let colon = body.find(':');
    match eq {
        Some(i) if colon.is_none_or(|c| i < c) => {
            let (name, reference) = (body[..i].trim(), body[i + 1..].trim());
            if name.is_empty() || reference.is_empty() {
                return Err(format!("{entry:?}: expected NAME=REF"));
            }
            Ok((name.to_owned(), reference.to_owned()))
        }
        _ if entry.is_empty() => Err("empty function entry".into()),
        _ => Ok((entry.to_owned(), entry.to_owned())),
    }
}

fn key_of(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.file == name)
}

impl LocalSettings {
    /// Loads the settings: defaults, then `file` (if any), then the
    /// `TRIGFLOW_*` variables of `env`. `env` is passed in (not read from
    /// the process) so that tests inject it; [`LocalSettings::from_process`]
    /// reads the real environment.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let mut s = Self {
            node: default_node(env),
            ..Self::default()
        };
        if let Some(path) = file {
            s.apply_file(path)?;
        }
        for key in KEYS {
            if let Some(value) = env.get(key.env) {
                s.apply(key.file, value, Origin::Env(key.env))?;
            }
        }
        Ok(s)
    }

    /// [`LocalSettings::load`] with the process's environment.
    pub fn from_process(file: Option<&Path>) -> Result<Self, SettingsError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("TRIGFLOW_") || k == "HOSTNAME")
            .collect();
        Self::load(file, &env)
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Read {
            file: path.to_owned(),
            message: e.to_string(),
        })?;
        let parse = |message: String| SettingsError::Parse {
            file: path.to_owned(),
            message,
        };
        // YAML is a superset of JSON, so one parser reads both.
        let doc: serde_norway::Value =
            serde_norway::from_str(&text).map_err(|e| parse(e.to_string()))?;
        let map = match doc {
            serde_norway::Value::Mapping(m) => m,
            serde_norway::Value::Null => return Ok(()),
            _ => return Err(parse("the top level is not a mapping".into())),
        };
        let origin = Origin::File(path.to_owned());
        for (k, v) in map {
            let Some(name) = k.as_str() else {
                return Err(parse(format!("key {k:?} is not a string")));
            };
            let Some(key) = key_of(name) else {
                return Err(SettingsError::UnknownKey {
                    file: path.to_owned(),
                    key: name.to_owned(),
                    known: KEYS.iter().map(|k| k.file).collect::<Vec<_>>().join(", "),
                });
            };
            let invalid = |message: &str, value: String| SettingsError::Invalid {
                setting: key.file,
                origin: origin.clone(),
                value,
                message: message.to_owned(),
            };
            let text = match v {
                serde_norway::Value::String(s) => s,
                serde_norway::Value::Number(n) => n.to_string(),
                serde_norway::Value::Bool(b) => b.to_string(),
                serde_norway::Value::Mapping(m) if key.file == "functions" => {
                    // A mapping needs no splitting, so its references may
                    // contain `;` and `=`.
                    let mut functions = BTreeMap::new();
                    for (name, reference) in m {
                        match (name.as_str(), reference.as_str()) {
                            (Some(n), Some(r)) if !n.trim().is_empty() && !r.trim().is_empty() => {
                                functions.insert(
                                    crate::names::function_name(n.trim()).to_owned(),
                                    r.trim().to_owned(),
                                );
                            }
                            _ => {
                                return Err(invalid(
                                    "expected a mapping of function name to reference (strings)",
                                    format!("{name:?}: {reference:?}"),
                                ));
                            }
                        }
                    }
                    self.functions = functions;
                    self.origins.insert(key.file, origin.clone());
                    continue;
                }
                other => {
                    return Err(invalid(
                        "expected a string or a number",
                        format!("{other:?}"),
                    ));
                }
            };
            self.apply(key.file, &text, origin.clone())?;
        }
        Ok(())
    }

    /// Sets the setting with file key `key` from `value` (as text), e.g. a
    /// flag: `settings.apply("nats_url", url, Origin::Flag("--nats".into()))`.
    pub fn apply(&mut self, key: &str, value: &str, origin: Origin) -> Result<(), SettingsError> {
        let Some(k) = key_of(key) else {
            return Err(SettingsError::Invalid {
                setting: "?",
                origin,
                value: key.to_owned(),
                message: "not a setting".into(),
            });
        };
        let invalid = |message: String| SettingsError::Invalid {
            setting: k.file,
            origin: origin.clone(),
            value: value.to_owned(),
            message,
        };
        let duration = || {
            parse_duration(value)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid("expected a duration such as 500ms, 30s, 5m or 1h".into()))
        };
        let count = || {
            value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid("expected a whole number above 0".into()))
        };
        match k.file {
            "nats_url" => {
                let url = value.trim();
                if url.is_empty() || url.split(',').any(|u| u.trim().is_empty()) {
                    return Err(invalid("expected nats://HOST:PORT[,nats://...]".into()));
                }
                self.nats_url = url.to_owned();
            }
            "node" => {
                let node = value.trim();
                if node.is_empty() {
                    return Err(invalid("expected a node name".into()));
                }
                self.node = node.to_owned();
            }
            "functions_dir" => {
                self.functions_dir = Some(PathBuf::from(value));
            }
            "functions" => {
                self.functions = parse_functions(value).map_err(invalid)?;
            }
            "concurrency" => self.concurrency = count()?,
            "batch_size" => self.batch_size = count()?,
            "unserved" => self.unserved = value.parse().map_err(invalid)?,
            "replicas" => self.replicas = count()?,
            "ack_wait" => self.ack_wait = duration()?,
            "call_ack_wait" => self.call_ack_wait = duration()?,
            "heartbeat" => self.heartbeat = duration()?,
            "command_timeout" => self.command_timeout = duration()?,
            "s3_endpoint" => {
                let url = value.trim().trim_end_matches('/');
                let host = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                if host.is_none_or(|h| h.is_empty() || h.contains('/')) {
                    return Err(invalid(
                        "expected http://HOST:PORT or https://HOST:PORT".into(),
                    ));
                }
                self.s3_endpoint = Some(url.to_owned());
            }
            "s3_bucket" => {
                // S3's rules: 3-63 lower-case letters, digits, `-` and `.`.
                let b = value.trim();
                let ok = (3..=63).contains(&b.len())
                    && b.bytes().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || b"-.".contains(&c)
                    });
                if !ok {
                    return Err(invalid(
                        "expected a bucket name of 3-63 lower-case letters, digits, `-` or `.`"
                            .into(),
                    ));
                }
                self.s3_bucket = b.to_owned();
            }
            "claim_threshold" => {
                self.claim_threshold = parse_size(value).filter(|n| *n > 0).ok_or_else(|| {
                    invalid("expected a size above 0 such as 204800, 200KiB or 1MiB".into())
                })?;
            }
            _ => {}
        }
        self.origins.insert(k.file, origin);
        Ok(())
    }

    /// Where the setting with file key `key` came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// The object store settings, if `s3_endpoint` is set; credentials and
    /// region from the standard AWS variables in `env`.
    pub fn s3_settings(
        &self,
        env: &BTreeMap<String, String>,
    ) -> Option<trigflow_objstore::S3Settings> {
        let endpoint = self.s3_endpoint.as_ref()?;
        Some(
            trigflow_objstore::S3Settings::new(endpoint.clone(), self.s3_bucket.clone())
                .with_env(env),
        )
    }

    /// The claim check, if `s3_endpoint` is set: connects to the object
    /// store with the process's AWS variables and creates the bucket if it
    /// is missing. Errors name the endpoint and bucket.
    pub async fn claim_check(
        &self,
    ) -> Result<Option<trigflow_core::claim::ClaimCheck>, trigflow_objstore::ObjStoreError> {
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .collect();
        let Some(s3) = self.s3_settings(&env) else {
            return Ok(None);
        };
        let blobs = trigflow_objstore::S3Blobs::new(s3)?;
        blobs.ensure_bucket().await?;
        Ok(Some(trigflow_core::claim::ClaimCheck::new(
            std::sync::Arc::new(blobs),
            self.claim_threshold,
        )))
    }

    /// The connection settings for [`crate::Local::connect`].
    pub fn local_config(&self) -> LocalConfig {
        LocalConfig {
            nats_url: self.nats_url.clone(),
            ack_wait: self.ack_wait,
            call_ack_wait: self.call_ack_wait,
            replicas: self.replicas,
            unserved: self.unserved,
        }
    }
}

/// `HOSTNAME` from `env`, else `/etc/hostname`, else `node`.
fn default_node(env: &BTreeMap<String, String>) -> String {
    env.get("HOSTNAME")
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "node".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_without_file_or_env() {
        let s = LocalSettings::load(None, &env(&[("HOSTNAME", "box-1")])).expect("load");
        assert_eq!(s.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(s.node, "box-1");
        assert_eq!(s.ack_wait, Duration::from_secs(30));
        assert_eq!(s.origin("nats_url"), Origin::Default);
    }

    #[test]
    fn env_overrides_the_file_and_flags_override_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("trigflow.yaml");
        std::fs::write(
            &file,
            "nats_url: nats://from-file:4222\nnode: file-node\nack_wait: 10s\nconcurrency: 8\n\
             functions:\n  square: cmd:sh square.sh\n  'nats:sum': builtin:sum\n",
        )
        .expect("write");
        let mut s = LocalSettings::load(
            Some(&file),
            &env(&[
                ("TRIGFLOW_NATS_URL", "nats://from-env:4222"),
                ("TRIGFLOW_CALL_ACK_WAIT", "1500ms"),
            ]),
        )
        .expect("load");
        assert_eq!(s.nats_url, "nats://from-env:4222");
        assert_eq!(s.origin("nats_url"), Origin::Env("TRIGFLOW_NATS_URL"));
        assert_eq!(s.node, "file-node");
        assert_eq!(s.origin("node"), Origin::File(file.clone()));
        assert_eq!(s.ack_wait, Duration::from_secs(10));
        assert_eq!(s.call_ack_wait, Duration::from_millis(1500));
        assert_eq!(s.concurrency, 8);
        assert_eq!(s.functions["square"], "cmd:sh square.sh");
        assert_eq!(s.functions["sum"], "builtin:sum");
        s.apply("nats_url", "nats://flag:1", Origin::Flag("--nats".into()))
            .expect("flag");
        assert_eq!(s.local_config().nats_url, "nats://flag:1");
        assert_eq!(s.local_config().ack_wait, Duration::from_secs(10));
    }

    #[test]
    fn a_json_file_is_read_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("trigflow.json");
        std::fs::write(&file, r#"{"nats_url": "nats://j:1", "heartbeat": 2}"#).expect("write");
        let s = LocalSettings::load(Some(&file), &env(&[])).expect("load");
        assert_eq!(s.nats_url, "nats://j:1");
        assert_eq!(s.heartbeat, Duration::from_secs(2));
    }

    #[test]
    fn a_bad_env_value_names_the_setting_and_the_variable() {
        let err = LocalSettings::load(None, &env(&[("TRIGFLOW_ACK_WAIT", "soon")]))
            .expect_err("bad duration");
        match err {
            SettingsError::Invalid {
                setting,
                origin,
                value,
                ..
            } => {
                assert_eq!(setting, "ack_wait");
                assert_eq!(origin, Origin::Env("TRIGFLOW_ACK_WAIT"));
                assert_eq!(value, "soon");
            }
            other => panic!("unexpected {other:?}"),
        }
        let err =
            LocalSettings::load(None, &env(&[("TRIGFLOW_CONCURRENCY", "0")])).expect_err("zero");
        assert!(matches!(
            err,
            SettingsError::Invalid {
                setting: "concurrency",
                ..
            }
        ));
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.yaml");
        let err = LocalSettings::load(Some(&missing), &env(&[])).expect_err("missing");
        assert!(matches!(err, SettingsError::Read { ref file, .. } if *file == missing));

        let unknown = dir.path().join("unknown.yaml");
        std::fs::write(&unknown, "nats: nats://x:1\n").expect("write");
        let err = LocalSettings::load(Some(&unknown), &env(&[])).expect_err("unknown key");
        assert!(
            matches!(err, SettingsError::UnknownKey { ref file, ref key, .. } if *file == unknown && key == "nats")
        );

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "- a\n- b\n").expect("write");
        let err = LocalSettings::load(Some(&bad), &env(&[])).expect_err("not a mapping");
        assert!(matches!(err, SettingsError::Parse { ref file, .. } if *file == bad));

        let wrong = dir.path().join("wrong.yaml");
        std::fs::write(&wrong, "batch_size: many\n").expect("write");
        let err = LocalSettings::load(Some(&wrong), &env(&[])).expect_err("bad value");
        assert!(matches!(
            err,
            SettingsError::Invalid { setting: "batch_size", origin: Origin::File(ref f), .. } if *f == wrong
        ));
    }

    #[test]
    fn function_entries_parse() {
        let f = parse_functions("square=cmd:sh square.sh; nats:sum=builtin:sum\nstub:5ms")
            .expect("parse");
        assert_eq!(f["square"], "cmd:sh square.sh");
        assert_eq!(f["sum"], "builtin:sum");
        assert_eq!(f["stub:5ms"], "stub:5ms");
        // An `=` inside a command is not a name separator.
        let f = parse_functions("cmd:env A=1 prog").expect("parse");
        assert_eq!(f["cmd:env A=1 prog"], "cmd:env A=1 prog");
        assert!(parse_functions("=cmd:x").is_err());
    }

    #[test]
    fn object_store_settings_load_and_bad_ones_name_the_setting() {
        let s = LocalSettings::load(None, &env(&[])).expect("load");
        assert_eq!(s.s3_endpoint, None);
        assert_eq!(s.claim_threshold, 200 * 1024);
        assert!(s.s3_settings(&env(&[])).is_none());

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("trigflow.yaml");
        std::fs::write(
            &file,
            "s3_endpoint: http://minio:9000/\ns3_bucket: data-1\nclaim_threshold: 64KiB\n",
        )
        .expect("write");
        let s = LocalSettings::load(Some(&file), &env(&[("TRIGFLOW_CLAIM_THRESHOLD", "1000")]))
            .expect("load");
        assert_eq!(s.s3_endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(s.s3_bucket, "data-1");
        assert_eq!(s.claim_threshold, 1000);
        assert_eq!(
            s.origin("claim_threshold"),
            Origin::Env("TRIGFLOW_CLAIM_THRESHOLD")
        );
        let s3 = s
            .s3_settings(&env(&[
                ("AWS_ACCESS_KEY_ID", "k"),
                ("AWS_SECRET_ACCESS_KEY", "x"),
            ]))
            .expect("configured");
        assert_eq!(s3.endpoint, "http://minio:9000");
        assert_eq!(s3.bucket, "data-1");
        assert_eq!(s3.access_key_id.as_deref(), Some("k"));

        for (var, value, setting) in [
            ("TRIGFLOW_S3_ENDPOINT", "minio:9000", "s3_endpoint"),
            ("TRIGFLOW_S3_BUCKET", "Big_Bucket", "s3_bucket"),
            ("TRIGFLOW_CLAIM_THRESHOLD", "lots", "claim_threshold"),
            ("TRIGFLOW_CLAIM_THRESHOLD", "0", "claim_threshold"),
        ] {
            let err = LocalSettings::load(None, &env(&[(var, value)])).expect_err(value);
            assert!(
                matches!(err, SettingsError::Invalid { setting: s, origin: Origin::Env(v), .. } if s == setting && v == var),
                "{var}={value}"
            );
        }
        assert_eq!(parse_size("2MiB"), Some(2 * 1024 * 1024));
        assert_eq!(parse_size("3 kb"), Some(3072));
        assert_eq!(parse_size("1.5MiB"), None);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
