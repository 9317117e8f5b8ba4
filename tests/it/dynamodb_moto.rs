//! The DynamoDB state store against a local moto server: real HTTP, real conditional writes,
//! transactions and index queries, on a table created from template.yaml's own definition by
//! `scripts/create-state-table`. Each test starts its own server and table.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use ecr_replication_auditor::adapters::dynamodb::{
    DynamoStateStore, HISTORY_INDEX, StoredGroup, group_pk,
};
use ecr_replication_auditor::domain::correlate::{CopySeen, GroupKey};
use ecr_replication_auditor::domain::ledger::{
    Confirmation, Counted, StillExpected, TrackedGroup, Watch,
};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::ports::state::{StateStore, StoreError, Versioned};

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

    async fn load_one(&self, key: &GroupKey) -> Versioned<TrackedGroup> {
        self.store
            .load(std::slice::from_ref(key))
            .await
            .unwrap()
            .remove(0)
    }

    async fn open_keys(&self) -> Vec<GroupKey> {
        let mut keys: Vec<GroupKey> = self
            .store
            .open()
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys
    }
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
    Versioned {
        version: 0,
        value: g,
    }
}

// ---------------------------------------------------------------------------------------------
// Loading and saving
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_never_saved_load_as_empty_groups_at_version_0_alone_or_several_at_once() {
    let t = table().await;
    // One key is a GetItem; several are a BatchGetItem.
    assert_eq!(t.load_one(&key(1)).await, Versioned::default());
    let several = t.store.load(&[key(1), key(2), key(3)]).await.unwrap();
    assert_eq!(several, vec![Versioned::default(); 3]);
    assert!(t.store.load(&[]).await.unwrap().is_empty());
    assert!(t.store.open().await.unwrap().is_empty());
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
    let both = t.store.load(&[key(2), key(1)]).await.unwrap();
    assert_eq!(both[0], Versioned::default());
    assert_eq!(
        both[1],
        Versioned {
            version: 2,
            value: changed.value
        }
    );
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
        let stale = Versioned {
            version,
            value: completed(1, 0),
        };
        assert_eq!(t.store.save(&[(key(1), stale)]).await, Ok(false));
    }
    assert_eq!(t.raw(&group_pk(&key(1))).await.unwrap(), before);
    assert_eq!(t.load_one(&key(1)).await, stored);

    // The stored version itself goes through, once.
    let next = Versioned {
        version: 1,
        value: completed(1, 0),
    };
    assert_eq!(t.store.save(&[(key(1), next.clone())]).await, Ok(true));
    assert_eq!(t.store.save(&[(key(1), next.clone())]).await, Ok(false));
    assert_eq!(
        t.load_one(&key(1)).await,
        Versioned {
            version: 2,
            value: next.value
        }
    );
}

#[tokio::test]
async fn a_transaction_with_one_stale_group_among_several_writes_none_of_them() {
    let t = table().await;
    assert_eq!(
        t.store.save(&[(key(1), unsaved(pushed(1, 0)))]).await,
        Ok(true)
    );
    let stored = t.load_one(&key(1)).await;

    // key(1) is stored at version 1: saving it as new is stale, and sinks the other two.
    let batch = [
        (key(2), unsaved(pushed(2, 0))),
        (key(1), unsaved(completed(1, 0))),
        (key(3), unsaved(pushed(3, 0))),
    ];
    assert_eq!(t.store.save(&batch).await, Ok(false));
    assert_eq!(
        t.store.load(&[key(1), key(2), key(3)]).await.unwrap(),
        vec![stored.clone(), Versioned::default(), Versioned::default()]
    );
    assert!(t.raw(&group_pk(&key(2))).await.is_none());
    assert!(t.raw(&group_pk(&key(3))).await.is_none());

    // The same with key(1) at a wrong version (the update branch of the condition).
    let mut batch = batch;
    batch[1].1.version = 5;
    assert_eq!(t.store.save(&batch).await, Ok(false));
    assert_eq!(t.open_keys().await, vec![key(1)]);

    // At its stored version the whole transaction goes through.
    batch[1].1.version = 1;
    assert_eq!(t.store.save(&batch).await, Ok(true));
    let loaded = t.store.load(&[key(1), key(2), key(3)]).await.unwrap();
    assert_eq!(
        loaded.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![2, 1, 1]
    );
    assert_eq!(loaded[0].value, completed(1, 0));
    assert_eq!(loaded[1].value, pushed(2, 0));
    assert_eq!(loaded[2].value, pushed(3, 0));
}

// ---------------------------------------------------------------------------------------------
// The open index
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn open_lists_exactly_the_groups_awaiting_a_check_and_a_settled_group_leaves_it_at_its_next_save()
 {
    let t = table().await;
    // Awaiting a check: two pushes without copies, and an untagged copy whose tag is to be
    // looked up. Not awaiting any: a completed group, and a copy whose push is not seen yet.
    let mut untagged = pushed(4, 0);
    untagged.group.add_copy(copy("u-4", 5, None, true));
    untagged.settle(&key(4), WINDOW, at(5));
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

    let open = t.store.open().await.unwrap();
    assert_eq!(
        open.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![key(1), key(3), key(4)]
    );
    for ((k, v), (_, g)) in open.iter().zip(due) {
        assert_eq!((v.version, &v.value), (1, g), "{k:?}");
        let item = t.raw(&group_pk(k)).await.unwrap();
        assert_eq!(s(&item, "open"), "open");
        assert_eq!(n(&item, "due_at"), g.due_at().unwrap().millis());
    }
    for k in [key(2), key(5)] {
        let item = t.raw(&group_pk(&k)).await.unwrap();
        assert!(
            !item.contains_key("open") && !item.contains_key("due_at"),
            "{item:?}"
        );
    }

    // key(1)'s copy arrives: once saved, nothing is left to check and it leaves the index.
    let mut v = t.load_one(&key(1)).await;
    v.value.group.add_copy(copy("c-1", 9, Some("v1"), true));
    v.value.settle(&key(1), WINDOW, at(9));
    assert_eq!(v.value.due_at(), None);
    assert_eq!(t.store.save(&[(key(1), v)]).await, Ok(true));
    assert_eq!(t.open_keys().await, vec![key(3), key(4)]);
    let item = t.raw(&group_pk(&key(1))).await.unwrap();
    assert!(
        !item.contains_key("open") && !item.contains_key("due_at"),
        "{item:?}"
    );
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
    assert!(t.store.open().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_saved_item_expires_retention_days_after_its_last_event_and_carries_the_index_attributes()
{
    let t = table().await;
    // Pushed at 10:00:05, copied (the last event) at 10:00:12; the body says the rest.
    let mut g = pushed(1, 5);
    g.group.add_copy(copy("c-1", 12, None, false));
    g.settle(&key(1), WINDOW, at(12));
    assert_eq!(
        t.store.save(&[(key(1), unsaved(g.clone()))]).await,
        Ok(true)
    );

    let item = t.raw(&group_pk(&key(1))).await.unwrap();
    let retention_secs = i64::from(RETENTION_DAYS) * 86_400;
    assert_eq!(
        n(&item, "expires_at"),
        at(12).millis() / 1000 + retention_secs
    );
    assert_eq!(n(&item, "version"), 1);
    assert_eq!(s(&item, "open"), "open");
    assert_eq!(n(&item, "due_at"), g.due_at().unwrap().millis());
    assert_eq!(s(&item, "day"), "2024-07-01");
    assert_eq!(n(&item, "first_push"), at(5).millis());
    let body: StoredGroup = serde_json::from_str(s(&item, "body")).unwrap();
    assert_eq!(body, StoredGroup::new(&key(1), &g));

    // The history index finds it by the day of its first push.
    let history = t
        .client
        .query()
        .table_name(TABLE)
        .index_name(HISTORY_INDEX)
        .key_condition_expression("#day = :day AND first_push >= :from")
        .expression_attribute_names("#day", "day")
        .expression_attribute_values(":day", AttributeValue::S("2024-07-01".into()))
        .expression_attribute_values(":from", AttributeValue::N(at(0).millis().to_string()))
        .send()
        .await
        .expect("Query on the history index");
    assert_eq!(history.items().len(), 1);
    assert_eq!(s(&history.items()[0], "pk"), group_pk(&key(1)));

    // A later event moves the expiry; a copy alone (no push yet) has no history attributes.
    let mut later = t.load_one(&key(1)).await;
    later
        .value
        .group
        .add_copy(copy("c-2", 3600, Some("v1"), true));
    later.value.settle(&key(1), WINDOW, at(3600));
    assert_eq!(t.store.save(&[(key(1), later)]).await, Ok(true));
    let item = t.raw(&group_pk(&key(1))).await.unwrap();
    assert_eq!(
        n(&item, "expires_at"),
        at(3600).millis() / 1000 + retention_secs
    );
    assert_eq!(
        n(&item, "first_push"),
        at(5).millis(),
        "still the first push"
    );

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
    assert!(
        !item.contains_key("day") && !item.contains_key("first_push"),
        "{item:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Damaged items
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreadable_stored_body_is_refused_by_load_and_by_open_not_taken_for_an_empty_group() {
    let t = table().await;
    let item = |k: &GroupKey, body: String| -> Item {
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(group_pk(k))),
            ("version".to_owned(), AttributeValue::N("3".into())),
            ("body".to_owned(), AttributeValue::S(body)),
            ("open".to_owned(), AttributeValue::S("open".into())),
            (
                "due_at".to_owned(),
                AttributeValue::N(at(1801).millis().to_string()),
            ),
        ])
    };
    // Not JSON at all.
    t.put_raw(item(&key(1), "{\"v\": 1, \"source_acc".into()))
        .await;
    for keys in [vec![key(1)], vec![key(2), key(1)]] {
        let err = t.store.load(&keys).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Refused(m) if m.contains("unreadable group body")),
            "{keys:?}: {err:?}"
        );
        assert!(!err.is_transient());
    }
    let err = t.store.open().await.unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err:?}");

    t.client
        .delete_item()
        .table_name(TABLE)
        .key("pk", AttributeValue::S(group_pk(&key(1))))
        .send()
        .await
        .expect("DeleteItem");

    // JSON of the right shape holding a tag the domain refuses: load parses the group...
    let mut stored = StoredGroup::new(&key(2), &pushed(2, 0));
    stored.expectations[0].tag = Some("not a tag!".into());
    t.put_raw(item(&key(2), serde_json::to_string(&stored).unwrap()))
        .await;
    let err = t.store.load(&[key(2)]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(m) if m.contains("not a tag!")),
        "{err:?}"
    );
    // ...and open also parses the key from the body.
    let mut stored = StoredGroup::new(&key(2), &pushed(2, 0));
    stored.repository = "Team/API".into();
    t.put_raw(item(&key(2), serde_json::to_string(&stored).unwrap()))
        .await;
    let err = t.store.open().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(m) if m.contains("Team/API")),
        "{err:?}"
    );

    // An item without its body.
    let mut no_body = item(&key(3), String::new());
    no_body.remove("body");
    t.put_raw(no_body).await;
    let err = t.store.load(&[key(3)]).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Refused(m) if m.contains("without body")),
        "{err:?}"
    );
}
