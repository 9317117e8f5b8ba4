//! What `drift` prints: the table for a person (the counts per source and destination first,
//! then the findings, at most `--list-limit` of them), the JSON document with every finding, and
//! the progress line on stderr.

use std::io::{self, Write};
use std::time::Duration;

use serde_json::json;

use super::{Format, short_digest};
use crate::domain::drift::{DriftReport, Finding, FindingKind, Progress, Setting, Tally};
use crate::domain::time::seconds_value;

/// Prints `report` as `format` asks.
pub fn print(
    report: &DriftReport,
    format: Format,
    list_limit: usize,
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        Format::Table => table(report, list_limit, out)?,
        Format::Json => json(report, out)?,
    }
    out.flush()
}

/// The report for a person.
pub fn table(report: &DriftReport, list_limit: usize, out: &mut dyn Write) -> io::Result<()> {
    let scope = &report.scope;
    let since = scope
        .since
        .map_or_else(|| "every image (no --since)".to_string(), |t| t.to_string());
    writeln!(
        out,
        "ECR inventory reconciliation: now {}, window {}, expected since {since}",
        scope.now, scope.window
    )?;
    let sources: Vec<String> = report
        .sources
        .iter()
        .map(|(a, r)| format!("{a} {r}"))
        .collect();
    let calls: Vec<String> = report
        .calls
        .each()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(api, n)| format!("{api} {n}"))
        .collect();
    writeln!(
        out,
        "sources: {}; {} requests ({})",
        sources.join(", "),
        report.calls.total(),
        calls.join(", ")
    )?;
    writeln!(out)?;
    summary(report, out)?;
    findings(report, list_limit, out)?;
    if scope.since.is_none() && report.total().expected > 0 {
        writeln!(out)?;
        writeln!(
            out,
            "Every image was expected: ECR replicates only what is pushed after a rule exists. \
             Give --since the time the rules took effect to leave older images out."
        )?;
    }
    Ok(())
}

/// One row per (source, destination).
fn summary(report: &DriftReport, out: &mut dyn Write) -> io::Result<()> {
    let headers = [
        "SOURCE",
        "DESTINATION",
        "REPOS",
        "ABSENT",
        "IMAGES",
        "EXPECTED",
        "PRESENT",
        "MISSING",
        "STALE_TAG",
        "ARCHIVED",
        "NOT_DELETED",
        "SETTINGS",
        "BEFORE_SINCE",
        "IN_FLIGHT",
    ];
    let rows: Vec<Vec<String>> = report
        .pairs
        .iter()
        .map(|(pair, t)| {
            let mut row = vec![
                format!("{} {}", pair.source_account, pair.source_region),
                format!("{} {}", pair.destination.account, pair.destination.region),
            ];
            row.extend(counts(t).iter().map(u64::to_string));
            row
        })
        .collect();
    if rows.is_empty() {
        return writeln!(
            out,
            "No replication rule of these sources covers a repository: nothing was compared."
        );
    }
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
                if i < 2 {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(out, "{}", line(&headers.map(String::from)))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    Ok(())
}

fn counts(t: &Tally) -> [u64; 12] {
    [
        t.repositories,
        t.repositories_absent,
        t.images,
        t.expected,
        t.present,
        t.missing,
        t.stale_tags,
        t.archived,
        t.not_deleted,
        t.settings,
        t.not_expected,
        t.in_flight,
    ]
}

/// The findings, at most `limit` of them, in the report's order (missing first).
fn findings(report: &DriftReport, limit: usize, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out)?;
    let total = report.findings.len();
    if total == 0 {
        return writeln!(
            out,
            "No drift: every expected image is where the rules say."
        );
    }
    let heading = if total > limit {
        format!("{total}; the first {limit} listed, --format json has all")
    } else {
        total.to_string()
    };
    writeln!(out, "Findings ({heading}):")?;
    for f in report.findings.iter().take(limit) {
        writeln!(out, "  {}", line(f))?;
    }
    Ok(())
}

/// One finding on one line.
fn line(f: &Finding) -> String {
    let route = format!(
        "{}/{} -> {}/{}",
        f.source_account, f.source_region, f.destination_account, f.destination_region
    );
    let digest = |d: &Option<crate::domain::ids::ImageDigest>| {
        d.as_ref()
            .map_or_else(|| "-".to_string(), |d| short_digest(d.as_str()).to_owned())
    };
    let time = |t: Option<crate::domain::time::Timestamp>| {
        t.map_or_else(|| "?".to_string(), |t| t.to_string())
    };
    let tags = if f.image_tags.is_empty() {
        "untagged".to_string()
    } else {
        f.image_tags
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let detail = match f.kind {
        FindingKind::Missing => format!(
            "{} @ {} ({tags})  {route}  pushed {}",
            f.repository,
            digest(&f.image_digest),
            time(f.pushed_at)
        ),
        FindingKind::StaleTag => {
            let there = match &f.destination_digest {
                Some(_) => format!(
                    "destination {} (pushed {})",
                    digest(&f.destination_digest),
                    time(f.destination_pushed_at)
                ),
                None => "absent at the destination (its image is there)".to_string(),
            };
            format!(
                "{}:{}  {route}  source {} (pushed {}), {there}",
                f.repository,
                f.image_tag.as_ref().map_or("", |t| t.as_str()),
                digest(&f.image_digest),
                time(f.pushed_at)
            )
        }
        FindingKind::Archived => format!(
            "{} @ {} ({tags})  {route}  {} at the destination",
            f.repository,
            digest(&f.image_digest),
            f.destination_value.as_deref().unwrap_or("?")
        ),
        FindingKind::NotDeleted => format!(
            "{} @ {} {}  {route}  {}",
            f.repository,
            digest(&f.image_digest),
            f.image_tag
                .as_ref()
                .map_or_else(|| "(untagged)".to_string(), |t| format!("tag {t}")),
            f.note.as_deref().unwrap_or_default()
        ),
        FindingKind::Settings => {
            let value = |v: &Option<String>| v.as_deref().unwrap_or("none").to_owned();
            let what = f.setting.map_or("?", |s| s.as_str());
            match f.setting {
                Some(Setting::LifecycleRule) => format!(
                    "{}  {route}  {what} {}: {}",
                    f.repository,
                    f.destination_value
                        .as_deref()
                        .map_or_else(String::new, rule_summary),
                    f.note.as_deref().unwrap_or_default()
                ),
                // Whole policies are for the JSON report; a person needs to know they differ.
                Some(Setting::LifecyclePolicy | Setting::RepositoryPolicy) => {
                    let (here, there) = (&f.source_value, &f.destination_value);
                    let how = match (here, there) {
                        (None, Some(_)) => "none at the source, set at the destination",
                        (Some(_), None) => "set at the source, none at the destination",
                        _ => "differs (--format json has both texts)",
                    };
                    format!("{}  {route}  {what}: {how}", f.repository)
                }
                _ => format!(
                    "{}  {route}  {what}: {} at the source, {} at the destination",
                    f.repository,
                    value(&f.source_value),
                    value(&f.destination_value)
                ),
            }
        }
    };
    format!("{:<11}  {detail}", f.kind.as_str())
}

/// A lifecycle rule in a few words: `(priority 1: sinceImagePulled 30 days, transition to
/// archive)`; the rule's text when it is not JSON.
fn rule_summary(text: &str) -> String {
    let Ok(rule) = serde_json::from_str::<serde_json::Value>(text) else {
        return format!("({text})");
    };
    let field = |pointer: &str| {
        rule.pointer(pointer).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let count = [
        field("/selection/countType"),
        field("/selection/countNumber"),
        field("/selection/countUnit"),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    let action = match (field("/action/type"), field("/action/targetStorageClass")) {
        (Some(t), Some(to)) => format!("{t} to {to}"),
        (Some(t), None) => t,
        _ => "?".into(),
    };
    format!(
        "(priority {}: {count}, {action})",
        field("/rulePriority").unwrap_or_else(|| "?".into())
    )
}

/// The report for machines: `now`, `window_seconds`, `since`, `sources`, `calls` (per API and
/// `total`), `destinations` (one object per source and destination with its counts) and
/// `findings` (every one).
pub fn json(report: &DriftReport, out: &mut dyn Write) -> io::Result<()> {
    let destinations: Vec<serde_json::Value> = report
        .pairs
        .iter()
        .map(|(pair, t)| {
            let mut v = json!({
                "source_account": pair.source_account,
                "source_region": pair.source_region,
                "destination_account": pair.destination.account,
                "destination_region": pair.destination.region,
            });
            if let (Some(obj), serde_json::Value::Object(counts)) = (v.as_object_mut(), json!(t)) {
                obj.extend(counts);
            }
            v
        })
        .collect();
    let mut calls = json!(report.calls);
    calls["total"] = json!(report.calls.total());
    let doc = json!({
        "now": report.scope.now,
        "window_seconds": seconds_value(report.scope.window.millis()),
        "since": report.scope.since,
        "sources": report.sources.iter().map(|(a, r)| json!({"account": a, "region": r})).collect::<Vec<_>>(),
        "calls": calls,
        "destinations": destinations,
        "findings": report.findings,
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

/// The progress line: `drift: comparing: repositories 12/50, images 480/2000, 1520 images/s,
/// 130 requests`.
pub fn progress_line(p: &Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let images = match p.images_total {
        Some(total) => format!("images {}/{total}", p.images_done),
        None => format!("images {}", p.images_done),
    };
    format!(
        "drift: {}: repositories {}/{}, {images}, {:.0} images/s, {} requests",
        if p.reading_sources {
            "listing source images"
        } else {
            "comparing"
        },
        p.repositories_done,
        p.repositories_total,
        p.images_done as f64 / secs,
        p.calls
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lifecycle_rule_reads_in_a_few_words() {
        let rule = r#"{"rulePriority":1,"selection":{"tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":30},"action":{"type":"transition","targetStorageClass":"archive"}}"#;
        assert_eq!(
            rule_summary(rule),
            "(priority 1: sinceImagePulled 30 days, transition to archive)"
        );
        let expire = r#"{"rulePriority":2,"selection":{"countType":"imageCountMoreThan","countNumber":10},"action":{"type":"expire"}}"#;
        assert_eq!(
            rule_summary(expire),
            "(priority 2: imageCountMoreThan 10, expire)"
        );
    }

    #[test]
    fn the_progress_line_gives_done_out_of_total_and_a_rate() {
        let p = Progress {
            reading_sources: false,
            repositories_done: 12,
            repositories_total: 50,
            images_done: 480,
            images_total: Some(2000),
            calls: 130,
        };
        assert_eq!(
            progress_line(&p, Duration::from_secs(2)),
            "drift: comparing: repositories 12/50, images 480/2000, 240 images/s, 130 requests"
        );
        let listing = Progress {
            reading_sources: true,
            images_total: None,
            ..p
        };
        assert!(
            progress_line(&listing, Duration::ZERO)
                .starts_with("drift: listing source images: repositories 12/50, images 480, ")
        );
    }
}
