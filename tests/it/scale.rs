//! The sweep at scale, pages that fire on time, and a digest with thousands of tags: the real
//! handler over the in-memory store (the stored form DynamoDB holds, item for item) and a
//! scripted ECR whose every call takes 50 ms, on tokio's paused clock, so that minutes of
//! sweeping run in a moment and always the same way. (moto's DynamoDB grows to gigabytes past
//! about a thousand items written in transactions: the moto tests stay small.)

use std::collections::BTreeSet;
use std::time::Duration;

use ecr_replication_auditor::adapters::fake::{Api, FakeRegistry};
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::adapters::stored::record_pk;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor, HandlerError, Summary};
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryError};
use serde_json::Value;
use tokio::time::Instant;

use crate::support::events::{Image, copy_event, push_event, sample, sweep};
use crate::support::ids::{
    at, digest, found, group_key, registry, repository, synthetic_digest, tag,
};
use crate::support::logs;
use crate::support::metrics::{Dims, RecordingSink, no_dims};

const SRC: (&str, &str) = ("111122223333", "us-west-2");
/// (Region, account) of the destinations `events/registry/us-west-2.json` gives `team/`.
const SAME: (&str, &str) = ("us-east-1", "111122223333");
const CROSS: (&str, &str) = ("eu-west-1", "444455556666");
const REPO: &str = "team/api";
const WINDOW_SECS: i64 = 1800;
/// What every ECR call takes.
const LATENCY: Duration = Duration::from_millis(50);
/// The function's timeout this file gives each sweep.
const SWEEP_TIMEOUT: Duration = Duration::from_secs(30);

type ScaleAuditor = Auditor<MemoryStateStore, FakeRegistry, RecordingSink, RecordingSink>;

struct Scale {
    auditor: ScaleAuditor,
    ecr: FakeRegistry,
    metrics: RecordingSink,
}

fn scale() -> Scale {
    let ecr = FakeRegistry::default();
    ecr.config(registry(SRC.0, SRC.1), sample("registry/us-west-2.json"));
    ecr.latency(LATENCY);
    let metrics = RecordingSink::default();
    let auditor = Auditor::new(
        MemoryStateStore::default(),
        ecr.clone(),
        metrics.clone(),
        RecordingSink::default(),
        AuditSettings {
            window: Window::DEFAULT,
            repository_dimension: false,
            config_cache_ms: 3_600_000,
            history_retention: Window::hours(24 * 90),
        },
    );
    Scale {
        auditor,
        ecr,
        metrics,
    }
}

fn destination(d: (&str, &str)) -> RegistryAt {
    registry(d.1, d.0)
}

fn to(d: (&str, &str)) -> Dims {
    vec![
        ("SourceRegion", SRC.1.to_owned()),
        ("DestinationRegion", d.0.to_owned()),
        ("DestinationAccount", d.1.to_owned()),
    ]
}

fn image<'a>(digest: &'a str, tag: &'a str) -> Image<'a> {
    Image {
        source_account: SRC.0,
        source_region: SRC.1,
        repository: REPO,
        digest,
        tag: Some(tag),
    }
}

/// `team/api:v{n}` (digest `n`) pushed at `secs`.
fn push(n: u16, secs: i64) -> Value {
    let d = synthetic_digest(n);
    push_event(&format!("push-{n}"), at(secs), &image(&d, &format!("v{n}")))
}

/// Its copy in `d`, with its tag, at `secs`.
fn copy(n: u16, secs: i64, d: (&str, &str)) -> Value {
    let dg = synthetic_digest(n);
    let id = format!("copy-{n}-{}", d.0);
    copy_event(&id, at(secs), &image(&dg, &format!("v{n}")), d, "SUCCESS")
}

impl Scale {
    /// Events, a few hundred per invocation (a batch EventBridge could deliver).
    async fn deliver(&self, events: Vec<Value>, secs: i64) -> Summary {
        let mut total = Summary::default();
        for batch in events.chunks(500) {
            let s = self
                .auditor
                .handle(&Value::Array(batch.to_vec()), at(secs))
                .await
                .unwrap_or_else(|e| panic!("delivery at {secs}s: {e}"));
            total.pushes += s.pushes;
            total.copies += s.copies;
            total.expected += s.expected;
            total.completed += s.completed;
        }
        total
    }

    /// One sweep at `secs` whose invocation times out `timeout` from now on tokio's clock. It
    /// must answer before then; its error, if any, is returned with its summary of zeros.
    async fn sweep(&self, secs: i64, timeout: Duration) -> Result<Summary, HandlerError> {
        let deadline = Instant::now() + timeout;
        let result = self.auditor.handle_by(&sweep(), at(secs), deadline).await;
        assert!(
            Instant::now() <= deadline,
            "the sweep at {secs}s answered {:?} after its deadline",
            Instant::now() - deadline
        );
        result
    }

    /// How many expectations are counted missing, and completed, in the store.
    fn stored_counts(&self) -> (usize, usize) {
        let snapshot = self.auditor.store().snapshot();
        let watches = snapshot.iter().flat_map(|(_, v)| v.value.watches.values());
        watches.fold((0, 0), |(m, c), w| {
            (
                m + usize::from(w.counted.missing),
                c + usize::from(w.counted.completed),
            )
        })
    }
}

/// `n` digests pushed at 0..60 s to both destinations; the even ones' copies landed (their
/// events lost) 20 s after their push, the odd ones' never did.
async fn backlog(s: &Scale, digests: u16) {
    let mut pushes = Vec::new();
    for n in 1..=digests {
        let secs = i64::from(n % 60);
        pushes.push(push(n, secs));
        if n % 2 == 0 {
            for d in [SAME, CROSS] {
                s.ecr.image(
                    destination(d),
                    repository(REPO),
                    digest(&synthetic_digest(n)),
                    found(&[&format!("v{n}")], Some(at(secs + 20))),
                );
            }
        }
    }
    let delivered = s.deliver(pushes, 60).await;
    assert_eq!(delivered.expected, 2 * u64::from(digests));
    s.metrics.take();
}

// ---------------------------------------------------------------------------------------------
// The sweep at scale
// ---------------------------------------------------------------------------------------------

/// The worst day: 6,000 copies fall due at once, half of them missing, and every ECR call takes
/// 50 ms. Each sweep has 30 s (its function's timeout); it confirms groups 16 at a time and asks
/// each question once, so the whole backlog is concluded within five sweeps, with every count
/// exact and no sweep answering after its deadline.
#[tokio::test(start_paused = true)]
async fn a_backlog_of_6000_due_copies_is_concluded_within_five_sweeps_of_30_seconds() {
    let s = scale();
    backlog(&s, 3_000).await;

    let mut total = Summary::default();
    let mut sweeps = 0;
    for k in 0..5 {
        let secs = WINDOW_SECS + 61 + 60 * k;
        let summary = s.sweep(secs, SWEEP_TIMEOUT).await.unwrap();
        sweeps += 1;
        total.completed += summary.completed;
        total.missing += summary.missing;
        total.groups_checked += summary.groups_checked;
        eprintln!(
            "sweep {sweeps}: {} groups checked, {} left",
            summary.groups_checked, summary.groups_left
        );
        if summary.groups_left == 0 {
            break;
        }
    }
    assert!(sweeps <= 5);
    assert_eq!(
        (total.completed, total.missing),
        (3_000, 3_000),
        "{total:?}"
    );
    assert_eq!(total.groups_checked, 6_000);
    assert_eq!(s.stored_counts(), (3_000, 3_000));

    // Published, exactly: what was counted, no more.
    let p = s.metrics.take();
    assert_eq!(p.count("ReplicationsMissing", &no_dims()), 3_000.0);
    assert_eq!(p.count("ReplicationsCompleted", &no_dims()), 3_000.0);
    assert_eq!(p.count("ReplicationsMissing", &to(SAME)), 1_500.0);
    assert_eq!(p.count("ReplicationsMissing", &to(CROSS)), 1_500.0);
    // One DescribeImageReplicationStatus per digest (it answers for both destinations), one
    // DescribeImages per group, one DescribeRegistry per sweep that called a copy missing.
    assert_eq!(s.ecr.calls(Api::ImageReplicationStatus), 3_000);
    assert_eq!(s.ecr.calls(Api::ImagesByDigest), 6_000);
    assert!(
        s.ecr.calls(Api::Registry) <= 1 + sweeps,
        "{:?}",
        s.ecr.all_calls()
    );

    // What is left: the missing copies, watched later, not every minute.
    let next = s
        .sweep(WINDOW_SECS + 61 + 60 * 5, SWEEP_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(next.groups_checked, 0);
}

/// A sweep whose deadline comes part of the way through: it stops taking groups before it,
/// publishes every count it saved, and leaves the rest due for the next sweep, which counts
/// them, each once.
#[tokio::test(start_paused = true)]
async fn a_sweep_whose_deadline_comes_midway_publishes_what_it_saved_and_leaves_the_rest_due() {
    let s = scale();
    backlog(&s, 1_000).await;

    // 12 s: two seconds to start groups in, then it stops.
    let first = s
        .sweep(WINDOW_SECS + 61, Duration::from_secs(12))
        .await
        .unwrap();
    assert!(first.groups_left > 0, "the deadline came first: {first:?}");
    assert!(first.groups_checked > 0, "{first:?}");
    let p = s.metrics.take();
    let (missing, completed) = s.stored_counts();
    assert_eq!(
        (
            p.count("ReplicationsMissing", &no_dims()),
            p.count("ReplicationsCompleted", &no_dims())
        ),
        (missing as f64, completed as f64),
        "every count saved is published"
    );
    assert_eq!(
        (first.missing, first.completed),
        (missing as u64, completed as u64)
    );

    let second = s.sweep(WINDOW_SECS + 121, SWEEP_TIMEOUT).await.unwrap();
    assert_eq!(second.groups_left, 0, "{second:?}");
    let p = s.metrics.take();
    assert_eq!(
        p.count("ReplicationsMissing", &no_dims()) + missing as f64,
        1_000.0
    );
    assert_eq!(
        p.count("ReplicationsCompleted", &no_dims()) + completed as f64,
        1_000.0
    );
    assert_eq!(s.stored_counts(), (1_000, 1_000));
}

/// A group still waiting on ECR when the deadline is near is given up unsaved: nothing of it
/// is counted, so nothing of it can be lost with the invocation; it is due at the next sweep.
#[tokio::test(start_paused = true)]
async fn a_group_still_asking_ecr_near_the_deadline_is_left_unsaved_and_counted_by_the_next_sweep()
{
    let s = scale();
    backlog(&s, 20).await;
    s.ecr.latency(Duration::from_secs(5));

    // Groups start within 2 s; the copies found present are saved at 5 s; the missing ones
    // still ask DescribeRegistry at 6 s, when the sweep gives them up.
    let first = s
        .sweep(WINDOW_SECS + 61, Duration::from_secs(12))
        .await
        .unwrap();
    assert_eq!(first.missing, 0, "{first:?}");
    assert!(first.groups_left >= 20, "{first:?}");
    let p = s.metrics.take();
    assert_eq!(p.count("ReplicationsMissing", &no_dims()), 0.0);
    assert_eq!(
        p.count("ReplicationsCompleted", &no_dims()),
        first.completed as f64
    );

    s.ecr.latency(LATENCY);
    let second = s.sweep(WINDOW_SECS + 121, SWEEP_TIMEOUT).await.unwrap();
    assert_eq!(second.groups_left, 0);
    assert_eq!(second.missing, 20);
    assert_eq!(second.completed + first.completed, 20);
    assert_eq!(s.stored_counts(), (20, 20));
}

/// Groups that stay due (both APIs failing for one destination) used to take the first slots of
/// every sweep, in key order. Now each destination has its share: the other destination's
/// younger copies are confirmed in the first sweep although 2,000 older ones keep failing.
#[tokio::test(start_paused = true)]
async fn a_destination_that_keeps_failing_does_not_starve_the_others() {
    let s = scale();
    // 2,000 digests whose same-account copies came; the cross-account ones will stay due.
    let mut events = Vec::new();
    for n in 1..=2_000 {
        events.push(push(n, 0));
        events.push(copy(n, 9, SAME));
    }
    s.deliver(events, 60).await;
    // Ten younger pushes, no copy anywhere.
    let young: Vec<Value> = (3_001..=3_010).map(|n| push(n, 600)).collect();
    s.deliver(young, 600).await;
    s.metrics.take();
    s.ecr.fail(
        Api::ImageReplicationStatus,
        Some(RegistryError::Transient("ServiceUnavailable".into())),
    );
    s.ecr.fail_in(
        destination(CROSS),
        Api::ImagesByDigest,
        Some(RegistryError::Transient("RequestTimeout".into())),
    );

    let err = s
        .sweep(600 + WINDOW_SECS + 1, Duration::from_secs(12))
        .await
        .expect_err("the cross-account copies stay unconfirmed");
    assert!(matches!(err, HandlerError::Unconfirmed(_)), "{err}");
    let p = s.metrics.take();
    assert_eq!(
        p.count("ReplicationsMissing", &to(SAME)),
        10.0,
        "the same-account destination's ten, at the first sweep"
    );
}

/// Two tags of one digest in one destination are one DescribeImages; one status call answers
/// for every destination.
#[tokio::test(start_paused = true)]
async fn a_question_is_asked_of_ecr_once_per_sweep() {
    let s = scale();
    let d = synthetic_digest(7);
    let events = ["v1", "v2"]
        .iter()
        .map(|t| push_event(&format!("p-{t}"), at(0), &image(&d, t)))
        .collect();
    s.deliver(events, 1).await;
    let summary = s.sweep(WINDOW_SECS + 1, SWEEP_TIMEOUT).await.unwrap();
    assert_eq!(summary.missing, 4, "two tags, two destinations");
    assert_eq!(s.ecr.calls(Api::ImagesByDigest), 2, "one per destination");
    assert_eq!(s.ecr.calls(Api::ImageReplicationStatus), 1);
    assert_eq!(
        s.ecr.calls(Api::Registry),
        2,
        "read at the push, and once again by the sweep before calling them missing"
    );
}

// ---------------------------------------------------------------------------------------------
// Pages that fire on time
// ---------------------------------------------------------------------------------------------

/// The count alarms look at the last 30 minutes. A copy found missing three hours after its
/// deadline (the sweep could not run: an outage of the auditor itself) must still page: its
/// data point is dated when it is found.
#[tokio::test(start_paused = true)]
async fn a_copy_found_missing_three_hours_after_its_deadline_is_dated_inside_the_alarms_range() {
    let s = scale();
    s.deliver(vec![push(1, 0)], 1).await;
    s.metrics.take();
    let found_at = WINDOW_SECS + 3 * 3600;
    let summary = s.sweep(found_at, SWEEP_TIMEOUT).await.unwrap();
    assert_eq!(summary.missing, 2);
    let p = s.metrics.take();
    let points = p.points("ReplicationsMissing", &no_dims());
    assert_eq!(points.len(), 1, "{points:?}");
    let (when, _, count) = points[0];
    assert_eq!(count, 2.0);
    assert!(
        when.since(at(found_at)).abs() <= 30 * 60_000,
        "dated {when}, found at {}",
        at(found_at)
    );
}

/// A copy the sweep finds present is dated at the destination's imagePushedAt, which for an
/// old digest retagged can be months back: PutMetricData refuses a datum more than two weeks
/// old, and the whole request with it. Every datum is now inside what it accepts.
#[tokio::test(start_paused = true)]
async fn a_copy_confirmed_with_a_months_old_push_time_is_published_inside_what_cloudwatch_accepts()
{
    let s = scale();
    s.deliver(vec![push(1, 0)], 1).await;
    let months_ago = Timestamp::from_millis(at(0).millis() - 120 * 86_400_000);
    for d in [SAME, CROSS] {
        s.ecr.image(
            destination(d),
            repository(REPO),
            digest(&synthetic_digest(1)),
            found(&["v1"], Some(months_ago)),
        );
    }
    s.metrics.take();
    let now = at(WINDOW_SECS + 1);
    let summary = s.sweep(WINDOW_SECS + 1, SWEEP_TIMEOUT).await.unwrap();
    assert_eq!(summary.completed, 2);
    let p = s.metrics.take();
    assert_eq!(p.count("ReplicationsCompleted", &no_dims()), 2.0);
    for d in &p.0 {
        let age = now.since(d.timestamp);
        assert!(
            age < 14 * 86_400_000 && age > -2 * 3_600_000,
            "{} dated {} is outside what PutMetricData accepts",
            d.name.as_str(),
            d.timestamp
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Honest gauges
// ---------------------------------------------------------------------------------------------

/// PendingReplications counted copies already counted missing, so it only grew during an
/// outage. It now counts copies in flight; ReplicationsWatched (measured every five minutes)
/// the missing or failed ones still watched.
#[tokio::test(start_paused = true)]
async fn pending_counts_copies_in_flight_and_watched_counts_the_missing_ones_apart() {
    let s = scale();
    // 1: copied; 2: never copied; 3: pushed later, still inside its window at the sweep.
    s.deliver(vec![push(1, 0), push(2, 0)], 1).await;
    s.deliver(vec![copy(1, 9, SAME), copy(1, 9, CROSS)], 10)
        .await;
    s.deliver(vec![push(3, 1500)], 1500).await;
    s.metrics.take();

    // 10:35:00, a fifth minute: both gauges.
    let summary = s.sweep(2100, SWEEP_TIMEOUT).await.unwrap();
    assert_eq!(summary.missing, 2);
    let p = s.metrics.take();
    for d in [SAME, CROSS] {
        assert_eq!(
            p.points("PendingReplications", &to(d)),
            vec![(at(2100), 1.0, 1.0)],
            "{d:?}: digest 3 only"
        );
        assert_eq!(
            p.points("ReplicationsWatched", &to(d)),
            vec![(at(2100), 1.0, 1.0)],
            "{d:?}: digest 2"
        );
    }

    // A minute later the watched gauge is not measured (it reads every watched copy's key);
    // the in-flight one is.
    s.sweep(2160, SWEEP_TIMEOUT).await.unwrap();
    let names = s.metrics.take().names();
    assert_eq!(names, BTreeSet::from(["PendingReplications"]));
}

// ---------------------------------------------------------------------------------------------
// One bad item
// ---------------------------------------------------------------------------------------------

/// One item that cannot be read (a hand edit, an item left by a newer version after a
/// rollback) used to fail the whole index read, so every sweep failed. It is skipped, logged
/// with its key and counted, and everything else is confirmed.
#[tokio::test(start_paused = true)]
async fn an_unreadable_item_is_skipped_logged_and_counted_and_everything_else_is_confirmed() {
    let logs = logs::capture();
    let s = scale();
    s.deliver(vec![push(1, 0), push(2, 0)], 1).await;
    s.metrics.take();
    // Digest 2's record in the same-account destination, edited by hand...
    let key = group_key(
        &registry(SRC.0, SRC.1),
        REPO,
        &synthetic_digest(2),
        &destination(SAME),
    );
    let damaged = record_pk(&key, &Some(tag("v2")));
    s.auditor.store().put_raw(
        &damaged,
        "{\"v\": 9, \"from\": \"a newer version\"}",
        Some(at(1801)),
    );
    // ...and a key in the index that names no group at all.
    s.auditor
        .store()
        .put_raw("G#not-a-key", "{}", Some(at(1801)));

    let summary = s.sweep(WINDOW_SECS + 1, SWEEP_TIMEOUT).await.unwrap();
    assert_eq!(summary.items_unreadable, 2, "{summary:?}");
    assert_eq!(summary.missing, 3, "everything else is confirmed");
    let p = s.metrics.take();
    assert_eq!(p.count("StateItemsUnreadable", &no_dims()), 2.0);
    assert_eq!(p.count("ReplicationsMissing", &no_dims()), 3.0);
    let text = logs.text();
    assert!(text.contains(&damaged), "logged with its key: {text}");
    assert!(text.contains("G#not-a-key"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// A digest tagged on every commit
// ---------------------------------------------------------------------------------------------

/// One item per (digest, destination) held every tag, so a digest tagged on every commit grew
/// past DynamoDB's 400 KB after about a thousand tags, and every push of it failed from then
/// on. Sized through the same stored form DynamoDB holds, every item stays small, and each
/// push writes two items per destination, whatever the number of tags.
#[tokio::test(start_paused = true)]
async fn a_digest_tagged_2500_times_keeps_every_item_small_and_each_push_writes_two_items_per_destination()
 {
    let s = scale();
    let d = synthetic_digest(1);
    let mut largest_write = 0;
    for i in 0..2_500_i64 {
        let t = format!("build-{i:05}");
        let before = s.auditor.store().stats();
        let p = push_event(&format!("p-{i}"), at(i), &image(&d, &t));
        let summary = s.deliver(vec![p], i).await;
        assert_eq!(summary.expected, 2, "push {i}");
        let after = s.auditor.store().stats();
        let written = after.items_written - before.items_written;
        largest_write = largest_write.max(written);
        assert!(written <= 4, "push {i} wrote {written} items");
        // Its same-account copy comes; the cross-account one never does (all of them wait).
        let c = copy_event(
            &format!("c-{i}"),
            at(i + 5),
            &image(&d, &t),
            SAME,
            "SUCCESS",
        );
        let before = s.auditor.store().stats();
        assert_eq!(s.deliver(vec![c], i + 5).await.completed, 1, "copy {i}");
        let written = s.auditor.store().stats().items_written - before.items_written;
        assert!(written <= 2, "copy {i} wrote {written} items");
    }
    let stats = s.auditor.store().stats();
    eprintln!(
        "2,500 tags: {} items, the largest {} bytes, {} written (at most {largest_write} by a push)",
        stats.items, stats.largest_item, stats.items_written
    );
    assert!(
        stats.largest_item < 32 * 1024,
        "the largest item is {} bytes",
        stats.largest_item
    );
    let p = s.metrics.take();
    assert_eq!(p.count("ReplicationsExpected", &no_dims()), 5_000.0);
    assert_eq!(p.count("ReplicationsCompleted", &no_dims()), 2_500.0);
}
