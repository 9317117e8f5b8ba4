//! The sweep: every open expectation past its window is confirmed with ECR's own APIs before it
//! is called missing, and the gauge of what is still open is published. The decision of what the
//! APIs' answers confirm is the domain's ([`crate::domain::confirm`]); this module only asks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::handler::{
    Auditor, HandlerError, Invocation, MAX_GROUPS_PER_SWEEP, SAVE_ATTEMPTS, newly_committed,
};
use crate::domain::config::{Destination, ReplicationConfig};
use crate::domain::confirm::{Answers, confirm};
use crate::domain::correlate::{GroupKey, Status};
use crate::domain::ids::{ImageTag, Region};
use crate::domain::ledger::{Confirmation, StillExpected, TrackedGroup, Watch, live_verdict};
use crate::domain::metrics::{Dimensions, MetricName, Sample};
use crate::domain::time::Timestamp;
use crate::ports::events::EventsSink;
use crate::ports::metrics::MetricsSink;
use crate::ports::registry::{RegistryAt, RegistryError, RegistryView};
use crate::ports::state::{StateStore, Versioned};

/// What one sweep carries from group to group.
pub(super) struct Sweep {
    pub(super) now: Timestamp,
    /// Each unavailable API and its error, logged once per sweep rather than once per group.
    causes_logged: HashSet<String>,
    /// Due expectations neither confirmation API answered for: they stay due, and the
    /// invocation fails so that it is retried.
    unconfirmed: usize,
    /// Groups confirmed so far (at most [`MAX_GROUPS_PER_SWEEP`]).
    checked: usize,
    /// Expectations still open, per (source Region, destination): the gauge.
    open: BTreeMap<(Region, Destination), u64>,
    /// Configurations read again during this sweep (once per source), before anything is called
    /// missing.
    configs: HashMap<RegistryAt, InForce>,
}

/// The configuration in force, as one sweep read it.
#[derive(Clone)]
enum InForce {
    Read(Arc<ReplicationConfig>),
    /// Throttled or unreachable: asked again at the next sweep.
    Unavailable,
    /// Refused (no permission): taken as naming every destination.
    Refused,
}

impl Sweep {
    /// Logs an API's failure, once per sweep for the same cause.
    pub(super) fn note(&mut self, api: &str, e: &RegistryError) {
        let cause = format!("{api}: {e}");
        if self.causes_logged.insert(cause.clone()) {
            tracing::warn!(cause = %cause, "an ECR confirmation API is unavailable; deciding with the other");
        }
    }

    /// The gauge of open expectations: one sample per (source Region, destination), and a zero
    /// when nothing is open so the dashboard shows "none" rather than "no data".
    fn gauge(&self) -> Vec<Sample> {
        if self.open.is_empty() {
            return vec![Sample {
                name: MetricName::PendingReplications,
                dimensions: None,
                value: 0.0,
                at: self.now,
            }];
        }
        self.open
            .iter()
            .map(|((source_region, destination), count)| Sample {
                name: MetricName::PendingReplications,
                dimensions: Some(Dimensions {
                    source_region: source_region.clone(),
                    destination_region: destination.region.clone(),
                    destination_account: destination.account,
                    repository: None,
                }),
                value: *count as f64,
                at: self.now,
            })
            .collect()
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
    pub(super) async fn sweep(
        &self,
        now: Timestamp,
        inv: &mut Invocation,
    ) -> Result<(), HandlerError> {
        let mut sweep = Sweep {
            now,
            causes_logged: HashSet::new(),
            unconfirmed: 0,
            checked: 0,
            open: BTreeMap::new(),
            configs: HashMap::new(),
        };
        for (key, mut versioned) in self.store.open().await? {
            let due = versioned.value.due_at().is_some_and(|t| t <= now);
            if due && sweep.checked < MAX_GROUPS_PER_SWEEP {
                sweep.checked += 1;
                inv.summary.groups_checked += 1;
                versioned = self.check_group(&key, versioned, &mut sweep, inv).await?;
            }
            for (_, v) in versioned.value.verdicts(self.settings.window, now) {
                if matches!(v.status, Status::Pending | Status::Missing) {
                    *sweep
                        .open
                        .entry((key.source_region.clone(), key.destination.clone()))
                        .or_default() += 1;
                }
            }
        }
        inv.samples.extend(sweep.gauge());
        if sweep.unconfirmed > 0 {
            return Err(HandlerError::Unconfirmed(sweep.unconfirmed));
        }
        Ok(())
    }

    /// Confirms every due expectation of one group with ECR, settles and saves it.
    async fn check_group(
        &self,
        key: &GroupKey,
        mut versioned: Versioned<TrackedGroup>,
        sweep: &mut Sweep,
        inv: &mut Invocation,
    ) -> Result<Versioned<TrackedGroup>, HandlerError> {
        let (window, now) = (self.settings.window, sweep.now);
        for attempt in 0..SAVE_ATTEMPTS {
            if attempt > 0 {
                versioned = self.store.load(std::slice::from_ref(key)).await?.remove(0);
            }
            let before = versioned.value.clone();
            let mut unanswered = 0;
            // What is due without asking anyone first (a provisional match to commit, a
            // withdrawn copy to count), so that what it changes is looked into at this sweep.
            let mut found = versioned.value.settle(key, window, now);
            let resolution = versioned.value.resolve();
            let expectations = versioned.value.group.expectations().to_vec();
            for (e, ev) in expectations.iter().zip(resolution.evidence) {
                let watch = versioned.value.watch_mut(e);
                if watch.next_check.is_none_or(|t| t > now) {
                    continue;
                }
                let v = live_verdict(e, ev, watch, window, now);
                if ev.provisional_at.is_some()
                    || matches!(
                        v.status,
                        Status::Withdrawn | Status::Replicated | Status::Late
                    )
                {
                    // Settling does what is due (a provisional match to commit, a withdrawn
                    // copy to count), with nothing to ask ECR.
                    continue;
                }
                let overdue = now.since(e.pushed_at) > window.millis();
                let absent =
                    |w: &Watch| matches!(w.confirmation, Some(Confirmation::Absent { .. }));
                // Confirmed absent by an earlier sweep that could not read the configuration in
                // force: only that is left to do.
                let only_config = overdue && absent(watch) && watch.still_expected.is_none();
                if !only_config
                    && !self
                        .confirm(key, e.tag.as_ref(), v.status, watch, sweep)
                        .await
                {
                    unanswered += 1;
                    continue;
                }
                if overdue
                    && absent(watch)
                    && watch.still_expected.is_none()
                    && !self.still_expected(key, watch, sweep).await
                {
                    unanswered += 1;
                }
            }
            // Deletes owed (delete replication): their own check (app/deletes.rs).
            unanswered += self.confirm_deletes(key, &mut versioned.value, sweep).await;
            found.extend(versioned.value.settle(key, window, now));
            if versioned.value == before {
                sweep.unconfirmed += unanswered;
                return Ok(versioned);
            }
            let to_save = [(key.clone(), versioned.clone())];
            if self.store.save(&to_save).await? {
                sweep.unconfirmed += unanswered;
                self.learned(key, &versioned.value, &found, now, inv);
                self.look_again(key, newly_committed(&before, &versioned.value), inv);
                versioned.version += 1;
                return Ok(versioned);
            }
        }
        Err(HandlerError::Contention(format!("{key:?}")))
    }

    /// Before a copy confirmed absent past its window is called missing: do the rules in force
    /// (read again, bypassing the cache, once per source per sweep) still name its destination
    /// for the repository? Records the answer in the watch; returns whether there was one.
    ///
    /// A configuration that cannot be read transiently leaves the question for the next sweep;
    /// one that is refused (no permission) counts as "still expected": better a page for a copy
    /// that may no longer be owed than silence for one that is.
    async fn still_expected(&self, key: &GroupKey, watch: &mut Watch, sweep: &mut Sweep) -> bool {
        let source = RegistryAt::source_of(key);
        let in_force = match sweep.configs.get(&source) {
            Some(known) => known.clone(),
            None => {
                let read = match self.read_config(source.clone(), sweep.now).await {
                    Ok(config) => InForce::Read(config),
                    Err(e) => {
                        sweep.note("DescribeRegistry", &e);
                        if e.is_transient() {
                            InForce::Unavailable
                        } else {
                            InForce::Refused
                        }
                    }
                };
                sweep.configs.insert(source, read.clone());
                read
            }
        };
        let named = match in_force {
            InForce::Unavailable => return false,
            InForce::Refused => true,
            InForce::Read(config) => config
                .expected_destinations(&key.repository)
                .destinations
                .contains(&key.destination),
        };
        watch.still_expected = Some(if named {
            StillExpected::Yes
        } else {
            tracing::info!(
                source_account = %key.source_account,
                source_region = %key.source_region,
                repository = %key.repository,
                destination_account = %key.destination.account,
                destination_region = %key.destination.region,
                "the rules in force no longer name this destination: its copy is withdrawn"
            );
            StillExpected::Unconfigured
        });
        true
    }

    /// Asks ECR about one expectation and records the answer in its watch. Returns whether
    /// anything answered; a transient failure of both APIs leaves the expectation open.
    async fn confirm(
        &self,
        key: &GroupKey,
        tag: Option<&ImageTag>,
        status: Status,
        watch: &mut Watch,
        sweep: &mut Sweep,
    ) -> bool {
        let destination = RegistryAt::from(&key.destination);
        if status == Status::Untagged {
            // The copy arrived without its tag.
            let Some(tag) = tag else { return true };
            return self.check_tag(key, tag, watch, sweep).await;
        }
        let source = RegistryAt::source_of(key);
        let statuses = self
            .registry
            .replication_status(&source, &key.repository, &key.digest)
            .await;
        let image = self
            .registry
            .image(&destination, &key.repository, &key.digest)
            .await;
        if let Err(e) = &statuses {
            sweep.note("DescribeImageReplicationStatus", e);
        }
        if let Err(e) = &image {
            sweep.note("DescribeImages", e);
        }
        let answers = Answers {
            image: image.as_ref().ok().map(Option::as_ref),
            statuses: statuses.as_deref().ok(),
        };
        // Nothing learned: the watch stays as it was, still due, so the retried invocation (or
        // the next sweep) asks again instead of backing off.
        let Some(confirmation) = confirm(answers, &key.destination, tag, sweep.now) else {
            return false;
        };
        let untagged = matches!(
            confirmation,
            Confirmation::Present {
                carried_tag: false,
                ..
            }
        );
        watch.confirmation = Some(confirmation);
        watch.checks += 1;
        if untagged && let Some(tag) = tag {
            // Best effort here: what is not answered now is asked at the next sweep.
            self.check_tag(key, tag, watch, sweep).await;
        }
        true
    }

    /// For a copy found without its tag: has the tag moved on at the source (a later push named
    /// another digest), so that the destination is right? If not, where does the destination's
    /// tag point (a stale tag)? Each lookup is made once; returns whether both are answered.
    ///
    /// A refused lookup (no permission in that account) is not asked again every minute: at the
    /// source it counts as "not moved on" (better a page than silence), in the destination the
    /// stale-tag check is given up. The log says why.
    async fn check_tag(
        &self,
        key: &GroupKey,
        tag: &ImageTag,
        watch: &mut Watch,
        sweep: &mut Sweep,
    ) -> bool {
        if watch.tag_moved_on.is_none() {
            let source = RegistryAt::source_of(key);
            match self
                .registry
                .digest_of_tag(&source, &key.repository, tag)
                .await
            {
                Ok(names) => {
                    watch.tag_moved_on =
                        Some(names.as_ref().is_some_and(|digest| *digest != key.digest));
                }
                Err(e) => {
                    sweep.note("DescribeImages", &e);
                    if e.is_transient() {
                        return false;
                    }
                    watch.tag_moved_on = Some(false);
                }
            }
        }
        if watch.tag_moved_on == Some(true) || watch.tag_points_to.is_some() {
            return true;
        }
        let destination = RegistryAt::from(&key.destination);
        match self
            .registry
            .digest_of_tag(&destination, &key.repository, tag)
            .await
        {
            Ok(points_to) => {
                watch.tag_points_to = Some(points_to);
                true
            }
            Err(e) => {
                sweep.note("DescribeImages", &e);
                if !e.is_transient() {
                    watch.tag_points_to = Some(None);
                }
                !e.is_transient()
            }
        }
    }
}
