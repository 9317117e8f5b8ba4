//! The Lambda's handler: one entry point for every invocation, routed by what it carries.
//!
//! - a push: the source Region's rules (DescribeRegistry, cached) give its destinations; one
//!   expectation per destination is recorded, in one all-or-nothing save;
//! - a copy (SUCCESS or FAILED): recorded against its group, even before its push;
//! - a sweep (an EventBridge schedule, or a Scheduler payload `{"action": "sweep"}`): every open
//!   expectation past its window is confirmed with ECR's own APIs before it is called missing;
//! - anything else well formed is ignored; malformed input is logged, counted and acknowledged,
//!   so EventBridge does not retry a poison event forever.
//!
//! Whatever is newly learned is published as metrics once per invocation and logged as one JSON
//! line per final verdict. Transient failures of the store or of ECR fail the invocation so that
//! EventBridge retries it; the retry counts nothing twice (see [`crate::domain::ledger`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use serde_json::Value;

use super::registry::{RegistryAt, RegistryError, RegistryView, ReplicationState};
use super::state::{StateStore, StoreError, Versioned};
use crate::adapters::metrics::{MetricsError, MetricsSink};
use crate::domain::config::{Destination, ReplicationConfig};
use crate::domain::correlate::{CopySeen, GroupKey, Status};
use crate::domain::event::{Classified, Copy, Push, classify};
use crate::domain::ids::Region;
use crate::domain::ledger::{Confirmation, Finding, Found, TrackedGroup, live_verdict};
use crate::domain::metrics::{Dimensions, MetricName, Sample, aggregate, series};
use crate::domain::time::{Timestamp, Window};

/// How often a save is retried after another invocation changed the same group first.
const SAVE_ATTEMPTS: usize = 5;
/// Groups one sweep confirms at most: each costs up to three ECR calls, and the rest waits for
/// the next minute rather than running the function into its timeout.
pub const MAX_GROUPS_PER_SWEEP: usize = 200;

/// What the handler needs to know, already validated (see `crate::settings`).
#[derive(Clone, Debug)]
pub struct AuditSettings {
    pub window: Window,
    /// Add the `Repository` dimension to the dimensioned metrics.
    pub repository_dimension: bool,
    /// How long a Region's replication configuration is trusted before it is read again.
    pub config_cache_ms: i64,
}

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
}

/// The handler, generic over its ports: DynamoDB, ECR and CloudWatch in the Lambda; the
/// in-memory store and fakes in tests.
pub struct Auditor<S, R, M, F> {
    store: S,
    registry: R,
    metrics: M,
    /// Where metrics go when `metrics` fails: the verdicts are already stored, so the data is
    /// written as Embedded Metric Format log lines instead of being lost (CloudWatch extracts
    /// the same metrics from the function's log).
    fallback: F,
    settings: AuditSettings,
    /// Replication configurations by registry, with the time they were read.
    configs: Mutex<HashMap<RegistryAt, (Timestamp, Arc<ReplicationConfig>)>>,
}

/// What one invocation gathers before publishing.
#[derive(Default)]
struct Invocation {
    summary: Summary,
    samples: Vec<Sample>,
    errors: Vec<HandlerError>,
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
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Handles one invocation's payload: an event, a list of events, or a sweep request.
    /// `now` is the invocation's clock reading.
    pub async fn handle(&self, payload: &Value, now: Timestamp) -> Result<Summary, HandlerError> {
        let mut inv = Invocation::default();
        match payload {
            Value::Array(items) => {
                for item in items {
                    self.one(item, now, &mut inv).await;
                }
            }
            item => self.one(item, now, &mut inv).await,
        }
        self.publish(&mut inv).await;
        match inv.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(inv.summary),
        }
    }

    async fn one(&self, item: &Value, now: Timestamp, inv: &mut Invocation) {
        if is_sweep(item) {
            inv.summary.sweeps += 1;
            if let Err(e) = self.sweep(now, inv).await {
                inv.errors.push(e);
            }
            return;
        }
        let result = match classify(item) {
            Classified::Push(push) => {
                inv.summary.pushes += 1;
                self.push(&push, now, inv).await
            }
            Classified::Copy(copy) => {
                inv.summary.copies += 1;
                self.copy(&copy, now, inv).await
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
                        inv.samples.push(Sample {
                            name: MetricName::EventsRejected,
                            dimensions: None,
                            value: 1.0,
                            at: now,
                        });
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

    async fn config_of(
        &self,
        registry: RegistryAt,
        now: Timestamp,
    ) -> Result<Arc<ReplicationConfig>, RegistryError> {
        let cached = self
            .configs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&registry)
            .cloned();
        if let Some((read_at, config)) = cached
            && now.since(read_at) < self.settings.config_cache_ms
        {
            return Ok(config);
        }
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
        let config = self.config_of(source, now).await?;
        let expected = config.expected_destinations(&push.repository);
        if expected.dropped_self {
            tracing::warn!(repository = %push.repository, region = %push.region, "a rule names the push's own Region; ignored");
        }
        if expected.destinations.is_empty() {
            tracing::debug!(repository = %push.repository, "no replication rule covers this repository");
            return Ok(());
        }
        let keys: Vec<GroupKey> = expected
            .destinations
            .into_iter()
            .map(|d| GroupKey::of_push(push, d))
            .collect();
        self.change(&keys, now, inv, |_, tracked| {
            tracked.group.add_push(push.tag.clone(), push.at);
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
        self.change(std::slice::from_ref(&key), now, inv, |_, tracked| {
            tracked.group.add_copy(seen.clone());
        })
        .await
    }

    /// Load, apply `edit` to each group, settle, save if anything changed; again on a conflict.
    async fn change(
        &self,
        keys: &[GroupKey],
        now: Timestamp,
        inv: &mut Invocation,
        edit: impl Fn(&GroupKey, &mut TrackedGroup),
    ) -> Result<(), HandlerError> {
        for _ in 0..SAVE_ATTEMPTS {
            let loaded = self.store.load(keys).await?;
            let mut changed = Vec::new();
            let mut found = Vec::new();
            for (key, mut versioned) in keys.iter().cloned().zip(loaded) {
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
            keys.first().map(|k| format!("{k:?}")).unwrap_or_default(),
        ))
    }

    /// Turns what was newly learned into metric samples and verdict log lines.
    fn learned(
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
            let sample = |name, value| Sample {
                name,
                dimensions: Some(dimensions.clone()),
                value,
                at: f.at,
            };
            let s = &mut inv.summary;
            let (name, is_final) = match &f.finding {
                Finding::Expected => {
                    s.expected += 1;
                    (MetricName::ReplicationsExpected, false)
                }
                Finding::Completed { latency_ms } => {
                    s.completed += 1;
                    if let Some(ms) = latency_ms {
                        inv.samples
                            .push(sample(MetricName::ReplicationLatency, *ms as f64 / 1000.0));
                    }
                    (MetricName::ReplicationsCompleted, true)
                }
                Finding::Late => {
                    s.late += 1;
                    (MetricName::ReplicationsLate, false)
                }
                Finding::Untagged => {
                    s.untagged += 1;
                    (MetricName::UntaggedCopies, false)
                }
                Finding::Failed { .. } => {
                    s.failed += 1;
                    (MetricName::ReplicationsFailed, true)
                }
                Finding::Missing => {
                    s.missing += 1;
                    (MetricName::ReplicationsMissing, true)
                }
                Finding::StaleTag { points_to } => {
                    s.stale_tags += 1;
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
                    (MetricName::StaleTags, false)
                }
            };
            inv.samples.push(sample(name, 1.0));
            if is_final && let Some((_, v)) = verdicts.iter().find(|(e, _)| e.tag == f.tag) {
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
        }
    }

    async fn publish(&self, inv: &mut Invocation) {
        if inv.samples.is_empty() {
            return;
        }
        let data = aggregate(&series(&inv.samples, self.settings.repository_dimension));
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

    async fn sweep(&self, now: Timestamp, inv: &mut Invocation) -> Result<(), HandlerError> {
        let open = self.store.open().await?;
        let mut causes_logged: HashSet<String> = HashSet::new();
        let mut unconfirmed = 0;
        let mut pending: BTreeMap<(Region, Destination), u64> = BTreeMap::new();
        let mut checked = 0;
        for (key, mut versioned) in open {
            let due = versioned.value.due_at().is_some_and(|t| t <= now);
            if due && checked < MAX_GROUPS_PER_SWEEP {
                checked += 1;
                inv.summary.groups_checked += 1;
                versioned = self
                    .check_group(
                        &key,
                        versioned,
                        now,
                        inv,
                        &mut causes_logged,
                        &mut unconfirmed,
                    )
                    .await?;
            }
            for (_, v) in versioned.value.verdicts(self.settings.window, now) {
                if matches!(v.status, Status::Pending | Status::Missing) {
                    *pending
                        .entry((key.source_region.clone(), key.destination.clone()))
                        .or_default() += 1;
                }
            }
        }
        // A gauge: one sample per (source Region, destination), and a zero when nothing is open
        // so the dashboard shows "none" rather than "no data".
        if pending.is_empty() {
            inv.samples.push(Sample {
                name: MetricName::PendingReplications,
                dimensions: None,
                value: 0.0,
                at: now,
            });
        }
        for ((source_region, destination), count) in pending {
            inv.samples.push(Sample {
                name: MetricName::PendingReplications,
                dimensions: Some(Dimensions {
                    source_region,
                    destination_region: destination.region,
                    destination_account: destination.account,
                    repository: None,
                }),
                value: count as f64,
                at: now,
            });
        }
        if unconfirmed > 0 {
            return Err(HandlerError::Unconfirmed(unconfirmed));
        }
        Ok(())
    }

    /// Confirms every due expectation of one group with ECR, settles and saves it.
    async fn check_group(
        &self,
        key: &GroupKey,
        mut versioned: Versioned<TrackedGroup>,
        now: Timestamp,
        inv: &mut Invocation,
        causes_logged: &mut HashSet<String>,
        unconfirmed: &mut usize,
    ) -> Result<Versioned<TrackedGroup>, HandlerError> {
        for attempt in 0..SAVE_ATTEMPTS {
            if attempt > 0 {
                versioned = self.store.load(std::slice::from_ref(key)).await?.remove(0);
            }
            let before = versioned.value.clone();
            let mut unanswered = 0;
            let resolution = versioned.value.group.resolve();
            let expectations = versioned.value.group.expectations().to_vec();
            for (e, ev) in expectations.iter().zip(resolution.evidence) {
                let watch = versioned.value.watches.entry(e.tag.clone()).or_default();
                if watch.next_check.is_none_or(|t| t > now) {
                    continue;
                }
                let v = live_verdict(e, ev, watch, self.settings.window, now);
                let answered = self
                    .confirm(key, e.tag.as_ref(), v.status, watch, now, causes_logged)
                    .await?;
                if !answered {
                    unanswered += 1;
                }
            }
            let found = versioned.value.settle(key, self.settings.window, now);
            if versioned.value == before {
                *unconfirmed += unanswered;
                return Ok(versioned);
            }
            let to_save = [(key.clone(), versioned.clone())];
            if self.store.save(&to_save).await? {
                *unconfirmed += unanswered;
                self.learned(key, &versioned.value, &found, now, inv);
                versioned.version += 1;
                return Ok(versioned);
            }
        }
        Err(HandlerError::Contention(format!("{key:?}")))
    }

    /// Asks ECR about one expectation and records the answer in its watch. Returns whether
    /// anything answered; a transient failure of both APIs leaves the expectation open.
    async fn confirm(
        &self,
        key: &GroupKey,
        tag: Option<&crate::domain::ids::ImageTag>,
        status: Status,
        watch: &mut crate::domain::ledger::Watch,
        now: Timestamp,
        causes_logged: &mut HashSet<String>,
    ) -> Result<bool, HandlerError> {
        let destination = RegistryAt::from(&key.destination);
        let mut note = |api: &str, e: &RegistryError| {
            let cause = format!("{api}: {e}");
            if causes_logged.insert(cause.clone()) {
                tracing::warn!(cause = %cause, "an ECR confirmation API is unavailable; deciding with the other");
            }
        };
        if status == Status::Untagged {
            // The copy arrived without its tag: where does the destination's tag point?
            let Some(tag) = tag else { return Ok(true) };
            return match self
                .registry
                .digest_of_tag(&destination, &key.repository, tag)
                .await
            {
                Ok(points_to) => {
                    watch.tag_points_to = Some(points_to);
                    Ok(true)
                }
                Err(e) if e.is_transient() => {
                    note("DescribeImages", &e);
                    Ok(false)
                }
                Err(e) => {
                    // Refused (no permission in that account): asking every minute would not
                    // change that. The copy stays counted untagged; the stale-tag check is
                    // given up, and the log says why.
                    note("DescribeImages", &e);
                    watch.tag_points_to = Some(None);
                    Ok(true)
                }
            };
        }
        let source = RegistryAt {
            account: key.source_account,
            region: key.source_region.clone(),
        };
        let statuses = self
            .registry
            .replication_status(&source, &key.repository, &key.digest)
            .await;
        let image = self
            .registry
            .image(&destination, &key.repository, &key.digest)
            .await;
        if let Err(e) = &statuses {
            note("DescribeImageReplicationStatus", e);
        }
        if let Err(e) = &image {
            note("DescribeImages", e);
        }
        let ours = statuses.as_ref().ok().and_then(|list| {
            list.iter()
                .find(|s| {
                    s.region.as_ref() == Some(&key.destination.region)
                        && s.registry.is_none_or(|r| r == key.destination.account)
                })
                .cloned()
        });
        let confirmation = match (&image, &ours) {
            // Nothing learned: the watch stays as it was, still due, so the retried invocation
            // (or the next sweep) asks again instead of backing off.
            (Err(_), _) if statuses.is_err() => return Ok(false),
            (Ok(Some(found)), _) => {
                let carried_tag = tag.is_none_or(|t| found.tags.contains(t));
                if !carried_tag && let Some(t) = tag {
                    match self
                        .registry
                        .digest_of_tag(&destination, &key.repository, t)
                        .await
                    {
                        Ok(points_to) => watch.tag_points_to = Some(points_to),
                        Err(e) => note("DescribeImages", &e),
                    }
                }
                Confirmation::Present {
                    pushed_at: found.pushed_at,
                    carried_tag,
                    checked_at: now,
                }
            }
            (_, Some(s)) if s.state == ReplicationState::Complete && image.is_err() => {
                Confirmation::Present {
                    pushed_at: None,
                    carried_tag: true,
                    checked_at: now,
                }
            }
            (_, Some(s)) if s.state == ReplicationState::Failed => Confirmation::Failed {
                failure_code: s.failure_code.clone(),
                checked_at: now,
            },
            (_, s) => Confirmation::Absent {
                in_progress: s
                    .as_ref()
                    .is_some_and(|s| s.state == ReplicationState::InProgress),
                checked_at: now,
            },
        };
        watch.confirmation = Some(confirmation);
        watch.checks += 1;
        Ok(true)
    }
}

/// A sweep request: an EventBridge schedule, or an EventBridge Scheduler payload.
fn is_sweep(item: &Value) -> bool {
    let field = |k: &str| item.get(k).and_then(Value::as_str);
    (field("source") == Some("aws.events") && field("detail-type") == Some("Scheduled Event"))
        || field("action") == Some("sweep")
}
