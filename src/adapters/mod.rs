//! The ports through which the auditor talks to the outside world, each with its adapters. SDK
//! types are converted inside an adapter and never leave it.
//!
//! - [`metrics`]: publishing metrics: the [`metrics::MetricsSink`] port, CloudWatch
//!   `PutMetricData` and Embedded Metric Format log lines.

pub mod dynamodb;
pub mod metrics;
pub mod sdk;
