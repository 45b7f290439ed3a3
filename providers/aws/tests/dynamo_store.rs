//! The DynamoDB state store against a real moto server: the shared
//! conformance suite (64-writer race included), chunked values, and the
//! size limit.

use std::sync::Arc;

use trigflow_aws::DynamoStore;
use trigflow_aws::testing::MotoServer;
use trigflow_core::seams::{Precondition, StateStore, StoreError, Version};

async fn store(moto: &MotoServer, table: &str) -> DynamoStore {
    let sdk = moto.sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    store.create_table().await.expect("create table");
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_passes_on_moto() {
    let moto = MotoServer::start().expect("moto server");
    let store: Arc<dyn StateStore> = Arc::new(store(&moto, "conformance").await);
    trigflow_worker::conformance::run_all(store, "suite/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_with_every_value_chunked() {
    // A 4-byte chunk size makes every conformance value longer than one
    // chunk go through the transactional path.
    let moto = MotoServer::start().expect("moto server");
    let store: Arc<dyn StateStore> = Arc::new(store(&moto, "chunked").await.with_chunk_size(4));
    let s = store.as_ref();
    use trigflow_worker::conformance as c;
    c::put_none_creates_and_overwrites(s, "c/").await;
    c::put_does_not_exist_on_present_fails(s, "c/").await;
    c::put_matches_version_right_succeeds(s, "c/").await;
    c::put_matches_version_wrong_fails(s, "c/").await;
    c::put_matches_version_on_absent_fails(s, "c/").await;
    c::delete_matches_version_right_succeeds(s, "c/").await;
    c::delete_matches_version_wrong_fails(s, "c/").await;
    c::list_by_prefix_in_lexical_order(s, "c/").await;
    c::versions_change_on_every_write(s, "c/").await;
}

#[tokio::test]
async fn large_values_are_chunked_and_old_chunks_deleted() {
    let moto = MotoServer::start().expect("moto server");
    let store = store(&moto, "large").await.with_chunk_size(1000);
    let big: Vec<u8> = (0..9_500u32).map(|i| (i % 251) as u8).collect();
    let v1 = store
        .put("k", big.clone(), Precondition::DoesNotExist)
        .await
        .expect("chunked put");
    let got = store.get("k").await.expect("get").expect("present");
    assert_eq!(got.value, big);
    assert_eq!(got.version, v1);
    // Head + 10 chunks.
    assert_eq!(store.raw_item_count().await.expect("count"), 11);
    assert_eq!(store.list("").await.expect("list"), vec!["k".to_owned()]);

    // A stale version cannot replace it; the right one can, with an inline
    // value, and the chunks go with the old value.
    let stale = store
        .put(
            "k",
            b"x".to_vec(),
            Precondition::MatchesVersion(Version("nope".into())),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::PreconditionFailed { .. })));
    let v2 = store
        .put("k", b"small".to_vec(), Precondition::MatchesVersion(v1))
        .await
        .expect("inline over chunked");
    assert_eq!(store.raw_item_count().await.expect("count"), 1);
    let got = store.get("k").await.expect("get").expect("present");
    assert_eq!((got.value, got.version), (b"small".to_vec(), v2.clone()));

    // Chunked over inline, then delete removes head and chunks.
    let v3 = store
        .put("k", big[..4_200].to_vec(), Precondition::MatchesVersion(v2))
        .await
        .expect("chunked over inline");
    assert_eq!(store.raw_item_count().await.expect("count"), 6);
    store
        .delete("k", Precondition::MatchesVersion(v3))
        .await
        .expect("delete");
    assert_eq!(store.raw_item_count().await.expect("count"), 0);
    assert!(store.get("k").await.expect("get").is_none());
}

#[tokio::test]
async fn values_over_the_limit_are_refused_not_truncated() {
    let moto = MotoServer::start().expect("moto server");
    let store = store(&moto, "limit").await.with_chunk_size(100);
    let r = store.put("k", vec![7u8; 1_001], Precondition::None).await;
    match r {
        Err(StoreError::TooLarge { size, limit, .. }) => {
            assert_eq!((size, limit), (1_001, 1_000));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(store.get("k").await.expect("get").is_none());
    // The default limit: 10 chunks of 290 KiB.
    assert_eq!(
        DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&moto.sdk_config().await),
            "limit"
        )
        .max_value(),
        trigflow_aws::store::MAX_VALUE
    );
}

#[test]
fn missing_moto_server_fails_with_the_install_command() {
    match MotoServer::start_program("trigflow-no-such-moto-server") {
        Err(e) => assert_eq!(
            e.to_string(),
            "moto_server not found: pip install 'moto[server]'"
        ),
        Ok(_) => panic!("a missing binary must not start"),
    }
}
