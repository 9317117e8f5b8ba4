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

use crate::domain::config::{Destination, ReplicationConfig};
use crate::domain::confirm::{ReplicationStatus, status_for};
use crate::domain::correlate::{CopySeen, GroupKey, Trigger, copy_candidates};
use crate::domain::deletion::{DeleteExpectation, DeleteKind, DeleteSeen, LiveDeleteVerdict};
use crate::domain::event::{Classified, Copy, Delete, ImageAction, Push, classify};
use crate::domain::ids::{AccountId, ImageDigest, ImageTag, RepositoryName};
use crate::domain::ledger::{Finding, Found, LiveVerdict, Owed, TrackedGroup, Watch};
use crate::domain::metrics::{
    Dimensions, MetricName, Sample, accepted_timestamp, aggregate, series,
};
use crate::domain::signals::{self, ReplicationEvent};
use crate::domain::time::{Timestamp, Window};
use crate::ports::events::{EventsError, EventsSink, MAX_EVENTS_PER_CALL, NoEvents};
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
    #[error("{0}")]
    Events(#[from] EventsError),
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
    /// Restores of archived images: each expects a copy like a push.
    pub restores: u64,
    /// Copies found `ARCHIVED` in their destination.
    pub archived: u64,
    /// Deletes owed to a destination by a rule with delete replication...
    pub deletes_expected: u64,
    /// ...applied there (on time or not)...
    pub deletes_replicated: u64,
    /// ...after the window...
    pub deletes_late: u64,
    /// ...or still not applied one window after the delete.
    pub deletes_missing: u64,
    /// DELETE events in a destination that applied a delete owed there.
    pub deletes_seen: u64,
    /// Events (or checks) whose registry could not be read: acknowledged, not retried.
    pub sources_unreadable: u64,
    /// Stored items the sweep skipped because they cannot be read.
    pub items_unreadable: u64,
    /// Due groups a sweep left for the next one: its deadline came first.
    pub groups_left: u64,
    /// Replication events `PutEvents` would not take, parked for the next sweep, and parked
    /// events a sweep could not publish either (left parked): the `EventsParked` metric.
    pub events_parked: u64,
    /// Parked events a sweep published.
    pub events_republished: u64,
    /// What a scheduled inventory reconciliation did ([`super::inventory`]), when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventorySummary>,
}

/// How many parked replication events a sweep publishes: ten `PutEvents` calls' worth.
const MAX_REPUBLISH: usize = 100;

/// How many images' failure codes an invocation asks ECR for before publishing (one
/// `DescribeImageReplicationStatus` each, one after another).
const MAX_FAILURE_CODE_LOOKUPS: usize = 20;

/// What one inventory invocation did: part of the Lambda's response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InventorySummary {
    /// `started`, `resumed`, `busy` (another invocation holds the pass) or `idle` (nothing to
    /// resume).
    pub step: String,
    /// Repositories compared by this invocation.
    pub repositories: u64,
    /// Source images compared by this invocation.
    pub images: u64,
    /// Findings logged by this invocation.
    pub findings: u64,
    /// Pushes the history had never seen, audited now.
    pub lost_pushes: u64,
    /// Whether this invocation finished the pass (and published the gauges).
    pub finished: bool,
}

/// The pushes (tag, push time) of `after` that a copy was committed to since `before`, and that
/// have their successful copy.
pub(super) fn newly_committed(
    before: &TrackedGroup,
    after: &TrackedGroup,
) -> Vec<(Option<ImageTag>, Timestamp)> {
    let resolution = after.resolve();
    let mut out: Vec<(Option<ImageTag>, Timestamp)> = Vec::new();
    for (copy, tag) in &after.claims {
        if before.claims.contains_key(copy) {
            continue;
        }
        let expectations = after.group.expectations();
        // Claims are pushes' (a restore's copy is matched by its time, never claimed).
        if let Some(i) = expectations
            .iter()
            .position(|e| e.tag == *tag && e.trigger == Trigger::Push)
            && resolution.evidence[i].success.is_some()
            && !out.iter().any(|(t, _)| t == tag)
        {
            out.push((tag.clone(), expectations[i].pushed_at));
        }
    }
    out
}

/// How the auditor learned of a push: its event, or the inventory check (its event lost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Heard {
    FromEvent,
    FromInventory,
}

/// The trigger a verdict line and an event name: `inventory` for a push the inventory check
/// found, whose event was lost.
fn trigger_name(trigger: Trigger, watch: Option<&Watch>) -> &'static str {
    match trigger {
        Trigger::Push if watch.is_some_and(|w| w.found_by_inventory) => "inventory",
        _ => trigger.as_str(),
    }
}

/// The verdict line of one (push, destination): what the saved queries and the runbook read.
fn log_verdict(key: &GroupKey, f: &Found, trigger: &str, v: &LiveVerdict) {
    tracing::info!(
        verdict = v.status.as_str(),
        trigger,
        source_account = %key.source_account,
        source_region = %key.source_region,
        repository = %key.repository,
        image_digest = %key.digest,
        image_tag = f.tag.as_ref().map(|t| t.as_str()),
        destination_account = %key.destination.account,
        destination_region = %key.destination.region,
        pushed_at = %f.since,
        replicated_at = v.replicated_at.map(|t| t.to_string()),
        latency_seconds = v.latency_ms.map(|ms| ms as f64 / 1000.0),
        failure_code = v.failure_code.as_deref(),
        confirmed_by_api = v.confirmed,
        "replication verdict"
    );
}

/// The verdict line of one (delete, destination) under delete replication.
fn log_delete_verdict(key: &GroupKey, e: &DeleteExpectation, v: &LiveDeleteVerdict) {
    tracing::info!(
        verdict = v.outcome.status.as_str(),
        delete_kind = e.kind.as_str(),
        source_account = %key.source_account,
        source_region = %key.source_region,
        repository = %key.repository,
        image_digest = %key.digest,
        image_tag = e.tag.as_ref().map(|t| t.as_str()),
        destination_account = %key.destination.account,
        destination_region = %key.destination.region,
        deleted_at = %e.deleted_at,
        gone_at = v.outcome.gone_at.map(|t| t.to_string()),
        latency_seconds = v.outcome.latency_ms.map(|ms| ms as f64 / 1000.0),
        confirmed_by_api = v.confirmed,
        "delete verdict"
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

/// What [`Auditor::touched`] read for one image action.
struct Touched {
    /// The source's replication rules.
    own: Arc<ReplicationConfig>,
    /// The action's own groups (with its tag's record), and what the store holds for them.
    wants: Vec<Want>,
    loaded: Vec<Versioned<TrackedGroup>>,
    /// The groups of another image that await this action as their replica's (for a DELETE,
    /// also those whose rules replicate deletes here: see [`Auditor::delete`]).
    owed: Vec<Want>,
    owed_loaded: Vec<Versioned<TrackedGroup>>,
}

/// The handler, generic over its ports: DynamoDB, ECR and CloudWatch in the Lambda; the
/// in-memory store and fakes in tests.
pub struct Auditor<S, R, M, F, E = NoEvents> {
    pub(super) store: S,
    pub(super) registry: R,
    metrics: M,
    /// Where replication events for other teams go ([`NoEvents`] when no bus is set).
    events: E,
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
            restores,
            archived,
            deletes_expected,
            deletes_replicated,
            deletes_late,
            deletes_missing,
            deletes_seen,
            sources_unreadable,
            items_unreadable,
            groups_left,
            events_parked,
            events_republished,
            // Only an inventory invocation has one; a sweep's groups never do.
            inventory: _,
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
        self.restores += restores;
        self.archived += archived;
        self.deletes_expected += deletes_expected;
        self.deletes_replicated += deletes_replicated;
        self.deletes_late += deletes_late;
        self.deletes_missing += deletes_missing;
        self.deletes_seen += deletes_seen;
        self.sources_unreadable += sources_unreadable;
        self.items_unreadable += items_unreadable;
        self.groups_left += groups_left;
        self.events_parked += events_parked;
        self.events_republished += events_republished;
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
            Finding::Archived => &mut self.archived,
            Finding::DeleteExpected => &mut self.deletes_expected,
            Finding::DeleteReplicated { .. } => &mut self.deletes_replicated,
            Finding::DeleteLate => &mut self.deletes_late,
            Finding::DeleteMissing => &mut self.deletes_missing,
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
    /// Replication events for other teams, published with the metrics.
    pub(super) events: Vec<ReplicationEvent>,
    /// (group, trigger, tag, push or restore time) of pushes and restores whose copy completed
    /// in this invocation: to see whether they have now reached every destination.
    pub(super) completed: Vec<(GroupKey, Trigger, Option<ImageTag>, Timestamp)>,
    /// (group, verdict-id) of `ECR Replication Failed` events without ECR's failure code: a
    /// FAILED event carries none; the status API is asked before they are published.
    pub(super) failure_codes_wanted: Vec<(GroupKey, String)>,
    /// What `DescribeImageReplicationStatus` answered for those, by image: asked once per image
    /// an invocation however often a sweep publishes, and at most [`MAX_FAILURE_CODE_LOOKUPS`].
    failure_statuses: HashMap<(RegistryAt, RepositoryName, ImageDigest), Vec<ReplicationStatus>>,
    pub(super) errors: Vec<HandlerError>,
}

impl Invocation {
    pub(super) fn new(now: Timestamp) -> Self {
        Invocation {
            now,
            summary: Summary::default(),
            samples: Vec::new(),
            events: Vec::new(),
            completed: Vec::new(),
            failure_codes_wanted: Vec::new(),
            failure_statuses: HashMap::new(),
            errors: Vec::new(),
        }
    }

    /// Takes in what another part of the invocation gathered (a sweep's group): its counts,
    /// samples, events, completions and errors.
    pub(super) fn absorb(&mut self, mut other: Invocation) {
        self.summary.absorb(&other.summary);
        self.samples.append(&mut other.samples);
        self.events.append(&mut other.events);
        self.completed.append(&mut other.completed);
        self.failure_codes_wanted
            .append(&mut other.failure_codes_wanted);
        self.errors.append(&mut other.errors);
    }

    /// A sample of a metric without dimensions, now.
    pub(super) fn count(&mut self, name: MetricName) {
        self.count_many(name, 1);
    }

    /// `n` of what `name` counts, in one sample without dimensions (none when `n` is 0).
    pub(super) fn count_many(&mut self, name: MetricName, n: usize) {
        if n == 0 {
            return;
        }
        self.samples.push(Sample {
            name,
            dimensions: None,
            value: n as f64,
            at: self.now,
        });
    }
}

impl<S, R, M, F> Auditor<S, R, M, F> {
    /// The handler with events off; see [`Auditor::with_events`].
    pub fn new(store: S, registry: R, metrics: M, fallback: F, settings: AuditSettings) -> Self {
        Auditor {
            store,
            registry,
            metrics,
            events: NoEvents,
            fallback,
            settings,
            configs: Mutex::new(HashMap::new()),
            unreadable_logged: Mutex::new(HashSet::new()),
        }
    }

    /// The same handler, publishing replication events to `events`.
    pub fn with_events<E>(self, events: E) -> Auditor<S, R, M, F, E> {
        Auditor {
            store: self.store,
            registry: self.registry,
            metrics: self.metrics,
            events,
            fallback: self.fallback,
            settings: self.settings,
            configs: self.configs,
            unreadable_logged: self.unreadable_logged,
        }
    }
}

impl<
    S: StateStore + Sync,
    R: RegistryView + Sync,
    M: MetricsSink + Sync,
    F: MetricsSink + Sync,
    E: EventsSink + Sync,
> Auditor<S, R, M, F, E>
{
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
        self.announce_completed(now, &mut inv).await;
        self.publish(&mut inv).await;
        match inv.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(inv.summary),
        }
    }

    /// Announces the pushes that this invocation's completions may have made complete. Looking
    /// saves the first destination's group, which may commit a copy there and complete another
    /// push: those are looked at too, until none is left.
    pub(super) async fn announce_completed(&self, now: Timestamp, inv: &mut Invocation) {
        // In rounds: what one round's looks complete is looked at in the next.
        while !inv.completed.is_empty() {
            let mut seen = HashSet::new();
            for (key, trigger, tag, pushed_at) in std::mem::take(&mut inv.completed) {
                // One look per push (or restore) a round, however many of its destinations
                // completed.
                let image = GroupKey {
                    destination: Destination {
                        account: key.source_account,
                        region: key.source_region.clone(),
                    },
                    ..key.clone()
                };
                let restored_at = (trigger == Trigger::Restore).then_some(pushed_at);
                if !seen.insert((image, tag.clone(), restored_at)) {
                    continue;
                }
                if let Err(e) = self
                    .announce_if_everywhere(&key, trigger, &tag, pushed_at, now, inv)
                    .await
                {
                    tracing::error!(error = %e, "could not tell whether a push reached every destination; the invocation will fail so it is retried");
                    inv.errors.push(e);
                }
            }
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
                self.push(&push, Trigger::Push, Heard::FromEvent, now, inv)
                    .await
            }
            Classified::Restore(restore) => {
                inv.summary.restores += 1;
                self.push(&restore, Trigger::Restore, Heard::FromEvent, now, inv)
                    .await
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

    /// Whether the rules of `key`'s source, as last read, replicate the deletes of its
    /// repository to its destination.
    fn replicates_deletes_to(&self, key: &GroupKey) -> bool {
        self.cached_config(&RegistryAt::source_of(key))
            .is_some_and(|(_, config)| {
                config.replicates_deletes_to(&key.repository, &key.destination)
            })
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

    /// A push, or a restore (`trigger`), which ECR replicates like a push: one expectation per
    /// destination the rules name for the repository, unless it is the copy of an image pushed
    /// (or restored) elsewhere landing here.
    pub(super) async fn push(
        &self,
        push: &Push,
        trigger: Trigger,
        heard: Heard,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let Some(Touched {
            wants,
            loaded,
            owed,
            owed_loaded,
            ..
        }) = self
            .touched(push, now, inv, |_, g| {
                g.group.awaits_copy(&push.tag, push.at)
            })
            .await?
        else {
            return Ok(());
        };
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
        if wants.is_empty() {
            return Ok(());
        }
        self.change_loaded(&wants, Some(loaded), now, inv, |_, tracked| {
            let new = match trigger {
                Trigger::Push => tracked.group.add_push(push.tag.clone(), push.at),
                Trigger::Restore => tracked.group.add_restore(push.at),
            };
            if new && heard == Heard::FromInventory && trigger == Trigger::Push {
                tracked
                    .watches
                    .entry(push.tag.clone())
                    .or_default()
                    .found_by_inventory = true;
            }
        })
        .await
    }

    /// The groups an image action touches, in one read: its own (one per destination its
    /// source's rules name for the repository, with its tag's record), and those of an image
    /// elsewhere whose replica it may be, kept where `owes` says that group (of that key)
    /// awaits it. `None`: it touches none, or its source's registry cannot be read (counted,
    /// see [`Self::readable_config`]).
    async fn touched(
        &self,
        image: &ImageAction,
        now: Timestamp,
        inv: &mut Invocation,
        owes: impl Fn(&GroupKey, &TrackedGroup) -> bool,
    ) -> Result<Option<Touched>, HandlerError> {
        let Some(own) = self
            .readable_config(RegistryAt::of(image), now, inv)
            .await?
        else {
            return Ok(None);
        };
        let keys = self.keys_of(image, &own);
        let known: Vec<Arc<ReplicationConfig>> = self.cached_configs();
        let candidates = copy_candidates(image, Some(&own), known.iter().map(Arc::as_ref));
        if keys.is_empty() && candidates.is_empty() {
            return Ok(None);
        }
        let mut wants: Vec<Want> = keys
            .iter()
            .chain(&candidates)
            .map(|k| (k.clone(), vec![image.tag.clone()]))
            .collect();
        let mut loaded = self.store.load(&wants).await?;
        let theirs = loaded.split_off(keys.len());
        let theirs_wanted = wants.split_off(keys.len());
        let (owed, owed_loaded) = theirs_wanted
            .into_iter()
            .zip(theirs)
            .filter(|((key, _), v)| owes(key, &v.value))
            .unzip();
        Ok(Some(Touched {
            own,
            wants,
            loaded,
            owed,
            owed_loaded,
        }))
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

    /// A delete. In a registry where a delete of this image is owed (a rule with delete
    /// replication named it as a destination, and the delete is not yet seen applied there, or
    /// seen applied only later than this), it is that delete applied: where this registry is a
    /// source too, it withdraws its pushes of the image still without a copy, and owes no
    /// delete onwards. Where a rule with delete replication names this registry for the image's repository but
    /// no delete is owed yet, it is kept all the same: the source's delete, from another Region
    /// and another forwarder, may be delivered after it, and is applied by it at once then, as
    /// in the other order. Otherwise it is a delete at the source, recorded in the group of
    /// every destination the rules name for the repository: a push of that image (or tag) still
    /// without its copy is withdrawn rather than missing, and the destinations of the rules
    /// with delete replication owe the delete (of its tag, of the image's last tag, or of the
    /// image, told apart by the tags the group knows). Recorded even where no push is known
    /// yet: its event may come later. One read for both questions, as for a push.
    async fn delete(
        &self,
        delete: &Delete,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let awaits = |g: &TrackedGroup| g.group.deletes().awaits(&delete.tag, delete.at);
        let Some(Touched {
            own,
            wants,
            loaded,
            owed: kept_here,
            owed_loaded,
        }) = self
            .touched(delete, now, inv, |key, g| {
                awaits(g) || self.replicates_deletes_to(key)
            })
            .await?
        else {
            return Ok(());
        };
        // Whether it applies a delete owed here: then a replica's DELETE (see below).
        let replica = !kept_here.is_empty() && {
            let awaiting: Vec<bool> = owed_loaded.iter().map(|g| awaits(&g.value)).collect();
            let applied = awaiting.contains(&true);
            // Applying a delete owed, it is written where it was owed, and nowhere else, as
            // before: kept elsewhere only while nothing owes it yet.
            let (kept_here, owed_loaded): (Vec<_>, Vec<_>) = kept_here
                .into_iter()
                .zip(owed_loaded)
                .zip(awaiting)
                .filter(|(_, owes)| *owes || !applied)
                .map(|(group, _)| group)
                .unzip();
            let seen = DeleteSeen {
                id: delete.id.clone(),
                at: delete.at,
                tag: delete.tag.clone(),
            };
            self.change_loaded(&kept_here, Some(owed_loaded), now, inv, |_, tracked| {
                tracked.group.add_delete_seen(seen.clone());
            })
            .await?;
            if applied {
                inv.summary.deletes_seen += 1;
            }
            applied
        };
        // A replica's DELETE still withdraws this registry's own pushes of the image, where it
        // is a source too (chained or two-way rules): the image is gone here. It owes no delete
        // onwards: ECR replicates no replica onwards.
        if wants.is_empty() {
            return Ok(());
        }
        let owed = if replica {
            Vec::new()
        } else {
            own.delete_destinations(&delete.repository).destinations
        };
        self.change_loaded(&wants, Some(loaded), now, inv, |key, tracked| {
            tracked.group.add_deletion(delete.tag.clone(), delete.at);
            if owed.contains(&key.destination) {
                // A group is read in part (the deleted tag's record, and those still waiting
                // for their copy): when pushes were left unread, other tags may be left, and a
                // tag's delete is checked as that tag's alone. Taken for the image's last tag,
                // the check would wait for the image to go, which it never does while other
                // tags hold it: a false page.
                let left = delete.tag.as_ref().is_some_and(|t| {
                    tracked.unloaded > 0 || tracked.group.other_tags_left(t, delete.at)
                });
                let kind = DeleteKind::of(delete.tag.as_ref(), left);
                tracked
                    .group
                    .expect_delete(delete.tag.clone(), delete.at, kind);
            }
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
        let source = RegistryAt::source_of(key);
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
        let pushes: BTreeSet<(Trigger, Option<ImageTag>, Timestamp)> = self
            .store
            .load(&siblings)
            .await?
            .iter()
            .flat_map(|v| v.value.group.expectations())
            .map(|e| (e.trigger, e.tag.clone(), e.pushed_at))
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
        let tags: BTreeSet<Option<ImageTag>> = pushes
            .iter()
            .filter(|(trigger, _, _)| *trigger == Trigger::Push)
            .map(|(_, t, _)| t.clone())
            .collect();
        let want = [(key.clone(), tags.into_iter().collect())];
        self.change(&want, now, inv, |_, tracked| {
            for (trigger, tag, at) in &pushes {
                match trigger {
                    Trigger::Push => tracked.group.add_push(tag.clone(), *at),
                    Trigger::Restore => tracked.group.add_restore(*at),
                };
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
                    let committed = newly_committed(&before, &versioned.value);
                    found.push((key.clone(), versioned.value.clone(), new, committed));
                    changed.push((key, versioned));
                }
            }
            if changed.is_empty() {
                inv.summary.repeats += 1;
                return Ok(());
            }
            if self.store.save(&changed).await? {
                for (key, tracked, new, committed) in found {
                    self.learned(&key, &tracked, &new, now, inv);
                    self.look_again(&key, committed, inv);
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

    /// Pushes whose copy here was just committed (its match no longer provisional): whether they
    /// now reached every destination is looked at, as after a completed copy.
    pub(super) fn look_again(
        &self,
        key: &GroupKey,
        committed: Vec<(Option<ImageTag>, Timestamp)>,
        inv: &mut Invocation,
    ) {
        if self.events.enabled() {
            inv.completed.extend(
                committed
                    .into_iter()
                    .map(|(tag, at)| (key.clone(), Trigger::Push, tag, at)),
            );
        }
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
        let delete_verdicts = tracked.delete_verdicts(self.settings.window, now);
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
                Finding::DeleteReplicated {
                    latency_ms: Some(ms),
                } => inv.samples.push(sample(
                    MetricName::DeleteReplicationLatency,
                    *ms as f64 / 1000.0,
                )),
                Finding::StaleTag { points_to } => log_stale_tag(key, f, points_to),
                _ => {}
            }
            inv.samples.push(sample(f.finding.metric(), 1.0));
            let named = match f.owed {
                Owed::Copy(trigger) => trigger_name(trigger, tracked.watches.get(&f.tag)),
                Owed::Delete => "delete",
            };
            let verdict = match f.owed {
                Owed::Copy(trigger) => verdicts
                    .iter()
                    .find(|(e, _)| e.is(trigger, &f.tag, f.since))
                    .map(|(_, v)| v),
                Owed::Delete => None,
            };
            if self.events.enabled() {
                if let Some(mut event) = signals::of_finding(key, f, verdict, self.settings.window)
                {
                    event.detail.trigger = named;
                    if event.detail_type == signals::FAILED && event.detail.failure_code.is_none() {
                        inv.failure_codes_wanted
                            .push((key.clone(), event.detail.verdict_id.clone()));
                    }
                    inv.events.push(event);
                }
                if let (Finding::Completed { .. }, Owed::Copy(trigger)) = (&f.finding, f.owed) {
                    inv.completed
                        .push((key.clone(), trigger, f.tag.clone(), f.since));
                }
            }
            if !f.finding.is_final() {
                continue;
            }
            match f.owed {
                Owed::Copy(_) => {
                    if let Some(v) = verdict {
                        log_verdict(key, f, named, v);
                    }
                }
                Owed::Delete => {
                    if let Some((e, v)) = delete_verdicts
                        .iter()
                        .find(|(e, _)| e.tag == f.tag && e.deleted_at == f.since)
                    {
                        log_delete_verdict(key, e, v);
                    }
                }
            }
        }
    }

    /// Publishes (and forgets) the samples gathered so far, each dated inside what CloudWatch
    /// accepts: a timestamp outside it would fail the whole request.
    pub(super) async fn publish(&self, inv: &mut Invocation) {
        self.publish_events(inv).await;
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

impl<
    S: StateStore + Sync,
    R: RegistryView + Sync,
    M: MetricsSink + Sync,
    F: MetricsSink + Sync,
    E: EventsSink + Sync,
> Auditor<S, R, M, F, E>
{
    /// The invocation's replication events, in one `PutEvents` (per ten). The counted state
    /// that made them is stored, so a retried invocation would find nothing new to publish:
    /// events `PutEvents` will not take (after the SDK's retries) are parked in the state store,
    /// and the next sweep publishes them ([`Auditor::republish_parked`]). Only when parking
    /// fails too does the invocation fail, with each event logged whole (`replication event
    /// not published`) so that it can be sent by hand.
    async fn publish_events(&self, inv: &mut Invocation) {
        if inv.events.is_empty() {
            return;
        }
        // Taken, like the samples: a sweep publishes as it goes.
        let mut events = std::mem::take(&mut inv.events);
        let wanted = std::mem::take(&mut inv.failure_codes_wanted);
        self.add_failure_codes(&mut events, wanted, &mut inv.failure_statuses)
            .await;
        let (published, failure) = self.publish_by_call(&events).await;
        let Some(e) = failure else {
            return;
        };
        // What PutEvents took stays taken; only the rest is parked.
        let events = &events[published..];
        match self.store.park(events, inv.now).await {
            Ok(()) => {
                tracing::warn!(error = %e, parked = events.len(), "replication events not published; parked for the next sweep");
                inv.summary.events_parked += events.len() as u64;
                inv.count_many(MetricName::EventsParked, events.len());
            }
            Err(park) => {
                tracing::error!(error = %park, "replication events could not be parked either");
                for event in events {
                    tracing::error!(
                        detail_type = event.detail_type,
                        detail = %serde_json::to_string(event).unwrap_or_default(),
                        "replication event not published"
                    );
                }
                inv.errors.push(e.into());
            }
        }
    }

    /// Gives `ECR Replication Failed` events ECR's failure code for their destination, from
    /// `DescribeImageReplicationStatus` (asked once per image, for at most
    /// [`MAX_FAILURE_CODE_LOOKUPS`] images an invocation): ECR's FAILED event has none. A status
    /// API that does not answer, or names no code, leaves the event without one, and so do the
    /// images past the bound (an outage that fails hundreds of copies must not spend the
    /// invocation asking); it is published all the same.
    async fn add_failure_codes(
        &self,
        events: &mut [ReplicationEvent],
        wanted: Vec<(GroupKey, String)>,
        statuses: &mut HashMap<(RegistryAt, RepositoryName, ImageDigest), Vec<ReplicationStatus>>,
    ) {
        for (key, verdict_id) in wanted {
            let image = (
                RegistryAt::source_of(&key),
                key.repository.clone(),
                key.digest.clone(),
            );
            if !statuses.contains_key(&image) {
                if statuses.len() == MAX_FAILURE_CODE_LOOKUPS {
                    continue;
                }
                let answer = self
                    .registry
                    .replication_status(&image.0, &image.1, &image.2)
                    .await;
                if let Err(e) = &answer {
                    tracing::warn!(error = %e, "no failure code for a failed copy: the status API did not answer");
                }
                statuses.insert(image.clone(), answer.unwrap_or_default());
            }
            let code = status_for(&statuses[&image], &key.destination)
                .and_then(|s| s.failure_code.clone());
            if let Some(e) = events
                .iter_mut()
                .find(|e| e.detail.verdict_id == verdict_id)
            {
                e.detail.failure_code = code;
            }
        }
    }

    /// Publishes what earlier invocations parked ([`Auditor::publish_events`]): at most
    /// [`MAX_REPUBLISH`] a sweep, oldest first, each forgotten once `PutEvents` took it. A
    /// failure leaves them for the next sweep; a publish whose forgetting fails is repeated by
    /// the next sweep, which consumers de-duplicate by `verdict-id` like any retry.
    pub(super) async fn republish_parked(&self, inv: &mut Invocation) {
        if !self.events.enabled() {
            return;
        }
        let parked = match self.store.parked(MAX_REPUBLISH).await {
            Ok(parked) if !parked.is_empty() => parked,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the parked replication events; the next sweep tries again");
                return;
            }
        };
        let (published, failure) = self.publish_by_call(&parked).await;
        if let Some(e) = failure {
            let left = parked.len() - published;
            tracing::warn!(error = %e, left, "parked replication events still not published; the next sweep tries again");
            // Counted again at each sweep that leaves them: publishing is still broken.
            inv.summary.events_parked += left as u64;
            inv.count_many(MetricName::EventsParked, left);
        }
        if published == 0 {
            return;
        }
        inv.summary.events_republished += published as u64;
        let ids: Vec<String> = parked[..published]
            .iter()
            .map(|e| e.detail.verdict_id.clone())
            .collect();
        if let Err(e) = self.store.unpark(&ids).await {
            tracing::warn!(error = %e, "published parked replication events stay parked; the next sweep sends them again");
        }
    }

    /// Publishes `events` one `PutEvents` call's worth at a time, in order, until a call fails:
    /// how many were published, and the failure. So one entry `PutEvents` keeps refusing
    /// holds back only itself and what follows it, and what it took is not sent again.
    async fn publish_by_call(&self, events: &[ReplicationEvent]) -> (usize, Option<EventsError>) {
        let mut published = 0;
        for call in events.chunks(MAX_EVENTS_PER_CALL) {
            if let Err(e) = self.events.publish(call).await {
                return (published, Some(e));
            }
            published += call.len();
        }
        (published, None)
    }

    /// After `key`'s push of `tag` completed there: if the push now has its copy in every
    /// destination the rules name, `ECR Image Replicated To All Destinations`, once. Every
    /// invocation that completes a destination looks, after its own save, so at least one sees
    /// them all; the one that marks the push announced in the first destination's group (a
    /// conditional save, like every count) publishes it.
    pub(super) async fn announce_if_everywhere(
        &self,
        key: &GroupKey,
        trigger: Trigger,
        tag: &Option<ImageTag>,
        pushed_at: Timestamp,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let source = RegistryAt::source_of(key);
        let config = self.config_of(source, now).await?;
        let mut keys: Vec<GroupKey> = config
            .expected_destinations(&key.repository)
            .destinations
            .into_iter()
            .map(|destination| GroupKey {
                destination,
                ..key.clone()
            })
            .collect();
        if !keys.contains(key) {
            // The rules no longer name this destination: not for this function to say.
            return Ok(());
        }
        keys.sort();
        let window = self.settings.window;
        let mut verdicts = Vec::new();
        let wants: Vec<Want> = keys
            .iter()
            .map(|k| (k.clone(), vec![tag.clone()]))
            .collect();
        for (k, v) in keys.iter().zip(self.store.load(&wants).await?) {
            let Some(i) = v
                .value
                .group
                .expectations()
                .iter()
                .position(|e| e.is(trigger, tag, pushed_at))
            else {
                return Ok(());
            };
            // A copy matched to it only provisionally (a push read later may take it) decides
            // nothing here unless it is at or before the success it has: a copy of a tag whose
            // push is not read yet, arriving after this push's own copy, changes neither when
            // it arrived nor whether a failure came first. One that may decide waits: the
            // commit will count it, and look again.
            let resolution = v.value.resolve();
            let success = resolution.evidence[i].success.map(|(at, _)| at);
            let copies = v.value.group.copies();
            let undecided = resolution
                .provisional
                .iter()
                .any(|&(c, e)| e == i && success.is_none_or(|s| copies[c].at <= s));
            if undecided {
                return Ok(());
            }
            let (_, verdict) = v.value.verdicts(window, now).swap_remove(i);
            verdicts.push((k.clone(), verdict));
        }
        let tag_str = tag.as_ref().map(|t| t.as_str());
        let Some(event) =
            signals::all_destinations(key, trigger, tag_str, pushed_at, &verdicts, window)
        else {
            return Ok(());
        };
        let owner = &wants[0];
        let announced = AtomicBool::new(false);
        let found_by_inventory = AtomicBool::new(false);
        let saved = self
            .change(std::slice::from_ref(owner), now, inv, |_, tracked| {
                let watch = match trigger {
                    Trigger::Push => tracked.watches.entry(tag.clone()).or_default(),
                    Trigger::Restore => tracked.restore_watches.entry(pushed_at).or_default(),
                };
                found_by_inventory.store(watch.found_by_inventory, Ordering::Relaxed);
                announced.store(!watch.counted.announced, Ordering::Relaxed);
                watch.counted.announced = true;
            })
            .await;
        saved?;
        if announced.load(Ordering::Relaxed) {
            let mut event = event;
            if found_by_inventory.load(Ordering::Relaxed) {
                event.detail.trigger = "inventory";
            }
            inv.events.push(event);
        }
        Ok(())
    }
}

/// A sweep request: an EventBridge schedule, or an EventBridge Scheduler payload.
fn is_sweep(item: &Value) -> bool {
    let field = |k: &str| item.get(k).and_then(Value::as_str);
    (field("source") == Some("aws.events") && field("detail-type") == Some("Scheduled Event"))
        || field("action") == Some("sweep")
}
