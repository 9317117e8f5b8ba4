//! At-least-once delivery, concurrent invocations and outages, on the handler's real adapters
//! against moto (reached through a fault-injecting proxy, `support/proxy.rs`):
//! - moto becomes unreachable in the middle of a run: every invocation fails loudly with a
//!   transient error naming the table, nothing panics; redelivered once it is back, everything
//!   is counted once;
//! - a write lands but its answer is lost: the SDK's retry recognises its own write;
//! - events delivered two to five times, to invocations running at once on a multi-thread
//!   runtime, in any order (copies before their pushes): every (push, destination) ends with
//!   one verdict, every metric counted once;
//! - a sweep racing a copy that arrives at the deadline: counted once, whichever saves first.
//!
//! Every count is taken per (metric, dimensions) from a recording sink.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tokio::sync::Notify;

use ecr_replication_auditor::adapters::dynamodb::DynamoStateStore;
use ecr_replication_auditor::adapters::ecr::EcrRegistry;
use ecr_replication_auditor::app::handler::{HandlerError, Summary};
use ecr_replication_auditor::domain::config::ReplicationConfig;
use ecr_replication_auditor::domain::confirm::{ImageFound, ReplicationStatus};
use ecr_replication_auditor::domain::correlate::Status;
use ecr_replication_auditor::domain::ids::{ImageDigest, ImageTag, RepositoryName};
use ecr_replication_auditor::domain::time::Window;
use ecr_replication_auditor::ports::registry::{RegistryAt, RegistryError, RegistryView};
use ecr_replication_auditor::ports::state::{StateStore, StoreError};
use ecr_replication_auditor::scenario::SplitMix64;

use crate::support::ids::synthetic_digest;
use crate::support::{moto, world};
use world::{
    CROSS, SAME, SRC_REGION, Series, TABLE, WINDOW_SECS, World, group_key, put_image, sweep, to,
};

/// One invocation that must succeed.
async fn ok<S, R>(w: &World<S, R>, payload: &Value, secs: i64) -> Summary
where
    S: StateStore + Sync,
    R: RegistryView + Sync,
{
    w.auditor
        .handle(payload, w.at(secs))
        .await
        .unwrap_or_else(|e| panic!("invocation at +{secs}s failed: {e}"))
}

/// `n` of each series in `series`, with the dimensionless mirror of each.
fn counts(series: &[(&'static str, (&str, &str), f64)], rejected: f64) -> BTreeMap<Series, f64> {
    let mut want = BTreeMap::new();
    for &(name, d, n) in series {
        *want.entry((name, to(d))).or_default() += n;
        *want.entry((name, vec![])).or_default() += n;
    }
    if rejected > 0.0 {
        want.insert(("EventsRejected", vec![]), rejected);
    }
    want
}

/// Each destination of each of `digests` has one expectation with a copy, counted expected and
/// completed once, and judged `status`; nothing is left to check.
async fn one_verdict_each<S, R>(w: &World<S, R>, digests: &[String], status: Status, secs: i64)
where
    S: StateStore + Sync,
    R: RegistryView + Sync,
{
    for digest in digests {
        for d in [SAME, CROSS] {
            let g = w.group(d, digest).await;
            let verdicts = g.value.verdicts(Window::DEFAULT, w.at(secs));
            assert_eq!(verdicts.len(), 1, "{d:?} {digest}: one (push, destination)");
            assert_eq!(verdicts[0].1.status, status, "{d:?} {digest}");
            assert!(
                g.value
                    .watches
                    .values()
                    .all(|w| w.counted.expected && w.counted.completed && w.next_check.is_none()),
                "{d:?} {digest}: {:?}",
                g.value.watches
            );
        }
    }
    assert!(w.open_groups().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// moto out of reach
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_outage_mid_run_fails_every_invocation_loudly_and_their_redelivery_counts_everything_once()
 {
    let w = World::start().await;
    let (d1, d2) = (synthetic_digest(1), synthetic_digest(2));
    ok(&w, &w.push("p-1", 0, &d1), 1).await;
    ok(&w, &w.copy("c-same-1", 7, SAME, &d1), 7).await;

    w.proxy.cut();
    let during = [
        (w.copy("c-cross-1", 12, CROSS, &d1), 12),
        (w.push("p-2", 20, &d2), 20),
        (w.copy("c-same-2", 26, SAME, &d2), 26),
        (w.malformed("bad-1", 30), 30),
        (sweep(), 60),
    ];
    for (payload, secs) in &during {
        let err = w
            .auditor
            .handle(payload, w.at(*secs))
            .await
            .expect_err("DynamoDB is out of reach");
        let HandlerError::Store(StoreError::Transient(message)) = &err else {
            panic!("+{secs}s: not a transient store error: {err:?}");
        };
        assert!(
            message.contains(&format!("on table \"{TABLE}\"")),
            "the error names the table: {message}"
        );
        assert!(
            err.to_string()
                .starts_with("the state store is unavailable (")
                && err.to_string().ends_with("; retrying may help"),
            "{err}"
        );
    }
    assert_eq!(
        w.proxy.treated("cut"),
        3 * during.len(),
        "each invocation's first store request, tried three times by the SDK"
    );
    assert_eq!(
        w.open_groups().await,
        vec![group_key(CROSS, &d1)],
        "nothing half-written"
    );

    w.proxy.restore();
    // EventBridge retries them a minute later, in no particular order.
    for (payload, secs) in during.iter().rev() {
        ok(&w, payload, secs + 60).await;
    }
    ok(&w, &w.copy("c-cross-2", 40, CROSS, &d2), 100).await;

    assert_eq!(
        w.metrics.counts(),
        counts(
            &[
                ("ReplicationsExpected", SAME, 2.0),
                ("ReplicationsExpected", CROSS, 2.0),
                ("ReplicationsCompleted", SAME, 2.0),
                ("ReplicationsCompleted", CROSS, 2.0),
                ("ReplicationLatency", SAME, 2.0),
                ("ReplicationLatency", CROSS, 2.0),
            ],
            1.0
        )
    );
    one_verdict_each(&w, &[d1, d2], Status::Replicated, 200).await;
    assert_eq!(w.fallback.calls(), 0);
}

#[tokio::test]
async fn a_write_that_landed_but_whose_answer_was_lost_is_recognised_by_the_sdks_retry_and_counted_once()
 {
    let w = World::start().await;
    let d = synthetic_digest(1);

    // The push's transaction lands; its answer is lost; the SDK sends it again.
    w.proxy
        .lose_answers("DynamoDB_20120810.TransactWriteItems", 1);
    let s = ok(&w, &w.push("p-1", 0, &d), 1).await;
    assert_eq!((s.expected, s.repeats), (2, 0), "{s:?}");
    assert_eq!(w.proxy.seen("TransactWriteItems"), 2);

    // The same for a copy's (its group's head and record, one transaction)...
    w.proxy
        .lose_answers("DynamoDB_20120810.TransactWriteItems", 1);
    let s = ok(&w, &w.copy("c-same", 7, SAME, &d), 7).await;
    assert_eq!((s.completed, s.repeats), (1, 0), "{s:?}");
    // ...a rejected event's record...
    w.proxy.lose_answers("DynamoDB_20120810.PutItem", 1);
    let s = ok(&w, &w.malformed("bad-1", 9), 9).await;
    assert_eq!(s.rejected, 1);
    // ...and the sweep's, which finds the cross-account copy missing.
    w.proxy
        .lose_answers("DynamoDB_20120810.TransactWriteItems", 1);
    let s = ok(&w, &sweep(), WINDOW_SECS + 1).await;
    assert_eq!((s.groups_checked, s.missing), (1, 1), "{s:?}");
    assert_eq!(w.proxy.treated("answer lost"), 4);
    assert_eq!(w.proxy.seen("PutItem"), 2, "the rejection, sent twice");
    assert_eq!(
        w.proxy.seen("TransactWriteItems"),
        6,
        "the push, the copy and the sweep, each sent twice"
    );

    assert_eq!(
        w.metrics.counts(),
        counts(
            &[
                ("ReplicationsExpected", SAME, 1.0),
                ("ReplicationsExpected", CROSS, 1.0),
                ("ReplicationsCompleted", SAME, 1.0),
                ("ReplicationLatency", SAME, 1.0),
                ("ReplicationsMissing", CROSS, 1.0),
            ],
            1.0
        )
    );

    // The limit: when every attempt's answer is lost, the invocation fails although its write
    // landed, and its retry finds nothing new. The late copy is recorded but not counted:
    // never twice (README, "Guarantees and limits").
    w.proxy
        .lose_answers("DynamoDB_20120810.TransactWriteItems", 3);
    let late = w.copy("c-cross", WINDOW_SECS + 100, CROSS, &d);
    let err = w
        .auditor
        .handle(&late, w.at(WINDOW_SECS + 100))
        .await
        .expect_err("no answer came back");
    assert!(
        matches!(err, HandlerError::Store(StoreError::Transient(_))),
        "{err}"
    );
    let s = ok(&w, &late, WINDOW_SECS + 160).await;
    assert_eq!((s.completed, s.late, s.repeats), (0, 0, 1), "{s:?}");
    let g = w.group(CROSS, &d).await;
    assert_eq!(g.value.group.copies().len(), 1, "the copy is recorded");
    assert!(g.value.watches.values().all(|w| w.counted.completed));
    assert_eq!(
        w.metrics
            .counts()
            .get(&("ReplicationsCompleted", to(CROSS))),
        None,
        "counted at most once: here, not at all"
    );
}

// ---------------------------------------------------------------------------------------------
// Redelivery and concurrency
// ---------------------------------------------------------------------------------------------

/// Handles every delivery in its own task, all at once. An invocation that gives up because
/// other invocations kept changing its group fails, and is delivered again (as EventBridge
/// would) once the others are done; every other failure fails the test. Returns the summaries
/// and how many invocations had to be delivered again.
async fn all_at_once<S, R>(w: &World<S, R>, deliveries: Vec<(Value, i64)>) -> (Vec<Summary>, usize)
where
    S: StateStore + Send + Sync + 'static,
    R: RegistryView + Send + Sync + 'static,
{
    let tasks: Vec<_> = deliveries
        .into_iter()
        .map(|(payload, secs)| {
            let auditor = w.auditor.clone();
            let now = w.at(secs);
            tokio::spawn(async move {
                let result = auditor.handle(&payload, now).await;
                (payload, secs, result)
            })
        })
        .collect();
    let mut summaries = Vec::new();
    let mut again = Vec::new();
    for task in tasks {
        let (payload, secs, result) = task.await.expect("no invocation panics");
        match result {
            Ok(s) => summaries.push(s),
            Err(HandlerError::Contention(_)) => again.push((payload, secs)),
            Err(e) => panic!("+{secs}s: {e}"),
        }
    }
    let retried = again.len();
    for (payload, secs) in again {
        summaries.push(ok(w, &payload, secs + 60).await);
    }
    (summaries, retried)
}

fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_delivered_two_to_five_times_to_concurrent_invocations_count_each_push_and_copy_once()
 {
    let w = World::start().await;
    const IMAGES: u16 = 6;
    let mut rng = SplitMix64::new(0x5EED);
    let digests: Vec<String> = (1..=IMAGES).map(synthetic_digest).collect();
    let mut deliveries = Vec::new();
    let mut distinct = 0;
    for (n, d) in digests.iter().enumerate() {
        let n = n as i64;
        for (event, secs) in [
            (w.push(&format!("p-{n}"), 0, d), 1),
            (w.copy(&format!("c-same-{n}"), 5 + n, SAME, d), 5 + n),
            (w.copy(&format!("c-cross-{n}"), 10 + n, CROSS, d), 10 + n),
        ] {
            distinct += 1;
            for _ in 0..rng.between(2, 5) {
                deliveries.push((event.clone(), secs));
            }
        }
    }
    shuffle(&mut deliveries, &mut rng);
    // One copy certainly before its push: on its own, first.
    let first_copy = w.copy("c-same-0", 5, SAME, &digests[0]);
    let s = ok(&w, &first_copy, 5).await;
    assert_eq!(
        (s.copies, s.completed),
        (1, 0),
        "kept, nothing to count yet"
    );
    let total = deliveries.len() + 1;

    let (summaries, retried) = all_at_once(&w, deliveries).await;
    eprintln!(
        "{total} deliveries of {distinct} events; {retried} invocations gave up on contention \
         and were delivered again"
    );

    let sum = |f: fn(&Summary) -> u64| summaries.iter().map(f).sum::<u64>();
    let images = u64::from(IMAGES);
    assert_eq!(sum(|s| s.expected), 2 * images);
    assert_eq!(
        sum(|s| s.completed),
        2 * images,
        "the early copy counted with its push"
    );
    assert_eq!(
        (sum(|s| s.late), sum(|s| s.missing), sum(|s| s.untagged)),
        (0, 0, 0)
    );
    let n = f64::from(IMAGES);
    assert_eq!(
        w.metrics.counts(),
        counts(
            &[
                ("ReplicationsExpected", SAME, n),
                ("ReplicationsExpected", CROSS, n),
                ("ReplicationsCompleted", SAME, n),
                ("ReplicationsCompleted", CROSS, n),
                ("ReplicationLatency", SAME, n),
                ("ReplicationLatency", CROSS, n),
            ],
            0.0
        )
    );
    // Each lag is the one of its own copy.
    let mut lags: Vec<f64> = w
        .metrics
        .data()
        .iter()
        .filter(|d| d.name.as_str() == "ReplicationLatency" && !d.dimensions.is_empty())
        .flat_map(|d| {
            d.values
                .iter()
                .zip(&d.counts)
                .flat_map(|(v, c)| std::iter::repeat_n(*v, *c as usize))
                .collect::<Vec<_>>()
        })
        .collect();
    lags.sort_by(f64::total_cmp);
    let mut want: Vec<f64> = (0..i64::from(IMAGES))
        .flat_map(|n| [(5 + n) as f64, (10 + n) as f64])
        .collect();
    want.sort_by(f64::total_cmp);
    assert_eq!(lags, want);
    one_verdict_each(&w, &digests, Status::Replicated, 100).await;
    assert_eq!(w.fallback.calls(), 0);

    // Per image, three writes succeed: the push's transaction and each copy's put (whichever
    // comes first creates the group). Every other write lost a race on the version, and its
    // invocation read again and found nothing new.
    for d in &digests {
        for dest in [SAME, CROSS] {
            assert_eq!(w.group(dest, d).await.version, 2, "{dest:?} {d}");
        }
    }
    let writes = w.proxy.seen("PutItem") + w.proxy.seen("TransactWriteItems");
    let lost = writes - 3 * usize::from(IMAGES);
    eprintln!("{writes} conditional writes, {lost} of them lost a race and were redone");
    assert!(lost > 0, "the invocations raced");
}

/// Where a test holds a sweep: inside `DescribeImages` by digest, while another invocation runs.
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    /// Told when the held sweep has reached the gate...
    reached: Notify,
    /// ...and waited for before it goes on.
    release: Notify,
}

/// ECR with a [`Gate`].
struct Gated<R> {
    inner: R,
    gate: Arc<Gate>,
}

impl<R: RegistryView + Sync> RegistryView for Gated<R> {
    async fn replication_config(
        &self,
        at: &RegistryAt,
    ) -> Result<ReplicationConfig, RegistryError> {
        self.inner.replication_config(at).await
    }

    async fn replication_status(
        &self,
        source: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> Result<Vec<ReplicationStatus>, RegistryError> {
        self.inner
            .replication_status(source, repository, digest)
            .await
    }

    async fn image(
        &self,
        destination: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> Result<Option<ImageFound>, RegistryError> {
        if self.gate.armed.swap(false, Ordering::SeqCst) {
            self.gate.reached.notify_one();
            self.gate.release.notified().await;
        }
        self.inner.image(destination, repository, digest).await
    }

    async fn digest_of_tag(
        &self,
        destination: &RegistryAt,
        repository: &RepositoryName,
        tag: &ImageTag,
    ) -> Result<Option<ImageDigest>, RegistryError> {
        self.inner.digest_of_tag(destination, repository, tag).await
    }
}

/// Images `ns` (tagged `v{n}`) pushed to the source and, by replication, to the cross-account
/// destination (moto stamps them with the real clock); their push and same-account copy
/// handled. Returns (digest, tag) in digest order: the order the sweep visits their groups in.
async fn replicated<R: RegistryView + Sync>(
    w: &World<DynamoStateStore, R>,
    ns: std::ops::RangeInclusive<u32>,
) -> Vec<(String, String)> {
    let mut images = Vec::new();
    for n in ns {
        let tag = format!("v{n}");
        let digest = put_image(&w.ecr((SRC_REGION, moto::ACCOUNT)), n, &tag).await;
        assert_eq!(put_image(&w.ecr(CROSS), n, &tag).await, digest);
        ok(w, &w.push_tagged(&format!("p-{n}"), 0, &digest, &tag), 1).await;
        let same = w.copy_tagged(&format!("c-same-{n}"), 7, SAME, &digest, &tag);
        ok(w, &same, 7).await;
        images.push((digest, tag));
    }
    images.sort();
    images
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_racing_a_copy_that_arrives_at_the_deadline_counts_it_once_whichever_saves_first() {
    let gate = Arc::new(Gate::default());
    let registry_gate = gate.clone();
    let w: World<DynamoStateStore, Gated<EcrRegistry>> = World::start_with(
        world::handler_credentials(),
        |s| s,
        |inner| Gated {
            inner,
            gate: registry_gate,
        },
    )
    .await;
    // The cross-account copies' events come late: at the deadline, when the sweep runs.
    let late = |(digest, tag): &(String, String)| {
        w.copy_tagged(
            &format!("c-cross-{tag}"),
            WINDOW_SECS - 30,
            CROSS,
            digest,
            tag,
        )
    };
    let deadline = WINDOW_SECS + 1;
    let mut completed = 0;

    // 1. The sweep is held inside DescribeImages on the first group until that group's copy is
    //    saved: the sweep's save then fails on the version, it reads again and finds the copy
    //    already counted. It completes the other groups from ECR's answer (present).
    let first = replicated(&w, 1..=3).await;
    gate.armed.store(true, Ordering::SeqCst);
    let auditor = w.auditor.clone();
    let now = w.at(deadline);
    let held = tokio::spawn(async move { auditor.handle(&sweep(), now).await });
    gate.reached.notified().await;
    let s = ok(&w, &late(&first[0]), deadline).await;
    assert_eq!(s.completed, 1, "{s:?}");
    completed += s.completed;
    gate.release.notify_one();
    let swept = held.await.unwrap().expect("the held sweep succeeds");
    assert_eq!(
        swept.completed, 2,
        "the other two, not the first again: {swept:?}"
    );
    completed += swept.completed;

    // 2. The sweep was first for the others: their late events change the copy's record and
    //    count nothing.
    for image in &first[1..] {
        let s = ok(&w, &late(image), deadline + 60).await;
        assert_eq!((s.completed, s.repeats), (0, 0), "{s:?}");
    }

    // 3. More images, their late events and two sweeps, all at once.
    let second = replicated(&w, 4..=9).await;
    let mut deliveries: Vec<(Value, i64)> =
        second.iter().map(|d| (late(d), deadline + 120)).collect();
    deliveries.push((sweep(), deadline + 120));
    deliveries.push((sweep(), deadline + 120));
    let (summaries, retried) = all_at_once(&w, deliveries).await;
    eprintln!("{retried} invocations gave up on contention and were delivered again");
    completed += summaries.iter().map(|s| s.completed).sum::<u64>();

    assert_eq!(completed, 9);
    // Each completed copy has its lag: from its event, or from the destination's imagePushedAt
    // when the sweep completed it.
    assert_eq!(
        w.metrics.counts(),
        counts(
            &[
                ("ReplicationsExpected", SAME, 9.0),
                ("ReplicationsExpected", CROSS, 9.0),
                ("ReplicationsCompleted", SAME, 9.0),
                ("ReplicationsCompleted", CROSS, 9.0),
                ("ReplicationLatency", SAME, 9.0),
                ("ReplicationLatency", CROSS, 9.0),
            ],
            0.0,
        ),
        "never missing, never late, never twice"
    );
    let all: Vec<String> = first.into_iter().chain(second).map(|(d, _)| d).collect();
    one_verdict_each(&w, &all, Status::Replicated, deadline + 200).await;
}
