//! Inventory reconciliation runs, shared by the `drift` command ([`crate::drift`]) and the
//! Lambda's scheduled check ([`crate::app::inventory`]): what to read ([`plan`]), reading it
//! through [`RegistryInventory`] with bounded concurrency, and the comparison, which is the
//! domain's ([`crate::domain::drift::compare`]).
//!
//! - **The plan.** Each source's repositories (DescribeRepositories, every page) that its rules
//!   cover, and each destination registry's repositories (one listing per registry, which also
//!   gives every destination repository's settings without a request per repository).
//! - **A unit of work** is one repository name with every audited source whose rules cover it,
//!   so a destination that two sources replicate to is read once, and what each source shows
//!   there is known when the other is compared. Units go in name order: the Lambda resumes after
//!   the last one done.
//! - **Requests per unit**, each source and each destination that has the repository:
//!   DescribeImages (one per 1000 images), GetLifecyclePolicy, GetRepositoryPolicy. Requests
//!   within a unit are made one after another; `concurrency` units run at once, so at most that
//!   many requests are in flight.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::stream::{self, Stream, StreamExt};

use crate::domain::config::ReplicationConfig;
use crate::domain::drift::{
    Calls, Comparison, ImageRecord, Pair, PairKey, RepositoryContents, RepositorySettings, Scope,
    Target, compare, targets,
};
use crate::domain::ids::RepositoryName;
use crate::ports::inventory::RegistryInventory;
use crate::ports::registry::{RegistryAt, RegistryError};

/// The default number of repositories compared at once (one request each in flight). AWS
/// publishes no request rate for the listing APIs (the ECR quotas page gives rates for the push
/// and pull APIs only), so the default is modest; the SDK's retries absorb throttling.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// A registry that could not be read, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot read registry {} in {}: {error}", .registry.account, .registry.region)]
pub struct ReadError {
    pub registry: RegistryAt,
    pub error: RegistryError,
}

impl ReadError {
    fn of(registry: &RegistryAt) -> impl FnOnce(RegistryError) -> ReadError + '_ {
        move |error| ReadError {
            registry: registry.clone(),
            error,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.error.is_transient()
    }
}

/// A source registry and Region to reconcile, with its replication configuration (read by the
/// caller: the Lambda through its cache, the command once).
#[derive(Clone, Debug)]
pub struct Source {
    pub registry: RegistryAt,
    pub config: Arc<ReplicationConfig>,
}

/// One repository of one source in a unit: its settings and the destinations its rules name.
#[derive(Clone, Debug)]
pub struct UnitSource {
    pub registry: RegistryAt,
    pub settings: RepositorySettings,
    pub targets: Vec<Target>,
}

/// One repository name, with every source whose rules cover it.
#[derive(Clone, Debug)]
pub struct Unit {
    pub repository: RepositoryName,
    pub sources: Vec<UnitSource>,
}

/// What to read.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// In repository name order.
    pub units: Vec<Unit>,
    /// Every (source, destination) the rules name for a repository of the plan.
    pub pairs: BTreeSet<PairKey>,
    /// The requests the plan took.
    pub calls: Calls,
    /// Each destination registry's repositories and their settings.
    destinations: HashMap<RegistryAt, BTreeMap<RepositoryName, RepositorySettings>>,
}

/// Lists the sources' repositories that their rules cover (and whose names start with
/// `prefix`, as `PREFIX_MATCH` does), and every destination registry's repositories.
pub async fn plan<R: RegistryInventory + Sync>(
    registry: &R,
    sources: &[Source],
    prefix: Option<&str>,
) -> Result<Plan, ReadError> {
    let mut plan = Plan::default();
    let mut listings: HashMap<RegistryAt, BTreeMap<RepositoryName, RepositorySettings>> =
        HashMap::new();
    let mut units: BTreeMap<RepositoryName, Vec<UnitSource>> = BTreeMap::new();
    for source in sources {
        let listed = list(registry, &source.registry, &mut listings, &mut plan.calls).await?;
        for (name, settings) in listed {
            if prefix.is_some_and(|p| !name.as_str().starts_with(p)) {
                continue;
            }
            let targets = targets(&source.config, &name);
            if targets.is_empty() {
                continue;
            }
            for t in &targets {
                plan.pairs.insert(PairKey {
                    source_account: source.registry.account,
                    source_region: source.registry.region.clone(),
                    destination: t.destination.clone(),
                });
            }
            units.entry(name).or_default().push(UnitSource {
                registry: source.registry.clone(),
                settings,
                targets,
            });
        }
    }
    let destinations: BTreeSet<RegistryAt> = units
        .values()
        .flatten()
        .flat_map(|s| s.targets.iter().map(|t| RegistryAt::from(&t.destination)))
        .collect();
    for destination in destinations {
        list(registry, &destination, &mut listings, &mut plan.calls).await?;
    }
    plan.destinations = listings;
    plan.units = units
        .into_iter()
        .map(|(repository, sources)| Unit {
            repository,
            sources,
        })
        .collect();
    Ok(plan)
}

/// `registry`'s repositories, listed once however many times asked.
async fn list<R: RegistryInventory + Sync>(
    registry: &R,
    at: &RegistryAt,
    listings: &mut HashMap<RegistryAt, BTreeMap<RepositoryName, RepositorySettings>>,
    calls: &mut Calls,
) -> Result<BTreeMap<RepositoryName, RepositorySettings>, ReadError> {
    if let Some(known) = listings.get(at) {
        return Ok(known.clone());
    }
    let listed = registry.repositories(at).await.map_err(ReadError::of(at))?;
    calls.describe_repositories += listed.requests;
    let map: BTreeMap<RepositoryName, RepositorySettings> = listed
        .value
        .into_iter()
        .map(|r| (r.name, r.settings))
        .collect();
    listings.insert(at.clone(), map.clone());
    Ok(map)
}

/// The sources of one unit, read.
#[derive(Clone, Debug)]
pub struct SourcesRead {
    /// One per [`Unit::sources`], in the same order.
    pub contents: Vec<RepositoryContents>,
    pub calls: Calls,
}

impl SourcesRead {
    /// The images of every source of the unit.
    pub fn images(&self) -> u64 {
        self.contents.iter().map(|c| c.images.len() as u64).sum()
    }
}

/// What comparing one unit found.
#[derive(Clone, Debug)]
pub struct UnitResult {
    pub repository: RepositoryName,
    /// One per (source, destination) of the unit.
    pub comparisons: Vec<(PairKey, Comparison)>,
    /// Each source's images, as read (the Lambda audits the pushes it never saw from them).
    pub sources: Vec<(RegistryAt, Vec<ImageRecord>)>,
    /// The requests of the whole unit, its sources' included.
    pub calls: Calls,
    /// Source images compared.
    pub images: u64,
}

/// Reads one repository (images and both policies) in `at`; `settings` from the listing.
async fn read<R: RegistryInventory + Sync>(
    registry: &R,
    at: &RegistryAt,
    repository: &RepositoryName,
    settings: &RepositorySettings,
    calls: &mut Calls,
) -> Result<RepositoryContents, ReadError> {
    let images = registry
        .images(at, repository)
        .await
        .map_err(ReadError::of(at))?;
    calls.describe_images += images.requests;
    let lifecycle_policy = registry
        .lifecycle_policy(at, repository)
        .await
        .map_err(ReadError::of(at))?;
    calls.get_lifecycle_policy += 1;
    let repository_policy = registry
        .repository_policy(at, repository)
        .await
        .map_err(ReadError::of(at))?;
    calls.get_repository_policy += 1;
    Ok(RepositoryContents {
        settings: settings.clone(),
        // Deleted since the listing: nothing left to compare.
        images: images.value.unwrap_or_default(),
        lifecycle_policy,
        repository_policy,
    })
}

/// Reads every source of `unit`.
pub async fn read_sources<R: RegistryInventory + Sync>(
    registry: &R,
    unit: &Unit,
) -> Result<SourcesRead, ReadError> {
    let mut calls = Calls::default();
    let mut contents = Vec::with_capacity(unit.sources.len());
    for source in &unit.sources {
        contents.push(
            read(
                registry,
                &source.registry,
                &unit.repository,
                &source.settings,
                &mut calls,
            )
            .await?,
        );
    }
    Ok(SourcesRead { contents, calls })
}

/// Reads the destinations of `unit` and compares each source with each of its destinations.
pub async fn compare_unit<R: RegistryInventory + Sync>(
    registry: &R,
    plan: &Plan,
    unit: &Unit,
    sources: SourcesRead,
    scope: &Scope,
) -> Result<UnitResult, ReadError> {
    let mut calls = sources.calls;
    let images = sources.images();
    let here: HashMap<&RegistryAt, &RepositoryContents> = unit
        .sources
        .iter()
        .map(|s| &s.registry)
        .zip(&sources.contents)
        .collect();
    let mut there: BTreeMap<RegistryAt, Option<RepositoryContents>> = BTreeMap::new();
    for destination in unit
        .sources
        .iter()
        .flat_map(|s| &s.targets)
        .map(|t| RegistryAt::from(&t.destination))
    {
        if there.contains_key(&destination) {
            continue;
        }
        // A destination that is also a source of this repository was read as one.
        let read_there = match here.get(&destination) {
            Some(contents) => Some((*contents).clone()),
            None => match plan
                .destinations
                .get(&destination)
                .and_then(|repos| repos.get(&unit.repository))
            {
                Some(settings) => Some(
                    read(
                        registry,
                        &destination,
                        &unit.repository,
                        settings,
                        &mut calls,
                    )
                    .await?,
                ),
                None => None,
            },
        };
        there.insert(destination, read_there);
    }
    let mut comparisons = Vec::new();
    for (source, contents) in unit.sources.iter().zip(&sources.contents) {
        for target in &source.targets {
            let destination = RegistryAt::from(&target.destination);
            let others: Vec<&RepositoryContents> = unit
                .sources
                .iter()
                .zip(&sources.contents)
                .filter(|(s, _)| {
                    s.registry != source.registry
                        && s.targets
                            .iter()
                            .any(|t| t.destination == target.destination)
                })
                .map(|(_, c)| c)
                .collect();
            let key = PairKey {
                source_account: source.registry.account,
                source_region: source.registry.region.clone(),
                destination: target.destination.clone(),
            };
            let comparison = compare(
                &Pair {
                    key: &key,
                    repository: &unit.repository,
                    delete_replication: target.delete_replication,
                    source: contents,
                    destination: there.get(&destination).and_then(Option::as_ref),
                    others: &others,
                },
                scope,
            );
            comparisons.push((key, comparison));
        }
    }
    Ok(UnitResult {
        repository: unit.repository.clone(),
        comparisons,
        sources: unit
            .sources
            .iter()
            .zip(sources.contents)
            .map(|(s, c)| (s.registry.clone(), c.images))
            .collect(),
        calls,
        images,
    })
}

/// Reads and compares `units` in order, `concurrency` at a time; results come in the units'
/// order. The iterator is pulled only as results are taken, so a caller that stops taking (a
/// deadline) starts no more units than `concurrency` ahead.
pub fn compare_units<'a, R: RegistryInventory + Sync>(
    registry: &'a R,
    plan: &'a Plan,
    units: impl Iterator<Item = &'a Unit> + 'a,
    scope: &'a Scope,
    concurrency: usize,
) -> impl Stream<Item = Result<UnitResult, ReadError>> + 'a {
    stream::iter(units)
        .map(move |unit| async move {
            let sources = read_sources(registry, unit).await?;
            compare_unit(registry, plan, unit, sources, scope).await
        })
        .buffered(concurrency.max(1))
}
