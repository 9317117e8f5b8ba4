//! The DynamoDB state store against a local moto server: real HTTP, real conditional writes,
//! transactions and index queries, on a table created from template.yaml's own definition by
//! `scripts/create-state-table`. Each test starts its own server and table.
//!
//! A group is stored as a head and one record per expectation (`adapters::stored`); loads name
//! the expectations they need. The previous version's single item per group is still read.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use ecr_replication_auditor::adapters::dynamodb::{
    DynamoStateStore, HISTORY_INDEX, StoredGroup, group_pk, history_partition, record_pk,
};
use ecr_replication_auditor::adapters::stored::RECENT_CAP;
use ecr_replication_auditor::domain::correlate::{CopySeen, GroupKey, Trigger};
use ecr_replication_auditor::domain::ids::ImageTag;
use ecr_replication_auditor::domain::ledger::{
    Confirmation, Counted, Finding, Found, Owed, StillExpected, TrackedGroup, Watch,
};
use ecr_replication_auditor::domain::signals;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::state::{DueWork, StateStore, StoreError, Versioned, Want};

use crate::support::ids::{at, digest, event_id, group_key, registry, synthetic_digest, tag};
use crate::support::moto::{self, MotoServer};

const TABLE: &str = "auditor-state";
/// `HISTORY_RETENTION_DAYS` for these tests.
const RETENTION_DAYS: u32 = 30;
const WINDOW: Window = Window::DEFAULT;

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// A moto server with the auditor's table, the store on it, and a raw client to look under it.
struct Table {
    /// Kept for its lifetime: dropping it stops the server.
    _server: MotoServer,
    store: DynamoStateStore,
    client: Client,
}

async fn table() -> Table {
    let server = MotoServer::start();
    server.create_state_table(TABLE, moto::REGION);
    let client = Client::new(&server.sdk_config().await);
    Table {
        store: DynamoStateStore::new(client.clone(), TABLE, RETENTION_DAYS),
        client,
        _server: server,
    }
}

type Item = HashMap<String, AttributeValue>;

impl Table {
    /// The item as DynamoDB holds it, read with the SDK rather than the adapter.
    async fn raw(&self, pk: &str) -> Option<Item> {
        self.client
            .get_item()
            .table_name(TABLE)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
    }

    async fn put_raw(&self, item: Item) {
        self.client
            .put_item()
            .table_name(TABLE)
            .set_item(Some(item))
            .send()
            .await
            .expect("PutItem");
    }

    /// The whole group (every tag these tests push), as the store loads it.
    async fn load_one(&self, key: &GroupKey) -> Versioned<TrackedGroup> {
        self.store.load(&[all_of(key)]).await.unwrap().remove(0)
    }

    /// The groups with an expectation awaiting a check, whenever it is due.
    async fn open_keys(&self) -> Vec<GroupKey> {
        let mut keys: Vec<GroupKey> = self
            .store
            .due(Timestamp::from_millis(i64::MAX), 10_000, false)
            .await
            .unwrap()
            .due
            .into_iter()
            .map(|r| r.key)
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// The tags these tests push.
fn tags() -> Vec<Option<ImageTag>> {
    vec![Some(tag("v1")), None, Some(tag("rc"))]
}

/// `key` with every tag these tests push.
fn all_of(key: &GroupKey) -> Want {
    (key.clone(), tags())
}

fn n(item: &Item, name: &str) -> i64 {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().unwrap(),
        other => panic!("{name} is not a number: {other:?}"),
    }
}

fn s<'a>(item: &'a Item, name: &str) -> &'a str {
    match item.get(name) {
        Some(AttributeValue::S(v)) => v,
        other => panic!("{name} is not a string: {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------------------------

// Times are `at(secs)`, seconds after 2024-07-01T10:00:00Z.

/// The group of digest `n` from us-west-2 to eu-west-1 of another account.
fn key(n: u16) -> GroupKey {
    group_key(
        &registry("111122223333", "us-west-2"),
        "team/api",
        &synthetic_digest(n),
        &registry("444455556666", "eu-west-1"),
    )
}

fn copy(id: &str, secs: i64, t: Option<&str>, succeeded: bool) -> CopySeen {
    CopySeen {
        id: event_id(id),
        at: at(secs),
        tag: t.map(tag),
        succeeded,
    }
}

/// `v1` pushed at `secs`, settled as the handler would: expected, due just after the window.
fn pushed(n: u16, secs: i64) -> TrackedGroup {
    let mut g = TrackedGroup::default();
    g.group.add_push(Some(tag("v1")), at(secs));
    g.settle(&key(n), WINDOW, at(secs));
    g
}

/// `v1` pushed at `secs` and its copy 7 s later: nothing left to check.
fn completed(n: u16, secs: i64) -> TrackedGroup {
    let mut g = pushed(n, secs);
    g.group
        .add_copy(copy(&format!("c-{n}"), secs + 7, Some("v1"), true));
    g.settle(&key(n), WINDOW, at(secs + 7));
    g
}

/// A group that uses every part of the stored form: three expectations (one by digest), a
/// failed and an untagged copy, one confirmation of each kind, both kinds of tag lookup.
fn everything() -> TrackedGroup {
    let mut g = TrackedGroup::default();
    g.group.add_push(Some(tag("v1")), at(0));
    g.group.add_push(None, at(3));
    g.group.add_push(Some(tag("rc")), at(5));
    g.group.add_copy(copy("failed-1", 8, Some("v1"), false));
    g.group.add_copy(copy("untagged-1", 9, None, true));
    let watch = |confirmation, tag_points_to, checks| Watch {
        counted: Counted {
            expected: true,
            missing: checks > 1,
            stale_tag: tag_points_to == Some(Some(digest(&synthetic_digest(9)))),
            ..Counted::default()
        },
        confirmation: Some(confirmation),
        tag_points_to,
        next_check: Some(at(4000)),
        checks,
        tag_moved_on: Some(checks > 1),
        still_expected: (checks > 1).then_some(StillExpected::Yes),
        found_by_inventory: checks > 1,
    };
    g.watches.insert(
        Some(tag("v1")),
        watch(
            Confirmation::Failed {
                failure_code: Some("ACCESS_DENIED: \"prod/*\" (verbatim)".into()),
                checked_at: at(1900),
            },
            Some(None),
            1,
        ),
    );
    g.watches.insert(
        None,
        watch(
            Confirmation::Present {
                pushed_at: Some(at(6)),
                carried_tag: false,
                checked_at: at(1900),
            },
            Some(Some(digest(&synthetic_digest(9)))),
            2,
        ),
    );
    g.watches.insert(
        Some(tag("rc")),
        watch(
            Confirmation::Absent {
                in_progress: true,
                checked_at: at(1900),
            },
            None,
            3,
        ),
    );
    g
}

fn unsaved(g: TrackedGroup) -> Versioned<TrackedGroup> {
    Versioned::new(0, g)
}

/// The record item of `key`'s expectation `t`.
fn record(key: &GroupKey, t: Option<&str>) -> String {
    record_pk(key, &t.map(tag))
}

// ---------------------------------------------------------------------------------------------
// Loading and saving
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_never_saved_load_as_empty_groups_at_version_0_alone_or_several_at_once() {
    let t = table().await;
    // One key is a GetItem; several are a BatchGetItem.
    let alone = t.store.load(&[(key(1), vec![])]).await.unwrap();
    assert_eq!(alone, vec![Versioned::default()]);
    let several = t
        .store
        .load(&[all_of(&key(1)), all_of(&key(2)), all_of(&key(3))])
        .await
        .unwrap();
    assert_eq!(several, vec![Versioned::default(); 3]);
    assert!(t.store.load(&[]).await.unwrap().is_empty());
    assert!(t.open_keys().await.is_empty());
}

#[tokio::test]
async fn a_saved_group_loads_back_unchanged_with_its_copies_watches_and_confirmations() {
    let t = table().await;
    let group = everything();
    assert_eq!(
        t.store.save(&[(key(1), unsaved(group.clone()))]).await,
        Ok(true)
    );

    let loaded = t.load_one(&key(1)).await;
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.value, group);
    assert_eq!(loaded.value.group.copies().len(), 2);
    assert_eq!(loaded.value.watches.len(), 3);
    // A head and a record per expectation.
    assert!(t.raw(&group_pk(&key(1))).await.is_some());
    for tag in [Some("v1"), None, Some("rc")] {
        assert!(t.raw(&record(&key(1), tag)).await.is_some(), "{tag:?}");
    }

    // A change saved at the version it was loaded at is the next version.
    let mut changed = loaded.clone();
    changed
        .value
        .group
        .add_copy(copy("ok-1", 20, Some("v1"), true));
    changed
        .value
        .watches
        .get_mut(&Some(tag("rc")))
        .unwrap()
        .checks = 4;
    assert_eq!(t.store.save(&[(key(1), changed.clone())]).await, Ok(true));

    // Read back through BatchGetItem too, next to a key that was never saved.
    let both = t
        .store
        .load(&[all_of(&key(2)), all_of(&key(1))])
        .await
        .unwrap();
    assert_eq!(both[0], Versioned::default());
    assert_eq!(both[1], Versioned::new(2, changed.value));
}

#[tokio::test]
async fn a_load_reads_the_expectations_it_names_and_those_still_waiting_for_their_copy() {
    let t = table().await;
    // v1's copy came first, then those of RECENT_CAP other tags; rc still waits for its copy.
    let mut g = pushed(1, 0);
    g.group.add_push(Some(tag("rc")), at(5));
    g.group.add_copy(copy("c-1", 7, Some("v1"), true));
    let later: Vec<String> = (0..RECENT_CAP).map(|i| format!("later-{i}")).collect();
    for (i, name) in later.iter().enumerate() {
        let i = i as i64;
        g.group.add_push(Some(tag(name)), at(1));
        g.group
            .add_copy(copy(&format!("c-{name}"), 8 + i, Some(name), true));
    }
    g.settle(&key(1), WINDOW, at(40));
    assert_eq!(
        t.store.save(&[(key(1), unsaved(g.clone()))]).await,
        Ok(true)
    );

    // Naming nothing: rc (waiting) and the tags copied last are read; v1, copied before
    // them, is not, and is counted as not loaded.
    let head_only = t.store.load(&[(key(1), vec![])]).await.unwrap().remove(0);
    let tags: BTreeSet<_> = head_only
        .value
        .group
        .expectations()
        .iter()
        .map(|e| e.tag.clone())
        .collect();
    let expected: BTreeSet<_> = later
        .iter()
        .map(|name| Some(tag(name)))
        .chain([Some(tag("rc"))])
        .collect();
    assert_eq!(tags, expected);
    assert_eq!(head_only.value.unloaded, 1);
    assert!(head_only.value.has_pushes());

    // Saving what was read rewrites the head, and no record that did not change.
    let before = t.raw(&record(&key(1), Some("v1"))).await.unwrap();
    let mut again = head_only.clone();
    again
        .value
        .group
        .add_copy(copy("tagless-1", 9, None, false));
    assert_eq!(t.store.save(&[(key(1), again)]).await, Ok(true));
    assert_eq!(t.raw(&record(&key(1), Some("v1"))).await.unwrap(), before);
    assert_eq!(t.load_one(&key(1)).await.version, 2);
}

#[tokio::test]
async fn a_put_at_a_stale_version_returns_false_and_leaves_the_stored_group_as_it_was() {
    let t = table().await;
    assert_eq!(
        t.store.save(&[(key(1), unsaved(pushed(1, 0)))]).await,
        Ok(true)
    );
    let stored = t.load_one(&key(1)).await;
    let before = t.raw(&group_pk(&key(1))).await.unwrap();

    // Another writer created it first: a second "new" group is stale.
    assert_eq!(
        t.store.save(&[(key(1), unsaved(completed(1, 0)))]).await,
        Ok(false)
    );
    // A version that is not the stored one is stale, older or newer.
    for version in [2, 7] {
        let stale = Versioned::new(version, completed(1, 0));
        assert_eq!(t.store.save(&[(key(1), stale)]).await, Ok(false));
    }
    assert_eq!(t.raw(&group_pk(&key(1))).await.unwrap(), before);
    assert_eq!(t.load_one(&key(1)).await, stored);

    // The stored version itself goes through, once.
    let next = Versioned::new(1, completed(1, 0));
    assert_eq!(t.store.save(&[(key(1), next.clone())]).await, Ok(true));
    assert_eq!(t.store.save(&[(key(1), next.clone())]).await, Ok(false));
    assert_eq!(t.load_one(&key(1)).await, Versioned::new(2, next.value));
}

#[tokio::test]
async fn a_transaction_with_one_stale_group_among_several_writes_none_of_them() {
    let t = table().await;
    assert_eq!(
        t.store.save(&[(key(1), unsaved(pushed(1, 0)))]).await,
        Ok(true)
    );
    let stored = t.load_one(&key(1)).await;
    let all = [all_of(&key(1)), all_of(&key(2)), all_of(&key(3))];

    // key(1) is stored at version 1: saving it as new is stale, and sinks the other two.
    let batch = [
        (key(2), unsaved(pushed(2, 0))),
        (key(1), unsaved(completed(1, 0))),
        (key(3), unsaved(pushed(3, 0))),
    ];
    assert_eq!(t.store.save(&batch).await, Ok(false));
    assert_eq!(
        t.store.load(&all).await.unwrap(),
        vec![stored.clone(), Versioned::default(), Versioned::default()]
    );
    assert!(t.raw(&group_pk(&key(2))).await.is_none());
    assert!(t.raw(&record(&key(3), Some("v1"))).await.is_none());

    // The same with key(1) at a wrong version (the update branch of the condition).
    let mut batch = batch;
    batch[1].1.version = 5;
    assert_eq!(t.store.save(&batch).await, Ok(false));
    assert_eq!(t.open_keys().await, vec![key(1)]);

    // At its stored version the whole transaction goes through.
    batch[1].1.version = 1;
    assert_eq!(t.store.save(&batch).await, Ok(true));
    let loaded = t.store.load(&all).await.unwrap();
    assert_eq!(
        loaded.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1, 1]
    );
    assert_eq!(loaded[0].value, completed(1, 0));
    assert_eq!(loaded[1].value, pushed(2, 0));
    assert_eq!(loaded[2].value, pushed(3, 0));
}

// ---------------------------------------------------------------------------------------------
// The due index
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_due_index_lists_exactly_the_expectations_awaiting_a_check_and_a_settled_one_leaves_it()
{
    let t = table().await;
    // Awaiting a check: two pushes without copies, and an untagged copy whose tag is to be
    // looked up. Not awaiting any: a completed group, and a copy whose push is not seen yet.
    let mut untagged = pushed(4, 0);
    untagged.group.add_copy(copy("u-4", 5, None, true));
    untagged.settle(&key(4), WINDOW, at(400));
    let mut copy_only = TrackedGroup::default();
    copy_only.group.add_copy(copy("c-5", 5, Some("v1"), true));
    copy_only.settle(&key(5), WINDOW, at(5));
    let groups = [
        (key(1), pushed(1, 0)),
        (key(2), completed(2, 0)),
        (key(3), pushed(3, 60)),
        (key(4), untagged),
        (key(5), copy_only),
    ];
    for (k, g) in &groups {
        assert_eq!(
            t.store.save(&[(k.clone(), unsaved(g.clone()))]).await,
            Ok(true)
        );
    }
    let due: Vec<_> = groups
        .iter()
        .filter(|(_, g)| g.due_at().is_some())
        .collect();
    assert_eq!(due.len(), 3, "the fixtures are what they say");
    assert_eq!(t.open_keys().await, vec![key(1), key(3), key(4)]);

    // Each waiting record carries its queue, shard and time; nothing else does.
    for (k, g) in &due {
        let item = t.raw(&record(k, Some("v1"))).await.unwrap();
        let queue = if *k == key(4) { "C#" } else { "F#" };
        assert!(s(&item, "due_shard").starts_with(queue), "{item:?}");
        assert_eq!(n(&item, "due_at"), g.due_at().unwrap().millis());
        let head = t.raw(&group_pk(k)).await.unwrap();
        assert!(!head.contains_key("due_shard") && !head.contains_key("open"));
    }
    for k in [key(2), key(5)] {
        let item = t.raw(&record(&k, Some("v1"))).await;
        assert!(
            item.is_none_or(|i| !i.contains_key("due_shard") && !i.contains_key("due_at")),
            "{k:?}"
        );
    }

    // Only what is due at a time is read, oldest first: key(1) (due 1801 s), then key(3).
    let at_1802 = t.store.due(at(1802), 100, false).await.unwrap();
    assert_eq!(
        at_1802
            .due
            .iter()
            .map(|r| r.key.clone())
            .collect::<Vec<_>>(),
        vec![key(4), key(1)],
        "the untagged copy's lookup has been due since its copy"
    );
    assert_eq!(
        at_1802.in_flight.values().sum::<u64>(),
        2,
        "both pushes in flight"
    );
    let budget_1 = t.store.due(at(9999), 1, false).await.unwrap();
    assert_eq!(budget_1.due.len(), 1);

    // key(1)'s copy arrives: once saved, nothing is left to check and it leaves the index.
    let mut v = t.load_one(&key(1)).await;
    v.value.group.add_copy(copy("c-1", 9, Some("v1"), true));
    v.value.settle(&key(1), WINDOW, at(9));
    assert_eq!(v.value.due_at(), None);
    assert_eq!(t.store.save(&[(key(1), v)]).await, Ok(true));
    assert_eq!(t.open_keys().await, vec![key(3), key(4)]);
    let item = t.raw(&record(&key(1), Some("v1"))).await.unwrap();
    assert!(
        !item.contains_key("due_shard") && !item.contains_key("due_at"),
        "{item:?}"
    );
}

#[tokio::test]
async fn copies_counted_missing_are_watched_apart_and_counted_only_when_asked() {
    let t = table().await;
    let mut missing = pushed(1, 0);
    let w = missing.watches.get_mut(&Some(tag("v1"))).unwrap();
    w.confirmation = Some(Confirmation::Absent {
        in_progress: false,
        checked_at: at(1801),
    });
    w.still_expected = Some(StillExpected::Yes);
    w.checks = 1;
    missing.settle(&key(1), WINDOW, at(1801));
    assert!(missing.watches[&Some(tag("v1"))].counted.missing);
    assert_eq!(t.store.save(&[(key(1), unsaved(missing))]).await, Ok(true));
    assert_eq!(
        t.store.save(&[(key(2), unsaved(pushed(2, 0)))]).await,
        Ok(true)
    );
    let item = t.raw(&record(&key(1), Some("v1"))).await.unwrap();
    assert!(s(&item, "due_shard").starts_with("W#"), "{item:?}");

    let plain = t.store.due(at(1802), 100, false).await.unwrap();
    assert_eq!(plain.watched, None, "not counted unless asked");
    assert_eq!(plain.in_flight.values().sum::<u64>(), 1);
    assert_eq!(
        plain.due.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        vec![key(2)],
        "the missing copy is next due one window later"
    );
    let counted = t.store.due(at(1802), 100, true).await.unwrap();
    assert_eq!(counted.watched.unwrap().values().sum::<u64>(), 1);
}

// ---------------------------------------------------------------------------------------------
// Rejections, expiry and the history index
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rejected_event_is_recorded_the_first_time_only_and_expires_after_the_retention() {
    let t = table().await;
    let id = event_id("bad-0001");
    assert_eq!(t.store.first_rejection(&id, at(10)).await, Ok(true));
    assert_eq!(t.store.first_rejection(&id, at(70)).await, Ok(false));
    let other = event_id("bad-0002");
    assert_eq!(t.store.first_rejection(&other, at(70)).await, Ok(true));

    let item = t.raw("R#bad-0001").await.expect("the rejection is stored");
    let retention_ms = i64::from(RETENTION_DAYS) * 86_400_000;
    assert_eq!(
        n(&item, "expires_at"),
        (at(10).millis() + retention_ms) / 1000,
        "from the first delivery, in epoch seconds"
    );
    // A rejection is not a group: the sweep never sees it.
    assert!(t.open_keys().await.is_empty());
}

#[tokio::test]
async fn saved_items_expire_retention_days_after_their_last_event_and_records_carry_the_history_keys()
 {
    let t = table().await;
    // Pushed at 10:00:05, copied (the last event) at 10:00:12.
    let mut g = pushed(1, 5);
    g.group.add_copy(copy("c-1", 12, None, false));
    g.settle(&key(1), WINDOW, at(12));
    assert_eq!(
        t.store.save(&[(key(1), unsaved(g.clone()))]).await,
        Ok(true)
    );

    let retention_secs = i64::from(RETENTION_DAYS) * 86_400;
    let head = t.raw(&group_pk(&key(1))).await.unwrap();
    assert_eq!(
        n(&head, "expires_at"),
        at(12).millis() / 1000 + retention_secs
    );
    assert_eq!(n(&head, "version"), 1);
    assert!(!head.contains_key("day"), "a head is not history");
    let v1 = record(&key(1), Some("v1"));
    let item = t.raw(&v1).await.unwrap();
    assert_eq!(n(&item, "due_at"), g.due_at().unwrap().millis());
    assert_eq!(s(&item, "day"), history_partition(at(5), &v1));
    assert!(s(&item, "day").starts_with("2024-07-01#"));
    assert_eq!(n(&item, "first_push"), at(5).millis());

    // The history index finds it by the day and shard of its push.
    let history = t
        .client
        .query()
        .table_name(TABLE)
        .index_name(HISTORY_INDEX)
        .key_condition_expression("#day = :day AND first_push >= :from")
        .expression_attribute_names("#day", "day")
        .expression_attribute_values(":day", AttributeValue::S(history_partition(at(5), &v1)))
        .expression_attribute_values(":from", AttributeValue::N(at(0).millis().to_string()))
        .send()
        .await
        .expect("Query on the history index");
    assert_eq!(history.items().len(), 1);
    assert_eq!(s(&history.items()[0], "pk"), v1);

    // A later event moves the expiry of the items that hold it.
    let mut later = t.load_one(&key(1)).await;
    later
        .value
        .group
        .add_copy(copy("c-2", 3600, Some("v1"), true));
    later.value.settle(&key(1), WINDOW, at(3600));
    assert_eq!(t.store.save(&[(key(1), later)]).await, Ok(true));
    for pk in [group_pk(&key(1)), v1] {
        let item = t.raw(&pk).await.unwrap();
        assert_eq!(
            n(&item, "expires_at"),
            at(3600).millis() / 1000 + retention_secs,
            "{pk}"
        );
    }

    // A copy alone (no push yet) is kept in the head, outside the history.
    let mut copy_only = TrackedGroup::default();
    copy_only.group.add_copy(copy("c-9", 30, Some("v1"), true));
    assert_eq!(
        t.store.save(&[(key(2), unsaved(copy_only))]).await,
        Ok(true)
    );
    let item = t.raw(&group_pk(&key(2))).await.unwrap();
    assert_eq!(
        n(&item, "expires_at"),
        at(30).millis() / 1000 + retention_secs
    );
    assert!(t.raw(&record(&key(2), Some("v1"))).await.is_none());
}

// ---------------------------------------------------------------------------------------------
// The previous version's items
// ---------------------------------------------------------------------------------------------

/// The previous version's single item for a whole group, with the attributes it indexed.
fn legacy_item(k: &GroupKey, g: &TrackedGroup, version: u64) -> Item {
    let mut item = HashMap::from([
        ("pk".to_owned(), AttributeValue::S(group_pk(k))),
        ("version".to_owned(), AttributeValue::N(version.to_string())),
        (
            "body".to_owned(),
            AttributeValue::S(serde_json::to_string(&StoredGroup::new(k, g)).unwrap()),
        ),
        ("writer".to_owned(), AttributeValue::S("old".into())),
    ]);
    if let Some(due) = g.due_at() {
        item.insert("open".into(), AttributeValue::S("open".into()));
        item.insert("due_at".into(), AttributeValue::N(due.millis().to_string()));
    }
    if let Some(first) = g.first_push() {
        item.insert(
            "day".into(),
            AttributeValue::S(first.to_string().chars().take(10).collect()),
        );
        item.insert(
            "first_push".into(),
            AttributeValue::N(first.millis().to_string()),
        );
    }
    item
}

#[tokio::test]
async fn a_group_written_by_the_previous_version_is_read_whole_found_due_and_rewritten_at_its_first_save()
 {
    let t = table().await;
    let old = everything();
    t.put_raw(legacy_item(&key(1), &old, 7)).await;

    // Read whole, whatever the load names, at the item's version.
    let loaded = t.store.load(&[(key(1), vec![])]).await.unwrap().remove(0);
    assert_eq!((loaded.version, &loaded.value), (7, &old));
    // The sweep finds it through the previous version's index once it is due.
    let work = t.store.due(at(4001), 100, false).await.unwrap();
    assert_eq!(work.legacy, vec![key(1)]);

    // Its first save writes a head and a record per expectation, and it leaves that index.
    let mut changed = loaded.clone();
    changed
        .value
        .group
        .add_copy(copy("ok-1", 20, Some("rc"), true));
    changed.value.settle(&key(1), WINDOW, at(4001));
    assert_eq!(t.store.save(&[(key(1), changed.clone())]).await, Ok(true));
    let head = t.raw(&group_pk(&key(1))).await.unwrap();
    for gone in ["open", "due_at", "day", "first_push", "writer"] {
        assert!(!head.contains_key(gone), "{gone}: {head:?}");
    }
    assert!(
        t.store
            .due(at(4001), 100, false)
            .await
            .unwrap()
            .legacy
            .is_empty()
    );
    assert_eq!(t.load_one(&key(1)).await, Versioned::new(8, changed.value));
    for tag in [Some("v1"), None, Some("rc")] {
        assert!(t.raw(&record(&key(1), tag)).await.is_some(), "{tag:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Damaged items
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreadable_stored_item_is_refused_by_load_not_taken_for_an_empty_group() {
    let t = table().await;
    let item = |pk: String, body: String| -> Item {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(pk)),
            ("version".to_owned(), AttributeValue::N("3".into())),
            ("body".to_owned(), AttributeValue::S(body)),
        ])
    };
    // Not JSON at all.
    t.put_raw(item(group_pk(&key(1)), "{\"v\": 2, \"source_acc".into()))
        .await;
    for wants in [
        vec![all_of(&key(1))],
        vec![all_of(&key(2)), all_of(&key(1))],
    ] {
        let err = t.store.load(&wants).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Unreadable { key: k, reason } if *k == group_pk(&key(1)) && reason.contains("unreadable group body")),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }

    // JSON of the right shape holding a tag the domain refuses, in a record.
    assert_eq!(
        t.store.save(&[(key(2), unsaved(pushed(2, 0)))]).await,
        Ok(true)
    );
    let v1 = record(&key(2), Some("v1"));
    let mut bad = t.raw(&v1).await.unwrap();
    let body = s(&bad, "body").replace("\"v1\"", "\"not a tag!\"");
    bad.insert("body".into(), AttributeValue::S(body));
    t.put_raw(bad).await;
    let err = t.store.load(&[all_of(&key(2))]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unreadable { key: k, reason } if *k == v1 && reason.contains("not a tag!")),
        "{err:?}"
    );

    // A version of the schema this version does not know (left by a newer one).
    let mut future = StoredGroup::new(&key(3), &pushed(3, 0));
    future.v = 3;
    t.put_raw(item(
        group_pk(&key(3)),
        serde_json::to_string(&future).unwrap(),
    ))
    .await;
    let err = t.store.load(&[all_of(&key(3))]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unreadable { reason, .. } if reason.contains("version 3")),
        "{err:?}"
    );

    // An item without its body.
    let mut no_body = item(group_pk(&key(4)), String::new());
    no_body.remove("body");
    t.put_raw(no_body).await;
    let err = t.store.load(&[all_of(&key(4))]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Unreadable { reason, .. } if reason.contains("without body")),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A digest tagged on every commit
// ---------------------------------------------------------------------------------------------

/// One item held every tag of a digest, and from about a thousand tags on DynamoDB refused it
/// (ValidationException: the item is over 400 KB), so every push of that digest failed. A save
/// now writes the head and the records of its own pushes, whatever the number of tags.
#[tokio::test]
async fn a_digest_tagged_1500_times_is_saved_every_time_and_every_item_stays_small() {
    let t = table().await;
    const TAGS: i64 = 1_500;
    // Ten pushes per save, each with its copy: moto copies its whole table at every
    // transaction, so 1,500 of them would take minutes (tests/it/scale.rs saves every push on
    // its own, in memory, and checks what each writes).
    const PER_SAVE: i64 = 10;
    let mut largest = 0usize;
    for first in (0..TAGS).step_by(PER_SAVE as usize) {
        let names: Vec<ImageTag> = (first..first + PER_SAVE)
            .map(|i| tag(&format!("build-{i:05}")))
            .collect();
        let want = (key(1), names.iter().cloned().map(Some).collect());
        let mut v = t.store.load(&[want]).await.unwrap().remove(0);
        for (i, name) in (first..).zip(&names) {
            v.value.group.add_push(Some(name.clone()), at(i));
            v.value
                .group
                .add_copy(copy(&format!("c-{i}"), i + 3, Some(name.as_str()), true));
        }
        v.value.settle(&key(1), WINDOW, at(first + PER_SAVE + 3));
        assert_eq!(
            t.store.save(&[(key(1), v)]).await,
            Ok(true),
            "the save of pushes {first}.. was refused"
        );
        if first % 250 == 0 || first + PER_SAVE >= TAGS {
            let head = t.raw(&group_pk(&key(1))).await.unwrap();
            largest = largest.max(s(&head, "body").len());
        }
    }
    assert!(largest < 32_000, "the head stays small: {largest} bytes");
    let record = t.raw(&record(&key(1), Some("build-01499"))).await.unwrap();
    assert!(s(&record, "body").len() < 4_000);
    let head = t.store.load(&[(key(1), vec![])]).await.unwrap().remove(0);
    assert_eq!(head.version, (TAGS / PER_SAVE) as u64);
    assert_eq!(
        head.value.group.expectations().len() as u32 + head.value.unloaded,
        TAGS as u32,
        "every push is counted, none of them read (each has its copy)"
    );
}

/// Events parked after a failed `PutEvents` read back whole, oldest first, once each however
/// often parked, until unparked; the sweep's own reading of the `due` index never sees them.
#[tokio::test]
async fn parked_replication_events_read_back_whole_until_unparked_and_are_no_due_work() {
    let t = table().await;
    let key = key(1);
    let found = |finding, tag: Option<&str>| Found {
        owed: Owed::Copy(Trigger::Push),
        tag: tag.map(ImageTag::parse).transpose().unwrap(),
        since: at(0),
        at: at(1800),
        finding,
    };
    let missed =
        signals::of_finding(&key, &found(Finding::Missing, Some("v1")), None, WINDOW).unwrap();
    let failed = signals::of_finding(
        &key,
        &found(
            Finding::Failed {
                failure_code: Some("REPLICATION_FAILURE".into()),
            },
            None,
        ),
        None,
        WINDOW,
    )
    .unwrap();
    // Written by hand (or by a newer version): logged and forgotten, not in the way.
    t.client
        .put_item()
        .table_name(TABLE)
        .item("pk", AttributeValue::S("P#hand-made".into()))
        .item("detail_type", AttributeValue::S("Something Else".into()))
        .item("detail", AttributeValue::S("{}".into()))
        .item("due_shard", AttributeValue::S("P#00".into()))
        .item("due_at", AttributeValue::N("0".into()))
        .send()
        .await
        .unwrap();
    for (event, secs) in [(&missed, 10), (&failed, 20), (&missed, 30)] {
        t.store
            .park(std::slice::from_ref(event), at(secs))
            .await
            .unwrap();
    }
    assert_eq!(
        t.store.parked(100).await.unwrap(),
        vec![failed.clone(), missed.clone()],
        "the later park of the same fact replaced the first"
    );
    assert_eq!(t.raw("P#hand-made").await, None, "forgotten once read");
    assert_eq!(
        t.store.parked(1).await.unwrap().len(),
        1,
        "at most the limit"
    );
    let work = t.store.due(at(10_000), 100, false).await.unwrap();
    assert_eq!(work, DueWork::default(), "no due work, nothing unreadable");

    t.store
        .unpark(std::slice::from_ref(&failed.detail.verdict_id))
        .await
        .unwrap();
    assert_eq!(t.store.parked(100).await.unwrap(), vec![missed]);
}
