//! The Lambda's handler on its real adapters against a local moto server: the DynamoDB state
//! store on a table made from template.yaml, and the ECR adapter reading the source Region's
//! replication configuration and the destinations' images, in this account and, through the
//! audit role, in another. Metrics go to a recorder (moto does not speak CloudWatch's protocol;
//! the CloudWatch adapter is tested with aws-smithy-mocks in `metrics_adapters.rs`).
//!
//! moto never replicates, so each test puts in the destinations what replication would have
//! left there; and it answers DescribeImageReplicationStatus with HTTP 500, so every sweep here
//! runs with that API unavailable and decides with DescribeImages.
//!
//! Event times are the real clock's (moto stamps `imagePushedAt` with it); the handler's `now`
//! is whatever the step needs, e.g. one window later for a sweep.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_ecr::types::ImageIdentifier;
use serde_json::{Value, json};

use ecr_replication_auditor::adapters::dynamodb::{group_pk, record_pk};
use ecr_replication_auditor::app::handler::Summary;
use ecr_replication_auditor::domain::deletion::{DeleteKind, DeleteStatus};
use ecr_replication_auditor::domain::ledger::{Confirmation, Watch};
use ecr_replication_auditor::domain::metrics::Unit;
use ecr_replication_auditor::domain::time::{Timestamp, Window};

use crate::support::events::{copy_event, delete_event, push_event};
use crate::support::ids::{self, synthetic_digest};
use crate::support::logs::SharedBuf;
use crate::support::metrics::{Dims, no_dims};
use crate::support::moto;
use crate::support::world;
use world::{
    CROSS, PUSHED_AGO_SECS, REPO, RETENTION_DAYS, SAME, SRC_REGION, TABLE, TAG, WINDOW_SECS,
    ecr_in, group_key, image, put_image, sweep,
};

// ---------------------------------------------------------------------------------------------
// Metrics (the recorder and what it received: `support/metrics.rs`)
// ---------------------------------------------------------------------------------------------

/// A verdict's dimensions: the run publishes the Repository dimension.
fn to(d: (&str, &str)) -> Dims {
    let mut dims = gauge_of(d);
    dims.push(("Repository", REPO.to_owned()));
    dims
}

/// PendingReplications' dimensions: per destination, never per repository.
fn gauge_of(d: (&str, &str)) -> Dims {
    vec![
        ("SourceRegion", SRC_REGION.to_owned()),
        ("DestinationRegion", d.0.to_owned()),
        ("DestinationAccount", d.1.to_owned()),
    ]
}

// ---------------------------------------------------------------------------------------------
// The world: moto with the table, the registries and the handler
// ---------------------------------------------------------------------------------------------

/// The world of `support/world.rs` with no fault rules (its handler reaches moto through the
/// proxy, one request at a time: DynamoDB makes each request atomic, moto does not), and this
/// file's helpers: a tag or none on every push and copy, the fallback sink checked on every
/// run, watches and raw items.
struct World(world::World);

impl std::ops::Deref for World {
    type Target = world::World;

    fn deref(&self) -> &world::World {
        &self.0
    }
}

impl World {
    async fn start() -> World {
        World(world::World::start().await)
    }

    fn source(&self) -> aws_sdk_ecr::Client {
        ecr_in(&self.own, SRC_REGION)
    }

    /// One invocation, which must succeed; the fallback sink is never needed.
    async fn run(&self, payload: &Value, secs: i64) -> Summary {
        let summary = self
            .auditor
            .handle(payload, self.at(secs))
            .await
            .unwrap_or_else(|e| panic!("invocation at +{secs}s failed: {e}"));
        assert_eq!(self.fallback.calls(), 0, "the metrics sink never failed");
        summary
    }

    // Events shaped like events/push-tagged.json and events/replication-success-*.json.

    /// `ECR Image Action` PUSH in the source registry, `secs` after t0.
    fn push(&self, id: &str, secs: i64, digest: &str, tag: Option<&str>) -> Value {
        push_event(id, self.at(secs), &image(digest, tag))
    }

    /// `ECR Replication Action` SUCCESS as the destination's bus receives it: the envelope's
    /// account and Region are the destination's.
    fn copy(&self, id: &str, secs: i64, d: (&str, &str), digest: &str, tag: Option<&str>) -> Value {
        copy_event(id, self.at(secs), &image(digest, tag), d, "SUCCESS")
    }

    // The stored state, read through the adapter and raw.

    async fn watch(&self, d: (&str, &str), digest: &str, tag: Option<&str>) -> Watch {
        let tag = tag.map(ids::tag);
        self.group(d, digest)
            .await
            .value
            .watches
            .get(&tag)
            .cloned()
            .unwrap_or_else(|| panic!("no watch for {tag:?} in {d:?}"))
    }

    async fn raw(&self, pk: &str) -> std::collections::HashMap<String, AttributeValue> {
        aws_sdk_dynamodb::Client::new(&self.own)
            .get_item()
            .table_name(TABLE)
            .key("pk", AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("GetItem")
            .item
            .unwrap_or_else(|| panic!("no item {pk}"))
    }
}

/// `imagePushedAt` of `digest` as the destination reports it.
async fn pushed_at(client: &aws_sdk_ecr::Client, digest: &str) -> Timestamp {
    let out = client
        .describe_images()
        .repository_name(REPO)
        .image_ids(ImageIdentifier::builder().image_digest(digest).build())
        .send()
        .await
        .expect("moto's DescribeImages");
    let at = out.image_details()[0]
        .image_pushed_at()
        .expect("imagePushedAt");
    Timestamp::from_millis(at.to_millis().unwrap())
}

fn summary(f: impl FnOnce(&mut Summary)) -> Summary {
    let mut s = Summary::default();
    f(&mut s);
    s
}

// ---------------------------------------------------------------------------------------------
// The happy path
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_push_copied_to_this_account_and_another_completes_twice_with_its_lag_and_leaves_the_sweep_nothing()
 {
    let w = World::start().await;
    let digest = put_image(&w.source(), 1, TAG).await;

    let s = w.run(&w.push("p-1", 0, &digest, Some(TAG)), 1).await;
    assert_eq!(s, summary(|s| (s.pushes, s.expected) = (1, 2)));
    let p = w.metrics.take();
    assert_eq!(
        p.names_but_watched(),
        BTreeSet::from(["ReplicationsExpected"])
    );
    for d in [SAME, CROSS] {
        assert_eq!(
            p.points("ReplicationsExpected", &to(d)),
            vec![(w.at(0), 1.0, 1.0)]
        );
    }
    assert_eq!(
        p.points("ReplicationsExpected", &no_dims()),
        vec![(w.at(0), 1.0, 2.0)]
    );
    for d in [SAME, CROSS] {
        let g = w.group(d, &digest).await;
        assert_eq!(g.version, 1, "{d:?}: one transaction for both destinations");
        assert!(g.value.due_at().is_some(), "{d:?}");
    }
    assert_eq!(w.open_groups().await.len(), 2);

    let s = w
        .run(&w.copy("c-same", 7, SAME, &digest, Some(TAG)), 7)
        .await;
    assert_eq!(s, summary(|s| (s.copies, s.completed) = (1, 1)));
    let s = w
        .run(&w.copy("c-cross", 12, CROSS, &digest, Some(TAG)), 12)
        .await;
    assert_eq!(s, summary(|s| (s.copies, s.completed) = (1, 1)));
    let p = w.metrics.take();
    assert_eq!(
        p.names_but_watched(),
        BTreeSet::from(["ReplicationLatency", "ReplicationsCompleted"])
    );
    assert_eq!(
        p.points("ReplicationsCompleted", &to(SAME)),
        vec![(w.at(7), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationsCompleted", &to(CROSS)),
        vec![(w.at(12), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(SAME)),
        vec![(w.at(7), 7.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(w.at(12), 12.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &no_dims()),
        vec![(w.at(7), 7.0, 1.0), (w.at(12), 12.0, 1.0)]
    );
    assert_eq!(
        p.unit("ReplicationLatency"),
        BTreeSet::from([Unit::Seconds])
    );
    assert_eq!(
        p.unit("ReplicationsCompleted"),
        BTreeSet::from([Unit::Count])
    );

    for d in [SAME, CROSS] {
        let g = w.group(d, &digest).await;
        assert_eq!(g.version, 2, "{d:?}");
        let watch = &g.value.watches[&Some(ids::tag(TAG))];
        assert!(
            watch.counted.expected && watch.counted.completed,
            "{d:?}: {watch:?}"
        );
        assert_eq!((watch.next_check, watch.checks), (None, 0), "{d:?}");
        let item = w.raw(&group_pk(&group_key(d, &digest))).await;
        assert!(
            !item.contains_key("open"),
            "{d:?} left the open index: {item:?}"
        );
    }
    assert!(w.open_groups().await.is_empty());

    let s = w.run(&sweep(), WINDOW_SECS + 1).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    let p = w.metrics.take();
    assert_eq!(
        p.names_but_watched(),
        BTreeSet::from(["PendingReplications"])
    );
    assert_eq!(
        p.points("PendingReplications", &no_dims()),
        vec![(w.at(WINDOW_SECS + 1), 0.0, 1.0)]
    );
}

// ---------------------------------------------------------------------------------------------
// Lost events, missing copies, untagged copies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn copies_whose_events_were_lost_are_confirmed_present_by_describe_images_with_the_lag_from_the_destinations_push_time()
 {
    let w = World::start().await;
    let digest = put_image(&w.source(), 1, TAG).await;
    // What replication left in both destinations; moto stamps imagePushedAt with its clock.
    for d in [SAME, CROSS] {
        assert_eq!(put_image(&w.ecr(d), 1, TAG).await, digest, "{d:?}");
    }
    let same_at = pushed_at(&w.ecr(SAME), &digest).await;
    let cross_at = pushed_at(&w.ecr(CROSS), &digest).await;
    w.run(&w.push("p-1", 0, &digest, Some(TAG)), 1).await;
    w.metrics.take();

    // DescribeImageReplicationStatus answers HTTP 500 in moto: decided with DescribeImages alone,
    // and the cause logged once for the sweep, not once per expectation.
    let log = SharedBuf::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let logging = tracing::subscriber::set_default(subscriber);
    let now = WINDOW_SECS + 1;
    let s = w.run(&sweep(), now).await;
    drop(logging);
    let text = log.text();
    let unavailable: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("an ECR confirmation API is unavailable"))
        .collect();
    assert_eq!(unavailable.len(), 1, "{text}");
    assert!(
        unavailable[0].contains("DescribeImageReplicationStatus")
            && unavailable[0].contains("HTTP 500"),
        "{text}"
    );
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.completed) = (1, 2, 2))
    );
    let p = w.metrics.take();
    for (d, arrived) in [(SAME, same_at), (CROSS, cross_at)] {
        let lag_ms = arrived.since(w.at(0));
        assert!(
            (PUSHED_AGO_SECS - 2..=PUSHED_AGO_SECS + 60).contains(&(lag_ms / 1000)),
            "{d:?}: a lag of {lag_ms} ms is not the time since the push"
        );
        let lag = lag_ms as f64 / 1000.0;
        assert_ne!(arrived, w.at(now), "not the sweep's time");
        assert_eq!(
            p.points("ReplicationsCompleted", &to(d)),
            vec![(arrived, 1.0, 1.0)],
            "{d:?}: at the destination's imagePushedAt"
        );
        assert_eq!(
            p.points("ReplicationLatency", &to(d)),
            vec![(arrived, lag, 1.0)],
            "{d:?}"
        );
        let watch = w.watch(d, &digest, Some(TAG)).await;
        assert_eq!(
            watch.confirmation,
            Some(Confirmation::Present {
                pushed_at: Some(arrived),
                carried_tag: true,
                checked_at: w.at(now)
            }),
            "{d:?}"
        );
        assert_eq!((watch.next_check, watch.checks), (None, 1), "{d:?}");
    }
    assert_eq!(p.count("ReplicationsMissing", &no_dims()), 0.0);
    assert_eq!(p.count("ReplicationsLate", &no_dims()), 0.0);
    assert_eq!(
        p.points("PendingReplications", &no_dims()),
        vec![(w.at(now), 0.0, 1.0)]
    );
    assert!(w.open_groups().await.is_empty());
}

#[tokio::test]
async fn a_copy_missing_at_its_deadline_is_counted_missing_once_and_later_sweeps_count_nothing() {
    let w = World::start().await;
    let digest = put_image(&w.source(), 1, TAG).await;
    w.run(&w.push("p-1", 0, &digest, Some(TAG)), 1).await;
    w.run(&w.copy("c-same", 7, SAME, &digest, Some(TAG)), 7)
        .await;
    w.metrics.take();

    // Before the deadline nothing is due.
    let s = w.run(&sweep(), 600).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    let p = w.metrics.take();
    assert_eq!(
        p.points("PendingReplications", &gauge_of(CROSS)),
        vec![(w.at(600), 1.0, 1.0)]
    );

    // After it, the other account's destination has no such image: missing, dated when found.
    let now = WINDOW_SECS + 1;
    let s = w.run(&sweep(), now).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.missing) = (1, 1, 1))
    );
    let p = w.metrics.take();
    assert_eq!(
        p.names_but_watched(),
        BTreeSet::from(["PendingReplications", "ReplicationsMissing"])
    );
    assert_eq!(
        p.points("ReplicationsMissing", &to(CROSS)),
        vec![(w.at(now), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationsMissing", &no_dims()),
        vec![(w.at(now), 1.0, 1.0)]
    );
    // Counted missing, it is no longer in flight: watched (a gauge of its own).
    assert_eq!(p.count("PendingReplications", &gauge_of(CROSS)), 0.0);
    let watch = w.watch(CROSS, &digest, Some(TAG)).await;
    assert!(
        watch.counted.missing && !watch.counted.completed,
        "{watch:?}"
    );
    assert_eq!(
        watch.confirmation,
        Some(Confirmation::Absent {
            in_progress: false,
            checked_at: w.at(now)
        })
    );
    let next = watch.next_check.expect("still watched");
    assert!(next > w.at(now + 60), "backed off: {next}");
    // Still in the due index, among the watched, due at its next check.
    assert_eq!(w.open_groups().await, vec![group_key(CROSS, &digest)]);
    let item = w
        .raw(&record_pk(&group_key(CROSS, &digest), &Some(ids::tag(TAG))))
        .await;
    assert_eq!(
        item.get("due_at"),
        Some(&AttributeValue::N(next.millis().to_string()))
    );
    assert!(
        matches!(item.get("due_shard"), Some(AttributeValue::S(s)) if s.starts_with("W#")),
        "{item:?}"
    );

    // A minute later: not due, nothing asked, nothing counted.
    let s = w.run(&sweep(), now + 60).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    assert_eq!(
        w.metrics.take().names_but_watched(),
        BTreeSet::from(["PendingReplications"])
    );

    // At its next check: asked again, still absent, not counted again.
    let later = next.since(w.at(0)) / 1000 + 1;
    let s = w.run(&sweep(), later).await;
    assert_eq!(s, summary(|s| (s.sweeps, s.groups_checked) = (1, 1)));
    let p = w.metrics.take();
    assert_eq!(
        p.names_but_watched(),
        BTreeSet::from(["PendingReplications"])
    );
    let watch = w.watch(CROSS, &digest, Some(TAG)).await;
    assert_eq!(watch.checks, 2);
    assert!(watch.next_check.is_some_and(|t| t > next));
}

#[tokio::test]
async fn an_untagged_copy_counts_once_committed_and_the_sweep_finds_the_destination_tag_on_the_older_image()
 {
    let w = World::start().await;
    // The other account's destination already has team/api:v1.4.2, an older image.
    let old = put_image(&w.ecr(CROSS), 2, TAG).await;
    let digest = put_image(&w.source(), 1, TAG).await;
    assert_ne!(old, digest);
    w.run(&w.push("p-1", 0, &digest, Some(TAG)), 1).await;
    w.run(&w.copy("c-same", 7, SAME, &digest, Some(TAG)), 7)
        .await;
    w.metrics.take();

    // The copy arrived without its tag (immutable tags in the destination): matched
    // provisionally, since a push read later could still take it.
    let s = w
        .run(&w.copy("c-cross", 12, CROSS, &digest, None), 12)
        .await;
    assert_eq!(s, summary(|s| s.copies = 1));
    assert_eq!(w.open_groups().await, vec![group_key(CROSS, &digest)]);

    // Five minutes on, the sweep commits it, asks the source where the tag points (still this
    // image: it did not move on), then the other account (through the audit role).
    let s = w.run(&sweep(), 312).await;
    assert_eq!(
        s,
        summary(|s| (
            s.sweeps,
            s.groups_checked,
            s.completed,
            s.untagged,
            s.stale_tags
        ) = (1, 1, 1, 1, 1))
    );
    let p = w.metrics.take();
    assert_eq!(
        p.points("UntaggedCopies", &to(CROSS)),
        vec![(w.at(312), 1.0, 1.0)],
        "dated when found"
    );
    assert_eq!(
        p.points("ReplicationsCompleted", &to(CROSS)),
        vec![(w.at(12), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(w.at(12), 12.0, 1.0)]
    );
    assert_eq!(
        p.points("StaleTags", &to(CROSS)),
        vec![(w.at(312), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("StaleTags", &no_dims()),
        vec![(w.at(312), 1.0, 1.0)]
    );
    let watch = w.watch(CROSS, &digest, Some(TAG)).await;
    assert_eq!(watch.tag_moved_on, Some(false));
    assert_eq!(watch.tag_points_to, Some(Some(ids::digest(&old))));
    assert!(watch.counted.untagged && watch.counted.stale_tag);
    assert_eq!(watch.next_check, None);
    assert!(w.open_groups().await.is_empty());

    let s = w.run(&sweep(), 400).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    assert_eq!(w.metrics.take().count("StaleTags", &no_dims()), 0.0);
}

// ---------------------------------------------------------------------------------------------
// At-least-once delivery and order
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_copy_before_its_push_and_redelivered_events_count_once_against_dynamodb() {
    let w = World::start().await;
    let digest = put_image(&w.source(), 1, TAG).await;
    let push = w.push("p-1", 0, &digest, Some(TAG));
    let copy_same = w.copy("c-same", 7, SAME, &digest, Some(TAG));
    let copy_cross = w.copy("c-cross", 12, CROSS, &digest, Some(TAG));

    // The copy first: kept, nothing to count yet, nothing for the sweep.
    let s = w.run(&copy_same, 7).await;
    assert_eq!(s, summary(|s| s.copies = 1));
    assert_eq!(w.metrics.calls(), 0, "nothing published");
    let g = w.group(SAME, &digest).await;
    assert_eq!(g.version, 1);
    assert_eq!(
        (
            g.value.group.expectations().len(),
            g.value.group.copies().len()
        ),
        (0, 1)
    );
    assert!(w.open_groups().await.is_empty());

    // Its push: both expected, the early copy completed with its lag.
    let s = w.run(&push, 9).await;
    assert_eq!(
        s,
        summary(|s| (s.pushes, s.expected, s.completed) = (1, 2, 1))
    );
    let p = w.metrics.take();
    assert_eq!(
        p.points("ReplicationsExpected", &no_dims()),
        vec![(w.at(0), 1.0, 2.0)]
    );
    assert_eq!(
        p.points("ReplicationsCompleted", &to(SAME)),
        vec![(w.at(7), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(SAME)),
        vec![(w.at(7), 7.0, 1.0)]
    );

    // Both again, in one batch: repeats, nothing counted, nothing saved.
    let s = w.run(&json!([push, copy_same]), 10).await;
    assert_eq!(s, summary(|s| (s.pushes, s.copies, s.repeats) = (1, 1, 2)));
    // The other copy twice in a batch: counted once.
    let s = w.run(&json!([copy_cross, copy_cross]), 12).await;
    assert_eq!(
        s,
        summary(|s| (s.copies, s.completed, s.repeats) = (2, 1, 1))
    );
    let s = w.run(&copy_cross, 30).await;
    assert_eq!(s, summary(|s| (s.copies, s.repeats) = (1, 1)));

    let p = w.metrics.take();
    assert_eq!(p.count("ReplicationsExpected", &no_dims()), 0.0);
    assert_eq!(p.count("ReplicationsCompleted", &no_dims()), 1.0);
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(w.at(12), 12.0, 1.0)]
    );
    assert_eq!(
        w.metrics.calls(),
        2,
        "only the push and the first cross-account copy learned something to publish"
    );
    for d in [SAME, CROSS] {
        let g = w.group(d, &digest).await;
        assert_eq!(g.version, 2, "{d:?}: saved once per new event");
        assert_eq!(
            (
                g.value.group.expectations().len(),
                g.value.group.copies().len()
            ),
            (1, 1),
            "{d:?}"
        );
    }
    assert!(w.open_groups().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Concurrent invocations
// ---------------------------------------------------------------------------------------------

/// Both invocations are polled on one thread: each suspends on every DynamoDB request, so their
/// loads and conditional saves interleave at moto, which decides which save wins.
#[tokio::test]
async fn two_invocations_with_the_same_copy_at_once_count_it_completed_once() {
    let w = World::start().await;
    for n in 1..=3 {
        let digest = synthetic_digest(n);
        w.run(&w.push(&format!("p-{n}"), 0, &digest, Some(TAG)), 1)
            .await;
        w.metrics.take();

        let copy = w.copy(&format!("c-{n}"), 12, CROSS, &digest, Some(TAG));
        let (a, b) = tokio::join!(
            w.auditor.handle(&copy, w.at(12)),
            w.auditor.handle(&copy, w.at(12))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.completed + b.completed, 1, "round {n}: {a:?} {b:?}");
        assert_eq!(
            a.repeats + b.repeats,
            1,
            "round {n}: the other found it recorded"
        );
        let p = w.metrics.take();
        assert_eq!(
            p.count("ReplicationsCompleted", &no_dims()),
            1.0,
            "round {n}"
        );
        assert_eq!(
            p.points("ReplicationLatency", &to(CROSS)),
            vec![(w.at(12), 12.0, 1.0)],
            "round {n}"
        );
        let g = w.group(CROSS, &digest).await;
        assert_eq!(
            (g.version, g.value.group.copies().len()),
            (2, 1),
            "round {n}"
        );
        assert!(g.value.watches.values().all(|w| w.counted.completed));
    }
    assert_eq!(w.fallback.calls(), 0);
}

#[tokio::test]
async fn a_push_and_its_copy_arriving_at_once_are_both_recorded_and_each_counted_once() {
    let w = World::start().await;
    for n in 1..=4 {
        let digest = synthetic_digest(n);
        let push = w.push(&format!("p-{n}"), 0, &digest, Some(TAG));
        let copy = w.copy(&format!("c-{n}"), 7, SAME, &digest, Some(TAG));
        // The push writes both groups in one transaction; the copy puts the same-account one.
        // Whichever starts first tends to save first: alternate, so that both the
        // TransactWriteItems and the PutItem get to lose a race.
        let (first, second) = if n % 2 == 1 {
            (&push, &copy)
        } else {
            (&copy, &push)
        };
        let (a, b) = tokio::join!(
            w.auditor.handle(first, w.at(7)),
            w.auditor.handle(second, w.at(7))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            (
                a.pushes + b.pushes,
                a.copies + b.copies,
                a.expected + b.expected,
                a.completed + b.completed,
                a.repeats + b.repeats
            ),
            (1, 1, 2, 1, 0),
            "round {n}: {a:?} {b:?}"
        );
        let p = w.metrics.take();
        assert_eq!(
            p.count("ReplicationsExpected", &no_dims()),
            2.0,
            "round {n}"
        );
        assert_eq!(
            p.points("ReplicationsCompleted", &to(SAME)),
            vec![(w.at(7), 1.0, 1.0)],
            "round {n}"
        );
        assert_eq!(
            p.points("ReplicationLatency", &to(SAME)),
            vec![(w.at(7), 7.0, 1.0)],
            "round {n}"
        );
        let same = w.group(SAME, &digest).await;
        assert_eq!(
            (
                same.version,
                same.value.group.expectations().len(),
                same.value.group.copies().len()
            ),
            (2, 1, 1),
            "round {n}: neither change was lost"
        );
        assert_eq!(same.value.due_at(), None, "round {n}");
        let cross = w.group(CROSS, &digest).await;
        assert_eq!(
            (cross.version, cross.value.group.expectations().len()),
            (1, 1),
            "round {n}"
        );
    }
    assert_eq!(w.fallback.calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rejected_event_delivered_twice_counts_events_rejected_once() {
    let w = World::start().await;
    let mut bad = w.push("bad-0001", 0, &synthetic_digest(1), Some(TAG));
    bad["detail"]
        .as_object_mut()
        .unwrap()
        .remove("image-digest");

    let s = w.run(&bad, 5).await;
    assert_eq!(s, summary(|s| s.rejected = 1));
    assert_eq!(
        w.metrics.take().points("EventsRejected", &no_dims()),
        vec![(w.at(5), 1.0, 1.0)]
    );
    let item = w.raw("R#bad-0001").await;
    assert_eq!(
        item.get("expires_at"),
        Some(&AttributeValue::N(
            ((w.at(5).millis() + i64::from(RETENTION_DAYS) * 86_400_000) / 1000).to_string()
        ))
    );

    let s = w.run(&bad, 65).await;
    assert_eq!(s, summary(|s| s.rejected = 1), "still acknowledged");
    assert!(w.metrics.take().0.is_empty(), "not counted again");
    assert_eq!(w.metrics.calls(), 1);
    assert!(w.open_groups().await.is_empty());
}

/// The source's one rule (moto keeps one) names both destinations with delete replication on,
/// sent as the JSON the SDK does not model. Two images reached both destinations; both are
/// deleted by digest at the source. One is deleted in the destinations in time (no DELETE event
/// reaches the auditor), the other is still there after the window: the sweep's DescribeImages
/// tells them apart, in this account and, through the audit role, in the other.
#[tokio::test]
async fn a_delete_still_at_its_destination_after_the_window_is_missing_and_one_gone_in_time_replicated()
 {
    let w = World::start().await;
    moto::put_replication_document(
        &w.source(),
        json!({"rules": [{
            "destinations": [
                {"region": SAME.0, "registryId": SAME.1},
                {"region": CROSS.0, "registryId": CROSS.1}
            ],
            "deleteReplication": {"enabled": true}
        }]}),
    )
    .await;
    let kept = put_image(&w.source(), 1, "kept-there").await;
    let gone = put_image(&w.source(), 2, "gone-there").await;
    for d in [SAME, CROSS] {
        assert_eq!(put_image(&w.ecr(d), 1, "kept-there").await, kept);
        assert_eq!(put_image(&w.ecr(d), 2, "gone-there").await, gone);
    }
    for (n, (digest, tag)) in [(&kept, "kept-there"), (&gone, "gone-there")]
        .into_iter()
        .enumerate()
    {
        w.run(&w.push(&format!("p-{n}"), 0, digest, Some(tag)), 1)
            .await;
        for d in [SAME, CROSS] {
            let id = format!("c-{n}-{}", d.0);
            w.run(&w.copy(&id, 5, d, digest, Some(tag)), 5).await;
        }
    }

    let deleted = 100;
    let delete_by_digest = |client: aws_sdk_ecr::Client, digest: String| async move {
        client
            .batch_delete_image()
            .repository_name(REPO)
            .image_ids(ImageIdentifier::builder().image_digest(digest).build())
            .send()
            .await
            .expect("moto's BatchDeleteImage");
    };
    for digest in [&kept, &gone] {
        delete_by_digest(w.source(), digest.clone()).await;
    }
    let mut expected = 0;
    for (n, digest) in [&kept, &gone].into_iter().enumerate() {
        let event = delete_event(
            &format!("d-{n}"),
            w.at(deleted),
            &image(digest, None),
            (SRC_REGION, moto::ACCOUNT),
        );
        expected += w.run(&event, deleted).await.deletes_expected;
    }
    assert_eq!(expected, 4, "two deletes, two destinations each");
    for d in [SAME, CROSS] {
        delete_by_digest(w.ecr(d), gone.clone()).await;
    }
    w.metrics.take();

    let s = w.run(&sweep(), deleted + WINDOW_SECS + 1).await;
    assert_eq!((s.deletes_missing, s.deletes_replicated), (2, 2), "{s:?}");
    let p = w.metrics.take();
    for d in [SAME, CROSS] {
        assert_eq!(p.count("DeletesMissing", &to(d)), 1.0, "{d:?}");
        assert_eq!(p.count("DeletesReplicated", &to(d)), 1.0, "{d:?}");
    }
    assert_eq!(p.count("DeletesMissing", &no_dims()), 2.0);
    assert_eq!(
        p.count("DeleteReplicationLatency", &no_dims()),
        0.0,
        "no event says when: no lag is invented"
    );
    let missing = w.group(CROSS, &kept).await.value;
    let (e, v) = &missing.delete_verdicts(Window::DEFAULT, w.at(deleted + WINDOW_SECS + 1))[0];
    assert_eq!(
        (e.kind, v.outcome.status, v.confirmed),
        (DeleteKind::Digest, DeleteStatus::Missing, true)
    );
}
