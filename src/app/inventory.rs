//! The scheduled inventory reconciliation: the Lambda's answer to "is every image where the
//! rules say, right now?", and the audit of pushes whose events never came.
//!
//! - **Requests.** `{"action": "inventory"}` (the schedule, every 6 hours by default) starts a
//!   pass, or carries on with an unfinished one; `{"action": "inventory", "resume_only": true}`
//!   (every few minutes) only carries on, so a registry too large for one invocation is done in
//!   a few, not one per schedule period. Anything else goes to [`Auditor::handle`].
//! - **A pass** compares every repository the rules cover in the configured sources
//!   ([`InventorySettings::sources`]) with every destination ([`crate::reconcile`]), in name
//!   order. Each invocation stops starting repositories once less than [`RESERVE`] of its time
//!   is left, saves where it stopped and its running totals ([`InventoryPass`], through
//!   [`InventoryPasses`]), and the next one resumes there. An invocation holds the pass (a lease
//!   until its own deadline), so two never compare the same repositories at once.
//! - **What it publishes.** One log line per finding (`"message": "inventory finding"`) as it is
//!   found; at the end of the pass, the gauges per destination (`ImagesMissingAtDestination`,
//!   `StaleTagsAtDestination`, `ArchivedCopies`, `NotDeletedAtDestination`,
//!   `RepositorySettingsDrift`; zeros included, so alarms return to OK) and a summary line.
//! - **Lost pushes.** A source image pushed within the history retention (and at most
//!   [`LOST_PUSH_HORIZON`] ago), more than a window ago and not before `since`, whose (digest,
//!   tag) no group of the state table holds, is audited now: it goes through the handler's own
//!   push path, as if its push event had come with `imagePushedAt` as its time, so it is
//!   expected, confirmed by the sweep and counted exactly like any push. Its log line says
//!   `"trigger": "inventory"`. An image that is itself a known copy of another source's push is
//!   not a push.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use super::handler::{Auditor, HandlerError, Heard, InventorySummary, Invocation, Summary};
use crate::domain::config::ReplicationConfig;
use crate::domain::correlate::{GroupKey, Trigger, copy_candidates};
use crate::domain::drift::{Finding, ImageRecord, InventoryPass, PassStep, Scope, gauges};
use crate::domain::event::Push;
use crate::domain::ids::{EventId, ImageTag};
use crate::domain::time::{Timestamp, Window};
use crate::ports::events::EventsSink;
use crate::ports::inventory::{InventoryPasses, RegistryInventory};
use crate::ports::metrics::MetricsSink;
use crate::ports::registry::{RegistryAt, RegistryView};
use crate::ports::state::{StateStore, Versioned, Want};
use crate::reconcile::{self, Plan, ReadError, Source, UnitResult};

/// Time kept back at the end of an invocation: the repositories in flight finish, the pass is
/// saved and the metrics are published within it.
pub const RESERVE: Duration = Duration::from_secs(15);

/// How far back a push the history never saw is audited: CloudWatch takes data points dated at
/// most two weeks back (PutMetricData), and a lost push's expected, completed and missing
/// counts are dated at its push (or its window's end), so older ones could not be counted.
pub const LOST_PUSH_HORIZON: Window = Window::hours(13 * 24);

/// What the scheduled reconciliation needs, already validated (`crate::settings`).
#[derive(Clone, Debug)]
pub struct InventorySettings {
    /// The source registries and Regions to reconcile.
    pub sources: Vec<RegistryAt>,
    /// Images pushed before this are not expected (`INVENTORY_SINCE`).
    pub since: Option<Timestamp>,
    /// Repositories read at once.
    pub concurrency: usize,
}

/// An inventory request: `Some(may_start)` for `{"action": "inventory"}`, `None` for any other
/// payload.
pub fn inventory_request(payload: &Value) -> Option<bool> {
    (payload.get("action").and_then(Value::as_str) == Some("inventory"))
        .then(|| payload.get("resume_only").and_then(Value::as_bool) != Some(true))
}

impl<S, R, M, F, E> Auditor<S, R, M, F, E>
where
    S: StateStore + InventoryPasses + Sync,
    R: RegistryView + RegistryInventory + Sync,
    M: MetricsSink + Sync,
    F: MetricsSink + Sync,
    E: EventsSink + Sync,
{
    /// Every invocation of the Lambda: an inventory request, or whatever
    /// [`Auditor::handle`] takes. `time_left` is how long the invocation may still run.
    pub async fn invoke(
        &self,
        payload: &Value,
        now: Timestamp,
        inventory: &InventorySettings,
        time_left: &(dyn Fn() -> Duration + Send + Sync),
    ) -> Result<Summary, HandlerError> {
        match inventory_request(payload) {
            Some(may_start) => self.inventory(may_start, now, inventory, time_left).await,
            None => {
                let deadline = tokio::time::Instant::now() + time_left();
                self.handle_by(payload, now, deadline).await
            }
        }
    }

    /// One invocation's share of the inventory pass (see the module's documentation).
    pub async fn inventory(
        &self,
        may_start: bool,
        now: Timestamp,
        settings: &InventorySettings,
        time_left: &(dyn Fn() -> Duration + Send + Sync),
    ) -> Result<Summary, HandlerError> {
        let mut inv = Invocation::new(now);
        let mut summary = InventorySummary::default();
        let result = self
            .pass(may_start, now, settings, time_left, &mut summary, &mut inv)
            .await;
        inv.summary.inventory = Some(summary);
        // A lost push whose copies' events had come completes there and then.
        self.announce_completed(now, &mut inv).await;
        self.publish(&mut inv).await;
        if let Err(e) = result {
            tracing::error!(error = %e, "inventory pass stopped; the next invocation resumes where it did");
            return Err(e);
        }
        match inv.errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(inv.summary),
        }
    }

    async fn pass(
        &self,
        may_start: bool,
        now: Timestamp,
        settings: &InventorySettings,
        time_left: &(dyn Fn() -> Duration + Send + Sync),
        summary: &mut InventorySummary,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let Some((mut pass, version)) = self.take_pass(may_start, now, time_left, summary).await?
        else {
            return Ok(());
        };

        let (sources, plan) = self.plan(settings, now).await?;
        let read = |e: ReadError| HandlerError::Registry(e.error);
        for pair in &plan.pairs {
            pass.totals.entry(pair.clone()).or_default();
        }
        let scope = Scope {
            now,
            window: self.settings.window,
            since: settings.since,
        };
        let after = pass.after.clone();
        let remaining = plan
            .units
            .iter()
            .filter(move |u| after.as_ref().is_none_or(|a| u.repository > *a))
            .take_while(|_| time_left() > RESERVE);
        let mut results = reconcile::compare_units(
            &self.registry,
            &plan,
            remaining,
            &scope,
            settings.concurrency,
        );
        let mut failure: Option<HandlerError> = None;
        while let Some(result) = results.next().await {
            let unit = match result {
                Ok(unit) => unit,
                Err(e) => {
                    tracing::error!(error = %e, "inventory: a registry cannot be read");
                    failure = Some(read(e));
                    break;
                }
            };
            if let Err(e) = self
                .record_unit(unit, &sources, &scope, &mut pass, inv, summary)
                .await
            {
                failure = Some(e);
                break;
            }
        }
        drop(results);

        // Done when the last repository of the plan (or one after it: deleted since) is.
        let reached_end = match plan.units.last() {
            None => true,
            Some(last) => pass.after.as_ref().is_some_and(|a| *a >= last.repository),
        };
        let finished = failure.is_none() && reached_end;
        self.release_pass(pass, version, finished, now, summary, inv)
            .await?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads the rules of each configured source and plans the pass over the repositories they
    /// cover; the sources are kept, as the audit of lost pushes needs their rules too.
    async fn plan(
        &self,
        settings: &InventorySettings,
        now: Timestamp,
    ) -> Result<(Vec<Source>, Plan), HandlerError> {
        let mut sources = Vec::with_capacity(settings.sources.len());
        for at in &settings.sources {
            let config = self.read_config(at.clone(), now).await?;
            sources.push(Source {
                registry: at.clone(),
                config,
            });
        }
        let plan = reconcile::plan(&self.registry, &sources, None)
            .await
            .map_err(|e: ReadError| HandlerError::Registry(e.error))?;
        Ok((sources, plan))
    }

    /// Takes the pass for this invocation: starts or resumes it as [`InventoryPass::step`] says
    /// and saves it leased until this invocation's deadline, so no other compares alongside.
    /// `None` (with the step in `summary`) when there is nothing for this invocation to do.
    async fn take_pass(
        &self,
        may_start: bool,
        now: Timestamp,
        time_left: &(dyn Fn() -> Duration + Send + Sync),
        summary: &mut InventorySummary,
    ) -> Result<Option<(InventoryPass, u64)>, HandlerError> {
        let stored = self.store.load_pass().await?;
        let mut pass = match InventoryPass::step(stored.value.as_ref(), now, may_start) {
            PassStep::Busy(until) => {
                summary.step = "busy".into();
                tracing::info!(until = %until, "another invocation holds the inventory pass");
                return Ok(None);
            }
            PassStep::Idle => {
                summary.step = "idle".into();
                return Ok(None);
            }
            PassStep::Start => {
                summary.step = "started".into();
                InventoryPass::new(now)
            }
            PassStep::Resume => {
                summary.step = "resumed".into();
                stored
                    .value
                    .clone()
                    .unwrap_or_else(|| InventoryPass::new(now))
            }
        };
        let left = i64::try_from(time_left().as_millis()).unwrap_or(i64::MAX);
        pass.lease_until = Some(Timestamp::from_millis(now.millis().saturating_add(left)));
        pass.invocations += 1;
        let version = stored.version;
        if !self
            .store
            .save_pass(&Versioned::new(version, pass.clone()))
            .await?
        {
            summary.step = "busy".into();
            return Ok(None);
        }
        Ok(Some((pass, version + 1)))
    }

    /// Records one compared repository: audits its lost pushes, then adds its tallies to the
    /// pass, logs its findings and moves the pass past it, so a resumed pass starts after it.
    async fn record_unit(
        &self,
        unit: UnitResult,
        sources: &[Source],
        scope: &Scope,
        pass: &mut InventoryPass,
        inv: &mut Invocation,
        summary: &mut InventorySummary,
    ) -> Result<(), HandlerError> {
        self.lost_pushes(&unit, sources, scope, inv, summary)
            .await?;
        for (pair, comparison) in &unit.comparisons {
            pass.totals
                .entry(pair.clone())
                .or_default()
                .add(&comparison.tally);
            for finding in &comparison.findings {
                log_finding(finding);
            }
            summary.findings += comparison.findings.len() as u64;
        }
        summary.repositories += 1;
        summary.images += unit.images;
        pass.after = Some(unit.repository);
        Ok(())
    }

    /// Saves the pass at the end of this invocation's share, its lease released; when
    /// `finished`, the gauges and the summary line go out, once the save says it was ours.
    async fn release_pass(
        &self,
        mut pass: InventoryPass,
        version: u64,
        finished: bool,
        now: Timestamp,
        summary: &mut InventorySummary,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        pass.lost_pushes += summary.lost_pushes;
        pass.lease_until = None;
        if finished {
            pass.finished_at = Some(now);
        }
        let saved = self
            .store
            .save_pass(&Versioned::new(version, pass.clone()))
            .await?;
        if !saved {
            // Our lease ran out and another invocation took the pass: it carries on from where
            // it found it; what this one compared is compared again.
            tracing::warn!("the inventory pass was taken over before it could be saved");
        } else if finished {
            summary.finished = true;
            inv.samples.extend(gauges(&pass.totals, now));
            log_pass(&pass, now);
        }
        Ok(())
    }

    /// Audits the pushes of `unit`'s source images that the history never saw (see the module's
    /// documentation), through the handler's push path.
    async fn lost_pushes(
        &self,
        unit: &UnitResult,
        sources: &[Source],
        scope: &Scope,
        inv: &mut Invocation,
        summary: &mut InventorySummary,
    ) -> Result<(), HandlerError> {
        let horizon = self.settings.history_retention.min(LOST_PUSH_HORIZON);
        let known: Vec<Arc<ReplicationConfig>> = sources.iter().map(|s| s.config.clone()).collect();
        for (at, images) in &unit.sources {
            let Some(source) = sources.iter().find(|s| s.registry == *at) else {
                continue;
            };
            let candidates: Vec<Candidate> = images
                .iter()
                .filter_map(|image| {
                    candidate(unit, at, image, &source.config, &known, scope, horizon)
                })
                .collect();
            if candidates.is_empty() {
                continue;
            }
            self.audit_unseen(candidates, scope, inv, summary).await?;
        }
        Ok(())
    }

    /// Reads the groups of `candidates` (one repository's) and audits each push they hold no
    /// record of, unless the image is a copy of another source's push the history knows.
    async fn audit_unseen(
        &self,
        candidates: Vec<Candidate>,
        scope: &Scope,
        inv: &mut Invocation,
        summary: &mut InventorySummary,
    ) -> Result<(), HandlerError> {
        // One read for the whole repository (the store batches it).
        // Each group with the records of the image's tags (the store adds those still
        // waiting for their copy).
        let wants: Vec<Want> = candidates
            .iter()
            .flat_map(|(pushes, own, theirs)| {
                let tags: Vec<Option<ImageTag>> = pushes.iter().map(|p| p.tag.clone()).collect();
                own.iter()
                    .chain(theirs)
                    .map(move |k| (k.clone(), tags.clone()))
            })
            .collect();
        let mut loaded = self.store.load(&wants).await?.into_iter();
        for (pushes, own, theirs) in candidates {
            let own_groups: Vec<_> = loaded.by_ref().take(own.len()).collect();
            let their_groups: Vec<_> = loaded.by_ref().take(theirs.len()).collect();
            // A copy of another source's push that the history knows: not a push.
            if their_groups.iter().any(|g| g.value.has_pushes()) {
                continue;
            }
            let seen: BTreeSet<Option<ImageTag>> = own_groups
                .iter()
                .flat_map(|g| g.value.group.expectations())
                .map(|e| e.tag.clone())
                .collect();
            for push in pushes {
                let known_push = match &push.tag {
                    Some(_) => seen.contains(&push.tag),
                    // An untagged image: any push of it was seen (its tag may have moved).
                    None => own_groups.iter().any(|g| g.value.has_pushes()),
                };
                if known_push {
                    continue;
                }
                tracing::warn!(
                    trigger = "inventory",
                    source_account = %push.account,
                    source_region = %push.region,
                    repository = %push.repository,
                    image_digest = %push.digest,
                    image_tag = push.tag.as_ref().map(|t| t.as_str()),
                    pushed_at = %push.at,
                    "a push the auditor never saw, audited now from the inventory"
                );
                self.push(&push, Trigger::Push, Heard::FromInventory, scope.now, inv)
                    .await?;
                summary.lost_pushes += 1;
            }
        }
        Ok(())
    }
}

/// A source image that may be a lost push: (the push of each tag, its own groups, the groups it
/// may be a copy for).
type Candidate = (Vec<Push>, Vec<GroupKey>, Vec<GroupKey>);

/// `image` of `at` as a [`Candidate`], when it is one: pushed within `horizon`, more than a
/// window ago and not before `since`, in a repository the rules of `config` send somewhere.
fn candidate(
    unit: &UnitResult,
    at: &RegistryAt,
    image: &ImageRecord,
    config: &Arc<ReplicationConfig>,
    known: &[Arc<ReplicationConfig>],
    scope: &Scope,
    horizon: Window,
) -> Option<Candidate> {
    let pushed_at = image.pushed_at?;
    let recent = scope.now.since(pushed_at) <= horizon.millis();
    let settled = scope.now.since(pushed_at) >= scope.window.millis();
    let covered = scope.since.is_none_or(|since| pushed_at >= since);
    if !(recent && settled && covered) {
        return None;
    }
    let tags: Vec<Option<ImageTag>> = if image.tags.is_empty() {
        vec![None]
    } else {
        image.tags.iter().cloned().map(Some).collect()
    };
    let pushes: Vec<Push> = tags
        .into_iter()
        .map(|tag| Push {
            id: inventory_event_id(at, &unit.repository, &image.digest, tag.as_ref()),
            at: pushed_at,
            account: at.account,
            region: at.region.clone(),
            repository: unit.repository.clone(),
            digest: image.digest.clone(),
            tag,
        })
        .collect();
    let own: Vec<GroupKey> = config
        .expected_destinations(&unit.repository)
        .destinations
        .into_iter()
        .map(|d| GroupKey::of_push(&pushes[0], d))
        .collect();
    if own.is_empty() {
        return None;
    }
    let theirs = copy_candidates(&pushes[0], Some(config), known.iter().map(Arc::as_ref));
    Some((pushes, own, theirs))
}

/// The event id a push found in the inventory is recorded under: stable (the same image and
/// tag always get the same id, so a second pass records nothing new) and within EventBridge's
/// id length. FNV-1a, a fixed function: the id must not change with the Rust version.
fn inventory_event_id(
    at: &RegistryAt,
    repository: &crate::domain::ids::RepositoryName,
    digest: &crate::domain::ids::ImageDigest,
    tag: Option<&ImageTag>,
) -> EventId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!(
        "{}\n{}\n{}\n{}\n{}",
        at.account,
        at.region,
        repository,
        digest,
        tag.map_or("", |t| t.as_str())
    );
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    EventId::parse(&format!("inventory-{hash:016x}"))
        .expect("\"inventory-\" and 16 hex digits make an event id")
}

/// The log line of one finding, for CloudWatch Logs Insights.
fn log_finding(f: &Finding) {
    tracing::info!(
        kind = f.kind.as_str(),
        source_account = %f.source_account,
        source_region = %f.source_region,
        repository = %f.repository,
        destination_account = %f.destination_account,
        destination_region = %f.destination_region,
        image_digest = f.image_digest.as_ref().map(|d| d.as_str()),
        image_tag = f.image_tag.as_ref().map(|t| t.as_str()),
        destination_digest = f.destination_digest.as_ref().map(|d| d.as_str()),
        pushed_at = f.pushed_at.map(|t| t.to_string()),
        destination_pushed_at = f.destination_pushed_at.map(|t| t.to_string()),
        setting = f.setting.map(|s| s.as_str()),
        source_value = f.source_value.as_deref(),
        destination_value = f.destination_value.as_deref(),
        note = f.note.as_deref(),
        "inventory finding"
    );
}

/// The summary line of a finished pass.
fn log_pass(pass: &InventoryPass, now: Timestamp) {
    let mut total = crate::domain::drift::Tally::default();
    for t in pass.totals.values() {
        total.add(t);
    }
    tracing::info!(
        started_at = %pass.started_at,
        seconds = now.since(pass.started_at) as f64 / 1000.0,
        invocations = pass.invocations,
        repositories = total.repositories,
        images = total.images,
        expected = total.expected,
        missing = total.missing,
        stale_tags = total.stale_tags,
        archived = total.archived,
        not_deleted = total.not_deleted,
        settings = total.settings,
        lost_pushes = pass.lost_pushes,
        "inventory pass finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schedules_payload_starts_a_pass_and_the_resume_one_only_resumes() {
        assert_eq!(
            inventory_request(&json!({"action": "inventory"})),
            Some(true)
        );
        assert_eq!(
            inventory_request(&json!({"action": "inventory", "resume_only": true})),
            Some(false)
        );
        assert_eq!(inventory_request(&json!({"action": "sweep"})), None);
        assert_eq!(inventory_request(&json!([{"action": "inventory"}])), None);
    }

    #[test]
    fn an_inventory_push_has_a_stable_id_per_image_and_tag() {
        let at = RegistryAt {
            account: crate::domain::ids::AccountId::parse("111122223333").unwrap(),
            region: crate::domain::ids::Region::parse("us-west-2").unwrap(),
        };
        let repo = crate::domain::ids::RepositoryName::parse("team/app").unwrap();
        let digest = crate::domain::ids::ImageDigest::parse("sha256:abc").unwrap();
        let v1 = ImageTag::parse("v1").unwrap();
        let id = inventory_event_id(&at, &repo, &digest, Some(&v1));
        assert_eq!(id, inventory_event_id(&at, &repo, &digest, Some(&v1)));
        assert_ne!(id, inventory_event_id(&at, &repo, &digest, None));
        assert!(id.as_str().starts_with("inventory-") && id.as_str().len() == 26);
    }
}
