//! The replay engine: classified records in, verdicts out, on the embedded store.
//!
//! It holds only what can still change: open groups, plus fingerprints of what was lately
//! audited. A group whose every push has its successful copy is retired once the stream has
//! moved one window past its last event, and its verdicts are handed to the caller right away.
//! A group that never settles (a copy missing or failed) is concluded once nothing has touched
//! it for a *horizon* of stream time (24 hours by default, EventBridge's longest redelivery),
//! and event ids and retired groups are remembered for that horizon: memory follows what
//! happens within a horizon, not the length of the input.

use std::collections::HashMap;

use serde_json::Value;

use super::working_set::{Holding, MemoryStore};
use crate::domain::config::ReplicationConfig;
use crate::domain::correlate::{CopySeen, Group, GroupKey, verdict};
use crate::domain::event::{Classified, Copy, Push, classify};
use crate::domain::ids::{AccountId, Region};
use crate::domain::report::{
    DEFAULT_LIST_LIMIT, Findings, RejectedRecord, ReplicationRecord, Report, ReportBuilder,
    UnmatchedCopy,
};
use crate::domain::time::{Timestamp, Window};

/// EventBridge retries delivering an event for up to 24 hours: a redelivery (same id, same
/// `time`) comes within a day of the first.
pub const DEFAULT_HORIZON: Window = Window::hours(24);

/// The horizon used with `window` when none is given: 24 hours, or two windows if that is
/// longer (a group must be able to go a whole window without its copy before it is concluded).
pub fn default_horizon(window: Window) -> Window {
    if DEFAULT_HORIZON.millis() >= 2 * window.millis() {
        DEFAULT_HORIZON
    } else {
        window.twice()
    }
}

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
    /// How long, in stream time, an untouched group stays open and an event id or retired group
    /// is remembered. Longer than the window.
    horizon: Window,
    store: MemoryStore,
    report: ReportBuilder,
    /// The latest push or copy time seen: how far the stream has got.
    watermark: Option<Timestamp>,
    /// The first push or copy time seen: where the stream's clock started.
    clock_start: Option<Timestamp>,
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
            horizon: default_horizon(window),
            store: MemoryStore::default(),
            report: ReportBuilder::with_list_limit(DEFAULT_LIST_LIMIT),
            watermark: None,
            clock_start: None,
            self_destinations_dropped: 0,
        }
    }

    /// Sets the horizon (see the module documentation). It must be longer than the window, or
    /// a copy still on time could be called missing: a shorter one is taken as two windows.
    pub fn with_horizon(mut self, horizon: Window) -> Self {
        self.horizon = if horizon.millis() > self.window.millis() {
            horizon
        } else {
            self.window.twice()
        };
        self
    }

    /// How many problem copies, unmatched copies and rejected records the report lists (all
    /// are counted, and all go to [`Findings`]).
    pub fn with_list_limit(mut self, limit: usize) -> Self {
        self.report = ReportBuilder::with_list_limit(limit);
        self
    }

    /// Counts a record that could not even be read as JSON.
    pub fn unreadable(&mut self, location: String, problem: String, out: &mut impl Findings) {
        self.report.events.read += 1;
        self.reject(
            RejectedRecord {
                record: location,
                event_id: None,
                field: "(record)".into(),
                reason: problem,
            },
            out,
        );
    }

    fn reject(&mut self, record: RejectedRecord, out: &mut impl Findings) {
        self.report.add_rejected(&record);
        out.rejected(&record);
    }

    /// Feeds one record. `location` is only called when the record is rejected. Final verdicts,
    /// unmatched copies and rejected records go to `out`.
    pub fn ingest(
        &mut self,
        record: &Value,
        location: impl FnOnce() -> String,
        out: &mut impl Findings,
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
            Classified::Rejected(r) => {
                let record = RejectedRecord {
                    record: location(),
                    event_id: r.event_id,
                    field: r.field,
                    reason: r.problem,
                };
                self.reject(record, out);
                return;
            }
        }
        self.retire(out);
        self.expire(out);
    }

    /// Moves the stream's clock (the latest push or copy time) and lets the store forget what
    /// is more than a horizon behind it.
    fn advance(&mut self, at: Timestamp) {
        self.report.saw_time(at);
        let clock = self.watermark.map_or(at, |w| w.max(at));
        self.watermark = Some(clock);
        self.clock_start.get_or_insert(at);
        self.store.advance(clock, self.horizon);
    }

    /// The stream's clock: only called once a push or copy was read.
    fn clock(&self) -> Timestamp {
        self.watermark.unwrap_or(Timestamp::from_millis(i64::MIN))
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
            let clock = self.clock();
            let group = self.store.group_mut(&key, clock);
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
        let clock = self.clock();
        let Some(group) = self.store.group_of_copy(&key, clock) else {
            // A further result for a digest whose every push already has its copy.
            return;
        };
        group.add_copy(CopySeen::from(&copy));
        if let Some(after) = retirement_time(group, self.window) {
            self.store.schedule_retirement(&key, after);
        }
    }

    fn retire(&mut self, out: &mut impl Findings) {
        let Some(watermark) = self.watermark else {
            return;
        };
        while let Some((key, after, open)) = self.store.pop_retirable(watermark) {
            let Some(open) = open else { continue };
            let group = &open.group;
            let still_due =
                group.is_settled() && group.last_event.map(|t| t.plus(self.window)) == Some(after);
            if !still_due {
                self.store.keep(key, open);
                continue;
            }
            self.store.mark_retired(&key, group);
            // Settled verdicts do not depend on "now".
            self.conclude(&key, group, watermark, out);
        }
    }

    /// Concludes the groups nothing has touched for a horizon: their copies are missing or
    /// failed (a copy that comes later matches no push), or they are copies whose push never
    /// came. Checked every quarter horizon of stream time; otherwise one comparison.
    fn expire(&mut self, out: &mut impl Findings) {
        let Some(clock) = self.watermark else {
            return;
        };
        for (key, group) in self.store.take_expired(clock, self.horizon) {
            if group.is_settled() {
                // Settled but not retired yet only when events came far out of order.
                self.store.mark_retired(&key, &group);
            }
            self.conclude(&key, &group, clock, out);
        }
    }

    fn conclude(&mut self, key: &GroupKey, group: &Group, now: Timestamp, out: &mut impl Findings) {
        let resolution = group.resolve();
        for (expectation, evidence) in group.expectations().iter().zip(resolution.evidence) {
            let record = ReplicationRecord {
                key: key.clone(),
                tag: expectation.tag.clone(),
                pushed_at: expectation.pushed_at,
                outcome: verdict(expectation, evidence, self.window, now),
            };
            self.report.add_verdict(&record);
            out.verdict(&record);
        }
        for i in resolution.unmatched {
            let copy = UnmatchedCopy {
                key: key.clone(),
                copy: group.copies()[i].clone(),
            };
            self.report.add_unmatched(&copy);
            out.unmatched(&copy);
        }
    }

    /// Open groups right now: what the engine's memory grows with.
    pub fn open_groups(&self) -> usize {
        self.store.open_groups()
    }

    /// Whether the stream's clock has moved a whole horizon since it started, so that something
    /// may have been forgotten or concluded early. While it has not, the run is what it would
    /// be with no horizon at all: every id and group is still remembered.
    pub fn spanned_horizon(&self) -> bool {
        match (self.clock_start, self.watermark) {
            (Some(start), Some(now)) => now.since(start) >= self.horizon.millis(),
            _ => false,
        }
    }

    /// What the store holds right now (open groups and fingerprints).
    pub fn holding(&self) -> Holding {
        self.store.holding()
    }

    pub fn self_destinations_dropped(&self) -> u64 {
        self.self_destinations_dropped
    }

    /// Concludes every group still open at `now` (by default the latest event time read) and
    /// returns the report.
    pub fn finish(mut self, now: Option<Timestamp>, out: &mut impl Findings) -> Report {
        let now = now.or(self.report.latest_event());
        for (key, group) in self.store.drain_sorted() {
            // With no event at all there is no group either, so `now` is always set here.
            let at = now.unwrap_or(Timestamp::from_millis(i64::MIN));
            self.conclude(&key, &group, at, out);
        }
        self.report.finish(self.window, now)
    }
}
