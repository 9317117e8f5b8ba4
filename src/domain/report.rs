//! The audit report: every (push, destination) verdict, per-destination counts and lag
//! percentiles, copies that matched no push, and the records that were refused.
//!
//! Verdicts are folded in one at a time, so a caller streaming a month of events keeps only the
//! summary, the problem copies and one latency figure per copy, never every record.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::config::Destination;
use super::correlate::{CopySeen, GroupKey, Outcome, Status};
use super::ids::{AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName};
use super::time::{Timestamp, Window, seconds_value};

/// The verdict on one (push, destination), as the report lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationRecord {
    pub key: GroupKey,
    pub tag: Option<ImageTag>,
    pub pushed_at: Timestamp,
    pub outcome: Outcome,
}

impl Serialize for ReplicationRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `replay --format json` writes one of these per verdict: written straight to the
        // serializer, without building a `serde_json::Value` (a map, and a string per field)
        // first. The same object as before, keys in alphabetical order.
        #[derive(Serialize)]
        struct Fields<'a> {
            destination_account: AccountId,
            destination_region: &'a Region,
            image_digest: &'a ImageDigest,
            image_tag: &'a Option<ImageTag>,
            latency_seconds: Option<Value>,
            pushed_at: Timestamp,
            replicated_at: Option<Timestamp>,
            repository: &'a RepositoryName,
            source_account: AccountId,
            source_region: &'a Region,
            status: Status,
        }
        Fields {
            destination_account: self.key.destination.account,
            destination_region: &self.key.destination.region,
            image_digest: &self.key.digest,
            image_tag: &self.tag,
            latency_seconds: self.outcome.latency_ms.map(seconds_value),
            pushed_at: self.pushed_at,
            replicated_at: self.outcome.replicated_at,
            repository: &self.key.repository,
            source_account: self.key.source_account,
            source_region: &self.key.source_region,
            status: self.outcome.status,
        }
        .serialize(s)
    }
}

/// A copy event that matches no push: its push was never seen (lost, outside the input, or in a
/// Region whose configuration was not given), or it carries a tag nobody pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmatchedCopy {
    pub key: GroupKey,
    pub copy: CopySeen,
}

impl Serialize for UnmatchedCopy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({
            "event_id": self.copy.id,
            "source_account": self.key.source_account,
            "source_region": self.key.source_region,
            "repository": self.key.repository,
            "image_digest": self.key.digest,
            "image_tag": self.copy.tag,
            "destination_account": self.key.destination.account,
            "destination_region": self.key.destination.region,
            "replicated_at": self.copy.at,
            "result": if self.copy.succeeded { "SUCCESS" } else { "FAILED" },
        })
        .serialize(s)
    }
}

/// A record that was refused, with where it was and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RejectedRecord {
    /// Where the record was: `file:line`, `file[index]`, or `stdin:line`.
    pub record: String,
    pub event_id: Option<EventId>,
    pub field: String,
    pub reason: String,
}

/// How many records of each kind were read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    pub read: u64,
    pub push: u64,
    pub replication: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub duplicate: u64,
}

/// Nearest-rank percentiles of copy lag, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: i64,
    pub p90: i64,
    pub p99: i64,
    pub max: i64,
}

impl Percentiles {
    /// The nearest-rank percentile: the smallest value with at least p% of the values at or
    /// below it. No interpolation, so every figure is a lag that really happened.
    pub fn of(mut values: Vec<i64>) -> Option<Percentiles> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank = |p: usize| {
            let n = values.len();
            let r = (p * n).div_ceil(100).clamp(1, n);
            values[r - 1]
        };
        Some(Percentiles {
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
            max: values[values.len() - 1],
        })
    }

    fn to_json(self) -> Value {
        json!({
            "p50": seconds_value(self.p50),
            "p90": seconds_value(self.p90),
            "p99": seconds_value(self.p99),
            "max": seconds_value(self.max),
        })
    }
}

/// Counts per status and lag for one destination.
#[derive(Clone, Debug, Default)]
struct DestinationStats {
    counts: [u64; Status::ALL.len()],
    latencies_ms: Vec<i64>,
}

/// One destination's line in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationSummary {
    pub destination: Destination,
    pub expected: u64,
    pub counts: BTreeMap<Status, u64>,
    pub latency: Option<Percentiles>,
}

impl DestinationSummary {
    pub fn count(&self, status: Status) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }
}

impl Serialize for DestinationSummary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut v = json!({
            "destination_account": self.destination.account,
            "destination_region": self.destination.region,
            "expected": self.expected,
            "latency_seconds": self.latency.map(Percentiles::to_json),
        });
        for status in Status::ALL {
            v[status.as_str()] = json!(self.count(status));
        }
        v.serialize(s)
    }
}

/// A source registry and Region that had pushes but no replication configuration, so nothing
/// could be expected of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnconfiguredSource {
    pub account: AccountId,
    pub region: Region,
    pub pushes: u64,
}

/// Folds verdicts and events into a [`Report`].
#[derive(Debug, Default)]
pub struct ReportBuilder {
    pub events: EventCounts,
    destinations: BTreeMap<Destination, DestinationStats>,
    problems: Vec<ReplicationRecord>,
    unmatched: Vec<UnmatchedCopy>,
    rejected: Vec<RejectedRecord>,
    unconfigured: BTreeMap<(AccountId, Region), u64>,
    latest_event: Option<Timestamp>,
}

impl ReportBuilder {
    /// Notes an event's time: by default the audit's "now" is the latest event read.
    pub fn saw_time(&mut self, at: Timestamp) {
        self.latest_event = Some(self.latest_event.map_or(at, |t| t.max(at)));
    }

    pub fn latest_event(&self) -> Option<Timestamp> {
        self.latest_event
    }

    pub fn add_verdict(&mut self, record: &ReplicationRecord) {
        let stats = self
            .destinations
            .entry(record.key.destination.clone())
            .or_default();
        stats.counts[record.outcome.status as usize] += 1;
        if let Some(ms) = record.outcome.latency_ms {
            stats.latencies_ms.push(ms);
        }
        if record.outcome.status.is_problem() {
            self.problems.push(record.clone());
        }
    }

    pub fn add_unmatched(&mut self, copy: UnmatchedCopy) {
        self.unmatched.push(copy);
    }

    pub fn add_rejected(&mut self, rejected: RejectedRecord) {
        self.events.rejected += 1;
        self.rejected.push(rejected);
    }

    pub fn add_unconfigured_push(&mut self, account: AccountId, region: &Region) {
        *self
            .unconfigured
            .entry((account, region.clone()))
            .or_default() += 1;
    }

    pub fn finish(mut self, window: Window, now: Option<Timestamp>) -> Report {
        // Worst first: missing, failed, untagged, late; then by push time.
        self.problems.sort_by(|a, b| {
            let rank = |r: &ReplicationRecord| (std::cmp::Reverse(r.outcome.status), r.pushed_at);
            rank(a).cmp(&rank(b)).then_with(|| a.key.cmp(&b.key))
        });
        self.unmatched
            .sort_by(|a, b| (a.copy.at, &a.key, &a.copy.id).cmp(&(b.copy.at, &b.key, &b.copy.id)));
        let destinations = self
            .destinations
            .into_iter()
            .map(|(destination, stats)| DestinationSummary {
                destination,
                expected: stats.counts.iter().sum(),
                counts: Status::ALL
                    .iter()
                    .map(|&s| (s, stats.counts[s as usize]))
                    .collect(),
                latency: Percentiles::of(stats.latencies_ms),
            })
            .collect();
        Report {
            window,
            now,
            events: self.events,
            destinations,
            problems: self.problems,
            unmatched: self.unmatched,
            rejected: self.rejected,
            unconfigured: self
                .unconfigured
                .into_iter()
                .map(|((account, region), pushes)| UnconfiguredSource {
                    account,
                    region,
                    pushes,
                })
                .collect(),
        }
    }
}

/// The finished report (without the full list of verdicts, which callers stream).
#[derive(Clone, Debug)]
pub struct Report {
    pub window: Window,
    pub now: Option<Timestamp>,
    pub events: EventCounts,
    pub destinations: Vec<DestinationSummary>,
    /// Missing, failed, untagged and late copies, worst kind first.
    pub problems: Vec<ReplicationRecord>,
    pub unmatched: Vec<UnmatchedCopy>,
    pub rejected: Vec<RejectedRecord>,
    pub unconfigured: Vec<UnconfiguredSource>,
}

impl Report {
    /// Whether any copy is late, untagged, failed or missing (the audit's exit status 1).
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    pub fn total(&self, status: Status) -> u64 {
        self.destinations.iter().map(|d| d.count(status)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_pick_real_values() {
        let p = Percentiles::of((1..=100).collect()).unwrap();
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50, 90, 99, 100));
        let p = Percentiles::of(vec![7]).unwrap();
        assert_eq!((p.p50, p.p99, p.max), (7, 7, 7));
        let p = Percentiles::of(vec![30, 10, 20]).unwrap();
        assert_eq!((p.p50, p.p90, p.max), (20, 30, 30));
        assert_eq!(Percentiles::of(vec![]), None);
    }

    #[test]
    fn a_verdict_is_written_as_the_same_json_object_as_a_map_of_its_fields() {
        let key = GroupKey {
            source_account: AccountId::parse("111122223333").unwrap(),
            source_region: Region::parse("us-west-2").unwrap(),
            repository: RepositoryName::parse("team/app").unwrap(),
            digest: ImageDigest::parse("sha256:aaaa").unwrap(),
            destination: Destination {
                account: AccountId::parse("044455556666").unwrap(),
                region: Region::parse("eu-west-1").unwrap(),
            },
        };
        let pushed_at = Timestamp::from_millis(1_719_828_000_000);
        let replicated = ReplicationRecord {
            key: key.clone(),
            tag: Some(ImageTag::parse("v1").unwrap()),
            pushed_at,
            outcome: Outcome {
                status: Status::Late,
                replicated_at: Some(Timestamp::from_millis(1_719_830_000_500)),
                latency_ms: Some(2_000_500),
            },
        };
        let pending = ReplicationRecord {
            key,
            tag: None,
            pushed_at,
            outcome: Outcome {
                status: Status::Pending,
                replicated_at: None,
                latency_ms: None,
            },
        };
        for r in [replicated, pending] {
            // What the report wrote before it skipped the `Value`.
            let map = json!({
                "source_account": r.key.source_account,
                "source_region": r.key.source_region,
                "repository": r.key.repository,
                "image_digest": r.key.digest,
                "image_tag": r.tag,
                "destination_account": r.key.destination.account,
                "destination_region": r.key.destination.region,
                "pushed_at": r.pushed_at,
                "replicated_at": r.outcome.replicated_at,
                "latency_seconds": r.outcome.latency_ms.map(seconds_value),
                "status": r.outcome.status,
            });
            // The same object (keys and values); the order of keys is not part of the report.
            let written: Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(written, map);
        }
    }
}
