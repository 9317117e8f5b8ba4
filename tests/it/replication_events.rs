//! The replication events the Lambda hands out: each published once per fact, whatever is
//! delivered again or raced, and nothing for a copy still on its way.

use std::sync::atomic::Ordering;

use ecr_replication_auditor::adapters::fake::{Api, FakeRegistry};
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor, Summary};
use ecr_replication_auditor::domain::confirm::{
    ImageFound, ImageStatus, ReplicationState, ReplicationStatus,
};
use ecr_replication_auditor::domain::ids::{AccountId, Region};
use ecr_replication_auditor::domain::ledger::{Finding, Found, Owed};
use ecr_replication_auditor::domain::signals;
use ecr_replication_auditor::domain::signals::{
    AFTER_THRESHOLD, ALL_DESTINATIONS, DELETE_MISSED_THRESHOLD, FAILED, MISSED_THRESHOLD,
    TAG_NOT_APPLIED,
};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::ports::registry::RegistryError;
use ecr_replication_auditor::ports::state::StateStore;
use serde_json::{Value, json};

use crate::support::events::{
    Image, copy_event, delete_event, push_event, restore_event, sample, sweep,
};
use crate::support::ids::{at, digest, group_key, registry, repository, tag};
use crate::support::logs;
use crate::support::metrics::{RecordingEvents, RecordingSink, no_dims};
use crate::support::stores::RacingStore;

const SOURCE: &str = "111122223333";
const REPO: &str = "team/api";
const DIGEST: &str = "sha256:efd0f9b95ee5a2da876ec1250b0f949bb6c3716d368f77e179212a1d91b62c38";
const SAME: (&str, &str) = ("us-east-1", SOURCE);
const CROSS: (&str, &str) = ("eu-west-1", "444455556666");
const WINDOW: i64 = 1800;

struct World<S = RacingStore> {
    auditor: Auditor<S, FakeRegistry, RecordingSink, RecordingSink, RecordingEvents>,
    ecr: FakeRegistry,
    events: RecordingEvents,
    metrics: RecordingSink,
}

fn world() -> World {
    world_on(RacingStore::default())
}

fn world_on<S: StateStore + Sync>(store: S) -> World<S> {
    let ecr = FakeRegistry::default();
    ecr.config(
        registry(SOURCE, "us-west-2"),
        sample("registry/us-west-2.json"),
    );
    let events = RecordingEvents::default();
    let metrics = RecordingSink::default();
    let auditor = Auditor::new(
        store,
        ecr.clone(),
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
        auditor,
        ecr,
        events,
        metrics,
    }
}

impl<S: StateStore + Sync> World<S> {
    async fn run(&self, payload: &Value, secs: i64) -> Summary {
        self.auditor.handle(payload, at(secs)).await.unwrap()
    }
}

fn image(tag: Option<&str>) -> Image<'_> {
    Image {
        source_account: SOURCE,
        source_region: "us-west-2",
        repository: REPO,
        digest: DIGEST,
        tag,
    }
}

fn push() -> Value {
    push_event("push", at(0), &image(Some("v1")))
}

fn copy(id: &str, secs: i64, d: (&str, &str), tag: Option<&str>, result: &str) -> Value {
    copy_event(id, at(secs), &image(tag), d, result)
}

#[tokio::test]
async fn replicated_to_all_destinations_is_published_once_after_the_last_copy_and_not_before() {
    let w = world();
    w.run(&push(), 0).await;
    w.run(&copy("c-same", 7, SAME, Some("v1"), "SUCCESS"), 7)
        .await;
    assert_eq!(w.events.take_ids(), vec![], "one destination still waits");

    w.run(&copy("c-cross", 2000, CROSS, Some("v1"), "SUCCESS"), 2000)
        .await;
    let events = w.events.take();
    let kinds: Vec<_> = events.iter().map(|e| e.detail_type).collect();
    assert_eq!(kinds, [ALL_DESTINATIONS]);
    let all = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(
        all["verdict-id"],
        format!("{SOURCE}:us-west-2:{REPO}@{DIGEST}:v1#all-destinations")
    );
    assert_eq!(
        all["destinations"],
        json!([
            {"destination-account": SOURCE, "destination-region": "us-east-1",
             "replicated-at": at(7).to_string(), "latency-seconds": 7.0, "on-time": true},
            {"destination-account": "444455556666", "destination-region": "eu-west-1",
             "replicated-at": at(2000).to_string(), "latency-seconds": 2000.0, "on-time": false},
        ])
    );
    assert_eq!(all["image-tag"], "v1");
    // After the threshold once no earlier copy can still come in (five minutes after the copy).
    w.run(&sweep(), 2299).await;
    assert_eq!(w.events.take_ids(), vec![]);
    w.run(&sweep(), 2300).await;
    assert_eq!(
        w.events.take_ids(),
        vec![(
            AFTER_THRESHOLD,
            format!("{SOURCE}:us-west-2:{REPO}@{DIGEST}:v1>444455556666:eu-west-1#after-threshold")
        )]
    );

    // Delivered again, swept, nothing new.
    w.run(&copy("c-cross", 2000, CROSS, Some("v1"), "SUCCESS"), 2010)
        .await;
    w.run(&sweep(), 4000).await;
    assert_eq!(w.events.take_ids(), vec![]);
}

/// `PutEvents` failing (after the SDK's retries) does not lose the events: the invocation's
/// counts are stored, so its retry would find nothing to publish; the events are parked in the
/// state store instead, and the next sweep that `PutEvents` answers publishes them, once.
#[tokio::test]
async fn events_put_events_refuses_are_parked_and_published_once_by_a_later_sweep() {
    let w = world_on(MemoryStateStore::default());
    w.run(&push(), 0).await;
    w.run(&copy("c-same", 7, SAME, Some("v1"), "SUCCESS"), 7)
        .await;
    w.events.refuse(1);
    // Delivered five minutes after its time: late at once, as no earlier copy can still come.
    let late = copy("c-cross", 2000, CROSS, Some("v1"), "SUCCESS");
    w.metrics.take();
    let s = w.run(&late, 2300).await;
    assert_eq!((s.completed, s.late, s.events_parked), (1, 1, 2), "{s:?}");
    assert_eq!(w.events.take_ids(), vec![], "PutEvents refused them");
    assert_eq!(
        w.metrics.take().points("EventsParked", &no_dims()),
        vec![(at(2300), 2.0, 1.0)],
        "counted as they are parked"
    );

    let s = w.run(&late, 2310).await;
    assert_eq!(
        (s.repeats, s.events_parked),
        (1, 0),
        "delivered again: {s:?}"
    );

    w.events.refuse(1);
    w.metrics.take();
    let s = w.run(&sweep(), 2360).await;
    assert_eq!(
        (s.events_republished, s.events_parked),
        (0, 2),
        "refused again, still parked"
    );
    assert_eq!(
        w.metrics.take().points("EventsParked", &no_dims()),
        vec![(at(2360), 2.0, 1.0)],
        "counted again while publishing is broken"
    );

    let s = w.run(&sweep(), 2420).await;
    assert_eq!((s.events_republished, s.events_parked), (2, 0));
    assert_eq!(w.metrics.take().count("EventsParked", &no_dims()), 0.0);
    let ids = w.events.take_ids();
    let image = format!("{SOURCE}:us-west-2:{REPO}@{DIGEST}:v1");
    assert_eq!(
        ids,
        vec![
            (
                AFTER_THRESHOLD,
                format!("{image}>444455556666:eu-west-1#after-threshold")
            ),
            (ALL_DESTINATIONS, format!("{image}#all-destinations")),
        ]
    );

    let s = w.run(&sweep(), 2480).await;
    assert_eq!(
        (s.events_republished, w.events.take_ids()),
        (0, vec![]),
        "published once"
    );
}

/// `PutEvents` takes ten entries a call: when the second call of a sweep fails, the ten the
/// first took are not parked (nor sent again), only the rest.
#[tokio::test]
async fn only_what_put_events_did_not_take_is_parked_and_sent_again() {
    let w = world();
    let tags = ["v1", "v2", "v3", "v4", "v5", "v6"];
    for (n, t) in tags.iter().enumerate() {
        let at_secs = i64::try_from(n).unwrap();
        w.run(
            &push_event(&format!("p-{t}"), at(at_secs), &image(Some(t))),
            at_secs,
        )
        .await;
    }
    w.events.refuse_after(1, 1);
    let s = w.run(&sweep(), WINDOW + 60).await;
    assert_eq!((s.missing, s.events_parked), (12, 2), "{s:?}");
    let first = w.events.take_ids();
    assert_eq!(first.len(), 10, "{first:?}");

    let s = w.run(&sweep(), WINDOW + 120).await;
    assert_eq!(s.events_republished, 2, "{s:?}");
    let rest = w.events.take_ids();
    assert_eq!(rest.len(), 2, "{rest:?}");
    let mut all: Vec<_> = first.into_iter().chain(rest).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 12, "each once: {all:?}");
    assert!(all.iter().all(|(kind, _)| *kind == MISSED_THRESHOLD));
}

/// A store that refuses to park them too (DynamoDB failing as well): the invocation fails,
/// each event is in the log, whole, to be sent by hand.
#[tokio::test]
async fn events_that_can_be_neither_published_nor_parked_fail_the_invocation_and_are_logged() {
    let logs = logs::capture();
    let w = world();
    w.auditor
        .store()
        .refuse_parking
        .store(true, Ordering::SeqCst);
    w.run(&push(), 0).await;
    w.run(&copy("c-same", 7, SAME, Some("v1"), "SUCCESS"), 7)
        .await;
    w.events.refuse(1);
    let failed = w
        .auditor
        .handle(&copy("c-cross", 9, CROSS, Some("v1"), "SUCCESS"), at(9))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let logged: Vec<Value> = logs
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l["message"] == "replication event not published")
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["detail_type"], ALL_DESTINATIONS);
}

/// A restore is owed a copy in every destination like a push: once they all have it, its own
/// all-destinations event, saying `restore`, with an id naming the restore's time.
#[tokio::test]
async fn a_restore_copied_everywhere_is_announced_once_as_a_restore() {
    let w = world();
    w.run(&push(), 0).await;
    w.run(&copy("c-same", 7, SAME, Some("v1"), "SUCCESS"), 7)
        .await;
    w.run(&copy("c-cross", 9, CROSS, Some("v1"), "SUCCESS"), 9)
        .await;
    assert_eq!(w.events.take().len(), 1, "the push's own");

    let restored = 86_400;
    w.run(&restore_event("r-1", at(restored), &image(None)), restored)
        .await;
    let same = copy("r-same", restored + 30, SAME, Some("v1"), "SUCCESS");
    w.run(&same, restored + 30).await;
    assert_eq!(w.events.take_ids(), vec![], "one destination still waits");
    let cross = copy("r-cross", restored + 40, CROSS, Some("v1"), "SUCCESS");
    w.run(&cross, restored + 40).await;
    let events = w.events.take();
    assert_eq!(events.len(), 1, "{events:?}");
    let all = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(events[0].detail_type, ALL_DESTINATIONS);
    assert_eq!(all["trigger"], "restore");
    assert_eq!(all["pushed-at"], at(restored).to_string());
    assert_eq!(
        all["verdict-id"],
        format!(
            "{SOURCE}:us-west-2:{REPO}@{DIGEST}:-#all-destinations@{}",
            at(restored)
        )
    );
    let lags: Vec<&Value> = all["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["latency-seconds"])
        .collect();
    assert_eq!(lags, [&json!(30.0), &json!(40.0)], "from the restore");

    w.run(&cross, restored + 50).await;
    w.run(&sweep(), restored + 4000).await;
    assert_eq!(w.events.take_ids(), vec![], "once");
}

#[tokio::test]
async fn two_invocations_completing_the_last_two_destinations_at_once_publish_it_once() {
    for _ in 0..5 {
        let w = world();
        w.run(&push(), 0).await;
        let same = copy("c-same", 7, SAME, Some("v1"), "SUCCESS");
        let cross = copy("c-cross", 9, CROSS, Some("v1"), "SUCCESS");
        let (a, b) = tokio::join!(
            w.auditor.handle(&same, at(10)),
            w.auditor.handle(&cross, at(10))
        );
        a.unwrap();
        b.unwrap();
        let all: Vec<_> = w
            .events
            .take_ids()
            .into_iter()
            .filter(|(kind, _)| *kind == ALL_DESTINATIONS)
            .collect();
        assert_eq!(all.len(), 1, "{all:?}");
    }
}

#[tokio::test]
async fn each_problem_is_published_once_as_its_own_event() {
    let w = world();
    w.ecr.tag(
        registry("444455556666", "eu-west-1"),
        repository(REPO),
        tag("v1"),
        digest("sha256:0ld0000000000000000000000000000000000000000000000000000000000000"),
    );
    // ECR's FAILED event has no reason; its status API has, for each destination.
    w.ecr.statuses(
        registry(SOURCE, "us-west-2"),
        repository(REPO),
        digest(DIGEST),
        vec![
            status(CROSS, ReplicationState::InProgress, None),
            // ECR may leave out the registry: the Region names the destination then.
            ReplicationStatus {
                registry: None,
                ..status(SAME, ReplicationState::Failed, Some("REPLICATION_FAILURE"))
            },
        ],
    );
    w.run(&push(), 0).await;
    // us-east-1: a FAILED result; eu-west-1: a copy without its tag, under a stale tag.
    w.run(&copy("f", 5, SAME, Some("v1"), "FAILED"), 5).await;
    w.run(&copy("u", 9, CROSS, None, "SUCCESS"), 9).await;
    w.run(&copy("u", 9, CROSS, None, "SUCCESS"), 20).await;
    let events = w.events.take();
    assert_eq!(
        events.len(),
        1,
        "the tagged FAILED result at once: {events:?}"
    );
    assert_eq!(events[0].detail_type, FAILED);
    assert!(
        events[0]
            .detail
            .verdict_id
            .ends_with(">111122223333:us-east-1#failed"),
        "{events:?}"
    );
    assert_eq!(
        events[0].detail.failure_code.as_deref(),
        Some("REPLICATION_FAILURE"),
        "us-east-1's code, not another destination's"
    );
    // From here on the status API knows nothing of the image: the sweep asks DescribeImages.
    w.ecr.statuses(
        registry(SOURCE, "us-west-2"),
        repository(REPO),
        digest(DIGEST),
        vec![],
    );

    // Five minutes on the untagged copy is committed and the tags looked up.
    w.run(&sweep(), 9 + 300).await;
    let events = w.events.take();
    let reasons: Vec<_> = events
        .iter()
        .map(|e| (e.detail_type, e.detail.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            (TAG_NOT_APPLIED, Some("untagged")),
            (TAG_NOT_APPLIED, Some("stale_tag"))
        ]
    );
    // The digest retagged v2 at 600, whose copies never come: missed threshold in both, once.
    w.run(&push_event("push-v2", at(600), &image(Some("v2"))), 600)
        .await;
    w.run(&sweep(), 600 + WINDOW + 1).await;
    let ids = w.events.take_ids();
    assert_eq!(
        ids.iter().map(|(kind, _)| *kind).collect::<Vec<_>>(),
        [MISSED_THRESHOLD, MISSED_THRESHOLD],
        "{ids:?}"
    );
    assert!(ids.iter().all(|(_, id)| id.contains(":v2>")), "{ids:?}");
    w.run(&sweep(), 600 + WINDOW + 61).await;
    w.run(&sweep(), 4 * WINDOW).await;
    assert_eq!(w.events.take_ids(), vec![]);
}

/// Under delete replication a delete still not applied after the window is published once,
/// as `ECR Delete Replication Missed Threshold`, whatever is redelivered or swept at once; the
/// destination that applied it in time gives nothing.
#[tokio::test]
async fn a_delete_missed_in_one_destination_is_published_once_over_redeliveries_and_races() {
    let w = world();
    let web = Image {
        repository: "prod/web",
        ..image(None)
    };
    let tagged = Image {
        tag: Some("v1"),
        ..web
    };
    let ap = registry(SOURCE, "ap-southeast-2");
    w.run(&push_event("p", at(0), &tagged), 0).await;
    for (id, d) in [
        ("c1", SAME),
        ("c2", CROSS),
        ("c3", ("ap-southeast-2", SOURCE)),
    ] {
        w.run(&copy_event(id, at(9), &tagged, d, "SUCCESS"), 9)
            .await;
    }
    assert_eq!(w.events.take().len(), 1, "the push's all-destinations");
    w.ecr.image(
        ap,
        repository("prod/web"),
        digest(DIGEST),
        ImageFound {
            tags: vec![],
            pushed_at: Some(at(9)),
            status: ImageStatus::Active,
        },
    );
    let deleted = 100;
    let delete = delete_event("d", at(deleted), &web, ("us-west-2", SOURCE));
    w.run(&delete, deleted).await;
    w.run(
        &delete_event("d-east", at(deleted + 20), &web, SAME),
        deleted + 20,
    )
    .await;
    let after = deleted + WINDOW + 1;
    let swept = sweep();
    let (a, b) = tokio::join!(
        w.auditor.handle(&swept, at(after)),
        w.auditor.handle(&swept, at(after))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.deletes_missing + b.deletes_missing, 1, "{a:?} {b:?}");
    let events = w.events.take();
    assert_eq!(
        events
            .iter()
            .map(|e| (
                e.detail_type,
                e.detail.trigger,
                e.detail.destination_region.as_deref()
            ))
            .collect::<Vec<_>>(),
        [(DELETE_MISSED_THRESHOLD, "delete", Some("ap-southeast-2"))]
    );
    assert_eq!(
        events[0].detail.verdict_id,
        format!(
            "{SOURCE}:us-west-2:prod/web@{DIGEST}:->{SOURCE}:ap-southeast-2#delete-missed-threshold@{}",
            at(deleted)
        )
    );

    w.run(&delete, after + 10).await;
    w.run(&sweep(), after + 60).await;
    w.run(&sweep(), after + 4 * WINDOW).await;
    assert_eq!(w.events.take_ids(), vec![], "once");
}

/// The status API not answering costs the failure code, not the event.
#[tokio::test]
async fn a_failed_copy_is_published_without_a_code_when_the_status_api_does_not_answer() {
    let w = world();
    w.ecr.fail(
        Api::ImageReplicationStatus,
        Some(RegistryError::Transient("HTTP 500".into())),
    );
    w.run(&push(), 0).await;
    w.run(&copy("f", 5, SAME, Some("v1"), "FAILED"), 5).await;
    let events = w.events.take();
    assert_eq!(
        events
            .iter()
            .map(|e| (e.detail_type, e.detail.failure_code.as_deref()))
            .collect::<Vec<_>>(),
        [(FAILED, None)]
    );
    assert_eq!(w.ecr.calls(Api::ImageReplicationStatus), 1);
}

fn status(d: (&str, &str), state: ReplicationState, code: Option<&str>) -> ReplicationStatus {
    ReplicationStatus {
        region: Some(Region::parse(d.0).unwrap()),
        registry: Some(AccountId::parse(d.1).unwrap()),
        state,
        failure_code: code.map(str::to_owned),
    }
}

#[tokio::test]
async fn nothing_is_published_for_a_copy_still_on_its_way_and_events_off_reads_no_siblings() {
    let w = world();
    w.run(&push(), 0).await;
    w.run(&sweep(), 600).await;
    assert_eq!(w.events.take_ids(), vec![], "pending is no event");

    // The same completions with events off: no look at the other destination's group.
    let ecr = FakeRegistry::default();
    ecr.config(
        registry(SOURCE, "us-west-2"),
        sample("registry/us-west-2.json"),
    );
    let off = Auditor::new(
        RacingStore::default(),
        ecr,
        RecordingSink::default(),
        RecordingSink::default(),
        AuditSettings {
            window: Window::DEFAULT,
            repository_dimension: false,
            config_cache_ms: 300_000,
            history_retention: Window::hours(24 * 90),
        },
    );
    off.handle(&push(), at(0)).await.unwrap();
    off.handle(&copy("c-same", 7, SAME, Some("v1"), "SUCCESS"), at(7))
        .await
        .unwrap();
    off.handle(&copy("c-cross", 9, CROSS, Some("v1"), "SUCCESS"), at(9))
        .await
        .unwrap();
    assert_eq!(
        off.store().saves.load(Ordering::SeqCst),
        3,
        "one save per event, none to mark a push announced"
    );
}

/// Every key of `value` is a property of `schema`, every required one is there, and nested
/// objects follow their own schema.
fn follows(value: &Value, schema: &Value, at: &str) {
    let properties = schema["properties"].as_object().unwrap();
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{at}: not an object"));
    for key in object.keys() {
        assert!(
            properties.contains_key(key),
            "{at}.{key} is not in the schema"
        );
    }
    for required in schema["required"].as_array().unwrap() {
        let key = required.as_str().unwrap();
        assert!(
            object.contains_key(key),
            "{at}.{key} is required by the schema"
        );
    }
    if let Some(items) = object.get("destinations") {
        for item in items.as_array().unwrap() {
            follows(
                item,
                &properties["destinations"]["items"],
                &format!("{at}.destinations"),
            );
        }
    }
}

#[tokio::test]
async fn every_event_published_follows_the_documented_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(
            crate::support::cli::root().join("docs/replication-events.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let documented: Vec<&str> = schema["x-detail-types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(documented, signals::DETAIL_TYPES);

    let w = world();
    w.ecr.tag(
        registry("444455556666", "eu-west-1"),
        repository(REPO),
        tag("v1"),
        digest("sha256:0ld0000000000000000000000000000000000000000000000000000000000000"),
    );
    w.run(&push(), 0).await;
    w.run(&copy("f", 5, SAME, Some("v1"), "FAILED"), 5).await;
    w.run(&copy("s", 2000, SAME, Some("v1"), "SUCCESS"), 2000)
        .await;
    w.run(&copy("u", 9, CROSS, None, "SUCCESS"), 2001).await;
    w.run(&sweep(), 2400).await;
    w.run(&push_event("push-v2", at(3000), &image(Some("v2"))), 3000)
        .await;
    w.run(&sweep(), 3000 + WINDOW + 1).await;
    let events = w.events.take();
    let mut kinds: Vec<&str> = events.iter().map(|e| e.detail_type).collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds.len(),
        5,
        "every kind about copies was published: {kinds:?}"
    );
    for event in &events {
        follows(
            &serde_json::to_value(event).unwrap(),
            &schema,
            event.detail_type,
        );
    }
    // And a delete owed under delete replication, still at the destination after its window.
    let key = group_key(
        &registry(SOURCE, "us-west-2"),
        REPO,
        DIGEST,
        &registry(CROSS.1, CROSS.0),
    );
    let found = Found {
        owed: Owed::Delete,
        tag: Some(tag("v1")),
        since: at(100),
        at: at(100 + WINDOW),
        finding: Finding::DeleteMissing,
    };
    let delete = signals::of_finding(&key, &found, None, Window::DEFAULT).unwrap();
    let json = serde_json::to_value(&delete).unwrap();
    assert_eq!(json["trigger"], "delete");
    follows(&json, &schema, delete.detail_type);
}
