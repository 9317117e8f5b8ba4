//! `audit`: the report of `replay`, built from the Lambda's own history in DynamoDB rather than
//! from archived events, for the pushes of a period.
//!
//! - **Which pushes.** Those whose push time is in `[since, until)`. The table's `history` index
//!   finds each push by its own time (one record per push), a UTC day at a time, never a scan
//!   ([`HistoryReader::first_pushed_between`]). Groups written by the previous version (one item
//!   for the whole group) are found by their *first* push only, so the days from
//!   `since - lookback` are read and, of those, the expectations pushed in `[since, until)` are
//!   audited: a retag inside the period of an image first pushed before `since` is found there
//!   only when `lookback` reaches back to its first push. Pushes before `since` stay out of the
//!   report either way.
//! - **Verdicts** are the Lambda's live verdicts ([`TrackedGroup::verdicts`]), so what its sweep
//!   confirmed with ECR's APIs counts: a copy whose event was lost but that ECR shows present is
//!   replicated (with its lag from the destination's push time), and a copy is missing only once
//!   ECR said it is absent after the window. Until then it is pending, as in the Lambda's
//!   metrics; the run warns when some are pending past their window (the sweep has not looked
//!   yet, or cannot).
//! - **Copies that match no push** are those of the audited groups ([`Group::resolve`]). A copy
//!   whose push never reached the Lambda has no first push, so it is not in the index.
//! - **`events`** counts what the history holds for the audited pushes: `push`, the distinct
//!   pushes (one per image and tag, whatever its number of destinations); `restore`, the distinct
//!   restores; `replication`, the copy results stored in their groups; `delete`, the deletes
//!   owed to a destination under delete replication (one per destination); `read`, all of them.
//! - **Deletes** owed under delete replication are those made in `[since, until)`, with the
//!   Lambda's verdicts (what its sweep confirmed with `DescribeImages` counts). A group is found
//!   by its first push, or, when it holds no push (its image was pushed before the history
//!   began), by its first delete. The table keeps no ignored, rejected or
//!   duplicate events: those are 0 (the `EventsRejected` metric counts rejections). For the same
//!   reason `rejected_records` and `unconfigured_sources` are always empty.
//! - **Filters** (`--destination`, `--repository`) apply after the query: they narrow the
//!   report, not the read.
//!
//! [`Group::resolve`]: crate::domain::correlate::Group::resolve

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Write};
use std::path::PathBuf;

use crate::domain::config::Destination;
use crate::domain::correlate::{GroupKey, Outcome, Status, Trigger};
use crate::domain::ids::{AccountId, Region};
use crate::domain::ledger::TrackedGroup;
use crate::domain::report::{
    DeletionRecord, Findings, ReplicationRecord, Report, ReportBuilder, UnmatchedCopy,
};
use crate::domain::time::{InvalidTimestamp, Timestamp, Window};
use crate::output::{self, Format, Printer};
use crate::ports::history::HistoryReader;
use crate::ports::state::StoreError;

/// `--destination REGION[:ACCOUNT]`: one destination Region, in one account or in any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationFilter {
    pub region: Region,
    pub account: Option<AccountId>,
}

impl DestinationFilter {
    pub fn parse(s: &str) -> Result<DestinationFilter, String> {
        let (region, account) = match s.split_once(':') {
            Some((r, a)) => (r, Some(a)),
            None => (s, None),
        };
        Ok(DestinationFilter {
            region: Region::parse(region).map_err(|e| format!("Region {region:?} {e}"))?,
            account: account
                .map(|a| AccountId::parse(a).map_err(|e| format!("account {a:?} {e}")))
                .transpose()?,
        })
    }

    fn covers(&self, d: &Destination) -> bool {
        d.region == self.region && self.account.is_none_or(|a| a == d.account)
    }
}

/// An instant on the command line: RFC 3339, or a bare date `YYYY-MM-DD` for its midnight UTC
/// (`--since 2024-07-01 --until 2024-07-02` is that whole day).
pub fn parse_instant(s: &str) -> Result<Timestamp, InvalidTimestamp> {
    let is_date = s.len() == 10
        && s.bytes()
            .enumerate()
            .all(|(i, b)| matches!(i, 4 | 7) == (b == b'-') && (b == b'-' || b.is_ascii_digit()));
    if is_date {
        Timestamp::parse_rfc3339(&format!("{s}T00:00:00Z"))
    } else {
        Timestamp::parse_rfc3339(s)
    }
}

/// Which expectations the report covers.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Pushes at or after this instant...
    pub since: Timestamp,
    /// ...and before this one.
    pub until: Timestamp,
    pub destination: Option<DestinationFilter>,
    /// A plain string prefix of the repository name, as ECR's `PREFIX_MATCH` filters are.
    pub repository_prefix: Option<String>,
}

impl Scope {
    fn covers_group(&self, key: &GroupKey) -> bool {
        self.destination
            .as_ref()
            .is_none_or(|d| d.covers(&key.destination))
            && self
                .repository_prefix
                .as_ref()
                .is_none_or(|p| key.repository.as_str().starts_with(p.as_str()))
    }

    fn covers_push(&self, at: Timestamp) -> bool {
        self.since <= at && at < self.until
    }
}

/// Everything `audit` needs, already parsed.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    pub scope: Scope,
    /// How much further back than `since` to look for images pushed again in the period (see
    /// the module documentation); none by default.
    pub lookback: Option<Window>,
    /// Must be the Lambda's `REPLICATION_WINDOW`: the sweep confirmed copies by that window.
    pub window: Window,
    /// The audit time; the caller passes the clock's reading unless told otherwise.
    pub now: Timestamp,
    pub format: Format,
    pub chart: Option<PathBuf>,
    /// How many problem copies and unmatched copies the table lists (all are counted, and the
    /// JSON report lists all).
    pub list_limit: usize,
}

/// Why `audit` could not run (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("--until ({until}) must be later than --since ({since})")]
    EmptyPeriod { since: Timestamp, until: Timestamp },
    #[error("cannot read the audit history: {0}")]
    History(StoreError),
    #[error("cannot write the report: {0}")]
    Output(io::Error),
    #[error("cannot write the chart {path}: {source}")]
    Chart { path: String, source: io::Error },
}

/// Folds stored groups into the report: the audit without the table, clock passed in.
pub struct HistoryAudit<'a> {
    scope: &'a Scope,
    window: Window,
    now: Timestamp,
    report: ReportBuilder,
    /// Hashes of the distinct pushes counted: a push has one expectation per destination. A
    /// 64-bit hash: for a count, a collision in billions is no error worth 16 bytes a push.
    pushes: HashSet<u64>,
    /// Hashes of the copies counted: a copy a restore took is stored with the restore (the
    /// group's head) and with the push whose record holds it, and is read with both.
    copies: HashSet<u64>,
    /// Expectations still pending more than one window after their push.
    overdue: u64,
}

impl<'a> HistoryAudit<'a> {
    pub fn new(scope: &'a Scope, window: Window, now: Timestamp) -> Self {
        HistoryAudit {
            scope,
            window,
            now,
            report: ReportBuilder::default(),
            pushes: HashSet::new(),
            copies: HashSet::new(),
            overdue: 0,
        }
    }

    /// Lists at most `limit` problem copies and unmatched copies in the report.
    pub fn with_list_limit(mut self, limit: usize) -> Self {
        self.report = ReportBuilder::with_list_limit(limit);
        self
    }

    /// Audits one stored group: each of its expectations in scope gets its verdict, which goes
    /// to the report and to `out`, with the copies that match no push.
    pub fn add(&mut self, key: &GroupKey, tracked: &TrackedGroup, out: &mut impl Findings) {
        if !self.scope.covers_group(key) {
            return;
        }
        let mut audited = false;
        for (e, v) in tracked.verdicts(self.window, self.now) {
            if !self.scope.covers_push(e.pushed_at) {
                continue;
            }
            audited = true;
            let mut h = DefaultHasher::new();
            (
                key.source_account,
                &key.source_region,
                &key.repository,
                &key.digest,
                &e.tag,
                e.trigger,
                e.is_restore().then_some(e.pushed_at),
            )
                .hash(&mut h);
            if self.pushes.insert(h.finish()) {
                match e.trigger {
                    Trigger::Push => self.report.events.push += 1,
                    Trigger::Restore => self.report.events.restore += 1,
                }
            }
            if v.status == Status::Pending && self.now.since(e.pushed_at) > self.window.millis() {
                self.overdue += 1;
            }
            let record = ReplicationRecord {
                key: key.clone(),
                trigger: e.trigger,
                tag: e.tag.clone(),
                pushed_at: e.pushed_at,
                outcome: Outcome {
                    status: v.status,
                    replicated_at: v.replicated_at,
                    latency_ms: v.latency_ms,
                },
            };
            self.report.add_verdict(&record);
            out.verdict(&record);
        }
        for (e, v) in tracked.delete_verdicts(self.window, self.now) {
            if !self.scope.covers_push(e.deleted_at) {
                continue;
            }
            self.report.events.delete += 1;
            let record = DeletionRecord {
                key: key.clone(),
                tag: e.tag.clone(),
                deleted_at: e.deleted_at,
                outcome: v.outcome,
            };
            self.report.add_deletion(&record);
            out.deletion(&record);
        }
        if !audited {
            return;
        }
        let copies = tracked.group.copies();
        for c in copies {
            let mut h = DefaultHasher::new();
            (key, &c.id).hash(&mut h);
            if self.copies.insert(h.finish()) {
                self.report.events.replication += 1;
            }
        }
        for i in tracked.group.resolve().unmatched {
            let copy = UnmatchedCopy {
                key: key.clone(),
                copy: copies[i].clone(),
            };
            self.report.add_unmatched(&copy);
            out.unmatched(&copy);
        }
    }

    /// The report, and how many expectations are pending past their window.
    pub fn finish(mut self) -> (Report, u64) {
        let e = &self.report.events;
        self.report.events.read = e.push + e.restore + e.replication + e.delete;
        (
            self.report.finish(self.window, Some(self.now)),
            self.overdue,
        )
    }
}

/// Reads the history of `options.scope` from the table, prints the report (and writes the chart)
/// as `replay` does. Returns the report, whose [`Report::has_problems`] decides the exit status.
pub async fn run(
    store: &impl HistoryReader,
    options: &AuditOptions,
    out: &mut (dyn Write + Send),
    warn: &mut dyn Write,
) -> Result<Report, AuditError> {
    let scope = &options.scope;
    if scope.until <= scope.since {
        return Err(AuditError::EmptyPeriod {
            since: scope.since,
            until: scope.until,
        });
    }
    let mut printer =
        Printer::new(options.format, options.chart.is_some(), out).map_err(AuditError::Output)?;
    let mut audit =
        HistoryAudit::new(scope, options.window, options.now).with_list_limit(options.list_limit);
    let from = options.lookback.map_or(scope.since, |l| {
        Timestamp::from_millis(scope.since.millis().saturating_sub(l.millis()))
    });
    store
        .first_pushed_between(from, scope.until, |groups| {
            for (key, tracked) in &groups {
                audit.add(key, tracked, &mut printer);
            }
        })
        .await
        .map_err(AuditError::History)?;
    let (report, overdue) = audit.finish();
    if overdue > 0 {
        // Best effort: a warning that cannot be written is no reason to stop.
        let (copies, are) = if overdue == 1 {
            ("copy", "is")
        } else {
            ("copies", "are")
        };
        let _ = writeln!(
            warn,
            "warning: {overdue} {copies} {are} past the window with no check by the Lambda's \
             sweep yet, so reported pending until ECR's APIs confirm them (the sweep runs every \
             minute: if this lasts, look at the function's errors)"
        );
    }
    if let (Some(path), Some(lags)) = (&options.chart, printer.take_lags()) {
        std::fs::File::create(path)
            .and_then(|file| {
                output::write_chart(&lags, &report, Some((scope.since, scope.until)), file)
            })
            .map_err(|source| AuditError::Chart {
                path: path.display().to_string(),
                source,
            })?;
    }
    printer.print(&report).map_err(AuditError::Output)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::correlate::CopySeen;
    use crate::domain::ids::{EventId, ImageDigest, ImageTag, RepositoryName};
    use crate::domain::ledger::{Confirmation, StillExpected};

    /// 2024-07-01T10:00:00Z plus `secs`.
    fn t(secs: i64) -> Timestamp {
        Timestamp::from_millis(1_719_828_000_000 + secs * 1000)
    }
    fn tag(s: &str) -> Option<ImageTag> {
        Some(ImageTag::parse(s).unwrap())
    }
    fn key(repository: &str, region: &str) -> GroupKey {
        GroupKey {
            source_account: AccountId::parse("111122223333").unwrap(),
            source_region: Region::parse("us-west-2").unwrap(),
            repository: RepositoryName::parse(repository).unwrap(),
            digest: ImageDigest::parse("sha256:aaaa").unwrap(),
            destination: Destination {
                account: AccountId::parse("444455556666").unwrap(),
                region: Region::parse(region).unwrap(),
            },
        }
    }
    fn copy(id: &str, secs: i64, tag_: Option<&str>) -> CopySeen {
        CopySeen {
            id: EventId::parse(id).unwrap(),
            at: t(secs),
            tag: tag_.and_then(tag),
            succeeded: true,
        }
    }
    fn scope(since: i64, until: i64) -> Scope {
        Scope {
            since: t(since),
            until: t(until),
            destination: None,
            repository_prefix: None,
        }
    }
    /// (tag, status) of every verdict, and the report.
    fn audit(
        scope: &Scope,
        groups: &[(GroupKey, TrackedGroup)],
        now: i64,
    ) -> (Vec<(Option<String>, Status)>, Report, u64) {
        let mut a = HistoryAudit::new(scope, Window::DEFAULT, t(now));
        let mut seen = Vec::new();
        for (k, g) in groups {
            a.add(k, g, &mut |r: &ReplicationRecord| {
                seen.push((r.tag.as_ref().map(|t| t.to_string()), r.outcome.status))
            });
        }
        let (report, overdue) = a.finish();
        (seen, report, overdue)
    }

    #[test]
    fn only_pushes_inside_the_period_are_audited_even_in_a_group_read_for_them() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(-86_400));
        g.group.add_push(tag("stable"), t(60));
        g.group.add_push(tag("next"), t(7200));
        g.group.add_copy(copy("c1", 70, Some("stable")));
        let (seen, report, _) = audit(&scope(0, 3600), &[(key("team/app", "eu-west-1"), g)], 5000);
        assert_eq!(seen, [(Some("stable".into()), Status::Replicated)]);
        assert_eq!(
            (
                report.events.push,
                report.events.replication,
                report.events.read
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn a_confirmation_by_the_sweep_decides_and_an_unchecked_copy_stays_pending() {
        let mut present = TrackedGroup::default();
        present.group.add_push(tag("v1"), t(0));
        present.watches.entry(tag("v1")).or_default().confirmation = Some(Confirmation::Present {
            pushed_at: Some(t(20)),
            carried_tag: true,
            checked_at: t(1801),
        });
        let mut absent = TrackedGroup::default();
        absent.group.add_push(tag("v1"), t(0));
        let watch = absent.watches.entry(tag("v1")).or_default();
        watch.confirmation = Some(Confirmation::Absent {
            in_progress: false,
            checked_at: t(1801),
        });
        watch.still_expected = Some(StillExpected::Yes);
        let mut unchecked = TrackedGroup::default();
        unchecked.group.add_push(tag("v1"), t(0));
        let groups = [
            (key("team/a", "eu-west-1"), present),
            (key("team/b", "eu-west-1"), absent),
            (key("team/c", "eu-west-1"), unchecked),
        ];
        let (seen, report, overdue) = audit(&scope(0, 3600), &groups, 4000);
        let statuses: Vec<Status> = seen.into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            statuses,
            [Status::Replicated, Status::Missing, Status::Pending]
        );
        assert_eq!(report.destinations[0].latency.map(|p| p.max), Some(20_000));
        assert_eq!(
            overdue, 1,
            "the unchecked one is past its window: warned about"
        );
        assert_eq!(report.events.push, 3, "three images");
    }

    #[test]
    fn one_push_to_several_destinations_counts_once_and_filters_narrow_the_report() {
        let groups: Vec<(GroupKey, TrackedGroup)> = ["eu-west-1", "us-east-1"]
            .iter()
            .map(|r| {
                let mut g = TrackedGroup::default();
                g.group.add_push(tag("v1"), t(0));
                (key("prod/web", r), g)
            })
            .collect();
        let (seen, report, _) = audit(&scope(0, 3600), &groups, 10);
        assert_eq!((seen.len(), report.events.push), (2, 1));

        let mut only = scope(0, 3600);
        only.destination = Some(DestinationFilter::parse("us-east-1").unwrap());
        assert_eq!(audit(&only, &groups, 10).0.len(), 1);
        only.destination = Some(DestinationFilter::parse("us-east-1:111122223333").unwrap());
        assert_eq!(audit(&only, &groups, 10).0.len(), 0, "another account");
        let mut prefix = scope(0, 3600);
        prefix.repository_prefix = Some("prod".into());
        assert_eq!(
            audit(&prefix, &groups, 10).0.len(),
            2,
            "prod covers prod/web"
        );
        prefix.repository_prefix = Some("team".into());
        assert_eq!(audit(&prefix, &groups, 10).0.len(), 0);
    }

    #[test]
    fn a_copy_with_a_tag_nobody_pushed_is_listed_as_unmatched() {
        let mut g = TrackedGroup::default();
        g.group.add_push(tag("v1"), t(0));
        g.group.add_copy(copy("c1", 5, Some("v1")));
        g.group.add_copy(copy("c2", 9, Some("other")));
        let (_, report, _) = audit(&scope(0, 3600), &[(key("team/app", "eu-west-1"), g)], 10);
        assert_eq!(report.unmatched.len(), 1);
        assert_eq!(report.unmatched[0].copy.id.as_str(), "c2");
    }

    #[test]
    fn destinations_and_instants_parse_from_the_command_line() {
        let d = DestinationFilter::parse("eu-west-1:444455556666").unwrap();
        assert_eq!(
            d.account.map(|a| a.to_string()).as_deref(),
            Some("444455556666")
        );
        assert!(
            DestinationFilter::parse("eu-west-1")
                .unwrap()
                .account
                .is_none()
        );
        assert!(DestinationFilter::parse("EU:1").is_err());
        assert!(DestinationFilter::parse("eu-west-1:12").is_err());
        assert_eq!(
            parse_instant("2024-07-01").unwrap(),
            Timestamp::parse_rfc3339("2024-07-01T00:00:00Z").unwrap()
        );
        assert_eq!(parse_instant("2024-07-01T10:00:00Z").unwrap(), t(0));
        assert!(parse_instant("2024-7-1").is_err());
        assert!(parse_instant("yesterday").is_err());
    }
}
