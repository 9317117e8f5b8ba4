//! A [`RegistryView`] that answers from a script: the registry of the handler's tests, the
//! property tests and the benchmarks (feature `testkit`; never in the shipped binaries).
//!
//! Clones share one script, so a test keeps a handle to change what ECR answers while the
//! handler holds another. Every call is counted per API, can be made to fail, can yield to other
//! tasks (so concurrent invocations interleave inside it) and can take a set time (a slow
//! cross-Region call).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};

use crate::domain::config::ReplicationConfig;
use crate::domain::confirm::{ImageFound, ReplicationStatus};
use crate::domain::ids::{ImageDigest, ImageTag, RepositoryName};
use crate::ports::registry::{RegistryAt, RegistryError, RegistryView};

/// The four questions the auditor asks ECR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Api {
    /// `DescribeRegistry`: the replication configuration.
    Registry,
    /// `DescribeImageReplicationStatus` in the source.
    ImageReplicationStatus,
    /// `DescribeImages` by digest in a destination.
    ImagesByDigest,
    /// `DescribeImages` by tag in a destination.
    ImagesByTag,
}

type ImageKey = (RegistryAt, RepositoryName, ImageDigest);

#[derive(Default)]
struct Script {
    /// `describe-registry` documents by registry; a registry with none has no rules.
    configs: HashMap<RegistryAt, Value>,
    /// Replication statuses by (source, repository, digest); none is an empty answer.
    statuses: HashMap<ImageKey, Vec<ReplicationStatus>>,
    /// Images by (registry, repository, digest), with their tags and `imageStatus`: a
    /// destination's, or the source's.
    images: HashMap<ImageKey, ImageFound>,
    /// The digest a tag points to, by (destination, repository, tag).
    tags: HashMap<(RegistryAt, RepositoryName, ImageTag), ImageDigest>,
    failures: HashMap<Api, RegistryError>,
    /// Failures of one API in one registry only (a destination Region that is down).
    failures_in: HashMap<(RegistryAt, Api), RegistryError>,
    calls: HashMap<Api, usize>,
    /// Let other tasks run inside every call.
    yield_in_calls: bool,
    /// How long every call takes.
    latency: Option<Duration>,
}

/// The scripted registry; see the module's documentation.
#[derive(Clone, Default)]
pub struct FakeRegistry(Arc<Mutex<Script>>);

impl FakeRegistry {
    fn script(&self) -> MutexGuard<'_, Script> {
        // A test that panicked while holding the lock left plain data behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The `describe-registry` document `registry` answers with (parsed at every call, as the
    /// adapter does, so that its warnings are logged).
    pub fn config(&self, registry: RegistryAt, document: Value) {
        self.script().configs.insert(registry, document);
    }

    /// What `DescribeImageReplicationStatus` answers in `source` for this image.
    pub fn statuses(
        &self,
        source: RegistryAt,
        repository: RepositoryName,
        digest: ImageDigest,
        statuses: Vec<ReplicationStatus>,
    ) {
        self.script()
            .statuses
            .insert((source, repository, digest), statuses);
    }

    /// An image present in `destination`.
    pub fn image(
        &self,
        destination: RegistryAt,
        repository: RepositoryName,
        digest: ImageDigest,
        found: ImageFound,
    ) {
        self.script()
            .images
            .insert((destination, repository, digest), found);
    }

    /// The image is no longer in `registry` (deleted there): DescribeImages finds nothing.
    pub fn remove_image(
        &self,
        registry: RegistryAt,
        repository: RepositoryName,
        digest: ImageDigest,
    ) {
        self.script().images.remove(&(registry, repository, digest));
    }

    /// Where a tag points in `destination`.
    pub fn tag(
        &self,
        destination: RegistryAt,
        repository: RepositoryName,
        tag: ImageTag,
        digest: ImageDigest,
    ) {
        self.script()
            .tags
            .insert((destination, repository, tag), digest);
    }

    /// Makes every call of `api` fail with `error`, or (`None`) answer again.
    pub fn fail(&self, api: Api, error: Option<RegistryError>) {
        let mut script = self.script();
        match error {
            Some(e) => script.failures.insert(api, e),
            None => script.failures.remove(&api),
        };
    }

    /// Makes every call of `api` asked of `registry` fail with `error`, or (`None`) answer again.
    pub fn fail_in(&self, registry: RegistryAt, api: Api, error: Option<RegistryError>) {
        let mut script = self.script();
        match error {
            Some(e) => script.failures_in.insert((registry, api), e),
            None => script.failures_in.remove(&(registry, api)),
        };
    }

    /// Lets other tasks run inside every call, so that concurrent invocations interleave there.
    pub fn yield_in_calls(&self) {
        self.script().yield_in_calls = true;
    }

    /// Makes every call take `latency` (on the tokio clock, which a test may pause).
    pub fn latency(&self, latency: Duration) {
        self.script().latency = Some(latency);
    }

    /// How many calls of `api` were made.
    pub fn calls(&self, api: Api) -> usize {
        self.script().calls.get(&api).copied().unwrap_or(0)
    }

    /// (DescribeRegistry, DescribeImageReplicationStatus, DescribeImages by digest, by tag).
    pub fn all_calls(&self) -> (usize, usize, usize, usize) {
        (
            self.calls(Api::Registry),
            self.calls(Api::ImageReplicationStatus),
            self.calls(Api::ImagesByDigest),
            self.calls(Api::ImagesByTag),
        )
    }

    /// Counts the call, waits or yields if asked to, then fails if scripted to.
    async fn enter(&self, api: Api, registry: &RegistryAt) -> Result<(), RegistryError> {
        let (failure, yield_now, latency) = {
            let mut script = self.script();
            *script.calls.entry(api).or_default() += 1;
            let failure = script
                .failures_in
                .get(&(registry.clone(), api))
                .or_else(|| script.failures.get(&api))
                .cloned();
            (failure, script.yield_in_calls, script.latency)
        };
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        } else if yield_now {
            tokio::task::yield_now().await;
        }
        failure.map_or(Ok(()), Err)
    }
}

impl RegistryView for FakeRegistry {
    async fn replication_config(
        &self,
        at: &RegistryAt,
    ) -> Result<ReplicationConfig, RegistryError> {
        self.enter(Api::Registry, at).await?;
        let doc = self.script().configs.get(at).cloned();
        let doc = doc.unwrap_or_else(|| json!({"registryId": at.account.to_string()}));
        ReplicationConfig::from_json(&doc, at.region.clone(), Some(at.account))
            .map_err(|e| RegistryError::Refused(e.to_string()))
    }

    async fn replication_status(
        &self,
        source: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> Result<Vec<ReplicationStatus>, RegistryError> {
        self.enter(Api::ImageReplicationStatus, source).await?;
        let key = (source.clone(), repository.clone(), digest.clone());
        Ok(self
            .script()
            .statuses
            .get(&key)
            .cloned()
            .unwrap_or_default())
    }

    async fn image(
        &self,
        destination: &RegistryAt,
        repository: &RepositoryName,
        digest: &ImageDigest,
    ) -> Result<Option<ImageFound>, RegistryError> {
        self.enter(Api::ImagesByDigest, destination).await?;
        let key = (destination.clone(), repository.clone(), digest.clone());
        Ok(self.script().images.get(&key).cloned())
    }

    async fn digest_of_tag(
        &self,
        destination: &RegistryAt,
        repository: &RepositoryName,
        tag: &ImageTag,
    ) -> Result<Option<ImageDigest>, RegistryError> {
        self.enter(Api::ImagesByTag, destination).await?;
        let key = (destination.clone(), repository.clone(), tag.clone());
        Ok(self.script().tags.get(&key).cloned())
    }
}
