//! The port through which the Lambda hands replication events to other teams (EventBridge
//! `PutEvents`, [`crate::adapters::eventbridge`]).

use std::future::Future;

use crate::domain::signals::ReplicationEvent;

/// How many events one publish hands over at most: "The maximum number of entries per request
/// is 10" (`PutEvents`). The handler publishes this many at a time, so that what one call took
/// is never parked; the EventBridge adapter splits longer lists by it.
pub const MAX_EVENTS_PER_CALL: usize = 10;

/// Where replication events go.
pub trait EventsSink {
    /// Publishes `events`. On error a part of them may already be published: consumers
    /// de-duplicate by `verdict-id`.
    fn publish(
        &self,
        events: &[ReplicationEvent],
    ) -> impl Future<Output = Result<(), EventsError>> + Send;

    /// Whether anyone listens: when not, the handler spares itself the work of finding out
    /// whether a push reached every destination (one more read per completed copy).
    fn enabled(&self) -> bool {
        true
    }
}

/// Why events were not published.
#[derive(Debug, thiserror::Error)]
#[error("replication events not published: {0}")]
pub struct EventsError(pub String);

/// No bus configured: events are off. The port's null object, so that the handler needs no
/// special case.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl EventsSink for NoEvents {
    async fn publish(&self, _: &[ReplicationEvent]) -> Result<(), EventsError> {
        Ok(())
    }

    fn enabled(&self) -> bool {
        false
    }
}
