//! The port through which the Lambda publishes metrics: CloudWatch `PutMetricData` or Embedded
//! Metric Format lines ([`crate::adapters::cloudwatch`]).

use std::future::Future;

use crate::domain::metrics::Datum;

/// Where metrics go.
pub trait MetricsSink {
    /// Publishes `data`. On error a part of it may already be published: a retry of the whole
    /// may count that part twice, which is better than losing a missed deadline.
    fn publish(&self, data: &[Datum]) -> impl Future<Output = Result<(), MetricsError>> + Send;
}

/// Why metrics were not published, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Throttled, a server error, a timeout or no connection: the same data may go through
    /// later (return an error so the invocation is retried).
    #[error("metrics not published, a retry may succeed: {0}")]
    Transient(String),
    /// Refused as invalid or not allowed, or the log could not be written: the same data would
    /// fail the same way.
    #[error("metrics not published, a retry would fail the same way: {0}")]
    Final(String),
}

impl MetricsError {
    pub fn is_transient(&self) -> bool {
        matches!(self, MetricsError::Transient(_))
    }
}
