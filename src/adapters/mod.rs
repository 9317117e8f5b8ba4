//! The ports through which the auditor talks to the outside world, each with its adapters. SDK
//! types are converted inside an adapter and never leave it.
//!
//! - [`metrics`]: publishing metrics: the [`metrics::MetricsSink`] port, CloudWatch
//!   `PutMetricData` and Embedded Metric Format log lines.
//! - [`ecr`]: reading registries: [`ecr::EcrRegistry`] implements
//!   [`crate::app::registry::RegistryView`] with aws-sdk-ecr, assuming the audit role in other
//!   accounts.

pub mod dynamodb;
pub mod ecr;
pub mod metrics;
pub mod sdk;
