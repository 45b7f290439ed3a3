//! [`StateStore`] on DynamoDB with conditional writes.
//!
//! One table with a string partition key `pk` (no sort key). A stored value
//! is a *head* item `{pk, v, n, d | c}`:
//! - `v` is the version: 128 random bits (hex) drawn afresh on every write.
//!   Random rather than a counter because a counter lives in the item, and
//!   deleting the item would reset it: a key deleted and recreated would hand
//!   out `1` again, and a stale reader holding the old `1` would match the
//!   new value (ABA). A fresh random version never repeats (a collision is
//!   a 2^-122 event), with no extra item to contend on.
//! - `n` counts the writes since the item was created (`ADD n 1`), for
//!   operators looking at contention; versions are compared on `v` only.
//! - `d` holds the value inline when it fits in one item (DynamoDB items are
//!   at most 400 KB; [`INLINE_LIMIT`] leaves room for the other attributes,
//!   also where binary is counted base64-encoded, as moto does). Larger values are split into chunk items `{pk: key␟v␟i,
//!   of: key, d}` and the head records their count in `c`. The chunks are
//!   named by the version that wrote them, so a reader never mixes two
//!   writes, and a write replaces the chunks in one `TransactWriteItems`
//!   with the conditional head update: either all of it lands or none.
//!   A transaction carries at most 100 items and 4 MB, so values above
//!   [`MAX_VALUE`] are refused with [`StoreError::TooLarge`]; they are never
//!   truncated.
//!
//! Preconditions: `DoesNotExist` is `attribute_not_exists(pk)`,
//! `MatchesVersion(v)` is `#v = :v`; a failed condition is
//! [`StoreError::PreconditionFailed`] and changes nothing.
//!
//! `list` is a consistent `Scan` with `begins_with(pk, prefix)`, sorted on
//! the client: fine for operators and recovery on small tables, but it reads
//! the whole table; a per-prefix index is future work.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, KeySchemaElement, KeyType, Put,
    ReturnValue, ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TransactWriteItem,
    Update,
};
use trigflow_core::seams::{Precondition, StateStore, StoreError, Stored, Version};

use crate::retention::{Expiry, Retention, TTL_ATTRIBUTE};

/// Largest value stored inline in the head item (and size of a chunk).
/// DynamoDB counts a binary attribute's raw bytes against the 400 KB item
/// limit; moto counts its base64 text (4/3 as many), so 350 KiB passed on
/// DynamoDB and failed on moto's `UpdateItem`. 290 KiB fits both, with
/// room for the other attributes.
pub const INLINE_LIMIT: usize = 290 * 1024;
/// Most chunks one value may have: with the head and the previous value's
/// chunk deletions a write stays within a transaction's 100 items, and
/// the chunks within its 4 MB.
pub const MAX_CHUNKS: usize = 10;
/// Largest value the store accepts (with the default chunk size).
pub const MAX_VALUE: usize = INLINE_LIMIT * MAX_CHUNKS;

/// How often a read retries when the chunks it wants were replaced by a
/// concurrent write between its head read and its chunk reads.
const READ_ATTEMPTS: usize = 20;
/// How often an unconditional chunked write retries after losing a race.
const WRITE_ATTEMPTS: usize = 50;
/// Most items one `TransactWriteItems` takes.
const TRANSACTION_ITEMS: usize = 100;

type Item = HashMap<String, AttributeValue>;

/// What an inline write did.
enum Inline {
    /// Written, with this version.
    Written(Version),
    /// Not written: go through a transaction (`split`: as chunks).
    Transact {
        /// Store as chunks even though the value fits inline.
        split: bool,
    },
}

/// A [`StateStore`] on one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    chunk_size: usize,
    retention: Option<Retention>,
}

impl DynamoStore {
    /// A store on `table` (which must exist; see [`DynamoStore::create_table`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            chunk_size: INLINE_LIMIT,
            retention: None,
        }
    }

    /// Lets finished executions expire: their items get the table's TTL
    /// attribute ([`TTL_ATTRIBUTE`]) as `retention` decides (see
    /// [`crate::retention`]). Without it, nothing expires.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Sets the inline limit and chunk size (tests use a small one to
    /// exercise chunking with small values). The largest value accepted is
    /// then `chunk_size * MAX_CHUNKS`. Clamped to `1..=INLINE_LIMIT`.
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Self {
        self.chunk_size = chunk_size.clamp(1, INLINE_LIMIT);
        self
    }

    /// The largest value this store accepts.
    pub fn max_value(&self) -> usize {
        self.chunk_size * MAX_CHUNKS
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table (on-demand billing, key `pk`) unless it exists.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let attr = AttributeDefinition::builder()
            .attribute_name("pk")
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| build_error(&self.table, e))?;
        let key = KeySchemaElement::builder()
            .attribute_name("pk")
            .key_type(KeyType::Hash)
            .build()
            .map_err(|e| build_error(&self.table, e))?;
        match self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr)
            .key_schema(key)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(backend(&self.table, "CreateTable", e)),
        }
    }

    /// The number of items in the table, chunks included (for tests that
    /// check that replaced chunks are deleted).
    pub async fn raw_item_count(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend(&self.table, "Scan", e))?;
            n += out.items().len();
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(n),
            }
        }
    }

    fn key_of(key: &str) -> Item {
        HashMap::from([("pk".to_owned(), AttributeValue::S(key.to_owned()))])
    }

    async fn head(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend(key, "GetItem", e))?;
        Ok(out.item)
    }

    /// Writes a value that fits inline with one conditional `UpdateItem`.
    /// [`Inline::Transact`]: the current value is chunked and the
    /// precondition may hold, so the write must go through
    /// [`DynamoStore::put_transact`], which also deletes the old chunks; or
    /// the service found the item too large, so the value must be split.
    async fn put_inline(
        &self,
        key: &str,
        value: &[u8],
        pre: &Precondition,
        ttl: Option<i64>,
    ) -> Result<Inline, StoreError> {
        let version = new_version();
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(key)))
            .update_expression(match ttl {
                None => "SET #d = :d, #v = :nv ADD #n :one",
                Some(_) => "SET #d = :d, #v = :nv, #ttl = if_not_exists(#ttl, :ttl) ADD #n :one",
            })
            .expression_attribute_names("#d", "d")
            .expression_attribute_names("#v", "v")
            .expression_attribute_names("#n", "n")
            .expression_attribute_values(":d", AttributeValue::B(Blob::new(value)))
            .expression_attribute_values(":nv", AttributeValue::S(version.0.clone()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(at) = ttl {
            req = req
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":ttl", AttributeValue::N(at.to_string()));
        }
        // Every condition also requires the current value to be inline, so
        // that a chunked value is never overwritten without deleting its
        // chunks.
        req = match pre {
            Precondition::None => req
                .condition_expression("attribute_not_exists(#c)")
                .expression_attribute_names("#c", "c"),
            Precondition::DoesNotExist => req.condition_expression("attribute_not_exists(pk)"),
            Precondition::MatchesVersion(v) => req
                .condition_expression("#v = :v AND attribute_not_exists(#c)")
                .expression_attribute_names("#c", "c")
                .expression_attribute_values(":v", AttributeValue::S(v.0.clone())),
        };
        match req.send().await {
            Ok(_) => Ok(Inline::Written(version)),
            Err(e) => {
                // The item limit counts every attribute, and emulators
                // count differently (moto counts binary base64-encoded and
                // adds the replaced value): split rather than fail.
                if e.as_service_error().is_some_and(|s| {
                    s.code() == Some("ValidationException")
                        && s.message().is_some_and(|m| m.contains("size"))
                }) {
                    return Ok(Inline::Transact { split: true });
                }
                let Some(failed) = e.as_service_error().and_then(|s| match s {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => Some(c),
                    _ => None,
                }) else {
                    return Err(backend(key, "UpdateItem", e));
                };
                if matches!(pre, Precondition::DoesNotExist) {
                    return Err(precondition_failed(key));
                }
                // Which half of the condition failed? The old item comes back
                // with the error where the service supports it; else read it.
                let current = match failed.item() {
                    Some(item) => Some(item.clone()),
                    None => self.head(key).await?,
                };
                let chunked = current.as_ref().is_some_and(|i| i.contains_key("c"));
                let holds = match (pre, &current) {
                    (Precondition::MatchesVersion(v), Some(item)) => {
                        item.get("v").and_then(|a| a.as_s().ok()) == Some(&v.0)
                    }
                    (Precondition::MatchesVersion(_), None) => false,
                    _ => true,
                };
                if chunked && holds {
                    Ok(Inline::Transact { split: false })
                } else if holds {
                    // The value changed between the write and the read (it
                    // was chunked and now is not): the caller's version, if
                    // any, still matches, so try again.
                    Err(StoreError::Backend {
                        key: key.to_owned(),
                        message: "value changed shape during the write; retry".into(),
                        retryable: true,
                    })
                } else {
                    Err(precondition_failed(key))
                }
            }
        }
    }

    /// Writes any value (inline or chunked) over any current value in one
    /// transaction: the head update conditioned on the head just read, the
    /// new chunks, the deletion of the old chunks and, for a value that
    /// expires, the TTL of its related items (as many as fit; the rest
    /// right after, best effort).
    /// `split`: store the value as (at least two) chunks even if it would
    /// fit inline.
    async fn put_transact(
        &self,
        key: &str,
        value: &[u8],
        pre: &Precondition,
        expiry: Option<&Expiry>,
        split: bool,
    ) -> Result<Version, StoreError> {
        for _ in 0..WRITE_ATTEMPTS {
            let head = self.head(key).await?;
            let current = head.as_ref().map(|item| head_meta(key, item)).transpose()?;
            match (pre, &current) {
                (Precondition::DoesNotExist, Some(_)) => return Err(precondition_failed(key)),
                (Precondition::MatchesVersion(_), None) => return Err(precondition_failed(key)),
                (Precondition::MatchesVersion(v), Some((cur, _))) if v != cur => {
                    return Err(precondition_failed(key));
                }
                _ => {}
            }
            let version = new_version();
            let mut items = Vec::new();
            let chunks: Vec<&[u8]> = if split && !value.is_empty() {
                value
                    .chunks(value.len().div_ceil(2).min(self.chunk_size))
                    .collect()
            } else if value.len() <= self.chunk_size {
                Vec::new()
            } else {
                value.chunks(self.chunk_size).collect()
            };
            let mut update = Update::builder()
                .table_name(&self.table)
                .set_key(Some(Self::key_of(key)))
                .expression_attribute_names("#v", "v")
                .expression_attribute_names("#n", "n")
                .expression_attribute_names("#d", "d")
                .expression_attribute_names("#c", "c")
                .expression_attribute_values(":nv", AttributeValue::S(version.0.clone()))
                .expression_attribute_values(":one", AttributeValue::N("1".into()));
            let set_ttl = match expiry {
                Some(e) => {
                    update = update
                        .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                        .expression_attribute_values(":ttl", AttributeValue::N(e.at_s.to_string()));
                    ", #ttl = if_not_exists(#ttl, :ttl)"
                }
                None => "",
            };
            update = if chunks.is_empty() {
                update
                    .update_expression(format!(
                        "SET #d = :d, #v = :nv{set_ttl} REMOVE #c ADD #n :one"
                    ))
                    .expression_attribute_values(":d", AttributeValue::B(Blob::new(value)))
            } else {
                update
                    .update_expression(format!(
                        "SET #c = :c, #v = :nv{set_ttl} REMOVE #d ADD #n :one"
                    ))
                    .expression_attribute_values(":c", AttributeValue::N(chunks.len().to_string()))
            };
            update = match &current {
                None => update.condition_expression("attribute_not_exists(pk)"),
                Some((cur, _)) => update
                    .condition_expression("#v = :v")
                    .expression_attribute_values(":v", AttributeValue::S(cur.0.clone())),
            };
            items.push(
                TransactWriteItem::builder()
                    .update(update.build().map_err(|e| build_error(key, e))?)
                    .build(),
            );
            for (i, chunk) in chunks.iter().enumerate() {
                let mut item = HashMap::from([
                    (
                        "pk".to_owned(),
                        AttributeValue::S(chunk_key(key, &version, i)),
                    ),
                    ("of".to_owned(), AttributeValue::S(key.to_owned())),
                    ("d".to_owned(), AttributeValue::B(Blob::new(*chunk))),
                ]);
                if let Some(e) = expiry {
                    item.insert(
                        TTL_ATTRIBUTE.to_owned(),
                        AttributeValue::N(e.at_s.to_string()),
                    );
                }
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| build_error(key, e))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
            if let Some((old, old_chunks)) = &current {
                for i in 0..*old_chunks {
                    let delete = Delete::builder()
                        .table_name(&self.table)
                        .set_key(Some(Self::key_of(&chunk_key(key, old, i))))
                        .build()
                        .map_err(|e| build_error(key, e))?;
                    items.push(TransactWriteItem::builder().delete(delete).build());
                }
            }
            let related = expiry.map(|e| e.related.as_slice()).unwrap_or_default();
            let room = TRANSACTION_ITEMS
                .saturating_sub(items.len())
                .min(related.len());
            if let Some(e) = expiry {
                for k in &related[..room] {
                    let update = self
                        .ttl_update(k, e.at_s)
                        .build()
                        .map_err(|err| build_error(key, err))?;
                    items.push(TransactWriteItem::builder().update(update).build());
                }
            }
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => {
                    if let Some(e) = expiry {
                        self.expire_best_effort(&related[room..], e.at_s).await;
                    }
                    return Ok(version);
                }
                Err(e) => {
                    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as T;
                    let lost_race = match e.as_service_error() {
                        // Only the head's condition is about a race (item
                        // 0); a related item's condition fails when it is
                        // missing, which trying again cannot fix.
                        Some(T::TransactionCanceledException(t)) => {
                            let reasons = t.cancellation_reasons();
                            reasons
                                .first()
                                .is_some_and(|r| r.code() == Some("ConditionalCheckFailed"))
                                || reasons
                                    .iter()
                                    .any(|r| r.code() == Some("TransactionConflict"))
                        }
                        Some(other) => other.code() == Some("TransactionConflictException"),
                        None => false,
                    };
                    if !lost_race {
                        return Err(backend(key, "TransactWriteItems", e));
                    }
                    // Someone wrote between our read and our transaction. An
                    // unconditional write tries again on the fresh value; a
                    // conditional one re-checks its precondition against it.
                }
            }
        }
        Err(StoreError::Backend {
            key: key.to_owned(),
            message: format!("chunked write lost {WRITE_ATTEMPTS} races in a row"),
            retryable: true,
        })
    }

    /// `SET ttl = if_not_exists(ttl, at)` on an existing item.
    fn ttl_update(&self, key: &str, at_s: i64) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(key)))
            .update_expression("SET #ttl = if_not_exists(#ttl, :ttl)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":ttl", AttributeValue::N(at_s.to_string()))
    }

    /// Sets the TTL of items outside a transaction; a failure leaves an
    /// item that never expires, which is safe (only storage is lost).
    async fn expire_best_effort(&self, keys: &[String], at_s: i64) {
        for k in keys {
            let r = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(Self::key_of(k)))
                .update_expression("SET #ttl = if_not_exists(#ttl, :ttl)")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
                .expression_attribute_values(":ttl", AttributeValue::N(at_s.to_string()))
                .send()
                .await;
            if let Err(e) = r {
                tracing::warn!(key = %k, error = %DisplayErrorContext(&e), "could not set the TTL");
            }
        }
    }

    async fn delete_chunks(&self, key: &str, version: &Version, chunks: usize) {
        // Best effort: the head no longer names these chunks, so one left
        // behind is garbage, never read.
        for i in 0..chunks {
            let _ = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(Self::key_of(&chunk_key(key, version, i))))
                .send()
                .await;
        }
    }
}

#[async_trait]
impl StateStore for DynamoStore {
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        for _ in 0..READ_ATTEMPTS {
            let Some(item) = self.head(key).await? else {
                return Ok(None);
            };
            let (version, chunks) = head_meta(key, &item)?;
            if chunks == 0 {
                let value = match item.get("d") {
                    Some(AttributeValue::B(b)) => b.clone().into_inner(),
                    _ => return Err(corrupt(key, "head item has neither `d` nor `c`")),
                };
                return Ok(Some(Stored { value, version }));
            }
            let reads = (0..chunks).map(|i| {
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .set_key(Some(Self::key_of(&chunk_key(key, &version, i))))
                    .consistent_read(true)
                    .send()
            });
            let mut value = Vec::new();
            let mut complete = true;
            for out in futures::future::join_all(reads).await {
                let out = out.map_err(|e| backend(key, "GetItem", e))?;
                match out.item.as_ref().and_then(|i| i.get("d")) {
                    Some(AttributeValue::B(b)) => value.extend_from_slice(b.as_ref()),
                    _ => {
                        complete = false;
                        break;
                    }
                }
            }
            if complete {
                return Ok(Some(Stored { value, version }));
            }
            // A concurrent write replaced the value (and deleted these
            // chunks) after our head read: read the new head.
        }
        Err(StoreError::Backend {
            key: key.to_owned(),
            message: format!("value kept changing during {READ_ATTEMPTS} reads"),
            retryable: true,
        })
    }

    async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
    ) -> Result<Version, StoreError> {
        if value.len() > self.max_value() {
            return Err(StoreError::TooLarge {
                key: key.to_owned(),
                size: value.len(),
                limit: self.max_value(),
            });
        }
        let expiry = self.retention.as_ref().and_then(|r| r.expiry(key, &value));
        // An expiring value with related items goes through a transaction,
        // so that they get their TTL with it.
        let alone = expiry.as_ref().is_none_or(|e| e.related.is_empty());
        let mut split = false;
        if value.len() <= self.chunk_size && alone {
            let ttl = expiry.as_ref().map(|e| e.at_s);
            for _ in 0..WRITE_ATTEMPTS {
                match self.put_inline(key, &value, &pre, ttl).await {
                    Ok(Inline::Written(v)) => return Ok(v),
                    Ok(Inline::Transact { split: s }) => {
                        split = s;
                        break;
                    }
                    Err(StoreError::Backend {
                        retryable: true, ..
                    }) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        self.put_transact(key, &value, &pre, expiry.as_ref(), split)
            .await
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<(), StoreError> {
        let mut req = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key_of(key)))
            .return_values(ReturnValue::AllOld);
        req = match &pre {
            Precondition::None => req,
            Precondition::DoesNotExist => req.condition_expression("attribute_not_exists(pk)"),
            Precondition::MatchesVersion(v) => req
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", "v")
                .expression_attribute_values(":v", AttributeValue::S(v.0.clone())),
        };
        match req.send().await {
            Ok(out) => {
                if let Some(old) = out.attributes
                    && let Ok((version, chunks)) = head_meta(key, &old)
                    && chunks > 0
                {
                    self.delete_chunks(key, &version, chunks).await;
                }
                Ok(())
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(precondition_failed(key))
            }
            Err(e) => Err(backend(key, "DeleteItem", e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .projection_expression("pk")
                .expression_attribute_names("#of", "of")
                .set_exclusive_start_key(start.take());
            // Chunk items carry `of`; only heads are keys.
            req = if prefix.is_empty() {
                req.filter_expression("attribute_not_exists(#of)")
            } else {
                req.filter_expression("begins_with(pk, :p) AND attribute_not_exists(#of)")
                    .expression_attribute_values(":p", AttributeValue::S(prefix.to_owned()))
            };
            let out = req.send().await.map_err(|e| backend(prefix, "Scan", e))?;
            for item in out.items() {
                if let Some(AttributeValue::S(k)) = item.get("pk") {
                    keys.push(k.clone());
                }
            }
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        // Byte order, as `list` promises; Rust's `String` order is byte order.
        keys.sort();
        Ok(keys)
    }
}

/// A fresh version: 128 random bits.
fn new_version() -> Version {
    Version(uuid::Uuid::new_v4().simple().to_string())
}

/// The key of chunk `i` of the value written with `version`. The unit
/// separator cannot appear in a version, so two keys never collide.
fn chunk_key(key: &str, version: &Version, i: usize) -> String {
    format!("{key}\u{1f}{version}\u{1f}{i}")
}

/// The version and chunk count of a head item.
fn head_meta(key: &str, item: &Item) -> Result<(Version, usize), StoreError> {
    let version = match item.get("v") {
        Some(AttributeValue::S(v)) => Version(v.clone()),
        _ => return Err(corrupt(key, "head item has no string `v`")),
    };
    let chunks = match item.get("c") {
        None => 0,
        Some(AttributeValue::N(n)) => n
            .parse()
            .map_err(|_| corrupt(key, "chunk count `c` is not a count"))?,
        Some(_) => return Err(corrupt(key, "chunk count `c` is not a number")),
    };
    Ok((version, chunks))
}

fn precondition_failed(key: &str) -> StoreError {
    StoreError::PreconditionFailed {
        key: key.to_owned(),
    }
}

fn corrupt(key: &str, what: &str) -> StoreError {
    StoreError::Backend {
        key: key.to_owned(),
        message: format!("item is not a trigflow value: {what}"),
        retryable: false,
    }
}

fn build_error(key: &str, e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Backend {
        key: key.to_owned(),
        message: format!("request build: {e}"),
        retryable: false,
    }
}

/// Error codes after which the same request may succeed.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
];

fn backend<E, R>(key: &str, op: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let retryable = match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => s.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c)),
        _ => false,
    };
    StoreError::Backend {
        key: key.to_owned(),
        message: format!("DynamoDB {op}: {}", DisplayErrorContext(&e)),
        retryable,
    }
}
