//! [`EmbeddedStore`]: the state store over the `state` table.

use std::sync::Arc;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};
use trigflow_core::seams::{Precondition, StateStore, StoreError, Stored, Version};

use crate::db::{EmbeddedError, META, META_STATE_VERSION, STATE, Shared};

/// A [`StateStore`] in the embedded database. Each conditional write checks
/// its precondition and writes inside one write transaction; redb runs write
/// transactions one at a time, so the check and the write are atomic.
///
/// Versions come from one counter kept in the database, so they increase
/// across keys and restarts and a deleted-then-recreated key never gets a
/// version it had before.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

impl EmbeddedStore {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn holds(current: Option<u64>, pre: &Precondition) -> bool {
    match (pre, current) {
        (Precondition::None, _) => true,
        (Precondition::DoesNotExist, c) => c.is_none(),
        (Precondition::MatchesVersion(_), None) => false,
        // A version that is not a number was not made by this store.
        (Precondition::MatchesVersion(v), Some(c)) => v.0.parse::<u64>().ok() == Some(c),
    }
}

fn backend(key: &str, e: EmbeddedError) -> StoreError {
    StoreError::Backend {
        key: key.to_owned(),
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

/// Outcome of a conditional operation inside the transaction.
enum Cond<T> {
    Done(T),
    PreconditionFailed,
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        // Reads are short and need no fsync, so they run inline.
        let s = &self.shared;
        let op = "read state";
        let read = || -> Result<Option<Stored>, EmbeddedError> {
            let txn = s.db.begin_read().map_err(|e| s.storage(op, e))?;
            let table = txn.open_table(STATE).map_err(|e| s.storage(op, e))?;
            let row = table.get(key).map_err(|e| s.storage(op, e))?;
            Ok(row.map(|g| {
                let (version, bytes) = g.value();
                Stored {
                    value: bytes.to_vec(),
                    version: Version(version.to_string()),
                }
            }))
        };
        read().map_err(|e| backend(key, e))
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        let k = key.to_owned();
        let r = self
            .shared
            .blocking("write state", move |s| {
                let op = "write state";
                let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
                let outcome = {
                    let mut table = txn.open_table(STATE).map_err(|e| s.storage(op, e))?;
                    let current = table
                        .get(k.as_str())
                        .map_err(|e| s.storage(op, e))?
                        .map(|g| g.value().0);
                    if holds(current, &pre) {
                        let mut meta = txn.open_table(META).map_err(|e| s.storage(op, e))?;
                        let last = meta
                            .get(META_STATE_VERSION)
                            .map_err(|e| s.storage(op, e))?
                            .map_or(0, |g| g.value());
                        let version = last + 1;
                        meta.insert(META_STATE_VERSION, version)
                            .map_err(|e| s.storage(op, e))?;
                        table
                            .insert(k.as_str(), (version, value.as_slice()))
                            .map_err(|e| s.storage(op, e))?;
                        Cond::Done(version)
                    } else {
                        Cond::PreconditionFailed
                    }
                };
                match outcome {
                    Cond::Done(v) => {
                        txn.commit().map_err(|e| s.storage(op, e))?;
                        Ok(Cond::Done(v))
                    }
                    Cond::PreconditionFailed => {
                        txn.abort().map_err(|e| s.storage(op, e))?;
                        Ok(Cond::PreconditionFailed)
                    }
                }
            })
            .await
            .map_err(|e| backend(key, e))?;
        match r {
            Cond::Done(v) => Ok(Version(v.to_string())),
            Cond::PreconditionFailed => Err(StoreError::PreconditionFailed {
                key: key.to_owned(),
            }),
        }
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<(), StoreError> {
        let k = key.to_owned();
        let r = self
            .shared
            .blocking("delete state", move |s| {
                let op = "delete state";
                let txn = s.db.begin_write().map_err(|e| s.storage(op, e))?;
                let outcome = {
                    let mut table = txn.open_table(STATE).map_err(|e| s.storage(op, e))?;
                    let current = table
                        .get(k.as_str())
                        .map_err(|e| s.storage(op, e))?
                        .map(|g| g.value().0);
                    if !holds(current, &pre) {
                        Cond::PreconditionFailed
                    } else if current.is_some() {
                        table.remove(k.as_str()).map_err(|e| s.storage(op, e))?;
                        Cond::Done(true)
                    } else {
                        Cond::Done(false)
                    }
                };
                match outcome {
                    // Nothing to delete: no commit, so no fsync.
                    Cond::Done(false) | Cond::PreconditionFailed => {
                        txn.abort().map_err(|e| s.storage(op, e))?;
                    }
                    Cond::Done(true) => txn.commit().map_err(|e| s.storage(op, e))?,
                }
                Ok(outcome)
            })
            .await
            .map_err(|e| backend(key, e))?;
        match r {
            Cond::Done(_) => Ok(()),
            Cond::PreconditionFailed => Err(StoreError::PreconditionFailed {
                key: key.to_owned(),
            }),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let s = &self.shared;
        let op = "list state";
        let read = || -> Result<Vec<String>, EmbeddedError> {
            let txn = s.db.begin_read().map_err(|e| s.storage(op, e))?;
            let table = txn.open_table(STATE).map_err(|e| s.storage(op, e))?;
            let mut keys = Vec::new();
            // Keys are ordered by their bytes, so the matches are one run
            // starting at the prefix itself.
            for row in table.range(prefix..).map_err(|e| s.storage(op, e))? {
                let (k, _) = row.map_err(|e| s.storage(op, e))?;
                let k = k.value();
                if !k.starts_with(prefix) {
                    break;
                }
                keys.push(k.to_owned());
            }
            Ok(keys)
        };
        read().map_err(|e| backend(prefix, e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use trigflow_worker::conformance;

    use crate::EmbeddedDb;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_passes_conformance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = EmbeddedDb::open(dir.path().join("t.redb")).expect("open");
        conformance::run_all(Arc::new(db.store()), "conf/").await;
    }

    #[tokio::test]
    async fn state_survives_reopen_and_versions_keep_increasing() {
        use trigflow_core::seams::{Precondition, StateStore};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.redb");
        let v1 = {
            let db = EmbeddedDb::open(&path).expect("open");
            db.store()
                .put("k", b"v".to_vec(), Precondition::None)
                .await
                .expect("put")
        };
        let db = EmbeddedDb::open(&path).expect("reopen");
        let store = db.store();
        let got = store.get("k").await.expect("get").expect("present");
        assert_eq!((got.value.as_slice(), &got.version), (&b"v"[..], &v1));
        store
            .delete("k", Precondition::MatchesVersion(v1.clone()))
            .await
            .expect("delete");
        let v2 = store
            .put("k", b"w".to_vec(), Precondition::DoesNotExist)
            .await
            .expect("recreate");
        assert_ne!(v1, v2);
    }
}
