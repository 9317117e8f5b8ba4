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
use std::hash::BuildHasherDefault;
use std::rc::Rc;

use serde_json::Value;

use super::working_set::{FastHasher, Holding, ImagePrint, MemoryStore, OpenGroup, Sightings};
use crate::domain::config::{Destination, Expected, ReplicationConfig};
use crate::domain::correlate::{CopySeen, Group, GroupKey, copy_sources, verdict};
use crate::domain::deletion::{DeleteKind, DeleteSeen, delete_verdict};
use crate::domain::event::{Classified, Copy, Delete, Push, Restore, classify};
use crate::domain::ids::{AccountId, ImageTag, Region, RepositoryName};
use crate::domain::report::{
    DEFAULT_LIST_LIMIT, DeletionRecord, Findings, RejectedRecord, ReplicationRecord, Report,
    ReportBuilder, UnmatchedCopy,
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

/// What comes of a record before it reaches the engine's groups: the record (refused if its
/// time is far from the stream's clock), or that it is a repeat of an event lately seen.
#[derive(Debug)]
// Nearly every record is one to audit, and goes to the auditing thread in a batch as it is:
// boxing it would allocate on one thread and free on the other, the cost holding names and
// digests in place removed.
#[allow(clippy::large_enum_variant)]
pub enum Admitted {
    Record(Classified),
    Duplicate,
}

/// Tells duplicates and implausible times before a record reaches the engine. It depends only
/// on the records before, never on the groups, so `replay` runs it on its reading thread (see
/// [`Engine::ingest_admitted`]); [`Engine::ingest_classified`] runs one of its own.
#[derive(Debug)]
pub struct Gate {
    horizon: Window,
    sightings: Sightings,
    /// The latest push or copy time admitted: the engine's clock, followed the same way.
    watermark: Option<Timestamp>,
}

impl Gate {
    /// A gate for an engine with this horizon ([`Engine::horizon`]).
    pub fn new(horizon: Window) -> Gate {
        Gate {
            horizon,
            sightings: Sightings::default(),
            watermark: None,
        }
    }

    pub fn admit(&mut self, classified: Classified) -> Admitted {
        let print = classified.id().map(Sightings::print);
        let mut admitted = Admitted::Record(classified);
        self.admit_printed(&mut admitted, print);
        admitted
    }

    /// [`Gate::admit`] of every record of `batch` (those `record` gives, admitted where they
    /// lie), in order. The records' ids are looked up together first (see
    /// [`Sightings::read_ahead`]): `replay`'s reading thread admits its records a batch at a
    /// time. `prints` is room for their fingerprints, kept between batches.
    pub fn admit_batch<T>(
        &mut self,
        batch: &mut [T],
        prints: &mut Vec<Option<u128>>,
        record: impl Fn(&mut T) -> Option<&mut Admitted>,
    ) {
        prints.clear();
        prints.extend(batch.iter_mut().map(|r| match record(r) {
            Some(Admitted::Record(classified)) => classified.id().map(Sightings::print),
            _ => None,
        }));
        self.sightings.read_ahead(prints.iter().flatten().copied());
        for (r, &print) in batch.iter_mut().zip(prints.iter()) {
            if let Some(admitted) = record(r) {
                self.admit_printed(admitted, print);
            }
        }
    }

    /// [`Gate::admit`] where the record lies, given the fingerprint of its id (`None` when it
    /// has none): a record refused for its time keeps its id. In place, because a record is
    /// some 260 bytes: taken out and put back, it was copied twice, and copies of records were
    /// 8% of the reading thread (BENCHMARKS.md, "Seventh round").
    fn admit_printed(&mut self, admitted: &mut Admitted, print: Option<u128>) {
        let Admitted::Record(classified) = admitted else {
            return;
        };
        if let Some(clock) = self.watermark
            // One record dated far ahead would move the clock and end every open group early.
            && let Some(rejection) =
                classified.implausible_time(clock, "the stream's clock", self.horizon, None)
        {
            *classified = Classified::Rejected(rejection);
        }
        if let Some(id) = classified.id()
            && !self
                .sightings
                .first_sighting_of(print.unwrap_or_else(|| Sightings::print(id)))
        {
            *admitted = Admitted::Duplicate;
            return;
        }
        if let Classified::Push(_)
        | Classified::Copy(_)
        | Classified::Delete(_)
        | Classified::Restore(_) = classified
            && let Some(at) = classified.time()
        {
            let clock = self.watermark.map_or(at, |w| w.max(at));
            self.watermark = Some(clock);
            self.sightings.advance(clock, self.horizon);
        }
    }
}

/// What the rules say about one repository of one registry and Region, worked out once: a
/// replay asks it of every push, restore and delete, and working it out each time (the filters
/// of every rule of every configuration, and lists built) was a tenth of the auditing thread
/// (BENCHMARKS.md, "Sixth round"). Shared by `Rc`: an engine runs on one thread.
#[derive(Debug)]
struct Route {
    /// The destinations a trigger here must reach; `None` when no configuration of the registry
    /// and Region was given.
    expected: Option<Expected>,
    /// The registries and Regions whose images, pushed to the repository, land here as copies
    /// (see [`copy_sources`]).
    sources: Vec<Destination>,
}

type RouteKey = (AccountId, Region, RepositoryName);

/// Routes held at most: one per repository and Region the stream names, so a few thousand;
/// past this (a stream of made-up names) they are dropped and worked out again.
const ROUTES_HELD: usize = 1 << 16;

/// Runs the audit over records fed one at a time.
pub struct Engine {
    /// Replication configuration per source registry and Region: a handful, looked up by a
    /// scan that needs no key built (a map keyed by (account, Region) cost a Region's clone
    /// per lookup, several per event).
    configs: Vec<ReplicationConfig>,
    /// [`Route`]s worked out so far.
    routes: HashMap<RouteKey, Rc<Route>, BuildHasherDefault<FastHasher>>,
    window: Window,
    /// How long, in stream time, an untouched group stays open and an event id or retired group
    /// is remembered. Longer than the window.
    horizon: Window,
    store: MemoryStore,
    /// The gate of [`Engine::ingest_classified`]; unused when records come admitted.
    gate: Gate,
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
            configs: configs.into_iter().fold(Vec::new(), |mut all, c| {
                // A registry's configuration given twice: the last one counts.
                all.retain(|known: &ReplicationConfig| {
                    (known.registry, &known.region) != (c.registry, &c.region)
                });
                all.push(c);
                all
            }),
            routes: HashMap::default(),
            window,
            horizon: default_horizon(window),
            store: MemoryStore::default(),
            gate: Gate::new(default_horizon(window)),
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
        self.gate = Gate::new(self.horizon);
        self
    }

    /// How long, in stream time, an untouched group stays open and an event id is remembered.
    pub fn horizon(&self) -> Window {
        self.horizon
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
        self.ingest_classified(classify(record), location, out);
    }

    /// [`Self::ingest`] of a record already classified ([`classify`] is pure, so `replay`
    /// classifies on its reading thread, and this thread only correlates and judges).
    pub fn ingest_classified(
        &mut self,
        classified: Classified,
        location: impl FnOnce() -> String,
        out: &mut impl Findings,
    ) {
        let admitted = self.gate.admit(classified);
        self.ingest_admitted(&admitted, location, out);
    }

    /// [`Self::ingest_classified`] of a record a [`Gate`] of this engine's horizon admitted,
    /// which saw every record before it, in order, and no other. Borrowed: what the engine keeps
    /// it copies out, and a record (some 260 bytes) moved out of `replay`'s batches and down
    /// through these calls was copied on each step (BENCHMARKS.md, "Seventh round").
    pub fn ingest_admitted(
        &mut self,
        admitted: &Admitted,
        location: impl FnOnce() -> String,
        out: &mut impl Findings,
    ) {
        self.report.events.read += 1;
        let classified = match admitted {
            Admitted::Record(classified) => classified,
            Admitted::Duplicate => {
                self.report.events.duplicate += 1;
                return;
            }
        };
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
            Classified::Delete(delete) => {
                self.report.events.delete += 1;
                self.advance(delete.at);
                self.delete(delete);
            }
            Classified::Restore(restore) => {
                self.report.events.restore += 1;
                self.advance(restore.at);
                self.restore(restore);
            }
            Classified::Ignored { at, .. } => {
                self.report.events.ignored += 1;
                if let Some(at) = at {
                    self.report.saw_time(*at);
                }
            }
            Classified::Rejected(r) => {
                let record = RejectedRecord {
                    record: location(),
                    event_id: r.event_id.clone(),
                    field: r.field.clone(),
                    reason: r.problem.clone(),
                };
                self.reject(record, out);
                return;
            }
        }
        self.retire(out);
        self.expire(out);
    }

    /// The configuration of a source registry and Region, if one was given.
    fn config(&self, account: AccountId, region: &Region) -> Option<&ReplicationConfig> {
        self.configs
            .iter()
            .find(|c| c.registry == account && c.region == *region)
    }

    /// The [`Route`] of `repository` in a registry and Region.
    fn route(
        &mut self,
        account: AccountId,
        region: &Region,
        repository: &RepositoryName,
    ) -> Rc<Route> {
        let key = (account, region.clone(), repository.clone());
        if let Some(route) = self.routes.get(&key) {
            return Rc::clone(route);
        }
        let own = self.config(account, region);
        let here = Destination {
            account,
            region: region.clone(),
        };
        let route = Rc::new(Route {
            expected: own.map(|c| c.expected_destinations(repository)),
            sources: copy_sources(&here, repository, own, &self.configs),
        });
        if self.routes.len() == ROUTES_HELD {
            self.routes.clear();
        }
        self.routes.insert(key, Rc::clone(&route));
        route
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

    fn push(&mut self, push: &Push) {
        let route = self.route(push.account, &push.region, &push.repository);
        let image = ImagePrint::of(&push.repository, &push.digest);
        if self.arrived_copy(push, &image, &route) {
            return;
        }
        let Some(expected) = &route.expected else {
            self.report
                .add_unconfigured_push(push.account, &push.region);
            return;
        };
        if expected.dropped_self {
            self.self_destinations_dropped += 1;
        }
        if let Some(tag) = &push.tag
            && !expected.destinations.is_empty()
        {
            self.store.note_tag_push(
                push.account,
                &push.region,
                &push.repository,
                &image,
                tag,
                push.at,
            );
        }
        for destination in &expected.destinations {
            let print = image.key(push.account, &push.region, destination);
            if self.store.is_retired_expectation(&print, &push.tag) {
                continue;
            }
            let clock = self.clock();
            let key = || GroupKey::of_push(push, destination.clone());
            let group = self.store.group_mut(key, &print, clock);
            group.add_push(push.tag.clone(), push.at);
            // The group is at hand: looking it up again would cost a lookup more.
            if let Some(after) = retirement_time(group, self.window) {
                self.store.schedule_retirement(&print, after);
            }
        }
    }

    /// A restore: replicated like a push when a rule covers the repository, with an expectation
    /// of its own (by digest, from the restore's time) in every destination. A restore of an
    /// image whose group was audited and let go opens the group again: it is a new trigger.
    fn restore(&mut self, restore: &Restore) {
        let route = self.route(restore.account, &restore.region, &restore.repository);
        let image = ImagePrint::of(&restore.repository, &restore.digest);
        if self.arrived_copy(restore, &image, &route) {
            return;
        }
        let Some(expected) = &route.expected else {
            return;
        };
        for destination in &expected.destinations {
            let print = image.key(restore.account, &restore.region, destination);
            let clock = self.clock();
            let key = || GroupKey::of_push(restore, destination.clone());
            let group = self.store.group_mut(key, &print, clock);
            group.add_restore(restore.at);
            if let Some(after) = retirement_time(group, self.window) {
                self.store.schedule_retirement(&print, after);
            }
        }
    }

    /// Whether `push` is the copy of an image pushed elsewhere landing here (see
    /// [`crate::domain::correlate::copy_candidates`], whose candidates are those of `route`'s
    /// sources; `image` is the print of `push`'s image): then it is recorded as that copy, and
    /// opens nothing of its own.
    fn arrived_copy(&mut self, push: &Push, image: &ImagePrint, route: &Route) -> bool {
        if route.sources.is_empty() {
            return false;
        }
        let clock = self.clock();
        let mut arrived = false;
        let here = Destination {
            account: push.account,
            region: push.region.clone(),
        };
        for source in &route.sources {
            let print = image.key(source.account, &source.region, &here);
            if let Some(group) = self.store.open_group(&print, clock)
                && group.awaits_copy(&push.tag, push.at)
            {
                group.add_copy(CopySeen {
                    id: push.id.clone(),
                    at: push.at,
                    tag: push.tag.clone(),
                    succeeded: true,
                });
                if let Some(after) = retirement_time(group, self.window) {
                    self.store.schedule_retirement(&print, after);
                }
                arrived = true;
            }
        }
        arrived
    }

    fn copy(&mut self, copy: &Copy) {
        let destination = Destination {
            account: copy.destination_account,
            region: copy.destination_region.clone(),
        };
        let print = ImagePrint::of(&copy.repository, &copy.digest).key(
            copy.source_account,
            &copy.source_region,
            &destination,
        );
        let clock = self.clock();
        let key = || GroupKey::of_copy(copy);
        let Some(group) = self
            .store
            .group_of_copy(key, &print, &copy.tag, Some(&copy.id), clock)
        else {
            // A further result for a push already audited.
            return;
        };
        group.add_copy(CopySeen {
            id: copy.id.clone(),
            at: copy.at,
            tag: copy.tag.clone(),
            succeeded: copy.succeeded,
        });
        if let Some(after) = retirement_time(group, self.window) {
            self.store.schedule_retirement(&print, after);
        }
    }

    /// A delete. In a registry where a delete of this image is owed (see
    /// [`Engine::delete_arrived`]), that delete applied. Otherwise a delete at the source:
    /// recorded in the group of every destination the rules name for the repository, so that a
    /// push still without its copy is withdrawn rather than missing; and, in the destinations of
    /// the rules with delete replication, owed (of its tag, the image's last tag, or the image,
    /// told apart by the tags the open group knows). A group already retired has every copy it
    /// owed, but still owes the delete: it is opened again. One not opened yet keeps the delete
    /// for its push (read later).
    ///
    /// Where the registry is a source too (chained or two-way rules), a DELETE there may be a
    /// delete replicated into it or one of its own; which, the order of reading cannot decide.
    /// Either way the image is gone there, so it withdraws that registry's pushes of it still
    /// without a copy. It owes a delete onwards only while it applies no delete owed to that
    /// registry: ECR replicates no replica onwards. Read before the delete it turns out to
    /// apply, what it was taken to owe is taken back then.
    fn delete(&mut self, delete: &Delete) {
        let route = self.route(delete.account, &delete.region, &delete.repository);
        let image = ImagePrint::of(&delete.repository, &delete.digest);
        let replica = self.delete_arrived(delete, &image, &route);
        let (Some(config), Some(expected)) =
            (self.config(delete.account, &delete.region), &route.expected)
        else {
            return;
        };
        let owed = if replica {
            Vec::new()
        } else {
            config.delete_destinations(&delete.repository).destinations
        };
        let clock = self.clock();
        // (registry, the DELETE's tag and time) of each replica's DELETE read before.
        let mut replicas = Vec::new();
        for destination in &expected.destinations {
            let owes = owed.contains(destination);
            let print = image.key(delete.account, &delete.region, destination);
            let key = || GroupKey::of_push(delete, destination.clone());
            let group = if owes {
                Some(self.store.group_mut(key, &print, clock))
            } else {
                self.store
                    .group_of_copy(key, &print, &delete.tag, None, clock)
            };
            let Some(group) = group else { continue };
            group.add_deletion(delete.tag.clone(), delete.at);
            if owes {
                let left = delete
                    .tag
                    .as_ref()
                    .is_some_and(|t| group.other_tags_left(t, delete.at));
                let kind = DeleteKind::of(delete.tag.as_ref(), left);
                group.expect_delete(delete.tag.clone(), delete.at, kind);
                replicas.extend(
                    group
                        .deletes()
                        .seen_applying(&delete.tag, delete.at)
                        .into_iter()
                        .map(|seen| (destination.clone(), seen.tag.clone(), seen.at)),
                );
            }
        }
        for (registry, tag, at) in replicas {
            self.retract_onward(delete, &image, &registry, &tag, at);
        }
    }

    /// Takes back the deletes that a DELETE of `tag` at `at` in `registry`, read before the
    /// source's `delete` it turned out to apply, was taken to owe onwards (see
    /// [`Engine::delete`]).
    fn retract_onward(
        &mut self,
        delete: &Delete,
        image: &ImagePrint,
        registry: &Destination,
        tag: &Option<ImageTag>,
        at: Timestamp,
    ) {
        let Some(config) = self.config(registry.account, &registry.region) else {
            return;
        };
        let onward = config.delete_destinations(&delete.repository).destinations;
        let clock = self.clock();
        for destination in &onward {
            let print = image.key(registry.account, &registry.region, destination);
            if let Some(group) = self.store.open_group(&print, clock) {
                group.retract_delete(tag, at);
            }
        }
    }

    /// Whether `delete` is a delete owed here arriving: the same image travelling to this
    /// registry, in an open group that owes a delete of it (or its tag) not yet seen applied, or
    /// seen applied only later than this.
    /// The DELETE is recorded in every open such group even when none owes it yet, and, for a
    /// source whose rules replicate this repository's deletes here, in a group opened for it
    /// when none is open: the source's DELETE, from another Region (another file of an archive
    /// read one Region at a time), may be read after it, and finds it then. A group holding
    /// only DELETEs seen concludes to nothing when the horizon drops it.
    fn delete_arrived(&mut self, delete: &Delete, image: &ImagePrint, route: &Route) -> bool {
        if route.sources.is_empty() {
            return false;
        }
        let clock = self.clock();
        let mut arrived = false;
        let here = Destination {
            account: delete.account,
            region: delete.region.clone(),
        };
        for source in &route.sources {
            let print = image.key(source.account, &source.region, &here);
            let owed_here = self
                .config(source.account, &source.region)
                .is_some_and(|c| c.replicates_deletes_to(&delete.repository, &here));
            let group = if owed_here {
                let key = || GroupKey::of_arrival(source, delete, &here);
                Some(self.store.group_mut(key, &print, clock))
            } else {
                self.store.open_group(&print, clock)
            };
            if let Some(group) = group {
                arrived |= group.deletes().awaits(&delete.tag, delete.at);
                group.add_delete_seen(DeleteSeen {
                    id: delete.id.clone(),
                    at: delete.at,
                    tag: delete.tag.clone(),
                });
                if let Some(after) = retirement_time(group, self.window) {
                    self.store.schedule_retirement(&print, after);
                }
            }
        }
        arrived
    }

    fn retire(&mut self, out: &mut impl Findings) {
        let Some(watermark) = self.watermark else {
            return;
        };
        for (after, fp) in self.store.retirable(watermark) {
            let Some(open) = self.store.take(fp) else {
                continue;
            };
            let group = &open.group;
            let still_due =
                group.is_settled() && group.last_event.map(|t| t.plus(self.window)) == Some(after);
            if !still_due {
                self.store.keep(open);
                continue;
            }
            self.store.mark_retired(&open.print, group);
            // Settled verdicts do not depend on "now".
            self.conclude(&open, watermark, out);
        }
    }

    /// Concludes the groups nothing has touched for a horizon: their copies are missing or
    /// failed (a copy that comes later matches no push), or they are copies whose push never
    /// came. Checked every quarter horizon of stream time; otherwise one comparison.
    fn expire(&mut self, out: &mut impl Findings) {
        let Some(clock) = self.watermark else {
            return;
        };
        for open in self.store.take_expired(clock, self.horizon) {
            if open.group.is_settled() {
                // Settled but not retired yet only when events came far out of order.
                self.store.mark_retired(&open.print, &open.group);
            }
            self.conclude(&open, clock, out);
        }
    }

    fn conclude(&mut self, open: &OpenGroup, now: Timestamp, out: &mut impl Findings) {
        let (key, group) = (&open.key, &open.group);
        let resolution = group.resolve();
        for (expectation, mut evidence) in group.expectations().iter().zip(resolution.evidence) {
            if let (Some(tag), Some((copied_at, false))) = (&expectation.tag, evidence.success) {
                evidence.tag_moved_on =
                    self.store
                        .tag_moved(key, tag, expectation.pushed_at, copied_at);
            }
            let record = ReplicationRecord {
                key: key.clone(),
                trigger: expectation.trigger,
                tag: expectation.tag.clone(),
                pushed_at: expectation.pushed_at,
                outcome: verdict(expectation, evidence, self.window, now),
            };
            self.report.add_verdict(&record);
            out.verdict(&record);
        }
        for i in resolution.unmatched {
            let copy = &group.copies()[i];
            // A further result for a push of a group retired before, which came while the group
            // was open again (a delete, a push or a restore opened it, and a trigger read later
            // might have taken the copy): a repeat, as it is when it comes to a group not open,
            // not a copy that matches no push. Told when it came: the push it repeats may be
            // forgotten by now.
            if open.repeats.contains(&copy.id) {
                continue;
            }
            let copy = UnmatchedCopy {
                key: key.clone(),
                copy: copy.clone(),
            };
            self.report.add_unmatched(&copy);
            out.unmatched(&copy);
        }
        let deletes = group.deletes();
        for (e, gone_at) in deletes.expectations().iter().zip(deletes.gone_at()) {
            let record = DeletionRecord {
                key: key.clone(),
                tag: e.tag.clone(),
                deleted_at: e.deleted_at,
                outcome: delete_verdict(e, gone_at, self.window, now),
            };
            self.report.add_deletion(&record);
            out.deletion(&record);
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
        Holding {
            event_ids: self.gate.sightings.len(),
            ..self.store.holding()
        }
    }

    pub fn self_destinations_dropped(&self) -> u64 {
        self.self_destinations_dropped
    }

    /// Concludes every group still open at `now` (by default the latest event time read) and
    /// returns the report.
    pub fn finish(mut self, now: Option<Timestamp>, out: &mut impl Findings) -> Report {
        let now = now.or(self.report.latest_event());
        for open in self.store.drain_sorted() {
            // With no event at all there is no group either, so `now` is always set here.
            let at = now.unwrap_or(Timestamp::from_millis(i64::MIN));
            self.conclude(&open, at, out);
        }
        self.report.finish(self.window, now)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::correlate::{Status, Trigger};
    use crate::domain::deletion::DeleteStatus;

    /// A configuration of account 111122223333 in `region` naming `destinations` (same account).
    fn config(region: &str, destinations: &[&str]) -> ReplicationConfig {
        let destinations: Vec<Value> = destinations
            .iter()
            .map(|d| json!({"region": d, "registryId": "111122223333"}))
            .collect();
        let doc = json!({"registryId": "111122223333", "replicationConfiguration": {"rules": [
            {"destinations": destinations}
        ]}});
        ReplicationConfig::from_json(&doc, Region::parse(region).unwrap(), None).unwrap()
    }

    /// us-west-2 -> us-east-1 and ap-southeast-2, in one account.
    fn engine() -> Engine {
        Engine::new(
            [config("us-west-2", &["us-east-1", "ap-southeast-2"])],
            Window::DEFAULT,
        )
    }

    const DIGEST: &str = "sha256:d1d1d1d1d1d1d1d1";

    fn push(id: &str, time: &str, tag: &str) -> Value {
        json!({"version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": "111122223333", "time": time, "region": "us-west-2", "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": "team-a/svc",
                "image-digest": DIGEST, "action-type": "PUSH", "image-tag": tag}})
    }

    /// `push` of the same image in another Region (a destination's own event).
    fn push_in(id: &str, time: &str, tag: &str, region: &str) -> Value {
        let mut e = push(id, time, tag);
        e["region"] = json!(region);
        e
    }

    /// A delete at the source of the image (`tag` `None`) or of its tag.
    fn delete(id: &str, time: &str, tag: Option<&str>) -> Value {
        let mut e = push(id, time, tag.unwrap_or(""));
        e["detail"]["action-type"] = json!("DELETE");
        if tag.is_none() {
            e["detail"].as_object_mut().unwrap().remove("image-tag");
        }
        e
    }

    /// `DIGEST` restored from the archive storage class (`target` `STANDARD`), or archived.
    fn storage_class(id: &str, time: &str, target: &str) -> Value {
        json!({"version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": "111122223333", "time": time, "region": "us-west-2", "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": "team-a/svc",
                "image-digest": DIGEST, "action-type": "UPDATE_STORAGE_CLASS",
                "target-storage-class": target,
                "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
                "last-activated-at": "2024-03-01T10:00:00Z"}})
    }

    fn copy(id: &str, time: &str, tag: &str, region: &str) -> Value {
        json!({"version": "0", "id": id, "detail-type": "ECR Replication Action",
            "source": "aws.ecr", "account": "111122223333", "time": time, "region": region,
            "resources": [], "detail": {"result": "SUCCESS", "repository-name": "team-a/svc",
                "image-digest": DIGEST, "source-account": "111122223333",
                "action-type": "REPLICATE", "source-region": "us-west-2", "image-tag": tag}})
    }

    /// Another image's push, only to move the stream's clock.
    fn filler(id: &str, time: &str) -> Value {
        json!({"version": "0", "id": id, "detail-type": "ECR Image Action", "source": "aws.ecr",
            "account": "111122223333", "time": time, "region": "eu-north-1", "resources": [],
            "detail": {"result": "SUCCESS", "repository-name": "other", "image-digest":
                "sha256:0f0f0f0f", "action-type": "PUSH"}})
    }

    #[derive(Default)]
    struct Collected {
        verdicts: Vec<ReplicationRecord>,
        deletions: Vec<DeletionRecord>,
        unmatched: Vec<UnmatchedCopy>,
        rejected: Vec<RejectedRecord>,
    }

    impl Findings for Collected {
        fn verdict(&mut self, record: &ReplicationRecord) {
            self.verdicts.push(record.clone());
        }
        fn deletion(&mut self, record: &DeletionRecord) {
            self.deletions.push(record.clone());
        }
        fn unmatched(&mut self, copy: &UnmatchedCopy) {
            self.unmatched.push(copy.clone());
        }
        fn rejected(&mut self, record: &RejectedRecord) {
            self.rejected.push(record.clone());
        }
    }

    fn run(records: &[Value]) -> (Report, Collected) {
        run_on(engine(), records)
    }

    fn run_on(mut engine: Engine, records: &[Value]) -> (Report, Collected) {
        let mut out = Collected::default();
        for (n, r) in records.iter().enumerate() {
            engine.ingest(r, || format!("record {n}"), &mut out);
        }
        let report = engine.finish(None, &mut out);
        (report, out)
    }

    fn verdict_of<'a>(out: &'a Collected, tag: &str, region: &str) -> &'a ReplicationRecord {
        out.verdicts
            .iter()
            .find(|v| {
                v.tag.as_ref().map(|t| t.as_str()) == Some(tag)
                    && v.key.destination.region.as_str() == region
            })
            .unwrap_or_else(|| panic!("no verdict for {tag} -> {region}: {:?}", out.verdicts))
    }

    /// The retag-521 copy (12:23:24) is read first, long before both pushes; v521's copies make
    /// the rest of the group settle and retire before the retag's push is read.
    #[test]
    fn a_copy_read_long_before_its_push_still_matches_after_the_rest_of_its_group_settled() {
        let (report, out) = run(&[
            copy(
                "c-retag",
                "2024-07-01T12:23:24Z",
                "retag-521",
                "ap-southeast-2",
            ),
            push("p-v521", "2024-07-01T11:11:54Z", "v521"),
            copy("c-v521-e", "2024-07-01T11:17:00Z", "v521", "us-east-1"),
            copy("c-v521-a", "2024-07-01T11:18:00Z", "v521", "ap-southeast-2"),
            copy(
                "c-retag-e",
                "2024-07-01T12:11:00Z",
                "retag-521",
                "us-east-1",
            ),
            filler("f1", "2024-07-01T13:30:00Z"),
            filler("f2", "2024-07-01T14:10:00Z"),
            push("p-retag", "2024-07-01T12:10:07Z", "retag-521"),
            filler("f3", "2024-07-01T15:00:00Z"),
        ]);
        let retag = verdict_of(&out, "retag-521", "ap-southeast-2");
        assert_eq!(retag.outcome.status, Status::Replicated);
        assert_eq!(retag.outcome.latency_ms, Some(797_000));
        assert!(out.unmatched.is_empty(), "{:?}", out.unmatched);
        assert_eq!(report.problems_total, 0);
    }

    /// The same with the early copy read after the group was retired: it waits for its push.
    #[test]
    fn a_copy_for_a_retired_group_whose_tag_was_never_pushed_there_waits_for_its_push() {
        let (_, out) = run(&[
            push("p-v521", "2024-07-01T11:11:54Z", "v521"),
            copy("c-v521-e", "2024-07-01T11:17:00Z", "v521", "us-east-1"),
            copy("c-v521-a", "2024-07-01T11:18:00Z", "v521", "ap-southeast-2"),
            filler("f1", "2024-07-01T12:20:00Z"),
            copy(
                "c-retag",
                "2024-07-01T12:23:24Z",
                "retag-521",
                "ap-southeast-2",
            ),
            copy("c-v521-again", "2024-07-01T12:24:00Z", "v521", "us-east-1"),
            push("p-retag", "2024-07-01T12:10:07Z", "retag-521"),
        ]);
        let retag = verdict_of(&out, "retag-521", "ap-southeast-2");
        assert_eq!(retag.outcome.status, Status::Replicated);
        assert!(
            out.unmatched.is_empty(),
            "a repeated copy of v521 is still a repeat: {:?}",
            out.unmatched
        );
    }

    /// `replay` admits records on its reading thread, with a gate of its own: the same
    /// records, repeats and a record far ahead among them, give the same report and findings.
    #[test]
    fn records_admitted_by_a_gate_apart_give_what_the_engine_gives_on_its_own() {
        let records = [
            push("p1", "2024-07-01T10:00:00Z", "v1"),
            copy("c-far", "2024-07-04T10:00:00Z", "v9", "us-east-1"),
            copy("c1", "2024-07-01T10:01:00Z", "v1", "us-east-1"),
            push("p1", "2024-07-01T10:00:00Z", "v1"),
            copy("c1", "2024-07-01T10:01:00Z", "v1", "us-east-1"),
            filler("f1", "2024-07-02T09:00:00Z"),
            filler("f2", "2024-07-03T08:00:00Z"),
            // Within two horizons: still a repeat, across a turn of the generations.
            push("p1", "2024-07-01T10:00:00Z", "v1"),
            copy("c2", "2024-07-03T08:01:30Z", "v1", "ap-southeast-2"),
        ];
        let (alone, out_alone) = run(&records);

        let mut engine = engine().with_horizon(Window::hours(24));
        let mut gate = Gate::new(engine.horizon());
        let mut out = Collected::default();
        for (n, r) in records.iter().enumerate() {
            let admitted = gate.admit(classify(r));
            engine.ingest_admitted(&admitted, || format!("record {n}"), &mut out);
        }
        let apart = engine.finish(None, &mut out);

        assert_eq!(alone.events.duplicate, 3);
        assert_eq!(alone.events.rejected, 1);
        assert_eq!(format!("{alone:?}"), format!("{apart:?}"));
        assert_eq!(out_alone.verdicts, out.verdicts);
        assert_eq!(out_alone.unmatched, out.unmatched);
        assert_eq!(out_alone.rejected, out.rejected);
    }

    #[test]
    fn a_record_a_horizon_ahead_of_the_stream_is_rejected_and_does_not_move_the_clock() {
        let (report, out) = run(&[
            push("p1", "2024-07-01T10:00:00Z", "v1"),
            copy("c-far", "2024-07-04T10:00:00Z", "v9", "us-east-1"),
            copy("c1", "2024-07-01T10:01:00Z", "v1", "us-east-1"),
            copy("c2", "2024-07-01T10:01:30Z", "v1", "ap-southeast-2"),
        ]);
        assert_eq!(out.rejected.len(), 1);
        assert_eq!(out.rejected[0].field, "time");
        assert_eq!(out.rejected[0].record, "record 1");
        assert!(
            out.rejected[0]
                .reason
                .contains("more than 24h ahead of the stream's clock"),
            "{}",
            out.rejected[0].reason
        );
        assert_eq!(report.events.rejected, 1);
        assert_eq!(
            verdict_of(&out, "v1", "us-east-1").outcome.status,
            Status::Replicated
        );
        assert_eq!(
            report.now,
            Some(Timestamp::parse_rfc3339("2024-07-01T10:01:30Z").unwrap()),
            "the audit time is the latest believable event"
        );
    }

    #[test]
    fn a_push_deleted_at_the_source_within_its_window_is_withdrawn_not_missing() {
        let (report, out) = run(&[
            push("p1", "2024-07-01T10:00:00Z", "v1"),
            copy("c1", "2024-07-01T10:00:10Z", "v1", "us-east-1"),
            delete("d1", "2024-07-01T10:05:00Z", Some("v1")),
            filler("f1", "2024-07-01T11:00:00Z"),
        ]);
        assert_eq!(
            verdict_of(&out, "v1", "us-east-1").outcome.status,
            Status::Replicated
        );
        assert_eq!(
            verdict_of(&out, "v1", "ap-southeast-2").outcome.status,
            Status::Withdrawn
        );
        assert_eq!((report.events.delete, report.problems_total), (1, 0));
        assert!(!report.has_problems(), "withdrawn is not a problem");
    }

    #[test]
    fn a_delete_read_before_its_push_still_withdraws_and_one_after_the_window_does_not() {
        let (_, out) = run(&[
            delete("d1", "2024-07-01T10:05:00Z", None),
            push("p1", "2024-07-01T10:00:00Z", "v1"),
            push("p2", "2024-07-01T09:00:00Z", "v0"),
            filler("f1", "2024-07-01T11:00:00Z"),
        ]);
        assert_eq!(
            verdict_of(&out, "v1", "us-east-1").outcome.status,
            Status::Withdrawn
        );
        assert_eq!(
            verdict_of(&out, "v0", "us-east-1").outcome.status,
            Status::Missing,
            "deleted an hour after its push: it was already missing"
        );
    }

    #[test]
    fn a_push_event_in_a_destination_is_the_copy_arriving_not_a_push_of_its_own() {
        // Two-way rules: us-east-1 replicates back to us-west-2.
        let engine = Engine::new(
            [
                config("us-west-2", &["us-east-1", "ap-southeast-2"]),
                config("us-east-1", &["us-west-2"]),
            ],
            Window::DEFAULT,
        );
        let (report, out) = run_on(
            engine,
            &[
                push("p1", "2024-07-01T10:00:00Z", "v1"),
                push_in("p1-east", "2024-07-01T10:00:20Z", "v1", "us-east-1"),
                copy("c1", "2024-07-01T10:00:30Z", "v1", "ap-southeast-2"),
                filler("f1", "2024-07-01T11:00:00Z"),
            ],
        );
        let east = verdict_of(&out, "v1", "us-east-1");
        assert_eq!(
            (east.outcome.status, east.outcome.latency_ms),
            (Status::Replicated, Some(20_000))
        );
        assert_eq!(
            out.verdicts.len(),
            2,
            "no copy back to us-west-2 is expected: {:?}",
            out.verdicts
        );
        assert_eq!(report.problems_total, 0);
    }

    fn untagged_copy(id: &str, time: &str, region: &str) -> Value {
        let mut c = copy(id, time, "", region);
        c["detail"].as_object_mut().unwrap().remove("image-tag");
        c
    }

    /// `v1` pushed and copied at 09:00, archived, and restored at 10:00: the restore is owed a
    /// copy of its own in every destination, from 10:00, whatever the push's copies did.
    #[test]
    fn a_restore_is_owed_a_copy_in_every_destination_from_the_restore_and_an_archive_nothing() {
        let (report, out) = run(&[
            push("p1", "2024-07-01T09:00:00Z", "v1"),
            copy("c1", "2024-07-01T09:00:05Z", "v1", "us-east-1"),
            copy("c2", "2024-07-01T09:00:06Z", "v1", "ap-southeast-2"),
            storage_class("a1", "2024-07-01T09:40:00Z", "ARCHIVE"),
            storage_class("r1", "2024-07-01T10:00:00Z", "STANDARD"),
            untagged_copy("c3", "2024-07-01T10:00:40Z", "us-east-1"),
            filler("f1", "2024-07-01T11:00:00Z"),
        ]);
        assert_eq!((report.events.restore, report.events.ignored), (1, 1));
        let mut restores: Vec<_> = out
            .verdicts
            .iter()
            .filter(|v| v.trigger == Trigger::Restore)
            .map(|v| {
                (
                    v.key.destination.region.as_str(),
                    v.pushed_at.to_string(),
                    v.outcome.status,
                    v.outcome.latency_ms,
                )
            })
            .collect();
        restores.sort();
        assert_eq!(
            restores,
            vec![
                (
                    "ap-southeast-2",
                    "2024-07-01T10:00:00Z".into(),
                    Status::Missing,
                    None
                ),
                (
                    "us-east-1",
                    "2024-07-01T10:00:00Z".into(),
                    Status::Replicated,
                    Some(40_000)
                ),
            ]
        );
        assert_eq!(
            verdict_of(&out, "v1", "us-east-1").outcome.status,
            Status::Replicated,
            "the push keeps its own copy"
        );
        assert!(out.unmatched.is_empty(), "{:?}", out.unmatched);
    }

    /// us-west-2 -> us-east-1 and ap-southeast-2 with delete replication on.
    fn deleting_engine() -> Engine {
        let doc = json!({"registryId": "111122223333", "replicationConfiguration": {"rules": [
            {"destinations": [{"region": "us-east-1", "registryId": "111122223333"},
                              {"region": "ap-southeast-2", "registryId": "111122223333"}],
             "deleteReplication": {"enabled": true}}
        ]}});
        let config =
            ReplicationConfig::from_json(&doc, Region::parse("us-west-2").unwrap(), None).unwrap();
        Engine::new([config], Window::DEFAULT)
    }

    /// A DELETE of `DIGEST` (naming `tag`) in `region`: the source's, or a destination's.
    fn delete_in(id: &str, time: &str, tag: Option<&str>, region: &str) -> Value {
        let mut e = delete(id, time, tag);
        e["region"] = json!(region);
        e
    }

    fn deletions(out: &Collected) -> Vec<(String, Option<String>, DeleteStatus, Option<i64>)> {
        let mut all: Vec<_> = out
            .deletions
            .iter()
            .map(|d| {
                (
                    d.key.destination.region.to_string(),
                    d.tag.as_ref().map(ToString::to_string),
                    d.outcome.status,
                    d.outcome.latency_ms,
                )
            })
            .collect();
        all.sort();
        all
    }

    /// `v1` deleted at 10:00 under delete replication: us-east-1 reports the same delete 20 s
    /// later, ap-southeast-2 never does.
    #[test]
    fn a_delete_under_delete_replication_is_owed_in_each_destination_and_judged_by_their_deletes() {
        let (report, out) = run_on(
            deleting_engine(),
            &[
                push("p1", "2024-07-01T09:00:00Z", "v1"),
                copy("c1", "2024-07-01T09:00:05Z", "v1", "us-east-1"),
                copy("c2", "2024-07-01T09:00:06Z", "v1", "ap-southeast-2"),
                delete("d1", "2024-07-01T10:00:00Z", Some("v1")),
                delete_in("d1-east", "2024-07-01T10:00:20Z", Some("v1"), "us-east-1"),
                filler("f1", "2024-07-01T11:00:00Z"),
            ],
        );
        assert_eq!(
            deletions(&out),
            vec![
                (
                    "ap-southeast-2".into(),
                    Some("v1".into()),
                    DeleteStatus::Missing,
                    None
                ),
                (
                    "us-east-1".into(),
                    Some("v1".into()),
                    DeleteStatus::Replicated,
                    Some(20_000)
                ),
            ]
        );
        assert_eq!(
            report.events.delete, 2,
            "the source's and the destination's"
        );
        assert_eq!(report.delete_problems_total, 1);
        assert!(report.has_problems(), "a missing delete fails the audit");
        assert_eq!(
            verdict_of(&out, "v1", "us-east-1").outcome.status,
            Status::Replicated,
            "the copies keep their verdicts"
        );
        assert!(out.unmatched.is_empty());
    }

    #[test]
    fn a_destinations_delete_read_before_the_sources_still_applies_it_and_one_late_is_late() {
        let (_, out) = run_on(
            deleting_engine(),
            &[
                push("p1", "2024-07-01T09:00:00Z", "v1"),
                copy("c1", "2024-07-01T09:00:05Z", "v1", "us-east-1"),
                delete_in("d1-east", "2024-07-01T09:30:20Z", None, "us-east-1"),
                delete("d1", "2024-07-01T09:30:00Z", None),
                delete_in("d1-ap", "2024-07-01T10:10:00Z", None, "ap-southeast-2"),
                filler("f1", "2024-07-01T11:00:00Z"),
            ],
        );
        assert_eq!(
            deletions(&out),
            vec![
                (
                    "ap-southeast-2".into(),
                    None,
                    DeleteStatus::Late,
                    Some(2_400_000)
                ),
                (
                    "us-east-1".into(),
                    None,
                    DeleteStatus::Replicated,
                    Some(20_000)
                ),
            ]
        );
    }

    /// An archive read one Region at a time, the destinations' files first: their DELETEs, of
    /// an image whose push the stream does not hold, wait for the source's delete.
    #[test]
    fn a_destinations_delete_read_before_the_sources_applies_it_with_no_push_in_the_stream() {
        let (report, out) = run_on(
            deleting_engine(),
            &[
                delete_in("d1-east", "2024-07-01T10:00:20Z", Some("v1"), "us-east-1"),
                delete_in("d1-ap", "2024-07-01T10:00:40Z", None, "ap-southeast-2"),
                delete("d1", "2024-07-01T10:00:00Z", Some("v1")),
                filler("f1", "2024-07-01T11:00:00Z"),
            ],
        );
        assert_eq!(
            deletions(&out),
            vec![
                (
                    "ap-southeast-2".into(),
                    Some("v1".into()),
                    DeleteStatus::Replicated,
                    Some(40_000)
                ),
                (
                    "us-east-1".into(),
                    Some("v1".into()),
                    DeleteStatus::Replicated,
                    Some(20_000)
                ),
            ]
        );
        assert_eq!(report.delete_problems_total, 0);
        assert!(out.verdicts.is_empty() && out.unmatched.is_empty());
    }

    /// Two-way rules with delete replication: us-west-2 <-> us-east-1. us-east-1's DELETE of
    /// the image us-west-2 pushed, read before us-west-2's delete (us-east-1's file first), is
    /// at first also taken for us-east-1's own delete, owed back in us-west-2. Once us-west-2's
    /// delete shows it was that delete's replica, nothing is owed back: ECR replicates no
    /// replica onwards. The same verdicts as in the other order.
    #[test]
    fn a_replicas_delete_read_first_owes_nothing_onwards_under_two_way_rules() {
        let rules = |region: &str, to: &str| {
            let doc = json!({"registryId": "111122223333", "replicationConfiguration": {"rules": [
                {"destinations": [{"region": to, "registryId": "111122223333"}],
                 "deleteReplication": {"enabled": true}}
            ]}});
            ReplicationConfig::from_json(&doc, Region::parse(region).unwrap(), None).unwrap()
        };
        let two_way = || {
            Engine::new(
                [
                    rules("us-west-2", "us-east-1"),
                    rules("us-east-1", "us-west-2"),
                ],
                Window::DEFAULT,
            )
        };
        let pushed = [
            push("p1", "2024-07-01T09:00:00Z", "v1"),
            copy("c1", "2024-07-01T09:00:05Z", "v1", "us-east-1"),
        ];
        let at_source = delete("d1", "2024-07-01T10:00:00Z", Some("v1"));
        let replica = delete_in("d1-east", "2024-07-01T10:00:20Z", Some("v1"), "us-east-1");
        let end = filler("f1", "2024-07-01T11:00:00Z");
        let in_order = [
            &pushed[..],
            &[at_source.clone(), replica.clone(), end.clone()],
        ]
        .concat();
        let reversed = [&pushed[..], &[replica, at_source, end]].concat();
        for records in [in_order, reversed] {
            let (report, out) = run_on(two_way(), &records);
            assert_eq!(
                deletions(&out),
                vec![(
                    "us-east-1".into(),
                    Some("v1".into()),
                    DeleteStatus::Replicated,
                    Some(20_000)
                )]
            );
            assert_eq!(report.delete_problems_total, 0);
        }
    }

    /// A DELETE in a destination waits for its source's delete only where a rule replicates
    /// deletes; one whose source's delete never comes concludes to nothing.
    #[test]
    fn a_destinations_delete_waits_only_where_deletes_are_replicated_and_alone_concludes_to_nothing()
     {
        let lone = delete_in("d1-east", "2024-07-01T10:00:20Z", Some("v1"), "us-east-1");
        let mut without = engine();
        let mut out = Collected::default();
        without.ingest(&lone, || "record 0".into(), &mut out);
        assert_eq!(without.open_groups(), 0, "no rule replicates deletes");

        let mut with = deleting_engine();
        with.ingest(&lone, || "record 0".into(), &mut out);
        assert_eq!(
            with.open_groups(),
            1,
            "us-west-2 -> us-east-1 replicates them"
        );
        let report = with.finish(None, &mut out);
        assert!(
            out.verdicts.is_empty() && out.deletions.is_empty() && out.unmatched.is_empty(),
            "a lone DELETE is no verdict and no unmatched copy"
        );
        assert!(!report.has_problems());
    }

    /// `v1` pushed at 09:00 and copied to both destinations, and the stream's clock moved to
    /// 10:00: both groups settled and retired.
    fn v1_copied_and_retired() -> Vec<Value> {
        vec![
            push("p1", "2024-07-01T09:00:00Z", "v1"),
            copy("c1", "2024-07-01T09:00:05Z", "v1", "us-east-1"),
            copy("c2", "2024-07-01T09:00:06Z", "v1", "ap-southeast-2"),
            filler("f1", "2024-07-01T10:00:00Z"),
        ]
    }

    /// A group retired, then opened again by what concerns no copy (a destination's DELETE
    /// with no source's delete behind it, or a source's delete owed there) is still retired
    /// for copies: a further result for its push is a repeat, not a copy that matched no push.
    #[test]
    fn a_repeated_copy_result_after_a_lone_or_owed_delete_reopened_its_group_is_still_a_repeat() {
        let again = copy("c1-again", "2024-07-01T10:05:00Z", "v1", "us-east-1");
        for (case, reopening) in [
            (
                "a lone DELETE in us-east-1",
                delete_in("d1-east", "2024-07-01T10:01:00Z", Some("v1"), "us-east-1"),
            ),
            (
                "the source's delete",
                delete("d1", "2024-07-01T10:01:00Z", Some("v1")),
            ),
        ] {
            let mut records = v1_copied_and_retired();
            records.extend([reopening, again.clone()]);
            let (_, out) = run_on(deleting_engine(), &records);
            assert!(
                out.unmatched.is_empty(),
                "{case}: the repeat is no unmatched copy: {:?}",
                out.unmatched
            );
            assert_eq!(
                verdict_of(&out, "v1", "us-east-1").outcome.status,
                Status::Replicated,
                "{case}"
            );
        }
    }

    /// The repeat is known as such when it comes, not only while the retired push is still
    /// remembered: here the group is concluded when it expires, after the retired push's
    /// fingerprint has turned over (a 3-hour horizon, the group kept open past it by a
    /// DELETE). Reopened by a lone DELETE, or by a push of another tag (whose copies never
    /// come).
    #[test]
    fn a_repeated_copy_result_in_a_reopened_group_is_still_a_repeat_once_its_push_is_forgotten() {
        for reopening in [
            delete_in("d-east", "2024-07-01T10:01:00Z", Some("v1"), "us-east-1"),
            push("p2", "2024-07-01T10:01:00Z", "v2"),
        ] {
            let mut records = v1_copied_and_retired();
            records.extend([
                reopening.clone(),
                copy("c1-again", "2024-07-01T10:05:00Z", "v1", "us-east-1"),
                filler("f2", "2024-07-01T11:30:00Z"),
                delete_in("d-east-2", "2024-07-01T12:30:00Z", Some("v1"), "us-east-1"),
                filler("f3", "2024-07-01T14:00:00Z"),
                filler("f4", "2024-07-01T15:30:00Z"),
                filler("f5", "2024-07-01T17:00:00Z"),
                filler("f6", "2024-07-01T18:30:00Z"),
                filler("f7", "2024-07-01T20:00:00Z"),
            ]);
            let (_, out) = run_on(
                deleting_engine().with_horizon(Window::parse("3h").unwrap()),
                &records,
            );
            assert!(
                out.unmatched.is_empty(),
                "{}: {:?}",
                reopening["id"],
                out.unmatched
            );
        }
    }

    /// A group retired with deletes alone audited no push: a copy that comes later repeats
    /// nothing, and one that no push takes matches no push.
    #[test]
    fn a_copy_after_a_group_retired_with_deletes_alone_is_no_repeat() {
        let (_, out) = run_on(
            deleting_engine(),
            &[
                delete("d1", "2024-07-01T09:00:00Z", None),
                delete_in("d1-east", "2024-07-01T09:00:20Z", None, "us-east-1"),
                delete_in("d1-ap", "2024-07-01T09:00:30Z", None, "ap-southeast-2"),
                filler("f1", "2024-07-01T10:00:00Z"),
                untagged_copy("c9", "2024-07-01T10:05:00Z", "us-east-1"),
            ],
        );
        assert_eq!(
            deletions(&out).iter().map(|d| d.2).collect::<Vec<_>>(),
            vec![DeleteStatus::Replicated; 2],
            "the group settled and was retired"
        );
        let unmatched: Vec<_> = out.unmatched.iter().map(|u| u.copy.id.as_str()).collect();
        assert_eq!(unmatched, vec!["c9"]);
    }

    /// The same reopened group still takes a copy that a trigger read later owes: an untagged
    /// copy read before its restore is the restore's, not a repeat of the retired push.
    #[test]
    fn a_group_reopened_by_a_lone_delete_still_gives_a_copy_read_first_to_its_restore() {
        let mut records = v1_copied_and_retired();
        records.extend([
            delete_in("d-east", "2024-07-01T10:01:00Z", Some("v1"), "us-east-1"),
            untagged_copy("c3", "2024-07-01T10:30:40Z", "us-east-1"),
            storage_class("r1", "2024-07-01T10:30:00Z", "STANDARD"),
            filler("f2", "2024-07-01T11:40:00Z"),
        ]);
        let (report, out) = run_on(deleting_engine(), &records);
        let restored: Vec<_> = out
            .verdicts
            .iter()
            .filter(|v| v.trigger == Trigger::Restore)
            .map(|v| (v.key.destination.region.as_str(), v.outcome.status))
            .collect();
        assert!(
            restored.contains(&("us-east-1", Status::Replicated)),
            "{restored:?}"
        );
        assert!(out.unmatched.is_empty(), "{:?}", out.unmatched);
        assert_eq!(
            report.problems_total, 1,
            "only ap-southeast-2's copy of the restore is missing"
        );
    }

    #[test]
    fn a_delete_within_its_window_is_pending_and_without_delete_replication_owes_nothing() {
        let (report, out) = run_on(
            deleting_engine(),
            &[
                push("p1", "2024-07-01T09:00:00Z", "v1"),
                delete("d1", "2024-07-01T09:10:00Z", Some("v1")),
            ],
        );
        assert!(
            deletions(&out).iter().all(|d| d.2 == DeleteStatus::Pending),
            "{:?}",
            deletions(&out)
        );
        assert_eq!(report.delete_problems_total, 0);

        let (report, out) = run(&[
            push("p1", "2024-07-01T09:00:00Z", "v1"),
            delete("d1", "2024-07-01T09:10:00Z", Some("v1")),
            filler("f1", "2024-07-01T11:00:00Z"),
        ]);
        assert!(out.deletions.is_empty(), "no rule replicates deletes");
        assert!(!report.has_deletes());
        assert_eq!(
            verdict_of(&out, "v1", "us-east-1").outcome.status,
            Status::Withdrawn,
            "the delete still withdraws the copy it cut short"
        );
    }

    /// `A:latest` pushed, then `B:latest`; A's copy was made after the tag had moved to B, so it
    /// came without `latest`: what the source shows.
    #[test]
    fn a_copy_made_after_its_tag_moved_on_at_the_source_is_replicated_not_untagged() {
        let mut later = push("p-b", "2024-07-01T10:10:00Z", "latest");
        later["detail"]["image-digest"] = json!("sha256:b2b2b2b2b2b2b2b2");
        let mut untagged = copy("c-a", "2024-07-01T10:12:00Z", "latest", "us-east-1");
        untagged["detail"]
            .as_object_mut()
            .unwrap()
            .remove("image-tag");
        let (_, out) = run(&[
            push("p-a", "2024-07-01T10:00:00Z", "latest"),
            later.clone(),
            untagged.clone(),
            filler("f1", "2024-07-01T11:00:00Z"),
        ]);
        let a = out
            .verdicts
            .iter()
            .find(|v| {
                v.key.digest.as_str() == DIGEST && v.key.destination.region.as_str() == "us-east-1"
            })
            .unwrap();
        assert_eq!(a.outcome.status, Status::Replicated);

        // Without the later push, the same copy is untagged.
        let (_, out) = run(&[
            push("p-a", "2024-07-01T10:00:00Z", "latest"),
            untagged,
            filler("f1", "2024-07-01T11:00:00Z"),
        ]);
        assert_eq!(
            verdict_of(&out, "latest", "us-east-1").outcome.status,
            Status::Untagged
        );
    }
}
