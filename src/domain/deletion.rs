//! Replicated deletes: what a delete at the source owes each destination of the rules with
//! delete replication, what shows that it was applied there, and the verdict.
//!
//! A rule with `"deleteReplication": {"enabled": true}` makes ECR apply, in each of its
//! destinations, the deletes made in the source (ECR user guide, "Replicating image deletions"):
//! - a tag removed from an image that has other tags: the same tag goes;
//! - an image's last tag removed: ECR deletes the untagged image, so its digest and every
//!   related tag go;
//! - an image deleted by digest, or expired by a lifecycle policy: the image and its tags go.
//!
//! A delete owed to one destination is a [`DeleteExpectation`]: a different thing from a copy
//! owed ([`super::correlate::Expectation`]), kept in the same group (one digest from one source
//! to one destination) but judged by its own rules. What shows the delete applied:
//! - an `ECR Image Action` DELETE of that repository and digest (and tag) in the destination's
//!   account and Region, at or after the source's delete ([`DeleteSeen`]): AWS documents neither
//!   that ECR emits one for a replicated delete nor that it does not, so `replay`, which has
//!   nothing else, calls a delete with no such event missing once its window has passed;
//! - in the Lambda, `DescribeImages` in the destination ([`gone_at_destination`]), which the
//!   sweep asks once the window has passed without such an event.

use serde::Serialize;

use super::confirm::ImageFound;
use super::ids::{EventId, ImageTag};
use super::time::{Timestamp, Window};

/// What a delete at the source removed, and so what must be gone in each destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeleteKind {
    /// By digest, or a lifecycle expiry: the image and all its tags.
    Digest,
    /// A tag removed from an image that keeps other tags: that tag only.
    Tag,
    /// An image's last tag removed: the untagged image is deleted, its digest and all its tags.
    LastTag,
}

impl DeleteKind {
    /// The kind of a delete that named `tag` (none: by digest), when the image still had
    /// `other_tags_left` at the source right after it.
    pub fn of(tag: Option<&ImageTag>, other_tags_left: bool) -> DeleteKind {
        match tag {
            None => DeleteKind::Digest,
            Some(_) if other_tags_left => DeleteKind::Tag,
            Some(_) => DeleteKind::LastTag,
        }
    }

    /// Whether the whole image must be gone from the destination (else only the tag).
    pub fn image_goes(self) -> bool {
        !matches!(self, DeleteKind::Tag)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeleteKind::Digest => "digest",
            DeleteKind::Tag => "tag",
            DeleteKind::LastTag => "last_tag",
        }
    }

    pub fn parse(s: &str) -> Option<DeleteKind> {
        [DeleteKind::Digest, DeleteKind::Tag, DeleteKind::LastTag]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A delete at the source that one destination owes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteExpectation {
    /// The tag the source's delete named; none for a delete by digest.
    pub tag: Option<ImageTag>,
    pub deleted_at: Timestamp,
    pub kind: DeleteKind,
}

/// An `ECR Image Action` DELETE of the image in the destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteSeen {
    pub id: EventId,
    pub at: Timestamp,
    pub tag: Option<ImageTag>,
}

/// The deletes one destination owes for one digest of one source, and the deletes seen there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteGroup {
    /// Sorted by (delete time, tag).
    expectations: Vec<DeleteExpectation>,
    seen: Vec<DeleteSeen>,
}

impl DeleteGroup {
    pub fn expectations(&self) -> &[DeleteExpectation] {
        &self.expectations
    }

    pub fn seen(&self) -> &[DeleteSeen] {
        &self.seen
    }

    pub fn is_empty(&self) -> bool {
        self.expectations.is_empty() && self.seen.is_empty()
    }

    /// Records that the destination owes the delete of `tag` (none: the image) made at `at`.
    /// The same delete read again changes nothing. Returns whether it was new.
    pub fn expect(&mut self, tag: Option<ImageTag>, at: Timestamp, kind: DeleteKind) -> bool {
        if self
            .expectations
            .iter()
            .any(|e| e.tag == tag && e.deleted_at == at)
        {
            return false;
        }
        self.expectations.push(DeleteExpectation {
            tag,
            deleted_at: at,
            kind,
        });
        self.expectations
            .sort_by(|a, b| (a.deleted_at, &a.tag).cmp(&(b.deleted_at, &b.tag)));
        true
    }

    /// Records a DELETE seen in the destination; a redelivery (same event id) changes nothing.
    pub fn add_seen(&mut self, seen: DeleteSeen) -> bool {
        if self.seen.iter().any(|s| s.id == seen.id) {
            return false;
        }
        self.seen.push(seen);
        true
    }

    /// When each expectation (in [`DeleteGroup::expectations`] order) was applied in the
    /// destination, as the earliest DELETE seen there shows it; `None` while none does.
    pub fn gone_at(&self) -> Vec<Option<Timestamp>> {
        self.expectations
            .iter()
            .map(|e| {
                self.seen
                    .iter()
                    .filter(|s| applies(s.at, &s.tag, e))
                    .map(|s| s.at)
                    .min()
            })
            .collect()
    }

    /// Whether a DELETE of this digest (naming `tag`) in the destination at `at` is one of
    /// these deletes arriving: an earlier one of that tag (or the image), not yet seen applied,
    /// or seen applied only after `at`. EventBridge delivers out of order: a DELETE dated past
    /// the window, read first, would otherwise stand, and the delete be called late though an
    /// earlier DELETE, read second, applied it in time.
    pub fn awaits(&self, tag: &Option<ImageTag>, at: Timestamp) -> bool {
        self.expectations
            .iter()
            .zip(self.gone_at())
            .any(|(e, gone)| gone.is_none_or(|gone| at < gone) && applies(at, tag, e))
    }

    /// The DELETEs seen here that apply the delete owed of `tag` made at `at`.
    pub fn seen_applying(&self, tag: &Option<ImageTag>, at: Timestamp) -> Vec<&DeleteSeen> {
        self.expectations
            .iter()
            .filter(|e| e.tag == *tag && e.deleted_at == at)
            .flat_map(|e| self.seen.iter().filter(|s| applies(s.at, &s.tag, e)))
            .collect()
    }

    /// Takes back the delete owed of `tag` made at `at`: it was not a delete of this source's
    /// after all (see [`crate::replay`]'s deletes). Returns whether there was one.
    pub fn retract(&mut self, tag: &Option<ImageTag>, at: Timestamp) -> bool {
        let before = self.expectations.len();
        self.expectations
            .retain(|e| !(e.tag == *tag && e.deleted_at == at));
        self.expectations.len() != before
    }

    /// Whether every delete owed has been seen applied.
    pub fn all_applied(&self) -> bool {
        self.gone_at().iter().all(Option::is_some)
    }
}

/// Whether a DELETE seen in the destination applies a delete owed: the same digest (the group's),
/// at or after the source's delete, and the same tag, or no tag on either side. A delete of the
/// image in the destination removes every tag; a tag's delete there, for a delete by digest at
/// the source, is taken as ECR's way of reporting it (AWS documents neither): tolerance where
/// AWS says nothing, rather than a delete called missing that was applied.
fn applies(at: Timestamp, tag: &Option<ImageTag>, e: &DeleteExpectation) -> bool {
    at >= e.deleted_at && (tag.is_none() || e.tag.is_none() || *tag == e.tag)
}

/// The verdict on one (delete, destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteStatus {
    /// Applied within the window.
    Replicated,
    /// Applied after the window.
    Late,
    /// Not applied one window after the delete: the image (or tag) is still in the destination
    /// (`replay`: no DELETE event came from there).
    Missing,
    /// Not applied yet, within the window.
    Pending,
}

impl DeleteStatus {
    pub const ALL: [DeleteStatus; 4] = [
        DeleteStatus::Replicated,
        DeleteStatus::Late,
        DeleteStatus::Missing,
        DeleteStatus::Pending,
    ];

    /// Late and missing deletes are problems (exit status 1); in progress is never one.
    pub fn is_problem(self) -> bool {
        matches!(self, DeleteStatus::Late | DeleteStatus::Missing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeleteStatus::Replicated => "replicated",
            DeleteStatus::Late => "late",
            DeleteStatus::Missing => "missing",
            DeleteStatus::Pending => "pending",
        }
    }
}

/// A delete verdict with the times it rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub status: DeleteStatus,
    /// When the destination's DELETE says it was applied; none when nothing says when.
    pub gone_at: Option<Timestamp>,
    /// `gone_at` minus the source's delete time, in milliseconds.
    pub latency_ms: Option<i64>,
}

/// The verdict for one delete owed, from the DELETE seen in the destination (`gone_at`), at
/// audit time `now`: `late` if applied more than one window after the source's delete, else
/// `replicated`; with none, `missing` once more than one window has passed, `pending` before.
/// Exactly one window is still on time.
pub fn delete_verdict(
    e: &DeleteExpectation,
    gone_at: Option<Timestamp>,
    window: Window,
    now: Timestamp,
) -> DeleteOutcome {
    if let Some(at) = gone_at {
        let latency = at.since(e.deleted_at);
        return DeleteOutcome {
            status: if latency > window.millis() {
                DeleteStatus::Late
            } else {
                DeleteStatus::Replicated
            },
            gone_at: Some(at),
            latency_ms: Some(latency),
        };
    }
    DeleteOutcome {
        status: if now.since(e.deleted_at) > window.millis() {
            DeleteStatus::Missing
        } else {
            DeleteStatus::Pending
        },
        gone_at: None,
        latency_ms: None,
    }
}

/// What `DescribeImages` by digest in the destination says about a delete owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtDestination {
    /// What had to go is gone.
    Gone,
    /// The image (or the tag, on the image) is still there, archived or not.
    StillThere,
    /// An image's last tag was removed at the source, and the destination still has the image
    /// without that tag: right only if the source still has the image, i.e. the "last" tag was
    /// not its last after all (a tag the auditor never saw pushed). Ask the source
    /// ([`gone_given_source`]).
    AskSource,
}

/// What the destination's image (`found`, none when it is not there) says about the delete of
/// `tag` (none: by digest) of kind `kind`.
pub fn gone_at_destination(
    kind: DeleteKind,
    tag: Option<&ImageTag>,
    found: Option<&ImageFound>,
) -> AtDestination {
    let Some(found) = found else {
        return AtDestination::Gone;
    };
    let tag_there = tag.is_some_and(|t| found.tags.contains(t));
    match kind {
        DeleteKind::Digest => AtDestination::StillThere,
        DeleteKind::Tag if tag_there => AtDestination::StillThere,
        DeleteKind::Tag => AtDestination::Gone,
        DeleteKind::LastTag if tag_there => AtDestination::StillThere,
        DeleteKind::LastTag => AtDestination::AskSource,
    }
}

/// For [`AtDestination::AskSource`]: the image at the source (none when it is not there). Still
/// there, the delete was a tag's removal and the destination, which lost the tag, is right.
pub fn gone_given_source(at_source: Option<&ImageFound>) -> bool {
    at_source.is_some()
}

/// What ECR's APIs said about a delete owed, once its window had passed with no DELETE seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteConfirmation {
    Gone { checked_at: Timestamp },
    StillThere { checked_at: Timestamp },
}

impl DeleteConfirmation {
    pub fn checked_at(self) -> Timestamp {
        match self {
            DeleteConfirmation::Gone { checked_at }
            | DeleteConfirmation::StillThere { checked_at } => checked_at,
        }
    }
}

/// Which findings have been counted for one delete owed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeleteCounted {
    pub expected: bool,
    pub replicated: bool,
    pub late: bool,
    pub missing: bool,
}

/// The Lambda's watch over one delete owed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteWatch {
    pub counted: DeleteCounted,
    pub confirmation: Option<DeleteConfirmation>,
    /// When the sweep should look next; `None` once nothing is left to learn.
    pub next_check: Option<Timestamp>,
    pub checks: u32,
}

/// The verdict as the Lambda sees it: the DELETE seen in the destination first, then what
/// `DescribeImages` confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveDeleteVerdict {
    pub outcome: DeleteOutcome,
    /// The verdict rests on ECR's APIs rather than on an event.
    pub confirmed: bool,
}

/// The current verdict of one delete owed. Confirmed gone without an event: `replicated` (by
/// its first check, just after the window; when exactly, nothing says), or `late` when an earlier
/// check had found it still there after the window.
pub fn live_delete_verdict(
    e: &DeleteExpectation,
    gone_at: Option<Timestamp>,
    watch: &DeleteWatch,
    window: Window,
    now: Timestamp,
) -> LiveDeleteVerdict {
    if gone_at.is_some() {
        return LiveDeleteVerdict {
            outcome: delete_verdict(e, gone_at, window, now),
            confirmed: false,
        };
    }
    let status = match watch.confirmation {
        Some(DeleteConfirmation::Gone { .. }) if watch.counted.missing => DeleteStatus::Late,
        Some(DeleteConfirmation::Gone { .. }) => DeleteStatus::Replicated,
        Some(DeleteConfirmation::StillThere { .. })
            if now.since(e.deleted_at) > window.millis() =>
        {
            DeleteStatus::Missing
        }
        _ => DeleteStatus::Pending,
    };
    LiveDeleteVerdict {
        outcome: DeleteOutcome {
            status,
            gone_at: None,
            latency_ms: None,
        },
        confirmed: watch.confirmation.is_some(),
    }
}

/// When a delete applied late is known to be late, given that every DELETE event is delivered
/// within `grace_ms` of its time: `grace_ms` after the destination's DELETE that applied it,
/// when an earlier DELETE applying it, which would make it on time, can no longer come (until
/// then a DELETE dated after the window and delivered first would be a page that an earlier
/// one, delivered second, takes back). `None` when that is known already: the sweep found it
/// gone after it was counted missing.
pub fn delete_late_is_final_at(v: &LiveDeleteVerdict, grace_ms: i64) -> Option<Timestamp> {
    match v.outcome.gone_at {
        Some(at) if !v.confirmed => {
            Some(Timestamp::from_millis(at.millis().saturating_add(grace_ms)))
        }
        _ => None,
    }
}

/// When the sweep should look at a delete owed next: never once applied, but for a late one not
/// counted yet, when it is known to be late ([`delete_late_is_final_at`]); just after its window
/// (never before: a delete in progress is no news); then, while it is still there, one window
/// later, twice as long each time, at most `max_wait_ms`.
pub fn next_delete_check(
    e: &DeleteExpectation,
    v: &LiveDeleteVerdict,
    watch: &DeleteWatch,
    window: Window,
    max_wait_ms: i64,
    grace_ms: i64,
) -> Option<Timestamp> {
    match (v.outcome.status, watch.confirmation) {
        (DeleteStatus::Late, _) if !watch.counted.late => delete_late_is_final_at(v, grace_ms),
        (DeleteStatus::Replicated | DeleteStatus::Late, _) => None,
        (_, Some(c)) => {
            let doublings = watch.checks.saturating_sub(1).min(20);
            let wait = window
                .millis()
                .saturating_mul(1 << doublings)
                .min(max_wait_ms);
            Some(Timestamp::from_millis(
                c.checked_at().millis().saturating_add(wait),
            ))
        }
        (_, None) => Some(Timestamp::from_millis(
            e.deleted_at.plus(window).millis().saturating_add(1),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::confirm::ImageStatus;

    const W: Window = Window::DEFAULT;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_719_835_200_000 + secs * 1000)
    }
    fn tag(s: &str) -> Option<ImageTag> {
        Some(ImageTag::parse(s).unwrap())
    }
    fn seen(id: &str, at: i64, tag_: Option<&str>) -> DeleteSeen {
        DeleteSeen {
            id: EventId::parse(id).unwrap(),
            at: t(at),
            tag: tag_.and_then(tag),
        }
    }
    fn image(tags: &[&str]) -> ImageFound {
        ImageFound {
            tags: tags.iter().filter_map(|t| tag(t)).collect(),
            pushed_at: None,
            status: ImageStatus::Active,
        }
    }

    #[test]
    fn a_delete_by_digest_a_tag_removal_and_a_last_tag_removal_are_told_apart() {
        assert_eq!(DeleteKind::of(None, true), DeleteKind::Digest);
        assert_eq!(DeleteKind::of(tag("v1").as_ref(), true), DeleteKind::Tag);
        assert_eq!(
            DeleteKind::of(tag("v1").as_ref(), false),
            DeleteKind::LastTag
        );
        assert!(DeleteKind::Digest.image_goes() && DeleteKind::LastTag.image_goes());
        assert!(
            !DeleteKind::Tag.image_goes(),
            "a tag's removal keeps the image"
        );
        for k in [DeleteKind::Digest, DeleteKind::Tag, DeleteKind::LastTag] {
            assert_eq!(DeleteKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn what_must_be_gone_is_the_image_for_a_digest_or_last_tag_and_only_the_tag_otherwise() {
        let v1 = tag("v1");
        let cases = [
            (DeleteKind::Digest, None, None, AtDestination::Gone),
            (
                DeleteKind::Digest,
                None,
                Some(image(&[])),
                AtDestination::StillThere,
            ),
            (
                DeleteKind::Tag,
                v1.clone(),
                Some(image(&["v1", "v2"])),
                AtDestination::StillThere,
            ),
            (
                DeleteKind::Tag,
                v1.clone(),
                Some(image(&["v2"])),
                AtDestination::Gone,
            ),
            (DeleteKind::Tag, v1.clone(), None, AtDestination::Gone),
            (
                DeleteKind::LastTag,
                v1.clone(),
                Some(image(&["v1"])),
                AtDestination::StillThere,
            ),
            (
                DeleteKind::LastTag,
                v1.clone(),
                Some(image(&[])),
                AtDestination::AskSource,
            ),
            (DeleteKind::LastTag, v1.clone(), None, AtDestination::Gone),
        ];
        for (kind, tag, found, want) in cases {
            assert_eq!(
                gone_at_destination(kind, tag.as_ref(), found.as_ref()),
                want,
                "{kind:?} {tag:?} {found:?}"
            );
        }
        assert!(
            gone_given_source(Some(&image(&["v2"]))),
            "a tag's removal after all"
        );
        assert!(
            !gone_given_source(None),
            "the image is gone at the source: it must go"
        );
    }

    #[test]
    fn a_delete_is_applied_by_a_later_delete_of_its_tag_or_of_the_image_in_the_destination() {
        let mut g = DeleteGroup::default();
        assert!(g.expect(tag("v1"), t(100), DeleteKind::Tag));
        assert!(!g.expect(tag("v1"), t(100), DeleteKind::Tag), "read again");
        g.expect(None, t(200), DeleteKind::Digest);
        assert!(g.awaits(&tag("v1"), t(150)));
        assert!(
            !g.awaits(&tag("v1"), t(50)),
            "not one from before the delete"
        );
        g.add_seen(seen("other-tag", 120, Some("v9")));
        g.add_seen(seen("before", 90, None));
        assert_eq!(g.gone_at(), vec![None, None]);
        assert!(!g.all_applied());
        assert!(g.add_seen(seen("d1", 130, Some("v1"))));
        assert!(!g.add_seen(seen("d1", 130, Some("v1"))), "a redelivery");
        assert_eq!(g.gone_at(), vec![Some(t(130)), None]);
        g.add_seen(seen("image", 260, None));
        assert_eq!(g.gone_at(), vec![Some(t(130)), Some(t(260))]);
        assert!(g.all_applied());
        assert!(!g.awaits(&None, t(300)));
        assert!(!g.awaits(&None, t(260)), "the same time again");
        assert!(
            g.awaits(&None, t(250)),
            "an earlier DELETE of the image, read after a later one"
        );
        assert!(
            !g.awaits(&tag("v9"), t(125)),
            "another tag's, before the image's delete, applies nothing"
        );
    }

    #[test]
    fn a_delete_is_replicated_within_the_window_late_after_it_and_missing_without_one() {
        let e = DeleteExpectation {
            tag: None,
            deleted_at: t(0),
            kind: DeleteKind::Digest,
        };
        let at = |s| delete_verdict(&e, s, W, t(99_999));
        assert_eq!(
            at(Some(t(1800))),
            DeleteOutcome {
                status: DeleteStatus::Replicated,
                gone_at: Some(t(1800)),
                latency_ms: Some(1_800_000)
            },
            "exactly one window is on time"
        );
        assert_eq!(at(Some(t(1801))).status, DeleteStatus::Late);
        assert_eq!(at(None).status, DeleteStatus::Missing);
        assert_eq!(
            delete_verdict(&e, None, W, t(1800)).status,
            DeleteStatus::Pending
        );
        assert!(DeleteStatus::Missing.is_problem() && DeleteStatus::Late.is_problem());
        assert!(!DeleteStatus::Pending.is_problem());
    }

    #[test]
    fn the_lambda_calls_a_delete_gone_at_its_first_check_replicated_and_after_a_missing_one_late() {
        let e = DeleteExpectation {
            tag: tag("v1"),
            deleted_at: t(0),
            kind: DeleteKind::LastTag,
        };
        let mut w = DeleteWatch::default();
        let v = live_delete_verdict(&e, None, &w, W, t(1000));
        assert_eq!(v.outcome.status, DeleteStatus::Pending);
        assert_eq!(
            next_delete_check(&e, &v, &w, W, 21_600_000, 300_000),
            Some(Timestamp::from_millis(t(1800).millis() + 1)),
            "just after the window"
        );
        w.confirmation = Some(DeleteConfirmation::StillThere {
            checked_at: t(1801),
        });
        w.checks = 1;
        let v = live_delete_verdict(&e, None, &w, W, t(1801));
        assert_eq!(
            (v.outcome.status, v.confirmed),
            (DeleteStatus::Missing, true)
        );
        assert_eq!(
            next_delete_check(&e, &v, &w, W, 21_600_000, 300_000),
            Some(t(1801 + 1800))
        );
        w.counted.missing = true;
        w.confirmation = Some(DeleteConfirmation::Gone {
            checked_at: t(3601),
        });
        let v = live_delete_verdict(&e, None, &w, W, t(3601));
        assert_eq!(v.outcome.status, DeleteStatus::Late);
        assert_eq!(next_delete_check(&e, &v, &w, W, 21_600_000, 300_000), None);

        let first = DeleteWatch {
            confirmation: Some(DeleteConfirmation::Gone {
                checked_at: t(1801),
            }),
            checks: 1,
            ..DeleteWatch::default()
        };
        let v = live_delete_verdict(&e, None, &first, W, t(1801));
        assert_eq!(
            (v.outcome.status, v.outcome.latency_ms),
            (DeleteStatus::Replicated, None),
            "gone by its first check; no lag is invented"
        );
        let evented = live_delete_verdict(&e, Some(t(12)), &first, W, t(1801));
        assert_eq!(
            (evented.outcome.latency_ms, evented.confirmed),
            (Some(12_000), false),
            "an event says when"
        );
    }
}
