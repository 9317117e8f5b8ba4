//! The metrics the auditor publishes, and how samples become the data points CloudWatch takes.
//!
//! The domain produces [`Sample`]s (one observation each: "this expectation was late", "this copy
//! took 12.5 s"). [`series`] turns them into the published series: every dimensioned sample once
//! per destination and once more without dimensions, so a single alarm on the dimensionless
//! metric covers every destination. [`aggregate`] then folds the series into [`Datum`]s shaped
//! like CloudWatch's `MetricDatum` (distinct values with their counts), within the API's limits.
//! Which sink sends them (PutMetricData or EMF log lines) is the adapters' business.

use std::collections::BTreeMap;

use super::ids::{AccountId, Region, RepositoryName};
use super::time::Timestamp;

/// The namespace used when the configuration names none.
pub const DEFAULT_NAMESPACE: &str = "ECRReplication";

/// PutMetricData accepts at most 150 distinct values (with their counts) per datum.
pub const MAX_VALUES_PER_DATUM: usize = 150;

/// What a metric measures. The names mirror the vocabulary of S3 Replication Time Control
/// (`ReplicationLatency`, `OperationsPendingReplication`, ...), which users already alarm on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetricName {
    /// A push opened an expectation for one destination.
    ReplicationsExpected,
    /// A successful copy arrived for an expectation (on time or not, tagged or not).
    ReplicationsCompleted,
    /// Copy time minus push time, in seconds, for every copy that arrived.
    ReplicationLatency,
    /// A copy arrived after the replication window.
    ReplicationsLate,
    /// The window passed with no copy.
    ReplicationsMissing,
    /// ECR reported the replication as FAILED and no successful copy followed.
    ReplicationsFailed,
    /// A copy arrived without the tag that was pushed.
    UntaggedCopies,
    /// A destination tag points at another digest than the one pushed with that tag.
    StaleTags,
    /// The window passed with no copy, and none was owed any more: the image or its tag was
    /// deleted at the source within the window, or the destination is no longer configured.
    ReplicationsWithdrawn,
    /// Copies still in flight for a destination (inside their window, or due and not yet
    /// confirmed), measured at each sweep.
    PendingReplications,
    /// A copy found `ARCHIVED` in its destination: there, but it cannot be pulled.
    CopiesArchived,
    /// A delete at the source that a rule with delete replication owes a destination.
    DeletesExpected,
    /// Such a delete applied in the destination (its event, or the image or tag confirmed gone),
    /// on time or not.
    DeletesReplicated,
    /// Such a delete applied after the replication window.
    DeletesLate,
    /// Such a delete not applied one window after it: the image or tag is still in the
    /// destination, confirmed with `DescribeImages`.
    DeletesMissing,
    /// Destination delete time minus source delete time, in seconds, when an event tells it.
    DeleteReplicationLatency,
    /// Copies counted missing or failed that the sweep still watches (a late arrival is still
    /// counted), measured every few sweeps.
    ReplicationsWatched,
    /// Events refused as malformed: they have no source or destination, so no dimensions.
    EventsRejected,
    /// Gauges of the scheduled inventory reconciliation ([`super::drift`]), per destination,
    /// at the end of each pass: images the rules promise that are absent there...
    ImagesMissingAtDestination,
    /// ...source tags whose destination digest differs (or that the copy lacks)...
    StaleTagsAtDestination,
    /// ...copies archived (or being restored) there while the source's image is active...
    ArchivedCopies,
    /// ...with delete replication on, digests and tags still there that no source has...
    NotDeletedAtDestination,
    /// ...and repository settings that differ from the source's (lifecycle warnings included).
    RepositorySettingsDrift,
    /// Events from a registry the auditor cannot read (no read role, a wrong external id,
    /// access denied): a setup gap, acknowledged and counted here rather than failed. The
    /// account is in the log line; no dimensions.
    SourcesUnreadable,
    /// Stored items the sweep could not read (edited by hand, or left by a newer version): each
    /// is skipped, logged with its key and counted here, and everything else is confirmed.
    StateItemsUnreadable,
    /// Replication events not published when due, each time it happens: parked by the
    /// invocation that made them (`PutEvents` would not take them after the SDK's retries), or
    /// left parked by a sweep that could not publish them either. While publishing is broken
    /// every sweep counts what it leaves of the (at most 100) it read, so the series stays up
    /// until it works again; a sweep that cannot read them counts nothing. No dimensions.
    EventsParked,
}

impl MetricName {
    pub const ALL: [MetricName; 26] = [
        MetricName::ReplicationsExpected,
        MetricName::ReplicationsCompleted,
        MetricName::ReplicationLatency,
        MetricName::ReplicationsLate,
        MetricName::ReplicationsMissing,
        MetricName::ReplicationsFailed,
        MetricName::UntaggedCopies,
        MetricName::StaleTags,
        MetricName::ReplicationsWithdrawn,
        MetricName::PendingReplications,
        MetricName::ReplicationsWatched,
        MetricName::EventsRejected,
        MetricName::CopiesArchived,
        MetricName::DeletesExpected,
        MetricName::DeletesReplicated,
        MetricName::DeletesLate,
        MetricName::DeletesMissing,
        MetricName::DeleteReplicationLatency,
        MetricName::ImagesMissingAtDestination,
        MetricName::StaleTagsAtDestination,
        MetricName::ArchivedCopies,
        MetricName::NotDeletedAtDestination,
        MetricName::RepositorySettingsDrift,
        MetricName::SourcesUnreadable,
        MetricName::StateItemsUnreadable,
        MetricName::EventsParked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::ReplicationsExpected => "ReplicationsExpected",
            MetricName::ReplicationsCompleted => "ReplicationsCompleted",
            MetricName::ReplicationLatency => "ReplicationLatency",
            MetricName::ReplicationsLate => "ReplicationsLate",
            MetricName::ReplicationsMissing => "ReplicationsMissing",
            MetricName::ReplicationsFailed => "ReplicationsFailed",
            MetricName::UntaggedCopies => "UntaggedCopies",
            MetricName::StaleTags => "StaleTags",
            MetricName::ReplicationsWithdrawn => "ReplicationsWithdrawn",
            MetricName::PendingReplications => "PendingReplications",
            MetricName::ReplicationsWatched => "ReplicationsWatched",
            MetricName::EventsRejected => "EventsRejected",
            MetricName::CopiesArchived => "CopiesArchived",
            MetricName::DeletesExpected => "DeletesExpected",
            MetricName::DeletesReplicated => "DeletesReplicated",
            MetricName::DeletesLate => "DeletesLate",
            MetricName::DeletesMissing => "DeletesMissing",
            MetricName::DeleteReplicationLatency => "DeleteReplicationLatency",
            MetricName::ImagesMissingAtDestination => "ImagesMissingAtDestination",
            MetricName::StaleTagsAtDestination => "StaleTagsAtDestination",
            MetricName::ArchivedCopies => "ArchivedCopies",
            MetricName::NotDeletedAtDestination => "NotDeletedAtDestination",
            MetricName::RepositorySettingsDrift => "RepositorySettingsDrift",
            MetricName::SourcesUnreadable => "SourcesUnreadable",
            MetricName::StateItemsUnreadable => "StateItemsUnreadable",
            MetricName::EventsParked => "EventsParked",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            MetricName::ReplicationLatency | MetricName::DeleteReplicationLatency => Unit::Seconds,
            _ => Unit::Count,
        }
    }
}

/// The CloudWatch units the auditor uses; the names are the same in PutMetricData and EMF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Count,
    Seconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
        }
    }
}

/// How far back PutMetricData takes a timestamp: two weeks (the API reference: "as much as two
/// weeks before the current date"). A datum older than that fails the whole request.
pub const OLDEST_ACCEPTED_MS: i64 = 14 * 24 * 3_600_000;
/// How far ahead it takes one: two hours ("as much as 2 hours after the current day and time").
pub const NEWEST_ACCEPTED_MS: i64 = 2 * 3_600_000;
/// What is kept clear of both limits: CloudWatch judges by its own clock when the request
/// arrives, which may differ from the invocation's by clock skew and the invocation's length.
pub const ACCEPTED_MARGIN_MS: i64 = 3_600_000;

/// `at` brought inside what PutMetricData accepts when published at about `now`, with
/// [`ACCEPTED_MARGIN_MS`] to spare: a copy found with a months-old `imagePushedAt` is dated
/// about two weeks back rather than refused (with every other datum of the request).
pub fn accepted_timestamp(at: Timestamp, now: Timestamp) -> Timestamp {
    let oldest = now
        .millis()
        .saturating_sub(OLDEST_ACCEPTED_MS - ACCEPTED_MARGIN_MS);
    let newest = now
        .millis()
        .saturating_add(NEWEST_ACCEPTED_MS - ACCEPTED_MARGIN_MS);
    Timestamp::from_millis(at.millis().clamp(oldest, newest))
}

/// Names of the dimensions, in the order every datum lists them.
pub const SOURCE_REGION: &str = "SourceRegion";
pub const DESTINATION_REGION: &str = "DestinationRegion";
pub const DESTINATION_ACCOUNT: &str = "DestinationAccount";
pub const REPOSITORY: &str = "Repository";

/// Where a replication went: one CloudWatch metric per distinct value of these.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dimensions {
    pub source_region: Region,
    pub destination_region: Region,
    pub destination_account: AccountId,
    /// Published only when the configuration asks for it: every repository multiplies the
    /// number of custom metrics, and each one is billed.
    pub repository: Option<RepositoryName>,
}

impl Dimensions {
    /// The (name, value) pairs of a datum, in a fixed order.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            (SOURCE_REGION, self.source_region.to_string()),
            (DESTINATION_REGION, self.destination_region.to_string()),
            (DESTINATION_ACCOUNT, self.destination_account.to_string()),
        ];
        if let Some(repository) = &self.repository {
            pairs.push((REPOSITORY, repository.to_string()));
        }
        pairs
    }
}

/// One observation.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: MetricName,
    /// `None` for what belongs to no destination ([`MetricName::EventsRejected`]).
    pub dimensions: Option<Dimensions>,
    pub value: f64,
    pub at: Timestamp,
}

/// The published series: every sample with dimensions is emitted with them (its repository kept
/// only when `with_repository` is set) and once more without any, so one alarm on the
/// dimensionless metric covers every destination. A sample without dimensions is emitted once.
pub fn series(samples: &[Sample], with_repository: bool) -> Vec<Sample> {
    let mut out = Vec::with_capacity(samples.len() * 2);
    for sample in samples {
        if let Some(dimensions) = &sample.dimensions {
            let mut dimensions = dimensions.clone();
            if !with_repository {
                dimensions.repository = None;
            }
            out.push(Sample {
                dimensions: Some(dimensions),
                ..sample.clone()
            });
        }
        out.push(Sample {
            dimensions: None,
            ..sample.clone()
        });
    }
    out
}

/// One data point as CloudWatch takes it: distinct values and how many times each occurred.
#[derive(Clone, Debug, PartialEq)]
pub struct Datum {
    pub name: MetricName,
    /// (name, value) pairs in the order of [`Dimensions::pairs`]; empty for the dimensionless
    /// series.
    pub dimensions: Vec<(&'static str, String)>,
    pub unit: Unit,
    pub timestamp: Timestamp,
    /// Distinct, ascending, at most [`MAX_VALUES_PER_DATUM`].
    pub values: Vec<f64>,
    /// `counts[i]` is how many samples had `values[i]`: whole numbers, at least 1.
    pub counts: Vec<f64>,
}

/// Folds samples with the same (name, dimensions, timestamp) into one datum of distinct values
/// and counts, which keeps every sample for percentiles at a fraction of the request size.
///
/// - Past [`MAX_VALUES_PER_DATUM`] distinct values a new datum starts (PutMetricData refuses
///   more, failing the whole request).
/// - Values CloudWatch refuses (NaN, infinities, beyond ±2^360) are dropped: one of them would
///   make the whole request fail.
/// - The output is ordered by name, dimensions (none first), timestamp, then value.
pub fn aggregate(series: &[Sample]) -> Vec<Datum> {
    let limit = 2f64.powi(360);
    let mut groups: BTreeMap<(MetricName, Option<&Dimensions>, Timestamp), Vec<f64>> =
        BTreeMap::new();
    for sample in series {
        if !sample.value.is_finite() || sample.value.abs() > limit {
            continue;
        }
        // -0.0 + 0.0 is 0.0: one zero, not two distinct values.
        let value = sample.value + 0.0;
        groups
            .entry((sample.name, sample.dimensions.as_ref(), sample.at))
            .or_default()
            .push(value);
    }

    let mut data = Vec::new();
    for ((name, dimensions, timestamp), mut values) in groups {
        values.sort_by(f64::total_cmp);
        let mut distinct: Vec<(f64, f64)> = Vec::new();
        for value in values {
            match distinct.last_mut() {
                Some((last, count)) if *last == value => *count += 1.0,
                _ => distinct.push((value, 1.0)),
            }
        }
        let pairs = dimensions.map(Dimensions::pairs).unwrap_or_default();
        for chunk in distinct.chunks(MAX_VALUES_PER_DATUM) {
            data.push(Datum {
                name,
                dimensions: pairs.clone(),
                unit: name.unit(),
                timestamp,
                values: chunk.iter().map(|(v, _)| *v).collect(),
                counts: chunk.iter().map(|(_, c)| *c).collect(),
            });
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_719_835_200_000 + secs * 1000)
    }

    fn dims(destination: &str, repository: Option<&str>) -> Dimensions {
        Dimensions {
            source_region: Region::parse("us-west-2").unwrap(),
            destination_region: Region::parse(destination).unwrap(),
            destination_account: AccountId::parse("111122223333").unwrap(),
            repository: repository.map(|r| RepositoryName::parse(r).unwrap()),
        }
    }

    fn sample(name: MetricName, d: Option<Dimensions>, value: f64, at: Timestamp) -> Sample {
        Sample {
            name,
            dimensions: d,
            value,
            at,
        }
    }

    #[test]
    fn names_and_units_are_the_published_ones() {
        let names: Vec<_> = MetricName::ALL.iter().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "ReplicationsExpected",
                "ReplicationsCompleted",
                "ReplicationLatency",
                "ReplicationsLate",
                "ReplicationsMissing",
                "ReplicationsFailed",
                "UntaggedCopies",
                "StaleTags",
                "ReplicationsWithdrawn",
                "PendingReplications",
                "ReplicationsWatched",
                "EventsRejected",
                "CopiesArchived",
                "DeletesExpected",
                "DeletesReplicated",
                "DeletesLate",
                "DeletesMissing",
                "DeleteReplicationLatency",
                "ImagesMissingAtDestination",
                "StaleTagsAtDestination",
                "ArchivedCopies",
                "NotDeletedAtDestination",
                "RepositorySettingsDrift",
                "SourcesUnreadable",
                "StateItemsUnreadable",
                "EventsParked",
            ]
        );
        for name in MetricName::ALL {
            let expected = if matches!(
                name,
                MetricName::ReplicationLatency | MetricName::DeleteReplicationLatency
            ) {
                "Seconds"
            } else {
                "Count"
            };
            assert_eq!(name.unit().as_str(), expected, "{name:?}");
        }
    }

    /// One alarm on the dimensionless metric must see every destination.
    #[test]
    fn every_dimensioned_sample_is_also_published_without_dimensions() {
        let samples = [
            sample(
                MetricName::ReplicationsMissing,
                Some(dims("eu-west-1", None)),
                1.0,
                t(0),
            ),
            sample(MetricName::EventsRejected, None, 1.0, t(0)),
        ];
        let out = series(&samples, false);
        assert_eq!(
            out,
            vec![
                samples[0].clone(),
                sample(MetricName::ReplicationsMissing, None, 1.0, t(0)),
                samples[1].clone(),
            ]
        );
    }

    #[test]
    fn the_repository_dimension_is_kept_only_when_asked_for() {
        let samples = [sample(
            MetricName::ReplicationsExpected,
            Some(dims("eu-west-1", Some("team/app"))),
            1.0,
            t(0),
        )];
        let without = series(&samples, false);
        assert_eq!(without[0].dimensions, Some(dims("eu-west-1", None)));
        let with = series(&samples, true);
        assert_eq!(
            with[0].dimensions,
            Some(dims("eu-west-1", Some("team/app")))
        );
        assert_eq!(
            aggregate(&with)[1].dimensions,
            vec![
                ("SourceRegion", "us-west-2".to_owned()),
                ("DestinationRegion", "eu-west-1".to_owned()),
                ("DestinationAccount", "111122223333".to_owned()),
                ("Repository", "team/app".to_owned()),
            ]
        );
    }

    /// Values/Counts carry every sample (percentiles stay right) in one datum per series.
    #[test]
    fn samples_of_one_series_fold_into_distinct_values_with_counts() {
        let d = Some(dims("eu-west-1", None));
        let samples = [
            sample(MetricName::ReplicationLatency, d.clone(), 12.5, t(0)),
            sample(MetricName::ReplicationLatency, d.clone(), 3.0, t(0)),
            sample(MetricName::ReplicationLatency, d.clone(), 12.5, t(0)),
            sample(MetricName::ReplicationLatency, d.clone(), -0.0, t(0)),
            sample(MetricName::ReplicationLatency, d.clone(), 0.0, t(0)),
        ];
        let data = aggregate(&samples);
        assert_eq!(
            data,
            vec![Datum {
                name: MetricName::ReplicationLatency,
                dimensions: dims("eu-west-1", None).pairs(),
                unit: Unit::Seconds,
                timestamp: t(0),
                values: vec![0.0, 3.0, 12.5],
                counts: vec![2.0, 1.0, 2.0],
            }]
        );
    }

    #[test]
    fn different_names_dimensions_or_timestamps_make_different_data() {
        let samples = [
            sample(MetricName::ReplicationsLate, None, 1.0, t(60)),
            sample(
                MetricName::ReplicationsLate,
                Some(dims("eu-west-1", None)),
                1.0,
                t(0),
            ),
            sample(MetricName::ReplicationsLate, None, 1.0, t(0)),
            sample(MetricName::ReplicationsExpected, None, 1.0, t(0)),
            sample(
                MetricName::ReplicationsLate,
                Some(dims("ap-south-1", None)),
                1.0,
                t(0),
            ),
        ];
        let keys: Vec<_> = aggregate(&samples)
            .into_iter()
            .map(|d| {
                (
                    d.name,
                    d.dimensions.get(1).map(|p| p.1.clone()),
                    d.timestamp,
                )
            })
            .collect();
        // Ordered by name, dimensions (none first), then time.
        assert_eq!(
            keys,
            vec![
                (MetricName::ReplicationsExpected, None, t(0)),
                (MetricName::ReplicationsLate, None, t(0)),
                (MetricName::ReplicationsLate, None, t(60)),
                (
                    MetricName::ReplicationsLate,
                    Some("ap-south-1".to_owned()),
                    t(0)
                ),
                (
                    MetricName::ReplicationsLate,
                    Some("eu-west-1".to_owned()),
                    t(0)
                ),
            ]
        );
    }

    /// PutMetricData accepts at most 150 values per datum and fails the whole request past it.
    #[test]
    fn more_than_150_distinct_values_start_a_new_datum() {
        let samples: Vec<_> = (0..400)
            .map(|i| {
                sample(
                    MetricName::ReplicationLatency,
                    None,
                    f64::from(i % 320),
                    t(0),
                )
            })
            .collect();
        let data = aggregate(&samples);
        let sizes: Vec<_> = data.iter().map(|d| d.values.len()).collect();
        assert_eq!(sizes, vec![150, 150, 20]);
        assert!(data.iter().all(|d| d.values.len() == d.counts.len()));
        assert_eq!(data[0].values[0], 0.0);
        assert_eq!(data[2].values[19], 319.0);
        let total: f64 = data.iter().flat_map(|d| &d.counts).sum();
        assert_eq!(total, 400.0);
        // Values 0..80 were seen twice.
        assert_eq!(data[0].counts[79], 2.0);
        assert_eq!(data[0].counts[80], 1.0);
    }

    /// CloudWatch rejects NaN, infinities and values beyond ±2^360, and the whole request with
    /// them.
    #[test]
    fn timestamps_are_brought_inside_what_put_metric_data_accepts_with_an_hour_to_spare() {
        let now = t(0);
        let hour = 3_600_000;
        let months_ago = Timestamp::from_millis(now.millis() - 90 * 24 * hour);
        assert_eq!(
            accepted_timestamp(months_ago, now),
            Timestamp::from_millis(now.millis() - 14 * 24 * hour + hour),
            "two weeks back, less the margin"
        );
        let far_ahead = Timestamp::from_millis(now.millis() + 5 * hour);
        assert_eq!(
            accepted_timestamp(far_ahead, now),
            Timestamp::from_millis(now.millis() + hour)
        );
        let recent = Timestamp::from_millis(now.millis() - 3 * hour);
        assert_eq!(accepted_timestamp(recent, now), recent, "inside: unchanged");
    }

    #[test]
    fn values_cloudwatch_refuses_are_dropped() {
        let samples: Vec<_> = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, 7.0]
            .into_iter()
            .map(|v| sample(MetricName::ReplicationLatency, None, v, t(0)))
            .collect();
        let data = aggregate(&samples);
        assert_eq!(data.len(), 1);
        assert_eq!(
            (data[0].values.clone(), data[0].counts.clone()),
            (vec![7.0], vec![1.0])
        );
        assert!(aggregate(&samples[..4]).is_empty());
    }

    #[test]
    fn the_output_does_not_depend_on_the_order_of_samples() {
        let d = Some(dims("eu-west-1", None));
        let mut samples: Vec<_> = (0..50)
            .map(|i| {
                sample(
                    MetricName::ALL[i % 3],
                    if i % 2 == 0 { d.clone() } else { None },
                    f64::from(u32::try_from(i % 7).unwrap()),
                    t(i64::try_from(i % 2).unwrap()),
                )
            })
            .collect();
        let forward = aggregate(&series(&samples, false));
        samples.reverse();
        assert_eq!(aggregate(&series(&samples, false)), forward);
    }
}
