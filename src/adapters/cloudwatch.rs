//! Publishing metrics: the two adapters of the [`MetricsSink`] port.
//!
//! - [`CloudWatchSink`] calls `PutMetricData`, in as few requests as the API's limits allow.
//! - [`EmfSink`] writes CloudWatch Embedded Metric Format lines; in Lambda, lines on standard
//!   output become metrics with no API call and no extra IAM permission.
//!
//! Both take the [`Datum`]s built by [`crate::domain::metrics::aggregate`], which already holds
//! at most 150 distinct values per datum.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::{Mutex, PoisonError};

use aws_sdk_cloudwatch::error::SdkError;
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use serde_json::{Map, Value, json};

use crate::domain::metrics::{Datum, MetricName, Unit};
use crate::domain::time::Timestamp;
use crate::ports::metrics::{MetricsError, MetricsSink};

/// Publishes with CloudWatch `PutMetricData`.
pub struct CloudWatchSink {
    /// Built once at start-up, with the SDK's standard retries: throttling and server errors are
    /// retried there before they reach [`MetricsError::Transient`].
    client: aws_sdk_cloudwatch::Client,
    /// The CloudWatch namespace every metric is published in.
    namespace: String,
}

/// "Each request is also limited to no more than 1000 different metrics" (`PutMetricData`).
const MAX_DATA_PER_REQUEST: usize = 1000;

/// "Each `PutMetricData` request is limited to 1 MB in size for HTTP POST requests." Read as
/// 1,000,000 bytes, the smaller reading of "MB", and checked against the body before any gzip:
/// the SDK compresses large bodies, but the documentation does not say which size it limits.
const MAX_REQUEST_BYTES: usize = 1_000_000;

impl CloudWatchSink {
    pub fn new(client: aws_sdk_cloudwatch::Client, namespace: impl Into<String>) -> Self {
        CloudWatchSink {
            client,
            namespace: namespace.into(),
        }
    }
}

impl MetricsSink for CloudWatchSink {
    async fn publish(&self, data: &[Datum]) -> Result<(), MetricsError> {
        for request in requests(data, &self.namespace) {
            self.client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(request.iter().map(to_sdk).collect()))
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }
}

/// Cuts `data`, in order, into as few requests as the limits allow: a datum joins the current
/// request unless that would pass [`MAX_DATA_PER_REQUEST`] or [`MAX_REQUEST_BYTES`].
fn requests<'a>(data: &'a [Datum], namespace: &str) -> Vec<&'a [Datum]> {
    // The body's map (2), keys Namespace and MetricData (21), a string and an array header (6).
    let envelope = 29 + namespace.len();
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, envelope);
    for (i, datum) in data.iter().enumerate() {
        let size = datum_bytes(datum);
        if i > start && (i - start == MAX_DATA_PER_REQUEST || bytes + size > MAX_REQUEST_BYTES) {
            out.push(&data[start..i]);
            (start, bytes) = (i, envelope);
        }
        bytes += size;
    }
    if start < data.len() {
        out.push(&data[start..]);
    }
    out
}

/// An upper bound of the bytes `datum` takes in the request body. The SDK speaks rpcv2-CBOR:
/// maps open and close with a byte each, every double is 9 bytes (the timestamp, a tagged
/// double, 10), every string or array has a header of at most 3 bytes (lengths up to 65535), and
/// member names are spelled out. The figures are worst cases, not averages, so the budget holds
/// whatever the data; `tests/metrics_adapters.rs` checks it against the bodies the SDK really
/// serializes (within 1% of this bound for full data).
fn datum_bytes(datum: &Datum) -> usize {
    // The datum's map (2), keys MetricName, Dimensions, Timestamp, Values, Counts, Unit (51),
    // the timestamp (10), the headers of three arrays and two strings (15).
    const FIXED: usize = 78;
    // Its map (2), keys Name and Value (11), two string headers (6).
    const PER_DIMENSION: usize = 19;
    // A value and its count.
    const PER_VALUE: usize = 18;
    FIXED
        + datum.name.as_str().len()
        + datum.unit.as_str().len()
        + datum
            .dimensions
            .iter()
            .map(|(name, value)| PER_DIMENSION + name.len() + value.len())
            .sum::<usize>()
        + PER_VALUE * datum.values.len().max(datum.counts.len())
}

fn to_sdk(datum: &Datum) -> MetricDatum {
    let dimensions = datum
        .dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(*name).value(value).build())
        .collect::<Vec<_>>();
    MetricDatum::builder()
        .metric_name(datum.name.as_str())
        .set_dimensions((!dimensions.is_empty()).then_some(dimensions))
        .timestamp(DateTime::from_millis(datum.timestamp.millis()))
        .set_values(Some(datum.values.clone()))
        .set_counts(Some(datum.counts.clone()))
        .unit(match datum.unit {
            Unit::Count => StandardUnit::Count,
            Unit::Seconds => StandardUnit::Seconds,
        })
        .build()
}

/// Sorts an error that outlived the SDK's retries into transient or final.
fn classify(err: SdkError<PutMetricDataError>) -> MetricsError {
    let transient = super::sdk::is_transient(&err);
    let message = super::sdk::describe(&err);
    if transient {
        MetricsError::Transient(message)
    } else {
        MetricsError::Final(message)
    }
}

/// Writes CloudWatch Embedded Metric Format (EMF) lines, one JSON document per line.
pub struct EmfSink<W> {
    /// Standard output in Lambda (`std::io::stdout()`, whose `write_all` holds its lock, so a
    /// line is never interleaved with a log line); a `Vec<u8>` in tests.
    out: Mutex<W>,
    /// The CloudWatch namespace every metric is published in.
    namespace: String,
}

/// EMF: "Numeric array metric targets MUST NOT have more than 100 members."
const EMF_MAX_VALUES: usize = 100;

// EMF: a directive's Metrics array "MUST NOT contain more than 100 MetricDefinition objects".
// One line holds each metric name at most once, so there can never be more.
const _: () = assert!(MetricName::ALL.len() <= 100);

impl<W: Write> EmfSink<W> {
    pub fn new(out: W, namespace: impl Into<String>) -> Self {
        EmfSink {
            out: Mutex::new(out),
            namespace: namespace.into(),
        }
    }

    /// The writer back, with everything written to it.
    pub fn into_inner(self) -> W {
        self.out
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<W: Write + Send> MetricsSink for EmfSink<W> {
    async fn publish(&self, data: &[Datum]) -> Result<(), MetricsError> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        for line in emf_lines(&self.namespace, data) {
            let mut bytes = line.to_string().into_bytes();
            bytes.push(b'\n');
            out.write_all(&bytes).map_err(write_error)?;
        }
        out.flush().map_err(write_error)
    }
}

fn write_error(err: io::Error) -> MetricsError {
    let message = format!("writing EMF lines: {err}");
    match err.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            MetricsError::Transient(message)
        }
        _ => MetricsError::Final(message),
    }
}

/// One document per (dimension set, timestamp), as `_aws.Timestamp` and the directive's
/// `Dimensions` are per document. EMF has no counts, so a value is repeated as many times as it
/// was counted (keeping SampleCount, Sum and percentiles), and a metric with more than
/// [`EMF_MAX_VALUES`] values continues on further lines. A line then holds at most 10 metrics of
/// 100 numbers, some 30 KB: far below the 256 KB limit of a log event.
fn emf_lines(namespace: &str, data: &[Datum]) -> Vec<Value> {
    type DimensionSet<'a> = &'a [(&'static str, String)];
    type Metrics = BTreeMap<MetricName, (Unit, Vec<f64>)>;
    let mut groups: BTreeMap<(DimensionSet, Timestamp), Metrics> = BTreeMap::new();
    for datum in data {
        let (_, values) = groups
            .entry((&datum.dimensions, datum.timestamp))
            .or_default()
            .entry(datum.name)
            .or_insert_with(|| (datum.unit, Vec::new()));
        for (&value, &count) in datum.values.iter().zip(&datum.counts) {
            // A NaN would be written as null, which is valid JSON but voids the document's
            // metrics; CloudWatch would refuse it anyway.
            if value.is_finite() {
                values.extend(std::iter::repeat_n(value, count as usize));
            }
        }
    }

    let mut lines = Vec::new();
    for ((dimensions, timestamp), metrics) in groups {
        let longest = metrics.values().map(|(_, v)| v.len()).max().unwrap_or(0);
        for index in 0..longest.div_ceil(EMF_MAX_VALUES) {
            let mut line = Map::new();
            let mut definitions = Vec::new();
            for (name, (unit, values)) in &metrics {
                let value = match values.chunks(EMF_MAX_VALUES).nth(index) {
                    None => continue,
                    Some([one]) => json!(one),
                    Some(several) => json!(several),
                };
                definitions.push(json!({"Name": name.as_str(), "Unit": unit.as_str()}));
                line.insert(name.as_str().to_owned(), value);
            }
            for (name, value) in dimensions {
                line.insert((*name).to_owned(), json!(value));
            }
            let dimension_set: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
            line.insert(
                "_aws".to_owned(),
                json!({
                    "Timestamp": timestamp.millis(),
                    "CloudWatchMetrics": [{
                        "Namespace": namespace,
                        "Dimensions": [dimension_set],
                        "Metrics": definitions,
                    }],
                }),
            );
            lines.push(Value::Object(line));
        }
    }
    lines
}

/// The sink `METRICS_SINK` chose, as one type the handler can hold.
pub enum ConfiguredSink {
    CloudWatch(CloudWatchSink),
    Emf(EmfSink<io::Stdout>),
}

impl MetricsSink for ConfiguredSink {
    async fn publish(&self, data: &[Datum]) -> Result<(), MetricsError> {
        match self {
            ConfiguredSink::CloudWatch(sink) => sink.publish(data).await,
            ConfiguredSink::Emf(sink) => sink.publish(data).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datum(values: usize, dimension_value_len: usize) -> Datum {
        Datum {
            name: MetricName::ReplicationLatency,
            dimensions: vec![("SourceRegion", "x".repeat(dimension_value_len))],
            unit: Unit::Seconds,
            timestamp: Timestamp::from_millis(1_719_835_200_000),
            values: (0..values).map(|v| v as f64).collect(),
            counts: vec![1.0; values],
        }
    }

    fn sizes(batches: &[&[Datum]]) -> Vec<usize> {
        batches.iter().map(|b| b.len()).collect()
    }

    /// PutMetricData takes at most 1000 data per request.
    #[test]
    fn requests_hold_at_most_1000_data() {
        let data: Vec<_> = (0..2500).map(|_| datum(1, 9)).collect();
        assert_eq!(
            sizes(&requests(&data, "ECRReplication")),
            vec![1000, 1000, 500]
        );
        assert_eq!(
            sizes(&requests(&data[..1000], "ECRReplication")),
            vec![1000]
        );
        assert!(requests(&[], "ECRReplication").is_empty());
    }

    /// PutMetricData takes at most 1 MB per request.
    #[test]
    fn requests_stay_under_one_megabyte_and_are_filled_before_a_new_one_starts() {
        let data: Vec<_> = (0..1000).map(|_| datum(150, 200)).collect();
        let batches = requests(&data, "ECRReplication");
        assert!(batches.len() > 1);
        assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), 1000);
        let envelope = 29 + "ECRReplication".len();
        for (i, batch) in batches.iter().enumerate() {
            let bytes = envelope + batch.iter().map(datum_bytes).sum::<usize>();
            assert!(bytes <= MAX_REQUEST_BYTES, "request {i}: {bytes} bytes");
            if i + 1 < batches.len() {
                let next = datum_bytes(&batches[i + 1][0]);
                assert!(
                    bytes + next > MAX_REQUEST_BYTES,
                    "request {i} could take one more"
                );
            }
        }
    }

    #[test]
    fn a_datum_bigger_than_the_budget_still_goes_alone() {
        let data = vec![datum(1, 9), datum(1, 2_000_000), datum(1, 9)];
        assert_eq!(sizes(&requests(&data, "ns")), vec![1, 1, 1]);
    }

    #[test]
    fn io_errors_writing_lines_are_final_unless_they_are_timeouts() {
        assert!(!write_error(io::ErrorKind::BrokenPipe.into()).is_transient());
        assert!(write_error(io::ErrorKind::TimedOut.into()).is_transient());
    }
}
