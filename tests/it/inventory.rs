//! The Lambda's scheduled inventory reconciliation ([`Auditor::invoke`] with
//! `{"action": "inventory"}`) over the in-memory store and a scripted registry
//! ([`FakeInventory`]): a pass resumed across invocations, its gauges, the lease, a registry
//! that cannot be read, and the audit of pushes whose events never came, counted exactly like
//! pushes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ecr_replication_auditor::adapters::fake_inventory::{FakeInventory, InventoryApi};
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::app::handler::InventorySummary;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor, Summary};
use ecr_replication_auditor::app::inventory::{InventorySettings, LOST_PUSH_HORIZON};
use ecr_replication_auditor::domain::drift::{ImageRecord, ImageState, InventoryPass};
use ecr_replication_auditor::domain::signals::ALL_DESTINATIONS;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::inventory::InventoryPasses;
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryError};
use ecr_replication_auditor::ports::state::Versioned;
use serde_json::{Value, json};

use crate::support::events::{Image, copy_event, push_event, sweep};
use crate::support::ids::{at, digest, registry, repository, synthetic_digest, tag};
use crate::support::logs;
use crate::support::metrics::{Dims, Published, RecordingEvents, RecordingSink};

const SRC_ACCOUNT: &str = "111122223333";
const SRC_REGION: &str = "us-west-2";
/// (Region, account) of the same-account destination...
const SAME: (&str, &str) = ("us-east-1", "111122223333");
/// ...and of the cross-account one.
const CROSS: (&str, &str) = ("eu-west-1", "444455556666");

type TestAuditor =
    Auditor<MemoryStateStore, FakeInventory, RecordingSink, RecordingSink, RecordingEvents>;

struct World {
    fake: FakeInventory,
    auditor: TestAuditor,
    metrics: RecordingSink,
    events: RecordingEvents,
    settings: InventorySettings,
}

fn src() -> RegistryAt {
    registry(SRC_ACCOUNT, SRC_REGION)
}

fn dest(d: (&str, &str)) -> RegistryAt {
    registry(d.1, d.0)
}

/// The dimensions of a gauge of `d`.
fn to(d: (&str, &str)) -> Dims {
    vec![
        ("SourceRegion", SRC_REGION.to_owned()),
        ("DestinationRegion", d.0.to_owned()),
        ("DestinationAccount", d.1.to_owned()),
    ]
}

/// The source's one rule names both destinations for every repository.
fn world() -> World {
    let fake = FakeInventory::default();
    fake.registry().config(
        src(),
        json!({"registryId": SRC_ACCOUNT, "replicationConfiguration": {"rules": [
            {"destinations": [
                {"region": SAME.0, "registryId": SAME.1},
                {"region": CROSS.0, "registryId": CROSS.1}
            ]}
        ]}}),
    );
    let metrics = RecordingSink::default();
    let events = RecordingEvents::default();
    let auditor = Auditor::new(
        MemoryStateStore::default(),
        fake.clone(),
        metrics.clone(),
        RecordingSink::default(),
        AuditSettings {
            window: Window::DEFAULT,
            repository_dimension: false,
            config_cache_ms: 300_000,
            history_retention: Window::hours(24 * 90),
        },
    )
    .with_events(events.clone());
    World {
        fake,
        auditor,
        metrics,
        events,
        settings: InventorySettings {
            sources: vec![src()],
            since: None,
            concurrency: 2,
        },
    }
}

/// An image pushed `secs` after t0.
fn image(n: u16, tags: &[&str], secs: i64) -> ImageRecord {
    ImageRecord {
        digest: digest(&synthetic_digest(n)),
        tags: tags.iter().map(|t| tag(t)).collect(),
        pushed_at: Some(at(secs)),
        state: ImageState::Active,
    }
}

impl World {
    /// `name` in the source and both destinations, with `images` in the source, each copied to
    /// both destinations (a few seconds later).
    fn replicated(&self, name: &str, images: &[ImageRecord]) {
        self.replicated_to(name, images, &[SAME, CROSS]);
    }

    /// [`World::replicated`], with copies in `copied_to` only.
    fn replicated_to(&self, name: &str, images: &[ImageRecord], copied_to: &[(&str, &str)]) {
        for registry in [src(), dest(SAME), dest(CROSS)] {
            self.fake
                .repository(&registry, &repository(name), Default::default());
        }
        for i in images {
            self.fake.image(&src(), &repository(name), i.clone());
            for d in copied_to {
                let copy = ImageRecord {
                    pushed_at: i
                        .pushed_at
                        .map(|t| Timestamp::from_millis(t.millis() + 5_000)),
                    ..i.clone()
                };
                self.fake.image(&dest(*d), &repository(name), copy);
            }
        }
    }

    async fn inventory(&self, payload: Value, now: Timestamp, budget: &Budget) -> Summary {
        self.auditor
            .invoke(&payload, now, &self.settings, &|| budget.left())
            .await
            .expect("the inventory invocation succeeds")
    }
}

fn run() -> Value {
    json!({"action": "inventory"})
}

fn resume() -> Value {
    json!({"action": "inventory", "resume_only": true})
}

/// The time an invocation has: a minute for its first `calls` questions, then none (each
/// repository asks once before it is started, and the lease once).
struct Budget(AtomicUsize);

impl Budget {
    fn calls(calls: usize) -> Budget {
        Budget(AtomicUsize::new(calls))
    }

    fn plenty() -> Budget {
        Budget::calls(usize::MAX)
    }

    fn left(&self) -> Duration {
        let before = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .unwrap_or(0);
        if before > 0 {
            Duration::from_secs(60)
        } else {
            Duration::ZERO
        }
    }
}

fn of(summary: &Summary) -> &InventorySummary {
    summary.inventory.as_ref().expect("an inventory summary")
}

/// The gauge `name` of `d`, as published: (value) per data point.
fn gauge(published: &Published, name: &str, d: (&str, &str)) -> Vec<f64> {
    published
        .points(name, &to(d))
        .into_iter()
        .map(|(_, v, _)| v)
        .collect()
}

#[tokio::test]
async fn a_pass_too_large_for_one_invocation_resumes_where_it_stopped_and_publishes_its_gauges_at_the_end()
 {
    let w = world();
    for r in 0..10u16 {
        w.replicated(&format!("team/app{r:02}"), &[image(r, &["v1"], 0)]);
    }
    // team/app07 lost its copy in eu-west-1.
    w.fake.remove_image(
        &dest(CROSS),
        &repository("team/app07"),
        &digest(&synthetic_digest(7)),
    );
    let now = at(7200);

    // Each invocation has time for three repositories (and its lease).
    let mut done = Vec::new();
    let mut payload = run();
    loop {
        let summary = w.inventory(payload, now, &Budget::calls(4)).await;
        let s = of(&summary).clone();
        done.push((s.step.clone(), s.repositories, s.finished));
        if s.finished {
            break;
        }
        // (The images' pushes, never seen as events, are audited as they are met.)
        let names = w.metrics.take().names();
        assert!(
            !names.contains("ImagesMissingAtDestination"),
            "no gauge before the pass ends: {names:?}"
        );
        payload = resume();
        assert!(done.len() < 10, "the pass never ends: {done:?}");
    }
    assert_eq!(
        done,
        vec![
            ("started".into(), 3, false),
            ("resumed".into(), 3, false),
            ("resumed".into(), 3, false),
            ("resumed".into(), 1, true),
        ]
    );
    // Each source repository was listed exactly once across the invocations, and each
    // destination's once per repository: nothing compared twice.
    assert_eq!(w.fake.calls(InventoryApi::DescribeImages), 10 * 3);

    let published = w.metrics.take();
    assert_eq!(
        gauge(&published, "ImagesMissingAtDestination", CROSS),
        [1.0]
    );
    assert_eq!(gauge(&published, "ImagesMissingAtDestination", SAME), [0.0]);
    for name in [
        "StaleTagsAtDestination",
        "ArchivedCopies",
        "NotDeletedAtDestination",
        "RepositorySettingsDrift",
    ] {
        assert_eq!(gauge(&published, name, SAME), [0.0], "{name}");
        assert_eq!(gauge(&published, name, CROSS), [0.0], "{name}");
    }
    published.assert_mirrored_without_dimensions();
    let pass = w.auditor.store().load_pass().await.unwrap().value.unwrap();
    assert_eq!(pass.invocations, 4);
    assert_eq!(pass.finished_at, Some(now));
    assert_eq!(
        pass.totals.values().map(|t| t.repositories).sum::<u64>(),
        20
    );

    // Finished: the resume schedule finds nothing to do, and asks ECR nothing.
    let calls = w.fake.calls(InventoryApi::DescribeRepositories);
    let idle = w.inventory(resume(), at(7500), &Budget::plenty()).await;
    assert_eq!(of(&idle).step, "idle");
    assert_eq!(w.fake.calls(InventoryApi::DescribeRepositories), calls);
}

#[tokio::test]
async fn every_finding_is_one_log_line_and_the_pass_ends_with_a_summary_line() {
    let w = world();
    w.replicated("team/api", &[image(1, &["v1"], 0), image(2, &["v2"], 10)]);
    w.fake.remove_image(
        &dest(CROSS),
        &repository("team/api"),
        &digest(&synthetic_digest(2)),
    );
    let logs = logs::capture();
    w.inventory(run(), at(7200), &Budget::plenty()).await;

    let lines: Vec<Value> = logs
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let findings: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "inventory finding")
        .collect();
    assert_eq!(findings.len(), 1, "{lines:#?}");
    let f = findings[0];
    assert_eq!(f["kind"], "missing");
    assert_eq!(f["repository"], "team/api");
    assert_eq!(f["image_tag"], "v2");
    assert_eq!(f["destination_account"], CROSS.1);
    assert_eq!(f["destination_region"], CROSS.0);
    let end: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "inventory pass finished")
        .collect();
    assert_eq!(end.len(), 1);
    assert_eq!(
        (end[0]["repositories"].as_u64(), end[0]["missing"].as_u64()),
        (Some(2), Some(1))
    );
}

#[tokio::test]
async fn a_push_whose_event_was_lost_is_audited_from_the_inventory_and_counted_like_any_push() {
    let w = world();
    // v1 reached us-east-1 only; no event of its push or copy ever reached the auditor.
    let pushed = image(1, &["v1"], 0);
    w.replicated_to("team/api", std::slice::from_ref(&pushed), &[SAME]);
    let logs = logs::capture();
    let now = at(7200);

    let summary = w.inventory(run(), now, &Budget::plenty()).await;
    assert_eq!(of(&summary).lost_pushes, 1);
    let audited = logs
        .text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["trigger"] == "inventory")
        .expect("the lost push's line");
    assert_eq!(audited["image_tag"], "v1");
    assert_eq!(audited["pushed_at"], at(0).to_string());
    let published = w.metrics.take();
    // Expected in both destinations, dated at its push, as an event would have made it.
    for d in [SAME, CROSS] {
        assert_eq!(
            published.points("ReplicationsExpected", &to(d)),
            [(at(0), 1.0, 1.0)],
            "{d:?}"
        );
    }

    // The sweep confirms it like any push (its window is long past): the copy in us-east-1 is
    // there, the one in eu-west-1 is missing.
    w.auditor.handle(&sweep(), now).await.unwrap();
    let swept = w.metrics.take();
    assert_eq!(swept.count("ReplicationsCompleted", &to(SAME)), 1.0);
    assert_eq!(swept.count("ReplicationsMissing", &to(CROSS)), 1.0);
    // Its verdict lines say how the auditor learned of it.
    let verdicts: Vec<(String, String)> = logs
        .text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["message"] == "replication verdict")
        .map(|l| {
            (
                l["destination_region"].as_str().unwrap_or("?").to_owned(),
                format!("{} {}", l["trigger"], l["verdict"]),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (SAME.0.to_owned(), "\"inventory\" \"replicated\"".to_owned()),
            (CROSS.0.to_owned(), "\"inventory\" \"missing\"".to_owned()),
        ]
    );

    // The next pass finds it known: nothing is audited or counted again...
    let again = w.inventory(run(), at(30_000), &Budget::plenty()).await;
    assert_eq!(of(&again).lost_pushes, 0);
    assert_eq!(
        w.metrics.take().count("ReplicationsExpected", &to(SAME)),
        0.0
    );
    // ...and neither is its push event, should it come after all.
    let late = push_event(
        "4f5ec4d0-8a3b-4f2c-9d1a-0a1b2c3d4e99",
        at(0),
        &Image {
            source_account: SRC_ACCOUNT,
            source_region: SRC_REGION,
            repository: "team/api",
            digest: pushed.digest.as_str(),
            tag: Some("v1"),
        },
    );
    let summary = w.auditor.handle(&late, at(30_100)).await.unwrap();
    assert_eq!(summary.expected, 0);
    assert_eq!(summary.repeats, 1);
}

/// An image pushed before the lost-push horizon (13 days: CloudWatch takes no data point
/// older than two weeks, and a lost push's counts are dated at its push) is not audited as a
/// lost push, however long the history is kept; one just inside it is.
#[tokio::test]
async fn a_push_older_than_the_lost_push_horizon_is_not_audited_and_one_just_inside_is() {
    let w = world();
    let now_secs = 20 * 86_400;
    let horizon = LOST_PUSH_HORIZON.millis() / 1000;
    let old = image(1, &["old"], now_secs - horizon - 60);
    let inside = image(2, &["inside"], now_secs - horizon + 3600);
    w.replicated_to("team/api", &[old, inside.clone()], &[SAME]);
    let logs = logs::capture();
    let summary = w.inventory(run(), at(now_secs), &Budget::plenty()).await;
    assert_eq!(of(&summary).lost_pushes, 1);
    let audited: Vec<Value> = logs
        .text()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["trigger"] == "inventory")
        .collect();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["image_tag"], "inside");
    assert_eq!(
        audited[0]["pushed_at"],
        inside.pushed_at.unwrap().to_string()
    );
}

/// A push whose event was lost but whose copies' events came: the inventory invocation that
/// finds it completes both destinations there and then, and announces it everywhere, saying
/// `inventory`.
#[tokio::test]
async fn a_lost_push_whose_copies_had_arrived_is_announced_by_the_inventory_invocation() {
    let w = world();
    let pushed = image(1, &["v1"], 0);
    w.replicated_to("team/api", std::slice::from_ref(&pushed), &[SAME, CROSS]);
    let img = Image {
        source_account: SRC_ACCOUNT,
        source_region: SRC_REGION,
        repository: "team/api",
        digest: pushed.digest.as_str(),
        tag: Some("v1"),
    };
    for (id, d) in [("c-same", SAME), ("c-cross", CROSS)] {
        w.auditor
            .handle(&copy_event(id, at(5), &img, d, "SUCCESS"), at(5))
            .await
            .unwrap();
    }
    assert_eq!(w.events.take_ids(), vec![], "no push known yet");

    let summary = w.inventory(run(), at(7200), &Budget::plenty()).await;
    assert_eq!(of(&summary).lost_pushes, 1);
    let events = w.events.take();
    let announced: Vec<_> = events
        .iter()
        .filter(|e| e.detail_type == ALL_DESTINATIONS)
        .map(|e| (e.detail.trigger, e.detail.destinations.len()))
        .collect();
    assert_eq!(announced, [("inventory", 2)], "{events:?}");
}

#[tokio::test]
async fn images_before_inventory_since_or_within_the_window_are_neither_expected_nor_audited() {
    let mut w = world();
    w.settings.since = Some(at(1000));
    w.fake
        .repository(&src(), &repository("team/api"), Default::default());
    // Before --since, and pushed a minute ago: none owed to anyone yet.
    w.fake
        .image(&src(), &repository("team/api"), image(1, &["old"], 0));
    w.fake
        .image(&src(), &repository("team/api"), image(2, &["new"], 7140));
    let summary = w.inventory(run(), at(7200), &Budget::plenty()).await;
    assert_eq!(of(&summary).findings, 0);
    assert_eq!(of(&summary).lost_pushes, 0);
    let pass = w.auditor.store().load_pass().await.unwrap().value.unwrap();
    let total: u64 = pass.totals.values().map(|t| t.expected).sum();
    assert_eq!(total, 0);
    assert_eq!(
        pass.totals.values().map(|t| t.not_expected).sum::<u64>(),
        2,
        "one image, two destinations"
    );
}

#[tokio::test]
async fn an_invocation_that_finds_the_pass_held_by_another_leaves_it_alone() {
    let w = world();
    w.replicated("team/api", &[image(1, &["v1"], 0)]);
    let mut held = InventoryPass::new(at(0));
    held.lease_until = Some(at(120));
    assert!(
        w.auditor
            .store()
            .save_pass(&Versioned::new(0, held))
            .await
            .unwrap()
    );
    for payload in [run(), resume()] {
        let summary = w.inventory(payload, at(60), &Budget::plenty()).await;
        assert_eq!(of(&summary).step, "busy");
    }
    assert_eq!(w.fake.calls(InventoryApi::DescribeRepositories), 0);
    // Once the lease has run out, the next resume takes the pass over.
    let summary = w.inventory(resume(), at(121), &Budget::plenty()).await;
    assert_eq!(of(&summary).step, "resumed");
    assert!(of(&summary).finished);
}

#[tokio::test]
async fn a_registry_that_cannot_be_read_stops_the_pass_there_and_a_later_invocation_finishes_it() {
    let w = world();
    for r in 0..4u16 {
        w.replicated(&format!("team/app{r}"), &[image(r, &["v1"], 0)]);
    }
    w.fake.fail(
        InventoryApi::GetRepositoryPolicy,
        &dest(CROSS),
        Some(RegistryError::Transient(
            "GetRepositoryPolicy in 444455556666/eu-west-1: ThrottlingException".into(),
        )),
    );
    let budget = Budget::plenty();
    let err = w
        .auditor
        .invoke(&run(), at(7200), &w.settings, &|| budget.left())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("444455556666/eu-west-1"), "{err}");
    let pass = w.auditor.store().load_pass().await.unwrap().value.unwrap();
    assert_eq!(pass.finished_at, None);
    assert_eq!(pass.lease_until, None, "the lease is given back");
    assert!(
        !w.metrics
            .take()
            .names()
            .contains("ImagesMissingAtDestination"),
        "no gauges from half a pass"
    );

    w.fake
        .fail(InventoryApi::GetRepositoryPolicy, &dest(CROSS), None);
    let summary = w.inventory(resume(), at(7300), &Budget::plenty()).await;
    assert!(of(&summary).finished);
    let pass = w.auditor.store().load_pass().await.unwrap().value.unwrap();
    // Every repository counted once per destination, whatever the first invocation had done.
    for tally in pass.totals.values() {
        assert_eq!(tally.repositories, 4);
    }
}

#[tokio::test]
async fn a_copy_the_history_knows_of_in_a_two_way_setup_is_not_taken_for_a_lost_push() {
    let mut w = world();
    // us-east-1 replicates back to us-west-2 too, and is reconciled as a source as well.
    w.fake.registry().config(
        dest(SAME),
        json!({"registryId": SAME.1, "replicationConfiguration": {"rules": [
            {"destinations": [{"region": SRC_REGION, "registryId": SRC_ACCOUNT}]}
        ]}}),
    );
    w.settings.sources.push(dest(SAME));
    let pushed = image(1, &["v1"], 0);
    w.replicated("team/api", std::slice::from_ref(&pushed));
    // The push in us-west-2 reached the auditor as an event.
    let push = push_event(
        "7c1e22aa-5b6d-4e8f-a012-3456789abc01",
        at(0),
        &Image {
            source_account: SRC_ACCOUNT,
            source_region: SRC_REGION,
            repository: "team/api",
            digest: pushed.digest.as_str(),
            tag: Some("v1"),
        },
    );
    w.auditor.handle(&push, at(1)).await.unwrap();
    w.metrics.take();

    let summary = w.inventory(run(), at(7200), &Budget::plenty()).await;
    // The image in us-east-1 is the copy of that push, not a push of its own.
    assert_eq!(of(&summary).lost_pushes, 0);
    assert_eq!(
        w.metrics.take().count("ReplicationsExpected", &to(SAME)),
        0.0
    );
}

#[tokio::test]
async fn the_lambda_routes_anything_but_an_inventory_request_to_the_handler() {
    let w = world();
    let summary = w.inventory(sweep(), at(0), &Budget::plenty()).await;
    assert_eq!(summary.sweeps, 1);
    assert_eq!(summary.inventory, None);
    let shared = Arc::new(w);
    let summary = shared.inventory(run(), at(0), &Budget::plenty()).await;
    assert_eq!(summary.sweeps, 0);
    assert_eq!(of(&summary).step, "started");
}
