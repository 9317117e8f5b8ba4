//! The port to the Lambda's durable state: tracked groups with optimistic versions, the index of
//! expectations the sweep must visit, and the record of rejected events already counted.
//!
//! Every change is read-modify-write: load, let the domain change the group and say what is
//! newly learned, then save only if nobody else saved in between. Two invocations racing on one
//! group cannot both count the same copy: the second one's save fails, it loads again, and the
//! domain finds nothing new to count.
//!
//! A group is stored as a bounded *head* and one small *record* per expectation (see
//! `adapters::stored`), so it never outgrows an item however many tags its digest gets. A load
//! therefore names the expectations it needs (by tag); the store adds those still waiting for a
//! committed copy, which every rule that looks across a group's expectations needs. Expectations
//! left out all have their copy: [`TrackedGroup::unloaded`] counts them.

use std::collections::BTreeMap;
use std::future::Future;

use crate::domain::config::Destination;
use crate::domain::correlate::GroupKey;
use crate::domain::ids::{EventId, ImageTag, Region};
pub use crate::domain::ledger::Queue;
use crate::domain::ledger::TrackedGroup;
use crate::domain::signals::ReplicationEvent;
use crate::domain::time::Timestamp;

/// A stored value and the version it was read at (0: not stored yet).
#[derive(Clone, Debug, Default)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
    /// What the store read, so that a save rewrites only the records that changed. Opaque to
    /// everyone else; a value built by hand has none, and its save writes every record.
    pub loaded: Loaded,
}

impl<T> Versioned<T> {
    pub fn new(version: u64, value: T) -> Self {
        Versioned {
            version,
            value,
            loaded: Loaded::default(),
        }
    }
}

/// Two versioned values are the same when their version and value are: what the store
/// remembers of a load is not part of the value.
impl<T: PartialEq> PartialEq for Versioned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version && self.value == other.value
    }
}

/// The records a load read, each with its stored form; for a group read from the previous
/// version's single item, that item's version (its records are created at its first save); and
/// the names of the saves that wrote the head's last versions, which its next version carries.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub(crate) records: BTreeMap<Option<ImageTag>, String>,
    pub(crate) legacy: Option<u64>,
    pub(crate) writers: BTreeMap<String, String>,
}

/// Which expectations of a group a load must include (by tag; `None` is the push by digest),
/// besides those still waiting for a committed copy, which the store always adds.
pub type Want = (GroupKey, Vec<Option<ImageTag>>);

/// Why the store could not do what was asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttled, a server error, a timeout, no connection: the invocation should be retried.
    #[error("the state store is unavailable ({0}); retrying may help")]
    Transient(String),
    /// Refused: access denied, no such table, a request DynamoDB will not take.
    #[error("the state store refused the request ({0})")]
    Refused(String),
    /// A stored item that cannot be read (edited by hand, or written by a newer version): it is
    /// refused rather than trusted. `key` is the item's key.
    #[error("the stored item {key:?} cannot be read: {reason}")]
    Unreadable { key: String, reason: String },
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

/// One expectation the index says is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueRecord {
    pub key: GroupKey,
    pub tag: Option<ImageTag>,
    pub due_at: Timestamp,
}

/// Expectations per (source Region, destination): a gauge.
pub type Census = BTreeMap<(Region, Destination), u64>;

/// What the sweep reads from the index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DueWork {
    /// Expectations due at `now`, oldest first, at most the budget asked for.
    pub due: Vec<DueRecord>,
    /// Groups written by the previous version that are due: loaded whole.
    pub legacy: Vec<GroupKey>,
    /// Keys the index holds that name no readable group (logged and counted by the sweep).
    pub unreadable: Vec<String>,
    /// Every expectation in flight, due or not.
    pub in_flight: Census,
    /// Every expectation counted missing or failed and still watched, when asked for.
    pub watched: Option<Census>,
}

/// Where the Lambda keeps its state.
pub trait StateStore {
    /// The groups of `wants`, in the same order, each with the expectations it names and those
    /// still waiting for a committed copy; an absent group is empty at version 0.
    fn load(
        &self,
        wants: &[Want],
    ) -> impl Future<Output = Result<Vec<Versioned<TrackedGroup>>, StoreError>> + Send;

    /// Saves every group, all or none, each only if its stored version is still the one it was
    /// loaded at. `Ok(false)`: another writer came first; load again and redo the change.
    /// The store indexes each expectation by its next check ([`crate::domain::ledger::Watch`])
    /// for [`StateStore::due`], and by its push time for the history.
    fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The expectations due at `now` (at most `budget`, oldest first), read through an index of
    /// waiting expectations only, never a scan of the history; with the expectations in flight
    /// counted, and those watched too when `count_watched`.
    fn due(
        &self,
        now: Timestamp,
        budget: usize,
        count_watched: bool,
    ) -> impl Future<Output = Result<DueWork, StoreError>> + Send;

    /// Records a rejected event; `Ok(false)` when it was already recorded (a redelivery must not
    /// be counted twice).
    fn first_rejection(
        &self,
        id: &EventId,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Keeps replication events that `PutEvents` would not take, until a sweep publishes them
    /// ([`StateStore::parked`], [`StateStore::unpark`]): the counted state that made them is
    /// stored, so a retried invocation finds nothing new to publish. An event parked twice
    /// (the same `verdict-id`) is kept once. A store that keeps none (a test's wrapper) refuses,
    /// and the handler falls back to logging the events whole.
    fn park(
        &self,
        events: &[ReplicationEvent],
        now: Timestamp,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (events, now);
        async {
            Err(StoreError::Refused(
                "this store keeps no parked events".into(),
            ))
        }
    }

    /// At most `limit` parked events, oldest first.
    fn parked(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<ReplicationEvent>, StoreError>> + Send {
        let _ = limit;
        async { Ok(Vec::new()) }
    }

    /// Forgets the parked events of these `verdict-id`s, once published.
    fn unpark(
        &self,
        verdict_ids: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = verdict_ids;
        async { Ok(()) }
    }
}
