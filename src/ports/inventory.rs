//! The ports of the inventory reconciliation: what it asks ECR about the repositories and images
//! a registry holds ([`RegistryInventory`]), and where the Lambda keeps a pass that spans
//! several invocations ([`InventoryPasses`]). Kept apart from [`super::registry`] and
//! [`super::state`]: the event path needs neither.

use std::future::Future;

use crate::domain::drift::{ImageRecord, InventoryPass, RepositoryListing};
use crate::domain::ids::RepositoryName;

use super::registry::{RegistryAt, RegistryError};
use super::state::{StoreError, Versioned};

/// An answer that took several requests (one per page): the answer, and how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paged<T> {
    pub value: T,
    pub requests: u64,
}

/// What the reconciliation lists in a registry. Every listing reads every page; the SDK's own
/// retries have run before an error is returned.
pub trait RegistryInventory {
    /// DescribeRepositories: every repository of `registry`, with its settings.
    fn repositories(
        &self,
        registry: &RegistryAt,
    ) -> impl Future<Output = Result<Paged<Vec<RepositoryListing>>, RegistryError>> + Send;

    /// DescribeImages: every image of `repository`, archived ones included; `None` when the
    /// repository does not exist.
    fn images(
        &self,
        registry: &RegistryAt,
        repository: &RepositoryName,
    ) -> impl Future<Output = Result<Paged<Option<Vec<ImageRecord>>>, RegistryError>> + Send;

    /// GetLifecyclePolicy: the policy's text, `None` when there is none (or no repository).
    fn lifecycle_policy(
        &self,
        registry: &RegistryAt,
        repository: &RepositoryName,
    ) -> impl Future<Output = Result<Option<String>, RegistryError>> + Send;

    /// GetRepositoryPolicy: the policy's text, `None` when there is none (or no repository).
    fn repository_policy(
        &self,
        registry: &RegistryAt,
        repository: &RepositoryName,
    ) -> impl Future<Output = Result<Option<String>, RegistryError>> + Send;
}

/// Where the Lambda keeps its one inventory pass: a single item, saved only if nobody saved it
/// since it was loaded (two invocations cannot both take it).
pub trait InventoryPasses {
    /// The stored pass (version 0 and `None`: there has never been one).
    fn load_pass(
        &self,
    ) -> impl Future<Output = Result<Versioned<Option<InventoryPass>>, StoreError>> + Send;

    /// Saves `pass` if the stored version is still `pass.version`; `Ok(false)` when another
    /// invocation saved it first.
    fn save_pass(
        &self,
        pass: &Versioned<InventoryPass>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
