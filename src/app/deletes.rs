//! The sweep's check of the deletes a destination owes under delete replication: once a
//! delete's window has passed without a DELETE seen there, `DescribeImages` in the destination
//! says whether what had to go is gone. The decision is the domain's
//! ([`crate::domain::deletion::gone_at_destination`]); this module only asks.

use super::handler::Auditor;
use super::sweep::Sweep;
use crate::domain::correlate::GroupKey;
use crate::domain::deletion::{
    AtDestination, DeleteConfirmation, DeleteStatus, gone_at_destination, gone_given_source,
};
use crate::domain::ledger::TrackedGroup;
use crate::ports::events::EventsSink;
use crate::ports::metrics::MetricsSink;
use crate::ports::registry::{RegistryAt, RegistryView};
use crate::ports::state::StateStore;

impl<
    S: StateStore + Sync,
    R: RegistryView + Sync,
    M: MetricsSink + Sync,
    F: MetricsSink + Sync,
    E: EventsSink + Sync,
> Auditor<S, R, M, F, E>
{
    /// Asks ECR about every delete of `tracked` that is due and records the answers in their
    /// watches; returns how many could not be answered (they stay due, and the sweep's
    /// invocation fails with `HandlerError::Unconfirmed` so that it is retried, as for a copy
    /// neither API could confirm).
    ///
    /// One `DescribeImages` by digest in the destination; for an image's last tag removed, when
    /// the destination still has the image without that tag, one more in the source: if the
    /// source has the image too, the tag was not its last after all, and the destination is
    /// right.
    pub(super) async fn confirm_deletes(
        &self,
        key: &GroupKey,
        tracked: &mut TrackedGroup,
        sweep: &Sweep,
    ) -> usize {
        let (window, now) = (self.settings.window, sweep.now);
        let due: Vec<_> = tracked
            .delete_verdicts(window, now)
            .into_iter()
            .filter(|(e, v)| {
                !matches!(
                    v.outcome.status,
                    DeleteStatus::Replicated | DeleteStatus::Late
                ) && tracked
                    .delete_watches
                    .get(&(e.tag.clone(), e.deleted_at))
                    .and_then(|w| w.next_check)
                    .is_some_and(|t| t <= now)
            })
            .map(|(e, _)| e.clone())
            .collect();
        let mut unanswered = 0;
        for e in due {
            let destination = RegistryAt::from(&key.destination);
            let found = match self
                .registry
                .image(&destination, &key.repository, &key.digest)
                .await
            {
                Ok(found) => found,
                Err(err) => {
                    sweep.note("DescribeImages", &err);
                    unanswered += 1;
                    continue;
                }
            };
            let gone = match gone_at_destination(e.kind, e.tag.as_ref(), found.as_ref()) {
                AtDestination::Gone => true,
                AtDestination::StillThere => false,
                AtDestination::AskSource => {
                    let source = RegistryAt::source_of(key);
                    match self
                        .registry
                        .image(&source, &key.repository, &key.digest)
                        .await
                    {
                        Ok(at_source) => gone_given_source(at_source.as_ref()),
                        Err(err) => {
                            sweep.note("DescribeImages", &err);
                            unanswered += 1;
                            continue;
                        }
                    }
                }
            };
            let watch = tracked
                .delete_watches
                .entry((e.tag.clone(), e.deleted_at))
                .or_default();
            watch.confirmation = Some(if gone {
                DeleteConfirmation::Gone { checked_at: now }
            } else {
                DeleteConfirmation::StillThere { checked_at: now }
            });
            watch.checks += 1;
        }
        unanswered
    }
}
