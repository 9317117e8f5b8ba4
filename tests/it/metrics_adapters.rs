//! The metrics adapters against what they talk to: `CloudWatchSink` against `aws-smithy-mocks`
//! rules on a real `aws_sdk_cloudwatch::Client` (the SDK speaks rpcv2-CBOR, which no local
//! stand-in serves), `EmfSink` against the JSON it writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_cloudwatch::config::retry::RetryConfig;
use aws_sdk_cloudwatch::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_cloudwatch::error::{BoxError, ErrorMetadata};
use aws_sdk_cloudwatch::operation::put_metric_data::{
    PutMetricDataError, PutMetricDataInput, PutMetricDataOutput,
};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::StandardUnit;
use aws_sdk_cloudwatch::types::error::InvalidParameterValueException;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use ecr_replication_auditor::adapters::cloudwatch::{CloudWatchSink, EmfSink};
use ecr_replication_auditor::domain::metrics::{
    DEFAULT_NAMESPACE, Datum, Dimensions, MetricName, Sample, Unit, aggregate, series,
};
use ecr_replication_auditor::domain::time::Timestamp;
use ecr_replication_auditor::ports::metrics::{MetricsError, MetricsSink};
use serde_json::{Value, json};

use crate::support::ids::{account, region, repository};

const T0: i64 = 1_719_835_200_000;

fn dims(destination: &str) -> Dimensions {
    Dimensions {
        source_region: region("us-west-2"),
        destination_region: region(destination),
        destination_account: account("111122223333"),
        repository: Some(repository("team/app")),
    }
}

fn sample(name: MetricName, destination: Option<&str>, value: f64, at: i64) -> Sample {
    Sample {
        name,
        dimensions: destination.map(dims),
        value,
        at: Timestamp::from_millis(at),
    }
}

/// `count` data of one value each, all distinct, small.
fn small_data(count: usize) -> Vec<Datum> {
    (0..count)
        .map(|i| Datum {
            name: MetricName::ReplicationsExpected,
            dimensions: vec![],
            unit: Unit::Count,
            timestamp: Timestamp::from_millis(T0 + i as i64),
            values: vec![1.0],
            counts: vec![1.0],
        })
        .collect()
}

type Seen = Arc<Mutex<Vec<PutMetricDataInput>>>;

/// Accepts every request and keeps a copy of it.
fn recording_rule(seen: &Seen) -> Rule {
    let seen = seen.clone();
    mock!(Client::put_metric_data)
        .match_requests(move |input| {
            seen.lock().unwrap().push(input.clone());
            true
        })
        .then_output(|| PutMetricDataOutput::builder().build())
}

/// The SDK's standard retries, as in production, with a backoff short enough for tests.
fn retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
}

fn client(rule: &Rule) -> Client {
    mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [rule], |c| c
        .retry_config(retries()))
}

fn throttling() -> PutMetricDataError {
    PutMetricDataError::generic(
        ErrorMetadata::builder()
            .code("Throttling")
            .message("Rate exceeded")
            .build(),
    )
}

/// The sizes of the request bodies the SDK really sends.
#[derive(Debug, Clone, Default)]
struct BodySizes(Arc<Mutex<Vec<usize>>>);

impl Intercept for BodySizes {
    fn name(&self) -> &'static str {
        "BodySizes"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let len = context.request().body().bytes().map_or(0, <[u8]>::len);
        self.0.lock().unwrap().push(len);
        Ok(())
    }
}

#[tokio::test]
async fn cloudwatch_requests_carry_the_namespace_names_dimensions_units_values_and_timestamps() {
    let samples = [
        sample(MetricName::ReplicationLatency, Some("eu-west-1"), 12.5, T0),
        sample(MetricName::ReplicationLatency, Some("eu-west-1"), 3.0, T0),
        sample(MetricName::ReplicationLatency, Some("eu-west-1"), 12.5, T0),
        sample(MetricName::ReplicationsMissing, Some("eu-west-1"), 1.0, T0),
        sample(MetricName::EventsRejected, None, 1.0, T0 + 1500),
    ];
    let data = aggregate(&series(&samples, false));
    let seen = Seen::default();
    let rule = recording_rule(&seen);
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);

    sink.publish(&data).await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].namespace(), Some("ECRReplication"));
    let destination = vec![
        ("SourceRegion", "us-west-2"),
        ("DestinationRegion", "eu-west-1"),
        ("DestinationAccount", "111122223333"),
    ];
    let got: Vec<_> = seen[0]
        .metric_data()
        .iter()
        .map(|d| {
            (
                d.metric_name().unwrap(),
                d.dimensions()
                    .iter()
                    .map(|x| (x.name().unwrap(), x.value().unwrap()))
                    .collect::<Vec<_>>(),
                d.unit().unwrap().clone(),
                d.values().to_vec(),
                d.counts().to_vec(),
                d.timestamp().unwrap().to_millis().unwrap(),
            )
        })
        .collect();
    let latency = (vec![3.0, 12.5], vec![1.0, 2.0]);
    let one = (vec![1.0], vec![1.0]);
    assert_eq!(
        got,
        vec![
            (
                "ReplicationLatency",
                vec![],
                StandardUnit::Seconds,
                latency.0.clone(),
                latency.1.clone(),
                T0
            ),
            (
                "ReplicationLatency",
                destination.clone(),
                StandardUnit::Seconds,
                latency.0,
                latency.1,
                T0
            ),
            (
                "ReplicationsMissing",
                vec![],
                StandardUnit::Count,
                one.0.clone(),
                one.1.clone(),
                T0
            ),
            (
                "ReplicationsMissing",
                destination,
                StandardUnit::Count,
                one.0.clone(),
                one.1.clone(),
                T0
            ),
            (
                "EventsRejected",
                vec![],
                StandardUnit::Count,
                one.0,
                one.1,
                T0 + 1500
            ),
        ]
    );
}

#[tokio::test]
async fn the_repository_dimension_is_sent_when_configured() {
    let samples = [sample(MetricName::StaleTags, Some("eu-west-1"), 1.0, T0)];
    let seen = Seen::default();
    let rule = recording_rule(&seen);
    let sink = CloudWatchSink::new(client(&rule), "Custom/Namespace");

    sink.publish(&aggregate(&series(&samples, true)))
        .await
        .unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].namespace(), Some("Custom/Namespace"));
    let with_dims = &seen[0].metric_data()[1];
    let last = with_dims.dimensions().last().unwrap();
    assert_eq!(
        (last.name(), last.value()),
        (Some("Repository"), Some("team/app"))
    );
}

#[tokio::test]
async fn nothing_to_publish_makes_no_call() {
    let seen = Seen::default();
    let rule = recording_rule(&seen);
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);
    sink.publish(&[]).await.unwrap();
    assert_eq!(rule.num_calls(), 0);
}

/// PutMetricData takes at most 1000 data per request.
#[tokio::test]
async fn a_thousand_data_go_in_one_call_and_one_more_needs_a_second() {
    for (count, calls) in [(1000, vec![1000]), (1001, vec![1000, 1])] {
        let seen = Seen::default();
        let rule = recording_rule(&seen);
        let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);
        let data = small_data(count);

        sink.publish(&data).await.unwrap();

        let seen = seen.lock().unwrap();
        let sizes: Vec<_> = seen.iter().map(|r| r.metric_data().len()).collect();
        assert_eq!(sizes, calls, "{count} data");
        // In order: the last datum sent is the last given.
        let last = seen.last().unwrap().metric_data().last().unwrap();
        assert_eq!(
            last.timestamp(),
            Some(&DateTime::from_millis(T0 + count as i64 - 1))
        );
    }
}

/// PutMetricData accepts at most 150 values per datum: more start another datum, same request.
#[tokio::test]
async fn many_latencies_are_sent_as_data_of_at_most_150_values() {
    let samples: Vec<_> = (0..400)
        .map(|i| sample(MetricName::ReplicationLatency, None, f64::from(i), T0))
        .collect();
    let seen = Seen::default();
    let rule = recording_rule(&seen);
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);

    sink.publish(&aggregate(&series(&samples, false)))
        .await
        .unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let data = seen[0].metric_data();
    let sizes: Vec<_> = data
        .iter()
        .map(|d| (d.values().len(), d.counts().len()))
        .collect();
    assert_eq!(sizes, vec![(150, 150), (150, 150), (100, 100)]);
    let all: Vec<f64> = data.iter().flat_map(|d| d.values().to_vec()).collect();
    assert_eq!(all, (0..400).map(f64::from).collect::<Vec<_>>());
}

/// PutMetricData requests are limited to 1 MB: measured on the bodies the SDK serializes.
#[tokio::test]
async fn large_payloads_are_split_into_requests_under_one_megabyte() {
    let data: Vec<_> = (0..1000)
        .map(|i| Datum {
            name: MetricName::ReplicationLatency,
            dimensions: dims("ap-southeast-2").pairs(),
            unit: Unit::Seconds,
            timestamp: Timestamp::from_millis(T0 + i),
            // Values that need all 8 bytes of a double, as real latencies do.
            values: (0..150).map(|v| f64::from(v) + 0.1).collect(),
            counts: (0..150).map(|c| f64::from(c) + 1.0).collect(),
        })
        .collect();
    let seen = Seen::default();
    let rule = recording_rule(&seen);
    let bodies = BodySizes::default();
    let interceptor = bodies.clone();
    let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&rule], |c| c
        .interceptor(interceptor.clone())
        .disable_request_compression(true));
    let sink = CloudWatchSink::new(client, DEFAULT_NAMESPACE);

    sink.publish(&data).await.unwrap();

    let bodies = bodies.0.lock().unwrap();
    let seen = seen.lock().unwrap();
    // About 2.95 MB in all: three requests is the fewest that can carry it.
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    assert_eq!(bodies.len(), seen.len());
    for (i, &bytes) in bodies.iter().enumerate() {
        assert!(bytes <= 1_000_000, "request {i} is {bytes} bytes");
    }
    // Few requests: all but the last are filled close to the limit.
    for &bytes in &bodies[..bodies.len() - 1] {
        assert!(bytes > 900_000, "{bodies:?}");
    }
    let sent: usize = seen.iter().map(|r| r.metric_data().len()).sum();
    assert_eq!(sent, 1000);
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_until_it_succeeds() {
    let rule = mock!(Client::put_metric_data)
        .sequence()
        .error(throttling)
        .times(2)
        .output(|| PutMetricDataOutput::builder().build())
        .build();
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);

    sink.publish(&small_data(1)).await.unwrap();

    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn a_server_error_followed_by_success_is_retried() {
    let rule = mock!(Client::put_metric_data)
        .sequence()
        .http_status(500, None)
        .output(|| PutMetricDataOutput::builder().build())
        .build();
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);

    sink.publish(&small_data(1)).await.unwrap();

    assert_eq!(rule.num_calls(), 2);
}

#[tokio::test]
async fn throttling_that_outlasts_the_retries_is_a_transient_error() {
    let rule = mock!(Client::put_metric_data)
        .sequence()
        .error(throttling)
        .repeatedly()
        .build();
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);

    let err = sink.publish(&small_data(1)).await.unwrap_err();

    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("Throttling"), "{err}");
    assert_eq!(rule.num_calls(), 3, "max attempts");
}

#[tokio::test]
async fn server_errors_that_outlast_the_retries_are_a_transient_error() {
    let rule = mock!(Client::put_metric_data)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);

    let err = sink.publish(&small_data(1)).await.unwrap_err();

    assert!(matches!(err, MetricsError::Transient(_)), "{err}");
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn access_denied_is_final_and_not_retried() {
    let rule = mock!(Client::put_metric_data).then_error(|| {
        PutMetricDataError::generic(
            ErrorMetadata::builder()
                .code("AccessDenied")
                .message("not authorized to perform: cloudwatch:PutMetricData")
                .build(),
        )
    });
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);

    let err = sink.publish(&small_data(1)).await.unwrap_err();

    assert!(matches!(err, MetricsError::Final(_)), "{err}");
    assert!(err.to_string().contains("AccessDenied"), "{err}");
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn a_validation_error_is_final_and_stops_the_remaining_requests() {
    let rule = mock!(Client::put_metric_data).then_error(|| {
        PutMetricDataError::InvalidParameterValueException(
            InvalidParameterValueException::builder()
                .message("The value NaN for parameter MetricData.member.1.Value is invalid.")
                .build(),
        )
    });
    let sink = CloudWatchSink::new(client(&rule), DEFAULT_NAMESPACE);

    let err = sink.publish(&small_data(1001)).await.unwrap_err();

    assert!(!err.is_transient(), "{err}");
    assert_eq!(rule.num_calls(), 1);
}

async fn emf_lines(namespace: &str, data: &[Datum]) -> Vec<Value> {
    let sink = EmfSink::new(Vec::new(), namespace);
    sink.publish(data).await.unwrap();
    let text = String::from_utf8(sink.into_inner()).unwrap();
    assert!(text.ends_with('\n'), "every line is terminated");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("every line is one JSON document"))
        .collect()
}

#[tokio::test]
async fn emf_lines_hold_the_timestamp_namespace_dimensions_metrics_and_values() {
    let samples = [
        sample(MetricName::ReplicationLatency, Some("eu-west-1"), 12.5, T0),
        sample(MetricName::ReplicationLatency, Some("eu-west-1"), 3.0, T0),
        sample(MetricName::ReplicationLatency, Some("eu-west-1"), 12.5, T0),
        sample(
            MetricName::ReplicationsCompleted,
            Some("eu-west-1"),
            1.0,
            T0,
        ),
    ];
    let lines = emf_lines(DEFAULT_NAMESPACE, &aggregate(&series(&samples, false))).await;

    assert_eq!(
        lines,
        vec![
            json!({
                "_aws": {
                    "Timestamp": T0,
                    "CloudWatchMetrics": [{
                        "Namespace": "ECRReplication",
                        "Dimensions": [[]],
                        "Metrics": [
                            {"Name": "ReplicationsCompleted", "Unit": "Count"},
                            {"Name": "ReplicationLatency", "Unit": "Seconds"},
                        ],
                    }],
                },
                "ReplicationsCompleted": 1.0,
                "ReplicationLatency": [3.0, 12.5, 12.5],
            }),
            json!({
                "_aws": {
                    "Timestamp": T0,
                    "CloudWatchMetrics": [{
                        "Namespace": "ECRReplication",
                        "Dimensions": [["SourceRegion", "DestinationRegion", "DestinationAccount"]],
                        "Metrics": [
                            {"Name": "ReplicationsCompleted", "Unit": "Count"},
                            {"Name": "ReplicationLatency", "Unit": "Seconds"},
                        ],
                    }],
                },
                "SourceRegion": "us-west-2",
                "DestinationRegion": "eu-west-1",
                "DestinationAccount": "111122223333",
                "ReplicationsCompleted": 1.0,
                "ReplicationLatency": [3.0, 12.5, 12.5],
            }),
        ]
    );
}

#[tokio::test]
async fn emf_writes_one_line_per_dimension_set_and_timestamp() {
    let samples = [
        sample(MetricName::ReplicationsExpected, Some("eu-west-1"), 1.0, T0),
        sample(
            MetricName::ReplicationsExpected,
            Some("eu-west-1"),
            1.0,
            T0 + 60_000,
        ),
        sample(
            MetricName::ReplicationsExpected,
            Some("ap-south-1"),
            1.0,
            T0,
        ),
        sample(MetricName::EventsRejected, None, 1.0, T0),
    ];
    let lines = emf_lines("Custom", &aggregate(&series(&samples, true))).await;

    let keys: Vec<_> = lines
        .iter()
        .map(|l| {
            (
                l["_aws"]["Timestamp"].as_i64().unwrap(),
                l["DestinationRegion"].as_str().map(str::to_owned),
                l["Repository"].as_str().map(str::to_owned),
                l["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
                    .as_array()
                    .unwrap()
                    .len(),
            )
        })
        .collect();
    let app = Some("team/app".to_owned());
    assert_eq!(
        keys,
        vec![
            (T0, None, None, 0),
            (T0 + 60_000, None, None, 0),
            (T0, Some("ap-south-1".to_owned()), app.clone(), 4),
            (T0, Some("eu-west-1".to_owned()), app.clone(), 4),
            (T0 + 60_000, Some("eu-west-1".to_owned()), app, 4),
        ]
    );
    // The dimensionless line at T0 carries both metrics: one push per destination, one rejection.
    assert_eq!(lines[0]["ReplicationsExpected"], json!([1.0, 1.0]));
    assert_eq!(lines[0]["EventsRejected"], json!(1.0));
    for line in &lines {
        assert_eq!(line["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Custom");
    }
}

/// EMF: a metric's array holds at most 100 values; EMF has no counts, so counts are repeats.
#[tokio::test]
async fn emf_repeats_counted_values_and_continues_past_100_values_on_new_lines() {
    let mut samples: Vec<_> = (0..250)
        .map(|_| sample(MetricName::ReplicationsCompleted, None, 1.0, T0))
        .collect();
    samples
        .extend((0..120).map(|i| sample(MetricName::ReplicationLatency, None, f64::from(i), T0)));
    let lines = emf_lines(DEFAULT_NAMESPACE, &aggregate(&samples)).await;

    let shape: Vec<_> = lines
        .iter()
        .map(|l| {
            let names: Vec<_> = l["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["Name"].as_str().unwrap().to_owned())
                .collect();
            let lens: Vec<_> = names
                .iter()
                .map(|n| l[n.as_str()].as_array().map_or(1, Vec::len))
                .collect();
            (names, lens)
        })
        .collect();
    let both = vec![
        "ReplicationsCompleted".to_owned(),
        "ReplicationLatency".to_owned(),
    ];
    assert_eq!(
        shape,
        vec![
            (both.clone(), vec![100, 100]),
            (both, vec![100, 20]),
            (vec!["ReplicationsCompleted".to_owned()], vec![50]),
        ]
    );
    let total: usize = lines
        .iter()
        .map(|l| l["ReplicationsCompleted"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 250);
}
