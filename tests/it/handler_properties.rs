//! The Lambda's counts do not depend on how EventBridge delivers: over random arrival orders,
//! redeliveries and invocations that fail and are retried, the totals of every metric, the
//! stored verdicts (lags included) and the replication events are those of the same events
//! handled once each, in time order.
//!
//! The events are drawn as ECR makes them: images pushed under one to three tags (or by digest)
//! within ten minutes, and for each push and destination a copy with its tag, a copy without
//! it, a FAILED result, a FAILED result then a copy, a copy after the window (late), or
//! nothing; some images are restored from the archive later, and copied again (or not) per
//! destination; some destinations hold a pushed tag on an older image (a stale tag, found when
//! a copy comes without its tag). Every other image is in a `prod` repository, whose rule
//! replicates deletes to us-east-1 and ap-southeast-2 as well: some images are deleted at the
//! source after their pushes (of a tag, or by digest), and each destination that owes the
//! delete reports its DELETE within the window, after it, or never (then it still holds the
//! image, which the sweep finds). A copy is never made before its push. Each event is delivered within four minutes of its time, possibly several times, and a
//! delivery may fail (the store refuses the save) and be retried within those four minutes, as
//! Lambda retries a failed asynchronous invocation after about one and then two minutes. That
//! bound is the guarantee's: a match the grace (five minutes) has committed is not taken back
//! by a push read later still (README, "Counted exactly once").
//!
//! After every delivery, the same sweeps run in both: every minute from when the last grace has
//! passed until well after every window and its first re-check. The replication events handed
//! out are compared too: the same verdict ids, each published once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use ecr_replication_auditor::adapters::fake::FakeRegistry;
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor};
use ecr_replication_auditor::domain::correlate::GroupKey;
use ecr_replication_auditor::domain::ids::EventId;
use ecr_replication_auditor::domain::ledger::TrackedGroup;
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::state::{DueWork, StateStore, StoreError, Versioned, Want};
use proptest::prelude::*;
use serde_json::Value;

use crate::support::events::{
    Image, copy_event, delete_event, push_event, restore_event, sample, sweep,
};
use crate::support::ids::{at, digest, found, registry, repository, tag};
use crate::support::metrics::{RecordingEvents, RecordingSink, Series};

const SOURCE: &str = "111122223333";
/// The destinations of `events/registry/us-west-2.json`: a `team/` repository's are the first
/// two, a `prod/` repository's all three.
const DESTINATIONS: [(&str, &str); 3] = [
    ("us-east-1", SOURCE),
    ("eu-west-1", "444455556666"),
    ("ap-southeast-2", SOURCE),
];
/// The destinations (of [`DESTINATIONS`]) that owe a `prod/` repository's deletes.
const OWE_DELETES: [usize; 2] = [0, 2];
const TAGS: [Option<&str>; 3] = [None, Some("v1"), Some("v2")];
/// How late a delivery (or its retry) may come after the event's time.
const MAX_DELAY: i64 = 240;

/// What happens to one push at one destination.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Copied {
        after: i64,
    },
    CopiedWithoutTag {
        after: i64,
    },
    Failed {
        after: i64,
        tagged: bool,
    },
    FailedThenCopied {
        after: i64,
    },
    /// Copied with its tag after the window: `ECR Replication Replicated After Threshold`.
    Late {
        after: i64,
    },
    Nothing,
}

fn fate() -> impl Strategy<Value = Fate> {
    let after = 1..400i64;
    prop_oneof![
        5 => after.clone().prop_map(|after| Fate::Copied { after }),
        2 => after.clone().prop_map(|after| Fate::CopiedWithoutTag { after }),
        2 => (after.clone(), any::<bool>()).prop_map(|(after, tagged)| Fate::Failed { after, tagged }),
        1 => after.prop_map(|after| Fate::FailedThenCopied { after }),
        1 => (1801..2400i64).prop_map(|after| Fate::Late { after }),
        1 => Just(Fate::Nothing),
    ]
}

/// What a destination that owes a delete reports: a DELETE this long after the source's, or
/// none (it still holds the image).
#[derive(Clone, Copy, Debug)]
enum Deleted {
    After(i64),
    Never,
}

fn deleted() -> impl Strategy<Value = Deleted> {
    prop_oneof![
        4 => (1..400i64).prop_map(Deleted::After),
        1 => (1801..2400i64).prop_map(Deleted::After),
        1 => Just(Deleted::Never),
    ]
}

/// One image: its pushes (tag index, time) and each push's fate per destination; a restore
/// (its time, and per destination the copy's delay, or none); per destination whether its
/// `v1` names an older image; a delete at the source (its time, the tag index it names, 0 for
/// the image by digest, and what each destination of [`OWE_DELETES`] reports).
#[derive(Clone, Debug)]
struct Drawn {
    pushes: Vec<(usize, i64, [Fate; 3])>,
    restore: Option<(i64, [Option<i64>; 3])>,
    stale_v1: [bool; 3],
    delete: Option<(i64, usize, [Deleted; 2])>,
}

fn image() -> impl Strategy<Value = Drawn> {
    let restore_copy = prop::option::weighted(0.8, 1..400i64);
    (
        prop::collection::vec((0..3usize, 0..600i64, [fate(), fate(), fate()]), 1..4),
        prop::option::weighted(
            0.25,
            (
                700..900i64,
                [restore_copy.clone(), restore_copy.clone(), restore_copy],
            ),
        ),
        [
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
        ],
        // After every push is delivered (by 840 s): the source's rules are known by then.
        prop::option::weighted(0.4, (1000..1300i64, 0..3usize, [deleted(), deleted()])),
    )
        .prop_map(|(mut pushes, restore, stale_v1, delete)| {
            // One push per tag, as ECR keeps one image per tag and digest.
            pushes.sort_by_key(|p| (p.0, p.1));
            pushes.dedup_by_key(|p| p.0);
            Drawn {
                pushes,
                restore,
                stale_v1,
                delete,
            }
        })
}

/// The `i`th image's digest and repository: every other one in `prod/`.
fn named(i: usize) -> (String, String) {
    let repository = if i.is_multiple_of(2) {
        "team/app"
    } else {
        "prod/app"
    };
    (format!("sha256:{i:064x}"), repository.to_string())
}

/// How many of [`DESTINATIONS`] the `i`th image's rules name.
fn destinations(i: usize) -> usize {
    if i.is_multiple_of(2) { 2 } else { 3 }
}

/// An event with its time (seconds after T0).
struct Event {
    at: i64,
    payload: Value,
}

fn events(images: &[Drawn]) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, drawn) in images.iter().enumerate() {
        let (digest, repository) = named(i);
        let image = |tag| Image {
            source_account: SOURCE,
            source_region: "us-west-2",
            repository: &repository,
            digest: &digest,
            tag,
        };
        if let Some((restored, copies)) = drawn.restore {
            out.push(Event {
                at: restored,
                payload: restore_event(&format!("restore-{i}"), at(restored), &image(None)),
            });
            for (d, after) in copies.iter().enumerate().take(destinations(i)) {
                if let Some(after) = after {
                    out.push(Event {
                        at: restored + after,
                        payload: copy_event(
                            &format!("restore-copy-{i}-{d}"),
                            at(restored + after),
                            &image(None),
                            DESTINATIONS[d],
                            "SUCCESS",
                        ),
                    });
                }
            }
        }
        for &(tag, pushed, fates) in &drawn.pushes {
            let id = format!("push-{i}-{tag}");
            out.push(Event {
                at: pushed,
                payload: push_event(&id, at(pushed), &image(TAGS[tag])),
            });
            for (d, fate) in fates.iter().enumerate().take(destinations(i)) {
                let copy = |n: usize, after: i64, copy_tag, result| Event {
                    at: pushed + after,
                    payload: copy_event(
                        &format!("copy-{i}-{tag}-{d}-{n}"),
                        at(pushed + after),
                        &image(copy_tag),
                        DESTINATIONS[d],
                        result,
                    ),
                };
                match *fate {
                    Fate::Copied { after } => out.push(copy(0, after, TAGS[tag], "SUCCESS")),
                    Fate::CopiedWithoutTag { after } => out.push(copy(0, after, None, "SUCCESS")),
                    Fate::Failed { after, tagged } => {
                        let t = if tagged { TAGS[tag] } else { None };
                        out.push(copy(0, after, t, "FAILED"));
                    }
                    Fate::FailedThenCopied { after } => {
                        out.push(copy(0, after, TAGS[tag], "FAILED"));
                        out.push(copy(1, after + 30, TAGS[tag], "SUCCESS"));
                    }
                    Fate::Late { after } => out.push(copy(0, after, TAGS[tag], "SUCCESS")),
                    Fate::Nothing => {}
                }
            }
        }
        if let Some((deleted_at, tag, reports)) = drawn.delete {
            let what = image(TAGS[tag]);
            out.push(Event {
                at: deleted_at,
                payload: delete_event(
                    &format!("delete-{i}"),
                    at(deleted_at),
                    &what,
                    ("us-west-2", SOURCE),
                ),
            });
            // A `team/` repository's rule replicates no delete: its destinations report none.
            if destinations(i) == 3 {
                for (n, report) in reports.iter().enumerate() {
                    if let Deleted::After(after) = report {
                        let d = OWE_DELETES[n];
                        out.push(Event {
                            at: deleted_at + after,
                            payload: delete_event(
                                &format!("deleted-{i}-{d}"),
                                at(deleted_at + after),
                                &what,
                                DESTINATIONS[d],
                            ),
                        });
                    }
                }
            }
        }
    }
    out
}

/// How one event is delivered: after a delay, again after each extra delay, and whether the
/// first attempt fails (and is retried after a further delay).
#[derive(Clone, Debug)]
struct Delivery {
    delay: i64,
    again: Vec<i64>,
    fails_then_retried_after: Option<i64>,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    (
        0..=MAX_DELAY,
        prop::collection::vec(0..=MAX_DELAY, 0..3),
        prop::option::weighted(0.15, 60..=120i64),
    )
        .prop_map(|(delay, again, retry)| Delivery {
            // A retried delivery comes back within the bound too.
            delay: retry.map_or(delay, |r| delay.min(MAX_DELAY - r)),
            again,
            fails_then_retried_after: retry,
        })
}

/// [`MemoryStateStore`] that refuses the next save when told to, as DynamoDB does when throttled.
#[derive(Default)]
struct FlakyStore {
    inner: MemoryStateStore,
    refuse_next_save: AtomicBool,
}

impl StateStore for FlakyStore {
    async fn load(&self, wants: &[Want]) -> Result<Vec<Versioned<TrackedGroup>>, StoreError> {
        self.inner.load(wants).await
    }

    async fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> Result<bool, StoreError> {
        if self.refuse_next_save.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Transient(
                "ProvisionedThroughputExceeded".into(),
            ));
        }
        self.inner.save(groups).await
    }

    async fn due(
        &self,
        now: Timestamp,
        budget: usize,
        count_watched: bool,
    ) -> Result<DueWork, StoreError> {
        self.inner.due(now, budget, count_watched).await
    }

    async fn first_rejection(&self, id: &EventId, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.first_rejection(id, at).await
    }
}

type Lambda = Auditor<FlakyStore, FakeRegistry, RecordingSink, RecordingSink, RecordingEvents>;

fn lambda(metrics: &RecordingSink, events: &RecordingEvents, images: &[Drawn]) -> Lambda {
    let ecr = FakeRegistry::default();
    ecr.config(
        registry(SOURCE, "us-west-2"),
        sample("registry/us-west-2.json"),
    );
    for (i, drawn) in images.iter().enumerate() {
        let (dg, repo) = named(i);
        if let Some((_, _, reports)) = drawn.delete {
            let tags: Vec<&str> = drawn.pushes.iter().filter_map(|p| TAGS[p.0]).collect();
            for (n, report) in reports.iter().enumerate() {
                if destinations(i) == 3 && matches!(report, Deleted::Never) {
                    let (region, account) = DESTINATIONS[OWE_DELETES[n]];
                    ecr.image(
                        registry(account, region),
                        repository(&repo),
                        digest(&dg),
                        found(&tags, Some(at(0))),
                    );
                }
            }
        }
        for (d, stale) in drawn.stale_v1.iter().enumerate().take(destinations(i)) {
            if *stale {
                ecr.tag(
                    registry(DESTINATIONS[d].1, DESTINATIONS[d].0),
                    repository(&repo),
                    tag("v1"),
                    digest(&format!("sha256:{:064x}", 0xdead_0000 + i)),
                );
            }
        }
    }
    Auditor::new(
        FlakyStore::default(),
        ecr,
        metrics.clone(),
        RecordingSink::default(),
        AuditSettings {
            window: Window::DEFAULT,
            repository_dimension: true,
            config_cache_ms: 300_000,
            history_retention: Window::hours(24 * 90),
        },
    )
    .with_events(events.clone())
}

/// One invocation: (time, payload, whether its save is refused).
type Invocation = (i64, Value, bool);

/// What one run published and stored.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Every count and lag sum per series.
    totals: BTreeMap<Series, (f64, f64)>,
    /// Every stored verdict.
    verdicts: Vec<String>,
    /// The verdict id of every replication event, sorted, as often as it was published.
    events: Vec<String>,
}

/// Runs the invocations in time order (then in the given order), then the sweeps.
async fn run(mut invocations: Vec<Invocation>, images: &[Drawn]) -> Outcome {
    let metrics = RecordingSink::default();
    let events = RecordingEvents::default();
    let lambda = lambda(&metrics, &events, images);
    invocations.sort_by_key(|(t, ..)| *t);
    for (t, payload, refused) in &invocations {
        lambda
            .store()
            .refuse_next_save
            .store(*refused, Ordering::SeqCst);
        let result = lambda.handle(payload, at(*t)).await;
        // A refused delivery fails (and is retried later); one that changed nothing (a
        // redelivery came first) saves nothing, so nothing was refused.
        let was_refused = !lambda
            .store()
            .refuse_next_save
            .swap(false, Ordering::SeqCst)
            && *refused;
        assert_eq!(result.is_err(), was_refused, "at {t}: {result:?}");
    }
    let last = invocations.iter().map(|(t, ..)| *t).max().unwrap_or(0);
    let mut now = last.max(1000) + 300;
    // Past every window (a restore's and a delete's too) and its first re-check, and past the
    // five minutes after a late DELETE that make it late for good.
    let end = 1300 + 2400 + 1800 + 1800 + 120;
    while now <= end {
        lambda
            .handle(&sweep(), at(now))
            .await
            .unwrap_or_else(|e| panic!("sweep at {now}: {e}"));
        now += 60;
    }
    let mut totals: BTreeMap<Series, (f64, f64)> = BTreeMap::new();
    for d in metrics.data() {
        // Gauges: what they say depends on when the sweeps ran, not on what was counted.
        if matches!(
            d.name.as_str(),
            "PendingReplications" | "ReplicationsWatched"
        ) {
            continue;
        }
        // A lag is published once per (push, destination): that of the earliest copy known when
        // the copy is counted. A copy delivered later whose time is earlier (a tagless one that
        // turns out to be the same push's) changes the stored verdict's lag, not the published
        // one (README, "Counted exactly once"). Lags are compared by count here, by value in the
        // verdicts.
        let lag = d.name.as_str() == "ReplicationLatency";
        let entry = totals
            .entry((d.name.as_str(), d.dimensions.clone()))
            .or_default();
        for (v, c) in d.values.iter().zip(&d.counts) {
            entry.0 += c;
            entry.1 += if lag { *c } else { v * c };
        }
    }
    let verdicts = lambda
        .store()
        .inner
        .snapshot()
        .iter()
        .flat_map(|(key, v)| {
            v.value
                .verdicts(Window::DEFAULT, at(end))
                .into_iter()
                .map(|(e, verdict)| {
                    format!(
                        "{} {:?} {} {} {:?}",
                        key.digest,
                        e.tag,
                        key.destination,
                        verdict.status.as_str(),
                        verdict.latency_ms
                    )
                })
                .chain(
                    v.value
                        .delete_verdicts(Window::DEFAULT, at(end))
                        .into_iter()
                        .map(|(e, verdict)| {
                            format!(
                                "delete {} {:?} {} {} {} {:?}",
                                key.digest,
                                e.tag,
                                e.deleted_at,
                                key.destination,
                                verdict.outcome.status.as_str(),
                                verdict.outcome.latency_ms
                            )
                        }),
                )
                .collect::<Vec<_>>()
        })
        .collect();
    let mut events: Vec<String> = events
        .take()
        .into_iter()
        .map(|e| e.detail.verdict_id)
        .collect();
    events.sort();
    Outcome {
        totals,
        verdicts,
        events,
    }
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn metric_totals_and_events_do_not_depend_on_arrival_order_redelivery_or_retried_invocations(
        (images, deliveries) in prop::collection::vec(image(), 1..5).prop_flat_map(|images| {
            let n = events(&images).len();
            (Just(images), prop::collection::vec(delivery(), n))
        })
    ) {
        let events = events(&images);
        let in_order: Vec<Invocation> =
            events.iter().map(|e| (e.at, e.payload.clone(), false)).collect();
        let mut delivered = Vec::new();
        for (e, d) in events.iter().zip(&deliveries) {
            match d.fails_then_retried_after {
                Some(retry) => {
                    delivered.push((e.at + d.delay, e.payload.clone(), true));
                    delivered.push((e.at + d.delay + retry, e.payload.clone(), false));
                }
                None => delivered.push((e.at + d.delay, e.payload.clone(), false)),
            }
            for again in &d.again {
                delivered.push((e.at + again, e.payload.clone(), false));
            }
        }
        let expected = block_on(run(in_order, &images));
        let got = block_on(run(delivered, &images));
        let mut once = expected.events.clone();
        once.dedup();
        prop_assert_eq!(&once, &expected.events, "each event published once");
        prop_assert_eq!(got, expected);
    }
}
