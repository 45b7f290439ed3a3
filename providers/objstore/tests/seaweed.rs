//! `S3Blobs` and the claim check against a real SeaweedFS (`weed mini`),
//! standing in for MinIO through the same S3 API.

use std::sync::Arc;

use serde_json::json;
use trigflow_core::claim::{BlobError, BlobStore, ClaimCheck, Reference, reference, sha256_hex};
use trigflow_objstore::testing::SeaweedServer;
use trigflow_objstore::{ObjStoreError, S3Blobs, parse_uri};

#[tokio::test]
async fn objects_round_trip_and_a_missing_one_is_not_found() {
    let server = SeaweedServer::start().expect("start weed");
    let blobs = server.blobs("round-trip").await.expect("bucket");
    // Idempotent: a second process creating the same bucket is fine.
    blobs.ensure_bucket().await.expect("bucket again");

    let bytes: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let uri = blobs.put("dir/obj.bin", bytes.clone()).await.expect("put");
    assert_eq!(uri, "s3://round-trip/dir/obj.bin");
    assert_eq!(blobs.get(&uri).await.expect("get"), bytes);
    // Overwrite.
    let outcome = blobs
        .put_object("dir/obj.bin", b"small".to_vec())
        .await
        .expect("put");
    assert!(outcome.etag.is_some_and(|e| !e.is_empty()));
    assert_eq!(blobs.get(&uri).await.expect("get"), b"small");

    let missing = "s3://round-trip/dir/nope";
    match blobs.get(missing).await {
        Err(BlobError::NotFound { uri }) => assert_eq!(uri, missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
    match blobs.get("https://not-s3/x").await {
        Err(e @ BlobError::Backend { .. }) => assert!(!e.is_retryable()),
        other => panic!("expected a bad-URI error, got {other:?}"),
    }
}

#[tokio::test]
async fn claim_check_offloads_resolves_and_rejects_a_wrong_digest() {
    let server = SeaweedServer::start().expect("start weed");
    let blobs = Arc::new(server.blobs("claims").await.expect("bucket"));
    let claims = ClaimCheck::new(blobs.clone(), 1024);

    let data = json!({"rows": (0..20_000).collect::<Vec<_>>(), "name": "big"});
    let r = claims.offload(data.clone()).await.expect("offload");
    assert!(ClaimCheck::is_ref(&r));
    let parsed = Reference::parse(&r, "").expect("ref").expect("well-formed");
    let (bucket, key) = parse_uri(&parsed.uri).expect("s3 uri");
    assert_eq!(bucket, "claims");
    assert_eq!(key, format!("blobs/sha256/{}", parsed.sha256));
    // Retried offload: same object, same reference.
    assert_eq!(claims.offload(data.clone()).await.expect("again"), r);

    let doc = json!({"a": r, "b": [1, r]});
    assert_eq!(
        claims.resolve(doc).await.expect("resolve"),
        json!({"a": data, "b": [1, data]})
    );

    // The object changed under its reference: rejected, not passed on.
    blobs
        .put(key, b"{\"rows\":[]}".to_vec())
        .await
        .expect("overwrite");
    assert!(matches!(
        claims.resolve(r.clone()).await,
        Err(BlobError::Integrity { ref uri, .. }) if *uri == parsed.uri
    ));
    // A reference with a wrong digest over intact bytes is rejected too.
    let bytes = b"{\"ok\":true}".to_vec();
    let uri = blobs.put("plain.json", bytes.clone()).await.expect("put");
    let good = reference(uri.clone(), bytes.len() as u64, sha256_hex(&bytes));
    assert_eq!(
        claims.resolve(good).await.expect("resolve"),
        json!({"ok": true})
    );
    let wrong = reference(uri, bytes.len() as u64, sha256_hex(b"other"));
    assert!(matches!(
        claims.resolve(wrong).await,
        Err(BlobError::Integrity { .. })
    ));
    // A reference to nothing says which object is missing.
    let gone = reference("s3://claims/blobs/sha256/none", 1, "0".repeat(64));
    assert!(matches!(
        claims.resolve(json!({"x": gone})).await,
        Err(BlobError::NotFound { ref uri }) if uri == "s3://claims/blobs/sha256/none"
    ));
}

#[tokio::test]
async fn wrong_credentials_and_an_unreachable_endpoint_name_endpoint_and_bucket() {
    let server = SeaweedServer::start().expect("start weed");
    server.blobs("exists").await.expect("bucket");
    let wrong = S3Blobs::new(
        trigflow_objstore::S3Settings::new(server.endpoint(), "exists")
            .with_credentials("intruder", "nope"),
    )
    .expect("client");
    match wrong.get("s3://exists/k").await {
        Err(BlobError::Backend {
            target, message, ..
        }) => {
            assert_eq!(target, "s3://exists/k");
            assert!(message.contains(&server.endpoint()), "{message}");
        }
        other => panic!("expected an access error, got {other:?}"),
    }

    let dead = S3Blobs::new(
        trigflow_objstore::S3Settings::new("http://127.0.0.1:9", "b").with_credentials("a", "b"),
    )
    .expect("client");
    match dead.ensure_bucket().await {
        Err(e @ ObjStoreError::Bucket { .. }) => {
            assert!(e.is_retryable());
            let text = e.to_string();
            assert!(
                text.contains("http://127.0.0.1:9") && text.contains("bucket b"),
                "{text}"
            );
        }
        other => panic!("expected a bucket error, got {other:?}"),
    }
}
