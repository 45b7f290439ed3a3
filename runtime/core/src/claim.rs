//! The claim check: payloads above a threshold travel by reference.
//!
//! Events, calls and states stay small: a JSON value whose serialized size is
//! above the threshold (default [`DEFAULT_THRESHOLD`], 200 KiB) is written to
//! the mode's object store under a content-addressed key and replaced by a
//! reference,
//!
//! ```json
//! {"$trigflow.ref": {"uri": "s3://bucket/blobs/sha256/<hex>", "size": 5242880, "sha256": "<hex>"}}
//! ```
//!
//! where `size` and `sha256` describe the serialized JSON stored at `uri`.
//! Whoever needs the data (the side that calls a function) resolves every
//! reference anywhere inside a value, checking size and digest, so a
//! reference that a jq expression placed inside a bigger object is resolved
//! too. Everything in between (the engine, the state, the event streams)
//! only ever sees the small reference: jq expressions see the reference
//! object, functions always see the full data.
//!
//! The object store is the [`BlobStore`] seam: S3 / MinIO in local mode
//! (`trigflow-objstore`), S3 in AWS mode, and any in-memory map in tests.
//!
//! ```
//! # use std::sync::Arc;
//! # use trigflow_core::claim::{BlobError, BlobStore, ClaimCheck};
//! # #[derive(Debug, Default)]
//! # struct Mem(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);
//! # #[async_trait::async_trait]
//! # impl BlobStore for Mem {
//! #     async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<String, BlobError> {
//! #         let uri = format!("mem://b/{key}");
//! #         self.0.lock().unwrap().insert(uri.clone(), bytes);
//! #         Ok(uri)
//! #     }
//! #     async fn get(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
//! #         self.0.lock().unwrap().get(uri).cloned()
//! #             .ok_or_else(|| BlobError::NotFound { uri: uri.into() })
//! #     }
//! # }
//! # async fn demo() -> Result<(), BlobError> {
//! let claims = ClaimCheck::new(Arc::new(Mem::default()), 16);
//! let big = serde_json::json!({"text": "a long text, longer than sixteen bytes"});
//! let small = claims.offload(big.clone()).await?;
//! assert!(ClaimCheck::is_ref(&small));
//! assert_eq!(claims.resolve(serde_json::json!({"nested": small})).await?,
//!            serde_json::json!({"nested": big}));
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Payloads whose serialized JSON is larger than this many bytes are passed
/// by reference (200 KiB: well under the 256 KiB of SQS and the 1 MiB of a
/// default NATS message, with room for the envelope).
pub const DEFAULT_THRESHOLD: usize = 200 * 1024;

/// The single key of a reference object.
pub const REF_KEY: &str = "$trigflow.ref";

/// Prefix of the content-addressed keys offloaded payloads are stored under.
pub const BLOB_PREFIX: &str = "blobs/sha256/";

/// How many levels of references inside referenced data are resolved
/// before giving up (content addressing cannot make a cycle, so only a
/// hand-made reference chain gets this deep).
const MAX_DEPTH: usize = 16;

/// A failure of the object store or of a reference.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No object at the URI.
    #[error("no object at {uri}")]
    NotFound {
        /// The URI read.
        uri: String,
    },
    /// The store failed (network, credentials, missing bucket...).
    #[error("object store error on {target}: {message}")]
    Backend {
        /// The key written or the URI read.
        target: String,
        /// What failed, naming the endpoint and bucket where known.
        message: String,
        /// Whether trying again may succeed.
        retryable: bool,
    },
    /// The object does not match its reference: it was changed, truncated
    /// or the reference was edited.
    #[error(
        "object {uri} does not match its reference at {path}: expected {expected_size} bytes with sha256 {expected_sha256}, got {actual_size} bytes with sha256 {actual_sha256}"
    )]
    Integrity {
        /// The URI read.
        uri: String,
        /// JSON pointer of the reference in the resolved value.
        path: String,
        /// Size the reference names.
        expected_size: u64,
        /// Size read.
        actual_size: u64,
        /// Digest the reference names.
        expected_sha256: String,
        /// Digest of what was read.
        actual_sha256: String,
    },
    /// A `$trigflow.ref` object that is not a well-formed reference.
    #[error("malformed reference at {path}: {message}")]
    BadReference {
        /// JSON pointer of the reference.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The object is not JSON, or the value cannot be serialized.
    #[error("payload at {target} is not valid JSON: {message}")]
    Json {
        /// The URI read, or `value` for a value being offloaded.
        target: String,
        /// The parser's message.
        message: String,
    },
    /// References nest deeper than trigflow resolves.
    #[error("references nest more than {MAX_DEPTH} levels deep at {path}")]
    TooDeep {
        /// JSON pointer of the innermost reference.
        path: String,
    },
}

impl BlobError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            BlobError::Backend {
                retryable: true,
                ..
            }
        )
    }
}

/// An object store: bytes under keys, read back by URI.
#[async_trait]
pub trait BlobStore: Send + Sync + Debug {
    /// Stores `bytes` under `key` (overwriting), returning the object's URI
    /// (e.g. `s3://bucket/key`).
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<String, BlobError>;
    /// Reads the object at `uri`; a missing object is
    /// [`BlobError::NotFound`].
    async fn get(&self, uri: &str) -> Result<Vec<u8>, BlobError>;
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where the serialized JSON is.
    pub uri: String,
    /// Its size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256 of those bytes.
    pub sha256: String,
}

impl Reference {
    /// The reference object `{"$trigflow.ref": {uri, size, sha256}}`.
    pub fn to_value(&self) -> Value {
        json!({REF_KEY: {"uri": self.uri, "size": self.size, "sha256": self.sha256}})
    }

    /// Parses a reference object; `None` if `value` is not one, an error if
    /// it is one but malformed. `path` names it in errors.
    pub fn parse(value: &Value, path: &str) -> Option<Result<Self, BlobError>> {
        let inner = as_ref_object(value)?;
        let bad = |message: &str| BlobError::BadReference {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        let Some(inner) = inner.as_object() else {
            return Some(Err(bad("the value of $trigflow.ref is not an object")));
        };
        let uri = inner.get("uri").and_then(Value::as_str);
        let size = inner.get("size").and_then(Value::as_u64);
        let sha = inner.get("sha256").and_then(Value::as_str);
        Some(match (uri, size, sha) {
            (Some(uri), Some(size), Some(sha))
                if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(Self {
                    uri: uri.to_owned(),
                    size,
                    sha256: sha.to_ascii_lowercase(),
                })
            }
            (None, ..) => Err(bad("`uri` is missing or not a string")),
            (_, None, _) => Err(bad("`size` is missing or not a non-negative integer")),
            _ => Err(bad("`sha256` is missing or not 64 hex digits")),
        })
    }
}

/// The value of the single `$trigflow.ref` key, if `value` is a reference.
fn as_ref_object(value: &Value) -> Option<&Value> {
    match value {
        Value::Object(m) if m.len() == 1 => m.get(REF_KEY),
        _ => None,
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `value` is a reference object.
pub fn is_ref(value: &Value) -> bool {
    as_ref_object(value).is_some()
}

/// Offloads big values to a [`BlobStore`] and resolves references.
#[derive(Debug, Clone)]
pub struct ClaimCheck {
    store: Arc<dyn BlobStore>,
    threshold: usize,
}

impl ClaimCheck {
    /// A claim check over `store` that offloads values whose serialized
    /// JSON is larger than `threshold` bytes.
    pub fn new(store: Arc<dyn BlobStore>, threshold: usize) -> Self {
        Self { store, threshold }
    }

    /// The threshold in bytes.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn BlobStore> {
        &self.store
    }

    /// Whether `value` is a reference object.
    pub fn is_ref(value: &Value) -> bool {
        is_ref(value)
    }

    /// `value` itself if its serialized JSON fits the threshold, else a
    /// reference to it, stored under `blobs/sha256/<hex>`. The key depends
    /// on the content only, so an offload retried after a crash writes the
    /// same object again and returns the same reference.
    pub async fn offload(&self, value: Value) -> Result<Value, BlobError> {
        if is_ref(&value) {
            return Ok(value);
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| BlobError::Json {
            target: "value".into(),
            message: e.to_string(),
        })?;
        if bytes.len() <= self.threshold {
            return Ok(value);
        }
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        let uri = self
            .store
            .put(&format!("{BLOB_PREFIX}{sha256}"), bytes)
            .await?;
        Ok(Reference { uri, size, sha256 }.to_value())
    }

    /// `value` with every reference anywhere inside it replaced by the data
    /// it names, checking each object's size and SHA-256 against its
    /// reference. References inside referenced data are resolved too.
    pub async fn resolve(&self, mut value: Value) -> Result<Value, BlobError> {
        // The same object named twice (a jq expression that copies a
        // reference) is read once.
        let mut fetched: HashMap<String, Value> = HashMap::new();
        for _ in 0..=MAX_DEPTH {
            let mut found = Vec::new();
            find_refs(&value, &mut String::new(), &mut found);
            if found.is_empty() {
                return Ok(value);
            }
            for (path, reference) in found {
                let reference = reference?;
                let data = match fetched.get(&reference.uri) {
                    Some(v) => v.clone(),
                    None => {
                        let v = self.fetch(&reference, &path).await?;
                        fetched.insert(reference.uri.clone(), v.clone());
                        v
                    }
                };
                if let Some(slot) = value.pointer_mut(&path) {
                    *slot = data;
                }
            }
        }
        let mut found = Vec::new();
        find_refs(&value, &mut String::new(), &mut found);
        Err(BlobError::TooDeep {
            path: found.into_iter().next().map(|(p, _)| p).unwrap_or_default(),
        })
    }

    async fn fetch(&self, reference: &Reference, path: &str) -> Result<Value, BlobError> {
        let bytes = self.store.get(&reference.uri).await?;
        let actual_size = bytes.len() as u64;
        let actual_sha256 = sha256_hex(&bytes);
        if actual_size != reference.size || actual_sha256 != reference.sha256 {
            return Err(BlobError::Integrity {
                uri: reference.uri.clone(),
                path: path.to_owned(),
                expected_size: reference.size,
                actual_size,
                expected_sha256: reference.sha256.clone(),
                actual_sha256,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| BlobError::Json {
            target: reference.uri.clone(),
            message: e.to_string(),
        })
    }
}

/// Collects (JSON pointer, parsed reference) of every outermost reference.
fn find_refs(
    value: &Value,
    path: &mut String,
    out: &mut Vec<(String, Result<Reference, BlobError>)>,
) {
    if let Some(r) = Reference::parse(value, path) {
        out.push((path.clone(), r));
        return;
    }
    let len = path.len();
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                push_token(path, k);
                find_refs(v, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push('/');
                path.push_str(&i.to_string());
                find_refs(v, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Appends `/token` with JSON-pointer escaping (`~` -> `~0`, `/` -> `~1`).
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

/// Builds a reference object by hand (tests, adapters that announce an
/// object they did not write).
pub fn reference(uri: impl Into<String>, size: u64, sha256: impl Into<String>) -> Value {
    let mut inner = Map::new();
    inner.insert("uri".into(), Value::String(uri.into()));
    inner.insert("size".into(), Value::from(size));
    inner.insert("sha256".into(), Value::String(sha256.into()));
    let mut outer = Map::new();
    outer.insert(REF_KEY.into(), Value::Object(inner));
    Value::Object(outer)
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// Runs a future whose I/O is in memory (it never waits on anything).
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[derive(Debug, Default)]
    struct Mem {
        objects: Mutex<HashMap<String, Vec<u8>>>,
        puts: AtomicUsize,
        gets: AtomicUsize,
    }

    #[async_trait]
    impl BlobStore for Mem {
        async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<String, BlobError> {
            self.puts.fetch_add(1, Ordering::SeqCst);
            let uri = format!("mem://bucket/{key}");
            self.objects
                .lock()
                .expect("lock")
                .insert(uri.clone(), bytes);
            Ok(uri)
        }
        async fn get(&self, uri: &str) -> Result<Vec<u8>, BlobError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.objects
                .lock()
                .expect("lock")
                .get(uri)
                .cloned()
                .ok_or_else(|| BlobError::NotFound { uri: uri.into() })
        }
    }

    fn setup(threshold: usize) -> (Arc<Mem>, ClaimCheck) {
        let mem = Arc::new(Mem::default());
        (mem.clone(), ClaimCheck::new(mem, threshold))
    }

    fn big(n: usize) -> Value {
        json!({"blob": "x".repeat(n), "n": n})
    }

    #[test]
    fn small_values_pass_unchanged_and_big_ones_become_references() {
        let (mem, claims) = setup(100);
        let small = json!({"a": 1});
        assert_eq!(
            block_on(claims.offload(small.clone())).expect("offload"),
            small
        );
        assert_eq!(mem.puts.load(Ordering::SeqCst), 0);

        let value = big(500);
        let bytes = serde_json::to_vec(&value).expect("json");
        let r = block_on(claims.offload(value.clone())).expect("offload");
        assert!(ClaimCheck::is_ref(&r));
        let parsed = Reference::parse(&r, "")
            .expect("a ref")
            .expect("well-formed");
        assert_eq!(parsed.size, bytes.len() as u64);
        assert_eq!(parsed.sha256, sha256_hex(&bytes));
        assert_eq!(
            parsed.uri,
            format!("mem://bucket/{BLOB_PREFIX}{}", parsed.sha256)
        );
        assert!(serde_json::to_vec(&r).expect("json").len() < 300);
        assert_eq!(block_on(claims.resolve(r)).expect("resolve"), value);
    }

    #[test]
    fn the_threshold_is_exclusive() {
        let value = json!("abcdefgh");
        let size = serde_json::to_vec(&value).expect("json").len();
        let (_, at) = setup(size);
        assert_eq!(block_on(at.offload(value.clone())).expect("offload"), value);
        let (_, below) = setup(size - 1);
        assert!(is_ref(&block_on(below.offload(value)).expect("offload")));
        assert_eq!(at.threshold(), size);
    }

    #[test]
    fn offload_is_content_addressed_and_idempotent() {
        let (mem, claims) = setup(10);
        let a = block_on(claims.offload(big(100))).expect("offload");
        let b = block_on(claims.offload(big(100))).expect("offload");
        assert_eq!(a, b);
        assert_eq!(mem.objects.lock().expect("lock").len(), 1);
        let c = block_on(claims.offload(big(101))).expect("offload");
        assert_ne!(a, c);
        // A reference is never wrapped in another one.
        assert_eq!(block_on(claims.offload(a.clone())).expect("offload"), a);
    }

    #[test]
    fn references_nested_anywhere_are_resolved_and_read_once() {
        let (mem, claims) = setup(10);
        let data = big(50);
        let r = block_on(claims.offload(data.clone())).expect("offload");
        let other = block_on(claims.offload(big(60))).expect("offload");
        // What a jq expression like `{first: .a, list: [.a, .b], n: 1}` makes.
        let doc = json!({"first": r, "list": [r, other, {"deep": {"a/b~c": r}}], "n": 1});
        let resolved = block_on(claims.resolve(doc)).expect("resolve");
        assert_eq!(
            resolved,
            json!({"first": data, "list": [data, big(60), {"deep": {"a/b~c": data}}], "n": 1})
        );
        assert_eq!(mem.gets.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn references_inside_referenced_data_are_resolved() {
        let (_, claims) = setup(10);
        let inner_data = big(40);
        let inner = block_on(claims.offload(inner_data.clone())).expect("offload");
        let outer = block_on(claims.offload(json!({"inner": inner, "pad": "y".repeat(30)})))
            .expect("offload");
        assert!(is_ref(&outer));
        let resolved = block_on(claims.resolve(outer)).expect("resolve");
        assert_eq!(
            resolved,
            json!({"inner": inner_data, "pad": "y".repeat(30)})
        );
    }

    #[test]
    fn a_changed_object_is_rejected_with_its_path() {
        let (mem, claims) = setup(10);
        let r = block_on(claims.offload(big(50))).expect("offload");
        let uri = Reference::parse(&r, "")
            .expect("ref")
            .expect("well-formed")
            .uri;
        // Same length, other content: only the digest tells.
        let tampered = serde_json::to_vec(&big(50))
            .expect("json")
            .into_iter()
            .map(|b| if b == b'x' { b'z' } else { b })
            .collect();
        mem.objects
            .lock()
            .expect("lock")
            .insert(uri.clone(), tampered);
        let err = block_on(claims.resolve(json!({"input": [r]}))).expect_err("tampered");
        match err {
            BlobError::Integrity {
                uri: u,
                path,
                expected_size,
                actual_size,
                expected_sha256,
                actual_sha256,
            } => {
                assert_eq!(u, uri);
                assert_eq!(path, "/input/0");
                assert_eq!(expected_size, actual_size);
                assert_ne!(expected_sha256, actual_sha256);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!BlobError::NotFound { uri: "u".into() }.is_retryable());
    }

    #[test]
    fn a_wrong_size_or_missing_object_or_malformed_reference_is_an_error() {
        let (_, claims) = setup(10);
        let r = block_on(claims.offload(big(50))).expect("offload");
        let p = Reference::parse(&r, "").expect("ref").expect("well-formed");
        let wrong_size = reference(p.uri.clone(), p.size + 1, p.sha256.clone());
        assert!(matches!(
            block_on(claims.resolve(wrong_size)),
            Err(BlobError::Integrity { .. })
        ));
        let missing = reference("mem://bucket/nope", 3, "0".repeat(64));
        assert!(
            matches!(block_on(claims.resolve(missing)), Err(BlobError::NotFound { uri }) if uri == "mem://bucket/nope")
        );
        let bad = json!({"a": {REF_KEY: {"uri": "mem://x", "size": "big"}}});
        assert!(
            matches!(block_on(claims.resolve(bad)), Err(BlobError::BadReference { path, .. }) if path == "/a")
        );
        let bad_sha = reference("mem://x", 1, "nothex");
        assert!(matches!(
            block_on(claims.resolve(bad_sha)),
            Err(BlobError::BadReference { .. })
        ));
        // An object with the key and something else is data, not a reference.
        let not_ref = json!({REF_KEY: {}, "other": 1});
        assert!(!is_ref(&not_ref));
        assert_eq!(
            block_on(claims.resolve(not_ref.clone())).expect("resolve"),
            not_ref
        );
    }

    #[test]
    fn a_stored_object_that_is_not_json_is_an_error() {
        let (mem, claims) = setup(10);
        let bytes = b"not json".to_vec();
        let uri = block_on(mem.put("raw", bytes.clone())).expect("put");
        let r = reference(uri.clone(), bytes.len() as u64, sha256_hex(&bytes));
        assert!(
            matches!(block_on(claims.resolve(r)), Err(BlobError::Json { target, .. }) if target == uri)
        );
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
