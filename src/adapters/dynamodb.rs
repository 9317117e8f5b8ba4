//! The Lambda's state in one DynamoDB table: [`DynamoStateStore`] implements
//! [`crate::ports::state::StateStore`].
//!
//! One item per (source, repository, digest, destination) group, holding the group as a JSON
//! document (`body`) with an optimistic `version`. Every save is conditional on that version,
//! so concurrent invocations cannot overwrite each other, and a push to several destinations is
//! one `TransactWriteItems` (all or nothing, at most 100 items: ECR allows 25 destinations).
//! Each item also names the save that wrote it (`writer`): a save whose first attempt landed but
//! whose answer was lost recognises its own write when the SDK's retry fails on the version.
//!
//! Two sparse global secondary indexes spare the hot path any scan:
//! - `open` (`open` = "open", `due_at`): groups with an expectation still waiting for a check;
//!   the attribute is removed once nothing is left to check, so the index only holds work;
//! - `history` (`day` of the first push, `first_push`): the audit history by time, read by
//!   `ecr-replication-auditor audit` ([`HistoryReader::first_pushed_between`]).
//!
//! Every item expires (`expires_at`, DynamoDB TTL) `HISTORY_RETENTION_DAYS` after its last event,
//! so the table doubles as the audit history without growing for ever.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use serde::{Deserialize, Serialize};

use crate::domain::config::Destination;
use crate::domain::correlate::{Claims, CopySeen, Group, GroupKey};
use crate::domain::deletion::{
    DeleteConfirmation, DeleteCounted, DeleteKind, DeleteSeen, DeleteWatch,
};
use crate::domain::ids::{AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName};
use crate::domain::ledger::{Confirmation, Counted, StillExpected, TrackedGroup, Watch};
use crate::domain::time::Timestamp;
use crate::ports::history::{Day, HistoryReader};
use crate::ports::state::{StateStore, StoreError, Versioned};

/// The names of the table's indexes, as template.yaml defines them.
pub const OPEN_INDEX: &str = "open";
pub const HISTORY_INDEX: &str = "history";
/// The one partition of the `open` index: it holds only groups awaiting a check (minutes to
/// hours of pushes), small enough for one partition and one query per sweep.
const OPEN: &str = "open";
/// BatchGetItem takes at most 100 keys.
const MAX_BATCH_GET: usize = 100;

/// The DynamoDB adapter.
pub struct DynamoStateStore {
    client: Client,
    table: String,
    /// How long an item is kept after its last event (the TTL attribute).
    retention_ms: i64,
}

impl DynamoStateStore {
    pub fn new(client: Client, table: impl Into<String>, retention_days: u32) -> Self {
        DynamoStateStore {
            client,
            table: table.into(),
            retention_ms: i64::from(retention_days) * 86_400_000,
        }
    }

    /// An error that outlived the SDK's retries, and whether a retry can help.
    fn failed<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        operation: &str,
        index: Option<&str>,
        err: &SdkError<E, HttpResponse>,
    ) -> StoreError {
        let message = self.describe(operation, index, err);
        if super::sdk::is_transient(err) {
            StoreError::Transient(message)
        } else {
            StoreError::Refused(message)
        }
    }

    /// Names the request, the table and the index: the log of a failed invocation must say
    /// which store failed.
    fn describe<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        operation: &str,
        index: Option<&str>,
        err: &SdkError<E, HttpResponse>,
    ) -> String {
        let index = index.map(|i| format!(", index {i}")).unwrap_or_default();
        format!(
            "{operation} on table {:?}{index}: {}",
            self.table,
            super::sdk::describe(err)
        )
    }
}

fn is_condition_failure<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(err, SdkError::ServiceError(e) if e.err().code() == Some("ConditionalCheckFailedException"))
}

/// The attribute naming the save that last wrote an item (see [`write_token`]).
const WRITER: &str = "writer";

/// A name for one save, unique across processes (a random number per process and a counter),
/// written into every item the save puts. A write can land in DynamoDB while its answer is lost
/// (a timeout, a reset connection); the SDK then sends it again, and the repeated conditional
/// write fails against the item it wrote itself. Seeing its own name in the item DynamoDB
/// returns with the failure (`ReturnValuesOnConditionCheckFailure`), the save knows it landed,
/// instead of taking it for another invocation's change and dropping what it had found.
fn write_token() -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static SAVES: AtomicU64 = AtomicU64::new(0);
    // RandomState's keys come from the operating system's random source.
    let process = *PROCESS.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    format!("{process:016x}-{}", SAVES.fetch_add(1, Ordering::Relaxed))
}

/// Whether `item`, as DynamoDB returned it with a failed condition, was written by `token`.
fn written_by(item: Option<&HashMap<String, AttributeValue>>, token: &str) -> bool {
    matches!(item.and_then(|i| i.get(WRITER)), Some(AttributeValue::S(t)) if t == token)
}

/// The partition key of a group. `#` separates parts; the body, not the key, is what is read back.
pub fn group_pk(key: &GroupKey) -> String {
    format!(
        "G#{}#{}#{}#{}#{}#{}",
        key.source_account,
        key.source_region,
        key.repository,
        key.digest,
        key.destination.account,
        key.destination.region
    )
}

fn rejection_pk(id: &EventId) -> String {
    format!("R#{id}")
}

impl StateStore for DynamoStateStore {
    async fn load(&self, keys: &[GroupKey]) -> Result<Vec<Versioned<TrackedGroup>>, StoreError> {
        let mut found: HashMap<String, Versioned<TrackedGroup>> = HashMap::new();
        if let [key] = keys {
            // One group (a copy event): a strongly consistent GetItem.
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(group_pk(key)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.failed("GetItem", None, &e))?;
            if let Some(item) = out.item {
                found.insert(group_pk(key), from_item(&item)?.1);
            }
        } else {
            for chunk in keys.chunks(MAX_BATCH_GET) {
                let mut request = KeysAndAttributes::builder().consistent_read(true);
                for key in chunk {
                    request = request.keys(HashMap::from([(
                        "pk".to_string(),
                        AttributeValue::S(group_pk(key)),
                    )]));
                }
                let mut pending = Some(
                    request
                        .build()
                        .map_err(|e| StoreError::Refused(e.to_string()))?,
                );
                // BatchGetItem may leave keys unprocessed under load: ask again for those.
                for _ in 0..10 {
                    let Some(request) = pending.take() else { break };
                    let out = self
                        .client
                        .batch_get_item()
                        .request_items(&self.table, request)
                        .send()
                        .await
                        .map_err(|e| self.failed("BatchGetItem", None, &e))?;
                    for item in out
                        .responses
                        .unwrap_or_default()
                        .remove(&self.table)
                        .unwrap_or_default()
                    {
                        let pk = match item.get("pk") {
                            Some(AttributeValue::S(pk)) => pk.clone(),
                            _ => return Err(StoreError::Refused("an item without pk".into())),
                        };
                        found.insert(pk, from_item(&item)?.1);
                    }
                    pending = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table));
                }
                if pending.is_some() {
                    return Err(StoreError::Transient(
                        "BatchGetItem kept keys unprocessed".into(),
                    ));
                }
            }
        }
        Ok(keys
            .iter()
            .map(|k| found.remove(&group_pk(k)).unwrap_or_default())
            .collect())
    }

    async fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> Result<bool, StoreError> {
        let token = write_token();
        let puts = groups
            .iter()
            .map(|(key, v)| self.put(key, v, &token))
            .collect::<Result<Vec<_>, _>>()?;
        if let [put] = &puts[..] {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(put.item().clone()))
                .condition_expression(put.condition_expression().unwrap_or_default())
                .set_expression_attribute_values(put.expression_attribute_values().cloned())
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            return match result {
                Ok(_) => Ok(true),
                // Our own write, landed on an earlier attempt whose answer was lost.
                Err(SdkError::ServiceError(s))
                    if matches!(s.err(), PutItemError::ConditionalCheckFailedException(c)
                        if written_by(c.item(), &token)) =>
                {
                    Ok(true)
                }
                Err(e) if is_condition_failure(&e) => Ok(false),
                Err(e) => Err(self.failed("PutItem", None, &e)),
            };
        }
        let items: Vec<TransactWriteItem> = puts
            .into_iter()
            .map(|p| TransactWriteItem::builder().put(p).build())
            .collect();
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                // A condition that failed, or another transaction on the same items: both mean
                // "someone else came first"; the caller loads again.
                let cancelled = matches!(&e, SdkError::ServiceError(s) if matches!(
                    s.err().code(),
                    Some("TransactionCanceledException" | "TransactionConflictException")
                ));
                if let SdkError::ServiceError(s) = &e
                    && let TransactWriteItemsError::TransactionCanceledException(c) = s.err()
                {
                    let reasons = c.cancellation_reasons();
                    // Our own transaction, landed on an earlier attempt whose answer was lost
                    // (DynamoDB's client request token usually answers that retry with success;
                    // this covers the case it does not). All or nothing: one item is proof.
                    if reasons.iter().any(|r| written_by(r.item(), &token)) {
                        return Ok(true);
                    }
                    if reasons.iter().any(|r| {
                        matches!(
                            r.code(),
                            Some("ThrottlingError" | "ProvisionedThroughputExceeded")
                        )
                    }) {
                        return Err(StoreError::Transient(self.describe(
                            "TransactWriteItems",
                            None,
                            &e,
                        )));
                    }
                }
                if cancelled {
                    Ok(false)
                } else {
                    Err(self.failed("TransactWriteItems", None, &e))
                }
            }
        }
    }

    async fn open(&self) -> Result<Vec<(GroupKey, Versioned<TrackedGroup>)>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OPEN_INDEX)
                .key_condition_expression("#open = :open")
                .expression_attribute_names("#open", "open")
                .expression_attribute_values(":open", AttributeValue::S(OPEN.into()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.failed("Query", Some(OPEN_INDEX), &e))?;
            for item in page.items.unwrap_or_default() {
                out.push(from_item(&item)?);
            }
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    async fn first_rejection(&self, id: &EventId, at: Timestamp) -> Result<bool, StoreError> {
        let token = write_token();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(rejection_pk(id)))
            .item(
                "expires_at",
                AttributeValue::N(self.expires_at(at).to_string()),
            )
            .item(WRITER, AttributeValue::S(token.clone()))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // Recorded by this very call, on an attempt whose answer was lost.
            Err(SdkError::ServiceError(s))
                if matches!(s.err(), PutItemError::ConditionalCheckFailedException(c)
                    if written_by(c.item(), &token)) =>
            {
                Ok(true)
            }
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(self.failed("PutItem", None, &e)),
        }
    }
}

/// One day in milliseconds: the `history` index has one partition per UTC day.
const DAY_MS: i64 = 86_400_000;

/// The `history` index's partition key for an instant: its UTC date, `YYYY-MM-DD`, as
/// [`DynamoStateStore`]'s save writes it for a group's first push.
pub fn history_day(t: Timestamp) -> String {
    t.to_string().chars().take(10).collect()
}

impl HistoryReader for DynamoStateStore {
    /// Every group whose first push is in `[from, until)`, read from the `history` index: one
    /// `Query` per UTC day (`day = D AND first_push BETWEEN from AND until - 1ms`, paged), never
    /// a scan, so the cost follows the period asked for, not the size of the table. Each day's
    /// groups go to `each_day` sorted by first push and key, so a day at a time is in memory.
    ///
    /// Only reads (`dynamodb:Query` on the table's indexes). The index is eventually
    /// consistent: a save from the last second may not show yet.
    async fn first_pushed_between(
        &self,
        from: Timestamp,
        until: Timestamp,
        mut each_day: impl FnMut(Day),
    ) -> Result<(), StoreError> {
        let Some(last) = until
            .millis()
            .checked_sub(1)
            .filter(|&l| l >= from.millis())
        else {
            return Ok(());
        };
        let mut day_start = from.millis() - from.millis().rem_euclid(DAY_MS);
        while day_start <= last {
            let day = history_day(Timestamp::from_millis(day_start));
            let mut groups: Vec<(i64, GroupKey, TrackedGroup)> = Vec::new();
            let mut start: Option<HashMap<String, AttributeValue>> = None;
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(HISTORY_INDEX)
                    .key_condition_expression("#day = :day AND #first BETWEEN :from AND :to")
                    // DAY is one of DynamoDB's reserved words.
                    .expression_attribute_names("#day", "day")
                    .expression_attribute_names("#first", "first_push")
                    .expression_attribute_values(":day", AttributeValue::S(day.clone()))
                    .expression_attribute_values(
                        ":from",
                        AttributeValue::N(from.millis().to_string()),
                    )
                    .expression_attribute_values(":to", AttributeValue::N(last.to_string()))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(|e| self.failed("Query", Some(HISTORY_INDEX), &e))?;
                for item in page.items.unwrap_or_default() {
                    let stored = stored_of(&item)?;
                    let first = match item.get("first_push") {
                        Some(AttributeValue::N(n)) => n.parse().unwrap_or(i64::MIN),
                        _ => i64::MIN,
                    };
                    groups.push((first, stored.key()?, stored.tracked()?));
                }
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
            groups.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            each_day(groups.into_iter().map(|(_, k, t)| (k, t)).collect());
            day_start += DAY_MS;
        }
        Ok(())
    }
}

impl DynamoStateStore {
    /// The TTL in epoch seconds, as DynamoDB wants it.
    fn expires_at(&self, last: Timestamp) -> i64 {
        last.millis().saturating_add(self.retention_ms) / 1000
    }

    /// The conditional put that saves one group at the next version, signed by `token`.
    fn put(
        &self,
        key: &GroupKey,
        v: &Versioned<TrackedGroup>,
        token: &str,
    ) -> Result<Put, StoreError> {
        let stored = StoredGroup::new(key, &v.value);
        let body =
            serde_json::to_string(&stored).map_err(|e| StoreError::Refused(e.to_string()))?;
        let last = v
            .value
            .group
            .last_event
            .unwrap_or(Timestamp::from_millis(0));
        let mut item = HashMap::from([
            ("pk".to_string(), AttributeValue::S(group_pk(key))),
            (
                "version".to_string(),
                AttributeValue::N((v.version + 1).to_string()),
            ),
            ("body".to_string(), AttributeValue::S(body)),
            (
                "expires_at".to_string(),
                AttributeValue::N(self.expires_at(last).to_string()),
            ),
            (WRITER.to_string(), AttributeValue::S(token.to_owned())),
        ]);
        if let Some(due) = v.value.due_at() {
            item.insert("open".into(), AttributeValue::S(OPEN.into()));
            item.insert("due_at".into(), AttributeValue::N(due.millis().to_string()));
        }
        if let Some(first) = v.value.first_push() {
            item.insert("day".into(), AttributeValue::S(history_day(first)));
            item.insert(
                "first_push".into(),
                AttributeValue::N(first.millis().to_string()),
            );
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let put = if v.version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(v.version.to_string()))
        };
        put.build().map_err(|e| StoreError::Refused(e.to_string()))
    }
}

fn stored_of(item: &HashMap<String, AttributeValue>) -> Result<StoredGroup, StoreError> {
    let body = match item.get("body") {
        Some(AttributeValue::S(b)) => b,
        _ => return Err(StoreError::Refused("a group item without body".into())),
    };
    serde_json::from_str(body)
        .map_err(|e| StoreError::Refused(format!("unreadable group body: {e}")))
}

/// Reads a stored group and checks that its body describes the group it was stored under: an
/// item edited by hand, or written by a broken version, is refused rather than trusted.
fn from_item(
    item: &HashMap<String, AttributeValue>,
) -> Result<(GroupKey, Versioned<TrackedGroup>), StoreError> {
    let version = match item.get("version") {
        Some(AttributeValue::N(n)) => n
            .parse()
            .map_err(|_| StoreError::Refused(format!("bad version {n:?}")))?,
        _ => return Err(StoreError::Refused("a group item without version".into())),
    };
    let stored = stored_of(item)?;
    let key = stored.key()?;
    let pk = match item.get("pk") {
        Some(AttributeValue::S(pk)) => pk,
        _ => return Err(StoreError::Refused("a group item without pk".into())),
    };
    if *pk != group_pk(&key) {
        return Err(StoreError::Refused(format!(
            "item {pk:?} holds the group of another key"
        )));
    }
    Ok((
        key,
        Versioned {
            version,
            value: stored.tracked()?,
        },
    ))
}

/// The stored form of a group: plain strings and milliseconds, read back through the domain's
/// parsers, so a damaged item is refused rather than trusted. `v` is the schema version.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredGroup {
    pub v: u8,
    pub source_account: String,
    pub source_region: String,
    pub repository: String,
    pub digest: String,
    pub destination_account: String,
    pub destination_region: String,
    pub expectations: Vec<StoredExpectation>,
    pub copies: Vec<StoredCopy>,
    pub watches: Vec<StoredWatch>,
    /// Deletes at the source (absent from items written before deletes were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deletions: Vec<StoredDeletion>,
    /// Copies committed to the expectation they were counted for (see `ledger::MATCH_GRACE_MS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<StoredClaim>,
    /// Replicated deletes (absent from items written before they were audited).
    #[serde(default, skip_serializing_if = "StoredDeletes::is_empty")]
    pub deletes: StoredDeletes,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredClaim {
    /// The copy's event id.
    pub copy: String,
    /// The tag of the expectation it was counted for; none for a push by digest.
    pub tag: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredDeletion {
    /// The tag deleted; none for the image.
    pub tag: Option<String>,
    pub at: i64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredExpectation {
    pub tag: Option<String>,
    pub pushed_at: i64,
    /// A restore rather than a push (absent from items written before restores were audited).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restore: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredCopy {
    pub id: String,
    pub at: i64,
    pub tag: Option<String>,
    pub ok: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredWatch {
    pub tag: Option<String>,
    /// Counted findings, as their names.
    pub counted: Vec<String>,
    pub confirmation: Option<StoredConfirmation>,
    /// Whether the pushed tag was looked up in the destination (stale-tag check)...
    pub tag_checked: bool,
    /// ...and the digest it points to there, if any. Two fields: JSON has no `Some(None)`.
    pub tag_points_to: Option<String>,
    pub next_check: Option<i64>,
    pub checks: u32,
    /// For a copy without its tag: whether the tag had moved on to another digest at the
    /// source; absent until looked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_moved_on: Option<bool>,
    /// `yes` or `unconfigured`: what the configuration in force said before the copy was called
    /// missing; absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub still_expected: Option<String>,
    /// The restore this watch is for (a restore has no tag); absent for a push's watch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<i64>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredConfirmation {
    Present {
        pushed_at: Option<i64>,
        carried_tag: bool,
        checked_at: i64,
    },
    Failed {
        failure_code: Option<String>,
        checked_at: i64,
    },
    Absent {
        in_progress: bool,
        checked_at: i64,
    },
    Archived {
        pushed_at: Option<i64>,
        checked_at: i64,
    },
    Activating {
        checked_at: i64,
    },
}

const COUNTED: [&str; 10] = [
    "expected",
    "completed",
    "late",
    "untagged",
    "failed",
    "missing",
    "stale_tag",
    "withdrawn",
    "announced",
    "archived",
];

fn counted_flags(c: &Counted) -> [bool; 10] {
    [
        c.expected,
        c.completed,
        c.late,
        c.untagged,
        c.failed,
        c.missing,
        c.stale_tag,
        c.withdrawn,
        c.announced,
        c.archived,
    ]
}

fn refused(what: &str, value: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Refused(format!("stored {what} {value:?} {e}"))
}

fn tag(s: &Option<String>) -> Result<Option<ImageTag>, StoreError> {
    s.as_deref()
        .map(|t| ImageTag::parse(t).map_err(|e| refused("tag", t, e)))
        .transpose()
}

impl StoredGroup {
    pub fn new(key: &GroupKey, t: &TrackedGroup) -> Self {
        let tag_string = |t: &Option<ImageTag>| t.as_ref().map(|t| t.to_string());
        StoredGroup {
            v: 1,
            source_account: key.source_account.to_string(),
            source_region: key.source_region.to_string(),
            repository: key.repository.to_string(),
            digest: key.digest.to_string(),
            destination_account: key.destination.account.to_string(),
            destination_region: key.destination.region.to_string(),
            expectations: t
                .group
                .expectations()
                .iter()
                .map(|e| StoredExpectation {
                    tag: tag_string(&e.tag),
                    pushed_at: e.pushed_at.millis(),
                    restore: e.is_restore(),
                })
                .collect(),
            copies: t
                .group
                .copies()
                .iter()
                .map(|c| StoredCopy {
                    id: c.id.to_string(),
                    at: c.at.millis(),
                    tag: tag_string(&c.tag),
                    ok: c.succeeded,
                })
                .collect(),
            watches: t
                .watches
                .iter()
                .map(|(tag, w)| (tag, None, w))
                .chain(
                    t.restore_watches
                        .iter()
                        .map(|(at, w)| (&None, Some(at.millis()), w)),
                )
                .map(|(tag, restored_at, w)| StoredWatch {
                    tag: tag_string(tag),
                    restored_at,
                    counted: COUNTED
                        .iter()
                        .zip(counted_flags(&w.counted))
                        .filter(|(_, on)| *on)
                        .map(|(name, _)| name.to_string())
                        .collect(),
                    confirmation: w.confirmation.as_ref().map(|c| match c {
                        Confirmation::Present {
                            pushed_at,
                            carried_tag,
                            checked_at,
                        } => StoredConfirmation::Present {
                            pushed_at: pushed_at.map(Timestamp::millis),
                            carried_tag: *carried_tag,
                            checked_at: checked_at.millis(),
                        },
                        Confirmation::Failed {
                            failure_code,
                            checked_at,
                        } => StoredConfirmation::Failed {
                            failure_code: failure_code.clone(),
                            checked_at: checked_at.millis(),
                        },
                        Confirmation::Absent {
                            in_progress,
                            checked_at,
                        } => StoredConfirmation::Absent {
                            in_progress: *in_progress,
                            checked_at: checked_at.millis(),
                        },
                        Confirmation::Archived {
                            pushed_at,
                            checked_at,
                        } => StoredConfirmation::Archived {
                            pushed_at: pushed_at.map(Timestamp::millis),
                            checked_at: checked_at.millis(),
                        },
                        Confirmation::Activating { checked_at } => StoredConfirmation::Activating {
                            checked_at: checked_at.millis(),
                        },
                    }),
                    tag_checked: w.tag_points_to.is_some(),
                    tag_points_to: w
                        .tag_points_to
                        .as_ref()
                        .and_then(|d| d.as_ref().map(ToString::to_string)),
                    next_check: w.next_check.map(Timestamp::millis),
                    checks: w.checks,
                    tag_moved_on: w.tag_moved_on,
                    still_expected: w.still_expected.map(|s| {
                        match s {
                            StillExpected::Yes => "yes",
                            StillExpected::Unconfigured => "unconfigured",
                        }
                        .to_string()
                    }),
                })
                .collect(),
            deletions: t
                .group
                .deletions()
                .iter()
                .map(|(tag, at)| StoredDeletion {
                    tag: tag_string(tag),
                    at: at.millis(),
                })
                .collect(),
            claims: t
                .claims
                .iter()
                .map(|(copy, tag)| StoredClaim {
                    copy: copy.to_string(),
                    tag: tag_string(tag),
                })
                .collect(),
            deletes: StoredDeletes::new(t),
        }
    }

    pub fn key(&self) -> Result<GroupKey, StoreError> {
        Ok(GroupKey {
            source_account: AccountId::parse(&self.source_account)
                .map_err(|e| refused("account", &self.source_account, e))?,
            source_region: Region::parse(&self.source_region)
                .map_err(|e| refused("region", &self.source_region, e))?,
            repository: RepositoryName::parse(&self.repository)
                .map_err(|e| refused("repository", &self.repository, e))?,
            digest: ImageDigest::parse(&self.digest)
                .map_err(|e| refused("digest", &self.digest, e))?,
            destination: Destination {
                account: AccountId::parse(&self.destination_account)
                    .map_err(|e| refused("account", &self.destination_account, e))?,
                region: Region::parse(&self.destination_region)
                    .map_err(|e| refused("region", &self.destination_region, e))?,
            },
        })
    }

    pub fn tracked(&self) -> Result<TrackedGroup, StoreError> {
        if self.v != 1 {
            return Err(StoreError::Refused(format!(
                "group schema version {} is not known here",
                self.v
            )));
        }
        let mut group = Group::default();
        for e in &self.expectations {
            let at = Timestamp::from_millis(e.pushed_at);
            if e.restore {
                group.add_restore(at);
            } else {
                group.add_push(tag(&e.tag)?, at);
            }
        }
        for c in &self.copies {
            group.add_copy(CopySeen {
                id: EventId::parse(&c.id).map_err(|e| refused("event id", &c.id, e))?,
                at: Timestamp::from_millis(c.at),
                tag: tag(&c.tag)?,
                succeeded: c.ok,
            });
        }
        let mut watches = std::collections::BTreeMap::new();
        let mut restore_watches = std::collections::BTreeMap::new();
        for w in &self.watches {
            let on = |name: &str| w.counted.iter().any(|c| c == name);
            let counted = Counted {
                expected: on("expected"),
                completed: on("completed"),
                late: on("late"),
                untagged: on("untagged"),
                failed: on("failed"),
                missing: on("missing"),
                stale_tag: on("stale_tag"),
                withdrawn: on("withdrawn"),
                announced: on("announced"),
                archived: on("archived"),
            };
            let ms = Timestamp::from_millis;
            let confirmation = w.confirmation.as_ref().map(|c| match c {
                StoredConfirmation::Present {
                    pushed_at,
                    carried_tag,
                    checked_at,
                } => Confirmation::Present {
                    pushed_at: pushed_at.map(ms),
                    carried_tag: *carried_tag,
                    checked_at: ms(*checked_at),
                },
                StoredConfirmation::Failed {
                    failure_code,
                    checked_at,
                } => Confirmation::Failed {
                    failure_code: failure_code.clone(),
                    checked_at: ms(*checked_at),
                },
                StoredConfirmation::Absent {
                    in_progress,
                    checked_at,
                } => Confirmation::Absent {
                    in_progress: *in_progress,
                    checked_at: ms(*checked_at),
                },
                StoredConfirmation::Archived {
                    pushed_at,
                    checked_at,
                } => Confirmation::Archived {
                    pushed_at: pushed_at.map(ms),
                    checked_at: ms(*checked_at),
                },
                StoredConfirmation::Activating { checked_at } => Confirmation::Activating {
                    checked_at: ms(*checked_at),
                },
            });
            let tag_points_to = match (w.tag_checked, &w.tag_points_to) {
                (false, _) => None,
                (true, None) => Some(None),
                (true, Some(d)) => Some(Some(
                    ImageDigest::parse(d).map_err(|e| refused("digest", d, e))?,
                )),
            };
            let watch = Watch {
                counted,
                confirmation,
                tag_points_to,
                next_check: w.next_check.map(ms),
                checks: w.checks,
                tag_moved_on: w.tag_moved_on,
                still_expected: match w.still_expected.as_deref() {
                    None => None,
                    Some("yes") => Some(StillExpected::Yes),
                    Some("unconfigured") => Some(StillExpected::Unconfigured),
                    Some(other) => return Err(refused("still_expected", other, "is unknown")),
                },
            };
            match w.restored_at {
                Some(at) => restore_watches.insert(ms(at), watch),
                None => watches.insert(tag(&w.tag)?, watch),
            };
        }
        for d in &self.deletions {
            group.add_deletion(tag(&d.tag)?, Timestamp::from_millis(d.at));
        }
        let mut claims = Claims::new();
        for c in &self.claims {
            let copy = EventId::parse(&c.copy).map_err(|e| refused("event id", &c.copy, e))?;
            claims.insert(copy, tag(&c.tag)?);
        }
        let delete_watches = self.deletes.read_into(&mut group)?;
        Ok(TrackedGroup {
            group,
            watches,
            restore_watches,
            delete_watches,
            claims,
        })
    }
}

/// The stored form of a group's replicated deletes: the deletes it owes, the DELETEs seen in
/// the destination, and the watch of each delete owed.
#[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
pub struct StoredDeletes {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owed: Vec<StoredDeleteOwed>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<StoredDeleteSeen>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watches: Vec<StoredDeleteWatch>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredDeleteOwed {
    pub tag: Option<String>,
    pub at: i64,
    /// `digest`, `tag` or `last_tag`.
    pub kind: String,
}

/// A DELETE seen in the destination.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredDeleteSeen {
    pub id: String,
    pub at: i64,
    pub tag: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct StoredDeleteWatch {
    pub tag: Option<String>,
    /// The delete's time at the source.
    pub at: i64,
    pub counted: Vec<String>,
    /// `gone` or `still_there`, with when ECR was asked.
    pub confirmation: Option<(String, i64)>,
    pub next_check: Option<i64>,
    pub checks: u32,
}

const DELETE_COUNTED: [&str; 4] = ["expected", "replicated", "late", "missing"];

impl StoredDeletes {
    fn is_empty(&self) -> bool {
        self.owed.is_empty() && self.seen.is_empty() && self.watches.is_empty()
    }

    fn new(t: &TrackedGroup) -> Self {
        let tag_string = |t: &Option<ImageTag>| t.as_ref().map(|t| t.to_string());
        let deletes = t.group.deletes();
        StoredDeletes {
            owed: deletes
                .expectations()
                .iter()
                .map(|e| StoredDeleteOwed {
                    tag: tag_string(&e.tag),
                    at: e.deleted_at.millis(),
                    kind: e.kind.as_str().to_owned(),
                })
                .collect(),
            seen: deletes
                .seen()
                .iter()
                .map(|d| StoredDeleteSeen {
                    id: d.id.to_string(),
                    at: d.at.millis(),
                    tag: tag_string(&d.tag),
                })
                .collect(),
            watches: t
                .delete_watches
                .iter()
                .map(|((tag, at), w)| {
                    let c = w.counted;
                    StoredDeleteWatch {
                        tag: tag_string(tag),
                        at: at.millis(),
                        counted: DELETE_COUNTED
                            .iter()
                            .zip([c.expected, c.replicated, c.late, c.missing])
                            .filter(|(_, on)| *on)
                            .map(|(name, _)| name.to_string())
                            .collect(),
                        confirmation: w.confirmation.map(|c| match c {
                            DeleteConfirmation::Gone { checked_at } => {
                                ("gone".to_owned(), checked_at.millis())
                            }
                            DeleteConfirmation::StillThere { checked_at } => {
                                ("still_there".to_owned(), checked_at.millis())
                            }
                        }),
                        next_check: w.next_check.map(Timestamp::millis),
                        checks: w.checks,
                    }
                })
                .collect(),
        }
    }

    /// Puts the deletes owed and seen into `group`; returns the watches.
    fn read_into(&self, group: &mut Group) -> Result<DeleteWatches, StoreError> {
        let ms = Timestamp::from_millis;
        for d in &self.owed {
            let kind = DeleteKind::parse(&d.kind)
                .ok_or_else(|| refused("delete kind", &d.kind, "is unknown"))?;
            group.expect_delete(tag(&d.tag)?, ms(d.at), kind);
        }
        for d in &self.seen {
            group.add_delete_seen(DeleteSeen {
                id: EventId::parse(&d.id).map_err(|e| refused("event id", &d.id, e))?,
                at: ms(d.at),
                tag: tag(&d.tag)?,
            });
        }
        let mut watches = DeleteWatches::new();
        for w in &self.watches {
            let on = |name: &str| w.counted.iter().any(|c| c == name);
            let confirmation = match &w.confirmation {
                None => None,
                Some((kind, at)) if kind == "gone" => Some(DeleteConfirmation::Gone {
                    checked_at: ms(*at),
                }),
                Some((kind, at)) if kind == "still_there" => Some(DeleteConfirmation::StillThere {
                    checked_at: ms(*at),
                }),
                Some((kind, _)) => return Err(refused("delete confirmation", kind, "is unknown")),
            };
            watches.insert(
                (tag(&w.tag)?, ms(w.at)),
                DeleteWatch {
                    counted: DeleteCounted {
                        expected: on("expected"),
                        replicated: on("replicated"),
                        late: on("late"),
                        missing: on("missing"),
                    },
                    confirmation,
                    next_check: w.next_check.map(ms),
                    checks: w.checks,
                },
            );
        }
        Ok(watches)
    }
}

type DeleteWatches = std::collections::BTreeMap<(Option<ImageTag>, Timestamp), DeleteWatch>;

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> GroupKey {
        GroupKey::example()
    }

    #[test]
    fn a_tracked_group_survives_the_stored_form_unchanged() {
        let t = |s: i64| Timestamp::from_millis(1_719_835_200_000 + s * 1000);
        let mut tracked = TrackedGroup::default();
        tracked
            .group
            .add_push(Some(ImageTag::parse("v1").unwrap()), t(0));
        tracked.group.add_push(None, t(3));
        tracked.group.add_copy(CopySeen {
            id: EventId::parse("c1").unwrap(),
            at: t(9),
            tag: None,
            succeeded: false,
        });
        tracked.group.add_deletion(None, t(60));
        tracked.group.add_restore(t(90));
        tracked.group.expect_delete(
            Some(ImageTag::parse("v1").unwrap()),
            t(100),
            DeleteKind::LastTag,
        );
        tracked.group.add_delete_seen(DeleteSeen {
            id: EventId::parse("d1").unwrap(),
            at: t(110),
            tag: None,
        });
        tracked.delete_watches.insert(
            (Some(ImageTag::parse("v1").unwrap()), t(100)),
            DeleteWatch {
                counted: DeleteCounted {
                    expected: true,
                    missing: true,
                    ..DeleteCounted::default()
                },
                confirmation: Some(DeleteConfirmation::StillThere {
                    checked_at: t(1901),
                }),
                next_check: Some(t(3701)),
                checks: 1,
            },
        );
        tracked.claims.insert(
            EventId::parse("c1").unwrap(),
            Some(ImageTag::parse("v1").unwrap()),
        );
        let watch = |confirmation, tag_points_to| Watch {
            counted: Counted {
                expected: true,
                missing: true,
                stale_tag: true,
                withdrawn: true,
                ..Counted::default()
            },
            confirmation: Some(confirmation),
            tag_points_to,
            next_check: Some(t(4000)),
            checks: 2,
            tag_moved_on: Some(false),
            still_expected: Some(StillExpected::Yes),
        };
        tracked.watches.insert(
            Some(ImageTag::parse("v1").unwrap()),
            watch(
                Confirmation::Failed {
                    failure_code: Some("ACCESS_DENIED (verbatim)".into()),
                    checked_at: t(1900),
                },
                Some(None),
            ),
        );
        tracked.watches.insert(
            None,
            watch(
                Confirmation::Present {
                    pushed_at: None,
                    carried_tag: true,
                    checked_at: t(1900),
                },
                Some(Some(ImageDigest::parse("sha256:old").unwrap())),
            ),
        );
        tracked.restore_watches.insert(
            t(90),
            watch(
                Confirmation::Archived {
                    pushed_at: Some(t(95)),
                    checked_at: t(1900),
                },
                None,
            ),
        );
        let json = serde_json::to_string(&StoredGroup::new(&key(), &tracked)).unwrap();
        let back: StoredGroup = serde_json::from_str(&json).unwrap();
        assert_eq!(back.key().unwrap(), key());
        assert_eq!(back.tracked().unwrap(), tracked);
    }

    #[test]
    fn a_damaged_stored_group_is_refused_not_trusted() {
        let mut stored = StoredGroup::new(&key(), &TrackedGroup::default());
        stored.repository = "Not A Repo".into();
        assert!(matches!(stored.key(), Err(StoreError::Refused(_))));
        let mut future = StoredGroup::new(&key(), &TrackedGroup::default());
        future.v = 2;
        assert!(matches!(future.tracked(), Err(StoreError::Refused(_))));
    }
}

// The inventory reconciliation's pass: one item of its own kind.
mod inventory;
