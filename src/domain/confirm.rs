//! What ECR's own APIs said about an expected copy, and what that confirms: the decision table
//! the Lambda's sweep applies once a copy's window has passed without its event. Pure: the
//! handler asks the questions ([`crate::ports::registry::RegistryView`]) and hands the answers
//! here.

use super::config::Destination;
use super::ids::{AccountId, ImageTag, Region};
use super::ledger::Confirmation;
use super::time::Timestamp;

/// One entry of `DescribeImageReplicationStatus`: every field is optional in ECR's model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub region: Option<Region>,
    pub registry: Option<AccountId>,
    pub state: ReplicationState,
    /// Free text with no documented values: kept verbatim.
    pub failure_code: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    InProgress,
    Complete,
    Failed,
    /// A value ECR added after this code was written, or none at all.
    Other(String),
}

/// An image as `DescribeImages` shows it in a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFound {
    pub tags: Vec<ImageTag>,
    pub pushed_at: Option<Timestamp>,
}

/// What the two confirmation APIs answered about one expectation; `None` for an API that did
/// not answer (throttled, unreachable, refused).
#[derive(Clone, Copy, Debug)]
pub struct Answers<'a> {
    /// `DescribeImages` by digest in the destination: the image, or `Some(None)` when it is not
    /// there.
    pub image: Option<Option<&'a ImageFound>>,
    /// `DescribeImageReplicationStatus` in the source: the whole list it returned.
    pub statuses: Option<&'a [ReplicationStatus]>,
}

/// The entry of `DescribeImageReplicationStatus` that speaks of `destination`: same Region, and
/// the same registry when ECR names one (it may not).
pub fn status_for<'a>(
    statuses: &'a [ReplicationStatus],
    destination: &Destination,
) -> Option<&'a ReplicationStatus> {
    statuses.iter().find(|s| {
        s.region.as_ref() == Some(&destination.region)
            && s.registry.is_none_or(|r| r == destination.account)
    })
}

/// What the answers confirm about one expectation of `destination` (pushed with `tag`), checked
/// at `now`; `None` when neither API answered, so nothing was learned and the expectation stays
/// due.
///
/// The image in the destination is the strongest evidence: present is present, whatever the
/// status API says (its history can be stale). Without it, the status API decides: COMPLETE
/// (only trusted when `DescribeImages` could not answer, since a COMPLETE copy deleted since is
/// absent), FAILED, or absent (in progress or nothing at all).
pub fn confirm(
    answers: Answers<'_>,
    destination: &Destination,
    tag: Option<&ImageTag>,
    now: Timestamp,
) -> Option<Confirmation> {
    let ours = answers.statuses.and_then(|s| status_for(s, destination));
    let state = ours.map(|s| &s.state);
    Some(match answers.image {
        None if answers.statuses.is_none() => return None,
        Some(Some(found)) => Confirmation::Present {
            pushed_at: found.pushed_at,
            carried_tag: tag.is_none_or(|t| found.tags.contains(t)),
            checked_at: now,
        },
        None if state == Some(&ReplicationState::Complete) => Confirmation::Present {
            pushed_at: None,
            carried_tag: true,
            checked_at: now,
        },
        _ if state == Some(&ReplicationState::Failed) => Confirmation::Failed {
            failure_code: ours.and_then(|s| s.failure_code.clone()),
            checked_at: now,
        },
        _ => Confirmation::Absent {
            in_progress: state == Some(&ReplicationState::InProgress),
            checked_at: now,
        },
    })
}
