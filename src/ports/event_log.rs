//! The port through which `replay --log-group` reads archived events back: where an EventBridge
//! rule logged every ECR event (template.yaml's event log, a CloudWatch Logs log group read by
//! [`crate::adapters::cloudwatch_logs`]), a page at a time.

use std::future::Future;

use crate::domain::time::Timestamp;

/// One logged event: the log's own record of it, whose message is the event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    /// Where in the log it was written, for messages about it.
    pub stream: String,
    /// The time the log gives it (for an EventBridge rule's log, the event's time).
    pub timestamp: Timestamp,
    /// The event, as JSON text.
    pub message: String,
}

/// One page of a read, in the log's order (by timestamp).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPage {
    pub events: Vec<LoggedEvent>,
    /// Where the next page starts; `None` after the last. A page may be empty and still not be
    /// the last.
    pub next: Option<String>,
}

/// Why the log could not be read. Both end the read: the SDK has already retried what it could.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    /// Throttled, a server error, a timeout, no connection: running again later may help.
    #[error("the event log is unavailable ({0}); running again later may help")]
    Transient(String),
    /// Refused: no such log group, access denied, an invalid request.
    #[error("the event log refused the request ({0})")]
    Refused(String),
}

/// Where archived events are read from.
pub trait EventLog {
    /// The events logged at or after `since` and before `until`, from `token` (a previous page's
    /// [`LogPage::next`]; `None` for the first page).
    fn page(
        &self,
        since: Timestamp,
        until: Timestamp,
        token: Option<String>,
    ) -> impl Future<Output = Result<LogPage, EventLogError>>;
}
