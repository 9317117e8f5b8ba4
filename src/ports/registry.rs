//! The port to Amazon ECR: what the auditor asks a registry, in domain terms.
//!
//! What ECR answers is in domain terms too ([`crate::domain::confirm`]). The adapter
//! (`adapters::ecr`) owns the SDK clients, assumes the audit role in other accounts,
//! and converts SDK types at its boundary; nothing here names an AWS type.

use std::future::Future;

use crate::domain::config::{Destination, ReplicationConfig};
use crate::domain::confirm::{ImageFound, ReplicationStatus};
use crate::domain::correlate::GroupKey;
use crate::domain::event::ImageAction;
use crate::domain::ids::{AccountId, ImageDigest, ImageTag, Region, RepositoryName};

/// A source or destination: one account's registry in one Region.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryAt {
    pub account: AccountId,
    pub region: Region,
}

impl RegistryAt {
    /// The registry a group's image was pushed to.
    pub fn source_of(key: &GroupKey) -> Self {
        RegistryAt {
            account: key.source_account,
            region: key.source_region.clone(),
        }
    }

    /// The registry an image action (a push, a delete) happened in.
    pub fn of(image: &ImageAction) -> Self {
        RegistryAt {
            account: image.account,
            region: image.region.clone(),
        }
    }
}

impl From<&Destination> for RegistryAt {
    fn from(d: &Destination) -> Self {
        RegistryAt {
            account: d.account,
            region: d.region.clone(),
        }
    }
}

/// Why ECR did not answer. Whether retrying can help decides between failing the invocation
/// (EventBridge retries it) and deciding with the other confirmation API.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Throttling, 5xx, timeouts, connection failures, still failing after the SDK's retries.
    #[error("ECR is unavailable ({0}); retrying may help")]
    Transient(String),
    /// Access denied, an operation not implemented, a validation error, a role that cannot be
    /// assumed: retrying will not help.
    #[error("ECR refused the request ({0})")]
    Refused(String),
}

impl RegistryError {
    pub fn is_transient(&self) -> bool {
        matches!(self, RegistryError::Transient(_))
    }
}

/// What the auditor asks of ECR.
pub trait RegistryView {
    /// The replication configuration of `registry` (DescribeRegistry in its Region).
    fn replication_config(
        &self,
        registry: &RegistryAt,
    ) -> impl Future<Output = Result<ReplicationConfig, RegistryError>> + Send;

    /// DescribeImageReplicationStatus, asked of the *source* registry and Region. An image or
    /// repository that does not exist gives an empty list.
    fn replication_status(
        &self,
        source: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> impl Future<Output = Result<Vec<ReplicationStatus>, RegistryError>> + Send;

    /// DescribeImages by digest in a *destination*: `None` when the image (or the repository)
    /// is not there.
    fn image(
        &self,
        destination: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> impl Future<Output = Result<Option<ImageFound>, RegistryError>> + Send;

    /// DescribeImages by tag in `registry` (a destination, or the source): the digest the tag
    /// points to there, if any.
    fn digest_of_tag(
        &self,
        registry: &RegistryAt,
        repository: &RepositoryName,
        tag: &ImageTag,
    ) -> impl Future<Output = Result<Option<ImageDigest>, RegistryError>> + Send;
}
