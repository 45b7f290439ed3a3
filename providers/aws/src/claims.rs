//! The claim check in AWS mode: payloads above a threshold (default
//! [`DEFAULT_THRESHOLD`], 200 KiB) go to S3 and travel as references
//! `{"$trigflow.ref": {uri, size, sha256}}` (see `trigflow_core::claim`).
//!
//! - [`crate::LambdaInvoker::with_claim_check`]: a step's input above the
//!   threshold is stored and the function receives the reference under
//!   `input` (a function reads it from S3; its role needs `s3:GetObject`).
//! - [`crate::SqsSink::with_claim_check`]: an event (or timer) whose data is
//!   above the threshold is published with the reference as its data, so
//!   messages stay within SQS's 256 KiB.
//! - [`crate::Orchestrator::with_claim_check`]: references in the data of
//!   incoming events (queue messages, destination records) are resolved
//!   before the engine sees them, so workflows never see a reference.
//!
//! Objects are named by their SHA-256, so a retried offload writes the same
//! object again and yields the same reference.

use std::sync::Arc;

use trigflow_core::claim::{BlobError, ClaimCheck};
use trigflow_core::cloudevents::{AttributesReader, Data, Event};
use trigflow_objstore::{S3Blobs, S3Settings};

pub use trigflow_core::claim::DEFAULT_THRESHOLD;

/// The S3 endpoint to use when none is configured: `AWS_ENDPOINT_URL_S3`,
/// `AWS_ENDPOINT_URL`, else the regional AWS endpoint. `lookup` reads the
/// environment (tests pass a map).
pub fn s3_endpoint(lookup: impl Fn(&str) -> Option<String>) -> String {
    let set = |k: &str| lookup(k).filter(|v| !v.is_empty());
    set("AWS_ENDPOINT_URL_S3")
        .or_else(|| set("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| {
            let region = set("AWS_REGION")
                .or_else(|| set("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into());
            format!("https://s3.{region}.amazonaws.com")
        })
}

/// A claim check on `bucket`, with credentials and region from the process
/// environment (in Lambda, the execution role's) and the endpoint from
/// [`s3_endpoint`].
pub fn s3_claim_check(
    bucket: &str,
    threshold: usize,
) -> Result<ClaimCheck, trigflow_objstore::ObjStoreError> {
    let settings =
        S3Settings::new(s3_endpoint(|k| std::env::var(k).ok()), bucket).with_process_env();
    Ok(ClaimCheck::new(
        Arc::new(S3Blobs::new(settings)?),
        threshold,
    ))
}

/// Whether a reference appears anywhere in `v`.
fn contains_ref(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    if trigflow_core::claim::is_ref(v) {
        return true;
    }
    match v {
        Value::Array(a) => a.iter().any(contains_ref),
        Value::Object(o) => o.values().any(contains_ref),
        _ => false,
    }
}

fn json_data(event: &Event) -> Option<serde_json::Value> {
    match event.data()? {
        Data::Json(v) => Some(v.clone()),
        _ => None,
    }
}

/// `event` with its data replaced by a reference if its JSON is above the
/// threshold; `None` when it stays as it is.
pub async fn offload_event(claims: &ClaimCheck, event: &Event) -> Result<Option<Event>, BlobError> {
    let Some(data) = json_data(event) else {
        return Ok(None);
    };
    let offloaded = claims.offload(data).await?;
    if !ClaimCheck::is_ref(&offloaded) {
        return Ok(None);
    }
    let mut out = event.clone();
    let content_type = event
        .datacontenttype()
        .unwrap_or("application/json")
        .to_owned();
    out.set_data(content_type, offloaded);
    Ok(Some(out))
}

/// `event` with every reference in its data resolved; `None` when its
/// data holds none.
pub async fn resolve_event(claims: &ClaimCheck, event: &Event) -> Result<Option<Event>, BlobError> {
    let Some(data) = json_data(event) else {
        return Ok(None);
    };
    if !contains_ref(&data) {
        return Ok(None);
    }
    let resolved = claims.resolve(data).await?;
    let mut out = event.clone();
    let content_type = event
        .datacontenttype()
        .unwrap_or("application/json")
        .to_owned();
    out.set_data(content_type, resolved);
    Ok(Some(out))
}
