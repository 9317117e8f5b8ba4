//! The replication events the Lambda hands out (EventBridge `PutEvents`, source
//! [`SOURCE`]), so that other teams can act when an image reached, or failed to reach, a Region.
//! Named after what S3 Replication users know (`OperationMissedThreshold`, ...). Each comes
//! from a finding the ledger counts once ([`super::ledger::Found`]), and carries a
//! deterministic `verdict-id`, so a consumer can drop what an at-least-once delivery repeats.
//!
//! The detail's schema is `docs/replication-events.schema.json`; a test holds the two together.

use serde::{Deserialize, Deserializer, Serialize};

use super::correlate::GroupKey;
use super::correlate::Trigger;
use super::ledger::{Finding, Found, LiveVerdict, Owed};
use super::time::{Timestamp, Window};

/// The events' `source`: never one starting with `aws.`, which EventBridge reserves.
pub const SOURCE: &str = "ecr-replication-auditor";

pub const ALL_DESTINATIONS: &str = "ECR Image Replicated To All Destinations";
pub const MISSED_THRESHOLD: &str = "ECR Replication Missed Threshold";
pub const AFTER_THRESHOLD: &str = "ECR Replication Replicated After Threshold";
pub const FAILED: &str = "ECR Replication Failed";
pub const TAG_NOT_APPLIED: &str = "ECR Replication Tag Not Applied";
pub const DELETE_MISSED_THRESHOLD: &str = "ECR Delete Replication Missed Threshold";

/// Every `detail-type` the auditor publishes.
pub const DETAIL_TYPES: [&str; 6] = [
    ALL_DESTINATIONS,
    MISSED_THRESHOLD,
    AFTER_THRESHOLD,
    FAILED,
    TAG_NOT_APPLIED,
    DELETE_MISSED_THRESHOLD,
];

/// A name from one of the lists below. An alias, so that serde's derive does not take a
/// `&'static str` field for one borrowed from the input (which would tie what it reads to
/// `'static`); [`one_of`] reads it.
type Name = &'static str;

/// The triggers a detail names (`inventory`: a push the inventory check found, its event lost).
const TRIGGERS: [&str; 4] = ["push", "restore", "delete", "inventory"];

/// The reasons a `Tag Not Applied` detail names.
const REASONS: [&str; 2] = ["untagged", "stale_tag"];

/// One event: its `detail-type` and its `detail`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicationEvent {
    #[serde(skip)]
    pub detail_type: &'static str,
    #[serde(flatten)]
    pub detail: Detail,
}

/// The image and what happened to it (kebab-case keys, as AWS's own ECR events have them).
/// Read back only from what this crate wrote ([`ReplicationEvent::parked`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Detail {
    /// The same for every delivery of the same fact: a consumer de-duplicates by it.
    pub verdict_id: String,
    /// What made ECR replicate: `push`, `restore`, or `delete` (delete replication); `inventory`
    /// for a push the auditor learned of from the inventory check, its event lost.
    #[serde(deserialize_with = "trigger")]
    pub trigger: Name,
    pub source_account: String,
    pub source_region: String,
    pub repository_name: String,
    pub image_digest: String,
    pub image_tag: Option<String>,
    /// When the copy (or the delete) became owed: the push, the restore, the delete.
    pub pushed_at: Timestamp,
    /// The destination, for every event but the all-destinations one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicated_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i64>,
    /// ECR's failure code, verbatim (`ECR Replication Failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    /// `untagged` (the copy arrived without its tag) or `stale_tag` (the destination's tag
    /// names another image), for `ECR Replication Tag Not Applied`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        default,
        deserialize_with = "reason"
    )]
    pub reason: Option<Name>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_points_to: Option<String>,
    /// Every destination with its lag, for `ECR Image Replicated To All Destinations`.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub destinations: Vec<Arrival>,
}

/// One destination of an image that reached them all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Arrival {
    pub destination_account: String,
    pub destination_region: String,
    pub replicated_at: Option<Timestamp>,
    pub latency_seconds: Option<f64>,
    /// Whether it arrived within the window (unknown when only the status API said COMPLETE).
    pub on_time: Option<bool>,
}

impl ReplicationEvent {
    /// An event as [`Serialize`] wrote its detail, under its `detail-type`: how an event parked
    /// after a failed publish is read back. `None` for a type or a detail this crate does not
    /// write.
    pub fn parked(detail_type: &str, detail: &str) -> Option<ReplicationEvent> {
        let detail_type = DETAIL_TYPES.into_iter().find(|t| *t == detail_type)?;
        let detail = serde_json::from_str(detail).ok()?;
        Some(ReplicationEvent {
            detail_type,
            detail,
        })
    }
}

/// One of `options`, as the `&'static str` the crate wrote.
fn one_of<'de, D: Deserializer<'de>>(
    d: D,
    options: &[&'static str],
) -> Result<&'static str, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    options
        .iter()
        .find(|o| **o == text)
        .copied()
        .ok_or_else(|| serde::de::Error::unknown_variant(&text, &[]))
}

fn trigger<'de, D: Deserializer<'de>>(d: D) -> Result<&'static str, D::Error> {
    one_of(d, &TRIGGERS)
}

fn reason<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'static str>, D::Error> {
    one_of(d, &REASONS).map(Some)
}

/// The deterministic id of one fact about one (push, destination), or (`destination` none)
/// about one push.
pub fn verdict_id(key: &GroupKey, tag: Option<&str>, destination: bool, fact: &str) -> String {
    let image = format!(
        "{}:{}:{}@{}:{}",
        key.source_account,
        key.source_region,
        key.repository,
        key.digest,
        tag.unwrap_or("-")
    );
    if destination {
        format!(
            "{image}>{}:{}#{fact}",
            key.destination.account, key.destination.region
        )
    } else {
        format!("{image}#{fact}")
    }
}

fn detail(key: &GroupKey, found: &Found, fact: &str) -> Detail {
    let tag = found.tag.as_ref().map(|t| t.to_string());
    let (trigger, fact) = match found.owed {
        Owed::Copy(Trigger::Push) => ("push", fact.to_string()),
        // A restore is owed its own copy; its id names the restore's time.
        Owed::Copy(Trigger::Restore) => ("restore", format!("{fact}@{}", found.since)),
        Owed::Delete => ("delete", format!("{fact}@{}", found.since)),
    };
    Detail {
        verdict_id: verdict_id(key, tag.as_deref(), true, &fact),
        trigger,
        source_account: key.source_account.to_string(),
        source_region: key.source_region.to_string(),
        repository_name: key.repository.to_string(),
        image_digest: key.digest.to_string(),
        image_tag: tag,
        pushed_at: found.since,
        destination_account: Some(key.destination.account.to_string()),
        destination_region: Some(key.destination.region.to_string()),
        replicated_at: None,
        latency_seconds: None,
        window_seconds: None,
        failure_code: None,
        reason: None,
        tag_points_to: None,
        destinations: Vec::new(),
    }
}

/// The event a finding about one (push, destination) is, if any: a copy missing at its
/// deadline, late, failed, untagged or under a stale tag. (Completed copies become one event
/// per push once every destination has its copy: [`all_destinations`].)
pub fn of_finding(
    key: &GroupKey,
    found: &Found,
    verdict: Option<&LiveVerdict>,
    window: Window,
) -> Option<ReplicationEvent> {
    let (detail_type, fact) = match &found.finding {
        Finding::Missing => (MISSED_THRESHOLD, "missed-threshold"),
        Finding::Late => (AFTER_THRESHOLD, "after-threshold"),
        Finding::Failed { .. } => (FAILED, "failed"),
        Finding::Untagged => (TAG_NOT_APPLIED, "untagged"),
        Finding::StaleTag { .. } => (TAG_NOT_APPLIED, "stale-tag"),
        Finding::DeleteMissing => (DELETE_MISSED_THRESHOLD, "delete-missed-threshold"),
        Finding::Expected
        | Finding::Completed { .. }
        | Finding::Withdrawn
        | Finding::Archived
        | Finding::DeleteExpected
        | Finding::DeleteReplicated { .. }
        | Finding::DeleteLate => return None,
    };
    let mut d = detail(key, found, fact);
    d.window_seconds = Some(window.millis() / 1000);
    if let Some(v) = verdict {
        d.replicated_at = v.replicated_at;
        d.latency_seconds = v.latency_ms.map(|ms| ms as f64 / 1000.0);
    }
    match &found.finding {
        Finding::Failed { failure_code } => {
            d.failure_code = failure_code
                .clone()
                .or_else(|| verdict.and_then(|v| v.failure_code.clone()));
        }
        Finding::Untagged => d.reason = Some("untagged"),
        Finding::StaleTag { points_to } => {
            d.reason = Some("stale_tag");
            d.tag_points_to = Some(points_to.to_string());
        }
        _ => {}
    }
    Some(ReplicationEvent {
        detail_type,
        detail: d,
    })
}

/// `ECR Image Replicated To All Destinations` for the push of `tag` (or the restore at
/// `pushed_at`) in `key`'s image, given its verdict at every one of its destinations; `None`
/// while any has no copy.
pub fn all_destinations(
    key: &GroupKey,
    trigger: Trigger,
    tag: Option<&str>,
    pushed_at: Timestamp,
    verdicts: &[(GroupKey, LiveVerdict)],
    window: Window,
) -> Option<ReplicationEvent> {
    let arrived = |v: &LiveVerdict| {
        matches!(
            v.status,
            super::correlate::Status::Replicated
                | super::correlate::Status::Late
                | super::correlate::Status::Untagged
        )
    };
    if verdicts.is_empty() || !verdicts.iter().all(|(_, v)| arrived(v)) {
        return None;
    }
    let destinations = verdicts
        .iter()
        .map(|(k, v)| Arrival {
            destination_account: k.destination.account.to_string(),
            destination_region: k.destination.region.to_string(),
            replicated_at: v.replicated_at,
            latency_seconds: v.latency_ms.map(|ms| ms as f64 / 1000.0),
            on_time: v.latency_ms.map(|ms| ms <= window.millis()),
        })
        .collect();
    let (name, fact) = match trigger {
        Trigger::Push => ("push", "all-destinations".to_owned()),
        // A restore's own, as its other events: the id names the restore's time.
        Trigger::Restore => ("restore", format!("all-destinations@{pushed_at}")),
    };
    Some(ReplicationEvent {
        detail_type: ALL_DESTINATIONS,
        detail: Detail {
            verdict_id: verdict_id(key, tag, false, &fact),
            trigger: name,
            source_account: key.source_account.to_string(),
            source_region: key.source_region.to_string(),
            repository_name: key.repository.to_string(),
            image_digest: key.digest.to_string(),
            image_tag: tag.map(str::to_owned),
            pushed_at,
            destination_account: None,
            destination_region: None,
            replicated_at: None,
            latency_seconds: None,
            window_seconds: Some(window.millis() / 1000),
            failure_code: None,
            reason: None,
            tag_points_to: None,
            destinations,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::correlate::Status;
    use crate::domain::ids::{ImageDigest, ImageTag};
    use std::collections::BTreeSet;

    fn found(finding: Finding) -> Found {
        Found {
            owed: Owed::Copy(Trigger::Push),
            tag: Some(ImageTag::parse("v1").unwrap()),
            since: Timestamp::from_millis(0),
            at: Timestamp::from_millis(1_800_000),
            finding,
        }
    }

    fn verdict(status: Status, latency_ms: Option<i64>) -> LiveVerdict {
        LiveVerdict {
            status,
            replicated_at: latency_ms.map(Timestamp::from_millis),
            latency_ms,
            failure_code: None,
            confirmed: false,
        }
    }

    #[test]
    fn problems_become_events_with_ids_that_name_the_fact_and_completions_do_not() {
        let key = GroupKey::example();
        let w = Window::DEFAULT;
        let missed = of_finding(&key, &found(Finding::Missing), None, w).unwrap();
        assert_eq!(missed.detail_type, MISSED_THRESHOLD);
        assert_eq!(
            missed.detail.verdict_id,
            "111122223333:us-west-2:team/app@sha256:aaaa:v1>444455556666:eu-west-1#missed-threshold"
        );
        let stale = of_finding(
            &key,
            &found(Finding::StaleTag {
                points_to: ImageDigest::parse("sha256:old").unwrap(),
            }),
            None,
            w,
        )
        .unwrap();
        assert_eq!(
            (
                stale.detail_type,
                stale.detail.reason,
                stale.detail.tag_points_to.as_deref()
            ),
            (TAG_NOT_APPLIED, Some("stale_tag"), Some("sha256:old"))
        );
        assert_ne!(stale.detail.verdict_id, missed.detail.verdict_id);
        for quiet in [
            Finding::Expected,
            Finding::Completed {
                latency_ms: Some(5),
            },
            Finding::Withdrawn,
        ] {
            assert_eq!(of_finding(&key, &found(quiet), None, w), None);
        }
        let json = serde_json::to_value(&missed).unwrap();
        assert_eq!(json["repository-name"], "team/app");
        assert!(json.get("detail_type").is_none() && json.get("destinations").is_none());
    }

    #[test]
    fn all_destinations_waits_for_every_copy_and_lists_each_lag() {
        let key = GroupKey::example();
        let mut other = key.clone();
        other.destination.region = crate::domain::ids::Region::parse("us-east-1").unwrap();
        let w = Window::DEFAULT;
        let arrived = verdict(Status::Replicated, Some(12_000));
        let pending = verdict(Status::Pending, None);
        let at = Timestamp::from_millis(0);
        assert_eq!(
            all_destinations(
                &key,
                Trigger::Push,
                Some("v1"),
                at,
                &[(key.clone(), arrived.clone()), (other.clone(), pending)],
                w
            ),
            None
        );
        let late = verdict(Status::Late, Some(2_000_000));
        let event = all_destinations(
            &key,
            Trigger::Push,
            Some("v1"),
            at,
            &[(key.clone(), arrived), (other, late)],
            w,
        )
        .unwrap();
        assert_eq!(event.detail_type, ALL_DESTINATIONS);
        assert_eq!(
            event.detail.verdict_id,
            "111122223333:us-west-2:team/app@sha256:aaaa:v1#all-destinations"
        );
        let on_time: Vec<_> = event
            .detail
            .destinations
            .iter()
            .map(|d| d.on_time)
            .collect();
        assert_eq!(on_time, [Some(true), Some(false)]);
    }

    /// What is parked after a failed publish is read back as the same event, for every kind:
    /// a restore's and a delete's trigger, a failure code, a stale tag, every destination.
    #[test]
    fn every_kind_of_event_reads_back_from_what_it_serialized_to() {
        let key = GroupKey::example();
        let w = Window::DEFAULT;
        let mut failed = verdict(Status::Failed, None);
        failed.failure_code = Some("REPLICATION_FAILURE".into());
        let mut restored = found(Finding::Missing);
        restored.owed = Owed::Copy(Trigger::Restore);
        let mut deleted = found(Finding::DeleteMissing);
        deleted.owed = Owed::Delete;
        deleted.tag = None;
        let mut events = vec![
            of_finding(&key, &found(Finding::Missing), None, w).unwrap(),
            of_finding(
                &key,
                &found(Finding::Failed {
                    failure_code: Some("REPLICATION_FAILURE".into()),
                }),
                Some(&failed),
                w,
            )
            .unwrap(),
            of_finding(
                &key,
                &found(Finding::StaleTag {
                    points_to: ImageDigest::parse("sha256:old").unwrap(),
                }),
                None,
                w,
            )
            .unwrap(),
            of_finding(&key, &found(Finding::Untagged), None, w).unwrap(),
            of_finding(&key, &restored, None, w).unwrap(),
            of_finding(&key, &deleted, None, w).unwrap(),
        ];
        let arrived = verdict(Status::Late, Some(2_000_000));
        events.extend(all_destinations(
            &key,
            Trigger::Restore,
            None,
            Timestamp::from_millis(0),
            &[(key.clone(), arrived)],
            w,
        ));
        let triggers: BTreeSet<_> = events.iter().map(|e| e.detail.trigger).collect();
        assert_eq!(triggers, BTreeSet::from(["delete", "push", "restore"]));
        for event in events {
            let detail = serde_json::to_string(&event).unwrap();
            assert_eq!(
                ReplicationEvent::parked(event.detail_type, &detail).as_ref(),
                Some(&event),
                "{detail}"
            );
        }
        assert_eq!(ReplicationEvent::parked("ECR Image Action", "{}"), None);
        assert_eq!(ReplicationEvent::parked(MISSED_THRESHOLD, "{}"), None);
    }
}
