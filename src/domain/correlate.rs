//! Correlation of pushes and copies, and the verdict for every (push, destination).
//!
//! A copy event names its source registry and Region, repository, digest, destination and maybe a
//! tag. Everything about one digest travelling from one source to one destination lives in a
//! [`Group`]: its expectations (one per distinct tag pushed) and the copies seen. Matching is
//! done on the whole group at once, in a fixed order, so the verdicts do not depend on the order
//! in which events arrived (a copy may well arrive before its push).

use serde::Serialize;
use smallvec::SmallVec;

use super::config::{Destination, ReplicationConfig};
use super::deletion::{DeleteGroup, DeleteKind, DeleteSeen};
use super::event::{Copy, Push};
use super::ids::{AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName};
use super::time::{Timestamp, Window};

/// Identifies one digest travelling from one source registry/Region to one destination.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub source_account: AccountId,
    pub source_region: Region,
    pub repository: RepositoryName,
    pub digest: ImageDigest,
    pub destination: Destination,
}

#[cfg(test)]
impl GroupKey {
    /// The key unit tests use: `team/app` at `sha256:aaaa`, from 111122223333 us-west-2 to
    /// 444455556666 eu-west-1.
    pub(crate) fn example() -> GroupKey {
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
}

impl GroupKey {
    pub fn of_push(push: &Push, destination: Destination) -> Self {
        GroupKey {
            source_account: push.account,
            source_region: push.region.clone(),
            repository: push.repository.clone(),
            digest: push.digest.clone(),
            destination,
        }
    }

    /// The key of `push`'s image travelling from `source` to `here`, where `push` was made:
    /// the group `push` would be the copy of (see [`copy_candidates`]).
    pub fn of_arrival(source: &Destination, push: &Push, here: &Destination) -> Self {
        GroupKey {
            source_account: source.account,
            source_region: source.region.clone(),
            repository: push.repository.clone(),
            digest: push.digest.clone(),
            destination: here.clone(),
        }
    }

    pub fn of_copy(copy: &Copy) -> Self {
        GroupKey {
            source_account: copy.source_account,
            source_region: copy.source_region.clone(),
            repository: copy.repository.clone(),
            digest: copy.digest.clone(),
            destination: Destination {
                account: copy.destination_account,
                region: copy.destination_region.clone(),
            },
        }
    }
}

/// What made ECR owe a copy: a push, or the restore of an archived image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Push,
    /// Judged like a push by digest (no tag), with the window starting at the restore.
    Restore,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Push => "push",
            Trigger::Restore => "restore",
        }
    }
}

/// One push (or restore) that one destination must receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// The pushed tag; none for a push by digest and for every restore.
    pub tag: Option<ImageTag>,
    /// The earliest push of this (digest, tag): a repeated push does not restart the clock. For
    /// a restore, the restore's time: each restore is an expectation of its own.
    pub pushed_at: Timestamp,
    pub trigger: Trigger,
}

impl Expectation {
    pub fn is_restore(&self) -> bool {
        self.trigger == Trigger::Restore
    }

    /// Whether this is the expectation of `trigger` with `tag`: a push's by its tag, a
    /// restore's also by its time (`since`), each restore being an expectation of its own.
    pub fn is(&self, trigger: Trigger, tag: &Option<ImageTag>, since: Timestamp) -> bool {
        self.trigger == trigger
            && self.tag == *tag
            && (trigger == Trigger::Push || self.pushed_at == since)
    }
}

/// One replication result seen in the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopySeen {
    pub id: EventId,
    pub at: Timestamp,
    pub tag: Option<ImageTag>,
    pub succeeded: bool,
}

impl From<&Copy> for CopySeen {
    fn from(c: &Copy) -> Self {
        CopySeen {
            id: c.id.clone(),
            at: c.at,
            tag: c.tag.clone(),
            succeeded: c.succeeded,
        }
    }
}

/// What the copies say about one expectation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The earliest successful copy matched to it, and whether that copy carried the pushed tag.
    pub success: Option<(Timestamp, bool)>,
    /// Whether a FAILED result was matched to it...
    pub failed: bool,
    /// ...and the earliest one's time.
    pub failed_at: Option<Timestamp>,
    /// The earliest delete at the source, after the push, of its image (by digest) or of its
    /// tag: from then on no copy is owed.
    pub withdrawn_at: Option<Timestamp>,
    /// Whether the pushed tag had moved on at the source (a later push of the same tag named
    /// another digest) by the time the copy was made: a copy without the tag is then what the
    /// source shows, not a problem. Set by whoever knows the other digests' pushes, never by
    /// [`Group::resolve`], which sees one digest.
    pub tag_moved_on: bool,
    /// The latest time of a copy matched to it *provisionally*: without its tag, or by digest
    /// for want of its tag's push, and not claimed. A push read later (an earlier retag, its
    /// event retried) can still take such a copy, so nothing it says is counted until it is
    /// claimed (see [`Claims`]).
    pub provisional_at: Option<Timestamp>,
}

/// How long after a copy without its tag the pushes and copies of its group still decide which
/// push it belongs to: a push a little later than the copy (clocks of two Regions), a tagged copy
/// that landed at about the same time. Later events do not change its match.
pub const MATCH_SKEW_MS: i64 = 60_000;

/// Copies committed to the expectation (by tag) they were matched to when they were counted:
/// a push read later does not take them over, so nothing counted is counted again elsewhere.
pub type Claims = std::collections::BTreeMap<EventId, Option<ImageTag>>;

/// The verdict on one (push, destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Arrived within the window, with its tag.
    Replicated,
    /// Arrived, with its tag, after the window.
    Late,
    /// Arrived without the tag that was pushed: the destination's tag may still point at an
    /// older image.
    Untagged,
    /// ECR reported the replication as FAILED and no successful copy followed.
    Failed,
    /// Nothing arrived and the window has passed.
    Missing,
    /// Nothing arrived yet, and the window has not passed.
    Pending,
    /// Nothing arrived, and nothing is owed any more: the image (or its tag) was deleted at the
    /// source within the window, or the rules in force no longer name the destination.
    Withdrawn,
    /// ECR's APIs found the copy in the destination `ARCHIVED`: it exists but cannot be pulled,
    /// so it is not a usable copy (only the Lambda's sweep can tell).
    Archived,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Replicated,
        Status::Late,
        Status::Untagged,
        Status::Failed,
        Status::Missing,
        Status::Pending,
        Status::Withdrawn,
        Status::Archived,
    ];

    /// Whether this verdict is a problem someone must look at. In-progress is never one: monitors
    /// that alarm on "in progress" flap.
    pub fn is_problem(self) -> bool {
        !matches!(
            self,
            Status::Replicated | Status::Pending | Status::Withdrawn
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Replicated => "replicated",
            Status::Late => "late",
            Status::Untagged => "untagged",
            Status::Failed => "failed",
            Status::Missing => "missing",
            Status::Pending => "pending",
            Status::Withdrawn => "withdrawn",
            Status::Archived => "archived",
        }
    }
}

/// A verdict with the times it rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    pub replicated_at: Option<Timestamp>,
    /// Copy time minus push time, in milliseconds, for every copy that arrived.
    pub latency_ms: Option<i64>,
}

/// The verdict for one expectation at audit time `now`.
///
/// - a successful copy: `untagged` if a tag was pushed and the copy does not carry it (unless
///   the tag had moved on to another digest at the source by then), else `late` if it took
///   longer than the window, else `replicated`;
/// - else a FAILED result: `failed`;
/// - else a delete of the image or its tag at the source within the window: `withdrawn`;
/// - else `missing` once more than the window has passed since the push, `pending` before.
///
/// Exactly one window is still on time; one millisecond more is late (or missing).
pub fn verdict(
    expectation: &Expectation,
    evidence: Evidence,
    window: Window,
    now: Timestamp,
) -> Outcome {
    if let Some((at, carried_tag)) = evidence.success {
        let latency = at.since(expectation.pushed_at);
        let status = if expectation.tag.is_some() && !carried_tag && !evidence.tag_moved_on {
            Status::Untagged
        } else if latency > window.millis() {
            Status::Late
        } else {
            Status::Replicated
        };
        return Outcome {
            status,
            replicated_at: Some(at),
            latency_ms: Some(latency),
        };
    }
    let status = if evidence.failed {
        Status::Failed
    } else if evidence
        .withdrawn_at
        .is_some_and(|at| at.since(expectation.pushed_at) <= window.millis())
    {
        Status::Withdrawn
    } else if now.since(expectation.pushed_at) > window.millis() {
        Status::Missing
    } else {
        Status::Pending
    };
    Outcome {
        status,
        replicated_at: None,
        latency_ms: None,
    }
}

/// The groups a push could be the *copy* of, rather than a push of its own: ECR may emit a
/// `PUSH` event in the destination when a copy lands there (not documented either way), and
/// with two-way rules such a push would otherwise expect copies ECR never makes (it replicates
/// once, never onwards). The candidates: the same image travelling to the push's registry and
/// Region from every registry that `own` (the push's own rules) names for the repository, and
/// from every registry among `known` whose rules name the push's registry and Region.
pub fn copy_candidates<'a>(
    push: &Push,
    own: Option<&ReplicationConfig>,
    known: impl IntoIterator<Item = &'a ReplicationConfig>,
) -> Vec<GroupKey> {
    let here = Destination {
        account: push.account,
        region: push.region.clone(),
    };
    copy_sources(&here, &push.repository, own, known)
        .into_iter()
        .map(|source| GroupKey::of_arrival(&source, push, &here))
        .collect()
}

/// The registries and Regions whose images, pushed to `repository`, land in `here` as copies
/// (see [`copy_candidates`]): those `own` (`here`'s rules) names for the repository, and those
/// among `known` whose rules name `here`; sorted, each once, `here` left out. They depend on
/// the repository and the rules only, so `replay` works them out once per repository.
pub fn copy_sources<'a>(
    here: &Destination,
    repository: &RepositoryName,
    own: Option<&ReplicationConfig>,
    known: impl IntoIterator<Item = &'a ReplicationConfig>,
) -> Vec<Destination> {
    let mut sources: Vec<Destination> = own
        .map(|c| c.expected_destinations(repository).destinations)
        .unwrap_or_default();
    for config in known {
        if config
            .expected_destinations(repository)
            .destinations
            .contains(here)
        {
            sources.push(Destination {
                account: config.registry,
                region: config.region.clone(),
            });
        }
    }
    sources.sort();
    sources.dedup();
    sources.retain(|s| s != here);
    sources
}

/// Everything seen about one [`GroupKey`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// Sorted by (push time, tag), so "the earliest expectation" is the first that qualifies.
    /// One mostly (a push), so kept in place: a replay opens a group per push and destination.
    expectations: SmallVec<[Expectation; 1]>,
    /// One mostly, as the expectations.
    copies: SmallVec<[CopySeen; 1]>,
    /// Deletes at the source: of a tag, or (`None`) of the image; the earliest of each.
    deletions: Vec<(Option<ImageTag>, Timestamp)>,
    /// The deletes at the source this destination owes (a rule with delete replication names
    /// it), and the deletes seen applied there: judged apart from the copies.
    deletes: DeleteGroup,
    /// The latest event time seen in this group; the store retires settled groups by it.
    pub last_event: Option<Timestamp>,
}

/// The matching of a group's copies to its expectations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// One entry per expectation, in [`Group::expectations`] order. One mostly, kept in
    /// place: a replay resolves a group after nearly every copy, to see whether it settled,
    /// and allocating this each time was most of what that cost.
    pub evidence: SmallVec<[Evidence; 1]>,
    /// Indices into [`Group::copies`] of the copies that match no push.
    pub unmatched: Vec<usize>,
    /// (copy, expectation) indices of the copies matched provisionally (see
    /// [`Evidence::provisional_at`]).
    pub provisional: Vec<(usize, usize)>,
}

impl Group {
    pub fn expectations(&self) -> &[Expectation] {
        &self.expectations
    }

    pub fn copies(&self) -> &[CopySeen] {
        &self.copies
    }

    pub fn deletions(&self) -> &[(Option<ImageTag>, Timestamp)] {
        &self.deletions
    }

    /// The replicated deletes this destination owes, and those seen applied there.
    pub fn deletes(&self) -> &DeleteGroup {
        &self.deletes
    }

    /// Records that this destination owes the delete of `tag` (none: the image), made at the
    /// source at `at`, of `kind`. Returns whether it was new.
    pub fn expect_delete(
        &mut self,
        tag: Option<ImageTag>,
        at: Timestamp,
        kind: DeleteKind,
    ) -> bool {
        self.touch(at);
        self.deletes.expect(tag, at, kind)
    }

    /// Takes back the delete owed of `tag` made at `at` (see [`DeleteGroup::retract`]).
    pub fn retract_delete(&mut self, tag: &Option<ImageTag>, at: Timestamp) -> bool {
        self.deletes.retract(tag, at)
    }

    /// Records a DELETE of the image seen in the destination. Returns whether it was new.
    pub fn add_delete_seen(&mut self, seen: DeleteSeen) -> bool {
        let at = seen.at;
        let new = self.deletes.add_seen(seen);
        if new {
            self.touch(at);
        }
        new
    }

    /// Whether the image still had tags other than `tag` at the source right after `tag` was
    /// deleted at `at`, as far as this group knows: tags pushed as this digest by then, less
    /// those deleted by then (and none at all after a delete of the image). A tag pushed before
    /// the auditor's history is unknown: then the delete looks like the removal of the last tag.
    pub fn other_tags_left(&self, tag: &ImageTag, at: Timestamp) -> bool {
        let deleted = |t: &ImageTag| {
            self.deletions
                .iter()
                .any(|(d, when)| *when <= at && d.as_ref().is_none_or(|d| d == t))
        };
        self.expectations.iter().any(|e| {
            !e.is_restore()
                && e.pushed_at <= at
                && e.tag.as_ref().is_some_and(|t| t != tag && !deleted(t))
        })
    }

    /// Records that the image (`tag` `None`) or its `tag` was deleted at the source at `at`; the
    /// earliest delete of each is kept. Returns whether anything changed.
    pub fn add_deletion(&mut self, tag: Option<ImageTag>, at: Timestamp) -> bool {
        self.touch(at);
        match self.deletions.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, earlier)) if *earlier <= at => false,
            Some((_, earlier)) => {
                *earlier = at;
                true
            }
            None => {
                self.deletions.push((tag, at));
                self.deletions.sort();
                true
            }
        }
    }

    fn touch(&mut self, at: Timestamp) {
        self.last_event = Some(self.last_event.map_or(at, |t| t.max(at)));
    }

    /// Records that `tag` was pushed at `at`. One expectation per distinct tag: a second push of
    /// the same tag keeps the earlier time. Returns whether a new expectation was opened.
    pub fn add_push(&mut self, tag: Option<ImageTag>, at: Timestamp) -> bool {
        self.touch(at);
        if let Some(existing) = self
            .expectations
            .iter_mut()
            .find(|e| !e.is_restore() && e.tag == tag)
        {
            if at < existing.pushed_at {
                existing.pushed_at = at;
                self.sort();
            }
            return false;
        }
        self.expectations.push(Expectation {
            tag,
            pushed_at: at,
            trigger: Trigger::Push,
        });
        self.sort();
        true
    }

    /// Records that the image was restored at `at`: one expectation per restore (the same
    /// restore read again changes nothing). Returns whether a new expectation was opened.
    pub fn add_restore(&mut self, at: Timestamp) -> bool {
        self.touch(at);
        if self
            .expectations
            .iter()
            .any(|e| e.is_restore() && e.pushed_at == at)
        {
            return false;
        }
        self.expectations.push(Expectation {
            tag: None,
            pushed_at: at,
            trigger: Trigger::Restore,
        });
        self.sort();
        true
    }

    fn sort(&mut self) {
        self.expectations.sort_by(|a, b| {
            (a.pushed_at, a.trigger, &a.tag).cmp(&(b.pushed_at, b.trigger, &b.tag))
        });
    }

    /// Records a copy. A copy whose event id is already recorded is a redelivery and changes
    /// nothing; returns whether the copy was new.
    pub fn add_copy(&mut self, copy: CopySeen) -> bool {
        if self.copies.iter().any(|c| c.id == copy.id) {
            return false;
        }
        self.touch(copy.at);
        self.copies.push(copy);
        true
    }

    /// Matches copies to expectations:
    /// 1. a copy that carries a tag belongs to the expectation of that tag (or, failing that, to
    ///    a push by digest, which needs no tag); with neither it matches no push;
    /// 2. a copy without a tag, taken in time order, belongs to the earliest push expectation
    ///    pushed no later than [`MATCH_SKEW_MS`] after it that had no successful copy by then.
    ///    When every such one has one it is a redundant result (ECR reports each push's copy)
    ///    and is absorbed; in a group with no push at all it matches no push;
    /// 3. a restore takes the earliest successful copy made at or after it, whatever its tag
    ///    (and is failed by a FAILED result at or after it), without taking it from a push: the
    ///    copy a restore brings lands the image for both. A copy a restore takes matches a
    ///    push even when no push expectation takes it.
    pub fn resolve(&self) -> Resolution {
        self.resolve_with(&Claims::new())
    }

    /// [`Group::resolve`], with the copies in `claims` first given to the expectation of their
    /// claimed tag. A match other than by the copy's own tag is provisional unless claimed.
    pub fn resolve_with(&self, claims: &Claims) -> Resolution {
        let mut evidence: SmallVec<[Evidence; 1]> =
            SmallVec::from_elem(Evidence::default(), self.expectations.len());
        let mut unmatched = Vec::new();
        let mut provisional = Vec::new();
        let mut untagged: Vec<usize> = Vec::new();
        let position = |tag: &Option<ImageTag>| {
            self.expectations
                .iter()
                .position(|e| !e.is_restore() && e.tag == *tag)
        };
        for (i, copy) in self.copies.iter().enumerate() {
            if let Some(t) = claims.get(&copy.id).and_then(position) {
                let carried = copy.tag.is_some() || self.expectations[t].tag.is_none();
                record(&mut evidence[t], copy, carried);
                continue;
            }
            let Some(tag) = &copy.tag else {
                untagged.push(i);
                continue;
            };
            match position(&Some(tag.clone())) {
                Some(t) => record(&mut evidence[t], copy, true),
                None => match position(&None) {
                    Some(t) => {
                        record(&mut evidence[t], copy, true);
                        provisional.push((i, t));
                    }
                    None => unmatched.push(i),
                },
            }
        }
        // Time order, then successes before failures at the same instant, then id: a fixed order
        // whatever order the events came in.
        untagged.sort_by(|&a, &b| {
            let (a, b) = (&self.copies[a], &self.copies[b]);
            (a.at, !a.succeeded, &a.id).cmp(&(b.at, !b.succeeded, &b.id))
        });
        let has_push = self.expectations.iter().any(|e| !e.is_restore());
        for i in untagged {
            let copy = &self.copies[i];
            // What was known a little after the copy decides, and nothing later: the earliest
            // push (by then) that had no successful copy by then. So the match depends only on
            // events up to MATCH_SKEW after the copy, however late the others are delivered.
            let by = Timestamp::from_millis(copy.at.millis().saturating_add(MATCH_SKEW_MS));
            let open = self.expectations.iter().zip(&evidence).position(|(e, ev)| {
                !e.is_restore() && e.pushed_at <= by && ev.success.is_none_or(|(at, _)| at > by)
            });
            match open {
                Some(t) => {
                    let carried = self.expectations[t].tag.is_none();
                    record(&mut evidence[t], copy, carried);
                    provisional.push((i, t));
                }
                None if !has_push => unmatched.push(i),
                None => {}
            }
        }
        for (e, ev) in self.expectations.iter().zip(&mut evidence) {
            if e.is_restore() {
                for copy in self.copies.iter().filter(|c| c.at >= e.pushed_at) {
                    record(ev, copy, true);
                }
            }
        }
        // A copy a restore took is not one that matches nothing.
        unmatched.retain(|&i| {
            let at = self.copies[i].at;
            !self
                .expectations
                .iter()
                .any(|e| e.is_restore() && at >= e.pushed_at)
        });
        for &(i, t) in &provisional {
            let at = self.copies[i].at;
            let latest = &mut evidence[t].provisional_at;
            *latest = Some(latest.map_or(at, |l| l.max(at)));
        }
        for (e, ev) in self.expectations.iter().zip(&mut evidence) {
            ev.withdrawn_at = self
                .deletions
                .iter()
                .filter(|(tag, at)| (tag.is_none() || *tag == e.tag) && *at >= e.pushed_at)
                .map(|(_, at)| *at)
                .min();
        }
        unmatched.sort_unstable();
        Resolution {
            evidence,
            unmatched,
            provisional,
        }
    }

    /// Whether a push of this digest at `at` in the destination (carrying `tag`) can be the copy
    /// of one of this group's pushes or restores: an earlier one, with no successful copy yet,
    /// of that tag (or by digest, or the destination push has no tag).
    pub fn awaits_copy(&self, tag: &Option<ImageTag>, at: Timestamp) -> bool {
        self.expectations
            .iter()
            .zip(self.resolve().evidence)
            .any(|(e, ev)| {
                ev.success.is_none()
                    && e.pushed_at <= at
                    && (tag.is_none() || e.tag.is_none() || e.tag == *tag)
            })
    }

    /// Whether every expectation has its successful copy and every copy its push, so no later
    /// event can change a verdict (other than by arriving out of order). A copy that matches no
    /// push yet keeps the group open: its push (a retag of the same digest, read later) may
    /// still come, and must find it.
    pub fn is_settled(&self) -> bool {
        // A delete owed and not seen applied keeps the group open, like a copy.
        if !self.deletes.all_applied() {
            return false;
        }
        if self.expectations.is_empty() && self.copies.is_empty() {
            // Only deletes: settled once each was seen applied.
            return !self.deletes.expectations().is_empty();
        }
        // Without a successful copy nothing is settled: the replay asks after every push, and a
        // push has no copy yet most of the time, so the matching is skipped then.
        if self.expectations.is_empty() || !self.copies.iter().any(|c| c.succeeded) {
            return false;
        }
        let resolution = self.resolve();
        resolution.unmatched.is_empty() && resolution.evidence.iter().all(|e| e.success.is_some())
    }
}

fn record(evidence: &mut Evidence, copy: &CopySeen, carried_tag: bool) {
    if copy.succeeded {
        if evidence.success.is_none_or(|(at, _)| copy.at < at) {
            evidence.success = Some((copy.at, carried_tag));
        }
    } else {
        evidence.failed = true;
        if evidence.failed_at.is_none_or(|at| copy.at < at) {
            evidence.failed_at = Some(copy.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window::DEFAULT;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_719_835_200_000 + secs * 1000)
    }
    fn tag(s: &str) -> Option<ImageTag> {
        Some(ImageTag::parse(s).unwrap())
    }
    fn copy(id: &str, at: i64, tag_: Option<&str>, succeeded: bool) -> CopySeen {
        CopySeen {
            id: EventId::parse(id).unwrap(),
            at: t(at),
            tag: tag_.and_then(tag),
            succeeded,
        }
    }
    fn verdicts(g: &Group, now: i64) -> Vec<Status> {
        let r = g.resolve();
        g.expectations()
            .iter()
            .zip(r.evidence)
            .map(|(e, ev)| verdict(e, ev, W, t(now)).status)
            .collect()
    }

    #[test]
    fn a_tagged_copy_within_the_window_is_replicated_with_its_latency() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_copy(copy("c1", 12, Some("v1"), true));
        let e = g.resolve().evidence[0];
        let o = verdict(&g.expectations()[0], e, W, t(5000));
        assert_eq!(
            o,
            Outcome {
                status: Status::Replicated,
                replicated_at: Some(t(12)),
                latency_ms: Some(12_000)
            }
        );
    }

    #[test]
    fn exactly_one_window_is_on_time_and_one_millisecond_more_is_late() {
        let exp = Expectation {
            tag: tag("v1"),
            pushed_at: t(0),
            trigger: Trigger::Push,
        };
        let on_time = Evidence {
            success: Some((t(1800), true)),
            ..Evidence::default()
        };
        assert_eq!(
            verdict(&exp, on_time, W, t(9999)).status,
            Status::Replicated
        );
        let late = Evidence {
            success: Some((Timestamp::from_millis(t(1800).millis() + 1), true)),
            ..Evidence::default()
        };
        let o = verdict(&exp, late, W, t(9999));
        assert_eq!((o.status, o.latency_ms), (Status::Late, Some(1_800_001)));
    }

    #[test]
    fn nothing_arrived_is_pending_up_to_the_window_and_missing_after() {
        let exp = Expectation {
            tag: None,
            pushed_at: t(0),
            trigger: Trigger::Push,
        };
        assert_eq!(
            verdict(&exp, Evidence::default(), W, t(0)).status,
            Status::Pending
        );
        assert_eq!(
            verdict(&exp, Evidence::default(), W, t(1800)).status,
            Status::Pending
        );
        let just_after = Timestamp::from_millis(t(1800).millis() + 1);
        assert_eq!(
            verdict(&exp, Evidence::default(), W, just_after).status,
            Status::Missing
        );
    }

    #[test]
    fn a_failed_result_without_a_later_success_is_failed_whatever_the_time() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_copy(copy("f1", 5, Some("v1"), false));
        assert_eq!(verdicts(&g, 10), vec![Status::Failed]);
        assert_eq!(verdicts(&g, 99_999), vec![Status::Failed]);
        // A retry that succeeded wins over the failure.
        g.add_copy(copy("s1", 60, Some("v1"), true));
        assert_eq!(verdicts(&g, 99_999), vec![Status::Replicated]);
    }

    #[test]
    fn a_copy_without_the_pushed_tag_is_untagged_even_when_on_time() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_copy(copy("c1", 3, None, true));
        assert_eq!(verdicts(&g, 10), vec![Status::Untagged]);
        // Untagged wins over late: the missing tag is the bigger problem.
        let mut late = Group::default();
        late.add_push(tag("v1"), t(0));
        late.add_copy(copy("c1", 4000, None, true));
        let r = late.resolve();
        let o = verdict(&late.expectations()[0], r.evidence[0], W, t(5000));
        assert_eq!(
            (o.status, o.latency_ms),
            (Status::Untagged, Some(4_000_000))
        );
    }

    #[test]
    fn a_push_by_digest_is_satisfied_by_a_copy_with_or_without_a_tag() {
        for copy_tag in [None, Some("v9")] {
            let mut g = Group::default();
            g.add_push(None, t(0));
            g.add_copy(copy("c1", 3, copy_tag, true));
            assert_eq!(
                verdicts(&g, 10),
                vec![Status::Replicated],
                "copy tag {copy_tag:?}"
            );
        }
    }

    #[test]
    fn the_earliest_successful_copy_counts() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_copy(copy("late", 4000, Some("v1"), true));
        g.add_copy(copy("early", 20, Some("v1"), true));
        assert_eq!(g.resolve().evidence[0].success, Some((t(20), true)));
    }

    #[test]
    fn a_copy_seen_before_its_push_is_matched_when_the_push_arrives() {
        let mut g = Group::default();
        g.add_copy(copy("c1", 9, Some("v1"), true));
        assert_eq!(g.resolve().unmatched, vec![0]);
        assert!(!g.is_settled());
        g.add_push(tag("v1"), t(0));
        assert!(g.resolve().unmatched.is_empty());
        assert_eq!(verdicts(&g, 10), vec![Status::Replicated]);
        assert!(g.is_settled());
    }

    #[test]
    fn a_retag_of_one_digest_opens_one_expectation_per_tag() {
        let mut g = Group::default();
        assert!(g.add_push(tag("v1"), t(0)));
        assert!(g.add_push(tag("latest"), t(100)));
        assert!(
            !g.add_push(tag("v1"), t(50)),
            "the same tag again is the same expectation"
        );
        assert_eq!(g.expectations().len(), 2);
        g.add_copy(copy("c-latest", 104, Some("latest"), true));
        assert_eq!(verdicts(&g, 200), vec![Status::Pending, Status::Replicated]);
        g.add_copy(copy("c-v1", 7, Some("v1"), true));
        assert_eq!(
            verdicts(&g, 200),
            vec![Status::Replicated, Status::Replicated]
        );
    }

    #[test]
    fn a_repeated_push_keeps_the_earliest_time() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(100));
        g.add_push(tag("v1"), t(10));
        assert_eq!(g.expectations()[0].pushed_at, t(10));
    }

    #[test]
    fn tagless_copies_fill_the_earliest_unsatisfied_expectation_in_time_order() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_push(tag("v2"), t(100));
        g.add_copy(copy("b", 150, None, true));
        g.add_copy(copy("a", 10, None, true));
        let r = g.resolve();
        assert_eq!(r.evidence[0].success, Some((t(10), false)));
        assert_eq!(r.evidence[1].success, Some((t(150), false)));
        // A third tagless copy finds every expectation satisfied: absorbed, not unmatched.
        g.add_copy(copy("c", 300, None, true));
        assert!(g.resolve().unmatched.is_empty());
    }

    #[test]
    fn a_tagged_copy_claims_its_own_expectation_before_tagless_ones_are_placed() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_push(tag("v2"), t(30));
        g.add_copy(copy("tagless", 5, None, true));
        g.add_copy(copy("v1", 3, Some("v1"), true));
        assert_eq!(
            verdicts(&g, 200),
            vec![Status::Replicated, Status::Untagged]
        );
    }

    #[test]
    fn a_tagless_copy_is_placed_on_what_was_known_a_minute_after_it_and_nothing_later() {
        // v2 pushed more than a minute after the copy: not its push.
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_push(tag("v2"), t(100));
        g.add_copy(copy("tagless", 5, None, true));
        g.add_copy(copy("v1", 3, Some("v1"), true));
        assert_eq!(
            verdicts(&g, 200),
            vec![Status::Replicated, Status::Pending],
            "absorbed: v1 already had its copy by then"
        );
        // v1's own copy came four minutes after the tagless one: v1 had none by then, so the
        // tagless copy is v1's, whenever the tagged one is read.
        let mut h = Group::default();
        h.add_push(tag("v1"), t(0));
        h.add_push(tag("v2"), t(2));
        h.add_copy(copy("v1", 245, Some("v1"), true));
        h.add_copy(copy("tagless", 5, None, true));
        assert_eq!(verdicts(&h, 4000), vec![Status::Untagged, Status::Missing]);
    }

    #[test]
    fn copies_with_an_unknown_tag_or_no_push_at_all_match_nothing() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_copy(copy("other", 5, Some("v2"), true));
        assert_eq!(g.resolve().unmatched, vec![0]);
        let mut orphan = Group::default();
        orphan.add_copy(copy("x", 5, None, false));
        assert_eq!(orphan.resolve().unmatched, vec![0]);
    }

    #[test]
    fn the_resolution_does_not_depend_on_the_order_copies_arrived() {
        let copies = [
            copy("a", 30, None, false),
            copy("b", 30, None, true),
            copy("c", 40, Some("v2"), true),
            copy("d", 20, None, true),
        ];
        let mut reference: Option<SmallVec<[Evidence; 1]>> = None;
        // Every rotation and its reverse.
        for start in 0..copies.len() {
            for reverse in [false, true] {
                let mut order: Vec<_> = copies
                    .iter()
                    .cycle()
                    .skip(start)
                    .take(copies.len())
                    .cloned()
                    .collect();
                if reverse {
                    order.reverse();
                }
                let mut g = Group::default();
                g.add_push(tag("v2"), t(15));
                g.add_push(tag("v1"), t(0));
                g.add_push(None, t(1));
                for c in order {
                    g.add_copy(c);
                }
                let ev = g.resolve().evidence;
                match &reference {
                    None => reference = Some(ev),
                    Some(r) => assert_eq!(&ev, r),
                }
            }
        }
    }

    #[test]
    fn a_redelivered_copy_changes_nothing() {
        let mut g = Group::default();
        assert!(g.add_copy(copy("c1", 5, None, true)));
        assert!(!g.add_copy(copy("c1", 5, None, true)));
        assert_eq!(g.copies().len(), 1);
    }

    #[test]
    fn a_restore_expects_a_copy_judged_by_digest_with_its_window_starting_at_the_restore() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_copy(copy("c-push", 10, Some("v1"), true));
        assert!(g.add_restore(t(90_000)));
        assert!(!g.add_restore(t(90_000)), "the same restore again");
        assert_eq!(g.expectations()[1].trigger, Trigger::Restore);
        assert_eq!(
            verdicts(&g, 90_000 + 1800),
            vec![Status::Replicated, Status::Pending],
            "the push's old copy is not the restore's, and exactly one window is still pending"
        );
        assert_eq!(
            verdicts(&g, 90_000 + 1801),
            vec![Status::Replicated, Status::Missing]
        );
        // The copy the restore brings carries the tag, or not: it is the restore's either way,
        // and the push keeps its own.
        g.add_copy(copy("c-restore", 90_040, Some("v1"), true));
        let r = g.resolve();
        assert_eq!(r.evidence[0].success, Some((t(10), true)));
        assert_eq!(r.evidence[1].success, Some((t(90_040), true)));
        assert!(r.unmatched.is_empty());
        assert!(g.is_settled());
    }

    #[test]
    fn a_restore_late_or_failed_is_judged_from_the_restore_and_deleted_after_it_is_withdrawn() {
        let mut late = Group::default();
        late.add_restore(t(1000));
        late.add_copy(copy("c", 1000 + 1801, None, true));
        let r = late.resolve();
        let o = verdict(&late.expectations()[0], r.evidence[0], W, t(9000));
        assert_eq!((o.status, o.latency_ms), (Status::Late, Some(1_801_000)));
        assert!(r.unmatched.is_empty(), "a restore takes a tagless copy");

        let mut failed = Group::default();
        failed.add_restore(t(1000));
        failed.add_copy(copy("f-before", 500, None, false));
        assert_eq!(
            verdicts(&failed, 9000),
            vec![Status::Missing],
            "before the restore"
        );
        failed.add_copy(copy("f", 1030, None, false));
        assert_eq!(verdicts(&failed, 9000), vec![Status::Failed]);

        let mut withdrawn = Group::default();
        withdrawn.add_restore(t(1000));
        withdrawn.add_deletion(tag("v1"), t(1100));
        assert_eq!(
            verdicts(&withdrawn, 9000),
            vec![Status::Missing],
            "a tag's delete keeps the image"
        );
        withdrawn.add_deletion(None, t(1100));
        assert_eq!(verdicts(&withdrawn, 9000), vec![Status::Withdrawn]);
    }

    #[test]
    fn a_copy_that_matches_no_push_before_a_restore_still_matches_none() {
        let mut g = Group::default();
        g.add_copy(copy("before", 5, Some("v9"), true));
        g.add_restore(t(100));
        assert!(
            g.awaits_copy(&tag("v9"), t(120)),
            "a restore awaits a copy of any tag"
        );
        assert!(!g.awaits_copy(&None, t(99)), "but not one from before it");
        g.add_copy(copy("after", 150, Some("v9"), true));
        assert_eq!(g.resolve().unmatched, vec![0]);
        assert!(!g.awaits_copy(&tag("v9"), t(200)));
    }

    #[test]
    fn the_tags_left_after_a_tag_delete_are_those_pushed_and_not_deleted_by_then() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_push(tag("latest"), t(10));
        g.add_restore(t(20));
        let v1 = ImageTag::parse("v1").unwrap();
        let latest = ImageTag::parse("latest").unwrap();
        assert!(
            g.other_tags_left(&v1, t(30)),
            "latest is still on the image"
        );
        assert!(!g.other_tags_left(&v1, t(5)), "latest was not pushed yet");
        g.add_deletion(tag("latest"), t(40));
        assert!(
            !g.other_tags_left(&v1, t(50)),
            "latest went first: v1 was the last"
        );
        assert!(g.other_tags_left(&latest, t(30)));
        let mut image = Group::default();
        image.add_push(tag("v1"), t(0));
        image.add_push(tag("v2"), t(0));
        image.add_deletion(None, t(5));
        assert!(!image.other_tags_left(&v1, t(6)), "the image is gone");
    }

    #[test]
    fn a_delete_owed_keeps_the_group_open_until_it_is_seen_applied() {
        let mut g = Group::default();
        g.add_push(tag("v1"), t(0));
        g.add_copy(copy("c1", 5, Some("v1"), true));
        assert!(g.is_settled());
        g.expect_delete(tag("v1"), t(100), DeleteKind::LastTag);
        assert!(!g.is_settled());
        g.add_delete_seen(DeleteSeen {
            id: EventId::parse("d1").unwrap(),
            at: t(110),
            tag: tag("v1"),
        });
        assert!(g.is_settled());
        assert_eq!(g.last_event, Some(t(110)));

        let mut only = Group::default();
        only.expect_delete(None, t(100), DeleteKind::Digest);
        assert!(!only.is_settled());
        only.add_delete_seen(DeleteSeen {
            id: EventId::parse("d2").unwrap(),
            at: t(120),
            tag: None,
        });
        assert!(
            only.is_settled(),
            "a group of deletes only settles on its own"
        );
    }

    #[test]
    fn last_event_tracks_the_latest_time_seen() {
        let mut g = Group::default();
        g.add_copy(copy("c", 50, None, true));
        g.add_push(tag("v1"), t(10));
        assert_eq!(g.last_event, Some(t(50)));
    }
}
