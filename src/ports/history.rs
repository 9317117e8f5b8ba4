//! The port through which `audit` reads the Lambda's history: every push of a period, each as
//! its group holding that push (and the previous version's whole groups, by their first push), a
//! UTC day at a time. DynamoDB's `history` index in production ([`crate::adapters::dynamodb`]),
//! the in-memory store in tests ([`crate::adapters::memory`]).

use std::future::Future;

use crate::domain::correlate::GroupKey;
use crate::domain::ledger::TrackedGroup;
use crate::domain::time::Timestamp;
use crate::ports::state::StoreError;

/// One UTC day's groups, sorted by push time and key.
pub type Day = Vec<(GroupKey, TrackedGroup)>;

/// Where the audit history is read from.
pub trait HistoryReader {
    /// Every push in `[from, until)`, as its group holding that push with its copies and watch
    /// (a group of the previous version whole, when its first push is in the period), handed to
    /// `each_day` one UTC day at a time (days in order, each sorted by push time and key), so
    /// that one day at a time is in memory whatever the length of the period.
    fn first_pushed_between(
        &self,
        from: Timestamp,
        until: Timestamp,
        each_day: impl FnMut(Day),
    ) -> impl Future<Output = Result<(), StoreError>>;
}
