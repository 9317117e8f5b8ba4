//! [`EventLog`] on a CloudWatch Logs log group: the stack's event log, where an EventBridge rule
//! writes every ECR event (template.yaml, `EventLogGroup`). Read with `FilterLogEvents`, which
//! needs only `logs:FilterLogEvents` on the group.
//!
//! FilterLogEvents returns the events sorted by timestamp, then ingestion time; a page holds up
//! to 1 MB or 10,000 events, may be partly full or empty while more follow, and the read is over
//! only when a page carries no `nextToken` (the API reference). Throttling and server errors are
//! retried by the SDK's standard retries before they reach [`EventLogError`].

use aws_sdk_cloudwatchlogs::Client;

use crate::adapters::sdk;
use crate::domain::time::Timestamp;
use crate::ports::event_log::{EventLog, EventLogError, LogPage, LoggedEvent};

/// One log group, read through one client.
pub struct LogGroupEventLog {
    client: Client,
    group: String,
    /// FilterLogEvents' `limit`: at most this many events a page (the service's own, 10,000,
    /// when `None`). Only tests set it, to read a few events over several pages.
    page_limit: Option<i32>,
}

impl LogGroupEventLog {
    pub fn new(client: Client, group: impl Into<String>) -> Self {
        LogGroupEventLog {
            client,
            group: group.into(),
            page_limit: None,
        }
    }

    /// At most `limit` events a page (1 to 10,000).
    pub fn with_page_limit(mut self, limit: i32) -> Self {
        self.page_limit = Some(limit);
        self
    }
}

impl EventLog for LogGroupEventLog {
    async fn page(
        &self,
        since: Timestamp,
        until: Timestamp,
        token: Option<String>,
    ) -> Result<LogPage, EventLogError> {
        // `interleaved` is deprecated and ignored by CloudWatch Logs, which always interleaves
        // the streams now (the API reference); it is asked for so that every implementation
        // returns one time order (moto, the tests' stand-in, sorts across streams only then).
        #[allow(deprecated)]
        let request = self.client.filter_log_events().interleaved(true);
        let answer = request
            .log_group_name(&self.group)
            // Both ends are inclusive for FilterLogEvents; `until` is not.
            .start_time(since.millis())
            .end_time(until.millis().saturating_sub(1))
            .set_limit(self.page_limit)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| {
                let why = sdk::describe(&e);
                if sdk::is_transient(&e) {
                    EventLogError::Transient(why)
                } else {
                    EventLogError::Refused(why)
                }
            })?;
        // Every field is optional in the model: a log event without a message is kept, and
        // counted as unreadable, rather than dropped.
        let events = answer
            .events()
            .iter()
            .map(|e| LoggedEvent {
                stream: e.log_stream_name().unwrap_or_default().to_owned(),
                timestamp: Timestamp::from_millis(e.timestamp().unwrap_or_default()),
                message: e.message().unwrap_or_default().to_owned(),
            })
            .collect();
        Ok(LogPage {
            events,
            next: answer.next_token().map(str::to_owned),
        })
    }
}
