//! The report for a person: the summary per destination first, then the problem copies, the
//! deletes owed under delete replication, the copies that match no push, the rejected records
//! and the registries with no configuration.

use std::io::{self, Write};

use super::{human_lag, short_digest};
use crate::domain::correlate::{Status, Trigger};
use crate::domain::deletion::DeleteStatus;
use crate::domain::ids::quoted;
use crate::domain::report::{Percentiles, Report};

/// The report for a person: the per-destination summary first, then every problem copy, then
/// what could not be matched or read.
pub fn write(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let now = report
        .now
        .map_or_else(|| "no events".to_string(), |t| t.to_string());
    writeln!(
        out,
        "ECR replication audit: window {}, now {now}",
        report.window
    )?;
    let e = &report.events;
    writeln!(
        out,
        "events: {} read, {} push, {} restore, {} replication, {} delete, {} ignored, {} rejected, {} duplicate",
        e.read, e.push, e.restore, e.replication, e.delete, e.ignored, e.rejected, e.duplicate
    )?;
    writeln!(out)?;
    summary(report, out)?;
    problems(report, out)?;
    deletions(report, out)?;
    unmatched(report, out)?;
    rejected(report, out)?;
    unconfigured(report, out)
}

/// One row per destination: counts per status and the lag percentiles.
fn summary(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let headers = [
        "DESTINATION",
        "EXPECTED",
        "REPLICATED",
        "LATE",
        "UNTAGGED",
        "FAILED",
        "MISSING",
        "PENDING",
        "WITHDRAWN",
        "ARCHIVED",
        "LAG p50",
        "p90",
        "p99",
        "max",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    // A destination owed only deletes has its row in the deletions' table.
    for d in report.destinations.iter().filter(|d| d.expected > 0) {
        let lag = |f: fn(&Percentiles) -> i64| {
            d.latency
                .as_ref()
                .map_or("-".to_string(), |p| human_lag(f(p)))
        };
        let mut row = vec![
            format!("{} {}", d.destination.account, d.destination.region),
            d.expected.to_string(),
        ];
        row.extend(
            [
                Status::Replicated,
                Status::Late,
                Status::Untagged,
                Status::Failed,
                Status::Missing,
                Status::Pending,
                Status::Withdrawn,
                Status::Archived,
            ]
            .iter()
            .map(|&s| d.count(s).to_string()),
        );
        row.extend([
            lag(|p| p.p50),
            lag(|p| p.p90),
            lag(|p| p.p99),
            lag(|p| p.max),
        ]);
        rows.push(row);
    }
    if rows.is_empty() {
        writeln!(out, "No copies were expected.")?;
    } else {
        columns(&headers, &rows, out)?;
    }
    Ok(())
}

/// A table: the first column left-aligned, the others right-aligned, two spaces apart.
fn columns(headers: &[&str], rows: &[Vec<String>], out: &mut dyn Write) -> io::Result<()> {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    writeln!(out, "{}", line(&headers))?;
    for r in rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

/// Under delete replication: one row per destination owed deletes, then the problem deletes,
/// missing first. Nothing when no delete was owed.
fn deletions(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if !report.has_deletes() {
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "Deletes owed under delete replication:")?;
    let headers = [
        "DESTINATION",
        "EXPECTED",
        "REPLICATED",
        "LATE",
        "MISSING",
        "PENDING",
    ];
    let rows: Vec<Vec<String>> = report
        .destinations
        .iter()
        .filter(|d| d.deletes_expected() > 0)
        .map(|d| {
            let mut row = vec![
                format!("{} {}", d.destination.account, d.destination.region),
                d.deletes_expected().to_string(),
            ];
            row.extend(DeleteStatus::ALL.iter().map(|&s| d.deletes(s).to_string()));
            row
        })
        .collect();
    columns(&headers, &rows, out)?;
    if report.delete_problems_total > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "Problem deletes ({}):",
            listed_of(
                report.delete_problems.len(),
                report.delete_problems_total,
                "worst"
            )
        )?;
        for p in &report.delete_problems {
            let image = match &p.tag {
                Some(tag) => format!("{}:{}", p.key.repository, tag),
                None => p.key.repository.to_string(),
            };
            let lag = match (p.outcome.status, p.outcome.latency_ms) {
                (_, Some(ms)) => format!("gone after {}", human_lag(ms)),
                (DeleteStatus::Late, None) => "gone after the window".to_string(),
                _ => "no delete seen".to_string(),
            };
            writeln!(
                out,
                "  {:<8}  {image} @ {}  {}/{} -> {}  deleted {}  {lag}",
                p.outcome.status.as_str(),
                short_digest(p.key.digest.as_str()),
                p.key.source_account,
                p.key.source_region,
                p.key.destination,
                p.deleted_at,
            )?;
        }
    }
    Ok(())
}

/// The problem copies, worst first.
fn problems(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.problems_total > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "Problem copies ({}):",
            listed_of(report.problems.len(), report.problems_total, "worst")
        )?;
        for p in &report.problems {
            let image = match &p.tag {
                Some(tag) => format!("{}:{}", p.key.repository, tag),
                None => p.key.repository.to_string(),
            };
            let lag = p.outcome.latency_ms.map_or_else(
                || "no copy".to_string(),
                |ms| format!("lag {}", human_lag(ms)),
            );
            let trigger = match p.trigger {
                Trigger::Push => "pushed",
                Trigger::Restore => "restored",
            };
            writeln!(
                out,
                "  {:<8}  {image} @ {}  {}/{} -> {}  {trigger} {}  {lag}",
                p.outcome.status.as_str(),
                short_digest(p.key.digest.as_str()),
                p.key.source_account,
                p.key.source_region,
                p.key.destination,
                p.pushed_at,
            )?;
        }
    }
    Ok(())
}

/// The copies that match no push, earliest first.
fn unmatched(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.unmatched_total > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "Copies that match no push ({}):",
            listed_of(report.unmatched.len(), report.unmatched_total, "earliest")
        )?;
        for u in &report.unmatched {
            let result = if u.copy.succeeded {
                "SUCCESS"
            } else {
                "FAILED"
            };
            let tag = u
                .copy
                .tag
                .as_ref()
                .map(|t| format!(":{t}"))
                .unwrap_or_default();
            writeln!(
                out,
                "  {result:<8}  {}{tag} @ {}  {}/{} -> {}  at {}  event {}",
                u.key.repository,
                u.key.digest,
                u.key.source_account,
                u.key.source_region,
                u.key.destination,
                u.copy.at,
                u.copy.id
            )?;
        }
    }
    Ok(())
}

/// The records that could not be read, with the field at fault.
fn rejected(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if report.events.rejected > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "Rejected records ({}):",
            listed_of(report.rejected.len(), report.events.rejected, "first")
        )?;
        for r in &report.rejected {
            let id = r
                .event_id
                .as_ref()
                .map(|id| format!(" event {}", quoted(id.as_str())))
                .unwrap_or_default();
            writeln!(out, "  {}{id}: field {}: {}", r.record, r.field, r.reason)?;
        }
    }
    Ok(())
}

/// The source registries whose pushes had no configuration to judge them by.
fn unconfigured(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    if !report.unconfigured.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Pushes from registries with no replication configuration given (nothing expected of them):"
        )?;
        for u in &report.unconfigured {
            writeln!(out, "  {} {}: pushes {}", u.account, u.region, u.pushes)?;
        }
    }
    Ok(())
}

/// The count in a list's heading: `4`, or `168463; the 1000 worst listed, --format json has
/// all` when the report kept only the first few.
fn listed_of(listed: usize, total: u64, which: &str) -> String {
    if listed as u64 >= total {
        total.to_string()
    } else {
        format!("{total}; the {listed} {which} listed, --format json has all")
    }
}
