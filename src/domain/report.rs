//! The audit report: every (push, destination) verdict, every (delete, destination) verdict
//! under delete replication, per-destination counts and lag percentiles, copies that matched no
//! push, and the records that were refused.
//!
//! Verdicts are folded in one at a time, so a caller streaming a month of events keeps only the
//! summary: counts, one counter per distinct lag value, and the few problem copies, unmatched
//! copies and rejected records a person can read (the worst, the earliest and the first
//! [`ReportBuilder::list_limit`] of each). Whoever needs every one of them takes them as they
//! come, through [`Findings`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use serde::Serialize;
use serde_json::{Value, json};

use super::config::Destination;
use super::correlate::{CopySeen, GroupKey, Outcome, Status, Trigger};
use super::deletion::{DeleteOutcome, DeleteStatus};
use super::ids::{AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName};
use super::time::{Timestamp, Window, seconds_value};

/// The verdict on one (push, destination), as the report lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationRecord {
    pub key: GroupKey,
    /// A push, or a restore (whose `pushed_at` is the restore's time, and `tag` none).
    pub trigger: Trigger,
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
            trigger: Trigger,
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
            trigger: self.trigger,
        }
        .serialize(s)
    }
}

/// The verdict on one (delete, destination) under delete replication, as the report lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionRecord {
    pub key: GroupKey,
    /// The tag the source's delete named; none for a delete by digest.
    pub tag: Option<ImageTag>,
    pub deleted_at: Timestamp,
    pub outcome: DeleteOutcome,
}

impl Serialize for DeletionRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Fields<'a> {
            deleted_at: Timestamp,
            destination_account: AccountId,
            destination_region: &'a Region,
            gone_at: Option<Timestamp>,
            image_digest: &'a ImageDigest,
            image_tag: &'a Option<ImageTag>,
            latency_seconds: Option<Value>,
            repository: &'a RepositoryName,
            source_account: AccountId,
            source_region: &'a Region,
            status: DeleteStatus,
        }
        Fields {
            deleted_at: self.deleted_at,
            destination_account: self.key.destination.account,
            destination_region: &self.key.destination.region,
            gone_at: self.outcome.gone_at,
            image_digest: &self.key.digest,
            image_tag: &self.tag,
            latency_seconds: self.outcome.latency_ms.map(seconds_value),
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
        // Written straight to the serializer, as a verdict is, without a `serde_json::Value`
        // (a map, and a string per field) first: the copies still unmatched at the end of a
        // day's stream are written after its last record, while the other core idles. The
        // same object as before, keys in alphabetical order, as the map wrote them in the
        // command line's build (in the test build, where serde_json's `preserve_order` is on
        // for a dev-dependency, the map kept the order it was written in).
        #[derive(Serialize)]
        struct Fields<'a> {
            destination_account: AccountId,
            destination_region: &'a Region,
            event_id: &'a EventId,
            image_digest: &'a ImageDigest,
            image_tag: &'a Option<ImageTag>,
            replicated_at: Timestamp,
            repository: &'a RepositoryName,
            result: &'static str,
            source_account: AccountId,
            source_region: &'a Region,
        }
        Fields {
            destination_account: self.key.destination.account,
            destination_region: &self.key.destination.region,
            event_id: &self.copy.id,
            image_digest: &self.key.digest,
            image_tag: &self.copy.tag,
            replicated_at: self.copy.at,
            repository: &self.key.repository,
            result: if self.copy.succeeded {
                "SUCCESS"
            } else {
                "FAILED"
            },
            source_account: self.key.source_account,
            source_region: &self.key.source_region,
        }
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
    /// Deletes (of an image or a tag): at a source they withdraw the copies still owed, and
    /// with delete replication they are owed at the destinations; at a destination they are a
    /// delete arriving.
    pub delete: u64,
    /// Restores of archived images: each is owed a copy like a push.
    pub restore: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub duplicate: u64,
}

/// Where each verdict, unmatched copy and rejected record goes as soon as it is final: the
/// report keeps only counts and a readable few, so a caller that lists them all (the JSON
/// report) takes them here. A closure over verdicts is one (the other two are then dropped).
pub trait Findings {
    fn verdict(&mut self, record: &ReplicationRecord);
    fn deletion(&mut self, _record: &DeletionRecord) {}
    fn unmatched(&mut self, _copy: &UnmatchedCopy) {}
    fn rejected(&mut self, _record: &RejectedRecord) {}
}

impl<F: FnMut(&ReplicationRecord)> Findings for F {
    fn verdict(&mut self, record: &ReplicationRecord) {
        self(record)
    }
}

/// How many problem copies, unmatched copies and rejected records a report lists by default:
/// more than anyone reads in a table, and a few hundred kilobytes at most.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// The `limit` smallest items by `rank` seen so far: a max-heap of at most `limit` entries.
#[derive(Debug)]
struct Smallest<T, K: Ord> {
    limit: usize,
    heap: BinaryHeap<Ranked<T, K>>,
}

#[derive(Debug)]
struct Ranked<T, K: Ord>(K, T);

impl<T, K: Ord> PartialEq for Ranked<T, K> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T, K: Ord> Eq for Ranked<T, K> {}
impl<T, K: Ord> PartialOrd for Ranked<T, K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T, K: Ord> Ord for Ranked<T, K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl<T, K: Ord> Smallest<T, K> {
    fn new(limit: usize) -> Self {
        Smallest {
            limit,
            heap: BinaryHeap::new(),
        }
    }

    /// Offers an item; `rank` is only computed, and `item` only cloned by the caller's `make`,
    /// when it may be kept.
    fn offer(&mut self, rank: K, make: impl FnOnce() -> T) {
        if self.heap.len() < self.limit {
            self.heap.push(Ranked(rank, make()));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && rank < worst.0
        {
            *worst = Ranked(rank, make());
        }
    }

    fn into_sorted(self) -> Vec<T> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Ranked(_, t)| t)
            .collect()
    }
}

/// Problem copies are listed worst kind first (missing, failed, untagged, late), then by push
/// time, then by key: a total order, so the same input always lists the same copies.
type ProblemRank = (
    std::cmp::Reverse<Status>,
    Timestamp,
    GroupKey,
    Option<ImageTag>,
);

fn problem_rank(r: &ReplicationRecord) -> ProblemRank {
    (
        std::cmp::Reverse(r.outcome.status),
        r.pushed_at,
        r.key.clone(),
        r.tag.clone(),
    )
}

/// The order problem copies are listed in (see [`ProblemRank`]).
pub fn problem_order(a: &ReplicationRecord, b: &ReplicationRecord) -> Ordering {
    problem_rank(a).cmp(&problem_rank(b))
}

/// Problem deletes are listed missing first, then late, then by delete time and key.
type DeleteProblemRank = (
    std::cmp::Reverse<DeleteStatus>,
    Timestamp,
    GroupKey,
    Option<ImageTag>,
);

fn delete_problem_rank(r: &DeletionRecord) -> DeleteProblemRank {
    (
        std::cmp::Reverse(r.outcome.status),
        r.deleted_at,
        r.key.clone(),
        r.tag.clone(),
    )
}

/// Unmatched copies are listed in time order.
type UnmatchedRank = (Timestamp, GroupKey, EventId);

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
    pub fn of(values: Vec<i64>) -> Option<Percentiles> {
        let mut counts = LagCounts::default();
        for v in values {
            counts.add(v);
        }
        counts.percentiles()
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

/// Every lag seen, as a count per distinct value: the same nearest-rank percentiles as the
/// sorted list of lags, in memory that follows how many *different* lags there are, not how
/// many copies. Event times are whole seconds, so a day of lags is at most 86,400 counters.
///
/// A lag of a whole number of seconds under [`DENSE_SECONDS`] is counted in a list indexed by
/// its seconds, which grows to the largest such lag seen (at most 512 KiB); any other lag, in a
/// hash map. Both are put in order only when the percentiles are asked for (once per
/// destination, at the end): every copy adds one lag, and a tree's lookup among tens of
/// thousands of values cost a replay more than all the rest of the report; a hash map's
/// lookup, 2.4% of `replay`'s auditing thread, where most lags are a few minutes and their
/// counters stay in the cache side by side (BENCHMARKS.md, "Seventh round").
#[derive(Clone, Debug, Default)]
pub struct LagCounts {
    /// Lags of `i` whole seconds, `0 <= i < DENSE_SECONDS`, at `i`.
    seconds: Vec<u64>,
    others: HashMap<i64, u64, foldhash::fast::FixedState>,
    total: u64,
}

/// Lags counted by their seconds: up to some 18 hours.
const DENSE_SECONDS: i64 = 1 << 16;

impl LagCounts {
    pub fn add(&mut self, ms: i64) {
        self.total += 1;
        if ms >= 0 && ms % 1000 == 0 && ms / 1000 < DENSE_SECONDS {
            let i = (ms / 1000) as usize;
            if i >= self.seconds.len() {
                self.seconds.resize(i + 1, 0);
            }
            self.seconds[i] += 1;
        } else {
            *self.others.entry(ms).or_default() += 1;
        }
    }

    /// Distinct lag values held.
    pub fn distinct(&self) -> usize {
        self.seconds.iter().filter(|&&c| c > 0).count() + self.others.len()
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        let n = self.total;
        let mut counts: Vec<(i64, u64)> = self.others.iter().map(|(&v, &c)| (v, c)).collect();
        counts.extend(
            (0i64..)
                .zip(&self.seconds)
                .filter(|&(_, &c)| c > 0)
                .map(|(s, &c)| (s * 1000, c)),
        );
        counts.sort_unstable();
        let max = counts.last()?.0;
        // The ranks wanted, in increasing order, found in one walk up the counts.
        let ranks = [50u64, 90, 99].map(|p| (p * n).div_ceil(100).clamp(1, n));
        let mut found = [max; 3];
        let mut next = 0;
        let mut below = 0u64;
        for (value, count) in counts {
            below += count;
            while next < ranks.len() && ranks[next] <= below {
                found[next] = value;
                next += 1;
            }
            if next == ranks.len() {
                break;
            }
        }
        Some(Percentiles {
            p50: found[0],
            p90: found[1],
            p99: found[2],
            max,
        })
    }
}

/// Counts per status and lag for one destination.
#[derive(Clone, Debug, Default)]
struct DestinationStats {
    counts: [u64; Status::ALL.len()],
    lags: LagCounts,
    /// Deletes owed under delete replication, per status.
    deletes: [u64; DeleteStatus::ALL.len()],
}

/// One destination's line in the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationSummary {
    pub destination: Destination,
    /// Copies expected (pushes and restores).
    pub expected: u64,
    pub counts: BTreeMap<Status, u64>,
    pub latency: Option<Percentiles>,
    /// Deletes owed under delete replication, per status.
    pub deletes: BTreeMap<DeleteStatus, u64>,
}

impl DestinationSummary {
    pub fn count(&self, status: Status) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    pub fn deletes(&self, status: DeleteStatus) -> u64 {
        self.deletes.get(&status).copied().unwrap_or(0)
    }

    /// Deletes owed here, whatever became of them.
    pub fn deletes_expected(&self) -> u64 {
        self.deletes.values().sum()
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
        let mut deletions = json!({"expected": self.deletes_expected()});
        for status in DeleteStatus::ALL {
            deletions[status.as_str()] = json!(self.deletes(status));
        }
        v["deletions"] = deletions;
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
#[derive(Debug)]
pub struct ReportBuilder {
    pub events: EventCounts,
    destinations: BTreeMap<Destination, DestinationStats>,
    problems: Smallest<ReplicationRecord, ProblemRank>,
    problems_total: u64,
    delete_problems: Smallest<DeletionRecord, DeleteProblemRank>,
    delete_problems_total: u64,
    unmatched: Smallest<UnmatchedCopy, UnmatchedRank>,
    unmatched_total: u64,
    rejected: Vec<RejectedRecord>,
    list_limit: usize,
    unconfigured: BTreeMap<(AccountId, Region), u64>,
    latest_event: Option<Timestamp>,
}

impl Default for ReportBuilder {
    fn default() -> Self {
        ReportBuilder::with_list_limit(DEFAULT_LIST_LIMIT)
    }
}

impl ReportBuilder {
    /// A builder that lists at most `limit` problem copies (the worst), unmatched copies (the
    /// earliest) and rejected records (the first); every one is still counted.
    pub fn with_list_limit(limit: usize) -> Self {
        ReportBuilder {
            events: EventCounts::default(),
            destinations: BTreeMap::new(),
            problems: Smallest::new(limit),
            problems_total: 0,
            delete_problems: Smallest::new(limit),
            delete_problems_total: 0,
            unmatched: Smallest::new(limit),
            unmatched_total: 0,
            rejected: Vec::new(),
            list_limit: limit,
            unconfigured: BTreeMap::new(),
            latest_event: None,
        }
    }

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
            stats.lags.add(ms);
        }
        if record.outcome.status.is_problem() {
            self.problems_total += 1;
            self.problems.offer(problem_rank(record), || record.clone());
        }
    }

    pub fn add_deletion(&mut self, record: &DeletionRecord) {
        let stats = self
            .destinations
            .entry(record.key.destination.clone())
            .or_default();
        stats.deletes[record.outcome.status as usize] += 1;
        if record.outcome.status.is_problem() {
            self.delete_problems_total += 1;
            self.delete_problems
                .offer(delete_problem_rank(record), || record.clone());
        }
    }

    pub fn add_unmatched(&mut self, copy: &UnmatchedCopy) {
        self.unmatched_total += 1;
        self.unmatched.offer(
            (copy.copy.at, copy.key.clone(), copy.copy.id.clone()),
            || copy.clone(),
        );
    }

    pub fn add_rejected(&mut self, rejected: &RejectedRecord) {
        self.events.rejected += 1;
        if self.rejected.len() < self.list_limit {
            self.rejected.push(rejected.clone());
        }
    }

    pub fn add_unconfigured_push(&mut self, account: AccountId, region: &Region) {
        *self
            .unconfigured
            .entry((account, region.clone()))
            .or_default() += 1;
    }

    pub fn finish(self, window: Window, now: Option<Timestamp>) -> Report {
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
                latency: stats.lags.percentiles(),
                deletes: DeleteStatus::ALL
                    .iter()
                    .map(|&s| (s, stats.deletes[s as usize]))
                    .collect(),
            })
            .collect();
        Report {
            window,
            now,
            events: self.events,
            destinations,
            problems: self.problems.into_sorted(),
            problems_total: self.problems_total,
            delete_problems: self.delete_problems.into_sorted(),
            delete_problems_total: self.delete_problems_total,
            unmatched: self.unmatched.into_sorted(),
            unmatched_total: self.unmatched_total,
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
    /// Missing, failed, untagged and late copies, worst kind first, then by push time: the
    /// first `list_limit` of them.
    pub problems: Vec<ReplicationRecord>,
    /// How many problem copies there were in all.
    pub problems_total: u64,
    /// Missing and late deletes (delete replication), missing first, then by delete time: the
    /// first `list_limit` of them...
    pub delete_problems: Vec<DeletionRecord>,
    /// ...and how many there were in all.
    pub delete_problems_total: u64,
    /// Copies that matched no push, in time order: the first `list_limit`.
    pub unmatched: Vec<UnmatchedCopy>,
    pub unmatched_total: u64,
    /// The first `list_limit` rejected records, in input order (`events.rejected` counts all).
    pub rejected: Vec<RejectedRecord>,
    pub unconfigured: Vec<UnconfiguredSource>,
}

impl Report {
    /// Whether any copy is late, untagged, failed, missing or archived, or any delete owed is
    /// late or missing (the audit's exit status 1).
    pub fn has_problems(&self) -> bool {
        self.problems_total > 0 || self.delete_problems_total > 0
    }

    /// Whether any delete was owed at all (delete replication on a rule that saw a delete).
    pub fn has_deletes(&self) -> bool {
        self.destinations.iter().any(|d| d.deletes_expected() > 0)
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

    /// The nearest rank on the sorted list, as the report computed it before it kept counts.
    fn sorted_rank(values: &[i64], p: usize) -> i64 {
        let mut v = values.to_vec();
        v.sort_unstable();
        v[(p * v.len()).div_ceil(100).clamp(1, v.len()) - 1]
    }

    #[test]
    fn lag_counts_give_the_percentiles_of_the_sorted_list_in_one_counter_per_distinct_lag() {
        // A fixed pseudo-random walk over sizes 1..400 and lags with many repeats.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for n in 1..400usize {
            let values: Vec<i64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let seconds = (x % 97) as i64 - 5;
                    // Whole seconds mostly; now and then a lag with milliseconds, or one
                    // past what is counted by its seconds.
                    match (x >> 8) % 11 {
                        0 => seconds * 1000 + 250,
                        1 => (DENSE_SECONDS + seconds) * 1000,
                        _ => seconds * 1000,
                    }
                })
                .collect();
            let mut counts = LagCounts::default();
            values.iter().for_each(|&v| counts.add(v));
            let p = counts.percentiles().unwrap();
            assert_eq!(
                (p.p50, p.p90, p.p99, p.max),
                (
                    sorted_rank(&values, 50),
                    sorted_rank(&values, 90),
                    sorted_rank(&values, 99),
                    *values.iter().max().unwrap()
                ),
                "{values:?}"
            );
            assert!(counts.distinct() <= 3 * 97);
            let mut distinct = values.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(counts.distinct(), distinct.len());
        }
        assert_eq!(LagCounts::default().percentiles(), None);
    }

    fn record(status: Status, pushed_secs: i64, digest: &str) -> ReplicationRecord {
        ReplicationRecord {
            key: GroupKey {
                digest: ImageDigest::parse(digest).unwrap(),
                ..GroupKey::example()
            },
            trigger: Trigger::Push,
            tag: None,
            pushed_at: Timestamp::from_millis(pushed_secs * 1000),
            outcome: Outcome {
                status,
                replicated_at: None,
                latency_ms: None,
            },
        }
    }

    #[test]
    fn a_limited_report_lists_the_worst_problems_in_order_and_counts_them_all() {
        let statuses = [
            Status::Late,
            Status::Missing,
            Status::Replicated,
            Status::Untagged,
            Status::Failed,
            Status::Pending,
        ];
        let all: Vec<ReplicationRecord> = (0..60)
            .map(|i| record(statuses[i % 6], 1000 - i as i64, &format!("sha256:{i:04}")))
            .collect();
        let mut unlimited = ReportBuilder::with_list_limit(usize::MAX);
        let mut limited = ReportBuilder::with_list_limit(7);
        for r in &all {
            unlimited.add_verdict(r);
            limited.add_verdict(r);
        }
        let (unlimited, limited) = (
            unlimited.finish(Window::DEFAULT, None),
            limited.finish(Window::DEFAULT, None),
        );
        assert_eq!(unlimited.problems.len(), 40);
        assert_eq!((limited.problems_total, unlimited.problems_total), (40, 40));
        assert_eq!(limited.problems, unlimited.problems[..7].to_vec());
        assert!(
            limited
                .problems
                .iter()
                .all(|p| p.outcome.status == Status::Missing)
        );
        let mut sorted = all.clone();
        sorted.retain(|r| r.outcome.status.is_problem());
        sorted.sort_by(problem_order);
        assert_eq!(unlimited.problems, sorted);
        assert_eq!(limited.destinations, unlimited.destinations);
        assert!(limited.has_problems());
    }

    #[test]
    fn a_limited_report_keeps_the_earliest_unmatched_and_the_first_rejected() {
        let mut b = ReportBuilder::with_list_limit(2);
        for secs in [50, 10, 40, 20, 30] {
            let r = record(Status::Replicated, 0, "sha256:aaaa");
            b.add_unmatched(&UnmatchedCopy {
                key: r.key,
                copy: CopySeen {
                    id: EventId::parse(&format!("copy-{secs}")).unwrap(),
                    at: Timestamp::from_millis(secs * 1000),
                    tag: None,
                    succeeded: true,
                },
            });
        }
        for line in 1..=4 {
            b.add_rejected(&RejectedRecord {
                record: format!("f:{line}"),
                event_id: None,
                field: "time".into(),
                reason: "bad".into(),
            });
        }
        let r = b.finish(Window::DEFAULT, None);
        let at: Vec<i64> = r.unmatched.iter().map(|u| u.copy.at.millis()).collect();
        assert_eq!(at, [10_000, 20_000]);
        assert_eq!(r.unmatched_total, 5);
        let lines: Vec<&str> = r.rejected.iter().map(|x| x.record.as_str()).collect();
        assert_eq!(lines, ["f:1", "f:2"]);
        assert_eq!(r.events.rejected, 4);
        assert!(!r.has_problems());
    }

    #[test]
    fn a_missing_delete_is_a_problem_listed_and_counted_per_destination() {
        let record = |status, secs: i64| DeletionRecord {
            key: GroupKey::example(),
            tag: Some(ImageTag::parse("v1").unwrap()),
            deleted_at: Timestamp::from_millis(secs * 1000),
            outcome: DeleteOutcome {
                status,
                gone_at: None,
                latency_ms: None,
            },
        };
        let mut b = ReportBuilder::with_list_limit(1);
        b.add_deletion(&record(DeleteStatus::Replicated, 1));
        b.add_deletion(&record(DeleteStatus::Late, 2));
        b.add_deletion(&record(DeleteStatus::Missing, 3));
        b.add_deletion(&record(DeleteStatus::Pending, 4));
        let r = b.finish(Window::DEFAULT, None);
        assert!(r.has_problems() && r.has_deletes());
        assert_eq!(r.delete_problems_total, 2);
        assert_eq!(r.delete_problems, vec![record(DeleteStatus::Missing, 3)]);
        let d = &r.destinations[0];
        assert_eq!((d.expected, d.deletes_expected()), (0, 4));
        let json = serde_json::to_value(d).unwrap();
        assert_eq!(
            json["deletions"],
            json!({"expected": 4, "replicated": 1, "late": 1, "missing": 1, "pending": 1})
        );
        let listed = serde_json::to_value(record(DeleteStatus::Missing, 3)).unwrap();
        let mut keys: Vec<&str> = listed
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "deleted_at",
                "destination_account",
                "destination_region",
                "gone_at",
                "image_digest",
                "image_tag",
                "latency_seconds",
                "repository",
                "source_account",
                "source_region",
                "status"
            ]
        );
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
            trigger: Trigger::Push,
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
            trigger: Trigger::Restore,
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
                "trigger": r.trigger,
            });
            // The same object (keys and values); the order of keys is not part of the report.
            let written: Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
            assert_eq!(written, map);
        }
    }

    #[test]
    fn an_unmatched_copy_is_written_as_the_same_object_as_a_map_of_its_fields() {
        let key = GroupKey::example();
        let mut texts = Vec::new();
        for (tag, succeeded) in [(Some("v1"), true), (None, false)] {
            let copy = UnmatchedCopy {
                key: key.clone(),
                copy: CopySeen {
                    id: EventId::parse("e-1").unwrap(),
                    at: Timestamp::from_millis(1_719_830_000_000),
                    tag: tag.map(|t| ImageTag::parse(t).unwrap()),
                    succeeded,
                },
            };
            // What the report wrote before it skipped the `Value`.
            let map = json!({
                "event_id": copy.copy.id,
                "source_account": copy.key.source_account,
                "source_region": copy.key.source_region,
                "repository": copy.key.repository,
                "image_digest": copy.key.digest,
                "image_tag": copy.copy.tag,
                "destination_account": copy.key.destination.account,
                "destination_region": copy.key.destination.region,
                "replicated_at": copy.copy.at,
                "result": if succeeded { "SUCCESS" } else { "FAILED" },
            });
            let text = serde_json::to_string(&copy).unwrap();
            let written: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(written, map);
            texts.push(text);
        }
        // Keys in alphabetical order, as the command line's build wrote the map.
        assert_eq!(
            texts[1],
            concat!(
                r#"{"destination_account":"444455556666","destination_region":"eu-west-1","#,
                r#""event_id":"e-1","image_digest":"sha256:aaaa","image_tag":null,"#,
                r#""replicated_at":"2024-07-01T10:33:20Z","repository":"team/app","#,
                r#""result":"FAILED","source_account":"111122223333","source_region":"us-west-2"}"#
            )
        );
    }
}
