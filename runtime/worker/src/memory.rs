//! An in-memory [`StateStore`], for tests, the simulator-style model tests and
//! single-process runs that need no durability.
//!
//! Versions are a store-wide counter rendered as a decimal string: every write
//! takes the next value, so a key's version changes on every write, and a
//! version is never reused even after the key is deleted and recreated (which
//! keeps a stale `MatchesVersion` from ever matching a newer value by
//! accident). The map and the counter sit behind one mutex, so each
//! conditional write checks and writes atomically.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use trigflow_core::seams::{Precondition, StateStore, StoreError, Stored, Version};

/// An in-memory [`StateStore`]. Cheap to create; share it as
/// `Arc<dyn StateStore>`.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Key -> (version counter, bytes). A `BTreeMap` so `list` is a range scan
    /// already in lexical order.
    entries: BTreeMap<String, (u64, Vec<u8>)>,
    /// Last version handed out.
    counter: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys stored.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map half-written
        // (every mutation is a single insert or remove), so a poisoned lock
        // is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `pre` holds for the current entry (its version, if present).
fn check(key: &str, current: Option<u64>, pre: &Precondition) -> Result<(), StoreError> {
    let ok = match (pre, current) {
        (Precondition::None, _) => true,
        (Precondition::DoesNotExist, current) => current.is_none(),
        (Precondition::MatchesVersion(_), None) => false,
        (Precondition::MatchesVersion(v), Some(c)) => v.0 == c.to_string(),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::PreconditionFailed {
            key: key.to_owned(),
        })
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        Ok(self.lock().entries.get(key).map(|(v, bytes)| Stored {
            value: bytes.clone(),
            version: Version(v.to_string()),
        }))
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        let mut inner = self.lock();
        check(key, inner.entries.get(key).map(|(v, _)| *v), &pre)?;
        inner.counter += 1;
        let version = inner.counter;
        inner.entries.insert(key.to_owned(), (version, value));
        Ok(Version(version.to_string()))
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<(), StoreError> {
        let mut inner = self.lock();
        check(key, inner.entries.get(key).map(|(v, _)| *v), &pre)?;
        inner.entries.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_passes_conformance() {
        conformance::run_all(Arc::new(MemoryStore::new()), "conf/").await;
    }

    #[tokio::test]
    async fn two_prefixes_share_one_store_without_interference() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        conformance::run_all(store.clone(), "a/").await;
        conformance::run_all(store.clone(), "b/").await;
        assert!(
            store
                .list("a/")
                .await
                .expect("list")
                .iter()
                .all(|k| k.starts_with("a/"))
        );
    }
}
