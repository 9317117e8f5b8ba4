//! What the Lambda keeps per group beyond the events: what ECR's APIs confirmed, what has been
//! counted, and when to look again.
//!
//! Metrics must count every (push, destination) exactly once although EventBridge delivers at
//! least once, invocations race, and a missing copy may still arrive. So counting is not tied to
//! events: after every change, [`settle`] compares what the group now proves with what was
//! already counted, and returns only the difference. The caller stores the new state and the
//! counts in the same conditional write, so a redelivered event (which changes nothing) counts
//! nothing, and a retried invocation after a failed write counts what the failed one did not.

use std::collections::BTreeMap;

use super::correlate::{
    Claims, Evidence, Expectation, Group, GroupKey, Resolution, Status, Trigger,
};
use super::deletion::{
    DeleteExpectation, DeleteStatus, DeleteWatch, LiveDeleteVerdict, delete_late_is_final_at,
    live_delete_verdict, next_delete_check,
};
use super::ids::{ImageDigest, ImageTag};
use super::metrics::MetricName;
use super::time::{Timestamp, Window};

/// The longest wait between two checks of a copy that is still missing: missing copies stay
/// watched (a late arrival is counted late with its real lag) without costing ECR calls every
/// minute.
pub const MAX_RECHECK_MS: i64 = 6 * 3_600_000;

pub use super::confirm::Confirmation;

/// Which findings have already been counted for one expectation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    pub expected: bool,
    pub completed: bool,
    pub late: bool,
    pub untagged: bool,
    pub failed: bool,
    pub missing: bool,
    pub stale_tag: bool,
    pub withdrawn: bool,
    /// `ECR Image Replicated To All Destinations` published for this push: set in the group of
    /// its first destination (by key) only.
    pub announced: bool,
    pub archived: bool,
}

/// Whether the rules in force still name an expectation's destination: the sweep reads the
/// configuration again, bypassing its cache, before it calls a copy missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StillExpected {
    Yes,
    /// The rules no longer name this destination for the repository (changed since the push
    /// was judged against a cached configuration): the copy is withdrawn, not missing.
    Unconfigured,
}

/// Which of the sweep's queues an expectation waits in while it has a next check: the store
/// keeps them apart, so that the sweep counts each without reading the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Queue {
    /// No copy counted yet, nothing counted missing or failed: in flight (PendingReplications).
    InFlight,
    /// Counted missing or failed, and still watched on its backoff (ReplicationsWatched).
    Watched,
    /// The copy arrived; a lookup (has the tag moved on, is the destination's tag stale) is left.
    Chore,
}

/// The Lambda's watch over one expectation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub counted: Counted,
    pub confirmation: Option<Confirmation>,
    /// The digest the pushed tag points to in the destination, once looked up (stale-tag check).
    pub tag_points_to: Option<Option<ImageDigest>>,
    /// For a copy without its tag: whether the tag names another digest at the source now
    /// (moved on, so the destination is right), once looked up. A tag the source no longer has
    /// did not move on to anything: `Some(false)`.
    pub tag_moved_on: Option<bool>,
    /// When the sweep should look at this expectation next; `None` once nothing is left to learn.
    pub next_check: Option<Timestamp>,
    pub checks: u32,
    /// What the configuration in force said when the copy was about to be called missing.
    pub still_expected: Option<StillExpected>,
    /// The push was found by the inventory check, its event lost: its verdicts and events say
    /// `inventory` rather than `push`.
    pub found_by_inventory: bool,
}

impl Watch {
    /// The queue this expectation waits in: watched once counted missing or failed, a chore once
    /// its copy is counted, in flight before either.
    pub fn queue(&self) -> Queue {
        if self.counted.missing || self.counted.failed {
            Queue::Watched
        } else if self.counted.completed {
            Queue::Chore
        } else {
            Queue::InFlight
        }
    }
}

/// A group as the Lambda stores it: the events' view plus one watch per expectation (a push's
/// by its tag, a restore's by its time).
///
/// It may be partial: the store reads only the expectations an event or a check needs, plus
/// every one still waiting for a committed copy (which is all that matching a copy without its
/// tag looks at). The others each have their copy, and `unloaded` counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackedGroup {
    pub group: Group,
    pub watches: BTreeMap<Option<ImageTag>, Watch>,
    /// The watches of the restores (which have no tag), by the restore's time.
    pub restore_watches: BTreeMap<Timestamp, Watch>,
    /// The watches of the deletes owed, by (tag deleted, delete time).
    pub delete_watches: BTreeMap<(Option<ImageTag>, Timestamp), DeleteWatch>,
    /// Copies matched other than by their own tag, committed once counted (see
    /// [`MATCH_GRACE_MS`]).
    pub claims: Claims,
    /// Expectations of this group that were not loaded: each has its committed copy.
    pub unloaded: u32,
}

/// How long a copy matched other than by its own tag (no tag, or by digest) waits before what it
/// says is counted and the match committed: a push read later, an earlier retag whose event was
/// retried, could still take the copy. Its match depends on the events up to
/// [`super::correlate::MATCH_SKEW_MS`] (one minute) after it; those are all here four minutes
/// later when delivered within four minutes, which covers Lambda's retries of a failed
/// asynchronous invocation (after about one, then two minutes).
pub const MATCH_GRACE_MS: i64 = 5 * 60_000;

/// Something newly learned about one (push, destination): one metric increment each.
#[derive(Clone, Debug, PartialEq)]
pub enum Finding {
    /// A new expectation: this destination must receive this push.
    Expected,
    /// The copy arrived (event or confirmation), with its lag in milliseconds when known (not
    /// when only the status API said COMPLETE).
    Completed {
        latency_ms: Option<i64>,
    },
    Late,
    Untagged,
    Failed {
        failure_code: Option<String>,
    },
    Missing,
    /// The destination's tag points to another digest: deployments there pull the old image.
    StaleTag {
        points_to: ImageDigest,
    },
    /// The window passed with no copy, and none was owed any more (deleted at the source, or
    /// the destination no longer configured).
    Withdrawn,
    /// The copy was found in the destination `ARCHIVED`: there, but not usable.
    Archived,
    /// A new delete owed: this destination must apply this delete at the source.
    DeleteExpected,
    /// The delete was applied in the destination (a DELETE there, or confirmed gone), with its
    /// lag in milliseconds when an event tells it.
    DeleteReplicated {
        latency_ms: Option<i64>,
    },
    DeleteLate,
    /// One window after the delete, the image (or tag) is still in the destination.
    DeleteMissing,
}

impl Finding {
    /// The metric this finding adds one to (a completed copy also gives its lag to
    /// [`MetricName::ReplicationLatency`]).
    pub fn metric(&self) -> MetricName {
        match self {
            Finding::Expected => MetricName::ReplicationsExpected,
            Finding::Completed { .. } => MetricName::ReplicationsCompleted,
            Finding::Late => MetricName::ReplicationsLate,
            Finding::Untagged => MetricName::UntaggedCopies,
            Finding::Failed { .. } => MetricName::ReplicationsFailed,
            Finding::Missing => MetricName::ReplicationsMissing,
            Finding::StaleTag { .. } => MetricName::StaleTags,
            Finding::Withdrawn => MetricName::ReplicationsWithdrawn,
            Finding::Archived => MetricName::CopiesArchived,
            Finding::DeleteExpected => MetricName::DeletesExpected,
            Finding::DeleteReplicated { .. } => MetricName::DeletesReplicated,
            Finding::DeleteLate => MetricName::DeletesLate,
            Finding::DeleteMissing => MetricName::DeletesMissing,
        }
    }

    /// Whether the finding is a problem someone is paged for: its data point is dated when it is
    /// found, so that it lands inside the alarms' evaluation range however late that is.
    pub fn pages(&self) -> bool {
        matches!(
            self,
            Finding::Late
                | Finding::Untagged
                | Finding::Failed { .. }
                | Finding::Missing
                | Finding::StaleTag { .. }
                | Finding::DeleteLate
                | Finding::DeleteMissing
        )
    }

    /// Whether the finding settles the (push, destination) for good enough to log its verdict
    /// line: a copy that arrived, a failure, a confirmed absence. A later finding (late, stale)
    /// follows one of those.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Finding::Completed { .. }
                | Finding::Failed { .. }
                | Finding::Missing
                | Finding::Withdrawn
                | Finding::Archived
                | Finding::DeleteReplicated { .. }
                | Finding::DeleteMissing
        )
    }
}

/// What a group's expectation is: a copy, owed for a push or a restore, or a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owed {
    Copy(Trigger),
    Delete,
}

/// A finding about one expectation of a group.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// What the finding is about: a copy owed (for a push or a restore), or a delete owed.
    pub owed: Owed,
    pub tag: Option<ImageTag>,
    /// When it became owed: the push, the restore, or the delete at the source.
    pub since: Timestamp,
    /// When it happened: the push, the copy, the deadline that passed, or the check that told.
    pub at: Timestamp,
    pub finding: Finding,
}

/// The verdict as the Lambda sees it: the replay verdict, with confirmations taken into account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveVerdict {
    pub status: Status,
    pub replicated_at: Option<Timestamp>,
    pub latency_ms: Option<i64>,
    pub failure_code: Option<String>,
    /// The verdict rests on ECR's APIs rather than on a replication event.
    pub confirmed: bool,
}

/// The current verdict of one expectation, from copy events first, then from confirmations.
pub fn live_verdict(
    e: &Expectation,
    ev: Evidence,
    watch: &Watch,
    window: Window,
    now: Timestamp,
) -> LiveVerdict {
    let arrived = ev
        .success
        .map(|(at, carried)| (Some(at), carried, false))
        .or_else(|| match &watch.confirmation {
            Some(Confirmation::Present {
                pushed_at,
                carried_tag,
                ..
            }) => Some((*pushed_at, *carried_tag || e.tag.is_none(), true)),
            _ => None,
        });
    if let Some((at, carried, confirmed)) = arrived {
        // A copy ECR's APIs find there from before the push or restore (a restore whose
        // destination kept its copy active): there, but with no lag to tell.
        let latency = at
            .map(|at| at.since(e.pushed_at))
            .filter(|&l| !confirmed || l >= 0);
        let moved_on = ev.tag_moved_on || watch.tag_moved_on == Some(true);
        let status = if e.tag.is_some() && !carried && !moved_on {
            Status::Untagged
        } else if latency.is_some_and(|l| l > window.millis()) {
            Status::Late
        } else {
            Status::Replicated
        };
        return LiveVerdict {
            status,
            replicated_at: at,
            latency_ms: latency,
            failure_code: None,
            confirmed,
        };
    }
    if let Some(Confirmation::Archived { pushed_at, .. }) = &watch.confirmation {
        return LiveVerdict {
            status: Status::Archived,
            replicated_at: *pushed_at,
            // As for a copy found present: none from before the push or restore.
            latency_ms: pushed_at
                .map(|at| at.since(e.pushed_at))
                .filter(|&l| l >= 0),
            failure_code: None,
            confirmed: true,
        };
    }
    let confirmed_failure = match &watch.confirmation {
        Some(Confirmation::Failed { failure_code, .. }) => Some(failure_code.clone()),
        _ => None,
    };
    if ev.failed || confirmed_failure.is_some() {
        return LiveVerdict {
            status: Status::Failed,
            replicated_at: None,
            latency_ms: None,
            failure_code: confirmed_failure.flatten(),
            confirmed: !ev.failed,
        };
    }
    let unconfigured = watch.still_expected == Some(StillExpected::Unconfigured);
    let deleted = ev
        .withdrawn_at
        .is_some_and(|at| at.since(e.pushed_at) <= window.millis());
    if deleted || unconfigured {
        return LiveVerdict {
            status: Status::Withdrawn,
            replicated_at: None,
            latency_ms: None,
            failure_code: None,
            confirmed: unconfigured,
        };
    }
    let absent_confirmed = matches!(watch.confirmation, Some(Confirmation::Absent { .. }));
    // Missing only once the configuration in force was read again and still names the
    // destination (a copy counted missing before that check existed stays missing).
    let still_owed = watch.still_expected == Some(StillExpected::Yes) || watch.counted.missing;
    let status = if absent_confirmed && still_owed && now.since(e.pushed_at) > window.millis() {
        Status::Missing
    } else {
        Status::Pending
    };
    LiveVerdict {
        status,
        replicated_at: None,
        latency_ms: None,
        failure_code: None,
        confirmed: absent_confirmed,
    }
}

impl TrackedGroup {
    /// Brings every watch up to date with the group and returns what is newly learned; the
    /// `counted` flags are set for what is returned. Also schedules the next sweep check (see
    /// [`next_check`]).
    pub fn settle(&mut self, key: &GroupKey, window: Window, now: Timestamp) -> Vec<Found> {
        self.commit(now);
        let resolution = self.resolve();
        let mut found = Vec::new();
        for (e, ev) in self.group.expectations().iter().zip(resolution.evidence) {
            let watch = watch_entry(&mut self.watches, &mut self.restore_watches, e);
            let mut add = |at, finding| {
                found.push(Found {
                    owed: Owed::Copy(e.trigger),
                    tag: e.tag.clone(),
                    since: e.pushed_at,
                    at,
                    finding,
                })
            };
            if !watch.counted.expected {
                watch.counted.expected = true;
                add(e.pushed_at, Finding::Expected);
            }
            let v = live_verdict(e, ev, watch, window, now);
            let withdrawn_due = withdrawn_due(e, &ev, &v, window);
            if let Some(latest) = ev.provisional_at {
                // Nothing a provisional match says is counted before it is committed.
                watch.next_check = Some(Timestamp::from_millis(
                    latest.millis().saturating_add(MATCH_GRACE_MS),
                ));
                continue;
            }
            let checked_at = watch
                .confirmation
                .as_ref()
                .map_or(now, Confirmation::checked_at);
            // A failure seen in an event happened at that event.
            let failed_at = ev.failed_at.unwrap_or(checked_at);
            let arrived_at = v.replicated_at.unwrap_or(checked_at);
            let c = &mut watch.counted;
            // A FAILED result counts whatever follows, so a success read before or after it
            // gives the same counts.
            if ev.failed && !c.failed {
                c.failed = true;
                add(
                    failed_at,
                    Finding::Failed {
                        failure_code: v.failure_code.clone(),
                    },
                );
            }
            match v.status {
                Status::Replicated | Status::Late | Status::Untagged => {
                    if !c.completed {
                        c.completed = true;
                        add(
                            arrived_at,
                            Finding::Completed {
                                latency_ms: v.latency_ms,
                            },
                        );
                    }
                    // Late only once no earlier copy can still come (every event is delivered
                    // within four minutes of its time): an earlier copy without the tag, read
                    // later, could make the copy untagged instead, or on time.
                    if v.status == Status::Late
                        && !c.late
                        && late_is_final_at(&v).is_some_and(|at| now >= at)
                    {
                        c.late = true;
                        add(arrived_at, Finding::Late);
                    }
                    // Only once the source was asked whether the tag moved on (the sweep does
                    // at once): a destination whose tag moved on with the source is right.
                    if v.status == Status::Untagged
                        && watch.tag_moved_on == Some(false)
                        && !c.untagged
                    {
                        c.untagged = true;
                        add(arrived_at, Finding::Untagged);
                    }
                }
                Status::Failed if !c.failed => {
                    c.failed = true;
                    add(
                        failed_at,
                        Finding::Failed {
                            failure_code: v.failure_code.clone(),
                        },
                    );
                }
                Status::Missing if !c.missing => {
                    c.missing = true;
                    add(e.pushed_at.plus(window), Finding::Missing);
                }
                Status::Archived if !c.archived => {
                    c.archived = true;
                    add(checked_at, Finding::Archived);
                }
                _ => {}
            }
            if let Some(due) = withdrawn_due
                && !c.withdrawn
                && now >= due
            {
                c.withdrawn = true;
                add(e.pushed_at.plus(window), Finding::Withdrawn);
            }
            if let (Some(Some(points_to)), Some(_)) = (&watch.tag_points_to, &e.tag)
                && *points_to != key.digest
                && watch.tag_moved_on == Some(false)
                && !c.stale_tag
            {
                c.stale_tag = true;
                add(
                    now,
                    Finding::StaleTag {
                        points_to: points_to.clone(),
                    },
                );
            }
            watch.next_check = next_check(e, &v, watch, window, now);
            if let Some(due) = withdrawn_due
                && !watch.counted.withdrawn
            {
                watch.next_check = Some(watch.next_check.map_or(due, |t| t.min(due)));
            }
        }
        found.extend(self.settle_deletes(window, now));
        found
    }

    /// [`TrackedGroup::settle`] for the deletes owed: what is newly counted, and the next check.
    /// A delete applied counts `DeletesReplicated` (with its lag when an event says when), and
    /// `DeletesLate` too after the window; one still there after the window counts
    /// `DeletesMissing` once, stays watched, and counts replicated and late if it goes.
    fn settle_deletes(&mut self, window: Window, now: Timestamp) -> Vec<Found> {
        let deletes = self.group.deletes();
        let mut found = Vec::new();
        for (e, gone_at) in deletes.expectations().iter().zip(deletes.gone_at()) {
            let watch = self
                .delete_watches
                .entry((e.tag.clone(), e.deleted_at))
                .or_default();
            let v = live_delete_verdict(e, gone_at, watch, window, now);
            let checked_at = watch.confirmation.map_or(now, |c| c.checked_at());
            let mut add = |at, finding| {
                found.push(Found {
                    owed: Owed::Delete,
                    tag: e.tag.clone(),
                    since: e.deleted_at,
                    at,
                    finding,
                })
            };
            let c = &mut watch.counted;
            if !c.expected {
                c.expected = true;
                add(e.deleted_at, Finding::DeleteExpected);
            }
            match v.outcome.status {
                DeleteStatus::Replicated | DeleteStatus::Late => {
                    let at = v.outcome.gone_at.unwrap_or(checked_at);
                    if !c.replicated {
                        c.replicated = true;
                        add(
                            at,
                            Finding::DeleteReplicated {
                                latency_ms: v.outcome.latency_ms,
                            },
                        );
                    }
                    // Late only once no earlier DELETE applying it can still come, as for
                    // copies (see [`delete_late_is_final_at`]).
                    if v.outcome.status == DeleteStatus::Late
                        && !c.late
                        && delete_late_is_final_at(&v, MATCH_GRACE_MS).is_none_or(|at| now >= at)
                    {
                        c.late = true;
                        add(at, Finding::DeleteLate);
                    }
                }
                DeleteStatus::Missing if !c.missing => {
                    c.missing = true;
                    add(e.deleted_at.plus(window), Finding::DeleteMissing);
                }
                _ => {}
            }
            watch.next_check =
                next_delete_check(e, &v, watch, window, MAX_RECHECK_MS, MATCH_GRACE_MS);
        }
        found
    }

    /// The current verdict of every delete owed, with its expectation.
    pub fn delete_verdicts(
        &self,
        window: Window,
        now: Timestamp,
    ) -> Vec<(&DeleteExpectation, LiveDeleteVerdict)> {
        let default = DeleteWatch::default();
        let deletes = self.group.deletes();
        deletes
            .expectations()
            .iter()
            .zip(deletes.gone_at())
            .map(|(e, gone_at)| {
                let watch = self
                    .delete_watches
                    .get(&(e.tag.clone(), e.deleted_at))
                    .unwrap_or(&default);
                (e, live_delete_verdict(e, gone_at, watch, window, now))
            })
            .collect()
    }

    /// Whether the group holds any push, loaded or not.
    pub fn has_pushes(&self) -> bool {
        !self.group.expectations().is_empty() || self.unloaded > 0
    }

    /// The earliest push (or restore) of the group: its place in the audit history. A group
    /// that owes only deletes (its image pushed before the history began) is placed by its
    /// earliest delete, so that `audit` finds it.
    pub fn first_push(&self) -> Option<Timestamp> {
        let pushes = self.group.expectations().iter().map(|e| e.pushed_at).min();
        pushes.or_else(|| {
            self.group
                .deletes()
                .expectations()
                .iter()
                .map(|e| e.deleted_at)
                .min()
        })
    }

    /// The earliest check any expectation waits for: the group's place in the sweep's index.
    pub fn due_at(&self) -> Option<Timestamp> {
        let deletes = self.delete_watches.values().filter_map(|w| w.next_check);
        self.watches
            .values()
            .chain(self.restore_watches.values())
            .filter_map(|w| w.next_check)
            .chain(deletes)
            .min()
    }

    /// The watch of one expectation, if it has one yet.
    pub fn watch(&self, e: &Expectation) -> Option<&Watch> {
        match e.trigger {
            Trigger::Push => self.watches.get(&e.tag),
            Trigger::Restore => self.restore_watches.get(&e.pushed_at),
        }
    }

    /// The watch of one expectation, made empty if it has none yet.
    pub fn watch_mut(&mut self, e: &Expectation) -> &mut Watch {
        watch_entry(&mut self.watches, &mut self.restore_watches, e)
    }

    /// Commits the provisional matches older than [`MATCH_GRACE_MS`] at `now`: from then on
    /// they are counted, and no push read later takes them over. Returns whether any was.
    pub fn commit(&mut self, now: Timestamp) -> bool {
        let resolution = self.resolve();
        let mut committed = false;
        for &(copy, expectation) in &resolution.provisional {
            let (c, e) = (
                &self.group.copies()[copy],
                &self.group.expectations()[expectation],
            );
            if now.since(c.at) >= MATCH_GRACE_MS {
                self.claims.insert(c.id.clone(), e.tag.clone());
                committed = true;
            }
        }
        committed
    }

    /// The matching of the group's copies, claims first.
    pub fn resolve(&self) -> Resolution {
        self.group.resolve_with(&self.claims)
    }

    /// The current verdict of every expectation, with its watch.
    pub fn verdicts(&self, window: Window, now: Timestamp) -> Vec<(&Expectation, LiveVerdict)> {
        let default = Watch::default();
        let resolution = self.resolve();
        self.group
            .expectations()
            .iter()
            .zip(resolution.evidence)
            .map(|(e, ev)| {
                let watch = self.watch(e).unwrap_or(&default);
                (e, live_verdict(e, ev, watch, window, now))
            })
            .collect()
    }
}

/// The watch of `e` among a group's watches (a push's by tag, a restore's by time), made empty
/// if need be. A function of the two maps, so that the group's expectations can be read while it
/// runs.
fn watch_entry<'a>(
    watches: &'a mut BTreeMap<Option<ImageTag>, Watch>,
    restore_watches: &'a mut BTreeMap<Timestamp, Watch>,
    e: &Expectation,
) -> &'a mut Watch {
    match e.trigger {
        Trigger::Push => watches.entry(e.tag.clone()).or_default(),
        Trigger::Restore => restore_watches.entry(e.pushed_at).or_default(),
    }
}

/// When the sweep should look at an expectation next:
/// - a copy that arrived with its tag: never;
/// - a copy that arrived without its tag: at once, for one lookup of what the tag points to;
/// - no copy yet: just after one window from the push (never "in progress" before), then, after each
///   check that settled nothing, twice as long as the time before (at most [`MAX_RECHECK_MS`]).
pub fn next_check(
    e: &Expectation,
    v: &LiveVerdict,
    watch: &Watch,
    window: Window,
    now: Timestamp,
) -> Option<Timestamp> {
    match v.status {
        Status::Replicated => None,
        // Counted late once no earlier copy can still come (see [`late_is_final_at`]).
        Status::Late => late_is_final_at(v).filter(|_| !watch.counted.late),
        // At once: one lookup at the source (did the tag move on?), one in the destination
        // (where does its tag point?). Dated at the copy rather than at `now`, so that settling
        // again leaves an unchanged watch unchanged (and its record unwritten).
        Status::Untagged => (watch.tag_moved_on.is_none() || watch.tag_points_to.is_none())
            .then(|| v.replicated_at.unwrap_or(e.pushed_at).min(now)),
        // Nothing to ask ECR: [`TrackedGroup::settle`] counts it, and comes back, when it is
        // due (see [`withdrawn_due`]).
        Status::Withdrawn => None,
        // Confirmed absent past the window, but the configuration in force could not be read
        // yet: ask again at the next sweep (due since that check, a stable instant).
        Status::Pending
            if matches!(watch.confirmation, Some(Confirmation::Absent { .. }))
                && now.since(e.pushed_at) > window.millis() =>
        {
            match &watch.confirmation {
                Some(Confirmation::Absent { checked_at, .. }) => Some((*checked_at).min(now)),
                _ => Some(now),
            }
        }
        // Archived, or activating: looked at again, less and less often, as a missing copy is.
        Status::Failed | Status::Missing | Status::Pending | Status::Archived => {
            let last_check = match &watch.confirmation {
                Some(
                    c @ (Confirmation::Absent { .. }
                    | Confirmation::Failed { .. }
                    | Confirmation::Archived { .. }
                    | Confirmation::Activating { .. }),
                ) => Some(c.checked_at()),
                _ => None,
            };
            match last_check {
                // Exactly one window is still on time: the first check is the first instant after it.
                None if watch.checks == 0 => Some(just_after(e, window)),
                _ => {
                    let doublings = watch.checks.saturating_sub(1).min(20);
                    let wait = window
                        .millis()
                        .saturating_mul(1 << doublings)
                        .min(MAX_RECHECK_MS);
                    Some(Timestamp::from_millis(
                        last_check.unwrap_or(now).millis().saturating_add(wait),
                    ))
                }
            }
        }
    }
}

/// When a late copy is known to be the earliest one: [`MATCH_GRACE_MS`] after it, any earlier
/// copy has been delivered (within four minutes of its time), so whether the expectation is late,
/// or untagged, or on time, can no longer change.
fn late_is_final_at(v: &LiveVerdict) -> Option<Timestamp> {
    v.replicated_at
        .map(|at| Timestamp::from_millis(at.millis().saturating_add(MATCH_GRACE_MS)))
}

/// Whether `e` stood withdrawn at its deadline, one window after its push: its image (or tag)
/// deleted at the source within the window, and neither a copy nor a FAILED result by then. A
/// fact about the events up to the deadline, counted once all of them are in
/// ([`withdrawn_due`]), whatever came after: a copy made after all, late, adds completed
/// and late to it, as it does to a missing copy. Counted from what the group held at the first
/// settle after the window, a copy arriving late made the count depend on whether anything
/// touched the group between the deadline and that copy (README, "Counted exactly once").
fn withdrawn_by_deadline(e: &Expectation, ev: &Evidence, v: &LiveVerdict, window: Window) -> bool {
    let deadline = e.pushed_at.plus(window);
    let deleted = ev
        .withdrawn_at
        .is_some_and(|at| at.since(e.pushed_at) <= window.millis());
    // A FAILED result after the deadline (ECR may fail to copy an image deleted meanwhile)
    // does not change what stood then; one by then does.
    let failed_by_then = ev.failed_at.is_some_and(|at| at <= deadline);
    let settled_by_then = match v.status {
        Status::Withdrawn => false,
        Status::Replicated | Status::Late | Status::Untagged => {
            v.replicated_at.is_none_or(|at| at <= deadline)
        }
        Status::Failed if ev.failed => false,
        // A failure only ECR's APIs reported, an archived copy: nothing says when.
        _ => true,
    };
    deleted && !failed_by_then && !settled_by_then
}

/// When `e` is counted withdrawn, if it is: no longer named by the configuration in force (the
/// sweep read it), once its window has passed; deleted at the source ([`withdrawn_by_deadline`]),
/// once every event up to its deadline is in (each is delivered within [`MATCH_GRACE_MS`] of its
/// time), so that whether it stood withdrawn then is known for good.
fn withdrawn_due(
    e: &Expectation,
    ev: &Evidence,
    v: &LiveVerdict,
    window: Window,
) -> Option<Timestamp> {
    if v.status == Status::Withdrawn && v.confirmed {
        Some(just_after(e, window))
    } else if withdrawn_by_deadline(e, ev, v, window) {
        let deadline = e.pushed_at.plus(window).millis();
        Some(Timestamp::from_millis(
            deadline.saturating_add(MATCH_GRACE_MS),
        ))
    } else {
        None
    }
}

/// The first instant after an expectation's window: exactly one window is still on time.
fn just_after(e: &Expectation, window: Window) -> Timestamp {
    Timestamp::from_millis(e.pushed_at.plus(window).millis() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::correlate::CopySeen;
    use crate::domain::deletion::{DeleteConfirmation, DeleteKind};
    use crate::domain::ids::EventId;

    const W: Window = Window::DEFAULT;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_719_835_200_000 + secs * 1000)
    }
    fn tag(s: &str) -> Option<ImageTag> {
        Some(ImageTag::parse(s).unwrap())
    }
    fn key() -> GroupKey {
        GroupKey::example()
    }
    fn copy(id: &str, at: i64, tag_: Option<&str>, succeeded: bool) -> CopySeen {
        CopySeen {
            id: EventId::parse(id).unwrap(),
            at: t(at),
            tag: tag_.and_then(tag),
            succeeded,
        }
    }
    /// As the sweep leaves a watch when ECR, asked at 1900 s, had no copy and nothing in progress.
    fn found_absent_at_1900(g: &mut TrackedGroup, tag: Option<ImageTag>, still: StillExpected) {
        let w = g.watches.entry(tag).or_default();
        w.confirmation = Some(Confirmation::Absent {
            in_progress: false,
            checked_at: t(1900),
        });
        w.still_expected = Some(still);
    }

    /// The expectation of `tag`, whose copy came late at `copied`, is counted late once no
    /// earlier copy can still come in: [`MATCH_GRACE_MS`] after the copy, when it is due.
    fn late_after_the_grace(g: &mut TrackedGroup, tag: Option<ImageTag>, copied: i64) {
        assert_eq!(g.watches[&tag].next_check, Some(t(copied + 300)));
        assert_eq!(findings(g, copied + 299), vec![]);
        assert_eq!(findings(g, copied + 300), vec![Finding::Late]);
        assert_eq!(g.watches[&tag].next_check, None);
    }

    fn findings(g: &mut TrackedGroup, now: i64) -> Vec<Finding> {
        g.settle(&key(), W, t(now))
            .into_iter()
            .map(|f| f.finding)
            .collect()
    }

    #[test]
    fn a_push_is_expected_once_and_due_one_window_later() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        assert_eq!(findings(&mut g, 0), vec![Finding::Expected]);
        assert_eq!(findings(&mut g, 1), vec![], "settling again counts nothing");
        assert_eq!(
            g.due_at(),
            Some(Timestamp::from_millis(t(1800).millis() + 1)),
            "just after the window"
        );
    }

    #[test]
    fn a_copy_completes_once_with_its_lag_however_often_it_is_delivered() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        findings(&mut g, 0);
        g.group.add_copy(copy("c1", 9, Some("v1"), true));
        assert_eq!(
            findings(&mut g, 9),
            vec![Finding::Completed {
                latency_ms: Some(9000)
            }]
        );
        g.group.add_copy(copy("c1", 9, Some("v1"), true));
        assert_eq!(findings(&mut g, 10), vec![]);
        assert_eq!(g.due_at(), None, "nothing left to check");
    }

    #[test]
    fn a_copy_before_its_push_is_counted_when_the_push_arrives() {
        let mut g = TrackedGroup::default();
        g.group.add_copy(copy("c1", 9, Some("v1"), true));
        assert_eq!(findings(&mut g, 9), vec![]);
        g.group.add_push(tag("v1"), t(0));
        assert_eq!(
            findings(&mut g, 9),
            vec![
                Finding::Expected,
                Finding::Completed {
                    latency_ms: Some(9000)
                }
            ]
        );
    }

    #[test]
    fn nothing_is_missing_until_the_apis_confirm_it_after_the_window() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        findings(&mut g, 0);
        assert_eq!(
            findings(&mut g, 5000),
            vec![],
            "no event is not proof of no copy"
        );
        let w = g.watches.get_mut(&tag("v1")).unwrap();
        w.confirmation = Some(Confirmation::Absent {
            in_progress: true,
            checked_at: t(1900),
        });
        w.checks = 1;
        assert_eq!(
            findings(&mut g, 1900),
            vec![],
            "not before the configuration in force was read again"
        );
        assert_eq!(g.due_at(), Some(t(1900)), "which the next sweep does");
        g.watches.get_mut(&tag("v1")).unwrap().still_expected = Some(StillExpected::Yes);
        assert_eq!(findings(&mut g, 1900), vec![Finding::Missing]);
        assert_eq!(findings(&mut g, 1960), vec![], "counted once");
        assert_eq!(
            g.due_at(),
            Some(t(1900 + 1800)),
            "still watched, one window later"
        );
        g.watches.get_mut(&tag("v1")).unwrap().checks = 3;
        assert_eq!(findings(&mut g, 1960), vec![]);
        assert_eq!(
            g.due_at(),
            Some(t(1900 + 4 * 1800)),
            "then twice as long each time"
        );
        g.watches.get_mut(&tag("v1")).unwrap().checks = 30;
        findings(&mut g, 1960);
        assert_eq!(
            g.due_at(),
            Some(Timestamp::from_millis(t(1900).millis() + MAX_RECHECK_MS))
        );
    }

    /// Every finding of a run, counted by kind (the order they came in does not matter).
    fn totals(found: &[Found]) -> BTreeMap<String, usize> {
        let mut totals = BTreeMap::new();
        for f in found {
            *totals
                .entry(format!("{:?} {:?}", f.tag, f.finding))
                .or_default() += 1;
        }
        totals
    }

    /// Digest D pushed as `v1` at 0 and retagged `v2` at 180 s; a copy without a tag at 300 s.
    /// Whether `v1`'s event is read first or last (its first invocation failed and was
    /// retried), the copy is counted once, for `v1`, with `v1`'s lag.
    #[test]
    fn a_tagless_copy_is_counted_once_for_the_push_it_ends_up_with_whichever_push_came_first() {
        for succeeded in [true, false] {
            let in_order = {
                let mut g = TrackedGroup::default();
                let mut found = Vec::new();
                g.group.add_push(tag("v1"), t(0));
                found.extend(g.settle(&key(), W, t(1)));
                g.group.add_push(tag("v2"), t(180));
                found.extend(g.settle(&key(), W, t(181)));
                g.group.add_copy(copy("c1", 300, None, succeeded));
                found.extend(g.settle(&key(), W, t(301)));
                found.extend(g.settle(&key(), W, t(661)));
                found
            };
            let v1_last = {
                let mut g = TrackedGroup::default();
                let mut found = Vec::new();
                g.group.add_push(tag("v2"), t(180));
                found.extend(g.settle(&key(), W, t(181)));
                g.group.add_copy(copy("c1", 300, None, succeeded));
                found.extend(g.settle(&key(), W, t(301)));
                g.group.add_push(tag("v1"), t(0));
                found.extend(g.settle(&key(), W, t(420)));
                found.extend(g.settle(&key(), W, t(661)));
                found
            };
            assert_eq!(
                totals(&in_order),
                totals(&v1_last),
                "succeeded: {succeeded}"
            );
            let copy_findings: Vec<_> = v1_last
                .iter()
                .filter(|f| f.finding != Finding::Expected)
                .map(|f| (f.tag.clone(), f.finding.clone()))
                .collect();
            let expected = if succeeded {
                vec![(
                    tag("v1"),
                    Finding::Completed {
                        latency_ms: Some(300_000),
                    },
                )]
            } else {
                vec![(tag("v1"), Finding::Failed { failure_code: None })]
            };
            assert_eq!(copy_findings, expected, "succeeded: {succeeded}");
        }
    }

    #[test]
    fn a_committed_match_stays_with_its_push_when_an_earlier_push_comes_after_the_grace() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v2"), t(180));
        g.group.add_copy(copy("c1", 300, None, true));
        let first: Vec<_> = g
            .settle(&key(), W, t(601))
            .into_iter()
            .map(|f| f.finding)
            .collect();
        assert!(first.contains(&Finding::Completed {
            latency_ms: Some(120_000)
        }));
        g.group.add_push(tag("v1"), t(0));
        assert_eq!(
            findings(&mut g, 700),
            vec![Finding::Expected],
            "v1 does not take the copy counted for v2, and nothing is counted twice"
        );
    }

    #[test]
    fn a_failed_result_read_after_the_success_still_counts_failed() {
        let mut a = TrackedGroup::default();
        a.group.add_push(tag("v1"), t(0));
        a.group.add_copy(copy("f", 10, Some("v1"), false));
        let mut found = a.settle(&key(), W, t(10));
        a.group.add_copy(copy("s", 20, Some("v1"), true));
        found.extend(a.settle(&key(), W, t(20)));
        let mut b = TrackedGroup::default();
        b.group.add_push(tag("v1"), t(0));
        b.group.add_copy(copy("s", 20, Some("v1"), true));
        let mut other = b.settle(&key(), W, t(20));
        b.group.add_copy(copy("f", 10, Some("v1"), false));
        other.extend(b.settle(&key(), W, t(21)));
        assert_eq!(totals(&found), totals(&other));
        assert_eq!(totals(&found).len(), 3, "{found:?}");
    }

    #[test]
    fn a_destination_no_longer_configured_is_withdrawn_once_not_missing() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        found_absent_at_1900(&mut g, tag("v1"), StillExpected::Unconfigured);
        assert_eq!(
            findings(&mut g, 1900),
            vec![Finding::Expected, Finding::Withdrawn]
        );
        assert_eq!(findings(&mut g, 5000), vec![], "counted once");
        assert_eq!(g.due_at(), None, "nothing left to ask ECR");
    }

    /// Deleted within its window, its copy made late anyway: withdrawn (at the deadline),
    /// completed and late, whether or not the group was settled between the deadline and the
    /// copy; and a copy from before the deadline, delivered after it, leaves nothing withdrawn.
    #[test]
    fn withdrawn_is_what_stood_at_the_deadline_whenever_the_group_is_settled() {
        let counted = |settle_between: bool| {
            let mut g = TrackedGroup::default();
            g.group.add_push(tag("v1"), t(0));
            g.group.add_deletion(None, t(600));
            let mut all = findings(&mut g, 600);
            if settle_between {
                all.extend(findings(&mut g, 2200));
            }
            g.group.add_copy(copy("c1", 2400, Some("v1"), true));
            all.extend(findings(&mut g, 2400));
            all.extend(findings(&mut g, 2700));
            all
        };
        let expected = vec![
            Finding::Expected,
            Finding::Withdrawn,
            Finding::Completed {
                latency_ms: Some(2_400_000),
            },
            Finding::Late,
        ];
        let sorted = |mut f: Vec<Finding>| {
            f.sort_by_key(|f| format!("{f:?}"));
            f
        };
        assert_eq!(sorted(counted(true)), sorted(expected.clone()));
        assert_eq!(sorted(counted(false)), sorted(expected));

        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_deletion(None, t(600));
        assert_eq!(findings(&mut g, 1900), vec![Finding::Expected]);
        g.group.add_copy(copy("c1", 1700, Some("v1"), true));
        assert_eq!(
            findings(&mut g, 2000),
            vec![Finding::Completed {
                latency_ms: Some(1_700_000)
            }],
            "copied before the deadline: not withdrawn"
        );
        assert_eq!(findings(&mut g, 5000), vec![]);
    }

    /// A FAILED result after the deadline (ECR failing to copy an image deleted meanwhile) is
    /// counted, and leaves it withdrawn, whether it is read before or after the deadline's
    /// settle; one before the deadline means it was not withdrawn.
    #[test]
    fn a_failure_after_the_deadline_leaves_it_withdrawn_in_either_order_and_one_before_does_not() {
        let counted = |failed_at: i64, read_before_settle: bool| {
            let mut g = TrackedGroup::default();
            g.group.add_push(tag("v1"), t(0));
            g.group.add_deletion(None, t(600));
            let mut all = findings(&mut g, 600);
            if !read_before_settle {
                all.extend(findings(&mut g, 2100));
            }
            g.group.add_copy(copy("f1", failed_at, Some("v1"), false));
            all.extend(findings(&mut g, 2200));
            all.extend(findings(&mut g, 5000));
            all.sort_by_key(|f| format!("{f:?}"));
            all
        };
        let failed = Finding::Failed { failure_code: None };
        for read_before_settle in [true, false] {
            assert_eq!(
                counted(1920, read_before_settle),
                vec![Finding::Expected, failed.clone(), Finding::Withdrawn],
                "failed after the deadline, read before its settle: {read_before_settle}"
            );
        }
        assert_eq!(
            counted(1700, true),
            vec![Finding::Expected, failed],
            "failed before the deadline"
        );
    }

    #[test]
    fn a_push_deleted_at_the_source_within_its_window_is_withdrawn_at_its_deadline() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_push(tag("v2"), t(0));
        g.group.add_deletion(tag("v1"), t(600));
        assert_eq!(
            findings(&mut g, 600),
            vec![Finding::Expected, Finding::Expected]
        );
        assert_eq!(
            g.watches[&tag("v1")].next_check,
            Some(t(1800 + 300)),
            "counted once every event up to the deadline is in"
        );
        assert_eq!(
            findings(&mut g, 1801),
            vec![],
            "a copy from before may still come"
        );
        let found = g.settle(&key(), W, t(2100));
        assert_eq!(
            found
                .iter()
                .map(|f| (f.tag.clone(), f.finding.clone(), f.at))
                .collect::<Vec<_>>(),
            vec![(tag("v1"), Finding::Withdrawn, t(1800))],
            "only the deleted tag; v2 is still owed"
        );
        // A copy that still comes is a copy: completed, and late.
        g.group.add_copy(copy("c1", 4000, Some("v1"), true));
        assert_eq!(
            findings(&mut g, 4000),
            vec![Finding::Completed {
                latency_ms: Some(4_000_000)
            }]
        );
        late_after_the_grace(&mut g, tag("v1"), 4000);
    }

    #[test]
    fn a_delete_after_the_window_leaves_the_copy_missing() {
        let mut g = TrackedGroup::default();
        g.group.add_push(None, t(0));
        g.group.add_deletion(None, t(2000));
        found_absent_at_1900(&mut g, None, StillExpected::Yes);
        assert_eq!(
            findings(&mut g, 2000),
            vec![Finding::Expected, Finding::Missing]
        );
    }

    #[test]
    fn a_missing_copy_that_arrives_later_is_counted_late_with_its_real_lag() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        found_absent_at_1900(&mut g, tag("v1"), StillExpected::Yes);
        assert_eq!(
            findings(&mut g, 1900),
            vec![Finding::Expected, Finding::Missing]
        );
        g.group.add_copy(copy("c1", 4000, Some("v1"), true));
        assert_eq!(
            findings(&mut g, 4000),
            vec![Finding::Completed {
                latency_ms: Some(4_000_000)
            }]
        );
        late_after_the_grace(&mut g, tag("v1"), 4000);
    }

    #[test]
    fn a_lost_event_confirmed_present_completes_with_the_destination_push_time() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        findings(&mut g, 0);
        g.watches.get_mut(&tag("v1")).unwrap().confirmation = Some(Confirmation::Present {
            pushed_at: Some(t(14)),
            carried_tag: true,
            checked_at: t(1900),
        });
        assert_eq!(
            findings(&mut g, 1900),
            vec![Finding::Completed {
                latency_ms: Some(14_000)
            }]
        );
        assert_eq!(g.due_at(), None);
        let (_, v) = &g.verdicts(W, t(1900))[0];
        assert!(v.confirmed && v.status == Status::Replicated);
    }

    /// v1 pushed at 0, the digest pushed by digest at `by_digest`; v1's copy comes late with
    /// its tag at `tagged`, and a copy without a tag, earlier (at `tagless`), is read a few
    /// seconds after it. Matched to v1 (the earliest push with no copy a minute after it), it
    /// decides v1's verdict. Returns everything counted from the tagged copy on, and the
    /// verdict's status and lag.
    fn late_tagged_copy_then_earlier_tagless_one(
        by_digest: i64,
        tagged: i64,
        tagless: i64,
        moved_on: bool,
    ) -> (Vec<Finding>, Status, Option<i64>) {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_push(None, t(by_digest));
        findings(&mut g, by_digest);
        g.group.add_copy(copy("tagged", tagged, Some("v1"), true));
        let mut all = findings(&mut g, tagged);
        assert_eq!(
            all,
            vec![Finding::Completed {
                latency_ms: Some(tagged * 1000)
            }],
            "completed at once, not late yet"
        );
        g.group.add_copy(copy("tagless", tagless, None, true));
        g.watches.get_mut(&tag("v1")).unwrap().tag_moved_on = Some(moved_on);
        for now in [tagged + 6, tagless + 300, tagged + 300, 5000] {
            all.extend(findings(&mut g, now));
        }
        let (_, v) = &g.verdicts(W, t(5000))[0];
        (all, v.status, v.latency_ms)
    }

    #[test]
    fn a_late_copy_is_not_counted_late_when_an_earlier_copy_without_its_tag_comes_after_it() {
        // Untagged, not late: as if the events had come in time order.
        let (all, status, lag) = late_tagged_copy_then_earlier_tagless_one(200, 2254, 2153, false);
        assert_eq!(all[1..], [Finding::Untagged]);
        assert_eq!((status, lag), (Status::Untagged, Some(2_153_000)));
    }

    #[test]
    fn a_late_copy_is_not_counted_late_when_an_earlier_copy_on_time_comes_after_it() {
        // The earlier copy is within the window, and the tag has moved on at the source (so the
        // copy without it is right): replicated on time.
        let (all, status, lag) = late_tagged_copy_then_earlier_tagless_one(100, 1815, 1750, true);
        assert!(!all.contains(&Finding::Late), "{all:?}");
        assert_eq!((status, lag), (Status::Replicated, Some(1_750_000)));
    }

    #[test]
    fn an_untagged_copy_is_counted_and_checked_once_for_a_stale_tag() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_copy(copy("c1", 5, None, true));
        assert_eq!(
            findings(&mut g, 5),
            vec![Finding::Expected],
            "a copy without its tag is matched provisionally"
        );
        assert_eq!(g.due_at(), Some(t(305)), "and committed after the grace");
        assert_eq!(
            findings(&mut g, 305),
            vec![Finding::Completed {
                latency_ms: Some(5000)
            }],
            "untagged only once the source says the tag did not move on"
        );
        assert_eq!(
            g.due_at(),
            Some(t(5)),
            "due at once for the tag lookups (since the copy: settling again changes nothing)"
        );
        let w = g.watches.get_mut(&tag("v1")).unwrap();
        w.tag_moved_on = Some(false);
        w.tag_points_to = Some(Some(ImageDigest::parse("sha256:old").unwrap()));
        assert_eq!(
            findings(&mut g, 360),
            vec![
                Finding::Untagged,
                Finding::StaleTag {
                    points_to: ImageDigest::parse("sha256:old").unwrap()
                }
            ]
        );
        assert_eq!(findings(&mut g, 361), vec![]);
        assert_eq!(g.due_at(), None);
    }

    #[test]
    fn a_copy_only_the_status_api_calls_complete_completes_without_a_lag() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.watches.entry(tag("v1")).or_default().confirmation = Some(Confirmation::Present {
            pushed_at: None,
            carried_tag: true,
            checked_at: t(9000),
        });
        let found = g.settle(&key(), W, t(9000));
        assert_eq!(
            found[1].finding,
            Finding::Completed { latency_ms: None },
            "no lag is invented"
        );
        assert_eq!(found[1].at, t(9000));
        assert_eq!(found.len(), 2, "and it is not called late on a guess");
    }

    #[test]
    fn a_restore_whose_destination_kept_its_older_copy_completes_without_a_negative_lag() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_restore(t(86_400));
        g.restore_watches.entry(t(86_400)).or_default().confirmation =
            Some(Confirmation::Present {
                pushed_at: Some(t(30)),
                carried_tag: true,
                checked_at: t(90_000),
            });
        let restore = g
            .verdicts(W, t(90_000))
            .into_iter()
            .find(|(e, _)| e.trigger == Trigger::Restore)
            .map(|(_, v)| v)
            .unwrap();
        assert_eq!(
            (restore.status, restore.replicated_at, restore.latency_ms),
            (Status::Replicated, Some(t(30)), None)
        );
    }

    #[test]
    fn findings_carry_the_time_they_happened() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_copy(copy("f", 30, Some("v1"), false));
        let found = g.settle(&key(), W, t(100));
        assert_eq!((found[0].at, found[1].at), (t(0), t(30)));
        let mut m = TrackedGroup::default();
        m.group.add_push(tag("v1"), t(0));
        found_absent_at_1900(&mut m, tag("v1"), StillExpected::Yes);
        assert_eq!(
            m.settle(&key(), W, t(1900))[1].at,
            t(1800),
            "a copy goes missing at its deadline"
        );
    }

    #[test]
    fn a_tag_that_points_to_the_pushed_digest_is_not_stale() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_copy(copy("c1", 5, None, true));
        findings(&mut g, 305);
        let w = g.watches.get_mut(&tag("v1")).unwrap();
        w.tag_moved_on = Some(false);
        w.tag_points_to = Some(Some(key().digest));
        assert_eq!(findings(&mut g, 360), vec![Finding::Untagged]);
    }

    /// `A:latest` pushed at 0, its copy event lost; `B:latest` pushed at 600 and replicated, so
    /// the destination's `latest` names B, correctly. The sweep finds A there without `latest`.
    #[test]
    fn a_copy_whose_tag_moved_on_at_the_source_is_replicated_not_untagged_nor_stale() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("latest"), t(0));
        let w = g.watches.entry(tag("latest")).or_default();
        w.confirmation = Some(Confirmation::Present {
            pushed_at: Some(t(60)),
            carried_tag: false,
            checked_at: t(1801),
        });
        w.tag_moved_on = Some(true);
        w.tag_points_to = Some(Some(ImageDigest::parse("sha256:b").unwrap()));
        assert_eq!(
            findings(&mut g, 1801),
            vec![
                Finding::Expected,
                Finding::Completed {
                    latency_ms: Some(60_000)
                }
            ]
        );
        assert_eq!(g.verdicts(W, t(1801))[0].1.status, Status::Replicated);
        assert_eq!(g.due_at(), None);
    }

    #[test]
    fn a_copy_found_archived_is_archived_once_not_completed_and_completes_once_restored_there() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.watches.entry(tag("v1")).or_default().confirmation = Some(Confirmation::Archived {
            pushed_at: Some(t(20)),
            checked_at: t(1801),
        });
        let found = g.settle(&key(), W, t(1801));
        assert_eq!(
            found.iter().map(|f| f.finding.clone()).collect::<Vec<_>>(),
            vec![Finding::Expected, Finding::Archived],
            "there, but not a usable copy"
        );
        assert_eq!(found[1].at, t(1801), "counted when it was found");
        let (_, v) = &g.verdicts(W, t(1801))[0];
        assert_eq!((v.status, v.confirmed), (Status::Archived, true));
        assert!(v.status.is_problem());
        assert_eq!(g.due_at(), Some(t(1801 + 1800)), "still watched");
        assert_eq!(findings(&mut g, 1900), vec![], "counted once");

        let w = g.watches.get_mut(&tag("v1")).unwrap();
        w.checks = 1;
        w.confirmation = Some(Confirmation::Present {
            pushed_at: Some(t(20)),
            carried_tag: true,
            checked_at: t(3601),
        });
        assert_eq!(
            findings(&mut g, 3601),
            vec![Finding::Completed {
                latency_ms: Some(20_000)
            }],
            "restored in the destination: a usable copy at last"
        );
    }

    #[test]
    fn a_copy_found_activating_stays_pending_past_its_window_and_is_looked_at_again() {
        let mut g = TrackedGroup::default();
        g.group.add_push(None, t(0));
        let w = g.watches.entry(None).or_default();
        w.confirmation = Some(Confirmation::Activating {
            checked_at: t(1801),
        });
        w.checks = 1;
        assert_eq!(findings(&mut g, 1801), vec![Finding::Expected]);
        assert_eq!(g.verdicts(W, t(5000))[0].1.status, Status::Pending);
        assert_eq!(g.due_at(), Some(t(1801 + 1800)));
    }

    #[test]
    fn a_delete_owed_is_expected_once_then_replicated_with_the_lag_its_destination_event_gives() {
        let mut g = TrackedGroup::default();
        g.group.expect_delete(tag("v1"), t(100), DeleteKind::Tag);
        let found = g.settle(&key(), W, t(100));
        assert_eq!(
            found
                .iter()
                .map(|f| (f.owed, f.finding.clone(), f.since))
                .collect::<Vec<_>>(),
            vec![(Owed::Delete, Finding::DeleteExpected, t(100))]
        );
        assert_eq!(
            g.due_at(),
            Some(Timestamp::from_millis(t(1900).millis() + 1))
        );
        assert_eq!(
            g.first_push(),
            Some(t(100)),
            "a group of deletes only is placed in the history by its delete"
        );
        g.group
            .add_delete_seen(delete_seen("d-east", 130, Some("v1")));
        assert_eq!(
            findings(&mut g, 130),
            vec![Finding::DeleteReplicated {
                latency_ms: Some(30_000)
            }]
        );
        assert_eq!(findings(&mut g, 131), vec![], "counted once");
        assert_eq!(g.due_at(), None);
    }

    /// A group that owes a delete (of `tag_`, or of the image) since 0s, the expectation counted.
    fn owing_a_delete(tag_: Option<&str>, kind: DeleteKind) -> TrackedGroup {
        let mut g = TrackedGroup::default();
        g.group.expect_delete(tag_.and_then(tag), t(0), kind);
        findings(&mut g, 0);
        g
    }

    fn delete_seen(id: &str, at: i64, tag_: Option<&str>) -> crate::domain::deletion::DeleteSeen {
        crate::domain::deletion::DeleteSeen {
            id: EventId::parse(id).unwrap(),
            at: t(at),
            tag: tag_.and_then(tag),
        }
    }

    #[test]
    fn a_delete_applied_late_is_counted_late_once_no_earlier_delete_can_still_come() {
        let mut g = owing_a_delete(Some("v1"), DeleteKind::Tag);
        g.group
            .add_delete_seen(delete_seen("late", 2000, Some("v1")));
        assert_eq!(
            findings(&mut g, 2000),
            vec![Finding::DeleteReplicated {
                latency_ms: Some(2_000_000)
            }]
        );
        let key_of = (tag("v1"), t(0));
        assert_eq!(g.delete_watches[&key_of].next_check, Some(t(2300)));
        assert_eq!(g.due_at(), Some(t(2300)), "the sweep comes back for it");
        assert_eq!(findings(&mut g, 2299), vec![]);
        assert_eq!(findings(&mut g, 2300), vec![Finding::DeleteLate]);
        assert_eq!(findings(&mut g, 2301), vec![], "counted once");
        assert_eq!(g.due_at(), None);
    }

    #[test]
    fn a_late_delete_read_before_an_earlier_one_that_applied_it_in_time_is_not_counted_late() {
        let mut g = owing_a_delete(None, DeleteKind::Digest);
        // The image's delete in the destination, past the window, delivered first; a tag's
        // delete there within the window (it applies a delete by digest too), second.
        g.group.add_delete_seen(delete_seen("late", 1810, None));
        assert_eq!(
            findings(&mut g, 1810),
            vec![Finding::DeleteReplicated {
                latency_ms: Some(1_810_000)
            }]
        );
        g.group
            .add_delete_seen(delete_seen("early", 1790, Some("v1")));
        assert_eq!(findings(&mut g, 1900), vec![]);
        let (_, v) = &g.delete_verdicts(W, t(1900))[0];
        assert_eq!(v.outcome.status, DeleteStatus::Replicated);
        assert_eq!(findings(&mut g, 2200), vec![], "never late");
        assert_eq!(g.due_at(), None);
    }

    #[test]
    fn a_delete_still_there_after_its_window_is_missing_once_and_late_when_it_goes() {
        let mut g = owing_a_delete(None, DeleteKind::Digest);
        let key_of = (None, t(0));
        let w = g.delete_watches.get_mut(&key_of).unwrap();
        w.confirmation = Some(DeleteConfirmation::StillThere {
            checked_at: t(1801),
        });
        w.checks = 1;
        let found = g.settle(&key(), W, t(1801));
        assert_eq!(
            found
                .iter()
                .map(|f| (f.finding.clone(), f.at))
                .collect::<Vec<_>>(),
            vec![(Finding::DeleteMissing, t(1800))],
            "missing at its deadline"
        );
        assert_eq!(g.due_at(), Some(t(1801 + 1800)), "still watched");
        let w = g.delete_watches.get_mut(&key_of).unwrap();
        w.confirmation = Some(DeleteConfirmation::Gone {
            checked_at: t(3601),
        });
        w.checks = 2;
        assert_eq!(
            findings(&mut g, 3601),
            vec![
                Finding::DeleteReplicated { latency_ms: None },
                Finding::DeleteLate
            ]
        );
        let (_, v) = &g.delete_verdicts(W, t(3601))[0];
        assert_eq!((v.outcome.status, v.confirmed), (DeleteStatus::Late, true));
        assert_eq!(g.due_at(), None);
    }

    #[test]
    fn a_failure_is_counted_once_with_its_code_and_a_later_success_still_completes() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.watches.entry(tag("v1")).or_default().confirmation = Some(Confirmation::Failed {
            failure_code: Some("ACCESS_DENIED".into()),
            checked_at: t(1900),
        });
        assert_eq!(
            findings(&mut g, 1900),
            vec![
                Finding::Expected,
                Finding::Failed {
                    failure_code: Some("ACCESS_DENIED".into())
                }
            ]
        );
        g.group.add_copy(copy("f2", 1950, Some("v1"), false));
        assert_eq!(findings(&mut g, 1950), vec![]);
        g.group.add_copy(copy("ok", 2000, Some("v1"), true));
        assert_eq!(
            findings(&mut g, 2000),
            vec![Finding::Completed {
                latency_ms: Some(2_000_000)
            }]
        );
        late_after_the_grace(&mut g, tag("v1"), 2000);
    }
}
