//! The replay engine: classified records in, verdicts out, on the embedded store.
//!
//! It holds only what can still change: open groups, plus fingerprints of what was already
//! audited. A group whose every push has its successful copy is retired once the stream has
//! moved one window past its last event, and its verdicts are handed to the caller right away.

use std::collections::HashMap;

use serde_json::Value;

use crate::domain::config::ReplicationConfig;
use crate::domain::correlate::{CopySeen, Group, GroupKey, verdict};
use crate::domain::event::{Classified, Copy, Push, classify};
use crate::domain::ids::{AccountId, Region};
use crate::domain::report::{
    RejectedRecord, ReplicationRecord, Report, ReportBuilder, UnmatchedCopy,
};
use crate::domain::time::{Timestamp, Window};
use crate::store::memory::MemoryStore;

/// When a settled group may be retired: once the stream has moved one window past its last
/// event. `None` while some push still waits for its successful copy.
fn retirement_time(group: &Group, window: Window) -> Option<Timestamp> {
    match (group.is_settled(), group.last_event) {
        (true, Some(last)) => Some(last.plus(window)),
        _ => None,
    }
}

/// Runs the audit over records fed one at a time.
pub struct Engine {
    /// Replication configuration per source registry and Region.
    configs: HashMap<(AccountId, Region), ReplicationConfig>,
    window: Window,
    store: MemoryStore,
    report: ReportBuilder,
    /// The latest push or copy time seen: how far the stream has got.
    watermark: Option<Timestamp>,
    /// Pushes whose rules named the push's own Region (dropped, and warned about once).
    self_destinations_dropped: u64,
}

impl Engine {
    pub fn new(configs: impl IntoIterator<Item = ReplicationConfig>, window: Window) -> Self {
        Engine {
            configs: configs
                .into_iter()
                .map(|c| ((c.registry, c.region.clone()), c))
                .collect(),
            window,
            store: MemoryStore::default(),
            report: ReportBuilder::default(),
            watermark: None,
            self_destinations_dropped: 0,
        }
    }

    /// Counts a record that could not even be read as JSON.
    pub fn unreadable(&mut self, location: String, problem: String) {
        self.report.events.read += 1;
        self.report.add_rejected(RejectedRecord {
            record: location,
            event_id: None,
            field: "(record)".into(),
            reason: problem,
        });
    }

    /// Feeds one record. `location` is only called when the record is rejected. Final verdicts
    /// of retired groups go to `on_verdict`.
    pub fn ingest(
        &mut self,
        record: &Value,
        location: impl FnOnce() -> String,
        on_verdict: &mut impl FnMut(&ReplicationRecord),
    ) {
        self.report.events.read += 1;
        let classified = classify(record);
        if let Some(id) = classified.id()
            && !self.store.first_sighting(id)
        {
            self.report.events.duplicate += 1;
            return;
        }
        match classified {
            Classified::Push(push) => {
                self.report.events.push += 1;
                self.advance(push.at);
                self.push(push);
            }
            Classified::Copy(copy) => {
                self.report.events.replication += 1;
                self.advance(copy.at);
                self.copy(copy);
            }
            Classified::Ignored { at, .. } => {
                self.report.events.ignored += 1;
                if let Some(at) = at {
                    self.report.saw_time(at);
                }
            }
            Classified::Rejected(r) => self.report.add_rejected(RejectedRecord {
                record: location(),
                event_id: r.event_id,
                field: r.field,
                reason: r.problem,
            }),
        }
        self.retire(on_verdict);
    }

    fn advance(&mut self, at: Timestamp) {
        self.report.saw_time(at);
        self.watermark = Some(self.watermark.map_or(at, |w| w.max(at)));
    }

    fn push(&mut self, push: Push) {
        let Some(config) = self.configs.get(&(push.account, push.region.clone())) else {
            self.report
                .add_unconfigured_push(push.account, &push.region);
            return;
        };
        let expected = config.expected_destinations(&push.repository);
        if expected.dropped_self {
            self.self_destinations_dropped += 1;
        }
        for destination in expected.destinations {
            let key = GroupKey::of_push(&push, destination);
            if self.store.is_retired_expectation(&key, &push.tag) {
                continue;
            }
            let group = self.store.group_mut(&key);
            group.add_push(push.tag.clone(), push.at);
            // The group is at hand: looking it up again would hash its key twice more, and
            // hashing keys is a good part of the engine's cost per event.
            if let Some(after) = retirement_time(group, self.window) {
                self.store.schedule_retirement(&key, after);
            }
        }
    }

    fn copy(&mut self, copy: Copy) {
        let key = GroupKey::of_copy(&copy);
        let Some(group) = self.store.group_of_copy(&key) else {
            // A further result for a digest whose every push already has its copy.
            return;
        };
        group.add_copy(CopySeen::from(&copy));
        if let Some(after) = retirement_time(group, self.window) {
            self.store.schedule_retirement(&key, after);
        }
    }

    fn retire(&mut self, on_verdict: &mut impl FnMut(&ReplicationRecord)) {
        let Some(watermark) = self.watermark else {
            return;
        };
        while let Some((key, after, group)) = self.store.pop_retirable(watermark) {
            let Some(group) = group else { continue };
            let still_due =
                group.is_settled() && group.last_event.map(|t| t.plus(self.window)) == Some(after);
            if !still_due {
                self.store.keep(key, group);
                continue;
            }
            self.store.mark_retired(&key, &group);
            // Settled verdicts do not depend on "now".
            self.conclude(&key, &group, watermark, on_verdict);
        }
    }

    fn conclude(
        &mut self,
        key: &GroupKey,
        group: &Group,
        now: Timestamp,
        on_verdict: &mut impl FnMut(&ReplicationRecord),
    ) {
        let resolution = group.resolve();
        for (expectation, evidence) in group.expectations().iter().zip(resolution.evidence) {
            let record = ReplicationRecord {
                key: key.clone(),
                tag: expectation.tag.clone(),
                pushed_at: expectation.pushed_at,
                outcome: verdict(expectation, evidence, self.window, now),
            };
            self.report.add_verdict(&record);
            on_verdict(&record);
        }
        for i in resolution.unmatched {
            self.report.add_unmatched(UnmatchedCopy {
                key: key.clone(),
                copy: group.copies()[i].clone(),
            });
        }
    }

    /// Open groups right now: what the engine's memory grows with.
    pub fn open_groups(&self) -> usize {
        self.store.open_groups()
    }

    pub fn self_destinations_dropped(&self) -> u64 {
        self.self_destinations_dropped
    }

    /// Concludes every group still open at `now` (by default the latest event time read) and
    /// returns the report.
    pub fn finish(
        mut self,
        now: Option<Timestamp>,
        on_verdict: &mut impl FnMut(&ReplicationRecord),
    ) -> Report {
        let now = now.or(self.report.latest_event());
        for (key, group) in self.store.drain_sorted() {
            // With no event at all there is no group either, so `now` is always set here.
            let at = now.unwrap_or(Timestamp::from_millis(i64::MIN));
            self.conclude(&key, &group, at, on_verdict);
        }
        self.report.finish(self.window, now)
    }
}
