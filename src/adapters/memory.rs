//! The Lambda's [`StateStore`] kept in memory: the same contract and the same stored form as
//! the DynamoDB adapter (heads and records of [`super::stored`], versions, the sweep's queues,
//! rejected ids, the history by push), for the handler's tests and for running the Lambda's
//! code path offline. Items are kept as the JSON DynamoDB would hold, so their sizes and the
//! number written per save are those of the real table.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::stored::{
    self, Head, Item, StoredGroup, assemble, group_pk, parse_record_pk, plan, read_head,
    record_alone, record_pk,
};
use crate::domain::correlate::GroupKey;
use crate::domain::ids::{EventId, ImageTag};
use crate::domain::ledger::TrackedGroup;
use crate::domain::signals::ReplicationEvent;
use crate::domain::time::Timestamp;
use crate::ports::history::{Day, HistoryReader};
use crate::ports::state::{
    Census, DueRecord, DueWork, Queue, StateStore, StoreError, Versioned, Want,
};

/// The state store in memory.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    inner: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    items: BTreeMap<String, Kept>,
    /// Ids of rejected events already counted.
    rejected: HashSet<EventId>,
    /// Replication events parked after a failed publish, with when, in the order parked.
    parked: Vec<(Timestamp, ReplicationEvent)>,
    /// The inventory reconciliation's pass (`inventory.rs`).
    pass: Versioned<Option<crate::domain::drift::InventoryPass>>,
    /// Items written by saves, and saves that went through.
    items_written: u64,
    saves: u64,
}

#[derive(Clone, Debug)]
struct Kept {
    item: Item,
    /// A head's version.
    version: u64,
    /// A record created from the previous version's item, at that item's version.
    legacy: Option<u64>,
}

/// What the store holds, in sizes and counts (for tests and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub items: usize,
    /// The largest item, key and body and the attributes DynamoDB adds, in bytes.
    pub largest_item: usize,
    pub items_written: u64,
    pub saves: u64,
}

/// An item's size as DynamoDB counts it, near enough: its key and body, and a generous
/// allowance for its other attributes (version, expiry, writer tokens, index keys).
pub fn item_size(item: &Item) -> usize {
    item.pk.len() + item.body.len() + 400
}

impl MemoryStateStore {
    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves plain data behind, still consistent per item.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every stored group, whole (every record read), sorted by key (for tests and inspection).
    pub fn snapshot(&self) -> Vec<(GroupKey, Versioned<TrackedGroup>)> {
        let state = self.state();
        let mut records: BTreeMap<GroupKey, Vec<(Option<ImageTag>, String)>> = BTreeMap::new();
        let mut heads = Vec::new();
        for (pk, kept) in &state.items {
            match parse_record_pk(pk) {
                Ok((key, tag)) => records
                    .entry(key)
                    .or_default()
                    .push((tag, kept.item.body.clone())),
                Err(_) => {
                    if let Ok(key) = stored::parse_group_pk(pk) {
                        heads.push((key, kept.clone()));
                    }
                }
            }
        }
        let mut all: Vec<_> = heads
            .into_iter()
            .filter_map(|(key, kept)| {
                let head = read_head(&key, &kept.item.body, kept.version).ok()?;
                let mine = records.remove(&key).unwrap_or_default();
                let (value, loaded) = assemble(&key, Some(head), &mine).ok()?;
                Some((
                    key,
                    Versioned {
                        version: kept.version,
                        value,
                        loaded,
                    },
                ))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Sizes and counts of what is stored and written.
    pub fn stats(&self) -> StoreStats {
        let state = self.state();
        StoreStats {
            items: state.items.len(),
            largest_item: state
                .items
                .values()
                .map(|k| item_size(&k.item))
                .max()
                .unwrap_or(0),
            items_written: state.items_written,
            saves: state.saves,
        }
    }

    /// Stores `group` as the previous version did, one item at `version` (tests of reading it).
    pub fn put_legacy(&self, key: &GroupKey, group: &TrackedGroup, version: u64) {
        let body = serde_json::to_string(&StoredGroup::new(key, group)).unwrap_or_default();
        self.state().items.insert(
            group_pk(key),
            Kept {
                item: Item {
                    pk: group_pk(key),
                    body,
                    due: group.due_at().map(|at| (at, Queue::InFlight)),
                    pushed_at: group.first_push(),
                    last_event: group.group.last_event.unwrap_or(Timestamp::from_millis(0)),
                },
                version,
                legacy: None,
            },
        );
    }

    /// Stores a body under a key as is (tests of what cannot be read).
    pub fn put_raw(&self, pk: &str, body: &str, due: Option<Timestamp>) {
        self.state().items.insert(
            pk.to_owned(),
            Kept {
                item: Item {
                    pk: pk.to_owned(),
                    body: body.to_owned(),
                    due: due.map(|at| (at, Queue::InFlight)),
                    pushed_at: None,
                    last_event: Timestamp::from_millis(0),
                },
                version: 1,
                legacy: None,
            },
        );
    }
}

/// Whether a head item is the previous version's single item.
fn is_legacy(kept: &Kept) -> bool {
    serde_json::from_str::<serde_json::Value>(&kept.item.body)
        .ok()
        .and_then(|v| v.get("v").and_then(serde_json::Value::as_u64))
        == Some(u64::from(stored::LEGACY_SCHEMA))
}

impl StateStore for MemoryStateStore {
    async fn load(&self, wants: &[Want]) -> Result<Vec<Versioned<TrackedGroup>>, StoreError> {
        let state = self.state();
        let mut out = Vec::with_capacity(wants.len());
        for (key, tags) in wants {
            let kept = state.items.get(&group_pk(key));
            let head = kept
                .map(|k| read_head(key, &k.item.body, k.version))
                .transpose()?;
            let mut tags: BTreeSet<Option<ImageTag>> = tags.iter().cloned().collect();
            if let Some(h) = &head {
                tags.extend(h.awaiting().map_err(|reason| StoreError::Unreadable {
                    key: group_pk(key),
                    reason,
                })?);
            }
            let records: Vec<(Option<ImageTag>, String)> = match head {
                Some(Head::Legacy(..)) => Vec::new(),
                _ => tags
                    .into_iter()
                    .filter_map(|t| {
                        let body = state.items.get(&record_pk(key, &t))?.item.body.clone();
                        Some((t, body))
                    })
                    .collect(),
            };
            let (value, loaded) = assemble(key, head, &records)?;
            out.push(Versioned {
                version: kept.map_or(0, |k| k.version),
                value,
                loaded,
            });
        }
        Ok(out)
    }

    async fn save(
        &self,
        groups: &[(GroupKey, Versioned<TrackedGroup>)],
    ) -> Result<bool, StoreError> {
        let plans = groups
            .iter()
            .map(|(key, v)| plan(key, v))
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.state();
        let unchanged = plans.iter().all(|p| {
            state
                .items
                .get(&p.head.pk)
                .map_or(0, |stored| stored.version)
                == p.version
        });
        if !unchanged {
            return Ok(false);
        }
        for p in plans {
            for (item, legacy) in p.create {
                let replace = state
                    .items
                    .get(&item.pk)
                    .is_none_or(|k| k.legacy.is_some_and(|v| v < legacy));
                if replace {
                    state.items_written += 1;
                    state.items.insert(
                        item.pk.clone(),
                        Kept {
                            item,
                            version: 0,
                            legacy: Some(legacy),
                        },
                    );
                }
            }
            state.items_written += 1 + p.write.len() as u64;
            for item in p.write {
                state.items.insert(
                    item.pk.clone(),
                    Kept {
                        item,
                        version: 0,
                        legacy: None,
                    },
                );
            }
            state.items.insert(
                p.head.pk.clone(),
                Kept {
                    item: p.head,
                    version: p.version + 1,
                    legacy: None,
                },
            );
        }
        state.saves += 1;
        Ok(true)
    }

    async fn due(
        &self,
        now: Timestamp,
        budget: usize,
        count_watched: bool,
    ) -> Result<DueWork, StoreError> {
        let state = self.state();
        let mut work = DueWork {
            watched: count_watched.then(Census::new),
            ..DueWork::default()
        };
        for (pk, kept) in &state.items {
            let Some((due_at, queue)) = kept.item.due else {
                continue;
            };
            if is_legacy(kept) {
                if due_at <= now {
                    match stored::parse_group_pk(pk) {
                        Ok(key) => work.legacy.push(key),
                        Err(_) => work.unreadable.push(pk.clone()),
                    }
                }
                continue;
            }
            let (key, tag) = match stored::parse_due_pk(pk) {
                Ok(parsed) => parsed,
                Err(_) => {
                    work.unreadable.push(pk.clone());
                    continue;
                }
            };
            let place = (key.source_region.clone(), key.destination.clone());
            match queue {
                Queue::InFlight => *work.in_flight.entry(place).or_default() += 1,
                Queue::Watched => {
                    if let Some(w) = work.watched.as_mut() {
                        *w.entry(place).or_default() += 1;
                    }
                }
                Queue::Chore => {}
            }
            if due_at <= now {
                work.due.push(DueRecord { key, tag, due_at });
                // Kept bounded like the DynamoDB adapter's: the oldest `budget` at most.
                if work.due.len() >= budget.saturating_mul(2).max(1024) {
                    work.due.sort_by_key(|r| r.due_at);
                    work.due.truncate(budget);
                }
            }
        }
        work.due
            .sort_by(|a, b| (a.due_at, &a.key, &a.tag).cmp(&(b.due_at, &b.key, &b.tag)));
        work.due.truncate(budget);
        work.due.shrink_to_fit();
        Ok(work)
    }

    async fn first_rejection(&self, id: &EventId, _at: Timestamp) -> Result<bool, StoreError> {
        Ok(self.state().rejected.insert(id.clone()))
    }

    async fn park(&self, events: &[ReplicationEvent], now: Timestamp) -> Result<(), StoreError> {
        let mut state = self.state();
        for e in events {
            // Parked again: it replaces itself, as a DynamoDB item under its verdict-id would.
            state
                .parked
                .retain(|(_, parked)| parked.detail.verdict_id != e.detail.verdict_id);
            state.parked.push((now, e.clone()));
        }
        // Oldest first; in the order parked at one time.
        state.parked.sort_by_key(|(at, _)| *at);
        Ok(())
    }

    async fn parked(&self, limit: usize) -> Result<Vec<ReplicationEvent>, StoreError> {
        let state = self.state();
        Ok(state
            .parked
            .iter()
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn unpark(&self, verdict_ids: &[String]) -> Result<(), StoreError> {
        self.state()
            .parked
            .retain(|(_, e)| !verdict_ids.contains(&e.detail.verdict_id));
        Ok(())
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
        for (pk, kept) in self.state().items.iter() {
            let Some(pushed) = kept.item.pushed_at.filter(|p| *p >= from && *p < until) else {
                continue;
            };
            let found = if parse_record_pk(pk).is_ok() {
                record_alone(pk, &kept.item.body)?
            } else {
                stored::head_alone(pk, &kept.item.body)?
            };
            if let Some((key, tracked)) = found {
                days.entry(pushed.millis().div_euclid(DAY_MS))
                    .or_default()
                    .push((pushed, key, tracked));
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
