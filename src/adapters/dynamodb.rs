//! The Lambda's state in one DynamoDB table: [`DynamoStateStore`] implements
//! [`crate::ports::state::StateStore`] and [`HistoryReader`].
//!
//! A group is a bounded head and one record per expectation ([`super::stored`]), each an item
//! under its own partition key (`pk`) with a JSON `body`. The head carries the group's
//! optimistic `version`: every save updates the head only if its version is still the one read,
//! and puts the changed records in the same `TransactWriteItems` (all or nothing, at most 100
//! items: a push to ECR's 25 destinations writes 50), so concurrent invocations cannot
//! overwrite each other.
//!
//! A save names itself in the head (`w0`..`w7`, the slot of the version it writes, the other
//! slots carried from the head it read): a save whose write landed while its answer was lost
//! recognises its own write when the SDK's retry fails on the version, even after other saves
//! came on top (up to seven of them).
//!
//! Indexes, none of them with a single partition key:
//! - `due` (`due_shard`, `due_at`; keys only): every record with a next check, under
//!   `<queue>#<shard>`: `F` in flight, `W` counted missing or failed and still watched, `C` a
//!   lookup left; 16 shards by a hash of the key. The sweep reads only what is due, oldest first,
//!   and counts a queue by reading its keys, never the items.
//! - `history` (`day`, `first_push`): every record with a push, under `<UTC day>#<shard>`, read
//!   by `ecr-replication-auditor audit` ([`HistoryReader::first_pushed_between`]).
//! - `open` (`open`, `due_at`): the previous version's index of whole groups (one partition,
//!   "open"). No item written now has `open`; the sweep still reads what is due there, and each
//!   such group leaves it when it is next saved. A later release drops the index (CloudFormation
//!   adds or drops one global secondary index per update).
//!
//! Every item expires (`expires_at`, DynamoDB TTL) `HISTORY_RETENTION_DAYS` after the last event
//! it holds, the head after the group's, so the table doubles as the audit history without
//! growing for ever.

use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use futures_util::stream::StreamExt;

use super::stored::{
    Head, Item, Plan, assemble, head_alone, parse_due_pk, parse_group_pk, parse_record_pk, plan,
    read_head, record_alone,
};
pub use super::stored::{StoredGroup, group_pk, record_pk};
use crate::domain::correlate::GroupKey;
use crate::domain::ids::{EventId, ImageTag};
use crate::domain::ledger::TrackedGroup;
use crate::domain::signals::ReplicationEvent;
use crate::domain::time::Timestamp;
use crate::ports::history::{Day, HistoryReader};
use crate::ports::state::{
    Census, DueRecord, DueWork, Queue, StateStore, StoreError, Versioned, Want,
};

/// The names of the table's indexes, as template.yaml defines them.
pub const DUE_INDEX: &str = "due";
pub const HISTORY_INDEX: &str = "history";
/// The previous version's index of open groups.
pub const LEGACY_OPEN_INDEX: &str = "open";
/// The previous version's one partition of that index.
const LEGACY_OPEN: &str = "open";
/// Partitions per queue of the `due` index, and per day of the `history` index. DynamoDB caps
/// the writes one partition takes (1,000 write units a second); with every record of a busy
/// hour under one key, that key's partition was the first limit the table met.
pub const SHARDS: u32 = 16;
/// Groups of the previous version the sweep takes from the `open` index at once.
const LEGACY_PER_SWEEP: i32 = 100;
/// BatchGetItem takes at most 100 keys; TransactWriteItems at most 100 items.
const MAX_BATCH_GET: usize = 100;
const MAX_TRANSACTION: usize = 100;
/// The `due` index's queries a sweep has in flight at once.
const QUERIES_AT_ONCE: usize = 8;
/// How many versions back a save recognises its own write (`w0`..`w7`).
const WRITER_SLOTS: u64 = 8;

type Attrs = HashMap<String, AttributeValue>;

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

    /// The TTL in epoch seconds, as DynamoDB wants it.
    fn expires_at(&self, last: Timestamp) -> i64 {
        last.millis().saturating_add(self.retention_ms) / 1000
    }
}

fn is_condition_failure<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    matches!(err, SdkError::ServiceError(e) if e.err().code() == Some("ConditionalCheckFailedException"))
}

/// The attribute naming the save that wrote a rejected event's item (see [`write_token`]).
const WRITER: &str = "writer";

/// A name for one save, unique across processes (a random number per process and a counter).
/// A write can land in DynamoDB while its answer is lost (a timeout, a reset connection); the
/// SDK then sends it again, and the repeated conditional write fails against the item it wrote
/// itself. Seeing its own name in the item DynamoDB returns with the failure
/// (`ReturnValuesOnConditionCheckFailure`), the save knows it landed, instead of taking it for
/// another invocation's change and dropping what it had found.
fn write_token() -> String {
    static PROCESS: OnceLock<u64> = OnceLock::new();
    static SAVES: AtomicU64 = AtomicU64::new(0);
    // RandomState's keys come from the operating system's random source.
    let process = *PROCESS.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    format!("{process:016x}-{}", SAVES.fetch_add(1, Ordering::Relaxed))
}

/// Whether `item`, as DynamoDB returned it with a failed condition, was written by `token`.
fn written_by(item: Option<&Attrs>, token: &str) -> bool {
    matches!(item.and_then(|i| i.get(WRITER)), Some(AttributeValue::S(t)) if t == token)
}

/// The head's attribute that names the save of `version`: one of [`WRITER_SLOTS`], reused
/// every eighth version. A save writes its own and carries the others from the head it read
/// (the head it replaces, since the write is conditional on that version).
///
/// Why slots carried in the item rather than one `writer`: the previous version named only the
/// last save, so a save whose answer was lost took its own landed write for a lost race as soon
/// as another invocation had saved on top, and its findings were never published. Why carried
/// by PutItem rather than set by UpdateItem: one kind of write for every item, and a PutItem
/// replaces the previous version's item whole (its index attributes go with it); moto, which
/// the tests run against, applies an UpdateItem attribute by attribute, so a concurrent read
/// could see half of it.
fn writer_slot(version: u64) -> String {
    format!("w{}", version % WRITER_SLOTS)
}

/// The writer slots of a head as read.
fn writers_of(item: &Attrs) -> std::collections::BTreeMap<String, String> {
    (0..WRITER_SLOTS)
        .map(writer_slot)
        .filter_map(|slot| string(item, &slot).map(|token| (slot, token)))
        .collect()
}

/// Whether a head, as DynamoDB returned it with a failed condition, holds the version `next`
/// written by `token`, or a later one written on top of it within [`WRITER_SLOTS`] versions.
pub fn landed(item: Option<&Attrs>, next: u64, token: &str) -> bool {
    let Some(item) = item else { return false };
    let version = match item.get("version") {
        Some(AttributeValue::N(n)) => n.parse::<u64>().unwrap_or(0),
        _ => return false,
    };
    (next..next + WRITER_SLOTS).contains(&version)
        && matches!(item.get(&writer_slot(next)), Some(AttributeValue::S(t)) if t == token)
}

/// A 64-bit FNV-1a hash: the shard of a key must be the same in every process and version.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn shard(pk: &str) -> u32 {
    u32::try_from(fnv1a(pk) % u64::from(SHARDS)).unwrap_or(0)
}

/// An item's keys in the `due` index (its next check) and the `history` index (its push).
fn index_attrs(item: &Item, attrs: &mut Attrs) {
    if let Some((at, queue)) = item.due {
        attrs.insert(
            "due_shard".into(),
            AttributeValue::S(due_partition(queue, shard(&item.pk))),
        );
        attrs.insert("due_at".into(), AttributeValue::N(at.millis().to_string()));
    }
    if let Some(pushed) = item.pushed_at {
        attrs.insert(
            "day".into(),
            AttributeValue::S(history_partition(pushed, &item.pk)),
        );
        attrs.insert(
            "first_push".into(),
            AttributeValue::N(pushed.millis().to_string()),
        );
    }
}

/// The `due` index's partition key of a record in `queue`.
pub fn due_partition(queue: Queue, shard: u32) -> String {
    let q = match queue {
        Queue::InFlight => "F",
        Queue::Watched => "W",
        Queue::Chore => "C",
    };
    format!("{q}#{shard:02}")
}

/// One day in milliseconds: the `history` index has partitions per UTC day.
const DAY_MS: i64 = 86_400_000;

/// An instant's UTC date, `YYYY-MM-DD`: the previous version's `history` partition, and the
/// first part of this version's.
pub fn history_day(t: Timestamp) -> String {
    t.to_string().chars().take(10).collect()
}

/// The `history` index's partition key of a record pushed at `t`.
pub fn history_partition(t: Timestamp, pk: &str) -> String {
    format!("{}#{:02}", history_day(t), shard(pk))
}

fn rejection_pk(id: &EventId) -> String {
    format!("R#{id}")
}

/// The item of a replication event parked after a failed publish, by its `verdict-id`.
fn parked_pk(verdict_id: &str) -> String {
    format!("P#{verdict_id}")
}

/// The `due` index's partition of parked events (`due_at`: when parked). One: they are few,
/// and only a failing `PutEvents` makes any. The sweep's own queries never read it.
const PARKED_PARTITION: &str = "P#00";

fn string(item: &Attrs, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    }
}

fn number(item: &Attrs, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn body_of(pk: &str, item: &Attrs) -> Result<String, StoreError> {
    string(item, "body").ok_or_else(|| StoreError::Unreadable {
        key: pk.to_owned(),
        reason: "an item without body".into(),
    })
}

fn version_of(pk: &str, item: &Attrs) -> Result<u64, StoreError> {
    match item.get("version") {
        Some(AttributeValue::N(n)) => n.parse().map_err(|_| StoreError::Unreadable {
            key: pk.to_owned(),
            reason: format!("bad version {n:?}"),
        }),
        _ => Err(StoreError::Unreadable {
            key: pk.to_owned(),
            reason: "a group item without version".into(),
        }),
    }
}

impl DynamoStateStore {
    /// The items under `pks`, strongly consistent: one GetItem for one key, BatchGetItem for
    /// more (asking again for the keys DynamoDB leaves unprocessed under load).
    async fn get_items(&self, pks: &[String]) -> Result<HashMap<String, Attrs>, StoreError> {
        let mut found = HashMap::new();
        if let [pk] = pks {
            let out = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(pk.clone()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| self.failed("GetItem", None, &e))?;
            if let Some(item) = out.item {
                found.insert(pk.clone(), item);
            }
            return Ok(found);
        }
        for chunk in pks.chunks(MAX_BATCH_GET) {
            let mut request = KeysAndAttributes::builder().consistent_read(true);
            for pk in chunk {
                request = request.keys(HashMap::from([(
                    "pk".to_string(),
                    AttributeValue::S(pk.clone()),
                )]));
            }
            let mut pending = Some(
                request
                    .build()
                    .map_err(|e| StoreError::Refused(e.to_string()))?,
            );
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
                    match string(&item, "pk") {
                        Some(pk) => found.insert(pk, item),
                        None => return Err(StoreError::Refused("an item without pk".into())),
                    };
                }
                pending = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table));
            }
            if pending.is_some() {
                return Err(StoreError::Transient(
                    "BatchGetItem kept keys unprocessed".into(),
                ));
            }
        }
        Ok(found)
    }

    /// Deletes the item under `pk` (a parked event: one a sweep published, or one it cannot read).
    async fn delete(&self, pk: String) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .send()
            .await
            .map_err(|e| self.failed("DeleteItem", None, &e))?;
        Ok(())
    }

    /// Every page of a query on `index` for partition `key`, with `range` as the rest of the
    /// key condition; `each` sees every item and says whether to read on.
    async fn query(
        &self,
        index: &str,
        partition: (&str, String),
        range: Option<(&str, AttributeValue, AttributeValue)>,
        mut each: impl FnMut(&Attrs) -> bool,
    ) -> Result<(), StoreError> {
        let mut start: Option<Attrs> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .expression_attribute_names("#p", partition.0)
                .expression_attribute_values(":p", AttributeValue::S(partition.1.clone()))
                .set_exclusive_start_key(start.take());
            query = match &range {
                None => query.key_condition_expression("#p = :p"),
                Some((name, from, to)) => query
                    .key_condition_expression("#p = :p AND #r BETWEEN :from AND :to")
                    .expression_attribute_names("#r", *name)
                    .expression_attribute_values(":from", from.clone())
                    .expression_attribute_values(":to", to.clone()),
            };
            let page = query
                .send()
                .await
                .map_err(|e| self.failed("Query", Some(index), &e))?;
            let mut more = true;
            for item in page.items.unwrap_or_default() {
                more = each(&item);
                if !more {
                    break;
                }
            }
            match page.last_evaluated_key {
                Some(k) if more && !k.is_empty() => start = Some(k),
                _ => return Ok(()),
            }
        }
    }

    /// The conditional put that writes a head at the next version: its writer in its slot, the
    /// writers of the versions before carried from the head it read. It replaces the head whole
    /// (and the previous version's single item with it, index attributes and all).
    fn head_put(
        &self,
        p: &Plan,
        writers: &std::collections::BTreeMap<String, String>,
        token: &str,
    ) -> Result<Put, StoreError> {
        let next = p.version + 1;
        let mut item = HashMap::from([
            ("pk".to_string(), AttributeValue::S(p.head.pk.clone())),
            ("body".to_string(), AttributeValue::S(p.head.body.clone())),
            ("version".to_string(), AttributeValue::N(next.to_string())),
            (
                "expires_at".to_string(),
                AttributeValue::N(self.expires_at(p.head.last_event).to_string()),
            ),
        ]);
        for (slot, writer) in writers {
            item.insert(slot.clone(), AttributeValue::S(writer.clone()));
        }
        item.insert(writer_slot(next), AttributeValue::S(token.to_owned()));
        // A head holding restores or deletes owed is in both indexes too.
        index_attrs(&p.head, &mut item);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let put = if p.version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("#version = :v")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":v", AttributeValue::N(p.version.to_string()))
        };
        put.build().map_err(|e| StoreError::Refused(e.to_string()))
    }

    /// A record as an item: its body, expiry, and its keys in the `due` and `history` indexes.
    fn record_attrs(&self, item: &Item) -> Attrs {
        let mut attrs = HashMap::from([
            ("pk".to_string(), AttributeValue::S(item.pk.clone())),
            ("body".to_string(), AttributeValue::S(item.body.clone())),
            (
                "expires_at".to_string(),
                AttributeValue::N(self.expires_at(item.last_event).to_string()),
            ),
        ]);
        index_attrs(item, &mut attrs);
        attrs
    }

    /// Creates a record unchanged from the previous version's item of its group (at version
    /// `legacy`), unless it exists already: written by a save of this version, or created from
    /// the same or a later version of that item.
    async fn create_legacy(&self, item: &Item, legacy: u64) -> Result<(), StoreError> {
        let mut attrs = self.record_attrs(item);
        attrs.insert(
            "legacy_version".into(),
            AttributeValue::N(legacy.to_string()),
        );
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(attrs))
            .condition_expression("attribute_not_exists(pk) OR legacy_version < :legacy")
            .expression_attribute_values(":legacy", AttributeValue::N(legacy.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(self.failed("PutItem", None, &e)),
        }
    }

    /// Reads one shard of one queue of the `due` index into `seen`: whole (counted in its
    /// census, by its keys) or only what is due, oldest first, up to `budget`.
    async fn due_shard(
        &self,
        seen: &Mutex<Seen>,
        queue: Queue,
        s: u32,
        whole: bool,
        now: Timestamp,
        budget: usize,
    ) -> Result<(), StoreError> {
        let range = (
            "due_at",
            AttributeValue::N(i64::MIN.to_string()),
            AttributeValue::N(now.millis().to_string()),
        );
        let mut taken = 0usize;
        self.query(
            DUE_INDEX,
            ("due_shard", due_partition(queue, s)),
            (!whole).then_some(range),
            |item| {
                let (Some(pk), Some(due_at)) = (string(item, "pk"), number(item, "due_at")) else {
                    return true;
                };
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                if whole {
                    seen.count(queue, &pk);
                }
                let due_at = Timestamp::from_millis(due_at);
                if due_at <= now {
                    taken += 1;
                    seen.keep(due_at, pk, budget);
                }
                // Read in due order: past the budget, the rest of the shard is younger.
                whole || taken < budget
            },
        )
        .await
    }

    /// The previous version's groups that are due, a bounded number per sweep, into
    /// `work.legacy` (their unreadable keys into `unreadable`). A table created without that
    /// index has none.
    async fn legacy_due(
        &self,
        now: Timestamp,
        work: &mut DueWork,
        unreadable: &mut BTreeSet<String>,
    ) -> Result<(), StoreError> {
        let legacy = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(LEGACY_OPEN_INDEX)
            .key_condition_expression("#open = :open AND due_at <= :now")
            .expression_attribute_names("#open", "open")
            .expression_attribute_values(":open", AttributeValue::S(LEGACY_OPEN.into()))
            .expression_attribute_values(":now", AttributeValue::N(now.millis().to_string()))
            .projection_expression("pk")
            .limit(LEGACY_PER_SWEEP)
            .send()
            .await;
        match legacy {
            Ok(page) => {
                for item in page.items.unwrap_or_default() {
                    if let Some(pk) = string(&item, "pk") {
                        match parse_group_pk(&pk) {
                            Ok(key) => work.legacy.push(key),
                            Err(_) => {
                                unreadable.insert(pk);
                            }
                        }
                    }
                }
            }
            Err(e) if super::sdk::is_transient(&e) => {
                return Err(self.failed("Query", Some(LEGACY_OPEN_INDEX), &e));
            }
            Err(e) => {
                tracing::debug!(error = %self.describe("Query", Some(LEGACY_OPEN_INDEX), &e), "no index of the previous version's groups");
            }
        }
        Ok(())
    }
}

/// What the sweep's queries of the `due` index share: the `budget` oldest due records seen (a
/// max-heap on their due time), the counts, and the keys that name no record.
#[derive(Default)]
struct Seen {
    oldest: BinaryHeap<(Timestamp, String)>,
    in_flight: Census,
    watched: Census,
    unreadable: BTreeSet<String>,
}

impl Seen {
    /// Counts a key of `queue` read whole in its census (in flight, else watched), or notes it
    /// as naming no record.
    fn count(&mut self, queue: Queue, pk: &str) {
        match parse_due_pk(pk) {
            Ok((key, _)) => {
                let census = if queue == Queue::InFlight {
                    &mut self.in_flight
                } else {
                    &mut self.watched
                };
                *census
                    .entry((key.source_region, key.destination))
                    .or_default() += 1;
            }
            Err(_) => {
                self.unreadable.insert(pk.to_owned());
            }
        }
    }

    /// Keeps a due record if it is among the `budget` oldest seen.
    fn keep(&mut self, due_at: Timestamp, pk: String, budget: usize) {
        self.oldest.push((due_at, pk));
        if self.oldest.len() > budget {
            self.oldest.pop();
        }
    }

    /// Moves the counts into `work` and the due records into `work.due`, oldest first; returns
    /// the keys that name no record, for the sweep to log and count.
    fn into_work(self, work: &mut DueWork) -> BTreeSet<String> {
        let mut unreadable = self.unreadable;
        work.in_flight = self.in_flight;
        if let Some(watched) = work.watched.as_mut() {
            *watched = self.watched;
        }
        let mut due = self.oldest.into_sorted_vec();
        due.dedup();
        for (due_at, pk) in due {
            match parse_due_pk(&pk) {
                Ok((key, tag)) => work.due.push(DueRecord { key, tag, due_at }),
                Err(_) => {
                    unreadable.insert(pk);
                }
            }
        }
        unreadable
    }
}

#[cfg(feature = "testkit")]
impl DynamoStateStore {
    /// Writes groups straight into the table, each head at version 1, without conditions or
    /// transactions (BatchWriteItem, 25 items a call): a benchmark's table of 100,000 items in
    /// a minute, where moto would take hours of transactions. Tests and benchmarks only.
    pub async fn seed(&self, groups: &[(GroupKey, TrackedGroup)]) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let mut requests = Vec::new();
        for (key, tracked) in groups {
            let p = plan(key, &Versioned::new(0, tracked.clone()))?;
            let head = self.head_put(&p, &std::collections::BTreeMap::new(), "seed")?;
            let mut items = vec![head.item().clone()];
            items.extend(p.write.iter().map(|r| self.record_attrs(r)));
            for item in items {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StoreError::Refused(e.to_string()))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
        }
        for chunk in requests.chunks(25) {
            let mut pending = Some(chunk.to_vec());
            while let Some(batch) = pending.take().filter(|b| !b.is_empty()) {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, batch)
                    .send()
                    .await
                    .map_err(|e| self.failed("BatchWriteItem", None, &e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table));
            }
        }
        Ok(())
    }
}

impl StateStore for DynamoStateStore {
    async fn load(&self, wants: &[Want]) -> Result<Vec<Versioned<TrackedGroup>>, StoreError> {
        // First the heads and the records asked for, then the records the heads list as
        // waiting for a committed copy that were not asked for.
        let mut first: Vec<String> = Vec::new();
        for (key, tags) in wants {
            first.push(group_pk(key));
            first.extend(tags.iter().map(|t| record_pk(key, t)));
        }
        first.sort();
        first.dedup();
        let mut items = self.get_items(&first).await?;
        let mut heads = Vec::with_capacity(wants.len());
        let mut second = Vec::new();
        for (key, tags) in wants {
            let pk = group_pk(key);
            let head = match items.get(&pk) {
                None => None,
                Some(item) => {
                    let version = version_of(&pk, item)?;
                    Some((read_head(key, &body_of(&pk, item)?, version)?, version))
                }
            };
            let mut all: BTreeSet<Option<ImageTag>> = tags.iter().cloned().collect();
            if let Some((h, _)) = &head {
                let awaiting = h.awaiting().map_err(|reason| StoreError::Unreadable {
                    key: pk.clone(),
                    reason,
                })?;
                for tag in awaiting {
                    let record = record_pk(key, &tag);
                    if !items.contains_key(&record) && !first.contains(&record) {
                        second.push(record);
                    }
                    all.insert(tag);
                }
            }
            heads.push((head, all));
        }
        second.sort();
        second.dedup();
        if !second.is_empty() {
            items.extend(self.get_items(&second).await?);
        }
        let mut out = Vec::with_capacity(wants.len());
        for ((key, _), (head, tags)) in wants.iter().zip(heads) {
            let version = head.as_ref().map_or(0, |(_, v)| *v);
            let head = head.map(|(h, _)| h);
            let mut records = Vec::new();
            if !matches!(head, Some(Head::Legacy(..))) {
                for tag in tags {
                    let pk = record_pk(key, &tag);
                    if let Some(item) = items.get(&pk) {
                        records.push((tag, body_of(&pk, item)?));
                    }
                }
            }
            let (value, mut loaded) = assemble(key, head, &records)?;
            if let Some(item) = items.get(&group_pk(key)) {
                loaded.writers = writers_of(item);
            }
            out.push(Versioned {
                version,
                value,
                loaded,
            });
        }
        Ok(out)
    }

    async fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> Result<bool, StoreError> {
        let plans = groups
            .iter()
            .map(|(key, v)| plan(key, v).map(|p| (p, &v.loaded.writers)))
            .collect::<Result<Vec<_>, _>>()?;
        let total: usize = plans.iter().map(|(p, _)| 1 + p.write.len()).sum();
        if total > MAX_TRANSACTION {
            return Err(StoreError::Refused(format!(
                "a save of {total} items: TransactWriteItems takes at most {MAX_TRANSACTION}"
            )));
        }
        for (p, _) in &plans {
            for (item, legacy) in &p.create {
                self.create_legacy(item, *legacy).await?;
            }
        }
        let token = write_token();
        if let [(p, writers)] = &plans[..]
            && p.write.is_empty()
        {
            // The head alone: one conditional PutItem.
            let put = self.head_put(p, writers, &token)?;
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(put.item().clone()))
                .condition_expression(put.condition_expression().unwrap_or_default())
                .set_expression_attribute_names(put.expression_attribute_names().cloned())
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
                        if landed(c.item(), p.version + 1, &token)) =>
                {
                    Ok(true)
                }
                Err(e) if is_condition_failure(&e) => Ok(false),
                Err(e) => Err(self.failed("PutItem", None, &e)),
            };
        }
        let mut items = Vec::with_capacity(total);
        for (p, writers) in &plans {
            items.push(
                TransactWriteItem::builder()
                    .put(self.head_put(p, writers, &token)?)
                    .build(),
            );
            for record in &p.write {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(self.record_attrs(record)))
                    .build()
                    .map_err(|e| StoreError::Refused(e.to_string()))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
        }
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
                    // this covers the case it does not). All or nothing: one head is proof.
                    // The reasons follow the items: each plan's head, then its records.
                    let mut i = 0;
                    for (p, _) in &plans {
                        if reasons
                            .get(i)
                            .is_some_and(|r| landed(r.item(), p.version + 1, &token))
                        {
                            return Ok(true);
                        }
                        i += 1 + p.write.len();
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

    async fn due(
        &self,
        now: Timestamp,
        budget: usize,
        count_watched: bool,
    ) -> Result<DueWork, StoreError> {
        let mut work = DueWork {
            watched: count_watched.then(Census::new),
            ..DueWork::default()
        };
        let shared = Mutex::new(Seen::default());
        // One query per queue and shard, a few at once: 48 round trips one after the other
        // would take a good part of a second.
        let mut queries = Vec::new();
        for queue in [Queue::InFlight, Queue::Watched, Queue::Chore] {
            // In flight and (when asked) watched are counted whole, by their keys; otherwise
            // only what is due is read, oldest first.
            let whole = queue == Queue::InFlight || (queue == Queue::Watched && count_watched);
            for s in 0..SHARDS {
                queries.push((queue, s, whole));
            }
        }
        let seen = &shared;
        let query = |(queue, s, whole)| self.due_shard(seen, queue, s, whole, now, budget);
        // The first alone: when the table is throttled or out of reach, one request finds out
        // (with the SDK's retries) rather than eight at once.
        let mut queries = queries.into_iter();
        if let Some(first) = queries.next() {
            query(first).await?;
        }
        let mut running =
            futures_util::stream::iter(queries.map(query)).buffer_unordered(QUERIES_AT_ONCE);
        while let Some(result) = running.next().await {
            result?;
        }
        drop(running);
        let seen = shared.into_inner().unwrap_or_else(PoisonError::into_inner);
        let mut unreadable = seen.into_work(&mut work);
        self.legacy_due(now, &mut work, &mut unreadable).await?;
        work.unreadable = unreadable.into_iter().collect();
        Ok(work)
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

    /// One PutItem per event (a failing `PutEvents` is rare; an event parked again replaces
    /// itself), each under [`PARKED_PARTITION`] in the `due` index, expiring with the history.
    async fn park(&self, events: &[ReplicationEvent], now: Timestamp) -> Result<(), StoreError> {
        for e in events {
            let detail =
                serde_json::to_string(e).map_err(|e| StoreError::Refused(e.to_string()))?;
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", AttributeValue::S(parked_pk(&e.detail.verdict_id)))
                .item("detail_type", AttributeValue::S(e.detail_type.to_owned()))
                .item("detail", AttributeValue::S(detail))
                .item("due_shard", AttributeValue::S(PARKED_PARTITION.to_owned()))
                .item("due_at", AttributeValue::N(now.millis().to_string()))
                .item(
                    "expires_at",
                    AttributeValue::N(self.expires_at(now).to_string()),
                )
                .send()
                .await
                .map_err(|e| self.failed("PutItem", None, &e))?;
        }
        Ok(())
    }

    /// The oldest `limit` keys from the `due` index (one Query, usually empty), then the items.
    async fn parked(&self, limit: usize) -> Result<Vec<ReplicationEvent>, StoreError> {
        let mut pks = Vec::new();
        self.query(
            DUE_INDEX,
            ("due_shard", PARKED_PARTITION.to_owned()),
            None,
            |item| {
                pks.extend(string(item, "pk"));
                pks.len() < limit
            },
        )
        .await?;
        if pks.is_empty() {
            return Ok(Vec::new());
        }
        let mut items = self.get_items(&pks).await?;
        let mut events = Vec::with_capacity(pks.len());
        for pk in pks {
            // Published and forgotten since the index was read.
            let Some(item) = items.remove(&pk) else {
                continue;
            };
            let event = match (string(&item, "detail_type"), string(&item, "detail")) {
                (Some(t), Some(d)) => ReplicationEvent::parked(&t, &d),
                _ => None,
            };
            match event {
                Some(e) => events.push(e),
                // Edited by hand, or written by a newer version: written whole to the log and
                // forgotten, so that it does not hold back the parked events behind it.
                None => {
                    tracing::error!(
                        key = %pk,
                        item = ?item,
                        "a parked item that is not a replication event this version writes; logged and forgotten"
                    );
                    self.delete(pk).await?;
                }
            }
        }
        Ok(events)
    }

    async fn unpark(&self, verdict_ids: &[String]) -> Result<(), StoreError> {
        for id in verdict_ids {
            self.delete(parked_pk(id)).await?;
        }
        Ok(())
    }
}

impl HistoryReader for DynamoStateStore {
    /// Every expectation pushed in `[from, until)`, read from the `history` index: per UTC day,
    /// one `Query` per shard (`day = D#NN AND first_push BETWEEN from AND until - 1ms`, paged)
    /// and one for the previous version's whole groups (`day = D`), never a scan, so the cost
    /// follows the period asked for, not the size of the table. Each day goes to `each_day`
    /// sorted by push time and key, so a day at a time is in memory.
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
        let range = (
            "first_push",
            AttributeValue::N(from.millis().to_string()),
            AttributeValue::N(last.to_string()),
        );
        let mut day_start = from.millis() - from.millis().rem_euclid(DAY_MS);
        while day_start <= last {
            let day = history_day(Timestamp::from_millis(day_start));
            let mut partitions = vec![day.clone()];
            partitions.extend((0..SHARDS).map(|s| format!("{day}#{s:02}")));
            let mut groups: Vec<(i64, GroupKey, TrackedGroup)> = Vec::new();
            for partition in partitions {
                let mut failure = None;
                self.query(
                    HISTORY_INDEX,
                    ("day", partition),
                    Some(range.clone()),
                    |item| {
                        let (Some(pk), Some(first)) =
                            (string(item, "pk"), number(item, "first_push"))
                        else {
                            return true;
                        };
                        let read = body_of(&pk, item).and_then(|body| {
                            if parse_record_pk(&pk).is_ok() {
                                record_alone(&pk, &body)
                            } else {
                                head_alone(&pk, &body)
                            }
                        });
                        match read {
                            Ok(Some((key, tracked))) => groups.push((first, key, tracked)),
                            Ok(None) => {}
                            Err(e) => {
                                failure = Some(e);
                                return false;
                            }
                        }
                        true
                    },
                )
                .await?;
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            groups.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            each_day(groups.into_iter().map(|(_, k, t)| (k, t)).collect());
            day_start += DAY_MS;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: u64, slots: &[(u64, &str)]) -> Attrs {
        let mut item = HashMap::from([(
            "version".to_string(),
            AttributeValue::N(version.to_string()),
        )]);
        for (v, token) in slots {
            item.insert(writer_slot(*v), AttributeValue::S((*token).to_owned()));
        }
        item
    }

    #[test]
    fn a_save_recognises_its_write_under_up_to_seven_later_ones() {
        // Our save wrote version 5 as "ours"; the retry finds the head at 5, 6 ... 12.
        let ours = head(5, &[(5, "ours")]);
        assert!(landed(Some(&ours), 5, "ours"));
        let after_two = head(7, &[(5, "ours"), (6, "a"), (7, "b")]);
        assert!(landed(Some(&after_two), 5, "ours"), "another writer on top");
        let after_seven = head(12, &[(5, "ours"), (12, "z")]);
        assert!(landed(Some(&after_seven), 5, "ours"));
        // Eight later: slot 5 % 8 was reused by version 13.
        let reused = head(13, &[(13, "later")]);
        assert!(!landed(Some(&reused), 5, "ours"));
        // Someone else's version 5: our write never landed.
        let theirs = head(5, &[(5, "theirs")]);
        assert!(!landed(Some(&theirs), 5, "ours"));
        // Still at the version we read: nothing of ours there.
        let before = head(4, &[(5, "ours-from-long-ago")]);
        assert!(!landed(Some(&before), 5, "ours-from-long-ago"));
        assert!(!landed(None, 5, "ours"));
    }

    #[test]
    fn shards_spread_keys_and_never_change() {
        assert_eq!(shard("G#a"), shard("G#a"));
        let used: BTreeSet<u32> = (0..200).map(|i| shard(&format!("G#{i}"))).collect();
        assert_eq!(used.len(), SHARDS as usize, "every shard is used");
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(due_partition(Queue::Watched, 3), "W#03");
    }
}

// The inventory reconciliation's pass: one item of its own kind.
mod inventory;
