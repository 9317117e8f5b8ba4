//! A state store that lets invocations interleave, for the tests of races between them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use ecr_replication_auditor::adapters::memory::MemoryStateStore;
use ecr_replication_auditor::domain::correlate::GroupKey;
use ecr_replication_auditor::domain::ids::EventId;
use ecr_replication_auditor::domain::ledger::TrackedGroup;
use ecr_replication_auditor::domain::signals::ReplicationEvent;
use ecr_replication_auditor::domain::time::Timestamp;
use ecr_replication_auditor::ports::state::{DueWork, StateStore, StoreError, Versioned, Want};

/// [`MemoryStateStore`] with a yield after every load, so that two invocations joined on one
/// task both read a group before either saves it. It counts saves and lost races, and refuses
/// to park events when told to (as DynamoDB refusing too would).
#[derive(Default)]
pub struct RacingStore {
    pub inner: MemoryStateStore,
    pub saves: AtomicUsize,
    pub conflicts: AtomicUsize,
    pub refuse_parking: AtomicBool,
}

impl StateStore for RacingStore {
    async fn load(&self, wants: &[Want]) -> Result<Vec<Versioned<TrackedGroup>>, StoreError> {
        let loaded = self.inner.load(wants).await;
        tokio::task::yield_now().await;
        loaded
    }

    async fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> Result<bool, StoreError> {
        let saved = self.inner.save(groups).await?;
        self.saves.fetch_add(1, Ordering::SeqCst);
        if !saved {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        Ok(saved)
    }

    async fn due(
        &self,
        now: Timestamp,
        budget: usize,
        count_watched: bool,
    ) -> Result<DueWork, StoreError> {
        self.inner.due(now, budget, count_watched).await
    }

    async fn first_rejection(&self, id: &EventId, at: Timestamp) -> Result<bool, StoreError> {
        self.inner.first_rejection(id, at).await
    }

    async fn park(&self, events: &[ReplicationEvent], now: Timestamp) -> Result<(), StoreError> {
        if self.refuse_parking.load(Ordering::SeqCst) {
            return Err(StoreError::Transient("refused by the test".into()));
        }
        self.inner.park(events, now).await
    }

    async fn parked(&self, limit: usize) -> Result<Vec<ReplicationEvent>, StoreError> {
        self.inner.parked(limit).await
    }

    async fn unpark(&self, verdict_ids: &[String]) -> Result<(), StoreError> {
        self.inner.unpark(verdict_ids).await
    }
}
