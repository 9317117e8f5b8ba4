//! The Lambda's handler end to end: the real [`Auditor`] over the in-memory state store, a
//! scripted ECR ([`FakeRegistry`]) that counts its calls and fails on demand, and metric sinks
//! that record every datum. Every payload is an EventBridge event shaped like the samples in
//! `events/` (most of them are those samples), and every invocation passes its own `now`.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use ecr_replication_auditor::adapters::cloudwatch::EmfSink;
use ecr_replication_auditor::adapters::fake::{Api, FakeRegistry};
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor, HandlerError, Summary};
use ecr_replication_auditor::domain::confirm::{ImageStatus, ReplicationState, ReplicationStatus};
use ecr_replication_auditor::domain::correlate::{GroupKey, Status};
use ecr_replication_auditor::domain::ledger::{Confirmation, TrackedGroup, Watch};
use ecr_replication_auditor::domain::metrics::Unit;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryError};
use ecr_replication_auditor::ports::state::{StateStore, Versioned};
use serde_json::{Value, json};

use crate::support::ids::{
    account, at, digest, found, found_with, region, registry, repository, synthetic_digest, tag,
};
use crate::support::stores::RacingStore;
use crate::support::{events, logs, metrics};
use events::{Image, copy_event, delete_event, push_event, restore_event, sample, sweep};
use logs::SharedBuf;
use metrics::{Dims, RecordingSink, no_dims};

// ---------------------------------------------------------------------------------------------
// Time, identities and events
// ---------------------------------------------------------------------------------------------

// Times are `at(secs)`, `secs` seconds after 10:00:00, the time of `events/push-tagged.json`.

/// The replication window the handler runs with (the default, 30 minutes), in seconds.
const WINDOW_SECS: i64 = 1800;
/// CONFIG_CACHE_SECONDS' default.
const CONFIG_CACHE_SECS: i64 = 300;

const SRC_ACCOUNT: &str = "111122223333";
const SRC_REGION: &str = "us-west-2";
/// The same-account destination of `events/registry/us-west-2.json`.
const SAME: (&str, &str) = ("us-east-1", "111122223333");
/// The cross-account destination of `events/registry/us-west-2.json`.
const CROSS: (&str, &str) = ("eu-west-1", "444455556666");
/// Only for `prod/` repositories in `events/registry/us-west-2.json`.
const PROD_ONLY: (&str, &str) = ("ap-southeast-2", "111122223333");

const API_REPO: &str = "team/api";
const API_DIGEST: &str = "sha256:efd0f9b95ee5a2da876ec1250b0f949bb6c3716d368f77e179212a1d91b62c38";
const API_TAG: &str = "v1.4.2";
/// The image `team/api:v1.4.2` pointed to in a destination before this push.
const OLD_DIGEST: &str = "sha256:0ld0000000000000000000000000000000000000000000000000000000000000";
const WEB_REPO: &str = "prod/web";
const WEB_DIGEST: &str = "sha256:a485ef11b55719994e3bf73919adf6bbbb5d560dd601f0241c794f9a585f32f3";

fn iso(secs: i64) -> String {
    at(secs).to_string()
}

/// An `ECR Image Action` PUSH in `source` (account, Region).
fn push_in(
    source: (&str, &str),
    id: &str,
    secs: i64,
    repository: &str,
    digest: &str,
    tag: Option<&str>,
) -> Value {
    let (source_account, source_region) = source;
    let image = Image {
        source_account,
        source_region,
        repository,
        digest,
        tag,
    };
    push_event(id, at(secs), &image)
}

/// A push in the us-west-2 source registry.
fn push(id: &str, secs: i64, repository: &str, digest: &str, tag: Option<&str>) -> Value {
    push_in((SRC_ACCOUNT, SRC_REGION), id, secs, repository, digest, tag)
}

/// An `ECR Replication Action` from the us-west-2 source, as the destination's bus receives it.
fn copy(
    id: &str,
    secs: i64,
    destination: (&str, &str),
    repository: &str,
    digest: &str,
    tag: Option<&str>,
    result: &str,
) -> Value {
    let image = Image {
        source_account: SRC_ACCOUNT,
        source_region: SRC_REGION,
        repository,
        digest,
        tag,
    };
    copy_event(id, at(secs), &image, destination, result)
}

/// `events/push-tagged.json`: team/api:v1.4.2 pushed in us-west-2 at 10:00:00.
fn api_push() -> Value {
    sample("push-tagged.json")
}

/// `events/replication-success-same-account.json`: its copy in us-east-1 at 10:00:07.
fn api_copy_same() -> Value {
    sample("replication-success-same-account.json")
}

/// `events/replication-success-cross-account.json`: its copy in eu-west-1 at 10:00:12.
fn api_copy_cross() -> Value {
    sample("replication-success-cross-account.json")
}

// ---------------------------------------------------------------------------------------------
// A scripted ECR: `FakeRegistry` (the testkit's), counting its calls and failing on demand
// ---------------------------------------------------------------------------------------------

/// A destination (Region, account) as a registry.
fn destination(d: (&str, &str)) -> RegistryAt {
    registry(d.1, d.0)
}

/// The us-west-2 source registry.
fn src() -> RegistryAt {
    registry(SRC_ACCOUNT, SRC_REGION)
}

/// One entry of a DescribeImageReplicationStatus answer.
fn status(
    d: (&str, &str),
    state: ReplicationState,
    failure_code: Option<&str>,
) -> ReplicationStatus {
    ReplicationStatus {
        region: Some(region(d.0)),
        registry: Some(account(d.1)),
        state,
        failure_code: failure_code.map(str::to_owned),
    }
}

// ---------------------------------------------------------------------------------------------
// Metric dimensions (the sinks and what they received: `support/metrics.rs`)
// ---------------------------------------------------------------------------------------------

/// The dimensions of a destination of the us-west-2 source (no Repository dimension: off).
fn to(d: (&str, &str)) -> Dims {
    from_to(SRC_REGION, d)
}

fn from_to(source_region: &str, d: (&str, &str)) -> Dims {
    vec![
        ("SourceRegion", source_region.to_owned()),
        ("DestinationRegion", d.0.to_owned()),
        ("DestinationAccount", d.1.to_owned()),
    ]
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

fn settings() -> AuditSettings {
    AuditSettings {
        window: Window::DEFAULT,
        repository_dimension: false,
        config_cache_ms: CONFIG_CACHE_SECS * 1000,
        history_retention: Window::hours(24 * 90),
    }
}

struct Harness<S> {
    auditor: Auditor<S, FakeRegistry, RecordingSink, RecordingSink>,
    ecr: FakeRegistry,
    metrics: RecordingSink,
    fallback: RecordingSink,
}

/// The handler over a fresh in-memory store, with us-west-2's replication configuration from
/// `events/registry/us-west-2.json`.
fn harness() -> Harness<MemoryStateStore> {
    harness_on(MemoryStateStore::default(), RecordingSink::default())
}

fn harness_on<S: StateStore + Sync>(store: S, metrics: RecordingSink) -> Harness<S> {
    let ecr = FakeRegistry::default();
    ecr.config(src(), sample("registry/us-west-2.json"));
    let fallback = RecordingSink::default();
    let auditor = Auditor::new(
        store,
        ecr.clone(),
        metrics.clone(),
        fallback.clone(),
        settings(),
    );
    Harness {
        auditor,
        ecr,
        metrics,
        fallback,
    }
}

impl<S: StateStore + Sync> Harness<S> {
    /// One invocation at `secs`, which must succeed.
    async fn run(&self, payload: &Value, secs: i64) -> Summary {
        self.auditor
            .handle(payload, at(secs))
            .await
            .unwrap_or_else(|e| panic!("invocation at {secs}s failed: {e}"))
    }
}

impl Harness<MemoryStateStore> {
    fn snapshot(&self) -> Vec<(GroupKey, Versioned<TrackedGroup>)> {
        self.auditor.store().snapshot()
    }

    /// The stored group of `digest` for destination `d`.
    fn group(&self, d: (&str, &str), digest: &str) -> Versioned<TrackedGroup> {
        group_in(&self.snapshot(), d, digest)
    }

    /// The watch of one expectation.
    fn watch(&self, d: (&str, &str), digest: &str, tag: Option<&str>) -> Watch {
        let tag = tag.map(self::tag);
        self.group(d, digest)
            .value
            .watches
            .get(&tag)
            .cloned()
            .unwrap_or_else(|| panic!("no watch for {tag:?}"))
    }

    /// Groups with an expectation still waiting for a check (at any time).
    async fn open_groups(&self) -> usize {
        open_groups_in(self.auditor.store()).await
    }
}

/// Groups of `store` with an expectation waiting for a check, whenever it is due.
async fn open_groups_in(store: &impl StateStore) -> usize {
    let all = store
        .due(Timestamp::from_millis(i64::MAX), usize::MAX, false)
        .await
        .unwrap();
    all.due
        .iter()
        .map(|r| &r.key)
        .collect::<BTreeSet<_>>()
        .len()
}

fn group_in(
    snapshot: &[(GroupKey, Versioned<TrackedGroup>)],
    d: (&str, &str),
    digest: &str,
) -> Versioned<TrackedGroup> {
    snapshot
        .iter()
        .find(|(k, _)| {
            k.destination.region.as_str() == d.0
                && k.destination.account.to_string() == d.1
                && k.digest.as_str() == digest
        })
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no group for {digest} in {d:?}"))
}

fn summary(f: impl FnOnce(&mut Summary)) -> Summary {
    let mut s = Summary::default();
    f(&mut s);
    s
}

// ---------------------------------------------------------------------------------------------
// The events used are the real ones
// ---------------------------------------------------------------------------------------------

#[test]
fn the_event_builders_produce_exactly_the_samples_in_events() {
    let id = "4f5ec4d0-8a3b-4f2c-9d1a-0a1b2c3d4e01";
    assert_eq!(push(id, 0, API_REPO, API_DIGEST, Some(API_TAG)), api_push());
    let id = "4f5ec4d0-8a3b-4f2c-9d1a-0a1b2c3d4e02";
    assert_eq!(
        push(id, 300, WEB_REPO, WEB_DIGEST, None),
        sample("push-by-digest.json")
    );
    let id = "9a7c1e22-5b6d-4e8f-a012-3456789abc01";
    assert_eq!(
        copy(id, 7, SAME, API_REPO, API_DIGEST, Some(API_TAG), "SUCCESS"),
        api_copy_same()
    );
    let id = "9a7c1e22-5b6d-4e8f-a012-3456789abc02";
    assert_eq!(
        copy(
            id,
            12,
            CROSS,
            API_REPO,
            API_DIGEST,
            Some(API_TAG),
            "SUCCESS"
        ),
        api_copy_cross()
    );
    let id = "9a7c1e22-5b6d-4e8f-a012-3456789abc03";
    assert_eq!(
        copy(id, 309, CROSS, WEB_REPO, WEB_DIGEST, None, "FAILED"),
        sample("replication-failed-cross-account.json")
    );
}

#[test]
fn the_restore_and_delete_builders_produce_exactly_the_new_samples_in_events() {
    let ml_model = Image {
        source_account: SRC_ACCOUNT,
        source_region: SRC_REGION,
        repository: "team/ml-model",
        digest: "sha256:3e7a4c1b9f20d5e8a6b7c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1",
        tag: None,
    };
    assert_eq!(
        restore_event("4f5ec4d0-8a3b-4f2c-9d1a-0a1b2c3d4e10", at(2400), &ml_model),
        sample("image-restore.json")
    );
    let payments = Image {
        source_account: SRC_ACCOUNT,
        source_region: SRC_REGION,
        repository: "prod/payments",
        digest: "sha256:b17f0c2e8d4a6b5c3e9f1a7d2c8b4e6f0a3d5c7e9b1f2a4c6e8d0b3f5a7c9e1d",
        tag: Some("v2"),
    };
    assert_eq!(
        delete_event(
            "4f5ec4d0-8a3b-4f2c-9d1a-0a1b2c3d4e11",
            at(900),
            &payments,
            (SRC_REGION, SRC_ACCOUNT)
        ),
        sample("image-delete-replicated.json")
    );
    assert_eq!(
        delete_event(
            "7b2d9e41-3c5a-4f6b-8d7e-1a2b3c4d5e12",
            at(925),
            &payments,
            SAME
        ),
        sample("image-delete-replicated.us-east-1.json")
    );
    assert_eq!(
        copy_event(
            "9a7c1e22-5b6d-4e8f-a012-3456789abc11",
            at(2432),
            &ml_model,
            SAME,
            "SUCCESS"
        ),
        sample("replication-success-restored.json")
    );
}

/// The samples of a delete under delete replication, through the handler: us-east-1's DELETE
/// applies it there; ap-southeast-2 still has the image at the sweep.
#[tokio::test]
async fn the_sample_delete_is_applied_in_us_east_1_by_its_sample_event_and_missing_elsewhere() {
    let h = harness();
    h.ecr.image(
        destination(PROD_ONLY),
        repository("prod/payments"),
        digest("sha256:b17f0c2e8d4a6b5c3e9f1a7d2c8b4e6f0a3d5c7e9b1f2a4c6e8d0b3f5a7c9e1d"),
        found(&["v2"], Some(at(0))),
    );
    let s = h.run(&sample("image-delete-replicated.json"), 900).await;
    assert_eq!((s.deletes, s.deletes_expected), (1, 2));
    let s = h
        .run(&sample("image-delete-replicated.us-east-1.json"), 925)
        .await;
    assert_eq!((s.deletes_seen, s.deletes_replicated), (1, 1));
    let s = h.run(&sweep(), 900 + WINDOW_SECS + 1).await;
    assert_eq!((s.deletes_missing, s.deletes_replicated), (1, 0));
    assert_eq!(
        h.ecr.all_calls(),
        (2, 0, 1, 0),
        "the rules of the two registries the deletes came from, and one DescribeImages, in \
         ap-southeast-2"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. The happy path
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_push_and_its_two_copies_count_two_expected_and_two_completed_with_their_lag_and_the_sweep_adds_nothing()
 {
    let h = harness();

    let s = h.run(&api_push(), 1).await;
    assert_eq!(s, summary(|s| (s.pushes, s.expected) = (1, 2)));
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsExpected", &to(SAME)),
        vec![(at(0), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationsExpected", &to(CROSS)),
        vec![(at(0), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationsExpected", &no_dims()),
        vec![(at(0), 1.0, 2.0)]
    );
    assert_eq!(p.names(), BTreeSet::from(["ReplicationsExpected"]));
    p.assert_mirrored_without_dimensions();

    let s = h.run(&api_copy_same(), 7).await;
    assert_eq!(s, summary(|s| (s.copies, s.completed) = (1, 1)));
    let s = h.run(&api_copy_cross(), 12).await;
    assert_eq!(s, summary(|s| (s.copies, s.completed) = (1, 1)));
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsCompleted", &to(SAME)),
        vec![(at(7), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationsCompleted", &to(CROSS)),
        vec![(at(12), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(SAME)),
        vec![(at(7), 7.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(at(12), 12.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &no_dims()),
        vec![(at(7), 7.0, 1.0), (at(12), 12.0, 1.0)]
    );
    assert!(
        p.matching("ReplicationLatency", &no_dims())
            .all(|d| d.unit == Unit::Seconds)
    );
    assert!(
        p.matching("ReplicationsCompleted", &no_dims())
            .all(|d| d.unit == Unit::Count)
    );
    assert_eq!(
        p.names(),
        BTreeSet::from(["ReplicationLatency", "ReplicationsCompleted"])
    );
    p.assert_mirrored_without_dimensions();

    // Both groups are settled: nothing left for the sweep to look at.
    for d in [SAME, CROSS] {
        let w = h.watch(d, API_DIGEST, Some(API_TAG));
        assert!(w.counted.expected && w.counted.completed, "{d:?}: {w:?}");
        assert_eq!(
            (w.next_check, w.checks, w.confirmation),
            (None, 0, None),
            "{d:?}"
        );
    }
    let s = h.run(&sample("scheduled-event.json"), 3300).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    let p = h.metrics.take();
    // 10:55: a sweep at a fifth minute also measures the copies watched (none).
    assert_eq!(
        p.names(),
        BTreeSet::from(["PendingReplications", "ReplicationsWatched"])
    );
    assert_eq!(
        p.points("PendingReplications", &no_dims()),
        vec![(at(3300), 0.0, 1.0)]
    );
    assert_eq!(
        h.ecr.all_calls(),
        (1, 0, 0, 0),
        "only the push read the configuration"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A lost copy event
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_copy_whose_event_was_lost_is_completed_at_the_sweep_with_the_lag_from_the_destination_push_time()
 {
    let h = harness();
    h.ecr.statuses(
        src(),
        repository(API_REPO),
        digest(API_DIGEST),
        vec![
            status(SAME, ReplicationState::Complete, None),
            status(CROSS, ReplicationState::Complete, None),
        ],
    );
    h.ecr.image(
        destination(CROSS),
        repository(API_REPO),
        digest(API_DIGEST),
        found(&[API_TAG], Some(at(14))),
    );
    h.run(&api_push(), 0).await;
    h.run(&api_copy_same(), 7).await;
    h.metrics.take();

    let s = h.run(&sweep(), WINDOW_SECS + 1).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.completed) = (1, 1, 1))
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsCompleted", &to(CROSS)),
        vec![(at(14), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(at(14), 14.0, 1.0)]
    );
    assert_eq!(p.count("ReplicationsMissing", &no_dims()), 0.0);
    assert_eq!(p.count("ReplicationsLate", &no_dims()), 0.0);
    assert_eq!(
        p.points("PendingReplications", &no_dims()),
        vec![(at(WINDOW_SECS + 1), 0.0, 1.0)]
    );
    p.assert_mirrored_without_dimensions();
    assert_eq!(
        h.ecr.all_calls(),
        (1, 1, 1, 0),
        "one status and one image lookup, for eu-west-1 only"
    );

    let w = h.watch(CROSS, API_DIGEST, Some(API_TAG));
    assert_eq!(
        w.confirmation,
        Some(Confirmation::Present {
            pushed_at: Some(at(14)),
            carried_tag: true,
            checked_at: at(WINDOW_SECS + 1)
        })
    );
    assert_eq!(w.next_check, None, "settled: never checked again");
    let group = h.group(CROSS, API_DIGEST).value;
    let (_, verdict) = group.verdicts(Window::DEFAULT, at(WINDOW_SECS + 1))[0].clone();
    assert!(
        verdict.confirmed && verdict.status == Status::Replicated,
        "{verdict:?}"
    );
    assert_eq!(h.open_groups().await, 0);
}

// ---------------------------------------------------------------------------------------------
// 3. A missing copy, then a late one
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_copy_missing_at_its_deadline_is_counted_missing_once_then_late_with_its_real_lag_when_it_arrives()
 {
    let h = harness();
    h.run(&api_push(), 0).await;
    h.run(&api_copy_same(), 7).await;
    h.metrics.take();

    // Before the window: no ECR call, nothing counted, the copy is merely pending.
    let s = h.run(&sweep(), 600).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    assert_eq!(h.ecr.all_calls(), (1, 0, 0, 0));
    let p = h.metrics.take();
    assert_eq!(
        p.names(),
        BTreeSet::from(["PendingReplications", "ReplicationsWatched"])
    );
    assert_eq!(
        p.points("ReplicationsWatched", &no_dims()),
        vec![(at(600), 0.0, 1.0)]
    );
    assert_eq!(
        p.points("PendingReplications", &to(CROSS)),
        vec![(at(600), 1.0, 1.0)]
    );
    assert_eq!(p.count("PendingReplications", &to(SAME)), 0.0);

    // After the window ECR still says IN_PROGRESS and the image is not there: missing, once.
    h.ecr.statuses(
        src(),
        repository(API_REPO),
        digest(API_DIGEST),
        vec![
            status(SAME, ReplicationState::Complete, None),
            status(CROSS, ReplicationState::InProgress, None),
        ],
    );
    let s = h.run(&sweep(), WINDOW_SECS + 1).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.missing) = (1, 1, 1))
    );
    assert_eq!(
        h.ecr.all_calls(),
        (2, 1, 1, 0),
        "the rules in force are read again before a copy is called missing"
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsMissing", &to(CROSS)),
        vec![(at(WINDOW_SECS + 1), 1.0, 1.0)],
        "when it was found, inside the alarm's range"
    );
    // No longer in flight: watched.
    assert_eq!(p.count("PendingReplications", &to(CROSS)), 0.0);
    assert_eq!(
        p.points("PendingReplications", &no_dims()),
        vec![(at(WINDOW_SECS + 1), 0.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationsWatched", &to(CROSS)),
        vec![(at(WINDOW_SECS + 1), 1.0, 1.0)]
    );
    p.assert_mirrored_without_dimensions();
    let w = h.watch(CROSS, API_DIGEST, Some(API_TAG));
    assert!(w.counted.missing);
    assert_eq!(
        w.confirmation,
        Some(Confirmation::Absent {
            in_progress: true,
            checked_at: at(WINDOW_SECS + 1)
        })
    );
    assert!(
        w.next_check.is_some_and(|t| t > at(WINDOW_SECS + 61)),
        "still watched, later: {w:?}"
    );

    // The next sweep a minute later: backed off, no ECR call, nothing counted again.
    let s = h.run(&sweep(), WINDOW_SECS + 61).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    assert_eq!(h.ecr.all_calls(), (2, 1, 1, 0));
    let p = h.metrics.take();
    assert_eq!(p.names(), BTreeSet::from(["PendingReplications"]));

    // The copy finally arrives: completed and late with its real lag, not missing again.
    let mut late = api_copy_cross();
    late["time"] = json!(iso(4000));
    let s = h.run(&late, 4000).await;
    assert_eq!(s, summary(|s| (s.copies, s.completed) = (1, 1)));
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsCompleted", &to(CROSS)),
        vec![(at(4000), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(at(4000), 4000.0, 1.0)]
    );
    assert_eq!(p.count("ReplicationsLate", &no_dims()), 0.0);
    assert_eq!(p.count("ReplicationsMissing", &no_dims()), 0.0);
    p.assert_mirrored_without_dimensions();
    // Late once no earlier copy can still come in (an earlier one without the tag would make
    // it untagged instead): five minutes after the copy, at the sweep.
    let w = h.watch(CROSS, API_DIGEST, Some(API_TAG));
    assert_eq!(w.next_check, Some(at(4300)));
    let s = h.run(&sweep(), 4300).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.late) = (1, 1, 1))
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsLate", &to(CROSS)),
        vec![(at(4300), 1.0, 1.0)],
        "dated when found, as every problem is"
    );
    p.assert_mirrored_without_dimensions();
    let w = h.watch(CROSS, API_DIGEST, Some(API_TAG));
    assert!(w.counted.missing && w.counted.completed && w.counted.late);
    assert_eq!(w.next_check, None);
    assert_eq!(h.open_groups().await, 0);
}

/// "Exactly one window is still on time": a check at the deadline itself cannot call the copy
/// missing, so it must not push the next check a whole window further either.
#[tokio::test]
async fn a_copy_still_absent_exactly_at_its_deadline_is_counted_missing_at_the_next_sweep() {
    let h = harness();
    h.ecr.statuses(
        src(),
        repository(API_REPO),
        digest(API_DIGEST),
        vec![
            status(SAME, ReplicationState::InProgress, None),
            status(CROSS, ReplicationState::InProgress, None),
        ],
    );
    h.run(&api_push(), 0).await;

    let s = h.run(&sweep(), WINDOW_SECS).await;
    assert_eq!(s.missing, 0, "not missing at exactly one window");

    let calls_before = h.ecr.calls(Api::ImageReplicationStatus);
    let s = h.run(&sweep(), WINDOW_SECS + 60).await;
    assert!(
        h.ecr.calls(Api::ImageReplicationStatus) > calls_before,
        "the sweep a minute after the deadline asked ECR nothing; next checks: {:?}",
        [SAME, CROSS].map(|d| h
            .watch(d, API_DIGEST, Some(API_TAG))
            .next_check
            .map(|t| t.to_string()))
    );
    assert_eq!(s.missing, 2);
}

// ---------------------------------------------------------------------------------------------
// 4. Untagged copies and stale tags
// ---------------------------------------------------------------------------------------------

/// A copy without its tag is matched provisionally (a push read later may take it), and is
/// untagged only if the tag did not move on at the source: the sweep commits it five minutes
/// after the copy, asks the source where the tag points, then the destination.
#[tokio::test]
async fn an_untagged_copy_counts_once_committed_and_its_stale_destination_tag_at_the_same_sweep() {
    let h = harness();
    h.ecr.tag(
        destination(CROSS),
        repository(API_REPO),
        tag(API_TAG),
        digest(OLD_DIGEST),
    );
    h.ecr.tag(
        src(),
        repository(API_REPO),
        tag(API_TAG),
        digest(API_DIGEST),
    );
    h.run(&api_push(), 0).await;
    h.run(&api_copy_same(), 7).await;
    h.metrics.take();

    let mut untagged = api_copy_cross();
    untagged["detail"]
        .as_object_mut()
        .unwrap()
        .remove("image-tag");
    let s = h.run(&untagged, 12).await;
    assert_eq!(
        s,
        summary(|s| s.copies = 1),
        "provisional: nothing counted yet"
    );
    assert!(h.metrics.take().0.is_empty());

    let s = h.run(&sweep(), 60).await;
    assert_eq!(s, summary(|s| s.sweeps = 1), "not due before the grace");
    h.metrics.take();

    let s = h.run(&sweep(), 12 + 300).await;
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
    let p = h.metrics.take();
    assert_eq!(
        p.points("UntaggedCopies", &to(CROSS)),
        vec![(at(312), 1.0, 1.0)],
        "dated when it was found (the copy's lag keeps the copy's time)"
    );
    assert_eq!(
        p.points("ReplicationsCompleted", &to(CROSS)),
        vec![(at(12), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(at(12), 12.0, 1.0)]
    );
    assert_eq!(p.points("StaleTags", &to(CROSS)), vec![(at(312), 1.0, 1.0)]);
    p.assert_mirrored_without_dimensions();
    assert_eq!(
        h.ecr.all_calls(),
        (1, 0, 0, 2),
        "one tag lookup at the source, one in the destination; no status or image call"
    );
    let w = h.watch(CROSS, API_DIGEST, Some(API_TAG));
    assert_eq!(w.tag_points_to, Some(Some(digest(OLD_DIGEST))));
    assert_eq!(w.tag_moved_on, Some(false));
    assert!(w.counted.stale_tag && w.counted.untagged);
    assert_eq!(w.next_check, None);

    let s = h.run(&sweep(), 400).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    assert_eq!(h.metrics.take().count("StaleTags", &no_dims()), 0.0);
    assert_eq!(h.ecr.all_calls(), (1, 0, 0, 2));
}

/// `A:latest` pushed at 0, its copy event lost; `B:latest` pushed at 600 and replicated, so the
/// destination's `latest` names B, correctly. The sweep finds A there without `latest`: the tag
/// moved on at the source, so A is replicated, and neither untagged nor stale.
#[tokio::test]
async fn a_destination_latest_that_moved_on_with_the_source_raises_no_alarm() {
    const A: &str = "sha256:aaaa000000000000000000000000000000000000000000000000000000000000";
    const B: &str = "sha256:bbbb000000000000000000000000000000000000000000000000000000000000";
    let h = harness();
    h.run(&push("push-a", 0, API_REPO, A, Some("latest")), 0)
        .await;
    h.run(&push("push-b", 600, API_REPO, B, Some("latest")), 600)
        .await;
    for (d, n) in [(SAME, 1), (CROSS, 2)] {
        let c = copy(
            &format!("copy-b-{n}"),
            660,
            d,
            API_REPO,
            B,
            Some("latest"),
            "SUCCESS",
        );
        h.run(&c, 660).await;
        // A landed in both destinations at 60 s (its events lost); `latest` names B there now.
        h.ecr.image(
            destination(d),
            repository(API_REPO),
            digest(A),
            found(&[], Some(at(60))),
        );
        h.ecr.tag(
            destination(d),
            repository(API_REPO),
            tag("latest"),
            digest(B),
        );
    }
    h.ecr
        .tag(src(), repository(API_REPO), tag("latest"), digest(B));
    h.metrics.take();

    let s = h.run(&sweep(), WINDOW_SECS + 1).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.completed) = (1, 2, 2))
    );
    let p = h.metrics.take();
    assert_eq!(p.count("UntaggedCopies", &no_dims()), 0.0);
    assert_eq!(p.count("StaleTags", &no_dims()), 0.0);
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(at(60), 60.0, 1.0)]
    );
    let group = h.group(CROSS, A).value;
    assert_eq!(
        group.verdicts(Window::DEFAULT, at(WINDOW_SECS + 1))[0]
            .1
            .status,
        Status::Replicated
    );
    assert_eq!(
        h.ecr.calls(Api::ImagesByTag),
        1,
        "one source lookup for both destinations (asked once per sweep); the destinations' tag \
         is not looked up"
    );
}

// ---------------------------------------------------------------------------------------------
// 4b. Deletes at the source, and withdrawn copies
// ---------------------------------------------------------------------------------------------

const SCRATCH_REPO: &str = "team/scratch";
const SCRATCH_DIGEST: &str =
    "sha256:5c0ffee15e7a4ee0d1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718";

/// `team/scratch:pr-417` pushed at 10:30 and deleted at 10:33 (the sample incident's
/// `image-delete.json`), before any copy: whichever event comes first, both destinations are
/// withdrawn at the deadline, not missing, counted once every event up to the deadline is in
/// (5 minutes after it); a copy that still comes completes, late.
#[tokio::test]
async fn a_push_deleted_at_the_source_before_its_copies_is_withdrawn_not_missing_and_a_late_copy_still_completes()
 {
    let pushed = 1800;
    for delete_first in [false, true] {
        let h = harness();
        let push = push(
            "scratch",
            pushed,
            SCRATCH_REPO,
            SCRATCH_DIGEST,
            Some("pr-417"),
        );
        let delete = sample("image-delete.json");
        let (first, second) = if delete_first {
            (&delete, &push)
        } else {
            (&push, &delete)
        };
        h.run(first, 1980).await;
        h.run(second, 1980).await;
        let deadline = pushed + WINDOW_SECS;
        let s = h.run(&sweep(), deadline).await;
        assert_eq!(s.withdrawn, 0, "not before the window has passed");
        h.metrics.take();

        let s = h.run(&sweep(), deadline + 1).await;
        assert_eq!(
            (s.withdrawn, s.missing),
            (0, 0),
            "a copy from before the deadline may still come"
        );
        let s = h.run(&sweep(), deadline + 300).await;
        assert_eq!(
            (s.withdrawn, s.missing),
            (2, 0),
            "delete first: {delete_first}"
        );
        assert_eq!(h.ecr.all_calls(), (1, 0, 0, 0), "nothing to ask ECR");
        let p = h.metrics.take();
        for d in [SAME, CROSS] {
            assert_eq!(
                p.points("ReplicationsWithdrawn", &to(d)),
                vec![(at(deadline), 1.0, 1.0)]
            );
        }
        assert_eq!(p.count("ReplicationsMissing", &no_dims()), 0.0);
        let verdict = |d| {
            h.group(d, SCRATCH_DIGEST)
                .value
                .verdicts(Window::DEFAULT, at(deadline + 300))[0]
                .1
                .status
        };
        assert_eq!(verdict(SAME), Status::Withdrawn);
        assert_eq!(h.open_groups().await, 0, "nothing left to check");

        let late = copy(
            "late",
            4000,
            SAME,
            SCRATCH_REPO,
            SCRATCH_DIGEST,
            Some("pr-417"),
            "SUCCESS",
        );
        let s = h.run(&late, 4000).await;
        assert_eq!((s.completed, s.late), (1, 0));
        assert_eq!(verdict(SAME), Status::Late);
        let s = h.run(&sweep(), 4300).await;
        assert_eq!(
            (s.completed, s.late),
            (0, 1),
            "late once no earlier copy can come"
        );
        assert_eq!(
            h.run(&sweep(), 9000).await,
            summary(|s| s.sweeps = 1),
            "and the withdrawn one is not counted again"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4c. The configuration in force
// ---------------------------------------------------------------------------------------------

/// us-west-2's rules name us-east-1 and eu-west-1 when `team/api` is pushed; eu-west-1 is
/// removed from them before its copy's window passes, while the function's cache still holds
/// the old rules.
#[tokio::test]
async fn a_destination_removed_inside_the_cache_period_is_withdrawn_not_missing() {
    let h = harness();
    h.run(&api_push(), 0).await;
    h.ecr.config(
        src(),
        json!({"registryId": SRC_ACCOUNT, "replicationConfiguration": {"rules": [
            {"destinations": [{"region": "us-east-1", "registryId": SRC_ACCOUNT}]}
        ]}}),
    );
    h.metrics.take();
    let s = h.run(&sweep(), WINDOW_SECS + 1).await;
    assert_eq!((s.missing, s.withdrawn), (1, 1));
    let p = h.metrics.take();
    assert_eq!(p.count("ReplicationsMissing", &to(SAME)), 1.0);
    assert_eq!(p.count("ReplicationsWithdrawn", &to(CROSS)), 1.0);
    assert_eq!(
        h.ecr.calls(Api::Registry),
        2,
        "read again once for the sweep, whatever the cache says"
    );
    assert_eq!(
        h.group(CROSS, API_DIGEST)
            .value
            .verdicts(Window::DEFAULT, at(WINDOW_SECS + 1))[0]
            .1
            .status,
        Status::Withdrawn
    );
}

/// us-west-2's rules name only us-east-1 when `team/api` is pushed; eu-west-1 is added within the
/// cache period, and its copy arrives.
#[tokio::test]
async fn a_destination_added_inside_the_cache_period_is_audited_from_its_first_copy() {
    let h = harness();
    h.ecr.config(
        src(),
        json!({"registryId": SRC_ACCOUNT, "replicationConfiguration": {"rules": [
            {"destinations": [{"region": "us-east-1", "registryId": SRC_ACCOUNT}]}
        ]}}),
    );
    let s = h.run(&api_push(), 0).await;
    assert_eq!(s.expected, 1);
    h.ecr.config(src(), sample("registry/us-west-2.json"));
    let s = h.run(&api_copy_cross(), 120).await;
    assert_eq!(
        (s.expected, s.completed),
        (1, 1),
        "the copy is expected, and counted"
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationLatency", &to(CROSS)),
        vec![(at(12), 12.0, 1.0)]
    );
    assert_eq!(h.ecr.calls(Api::Registry), 2);

    // Another copy that matches no push within the minute reads nothing more.
    let orphan = copy(
        "orphan",
        130,
        CROSS,
        API_REPO,
        OLD_DIGEST,
        Some("x"),
        "SUCCESS",
    );
    h.run(&orphan, 130).await;
    assert_eq!(h.ecr.calls(Api::Registry), 2);
}

// ---------------------------------------------------------------------------------------------
// 4d. Arrival order, event times, and copies reported as pushes
// ---------------------------------------------------------------------------------------------

/// Digest D pushed as `v1` at 0 and retagged `v2` at 180 s; a copy without a tag (a FAILED
/// result, or an untagged success) at 300 s. Whether `v1`'s event is handled first, or last (its
/// first invocation failed and Lambda retried it), the copy is counted once, for `v1`, and `v2`
/// keeps no lag that was never its own.
#[tokio::test]
async fn a_retagged_digests_tagless_copy_counts_once_whichever_push_is_handled_last() {
    for result in ["FAILED", "SUCCESS"] {
        let mut totals = Vec::new();
        for v1_last in [false, true] {
            let h = harness();
            let v1 = push("v1", 0, API_REPO, API_DIGEST, Some("v1"));
            let v2 = push("v2", 180, API_REPO, API_DIGEST, Some("v2"));
            let c = copy("c", 300, CROSS, API_REPO, API_DIGEST, None, result);
            if v1_last {
                h.run(&v2, 180).await;
                h.run(&c, 300).await;
                h.run(&v1, 420).await;
            } else {
                h.run(&v1, 0).await;
                h.run(&v2, 180).await;
                h.run(&c, 300).await;
            }
            h.run(&sweep(), 601).await;
            let p = h.metrics.take();
            let counts: Vec<(&str, f64)> = [
                "ReplicationsExpected",
                "ReplicationsCompleted",
                "ReplicationsFailed",
                "UntaggedCopies",
            ]
            .into_iter()
            .map(|m| (m, p.count(m, &to(CROSS))))
            .collect();
            let lags = p.points("ReplicationLatency", &to(CROSS));
            totals.push((counts, lags));
        }
        assert_eq!(totals[0], totals[1], "{result}");
        let (counts, lags) = &totals[1];
        let copy_counts = if result == "FAILED" {
            (0.0, 1.0)
        } else {
            (1.0, 0.0)
        };
        assert_eq!(
            (counts[1].1, counts[2].1),
            copy_counts,
            "{result}: {counts:?}"
        );
        assert_eq!(counts[0].1, 2.0);
        if result == "SUCCESS" {
            assert_eq!(lags, &vec![(at(300), 300.0, 1.0)], "v1's lag, not v2's");
            assert_eq!(counts[3].1, 1.0, "untagged once");
        }
    }
}

#[tokio::test]
async fn an_event_more_than_five_minutes_ahead_or_older_than_the_retention_is_rejected_and_never_stored()
 {
    let logs = logs::capture();
    let h = harness();
    let now = 1000;
    let ahead = push("ahead", now + 301, API_REPO, API_DIGEST, Some("v1"));
    let s = h.run(&ahead, now).await;
    assert_eq!(s, summary(|s| s.rejected = 1));
    let old = copy(
        "old",
        now - 91 * 86_400,
        SAME,
        API_REPO,
        API_DIGEST,
        Some("v1"),
        "SUCCESS",
    );
    let s = h.run(&old, now).await;
    assert_eq!(s, summary(|s| s.rejected = 1));
    assert!(h.snapshot().is_empty(), "nothing stored");
    assert_eq!(h.metrics.take().count("EventsRejected", &no_dims()), 2.0);
    let text = logs.text();
    assert!(text.contains(r#""field":"time""#), "{text}");
    assert!(
        text.contains("more than 5m ahead of the invocation's clock"),
        "{text}"
    );

    let on_the_edge = push("edge", now + 300, API_REPO, API_DIGEST, Some("v1"));
    assert_eq!(
        h.run(&on_the_edge, now).await.pushes,
        1,
        "exactly five minutes is accepted"
    );
}

/// With two-way rules (us-east-1 replicates back to us-west-2), ECR may report a copy landing in
/// us-east-1 as a PUSH there: it completes the open expectation, and expects nothing back.
#[tokio::test]
async fn a_push_event_in_a_destination_completes_the_open_expectation_instead_of_opening_its_own() {
    let h = harness();
    h.ecr.config(
        registry(SRC_ACCOUNT, "us-east-1"),
        json!({"registryId": SRC_ACCOUNT, "replicationConfiguration": {"rules": [
            {"destinations": [{"region": "us-west-2", "registryId": SRC_ACCOUNT}]}
        ]}}),
    );
    h.run(&api_push(), 0).await;
    h.metrics.take();
    let landed = push_in(
        (SRC_ACCOUNT, "us-east-1"),
        "landed",
        20,
        API_REPO,
        API_DIGEST,
        Some(API_TAG),
    );
    let s = h.run(&landed, 20).await;
    assert_eq!((s.pushes, s.expected, s.completed), (1, 0, 1));
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationLatency", &to(SAME)),
        vec![(at(20), 20.0, 1.0)]
    );
    assert!(
        h.snapshot()
            .iter()
            .all(|(k, _)| k.source_region.as_str() == SRC_REGION),
        "no group from us-east-1"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Failed replications
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_failed_copy_counts_once_and_the_sweep_keeps_ecrs_failure_code_verbatim() {
    const CODE: &str = "ACCESS_DENIED: registry 444455556666 policy does not allow ecr:ReplicateImage (\"prod/*\")";
    let h = harness();
    let pushed = 300;
    let s = h.run(&sample("push-by-digest.json"), pushed).await;
    assert_eq!(
        s,
        summary(|s| (s.pushes, s.expected) = (1, 3)),
        "prod/ also goes to ap-southeast-2"
    );
    h.metrics.take();

    let failed = sample("replication-failed-cross-account.json");
    let s = h.run(&failed, 309).await;
    assert_eq!(
        s,
        summary(|s| s.copies = 1),
        "a result without a tag is matched provisionally: a push read later may take it"
    );
    assert!(h.metrics.take().0.is_empty());

    let s = h.run(&failed, 320).await;
    assert_eq!(
        s,
        summary(|s| (s.copies, s.repeats) = (1, 1)),
        "a redelivery"
    );
    assert!(h.metrics.take().0.is_empty());

    // Five minutes after the result, the sweep commits the match and counts it, dated when it
    // happened.
    let s = h.run(&sweep(), 309 + 300).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.failed) = (1, 1, 1))
    );
    assert_eq!(
        h.ecr.all_calls(),
        (1, 0, 0, 0),
        "committing asks ECR nothing"
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsFailed", &to(CROSS)),
        vec![(at(609), 1.0, 1.0)],
        "dated when it was counted, inside the alarm's range"
    );
    assert_eq!(
        p.points("ReplicationsFailed", &no_dims()),
        vec![(at(609), 1.0, 1.0)]
    );

    // The other two copies' events were lost; ECR shows them present. eu-west-1 FAILED.
    h.ecr.statuses(
        src(),
        repository(WEB_REPO),
        digest(WEB_DIGEST),
        vec![
            status(SAME, ReplicationState::Complete, None),
            status(PROD_ONLY, ReplicationState::Complete, None),
            status(CROSS, ReplicationState::Failed, Some(CODE)),
        ],
    );
    h.ecr.image(
        destination(SAME),
        repository(WEB_REPO),
        digest(WEB_DIGEST),
        found(&[], Some(at(304))),
    );
    h.ecr.image(
        destination(PROD_ONLY),
        repository(WEB_REPO),
        digest(WEB_DIGEST),
        found(&[], Some(at(305))),
    );
    let now = pushed + WINDOW_SECS + 1;
    let s = h.run(&sweep(), now).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.completed) = (1, 3, 2))
    );
    let p = h.metrics.take();
    assert_eq!(
        p.count("ReplicationsFailed", &no_dims()),
        0.0,
        "not counted a second time"
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(SAME)),
        vec![(at(304), 4.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(PROD_ONLY)),
        vec![(at(305), 5.0, 1.0)]
    );

    let w = h.watch(CROSS, WEB_DIGEST, None);
    assert_eq!(
        w.confirmation,
        Some(Confirmation::Failed {
            failure_code: Some(CODE.to_owned()),
            checked_at: at(now)
        })
    );
    assert!(w.counted.failed && !w.counted.missing && !w.counted.completed);
    let group = h.group(CROSS, WEB_DIGEST).value;
    let (_, verdict) = group.verdicts(Window::DEFAULT, at(now))[0].clone();
    assert_eq!(
        (verdict.status, verdict.failure_code.as_deref()),
        (Status::Failed, Some(CODE))
    );

    let s = h.run(&failed, now + 10).await;
    assert_eq!(s, summary(|s| (s.copies, s.repeats) = (1, 1)));
    assert!(h.metrics.take().0.is_empty());
    assert_eq!(
        h.watch(CROSS, WEB_DIGEST, None).confirmation,
        Some(Confirmation::Failed {
            failure_code: Some(CODE.to_owned()),
            checked_at: at(now)
        })
    );
}

// ---------------------------------------------------------------------------------------------
// 6. At-least-once delivery
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_push_or_copy_delivered_several_times_counts_once_and_the_repeats_are_reported() {
    let h = harness();
    let s = h.run(&json!([api_push(), api_push(), api_push()]), 1).await;
    assert_eq!(
        s,
        summary(|s| (s.pushes, s.expected, s.repeats) = (3, 2, 2))
    );
    let s = h.run(&api_push(), 2).await;
    assert_eq!(s, summary(|s| (s.pushes, s.repeats) = (1, 1)));

    let s = h.run(&api_copy_same(), 7).await;
    assert_eq!(s, summary(|s| (s.copies, s.completed) = (1, 1)));
    let s = h
        .run(
            &json!([
                api_copy_same(),
                api_copy_cross(),
                api_copy_same(),
                api_copy_cross()
            ]),
            13,
        )
        .await;
    assert_eq!(
        s,
        summary(|s| (s.copies, s.completed, s.repeats) = (4, 1, 3))
    );
    let s = h.run(&api_copy_cross(), 14).await;
    assert_eq!(s, summary(|s| (s.copies, s.repeats) = (1, 1)));

    let p = h.metrics.take();
    assert_eq!(p.count("ReplicationsExpected", &no_dims()), 2.0);
    assert_eq!(p.count("ReplicationsCompleted", &no_dims()), 2.0);
    assert_eq!(p.count("ReplicationLatency", &no_dims()), 2.0);
    assert_eq!(p.count("ReplicationsCompleted", &to(SAME)), 1.0);
    assert_eq!(p.count("ReplicationsCompleted", &to(CROSS)), 1.0);
    assert_eq!(
        h.metrics.calls(),
        3,
        "the invocations that learned nothing published nothing"
    );
    assert_eq!(h.ecr.calls(Api::Registry), 1);
    for d in [SAME, CROSS] {
        let g = h.group(d, API_DIGEST);
        assert_eq!(
            (
                g.value.group.expectations().len(),
                g.value.group.copies().len()
            ),
            (1, 1),
            "{d:?}"
        );
        assert_eq!(
            g.version, 2,
            "{d:?}: saved once for the push and once for the copy"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Events out of order
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_copy_before_its_push_counts_nothing_until_the_push_arrives() {
    let h = harness();
    let s = h.run(&api_copy_same(), 7).await;
    assert_eq!(s, summary(|s| s.copies = 1));
    assert_eq!(h.metrics.calls(), 0, "nothing to publish");
    let g = h.group(SAME, API_DIGEST);
    assert_eq!(
        (
            g.value.group.expectations().len(),
            g.value.group.copies().len()
        ),
        (0, 1),
        "the copy is kept"
    );
    assert_eq!(h.open_groups().await, 0);

    let s = h.run(&api_push(), 9).await;
    assert_eq!(
        s,
        summary(|s| (s.pushes, s.expected, s.completed) = (1, 2, 1))
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsExpected", &no_dims()),
        vec![(at(0), 1.0, 2.0)]
    );
    assert_eq!(
        p.points("ReplicationsCompleted", &to(SAME)),
        vec![(at(7), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationLatency", &to(SAME)),
        vec![(at(7), 7.0, 1.0)]
    );
    assert_eq!(p.count("ReplicationsCompleted", &to(CROSS)), 0.0);
    p.assert_mirrored_without_dimensions();
    assert_eq!(h.watch(SAME, API_DIGEST, Some(API_TAG)).next_check, None);
}

// ---------------------------------------------------------------------------------------------
// 8. Concurrent invocations
// ---------------------------------------------------------------------------------------------

fn racing_harness() -> Harness<RacingStore> {
    harness_on(RacingStore::default(), RecordingSink::default())
}

#[tokio::test]
async fn two_invocations_racing_with_the_same_copy_count_it_once() {
    let h = racing_harness();
    h.run(&api_push(), 0).await;
    h.metrics.take();

    let copy = api_copy_cross();
    let (a, b) = tokio::join!(
        h.auditor.handle(&copy, at(12)),
        h.auditor.handle(&copy, at(12))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.completed + b.completed, 1, "{a:?} {b:?}");
    assert_eq!(
        a.repeats + b.repeats,
        1,
        "the loser found the copy already recorded"
    );
    assert!(
        h.auditor.store().conflicts.load(Ordering::SeqCst) >= 1,
        "the invocations did race"
    );
    let p = h.metrics.take();
    assert_eq!(p.count("ReplicationsCompleted", &no_dims()), 1.0);
    assert_eq!(p.count("ReplicationLatency", &to(CROSS)), 1.0);
}

#[tokio::test]
async fn a_copy_racing_a_sweep_that_finds_it_present_counts_it_once_whichever_saves_first() {
    for ecr_yields in [false, true] {
        let h = racing_harness();
        if ecr_yields {
            // The sweep waits on ECR while the copy saves: the copy wins.
            h.ecr.yield_in_calls();
        } // Otherwise the sweep saves while the copy waits between load and save: the sweep wins.
        h.ecr.image(
            destination(CROSS),
            repository(API_REPO),
            digest(API_DIGEST),
            found(&[API_TAG], Some(at(14))),
        );
        h.ecr.image(
            destination(SAME),
            repository(API_REPO),
            digest(API_DIGEST),
            found(&[API_TAG], Some(at(7))),
        );
        h.run(&api_push(), 0).await;
        h.run(&api_copy_same(), 7).await;
        h.metrics.take();

        let now = at(WINDOW_SECS + 1);
        let (copy, sweep) = (api_copy_cross(), sweep());
        let (c, s) = tokio::join!(h.auditor.handle(&copy, now), h.auditor.handle(&sweep, now));
        let (c, s) = (c.unwrap(), s.unwrap());
        assert_eq!(
            c.completed + s.completed,
            1,
            "ecr yields {ecr_yields}: {c:?} {s:?}"
        );
        assert_eq!(s.sweeps, 1);
        assert!(
            h.auditor.store().conflicts.load(Ordering::SeqCst) >= 1,
            "ecr yields {ecr_yields}: no race happened"
        );
        let p = h.metrics.take();
        assert_eq!(
            p.count("ReplicationsCompleted", &no_dims()),
            1.0,
            "ecr yields {ecr_yields}"
        );
        assert_eq!(
            p.count("ReplicationLatency", &no_dims()),
            1.0,
            "ecr yields {ecr_yields}"
        );
        let winner = if ecr_yields { &c } else { &s };
        assert_eq!(winner.completed, 1, "ecr yields {ecr_yields}: {c:?} {s:?}");
        assert_eq!(open_groups_in(h.auditor.store()).await, 0);
    }
}

#[tokio::test]
async fn two_sweeps_racing_on_a_missing_copy_count_it_missing_once() {
    let h = racing_harness();
    h.ecr.yield_in_calls();
    h.ecr.statuses(
        src(),
        repository(API_REPO),
        digest(API_DIGEST),
        vec![status(CROSS, ReplicationState::InProgress, None)],
    );
    h.run(&api_push(), 0).await;
    h.run(&api_copy_same(), 7).await;

    let now = at(WINDOW_SECS + 1);
    let sweep = sweep();
    let (a, b) = tokio::join!(h.auditor.handle(&sweep, now), h.auditor.handle(&sweep, now));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.missing + b.missing, 1, "{a:?} {b:?}");
    assert!(
        h.auditor.store().conflicts.load(Ordering::SeqCst) >= 1,
        "the sweeps did race"
    );
    assert_eq!(
        h.metrics.take().count("ReplicationsMissing", &no_dims()),
        1.0
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Confirmation APIs that do not answer
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_sweep_decides_with_describe_images_when_the_status_api_is_refused_and_says_so_once() {
    let logs = logs::capture();

    let h = harness();
    // moto, for one, answers DescribeImageReplicationStatus with "not implemented".
    let refusal = RegistryError::Refused(
        "InternalFailure: The action DescribeImageReplicationStatus is not implemented".into(),
    );
    h.ecr.fail(Api::ImageReplicationStatus, Some(refusal));
    h.ecr.image(
        destination(SAME),
        repository(API_REPO),
        digest(API_DIGEST),
        found(&[API_TAG], Some(at(6))),
    );
    h.run(&api_push(), 0).await;
    h.metrics.take();

    let s = h.run(&sweep(), WINDOW_SECS + 1).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.completed, s.missing) = (1, 2, 1, 1))
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationLatency", &to(SAME)),
        vec![(at(6), 6.0, 1.0)]
    );
    assert_eq!(
        p.points("ReplicationsMissing", &to(CROSS)),
        vec![(at(WINDOW_SECS + 1), 1.0, 1.0)],
        "dated when found"
    );
    assert_eq!(
        h.ecr.all_calls(),
        (2, 1, 2, 0),
        "and DescribeRegistry again before the missing copy"
    );
    assert_eq!(
        h.watch(CROSS, API_DIGEST, Some(API_TAG)).confirmation,
        Some(Confirmation::Absent {
            in_progress: false,
            checked_at: at(WINDOW_SECS + 1)
        })
    );
    let text = logs.text();
    let unavailable = text
        .lines()
        .filter(|l| l.contains("an ECR confirmation API is unavailable"))
        .count();
    assert_eq!(
        unavailable, 1,
        "one line per cause, not per expectation:\n{text}"
    );
    assert!(
        text.contains("not implemented"),
        "the cause is named:\n{text}"
    );
}

#[tokio::test]
async fn a_sweep_decides_with_the_status_api_when_describe_images_keeps_failing() {
    const CODE: &str = "CROSS_ACCOUNT_ACCESS_DENIED";
    let h = harness();
    h.ecr.fail(
        Api::ImagesByDigest,
        Some(RegistryError::Transient(
            "ThrottlingException after 3 attempts".into(),
        )),
    );
    h.ecr.statuses(
        src(),
        repository(API_REPO),
        digest(API_DIGEST),
        vec![
            status(SAME, ReplicationState::Complete, None),
            status(CROSS, ReplicationState::Failed, Some(CODE)),
        ],
    );
    h.run(&api_push(), 0).await;
    h.metrics.take();

    let s = h.run(&sweep(), WINDOW_SECS + 1).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.completed, s.failed) = (1, 2, 1, 1))
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationsCompleted", &to(SAME)),
        vec![(at(WINDOW_SECS + 1), 1.0, 1.0)]
    );
    assert_eq!(
        p.count("ReplicationLatency", &no_dims()),
        0.0,
        "COMPLETE alone says nothing of the lag"
    );
    assert_eq!(
        p.count("ReplicationsLate", &no_dims()),
        0.0,
        "and is not called late on a guess"
    );
    assert_eq!(
        p.points("ReplicationsFailed", &to(CROSS)),
        vec![(at(WINDOW_SECS + 1), 1.0, 1.0)]
    );
    p.assert_mirrored_without_dimensions();
    assert_eq!(
        h.watch(SAME, API_DIGEST, Some(API_TAG)).confirmation,
        Some(Confirmation::Present {
            pushed_at: None,
            carried_tag: true,
            checked_at: at(WINDOW_SECS + 1)
        })
    );
    assert_eq!(
        h.watch(CROSS, API_DIGEST, Some(API_TAG)).confirmation,
        Some(Confirmation::Failed {
            failure_code: Some(CODE.into()),
            checked_at: at(WINDOW_SECS + 1)
        })
    );
}

#[tokio::test]
async fn a_sweep_that_neither_api_answers_fails_counts_nothing_and_leaves_the_expectations_due() {
    let h = harness();
    h.ecr.fail(
        Api::ImageReplicationStatus,
        Some(RegistryError::Transient("ServiceUnavailable".into())),
    );
    h.ecr.fail(
        Api::ImagesByDigest,
        Some(RegistryError::Transient("RequestTimeout".into())),
    );
    h.run(&api_push(), 0).await;
    h.metrics.take();

    let now = WINDOW_SECS + 1;
    let err = h
        .auditor
        .handle(&sweep(), at(now))
        .await
        .expect_err("the invocation must fail");
    assert!(matches!(err, HandlerError::Unconfirmed(2)), "{err:?}");
    let p = h.metrics.take();
    assert_eq!(
        p.names(),
        BTreeSet::from(["PendingReplications", "ReplicationsWatched"]),
        "nothing counted"
    );
    assert_eq!(p.count("PendingReplications", &to(SAME)), 1.0);
    assert_eq!(p.count("PendingReplications", &to(CROSS)), 1.0);
    for d in [SAME, CROSS] {
        let g = h.group(d, API_DIGEST).value;
        let w = &g.watches[&Some(tag(API_TAG))];
        assert!(
            !w.counted.missing && !w.counted.completed && w.confirmation.is_none(),
            "{d:?}: {w:?}"
        );
        // EventBridge retries the failed invocation within minutes: the retry must look again.
        let retry = at(now + 60);
        assert!(
            g.due_at().is_some_and(|t| t <= retry),
            "{d:?}: not due for the retry at {retry}, next check {:?}",
            g.due_at().map(|t| t.to_string())
        );
    }

    // ECR is back by the retry: both copies are confirmed absent and counted missing.
    h.ecr.fail(Api::ImageReplicationStatus, None);
    h.ecr.fail(Api::ImagesByDigest, None);
    let s = h.run(&sweep(), now + 60).await;
    assert_eq!(
        s,
        summary(|s| (s.sweeps, s.groups_checked, s.missing) = (1, 2, 2))
    );
}

// ---------------------------------------------------------------------------------------------
// 10. Reading the replication configuration
// ---------------------------------------------------------------------------------------------

/// A push from an account that has no read role (allowed on the bus by the organization) used
/// to fail its invocation, be retried twice and land in the dead-letter queue, every time: a
/// page for a setup gap. It is acknowledged, counted in its own metric, and logged once per
/// account per cold start.
#[tokio::test]
async fn a_push_from_an_account_whose_registry_cannot_be_read_is_acknowledged_counted_and_logged_once()
 {
    let logs = logs::capture();
    let h = harness();
    let denied = RegistryError::Refused(
        "could not assume arn:aws:iam::777788889999:role/audit: AccessDenied".into(),
    );
    h.ecr.fail(Api::Registry, Some(denied));
    let stranger = ("777788889999", "eu-central-1");
    for (i, secs) in [(1, 10), (2, 20)] {
        let p = push_in(
            stranger,
            &format!("p-{i}"),
            secs,
            API_REPO,
            &synthetic_digest(i),
            Some("v1"),
        );
        let s = h.run(&p, secs).await;
        assert_eq!(
            s,
            summary(|s| (s.pushes, s.sources_unreadable) = (1, 1)),
            "acknowledged, not failed"
        );
    }
    assert!(h.snapshot().is_empty(), "nothing is expected of it");
    let p = h.metrics.take();
    assert_eq!(
        p.points("SourcesUnreadable", &no_dims()),
        vec![(at(10), 1.0, 1.0), (at(20), 1.0, 1.0)]
    );
    assert_eq!(p.count("ReplicationsMissing", &no_dims()), 0.0);
    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("a registry cannot be read"))
        .collect();
    assert_eq!(lines.len(), 1, "once per account: {text}");
    assert!(lines[0].contains("777788889999") && lines[0].contains("AccessDenied"));
}

/// In the sweep too: when neither confirmation API can be read for lack of permission, the
/// copy is not failed every minute (no retry helps until someone deploys the read role); it is
/// counted in SourcesUnreadable and asked again a window later, backing off.
#[tokio::test]
async fn a_sweep_that_neither_registry_lets_read_counts_a_setup_gap_and_backs_off() {
    let h = harness();
    h.ecr.fail(
        Api::ImageReplicationStatus,
        Some(RegistryError::Refused("AccessDeniedException".into())),
    );
    h.ecr.fail(
        Api::ImagesByDigest,
        Some(RegistryError::Refused("AccessDeniedException".into())),
    );
    h.run(&api_push(), 0).await;
    h.metrics.take();

    let s = h.run(&sweep(), WINDOW_SECS + 1).await;
    assert_eq!(s.sources_unreadable, 2, "{s:?}");
    assert_eq!((s.missing, s.failed), (0, 0));
    let p = h.metrics.take();
    assert_eq!(p.count("SourcesUnreadable", &no_dims()), 2.0);
    let w = h.watch(CROSS, API_DIGEST, Some(API_TAG));
    assert!(
        w.next_check.is_some_and(|t| t >= at(2 * WINDOW_SECS)),
        "asked again a window later: {w:?}"
    );
    let s = h.run(&sweep(), WINDOW_SECS + 61).await;
    assert_eq!(s.sources_unreadable, 0, "not every minute");
}

#[tokio::test]
async fn a_push_fails_and_stores_nothing_while_describe_registry_is_unavailable() {
    let h = harness();
    let error = RegistryError::Transient("ThrottlingException: Rate exceeded".into());
    h.ecr.fail(Api::Registry, Some(error.clone()));
    let err = h
        .auditor
        .handle(&api_push(), at(1))
        .await
        .expect_err("the push must not be dropped");
    assert!(
        matches!(&err, HandlerError::Registry(e) if *e == error),
        "{err:?}"
    );
    assert!(h.snapshot().is_empty());
    assert_eq!(h.metrics.calls(), 0);
    // The failure was not cached: the retry reads the configuration and records the push.
    h.ecr.fail(Api::Registry, None);
    let s = h.run(&api_push(), 2).await;
    assert_eq!(s, summary(|s| (s.pushes, s.expected) = (1, 2)));
    assert_eq!(h.ecr.calls(Api::Registry), 2);
    assert_eq!(h.snapshot().len(), 2);
}

#[tokio::test]
async fn the_replication_configuration_is_read_once_per_cache_period() {
    let h = harness();
    let s = h
        .run(&push("p1", 0, API_REPO, &synthetic_digest(1), Some("a")), 0)
        .await;
    assert_eq!(s.expected, 2);
    h.run(
        &push(
            "p2",
            CONFIG_CACHE_SECS - 1,
            API_REPO,
            &synthetic_digest(2),
            Some("b"),
        ),
        CONFIG_CACHE_SECS - 1,
    )
    .await;
    assert_eq!(h.ecr.calls(Api::Registry), 1, "cached");

    // A rule added meanwhile is seen once the cache has expired.
    h.ecr.config(
        src(),
        json!({"registryId": SRC_ACCOUNT, "replicationConfiguration": {"rules": [{"destinations": [
            {"region": SAME.0, "registryId": SAME.1},
            {"region": CROSS.0, "registryId": CROSS.1},
            {"region": PROD_ONLY.0, "registryId": PROD_ONLY.1}
        ]}]}}),
    );
    let s = h
        .run(
            &push(
                "p3",
                CONFIG_CACHE_SECS,
                API_REPO,
                &synthetic_digest(3),
                Some("c"),
            ),
            CONFIG_CACHE_SECS,
        )
        .await;
    assert_eq!(
        h.ecr.calls(Api::Registry),
        2,
        "read again after CONFIG_CACHE_SECONDS"
    );
    assert_eq!(s.expected, 3);
    h.run(
        &push(
            "p4",
            CONFIG_CACHE_SECS + 1,
            API_REPO,
            &synthetic_digest(4),
            Some("d"),
        ),
        CONFIG_CACHE_SECS + 1,
    )
    .await;
    assert_eq!(h.ecr.calls(Api::Registry), 2);
}

// ---------------------------------------------------------------------------------------------
// 11. Malformed input
// ---------------------------------------------------------------------------------------------

fn malformed_events() -> [Value; 2] {
    let mut no_digest = api_push();
    no_digest["id"] = json!("bad-0001");
    no_digest["detail"]
        .as_object_mut()
        .unwrap()
        .remove("image-digest");
    let mut bad_repository = api_copy_cross();
    bad_repository["id"] = json!("bad-0002");
    bad_repository["detail"]["repository-name"] = json!("Team/API");
    [no_digest, bad_repository]
}

#[tokio::test]
async fn malformed_events_are_acknowledged_and_counted_once_per_event_id() {
    let h = harness();
    for (i, event) in malformed_events().iter().enumerate() {
        let now = 10 + i as i64;
        for delivery in 0..2 {
            let s = h.run(event, now).await;
            assert_eq!(s, summary(|s| s.rejected = 1), "{event}");
            let p = h.metrics.take();
            let expected = if delivery == 0 {
                vec![(at(now), 1.0, 1.0)]
            } else {
                vec![]
            };
            assert_eq!(
                p.points("EventsRejected", &no_dims()),
                expected,
                "delivery {delivery} of {event}"
            );
        }
    }
    // A record that is not an event at all has no id to recognise a redelivery by.
    let s = h.run(&json!("not an event"), 20).await;
    assert_eq!(s, summary(|s| s.rejected = 1));
    assert_eq!(
        h.metrics.take().points("EventsRejected", &no_dims()),
        vec![(at(20), 1.0, 1.0)]
    );
    assert!(h.snapshot().is_empty());
    assert_eq!(h.ecr.all_calls(), (0, 0, 0, 0));
}

#[tokio::test]
async fn a_batch_with_malformed_records_still_records_the_good_ones() {
    let h = harness();
    let [no_digest, bad_repository] = malformed_events();
    let batch = json!([no_digest, api_push(), 42, api_copy_same(), bad_repository]);
    let s = h.run(&batch, 8).await;
    assert_eq!(
        s,
        summary(|s| (s.pushes, s.copies, s.rejected, s.expected, s.completed) = (1, 1, 3, 2, 1))
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("EventsRejected", &no_dims()),
        vec![(at(8), 1.0, 3.0)]
    );
    assert_eq!(p.count("ReplicationsExpected", &no_dims()), 2.0);
    assert_eq!(p.count("ReplicationsCompleted", &to(SAME)), 1.0);
    assert_eq!(h.snapshot().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 12. Ignored events, sweeps and the pending gauge
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn scan_results_are_ignored_without_touching_the_store() {
    let h = harness_on(RacingStore::default(), RecordingSink::default());
    let s = h.run(&sample("image-scan.json"), 1).await;
    assert_eq!(s, summary(|s| s.ignored = 1));
    let s = h
        .run(
            &json!([sample("image-scan.json"), sample("image-scan.json")]),
            2,
        )
        .await;
    assert_eq!(s, summary(|s| s.ignored = 2));
    assert_eq!(h.auditor.store().saves.load(Ordering::SeqCst), 0);
    assert!(h.auditor.store().inner.snapshot().is_empty());
    assert_eq!(h.ecr.all_calls(), (0, 0, 0, 0));
    assert_eq!(h.metrics.calls(), 0);
}

#[tokio::test]
async fn a_scheduled_event_and_a_scheduler_payload_both_sweep_and_report_zero_pending_when_nothing_is_open()
 {
    let h = harness();
    for (i, payload) in [sample("scheduled-event.json"), sweep()].iter().enumerate() {
        let now = 60 * (i as i64 + 1);
        let s = h.run(payload, now).await;
        assert_eq!(s, summary(|s| s.sweeps = 1), "{payload}");
        let p = h.metrics.take();
        assert_eq!(
            p.points("PendingReplications", &no_dims()),
            vec![(at(now), 0.0, 1.0)],
            "{payload}"
        );
        assert_eq!(p.0.len(), 1, "{payload}");
    }
}

#[tokio::test]
async fn pending_replications_are_published_per_destination_at_each_sweep() {
    let h = harness();
    h.run(&api_push(), 0).await;
    h.run(
        &push("p2", 5, API_REPO, &synthetic_digest(2), Some("v2")),
        5,
    )
    .await;
    h.run(&api_copy_same(), 7).await;
    h.metrics.take();

    let s = h.run(&sample("scheduled-event.json"), 60).await;
    assert_eq!(s, summary(|s| s.sweeps = 1));
    let p = h.metrics.take();
    assert_eq!(
        p.points("PendingReplications", &to(SAME)),
        vec![(at(60), 1.0, 1.0)]
    );
    assert_eq!(
        p.points("PendingReplications", &to(CROSS)),
        vec![(at(60), 2.0, 1.0)]
    );
    assert_eq!(
        p.points("PendingReplications", &no_dims()),
        vec![(at(60), 1.0, 1.0), (at(60), 2.0, 1.0)]
    );
    p.assert_mirrored_without_dimensions();
    assert_eq!(h.ecr.all_calls(), (1, 0, 0, 0));
}

#[tokio::test]
async fn pending_replications_from_two_source_regions_to_one_destination_keep_their_own_source_region()
 {
    let h = harness();
    // eu-central-1 replicates team/ to us-east-1 (a bare rules document, as put-replication-configuration takes).
    h.ecr.config(
        registry(SRC_ACCOUNT, "eu-central-1"),
        sample("registry/eu-central-1.rules.json"),
    );
    h.run(&api_push(), 0).await;
    let eu = (SRC_ACCOUNT, "eu-central-1");
    h.run(
        &push_in(eu, "eu-1", 1, API_REPO, &synthetic_digest(1), Some("x")),
        1,
    )
    .await;
    h.run(
        &push_in(eu, "eu-2", 2, API_REPO, &synthetic_digest(2), Some("y")),
        2,
    )
    .await;
    h.metrics.take();

    h.run(&sweep(), 60).await;
    let p = h.metrics.take();
    let gauge = |source, d| p.points("PendingReplications", &from_to(source, d));
    assert_eq!(gauge("us-west-2", CROSS), vec![(at(60), 1.0, 1.0)]);
    assert_eq!(
        gauge("eu-central-1", SAME),
        vec![(at(60), 2.0, 1.0)],
        "all: {:#?}",
        p.0
    );
    assert_eq!(
        gauge("us-west-2", SAME),
        vec![(at(60), 1.0, 1.0)],
        "all: {:#?}",
        p.0
    );
}

// ---------------------------------------------------------------------------------------------
// 13. Metrics that cannot be published
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn when_cloudwatch_fails_the_state_is_saved_and_the_same_data_goes_to_the_fallback() {
    let h = harness_on(MemoryStateStore::default(), RecordingSink::failing());
    let s = h.run(&api_push(), 1).await;
    assert_eq!(s, summary(|s| (s.pushes, s.expected) = (1, 2)));
    assert_eq!(h.snapshot().len(), 2);
    assert!(h.watch(CROSS, API_DIGEST, Some(API_TAG)).counted.expected);

    let attempted = h.metrics.recorded().attempted.clone();
    assert_eq!(
        attempted.len(),
        3,
        "two destinations and the dimensionless series"
    );
    assert_eq!(h.fallback.take().0, attempted);
    assert_eq!((h.metrics.calls(), h.fallback.calls()), (1, 1));

    // A retry of the event would count nothing more.
    let s = h.run(&api_push(), 2).await;
    assert_eq!(s, summary(|s| (s.pushes, s.repeats) = (1, 1)));
}

#[tokio::test]
async fn when_cloudwatch_fails_the_emf_fallback_writes_the_metrics_to_the_log() {
    let metrics = RecordingSink::failing();
    let log = SharedBuf::default();
    let ecr = FakeRegistry::default();
    ecr.config(src(), sample("registry/us-west-2.json"));
    let auditor = Auditor::new(
        MemoryStateStore::default(),
        ecr,
        metrics.clone(),
        EmfSink::new(log.clone(), "ECRReplication"),
        settings(),
    );
    auditor.handle(&api_push(), at(1)).await.unwrap();
    auditor.handle(&api_copy_cross(), at(12)).await.unwrap();
    assert_eq!(auditor.store().snapshot().len(), 2);

    let lines: Vec<Value> = log
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |name: &str, destination: Option<&str>| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| {
                l.get(name).is_some()
                    && l.get("DestinationRegion").and_then(Value::as_str) == destination
            })
            .map(|l| l[name].clone())
            .collect()
    };
    assert_eq!(of("ReplicationsExpected", None), vec![json!([1.0, 1.0])]);
    assert_eq!(of("ReplicationsExpected", Some(CROSS.0)), vec![json!(1.0)]);
    assert_eq!(of("ReplicationLatency", Some(CROSS.0)), vec![json!(12.0)]);
    assert_eq!(of("ReplicationLatency", None), vec![json!(12.0)]);
    assert!(
        lines
            .iter()
            .all(|l| l["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "ECRReplication")
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["_aws"]["Timestamp"] == json!(at(12).millis()))
            .count(),
        2
    );
}

#[tokio::test]
async fn with_emf_a_push_and_a_copy_each_log_under_two_kilobytes_of_metrics() {
    // What BENCHMARKS.md's cost table prices METRICS_SINK=emf at: CloudWatch Logs ingestion of
    // these bytes per invocation, instead of one PutMetricData request.
    let log = SharedBuf::default();
    let ecr = FakeRegistry::default();
    ecr.config(src(), sample("registry/us-west-2.json"));
    let auditor = Auditor::new(
        MemoryStateStore::default(),
        ecr,
        EmfSink::new(log.clone(), "ECRReplication"),
        EmfSink::new(SharedBuf::default(), "ECRReplication"),
        settings(),
    );
    auditor.handle(&api_push(), at(1)).await.unwrap();
    let pushed = log.text().len();
    auditor.handle(&api_copy_cross(), at(12)).await.unwrap();
    let copied = log.text().len() - pushed;
    println!("emf | bytes logged: a push to 2 destinations {pushed} B, a copy {copied} B");
    assert!(pushed > 0 && copied > 0, "both invocations publish metrics");
    assert!(pushed < 2048 && copied < 2048, "{pushed} B, {copied} B");
}

#[tokio::test]
async fn metrics_lost_by_both_sinks_fail_the_invocation_but_the_state_is_kept() {
    let h = harness_on(MemoryStateStore::default(), RecordingSink::failing());
    h.fallback.recorded().fail = true;
    let err = h
        .auditor
        .handle(&api_push(), at(1))
        .await
        .expect_err("metrics lost");
    assert!(matches!(err, HandlerError::Metrics(_)), "{err:?}");
    assert_eq!(h.snapshot().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// 8. What a rule promises beyond a push: restores, archived copies, replicated deletes
// ---------------------------------------------------------------------------------------------

/// `team/api`'s image restored from the archive storage class in us-west-2.
fn api_restore(id: &str, secs: i64) -> Value {
    let image = Image {
        source_account: SRC_ACCOUNT,
        source_region: SRC_REGION,
        repository: API_REPO,
        digest: API_DIGEST,
        tag: None,
    };
    restore_event(id, at(secs), &image)
}

/// `team/api:v1.4.2` pushed and copied at 10:00, archived since, restored a day later: the
/// restore is owed a copy in both destinations from its own time, judged like a push by digest,
/// and its verdict lines say it was a restore.
#[tokio::test]
async fn a_restore_is_owed_a_copy_in_every_destination_from_the_restore_and_says_so_in_its_verdict()
{
    let logs = logs::capture();
    let h = harness();
    h.run(&api_push(), 1).await;
    h.run(&api_copy_same(), 7).await;
    h.run(&api_copy_cross(), 12).await;
    h.metrics.take();

    let restored = 86_400;
    let s = h.run(&api_restore("restore-1", restored), restored).await;
    assert_eq!(s, summary(|s| (s.restores, s.expected) = (1, 2)));
    assert_eq!(
        h.run(&api_restore("restore-1", restored), restored + 5)
            .await,
        summary(|s| (s.restores, s.repeats) = (1, 1)),
        "a redelivered restore changes nothing"
    );
    let copy = copy(
        "restore-copy",
        restored + 30,
        SAME,
        API_REPO,
        API_DIGEST,
        Some(API_TAG),
        "SUCCESS",
    );
    let s = h.run(&copy, restored + 30).await;
    assert_eq!(s.completed, 1, "{s:?}");
    let p = h.metrics.take();
    assert_eq!(
        p.points("ReplicationLatency", &to(SAME)),
        vec![(at(restored + 30), 30.0, 1.0)],
        "the lag is from the restore, not from the push a day before"
    );

    let s = h.run(&sweep(), restored + WINDOW_SECS + 1).await;
    assert_eq!((s.missing, s.completed), (1, 0), "{s:?}");
    assert_eq!(
        h.metrics.take().count("ReplicationsMissing", &to(CROSS)),
        1.0
    );
    let verdicts = h
        .group(CROSS, API_DIGEST)
        .value
        .verdicts(Window::DEFAULT, at(restored + WINDOW_SECS + 1))
        .into_iter()
        .map(|(e, v)| (e.trigger.as_str(), e.tag.clone(), v.status))
        .collect::<Vec<_>>();
    assert_eq!(
        verdicts,
        vec![
            ("push", Some(tag(API_TAG)), Status::Replicated),
            ("restore", None, Status::Missing)
        ]
    );
    let text = logs.text();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["message"] == "replication verdict")
        .collect();
    let triggers: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["trigger"].as_str().unwrap_or("?"),
                l["verdict"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        triggers,
        [
            ("push", "replicated"),
            ("push", "replicated"),
            ("restore", "replicated"),
            ("restore", "missing")
        ],
        "{text}"
    );
}

/// Archiving is not replicated, and a referrer (a signature) is not audited: both are ignored,
/// counted, and never stored.
#[tokio::test]
async fn an_archive_and_a_referrer_action_are_ignored_without_touching_the_store() {
    let h = harness();
    let mut archive = api_restore("archive-1", 100);
    archive["detail"]["target-storage-class"] = json!("ARCHIVE");
    let mut referrer = api_push();
    referrer["id"] = json!("referrer-1");
    referrer["detail-type"] = json!("ECR Referrer Action");
    let s = h.run(&json!([archive, referrer]), 100).await;
    assert_eq!(s, summary(|s| s.ignored = 2));
    assert!(h.snapshot().is_empty());
    assert_eq!(h.ecr.all_calls(), (0, 0, 0, 0));
}

/// Both copy events of `team/api:v1.4.2` were lost. At the sweep, us-east-1 has the copy
/// ARCHIVED (it exists but cannot be pulled) and eu-west-1 has it ACTIVATING (a restore there,
/// on its way): the first is `archived`, counted once and not completed; the second stays
/// pending. Restored in us-east-1, the copy completes.
#[tokio::test]
async fn a_copy_found_archived_counts_copies_archived_not_completed_and_one_activating_stays_pending()
 {
    let h = harness();
    let image = |d, status| {
        h.ecr.image(
            destination(d),
            repository(API_REPO),
            digest(API_DIGEST),
            found_with(&[API_TAG], Some(at(20)), status),
        )
    };
    image(SAME, ImageStatus::Archived);
    image(CROSS, ImageStatus::Activating);
    h.run(&api_push(), 0).await;
    h.metrics.take();

    let first = WINDOW_SECS + 1;
    let s = h.run(&sweep(), first).await;
    assert_eq!((s.archived, s.completed, s.missing), (1, 0, 0), "{s:?}");
    let p = h.metrics.take();
    assert_eq!(
        p.points("CopiesArchived", &to(SAME)),
        vec![(at(first), 1.0, 1.0)]
    );
    assert_eq!(p.count("ReplicationsCompleted", &no_dims()), 0.0);
    assert_eq!(
        p.points("PendingReplications", &to(CROSS)),
        vec![(at(first), 1.0, 1.0)],
        "activating: still on its way"
    );
    p.assert_mirrored_without_dimensions();
    let status = |d| {
        h.group(d, API_DIGEST)
            .value
            .verdicts(Window::DEFAULT, at(first))[0]
            .1
            .status
    };
    assert_eq!(
        (status(SAME), status(CROSS)),
        (Status::Archived, Status::Pending)
    );
    assert_eq!(
        h.run(&sweep(), first + 60).await,
        summary(|s| s.sweeps = 1),
        "nothing is due again before one window"
    );

    image(SAME, ImageStatus::Active);
    image(CROSS, ImageStatus::Active);
    let s = h.run(&sweep(), first + WINDOW_SECS).await;
    assert_eq!((s.completed, s.archived), (2, 0), "{s:?}");
    assert_eq!(status(SAME), Status::Replicated);
}

/// `prod/web`'s image (pushed by digest) in the us-west-2 source.
fn web_image(tag: Option<&str>) -> Image<'_> {
    Image {
        source_account: SRC_ACCOUNT,
        source_region: SRC_REGION,
        repository: WEB_REPO,
        digest: WEB_DIGEST,
        tag,
    }
}

/// `prod/web`, copied everywhere, deleted by digest at the source. In
/// `events/registry/us-west-2.json` only the `prod` rule has delete replication: ap-southeast-2
/// and us-east-1 owe the delete, eu-west-1 (named by the other rule only) does not. us-east-1's
/// own DELETE event comes 20 s later; ap-southeast-2 still has the image after the window
/// (missing, confirmed with DescribeImages), then loses it (late).
#[tokio::test]
async fn a_delete_under_delete_replication_is_owed_by_its_rules_destinations_and_judged_there() {
    let logs = logs::capture();
    let h = harness();
    h.run(&sample("push-by-digest.json"), 300).await;
    for (id, d) in [("c-same", SAME), ("c-cross", CROSS), ("c-prod", PROD_ONLY)] {
        let c = copy(id, 310, d, WEB_REPO, WEB_DIGEST, None, "SUCCESS");
        h.run(&c, 310).await;
    }
    h.ecr.image(
        destination(PROD_ONLY),
        repository(WEB_REPO),
        digest(WEB_DIGEST),
        found(&[], Some(at(310))),
    );
    h.metrics.take();

    let deleted = 1000;
    let source_delete = delete_event(
        "d-src",
        at(deleted),
        &web_image(None),
        (SRC_REGION, SRC_ACCOUNT),
    );
    let s = h.run(&source_delete, deleted).await;
    assert_eq!((s.deletes, s.deletes_expected), (1, 2), "{s:?}");
    let p = h.metrics.take();
    for d in [SAME, PROD_ONLY] {
        assert_eq!(
            p.points("DeletesExpected", &to(d)),
            vec![(at(deleted), 1.0, 1.0)]
        );
    }
    assert_eq!(
        p.count("DeletesExpected", &to(CROSS)),
        0.0,
        "no delete replication there"
    );

    let arrived = delete_event("d-east", at(deleted + 20), &web_image(None), SAME);
    let s = h.run(&arrived, deleted + 20).await;
    assert_eq!(
        (
            s.deletes,
            s.deletes_seen,
            s.deletes_replicated,
            s.deletes_expected
        ),
        (1, 1, 1, 0),
        "a delete arriving, not one of its own: {s:?}"
    );
    let p = h.metrics.take();
    assert_eq!(
        p.points("DeleteReplicationLatency", &to(SAME)),
        vec![(at(deleted + 20), 20.0, 1.0)]
    );
    p.assert_mirrored_without_dimensions();

    // The first sweep after the deadline comes three hours late (a sweep behind, ECR not
    // answering): the point is dated when the absence is found, inside the alarm's range.
    let first = deleted + WINDOW_SECS + 3 * 3600;
    let s = h.run(&sweep(), first).await;
    assert_eq!((s.deletes_missing, s.deletes_replicated), (1, 0), "{s:?}");
    let p = h.metrics.take();
    assert_eq!(
        p.points("DeletesMissing", &to(PROD_ONLY)),
        vec![(at(first), 1.0, 1.0)],
        "missing, dated when found"
    );
    assert_eq!(p.count("DeletesMissing", &no_dims()), 1.0);

    h.ecr.remove_image(
        destination(PROD_ONLY),
        repository(WEB_REPO),
        digest(WEB_DIGEST),
    );
    assert_eq!(
        h.run(&sweep(), first + 60).await.deletes_replicated,
        0,
        "not due yet"
    );
    let s = h.run(&sweep(), first + WINDOW_SECS).await;
    assert_eq!((s.deletes_replicated, s.deletes_late), (1, 1), "{s:?}");
    assert_eq!(
        h.metrics.take().points("DeletesLate", &to(PROD_ONLY)),
        vec![(at(first + WINDOW_SECS), 1.0, 1.0)],
        "late, dated when found"
    );
    assert_eq!(
        h.run(&sweep(), first + 4 * WINDOW_SECS).await,
        summary(|s| s.sweeps = 1)
    );

    let lines: Vec<Value> = logs
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["message"] == "delete verdict")
        .collect();
    let verdicts: Vec<(&str, &str, bool)> = lines
        .iter()
        .map(|l| {
            (
                l["destination_region"].as_str().unwrap_or("?"),
                l["verdict"].as_str().unwrap_or("?"),
                l["confirmed_by_api"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("us-east-1", "replicated", false),
            ("ap-southeast-2", "missing", true),
            ("ap-southeast-2", "late", true)
        ]
    );
    assert_eq!(lines[0]["delete_kind"], "digest");
}

/// `prod/web` deleted by digest in us-west-2 at `deleted`, and us-east-1's DELETE of it 20 s
/// later, delivered in that order, or (`destination_first`) the DELETE first, a second before
/// the source's. The invocations' summaries, in delivery order.
async fn web_deleted_in_us_west_2_then_us_east_1(
    h: &Harness<MemoryStateStore>,
    deleted: i64,
    destination_first: bool,
) -> Vec<Summary> {
    let at_source = delete_event(
        "d-src",
        at(deleted),
        &web_image(None),
        (SRC_REGION, SRC_ACCOUNT),
    );
    let applied = delete_event("d-east", at(deleted + 20), &web_image(None), SAME);
    let order = if destination_first {
        [(applied, deleted + 20), (at_source, deleted + 21)]
    } else {
        [(at_source, deleted), (applied, deleted + 20)]
    };
    let mut summaries = Vec::new();
    for (event, now) in &order {
        summaries.push(h.run(event, *now).await);
    }
    summaries
}

/// `prod/web` deleted by digest at the source at 1000 s: us-east-1's DELETE, 20 s later, is
/// delivered before the source's (another Region, another forwarder). It is kept, and applies
/// the delete the moment the source's is read: replicated at once, with its lag, as in the other
/// order, and nothing asked of ECR about it; also when the image's push is older than what the
/// auditor holds (only another image's push has been read from the source, so its rules are
/// known). ap-southeast-2 never reports one (it still has the image): missing after the window,
/// whichever came first.
#[tokio::test]
async fn a_destinations_delete_delivered_before_the_sources_applies_it_as_in_the_other_order() {
    let deleted = 1000;
    for pushed in [true, false] {
        let mut applied_at = Vec::new();
        for destination_first in [false, true] {
            let case = format!("pushed: {pushed}, destination first: {destination_first}");
            let h = harness();
            if pushed {
                h.run(&sample("push-by-digest.json"), 300).await;
                for (id, d) in [("c-same", SAME), ("c-cross", CROSS), ("c-prod", PROD_ONLY)] {
                    let c = copy(id, 310, d, WEB_REPO, WEB_DIGEST, None, "SUCCESS");
                    h.run(&c, 310).await;
                }
            } else {
                let other = Image {
                    digest: API_DIGEST,
                    ..web_image(Some("v9"))
                };
                h.run(&push_event("p-other", at(300), &other), 300).await;
                for (id, d) in [("o-same", SAME), ("o-cross", CROSS), ("o-prod", PROD_ONLY)] {
                    let c = copy(id, 310, d, WEB_REPO, API_DIGEST, Some("v9"), "SUCCESS");
                    h.run(&c, 310).await;
                }
            }
            h.ecr.image(
                destination(PROD_ONLY),
                repository(WEB_REPO),
                digest(WEB_DIGEST),
                found(&[], Some(at(310))),
            );
            let replicated: u64 =
                web_deleted_in_us_west_2_then_us_east_1(&h, deleted, destination_first)
                    .await
                    .iter()
                    .map(|s| s.deletes_replicated)
                    .sum();
            assert_eq!(replicated, 1, "{case}");
            let p = h.metrics.take();
            assert_eq!(
                p.points("DeleteReplicationLatency", &to(SAME)),
                vec![(at(deleted + 20), 20.0, 1.0)],
                "{case}"
            );
            let asked = h.ecr.calls(Api::ImagesByDigest);
            let s = h.run(&sweep(), deleted + WINDOW_SECS + 60).await;
            assert_eq!(
                (s.deletes_missing, s.deletes_replicated),
                (1, 0),
                "{case}: {s:?}"
            );
            assert_eq!(
                h.ecr.calls(Api::ImagesByDigest),
                asked + 1,
                "{case}: ap-southeast-2 alone is asked about"
            );
            let p = h.metrics.take();
            assert_eq!(p.count("DeletesMissing", &to(PROD_ONLY)), 1.0, "{case}");
            assert_eq!(p.count("DeletesMissing", &to(SAME)), 0.0, "{case}");
            applied_at.push(h.group(SAME, WEB_DIGEST).value.group.deletes().gone_at());
        }
        assert_eq!(applied_at[0], applied_at[1], "pushed: {pushed}");
    }
}

/// Two-way rules: us-east-1 also replicates `prod/` (and its deletes) back to us-west-2, and
/// pushed the same digest itself (`east`, no copy yet). us-west-2's delete, then us-east-1's
/// DELETE replicating it: the replica withdraws us-east-1's own push (the image is gone there)
/// and owes no delete back. Read the other way round, the DELETE is at first taken for
/// us-east-1's own delete, owed in us-west-2, which the sweep finds gone there (README, "A
/// destination's DELETE comes first"); the push is withdrawn all the same.
#[tokio::test]
async fn under_two_way_rules_a_replicas_delete_withdraws_the_registrys_own_push_and_owes_nothing_back()
 {
    let back = json!({"registryId": SRC_ACCOUNT, "replicationConfiguration": {"rules": [
        {"destinations": [{"region": SRC_REGION, "registryId": SRC_ACCOUNT}],
         "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}],
         "deleteReplication": {"enabled": true}}
    ]}});
    let deleted = 1000;
    let deadline = 310 + WINDOW_SECS;
    for destination_first in [false, true] {
        let h = harness();
        h.ecr.config(registry(SRC_ACCOUNT, SAME.0), back.clone());
        h.run(&sample("push-by-digest.json"), 300).await;
        let c = copy("c-same", 305, SAME, WEB_REPO, WEB_DIGEST, None, "SUCCESS");
        h.run(&c, 305).await;
        let east = push_in(
            (SRC_ACCOUNT, SAME.0),
            "p-east",
            310,
            WEB_REPO,
            WEB_DIGEST,
            Some("east"),
        );
        h.run(&east, 310).await;
        h.metrics.take();
        web_deleted_in_us_west_2_then_us_east_1(&h, deleted, destination_first).await;
        // us-west-2's delete is owed in us-east-1 and ap-southeast-2; read first, the replica
        // is also taken to owe one back in us-west-2.
        let owed = h.metrics.take().count("DeletesExpected", &no_dims());
        assert_eq!(
            owed,
            if destination_first { 3.0 } else { 2.0 },
            "destination first: {destination_first}"
        );
        let east_push = h
            .snapshot()
            .into_iter()
            .find(|(key, _)| {
                key.source_region.as_str() == SAME.0 && key.digest.as_str() == WEB_DIGEST
            })
            .expect("us-east-1's own push, owed in us-west-2");
        let verdicts = east_push
            .1
            .value
            .verdicts(Window::DEFAULT, at(deadline + 300));
        assert_eq!(
            verdicts
                .iter()
                .map(|(e, v)| (e.tag.as_ref().map(|t| t.as_str().to_string()), v.status))
                .collect::<Vec<_>>(),
            vec![(Some("east".to_string()), Status::Withdrawn)],
            "destination first: {destination_first}"
        );
    }
}

/// A second source, eu-central-1, also replicates `prod/` (and its deletes) to us-east-1. A
/// DELETE in us-east-1 that applies us-west-2's delete is written where that delete was owed,
/// and nowhere else: no group of eu-central-1's for an image it never pushed. Read before the
/// source's delete, it is kept in both, for either source's delete to find.
#[tokio::test]
async fn a_destinations_delete_that_applies_a_delete_is_written_only_where_it_was_owed() {
    const OTHER_SOURCE: &str = "eu-central-1";
    let other_rules = json!({"registryId": SRC_ACCOUNT, "replicationConfiguration": {"rules": [
        {"destinations": [{"region": "us-east-1", "registryId": SRC_ACCOUNT}],
         "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}],
         "deleteReplication": {"enabled": true}}
    ]}});
    let deleted = 1000;
    for destination_first in [false, true] {
        let h = harness();
        h.ecr
            .config(registry(SRC_ACCOUNT, OTHER_SOURCE), other_rules.clone());
        // An image pushed in eu-central-1, so that its rules are known.
        let theirs = Image {
            source_region: OTHER_SOURCE,
            digest: API_DIGEST,
            ..web_image(Some("v7"))
        };
        h.run(&push_event("p-theirs", at(200), &theirs), 200).await;
        h.run(&sample("push-by-digest.json"), 300).await;
        web_deleted_in_us_west_2_then_us_east_1(&h, deleted, destination_first).await;
        let holding_the_delete: Vec<String> = h
            .snapshot()
            .iter()
            .filter(|(key, v)| {
                key.digest.as_str() == WEB_DIGEST && !v.value.group.deletes().seen().is_empty()
            })
            .map(|(key, _)| key.source_region.to_string())
            .collect();
        let expected = if destination_first {
            vec!["eu-central-1", "us-west-2"]
        } else {
            vec!["us-west-2"]
        };
        let mut holding = holding_the_delete;
        holding.sort();
        assert_eq!(holding, expected, "destination first: {destination_first}");
        let ours = h
            .snapshot()
            .into_iter()
            .find(|(key, _)| {
                key.digest.as_str() == WEB_DIGEST
                    && key.source_region.as_str() == SRC_REGION
                    && key.destination.region.as_str() == SAME.0
            })
            .expect("us-west-2's group in us-east-1");
        assert_eq!(
            ours.1.value.group.deletes().gone_at(),
            vec![Some(at(deleted + 20))],
            "destination first: {destination_first}"
        );
    }
}

/// `prod/web` deleted by digest at the source at 1000 s, owed in us-east-1 and ap-southeast-2.
/// us-east-1's DELETE dated past the window is delivered before one within it (a tag's delete,
/// which applies a delete by digest too): on time, never late. ap-southeast-2's only DELETE is
/// past the window: late, counted once no earlier DELETE can still come, five minutes after it,
/// at the sweep then, with nothing asked of ECR.
#[tokio::test]
async fn a_late_delete_is_counted_late_only_once_no_earlier_delete_can_still_come() {
    let h = harness();
    h.run(&sample("push-by-digest.json"), 300).await;
    for (id, d) in [("c-same", SAME), ("c-cross", CROSS), ("c-prod", PROD_ONLY)] {
        let c = copy(id, 310, d, WEB_REPO, WEB_DIGEST, None, "SUCCESS");
        h.run(&c, 310).await;
    }
    let deleted = 1000;
    let source = (SRC_REGION, SRC_ACCOUNT);
    let s = h
        .run(
            &delete_event("d-src", at(deleted), &web_image(None), source),
            deleted,
        )
        .await;
    assert_eq!(s.deletes_expected, 2, "{s:?}");
    h.metrics.take();

    let past = deleted + WINDOW_SECS + 10;
    let late_first = delete_event("d-late", at(past), &web_image(None), SAME);
    let s = h.run(&late_first, past).await;
    assert_eq!((s.deletes_replicated, s.deletes_late), (1, 0), "{s:?}");
    let in_time = delete_event("d-early", at(past - 20), &web_image(Some("v1")), SAME);
    let s = h.run(&in_time, past + 20).await;
    assert_eq!(
        (s.deletes_seen, s.deletes_replicated, s.deletes_late),
        (1, 0, 0),
        "{s:?}"
    );
    let alone = delete_event("d-prod", at(past + 100), &web_image(None), PROD_ONLY);
    let s = h.run(&alone, past + 100).await;
    assert_eq!((s.deletes_replicated, s.deletes_late), (1, 0), "{s:?}");
    h.metrics.take();
    let asked = h.ecr.calls(Api::ImagesByDigest);

    let s = h.run(&sweep(), past + 100 + 299).await;
    assert_eq!(s.deletes_late, 0, "earlier DELETEs could still come: {s:?}");
    let s = h.run(&sweep(), past + 100 + 300).await;
    assert_eq!(s.deletes_late, 1, "{s:?}");
    let p = h.metrics.take();
    assert_eq!(
        p.points("DeletesLate", &to(PROD_ONLY)),
        vec![(at(past + 100 + 300), 1.0, 1.0)],
        "late, dated when found (it pages)"
    );
    assert_eq!(p.count("DeletesLate", &to(SAME)), 0.0, "applied in time");
    let s = h.run(&sweep(), past + 4 * WINDOW_SECS).await;
    assert_eq!(s.deletes_late, 0, "counted once: {s:?}");
    assert_eq!(
        h.ecr.calls(Api::ImagesByDigest),
        asked,
        "nothing to ask ECR"
    );
}

/// `prod/api` pushed as `v1` and `latest`. Removing `latest` leaves `v1`: only the tag must go,
/// and the destination that lost it is right. Removing `v1` then removes the last tag: the image
/// must go, and the destination that kept it untagged is missing the delete, unless the source
/// still has the image (a tag the auditor never saw), which the sweep asks.
#[tokio::test]
async fn a_tag_removal_needs_the_tag_gone_and_a_last_tag_removal_the_image_gone() {
    const API: &str = "prod/api";
    let h = harness();
    let image = |tag| Image {
        source_account: SRC_ACCOUNT,
        source_region: SRC_REGION,
        repository: API,
        digest: API_DIGEST,
        tag,
    };
    h.run(&push_event("p-v1", at(0), &image(Some("v1"))), 0)
        .await;
    h.run(&push_event("p-latest", at(5), &image(Some("latest"))), 5)
        .await;
    let in_prod = |tags: &[&str]| {
        h.ecr.image(
            destination(PROD_ONLY),
            repository(API),
            digest(API_DIGEST),
            found(tags, Some(at(8))),
        )
    };
    in_prod(&["v1"]);
    let from_src = (SRC_REGION, SRC_ACCOUNT);
    h.run(
        &delete_event("d-latest", at(100), &image(Some("latest")), from_src),
        100,
    )
    .await;
    h.run(
        &delete_event("d-v1", at(200), &image(Some("v1")), from_src),
        200,
    )
    .await;
    let kinds: Vec<(Option<String>, &str)> = h
        .group(PROD_ONLY, API_DIGEST)
        .value
        .group
        .deletes()
        .expectations()
        .iter()
        .map(|e| (e.tag.as_ref().map(ToString::to_string), e.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (Some("latest".into()), "tag"),
            (Some("v1".into()), "last_tag")
        ]
    );
    h.metrics.take();

    // At the first sweep ap-southeast-2 still has the image, tagged v1: `latest` is gone
    // (applied), `v1` is not (missing). us-east-1 never had it: both are applied there.
    let s = h.run(&sweep(), 200 + WINDOW_SECS + 1).await;
    assert_eq!((s.deletes_replicated, s.deletes_missing), (3, 1), "{s:?}");
    let p = h.metrics.take();
    assert_eq!(p.count("DeletesReplicated", &to(PROD_ONLY)), 1.0);
    assert_eq!(p.count("DeletesMissing", &to(PROD_ONLY)), 1.0);

    // Untagged there now, and the source still has the image (it had a tag the auditor never
    // saw): the destination is right.
    in_prod(&[]);
    h.ecr.image(
        src(),
        repository(API),
        digest(API_DIGEST),
        found(&["old-build"], Some(at(0))),
    );
    let s = h.run(&sweep(), 200 + 2 * WINDOW_SECS + 1).await;
    assert_eq!((s.deletes_replicated, s.deletes_late), (1, 1), "{s:?}");
    assert_eq!(
        h.ecr.calls(Api::ImagesByDigest),
        4 + 2,
        "one per delete and destination, then the destination and the source for v1"
    );
}
