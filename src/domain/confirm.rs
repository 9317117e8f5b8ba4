//! What ECR's own APIs said about an expected copy, and what that confirms: the decision table
//! the Lambda's sweep applies once a copy's window has passed without its event. Pure: the
//! handler asks the questions ([`crate::ports::registry::RegistryView`]) and hands the answers
//! here.

use super::config::Destination;
use super::ids::{AccountId, ImageTag, Region};
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
    /// `imageStatus`: whether the image can be pulled.
    pub status: ImageStatus,
}

/// `imageStatus` in `DescribeImages`, since ECR has an archive storage class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ImageStatus {
    /// Usable; also what an answer without `imageStatus` means (every image before archiving).
    #[default]
    Active,
    /// In the archive storage class: it exists, but cannot be pulled until it is restored.
    Archived,
    /// Being restored (up to 20 minutes): not usable yet, but on its way.
    Activating,
    /// A value ECR added after this code was written: kept, and taken as usable (the image is
    /// there; nothing says it cannot be pulled).
    Other(String),
}

/// What ECR's APIs said about one expectation when its window had passed without a copy event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The digest is in the destination (its event was lost, or it arrived late).
    Present {
        /// `imagePushedAt` in the destination; unknown when only the status API answered.
        pushed_at: Option<Timestamp>,
        carried_tag: bool,
        checked_at: Timestamp,
    },
    /// `DescribeImageReplicationStatus` said FAILED.
    Failed {
        failure_code: Option<String>,
        checked_at: Timestamp,
    },
    /// Not in the destination (and not FAILED): in progress, or nothing at all.
    Absent {
        in_progress: bool,
        checked_at: Timestamp,
    },
    /// In the destination, but `ARCHIVED`: it exists and cannot be pulled, so it is not a usable
    /// copy. Still watched: restored there, it completes.
    Archived {
        pushed_at: Option<Timestamp>,
        checked_at: Timestamp,
    },
    /// In the destination and `ACTIVATING` (a restore, up to 20 minutes): pending, still watched.
    Activating { checked_at: Timestamp },
}

impl Confirmation {
    /// When ECR was asked.
    pub fn checked_at(&self) -> Timestamp {
        match self {
            Confirmation::Present { checked_at, .. }
            | Confirmation::Failed { checked_at, .. }
            | Confirmation::Absent { checked_at, .. }
            | Confirmation::Archived { checked_at, .. }
            | Confirmation::Activating { checked_at } => *checked_at,
        }
    }
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
/// status API says (its history can be stale), unless it is ARCHIVED (it exists but cannot be
/// pulled: not a usable copy) or ACTIVATING (a restore on its way: not there yet). Without it,
/// the status API decides: COMPLETE (only trusted when `DescribeImages` could not answer, since
/// a COMPLETE copy deleted since is absent), FAILED, or absent (in progress or nothing at all).
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
        Some(Some(found)) if found.status == ImageStatus::Archived => Confirmation::Archived {
            pushed_at: found.pushed_at,
            checked_at: now,
        },
        Some(Some(found)) if found.status == ImageStatus::Activating => {
            Confirmation::Activating { checked_at: now }
        }
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
            status: ImageStatus::Active,
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
    fn an_archived_copy_is_not_a_usable_copy_and_an_activating_one_is_not_there_yet() {
        let complete = [status(ReplicationState::Complete, None)];
        let mut archived = image(&["v1"]);
        archived.status = ImageStatus::Archived;
        assert_eq!(
            decide(Some(Some(&archived)), Some(&complete), Some("v1")),
            Some(Confirmation::Archived {
                pushed_at: archived.pushed_at,
                checked_at: now(),
            }),
            "whatever the status API says"
        );
        let mut activating = image(&["v1"]);
        activating.status = ImageStatus::Activating;
        assert_eq!(
            decide(Some(Some(&activating)), Some(&complete), Some("v1")),
            Some(Confirmation::Activating { checked_at: now() })
        );
        let mut newer = image(&["v1"]);
        newer.status = ImageStatus::Other("FROZEN".into());
        assert!(
            matches!(
                decide(Some(Some(&newer)), None, Some("v1")),
                Some(Confirmation::Present { .. })
            ),
            "a status ECR adds later is taken as usable"
        );
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
