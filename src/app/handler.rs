//! The Lambda's handler: one entry point for every invocation, routed by what it carries.
//!
//! - a push: the source Region's rules (DescribeRegistry, cached) give its destinations; one
//!   expectation per destination is recorded, in one all-or-nothing save;
//! - a copy (SUCCESS or FAILED): recorded against its group, even before its push;
//! - a sweep (an EventBridge schedule, or a Scheduler payload `{"action": "sweep"}`): every open
//!   expectation past its window is confirmed with ECR's own APIs before it is called missing
//!   ([`super::sweep`]);
//! - anything else well formed is ignored; malformed input is logged, counted and acknowledged,
//!   so EventBridge does not retry a poison event forever.
//!
//! Whatever is newly learned is published as metrics (once per invocation, and by a long sweep
//! as it goes) and logged as one JSON line per final verdict. A problem found (missing, failed,
//! untagged, stale, late) is dated when it is found, so it lands inside the alarms' range however
//! late that is; lags and the other counts keep the time things happened, brought inside what
//! CloudWatch accepts. Transient failures of the store or of ECR fail the invocation so that
//! EventBridge retries it; the retry counts nothing twice (see [`crate::domain::ledger`]). A
//! source whose registry cannot be read (no read role, access denied) is a setup gap: counted
//! in `SourcesUnreadable` and acknowledged, not retried into the dead-letter queue.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::domain::config::ReplicationConfig;
use crate::domain::correlate::{CopySeen, GroupKey, copy_candidates};
use crate::domain::event::{Classified, Copy, Delete, ImageAction, Push, classify};
use crate::domain::ids::{AccountId, ImageDigest, ImageTag};
use crate::domain::ledger::{Finding, Found, LiveVerdict, TrackedGroup};
use crate::domain::metrics::{
    Dimensions, MetricName, Sample, accepted_timestamp, aggregate, series,
};
use crate::domain::time::{Timestamp, Window};
use crate::ports::metrics::{MetricsError, MetricsSink};
use crate::ports::registry::{RegistryAt, RegistryError, RegistryView};
use crate::ports::state::{StateStore, StoreError, Versioned, Want};

/// How often a save is retried after another invocation changed the same group first.
pub(super) const SAVE_ATTEMPTS: usize = 5;
/// How long an invocation may run when its caller gives no deadline ([`Auditor::handle`]): the
/// function's timeout in template.yaml.
pub const DEFAULT_BUDGET: std::time::Duration = std::time::Duration::from_secs(60);

/// What the handler needs to know, already validated (see `crate::settings`).
#[derive(Clone, Debug)]
pub struct AuditSettings {
    pub window: Window,
    /// Add the `Repository` dimension to the dimensioned metrics.
    pub repository_dimension: bool,
    /// How long a Region's replication configuration is trusted before it is read again.
    pub config_cache_ms: i64,
    /// How long the history is kept (`HISTORY_RETENTION_DAYS`): an event dated earlier would be
    /// stored already expired, and is rejected instead.
    pub history_retention: Window,
}

/// How far ahead of the invocation's clock an event may be dated. EventBridge stamps `time`
/// when the event is emitted, and AWS's clocks agree to well under a second; more than this is
/// a forged or broken event, which would never fall due.
pub const MAX_AHEAD: Window = Window::minutes(5);

/// How often a copy that matches no push may make the handler read its source's rules again.
const ADOPT_REREAD_MS: i64 = 60_000;

/// Why an invocation failed. Every variant fails the invocation so that EventBridge retries it
/// (or, once its retries are spent, sends it to the dead-letter queue): nothing is dropped.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Metrics(#[from] MetricsError),
    #[error("gave up after {SAVE_ATTEMPTS} attempts: other invocations kept changing group {0}")]
    Contention(String),
    #[error("neither ECR confirmation API answered for {0} expectation(s); they stay open")]
    Unconfirmed(usize),
}

/// What one invocation did: the Lambda's response, and what tests assert on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub pushes: u64,
    pub copies: u64,
    pub ignored: u64,
    pub rejected: u64,
    /// Events that changed nothing (already recorded: a redelivery).
    pub repeats: u64,
    pub sweeps: u64,
    pub groups_checked: u64,
    pub expected: u64,
    pub completed: u64,
    pub late: u64,
    pub untagged: u64,
    pub failed: u64,
    pub missing: u64,
    pub stale_tags: u64,
    /// Deletes at the source, recorded against the groups of their image.
    pub deletes: u64,
    pub withdrawn: u64,
    /// Events (or checks) whose registry could not be read: acknowledged, not retried.
    pub sources_unreadable: u64,
    /// Stored items the sweep skipped because they cannot be read.
    pub items_unreadable: u64,
    /// Due groups a sweep left for the next one: its deadline came first.
    pub groups_left: u64,
}

/// The verdict line of one (push, destination): what the saved queries and the runbook read.
fn log_verdict(key: &GroupKey, f: &Found, v: &LiveVerdict) {
    tracing::info!(
        verdict = v.status.as_str(),
        source_account = %key.source_account,
        source_region = %key.source_region,
        repository = %key.repository,
        image_digest = %key.digest,
        image_tag = f.tag.as_ref().map(|t| t.as_str()),
        destination_account = %key.destination.account,
        destination_region = %key.destination.region,
        pushed_at = %f.pushed_at,
        replicated_at = v.replicated_at.map(|t| t.to_string()),
        latency_seconds = v.latency_ms.map(|ms| ms as f64 / 1000.0),
        failure_code = v.failure_code.as_deref(),
        confirmed_by_api = v.confirmed,
        "replication verdict"
    );
}

/// The stale-tag line: which digest the destination's tag names instead.
fn log_stale_tag(key: &GroupKey, f: &Found, points_to: &ImageDigest) {
    tracing::warn!(
        source_account = %key.source_account,
        repository = %key.repository,
        image_digest = %key.digest,
        image_tag = f.tag.as_ref().map(|t| t.as_str()),
        destination_account = %key.destination.account,
        destination_region = %key.destination.region,
        tag_points_to = %points_to,
        "stale tag: the destination's tag points to another image"
    );
}

/// The handler, generic over its ports: DynamoDB, ECR and CloudWatch in the Lambda; the
/// in-memory store and fakes in tests.
pub struct Auditor<S, R, M, F> {
    pub(super) store: S,
    pub(super) registry: R,
    metrics: M,
    /// Where metrics go when `metrics` fails: the verdicts are already stored, so the data is
    /// written as Embedded Metric Format log lines instead of being lost (CloudWatch extracts
    /// the same metrics from the function's log).
    fallback: F,
    pub(super) settings: AuditSettings,
    /// Replication configurations by registry, with the time they were read.
    configs: Mutex<HashMap<RegistryAt, (Timestamp, Arc<ReplicationConfig>)>>,
    /// Accounts whose registry could not be read, logged once each per cold start.
    unreadable_logged: Mutex<HashSet<AccountId>>,
}

impl Summary {
    /// Adds what another part of the invocation did (a sweep's group) to this summary.
    pub(super) fn absorb(&mut self, other: &Summary) {
        let Summary {
            pushes,
            copies,
            ignored,
            rejected,
            repeats,
            sweeps,
            groups_checked,
            expected,
            completed,
            late,
            untagged,
            failed,
            missing,
            stale_tags,
            deletes,
            withdrawn,
            sources_unreadable,
            items_unreadable,
            groups_left,
        } = other;
        self.pushes += pushes;
        self.copies += copies;
        self.ignored += ignored;
        self.rejected += rejected;
        self.repeats += repeats;
        self.sweeps += sweeps;
        self.groups_checked += groups_checked;
        self.expected += expected;
        self.completed += completed;
        self.late += late;
        self.untagged += untagged;
        self.failed += failed;
        self.missing += missing;
        self.stale_tags += stale_tags;
        self.deletes += deletes;
        self.withdrawn += withdrawn;
        self.sources_unreadable += sources_unreadable;
        self.items_unreadable += items_unreadable;
        self.groups_left += groups_left;
    }

    /// Adds one finding to its count.
    fn count(&mut self, finding: &Finding) {
        let count = match finding {
            Finding::Expected => &mut self.expected,
            Finding::Completed { .. } => &mut self.completed,
            Finding::Late => &mut self.late,
            Finding::Untagged => &mut self.untagged,
            Finding::Failed { .. } => &mut self.failed,
            Finding::Missing => &mut self.missing,
            Finding::StaleTag { .. } => &mut self.stale_tags,
            Finding::Withdrawn => &mut self.withdrawn,
        };
        *count += 1;
    }
}

/// What one invocation gathers before publishing.
pub(super) struct Invocation {
    /// The invocation's clock reading.
    pub(super) now: Timestamp,
    pub(super) summary: Summary,
    pub(super) samples: Vec<Sample>,
    pub(super) errors: Vec<HandlerError>,
}

impl Invocation {
    pub(super) fn new(now: Timestamp) -> Self {
        Invocation {
            now,
            summary: Summary::default(),
            samples: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// A sample of a metric without dimensions, now.
    pub(super) fn count(&mut self, name: MetricName) {
        self.samples.push(Sample {
            name,
            dimensions: None,
            value: 1.0,
            at: self.now,
        });
    }
}

impl<S: StateStore + Sync, R: RegistryView + Sync, M: MetricsSink + Sync, F: MetricsSink + Sync>
    Auditor<S, R, M, F>
{
    pub fn new(store: S, registry: R, metrics: M, fallback: F, settings: AuditSettings) -> Self {
        Auditor {
            store,
            registry,
            metrics,
            fallback,
            settings,
            configs: Mutex::new(HashMap::new()),
            unreadable_logged: Mutex::new(HashSet::new()),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles one invocation's payload, for a caller with no invocation deadline (tests,
    /// tools): as if the function's timeout ([`DEFAULT_BUDGET`]) started now.
    pub async fn handle(&self, payload: &Value, now: Timestamp) -> Result<Summary, HandlerError> {
        self.handle_by(payload, now, Instant::now() + DEFAULT_BUDGET)
            .await
    }

    /// Handles one invocation's payload: an event, a list of events, or a sweep request.
    /// `now` is the invocation's clock reading; `deadline` is when the invocation ends (the
    /// Lambda's context says), on tokio's clock: a sweep stops taking work before it, and
    /// publishes what it counted.
    pub async fn handle_by(
        &self,
        payload: &Value,
        now: Timestamp,
        deadline: Instant,
    ) -> Result<Summary, HandlerError> {
        let mut inv = Invocation::new(now);
        match payload {
            Value::Array(items) => {
                for item in items {
                    self.one(item, now, deadline, &mut inv).await;
                }
            }
            item => self.one(item, now, deadline, &mut inv).await,
        }
        self.publish(&mut inv).await;
        match inv.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(inv.summary),
        }
    }

    async fn one(&self, item: &Value, now: Timestamp, deadline: Instant, inv: &mut Invocation) {
        if is_sweep(item) {
            inv.summary.sweeps += 1;
            if let Err(e) = self.sweep(now, deadline, inv).await {
                inv.errors.push(e);
            }
            return;
        }
        let classified = classify(item).with_plausible_time(
            now,
            "the invocation's clock",
            MAX_AHEAD,
            Some(self.settings.history_retention),
        );
        let result = match classified {
            Classified::Push(push) => {
                inv.summary.pushes += 1;
                self.push(&push, now, inv).await
            }
            Classified::Copy(copy) => {
                inv.summary.copies += 1;
                self.copy(&copy, now, inv).await
            }
            Classified::Delete(delete) => {
                inv.summary.deletes += 1;
                self.delete(&delete, now, inv).await
            }
            Classified::Ignored { id, kind, .. } => {
                inv.summary.ignored += 1;
                tracing::debug!(event_id = %id, kind = %kind, "ignored event");
                Ok(())
            }
            Classified::Rejected(rejection) => {
                inv.summary.rejected += 1;
                tracing::warn!(
                    event_id = rejection.event_id.as_ref().map(|id| id.as_str()),
                    field = %rejection.field,
                    reason = %rejection.problem,
                    "rejected event"
                );
                let first = match &rejection.event_id {
                    Some(id) => self.store.first_rejection(id, now).await,
                    None => Ok(true),
                };
                match first {
                    Ok(true) => {
                        inv.count(MetricName::EventsRejected);
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "event not recorded; the invocation will fail so it is retried");
            inv.errors.push(e);
        }
    }

    /// The replication configuration of `registry`, from the cache while it is fresh.
    pub(super) async fn config_of(
        &self,
        registry: RegistryAt,
        now: Timestamp,
    ) -> Result<Arc<ReplicationConfig>, RegistryError> {
        match self.cached_config(&registry) {
            Some((read_at, config)) if now.since(read_at) < self.settings.config_cache_ms => {
                Ok(config)
            }
            _ => self.read_config(registry, now).await,
        }
    }

    /// Every configuration read so far, however old.
    fn cached_configs(&self) -> Vec<Arc<ReplicationConfig>> {
        self.configs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(_, config)| config.clone())
            .collect()
    }

    /// The configuration last read for `registry`, with when it was read, however old.
    pub(super) fn cached_config(
        &self,
        registry: &RegistryAt,
    ) -> Option<(Timestamp, Arc<ReplicationConfig>)> {
        self.configs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(registry)
            .cloned()
    }

    /// Reads the configuration of `registry` from ECR, bypassing the cache, and caches it.
    pub(super) async fn read_config(
        &self,
        registry: RegistryAt,
        now: Timestamp,
    ) -> Result<Arc<ReplicationConfig>, RegistryError> {
        let config = Arc::new(self.registry.replication_config(&registry).await?);
        for warning in &config.warnings {
            tracing::warn!(registry = %registry.account, region = %registry.region, "{warning}");
        }
        self.configs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(registry, (now, config.clone()));
        Ok(config)
    }

    async fn push(
        &self,
        push: &Push,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let source = RegistryAt {
            account: push.account,
            region: push.region.clone(),
        };
        let Some(own) = self.readable_config(source, now, inv).await? else {
            return Ok(());
        };
        let keys = self.keys_of(push, &own);
        let known: Vec<Arc<ReplicationConfig>> = self.cached_configs();
        let candidates = copy_candidates(push, Some(&own), known.iter().map(Arc::as_ref));
        if keys.is_empty() && candidates.is_empty() {
            return Ok(());
        }
        // One read for both: the push's own groups (with its tag's record), and those it may be
        // the copy for.
        let wants: Vec<Want> = keys
            .iter()
            .chain(&candidates)
            .map(|k| (k.clone(), vec![push.tag.clone()]))
            .collect();
        let mut loaded = self.store.load(&wants).await?;
        let theirs = loaded.split_off(keys.len());
        let theirs_wanted = wants[keys.len()..].to_vec();
        let (owed, owed_loaded): (Vec<Want>, Vec<_>) = theirs_wanted
            .into_iter()
            .zip(theirs)
            .filter(|(_, v)| v.value.group.awaits_copy(&push.tag, push.at))
            .unzip();
        if !owed.is_empty() {
            // A copy landing here, as ECR may report it: evidence for those groups, and no
            // expectations of its own (ECR never replicates a copy onwards).
            let seen = CopySeen {
                id: push.id.clone(),
                at: push.at,
                tag: push.tag.clone(),
                succeeded: true,
            };
            return self
                .change_loaded(&owed, Some(owed_loaded), now, inv, |_, tracked| {
                    tracked.group.add_copy(seen.clone());
                })
                .await;
        }
        if keys.is_empty() {
            return Ok(());
        }
        let own_wants = &wants[..keys.len()];
        self.change_loaded(own_wants, Some(loaded), now, inv, |_, tracked| {
            tracked.group.add_push(push.tag.clone(), push.at);
        })
        .await
    }

    /// The replication configuration of a source an event came from, from the cache while it is
    /// fresh. `None` when its registry cannot be read (no read role there, a wrong external id,
    /// access denied): a setup gap, not a replication problem. The event is acknowledged rather
    /// than retried into the dead-letter queue, counted in `SourcesUnreadable`, and logged once
    /// per account per cold start. A transient failure is an error: the event is retried.
    async fn readable_config(
        &self,
        source: RegistryAt,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<Option<Arc<ReplicationConfig>>, HandlerError> {
        match self.config_of(source.clone(), now).await {
            Ok(config) => Ok(Some(config)),
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => {
                self.unreadable(&source, &e, inv);
                Ok(None)
            }
        }
    }

    /// Counts a registry that cannot be read, and logs it once per account per cold start.
    pub(super) fn unreadable(
        &self,
        registry: &RegistryAt,
        e: &RegistryError,
        inv: &mut Invocation,
    ) {
        inv.summary.sources_unreadable += 1;
        inv.count(MetricName::SourcesUnreadable);
        self.unreadable_logged_only(registry, e);
    }

    /// Logs a registry that cannot be read, once per account per cold start.
    pub(super) fn unreadable_logged_only(&self, registry: &RegistryAt, e: &RegistryError) {
        let first = self
            .unreadable_logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(registry.account);
        if first {
            tracing::warn!(
                account = %registry.account,
                region = %registry.region,
                error = %e,
                "a registry cannot be read (is the read role deployed in that account, with the \
                 right external id?): what needs it is acknowledged and counted in \
                 SourcesUnreadable"
            );
        }
    }

    /// The groups of an image in its source registry: one per destination that the source's
    /// rules (cached) name for its repository.
    fn keys_of(&self, image: &ImageAction, config: &ReplicationConfig) -> Vec<GroupKey> {
        let expected = config.expected_destinations(&image.repository);
        if expected.dropped_self {
            tracing::warn!(repository = %image.repository, region = %image.region, "a rule names the push's own Region; ignored");
        }
        if expected.destinations.is_empty() {
            tracing::debug!(repository = %image.repository, "no replication rule covers this repository");
        }
        expected
            .destinations
            .into_iter()
            .map(|d| GroupKey::of_push(image, d))
            .collect()
    }

    /// A delete at the source: recorded in the group of every destination the rules name for
    /// the repository, so that a push of that image (or tag) still without its copy is withdrawn
    /// rather than missing. Recorded even where no push is known yet: its event may come later.
    async fn delete(
        &self,
        delete: &Delete,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let source = RegistryAt {
            account: delete.account,
            region: delete.region.clone(),
        };
        let Some(config) = self.readable_config(source, now, inv).await? else {
            return Ok(());
        };
        let keys = self.keys_of(delete, &config);
        if keys.is_empty() {
            return Ok(());
        }
        let wants: Vec<Want> = keys
            .into_iter()
            .map(|k| (k, vec![delete.tag.clone()]))
            .collect();
        self.change(&wants, now, inv, |_, tracked| {
            tracked.group.add_deletion(delete.tag.clone(), delete.at);
        })
        .await
    }

    async fn copy(
        &self,
        copy: &Copy,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let key = GroupKey::of_copy(copy);
        let seen = CopySeen::from(copy);
        let no_push = AtomicBool::new(false);
        // Its tag's record, and the push by digest's, which takes a tag that has no push.
        let mut tags = vec![None];
        if copy.tag.is_some() {
            tags.push(copy.tag.clone());
        }
        let want = [(key.clone(), tags)];
        self.change(&want, now, inv, |_, tracked| {
            tracked.group.add_copy(seen.clone());
            no_push.store(!tracked.has_pushes(), Ordering::Relaxed);
        })
        .await?;
        if copy.succeeded && no_push.load(Ordering::Relaxed) {
            self.adopt(&key, &copy.tag, now, inv).await?;
        }
        Ok(())
    }

    /// A successful copy whose group has no push: if the source's rules (as cached) do not name
    /// its destination for the repository, they may have changed within the cache period, and
    /// the push was judged against the old ones. Read them again, at most once a minute per
    /// source; if they now name the destination, the group takes the pushes of the same image
    /// that the other destinations' groups hold, so the copy is expected and counted. (If this
    /// destination was the image's only one, no group holds its push: documented.)
    async fn adopt(
        &self,
        key: &GroupKey,
        tag: &Option<ImageTag>,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let source = RegistryAt {
            account: key.source_account,
            region: key.source_region.clone(),
        };
        let named =
            |config: &ReplicationConfig| config.expected_destinations(&key.repository).destinations;
        if let Some((read_at, cached)) = self.cached_config(&source)
            && (named(&cached).contains(&key.destination) || now.since(read_at) < ADOPT_REREAD_MS)
        {
            // Named: its push is only late, or lost. Read within the minute: nothing new.
            return Ok(());
        }
        let config = match self.read_config(source, now).await {
            Ok(config) => config,
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "a copy matches no push, and its source's rules cannot be read");
                return Ok(());
            }
        };
        let destinations = named(&config);
        if !destinations.contains(&key.destination) {
            return Ok(());
        }
        // Of the siblings' pushes, those the copy can match: its tag's, and every push still
        // waiting for its copy (a push whose copy came everywhere else is not read).
        let siblings: Vec<Want> = destinations
            .into_iter()
            .filter(|d| *d != key.destination)
            .map(|destination| {
                (
                    GroupKey {
                        destination,
                        ..key.clone()
                    },
                    vec![tag.clone()],
                )
            })
            .collect();
        let pushes: BTreeSet<(Option<ImageTag>, Timestamp)> = self
            .store
            .load(&siblings)
            .await?
            .iter()
            .flat_map(|v| v.value.group.expectations())
            .map(|e| (e.tag.clone(), e.pushed_at))
            .collect();
        if pushes.is_empty() {
            return Ok(());
        }
        tracing::info!(
            source_account = %key.source_account,
            source_region = %key.source_region,
            repository = %key.repository,
            destination_account = %key.destination.account,
            destination_region = %key.destination.region,
            "a destination added to the rules within the cache period: its copies are expected from now on"
        );
        let mut tags: Vec<Option<ImageTag>> = pushes.iter().map(|(t, _)| t.clone()).collect();
        tags.dedup();
        let want = [(key.clone(), tags)];
        self.change(&want, now, inv, |_, tracked| {
            for (tag, at) in &pushes {
                tracked.group.add_push(tag.clone(), *at);
            }
        })
        .await
    }

    /// Load, apply `edit` to each group, settle, save if anything changed; again on a conflict.
    async fn change(
        &self,
        wants: &[Want],
        now: Timestamp,
        inv: &mut Invocation,
        edit: impl Fn(&GroupKey, &mut TrackedGroup),
    ) -> Result<(), HandlerError> {
        self.change_loaded(wants, None, now, inv, edit).await
    }

    /// [`Self::change`], starting from `loaded` (the groups of `wants`, just read) when given.
    async fn change_loaded(
        &self,
        wants: &[Want],
        mut loaded: Option<Vec<Versioned<TrackedGroup>>>,
        now: Timestamp,
        inv: &mut Invocation,
        edit: impl Fn(&GroupKey, &mut TrackedGroup),
    ) -> Result<(), HandlerError> {
        for _ in 0..SAVE_ATTEMPTS {
            let loaded = match loaded.take() {
                Some(groups) => groups,
                None => self.store.load(wants).await?,
            };
            let mut changed = Vec::new();
            let mut found = Vec::new();
            for ((key, _), mut versioned) in wants.iter().cloned().zip(loaded) {
                let before = versioned.value.clone();
                edit(&key, &mut versioned.value);
                let new = versioned.value.settle(&key, self.settings.window, now);
                if versioned.value != before {
                    found.push((key.clone(), versioned.value.clone(), new));
                    changed.push((key, versioned));
                }
            }
            if changed.is_empty() {
                inv.summary.repeats += 1;
                return Ok(());
            }
            if self.store.save(&changed).await? {
                for (key, tracked, new) in found {
                    self.learned(&key, &tracked, &new, now, inv);
                }
                return Ok(());
            }
        }
        Err(HandlerError::Contention(
            wants
                .first()
                .map(|(k, _)| format!("{k:?}"))
                .unwrap_or_default(),
        ))
    }

    /// Turns what was newly learned into metric samples and verdict log lines.
    pub(super) fn learned(
        &self,
        key: &GroupKey,
        tracked: &TrackedGroup,
        found: &[Found],
        now: Timestamp,
        inv: &mut Invocation,
    ) {
        let dimensions = Dimensions {
            source_region: key.source_region.clone(),
            destination_region: key.destination.region.clone(),
            destination_account: key.destination.account,
            repository: Some(key.repository.clone()),
        };
        let verdicts = tracked.verdicts(self.settings.window, now);
        for f in found {
            // A problem is dated when it is found, so the alarms see it however late that is;
            // the rest keeps the time it happened (the dashboards' lags and counts).
            let at = if f.finding.pages() { now } else { f.at };
            let sample = |name, value| Sample {
                name,
                dimensions: Some(dimensions.clone()),
                value,
                at,
            };
            inv.summary.count(&f.finding);
            match &f.finding {
                Finding::Completed {
                    latency_ms: Some(ms),
                } => inv
                    .samples
                    .push(sample(MetricName::ReplicationLatency, *ms as f64 / 1000.0)),
                Finding::StaleTag { points_to } => log_stale_tag(key, f, points_to),
                _ => {}
            }
            inv.samples.push(sample(f.finding.metric(), 1.0));
            if f.finding.is_final()
                && let Some((_, v)) = verdicts.iter().find(|(e, _)| e.tag == f.tag)
            {
                log_verdict(key, f, v);
            }
        }
    }

    /// Publishes (and forgets) the samples gathered so far, each dated inside what CloudWatch
    /// accepts: a timestamp outside it would fail the whole request.
    pub(super) async fn publish(&self, inv: &mut Invocation) {
        if inv.samples.is_empty() {
            return;
        }
        let mut samples = std::mem::take(&mut inv.samples);
        for s in &mut samples {
            s.at = accepted_timestamp(s.at, inv.now);
        }
        let data = aggregate(&series(&samples, self.settings.repository_dimension));
        if let Err(e) = self.metrics.publish(&data).await {
            // The verdicts are stored: failing the invocation would only make the retry find
            // nothing new to count. The same data goes to the log as EMF instead.
            tracing::error!(error = %e, "metrics not published; writing them as EMF log lines");
            if let Err(e) = self.fallback.publish(&data).await {
                tracing::error!(error = %e, "metrics lost: the EMF fallback failed too");
                inv.errors.push(e.into());
            }
        }
    }
}

/// A sweep request: an EventBridge schedule, or an EventBridge Scheduler payload.
fn is_sweep(item: &Value) -> bool {
    let field = |k: &str| item.get(k).and_then(Value::as_str);
    (field("source") == Some("aws.events") && field("detail-type") == Some("Scheduled Event"))
        || field("action") == Some("sweep")
}
