//! The state-store conformance suite: the contract every [`StateStore`]
//! backend must meet, as checks that panic with the check's name and what
//! went wrong.
//!
//! Backends run [`run_all`] from their tests (enable this crate's
//! `conformance` feature as a dev-dependency). Each check is also a public
//! function, so a failing backend can run the one check it is debugging.
//!
//! Every key a check touches starts with `prefix` followed by the check's
//! name, so several suites can share one store (one table, one bucket) and a
//! check never sees another's keys. Each check first deletes its keys, so the
//! suite can run again on a persistent store with the same prefix.
//!
//! The worker's guarantees rest on this contract: no lost update (4) needs
//! atomic conditional writes, and a failed precondition must be reported as
//! [`StoreError::PreconditionFailed`] (the worker retries from a fresh read)
//! and must leave the stored value untouched.

use std::sync::Arc;

use trigflow_core::seams::{Precondition, StateStore, StoreError, Version};

/// Number of tasks in the compare-and-swap race.
pub const RACE_TASKS: u64 = 64;
/// Increments each racing task makes.
pub const RACE_INCREMENTS: u64 = 25;

/// Runs every check, in order.
pub async fn run_all(store: Arc<dyn StateStore>, prefix: &str) {
    let s = store.as_ref();
    get_absent_is_none(s, prefix).await;
    put_none_creates_and_overwrites(s, prefix).await;
    put_does_not_exist_on_absent_creates(s, prefix).await;
    put_does_not_exist_on_present_fails(s, prefix).await;
    put_matches_version_right_succeeds(s, prefix).await;
    put_matches_version_wrong_fails(s, prefix).await;
    put_matches_version_on_absent_fails(s, prefix).await;
    delete_missing_key_succeeds(s, prefix).await;
    delete_then_get_is_none(s, prefix).await;
    delete_does_not_exist_on_present_fails(s, prefix).await;
    delete_matches_version_right_succeeds(s, prefix).await;
    delete_matches_version_wrong_fails(s, prefix).await;
    delete_matches_version_on_absent_fails(s, prefix).await;
    list_by_prefix_in_lexical_order(s, prefix).await;
    versions_change_on_every_write(s, prefix).await;
    compare_and_swap_race(store.clone(), prefix).await;
}

/// Deletes `key` unconditionally so a check starts from a known state.
async fn fresh(store: &dyn StateStore, check: &str, key: &str) {
    if let Err(e) = store.delete(key, Precondition::None).await {
        panic!("{check}: cleanup delete of {key:?} failed: {e}");
    }
}

async fn must_get(store: &dyn StateStore, check: &str, key: &str) -> Option<(Vec<u8>, Version)> {
    match store.get(key).await {
        Ok(v) => v.map(|s| (s.value, s.version)),
        Err(e) => panic!("{check}: get {key:?} failed: {e}"),
    }
}

async fn must_put(
    store: &dyn StateStore,
    check: &str,
    key: &str,
    value: &[u8],
    pre: Precondition,
) -> Version {
    match store.put(key, value.to_vec(), pre.clone()).await {
        Ok(v) => v,
        Err(e) => panic!("{check}: put {key:?} with {pre:?} failed: {e}"),
    }
}

fn assert_precondition_failed<T: std::fmt::Debug>(
    check: &str,
    what: &str,
    result: Result<T, StoreError>,
) {
    match result {
        Err(StoreError::PreconditionFailed { .. }) => {}
        other => panic!("{check}: {what} should fail with PreconditionFailed, got {other:?}"),
    }
}

/// Reading a key that was never written returns `None`.
pub async fn get_absent_is_none(store: &dyn StateStore, prefix: &str) {
    let check = "get_absent_is_none";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    assert_eq!(must_get(store, check, &key).await, None, "{check}");
}

/// `Precondition::None` creates an absent key and overwrites a present one,
/// and `get` returns exactly the version `put` returned.
pub async fn put_none_creates_and_overwrites(store: &dyn StateStore, prefix: &str) {
    let check = "put_none_creates_and_overwrites";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let v1 = must_put(store, check, &key, b"one", Precondition::None).await;
    assert_eq!(
        must_get(store, check, &key).await,
        Some((b"one".to_vec(), v1.clone())),
        "{check}: value after create"
    );
    let v2 = must_put(store, check, &key, b"two", Precondition::None).await;
    assert_eq!(
        must_get(store, check, &key).await,
        Some((b"two".to_vec(), v2)),
        "{check}: value after overwrite"
    );
}

/// `Precondition::DoesNotExist` creates an absent key.
pub async fn put_does_not_exist_on_absent_creates(store: &dyn StateStore, prefix: &str) {
    let check = "put_does_not_exist_on_absent_creates";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let v = must_put(store, check, &key, b"new", Precondition::DoesNotExist).await;
    assert_eq!(
        must_get(store, check, &key).await,
        Some((b"new".to_vec(), v)),
        "{check}"
    );
}

/// `Precondition::DoesNotExist` on a present key fails and changes nothing.
pub async fn put_does_not_exist_on_present_fails(store: &dyn StateStore, prefix: &str) {
    let check = "put_does_not_exist_on_present_fails";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let v = must_put(store, check, &key, b"first", Precondition::None).await;
    let r = store
        .put(&key, b"second".to_vec(), Precondition::DoesNotExist)
        .await;
    assert_precondition_failed(check, "put DoesNotExist on a present key", r);
    assert_eq!(
        must_get(store, check, &key).await,
        Some((b"first".to_vec(), v)),
        "{check}: the failed put must change nothing"
    );
}

/// `Precondition::MatchesVersion` with the current version writes and
/// returns a new version.
pub async fn put_matches_version_right_succeeds(store: &dyn StateStore, prefix: &str) {
    let check = "put_matches_version_right_succeeds";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let v1 = must_put(store, check, &key, b"a", Precondition::None).await;
    let v2 = must_put(
        store,
        check,
        &key,
        b"b",
        Precondition::MatchesVersion(v1.clone()),
    )
    .await;
    assert_ne!(v1, v2, "{check}: the write must change the version");
    assert_eq!(
        must_get(store, check, &key).await,
        Some((b"b".to_vec(), v2)),
        "{check}"
    );
}

/// `Precondition::MatchesVersion` with a stale version fails and changes
/// nothing.
pub async fn put_matches_version_wrong_fails(store: &dyn StateStore, prefix: &str) {
    let check = "put_matches_version_wrong_fails";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let stale = must_put(store, check, &key, b"a", Precondition::None).await;
    let current = must_put(store, check, &key, b"b", Precondition::None).await;
    let r = store
        .put(&key, b"c".to_vec(), Precondition::MatchesVersion(stale))
        .await;
    assert_precondition_failed(check, "put with a stale version", r);
    // A version the store never produced must not match either.
    let r = store
        .put(
            &key,
            b"c".to_vec(),
            Precondition::MatchesVersion(Version("no-such-version".into())),
        )
        .await;
    assert_precondition_failed(check, "put with a made-up version", r);
    assert_eq!(
        must_get(store, check, &key).await,
        Some((b"b".to_vec(), current)),
        "{check}: the failed puts must change nothing"
    );
}

/// `Precondition::MatchesVersion` on an absent key fails and creates nothing,
/// even with a version the key had before it was deleted.
pub async fn put_matches_version_on_absent_fails(store: &dyn StateStore, prefix: &str) {
    let check = "put_matches_version_on_absent_fails";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let old = must_put(store, check, &key, b"a", Precondition::None).await;
    fresh(store, check, &key).await;
    let r = store
        .put(&key, b"b".to_vec(), Precondition::MatchesVersion(old))
        .await;
    assert_precondition_failed(check, "put MatchesVersion on a deleted key", r);
    assert_eq!(
        must_get(store, check, &key).await,
        None,
        "{check}: the failed put must not create the key"
    );
}

/// Deleting a missing key succeeds with `None` and with `DoesNotExist`.
pub async fn delete_missing_key_succeeds(store: &dyn StateStore, prefix: &str) {
    let check = "delete_missing_key_succeeds";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    if let Err(e) = store.delete(&key, Precondition::None).await {
        panic!("{check}: delete of a missing key with None failed: {e}");
    }
    if let Err(e) = store.delete(&key, Precondition::DoesNotExist).await {
        panic!("{check}: delete of a missing key with DoesNotExist failed: {e}");
    }
    assert_eq!(must_get(store, check, &key).await, None, "{check}");
}

/// After an unconditional delete, `get` returns `None` and the key is not
/// listed.
pub async fn delete_then_get_is_none(store: &dyn StateStore, prefix: &str) {
    let check = "delete_then_get_is_none";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    must_put(store, check, &key, b"x", Precondition::None).await;
    if let Err(e) = store.delete(&key, Precondition::None).await {
        panic!("{check}: delete failed: {e}");
    }
    assert_eq!(must_get(store, check, &key).await, None, "{check}");
    match store.list(&key).await {
        Ok(keys) => assert!(keys.is_empty(), "{check}: deleted key listed: {keys:?}"),
        Err(e) => panic!("{check}: list failed: {e}"),
    }
}

/// Deleting a present key with `DoesNotExist` fails and keeps the key.
pub async fn delete_does_not_exist_on_present_fails(store: &dyn StateStore, prefix: &str) {
    let check = "delete_does_not_exist_on_present_fails";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let v = must_put(store, check, &key, b"x", Precondition::None).await;
    let r = store.delete(&key, Precondition::DoesNotExist).await;
    assert_precondition_failed(check, "delete DoesNotExist on a present key", r);
    assert_eq!(
        must_get(store, check, &key).await,
        Some((b"x".to_vec(), v)),
        "{check}: the failed delete must change nothing"
    );
}

/// Deleting with the current version removes the key.
pub async fn delete_matches_version_right_succeeds(store: &dyn StateStore, prefix: &str) {
    let check = "delete_matches_version_right_succeeds";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let v = must_put(store, check, &key, b"x", Precondition::None).await;
    if let Err(e) = store.delete(&key, Precondition::MatchesVersion(v)).await {
        panic!("{check}: delete with the current version failed: {e}");
    }
    assert_eq!(must_get(store, check, &key).await, None, "{check}");
}

/// Deleting with a stale version fails and keeps the key.
pub async fn delete_matches_version_wrong_fails(store: &dyn StateStore, prefix: &str) {
    let check = "delete_matches_version_wrong_fails";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let stale = must_put(store, check, &key, b"a", Precondition::None).await;
    let current = must_put(store, check, &key, b"b", Precondition::None).await;
    let r = store
        .delete(&key, Precondition::MatchesVersion(stale))
        .await;
    assert_precondition_failed(check, "delete with a stale version", r);
    assert_eq!(
        must_get(store, check, &key).await,
        Some((b"b".to_vec(), current)),
        "{check}: the failed delete must change nothing"
    );
}

/// Deleting an absent key with `MatchesVersion` fails (there is no version to
/// match).
pub async fn delete_matches_version_on_absent_fails(store: &dyn StateStore, prefix: &str) {
    let check = "delete_matches_version_on_absent_fails";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let old = must_put(store, check, &key, b"a", Precondition::None).await;
    fresh(store, check, &key).await;
    let r = store.delete(&key, Precondition::MatchesVersion(old)).await;
    assert_precondition_failed(check, "delete MatchesVersion on an absent key", r);
    assert_eq!(must_get(store, check, &key).await, None, "{check}");
}

/// `list` returns exactly the keys starting with the prefix, in lexical
/// (byte) order, whatever the order they were written in.
pub async fn list_by_prefix_in_lexical_order(store: &dyn StateStore, prefix: &str) {
    let check = "list_by_prefix_in_lexical_order";
    let base = format!("{prefix}{check}/");
    // Written out of order, with a nested key, a key that is a prefix of
    // another, and neighbours just outside the listed prefix.
    let inside = ["b", "a/z", "a", "c", "ab", "B", "a/a"];
    let outside = [
        format!("{prefix}{check}"),
        format!("{prefix}{check}0"),
        format!("{prefix}{check}."),
    ];
    for k in &inside {
        fresh(store, check, &format!("{base}{k}")).await;
    }
    for k in &outside {
        fresh(store, check, k).await;
    }
    for k in &inside {
        must_put(
            store,
            check,
            &format!("{base}{k}"),
            k.as_bytes(),
            Precondition::None,
        )
        .await;
    }
    for k in &outside {
        must_put(store, check, k, b"outside", Precondition::None).await;
    }
    let mut expected: Vec<String> = inside.iter().map(|k| format!("{base}{k}")).collect();
    expected.sort();
    match store.list(&base).await {
        Ok(keys) => assert_eq!(keys, expected, "{check}"),
        Err(e) => panic!("{check}: list failed: {e}"),
    }
    match store.list(&format!("{base}a")).await {
        Ok(keys) => assert_eq!(
            keys,
            vec![
                format!("{base}a"),
                format!("{base}a/a"),
                format!("{base}a/z"),
                format!("{base}ab")
            ],
            "{check}: list of a narrower prefix"
        ),
        Err(e) => panic!("{check}: list failed: {e}"),
    }
    match store.list(&format!("{base}none")).await {
        Ok(keys) => assert!(keys.is_empty(), "{check}: unmatched prefix gave {keys:?}"),
        Err(e) => panic!("{check}: list failed: {e}"),
    }
}

/// Every write gives a version never seen before on that key, even when the
/// bytes are the same, and even after the key was deleted and recreated (so
/// a stale read can never match a newer value: no ABA).
pub async fn versions_change_on_every_write(store: &dyn StateStore, prefix: &str) {
    let check = "versions_change_on_every_write";
    let key = format!("{prefix}{check}");
    fresh(store, check, &key).await;
    let mut seen: Vec<Version> = Vec::new();
    let mut last = must_put(store, check, &key, b"same", Precondition::DoesNotExist).await;
    seen.push(last.clone());
    for _ in 0..3 {
        last = must_put(store, check, &key, b"same", Precondition::None).await;
        seen.push(last.clone());
        last = must_put(
            store,
            check,
            &key,
            b"same",
            Precondition::MatchesVersion(last.clone()),
        )
        .await;
        seen.push(last.clone());
    }
    fresh(store, check, &key).await;
    last = must_put(store, check, &key, b"same", Precondition::DoesNotExist).await;
    seen.push(last.clone());
    let mut unique = seen.clone();
    unique.sort_by(|a, b| a.0.cmp(&b.0));
    unique.dedup();
    assert_eq!(
        unique.len(),
        seen.len(),
        "{check}: a version repeated: {seen:?}"
    );
    assert_eq!(
        must_get(store, check, &key).await.map(|(_, v)| v),
        Some(last),
        "{check}: get must return the last write's version"
    );
}

/// [`RACE_TASKS`] tasks each add one to a JSON counter [`RACE_INCREMENTS`]
/// times, with read / modify / conditional-write loops that retry on
/// `PreconditionFailed`. The final count must be their product: a store
/// whose conditional write is not atomic loses updates here.
pub async fn compare_and_swap_race(store: Arc<dyn StateStore>, prefix: &str) {
    let check = "compare_and_swap_race";
    let key = format!("{prefix}{check}");
    fresh(store.as_ref(), check, &key).await;
    let mut tasks = Vec::new();
    for task in 0..RACE_TASKS {
        let store = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..RACE_INCREMENTS {
                loop {
                    let current = match store.get(&key).await {
                        Ok(c) => c,
                        Err(e) => panic!("{check}: task {task}: get failed: {e}"),
                    };
                    let (count, pre) = match current {
                        None => (0u64, Precondition::DoesNotExist),
                        Some(s) => match serde_json::from_slice::<u64>(&s.value) {
                            Ok(n) => (n, Precondition::MatchesVersion(s.version)),
                            Err(e) => panic!("{check}: task {task}: counter is not JSON: {e}"),
                        },
                    };
                    let next = match serde_json::to_vec(&(count + 1)) {
                        Ok(b) => b,
                        Err(e) => panic!("{check}: task {task}: encode failed: {e}"),
                    };
                    match store.put(&key, next, pre).await {
                        Ok(_) => break,
                        Err(StoreError::PreconditionFailed { .. }) => {
                            conflicts += 1;
                            // Let the winner's task run before trying again.
                            tokio::task::yield_now().await;
                        }
                        Err(e) => panic!("{check}: task {task}: put failed: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            panic!("{check}: a racing task panicked: {e}");
        }
    }
    let value = must_get(store.as_ref(), check, &key)
        .await
        .map(|(bytes, _)| serde_json::from_slice::<u64>(&bytes));
    match value {
        Some(Ok(n)) => assert_eq!(
            n,
            RACE_TASKS * RACE_INCREMENTS,
            "{check}: updates were lost"
        ),
        other => panic!("{check}: counter missing or undecodable: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    //! The suite must catch broken backends, not only pass good ones.

    use async_trait::async_trait;
    use futures::FutureExt;
    use trigflow_core::seams::Stored;

    use super::*;
    use crate::memory::MemoryStore;

    /// A store that ignores preconditions and yields between its read and
    /// its write, like a backend doing read-then-write without a condition.
    #[derive(Default)]
    struct IgnoresPreconditions(MemoryStore);

    #[async_trait]
    impl StateStore for IgnoresPreconditions {
        async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
            self.0.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            value: Vec<u8>,
            _pre: Precondition,
        ) -> Result<Version, StoreError> {
            tokio::task::yield_now().await;
            self.0.put(key, value, Precondition::None).await
        }
        async fn delete(&self, key: &str, _pre: Precondition) -> Result<(), StoreError> {
            self.0.delete(key, Precondition::None).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.0.list(prefix).await
        }
    }

    #[tokio::test]
    async fn suite_rejects_a_store_that_ignores_preconditions() {
        let store = IgnoresPreconditions::default();
        let r = std::panic::AssertUnwindSafe(put_does_not_exist_on_present_fails(&store, "p/"))
            .catch_unwind()
            .await;
        assert!(r.is_err(), "a put over an existing key was not caught");
        let r = std::panic::AssertUnwindSafe(put_matches_version_wrong_fails(&store, "p/"))
            .catch_unwind()
            .await;
        assert!(r.is_err(), "a put with a stale version was not caught");
    }

    #[tokio::test]
    async fn race_detects_lost_updates() {
        let store: Arc<dyn StateStore> = Arc::new(IgnoresPreconditions::default());
        let r = std::panic::AssertUnwindSafe(compare_and_swap_race(store, "r/"))
            .catch_unwind()
            .await;
        assert!(r.is_err(), "lost updates were not detected");
    }
}
