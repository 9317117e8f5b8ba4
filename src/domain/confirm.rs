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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::correlate::GroupKey;

    fn destination() -> Destination {
        GroupKey::example().destination
    }

    fn now() -> Timestamp {
        Timestamp::from_millis(10_000_000)
    }

    fn tag(s: &str) -> ImageTag {
        ImageTag::parse(s).unwrap()
    }

    fn status(state: ReplicationState, failure_code: Option<&str>) -> ReplicationStatus {
        let d = destination();
        ReplicationStatus {
            region: Some(d.region),
            registry: Some(d.account),
            state,
            failure_code: failure_code.map(str::to_owned),
        }
    }

    fn image(tags: &[&str]) -> ImageFound {
        ImageFound {
            tags: tags.iter().map(|t| tag(t)).collect(),
            pushed_at: Some(Timestamp::from_millis(9_000_000)),
        }
    }

    fn decide(
        image: Option<Option<&ImageFound>>,
        statuses: Option<&[ReplicationStatus]>,
        pushed_tag: Option<&str>,
    ) -> Option<Confirmation> {
        let pushed_tag = pushed_tag.map(tag);
        confirm(
            Answers { image, statuses },
            &destination(),
            pushed_tag.as_ref(),
            now(),
        )
    }

    #[test]
    fn nothing_is_confirmed_when_neither_api_answered() {
        assert_eq!(decide(None, None, Some("v1")), None);
    }

    #[test]
    fn an_image_in_the_destination_is_present_whatever_the_status_api_says() {
        let found = image(&["v1", "stable"]);
        let failed = [status(ReplicationState::Failed, Some("X"))];
        for statuses in [None, Some(&failed[..]), Some(&[][..])] {
            assert_eq!(
                decide(Some(Some(&found)), statuses, Some("v1")),
                Some(Confirmation::Present {
                    pushed_at: found.pushed_at,
                    carried_tag: true,
                    checked_at: now(),
                })
            );
        }
    }

    #[test]
    fn an_image_without_the_pushed_tag_is_present_untagged_and_a_push_by_digest_is_never() {
        let found = image(&["other"]);
        let present = |carried_tag| {
            Some(Confirmation::Present {
                pushed_at: found.pushed_at,
                carried_tag,
                checked_at: now(),
            })
        };
        assert_eq!(decide(Some(Some(&found)), None, Some("v1")), present(false));
        assert_eq!(decide(Some(Some(&found)), None, None), present(true));
    }

    #[test]
    fn complete_is_trusted_only_when_describe_images_could_not_answer() {
        let complete = [status(ReplicationState::Complete, None)];
        assert_eq!(
            decide(None, Some(&complete), Some("v1")),
            Some(Confirmation::Present {
                pushed_at: None,
                carried_tag: true,
                checked_at: now(),
            })
        );
        // DescribeImages says it is not there (deleted since): the status's history is stale.
        assert_eq!(
            decide(Some(None), Some(&complete), Some("v1")),
            Some(Confirmation::Absent {
                in_progress: false,
                checked_at: now(),
            })
        );
    }

    #[test]
    fn failed_keeps_ecrs_failure_code_and_in_progress_is_absent_in_progress() {
        let failed = [status(ReplicationState::Failed, Some("IMAGE_TOO_LARGE"))];
        for image in [None, Some(None)] {
            assert_eq!(
                decide(image, Some(&failed), Some("v1")),
                Some(Confirmation::Failed {
                    failure_code: Some("IMAGE_TOO_LARGE".into()),
                    checked_at: now(),
                })
            );
        }
        let in_progress = [status(ReplicationState::InProgress, None)];
        assert_eq!(
            decide(Some(None), Some(&in_progress), None),
            Some(Confirmation::Absent {
                in_progress: true,
                checked_at: now(),
            })
        );
        assert_eq!(
            decide(Some(None), None, None),
            Some(Confirmation::Absent {
                in_progress: false,
                checked_at: now(),
            })
        );
    }

    #[test]
    fn only_the_status_of_this_destination_counts_and_an_unnamed_registry_is_this_one() {
        let mut other_account = status(ReplicationState::Failed, None);
        other_account.registry = Some(AccountId::parse("999988887777").unwrap());
        let mut other_region = status(ReplicationState::Failed, None);
        other_region.region = Some(Region::parse("eu-west-3").unwrap());
        let absent = Some(Confirmation::Absent {
            in_progress: false,
            checked_at: now(),
        });
        assert_eq!(
            decide(Some(None), Some(&[other_account, other_region]), None),
            absent
        );

        let mut unnamed = status(ReplicationState::Failed, Some("X"));
        unnamed.registry = None;
        assert!(matches!(
            decide(Some(None), Some(&[unnamed]), None),
            Some(Confirmation::Failed { .. })
        ));
    }
}
