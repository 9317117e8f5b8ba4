//! The Lambda's [`StateStore`] kept in memory: the same contract as the DynamoDB adapter
//! (versions, the open index, rejected ids, the history by first push), for the handler's tests
//! and for running the Lambda's code path offline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::domain::correlate::GroupKey;
use crate::domain::ids::EventId;
use crate::domain::ledger::TrackedGroup;
use crate::domain::time::Timestamp;
use crate::ports::history::{Day, HistoryReader};
use crate::ports::state::{StateStore, StoreError, Versioned};

/// The state store in memory.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    inner: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    groups: HashMap<GroupKey, Versioned<TrackedGroup>>,
    /// Ids of rejected events already counted.
    rejected: HashSet<EventId>,
    /// The inventory reconciliation's pass (`inventory.rs`).
    pass: Versioned<Option<crate::domain::drift::InventoryPass>>,
}

impl MemoryStateStore {
    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves plain data behind, still consistent per group.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every stored group (for tests and inspection).
    pub fn snapshot(&self) -> Vec<(GroupKey, Versioned<TrackedGroup>)> {
        let mut all: Vec<_> = self
            .state()
            .groups
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl StateStore for MemoryStateStore {
    async fn load(&self, keys: &[GroupKey]) -> Result<Vec<Versioned<TrackedGroup>>, StoreError> {
        let state = self.state();
        Ok(keys
            .iter()
            .map(|k| state.groups.get(k).cloned().unwrap_or_default())
            .collect())
    }

    async fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let unchanged = groups
            .iter()
            .all(|(k, v)| state.groups.get(k).map_or(0, |stored| stored.version) == v.version);
        if !unchanged {
            return Ok(false);
        }
        for (k, v) in groups {
            state.groups.insert(
                k.clone(),
                Versioned {
                    version: v.version + 1,
                    value: v.value.clone(),
                },
            );
        }
        Ok(true)
    }

    async fn open(&self) -> Result<Vec<(GroupKey, Versioned<TrackedGroup>)>, StoreError> {
        let mut open: Vec<_> = self
            .state()
            .groups
            .iter()
            .filter(|(_, v)| v.value.due_at().is_some())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(open)
    }

    async fn first_rejection(&self, id: &EventId, _at: Timestamp) -> Result<bool, StoreError> {
        Ok(self.state().rejected.insert(id.clone()))
    }
}

impl HistoryReader for MemoryStateStore {
    async fn first_pushed_between(
        &self,
        from: Timestamp,
        until: Timestamp,
        mut each_day: impl FnMut(Day),
    ) -> Result<(), StoreError> {
        let mut days: BTreeMap<i64, Vec<(Timestamp, GroupKey, TrackedGroup)>> = BTreeMap::new();
        for (key, v) in self.state().groups.iter() {
            if let Some(first) = v.value.first_push()
                && first >= from
                && first < until
            {
                days.entry(first.millis().div_euclid(DAY_MS))
                    .or_default()
                    .push((first, key.clone(), v.value.clone()));
            }
        }
        for (_, mut groups) in days {
            groups.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            each_day(groups.into_iter().map(|(_, k, t)| (k, t)).collect());
        }
        Ok(())
    }
}

const DAY_MS: i64 = 86_400_000;

// The inventory reconciliation's pass, kept apart from the groups.
mod inventory;
