//! `replay` and the Lambda agree. One generated stream (the scenario generator's realistic mix:
//! late, missing, failed, retried, untagged and out-of-order copies, retags, pushes by digest,
//! duplicates, broken records, unconfigured sources) is fed to both: to the replay engine as a
//! file would be, and to the Lambda's handler (the in-memory store, a registry that knows the
//! generator's rules and nothing else) event by event on a clock that follows the stream, with
//! the scheduled sweep every minute. Every (push, destination) gets the same verdict and lag, and
//! so does every (delete, destination) under delete replication.
//!
//! The registry answers what the stream implies: every copy that arrived has its event, so the
//! images the sweep looks for are absent and no tag moved on at the source; a destination that
//! never reported a delete owed still holds the image (with the tag deleted, if one was).

use std::collections::BTreeMap;

use ecr_replication_auditor::adapters::fake::FakeRegistry;
use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::app::handler::{AuditSettings, Auditor};
use ecr_replication_auditor::domain::correlate::GroupKey;
use ecr_replication_auditor::domain::ids::{AccountId, Region};
use ecr_replication_auditor::domain::ids::{ImageDigest, ImageTag, RepositoryName};
use ecr_replication_auditor::domain::report::{DeletionRecord, Findings, ReplicationRecord};
use ecr_replication_auditor::domain::time::{Timestamp, Window};
use ecr_replication_auditor::ports::registry::RegistryAt;
use ecr_replication_auditor::replay::engine::Engine;
use ecr_replication_auditor::scenario::{ExpectedDeletion, ScenarioSpec};
use serde_json::Value;

use crate::support::events::sweep;
use crate::support::ids::found;
use crate::support::metrics::RecordingSink;

/// (source account, Region, repository, digest, tag, destination) of one (push, destination).
type Key = (String, String, String, String, Option<String>, String);
/// Its status and lag.
type Verdict = (&'static str, Option<i64>);
/// [`Key`] (with the tag deleted, if any) and the delete's time, of one (delete, destination).
type DeleteKey = (Key, i64);

fn key(group: &GroupKey, tag: Option<&ImageTag>) -> Key {
    (
        group.source_account.to_string(),
        group.source_region.to_string(),
        group.repository.to_string(),
        group.digest.to_string(),
        tag.map(|t| t.to_string()),
        group.destination.to_string(),
    )
}

/// What replay found.
#[derive(Default)]
struct Kept {
    verdicts: Vec<ReplicationRecord>,
    deletions: Vec<DeletionRecord>,
}

impl Findings for Kept {
    fn verdict(&mut self, record: &ReplicationRecord) {
        self.verdicts.push(record.clone());
    }

    fn deletion(&mut self, record: &DeletionRecord) {
        self.deletions.push(record.clone());
    }
}

fn replay(
    spec: &ScenarioSpec,
    lines: &[&str],
    now: Timestamp,
) -> (BTreeMap<Key, Verdict>, BTreeMap<DeleteKey, Verdict>) {
    let window = Window::from_secs(spec.window_seconds).unwrap();
    let mut engine = Engine::new(spec.configs(), window);
    let mut keep = Kept::default();
    for (n, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(value) => engine.ingest(&value, || format!("line {n}"), &mut keep),
            Err(e) => engine.unreadable(format!("line {n}"), e.to_string(), &mut keep),
        }
    }
    engine.finish(Some(now), &mut keep);
    let deletions = keep
        .deletions
        .into_iter()
        .map(|d| {
            let at = (key(&d.key, d.tag.as_ref()), d.deleted_at.millis());
            (at, (d.outcome.status.as_str(), d.outcome.latency_ms))
        })
        .collect();
    let verdicts = keep
        .verdicts
        .into_iter()
        .map(|r| {
            let at = key(&r.key, r.tag.as_ref());
            (at, (r.outcome.status.as_str(), r.outcome.latency_ms))
        })
        .collect();
    (verdicts, deletions)
}

/// The scheduled sweeps between two clock readings: every whole minute after `from`, up to `to`.
fn minutes_between(from: Option<Timestamp>, to: Timestamp) -> Vec<Timestamp> {
    let minute = |t: Timestamp| t.millis().div_euclid(60_000);
    match from {
        Some(from) => ((minute(from) + 1)..=minute(to))
            .map(|m| Timestamp::from_millis(m * 60_000))
            .collect(),
        None => Vec::new(),
    }
}

async fn lambda(
    spec: &ScenarioSpec,
    lines: &[&str],
    end: Timestamp,
    never_deleted: &[&ExpectedDeletion],
) -> (BTreeMap<Key, Verdict>, BTreeMap<DeleteKey, Verdict>) {
    let window = Window::from_secs(spec.window_seconds).unwrap();
    let ecr = FakeRegistry::default();
    for d in never_deleted {
        let tags: Vec<&str> = d.image_tag.iter().map(String::as_str).collect();
        ecr.image(
            RegistryAt {
                account: AccountId::parse(&d.destination_account).unwrap(),
                region: Region::parse(&d.destination_region).unwrap(),
            },
            RepositoryName::parse(&d.repository).unwrap(),
            ImageDigest::parse(&d.image_digest).unwrap(),
            found(&tags, None),
        );
    }
    for (region, doc) in spec.registry_documents() {
        let account = AccountId::parse(doc["registryId"].as_str().unwrap()).unwrap();
        let registry = RegistryAt {
            account,
            region: Region::parse(&region).unwrap(),
        };
        ecr.config(registry, doc);
    }
    let auditor = Auditor::new(
        MemoryStateStore::default(),
        ecr,
        RecordingSink::default(),
        RecordingSink::default(),
        AuditSettings {
            window,
            repository_dimension: false,
            config_cache_ms: 300_000,
            history_retention: Window::hours(24 * 90),
        },
    );
    let mut clock: Option<Timestamp> = None;
    for line in lines {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            // A line that is not JSON never reaches a Lambda function.
            continue;
        };
        let at = event["time"]
            .as_str()
            .and_then(|t| Timestamp::parse_rfc3339(t).ok());
        let now = match (clock, at) {
            (Some(c), Some(a)) => c.max(a),
            (None, Some(a)) => a,
            (Some(c), None) => c,
            (None, None) => continue,
        };
        for t in minutes_between(clock, now) {
            auditor
                .handle(&sweep(), t)
                .await
                .unwrap_or_else(|e| panic!("sweep at {t}: {e}"));
        }
        clock = Some(now);
        auditor
            .handle(&event, now)
            .await
            .unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    for t in minutes_between(clock, end).into_iter().chain([end]) {
        auditor.handle(&sweep(), t).await.unwrap();
    }
    let mut verdicts = BTreeMap::new();
    let mut deletions = BTreeMap::new();
    for (group, v) in auditor.store().snapshot() {
        for (e, verdict) in v.value.delete_verdicts(window, end) {
            let at = (key(&group, e.tag.as_ref()), e.deleted_at.millis());
            let outcome = verdict.outcome;
            deletions.insert(at, (outcome.status.as_str(), outcome.latency_ms));
        }
        for (e, verdict) in v.value.verdicts(window, end) {
            let at = key(&group, e.tag.as_ref());
            verdicts.insert(at, (verdict.status.as_str(), verdict.latency_ms));
        }
    }
    (verdicts, deletions)
}

#[tokio::test]
async fn one_generated_stream_gets_the_same_verdict_for_every_push_or_delete_and_destination_from_replay_and_the_lambda()
 {
    // A five-minute window, so that a stream of an hour holds every kind of verdict; more
    // deletes under delete replication than the default mix has, and more of them late or
    // never reported.
    let spec = ScenarioSpec {
        pushes: 1200,
        window_seconds: 300,
        replicated_delete_per_mille: 40,
        delete_late_per_mille: 200,
        delete_missing_per_mille: 200,
        ..ScenarioSpec::for_events(0x005E_ED11, 3000)
    };
    let mut bytes = Vec::new();
    let truth = spec.write_events_with_truth(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let now = Timestamp::from_millis(truth.now_unix * 1000);

    let (replayed, replayed_deletions) = replay(&spec, &lines, now);
    let never_deleted: Vec<&ExpectedDeletion> = truth
        .deletions
        .iter()
        .filter(|d| d.status == "missing")
        .collect();
    let (lambda, lambda_deletions) = lambda(&spec, &lines, now, &never_deleted).await;

    assert_eq!(
        replayed.len(),
        truth.verdicts.len(),
        "replay: one verdict per truth"
    );
    let every_copy = [
        "replicated",
        "late",
        "untagged",
        "failed",
        "missing",
        "pending",
    ];
    assert_same("(push, destination)", &replayed, &lambda, &every_copy);
    assert_eq!(replayed_deletions.len(), truth.deletions.len());
    let every_delete = ["replicated", "late", "missing"];
    assert_same(
        "(delete, destination)",
        &replayed_deletions,
        &lambda_deletions,
        &every_delete,
    );
}

/// Both judged every one of `what` alike, and replay's verdicts hold each of `statuses`.
fn assert_same<K: Ord + std::fmt::Debug>(
    what: &str,
    replayed: &BTreeMap<K, Verdict>,
    lambda: &BTreeMap<K, Verdict>,
    statuses: &[&str],
) {
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for (status, _) in replayed.values() {
        *by_status.entry(status).or_default() += 1;
    }
    for status in statuses {
        assert!(
            by_status.get(status).copied().unwrap_or(0) > 0,
            "the stream holds no {status} verdict of a {what}: {by_status:?}"
        );
    }
    let differing: Vec<_> = replayed
        .iter()
        .filter(|(k, v)| lambda.get(*k) != Some(*v))
        .map(|(k, v)| (k, v, lambda.get(k)))
        .take(10)
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: (key, replay, lambda) where they differ: {differing:#?}"
    );
    assert_eq!(
        lambda.len(),
        replayed.len(),
        "the Lambda judged no {what} that replay did not"
    );
}
