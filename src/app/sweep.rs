//! The sweep: every open expectation past its window is confirmed with ECR's own APIs before it
//! is called missing, and the gauge of what is still open is published. The decision of what the
//! APIs' answers confirm is the domain's ([`crate::domain::confirm`]); this module only asks.

use std::collections::{BTreeMap, HashSet};

use super::handler::{Auditor, HandlerError, Invocation, MAX_GROUPS_PER_SWEEP, SAVE_ATTEMPTS};
use crate::domain::config::Destination;
use crate::domain::confirm::{Answers, confirm};
use crate::domain::correlate::{GroupKey, Status};
use crate::domain::ids::{ImageTag, Region};
use crate::domain::ledger::{Confirmation, TrackedGroup, Watch, live_verdict};
use crate::domain::metrics::{Dimensions, MetricName, Sample};
use crate::domain::time::Timestamp;
use crate::ports::metrics::MetricsSink;
use crate::ports::registry::{RegistryAt, RegistryError, RegistryView};
use crate::ports::state::{StateStore, Versioned};

/// What one sweep carries from group to group.
struct Sweep {
    now: Timestamp,
    /// Each unavailable API and its error, logged once per sweep rather than once per group.
    causes_logged: HashSet<String>,
    /// Due expectations neither confirmation API answered for: they stay due, and the
    /// invocation fails so that it is retried.
    unconfirmed: usize,
    /// Groups confirmed so far (at most [`MAX_GROUPS_PER_SWEEP`]).
    checked: usize,
    /// Expectations still open, per (source Region, destination): the gauge.
    open: BTreeMap<(Region, Destination), u64>,
}

impl Sweep {
    /// Logs an API's failure, once per sweep for the same cause.
    fn note(&mut self, api: &str, e: &RegistryError) {
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

impl<S: StateStore + Sync, R: RegistryView + Sync, M: MetricsSink + Sync, F: MetricsSink + Sync>
    Auditor<S, R, M, F>
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
            let resolution = versioned.value.group.resolve();
            let expectations = versioned.value.group.expectations().to_vec();
            for (e, ev) in expectations.iter().zip(resolution.evidence) {
                let watch = versioned.value.watches.entry(e.tag.clone()).or_default();
                if watch.next_check.is_none_or(|t| t > now) {
                    continue;
                }
                let v = live_verdict(e, ev, watch, window, now);
                if !self
                    .confirm(key, e.tag.as_ref(), v.status, watch, sweep)
                    .await
                {
                    unanswered += 1;
                }
            }
            let found = versioned.value.settle(key, window, now);
            if versioned.value == before {
                sweep.unconfirmed += unanswered;
                return Ok(versioned);
            }
            let to_save = [(key.clone(), versioned.clone())];
            if self.store.save(&to_save).await? {
                sweep.unconfirmed += unanswered;
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
        tag: Option<&ImageTag>,
        status: Status,
        watch: &mut Watch,
        sweep: &mut Sweep,
    ) -> bool {
        let destination = RegistryAt::from(&key.destination);
        if status == Status::Untagged {
            // The copy arrived without its tag: where does the destination's tag point?
            let Some(tag) = tag else { return true };
            return match self
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
                    // Refused (no permission in that account): asking every minute would not
                    // change that. The copy stays counted untagged; the stale-tag check is
                    // given up, and the log says why. A transient failure asks again.
                    if !e.is_transient() {
                        watch.tag_points_to = Some(None);
                    }
                    !e.is_transient()
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
        if let (
            Confirmation::Present {
                carried_tag: false, ..
            },
            Some(t),
        ) = (&confirmation, tag)
        {
            match self
                .registry
                .digest_of_tag(&destination, &key.repository, t)
                .await
            {
                Ok(points_to) => watch.tag_points_to = Some(points_to),
                Err(e) => sweep.note("DescribeImages", &e),
            }
        }
        watch.confirmation = Some(confirmation);
        watch.checks += 1;
        true
    }
}
