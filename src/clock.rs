//! The one place the wall clock is read, by the entry points only: the domain and the handler are
//! handed `now`, so tests and `replay` decide what time it is.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::domain::time::Timestamp;

/// The current time, to the millisecond (the epoch if the system clock is set before it).
pub fn now() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// A monotonic clock started now: how long something took (a rate), never what time it is.
pub fn stopwatch() -> Instant {
    Instant::now()
}

/// A wall-clock instant (the invocation's deadline, as Lambda gives it) on tokio's clock, which
/// the sweep watches: that far from now. An instant already past is now.
pub fn deadline(at: SystemTime) -> tokio::time::Instant {
    let left = at
        .duration_since(SystemTime::now())
        .unwrap_or(std::time::Duration::ZERO);
    tokio::time::Instant::now() + left
}
