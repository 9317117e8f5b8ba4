//! The domain's ids and times from the strings tests write, and what ECR answers about an image:
//! each helper parses or panics, naming the value it could not take.

use ecr_replication_auditor::domain::config::Destination;
use ecr_replication_auditor::domain::confirm::{ImageFound, ImageStatus};
use ecr_replication_auditor::domain::correlate::GroupKey;
use ecr_replication_auditor::domain::ids::{
    AccountId, EventId, ImageDigest, ImageTag, Region, RepositoryName,
};
use ecr_replication_auditor::domain::time::Timestamp;
use ecr_replication_auditor::ports::registry::RegistryAt;

/// 2024-07-01T10:00:00Z, the time of `events/push-tagged.json`: the tests' t0.
pub const T0_MS: i64 = 1_719_828_000_000;

/// `secs` seconds after [`T0_MS`].
pub fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(T0_MS + secs * 1000)
}

/// An RFC 3339 time, e.g. `2024-07-01T10:30:00Z`.
pub fn time(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap_or_else(|e| panic!("time {s:?}: {e}"))
}

pub fn account(s: &str) -> AccountId {
    AccountId::parse(s).unwrap_or_else(|e| panic!("account {s:?} {e}"))
}

pub fn region(s: &str) -> Region {
    Region::parse(s).unwrap_or_else(|e| panic!("Region {s:?} {e}"))
}

pub fn repository(s: &str) -> RepositoryName {
    RepositoryName::parse(s).unwrap_or_else(|e| panic!("repository {s:?} {e}"))
}

pub fn digest(s: &str) -> ImageDigest {
    ImageDigest::parse(s).unwrap_or_else(|e| panic!("digest {s:?} {e}"))
}

/// A digest of the right shape, distinct for each `n`, that no image pushed to moto has (moto's
/// image digests are SHA-256 hashes of their layers' digests).
pub fn synthetic_digest(n: u16) -> String {
    format!("sha256:{n:064x}")
}

pub fn tag(s: &str) -> ImageTag {
    ImageTag::parse(s).unwrap_or_else(|e| panic!("tag {s:?} {e}"))
}

pub fn event_id(s: &str) -> EventId {
    EventId::parse(s).unwrap_or_else(|e| panic!("event id {s:?} {e}"))
}

/// The registry of `account` in `region`.
pub fn registry(account: &str, region: &str) -> RegistryAt {
    RegistryAt {
        account: self::account(account),
        region: self::region(region),
    }
}

/// The group of `repository`'s image `digest` pushed to `source`, for `destination`.
pub fn group_key(
    source: &RegistryAt,
    repository: &str,
    digest: &str,
    destination: &RegistryAt,
) -> GroupKey {
    GroupKey {
        source_account: source.account,
        source_region: source.region.clone(),
        repository: self::repository(repository),
        digest: self::digest(digest),
        destination: Destination {
            account: destination.account,
            region: destination.region.clone(),
        },
    }
}

/// An image as DescribeImages finds it in a destination: its tags there, and when it was pushed
/// there, if ECR says; usable (`imageStatus` ACTIVE).
pub fn found(tags: &[&str], pushed_at: Option<Timestamp>) -> ImageFound {
    found_with(tags, pushed_at, ImageStatus::Active)
}

/// [`found`], with its `imageStatus` (ARCHIVED, ACTIVATING...).
pub fn found_with(tags: &[&str], pushed_at: Option<Timestamp>, status: ImageStatus) -> ImageFound {
    ImageFound {
        tags: tags.iter().map(|t| tag(t)).collect(),
        pushed_at,
        status,
    }
}
