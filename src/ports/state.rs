//! The port to the Lambda's durable state: tracked groups with optimistic versions, the index of
//! groups the sweep must visit, and the record of rejected events already counted.
//!
//! Every change is read-modify-write: load, let the domain change the group and say what is
//! newly learned, then save only if nobody else saved in between. Two invocations racing on one
//! group cannot both count the same copy: the second one's save fails, it loads again, and the
//! domain finds nothing new to count.

use std::future::Future;

use crate::domain::correlate::GroupKey;
use crate::domain::ids::EventId;
use crate::domain::ledger::TrackedGroup;
use crate::domain::time::Timestamp;

/// A stored value and the version it was read at (0: not stored yet).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// Why the store could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttled, a server error, a timeout, no connection: the invocation should be retried.
    #[error("the state store is unavailable ({0}); retrying may help")]
    Transient(String),
    /// Refused (access denied, no such table) or a stored item that cannot be read.
    #[error("the state store refused the request ({0})")]
    Refused(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

/// Where the Lambda keeps its state.
pub trait StateStore {
    /// The groups under these keys, in the same order; an absent one is empty at version 0.
    fn load(
        &self,
        keys: &[GroupKey],
    ) -> impl Future<Output = Result<Vec<Versioned<TrackedGroup>>, StoreError>> + Send;

    /// Saves every group, all or none, each only if its stored version is still the one it was
    /// loaded at. `Ok(false)`: another writer came first; load again and redo the change.
    /// The store indexes each group by [`TrackedGroup::due_at`] for [`StateStore::open`].
    fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every group some expectation of which still waits for a check, with the time it is due.
    /// Read through an index of open groups only, never a scan of the history.
    fn open(
        &self,
    ) -> impl Future<Output = Result<Vec<(GroupKey, Versioned<TrackedGroup>)>, StoreError>> + Send;

    /// Records a rejected event; `Ok(false)` when it was already recorded (a redelivery must not
    /// be counted twice).
    fn first_rejection(
        &self,
        id: &EventId,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
