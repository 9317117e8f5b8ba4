//! The domain's ids from the strings tests write, and what ECR answers about an image: each
//! helper parses or panics, naming the value it could not take.

use ecr_replication_auditor::domain::confirm::ImageFound;
use ecr_replication_auditor::domain::ids::{
    AccountId, ImageDigest, ImageTag, Region, RepositoryName,
};
use ecr_replication_auditor::domain::time::Timestamp;
use ecr_replication_auditor::ports::registry::RegistryAt;

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

pub fn tag(s: &str) -> ImageTag {
    ImageTag::parse(s).unwrap_or_else(|e| panic!("tag {s:?} {e}"))
}

/// The registry of `account` in `region`.
pub fn registry(account: &str, region: &str) -> RegistryAt {
    RegistryAt {
        account: self::account(account),
        region: self::region(region),
    }
}

/// An image as DescribeImages finds it in a destination: its tags there, and when it was pushed
/// there, if ECR says.
pub fn found(tags: &[&str], pushed_at: Option<Timestamp>) -> ImageFound {
    ImageFound {
        tags: tags.iter().map(|t| tag(t)).collect(),
        pushed_at,
    }
}
