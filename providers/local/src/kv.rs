//! [`KvStore`]: the state store on a JetStream KV bucket.
//!
//! A version is the KV revision (the stream sequence of the write) in
//! decimal. Conditional writes publish to the bucket's stream with
//! `Nats-Expected-Last-Subject-Sequence`, which the server checks
//! atomically with the append:
//!
//! | precondition | expected last sequence on the key's subject |
//! |---|---|
//! | `None` | not checked |
//! | `DoesNotExist` | 0 (no message), or the revision of a delete tombstone |
//! | `MatchesVersion(v)` | `v` |
//!
//! A delete leaves a tombstone (a message with `KV-Operation: DEL`); `get`
//! and `list` treat it as absent, and `DoesNotExist` writes over it by
//! expecting its revision. Stream sequences are never reused, so a key
//! deleted and written again never repeats an old version.

use async_nats::HeaderMap;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{self, Operation};
use async_trait::async_trait;
use futures::TryStreamExt;
use trigflow_core::seams::{Precondition, StateStore, StoreError, Stored, Version};

use crate::names::{escape, unescape};

const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
const KV_OPERATION: &str = "KV-Operation";

/// Execution state in a JetStream KV bucket, with compare-and-set on the
/// revision. Keys are escaped with [`crate::names::escape`], so any
/// string is a valid key.
#[derive(Clone)]
pub struct KvStore {
    kv: kv::Store,
    client: async_nats::Client,
    /// `$KV.<bucket>.`: the subject prefix writes are published on.
    put_prefix: String,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("put_prefix", &self.put_prefix)
            .finish_non_exhaustive()
    }
}

/// The state of a key as the bucket holds it.
enum Current {
    Absent,
    /// Deleted: the tombstone's revision.
    Tombstone(u64),
    Present(Stored),
}

impl KvStore {
    /// A store over `kv` (a bucket created with history 1).
    pub fn new(kv: kv::Store, client: async_nats::Client) -> Self {
        let put_prefix = format!("$KV.{}.", kv.name);
        Self {
            kv,
            client,
            put_prefix,
        }
    }

    async fn current(&self, key: &str) -> Result<Current, StoreError> {
        let entry = self
            .kv
            .entry(escape(key))
            .await
            .map_err(|e| backend(key, "read", &e, true))?;
        Ok(match entry {
            None => Current::Absent,
            Some(e) => match e.operation {
                Operation::Put => Current::Present(Stored {
                    value: e.value.to_vec(),
                    version: Version(e.revision.to_string()),
                }),
                Operation::Delete | Operation::Purge => Current::Tombstone(e.revision),
            },
        })
    }

    /// Appends to the key's subject, expecting `expect` as its last sequence
    /// when given. Returns the new revision.
    async fn append(
        &self,
        key: &str,
        value: Vec<u8>,
        expect: Option<u64>,
        delete: bool,
    ) -> Result<u64, StoreError> {
        let mut headers = HeaderMap::new();
        if let Some(rev) = expect {
            headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, rev.to_string().as_str());
        }
        if delete {
            headers.insert(KV_OPERATION, "DEL");
        }
        let size = value.len();
        let subject = format!("{}{}", self.put_prefix, escape(key));
        let js = async_nats::jetstream::new(self.client.clone());
        let ack = js
            .publish_with_headers(subject, headers, value.into())
            .await
            .map_err(|e| self.publish_error(key, size, e))?
            .await
            .map_err(|e| self.publish_error(key, size, e))?;
        Ok(ack.sequence)
    }

    fn publish_error(&self, key: &str, size: usize, e: PublishError) -> StoreError {
        match e.kind() {
            PublishErrorKind::WrongLastSequence => StoreError::PreconditionFailed {
                key: key.to_owned(),
            },
            PublishErrorKind::MaxPayloadExceeded => StoreError::TooLarge {
                key: key.to_owned(),
                size,
                limit: self.client.server_info().max_payload,
            },
            // Timeouts, a broken connection and a missing stream (a server
            // restarting) can all pass.
            _ => backend(key, "write", &e, true),
        }
    }
}

fn backend(key: &str, op: &str, e: &dyn std::fmt::Display, retryable: bool) -> StoreError {
    StoreError::Backend {
        key: key.to_owned(),
        message: format!("JetStream KV {op} failed: {e}"),
        retryable,
    }
}

/// A version this store never produced cannot match any key.
fn revision(key: &str, v: &Version) -> Result<u64, StoreError> {
    v.0.parse::<u64>()
        .ok()
        .filter(|r| *r > 0)
        .ok_or_else(|| StoreError::PreconditionFailed {
            key: key.to_owned(),
        })
}

#[async_trait]
impl StateStore for KvStore {
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        Ok(match self.current(key).await? {
            Current::Present(s) => Some(s),
            Current::Absent | Current::Tombstone(_) => None,
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        let rev = match pre {
            Precondition::None => self.append(key, value, None, false).await?,
            Precondition::MatchesVersion(v) => {
                let expect = revision(key, &v)?;
                self.append(key, value, Some(expect), false).await?
            }
            Precondition::DoesNotExist => {
                // The common case first: a key that never existed.
                match self.append(key, value.clone(), Some(0), false).await {
                    Ok(rev) => rev,
                    Err(StoreError::PreconditionFailed { .. }) => match self.current(key).await? {
                        // Deleted: writing over exactly this tombstone keeps
                        // the check atomic (a racing create moves the last
                        // sequence and this write fails).
                        Current::Tombstone(t) => self.append(key, value, Some(t), false).await?,
                        Current::Present(_) => {
                            return Err(StoreError::PreconditionFailed {
                                key: key.to_owned(),
                            });
                        }
                        // Written and then purged away between the two
                        // reads: someone else is racing; let the caller
                        // retry from a fresh read.
                        Current::Absent => {
                            return Err(StoreError::PreconditionFailed {
                                key: key.to_owned(),
                            });
                        }
                    },
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Version(rev.to_string()))
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<(), StoreError> {
        match pre {
            Precondition::None => match self.current(key).await? {
                // Nothing to delete: no tombstone needed.
                Current::Absent | Current::Tombstone(_) => Ok(()),
                Current::Present(_) => self.append(key, Vec::new(), None, true).await.map(drop),
            },
            // Deleting "if absent" changes nothing when it succeeds.
            Precondition::DoesNotExist => match self.current(key).await? {
                Current::Absent | Current::Tombstone(_) => Ok(()),
                Current::Present(_) => Err(StoreError::PreconditionFailed {
                    key: key.to_owned(),
                }),
            },
            Precondition::MatchesVersion(v) => {
                let expect = revision(key, &v)?;
                // A tombstone has a revision too, but `get` never hands it
                // out; refuse it explicitly so a deleted key cannot match.
                if let Current::Tombstone(t) = self.current(key).await?
                    && t == expect
                {
                    return Err(StoreError::PreconditionFailed {
                        key: key.to_owned(),
                    });
                }
                self.append(key, Vec::new(), Some(expect), true)
                    .await
                    .map(drop)
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let keys = self
            .kv
            .keys()
            .await
            .map_err(|e| backend(prefix, "list", &e, true))?;
        let mut out: Vec<String> = keys
            .try_filter_map(|k| async move { Ok(unescape(&k).filter(|k| k.starts_with(prefix))) })
            .try_collect()
            .await
            .map_err(|e| backend(prefix, "list", &e, true))?;
        out.sort();
        Ok(out)
    }
}
