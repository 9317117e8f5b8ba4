//! A scripted registry for the inventory reconciliation (feature `testkit`; never in the shipped
//! binaries): [`FakeInventory`] answers [`RegistryInventory`] from a script of repositories,
//! images and policies, and [`RegistryView`] through the [`FakeRegistry`] it wraps, which every
//! image scripted here is also given (so the Lambda's sweep, asking DescribeImages by digest or
//! by tag, sees the same registry the inventory lists).
//!
//! Clones share one script. Every request is counted per API (a listing counts one per page of
//! [`FakeInventory::page_size`] items), can take a set time on the tokio clock, and can be made
//! to fail for one registry.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::fake::FakeRegistry;
use crate::domain::config::ReplicationConfig;
use crate::domain::confirm::{ImageFound, ImageStatus, ReplicationStatus};
use crate::domain::drift::{ImageRecord, ImageState, RepositoryListing, RepositorySettings};
use crate::domain::ids::{ImageDigest, ImageTag, RepositoryName};
use crate::ports::inventory::{Paged, RegistryInventory};
use crate::ports::registry::{RegistryAt, RegistryError, RegistryView};

/// The requests of the inventory, as ECR names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InventoryApi {
    DescribeRepositories,
    DescribeImages,
    GetLifecyclePolicy,
    GetRepositoryPolicy,
}

#[derive(Clone, Debug, Default)]
struct Repo {
    settings: RepositorySettings,
    images: BTreeMap<ImageDigest, ImageRecord>,
    lifecycle: Option<String>,
    policy: Option<String>,
}

struct Script {
    registries: BTreeMap<RegistryAt, BTreeMap<RepositoryName, Repo>>,
    calls: HashMap<InventoryApi, u64>,
    failures: HashMap<(InventoryApi, RegistryAt), RegistryError>,
    latency: Option<Duration>,
    page_size: usize,
    /// Requests under way now, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            registries: BTreeMap::new(),
            calls: HashMap::new(),
            failures: HashMap::new(),
            latency: None,
            page_size: 1000,
            in_flight: 0,
            max_in_flight: 0,
        }
    }
}

/// See the module's documentation.
#[derive(Clone, Default)]
pub struct FakeInventory {
    registry: FakeRegistry,
    script: Arc<Mutex<Script>>,
}

impl FakeInventory {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One of a scripted repository's policy documents, if the repository and it exist.
    fn repo_text(
        &self,
        at: &RegistryAt,
        repository: &RepositoryName,
        field: impl Fn(&Repo) -> &Option<String>,
    ) -> Option<String> {
        self.script()
            .registries
            .get(at)
            .and_then(|r| r.get(repository))
            .and_then(|repo| field(repo).clone())
    }

    /// The wrapped registry: replication configurations, replication statuses, failures and
    /// latency of the event path's four questions.
    pub fn registry(&self) -> &FakeRegistry {
        &self.registry
    }

    /// Creates (or re-sets the settings of) `name` in `at`.
    pub fn repository(&self, at: &RegistryAt, name: &RepositoryName, settings: RepositorySettings) {
        self.script()
            .registries
            .entry(at.clone())
            .or_default()
            .entry(name.clone())
            .or_default()
            .settings = settings;
    }

    /// Puts `image` in `name` (created with default settings if need be), and tells the wrapped
    /// registry about it and its tags.
    pub fn image(&self, at: &RegistryAt, name: &RepositoryName, image: ImageRecord) {
        for tag in &image.tags {
            self.registry
                .tag(at.clone(), name.clone(), tag.clone(), image.digest.clone());
        }
        self.registry.image(
            at.clone(),
            name.clone(),
            image.digest.clone(),
            ImageFound {
                tags: image.tags.clone(),
                pushed_at: image.pushed_at,
                status: match &image.state {
                    ImageState::Active => ImageStatus::Active,
                    ImageState::Archived => ImageStatus::Archived,
                    ImageState::Activating => ImageStatus::Activating,
                    ImageState::Other(s) => ImageStatus::Other(s.clone()),
                },
            },
        );
        self.script()
            .registries
            .entry(at.clone())
            .or_default()
            .entry(name.clone())
            .or_default()
            .images
            .insert(image.digest.clone(), image);
    }

    /// Removes the image from the listing (the wrapped registry's answers by digest and tag are
    /// left as scripted).
    pub fn remove_image(&self, at: &RegistryAt, name: &RepositoryName, digest: &ImageDigest) {
        if let Some(repo) = self
            .script()
            .registries
            .get_mut(at)
            .and_then(|r| r.get_mut(name))
        {
            repo.images.remove(digest);
        }
    }

    pub fn lifecycle_policy(&self, at: &RegistryAt, name: &RepositoryName, text: &str) {
        self.script()
            .registries
            .entry(at.clone())
            .or_default()
            .entry(name.clone())
            .or_default()
            .lifecycle = Some(text.to_owned());
    }

    pub fn repository_policy(&self, at: &RegistryAt, name: &RepositoryName, text: &str) {
        self.script()
            .registries
            .entry(at.clone())
            .or_default()
            .entry(name.clone())
            .or_default()
            .policy = Some(text.to_owned());
    }

    /// Makes every inventory request take `latency` (on the tokio clock); the wrapped
    /// registry's requests too.
    pub fn latency(&self, latency: Duration) {
        self.script().latency = Some(latency);
        self.registry.latency(latency);
    }

    /// How many items a listing returns per page (1000, ECR's largest page, by default).
    pub fn page_size(&self, items: usize) {
        self.script().page_size = items.max(1);
    }

    /// Makes `api` fail in `at` with `error`, or (`None`) answer again.
    pub fn fail(&self, api: InventoryApi, at: &RegistryAt, error: Option<RegistryError>) {
        let mut script = self.script();
        match error {
            Some(e) => script.failures.insert((api, at.clone()), e),
            None => script.failures.remove(&(api, at.clone())),
        };
    }

    /// How many requests of `api` were made (every page counts).
    pub fn calls(&self, api: InventoryApi) -> u64 {
        self.script().calls.get(&api).copied().unwrap_or(0)
    }

    /// The most inventory requests that were ever under way at once.
    pub fn max_in_flight(&self) -> usize {
        self.script().max_in_flight
    }

    /// Counts `requests` requests of `api`, waits for each, then fails if scripted to.
    async fn enter(
        &self,
        api: InventoryApi,
        at: &RegistryAt,
        requests: u64,
    ) -> Result<(), RegistryError> {
        let (latency, failure) = {
            let mut script = self.script();
            *script.calls.entry(api).or_default() += requests;
            script.in_flight += 1;
            script.max_in_flight = script.max_in_flight.max(script.in_flight);
            (
                script.latency,
                script.failures.get(&(api, at.clone())).cloned(),
            )
        };
        if let Some(latency) = latency {
            for _ in 0..requests {
                tokio::time::sleep(latency).await;
            }
        } else {
            // Let other tasks run, so that concurrent requests overlap as they would.
            tokio::task::yield_now().await;
        }
        self.script().in_flight -= 1;
        failure.map_or(Ok(()), Err)
    }

    fn pages(&self, items: usize) -> u64 {
        let size = self.script().page_size;
        items.div_ceil(size).max(1) as u64
    }
}

impl RegistryInventory for FakeInventory {
    async fn repositories(
        &self,
        at: &RegistryAt,
    ) -> Result<Paged<Vec<RepositoryListing>>, RegistryError> {
        let listed: Vec<RepositoryListing> = self
            .script()
            .registries
            .get(at)
            .map(|repos| {
                repos
                    .iter()
                    .map(|(name, repo)| RepositoryListing {
                        name: name.clone(),
                        settings: repo.settings.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let requests = self.pages(listed.len());
        self.enter(InventoryApi::DescribeRepositories, at, requests)
            .await?;
        Ok(Paged {
            value: listed,
            requests,
        })
    }

    async fn images(
        &self,
        at: &RegistryAt,
        repository: &RepositoryName,
    ) -> Result<Paged<Option<Vec<ImageRecord>>>, RegistryError> {
        let images: Option<Vec<ImageRecord>> = self
            .script()
            .registries
            .get(at)
            .and_then(|r| r.get(repository))
            .map(|repo| repo.images.values().cloned().collect());
        let requests = self.pages(images.as_ref().map_or(0, Vec::len));
        self.enter(InventoryApi::DescribeImages, at, requests)
            .await?;
        Ok(Paged {
            value: images,
            requests,
        })
    }

    async fn lifecycle_policy(
        &self,
        at: &RegistryAt,
        repository: &RepositoryName,
    ) -> Result<Option<String>, RegistryError> {
        self.enter(InventoryApi::GetLifecyclePolicy, at, 1).await?;
        Ok(self.repo_text(at, repository, |repo| &repo.lifecycle))
    }

    async fn repository_policy(
        &self,
        at: &RegistryAt,
        repository: &RepositoryName,
    ) -> Result<Option<String>, RegistryError> {
        self.enter(InventoryApi::GetRepositoryPolicy, at, 1).await?;
        Ok(self.repo_text(at, repository, |repo| &repo.policy))
    }
}

impl RegistryView for FakeInventory {
    async fn replication_config(
        &self,
        at: &RegistryAt,
    ) -> Result<ReplicationConfig, RegistryError> {
        self.registry.replication_config(at).await
    }

    async fn replication_status(
        &self,
        source: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> Result<Vec<ReplicationStatus>, RegistryError> {
        self.registry
            .replication_status(source, repository, digest)
            .await
    }

    async fn image(
        &self,
        destination: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> Result<Option<ImageFound>, RegistryError> {
        RegistryView::image(&self.registry, destination, repository, digest).await
    }

    async fn digest_of_tag(
        &self,
        registry: &RegistryAt,
        repository: &RepositoryName,
        tag: &ImageTag,
    ) -> Result<Option<ImageDigest>, RegistryError> {
        self.registry.digest_of_tag(registry, repository, tag).await
    }
}
