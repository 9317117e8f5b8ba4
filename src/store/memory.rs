//! The embedded, in-memory stores: [`MemoryStore`] for `replay`, and [`MemoryStateStore`], the
//! Lambda's [`StateStore`] port kept in memory.
//!
//! [`MemoryStore`] holds open groups by key, the event ids already seen, and the keys of
//! groups already audited and let go.
//!
//! A long replay must not hold every group it ever saw. Once every push of a group has its
//! successful copy, no later event can change its verdicts, so the caller may retire it: its
//! verdicts are final and only two 128-bit fingerprints stay behind (of the group, and of each
//! (group, tag)), so that a late duplicate copy or a repeated push is recognised as already
//! audited instead of opening the group again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::app::state::{StateStore, StoreError, Versioned};
use crate::domain::correlate::{Group, GroupKey};
use crate::domain::ids::{EventId, ImageTag};
use crate::domain::ledger::TrackedGroup;
use crate::domain::time::Timestamp;

/// 128 bits from two differently salted SipHash runs: at the sizes a replay sees (millions of
/// ids) an accidental collision is about as likely as a cosmic-ray bit flip, and the sets stay
/// at 16 bytes an entry.
fn fingerprint(value: &impl Hash) -> u128 {
    finish(&hashed(value))
}

/// The two salted hashers after `value`: cloned, they give the fingerprint of `(value, more)`
/// without hashing `value` again (a tuple hashes its elements one after the other).
fn hashed(value: &impl Hash) -> [DefaultHasher; 2] {
    [0u8, 1].map(|salt| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        value.hash(&mut h);
        h
    })
}

fn finish([high, low]: &[DefaultHasher; 2]) -> u128 {
    (u128::from(high.finish()) << 64) | u128::from(low.finish())
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    groups: HashMap<GroupKey, Group>,
    /// Fingerprints of every event id seen: EventBridge delivers at least once.
    seen: HashSet<u128>,
    /// Fingerprints of retired groups: a copy for one of them is a repeat, not an orphan.
    retired_groups: HashSet<u128>,
    /// Fingerprints of retired (group, tag) expectations: a repeated push is not a new one.
    retired_expectations: HashSet<u128>,
    /// Settled groups by the time after which they may be retired. Entries go stale when the
    /// group changes; [`MemoryStore::pop_retirable`] checks them again.
    retire_queue: BinaryHeap<Reverse<(Timestamp, GroupKey)>>,
}

impl MemoryStore {
    /// Whether this is the first time the event id is seen (and remembers it).
    pub fn first_sighting(&mut self, id: &EventId) -> bool {
        self.seen.insert(fingerprint(id))
    }

    /// The group a copy belongs to, opened (empty) if need be; `None` when the group was retired,
    /// so the copy is a further result for a digest already audited. One lookup of the key
    /// fewer than asking whether it is retired, then for the group.
    pub fn group_of_copy(&mut self, key: &GroupKey) -> Option<&mut Group> {
        if !self.groups.contains_key(key) {
            if self.retired_groups.contains(&fingerprint(key)) {
                return None;
            }
            self.groups.insert(key.clone(), Group::default());
        }
        self.groups.get_mut(key)
    }

    pub fn is_retired_expectation(&self, key: &GroupKey, tag: &Option<ImageTag>) -> bool {
        self.retired_expectations
            .contains(&fingerprint(&(key, tag)))
    }

    /// The group a push belongs to, opened (empty) if need be.
    pub fn group_mut(&mut self, key: &GroupKey) -> &mut Group {
        // A push mostly opens a new group, whose key is cloned for the insert anyway: one lookup
        // through the entry, rather than a lookup, an insert and a lookup again.
        self.groups.entry(key.clone()).or_default()
    }

    /// Queues a settled group for retirement once the stream has moved past `after`.
    pub fn schedule_retirement(&mut self, key: &GroupKey, after: Timestamp) {
        self.retire_queue.push(Reverse((after, key.clone())));
    }

    /// The next group whose retirement time is before `watermark`, removed from the store, with
    /// its key. The caller must still check that the group is settled and that its time did not
    /// move (see [`MemoryStore::keep`]).
    pub fn pop_retirable(
        &mut self,
        watermark: Timestamp,
    ) -> Option<(GroupKey, Timestamp, Option<Group>)> {
        match self.retire_queue.peek() {
            Some(Reverse((after, _))) if *after < watermark => {
                let Reverse((after, key)) = self.retire_queue.pop()?;
                let group = self.groups.remove(&key);
                Some((key, after, group))
            }
            _ => None,
        }
    }

    /// Puts back a group that [`MemoryStore::pop_retirable`] took out but that is not done.
    pub fn keep(&mut self, key: GroupKey, group: Group) {
        self.groups.insert(key, group);
    }

    /// Remembers a retired group, so later events about it are recognised.
    pub fn mark_retired(&mut self, key: &GroupKey, group: &Group) {
        // The key is hashed once for its own fingerprint and those of its (key, tag) pairs.
        let key_hashed = hashed(key);
        self.retired_groups.insert(finish(&key_hashed));
        for e in group.expectations() {
            let mut pair = key_hashed.clone();
            for h in &mut pair {
                e.tag.hash(h);
            }
            self.retired_expectations.insert(finish(&pair));
        }
    }

    /// Every group still open, in key order (a stable report).
    pub fn drain_sorted(&mut self) -> Vec<(GroupKey, Group)> {
        self.retire_queue.clear();
        let mut all: Vec<_> = self.groups.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn open_groups(&self) -> usize {
        self.groups.len()
    }
}

/// The Lambda's [`StateStore`] kept in memory: the same contract as the DynamoDB adapter (versions,
/// the open index, rejected ids), for the handler's tests and for running the Lambda's code path
/// offline.
#[derive(Debug, Default)]
pub struct MemoryStateStore {
    inner: std::sync::Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    groups: HashMap<GroupKey, Versioned<TrackedGroup>>,
    rejected: HashSet<u128>,
}

impl MemoryStateStore {
    fn state(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock leaves plain data behind, still consistent per group.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        Ok(self.state().rejected.insert(fingerprint(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::config::Destination;
    use crate::domain::ids::{AccountId, ImageDigest, Region, RepositoryName};

    fn key() -> GroupKey {
        GroupKey {
            source_account: AccountId::parse("111122223333").unwrap(),
            source_region: Region::parse("us-west-2").unwrap(),
            repository: RepositoryName::parse("team/app").unwrap(),
            digest: ImageDigest::parse("sha256:aaaa").unwrap(),
            destination: Destination {
                account: AccountId::parse("444455556666").unwrap(),
                region: Region::parse("eu-west-1").unwrap(),
            },
        }
    }

    #[test]
    fn a_retired_group_and_each_of_its_tags_are_recognised_and_nothing_else() {
        let tag = |s: &str| Some(ImageTag::parse(s).unwrap());
        let mut group = Group::default();
        group.add_push(tag("v1"), Timestamp::from_millis(1_000));
        group.add_push(None, Timestamp::from_millis(2_000));
        let mut store = MemoryStore::default();
        store.mark_retired(&key(), &group);

        assert!(store.is_retired_expectation(&key(), &tag("v1")));
        assert!(store.is_retired_expectation(&key(), &None));
        assert!(!store.is_retired_expectation(&key(), &tag("v2")));
        assert!(
            store.group_of_copy(&key()).is_none(),
            "a copy for it is a repeat"
        );

        let mut other = key();
        other.digest = ImageDigest::parse("sha256:bbbb").unwrap();
        assert!(!store.is_retired_expectation(&other, &tag("v1")));
        assert!(
            store.group_of_copy(&other).is_some(),
            "a new group is opened"
        );
        assert_eq!(store.open_groups(), 1);
    }
}
